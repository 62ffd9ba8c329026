"""Stage 5, the runner orchestrates: the ``synthqa`` command, the batch of papermill notebooks,
the pipeline steps they call, Dask, the lock, the console, ``check`` and ``export``."""
