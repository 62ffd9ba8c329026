"""Reading a scan into a :class:`~helpers.scan.subject.Subject`.

Every loader (:mod:`helpers.scan.layouts`) ends in :func:`load_dwi`, which reads a 4-D DWI NIfTI
with its b-values and b-vectors, checks them (:mod:`helpers.scan.gradients`), keeps the b0
volumes and the selected shell(s), and returns the attenuation E = S / S0 of the brain
voxels (S0 = mean of the b0 volumes) with everything needed to write maps back onto the
scan's grid. On the way: the brain mask (a mask file, every voxel, or an automatic one),
volumes and voxels that hold no measurement left out, the noise estimate, and the tissue
codes. Without a tissue map a DTI threshold segmentation is used and marked approximate.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers.scan import noise as _noise
from helpers.scan import tissue as _tissue
from helpers.contract import DEFAULTS, parse_shell
from helpers.scan.split import MIN_PART, block_split
from helpers.scan.gradients import _gradient_plan, check_dti_directions, count_directions, find_shells
from helpers.scan.subject import Subject, _erosion_note

__all__ = [
    "load_dwi",
    "binary_mask",
    "load_note",
]

MASK_KEEP_FRACTION = 0.5
"""Without a mask, ``median_otsu`` keeping less than this fraction of the voxels with a
finite positive S0 (and dropping voxels that attenuate like tissue) is taken for a crop
inside the brain: every such voxel is used (:func:`_automatic_mask`)."""

AIR_ATTENUATION = 0.8
"""Median S/S0 above which the voxels ``median_otsu`` drops are taken for background:
noise in air does not attenuate with diffusion weighting (S/S0 about 1), tissue does."""


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
        uses the approximate DTI segmentation (:func:`helpers.scan.tissue.dti_segmentation`).
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
    from :func:`helpers.scan.noise.estimate_noise` on the b0 repeats, or with one or two b0
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
    _split(subj)
    _estimate_subject_noise(subj, b0)
    _assign_tissue(subj, tissue, tissue_source)
    return subj


def _split(subj):
    """Set ``subj.judge`` and ``subj.blocks``: the fit and judge parts (:mod:`helpers.scan.split`)."""
    judge, blocks, side = block_split(subj.indices, subj.shape)
    subj.judge, subj.blocks = judge, blocks
    if judge is None:
        subj.info["split"] = f"not split: {subj.n_voxels} voxels are too few for two parts of {MIN_PART}"
    else:
        cubes = "voxels" if side == 1 else f"blocks of {side}x{side}x{side} voxels"
        subj.info["split"] = (f"{cubes} in a chessboard (an axis shorter than a block is one block thick): "
                              f"{int((~judge).sum())} fit voxels, {int(judge.sum())} judge voxels")


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
    """Set ``subj.sigma``, ``snr`` and ``snr_method`` (:func:`helpers.scan.noise.estimate_noise`)."""
    dti = subj.dti_columns
    est = _noise.estimate_noise(
        b0, subj.indices, subj.shape,
        attenuation=subj.attenuation[:, dti], bvals=subj.bvals[dti], bvecs=subj.bvecs[dti],
        rows=None if subj.judge is None else ~subj.judge,  # fitted to the fit part only
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
