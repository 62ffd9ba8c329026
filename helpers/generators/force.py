"""FORCE voxels, vectorised: dipy's multi-compartment signal model without a loop per voxel.

FORCE (Shah et al. 2025) simulates a library of voxels — white matter with one to three
dispersed fibre populations, grey matter and CSF — to match real scans against. dipy 1.12
implements it as ``dipy.sims.force.generate_force_simulations``, which calls the compiled
``dipy.sims._force_core.create_mixed_signal`` once per voxel (1-2 ms a voxel for 65
gradients). This module draws the same parameters from the same distributions with a numpy
``Generator`` and computes the same signal for many voxels at once.

The model, as ``_force_core.pyx`` (dipy 1.12.1) codes it
----------------------------------------------------------
Per voxel:

* tissue fractions (WM, GM, CSF) ~ Dirichlet(2, 1, 1);
* number of fibres k ∈ {1, 2, 3} with p = (0.1, 0.2, 0.7);
* fibre weights: 1; (u, 1 - u) with u ~ U(0.2, 0.8); or Dirichlet(1, 1, 1) redrawn until
  every weight is ≥ 0.2;
* fibre directions: vertices of ``dipy.data.default_sphere`` (a 362-vertex *hemisphere*)
  drawn uniformly by index, redrawn until every pair is more than 30° (k = 2) or 60°
  (k = 3) apart as axes, i.e. the angle lies strictly inside (t, 180° - t);
* per fibre an intra-axonal fraction f ~ U(0.6, 0.9);
* **one** d_par ~ U(2, 3)·10⁻³ mm²/s and **one** extra-axonal d_perp ~ U(0.3, 1.5)·10⁻³
  mm²/s shared by all fibres of the voxel (with ``tortuosity``: d_perp = d_par (1 - f₁) /
  (1 + f₁), f₁ the *first* fibre's fraction, for every fibre);
* **one** ODI shared by all fibres, uniform over ``linspace(0.01, 0.3, 10)``;
* GM: isotropic, d ~ U(0.7, 1.2)·10⁻³ mm²/s; CSF: isotropic, d = 3·10⁻³ mm²/s.

Signal (S0 = 1; dipy multiplies by S0 = 100)::

    S(b, g) = f_WM Σ_i w_i Σ_j ω_ij [f_i e^(-b d_par (g·v_j)²)
                                     + (1 - f_i) e^(-b (d_perp |g|² + (d_par - d_perp)(g·v_j)²))]
              + f_GM e^(-b d_GM) + f_CSF e^(-b d_CSF)

where v_j runs over the 362 sphere vertices and ω_ij is the Bingham function with equal
concentrations κ = 1 / tan(π ODI / 2) centred on fibre i's vertex μ_i and sampled on the
vertices, normalised to sum 1: ω_ij ∝ exp(-κ (1 - (μ_i·v_j)²)) (dipy's ``dispersion_lut``).
The stick and the zeppelin of each vertex are dipy's ``multi_tensor`` tensors with
eigenvalues (d_par, 0, 0) and (d_par, d_perp, d_perp).

Where dipy differs from a plain reading of the FORCE description
-----------------------------------------------------------------
* d_par and d_perp are drawn once per voxel, not per fibre; only f is per fibre.
* The ODI is one per voxel, on a 10-value grid, and the dispersion is a discrete Bingham
  (Watson-like, κ₁ = κ₂) on the 362 vertices of a hemisphere, not a continuous integral.
* Directions are sphere vertices, so orientations are uniform over a 362-point grid.
* "At least 30° / 60° apart" is strict, and axial: 2 fibres need an angle in (30°, 150°);
  3 fibres need every pair in (60°, 120°).
* The fibre weights (U(0.2, 0.8), and Dirichlet(1, 1, 1) conditioned on all ≥ 0.2) are not
  in the description.
* The GM and CSF signals are exp(-b d) whatever the b-vector, while the WM tensors use
  gᵀ D g: at b > 0 with a zero b-vector, WM gives 1 but GM and CSF do not.
* What ``create_mixed_signal`` returns as ``wm_d_perp`` is Σ_i w_i (1 - f_i) d_perp (a
  volume-weighted radial diffusivity), not d_perp; ``dispersion`` is
  f_WM ODI + f_GM + f_CSF, not the ODI (that is ``wm_disp``); ``fraction_array`` and
  ``f_ins`` are float32.
* dipy's randomness is the global ``np.random`` state, which ``generate_force_simulations``
  reseeds from the process id and the clock (``init_worker``): its output cannot be
  reproduced, and it changes the caller's global state. Here randomness comes only from
  the ``rng`` argument.

How the signal is computed fast
-------------------------------
For a fibre the vertex sum is F(δ) = Σ_j ω_j exp(-x_j δ), with x_j = b (g·v_j)²: the stick
is F(d_par) and the zeppelin is exp(-b |g|² d_perp) F(d_par - d_perp). F depends on the
voxel only through the kernel (vertex, ODI) — at most 362 × 10 of them — and the scalar δ.
So F is tabulated, per kernel and gradient, at K Chebyshev nodes of δ over the span the
parameters need (one matrix product, (kernels, 362) @ (362, K m)), and each fibre evaluates
the degree K - 1 Chebyshev interpolant at its two δ values. K is chosen from the bound
4 Σ_{k ≥ K} I_k(a) on the interpolation error of exp(-x δ) (a = b_max |g|² × half the span
of δ, I_k the modified Bessel function): 1e-12 in float64, 1e-7 in float32. The cost per
voxel is then O(K m) instead of O(362 m) exponentials.

References
----------
.. [1] Shah et al. (2025), "FORCE: Forward modeling for complex microstructure
   estimation", cited by dipy as ``Shah2025`` (``dipy.sims.force``).

Examples
--------
>>> import numpy as np
>>> bvals = np.r_[0.0, np.full(6, 1000.0)]
>>> bvecs = np.r_[np.zeros((1, 3)), np.eye(3), -np.eye(3)]
>>> S = simulate_force(bvals, bvecs, 5, np.random.default_rng(0))
>>> S.shape, S.dtype, bool(np.all(S[:, 0] == 1))
((5, 7), dtype('float32'), True)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from scipy.special import iv

__all__ = [
    "ForceRanges",
    "ForceParameters",
    "ForceTable",
    "draw_force_parameters",
    "force_signal",
    "simulate_force",
    "sphere_vertices",
]

_MAX_ORDER = 128  # Chebyshev nodes at most: enough for b |g|² × span(δ) up to about 60
_TABLE_BYTES = 2 * 1024**3  # refuse a kernel table larger than this (see force_signal)


def sphere_vertices():
    """The 362 fibre directions FORCE uses: ``dipy.data.default_sphere.vertices``.

    Returns
    -------
    (362, 3) ndarray of float64
        Unit vectors on a hemisphere (a copy).
    """
    return _vertices().copy()


@lru_cache(maxsize=1)
def _vertices():
    from dipy.data import default_sphere

    v = np.array(default_sphere.vertices, dtype=np.float64)
    v.flags.writeable = False
    return v


# ----------------------------------------------------------------------------- ranges


def _floats(name, value, length, owner="ForceRanges"):
    """``value`` as a tuple of ``length`` finite floats, or a ValueError naming the field
    (``owner.name``)."""
    try:
        out = tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=float)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{owner}.{name} = {value!r}: expected {length} number(s)") from e
    if len(out) != length or not all(np.isfinite(out)):
        raise ValueError(f"{owner}.{name} = {value!r}: expected {length} finite number(s)")
    return out


def _range(name, value, ok, expected):
    """A (min, max) pair with min <= max and ``ok(min) and ok(max)``."""
    lo, hi = _floats(name, value, 2)
    if lo > hi or not (ok(lo) and ok(hi)):
        raise ValueError(f"ForceRanges.{name} = {value!r}: expected min <= max, both {expected}")
    return (lo, hi)


@dataclass(frozen=True)
class ForceRanges:
    """Distributions of FORCE's parameters; the defaults are dipy 1.12's.

    Parameters
    ----------
    wm_d_par : (2,) tuple of float
        Range of the WM parallel diffusivity (stick and zeppelin), mm²/s; uniform, drawn
        once per voxel. (min, min) fixes it (dipy's ``wm_d_par_range``).
    wm_d_perp : (2,) tuple of float
        Range of the extra-axonal (zeppelin) perpendicular diffusivity, mm²/s; uniform, once
        per voxel; ignored when ``tortuosity`` (dipy's ``wm_d_perp_range``).
    f_intra : (2,) tuple of float
        Range of the intra-axonal (stick) fraction of each fibre, uniform, in [0, 1].
    gm_d : (2,) tuple of float
        Range of the isotropic GM diffusivity, mm²/s (dipy's ``gm_d_iso_range``).
    csf_d : float
        Isotropic CSF diffusivity, mm²/s (dipy's ``csf_d``).
    fiber_probs : (3,) tuple of float
        Probabilities of 1, 2 and 3 fibres.
    odi_range : (2,) tuple of float
        First and last ODI of the grid, in (0, 1] (dipy's ``odi_range``).
    n_odi : int
        Number of ODI values, evenly spaced (dipy's ``num_odi_values``).
    min_separation_deg : (2,) tuple of float
        Two fibres must be more than ``[0]`` degrees apart as axes, three fibres more than
        ``[1]`` pairwise; in [0, 90).
    min_fiber_weight : float
        Smallest weight of a fibre in a crossing, in [0, 1/3): two fibres get U(m, 1 - m),
        three get Dirichlet(1, 1, 1) conditioned on every weight ≥ m.
    tissue_alpha : (3,) tuple of float
        Dirichlet concentrations of the (WM, GM, CSF) fractions, each > 0.
    tortuosity : bool
        d_perp = d_par (1 - f) / (1 + f) with f the first fibre's intra-axonal fraction.

    Raises
    ------
    ValueError
        Naming the field, when a range is reversed or out of bounds, probabilities do not
        sum to 1, or no fibre configuration on the sphere meets the separation.
    """

    wm_d_par: tuple = (2.0e-3, 3.0e-3)
    wm_d_perp: tuple = (0.3e-3, 1.5e-3)
    f_intra: tuple = (0.6, 0.9)
    gm_d: tuple = (0.7e-3, 1.2e-3)
    csf_d: float = 3.0e-3
    fiber_probs: tuple = (0.1, 0.2, 0.7)
    odi_range: tuple = (0.01, 0.3)
    n_odi: int = 10
    min_separation_deg: tuple = (30.0, 60.0)
    min_fiber_weight: float = 0.2
    tissue_alpha: tuple = (2.0, 1.0, 1.0)
    tortuosity: bool = False

    def scaled(self, s):
        """These ranges with every diffusivity (d_par, d_perp, GM, CSF) times ``s`` (> 0);
        fractions, dispersion and fibre counts unchanged (a rung of the known-answer
        ladder, ``FORCE*s``)."""
        import dataclasses

        s = float(s)
        if not s > 0:
            raise ValueError(f"scale must be > 0, got {s!r}")
        times = lambda r: (r[0] * s, r[1] * s)  # noqa: E731
        return dataclasses.replace(self, wm_d_par=times(self.wm_d_par), wm_d_perp=times(self.wm_d_perp),
                                   gm_d=times(self.gm_d), csf_d=self.csf_d * s)

    def __post_init__(self):
        put = object.__setattr__
        put(self, "wm_d_par", _range("wm_d_par", self.wm_d_par, lambda d: d > 0, "> 0 (mm²/s)"))
        put(self, "wm_d_perp", _range("wm_d_perp", self.wm_d_perp, lambda d: d >= 0, ">= 0 (mm²/s)"))
        put(self, "f_intra", _range("f_intra", self.f_intra, lambda f: 0 <= f <= 1, "in [0, 1]"))
        put(self, "gm_d", _range("gm_d", self.gm_d, lambda d: d >= 0, ">= 0 (mm²/s)"))
        put(self, "odi_range", _range("odi_range", self.odi_range, lambda o: 0 < o <= 1, "in (0, 1]"))
        (csf,) = _floats("csf_d", self.csf_d, 1)
        if csf < 0:
            raise ValueError(f"ForceRanges.csf_d = {self.csf_d!r}: expected a diffusivity >= 0 (mm²/s)")
        put(self, "csf_d", csf)
        probs = _floats("fiber_probs", self.fiber_probs, 3)
        if min(probs) < 0 or abs(sum(probs) - 1) > 1e-9:
            raise ValueError(f"ForceRanges.fiber_probs = {self.fiber_probs!r}: expected 3 probabilities >= 0 summing to 1")
        put(self, "fiber_probs", tuple(p / sum(probs) for p in probs))
        if isinstance(self.n_odi, bool) or not isinstance(self.n_odi, (int, np.integer)) or self.n_odi < 1:
            raise ValueError(f"ForceRanges.n_odi = {self.n_odi!r}: expected an integer >= 1")
        put(self, "n_odi", int(self.n_odi))
        seps = _floats("min_separation_deg", self.min_separation_deg, 2)
        if not all(0 <= t < 90 for t in seps):
            raise ValueError(f"ForceRanges.min_separation_deg = {self.min_separation_deg!r}: expected two angles in [0, 90) degrees")
        for k, t in ((2, seps[0]), (3, seps[1])):
            if probs[k - 1] > 0 and not _feasible(t, k):
                raise ValueError(
                    f"ForceRanges.min_separation_deg = {self.min_separation_deg!r}: no {k} vertices of the "
                    f"sphere are pairwise more than {t:g} degrees apart"
                )
        put(self, "min_separation_deg", seps)
        (m,) = _floats("min_fiber_weight", self.min_fiber_weight, 1)
        if not 0 <= m < 1 / 3:
            raise ValueError(f"ForceRanges.min_fiber_weight = {self.min_fiber_weight!r}: expected a value in [0, 1/3)")
        put(self, "min_fiber_weight", m)
        alpha = _floats("tissue_alpha", self.tissue_alpha, 3)
        if min(alpha) <= 0:
            raise ValueError(f"ForceRanges.tissue_alpha = {self.tissue_alpha!r}: expected 3 Dirichlet concentrations > 0")
        put(self, "tissue_alpha", alpha)
        if not isinstance(self.tortuosity, (bool, np.bool_)):
            raise ValueError(f"ForceRanges.tortuosity = {self.tortuosity!r}: expected True or False")
        put(self, "tortuosity", bool(self.tortuosity))

    @property
    def odi_grid(self):
        """(n_odi,) ndarray: the ODI values, ``np.linspace(*odi_range, n_odi)`` as dipy has them."""
        return np.linspace(self.odi_range[0], self.odi_range[1], self.n_odi).astype(np.float64)

    @classmethod
    def from_dipy(cls, diffusivity_config=None, *, tortuosity=False, odi_range=(0.01, 0.3), num_odi_values=10):
        """Ranges from the arguments of ``dipy.sims.force.generate_force_simulations``.

        Parameters
        ----------
        diffusivity_config : dict, optional
            dipy's keys ``wm_d_par_range``, ``wm_d_perp_range``, ``gm_d_iso_range`` (each a
            float or a (min, max) pair) and ``csf_d``; None gives dipy's defaults.
        tortuosity, odi_range, num_odi_values
            As in ``generate_force_simulations``.

        Returns
        -------
        ForceRanges
        """
        cfg = {} if diffusivity_config is None else dict(diffusivity_config)
        keys = {"wm_d_par_range": "wm_d_par", "wm_d_perp_range": "wm_d_perp", "gm_d_iso_range": "gm_d", "csf_d": "csf_d"}
        unknown = sorted(set(cfg) - set(keys))
        if unknown:
            raise ValueError(f"diffusivity_config has unknown keys {unknown}; allowed: {sorted(keys)}")
        kw = {}
        for key, name in keys.items():
            if key in cfg:
                val = cfg[key]  # a single value fixes a range, as in set_diffusivity_ranges
                kw[name] = val if name == "csf_d" or np.ndim(val) else (val, val)
        return cls(**kw, tortuosity=tortuosity, odi_range=odi_range, n_odi=num_odi_values)


@lru_cache(maxsize=8)
def _feasible(threshold_deg, k):
    """Whether some k in {2, 3} sphere vertices are pairwise valid at ``threshold_deg``."""
    valid = _valid_pairs(threshold_deg).astype(np.float32)
    if k == 2:
        return bool(valid.any())
    return bool(np.any((valid @ valid) * valid))  # i-j, j-l and i-l all valid


@lru_cache(maxsize=8)
def _valid_pairs(threshold_deg):
    """(N, N) bool: dipy's ``is_angle_valid(angle_between(u, v), threshold)`` for all vertex pairs."""
    v = _vertices()
    angle = np.degrees(np.arccos(np.clip(v @ v.T, -1.0, 1.0)))
    valid = ~((angle <= threshold_deg) | (angle >= 180.0 - threshold_deg))
    valid.flags.writeable = False
    return valid


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True, eq=False)  # arrays: compare fields with numpy, not ==
class ForceParameters:
    """Parameters of n FORCE voxels; fibre slots beyond ``n_fibers`` hold zeros.

    Parameters
    ----------
    fractions : (n, 3) ndarray
        Volume fractions of WM, GM and CSF.
    n_fibers : (n,) ndarray of int
        Number of fibres, 1 to 3.
    sphere_index : (n, 3) ndarray of int
        Each fibre's direction as an index into :func:`sphere_vertices`; -1 when unused.
    weights : (n, 3) ndarray
        Weight of each fibre within WM.
    odi : (n, 3) ndarray
        Orientation dispersion index of each fibre, in (0, 1].
    d_par : (n, 3) ndarray
        Parallel diffusivity of each fibre's stick and zeppelin, mm²/s.
    d_perp : (n, 3) ndarray
        Perpendicular diffusivity of each fibre's zeppelin (extra-axonal), mm²/s.
    f_intra : (n, 3) ndarray
        Intra-axonal (stick) fraction of each fibre.
    gm_d : (n,) ndarray
        Isotropic GM diffusivity, mm²/s.
    csf_d : (n,) ndarray
        Isotropic CSF diffusivity, mm²/s.
    """

    fractions: np.ndarray
    n_fibers: np.ndarray
    sphere_index: np.ndarray
    weights: np.ndarray
    odi: np.ndarray
    d_par: np.ndarray
    d_perp: np.ndarray
    f_intra: np.ndarray
    gm_d: np.ndarray
    csf_d: np.ndarray

    def __post_init__(self):
        n_fibers = np.asarray(self.n_fibers)
        if n_fibers.ndim != 1:
            raise ValueError(f"params.n_fibers must be a 1-D array (one count per voxel), got shape {n_fibers.shape}")
        n = len(n_fibers)
        shapes = {"fractions": (n, 3), "n_fibers": (n,), "sphere_index": (n, 3), "gm_d": (n,), "csf_d": (n,)}
        shapes.update({name: (n, 3) for name in ("weights", "odi", "d_par", "d_perp", "f_intra")})
        for f in fields(self):
            kind = np.int64 if f.name in ("n_fibers", "sphere_index") else np.float64
            value = np.asarray(getattr(self, f.name))
            if value.shape != shapes[f.name]:
                raise ValueError(f"params.{f.name} has shape {value.shape}; expected {shapes[f.name]} for {n} voxels")
            if kind is np.int64 and value.size and not np.all(value == np.round(value)):
                raise ValueError(f"params.{f.name} must hold integers")
            object.__setattr__(self, f.name, value.astype(kind, copy=False))
        if n and (self.n_fibers.min() < 1 or self.n_fibers.max() > 3):
            raise ValueError(f"params.n_fibers must be 1, 2 or 3; got values in [{self.n_fibers.min()}, {self.n_fibers.max()}]")
        used = self.used
        idx = self.sphere_index[used]
        n_dirs = len(_vertices())
        if idx.size and (idx.min() < 0 or idx.max() >= n_dirs):
            raise ValueError(f"params.sphere_index of a used fibre must index the {n_dirs} sphere vertices (0..{n_dirs - 1})")
        odi = self.odi[used]
        if odi.size and not np.all((odi > 0) & (odi <= 1)):
            raise ValueError("params.odi of a used fibre must lie in (0, 1]")
        for name in ("fractions", "weights", "d_par", "d_perp", "f_intra", "gm_d", "csf_d"):
            value = getattr(self, name)
            if not np.all(np.isfinite(value)) or np.any(value < 0):
                raise ValueError(f"params.{name} must be finite and >= 0")
        if np.any(self.f_intra > 1):
            raise ValueError("params.f_intra must lie in [0, 1]")

    def __len__(self):
        return len(self.n_fibers)

    @property
    def used(self):
        """(n, 3) bool: which fibre slots hold a fibre."""
        return np.arange(3) < self.n_fibers[:, None]

    @property
    def directions(self):
        """(n, 3, 3) ndarray: fibre directions (unit vectors on the hemisphere), zero when unused."""
        v = _vertices()[np.where(self.used, self.sphere_index, 0)]
        return np.where(self.used[..., None], v, 0.0)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (voxels), got {n!r}")
    return int(n)


def _draw_directions(n_fibers, rng, valid2, valid3):
    """Sphere indices (n, 3), -1 unused: uniform over vertices, redrawn until separated.

    Rejection on whole rows, vectorised: each round redraws every row still invalid, which
    gives the same distribution as dipy's loop (uniform over the valid ordered tuples).
    """
    n = len(n_fibers)
    n_dirs = valid2.shape[0]
    index = np.full((n, 3), -1, dtype=np.int64)
    index[n_fibers == 1, 0] = rng.integers(0, n_dirs, np.count_nonzero(n_fibers == 1))
    for k, valid in ((2, valid2), (3, valid3)):
        todo = np.flatnonzero(n_fibers == k)
        while todo.size:
            draw = rng.integers(0, n_dirs, (todo.size, k))
            ok = valid[draw[:, 0], draw[:, 1]]
            if k == 3:
                ok &= valid[draw[:, 0], draw[:, 2]] & valid[draw[:, 1], draw[:, 2]]
            index[todo[ok], :k] = draw[ok]
            todo = todo[~ok]
    return index


def draw_force_parameters(n, rng, *, ranges=ForceRanges()):
    """Draw the parameters of n FORCE voxels from dipy's distributions, vectorised.

    Parameters
    ----------
    n : int
        Number of voxels, >= 1.
    rng : int, numpy.random.Generator or None
        Source of randomness, normalised with ``np.random.default_rng``.
    ranges : ForceRanges, optional
        The distributions (dipy 1.12's defaults).

    Returns
    -------
    ForceParameters
        Per voxel: tissue fractions, fibre count, sphere indices, weights, ODI and
        diffusivities (see the module docstring for the distributions).

    Notes
    -----
    Same distributions as ``create_mixed_signal``, not the same numbers: dipy draws from the
    global legacy ``np.random`` one voxel at a time. Three-fibre weights are drawn as
    m + (1 - 3m) Dirichlet(1, 1, 1), which is exactly Dirichlet(1, 1, 1) conditioned on every
    weight ≥ m (the uniform law on the simplex, restricted to a sub-simplex), without dipy's
    rejection loop.

    Examples
    --------
    >>> p = draw_force_parameters(4, 0)
    >>> p.fractions.shape, p.directions.shape
    ((4, 3), (4, 3, 3))
    """
    n = _check_n(n)
    if not isinstance(ranges, ForceRanges):
        raise ValueError(f"ranges must be a ForceRanges, got {type(ranges).__name__}")
    rng = np.random.default_rng(rng)
    fractions = rng.dirichlet(ranges.tissue_alpha, size=n)
    n_fibers = rng.choice(np.array([1, 2, 3]), size=n, p=ranges.fiber_probs)
    used = np.arange(3) < n_fibers[:, None]

    f_intra = rng.uniform(*ranges.f_intra, size=(n, 3))
    m = ranges.min_fiber_weight
    u = m + (1 - 2 * m) * rng.uniform(size=n)
    dirichlet = m + (1 - 3 * m) * rng.dirichlet(np.ones(3), size=n)
    weights = np.select(
        [n_fibers[:, None] == 1, n_fibers[:, None] == 2],
        [np.array([1.0, 0.0, 0.0]), np.stack([u, 1 - u, np.zeros(n)], axis=1)],
        dirichlet,
    )
    d_par = rng.uniform(*ranges.wm_d_par, size=n)
    if ranges.tortuosity:
        d_perp = d_par * (1 - f_intra[:, 0]) / (1 + f_intra[:, 0])
    else:
        d_perp = rng.uniform(*ranges.wm_d_perp, size=n)
    valid2, valid3 = (_valid_pairs(t) for t in ranges.min_separation_deg)
    sphere_index = _draw_directions(n_fibers, rng, valid2, valid3)
    odi = rng.choice(ranges.odi_grid, size=n)
    gm_d = rng.uniform(*ranges.gm_d, size=n)

    def per_fibre(x):
        return np.where(used, np.broadcast_to(x, (n, 3)), 0.0)

    return ForceParameters(
        fractions=fractions,
        n_fibers=n_fibers,
        sphere_index=sphere_index,
        weights=per_fibre(weights),
        odi=per_fibre(odi[:, None]),
        d_par=per_fibre(d_par[:, None]),
        d_perp=per_fibre(d_perp[:, None]),
        f_intra=per_fibre(f_intra),
        gm_d=gm_d,
        csf_d=np.full(n, ranges.csf_d),
    )


# ----------------------------------------------------------------------------- signal


def _check_gradients(bvals, bvecs):
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvals.ndim != 1 or bvals.size == 0:
        raise ValueError(f"bvals must be a non-empty 1-D array (s/mm²), got shape {bvals.shape}")
    if bvecs.shape != (bvals.size, 3):
        raise ValueError(f"bvecs has shape {bvecs.shape}; expected ({bvals.size}, 3) to match bvals")
    if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
        raise ValueError("bvals must be finite and >= 0")
    if not np.all(np.isfinite(bvecs)):
        bad = np.flatnonzero(~np.isfinite(bvecs).all(axis=1))
        raise ValueError(f"bvecs has non-finite rows {bad[:5].tolist()}; zero the b0 rows as dipy's gradient_table does")
    return bvals, bvecs


def _chebyshev_order(a, scale, tol):
    """Smallest K whose Chebyshev interpolant of exp(-x δ) errs by at most ``tol``.

    The Chebyshev coefficients of exp(-t s) on s ∈ [-1, 1] are 2 (-1)^k I_k(t), and
    interpolation at K nodes errs by at most twice the dropped coefficients, so the error
    is at most 4 ``scale`` Σ_{k≥K} I_k(a) for every t ≤ a.
    """
    tail = np.cumsum(iv(np.arange(_MAX_ORDER + 1), a)[::-1])[::-1]
    ok = np.flatnonzero(4 * scale * tail <= tol)
    if not ok.size:
        raise ValueError(
            f"b-values times the span of the diffusivities are too large for the Chebyshev table "
            f"(a = {a:.3g}); narrow the diffusivity ranges"
        )
    return max(int(ok[0]), 2)


def _chebyshev_basis(s, order):
    """(..., K) values T_0(s) .. T_{K-1}(s) by the recurrence T_{k+1} = 2 s T_k - T_{k-1}."""
    basis = np.empty(s.shape + (order,), dtype=s.dtype)
    basis[..., 0] = 1
    basis[..., 1] = s
    for k in range(2, order):  # a loop over the polynomial order (K <= 128), not voxels
        np.multiply(2 * s, basis[..., k - 1], out=basis[..., k])
        basis[..., k] -= basis[..., k - 2]
    return basis


def force_signal(bvals, bvecs, params, *, dtype=np.float64, chunk=512):
    """Noise-free FORCE signal (S0 = 1) of every voxel in ``params``, vectorised.

    Parameters
    ----------
    bvals : (m,) array_like
        b-values, s/mm².
    bvecs : (m, 3) array_like
        Gradient directions: unit, or zero at b0 (no NaN).
    params : ForceParameters
        The voxels, e.g. from :func:`draw_force_parameters`.
    dtype : {np.float64, np.float32}, optional
        Arithmetic and output precision. float64 agrees with dipy's ``create_mixed_signal``
        (divided by its S0 of 100) to better than 1e-12; float32 to about 1e-7.
    chunk : int, optional
        Voxels per batch: bounds the temporaries to about chunk × 3 × K × m values.

    Returns
    -------
    (n, m) ndarray of ``dtype``
        Attenuation S / S0. Like dipy, a b > 0 volume with a zero b-vector gives 1 for the
        WM tensors but exp(-b d) for GM and CSF.

    Notes
    -----
    S = f_WM Σ_i w_i Σ_j ω_ij [f_i e^(-b d_par (g·v_j)²) + (1 - f_i) e^(-b gᵀ D_j g)]
    + f_GM e^(-b d_GM) + f_CSF e^(-b d_CSF), with D_j the zeppelin (d_par, d_perp, d_perp)
    along vertex v_j and ω_ij the normalised Bingham weights (module docstring). The vertex
    sum is evaluated through a Chebyshev table per (vertex, ODI) kernel, so memory grows
    with the number of distinct kernels times K m: at most 362 × n_odi kernels for drawn
    parameters. Continuous ODI values over many voxels make one kernel per fibre and are
    refused past 2 GiB of table.

    Examples
    --------
    >>> import numpy as np
    >>> p = draw_force_parameters(3, 1)
    >>> S = force_signal([0.0, 1000.0], [[0, 0, 0], [1, 0, 0]], p)
    >>> S.shape, bool(np.allclose(S[:, 0], 1))
    ((3, 2), True)
    """
    bvals, bvecs = _check_gradients(bvals, bvecs)
    if not isinstance(params, ForceParameters):
        raise ValueError(f"params must be ForceParameters (see draw_force_parameters), got {type(params).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    n, m = len(params), bvals.size
    used = params.used
    if n == 0:
        return np.empty((0, m), dtype=dtype)

    # Kernels: distinct (vertex, ODI) pairs of the used fibres.
    # Unused slots borrow slot 0's kernel (their coefficients are 0), so they add none.
    keys = np.stack([params.sphere_index, params.odi], axis=-1)
    keys = np.where(used[..., None], keys, keys[:, :1])
    odis, odi_code = np.unique(keys[..., 1], return_inverse=True)
    codes, kernel_of = np.unique(keys[..., 0].astype(np.int64) * len(odis) + odi_code.reshape(n, 3), return_inverse=True)
    kernel_of = kernel_of.reshape(n, 3)
    kernel_vertex, kernel_odi = codes // len(odis), odis[codes % len(odis)]

    # Chebyshev nodes over the δ the fibres need: d_par (stick) and d_par - d_perp (zeppelin).
    deltas = np.concatenate([params.d_par[used], (params.d_par - params.d_perp)[used]])
    table = _KernelTable(bvals, bvecs, kernel_vertex, kernel_odi, deltas.min(), deltas.max(), dtype)
    return table.evaluate(params, kernel_of, chunk)


class _KernelTable:
    """Chebyshev coefficients (kernels, K, m) of each (vertex, ODI) kernel's vertex sum
    F(δ) over δ in [lo, hi], on one gradient table (see :func:`force_signal`)."""

    def __init__(self, bvals, bvecs, kernel_vertex, kernel_odi, lo, hi, dtype):
        vertices = _vertices()
        n_kernels, m = len(kernel_vertex), bvals.size
        self.bvals, self.bvecs, self.dtype = bvals, bvecs, dtype
        self.center, self.half = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
        x = bvals[:, None] * (bvecs @ vertices.T) ** 2  # (m, J): b (g·v_j)²
        x_max = float(x.max(initial=0.0))
        scale = max(1.0, np.exp(-x_max * self.center))
        order = self.order = _chebyshev_order(x_max * self.half, scale, 1e-12 if dtype == np.float64 else 1e-7)
        if n_kernels * order * m * dtype.itemsize > _TABLE_BYTES:
            raise ValueError(
                f"params.odi: {n_kernels} distinct (direction, ODI) kernels need a table of more than "
                f"{_TABLE_BYTES / 1024**3:.0f} GiB; draw the ODI from a grid as FORCE does"
            )
        theta = np.pi * (np.arange(order) + 0.5) / order
        nodes = self.center + self.half * np.cos(theta)  # (K,) δ at the Chebyshev nodes
        dct = 2.0 / order * np.cos(np.outer(np.arange(order), theta))  # values -> coefficients
        dct[0] /= 2
        expo = np.exp(-nodes[:, None, None] * x[None])  # (K, m, J)
        # Built in blocks of kernels.
        self.table = np.empty((n_kernels, order, m), dtype=dtype)
        kappa_all = 1.0 / np.tan(np.pi / 2 * np.asarray(kernel_odi, dtype=np.float64))
        block = max(1, int(2**24 // (order * m + vertices.shape[0])))
        for start in range(0, n_kernels, block):
            sl = slice(start, min(start + block, n_kernels))
            cos = vertices[kernel_vertex[sl]] @ vertices.T  # (P, J)
            w = np.exp(-kappa_all[sl, None] * (1.0 - cos**2))  # Bingham, k1 = k2 = kappa
            w /= w.sum(axis=1, keepdims=True)
            values = (w @ expo.reshape(order * m, -1).T).reshape(-1, order, m)  # F at the nodes
            self.table[sl] = np.einsum("kl,plm->pkm", dct, values)

    def evaluate(self, params, kernel_of, chunk):
        """The (n, m) signal of ``params``, fibre i of voxel v using kernel ``kernel_of[v, i]``.

        Per fibre and chunk: the Chebyshev basis T_k(s) at the fibre's two δ (stick,
        zeppelin), scaled by the fibre's share of the voxel, times its kernel's coefficients.
        """
        bvals, bvecs, dtype, order = self.bvals, self.bvecs, self.dtype, self.order
        n, m = len(params), bvals.size
        used = params.used
        g2 = np.einsum("ij,ij->i", bvecs, bvecs)  # |g|², 0 at b0
        wm = params.fractions[:, :1] * np.where(used, params.weights, 0.0)
        share = np.stack([wm * params.f_intra, wm * (1.0 - params.f_intra)], axis=-1)  # (n, 3, 2)
        s = np.stack([params.d_par, params.d_par - params.d_perp], axis=-1)
        s = np.clip((s - self.center) / self.half, -1.0, 1.0)  # (n, 3, 2) in [-1, 1]
        zep_decay = -(bvals * g2).astype(dtype)  # (m,): -b |g|², times d_perp below
        d_perp = params.d_perp.astype(dtype)
        iso_d = np.stack([params.gm_d, params.csf_d], axis=-1).astype(dtype)  # (n, 2)
        iso_f = params.fractions[:, 1:].astype(dtype)
        minus_b = -bvals.astype(dtype)
        out = np.empty((n, m), dtype=dtype)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            # GM and CSF: exp(-b d) as dipy's create_gm_signal / create_csf_signal (no |g|²).
            iso = np.exp(iso_d[sl, :, None] * minus_b)  # (c, 2, m)
            np.matmul(iso_f[sl, None, :], iso, out=out[sl, None, :])
            basis = _chebyshev_basis(s[sl].astype(dtype), order)  # (c, 3, 2, K)
            basis *= share[sl, :, :, None].astype(dtype)
            sticks_zeps = np.matmul(basis, self.table[kernel_of[sl]])  # (c, 3, 2, m)
            fibres = sticks_zeps[:, :, 1]
            fibres *= np.exp(d_perp[sl, :, None] * zep_decay)
            fibres += sticks_zeps[:, :, 0]
            out[sl] += fibres.sum(axis=1)
        return out


class ForceTable:
    """FORCE signals of many parameter sets on one gradient table, for the cost of one
    kernel table: every (vertex, ODI) kernel of an ODI grid, tabulated once over δ in
    [0, ``d_max``] (a calibration evaluates thousands of parameter sets).

    Parameters
    ----------
    bvals, bvecs : array_like
        As for :func:`force_signal`.
    odi_grid : (G,) array_like
        The ODI values fibres may take, in (0, 1].
    d_max : float
        Largest d_par, mm²/s; every d_par and d_par - d_perp must lie in [0, d_max].
    dtype : {np.float32, np.float64}

    Examples
    --------
    >>> t = ForceTable([0.0, 1000.0], [[0, 0, 0], [1, 0, 0]], ForceRanges().odi_grid, d_max=3e-3)
    >>> p = draw_force_parameters(3, 1)
    >>> bool(np.allclose(t.signal(p), force_signal([0.0, 1000.0], [[0, 0, 0], [1, 0, 0]], p), atol=1e-6))
    True
    """

    def __init__(self, bvals, bvecs, odi_grid, *, d_max, dtype=np.float32):
        bvals, bvecs = _check_gradients(bvals, bvecs)
        self.odi_grid = np.asarray(odi_grid, dtype=np.float64)
        if self.odi_grid.ndim != 1 or not self.odi_grid.size or not np.all((self.odi_grid > 0) & (self.odi_grid <= 1)):
            raise ValueError(f"odi_grid must be a non-empty 1-D array of values in (0, 1], got {odi_grid!r}")
        if not np.all(np.diff(self.odi_grid) > 0):
            raise ValueError("odi_grid must be strictly increasing")
        self.d_max = float(d_max)
        if not self.d_max > 0:
            raise ValueError(f"d_max must be > 0 (mm²/s), got {d_max!r}")
        n_dirs, g = len(_vertices()), len(self.odi_grid)
        kernel_vertex = np.repeat(np.arange(n_dirs), g)
        kernel_odi = np.tile(self.odi_grid, n_dirs)
        self._table = _KernelTable(bvals, bvecs, kernel_vertex, kernel_odi, 0.0, self.d_max, np.dtype(dtype))

    def signal(self, params, *, chunk=512):
        """(n, m) noise-free attenuation of ``params`` (ODIs on the grid, δ in [0, d_max])."""
        if not isinstance(params, ForceParameters):
            raise ValueError(f"params must be ForceParameters, got {type(params).__name__}")
        used = params.used
        pos = np.clip(np.searchsorted(self.odi_grid, params.odi), 0, len(self.odi_grid) - 1)
        below = np.clip(pos - 1, 0, None)
        pos = np.where(np.abs(self.odi_grid[below] - params.odi) < np.abs(self.odi_grid[pos] - params.odi), below, pos)
        if np.any(used & (np.abs(self.odi_grid[pos] - params.odi) > 1e-9)):
            raise ValueError("params.odi: every used fibre's ODI must be a value of the table's odi_grid")
        d = np.concatenate([params.d_par[used], (params.d_par - params.d_perp)[used]])
        if d.size and (d.min() < -1e-12 or d.max() > self.d_max * (1 + 1e-9)):
            raise ValueError(f"params: d_par and d_par - d_perp must lie in [0, {self.d_max:g}] mm²/s for this table")
        kernel_of = np.where(used, params.sphere_index, params.sphere_index[:, :1]) * len(self.odi_grid) + np.where(used, pos, pos[:, :1])
        return self._table.evaluate(params, kernel_of, chunk)


def simulate_force(bvals, bvecs, n, rng, *, ranges=ForceRanges(), b0_threshold=50.0, parameters=False):
    """Clean FORCE attenuation of n voxels drawn from dipy's distributions.

    :func:`draw_force_parameters`, then :func:`force_signal` in float32.

    Parameters
    ----------
    bvals, bvecs
        The gradient table, as in :func:`force_signal`.
    n, rng, ranges
        As in :func:`draw_force_parameters`.
    b0_threshold : float, optional
        Volumes with b <= this are b0 and set to exactly 1 (the project's attenuation is
        S / S0 with S0 the b0 mean), s/mm².
    parameters : bool, optional
        Also return the drawn :class:`ForceParameters` (each voxel's ground truth).

    Returns
    -------
    (n, m) ndarray of float32
        Noise-free attenuation, S0 = 1 (and the ForceParameters with ``parameters``).

    Examples
    --------
    >>> S = simulate_force([0, 1000, 1000], [[0, 0, 0], [1, 0, 0], [0, 1, 0]], 2, 0)
    >>> S.shape, S.dtype
    ((2, 3), dtype('float32'))
    """
    bvals, bvecs = _check_gradients(bvals, bvecs)
    params = draw_force_parameters(n, rng, ranges=ranges)
    out = force_signal(bvals, bvecs, params, dtype=np.float32)
    out[:, bvals <= b0_threshold] = 1.0
    return (out, params) if parameters else out
