"""Real scans in, a :class:`Subject` out.

Every loader ends in :func:`load_dwi`, which reads a 4-D DWI NIfTI with its b-values and
b-vectors, checks them, keeps the b0 volumes and the selected shell(s), and returns the
attenuation E = S / S0 of the brain voxels (S0 = mean of the b0 volumes) with everything
needed to write maps back onto the scan's grid. Sources:

- :func:`load_sample`: dipy's bundled real scan ``small_64D`` (no download);
- :func:`load_hcp`: the Human Connectome Project layout, tissue from ``aparc+aseg``;
- :func:`load_bids`: ``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with ``.bval``/``.bvec``;
- :func:`load_paths`: explicit files, tissue from FSL FAST ``pve_0/1/2`` or a label map.

Shells (docs/method.md, "Data flow"): ``shell`` is a b-value, a list of b-values or ``"all"``.
Every selected volume keeps its own b-value; tensor-derived quantities (FA, direction,
the DTI tissue segmentation, the single-b0 SNR fallback) use only the selected volumes
with b <= ``dti_max_b`` (:attr:`Subject.dti_columns`), which must hold at least 6
non-collinear directions.

Without a tissue map a DTI threshold segmentation is used and marked approximate.
:func:`inspect_subject` checks one subject's files from their headers and gradient
tables alone (``synthqa check``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers import noise as _noise
from helpers import tissue as _tissue
from helpers.contract import DEFAULTS, parse_shell
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
    "inspect_subject",
    "read_gradients",
    "check_gradients",
    "select_shell",
    "find_shells",
    "count_directions",
    "check_dti_directions",
]

UNIT_TOLERANCE = 0.01
"""|‖g‖ − 1| allowed for diffusion-weighted b-vectors (dipy's gradient_table uses 1e-2)."""

MIN_DTI_DIRECTIONS = 6
"""A tensor has 6 unknowns besides S0: it needs at least 6 non-collinear directions."""

COLLINEAR_DEGREES = 1.0
"""Two gradient directions closer than this (either sign) count as one direction."""

MASK_KEEP_FRACTION = 0.5
"""Without a mask, ``median_otsu`` keeping less than this fraction of the voxels with a
finite positive S0 (and dropping voxels that attenuate like tissue) is taken for a crop
inside the brain: every such voxel is used (:func:`_automatic_mask`)."""

AIR_ATTENUATION = 0.8
"""Median S/S0 above which the voxels ``median_otsu`` drops are taken for background:
noise in air does not attenuate with diffusion weighting (S/S0 about 1), tissue does."""


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
        0 none, 1 CSF, 2 GM, 3 WM (:mod:`helpers.tissue`).
    s0 : (n,) float32 ndarray
        Mean b0 signal (scanner units).
    snr : float or None
        Estimated SNR of the b0 signal (median S0 / sigma); ``snr_method`` says how.
    sigma : float or None
        Estimated noise standard deviation, scanner units (:mod:`helpers.noise`).
    dti_max_b : float
        Tensor-derived quantities use the volumes with b <= this (s/mm²).
    info : dict
        Provenance and counts: dataset, subject, files, shells, mask and tissue source,
        voxels excluded, whether erosion is in-plane.
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

    def __post_init__(self):
        self._tensor = None

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
        """Expected signal MAE of a perfect denoiser (:func:`helpers.noise.noise_floor_mae`);
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
        one voxel (:func:`helpers.tissue.erode`: 6-connected in 3-D, in-plane on a scan
        of one or two slices). A class with no voxel gives an all-False mask."""
        if name not in _tissue.CODES:
            raise ValueError(f"unknown tissue {name!r}; allowed: {list(_tissue.CODES)}")
        mask = self.tissue == _tissue.CODES[name]
        if not eroded or not mask.any():
            return mask
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
            sigma=meta.get("sigma"),  # absent in files written before sigma was kept
            dti_max_b=float(meta.get("dti_max_b", DEFAULTS["dti_max_b"])),
            info=meta["info"],
            **arrays,
        )


def _erosion_note(shape):
    thin = [f"axis {a} has {int(s)} voxel{'s' * (int(s) != 1)}" for a, s in enumerate(shape[:3]) if int(s) <= _tissue.THIN]
    if thin:
        return f"in-plane ({', '.join(thin)}: a slab; eroding across it would leave nothing)"
    return "3-D, 6-connected"


# ----------------------------------------------------------------------------- reading


def _load_image(path, *, what="image"):
    """Open a NIfTI (header only: nibabel reads data lazily), naming the file on failure."""
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


def _check_file_size(img, path):
    """An uncompressed NIfTI shorter than its header promises is truncated (checked
    without reading the data; a gzipped file can only be checked by reading it)."""
    path = Path(path)
    if str(path).endswith(".gz"):
        return
    header = img.header
    offset = getattr(img.dataobj, "offset", None)
    offset = int(header["vox_offset"]) if offset is None else int(offset)
    expected = offset + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise ValueError(f"{path}: truncated NIfTI ({actual} bytes; the header promises {expected})")


def read_gradients(bval_path, bvec_path):
    """Read FSL-style ``bvals``/``bvecs`` text files.

    Returns
    -------
    bvals : (k,) ndarray
        b-values in s/mm²: one row or one column in the file.
    bvecs : (k, 3) ndarray
        b-vectors; accepts the 3 x k (FSL) or k x 3 layout. NaN at b0 is kept here and
        zeroed by :func:`check_gradients`.
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
    if bvals.size == 0 or min(bvals.shape) != 1:
        raise ValueError(f"{bval_path}: b-values must be one row or column, got shape {bvals.shape}")
    bvals = bvals.ravel()
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    elif bvecs.shape[1] != 3:
        raise ValueError(f"{bvec_path}: b-vectors must be 3 x k or k x 3, got shape {bvecs.shape}")
    if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
        bad = np.flatnonzero(~(np.isfinite(bvals) & (bvals >= 0)))
        raise ValueError(f"{bval_path}: b-values must be finite and >= 0 (volume {bad[0]}: {bvals[bad[0]]})")
    if len(bvals) != len(bvecs):
        raise ValueError(f"{bvec_path} has {len(bvecs)} b-vectors but {bval_path} has {len(bvals)} b-values")
    return bvals, bvecs


def check_gradients(bvals, bvecs, n_volumes, *, b0_threshold=DEFAULTS["b0_threshold"], dwi_path="", bvec_path=""):
    """Validate a gradient scheme against its DWI; returns b-vectors with b0 rows zeroed.

    Raises ``ValueError`` when counts disagree, there is no b0 volume, or a
    diffusion-weighted b-vector is not unit length (within :data:`UNIT_TOLERANCE`).
    Zero or NaN b-vectors at b0 are fine (dipy's sample stores NaN there).
    """
    if len(bvals) != n_volumes:
        raise ValueError(f"{dwi_path} has {n_volumes} volumes but there are {len(bvals)} b-values/b-vectors")
    b0 = bvals <= b0_threshold
    if not b0.any():
        raise ValueError(f"{dwi_path}: no b0 volume (no b-value <= {b0_threshold:g}); S0 cannot be computed")
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


# ----------------------------------------------------------------------------- shells


def find_shells(bvals, *, b0_threshold=DEFAULTS["b0_threshold"], tolerance=DEFAULTS["shell_tolerance"]):
    """The shells of a gradient table: diffusion-weighted b-values grouped where sorted
    neighbours lie within ``tolerance`` of each other.

    Returns
    -------
    list of dict
        One per shell, by increasing b: ``b`` (the median rounded to a multiple of 50 when
        the shell is jittered, e.g. HCP's 990-1010; the exact value when not), ``n``
        (volumes), ``b_min``, ``b_max``. A q-space scan with b spread from 300 to 4000 in
        small steps is one entry whose ``b_min``/``b_max`` say so.

    Examples
    --------
    >>> [(s["b"], s["n"]) for s in find_shells([0, 995, 1005, 1000, 2000, 2010])]
    [(1000.0, 3), (2000.0, 2)]
    """
    b = np.sort(np.asarray(bvals, dtype=float))
    b = b[b > b0_threshold]
    if b.size == 0:
        return []
    groups = np.split(b, np.flatnonzero(np.diff(b) > tolerance) + 1)
    out = []
    for g in groups:
        lo, hi = float(g[0]), float(g[-1])
        nominal = lo if lo == hi else float(50 * np.round(np.median(g) / 50))
        out.append({"b": nominal, "n": int(g.size), "b_min": lo, "b_max": hi})
    return out


def _describe_shells(shells):
    """'1000 (30 volumes), ~1000 (9 volumes, 991-1010), 300-4000 (101 volumes)'."""
    parts = []
    for s in shells:
        if s["b_min"] == s["b_max"]:
            parts.append(f"{s['b']:g} ({s['n']} volumes)")
        elif s["b_max"] - s["b_min"] <= 100:
            parts.append(f"~{s['b']:g} ({s['n']} volumes, {s['b_min']:g}-{s['b_max']:g})")
        else:
            parts.append(f"{s['b_min']:g}-{s['b_max']:g} ({s['n']} volumes spread over that range)")
    return ", ".join(parts) if parts else "none"


def select_shell(bvals, shell, *, tolerance=DEFAULTS["shell_tolerance"], b0_threshold=DEFAULTS["b0_threshold"], source=""):
    """Indices (in file order) of the selected diffusion-weighted volumes.

    Parameters
    ----------
    bvals : (k,) array_like
        b-values of the file, s/mm².
    shell : float, sequence of float or "all"
        ``"all"``: every volume with b > ``b0_threshold``; otherwise the volumes with
        ``|b - s| <= tolerance`` for any ``s`` given (:func:`helpers.contract.parse_shell`).
        Each volume keeps its own b-value.

    Raises
    ------
    ValueError
        Naming ``source`` (the b-value file), each requested shell without a volume,
        and the shells the file has.
    """
    bvals = np.asarray(bvals, dtype=float)
    shell = parse_shell(shell)
    dw = bvals > b0_threshold
    if shell == "all":
        idx = np.flatnonzero(dw)
        if idx.size == 0:
            raise ValueError(f"{source}: no diffusion-weighted volume (every b-value is <= {b0_threshold:g})")
        return idx
    hits = [(np.abs(bvals - s) <= tolerance) & dw for s in shell]
    missing = [s for s, h in zip(shell, hits) if not h.any()]
    if missing:
        which = ", ".join(f"{s:g}" for s in missing)
        raise ValueError(
            f"{source}: no volume in the b={which} shell{'s' * (len(missing) > 1)} (±{tolerance:g}); "
            f"b-values present: {_describe_shells(find_shells(bvals, b0_threshold=b0_threshold))}"
        )
    return np.flatnonzero(np.logical_or.reduce(hits))


def count_directions(bvecs, *, degrees=COLLINEAR_DEGREES):
    """Number of distinct gradient axes among ``bvecs`` (two directions within ``degrees``
    of each other, or of each other's opposite, count once).

    Examples
    --------
    >>> count_directions([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1]])
    3
    """
    g = np.asarray(bvecs, dtype=float).reshape(-1, 3)
    norms = np.linalg.norm(g, axis=1)
    g = g[norms > 0] / norms[norms > 0, None]
    if len(g) == 0:
        return 0
    same = np.abs(g @ g.T) >= np.cos(np.radians(degrees))
    # a direction is new when no earlier one is the same axis
    return int((~np.tril(same, k=-1).any(axis=1)).sum())


def _tensor_rank(bvals, bvecs):
    """Rank of the six tensor columns of the design (b gᵢgⱼ): 6 when the tensor is
    determined, whatever the number of volumes."""
    g = np.asarray(bvecs, dtype=float)
    if len(g) == 0:
        return 0
    rows = np.asarray(bvals, dtype=float)[:, None] * np.c_[
        g[:, 0] ** 2, g[:, 1] ** 2, g[:, 2] ** 2, g[:, 0] * g[:, 1], g[:, 0] * g[:, 2], g[:, 1] * g[:, 2]
    ]
    sv = np.linalg.svd(rows, compute_uv=False)
    return int((sv > 1e-3 * sv.max()).sum()) if sv.max() > 0 else 0


def check_dti_directions(bvals, bvecs, *, dti_max_b, source="", all_bvals=None, shell=None):
    """Raise unless the volumes the tensor fit uses (already restricted to b <= ``dti_max_b``)
    hold at least :data:`MIN_DTI_DIRECTIONS` non-collinear directions spanning the tensor.

    The message names ``source`` (the b-value file), the shells present (from
    ``all_bvals``) and what to set: another ``shell`` or a higher ``dti_max_b``.
    """
    n = count_directions(bvecs)
    rank = _tensor_rank(bvals, bvecs)
    if n >= MIN_DTI_DIRECTIONS and rank == 6:
        return n
    found = _describe_shells(find_shells(all_bvals if all_bvals is not None else bvals))
    chosen = "" if shell is None else f"shell {shell if shell == 'all' else ', '.join(f'{s:g}' for s in shell)}: "
    detail = f"{n} non-collinear direction{'s' * (n != 1)}"
    detail += "" if n < MIN_DTI_DIRECTIONS else f", which do not span the tensor (rank {rank} of 6)"
    raise ValueError(
        f"{source}: the tensor fit (FA, direction, tissue, SNR fallback) needs at least "
        f"{MIN_DTI_DIRECTIONS} non-collinear directions with b <= dti_max_b={dti_max_b:g}, "
        f"but the selected volumes ({chosen}{len(bvals)} with b <= {dti_max_b:g}) have {detail}. "
        f"Shells found: {found}. Set 'shell' to include a shell with >= {MIN_DTI_DIRECTIONS} directions "
        f"at b <= {dti_max_b:g}, or raise 'dti_max_b' to the b-value of a selected shell."
    )


def _gradient_plan(n_volumes, dwi, bval, bvec, *, shell, shell_tolerance, b0_threshold, dti_max_b):
    """Read and check the gradient files of a DWI with ``n_volumes`` volumes; choose the
    volumes to read. Returns a dict: bvals, bvecs (b0 rows zeroed), b0 (indices), sel
    (indices of the selected volumes, file order), dti ((len(sel),) bool), n_dti_directions."""
    bvals, bvecs = read_gradients(bval, bvec)
    bvecs = check_gradients(bvals, bvecs, n_volumes, b0_threshold=b0_threshold, dwi_path=dwi, bvec_path=bvec)
    sel = select_shell(bvals, shell, tolerance=shell_tolerance, b0_threshold=b0_threshold, source=str(bval))
    dti = bvals[sel] <= dti_max_b
    n_dirs = check_dti_directions(
        bvals[sel][dti], bvecs[sel][dti], dti_max_b=dti_max_b, source=str(bval), all_bvals=bvals, shell=shell
    )
    return dict(bvals=bvals, bvecs=bvecs, b0=np.flatnonzero(bvals <= b0_threshold), sel=sel, dti=dti, n_dti_directions=n_dirs)


def _automatic_mask(b0_full, dw_full, *, b, dwi):
    """dipy ``median_otsu`` on the mean b0, or every voxel with a finite positive S0 when
    the scan looks like a crop inside the brain. Returns (mask, sentence, fallback).

    Parameters
    ----------
    b0_full : (X, Y, Z, k) ndarray
        The b0 volumes.
    dw_full : (X, Y, Z) ndarray
        One diffusion-weighted volume (the selected one with the highest b-value ``b``).

    Notes
    -----
    The fallback is taken when ``median_otsu`` keeps fewer than half
    (:data:`MASK_KEEP_FRACTION`) of the voxels with a finite positive S0 *and* the voxels
    it drops attenuate like tissue: the median of ``dw_full`` over them divided by the
    median of one b0 volume over them is below :data:`AIR_ATTENUATION`. Background noise in air reads the same with and without
    diffusion weighting (S/S0 about 1), so a whole-head scan, whose brain may well fill
    less than half of the field of view, keeps its Otsu mask; a crop inside the brain,
    where Otsu keeps only the bright CSF of the b0 and drops grey and white matter
    (S/S0 about 0.3-0.6 at b=1000), uses every voxel. With only low b-values selected
    (b of a few hundred) tissue barely attenuates and the Otsu mask is kept.
    """
    from dipy.segment.mask import median_otsu

    mean_b0 = b0_full.mean(axis=-1)
    valid = np.isfinite(mean_b0) & (mean_b0 > 0)
    if not valid.any():
        raise ValueError(f"{dwi}: no voxel has a positive, finite S0 (mean of the b0 volumes)")
    _, otsu = median_otsu(np.where(valid, mean_b0, 0.0), median_radius=2, numpass=1)
    otsu = otsu & valid
    n_valid, n_otsu = int(valid.sum()), int(otsu.sum())
    dropped = valid & ~otsu & np.isfinite(dw_full) & np.isfinite(b0_full[..., 0])
    # ratio of medians of single volumes: magnitude noise in air has the same
    # distribution in both, so air reads 1 (a median over averaged b0s would read less)
    with np.errstate(divide="ignore", invalid="ignore"):
        attenuation = float(np.median(dw_full[dropped]) / np.median(b0_full[..., 0][dropped])) if dropped.any() else np.nan
    if n_otsu < MASK_KEEP_FRACTION * n_valid and (n_otsu == 0 or attenuation < AIR_ATTENUATION):
        sentence = (
            f"all {n_valid} voxels with a finite, positive S0: dipy median_otsu on the mean b0 kept only "
            f"{n_otsu} of them, and the voxels it dropped attenuate like tissue (median S/S0 "
            f"{attenuation:.2f} at b={b:g}), so the scan is taken for a crop that lies inside the "
            "brain; give a mask to override"
        )
        return valid, sentence, True
    return otsu, "dipy median_otsu on the mean b0", False


def load_dwi(
    dwi,
    bval,
    bvec,
    *,
    mask=None,
    tissue=None,
    tissue_source="",
    shell=(DEFAULTS["shell"],),
    shell_tolerance=DEFAULTS["shell_tolerance"],
    b0_threshold=DEFAULTS["b0_threshold"],
    dti_max_b=DEFAULTS["dti_max_b"],
    dataset="",
    subject="",
):
    """Read a DWI scan into a :class:`Subject`: the core every loader ends in.

    Parameters
    ----------
    dwi, bval, bvec : path
        4-D NIfTI (any stored data type: uint8, int16, float ...) and FSL-style gradient
        files (b-values in s/mm², one row or column; b-vectors 3 x k or k x 3).
    mask : path, "all" or None
        Brain mask on the DWI grid; "all" uses every voxel (for a crop that lies inside
        the brain); None computes one with dipy's ``median_otsu`` on the mean b0, or uses
        every voxel with a finite positive S0 when that looks like a crop (see
        :func:`_automatic_mask`; ``info["mask"]`` says which).
    tissue : callable or None
        ``tissue(indices, affine, shape) -> (n,) uint8`` codes for the brain voxels; None
        uses the approximate DTI segmentation (:func:`helpers.tissue.dti_segmentation`).
    tissue_source : str
        How the tissue was obtained, for the report.
    shell : float, sequence of float or "all"
        b-value(s) of the diffusion-weighted volumes used (each ± ``shell_tolerance``), or
        every one. A single number is accepted as a one-shell list.
    shell_tolerance, b0_threshold, dti_max_b : float
        s/mm². b <= ``b0_threshold`` are b0; tensor-derived quantities and the single-b0
        noise fallback use the selected volumes with b <= ``dti_max_b``.

    Raises
    ------
    ValueError
        Naming the file and the problem (docs/method.md, "Bad input"), including fewer than 6
        non-collinear directions at b <= ``dti_max_b`` among the selected volumes.

    Notes
    -----
    Only the b0 volumes and the selected volumes are read, one at a time (in file order,
    so a gzipped file is decompressed once). Voxels in the mask with S0 <= 0 or a
    non-finite value are excluded and counted in ``info``. The noise (sigma, SNR) comes
    from :func:`helpers.noise.estimate_noise` on the b0 repeats, or with one or two b0
    volumes on the tensor residuals of the :attr:`Subject.dti_columns`.
    """
    shell = parse_shell(shell)
    dwi = Path(dwi)
    img = _load_image(dwi, what="DWI")
    if len(img.shape) != 4:
        raise ValueError(f"{dwi}: DWI must be 4-D, got shape {img.shape}")
    plan = _gradient_plan(
        img.shape[3], dwi, bval, bvec, shell=shell, shell_tolerance=shell_tolerance,
        b0_threshold=b0_threshold, dti_max_b=dti_max_b,
    )
    bvals, bvecs, b0_idx, sel, dti = plan["bvals"], plan["bvecs"], plan["b0"], plan["sel"], plan["dti"]
    grid = tuple(int(s) for s in img.shape[:3])

    brain, mask_source, mask_fallback, b0_full = _brain_mask(mask, img, dwi, grid, b0_idx, sel, bvals)
    indices = np.argwhere(brain)
    signal, b0 = _read_brain_voxels(img, dwi, indices, sel, b0_idx, b0_full)
    del b0_full
    signal, b0, sel, b0_idx, dropped = _drop_broken_volumes(dwi, signal, b0, sel, b0_idx, bvals)
    if dropped:
        dti = bvals[sel] <= dti_max_b
        check_dti_directions(bvals[sel][dti], bvecs[sel][dti], dti_max_b=dti_max_b, source=str(bval),
                             all_bvals=bvals, shell=shell)
        plan["n_dti_directions"] = count_directions(bvecs[sel][dti])
    negative = np.isfinite(signal) & (signal < 0)
    n_negative = int(negative.sum())
    signal[negative] = 0.0  # magnitude data are not negative: clipped, as dipy's fits clip to a floor
    indices, attenuation, s0, b0, excluded = _valid_voxels(dwi, indices, signal, b0)
    del signal

    info = {
        "dataset": dataset,
        "subject": subject,
        "dwi": str(dwi),
        "bval": str(bval),
        "bvec": str(bvec),
        "dtype": str(img.get_data_dtype()),
        "mask": mask_source,
        "mask_fallback": mask_fallback,
        "shell": shell if shell == "all" else list(shell),
        "shell_tolerance": float(shell_tolerance),
        "b0_threshold": float(b0_threshold),
        "dti_max_b": float(dti_max_b),
        "shells": find_shells(bvals[sel], b0_threshold=b0_threshold, tolerance=shell_tolerance),
        "shells_in_file": find_shells(bvals, b0_threshold=b0_threshold, tolerance=shell_tolerance),
        "n_dti_volumes": int(dti.sum()),
        "n_dti_directions": int(plan["n_dti_directions"]),
        "n_b0": int(len(b0_idx)),
        "n_volumes_file": int(img.shape[3]),
        "n_mask_voxels": int(brain.sum()),
        **excluded,
        "volumes_left_out": dropped,
        "n_negative_clipped": n_negative,
        "n_voxels": int(len(indices)),
        "voxel_size_mm": [float(v) for v in img.header.get_zooms()[:3]],
        "thin": _tissue.is_thin(grid),
        "erosion": _erosion_note(grid),
    }
    subj = Subject(
        attenuation=attenuation.astype(np.float32, copy=False),
        bvals=bvals[sel].astype(float),
        bvecs=bvecs[sel].astype(float),
        indices=indices,
        shape=grid,
        affine=np.asarray(img.affine, dtype=float),
        tissue=np.zeros(len(indices), dtype=np.uint8),
        s0=s0.astype(np.float32),
        dti_max_b=float(dti_max_b),
        info=info,
    )
    _estimate_subject_noise(subj, b0)
    _assign_tissue(subj, tissue, tissue_source)
    return subj


PROBABILITY_THRESHOLD = 0.5
"""A probability mask (values in [0, 1] other than 0 and 1) keeps the voxels at or above this."""


def binary_mask(values, *, path):
    """A brain mask file's values as a boolean mask, and what was done to them.

    - Binary (0 and one other value: 1, 255, True): the non-zero voxels.
    - A probability map (values in [0, 1] that are not all 0 or 1, e.g. a brain
      extraction tool's soft mask with a small floor): thresholded at
      :data:`PROBABILITY_THRESHOLD`, and the returned note says so with the counts. Taking
      every voxel above 0 would take in the whole floor (measured on a real scan: 21,632
      voxels instead of 8,865, its SNR read 30 instead of 39).
    - Anything else (several labels, negative values, NaN) is refused: which voxels are
      brain cannot be guessed.

    Returns
    -------
    mask : bool ndarray
    note : str
        "" for a binary mask, else what was done, starting with "; ".
    """
    values = np.asarray(values)
    if values.dtype == bool:
        return values, ""
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{path}: the mask holds {int((~finite).sum())} NaN or infinite value(s); a brain mask must be 0/1 or a probability in [0, 1]")
    nonzero = np.unique(values[values != 0])
    if nonzero.size <= 1 and (nonzero.size == 0 or nonzero[0] > 0):
        return values != 0, ""
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1:
        brain = values >= PROBABILITY_THRESHOLD
        return brain, (f"; a probability mask (values {lo:.3g} to {hi:.3g}) thresholded at {PROBABILITY_THRESHOLD:g}: "
                       f"{int(brain.sum()):,} voxels kept of {int((values > 0).sum()):,} above 0")
    raise ValueError(
        f"{path}: the mask holds {nonzero.size} different non-zero values from {lo:.4g} to {hi:.4g}; a brain mask must be "
        "binary (0 and 1) or a probability in [0, 1] (thresholded at 0.5). A label map belongs under 'labels'"
    )


def _brain_mask(mask, img, dwi, grid, b0_idx, sel, bvals):
    """The brain mask of :func:`load_dwi`: ``"all"``, a mask file on the DWI grid, or
    automatic. Returns (mask, how it was made, whether the automatic mask fell back to
    every voxel, the whole b0 volumes when they had to be read for it, else None)."""
    if isinstance(mask, str) and mask == "all":
        return np.ones(grid, dtype=bool), "all voxels of the volume", False, None
    if mask is not None:
        mask_img = _load_image(mask, what="mask")
        _check_same_grid(mask_img, img.shape, img.affine, path=mask, ref_path=dwi, what="mask")
        brain, how = binary_mask(_read(mask_img, path=mask), path=mask)
        if brain.ndim == 4:
            brain = brain[..., 0]
        if not brain.any():
            raise ValueError(f"{mask}: the brain mask is empty")
        return brain, str(mask) + how, False, None
    # Automatic: the b0 volumes (and the highest-b selected volume) are read whole, in
    # file order, so a gzipped file is decompressed once.
    b0_full = np.empty(grid + (len(b0_idx),), dtype=np.float32)
    probe = int(sel[np.argmax(bvals[sel])])  # the selected volume with the highest b
    for i in sorted({*map(int, b0_idx), probe}):
        vol = _read(img, (..., i), path=dwi)
        if i == probe:
            dw_full = vol.astype(np.float32)
        if i in b0_idx:
            b0_full[..., int(np.flatnonzero(b0_idx == i)[0])] = vol
    brain, source, fallback = _automatic_mask(b0_full, dw_full, b=bvals[probe], dwi=dwi)
    if not brain.any():
        raise ValueError(f"{dwi}: the brain mask is empty")
    return brain, source, fallback, b0_full


def _read_brain_voxels(img, dwi, indices, sel, b0_idx, b0_full=None):
    """(signal (n, selected), b0 (n, k)) of the brain voxels, reading each needed volume
    once in file order (b0 comes from ``b0_full`` when the mask step read it already)."""
    ii = tuple(indices.T)
    signal = np.empty((len(indices), len(sel)), dtype=np.float32)
    slots = {int(i): (signal, j) for j, i in enumerate(sel)}
    if b0_full is not None:
        b0 = b0_full[ii]
    else:
        b0 = np.empty((len(indices), len(b0_idx)), dtype=np.float32)
        slots.update({int(i): (b0, j) for j, i in enumerate(b0_idx)})
    for i in sorted(slots):
        target, j = slots[i]
        target[:, j] = _read(img, (..., i), path=dwi)[ii]
    return signal, b0


def _drop_broken_volumes(dwi, signal, b0, sel, b0_idx, bvals):
    """Leave out volumes that hold no measurement inside the brain: all zero (a dropout, a
    conversion fault), constant, or NaN/inf everywhere. A diffusion-weighted volume of 0
    would enter every voxel as attenuation 0; a b0 of 0 would halve every S0.

    Returns
    -------
    signal, b0, sel, b0_idx
        Without the broken columns.
    dropped : list of str
        One phrase per volume left out: its index in the file, its b-value, what was wrong.

    Raises
    ------
    ValueError
        Naming the file when every b0 volume is broken.
    """
    def broken(values):
        finite = np.isfinite(values)
        if not finite.any():
            return "NaN or infinite in every brain voxel"
        v = values[finite]
        if not v.any():
            return "zero in every brain voxel"
        if v.min() == v.max():
            return f"constant ({float(v[0]):g}) in every brain voxel"
        return ""

    dropped, keep_sel, keep_b0 = [], [], []
    for columns, indices, keep in ((signal, sel, keep_sel), (b0, b0_idx, keep_b0)):
        for j, i in enumerate(indices):
            why = broken(columns[:, j])
            if why:
                dropped.append(f"volume {int(i)} (b={bvals[int(i)]:g}): {why}")
            else:
                keep.append(j)
    if not dropped:
        return signal, b0, sel, b0_idx, []
    if not keep_b0:
        raise ValueError(f"{dwi}: every b0 volume is broken ({'; '.join(dropped)}); S0 cannot be measured")
    if not keep_sel:
        raise ValueError(f"{dwi}: every selected diffusion-weighted volume is broken ({'; '.join(dropped)})")
    return (signal[:, keep_sel], b0[:, keep_b0], np.asarray(sel)[keep_sel], np.asarray(b0_idx)[keep_b0], dropped)


def load_note(info):
    """One line on what loading left out, for the console: voxels excluded, volumes left
    out, negative values clipped; "" when nothing was."""
    parts = []
    voxels = int(info.get("n_excluded_nonpositive_or_nonfinite_s0", 0)) + int(info.get("n_excluded_nonfinite_signal", 0))
    if voxels:
        parts.append(f"{voxels:,} brain voxel(s) left out ({info.get('n_excluded_nonpositive_or_nonfinite_s0', 0)} "
                     f"S0 <= 0 or not finite, {info.get('n_excluded_nonfinite_signal', 0)} non-finite signal)")
    for v in info.get("volumes_left_out", []):
        parts.append(f"{v}: left out")
    if info.get("n_negative_clipped"):
        parts.append(f"{int(info['n_negative_clipped']):,} negative value(s) clipped to 0")
    if "probability mask" in str(info.get("mask", "")):
        parts.append(str(info["mask"]).split("; ", 1)[-1])
    return "; ".join(parts)


def _valid_voxels(dwi, indices, signal, b0):
    """Drop voxels with a non-positive or non-finite S0 or a non-finite signal; returns
    (indices, attenuation, s0, b0, counts of what was excluded)."""
    s0 = b0.mean(axis=1)
    bad_s0 = ~(np.isfinite(s0) & (s0 > 0))
    bad_signal = ~np.isfinite(signal).all(axis=1) & ~bad_s0
    keep = ~(bad_s0 | bad_signal)
    if not keep.any():
        raise ValueError(f"{dwi}: no brain voxel has a positive, finite S0 and finite signal")
    excluded = {
        "n_excluded_nonpositive_or_nonfinite_s0": int(bad_s0.sum()),
        "n_excluded_nonfinite_signal": int(bad_signal.sum()),
    }
    return indices[keep], signal[keep] / s0[keep, None], s0[keep], b0[keep], excluded


def _estimate_subject_noise(subj, b0):
    """Set ``subj.sigma``, ``snr`` and ``snr_method`` (:func:`helpers.noise.estimate_noise`)."""
    dti = subj.dti_columns
    est = _noise.estimate_noise(
        b0, subj.indices, subj.shape,
        attenuation=subj.attenuation[:, dti], bvals=subj.bvals[dti], bvecs=subj.bvecs[dti],
    )
    subj.sigma, subj.snr, subj.snr_method = float(est.sigma), float(est.snr), str(est.method)
    subj.info["snr_voxels"] = int(est.n_voxels)


def _assign_tissue(subj, tissue, tissue_source):
    """Tissue codes from the ``tissue`` callable, or the approximate DTI segmentation."""
    if tissue is None:
        fit = subj.tensor()
        subj.tissue = _tissue.dti_segmentation(fit.fa, fit.md)
        tissue_source = (
            "approximate: DTI thresholds (FA >= 0.3 WM, MD >= 1.6e-3 mm²/s CSF, else GM) "
            f"on the {int(subj.dti_columns.sum())} selected volumes with b <= {subj.dti_max_b:g}"
        )
    else:
        subj.tissue = np.asarray(tissue(subj.indices, subj.affine, subj.shape), dtype=np.uint8)
    info = subj.info
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


def _sample_files():
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    return {"dwi": files / "small_64D.nii", "bval": files / "small_64D.bval", "bvec": files / "small_64D.bvec", "mask": "all"}


def _hcp_files(root, subject_id):
    base = Path(root) / str(subject_id) / "T1w"
    diff = base / "Diffusion"
    if not diff.is_dir():
        raise ValueError(f"{diff}: HCP subject folder not found (expected <root>/<id>/T1w/Diffusion)")
    return {
        "dwi": diff / "data.nii.gz",
        "bval": diff / "bvals",
        "bvec": diff / "bvecs",
        "mask": diff / "nodif_brain_mask.nii.gz",
        "aseg": base / "aparc+aseg.nii.gz",
    }


def _bids_files(root, subject_id):
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
    return {"dwi": dwi, "bval": dwi.with_name(stem + ".bval"), "bvec": dwi.with_name(stem + ".bvec"), "mask": None}


def load_sample(**kwargs):
    """dipy's bundled real scan ``small_64D`` (10x10x10 voxels, 2 mm, 1 b0 + 64 directions
    at b=1000), found inside the installed dipy package; nothing is downloaded.

    The volume is a crop from inside the brain (white matter, grey matter and the edge of
    a ventricle), so every voxel is used (``median_otsu`` would keep only the bright CSF
    of the b0). It has no tissue map: tissue comes from the approximate DTI segmentation.
    Keyword arguments go to :func:`load_dwi`.
    """
    files = _sample_files()
    kwargs.setdefault("dataset", "sample")
    kwargs.setdefault("subject", "small_64D")
    kwargs.setdefault("mask", files["mask"])
    return load_dwi(files["dwi"], files["bval"], files["bvec"], **kwargs)


def load_hcp(root, subject_id, **kwargs):
    """A Human Connectome Project subject (preprocessed ``T1w/Diffusion`` layout).

    Reads ``<root>/<id>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}``;
    tissue from ``<root>/<id>/T1w/aparc+aseg.nii.gz`` resampled nearest-neighbour onto the
    diffusion grid and mapped to WM/GM/CSF (:func:`helpers.tissue.freesurfer_to_tissue`).
    """
    files = _hcp_files(root, subject_id)
    aseg = files["aseg"]

    def tissue(indices, affine, shape):
        img = _load_image(aseg, what="aparc+aseg")
        labels = _read(img, path=aseg)
        return _tissue.freesurfer_to_tissue(_tissue.nearest_neighbour_lookup(labels, img.affine, indices, affine))

    kwargs.setdefault("subject", str(subject_id))
    subj = load_dwi(
        files["dwi"],
        files["bval"],
        files["bvec"],
        mask=files["mask"],
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
    files = _bids_files(root, subject_id)
    kwargs.setdefault("subject", str(subject_id).removeprefix("sub-"))
    return load_dwi(files["dwi"], files["bval"], files["bvec"], **kwargs)


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


def _check_listed(config, sid):
    ids = [str(s) for s in config.subject_ids]
    if sid not in ids:
        raise ValueError(f"{config.path}: subject {sid!r} is not listed; subjects: {ids}")


def _paths_files(config, sid):
    """The files of a ``kind: paths`` subject, relative to ``root`` (or the config's folder)."""
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
    files.setdefault("mask", None)
    return files


def _subject_files(config, sid):
    """dwi, bval, bvec, mask (path, "all" or None) and tissue files of one config subject."""
    if config.kind == "sample":
        return _sample_files()
    if config.kind == "hcp":
        return _hcp_files(config.root, sid)
    if config.kind == "bids":
        return _bids_files(config.root, sid)
    return _paths_files(config, sid)


def load_subject(config, subject_id):
    """Load one subject of a dataset config (:func:`helpers.config.load_config`), with the
    config's shell, tolerance, b0 threshold and ``dti_max_b`` (``config.load_settings()``)."""
    sid = str(subject_id)
    _check_listed(config, sid)
    common = dict(config.load_settings(), dataset=config.dataset, subject=sid)
    if config.kind == "sample":
        return load_sample(**common)
    if config.kind == "hcp":
        return load_hcp(config.root, sid, **common)
    if config.kind == "bids":
        return load_bids(config.root, sid, **common)
    files = _paths_files(config, sid)
    return load_paths(
        files.pop("dwi"), files.pop("bval"), files.pop("bvec"), label_scheme=config.labels, **files, **common
    )


def _generator_problems(methods, bvals, bvecs):
    """What a run would find wrong with the config's own generators on this subject's
    volumes, in a second: a ``library:PATH`` is read and matched to the volumes; a
    ``package.module:function`` is imported and called on 8 voxels (one that takes the
    subject is only imported: the subject is not loaded here)."""
    from helpers.contract import is_library, is_plugin, load_plugin
    from helpers.simulation import call_plugin, library_columns

    problems = []
    for spec in methods:
        try:
            if is_library(spec):
                library_columns(spec, bvals, bvecs)
            elif is_plugin(spec):
                _, wants_subject = load_plugin(spec)
                if not wants_subject:
                    call_plugin(spec, bvals, bvecs, 8, np.random.default_rng(0))
        except ValueError as e:
            problems.append(str(e))
    return problems


def inspect_subject(config, subject_id):
    """Check one subject's files quickly, without reading any image data (``synthqa check``).

    Reads the NIfTI headers (nibabel loads data lazily) and the gradient tables, and checks
    what :func:`load_subject` would refuse: files present and readable, a 4-D DWI,
    gradient and volume counts, a b0 volume, unit b-vectors, the requested shells, at
    least 6 non-collinear directions with b <= ``dti_max_b``, the mask and tissue maps on
    the DWI grid, and (uncompressed files only) a file as long as its header promises.
    What needs the data (an empty mask, S0 <= 0, a truncated gzip stream) is found when
    the subject loads.

    Returns
    -------
    dict
        dataset, subject, files, shape, voxel_size_mm, dtype, n_volumes, n_b0,
        shells_in_file, shells (selected), n_selected, n_dti_volumes, n_dti_directions,
        thin, erosion, mask, tissue.

    Raises
    ------
    ValueError
        Naming the config, the subject and every problem found (one per line, each
        naming its file).
    """
    sid = str(subject_id)
    _check_listed(config, sid)
    settings = config.load_settings()
    shell, tol = parse_shell(settings["shell"]), settings["shell_tolerance"]
    b0_thr, dti_max_b = settings["b0_threshold"], settings["dti_max_b"]
    files = _subject_files(config, sid)
    problems = []
    report = {
        "dataset": config.dataset,
        "subject": sid,
        "files": {k: ([str(p) for p in v] if isinstance(v, list) else None if v is None else str(v)) for k, v in files.items()},
    }

    img = None
    try:
        img = _load_image(files["dwi"], what="DWI")
        if len(img.shape) != 4:
            raise ValueError(f"{files['dwi']}: DWI must be 4-D, got shape {img.shape}")
        _check_file_size(img, files["dwi"])
        grid = tuple(int(s) for s in img.shape[:3])
        report.update(
            shape=list(grid),
            voxel_size_mm=[float(v) for v in img.header.get_zooms()[:3]],
            dtype=str(img.get_data_dtype()),
            n_volumes=int(img.shape[3]),
            thin=_tissue.is_thin(grid),
            erosion=_erosion_note(grid),
        )
    except ValueError as e:
        problems.append(str(e))
        img = img if img is not None and len(img.shape) == 4 else None

    try:
        bvals, bvecs = read_gradients(files["bval"], files["bvec"])
    except ValueError as e:
        problems.append(str(e))
    else:
        b0 = bvals <= b0_thr
        report["n_b0"] = int(b0.sum())
        report["shells_in_file"] = find_shells(bvals, b0_threshold=b0_thr, tolerance=tol)
        if img is not None and len(bvals) != img.shape[3]:
            problems.append(f"{files['dwi']} has {img.shape[3]} volumes but there are {len(bvals)} b-values/b-vectors")
        try:  # b0 and unit length; the count is checked above (when the header was read)
            bvecs = check_gradients(bvals, bvecs, len(bvals), b0_threshold=b0_thr, dwi_path=files["dwi"], bvec_path=files["bvec"])
        except ValueError as e:
            problems.append(str(e))
            bvecs = np.where(b0[:, None], 0.0, bvecs)
        try:
            sel = select_shell(bvals, shell, tolerance=tol, b0_threshold=b0_thr, source=str(files["bval"]))
        except ValueError as e:
            problems.append(str(e))
        else:
            dti = bvals[sel] <= dti_max_b
            report.update(
                shells=find_shells(bvals[sel], b0_threshold=b0_thr, tolerance=tol),
                n_selected=int(len(sel)),
                n_dti_volumes=int(dti.sum()),
                n_dti_directions=count_directions(bvecs[sel][dti]),
            )
            try:
                check_dti_directions(
                    bvals[sel][dti], bvecs[sel][dti], dti_max_b=dti_max_b, source=str(files["bval"]),
                    all_bvals=bvals, shell=shell,
                )
            except ValueError as e:
                problems.append(str(e))
            problems += _generator_problems(config.methods, bvals[sel], bvecs[sel])

    def same_grid(path, what):
        try:
            other = _load_image(path, what=what)
            _check_file_size(other, path)
            if img is not None:
                _check_same_grid(other, img.shape, img.affine, path=path, ref_path=files["dwi"], what=what)
        except ValueError as e:
            problems.append(str(e))

    mask = files.get("mask")
    if mask is None:
        report["mask"] = "automatic (dipy median_otsu on the mean b0, or every voxel of a crop)"
    elif isinstance(mask, str) and mask == "all":
        report["mask"] = "all voxels of the volume"
    else:
        report["mask"] = str(mask)
        same_grid(mask, "mask")

    if files.get("pve") is not None:
        pve = files["pve"]
        if len(pve) != 3:
            problems.append(f"{config.path}: subject {sid}: pve must list 3 files (pve_0 CSF, pve_1 GM, pve_2 WM), got {len(pve)}")
        for p in pve:
            same_grid(p, "tissue map")
        report["tissue"] = "FSL FAST partial volumes"
    elif files.get("labels") is not None:
        same_grid(files["labels"], "tissue map")
        report["tissue"] = f"label map ({config.labels})"
    elif files.get("aseg") is not None:
        try:
            _load_image(files["aseg"], what="aparc+aseg")  # resampled onto the DWI grid: any grid
        except ValueError as e:
            problems.append(str(e))
        report["tissue"] = "FreeSurfer aparc+aseg"
    else:
        report["tissue"] = "approximate DTI segmentation"

    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"{config.path}: subject {sid}: {len(problems)} problem(s):\n{lines}")
    return report
