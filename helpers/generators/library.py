"""Any simulator's saved output as a generator: ``library:PATH``.

Monte Carlo simulators (disimpy, MCDC, Camino, Fiberfox, MISST) and dipy's FORCE write
files of simulated signals rather than functions one can call per batch. A *library* is
such a file, an ``.npz`` with

``signals`` : (k, c) float array
    Noise-free signals of k voxels on c volumes (any scale: each row is divided by its own
    S0, below).
``bvals`` : (c,) float array
    b-values of the c volumes, s/mm².
``bvecs`` : (c, 3) or (3, c) float array
    Their gradient directions (unit length; zero or anything at b0).
``s0`` : (k,) float array, optional
    Each voxel's S0. Without it a voxel's S0 is the mean of its columns with
    b <= ``b0_threshold`` (dipy's FORCE output: S0 = 100 with one b0 column).

Every selected volume of the subject must find a column of the library with the same
b-value (within ``shell_tolerance``) and the same direction up to sign (within
:data:`ANGLE_TOLERANCE_DEG`); the library's columns may come in any order, and extra
columns (b0s, other shells, other directions) are ignored. Each replicate draws its voxels
from the library with replacement, from its own seed; the caller adds the noise, as for
every generator. The method's name in every table is the file's stem.

This module is numerical: it imports numpy and :mod:`helpers.contract`, never the
configuration or the runner.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.contract import DEFAULTS

__all__ = ["ANGLE_TOLERANCE_DEG", "ATTENUATION_RANGE", "LIBRARY_RANGE", "check_attenuation_range", "Library", "load_library", "match_columns", "draw_library"]

ANGLE_TOLERANCE_DEG = 2.0
"""A library column's direction matches a subject volume's when they are at most this far
apart up to sign (gradient tables are stored rounded, and flipped in some conventions)."""

ATTENUATION_RANGE = (0.0, 1.5)
"""Allowed clean attenuations of a generator that is not built in (a researcher's function,
a library after dividing by S0). Attenuation is physically in [0, 1]; the headroom admits
models with slight overshoot (e.g. a fitted S0 above 1) while still catching signals in
scanner units, a wrong S0 or a wrong sign."""

LIBRARY_RANGE = ATTENUATION_RANGE


def check_attenuation_range(values, what, expected):
    """Raise ``ValueError`` ("<what> values outside [0, 1.5] (min .., max ..); <expected>")
    when ``values`` leave :data:`ATTENUATION_RANGE`."""
    lo, hi = ATTENUATION_RANGE
    vmin, vmax = float(np.min(values)), float(np.max(values))
    if vmin < lo or vmax > hi:
        raise ValueError(f"{what} values outside [{lo:g}, {hi:g}] (min {vmin:.4g}, max {vmax:.4g}); {expected}")


@dataclass(frozen=True)
class Library:
    """A loaded library.

    Attributes
    ----------
    path : Path
    attenuation : (k, c) float32 ndarray
        Signals divided by their S0.
    bvals : (c,) ndarray
    bvecs : (c, 3) ndarray
    n_unique : int
        Distinct voxels (rows) the library holds.
    s0_source : str
        "s0 array" or "mean of the b <= b0_threshold columns".
    """

    path: Path
    attenuation: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    n_unique: int
    s0_source: str

    @property
    def name(self):
        return library_name(self.path)


def library_name(path):
    """A library's name in tables: the file's stem (``force_lib.npz`` -> ``force_lib``)."""
    return Path(str(path)).name.removesuffix(".npz")


def load_library(path, *, b0_threshold=DEFAULTS["b0_threshold"]):
    """Read and check a library file.

    Raises
    ------
    ValueError
        Naming the file and the problem: missing, not a readable .npz, a missing or
        misshapen array, NaN or infinite values, no S0 (no b0 column and no ``s0``), an S0
        that is not positive, attenuations outside :data:`LIBRARY_RANGE`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: library file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz library ({type(e).__name__}: {e})") from e
    missing = [k for k in ("signals", "bvals", "bvecs") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: the library lacks {missing}; it needs 'signals' (voxels x volumes), 'bvals' and 'bvecs' (and optionally 's0')")
    signals = _real(arrays["signals"], "signals", path)
    bvals = _real(arrays["bvals"], "bvals", path).ravel()
    bvecs = _real(arrays["bvecs"], "bvecs", path)
    if signals.ndim != 2 or signals.shape[0] < 1:
        raise ValueError(f"{path}: 'signals' must be (voxels, volumes), got shape {signals.shape}")
    c = signals.shape[1]
    if bvals.shape != (c,):
        raise ValueError(f"{path}: 'bvals' has {bvals.size} values but 'signals' has {c} volumes (columns)")
    if bvecs.shape == (3, c) and c != 3:
        bvecs = bvecs.T
    if bvecs.shape != (c, 3):
        raise ValueError(f"{path}: 'bvecs' has shape {bvecs.shape}; expected ({c}, 3), one direction per column of 'signals'")
    for name, values in (("signals", signals), ("bvals", bvals)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ValueError(f"{path}: '{name}' holds {bad} NaN or infinite value(s)")
    if "s0" in arrays:
        s0 = _real(arrays["s0"], "s0", path).ravel()
        if s0.shape != (signals.shape[0],):
            raise ValueError(f"{path}: 's0' has {s0.size} values but 'signals' has {signals.shape[0]} voxels (rows)")
        source = "s0 array"
    else:
        b0 = bvals <= b0_threshold
        if not b0.any():
            raise ValueError(
                f"{path}: no column with b <= {b0_threshold:g} to take each voxel's S0 from, and no 's0' array; "
                "save the signals' S0 as 's0' or include a b0 column"
            )
        s0 = signals[:, b0].mean(axis=1)
        source = f"mean of the b <= {b0_threshold:g} columns"
    if not (np.isfinite(s0).all() and (s0 > 0).all()):
        bad = int((~(np.isfinite(s0) & (s0 > 0))).sum())
        raise ValueError(f"{path}: {bad} voxel(s) have an S0 that is not a positive number ({source})")
    attenuation = signals / s0[:, None]
    check_attenuation_range(attenuation, f"{path}: signals divided by S0 ({source}) have",
                            "expected noise-free signals with their S0")
    n_unique = int(len(np.unique(attenuation, axis=0)))
    return Library(path=path, attenuation=attenuation.astype(np.float32), bvals=bvals, bvecs=bvecs,
                   n_unique=n_unique, s0_source=source)


def _real(values, name, path):
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"{path}: '{name}' must hold real numbers, got dtype {values.dtype}")
    return values.astype(float)


def match_columns(library, bvals, bvecs, *, tolerance=DEFAULTS["shell_tolerance"], source=None):
    """For each of the subject's volumes, the library column that holds it.

    A column matches a volume when its b-value is within ``tolerance`` and its direction
    within :data:`ANGLE_TOLERANCE_DEG` up to sign; of several, the closest b-value, then the
    closest direction.

    Parameters
    ----------
    library : Library
    bvals : (m,) array_like
        The subject's selected (diffusion-weighted) volumes' b-values, s/mm².
    bvecs : (m, 3) array_like
        Their unit directions.

    Returns
    -------
    (m,) int ndarray
        Column indices into ``library.attenuation``.

    Raises
    ------
    ValueError
        Naming the library file and the volumes it does not cover (their b-values and
        directions), with the shells the library has.
    """
    bvals = np.asarray(bvals, dtype=float).ravel()
    bvecs = np.asarray(bvecs, dtype=float)
    lib_dirs = _unit(library.bvecs)
    cos = np.abs(_unit(bvecs) @ lib_dirs.T)  # (m, c)
    db = np.abs(bvals[:, None] - library.bvals[None, :])
    ok = (db <= tolerance) & (cos >= np.cos(np.radians(ANGLE_TOLERANCE_DEG)))
    missing = np.flatnonzero(~ok.any(axis=1))
    if missing.size:
        shells = sorted({int(round(b / 50.0) * 50) for b in library.bvals})
        shown = ", ".join(f"b={bvals[i]:g} along ({bvecs[i, 0]:.3f}, {bvecs[i, 1]:.3f}, {bvecs[i, 2]:.3f})"
                          for i in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        raise ValueError(
            f"{source or library.path}: the library does not cover {missing.size} of the subject's {len(bvals)} volumes "
            f"({shown}{more}): no column with the same b-value (within {tolerance:g}) and direction (within "
            f"{ANGLE_TOLERANCE_DEG:g} degrees, up to sign). The library's shells: {shells}; simulate it on the "
            "subject's gradient table (docs/library.md)"
        )
    # the closest b-value first, then the closest direction
    score = np.where(ok, db * 1e3 - cos, np.inf)
    return np.argmin(score, axis=1)


def _unit(v):
    v = np.asarray(v, dtype=float)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def draw_library(library, columns, n, rng):
    """``n`` voxels drawn with replacement from the library, on the matched columns.

    Returns
    -------
    (n, m) float32 ndarray
        Clean attenuation (S0 = 1).
    """
    rows = rng.integers(library.attenuation.shape[0], size=int(n))
    return library.attenuation[rows][:, columns]
