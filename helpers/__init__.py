"""SynthQA: judge synthetic diffusion MRI data by how well an autoencoder trained on it
reconstructs a real scan.

Modules, one concern each:

- :mod:`helpers.contract`    names and defaults shared by every module (methods, metrics, columns)
- :mod:`helpers.config`      project paths, dataset configs, profiles (quick, paper)
- :mod:`helpers.io`          atomic writes (temporary name, then rename)
- :mod:`helpers.data`        loading real scans into a :class:`~helpers.data.Subject`
- :mod:`helpers.tissue`      WM/GM/CSF masks: FreeSurfer labels, FSL FAST, DTI thresholds
- :mod:`helpers.dti`         vectorised WLS tensor fit (agrees with dipy's TensorModel)
- :mod:`helpers.simulation`  the multi-tensor kernel and the four generators
- :mod:`helpers.autoencoder` the self-adapting denoising autoencoder (Keras 3)
- :mod:`helpers.metrics`     signal MAE, FA MAE, angular deviation, error maps
- :mod:`helpers.stats`       paired tests between methods, Holm correction
- :mod:`helpers.figures`     plotly figures
- :mod:`helpers.report`      the written reading of the results
- :mod:`helpers.pipeline`    the notebooks' steps over a subject folder
- :mod:`helpers.batch`       the papermill batch runner (threads, or Dask via :mod:`helpers.cluster`)
"""

import warnings

# dipy imports tqdm.auto, which warns in every executed notebook that ipywidgets is
# missing; our progress bars are plain-text tqdm on purpose, so the warning is noise
# in the rendered reports.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

from helpers.contract import METHODS  # noqa: E402  (the four built-in generators)
