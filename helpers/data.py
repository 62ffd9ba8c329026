"""Real scans in, a :class:`Subject` out.

Every loader ends in :func:`load_dwi`, which reads a 4-D DWI NIfTI with its b-values and
b-vectors, checks them, keeps the b0 volumes and one shell, and returns the attenuation
E = S / S0 of the brain voxels (S0 = mean of the b0 volumes) with everything needed to
write maps back onto the scan's grid. Sources:

- :func:`load_sample`: dipy's bundled real scan ``small_64D`` (no download);
- :func:`load_hcp`: the Human Connectome Project layout, tissue from ``aparc+aseg``;
- :func:`load_bids`: ``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with ``.bval``/``.bvec``;
- :func:`load_paths`: explicit files, tissue from FSL FAST ``pve_0/1/2`` or a label map.

Without a tissue map a DTI threshold segmentation is used and marked approximate.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers import tissue as _tissue
from helpers.dti import fit_attenuation
from helpers.io import atomic_path, load_json, save_json, save_npz

__all__ = [
    "Subject",
    "load_dwi",
    "load_sample",
    "load_hcp",
    "load_bids",
    "load_paths",
    "load_subject",
    "read_gradients",
    "select_shell",
    "estimate_snr",
]

UNIT_TOLERANCE = 0.01
"""|‖g‖ − 1| allowed for diffusion-weighted b-vectors (dipy's gradient_table uses 1e-2)."""


@dataclass
class Subject:
    """One subject's brain voxels, ready for simulation, training and evaluation.

    Attributes
    ----------
    attenuation : (n, m) float32 ndarray
        E = S / S0 of the n brain voxels on the m directions of the selected shell.
    bvals : (m,) ndarray
        b-values in s/mm² of those directions.
    bvecs : (m, 3) ndarray
        Their unit gradient directions.
    indices : (n, 3) int ndarray
        Voxel coordinates of each row on the scan's grid.
    shape : tuple of 3 int
        The grid's shape.
    affine : (4, 4) ndarray
        The grid's voxel-to-world affine.
    tissue : (n,) uint8 ndarray
        0 none, 1 CSF, 2 GM, 3 WM (:mod:`helpers.tissue`).
    s0 : (n,) float32 ndarray
        Mean b0 signal (scanner units).
    snr : float or None
        Estimated SNR of the b0 signal; ``snr_method`` says how it was estimated.
    info : dict
        Provenance and counts: dataset, subject, files, tissue source, voxels excluded.
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
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self._tensor = None

    @property
    def n_voxels(self):
        return self.attenuation.shape[0]

    @property
    def n_directions(self):
        return self.attenuation.shape[1]

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
        """(n,) boolean mask of tissue ``name`` ("WM", "GM", "CSF"), optionally eroded
        by one voxel on the 3-D grid."""
        if name not in _tissue.CODES:
            raise ValueError(f"unknown tissue {name!r}; allowed: {list(_tissue.CODES)}")
        mask = self.tissue == _tissue.CODES[name]
        if not eroded:
            return mask
        vol = self.volume(mask, fill=False)
        return _tissue.erode(vol)[tuple(self.indices.T)]

    def tensor(self):
        """The WLS tensor fit of [S0=1, E] for every voxel (computed once, then cached)."""
        if self._tensor is None:
            self._tensor = fit_attenuation(self.bvals, self.bvecs, self.attenuation)
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
        """Write ``subject.npz`` + ``subject.json`` (and NIfTI maps for viewing) to ``folder``."""
        folder = Path(folder)
        save_npz(
            folder / "subject.npz",
            attenuation=self.attenuation,
            bvals=self.bvals,
            bvecs=self.bvecs,
            indices=self.indices,
            tissue=self.tissue,
            s0=self.s0,
        )
        self.save_nifti(np.ones(self.n_voxels, dtype=np.uint8), folder / "mask.nii.gz", fill=0)
        self.save_nifti(self.tissue, folder / "tissue.nii.gz", fill=0)
        self.save_nifti(self.s0, folder / "s0.nii.gz", fill=0)
        meta = {
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "snr": self.snr,
            "snr_method": self.snr_method,
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
        return cls(
            shape=tuple(meta["shape"]),
            affine=np.array(meta["affine"]),
            snr=meta["snr"],
            snr_method=meta["snr_method"],
            info=meta["info"],
            **arrays,
        )


# ----------------------------------------------------------------------------- reading


def _load_image(path, *, what="image"):
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {what} file not found")
    try:
        return nib.load(path, keep_file_open=True) if str(path).endswith(".gz") else nib.load(path)
    except Exception as e:  # nibabel raises several types for unreadable headers
        raise ValueError(f"{path}: not a readable NIfTI {what} ({e})") from e


def _read(img, index=(), *, path):
    """Read (part of) an image's data, turning decompression/short-file errors into one
    clear message naming the file."""
    try:
        return np.asarray(img.dataobj[index] if index != () else img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as e:
        raise ValueError(f"{path}: corrupt or truncated NIfTI ({e})") from e


def _check_same_grid(img, shape, affine, *, path, ref_path, what):
    """Raise unless ``img`` lies on the grid (shape, affine) of the DWI at ``ref_path``."""
    same_shape = tuple(img.shape[:3]) == tuple(shape[:3])
    same_affine = np.allclose(img.affine, affine, atol=1e-3)
    if not (same_shape and same_affine):
        problem = [] if same_shape else [f"shape {tuple(img.shape[:3])} vs {tuple(shape[:3])}"]
        problem += [] if same_affine else ["the voxel-to-world affines differ"]
        raise ValueError(f"{path}: {what} on another grid than {ref_path} ({'; '.join(problem)})")


def read_gradients(bval_path, bvec_path):
    """Read FSL-style ``bvals``/``bvecs`` text files.

    Returns
    -------
    bvals : (k,) ndarray
    bvecs : (k, 3) ndarray
        b-vectors; accepts the 3 x k (FSL) or k x 3 layout.
    """
    bval_path, bvec_path = Path(bval_path), Path(bvec_path)
    arrays = []
    for p, what in ((bval_path, "b-values"), (bvec_path, "b-vectors")):
        if not p.is_file():
            raise ValueError(f"{p}: {what} file not found")
        try:
            arrays.append(np.loadtxt(p, ndmin=2))
        except ValueError as e:
            raise ValueError(f"{p}: {what} file is not a table of numbers ({e})") from e
    bvals, bvecs = arrays
    if min(bvals.shape) != 1:
        raise ValueError(f"{bval_path}: b-values must be one row or column, got shape {bvals.shape}")
    bvals = bvals.ravel()
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    elif bvecs.shape[1] != 3:
        raise ValueError(f"{bvec_path}: b-vectors must be 3 x k or k x 3, got shape {bvecs.shape}")
    if len(bvals) != len(bvecs):
        raise ValueError(f"{bvec_path} has {len(bvecs)} b-vectors but {bval_path} has {len(bvals)} b-values")
    return bvals, bvecs


def check_gradients(bvals, bvecs, n_volumes, *, b0_threshold=50.0, dwi_path="", bvec_path=""):
    """Validate a gradient scheme against its DWI; returns b-vectors with b0 rows zeroed.

    Raises ``ValueError`` when counts disagree, there is no b0 volume, or a
    diffusion-weighted b-vector is not unit length (within :data:`UNIT_TOLERANCE`).
    Zero or NaN b-vectors at b0 are fine (dipy's sample stores NaN there).
    """
    if len(bvals) != n_volumes:
        raise ValueError(f"{dwi_path} has {n_volumes} volumes but there are {len(bvals)} b-values/b-vectors")
    b0 = bvals <= b0_threshold
    if not b0.any():
        raise ValueError(f"{dwi_path}: no b0 volume (no b-value <= {b0_threshold}); S0 cannot be computed")
    bvecs = np.where(b0[:, None], 0.0, bvecs)
    norms = np.linalg.norm(bvecs[~b0], axis=1)
    bad = ~(np.abs(norms - 1) <= UNIT_TOLERANCE)
    if bad.any():
        i = np.flatnonzero(~b0)[np.argmax(bad)]
        raise ValueError(
            f"{bvec_path}: {bad.sum()} diffusion-weighted b-vector(s) are not unit length "
            f"(volume {i}: norm {np.linalg.norm(bvecs[i]):.4g}, b={bvals[i]:g})"
        )
    return bvecs


def select_shell(bvals, shell, *, tolerance=100.0, b0_threshold=50.0, source=""):
    """Indices of the volumes on the shell ``|b - shell| <= tolerance`` (b0 excluded)."""
    bvals = np.asarray(bvals, dtype=float)
    idx = np.flatnonzero((np.abs(bvals - shell) <= tolerance) & (bvals > b0_threshold))
    if idx.size == 0:
        shells = np.unique(np.round(bvals[bvals > b0_threshold], -1)).astype(int).tolist()
        raise ValueError(f"{source}: no volume in the b={shell:g} shell (±{tolerance:g}); b-values present: {shells}")
    return idx


def estimate_snr(subject, b0):
    """SNR of the b0 signal, and how it was estimated.

    With three or more b0 volumes: 1 / sqrt(mean over brain voxels of var/mean² across
    the repeats) — the relative noise variance is pooled before the square root, since
    a per-voxel mean/std from a few repeats overestimates the SNR (by ~20% with three).
    With fewer (the sample has one), the noise σ is the median over brain voxels
    of S0 × the standard deviation of the residuals of the voxel's tensor fit (64 - 6
    degrees of freedom), and SNR = median brain S0 / σ. Model misfit (crossing fibres)
    adds to the residuals, so this errs towards a lower SNR.

    Parameters
    ----------
    subject : Subject
        Brain voxels (attenuation, S0, gradients).
    b0 : (n, k) ndarray
        The b0 signals of the same voxels.
    """
    k = b0.shape[1]
    if k >= 3:
        mean, var = b0.mean(axis=1), b0.var(axis=1, ddof=1)
        ok = mean > 0
        rel_var = float(np.mean(var[ok] / mean[ok] ** 2))
        snr = 1 / np.sqrt(rel_var) if rel_var > 0 else float("nan")
        return float(snr), f"1/sqrt(pooled var/mean² across {k} b0 repeats over brain voxels)"
    fit = subject.tensor()
    quad = np.einsum("mi,nij,nj,nkj,mk->nm", subject.bvecs, fit.evecs, fit.evals, fit.evecs, subject.bvecs)
    resid = subject.attenuation - np.exp(-subject.bvals * quad)
    dof = max(subject.n_directions - 6, 1)
    sigma = float(np.median(subject.s0 * np.sqrt((resid**2).sum(axis=1) / dof)))
    return float(np.median(subject.s0) / sigma), "median brain S0 / sigma from tensor-fit residuals (one b0: no repeats)"


def load_dwi(
    dwi,
    bval,
    bvec,
    *,
    mask=None,
    tissue=None,
    tissue_source="",
    shell=1000.0,
    shell_tolerance=100.0,
    b0_threshold=50.0,
    dataset="",
    subject="",
):
    """Read a DWI scan into a :class:`Subject`: the core every loader ends in.

    Parameters
    ----------
    dwi, bval, bvec : path
        4-D NIfTI and FSL-style gradient files.
    mask : path, "all" or None
        Brain mask on the DWI grid; "all" uses every voxel (for a crop that lies inside
        the brain); None computes one with dipy's ``median_otsu`` on the mean b0.
    tissue : callable or None
        ``tissue(indices, affine, shape) -> (n,) uint8`` codes for the brain voxels; None
        uses the approximate DTI segmentation (:func:`helpers.tissue.dti_segmentation`).
    tissue_source : str
        How the tissue was obtained, for the report.
    shell, shell_tolerance, b0_threshold : float
        Volumes with |b - shell| <= tolerance are used; b <= b0_threshold are b0.

    Notes
    -----
    Only the b0 volumes and the shell's volumes are read, one at a time (in file order,
    so a gzipped file is decompressed once). Voxels in the mask with S0 <= 0 or a
    non-finite value are excluded and counted in ``info``.
    """
    dwi = Path(dwi)
    img = _load_image(dwi, what="DWI")
    if len(img.shape) != 4:
        raise ValueError(f"{dwi}: DWI must be 4-D, got shape {img.shape}")
    bvals, bvecs = read_gradients(bval, bvec)
    bvecs = check_gradients(bvals, bvecs, img.shape[3], b0_threshold=b0_threshold, dwi_path=dwi, bvec_path=bvec)
    shell_idx = select_shell(bvals, shell, tolerance=shell_tolerance, b0_threshold=b0_threshold, source=str(bval))
    b0_idx = np.flatnonzero(bvals <= b0_threshold)

    if isinstance(mask, str) and mask == "all":
        brain = np.ones(img.shape[:3], dtype=bool)
        mask_source = "all voxels of the volume"
    elif mask is not None:
        mask_img = _load_image(mask, what="mask")
        _check_same_grid(mask_img, img.shape, img.affine, path=mask, ref_path=dwi, what="mask")
        brain = _read(mask_img, path=mask) > 0
        if brain.ndim == 4:
            brain = brain[..., 0]
        mask_source = str(mask)
    else:
        brain = None
        mask_source = "dipy median_otsu on the mean b0"

    # Volumes are read one at a time in file order, so a gzipped file is decompressed
    # once. With a mask, b0 and shell volumes come in one pass and only brain voxels are
    # kept; without one, the b0 volumes are read whole first (median_otsu needs them).
    if brain is None:
        from dipy.segment.mask import median_otsu

        b0_full = np.empty(img.shape[:3] + (len(b0_idx),), dtype=np.float32)
        for j, i in enumerate(b0_idx):
            b0_full[..., j] = _read(img, (..., int(i)), path=dwi)
        _, brain = median_otsu(b0_full.mean(axis=-1), median_radius=2, numpass=1)
    if not brain.any():
        raise ValueError(f"{mask if mask is not None else dwi}: the brain mask is empty")
    indices = np.argwhere(brain)
    ii = tuple(indices.T)
    signal = np.empty((len(indices), len(shell_idx)), dtype=np.float32)
    slots = {int(i): (signal, j) for j, i in enumerate(shell_idx)}
    if mask is None:
        b0 = b0_full[ii]
        del b0_full
    else:
        b0 = np.empty((len(indices), len(b0_idx)), dtype=np.float32)
        slots.update({int(i): (b0, j) for j, i in enumerate(b0_idx)})
    for i in sorted(slots):
        target, j = slots[i]
        target[:, j] = _read(img, (..., i), path=dwi)[ii]
    s0 = b0.mean(axis=1)

    bad_s0 = ~(np.isfinite(s0) & (s0 > 0))
    bad_signal = ~np.isfinite(signal).all(axis=1) & ~bad_s0
    keep = ~(bad_s0 | bad_signal)
    if not keep.any():
        raise ValueError(f"{dwi}: no brain voxel has a positive, finite S0 and finite signal")
    indices, signal, s0, b0 = indices[keep], signal[keep], s0[keep], b0[keep]
    attenuation = (signal / s0[:, None]).astype(np.float32)

    info = {
        "dataset": dataset,
        "subject": subject,
        "dwi": str(dwi),
        "bval": str(bval),
        "bvec": str(bvec),
        "mask": mask_source,
        "shell": float(shell),
        "n_b0": int(len(b0_idx)),
        "n_volumes_file": int(img.shape[3]),
        "n_mask_voxels": int(brain.sum()),
        "n_excluded_nonpositive_or_nonfinite_s0": int(bad_s0.sum()),
        "n_excluded_nonfinite_signal": int(bad_signal.sum()),
        "n_voxels": int(keep.sum()),
        "voxel_size_mm": [float(v) for v in img.header.get_zooms()[:3]],
    }
    subj = Subject(
        attenuation=attenuation,
        bvals=bvals[shell_idx].astype(float),
        bvecs=bvecs[shell_idx].astype(float),
        indices=indices,
        shape=tuple(int(s) for s in img.shape[:3]),
        affine=np.asarray(img.affine, dtype=float),
        tissue=np.zeros(len(indices), dtype=np.uint8),
        s0=s0.astype(np.float32),
        info=info,
    )
    subj.snr, subj.snr_method = estimate_snr(subj, b0)
    if tissue is None:
        fit = subj.tensor()
        subj.tissue = _tissue.dti_segmentation(fit.fa, fit.md)
        tissue_source = "approximate: DTI thresholds (FA >= 0.3 WM, MD >= 1.6e-3 mm²/s CSF, else GM)"
    else:
        subj.tissue = np.asarray(tissue(indices, subj.affine, subj.shape), dtype=np.uint8)
    info["tissue_source"] = tissue_source
    info["tissue_counts"] = {name: int((subj.tissue == code).sum()) for name, code in _tissue.CODES.items()}
    return subj


def _tissue_from_grid(path, ref_img_path, convert):
    """A ``tissue`` callable for :func:`load_dwi` reading a map that must share the DWI grid."""

    def lookup(indices, affine, shape):
        img = _load_image(path, what="tissue map")
        _check_same_grid(img, shape, affine, path=path, ref_path=ref_img_path, what="tissue map")
        return convert(_read(img, path=path))[tuple(indices.T)]

    return lookup


# ----------------------------------------------------------------------------- sources


def load_sample(**kwargs):
    """dipy's bundled real scan ``small_64D`` (10x10x10 voxels, 2 mm, 1 b0 + 64 directions
    at b=1000), found inside the installed dipy package; nothing is downloaded.

    The volume is a crop from inside the brain (white matter, grey matter and the edge of
    a ventricle), so every voxel is used (``median_otsu`` would keep only the bright CSF
    of the b0). It has no tissue map: tissue comes from the approximate DTI segmentation.
    Keyword arguments go to :func:`load_dwi`.
    """
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    kwargs.setdefault("dataset", "sample")
    kwargs.setdefault("subject", "small_64D")
    kwargs.setdefault("mask", "all")
    return load_dwi(files / "small_64D.nii", files / "small_64D.bval", files / "small_64D.bvec", **kwargs)


def load_hcp(root, subject_id, **kwargs):
    """A Human Connectome Project subject (preprocessed ``T1w/Diffusion`` layout).

    Reads ``<root>/<id>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}``;
    tissue from ``<root>/<id>/T1w/aparc+aseg.nii.gz`` resampled nearest-neighbour onto the
    diffusion grid and mapped to WM/GM/CSF (:func:`helpers.tissue.freesurfer_to_tissue`).
    """
    base = Path(root) / str(subject_id) / "T1w"
    diff = base / "Diffusion"
    if not diff.is_dir():
        raise ValueError(f"{diff}: HCP subject folder not found (expected <root>/<id>/T1w/Diffusion)")
    aseg = base / "aparc+aseg.nii.gz"

    def tissue(indices, affine, shape):
        img = _load_image(aseg, what="aparc+aseg")
        labels = _read(img, path=aseg)
        return _tissue.freesurfer_to_tissue(_tissue.nearest_neighbour_lookup(labels, img.affine, indices, affine))

    kwargs.setdefault("subject", str(subject_id))
    subj = load_dwi(
        diff / "data.nii.gz",
        diff / "bvals",
        diff / "bvecs",
        mask=diff / "nodif_brain_mask.nii.gz",
        tissue=tissue,
        tissue_source=f"FreeSurfer {aseg}, nearest-neighbour onto the diffusion grid",
        **kwargs,
    )
    # benchmarks/make_hcp_like.py marks its phantoms so that no report passes one off as a scan
    subj.info["synthetic"] = (Path(root) / str(subject_id) / "SYNTHETIC.txt").is_file()
    return subj


def load_bids(root, subject_id, **kwargs):
    """A BIDS subject: ``<root>/sub-<id>/[ses-*/]dwi/*_dwi.nii[.gz]`` with ``.bval``/``.bvec``.

    Exactly one DWI run must match; raw BIDS has no tissue map, so the approximate DTI
    segmentation is used.
    """
    sid = str(subject_id).removeprefix("sub-")
    folder = Path(root) / f"sub-{sid}"
    if not folder.is_dir():
        raise ValueError(f"{folder}: BIDS subject folder not found")
    runs = sorted(folder.glob("dwi/*_dwi.nii*")) + sorted(folder.glob("ses-*/dwi/*_dwi.nii*"))
    if not runs:
        raise ValueError(f"{folder}: no dwi/*_dwi.nii.gz found")
    if len(runs) > 1:
        raise ValueError(f"{folder}: {len(runs)} DWI runs found ({[r.name for r in runs]}); keep one per subject")
    dwi = runs[0]
    stem = dwi.name.split(".nii")[0]
    kwargs.setdefault("subject", sid)
    return load_dwi(dwi, dwi.with_name(stem + ".bval"), dwi.with_name(stem + ".bvec"), **kwargs)


_PATH_KEYS = {"dwi", "bval", "bvec", "mask", "pve", "labels"}


def load_paths(dwi, bval, bvec, *, mask=None, pve=None, labels=None, label_scheme="fast", **kwargs):
    """A scan given by explicit file paths.

    Parameters
    ----------
    pve : sequence of 3 paths, optional
        FSL FAST partial volume maps ``pve_0, pve_1, pve_2`` (CSF, GM, WM) on the DWI grid.
    labels : path, optional
        A label map on the DWI grid: FAST ``_seg`` codes (``label_scheme="fast"``: 1 CSF,
        2 GM, 3 WM) or FreeSurfer labels (``"freesurfer"``).
    """
    if pve is not None and labels is not None:
        raise ValueError("give either pve (FSL FAST maps) or labels, not both")
    tissue, source = None, ""
    if pve is not None:
        if len(pve) != 3:
            raise ValueError(f"pve must list 3 files (pve_0 CSF, pve_1 GM, pve_2 WM), got {len(pve)}")
        lookups = [_tissue_from_grid(p, dwi, lambda a: a) for p in pve]
        tissue = lambda indices, affine, shape: _tissue.pve_to_tissue(*(f(indices, affine, shape) for f in lookups))  # noqa: E731

        source = f"FSL FAST partial volumes {[str(p) for p in pve]} (largest fraction >= 0.5)"
    elif labels is not None:
        if label_scheme not in ("fast", "freesurfer"):
            raise ValueError(f"label_scheme must be 'fast' or 'freesurfer', got {label_scheme!r}")
        convert = (
            _tissue.freesurfer_to_tissue
            if label_scheme == "freesurfer"
            else lambda a: _tissue.fast_labels_to_tissue(a, source=str(labels))
        )
        tissue = _tissue_from_grid(labels, dwi, convert)
        source = f"label map {labels} ({label_scheme})"
    return load_dwi(dwi, bval, bvec, mask=mask, tissue=tissue, tissue_source=source, **kwargs)


def load_subject(config, subject_id):
    """Load one subject of a dataset config (:func:`helpers.config.load_config`)."""
    sid = str(subject_id)
    ids = [str(s) for s in config.subject_ids]
    if sid not in ids:
        raise ValueError(f"{config.path}: subject {sid!r} is not listed; subjects: {ids}")
    common = dict(
        shell=config.shell,
        shell_tolerance=config.shell_tolerance,
        b0_threshold=config.b0_threshold,
        dataset=config.dataset,
        subject=sid,
    )
    if config.kind == "sample":
        return load_sample(**common)
    if config.kind == "hcp":
        return load_hcp(config.root, sid, **common)
    if config.kind == "bids":
        return load_bids(config.root, sid, **common)
    # kind == "paths": subjects maps id -> files, relative to root (or the config's folder)
    entry = {str(k): v for k, v in config.subjects.items()}[sid] if isinstance(config.subjects, dict) else None
    if not isinstance(entry, dict):
        raise ValueError(f"{config.path}: kind 'paths' needs subjects as a mapping id -> {{dwi, bval, bvec, ...}}")
    unknown = sorted(set(entry) - _PATH_KEYS)
    if unknown:
        raise ValueError(f"{config.path}: subject {sid}: unknown key(s) {unknown}; allowed: {sorted(_PATH_KEYS)}")
    base = config.root or config.path.parent

    def resolve(p):
        p = Path(p).expanduser()
        return p if p.is_absolute() else base / p

    files = {k: ([resolve(p) for p in v] if k == "pve" else v if v == "all" else resolve(v)) for k, v in entry.items()}
    missing = {"dwi", "bval", "bvec"} - set(files)
    if missing:
        raise ValueError(f"{config.path}: subject {sid} lacks {sorted(missing)}")
    return load_paths(
        files.pop("dwi"), files.pop("bval"), files.pop("bvec"), label_scheme=config.labels, **files, **common
    )
