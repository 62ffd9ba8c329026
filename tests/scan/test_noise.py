"""Noise estimates against phantoms of known σ, with the outlier voxels real scans have.

The expected values come from the phantom's construction (σ, the S0 of each voxel), never
from the estimator: SNR = median true S0 of the tissue voxels / σ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.config import PROJECT_ROOT
from helpers.scan.noise import NoiseEstimate, estimate_noise, noise_floor_mae, relative_sigma

SIGMA = 20.0
GRID = (24, 24, 8)
BOX = (slice(2, 22), slice(2, 22), slice(1, 7))  # brain: 20 x 20 x 6 = 2400 voxels
N_ERODED = 18 * 18 * 4  # one voxel off each face of the box, by hand


def _brain(shape=GRID, box=BOX):
    mask = np.zeros(shape, dtype=bool)
    mask[box] = True
    return np.argwhere(mask)


def _phantom(rng, k, noise):
    """b0 repeats of a box brain: tissue S0 ~ U(400, 800); 10% bright CSF (S0 x 3);
    3% near-zero S0 (0 to 10); 5% voxels whose noise variance is 10 x σ² (edge, pulsation).
    ``noise`` "gaussian" (S + σ n) or "rician" (|S + σ (n1 + i n2)|)."""
    indices = _brain()
    n = len(indices)
    cls = rng.choice(4, size=n, p=[0.82, 0.10, 0.03, 0.05])  # tissue, CSF, near-zero, noisy
    s0 = rng.uniform(400.0, 800.0, size=n)
    s0[cls == 1] *= 3.0
    s0[cls == 2] = rng.uniform(0.0, 10.0, size=int((cls == 2).sum()))
    sd = np.where(cls == 3, SIGMA * np.sqrt(10.0), SIGMA)[:, None]
    b0 = s0[:, None] + sd * rng.normal(size=(n, k))
    if noise == "rician":
        b0 = np.hypot(b0, sd * rng.normal(size=(n, k)))
    return indices, b0, s0, cls


@pytest.mark.parametrize("noise", ["gaussian", "rician"])
@pytest.mark.parametrize("k", [3, 5, 13])
def test_repeats_estimate_within_10_percent_of_truth(rng, k, noise):
    indices, b0, s0, cls = _phantom(rng, k, noise)
    est = estimate_noise(b0, indices, GRID)
    true_snr = np.median(s0[cls != 2]) / SIGMA  # tissue, CSF and noisy voxels: not the floor
    assert isinstance(est, NoiseEstimate)
    assert est.sigma == pytest.approx(SIGMA, rel=0.10)
    assert est.snr == pytest.approx(true_snr, rel=0.10)
    assert f"across {k} b0 repeats" in est.method and "eroded" in est.method


def test_phantom_outliers_break_the_pooled_estimate(rng):
    """The phantom is hard enough: the old pooled 1/sqrt(mean var/mean²) is far off."""
    indices, b0, s0, cls = _phantom(rng, 5, "rician")
    m, v = b0.mean(axis=1), b0.var(axis=1, ddof=1)
    pooled = 1 / np.sqrt(np.mean(v / m**2))
    true_snr = np.median(s0[cls != 2]) / SIGMA
    assert pooled < 0.5 * true_snr


def test_uses_eroded_voxels_above_the_noise_floor(rng):
    indices, b0, s0, cls = _phantom(rng, 5, "gaussian")
    inner = np.all((indices >= [3, 3, 2]) & (indices <= [20, 20, 5]), axis=1)
    assert inner.sum() == N_ERODED
    est = estimate_noise(b0, indices, GRID)
    # near-zero voxels (S0 <= 10 < 5σ) of the eroded box are left out; a noisy voxel is not
    floor = inner & (cls == 2)
    assert est.n_voxels == N_ERODED - floor.sum()
    assert f"median over {N_ERODED - floor.sum()} eroded brain voxels" in est.method


def test_few_voxels_after_erosion_uses_all(rng):
    shape = (6, 6, 6)
    indices = _brain(shape, (slice(1, 5),) * 3)  # 64 voxels, 8 after erosion
    b0 = 500.0 + SIGMA * rng.normal(size=(64, 13))
    est = estimate_noise(b0, indices, shape)
    assert est.n_voxels == 64
    assert "erosion left 8" in est.method
    assert est.sigma == pytest.approx(SIGMA, rel=0.15)  # 64 voxels x 12 dof


def test_thin_scan_erodes_in_plane(rng):
    shape = (20, 20, 2)
    indices = _brain(shape, (slice(None),) * 3)
    b0 = 500.0 + SIGMA * rng.normal(size=(len(indices), 4))
    est = estimate_noise(b0, indices, shape)
    assert est.n_voxels == 18 * 18 * 2
    assert "in-plane" in est.method


# ----------------------------------------------------------------------------- one b0


def _gradients(rng, m):
    g = rng.normal(size=(m, 3))
    return np.full(m, 1000.0), g / np.linalg.norm(g, axis=1, keepdims=True)


def _one_b0_subject(rng, k, sigma, *, m=32, s0=1000.0):
    """Single-tensor voxels on a 14 x 14 x 6 grid (all brain): half WM-like
    (1.7, 0.3, 0.3) e-3 mm²/s, half isotropic 0.8e-3, random orientations; S0 = 1000;
    Gaussian noise of sd ``sigma`` on the b0s and on every direction."""
    shape = (14, 14, 6)
    indices = _brain(shape, (slice(None),) * 3)
    n = len(indices)
    bvals, bvecs = _gradients(rng, m)
    evals = np.where(np.arange(n)[:, None] % 2 == 0, [1.7e-3, 0.3e-3, 0.3e-3], [0.8e-3] * 3)
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    D = np.einsum("nij,nj,nkj->nik", q, evals, q)
    clean = s0 * np.exp(-bvals * np.einsum("mi,nij,mj->nm", bvecs, D, bvecs))
    b0 = s0 + sigma * rng.normal(size=(n, k))
    dw = clean + sigma * rng.normal(size=clean.shape)
    attenuation = dw / b0.mean(axis=1, keepdims=True)
    return indices, shape, b0, attenuation, bvals, bvecs


@pytest.mark.parametrize("k", [1, 2])
def test_tensor_residual_fallback_hand_computed(rng, k):
    """σ = 25 on S0 = 1000: SNR 1000 / 25 = 40, within 10%."""
    indices, shape, b0, att, bvals, bvecs = _one_b0_subject(rng, k, 25.0)
    est = estimate_noise(b0, indices, shape, attenuation=att, bvals=bvals, bvecs=bvecs)
    assert est.sigma == pytest.approx(25.0, rel=0.10)
    assert est.snr == pytest.approx(40.0, rel=0.10)
    assert est.n_voxels == 12 * 12 * 4
    assert f"{k} b0 + 32 directions, {k + 32 - 7} degrees of freedom" in est.method


def test_fallback_needs_seven_directions(rng):
    indices, shape, b0, att, bvals, bvecs = _one_b0_subject(rng, 1, 25.0, m=6)
    with pytest.raises(ValueError, match="at least 7 diffusion-weighted directions.*got 6"):
        estimate_noise(b0, indices, shape, attenuation=att, bvals=bvals, bvecs=bvecs)


def test_fallback_rejects_collinear_directions(rng):
    indices, shape, b0, att, bvals, _ = _one_b0_subject(rng, 1, 25.0, m=8)
    bvecs = np.tile([[0.0, 0.0, 1.0]], (8, 1))
    with pytest.raises(ValueError, match="cannot determine a tensor"):
        estimate_noise(b0, indices, shape, attenuation=att, bvals=bvals, bvecs=bvecs)


def test_fallback_needs_attenuation(rng):
    indices = _brain()
    with pytest.raises(ValueError, match="needs attenuation, bvals, bvecs"):
        estimate_noise(np.full((len(indices), 1), 500.0), indices, GRID)


def test_fallback_shape_mismatch(rng):
    indices, shape, b0, att, bvals, bvecs = _one_b0_subject(rng, 1, 25.0)
    with pytest.raises(ValueError, match="attenuation has 32 columns, bvals 31 values"):
        estimate_noise(b0, indices, shape, attenuation=att, bvals=bvals[:-1], bvecs=bvecs[:-1])


# ----------------------------------------------------------------------------- edge cases


def test_constant_signal_is_noise_free():
    indices = _brain()
    est = estimate_noise(np.full((len(indices), 5), 700.0), indices, GRID)
    assert est.sigma == 0.0 and est.snr == np.inf
    assert "no noise" in est.method


def test_noise_free_tensors_are_noise_free(rng):
    indices, shape, b0, att, bvals, bvecs = _one_b0_subject(rng, 1, 0.0)
    est = estimate_noise(b0, indices, shape, attenuation=att.astype(np.float32), bvals=bvals, bvecs=bvecs)
    assert est.sigma == 0.0 and est.snr == np.inf


def test_no_positive_s0():
    indices = _brain()
    with pytest.raises(ValueError, match="no brain voxel has a positive, finite S0"):
        estimate_noise(np.zeros((len(indices), 3)), indices, GRID)


def test_indices_must_match_b0():
    indices = _brain()
    with pytest.raises(ValueError, match=r"indices has shape \(2400, 3\); expected \(10, 3\)"):
        estimate_noise(np.ones((10, 3)), indices, GRID)
    with pytest.raises(ValueError, match="outside the grid"):
        estimate_noise(np.ones((len(indices), 3)), indices + 10, GRID)


# ----------------------------------------------------------------------------- floor


def test_relative_sigma_guards_nonpositive_s0():
    out = relative_sigma(10.0, [500.0, 0.0, -3.0, np.nan, 250.0])
    np.testing.assert_array_equal(out, [0.02, np.nan, np.nan, np.nan, 0.04])


def test_noise_floor_matches_monte_carlo(rng):
    """Mean |N(0, s_v)| over voxels and draws, against sqrt(2/π) mean s_v."""
    s = rng.uniform(0.01, 0.1, size=200)
    draws = np.abs(rng.normal(0.0, s[:, None], size=(200, 20_000)))
    mc = draws.mean()
    se = draws.mean(axis=1).std() / np.sqrt(200) + draws.std() / np.sqrt(draws.size)
    assert noise_floor_mae(s) == pytest.approx(mc, abs=4 * se)
    assert noise_floor_mae(np.r_[s, np.nan]) == noise_floor_mae(s)
    assert np.isnan(noise_floor_mae([np.nan]))


# ----------------------------------------------------------------------------- in vivo

INVIVO = PROJECT_ROOT / "data" / "invivo"


def invivo_estimate(folder):
    """The estimator on the mdt b1k_b2k scan in ``folder`` (13 b0 inside the given mask)."""
    import nibabel as nib

    folder = Path(folder)
    dwi = nib.load(folder / "b1k_b2k_example_slices_24_38.nii.gz")
    mask = np.asarray(nib.load(folder / "b1k_b2k_example_slices_24_38_mask.nii.gz").dataobj) > 0
    bvals = np.loadtxt(folder / "b1k_b2k.bval")
    b0_idx = np.flatnonzero(bvals <= 50)
    data = np.asarray(dwi.dataobj)
    b0 = data[mask][:, b0_idx].astype(float)
    return estimate_noise(b0, np.argwhere(mask), mask.shape)


@pytest.mark.slow
@pytest.mark.skipif(not (INVIVO / "b1k_b2k.bval").exists(), reason="in-vivo scan not fetched (data/invivo/)")
def test_invivo_snr_between_independent_reads():
    """Per-voxel median b0 SNR ~36 and dipy MP-PCA ~25 bracket it (issue 9)."""
    est = invivo_estimate(INVIVO)
    assert 20 <= est.snr <= 45
