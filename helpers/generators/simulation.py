"""Synthetic diffusion MRI voxels: one multi-tensor kernel, four built-in generators, and
the researcher's own generators.

Every built-in tensor generator draws a mixture of compartments per voxel — k white-matter
fibres (k uniform in {1, 2, 3}, orientation uniform), a grey-matter and a CSF compartment,
raw weights U(0, 1) normalised to sum to 1 — and differs only in where the tensors'
eigenvalues come from. The fixed values of Syn are the method paper's:

=============  ============================  =======================  ========================
method         WM fibre eigenvalues (mm²/s)  GM                       CSF
=============  ============================  =======================  ========================
Syn            (1.5e-3, 3e-4, 3e-4)          isotropic 5e-4           isotropic 3e-3
Sampled        triplet from eroded WM with   triplet from eroded GM,  triplet from eroded CSF,
               FA > wm_fa_min                random orientation       random orientation
SampleAndMean  as Sampled                    isotropic, mean GM MD    isotropic, mean CSF MD
=============  ============================  =======================  ========================

RandomWM: free water (3e-3 mm²/s) with weight f ~ U(0, 1); the rest of the signal is
U(0, 1), drawn independently per gradient.

(They are not dipy's: ``dipy.sims.voxel`` defaults to (1.5e-3, 4e-4, 4e-4).)

A method may also be a user's generator ``package.module:function``
(:func:`call_plugin`): it returns clean attenuation and gets the same noise.

Noise is Rician. ``noise="global"`` (the method paper's): one σ = 1/SNR on the S0 = 1
scale for every voxel. ``noise="per_voxel"``: each synthetic voxel's σ is drawn from the
subject's distribution of σ/S0 over its brain voxels (:func:`sigma_distribution`),
since a real scan is not one SNR.

This module is numerical: it imports numpy and :mod:`helpers.contract`, never the YAML
config, I/O or the runner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.contract import (
    CALIBRATED_MIN_VOXELS,
    DEFAULTS,
    TISSUES,
    LIBRARY_PREFIX,
    base_method,
    check_methods,
    is_library,
    needs_pools,
    scaled_method,
    is_plugin,
    load_plugin,
    parse_noise,
    parse_snr,
)
from helpers.generators.library import ATTENUATION_RANGE, check_attenuation_range, draw_library, load_library, match_columns

__all__ = [
    "Mixture",
    "Pools",
    "multi_tensor",
    "random_rotations",
    "tissue_pools",
    "method_support",
    "draw_mixture",
    "add_rician_noise",
    "resolve_snr",
    "sigma_distribution",
    "call_plugin",
    "library_columns",
    "describe_generator",
    "subject_force_ranges",
    "simulate",
    "fitted",
    "noise_sigmas",
    "calibration_of",
    "fit_calibration",
]


def fitted(subject):
    """The part of a subject a generator may be fitted to: its fit part when it is split
    (:meth:`helpers.scan.subject.Subject.fit_part`), else the subject itself. Every pool, noise
    distribution and subject-dependent generator of this module goes through it, so no
    judge voxel feeds a generator."""
    part = getattr(subject, "fit_part", None)
    return part() if callable(part) else subject

SYN_WM_EVALS = (1.5e-3, 3e-4, 3e-4)
"""Syn's single-fibre eigenvalues (axial, radial, radial), mm²/s: the method paper's values."""
SYN_GM_D = 5e-4
"""Syn's isotropic GM diffusivity, mm²/s (the method paper's value)."""
SYN_CSF_D = 3e-3
"""Syn's isotropic CSF diffusivity, mm²/s (the method paper's value)."""
FREE_WATER_D = 3e-3
"""RandomWM's free-water diffusivity, mm²/s."""
PLUGIN_RANGE = ATTENUATION_RANGE
"""Allowed values of a user generator's clean attenuation (:data:`helpers.generators.library.ATTENUATION_RANGE`)."""


@dataclass(frozen=True)
class Mixture:
    """What a synthetic voxel is made of.

    Attributes
    ----------
    min_fibers, max_fibers : int
        The number of WM fibres is uniform in ``{min_fibers, ..., max_fibers}``.
    gm, csf : bool
        Whether a GM and a CSF compartment are present.

    Every present compartment gets a raw weight U(0, 1); weights are normalised to sum
    to 1 per voxel.
    """

    min_fibers: int = 1
    max_fibers: int = 3
    gm: bool = True
    csf: bool = True

    def __post_init__(self):
        if not 0 <= self.min_fibers <= self.max_fibers or self.min_fibers + self.gm + self.csf == 0:
            raise ValueError(f"invalid mixture {self}: need 0 <= min_fibers <= max_fibers and at least one compartment in every voxel (min_fibers >= 1, gm or csf)")

    @property
    def n_compartments(self):
        return self.max_fibers + int(self.gm) + int(self.csf)

@dataclass
class Pools:
    """Eigenvalue pools drawn from a subject's tissue (for Sampled and SampleAndMean).

    Attributes
    ----------
    wm, gm, csf : (p, 3) ndarray
        Eigenvalue triplets (mm²/s, descending) of the pool voxels.
    report : dict
        Per tissue: voxels in the pool, whether the eroded mask was used or the
        uneroded fallback (then the pool is flagged ``tiny``), and the mean MD
        (:func:`tissue_pools`).
    """

    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def gm_md(self):
        return float(self.gm.mean())

    @property
    def csf_md(self):
        return float(self.csf.mean())

def multi_tensor(bvals, bvecs, evals, evecs, fractions, *, dtype=np.float64, chunk=4096):
    """Signal of a mixture of Gaussian compartments, vectorised over voxels.

    Parameters
    ----------
    bvals : (m,) array_like
        b-values in s/mm².
    bvecs : (m, 3) array_like
        Gradient directions (unit, or zero at b0).
    evals : (n, k, 3) array_like
        Eigenvalues of each voxel's k compartment tensors, mm²/s.
    evecs : (n, k, 3, 3) array_like
        Eigenvectors as columns (dipy's convention): ``evecs[i, c, :, j]`` belongs to
        ``evals[i, c, j]``.
    fractions : (n, k) array_like
        Volume fractions (not percent), summing to 1 per voxel.
    dtype : {np.float64, np.float32}, optional
        Arithmetic precision. float64 (default) agrees with dipy to 1e-10; float32 is
        about twice as fast and agrees to about 1e-6, far below any noise level, and is
        what :func:`simulate` uses since its output is float32 anyway.
    chunk : int, optional
        Voxels per batch: keeps the temporaries in cache and bounds memory.

    Returns
    -------
    (n, m) ndarray of ``dtype``
        Signals with S0 = 1.

    Notes
    -----
    S = Σ_c f_c exp(-b gᵀ D_c g) with D_c = R_c diag(λ_c) R_cᵀ. The six unique elements of
    every D_c are contracted with the six gradient products -b (g gᵀ) in one matrix
    product, so the cost is one (n k, 6) x (6, m) product and one exp of n k m values —
    no loop over voxels or gradients. Agrees with ``dipy.sims.voxel.multi_tensor``
    (fractions in percent, ``snr=None``) to 1e-10 in float64.

    Examples
    --------
    >>> import numpy as np
    >>> S = multi_tensor([0, 1000], [[0, 0, 0], [1, 0, 0]], [[[1e-3, 1e-3, 1e-3]]],
    ...                  [[np.eye(3)]], [[1.0]])
    >>> np.allclose(S, [[1, np.exp(-1)]])
    True
    """
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    evals = np.asarray(evals)
    evecs = np.asarray(evecs)
    fractions = np.asarray(fractions)
    n, k = fractions.shape
    if evals.shape != (n, k, 3) or evecs.shape != (n, k, 3, 3):
        raise ValueError(f"evals {evals.shape} and evecs {evecs.shape} must be ({n}, {k}, 3) and ({n}, {k}, 3, 3)")
    if bvecs.shape != (len(bvals), 3):
        raise ValueError(f"bvecs has shape {bvecs.shape}; expected ({len(bvals)}, 3)")
    gx, gy, gz = bvecs.T
    # -b (g gᵀ) elements in the order of _UNIQUE below: xx, yy, zz, xy, xz, yz
    G = -bvals[:, None] * np.stack([gx * gx, gy * gy, gz * gz, 2 * gx * gy, 2 * gx * gz, 2 * gy * gz], axis=1)
    G = np.ascontiguousarray(G.T, dtype=dtype)
    out = np.empty((n, len(bvals)), dtype=dtype)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        c = sl.stop - sl.start
        R = evecs[sl].reshape(c * k, 3, 3).astype(dtype, copy=False)
        D = (R * evals[sl].reshape(c * k, 1, 3).astype(dtype, copy=False)) @ R.transpose(0, 2, 1)
        q = D.reshape(c * k, 9)[:, _UNIQUE] @ G  # (c k, m): -b gᵀ D g
        np.exp(q, out=q)
        np.matmul(fractions[sl, None, :].astype(dtype, copy=False), q.reshape(c, k, -1), out=out[sl, None, :])
    return out


_UNIQUE = [0, 4, 8, 1, 2, 5]  # flat indices of xx, yy, zz, xy, xz, yz in a 3x3 matrix


def random_rotations(n, rng, *, dtype=np.float64):
    """(n, 3, 3) uniformly distributed rotation matrices (Haar), from unit quaternions.

    The first column is a direction uniform on the sphere; the other two are a uniformly
    random frame about it.
    """
    w, x, y, z = rng.standard_normal((4, n), dtype=dtype)
    s = 2 / (w * w + x * x + y * y + z * z)  # normalises the quaternion
    R = np.empty((n, 3, 3), dtype=dtype)
    R[:, 0, 0] = 1 - s * (y * y + z * z)
    R[:, 1, 1] = 1 - s * (x * x + z * z)
    R[:, 2, 2] = 1 - s * (x * x + y * y)
    R[:, 1, 0] = s * (x * y + w * z)
    R[:, 0, 1] = s * (x * y - w * z)
    R[:, 2, 0] = s * (x * z - w * y)
    R[:, 0, 2] = s * (x * z + w * y)
    R[:, 2, 1] = s * (y * z + w * x)
    R[:, 1, 2] = s * (y * z - w * x)
    return R


def _check_pool_settings(min_pool, wm_fa_min):
    if isinstance(min_pool, bool) or not isinstance(min_pool, (int, np.integer)) or min_pool < 1:
        raise ValueError(f"min_pool must be a positive int (voxels), got {min_pool!r}")
    if isinstance(wm_fa_min, bool) or not isinstance(wm_fa_min, (int, float, np.number)) or not 0 <= wm_fa_min < 1:
        raise ValueError(f"wm_fa_min must be a number in [0, 1), got {wm_fa_min!r}")


def _pool_masks(subject, *, min_pool, wm_fa_min):
    """The voxels each tissue pool draws from, and what is missing.

    A pool is the one-voxel eroded mask when that has at least ``min_pool`` voxels, else
    the uneroded mask (small scans), however few voxels it has; only an empty pool is a
    problem. A pool below ``min_pool`` even uneroded is *tiny*: usable, and named in the
    report.

    Returns
    -------
    masks : dict
        Tissue name -> (n,) bool mask of the pool; None when even the uneroded mask is
        empty.
    counts : dict
        Tissue name -> (eroded count, uneroded count); the uneroded one is None when the
        eroded mask was enough.
    problems : list of str
        One phrase per tissue whose pool is empty, naming the tissue and counts.
    """
    _check_pool_settings(min_pool, wm_fa_min)
    subject = fitted(subject)
    fa = subject.tensor().fa
    masks, counts, problems = {}, {}, []
    for name in TISSUES:
        eroded_mask = subject.tissue_mask(name, eroded=True)
        mask = subject.tissue_mask(name, eroded=False)
        if name == "WM":  # NaN FA is never above
            eroded_mask, mask = eroded_mask & (fa > wm_fa_min), mask & (fa > wm_fa_min)
        n_eroded = int(eroded_mask.sum())
        if n_eroded >= min_pool:
            masks[name], counts[name] = eroded_mask, (n_eroded, None)
            continue
        counts[name] = (n_eroded, int(mask.sum()))
        masks[name] = mask if mask.any() else None
        if masks[name] is None:
            what = f"no WM voxel with FA > {wm_fa_min:g}" if name == "WM" else f"no {name} voxel"
            problems.append(what)
    return masks, counts, problems


def _subject_label(subject):
    info = getattr(subject, "info", None) or {}
    label = info.get("subject", "")
    return f"subject {label}: " if label else ""


def tissue_pools(subject, *, min_pool=DEFAULTS["min_pool"], wm_fa_min=DEFAULTS["wm_fa_min"]):
    """Eigenvalue pools from a subject's tissue (for Sampled and SampleAndMean).

    The triplets come from ``subject.tensor()``, the WLS fit of the selected volumes with
    b <= the subject's ``dti_max_b``. WM keeps only voxels with FA > ``wm_fa_min`` (single
    fibres). Each pool uses the one-voxel eroded mask (in-plane for scans of one or two
    slices); when that leaves fewer than ``min_pool`` voxels (small scans such as the
    10x10x10 sample) the uneroded mask is used instead (``fallback``), and a pool that
    has fewer than ``min_pool`` voxels even then is flagged ``tiny``: it is used, and the
    report names it, since its eigenvalues come from a handful of voxels.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
    min_pool : int
        Fewest voxels a pool may have.
    wm_fa_min : float
        FA above which a WM voxel feeds the WM pool.

    Returns
    -------
    Pools
        With ``report[tissue]``: ``voxels`` (pool size), ``mask`` ("eroded" or why the
        uneroded mask was used), ``eroded`` (bool), ``fallback`` (the uneroded mask was
        used), ``tiny`` (fewer than ``min_pool`` voxels even uneroded), ``eroded_voxels``
        and ``mean_md`` (mm²/s); WM also states ``fa_min``.

    Raises
    ------
    ValueError
        When a pool is empty even uneroded, naming each such tissue (:func:`method_support`
        gives the same text as a reason).
    """
    subject = fitted(subject)
    masks, counts, problems = _pool_masks(subject, min_pool=min_pool, wm_fa_min=wm_fa_min)
    if problems:
        raise ValueError(
            f"{_subject_label(subject)}no voxel to sample tissue from: {'; '.join(problems)}"
        )
    evals = subject.tensor().evals
    pools, report = {}, {}
    for name in TISSUES:
        mask = masks[name]
        eroded_count, uneroded_count = counts[name]
        eroded = uneroded_count is None
        pools[name.lower()] = evals[mask]
        report[name] = {
            "voxels": int(mask.sum()),
            "mask": "eroded" if eroded else f"uneroded (eroded pool had {eroded_count}, fewer than {min_pool})",
            "eroded": eroded,
            "fallback": not eroded,
            "tiny": int(mask.sum()) < min_pool,
            "eroded_voxels": eroded_count,
            "mean_md": float(evals[mask].mean()),
        }
        if name == "WM":
            report[name]["fa_min"] = float(wm_fa_min)
    return Pools(report=report, **pools)


def method_support(subject, method, *, min_pool=DEFAULTS["min_pool"], wm_fa_min=DEFAULTS["wm_fa_min"]):
    """Whether ``method`` can run on ``subject``: None, or the reason it cannot.

    Sampled and SampleAndMean draw from the subject's tissue, so they need at least one
    WM voxel with FA > ``wm_fa_min`` and at least one GM and one CSF voxel (eroded when
    the eroded pool has ``min_pool`` voxels, else uneroded; see :func:`tissue_pools`).
    Pools with fewer than ``min_pool`` voxels are used and named as tiny in the report,
    not skipped: a crop's few CSF voxels are still the scan's own diffusivities.

    Syn, RandomWM and user generators (``package.module:function``) do not depend on the
    subject's tissue and are always supported here (a user generator may still fail when
    :func:`simulate` calls it).

    Returns
    -------
    None or str
        The reason names the method, each short tissue and its voxel counts.

    Raises
    ------
    ValueError
        For a method name that is neither built in nor ``package.module:function``.
    """
    (method,) = check_methods([method], where="method_support")
    _check_pool_settings(min_pool, wm_fa_min)
    if method == "Calibrated":
        n_fit = fitted(subject).n_voxels
        if n_fit < CALIBRATED_MIN_VOXELS:
            return f"Calibrated is fitted to the scan's fit voxels, and this scan has {n_fit} (needs {CALIBRATED_MIN_VOXELS})"
        return None
    if not needs_pools(method):
        return None
    _, _, problems = _pool_masks(subject, min_pool=min_pool, wm_fa_min=wm_fa_min)
    if not problems:
        return None
    return f"{method} samples the subject's tissue, and this scan has {' and '.join(problems)}"


def draw_mixture(method, n, rng, *, pools=None, mixture=Mixture()):
    """Draw the compartments of ``n`` voxels for a tensor-based method.

    Parameters
    ----------
    method : {"Syn", "Sampled", "SampleAndMean"}
    n : int
    rng : numpy.random.Generator
    pools : Pools, optional
        Needed by Sampled and SampleAndMean (:func:`tissue_pools`).
    mixture : Mixture

    Returns
    -------
    evals : (n, k, 3) ndarray
    evecs : (n, k, 3, 3) ndarray
    fractions : (n, k) ndarray
        Zero for the fibres a voxel does not have; rows sum to 1.
    """
    if method not in ("Syn", "Sampled", "SampleAndMean"):
        raise ValueError(f"draw_mixture: unknown tensor method {method!r}; allowed: ['Syn', 'Sampled', 'SampleAndMean']")
    kf = mixture.max_fibers
    k = mixture.n_compartments
    evals = np.empty((n, k, 3))
    if method == "Syn":
        evals[:, :kf] = SYN_WM_EVALS
    else:
        if pools is None:
            raise ValueError(f"method {method!r} needs tissue pools (tissue_pools(subject))")
        evals[:, :kf] = pools.wm[rng.integers(len(pools.wm), size=(n, kf))]
    c = kf
    for present, name, syn in ((mixture.gm, "gm", SYN_GM_D), (mixture.csf, "csf", SYN_CSF_D)):
        if not present:
            continue
        if method == "Syn":
            evals[:, c] = syn
        elif method == "SampleAndMean":
            evals[:, c] = getattr(pools, name).mean()
        else:  # Sampled
            pool = getattr(pools, name)
            evals[:, c] = pool[rng.integers(len(pool), size=n)]
        c += 1
    evecs = random_rotations(n * k, rng).reshape(n, k, 3, 3)
    n_fibers = rng.integers(mixture.min_fibers, mixture.max_fibers + 1, size=n)
    weights = rng.random((n, k))
    weights[:, :kf] *= np.arange(kf) < n_fibers[:, None]
    fractions = weights / weights.sum(axis=1, keepdims=True)
    return evals, evecs, fractions

def add_rician_noise(signal, sigma, rng):
    """Rician noise: |S + σ (n₁ + i n₂)| with n₁, n₂ ~ N(0, 1), independent.

    Parameters
    ----------
    signal : (n, ...) array_like
        Clean signal on the S0 = 1 scale.
    sigma : None, float or (n,) array_like
        Noise standard deviation on the same scale: one for every value, or one per row
        (per voxel). None returns a copy of the signal.
    rng : numpy.random.Generator

    Returns
    -------
    (n, ...) float32 ndarray
    """
    signal = np.asarray(signal, dtype=np.float32)
    if sigma is None:
        return signal.copy()
    sigma = np.asarray(sigma, dtype=np.float32)
    if sigma.ndim == 1 and signal.ndim >= 1 and len(sigma) == signal.shape[0]:
        sigma = sigma.reshape((-1,) + (1,) * (signal.ndim - 1))
    elif sigma.ndim != 0:
        rows = signal.shape[0] if signal.ndim else 0
        raise ValueError(f"sigma has shape {sigma.shape}; expected a scalar or ({rows},), one per row of signal")
    if not np.all(np.isfinite(sigma) & (sigma >= 0)):
        raise ValueError("sigma must be finite and non-negative")
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag)


def resolve_snr(snr, subject=None):
    """Turn the ``snr`` setting (``"auto"``, a number, or ``"none"``/None) into a number or None.

    ``"auto"`` is the subject's estimate ``subject.snr`` (median brain S0 / σ).
    """
    snr = parse_snr(snr)
    if snr == "auto":
        est = getattr(subject, "snr", None)
        if est is None or not np.isfinite(est) or est <= 0:
            raise ValueError(f"snr='auto' needs the subject's SNR estimate, which is {est!r}; give a number")
        return float(est)
    return snr


def _relative_sigma(subject, *, scaled):
    """(n,) σ/S0 of the subject's brain voxels (NaN where S0 <= 0).

    ``subject.relative_sigma`` when the subject has a noise σ. Without one, σ follows from
    its SNR estimate (median brain S0 / σ); when the caller rescales the values anyway
    (``scaled``), σ does not matter and 1/S0 carries the spread.
    """
    s0 = np.asarray(subject.s0, dtype=float)
    sigma = getattr(subject, "sigma", None)
    if sigma is not None and np.isfinite(sigma) and sigma > 0:
        rel = getattr(subject, "relative_sigma", None)
        if rel is not None:
            return np.asarray(rel, dtype=float)
    elif scaled:
        sigma = 1.0
    else:
        positive = s0[np.isfinite(s0) & (s0 > 0)]
        if positive.size == 0:
            raise ValueError(
                f"{_subject_label(subject)}no brain voxel has a positive S0; noise='per_voxel' cannot draw σ/S0"
            )
        sigma = float(np.median(positive)) / resolve_snr("auto", subject)
    safe = np.where(s0 > 0, s0, 1.0)
    return np.where(s0 > 0, sigma / safe, np.nan)


def sigma_distribution(subject, *, snr="auto"):
    """The σ values (S0 = 1 scale) that ``noise="per_voxel"`` draws from, one per brain voxel.

    σ/S0 over the subject's brain voxels (``subject.relative_sigma``: the scan's noise σ
    over each voxel's S0), voxels with S0 <= 0 left out. With a number ``snr`` the values
    are scaled so that their median is 1/snr (the spread of the scan, at the SNR asked
    for); with ``"auto"`` they are used as they are (their median is then about
    1/``subject.snr``). ``snr="none"`` gives None (no noise).

    Returns
    -------
    None or (k,) float64 ndarray
    """
    snr = parse_snr(snr)
    if snr is None:
        return None
    rel = _relative_sigma(fitted(subject), scaled=snr != "auto")
    rel = rel[np.isfinite(rel) & (rel > 0)]
    if rel.size == 0:
        raise ValueError(
            f"{_subject_label(subject)}no brain voxel has a finite positive σ/S0; noise='per_voxel' cannot draw from it"
        )
    if snr != "auto":
        rel = rel * ((1.0 / snr) / np.median(rel))
    return rel


def _check_attenuation(values, n, m, spec):
    """Validate a user generator's output; returns it as float32."""
    where = f"generator {spec!r}"
    if not isinstance(values, np.ndarray):
        raise ValueError(f"{where} returned {type(values).__name__}; expected a numpy ndarray of shape ({n}, {m})")
    real = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.dtype == bool or not real:
        raise ValueError(f"{where} returned an array of dtype {values.dtype}; expected real numbers (float)")
    if values.shape != (n, m):
        raise ValueError(
            f"{where} returned shape {values.shape}; expected ({n}, {m}): n={n} voxels by the "
            f"{m} volumes of the gradient table it was given"
        )
    nan = int(np.isnan(values).sum()) if np.issubdtype(values.dtype, np.floating) else 0
    if nan:
        raise ValueError(f"{where} returned {nan} NaN value(s); every value must be a finite attenuation")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where} returned infinite value(s); every value must be a finite attenuation")
    check_attenuation_range(values, f"{where} returned", "expected clean attenuation S/S0 with S0 = 1")
    return values.astype(np.float32)


def call_plugin(spec, bvals, bvecs, n, rng, *, subject=None):
    """Clean attenuation from a user's generator ``package.module:function``, checked.

    The function is called as ``function(bvals, bvecs, n, rng)``, plus ``subject=subject``
    when it accepts that keyword (:func:`helpers.contract.load_plugin`). It gets copies of
    the gradient table, so it cannot change the subject's.

    Returns
    -------
    (n, m) float32 ndarray

    Raises
    ------
    ValueError
        Naming ``spec`` and the problem: module not importable, no such function, an
        exception inside the function, not an ndarray, wrong shape, NaN or infinite
        values, values outside :data:`PLUGIN_RANGE`.
    """
    func, wants_subject = load_plugin(spec)
    bvals = np.array(bvals, dtype=float)
    bvecs = np.array(bvecs, dtype=float)
    kwargs = {"subject": subject} if wants_subject else {}
    try:
        values = func(bvals, bvecs, n, rng, **kwargs)
    except Exception as e:  # the user's code: say whose it was
        raise ValueError(f"generator {spec!r} raised {type(e).__name__}: {e}") from e
    return _check_attenuation(values, n, len(bvals), spec)


def library_columns(spec, bvals, bvecs, *, tolerance=DEFAULTS["shell_tolerance"]):
    """A ``library:PATH`` generator's file, checked, and the column of it that holds each
    of the given volumes (:mod:`helpers.generators.library`). The file is read once per process (and
    again when it changes).

    Returns
    -------
    library : helpers.generators.library.Library
    columns : (m,) int ndarray
    """
    path = Path(spec[len(LIBRARY_PREFIX):])
    if not path.is_file():
        raise ValueError(f"{path}: library file not found (generator {spec!r})")
    library = _load_library(str(path), path.stat().st_mtime_ns)
    return library, match_columns(library, bvals, bvecs, tolerance=tolerance)


@functools.lru_cache(maxsize=4)
def _load_library(path, mtime_ns):
    """:func:`helpers.generators.library.load_library`, once per file version and process."""
    return load_library(path)


SUBJECT_FORCE_PERCENTILES = (5.0, 95.0)
"""SubjectFORCE's diffusivity ranges span these percentiles of the subject's pools."""


def subject_force_ranges(pools, *, percentiles=SUBJECT_FORCE_PERCENTILES):
    """FORCE's diffusivity ranges taken from a subject's own tissue (``SubjectFORCE``).

    The method paper's precision-medicine idea (draw from the subject, as Sampled does)
    applied to FORCE; every other distribution stays dipy's.

    - WM d_par: the 5th-95th percentile of the axial eigenvalue λ1 of the WM pool (FA >
      ``wm_fa_min``, eroded): in a coherent bundle the stick and the zeppelin both diffuse
      at d_par along the fibre, so λ1 ≈ d_par.
    - WM extra-axonal d_perp: the same percentiles of the radial eigenvalue (λ2 + λ3)/2
      divided by (1 − f̄), f̄ the mean intra-axonal fraction (0.75 for dipy's U(0.6, 0.9)):
      the stick has no radial diffusion, so the tensor's radial diffusivity is about
      (1 − f) d_perp.
    - GM: the percentiles of the GM pool's mean diffusivity.
    - CSF: the CSF pool's mean MD (FORCE's CSF is one value).

    Returns
    -------
    helpers.generators.force.ForceRanges
    """
    from helpers.generators.force import ForceRanges

    lo, hi = percentiles
    default = ForceRanges()
    f_mean = float(np.mean(default.f_intra))

    def span(values):
        a, b = np.percentile(values, [lo, hi])
        return (float(a), float(max(b, a)))

    wm = np.asarray(pools.wm, dtype=float)
    radial = wm[:, 1:].mean(axis=1) / (1.0 - f_mean)
    return ForceRanges(
        wm_d_par=span(np.clip(wm[:, 0], 1e-5, None)),
        wm_d_perp=span(np.clip(radial, 0.0, None)),
        gm_d=span(np.clip(np.asarray(pools.gm, dtype=float).mean(axis=1), 0.0, None)),
        csf_d=float(max(np.asarray(pools.csf, dtype=float).mean(), 0.0)),
    )


def describe_generator(spec, subject, *, pools=None):
    """What a report should say about a generator beyond its name: for ``library:PATH``
    the file, how many unique voxels it holds and where S0 came from; for SubjectFORCE the
    diffusivity ranges taken from the subject. Empty for the others."""
    if is_library(spec):
        library, _ = library_columns(spec, subject.bvals, subject.bvecs)
        return {"kind": "library", "file": str(library.path), "unique_voxels": library.n_unique,
                "s0": library.s0_source}
    if is_plugin(spec):
        return {"kind": "function", "spec": spec}
    if spec == "SubjectFORCE" and pools is not None:
        r = subject_force_ranges(pools)
        return {"kind": "built-in", "ranges_mm2_per_s": {"wm_d_par": list(r.wm_d_par), "wm_d_perp": list(r.wm_d_perp),
                                                         "gm_d": list(r.gm_d), "csf_d": r.csf_d},
                "from": f"the subject's pools, {SUBJECT_FORCE_PERCENTILES[0]:g}th-{SUBJECT_FORCE_PERCENTILES[1]:g}th percentiles"}
    if spec == "Calibrated" and getattr(subject, "calibration", None) is not None:
        cal = calibration_of(subject)
        force = subject_force_ranges(pools) if pools is not None else None
        return {"kind": "built-in, fitted to the subject's fit voxels",
                "fitted": cal.hyper.summary(), "intervals": {k: list(v) for k, v in cal.intervals.items()},
                "force_defaults": type(cal.hyper).force_defaults().summary(),
                "subject_force_ranges_mm2_per_s": None if force is None else {
                    "wm_d_par": list(force.wm_d_par), "wm_d_perp": list(force.wm_d_perp), "gm_d": list(force.gm_d),
                    "csf_d": force.csf_d},
                "distance": {"at_force_defaults": cal.distance_start, "fitted": cal.distance},
                "fit_seconds": cal.seconds, "evaluations": cal.evaluations}
    return {"kind": "built-in"}


def simulate(
    subject,
    method,
    n_voxels,
    seed=0,
    *,
    snr="auto",
    noise="global",
    pools=None,
    mixture=Mixture(),
    min_pool=DEFAULTS["min_pool"],
    wm_fa_min=DEFAULTS["wm_fa_min"],
    truth=False,
):
    """Synthetic attenuation on the subject's own gradient table.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
        Gives the gradient table (every selected volume, each with its own b-value), the
        tissue pools and the noise estimate.
    method : str
        A built-in name (:data:`helpers.contract.METHODS`), a user generator
        ``package.module:function`` (:func:`call_plugin`), or ``library:PATH`` (voxels
        drawn with replacement from a file of saved signals, :mod:`helpers.generators.library`), or
        a scaled built-in ``NAME*s`` (:data:`helpers.contract.SCALABLE`: every
        diffusivity it draws times s).
    n_voxels : int
    seed : int, sequence of int or numpy Generator
        Everything random (compartments, directions, noise) comes from
        ``numpy.random.default_rng(seed)``.
    snr : "auto", float or "none"
        "auto" uses the subject's estimate; "none" adds no noise.
    noise : {"global", "per_voxel"}
        "global": σ = 1/SNR for every voxel (the method paper's). "per_voxel": each voxel's
        σ is drawn from :func:`sigma_distribution` (the subject's σ/S0, scaled to median
        1/snr when ``snr`` is a number).
    pools : Pools, optional
        Reuse pools computed once per subject (:func:`tissue_pools`); otherwise Sampled
        and SampleAndMean compute them with ``min_pool`` and ``wm_fa_min``.
    mixture : Mixture
        Compartments of the built-in tensor generators.

    truth : bool
        Also return each voxel's ground truth.

    Returns
    -------
    clean, noisy : (n_voxels, m) float32 ndarray
        Noise-free target and noisy input of the autoencoder.
    truth : dict of ndarray, with ``truth=True``
        Arrays of length n_voxels: ``sigma`` (the noise σ, S0 = 1 scale) and what the
        generator draws: FORCE, SubjectFORCE and Calibrated ``fractions`` (WM, GM, CSF),
        ``n_fibers``, ``directions`` (n, 3, 3), ``weights``, ``odi``, ``d_par``, ``d_perp``,
        ``f_intra`` (per fibre slot), ``gm_d``, ``csf_d``; Syn, Sampled and SampleAndMean
        ``fractions`` (n, k compartments), ``evals`` (n, k, 3), ``evecs`` (n, k, 3, 3,
        eigenvectors as columns), ``directions`` (n, k, 3, principal eigenvectors); RandomWM ``free_water_fraction``. Plugins and libraries
        have none beyond ``sigma``.

    Raises
    ------
    ValueError
        Unknown method, bad settings, a subject that cannot support the method
        (:func:`method_support`), or a user generator that fails its checks.
    """
    (method,) = check_methods([method], where="simulate")
    n_voxels = int(n_voxels)
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be positive, got {n_voxels}")
    sigmas = noise_sigmas(subject, snr=snr, noise=noise)
    rng = np.random.default_rng(seed)
    bvals, bvecs = subject.bvals, subject.bvecs
    method, scale = scaled_method(method) or (method, 1.0)
    known = {}
    if is_plugin(method):
        clean = call_plugin(method, bvals, bvecs, n_voxels, rng, subject=fitted(subject))
    elif is_library(method):
        library, columns = library_columns(method, bvals, bvecs)
        clean = draw_library(library, columns, n_voxels, rng)
    elif method == "Calibrated":
        from helpers.generators.calibration import calibrated_signal, draw_parameters

        hyper = calibration_of(subject, snr=snr).hyper
        params = draw_parameters(n_voxels, rng, hyper)
        clean, known = calibrated_signal(bvals, bvecs, params), _force_truth(params)
        # its own fitted noise model: the scan's σ/S0 spread, scaled (whatever ``noise`` says)
        sigmas = hyper.sigmas(noise_sigmas(subject, snr=snr, noise="per_voxel"), params.fractions, rng)
    elif method in ("FORCE", "SubjectFORCE"):
        from helpers.generators.force import ForceRanges, simulate_force

        if method == "SubjectFORCE":
            pools = pools if pools is not None else tissue_pools(subject, min_pool=min_pool, wm_fa_min=wm_fa_min)
            ranges = subject_force_ranges(pools)
        else:
            ranges = ForceRanges()
        clean, params = simulate_force(bvals, bvecs, n_voxels, rng, ranges=ranges.scaled(scale) if scale != 1.0 else ranges,
                                       parameters=True)
        known = _force_truth(params)
    elif method == "RandomWM":
        f = rng.random((n_voxels, 1))
        rest = rng.random((n_voxels, len(bvals)))
        clean = f * np.exp(-np.asarray(bvals, dtype=float) * FREE_WATER_D) + (1 - f) * rest
        known = {"free_water_fraction": f[:, 0]}
    else:
        if method != "Syn" and pools is None:
            pools = tissue_pools(subject, min_pool=min_pool, wm_fa_min=wm_fa_min)
        evals, evecs, fractions = draw_mixture(method, n_voxels, rng, pools=pools, mixture=mixture)
        if scale != 1.0:
            evals = evals * scale
        clean = multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32)
        known = {"fractions": fractions, "evals": evals, "evecs": evecs, "directions": evecs[..., 0]}
    clean = clean.astype(np.float32, copy=False)
    if isinstance(sigmas, np.ndarray) and method != "Calibrated":  # per_voxel: one σ per synthetic voxel
        sigmas = sigmas[rng.integers(len(sigmas), size=n_voxels)]
    noisy = add_rician_noise(clean, sigmas, rng)
    if not truth:
        return clean, noisy
    known["sigma"] = np.broadcast_to(np.float32(0.0) if sigmas is None else np.asarray(sigmas, np.float32), (n_voxels,))
    return clean, noisy, known


def noise_sigmas(subject, *, snr="auto", noise="global"):
    """The noise model :func:`simulate` adds: None (no noise), one σ (``"global"``: 1/SNR)
    or the values each voxel's σ is drawn from (``"per_voxel"``, :func:`sigma_distribution`)."""
    noise = parse_noise(noise)
    if noise == "global":
        snr_value = resolve_snr(snr, subject)
        return None if snr_value is None else 1.0 / snr_value
    return sigma_distribution(subject, snr=snr)


def _force_truth(params):
    """Per-voxel ground truth of FORCE-model voxels, as arrays of length n."""
    return {"fractions": params.fractions, "n_fibers": params.n_fibers, "directions": params.directions,
            "weights": params.weights, "odi": params.odi, "d_par": params.d_par, "d_perp": params.d_perp,
            "f_intra": params.f_intra, "gm_d": params.gm_d, "csf_d": params.csf_d}


CALIBRATION_BUDGET = {"max_evals": 1000, "n_resamples": 3, "resample_evals": 1000, "seconds": 300.0}
"""The fit's budget when a subject has no saved calibration, in evaluations (about 30-65
ms each on 2 cores: a minute or two in all); ``seconds`` caps each stage."""


def fit_calibration(subject, *, snr="auto", seed=0, progress=None, **budget):
    """Fit ``Calibrated`` to the subject's fit part (:func:`helpers.generators.calibration.calibrate`
    with the fit voxels, their blocks, the scan's per-voxel σ/S0 and ``budget``, default
    :data:`CALIBRATION_BUDGET`); the one place both the pipeline and :func:`calibration_of`
    fit it."""
    from helpers.generators.calibration import calibrate

    part = fitted(subject)
    return calibrate(part.attenuation, subject.bvals, subject.bvecs, sigmas=noise_sigmas(part, snr=snr, noise="per_voxel"),
                     dti_columns=getattr(subject, "dti_columns", None),
                     blocks=part.blocks if getattr(subject, "is_split", False) else None,
                     seed=seed, progress=progress, **{**CALIBRATION_BUDGET, **budget})


def calibration_of(subject, *, snr="auto"):
    """The subject's ``Calibrated`` fit: ``subject.calibration`` (the pipeline loads it
    from ``calibration.json``), else fitted now to the fit part with the default budget
    and kept on the subject. Calibrated's noise is its own: the scan's per-voxel σ/S0
    with a fitted scale and spread (:class:`helpers.generators.calibration.Hyper`)."""
    from helpers.generators.calibration import Calibration

    cal = getattr(subject, "calibration", None)
    if isinstance(cal, dict):  # as read from calibration.json
        cal = subject.calibration = Calibration.from_dict(cal)
    if cal is None:
        cal = subject.calibration = fit_calibration(subject, snr=snr)
    return cal
