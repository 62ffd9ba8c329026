"""Gradient tables and shells: reading FSL ``bvals``/``bvecs`` files, checking them
against their DWI, grouping b-values into shells and choosing the volumes to use.

Shells (docs/method.md, "Data flow"): ``shell`` is a b-value, a list of b-values or ``"all"``.
Every selected volume keeps its own b-value; tensor-derived quantities (FA, direction,
the DTI tissue segmentation, the single-b0 SNR fallback) use only the selected volumes
with b <= ``dti_max_b`` (:attr:`helpers.scan.subject.Subject.dti_columns`), which must hold at
least 6 non-collinear directions (:func:`check_dti_directions`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.contract import DEFAULTS, parse_shell

__all__ = [
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
