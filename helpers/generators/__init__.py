"""Stage 2, generators draw synthetic voxels: the multi-tensor kernel and the built-ins, FORCE,
a saved library, and ``Calibrated`` fitted to the scan."""
