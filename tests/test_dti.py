"""The vectorised WLS tensor fit against dipy's TensorModel and against closed forms."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel

from conftest import random_rotations, random_unit_vectors, tensor_signal
from helpers.dti import fit_attenuation, fit_tensor


def _dipy_wls(bvals, bvecs, data):
    gtab = gradient_table(np.asarray(bvals, float), bvecs=np.asarray(bvecs, float), b0_threshold=50)
    return TensorModel(gtab, fit_method="WLS").fit(np.asarray(data, float))


def _assert_agree(ours, ref, *, fa_for_direction=0.2):
    np.testing.assert_allclose(ours.fa, ref.fa, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.evals, ref.evals, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.md, ref.md, rtol=1e-6, atol=1e-9)
    # principal direction, sign-invariant, where it is well defined
    ok = (ref.fa > fa_for_direction) & (ref.evals[:, 0] - ref.evals[:, 1] > 0.05 * ref.evals[:, 0])
    assert ok.sum() > 0
    cos = np.abs(np.einsum("ni,ni->n", ours.direction[ok], ref.evecs[ok][..., 0]))
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def _scheme(rng, n_b0=3, shells=((1000, 30), (2000, 30))):
    bvals = np.r_[np.zeros(n_b0), np.concatenate([np.full(n, b, float) for b, n in shells])]
    bvecs = np.r_[np.zeros((n_b0, 3)), random_unit_vectors(rng, len(bvals) - n_b0)]
    return bvals, bvecs


def test_agrees_with_dipy_on_random_tensors_with_noise(rng):
    bvals, bvecs = _scheme(rng)
    n = 400
    lam1 = rng.uniform(1.2e-3, 2.2e-3, n)
    evals = np.c_[lam1, lam1 * rng.uniform(0.1, 0.6, n), lam1 * rng.uniform(0.05, 0.1, n)]
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R)
    s0 = rng.uniform(300, 1500, n)
    clean = tensor_signal(s0, bvals, bvecs, D)
    sigma = s0[:, None] / 25  # SNR 25, Rician magnitude
    noisy = np.hypot(clean + rng.normal(0, 1, clean.shape) * sigma, rng.normal(0, 1, clean.shape) * sigma)
    noisy[:5, 10] = 0.0  # signals that dipy clips at MIN_POSITIVE_SIGNAL
    noisy[5:8, 20] = -3.0
    ours = fit_tensor(bvals, bvecs, noisy)
    ref = _dipy_wls(bvals, bvecs, noisy)
    _assert_agree(ours, ref)
    # sanity: with noise the fit is still near the truth on average
    assert np.abs(ours.evals - evals).mean() < 1e-4


def test_fit_attenuation_agrees_with_dipy_on_the_sample():
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    raw = np.asarray(nib.load(files / "small_64D.nii").dataobj, dtype=float).reshape(-1, 65)
    bvals = np.loadtxt(files / "small_64D.bval")
    bvecs = np.nan_to_num(np.loadtxt(files / "small_64D.bvec"))  # NaN at b0 in the file
    ref = _dipy_wls(bvals, bvecs, raw)
    _assert_agree(fit_tensor(bvals, bvecs, raw), ref)
    # the [S0=1, E] fit
    E = raw[:, 1:] / raw[:, :1]
    ref_e = _dipy_wls(bvals, bvecs, np.hstack([np.ones((len(E), 1)), E]))
    _assert_agree(fit_attenuation(bvals[1:], bvecs[1:], E), ref_e)
    # ... is the fit of the raw signal (a constant shift of log S, a constant weight scale)
    # wherever no signal is 0 (clipping at 1e-4 acts on different scales)
    positive = (raw > 0).all(axis=1)
    assert positive.sum() > 950
    np.testing.assert_allclose(ref_e.evals[positive], ref.evals[positive], rtol=1e-6, atol=1e-9)


def test_isotropic_tensor_has_fa_zero_and_md_equal_d(rng):
    bvals, bvecs = _scheme(rng, n_b0=1, shells=((1000, 20),))
    d = 0.8e-3
    E = np.exp(-bvals[1:] * d)[None]
    fit = fit_attenuation(bvals[1:], bvecs[1:], E)
    np.testing.assert_allclose(fit.evals, [[d, d, d]], rtol=1e-9)
    assert fit.md[0] == pytest.approx(d, rel=1e-12)
    assert fit.fa[0] == pytest.approx(0.0, abs=1e-9)


def test_prolate_tensor_direction_and_eigenvalues_recovered(rng):
    bvals, bvecs = _scheme(rng, n_b0=1, shells=((1000, 30),))
    v = np.array([1.0, 2.0, -2.0]) / 3.0  # unit
    lam_par, lam_perp = 1.7e-3, 0.3e-3
    D = lam_perp * np.eye(3) + (lam_par - lam_perp) * np.outer(v, v)
    S = 800.0 * np.exp(-bvals * np.einsum("mi,ij,mj->m", bvecs, D, bvecs))
    fit = fit_tensor(bvals, bvecs, S[None])
    np.testing.assert_allclose(fit.evals[0], [lam_par, lam_perp, lam_perp], rtol=1e-8)
    assert abs(fit.direction[0] @ v) == pytest.approx(1.0, abs=1e-10)
    # closed-form FA of a (l, p, p) tensor: |l - p| / sqrt(l² + 2p²)
    fa = (lam_par - lam_perp) / np.sqrt(lam_par**2 + 2 * lam_perp**2)
    assert fit.fa[0] == pytest.approx(fa, rel=1e-8)


def test_chunks_give_the_same_answer(rng):
    bvals, bvecs = _scheme(rng)
    evals = np.tile([1.5e-3, 0.4e-3, 0.3e-3], (23, 1))
    R = random_rotations(rng, 23)
    S = tensor_signal(1000.0, bvals, bvecs, np.einsum("nij,nj,nkj->nik", R, evals, R))
    S = S + rng.normal(0, 10, S.shape)
    a, b = fit_tensor(bvals, bvecs, S), fit_tensor(bvals, bvecs, S, chunk=5)
    np.testing.assert_allclose(a.evals, b.evals, rtol=1e-12, atol=0)


def test_wrong_data_shape_names_the_expected_shape(rng):
    bvals, bvecs = _scheme(rng, n_b0=1, shells=((1000, 10),))
    with pytest.raises(ValueError, match=r"data has shape \(4, 10\); expected \(n_voxels, 11\)"):
        fit_tensor(bvals, bvecs, np.ones((4, 10)))
