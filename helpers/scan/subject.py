"""The :class:`Subject`: one subject's brain voxels (attenuation E = S / S0 on the selected
volumes, their gradients, tissue codes, S0 and noise) with everything needed to write maps
back onto the scan's grid; saved as ``subject.npz`` + ``subject.json`` and read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers.scan import noise as _noise
from helpers.scan import tissue as _tissue
from helpers.contract import DEFAULTS
from helpers.dti import fit_attenuation
from helpers.scan.gradients import check_dti_directions, find_shells
from helpers.io import atomic_path, load_json, save_json, save_npz

__all__ = [
    "Subject",
]


CALIBRATION_FILE = "calibration.json"
"""Calibrated's fitted hyperparameters, beside ``subject.npz`` (:mod:`helpers.generators.calibration`)."""


@dataclass
class Subject:
    """One subject's brain voxels, ready for simulation, training and evaluation.

    Attributes
    ----------
    attenuation : (n, m) float32 ndarray
        E = S / S0 of the n brain voxels on the m selected volumes.
    bvals : (m,) ndarray
        b-values in s/mm² of those volumes (each its own; several shells possible).
    bvecs : (m, 3) ndarray
        Their unit gradient directions.
    indices : (n, 3) int ndarray
        Voxel coordinates of each row on the scan's grid.
    shape : tuple of 3 int
        The grid's shape.
    affine : (4, 4) ndarray
        The grid's voxel-to-world affine.
    tissue : (n,) uint8 ndarray
        0 none, 1 CSF, 2 GM, 3 WM (:mod:`helpers.scan.tissue`).
    s0 : (n,) float32 ndarray
        Mean b0 signal (scanner units).
    snr : float or None
        Estimated SNR of the b0 signal (median S0 / sigma); ``snr_method`` says how.
    sigma : float or None
        Estimated noise standard deviation, scanner units (:mod:`helpers.scan.noise`).
    dti_max_b : float
        Tensor-derived quantities use the volumes with b <= this (s/mm²).
    info : dict
        Provenance and counts: dataset, subject, files, shells, mask and tissue source,
        voxels excluded, whether erosion is in-plane.
    judge : (n,) bool ndarray or None
        The spatial split (:mod:`helpers.scan.split`): True for judge voxels, False for fit
        voxels; None for a subject that is not split (then both parts are the whole).
    blocks : (n,) int ndarray or None
        The split block of each voxel (the unit of the judge part's bootstrap).

    Notes
    -----
    :meth:`fit_part` and :meth:`judge_part` are the two halves as subjects of their own.
    Everything fitted to the subject is fitted to :meth:`fit_part` (the simulation module
    does so itself, :func:`helpers.generators.simulation.fitted`); the judges score
    :meth:`judge_part`. A part keeps the whole subject's tissue erosion (a voxel at a
    block's edge is not eroded for lying beside the other part).
    """

    attenuation: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    indices: np.ndarray
    shape: tuple
    affine: np.ndarray
    tissue: np.ndarray
    s0: np.ndarray
    snr: float | None = None
    snr_method: str = ""
    sigma: float | None = None
    dti_max_b: float = DEFAULTS["dti_max_b"]
    info: dict = field(default_factory=dict)
    judge: np.ndarray | None = None
    blocks: np.ndarray | None = None

    def __post_init__(self):
        self._tensor = None
        self._parts = {}
        self._eroded = None  # a part's erosion, taken from the whole subject
        self.calibration = None  # Calibrated's fit (calibration.json beside subject.npz), read by simulate
        if self.judge is not None:
            self.judge = np.asarray(self.judge, dtype=bool)
            if self.judge.shape != (self.n_voxels,):
                raise ValueError(f"judge has shape {self.judge.shape}; the subject has {self.n_voxels} voxels")
            self.blocks = (np.arange(self.n_voxels) if self.blocks is None else np.asarray(self.blocks)).astype(np.int64)

    @property
    def is_split(self):
        """Whether the subject has a fit part and a judge part."""
        return self.judge is not None

    @property
    def n_fit_voxels(self):
        return int((~self.judge).sum()) if self.is_split else self.n_voxels

    @property
    def n_judge_voxels(self):
        return int(self.judge.sum()) if self.is_split else self.n_voxels

    def fit_part(self):
        """The fit voxels as a subject (itself when not split); computed once."""
        return self._part("fit")

    def judge_part(self):
        """The judge voxels as a subject (itself when not split); computed once."""
        return self._part("judge")

    def __setattr__(self, name, value):
        # A part is cut from the whole when first asked for. A field (or the calibration)
        # set after that would leave it stale, so the parts are cut anew; a field changed
        # in place (subject.tissue[i] = ...) is not seen.
        super().__setattr__(name, value)
        if name in _PART_SOURCES and self.__dict__.get("_parts"):
            self.__dict__["_parts"] = {}

    def _part(self, which):
        if not self.is_split:
            return self
        if which not in self._parts:
            rows = self.judge if which == "judge" else ~self.judge
            eroded = {name: self.tissue_mask(name, eroded=True)[rows] for name in _tissue.CODES}
            part = Subject(
                attenuation=self.attenuation[rows], bvals=self.bvals, bvecs=self.bvecs,
                indices=self.indices[rows], shape=self.shape, affine=self.affine, tissue=self.tissue[rows],
                s0=self.s0[rows], snr=self.snr, snr_method=self.snr_method, sigma=self.sigma,
                dti_max_b=self.dti_max_b, info={**self.info, "part": which},
            )
            part.blocks = self.blocks[rows]
            part._eroded = eroded
            part.calibration = self.calibration
            if self._tensor is not None:
                part._tensor = type(self._tensor)(self._tensor.evals[rows], self._tensor.evecs[rows])
            self._parts[which] = part
        return self._parts[which]

    @property
    def n_voxels(self):
        return self.attenuation.shape[0]

    @property
    def n_directions(self):
        """Number of selected diffusion-weighted volumes (columns of ``attenuation``)."""
        return self.attenuation.shape[1]

    @property
    def dti_columns(self):
        """(m,) bool: the selected volumes the tensor fit uses (b <= ``dti_max_b``)."""
        return np.asarray(self.bvals, dtype=float) <= self.dti_max_b

    @property
    def relative_sigma(self):
        """(n,) sigma / S0 per voxel (NaN everywhere when no sigma was estimated)."""
        if self.sigma is None:
            return np.full(self.n_voxels, np.nan)
        return _noise.relative_sigma(self.sigma, self.s0)

    @property
    def noise_floor(self):
        """Expected signal MAE of a perfect denoiser (:func:`helpers.scan.noise.noise_floor_mae`);
        NaN without a sigma."""
        if self.sigma is None:
            return float("nan")
        return float(_noise.noise_floor_mae(self.relative_sigma))

    @property
    def wm(self):
        return self.tissue == _tissue.CODES["WM"]

    @property
    def gm(self):
        return self.tissue == _tissue.CODES["GM"]

    @property
    def csf(self):
        return self.tissue == _tissue.CODES["CSF"]

    def tissue_mask(self, name, *, eroded=False):
        """(n,) boolean mask of tissue ``name`` ("WM", "GM", "CSF"), optionally eroded by
        one voxel (:func:`helpers.scan.tissue.erode`: 6-connected in 3-D, in-plane on a scan
        of one or two slices). A class with no voxel gives an all-False mask."""
        if name not in _tissue.CODES:
            raise ValueError(f"unknown tissue {name!r}; allowed: {list(_tissue.CODES)}")
        mask = self.tissue == _tissue.CODES[name]
        if not eroded or not mask.any():
            return mask
        if self._eroded is not None:
            return self._eroded[name]
        vol = self.volume(mask, fill=False)
        return _tissue.erode(vol)[tuple(self.indices.T)]

    def tensor(self):
        """The WLS tensor fit of [S0=1, E] on the :attr:`dti_columns` of every voxel
        (computed once, then cached)."""
        if self._tensor is None:
            dti = self.dti_columns
            check_dti_directions(
                self.bvals[dti], self.bvecs[dti], dti_max_b=self.dti_max_b,
                source=self.info.get("bval", "subject"), all_bvals=self.bvals,
            )
            self._tensor = fit_attenuation(self.bvals[dti], self.bvecs[dti], self.attenuation[:, dti])
        return self._tensor

    def volume(self, values, *, fill=np.nan):
        """Scatter per-voxel ``values`` ((n,) or (n, k)) onto the 3-D grid."""
        values = np.asarray(values)
        if values.shape[0] != self.n_voxels:
            raise ValueError(f"values has {values.shape[0]} rows; the subject has {self.n_voxels} voxels")
        dtype = np.result_type(values.dtype, fill)  # a Python scalar fill keeps the dtype
        out = np.full(tuple(self.shape) + values.shape[1:], fill, dtype=dtype)
        out[tuple(self.indices.T)] = values
        return out

    def save_nifti(self, values, path, *, fill=np.nan):
        """Write per-voxel ``values`` as a NIfTI map on the subject's grid (atomically)."""
        vol = self.volume(values, fill=fill)
        if vol.dtype == bool:
            vol = vol.astype(np.uint8)
        with atomic_path(path) as tmp:
            nib.save(nib.Nifti1Image(vol, self.affine), tmp)

    def save(self, folder):
        """Write ``subject.npz`` + ``subject.json`` (and NIfTI maps for viewing) to ``folder``.

        ``subject.json`` states the SNR, sigma and how they were estimated, ``dti_max_b``,
        the shells used, whether erosion is in-plane, and the loader's ``info``.
        """
        folder = Path(folder)
        save_npz(
            folder / "subject.npz",
            attenuation=self.attenuation,
            bvals=self.bvals,
            bvecs=self.bvecs,
            indices=self.indices,
            tissue=self.tissue,
            s0=self.s0,
            **({"judge": self.judge, "blocks": self.blocks} if self.is_split else {}),
        )
        self.save_nifti(np.ones(self.n_voxels, dtype=np.uint8), folder / "mask.nii.gz", fill=0)
        self.save_nifti(self.tissue, folder / "tissue.nii.gz", fill=0)
        self.save_nifti(self.s0, folder / "s0.nii.gz", fill=0)
        meta = {
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "snr": self.snr,
            "sigma": self.sigma,
            "snr_method": self.snr_method,
            "dti_max_b": self.dti_max_b,
            "shells": self.info.get("shells", find_shells(self.bvals)),
            "thin": _tissue.is_thin(self.shape),
            "erosion": _erosion_note(self.shape),
            "n_voxels": self.n_voxels,
            "n_fit_voxels": self.n_fit_voxels,
            "n_judge_voxels": self.n_judge_voxels,
            "split": self.info.get("split", "not split: every voxel is fitted and judged"),
            "info": self.info,
        }
        save_json(meta, folder / "subject.json")
        return folder

    @classmethod
    def load(cls, folder):
        """Read a subject written by :meth:`save`."""
        folder = Path(folder)
        npz, meta = folder / "subject.npz", folder / "subject.json"
        for p in (npz, meta):
            if not p.is_file():
                raise ValueError(f"{p}: not found; run notebook 01 (load data) for this subject first")
        meta = load_json(meta)
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        subject = cls(
            shape=tuple(meta["shape"]),
            affine=np.array(meta["affine"]),
            snr=meta["snr"],
            snr_method=meta["snr_method"],
            sigma=meta.get("sigma"),  # absent in files written before sigma was kept
            dti_max_b=float(meta.get("dti_max_b", DEFAULTS["dti_max_b"])),
            info=meta["info"],
            **arrays,
        )
        if (folder / CALIBRATION_FILE).is_file():  # Calibrated's fit, written by notebook 02
            subject.calibration = load_json(folder / CALIBRATION_FILE)
        return subject


_PART_SOURCES = frozenset(f.name for f in fields(Subject)) | {"calibration"}
"""What a subject's parts are cut from: setting one of these cuts them anew."""


def _erosion_note(shape):
    thin = [f"axis {a} has {int(s)} voxel{'s' * (int(s) != 1)}" for a, s in enumerate(shape[:3]) if int(s) <= _tissue.THIN]
    if thin:
        return f"in-plane ({', '.join(thin)}: a slab; eroding across it would leave nothing)"
    return "3-D, 6-connected"
