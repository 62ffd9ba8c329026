"""``Calibrated``: a FORCE-like generator whose population is fitted to the subject's scan.

Every built-in generator draws its voxels from fixed distributions (the method paper's
tensors, dipy's FORCE ranges) or copies the subject's tensors (Sampled, SubjectFORCE's
percentile rule). ``Calibrated`` is parametric, so every voxel it draws has its ground
truth, and the *distributions* of its parameters are fitted to the subject's fit voxels
(:mod:`helpers.scan.split`): the fit minimises a distance between the rotation-invariant
features (:func:`helpers.features.invariant_features`) of the real fit voxels and of
synthetic voxels drawn through the scan's own noise model (docs/method.md, "A generator
calibrated to the scan").

The family (per voxel)
----------------------
* tissue: pure WM, pure GM or pure CSF with probabilities ``pure``; otherwise fractions
  (WM, GM, CSF) ~ Dirichlet(``tissue_alpha``) (how often a voxel is pure tissue, or has
  little CSF, is a fitted quantity, not a fixed Dirichlet(2, 1, 1));
* 1, 2 or 3 fibres with probabilities ``fiber_probs``; directions, weights and separations
  as FORCE draws them (:mod:`helpers.generators.force`: sphere vertices, weights ≥ 0.2, 30°/60°);
* one d_par, one d_perp = r · d_par (so d_perp ≤ d_par), one ODI per voxel and one
  intra-axonal fraction per fibre, each from a **logit-normal** distribution on a fixed
  support: x = lo + (hi - lo) · sigmoid(μ + σ z), z ~ N(0, 1); the ODI is then rounded to a
  grid of :data:`ODI_GRID` (the kernel table is tabulated per grid value);
* GM: isotropic, d_GM logit-normal; CSF: isotropic, one fitted d_CSF.

The signal is FORCE's (:func:`helpers.generators.force.force_signal`), so ground truth per voxel is a
:class:`helpers.generators.force.ForceParameters`.

The fit
-------
Common random numbers: the uniforms and normals behind every synthetic voxel (and its
noise) are drawn once, so the objective is a deterministic function of the 19
unconstrained hyperparameters (:class:`Hyper`). The objective
(:class:`FeatureDistance`) is the mean 1-D Wasserstein distance over every feature plus the
mean over random projections of the features (a sliced Wasserstein distance: sensitive to
how features go together, which the two-sample classifier sees), each on features
standardised by the real voxels' median and IQR. It is minimised by CMA-ES (``cma``,
Hansen's reference implementation) from FORCE's defaults. Intervals come from refitting on
independent fits to block-bootstrap resamples of the fit voxels, each with its own random
numbers (:func:`calibrate`).

This module is numerical: numpy, scipy, ``cma`` and the package's numerical modules; no
configuration, I/O or runner code.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np
from scipy.special import expit, gammaincinv, logit

from helpers.generators.force import ForceParameters, ForceRanges, ForceTable, _draw_directions, _floats, _valid_pairs

__all__ = [
    "SUPPORT",
    "ODI_GRID",
    "Hyper",
    "draw_parameters",
    "calibrated_signal",
    "FeatureDistance",
    "Calibration",
    "calibrate",
    "summary_names",
]

VERSION = 1
"""The family's version: a saved calibration of another version is refitted."""

SUPPORT = {
    "d_par": (0.3e-3, 3.5e-3),   # mm²/s
    "ratio": (0.0, 1.0),         # d_perp / d_par
    "f_intra": (0.0, 1.0),
    "odi": (0.01, 0.95),
    "gm_d": (0.05e-3, 3.0e-3),   # mm²/s
}
"""Supports of the logit-normal distributions."""

CSF_RANGE = (1.0e-3, 3.5e-3)
"""Range of the fitted CSF diffusivity, mm²/s."""

NOISE_SCALE_RANGE = (0.4, 2.5)
"""Range of the fitted factor on the scan's noise σ."""

NOISE_SPREAD_RANGE = (0.0, 1.5)
"""Range of the fitted exponent on the spread of the scan's σ/S0."""

S0_RANGE = (0.25, 6.0)
"""Range of the fitted S0 of pure GM and pure CSF relative to pure WM."""

ODI_GRID = np.round(np.linspace(0.01, 0.95, 48), 6)
"""ODI values a fibre can take (the kernel table is tabulated at each)."""

D_MAX = SUPPORT["d_par"][1]
MIN_FIBER_WEIGHT = ForceRanges().min_fiber_weight
_LOGNORMAL = ("d_par", "ratio", "f_intra", "odi", "gm_d")
RECOVERY_TOLERANCE = {
    "d_par_median": 0.2e-3, "d_perp_median": 0.2e-3, "mean_f_wm": 0.1, "mean_f_gm": 0.1, "mean_f_csf": 0.1,
    "gm_d_median": 0.2e-3, "noise_scale": 0.1,
}
"""What a fit from FORCE's defaults must recover, on pseudo-scans of the family with known
hyperparameters (tests/generators/test_calibration.py, benchmarks/bench_calibration.py): the
quantities the features identify, absolute tolerances (diffusivities in mm²/s). Fibre
counts, ODI and the intra-axonal fraction are reported, not required: at one shell they
trade off against each other (docs/method.md)."""

SIGMA0 = 0.5  # CMA-ES's initial step in the unconstrained space
_B0 = 50.0  # volumes with b <= this are b0 and exactly 1, as in simulate_force
_SIGMA_LOG = (-3.0, 0.7)  # bounds of log σ of a logit-normal (σ from 0.05 to 2)
_LOGIT = (-5.0, 5.0)  # bounds of a log-odds or μ


# ----------------------------------------------------------------------------- hyperparameters


def _check(name, value, n):
    return _floats(name, value, n, owner="Hyper")


@dataclass(frozen=True)
class Hyper:
    """Population hyperparameters of ``Calibrated`` (see the module docstring).

    Parameters
    ----------
    fiber_probs : (3,) tuple
        Probabilities of 1, 2, 3 fibres in a voxel with WM.
    tissue_alpha : (3,) tuple
        Dirichlet concentrations of (WM, GM, CSF) in a mixed voxel, each > 0.
    pure : (3,) tuple
        Probabilities that a voxel is pure WM, pure GM, pure CSF (sum < 1; the rest mixed).
    d_par, ratio, f_intra, odi, gm_d : (2,) tuple
        (μ, σ) of each logit-normal: x = lo + (hi - lo) sigmoid(μ + σ z) on :data:`SUPPORT`.
    csf_d : float
        CSF diffusivity, mm²/s.
    noise_scale : float
        Factor on the scan's noise σ (:data:`NOISE_SCALE_RANGE`): the noise level is fitted
        too, since a scan's σ estimate is itself uncertain (the features' harmonic-fit
        residual measures it).
    noise_spread : float
        Exponent γ on the spread of the scan's per-voxel σ/S0 (:data:`NOISE_SPREAD_RANGE`):
        σ = noise_scale · m · (σ_scan / m)^γ with m the median; γ = 1 is the scan's own
        distribution, γ = 0 one σ for every voxel.
    s0_tissue : (2,) tuple
        S0 of pure GM and of pure CSF relative to pure WM (:data:`S0_RANGE`): a voxel's
        σ/S0 is divided by f_WM + s_GM f_GM + s_CSF f_CSF, since σ is one number in scanner
        units while S0 (proton density, T2 at the echo time) differs by tissue: CSF's
        long T2 gives its voxels a high S0 and a low σ/S0.
    """

    fiber_probs: tuple = (0.1, 0.2, 0.7)
    tissue_alpha: tuple = (2.0, 1.0, 1.0)
    pure: tuple = (0.0, 0.0, 0.0)
    d_par: tuple = (0.0, 1.0)
    ratio: tuple = (0.0, 1.0)
    f_intra: tuple = (0.0, 1.0)
    odi: tuple = (0.0, 1.0)
    gm_d: tuple = (0.0, 1.0)
    csf_d: float = 3.0e-3
    noise_scale: float = 1.0
    noise_spread: float = 1.0
    s0_tissue: tuple = (1.0, 1.0)

    def __post_init__(self):
        put = object.__setattr__
        probs = _check("fiber_probs", self.fiber_probs, 3)
        if min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"Hyper.fiber_probs = {self.fiber_probs!r}: expected 3 probabilities summing to 1")
        put(self, "fiber_probs", probs)
        alpha = _check("tissue_alpha", self.tissue_alpha, 3)
        if min(alpha) <= 0:
            raise ValueError(f"Hyper.tissue_alpha = {self.tissue_alpha!r}: expected 3 concentrations > 0")
        put(self, "tissue_alpha", alpha)
        pure = _check("pure", self.pure, 3)
        if min(pure) < 0 or sum(pure) >= 1:
            raise ValueError(f"Hyper.pure = {self.pure!r}: expected 3 probabilities >= 0 with sum < 1")
        put(self, "pure", pure)
        for name in _LOGNORMAL:
            mu, sigma = _check(name, getattr(self, name), 2)
            if sigma < 0:
                raise ValueError(f"Hyper.{name} = {getattr(self, name)!r}: expected (μ, σ) with σ >= 0")
            put(self, name, (mu, sigma))
        (csf,) = _check("csf_d", self.csf_d, 1)
        if not CSF_RANGE[0] <= csf <= CSF_RANGE[1]:
            raise ValueError(f"Hyper.csf_d = {csf!r}: expected a value in [{CSF_RANGE[0]:g}, {CSF_RANGE[1]:g}] mm²/s")
        put(self, "csf_d", csf)
        (scale,) = _check("noise_scale", self.noise_scale, 1)
        if not NOISE_SCALE_RANGE[0] <= scale <= NOISE_SCALE_RANGE[1]:
            raise ValueError(f"Hyper.noise_scale = {scale!r}: expected a value in {list(NOISE_SCALE_RANGE)}")
        put(self, "noise_scale", scale)
        (spread,) = _check("noise_spread", self.noise_spread, 1)
        if not NOISE_SPREAD_RANGE[0] <= spread <= NOISE_SPREAD_RANGE[1]:
            raise ValueError(f"Hyper.noise_spread = {spread!r}: expected a value in {list(NOISE_SPREAD_RANGE)}")
        put(self, "noise_spread", spread)
        s0 = _check("s0_tissue", self.s0_tissue, 2)
        if not all(S0_RANGE[0] <= x <= S0_RANGE[1] for x in s0):
            raise ValueError(f"Hyper.s0_tissue = {self.s0_tissue!r}: expected two values in {list(S0_RANGE)}")
        put(self, "s0_tissue", s0)

    # --- FORCE's defaults, as the calibration's start

    @classmethod
    def force_defaults(cls):
        """The family's closest member to dipy's FORCE defaults: the same fibre and tissue
        probabilities, and logit-normals whose 5th-95th percentiles span FORCE's uniform
        ranges (d_perp / d_par from FORCE's d_perp range over its mean d_par)."""
        r = ForceRanges()
        mean_par = float(np.mean(r.wm_d_par))
        return cls(
            fiber_probs=r.fiber_probs,
            tissue_alpha=r.tissue_alpha,
            pure=(0.0, 0.0, 0.0),
            d_par=_spanning("d_par", r.wm_d_par),
            ratio=_spanning("ratio", (r.wm_d_perp[0] / mean_par, r.wm_d_perp[1] / mean_par)),
            f_intra=_spanning("f_intra", r.f_intra),
            odi=_spanning("odi", r.odi_range),
            gm_d=_spanning("gm_d", r.gm_d),
            csf_d=r.csf_d,
        )

    # --- unconstrained vector (the optimiser's space)

    def to_vector(self):
        """(23,) ndarray: log-odds of fibre counts and tissue kinds, log α, logit-normal
        (μ, log σ), logit of the CSF diffusivity in :data:`CSF_RANGE`, log noise scale, noise spread, log relative S0 of GM and CSF."""
        p = np.clip(np.asarray(self.fiber_probs), 1e-6, None)
        kinds = np.clip(np.r_[1.0 - sum(self.pure), self.pure], 1e-6, None)
        v = [np.log(p[1:] / p[0]), np.log(self.tissue_alpha), np.log(kinds[1:] / kinds[0])]
        for name in _LOGNORMAL:
            mu, sigma = getattr(self, name)
            v.append([mu, math.log(max(sigma, math.exp(_SIGMA_LOG[0])))])
        v.append([float(logit((self.csf_d - CSF_RANGE[0]) / (CSF_RANGE[1] - CSF_RANGE[0])))])
        v.append([math.log(self.noise_scale), self.noise_spread, *np.log(self.s0_tissue)])
        return np.clip(np.concatenate([np.ravel(x) for x in v]), *_LOGIT)

    @classmethod
    def from_vector(cls, v):
        v = np.asarray(v, dtype=float)
        if v.shape != (N_PARAMS,):
            raise ValueError(f"a Hyper vector has {N_PARAMS} values, got shape {v.shape}")
        softmax = lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()  # noqa: E731
        probs = softmax(np.r_[0.0, v[0:2]])
        alpha = np.exp(np.clip(v[2:5], -6, 6))
        kinds = softmax(np.r_[0.0, v[5:8]])
        kw = {name: (float(v[8 + 2 * i]), float(math.exp(v[9 + 2 * i]))) for i, name in enumerate(_LOGNORMAL)}
        csf = CSF_RANGE[0] + (CSF_RANGE[1] - CSF_RANGE[0]) * float(expit(v[18]))
        pure = tuple(float(x) for x in kinds[1:])
        if sum(pure) >= 1:
            pure = tuple(x * (1 - 1e-9) / sum(pure) for x in pure)
        noise = float(np.clip(math.exp(v[19]), *NOISE_SCALE_RANGE))
        spread = float(np.clip(v[20], *NOISE_SPREAD_RANGE))
        s0 = tuple(float(x) for x in np.clip(np.exp(v[21:23]), *S0_RANGE))
        return cls(fiber_probs=tuple(probs), tissue_alpha=tuple(alpha), pure=pure, csf_d=csf, noise_scale=noise,
                   noise_spread=spread, s0_tissue=s0, **kw)

    # --- as numbers a researcher reads

    def to_dict(self):
        """Every field, tuples as lists (JSON)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})
        except TypeError as e:
            raise ValueError(f"not a set of Calibrated hyperparameters: {e}") from e

    def summary(self):
        """Interpretable numbers: probabilities, expected tissue fractions, and the median
        and 5th/95th percentiles of every diffusivity and fraction (d_perp's from r · d_par
        at the two medians), in mm²/s for diffusivities."""
        out = {f"p_{k}_fibres": p for k, p in zip((1, 2, 3), self.fiber_probs)}
        for tissue, p in zip(("wm", "gm", "csf"), self.pure):
            out[f"p_pure_{tissue}"] = p
        mixed = 1.0 - sum(self.pure)
        alpha = np.asarray(self.tissue_alpha)
        expected = mixed * alpha / alpha.sum() + np.asarray(self.pure)
        for tissue, f in zip(("wm", "gm", "csf"), expected):
            out[f"mean_f_{tissue}"] = float(f)
        for name in _LOGNORMAL:
            q = _quantiles(name, getattr(self, name), (0.5, 0.05, 0.95))
            out[f"{name}_median"], out[f"{name}_p05"], out[f"{name}_p95"] = q
        out["d_perp_median"] = out["d_par_median"] * out["ratio_median"]
        out["csf_d"] = self.csf_d
        out["noise_scale"] = self.noise_scale
        out["noise_spread"] = self.noise_spread
        out["s0_gm"], out["s0_csf"] = self.s0_tissue
        return out

    def sigmas(self, sigmas, fractions, rng):
        """(n,) noise σ (S0 = 1 scale) of voxels with tissue ``fractions`` (n, 3) under this
        noise model, from the scan's ``sigmas`` (one σ, or the per-voxel σ/S0 values to
        draw from, as :func:`calibrate` takes them); None: no noise."""
        n = len(fractions)
        return _voxel_sigmas(sigmas, self, np.random.default_rng(rng).integers(2**31, size=n), fractions)


def _voxel_sigmas(sigmas, hyper, draw, fractions):
    """σ per voxel: the scan's σ/S0 at ``draw`` (indices into it), its spread about the
    median raised to γ, scaled, over the voxel's relative S0."""
    if sigmas is None:
        return None
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim == 0:
        base = np.full(len(draw), float(s))
    else:
        m = float(np.median(s))
        base = m * (s[draw % len(s)] / m) ** hyper.noise_spread
    s0 = fractions @ np.array([1.0, *hyper.s0_tissue])
    return (hyper.noise_scale * base / s0).astype(np.float32)


N_PARAMS = 23


def summary_names():
    """The keys of :meth:`Hyper.summary`, in order."""
    return list(Hyper().summary())


def _scale(name, x):
    lo, hi = SUPPORT[name]
    return lo + (hi - lo) * x


def _quantiles(name, mu_sigma, qs):
    from scipy.stats import norm

    mu, sigma = mu_sigma
    return tuple(float(_scale(name, expit(mu + sigma * norm.ppf(q)))) for q in qs)


def _spanning(name, span):
    """(μ, σ) of the logit-normal on SUPPORT[name] whose 5th and 95th percentiles are ``span``."""
    lo, hi = SUPPORT[name]
    a, b = (logit(np.clip((np.asarray(span, float) - lo) / (hi - lo), 1e-6, 1 - 1e-6)))
    return (float((a + b) / 2), float(max((b - a) / (2 * 1.6448536), 1e-3)))


# ----------------------------------------------------------------------------- drawing


@dataclass(frozen=True, eq=False)
class _Base:
    """The random numbers behind n voxels, independent of the hyperparameters."""

    u_fibres: np.ndarray  # (n,)
    u_kind: np.ndarray  # (n,)
    u_tissue: np.ndarray  # (n, 3): gamma quantiles for the Dirichlet
    z: dict  # name -> (n,) or (n, 3) standard normals
    u_weight2: np.ndarray  # (n,)
    simplex3: np.ndarray  # (n, 3): Dirichlet(1, 1, 1)
    index: dict  # k -> (n, 3) sphere indices for k fibres
    noise: np.ndarray | None  # (2, n, m) standard normals for the Rician noise

    def __len__(self):
        return len(self.u_fibres)


def _draw_base(n, m, rng):
    rng = np.random.default_rng(rng)
    valid2, valid3 = (_valid_pairs(t) for t in ForceRanges().min_separation_deg)
    index = {k: _draw_directions(np.full(n, k), rng, valid2, valid3) for k in (1, 2, 3)}
    z = {name: rng.standard_normal((n, 3) if name == "f_intra" else n) for name in _LOGNORMAL}
    return _Base(
        u_fibres=rng.random(n), u_kind=rng.random(n), u_tissue=rng.uniform(1e-12, 1.0, (n, 3)), z=z,
        u_weight2=rng.random(n), simplex3=rng.dirichlet(np.ones(3), n), index=index,
        noise=None if m is None else rng.standard_normal((2, n, m), dtype=np.float32),
    )


def _parameters(base, hyper):
    """ForceParameters of the voxels behind ``base`` under ``hyper`` (deterministic)."""
    n = len(base)
    p1, p2, _ = hyper.fiber_probs
    n_fibers = 1 + (base.u_fibres >= p1).astype(np.int64) + (base.u_fibres >= p1 + p2).astype(np.int64)
    n_fibers = np.minimum(n_fibers, 3)
    used = np.arange(3) < n_fibers[:, None]
    gamma = gammaincinv(np.asarray(hyper.tissue_alpha)[None, :], base.u_tissue)
    total = gamma.sum(axis=1, keepdims=True)
    fractions = np.where(total > 0, gamma / np.where(total > 0, total, 1.0), np.eye(3)[np.argmax(base.u_tissue, axis=1)])
    edges = np.cumsum(hyper.pure)
    kind = np.searchsorted(edges, base.u_kind, side="right")  # 0, 1, 2 pure; 3 mixed
    pure = kind < 3
    fractions[pure] = np.eye(3)[kind[pure]]
    m = MIN_FIBER_WEIGHT
    u = m + (1 - 2 * m) * base.u_weight2
    weights = np.select(
        [n_fibers[:, None] == 1, n_fibers[:, None] == 2],
        [np.array([1.0, 0.0, 0.0])[None, :], np.stack([u, 1 - u, np.zeros(n)], axis=1)],
        m + (1 - 3 * m) * base.simplex3,
    )
    value = {name: _scale(name, expit(hyper_mu + hyper_sigma * base.z[name]))
             for name, (hyper_mu, hyper_sigma) in ((k, getattr(hyper, k)) for k in _LOGNORMAL)}
    d_par = value["d_par"]
    d_perp = value["ratio"] * d_par
    odi = ODI_GRID[np.abs(value["odi"][:, None] - ODI_GRID[None, :]).argmin(axis=1)]
    index = np.select([n_fibers[:, None] == k for k in (1, 2)], [base.index[1], base.index[2]], base.index[3])

    def per_fibre(x):
        return np.where(used, np.broadcast_to(x, (n, 3)), 0.0)

    return ForceParameters(
        fractions=fractions, n_fibers=n_fibers, sphere_index=np.where(used, index, -1),
        weights=per_fibre(weights), odi=per_fibre(odi[:, None]), d_par=per_fibre(d_par[:, None]),
        d_perp=per_fibre(d_perp[:, None]), f_intra=per_fibre(value["f_intra"]), gm_d=value["gm_d"],
        csf_d=np.full(n, hyper.csf_d),
    )


def draw_parameters(n, rng, hyper):
    """Ground truth of n ``Calibrated`` voxels: :class:`helpers.generators.force.ForceParameters`.

    Examples
    --------
    >>> p = draw_parameters(4, 0, Hyper.force_defaults())
    >>> p.fractions.shape, bool(np.allclose(p.fractions.sum(axis=1), 1))
    ((4, 3), True)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (voxels), got {n!r}")
    return _parameters(_draw_base(int(n), None, rng), hyper)


_TABLES = {}


def _table(bvals, bvecs):
    """A :class:`helpers.generators.force.ForceTable` for the gradient table (cached: tables cost a
    second or two and a calibration, its replicates and its judges share one)."""
    bvals, bvecs = np.asarray(bvals, np.float64), np.asarray(bvecs, np.float64)
    key = (bvals.tobytes(), bvecs.tobytes())
    if key not in _TABLES:
        if len(_TABLES) >= 4:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = ForceTable(bvals, bvecs, ODI_GRID, d_max=D_MAX)
    return _TABLES[key]


def calibrated_signal(bvals, bvecs, params):
    """(n, m) float32 clean attenuation of ``params`` (b <= 50 volumes exactly 1)."""
    out = _table(bvals, bvecs).signal(params)
    out[:, np.asarray(bvals) <= _B0] = 1.0
    return out


def _noisy(clean, sigmas, normals):
    """Rician noise from fixed standard normals (2, n, m), as helpers.generators.simulation.add_rician_noise."""
    if sigmas is None:
        return clean.copy()
    s = np.asarray(sigmas, dtype=np.float32)
    s = s[:, None] if s.ndim == 1 else s
    return np.hypot(clean + s * normals[0], s * normals[1])


# ----------------------------------------------------------------------------- the distance


class FeatureDistance:
    """Distance between the feature distribution of real voxels and of synthetic ones.

    Each feature is first mapped through the real voxels' own distribution function and
    the normal quantile function, z = Φ⁻¹(F_real(x)), so the real features are standard
    normal whatever their scale or tails (harmonic powers span decades). The distance is
    the sum of three parts, each 0 when the two samples match:

    - the mean 1-D Wasserstein-1 distance over the features;
    - the mean W1 over ``n_projections`` random unit directions (sliced W1: linear
      relations between features);
    - ``mmd_weight`` times the square root of a kernel MMD² with Gaussian kernels of
      bandwidths 1 and 2, through ``n_fourier`` random Fourier features (non-linear
      relations: how noise goes with anisotropy, which a classifier sees).

    Parameters
    ----------
    real : (n, d) ndarray
        The real voxels' features (rows with a non-finite value are left out).
    seed : int
        Seeds the projections and the Fourier features.
    """

    def __init__(self, real, *, seed=0, n_projections=32, n_quantiles=100, n_fourier=256, mmd_weight=4.0):
        real = np.asarray(real, dtype=float)
        real = real[np.all(np.isfinite(real), axis=1)]
        if len(real) < 10:
            raise ValueError(f"calibration: {len(real)} real voxels with finite features; need at least 10")
        n, d = real.shape
        self.sorted = np.sort(real, axis=0)
        self.cdf = (np.arange(n) + 0.5) / n
        rng = np.random.default_rng([seed, 7])
        directions = rng.standard_normal((d, n_projections))
        self.directions = np.hstack([np.eye(d), directions / np.linalg.norm(directions, axis=0)])
        self.n_marginal = d
        self.levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
        bandwidths = np.repeat([1.0, 2.0], n_fourier // 2)
        self.omega = rng.standard_normal((d, len(bandwidths))) / bandwidths
        self.phase = rng.uniform(0, 2 * np.pi, len(bandwidths))
        self.mmd_weight = float(mmd_weight)
        z = self._gaussianise(real)
        self.real_q = self._quantiles(z)
        self.real_phi = self._fourier(z)

    def _gaussianise(self, x):
        from scipy.special import ndtri

        u = np.column_stack([np.interp(x[:, k], self.sorted[:, k], self.cdf) for k in range(x.shape[1])])
        return ndtri(np.clip(u, self.cdf[0] / 2, 1 - self.cdf[0] / 2))

    def _quantiles(self, z):
        z = np.sort(z @ self.directions, axis=0)
        return z[np.minimum((self.levels * len(z)).astype(int), len(z) - 1)]  # the empirical quantiles

    def _fourier(self, z):
        return np.sqrt(2.0 / len(self.phase)) * np.cos(z @ self.omega + self.phase).mean(axis=0)

    def __call__(self, synthetic):
        synthetic = np.asarray(synthetic, dtype=float)
        ok = np.all(np.isfinite(synthetic), axis=1)
        if ok.sum() < 10:
            return float("inf")
        z = self._gaussianise(synthetic[ok])
        w1 = np.abs(self._quantiles(z) - self.real_q).mean(axis=0)
        mmd = float(np.sqrt(((self._fourier(z) - self.real_phi) ** 2).sum()))
        sliced = w1[self.n_marginal:].mean() if len(w1) > self.n_marginal else 0.0
        return float(w1[: self.n_marginal].mean() + sliced + self.mmd_weight * mmd)


# ----------------------------------------------------------------------------- the fit


@dataclass
class Calibration:
    """What :func:`calibrate` found.

    Attributes
    ----------
    hyper : Hyper
        The fitted hyperparameters.
    distance, distance_start : float
        The objective at the fit and at FORCE's defaults (same random numbers).
    intervals : dict
        Per :meth:`Hyper.summary` key: (low, high), the 2.5th-97.5th percentiles over the
        bootstrap refits; empty with no resample.
    resamples : list of dict
        Each refit's summary.
    evaluations : int
    seconds : float
    settings : dict
    """

    hyper: Hyper
    distance: float
    distance_start: float
    intervals: dict = field(default_factory=dict)
    resamples: list = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def to_dict(self):
        return {"hyperparameters": self.hyper.to_dict(), "summary": self.hyper.summary(),
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "distance": self.distance,
                "distance_start": self.distance_start, "resamples": self.resamples,
                "evaluations": self.evaluations, "seconds": self.seconds, "settings": self.settings}

    def table(self):
        """pandas.DataFrame: every summary quantity fitted, its interval, and FORCE's default."""
        import pandas as pd

        fitted, default = self.hyper.summary(), Hyper.force_defaults().summary()
        rows = [{"quantity": k, "fitted": v, "low": self.intervals.get(k, (np.nan, np.nan))[0],
                 "high": self.intervals.get(k, (np.nan, np.nan))[1], "FORCE default": default[k]}
                for k, v in fitted.items()]
        return pd.DataFrame(rows)

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(hyper=Hyper.from_dict(d["hyperparameters"]), distance=float(d["distance"]),
                       distance_start=float(d["distance_start"]),
                       intervals={k: tuple(v) for k, v in d.get("intervals", {}).items()},
                       resamples=list(d.get("resamples", [])), evaluations=int(d.get("evaluations", 0)),
                       seconds=float(d.get("seconds", 0.0)), settings=dict(d.get("settings", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a calibration: {e}") from e


def _features_of(attenuation, bvals, bvecs, dti_columns):
    from helpers.features import invariant_features

    return invariant_features(attenuation, bvals, bvecs, dti_columns=dti_columns).to_numpy(float)


def _cma_minimise(objective, x0, *, sigma0, max_evals, seconds, seed, progress=None):
    """CMA-ES from ``x0`` until ``max_evals`` evaluations (deterministic given ``seed``) or,
    as a safety cap, ``seconds`` (None: none). Returns (best x, best value, evaluations,
    whether the time cap stopped it)."""
    import warnings

    with warnings.catch_warnings():  # cma warns that matplotlib (for its plots) is absent
        warnings.simplefilter("ignore", UserWarning)
        import cma

    lower = np.full(N_PARAMS, _LOGIT[0])
    upper = np.full(N_PARAMS, _LOGIT[1])
    lower[2:5], upper[2:5] = -3.0, 3.0  # log α
    for i in range(5):
        lower[9 + 2 * i], upper[9 + 2 * i] = _SIGMA_LOG
    lower[19], upper[19] = np.log(NOISE_SCALE_RANGE)
    lower[20], upper[20] = NOISE_SPREAD_RANGE
    lower[21:23], upper[21:23] = np.log(S0_RANGE)
    x0 = np.clip(x0, lower + 1e-6, upper - 1e-6)
    es = cma.CMAEvolutionStrategy(x0, sigma0, {"seed": int(seed) + 1, "bounds": [lower, upper], "verbose": -9,
                                               "maxfevals": int(max_evals)})
    best_x, best_f = x0, objective(x0)
    evals = 1
    start = time.perf_counter()
    capped = False
    while not es.stop():
        if seconds is not None and time.perf_counter() - start >= seconds:
            capped = True
            break
        xs = es.ask()
        fs = [objective(x) for x in xs]
        es.tell(xs, fs)
        evals += len(xs)
        i = int(np.argmin(fs))
        if fs[i] < best_f:
            best_x, best_f = np.asarray(xs[i]), float(fs[i])
        if progress is not None:
            progress(evals, best_f)
    return best_x, best_f, evals, capped


def _fit_job(job, progress=None):
    """One CMA-ES fit (the main fit or a bootstrap refit): picklable in, picklable out,
    so the fits of a calibration can run in worker processes, one per core."""
    from threadpoolctl import threadpool_limits

    bvals, bvecs, sigmas, dti_columns = job["bvals"], job["bvecs"], job["sigmas"], job["dti_columns"]
    target = FeatureDistance(job["features"], seed=job["base_seed"])
    base = _draw_base(job["n_synthetic"], len(bvals), [job["seed"], job["base_seed"]])
    draw = np.random.default_rng([job["seed"], job["base_seed"], 1]).integers(2**31, size=len(base))

    def objective(x):
        hyper = Hyper.from_vector(np.asarray(x))
        params = _parameters(base, hyper)
        clean = calibrated_signal(bvals, bvecs, params)
        noisy = _noisy(clean, _voxel_sigmas(sigmas, hyper, draw, params.fractions), base.noise)
        return target(_features_of(noisy, bvals, bvecs, dti_columns))

    with threadpool_limits(limits=1):  # one core per fit: the fits run side by side
        x, best, n_evals, capped = _cma_minimise(objective, job["x0"], sigma0=job["sigma0"], max_evals=job["evals"],
                                                 seconds=job["seconds"], seed=job["base_seed"], progress=progress)
        at_start = objective(job["x0"])
    return {"x": np.asarray(x), "best": float(best), "evaluations": int(n_evals), "at_start": float(at_start),
            "capped": bool(capped)}


def calibrate(real, bvals, bvecs, *, sigmas=None, dti_columns=None, blocks=None, seed=0, n_synthetic=2000,
              max_evals=1500, n_resamples=0, resample_evals=None, seconds=None, start=None, progress=None,
              workers=None):
    """Fit ``Calibrated``'s hyperparameters to real voxels (the subject's *fit* voxels).

    Parameters
    ----------
    real : (n, m) array_like
        Attenuation of the real voxels the fit may use (never the judge voxels).
    bvals, bvecs : array_like
        The scan's gradient table (the columns of ``real``).
    sigmas : None, float or (k,) array_like
        The scan's noise model on the S0 = 1 scale: one σ, or values each synthetic voxel's
        σ is drawn from (``helpers.generators.simulation.sigma_distribution``); None: no noise.
    dti_columns : (m,) bool array_like, optional
        Volumes the tensor features are fitted to.
    blocks : (n,) int array_like, optional
        Spatial block of each real voxel: resamples draw whole blocks (default: voxels).
    seed : int
    n_synthetic : int
        Synthetic voxels per evaluation.
    max_evals : int
        Budget of the main fit, in evaluations: the same inputs and seed give the same fit
        on the same machine (a time budget would not).
    n_resamples, resample_evals : int
        Bootstrap refits for the intervals: each an independent fit from ``start`` to a
        block-bootstrap resample of the real voxels with its own random numbers,
        ``resample_evals`` evaluations (default ``max_evals``), so that the interval holds
        both the scan's sampling and the optimiser's own variability.
    seconds : float, optional
        A safety cap on each stage's wall-clock time; a stage it stops is recorded in
        ``settings["stopped_by_time"]`` (the fit is then not reproducible).
    start : Hyper, optional
        Where the fit starts (default :meth:`Hyper.force_defaults`).
    progress : callable(stage: str, evaluations: int, best: float), optional
        Called after each generation (one process) or each finished fit (several).
    workers : int, optional
        Processes the fits run in (default: one per core, at most one per fit); 1 runs
        them here, one after another. The result does not depend on it.

    Returns
    -------
    Calibration
    """
    t0 = time.perf_counter()
    real = np.asarray(real, dtype=np.float32)
    bvals, bvecs = np.asarray(bvals, float), np.asarray(bvecs, float)
    if real.ndim != 2 or real.shape[1] != len(bvals):
        raise ValueError(f"calibration: real voxels {real.shape} do not match {len(bvals)} gradient volumes")
    if len(real) < 20:
        raise ValueError(f"calibration: {len(real)} fit voxels; need at least 20")
    start = Hyper.force_defaults() if start is None else start
    rng = np.random.default_rng([seed, 20])
    real_features = _features_of(real, bvals, bvecs, dti_columns)
    groups = np.arange(len(real)) if blocks is None else np.unique(np.asarray(blocks), return_inverse=True)[1]
    n_groups = int(groups.max()) + 1
    x0 = start.to_vector()
    common = dict(bvals=bvals, bvecs=bvecs, sigmas=sigmas, dti_columns=dti_columns, n_synthetic=int(n_synthetic),
                  seed=seed, x0=x0, sigma0=SIGMA0, seconds=seconds)
    jobs = [dict(common, features=real_features, base_seed=0, evals=int(max_evals), stage="fit")]
    for r in range(int(n_resamples)):  # independent fits to block-bootstrap resamples
        counts = np.bincount(rng.integers(n_groups, size=n_groups), minlength=n_groups)
        rows = np.repeat(np.arange(len(real)), counts[groups])
        jobs.append(dict(common, features=real_features[rows], base_seed=r + 1, stage=f"resample {r + 1}",
                         evals=int(max_evals if resample_evals is None else resample_evals)))
    workers = min(len(jobs), os.cpu_count() or 1) if workers is None else max(1, min(int(workers), len(jobs)))
    results = {}
    if workers > 1:
        from helpers.processes import run_in_workers

        with run_in_workers(_fit_job, [{**j, "index": i} for i, j in enumerate(jobs)], workers=workers) as done:
            for job, result in done:
                if isinstance(result, Exception):
                    raise result
                results[job["index"]] = result
                if progress is not None:
                    progress(job["stage"], result["evaluations"], result["best"])
    else:
        for i, job in enumerate(jobs):
            report = None if progress is None else (lambda e, f, stage=job["stage"]: progress(stage, e, f))
            results[i] = _fit_job(job, progress=report)
    main = results[0]
    hyper = Hyper.from_vector(main["x"])
    best, at_start = main["best"], main["at_start"]
    evaluations = sum(r["evaluations"] for r in results.values())
    capped = [jobs[i]["stage"] for i, r in results.items() if r["capped"]]
    resamples = [Hyper.from_vector(results[i]["x"]).summary() for i in range(1, len(jobs))]
    intervals = {}
    if resamples:
        for key in resamples[0]:
            values = [s[key] for s in resamples]
            intervals[key] = (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    settings = {"seed": int(seed), "n_synthetic": int(n_synthetic), "max_evals": int(max_evals),
                "n_resamples": int(n_resamples), "resample_evals": None if resample_evals is None else int(resample_evals),
                "seconds_cap": seconds, "stopped_by_time": capped, "n_real": int(len(real)),
                "optimiser": "CMA-ES (cma)", "start": "FORCE defaults" if start == Hyper.force_defaults() else "given"}
    return Calibration(hyper=hyper, distance=float(best), distance_start=float(at_start), intervals=intervals,
                       resamples=resamples, evaluations=int(evaluations), seconds=time.perf_counter() - t0,
                       settings=settings)
