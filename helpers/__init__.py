"""SynthQA: which generator's synthetic diffusion MRI data resembles a real scan? Several
judges, each checked against known answers on the scan itself.

Modules, one concern each (numerical kernels first; they import only each other and
:mod:`helpers.contract`, never the configuration or the runner):

- :mod:`helpers.contract`    names and defaults shared by every module (methods, metrics, columns, seeds)
- :mod:`helpers.scan.tissue`      WM/GM/CSF masks: FreeSurfer labels, FSL FAST, DTI thresholds; erosion
- :mod:`helpers.dti`         vectorised WLS tensor fit (agrees with dipy's TensorModel)
- :mod:`helpers.scan.noise`       the scan's noise: robust b0-repeat and tensor-residual estimates, noise floor
- :mod:`helpers.generators.simulation`  the multi-tensor kernel, the built-in generators, a user's own generator
- :mod:`helpers.generators.force`       dipy's FORCE signal model, vectorised and seeded
- :mod:`helpers.generators.calibration` ``Calibrated``: a FORCE-like family fitted to the subject's fit voxels (CMA-ES)
- :mod:`helpers.scan.split`       fit voxels and judge voxels: a chessboard of spatial blocks
- :mod:`helpers.judges.distance`    every judge's distance against its real-vs-real floor, block-bootstrap intervals
- :mod:`helpers.generators.library`     any simulator's saved signals as a generator (``library:PATH``)
- :mod:`helpers.judges.metrics`     signal MAE, FA MAE, angular deviation, error maps
- :mod:`helpers.judges.stats`       tests between methods across subjects or replicates, the verdict
- :mod:`helpers.judges.realism`     rotation-invariant features, classifier two-sample test, distances
- :mod:`helpers.judges.judges`      the judges and the known-answer check that validates them
- :mod:`helpers.judges.autoencoder` the denoising autoencoder (Keras 3) and its fast training loop
- :mod:`helpers.judges.training`    replicate models per method, trained in parallel processes
- :mod:`helpers.io`          atomic writes (temporary name, then rename)
- :mod:`helpers.config`      project paths, dataset configs, profiles (quick, paper)
- :mod:`helpers.scan.gradients`   gradient tables: reading and checking b-values/b-vectors, shells
- :mod:`helpers.scan.subject`     the :class:`~helpers.scan.subject.Subject`: one scan's brain voxels, saved and read back
- :mod:`helpers.scan.loading`     reading a real scan into a Subject: mask, broken volumes, noise, tissue
- :mod:`helpers.scan.layouts`     dataset layouts (sample, HCP, BIDS, explicit paths) and a config's subjects
- :mod:`helpers.run.inspection`  ``synthqa check``: a subject's files checked from headers and gradient tables
- :mod:`helpers.scan.datasets`    fetching the example in-vivo scan, pinned by hash
- :mod:`helpers.report.figures`     plotly figures
- :mod:`helpers.report.report`      the verdict-first text of the summary report
- :mod:`helpers.run.pipeline`    the notebooks' steps over a subject folder
- :mod:`helpers.report.render`      shareable HTML reports, index pages; :mod:`helpers.report.provenance`
- :mod:`helpers.run.batch`       the papermill batch runner (:mod:`helpers.run.console`, :mod:`helpers.run.results`,
  Dask via :mod:`helpers.run.cluster`); :mod:`helpers.run.cli` is the ``synthqa`` command
- :mod:`helpers.run.export`      ``synthqa export``: N voxels of any generator with their ground truth, in chunks
- :mod:`helpers.processes`   processes that die with the run, and the memory of a process tree
- :mod:`helpers.run.lock`        the lock that keeps a second run out of a results folder
"""

import warnings

# dipy imports tqdm.auto, which warns in every executed notebook that ipywidgets is
# missing; our progress bars are plain-text tqdm on purpose, so the warning is noise
# in the rendered reports.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

from helpers.contract import METHODS  # noqa: E402  (the built-in generators)
