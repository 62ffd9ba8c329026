"""How noisy is a real scan: the noise sd σ, the SNR, and the noise floor of the metrics.

Real scans have voxels whose b0 repeats vary far more than thermal noise explains: the
brain edge (motion, partial volume), CSF (pulsation), vessels. A pooled mean of per-voxel
variances is dominated by them (on the mdt b1k_b2k in-vivo scan it read SNR 6.5 where
the typical voxel's b0 SNR is about 36). The estimators here are medians over eroded
brain voxels, corrected so that they are unbiased for Gaussian noise:

- three or more b0 volumes: the spread of the b0 repeats of each voxel;
- one or two: the residuals of each voxel's tensor fit (model misfit adds to them, so this
  errs towards more noise, a lower SNR).

Measured (tests/scan/test_noise.py holds the phantoms): on the mdt b1k_b2k in-vivo scan (13 b0,
8,865 mask voxels) the repeats estimator gives σ = 15.5, SNR 38.9, inside the 20-45 that
issue 9's two independent reads bound (per-voxel median b0 S0/sd 36.4; dipy MP-PCA on the b=1000
volumes, 7x7x1 patches: σ 8.8, i.e. median b=1000 signal / σ 27, median S0 / σ 66). The
pooled mean of var/mean² gives 6.5. The b0 spread grows with S0 on that scan (σ 12 at
S0 300, 32 at S0 1500: physiological, signal-proportional fluctuation on top of thermal
noise), so the median is an SNR of the typical voxel, not of the quietest. The tensor
fallback on the same scan (1 b0 + the 30 b=1000 directions) gives σ 12.6, SNR 47.8; on
dipy's small_64D sample (1 b0, 64 directions) σ 22.5, SNR 8.9. Phantoms with 5% of voxels
at 10x variance, 3% near zero and 10% bright CSF: within 7.5% of the true σ with 3 repeats,
2.5% with 13 (40 seeds); 1.3% for the one-b0 fallback (20 seeds).

Numerical module: numpy, scipy and the package's dti/tissue kernels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from helpers.scan import tissue as _tissue
from helpers.dti import fit_attenuation

__all__ = ["NoiseEstimate", "estimate_noise", "relative_sigma", "noise_floor_mae"]

MIN_VOXELS = 50
"""Fewer eroded brain voxels than this: the estimate uses every brain voxel instead."""

FLOOR_SNR = 5.0
"""Voxels whose S0 is below this many σ are left out: magnitude (Rician) data there has a
variance well below σ² (0.43 σ² at S0 = 0, 0.98 σ² at S0 = 5σ)."""

NOISE_FREE = 1e-6
"""σ at most this fraction of the median S0 (rounding of noise-free input) is reported as 0."""

MIN_DIRECTIONS = 7
"""Directions the tensor-residual fallback needs (7 tensor parameters, at least one
degree of freedom left with one b0)."""


@dataclass(frozen=True)
class NoiseEstimate:
    """A scan's noise, and how it was estimated.

    Attributes
    ----------
    sigma : float
        Noise standard deviation in scanner units (0.0 for noise-free input).
    snr : float
        Median S0 of the voxels used / ``sigma`` (``inf`` when ``sigma`` is 0).
    method : str
        One sentence saying how, for ``subject.json`` and the report.
    n_voxels : int
        Brain voxels the estimate used.
    """

    sigma: float
    snr: float
    method: str
    n_voxels: int


def estimate_noise(b0, indices, shape, *, attenuation=None, bvals=None, bvecs=None, rows=None):
    """Noise sd σ and SNR of a scan, robust to outlier voxels.

    Parameters
    ----------
    b0 : (n, k) array_like
        b0 signals of the brain voxels, scanner units.
    indices : (n, 3) array_like of int
        Grid coordinates of the same voxels.
    shape : tuple of int
        Grid shape (the first three axes are used).
    attenuation : (n, m) array_like, optional
        E = S / S0 of the same voxels with S0 = the mean of the ``b0`` columns. Needed
        when k <= 2; the caller passes only the volumes with b <= ``dti_max_b``.
    bvals : (m,) array_like, optional
        b-values of the ``attenuation`` columns, s/mm².
    bvecs : (m, 3) array_like, optional
        Unit gradient directions of the ``attenuation`` columns.
    rows : (n,) bool array_like, optional
        Voxels the estimate may use (a subject's fit part, :mod:`helpers.scan.split`); the
        erosion is still that of the whole brain mask. Default: all.

    Returns
    -------
    NoiseEstimate

    Raises
    ------
    ValueError
        Shapes that disagree; k <= 2 without ``attenuation``/``bvals``/``bvecs``, or with
        fewer than 7 directions, or directions that cannot determine a tensor; no voxel
        with a positive, finite S0.

    Notes
    -----
    Voxels: the brain mask built from ``indices`` is eroded by one voxel
    (:func:`helpers.scan.tissue.erode`, in-plane for 1-2 slice scans); when fewer than
    :data:`MIN_VOXELS` remain, every brain voxel is used. Voxels with S0 < 5σ (from a
    first pass over the same voxels) are then left out (:data:`FLOOR_SNR`), unless that
    leaves fewer than :data:`MIN_VOXELS`.

    Each voxel v gives a variance estimate s²_v with d degrees of freedom, and

    .. math:: \\hat\\sigma^2 = \\operatorname{median}_v s_v^2 \\,/\\, \\operatorname{median}(\\chi^2_d / d)

    which is unbiased for Gaussian noise of one σ (the median of s²_v is σ² times the
    median of χ²_d / d, e.g. 0.693 for d = 2, 0.945 for d = 12). The median ignores up to
    half of the voxels being outliers; 5% of voxels with 10x the variance move it by
    about 4% in σ with 3 repeats, 1% with 13. SNR = median S0 over the voxels used / σ.

    - k >= 3: s²_v is the sample variance (ddof = 1) of the k b0 repeats, d = k - 1.
    - k <= 2: the tensor fit of the voxel (:func:`helpers.dti.fit_attenuation`, WLS)
      gives the shape p_j = exp(-b_j g_jᵀ D g_j); the data y = (b0_i / S0, E_j) in
      units of S0 (iid noise σ / S0 on every entry) are fitted by a p with a free scale
      a = yᵀq / qᵀq, q = (1, …, 1, p_j), and s²_v = S0² |y - a q|² / d with
      d = k + m - 7 (six tensor elements and S0). Rician bias and model misfit (crossing
      fibres, partial volume) are not modelled: misfit adds to the residuals, so this
      errs towards a lower SNR.

    Noise-free input (σ <= 1e-6 of the median S0) gives σ = 0.0 and SNR = inf; the
    simulation then asks for a number instead of ``snr: auto``.

    References
    ----------
    .. [1] Dietrich O, Raya JG, Reeder SB, Reiser MF, Schoenberg SO. Measurement of
       signal-to-noise ratios in MR images: influence of multichannel coils, parallel
       imaging, and reconstruction filters. JMRI 2007;26:375-385 (SNR from repeated
       acquisitions, and why magnitude data near the floor underestimates σ).
    .. [2] Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. MRM
       1995;34:910-914.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> idx = np.argwhere(np.ones((12, 12, 6), bool))
    >>> b0 = 500 + rng.normal(0, 10, (len(idx), 5))
    >>> est = estimate_noise(b0, idx, (12, 12, 6))
    >>> round(est.sigma), est.n_voxels  # the 10 x 10 x 4 voxels left after erosion
    (10, 400)
    """
    b0 = np.asarray(b0, dtype=float)
    if b0.ndim == 1:
        b0 = b0[:, None]
    if b0.ndim != 2 or b0.shape[0] == 0 or b0.shape[1] == 0:
        raise ValueError(f"b0 has shape {b0.shape}; expected (n_voxels, n_b0) with both > 0")
    n, k = b0.shape
    indices = _check_indices(indices, n, shape)
    s0 = b0.mean(axis=1)
    ok = np.isfinite(b0).all(axis=1) & (s0 > 0)
    if rows is not None:
        rows = np.asarray(rows, dtype=bool)
        if rows.shape != (n,):
            raise ValueError(f"rows has shape {rows.shape}; expected ({n},), one per b0 voxel")
        ok &= rows

    if k >= 3:
        var = b0.var(axis=1, ddof=1)
        dof = k - 1
        what = f"the variance across {k} b0 repeats"
    else:
        var, dof, n_dirs = _residual_variance(b0, s0, attenuation, bvals, bvecs)
        ok &= np.isfinite(var)
        what = (
            f"the tensor-fit residual variance ({k} b0 + {n_dirs} directions, "
            f"{dof} degrees of freedom)"
        )
    if not ok.any():
        raise ValueError("no brain voxel has a positive, finite S0 (and finite signal)")

    used, where = _voxels(ok, indices, shape)
    correction = float(stats.chi2.median(dof) / dof)
    sigma = float(np.sqrt(np.median(var[used]) / correction))
    floor = used & (s0 >= FLOOR_SNR * sigma)
    dropped = int(used.sum() - floor.sum())
    if dropped and floor.sum() >= MIN_VOXELS:
        used = floor
        sigma = float(np.sqrt(np.median(var[used]) / correction))
        where += f" with S0 >= {FLOOR_SNR:g} sigma ({dropped} near the noise floor left out)"
    s0_median = float(np.median(s0[used]))
    n_used = int(used.sum())
    method = f"median over {n_used} {where} of {what}, chi-square corrected"
    if sigma <= NOISE_FREE * s0_median:
        return NoiseEstimate(0.0, float("inf"), method + "; no noise found (sigma 0, SNR inf)", n_used)
    return NoiseEstimate(sigma, s0_median / sigma, method, n_used)


def relative_sigma(sigma, s0):
    """Per-voxel relative noise σ / S0: the noise sd on the attenuation (S0 = 1) scale.

    Parameters
    ----------
    sigma : float or (n,) array_like
        Noise sd in scanner units.
    s0 : (n,) array_like
        S0 of the voxels, scanner units.

    Returns
    -------
    (n,) ndarray of float; NaN where S0 <= 0 or is not finite (no warning).

    Examples
    --------
    >>> relative_sigma(10.0, [500.0, 0.0, 250.0]).tolist()
    [0.02, nan, 0.04]
    """
    s0 = np.asarray(s0, dtype=float)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), s0.shape)
    good = np.isfinite(s0) & (s0 > 0)
    out = np.full(s0.shape, np.nan)
    np.divide(sigma, s0, out=out, where=good)
    return out


def noise_floor_mae(relative_sigma):
    """Expected signal MAE of a perfect denoiser: how low the signal MAE can go.

    A perfect denoiser returns the noise-free attenuation, so its mean absolute difference
    from the measured attenuation is the mean absolute noise.

    Parameters
    ----------
    relative_sigma : (n,) array_like
        σ / S0 per voxel (:func:`relative_sigma`); NaN voxels are ignored.

    Returns
    -------
    float; NaN when no voxel has a finite value.

    Notes
    -----
    Gaussian approximation: for noise N(0, s²), E|noise| = s sqrt(2/π), so

    .. math:: \\text{floor} = \\sqrt{2/\\pi}\\; \\operatorname{mean}_v \\sigma / S0_v

    It ignores the Rician floor (at low signal the magnitude noise is smaller and not
    zero-mean) and the noise of S0 itself in E = S / S0.

    Examples
    --------
    >>> round(noise_floor_mae([0.02, 0.04]), 5)
    0.02394
    """
    rel = np.asarray(relative_sigma, dtype=float).ravel()
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return float("nan")
    return float(np.sqrt(2.0 / np.pi) * rel.mean())


# ----------------------------------------------------------------------------- private


def _check_indices(indices, n, shape):
    indices = np.asarray(indices)
    if indices.shape != (n, 3):
        raise ValueError(f"indices has shape {indices.shape}; expected ({n}, 3), one row per b0 voxel")
    shape = tuple(int(s) for s in tuple(shape)[:3])
    if len(shape) != 3:
        raise ValueError(f"shape {shape} must have three axes")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    if n and (indices.min() < 0 or np.any(indices.max(axis=0) >= shape)):
        raise ValueError(f"indices fall outside the grid of shape {shape}")
    return indices


def _voxels(ok, indices, shape):
    """The eroded brain voxels among ``ok`` (all of them when too few), and a description."""
    mask = np.zeros(tuple(int(s) for s in tuple(shape)[:3]), dtype=bool)
    mask[tuple(indices.T)] = True
    eroded = _tissue.erode(mask)[tuple(indices.T)] & ok
    if eroded.sum() >= MIN_VOXELS:
        plane = " (in-plane erosion)" if _tissue.is_thin(mask.shape) else ""
        return eroded, f"eroded brain voxels{plane}"
    return ok, f"brain voxels (erosion left {int(eroded.sum())})"


def _residual_variance(b0, s0, attenuation, bvals, bvecs):
    """(n,) per-voxel noise variance from tensor-fit residuals, its degrees of freedom,
    and the number of directions (see :func:`estimate_noise`, Notes)."""
    given = {"attenuation": attenuation, "bvals": bvals, "bvecs": bvecs}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(
            f"{b0.shape[1]} b0 volume(s): the noise estimate falls back on tensor-fit residuals "
            f"and needs {', '.join(missing)} (the volumes with b <= dti_max_b)"
        )
    attenuation = np.asarray(attenuation, dtype=float)
    bvals = np.asarray(bvals, dtype=float).ravel()
    bvecs = np.asarray(bvecs, dtype=float)
    n, k = b0.shape
    m = bvals.size
    if attenuation.ndim != 2 or attenuation.shape[0] != n:
        raise ValueError(f"attenuation has shape {attenuation.shape}; expected ({n}, n_directions)")
    if attenuation.shape[1] != m or bvecs.shape != (m, 3):
        raise ValueError(
            f"attenuation has {attenuation.shape[1]} columns, bvals {m} values and bvecs shape "
            f"{bvecs.shape}; expected the same m directions, bvecs (m, 3)"
        )
    if m < MIN_DIRECTIONS:
        raise ValueError(
            f"the tensor-residual noise estimate (one or two b0 volumes) needs at least "
            f"{MIN_DIRECTIONS} diffusion-weighted directions with b <= dti_max_b, got {m}; "
            "set snr to a number, or select more volumes (shell / dti_max_b)"
        )
    g = bvecs
    tensor_design = np.column_stack(
        [g[:, 0] ** 2, g[:, 1] ** 2, g[:, 2] ** 2, g[:, 0] * g[:, 1], g[:, 0] * g[:, 2], g[:, 1] * g[:, 2]]
    ) * bvals[:, None]
    if np.linalg.matrix_rank(tensor_design) < 6:
        raise ValueError(
            f"the {m} directions given cannot determine a tensor (fewer than 6 non-collinear "
            "directions); the tensor-residual noise estimate needs them"
        )
    dof = k + m - 7
    finite = np.isfinite(attenuation).all(axis=1) & (s0 > 0) & np.isfinite(b0).all(axis=1)
    var = np.full(n, np.nan)
    if not finite.any():
        return var, dof, m
    E = attenuation[finite]
    fit = fit_attenuation(bvals, bvecs, E)
    quad = np.einsum("mi,nij,nj,nkj,mk->nm", g, fit.evecs, fit.evals, fit.evecs, g)
    q = np.hstack([np.ones((len(E), k)), np.exp(-bvals * quad)])
    y = np.hstack([b0[finite] / s0[finite, None], E])
    scale = np.einsum("nj,nj->n", y, q) / np.einsum("nj,nj->n", q, q)
    rss = ((y - scale[:, None] * q) ** 2).sum(axis=1)
    var[finite] = s0[finite] ** 2 * rss / dof
    return var, dof, m
