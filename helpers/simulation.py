"""Synthetic diffusion MRI voxels: one multi-tensor kernel, four generators.

Every generator draws a mixture of compartments per voxel — k white-matter fibres (k
uniform in {1, 2, 3}, orientation uniform), a grey-matter and a CSF compartment, raw
weights U(0, 1) normalised to sum to 1 — and differs only in where the tensors'
eigenvalues come from (design.md, "Generators"):

=============  =================================  ==========================  ==========================
method         WM fibre eigenvalues (mm²/s)       GM                          CSF
=============  =================================  ==========================  ==========================
Syn            dipy defaults (1.5e-3, 3e-4, 3e-4)  isotropic 5e-4              isotropic 3e-3
Sampled        triplet from eroded WM, FA > 0.7   triplet from eroded GM,     triplet from eroded CSF,
                                                  random orientation          random orientation
SampleAndMean  as Sampled                         isotropic, mean GM MD       isotropic, mean CSF MD
RandomWM       free water 3e-3 with weight f ~ U(0,1); the rest U(0,1) per gradient, independently
=============  =================================  ==========================  ==========================

Noise is Rician with σ = 1/SNR on the S0 = 1 scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from helpers.config import check_methods

__all__ = [
    "Mixture",
    "Pools",
    "multi_tensor",
    "random_rotations",
    "tissue_pools",
    "draw_mixture",
    "add_rician_noise",
    "resolve_snr",
    "simulate",
]

SYN_WM_EVALS = (1.5e-3, 3e-4, 3e-4)
"""dipy's default single-fibre eigenvalues (``dipy.sims.voxel``), mm²/s."""
SYN_GM_D = 5e-4
SYN_CSF_D = 3e-3
FREE_WATER_D = 3e-3
WM_FA_MIN = 0.7
"""Only single-fibre WM voxels (FA above this) feed the sampled WM pool."""

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
        uneroded fallback, and the mean MD.
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


def tissue_pools(subject, *, min_pool=20):
    """Eigenvalue pools from a subject's eroded tissue masks.

    WM keeps only voxels with FA > 0.7 (single fibres). Each pool uses the one-voxel
    eroded mask; when that leaves fewer than ``min_pool`` voxels (small scans such as the
    10x10x10 sample) the uneroded mask is used instead and the report says so.

    Raises
    ------
    ValueError
        When even the uneroded mask has fewer than ``min_pool`` voxels, naming the tissue
        and the count.
    """
    fit = subject.tensor()
    fa = fit.fa
    pools, report = {}, {}
    for name in ("WM", "GM", "CSF"):
        chosen = None
        for eroded in (True, False):
            mask = subject.tissue_mask(name, eroded=eroded)
            if name == "WM":
                mask = mask & (fa > WM_FA_MIN)
            if mask.sum() >= min_pool:
                chosen = mask
                break
        what = f"{name} voxels with FA > {WM_FA_MIN}" if name == "WM" else f"{name} voxels"
        if chosen is None:
            raise ValueError(
                f"subject {subject.info.get('subject', '')!s}: too few {what} to sample from "
                f"({int(mask.sum())} without erosion; need at least {min_pool}, the min_pool setting)"
            )
        pools[name.lower()] = fit.evals[chosen]
        report[name] = {
            "voxels": int(chosen.sum()),
            "mask": "eroded" if eroded else f"uneroded (eroded pool had fewer than {min_pool})",
            "mean_md": float(fit.evals[chosen].mean()),
        }
    return Pools(report=report, **pools)

def draw_mixture(method, n, rng, *, pools=None, mixture=Mixture()):
    """Draw the compartments of ``n`` voxels for a tensor-based method.

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

def add_rician_noise(signal, snr, rng):
    """Rician noise: |S + σ(n₁ + i n₂)| with σ = 1/SNR, n₁, n₂ ~ N(0, 1). ``snr=None``
    returns a copy of the signal."""
    signal = np.asarray(signal, dtype=np.float32)
    if snr is None:
        return signal.copy()
    sigma = np.float32(1.0 / snr)
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag)

def resolve_snr(snr, subject=None):
    """Turn the ``snr`` setting (``"auto"``, a number, or ``"none"``/None) into a number or None."""
    if snr is None or (isinstance(snr, str) and snr.lower() == "none"):
        return None
    if isinstance(snr, str) and snr.lower() == "auto":
        est = getattr(subject, "snr", None)
        if est is None or not np.isfinite(est) or est <= 0:
            raise ValueError(f"snr='auto' needs the subject's SNR estimate, which is {est!r}; give a number")
        return float(est)
    if isinstance(snr, bool) or not isinstance(snr, (int, float, np.number)):
        raise ValueError(f"snr must be 'auto', 'none' or a positive number, got {snr!r}")
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be a positive finite number, got {snr!r}")
    return float(snr)

def simulate(subject, method, n_voxels, seed=0, *, snr="auto", pools=None, mixture=Mixture(), min_pool=20):
    """Synthetic attenuation on the subject's own gradient table.

    Parameters
    ----------
    subject : helpers.data.Subject
        Gives the gradient table, the tissue pools and the SNR estimate.
    method : {"Syn", "Sampled", "SampleAndMean", "RandomWM"}
    n_voxels : int
    seed : int or numpy Generator
    snr : "auto", float or "none"
        σ = 1/SNR Rician noise; "auto" uses ``subject.snr``.
    pools : Pools, optional
        Reuse pools computed once per subject (:func:`tissue_pools`).

    Returns
    -------
    clean, noisy : (n_voxels, m) float32 ndarray
        Noise-free target and noisy input of the autoencoder.
    """
    check_methods([method], where="simulate")
    n_voxels = int(n_voxels)
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be positive, got {n_voxels}")
    snr = resolve_snr(snr, subject)
    rng = np.random.default_rng(seed)
    bvals, bvecs = subject.bvals, subject.bvecs
    if method == "RandomWM":
        f = rng.random((n_voxels, 1))
        rest = rng.random((n_voxels, len(bvals)))
        clean = f * np.exp(-bvals * FREE_WATER_D) + (1 - f) * rest
    else:
        if method != "Syn" and pools is None:
            pools = tissue_pools(subject, min_pool=min_pool)
        evals, evecs, fractions = draw_mixture(method, n_voxels, rng, pools=pools, mixture=mixture)
        clean = multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32)
    clean = clean.astype(np.float32, copy=False)
    return clean, add_rician_noise(clean, snr, rng)

