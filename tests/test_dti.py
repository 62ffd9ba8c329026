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


def test_subject_tensor_uses_only_the_columns_up_to_dti_max_b(rng):
    """A two-shell subject whose b=2000 signal is bi-exponential (no tensor fits it): the
    Subject's tensor equals dipy's TensorModel on [S0=1, E at b=1000] alone."""
    from helpers.scan.subject import Subject

    bvals, bvecs = _scheme(rng, n_b0=0, shells=((1000, 20), (2000, 25)))
    order = rng.permutation(len(bvals))  # shells interleaved, as scanners store them
    bvals, bvecs = bvals[order], bvecs[order]
    n = 50
    evals = np.c_[rng.uniform(1.2e-3, 2e-3, n), rng.uniform(0.2e-3, 0.5e-3, (n, 2))]
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R)
    E = tensor_signal(1.0, bvals, bvecs, D)
    E[:, bvals > 1500] = 0.7 * E[:, bvals > 1500] + 0.1  # a slow, restricted pool
    s = Subject(
        attenuation=E.astype(np.float32), bvals=bvals, bvecs=bvecs, indices=np.c_[np.arange(n), np.zeros((n, 2), int)],
        shape=(n, 1, 1), affine=np.eye(4), tissue=np.zeros(n, np.uint8), s0=np.ones(n, np.float32),
    )
    low = bvals <= 1500
    np.testing.assert_array_equal(s.dti_columns, low)
    ref = _dipy_wls(np.r_[0, bvals[low]], np.r_[[[0, 0, 0]], bvecs[low]], np.c_[np.ones(n), E.astype(np.float32)[:, low]])
    fit = s.tensor()
    _assert_agree(fit, ref)
    np.testing.assert_allclose(fit.evals, np.sort(evals, axis=1)[:, ::-1], rtol=1e-4)
    s.dti_max_b, s._tensor = 2500.0, None  # every column: the bi-exponential shell biases it
    assert np.abs(s.tensor().evals - np.sort(evals, axis=1)[:, ::-1]).max() > 5e-5


def test_subject_tensor_refuses_too_few_directions(rng):
    from helpers.scan.subject import Subject

    bvecs = random_unit_vectors(rng, 5)
    s = Subject(
        attenuation=np.full((3, 5), 0.5, np.float32), bvals=np.full(5, 1000.0), bvecs=bvecs,
        indices=np.zeros((3, 3), int), shape=(3, 1, 1), affine=np.eye(4), tissue=np.zeros(3, np.uint8),
        s0=np.ones(3, np.float32), info={"bval": "my.bval"},
    )
    with pytest.raises(ValueError, match=r"my\.bval: the tensor fit .* needs at least 6 .* have 5 non-collinear"):
        s.tensor()
