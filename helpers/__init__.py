"""SynthQA: which generator's synthetic diffusion MRI data resembles a real scan? Several
judges, each checked against known answers on the scan itself.

Subpackages by stage, in the order the work flows (docs/layout.md); each imports only the
stages below it and the ground, never one above:

- :mod:`helpers.scan`        a scan becomes voxels: gradients, loading and layouts, tissue,
  noise, the fit/judge split, the :class:`~helpers.scan.subject.Subject`, the example scans
- :mod:`helpers.generators`  synthetic voxels: the multi-tensor kernel and the built-ins,
  FORCE, a saved library, ``Calibrated`` fitted to the scan
- :mod:`helpers.judges`      scores: the autoencoder and its training, metrics, two-sample
  realism, distances against the floor, known-answer checks, statistics
- :mod:`helpers.report`      the verdict in words, figures, HTML pages, provenance
- :mod:`helpers.run`         the ``synthqa`` command, the papermill batch, the pipeline
  steps the notebooks call, Dask, the lock, the console, ``check`` and ``export``

The ground, which every stage may import:

- :mod:`helpers.contract`   names and defaults shared by every module (methods, metrics, columns, seeds)
- :mod:`helpers.config`     project paths, dataset configs, profiles (quick, demo, paper)
- :mod:`helpers.io`         atomic writes (temporary name, then rename)
- :mod:`helpers.processes`  processes that die with the run, the memory of a process tree
- :mod:`helpers.dti`        vectorised WLS tensor fit (agrees with dipy's TensorModel)
- :mod:`helpers.features`   rotation-invariant features of a voxel's signal
"""

import warnings

# dipy imports tqdm.auto, which warns in every executed notebook that ipywidgets is
# missing; our progress bars are plain-text tqdm on purpose, so the warning is noise
# in the rendered reports.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

from helpers.contract import METHODS  # noqa: E402  (the built-in generators)
