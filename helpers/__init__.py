"""SynthQA: which generator's synthetic diffusion MRI data resembles a real scan? Several
judges, each checked against known answers on the scan itself.

Modules, one concern each (numerical kernels first; they import only each other and
:mod:`helpers.contract`, never the configuration or the runner):

- :mod:`helpers.contract`    names and defaults shared by every module (methods, metrics, columns, seeds)
- :mod:`helpers.tissue`      WM/GM/CSF masks: FreeSurfer labels, FSL FAST, DTI thresholds; erosion
- :mod:`helpers.dti`         vectorised WLS tensor fit (agrees with dipy's TensorModel)
- :mod:`helpers.noise`       the scan's noise: robust b0-repeat and tensor-residual estimates, noise floor
- :mod:`helpers.simulation`  the multi-tensor kernel, the built-in generators, a user's own generator
- :mod:`helpers.force`       dipy's FORCE signal model, vectorised and seeded
- :mod:`helpers.calibration` ``Calibrated``: a FORCE-like family fitted to the subject's fit voxels (CMA-ES)
- :mod:`helpers.split`       fit voxels and judge voxels: a chessboard of spatial blocks
- :mod:`helpers.distance`    every judge's distance against its real-vs-real floor, block-bootstrap intervals
- :mod:`helpers.library`     any simulator's saved signals as a generator (``library:PATH``)
- :mod:`helpers.metrics`     signal MAE, FA MAE, angular deviation, error maps
- :mod:`helpers.stats`       tests between methods across subjects or replicates, the verdict
- :mod:`helpers.realism`     rotation-invariant features, classifier two-sample test, distances
- :mod:`helpers.judges`      the judges and the known-answer check that validates them
- :mod:`helpers.autoencoder` the denoising autoencoder (Keras 3) and its fast training loop
- :mod:`helpers.training`    replicate models per method, trained in parallel processes
- :mod:`helpers.io`          atomic writes (temporary name, then rename)
- :mod:`helpers.config`      project paths, dataset configs, profiles (quick, paper)
- :mod:`helpers.gradients`   gradient tables: reading and checking b-values/b-vectors, shells
- :mod:`helpers.subject`     the :class:`~helpers.subject.Subject`: one scan's brain voxels, saved and read back
- :mod:`helpers.loading`     reading a real scan into a Subject: mask, broken volumes, noise, tissue
- :mod:`helpers.layouts`     dataset layouts (sample, HCP, BIDS, explicit paths) and a config's subjects
- :mod:`helpers.inspection`  ``synthqa check``: a subject's files checked from headers and gradient tables
- :mod:`helpers.datasets`    fetching the example in-vivo scan, pinned by hash
- :mod:`helpers.figures`     plotly figures
- :mod:`helpers.report`      the verdict-first text of the summary report
- :mod:`helpers.pipeline`    the notebooks' steps over a subject folder
- :mod:`helpers.render`      shareable HTML reports, index pages; :mod:`helpers.provenance`
- :mod:`helpers.batch`       the papermill batch runner (:mod:`helpers.console`, :mod:`helpers.results`,
  Dask via :mod:`helpers.cluster`); :mod:`helpers.cli` is the ``synthqa`` command
- :mod:`helpers.export`      ``synthqa export``: N voxels of any generator with their ground truth, in chunks
- :mod:`helpers.processes`   processes that die with the run, and the memory of a process tree
- :mod:`helpers.lock`        the lock that keeps a second run out of a results folder
"""

import warnings

# dipy imports tqdm.auto, which warns in every executed notebook that ipywidgets is
# missing; our progress bars are plain-text tqdm on purpose, so the warning is noise
# in the rendered reports.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

from helpers.contract import METHODS  # noqa: E402  (the built-in generators)
