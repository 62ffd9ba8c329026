"""Calibrated: the family, its drawing, the distance and the fit (expected values from the
construction: closed-form logit-normal quantiles, dipy-checked FORCE signal, known truth)."""

import numpy as np
import pytest
from scipy.special import expit

from helpers.generators import calibration as C
from helpers.generators.force import force_signal, sphere_vertices


def _gradients(n=30, b=1000.0, seed=0):
    g = np.random.default_rng(seed).standard_normal((n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.r_[0.0, np.full(n, b)], np.r_[np.zeros((1, 3)), g]


TRUTH = C.Hyper(
    fiber_probs=(0.5, 0.3, 0.2), tissue_alpha=(3.0, 1.0, 0.5), pure=(0.2, 0.1, 0.05),
    d_par=(-0.3, 0.3), ratio=(-0.8, 0.3), f_intra=(0.4, 0.3), odi=(-1.5, 0.3), gm_d=(-1.2, 0.2),
    csf_d=2.6e-3, noise_scale=1.0, noise_spread=1.0,
)


def test_vector_round_trip():
    back = C.Hyper.from_vector(TRUTH.to_vector())
    for name in ("fiber_probs", "tissue_alpha", "pure", "d_par", "ratio", "f_intra", "odi", "gm_d"):
        np.testing.assert_allclose(getattr(back, name), getattr(TRUTH, name), rtol=1e-6, atol=1e-6)
    assert back.csf_d == pytest.approx(2.6e-3) and back.noise_scale == pytest.approx(1.0)


def test_bad_hyperparameters_name_the_field():
    with pytest.raises(ValueError, match="fiber_probs"):
        C.Hyper(fiber_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="pure"):
        C.Hyper(pure=(0.5, 0.5, 0.1))
    with pytest.raises(ValueError, match="csf_d"):
        C.Hyper(csf_d=9e-3)


def test_draws_follow_the_hyperparameters():
    n = 40_000
    p = C.draw_parameters(n, 1, TRUTH)
    # pure voxels: binomial tolerance (5 sd)
    for k, prob in enumerate(TRUTH.pure):
        share = np.mean(p.fractions[:, k] == 1.0)
        assert abs(share - prob) < 5 * np.sqrt(prob * (1 - prob) / n)
    for k, prob in zip((1, 2, 3), TRUTH.fiber_probs):
        assert abs(np.mean(p.n_fibers == k) - prob) < 5 * np.sqrt(prob * (1 - prob) / n)
    # logit-normal median: lo + (hi - lo) sigmoid(mu), closed form
    lo, hi = C.SUPPORT["d_par"]
    assert np.median(p.d_par[:, 0]) == pytest.approx(lo + (hi - lo) * expit(TRUTH.d_par[0]), rel=0.01)
    ratio = p.d_perp[:, 0] / p.d_par[:, 0]
    assert np.median(ratio) == pytest.approx(expit(TRUTH.ratio[0]), rel=0.01)
    assert np.all(p.d_perp <= p.d_par + 1e-15)
    assert np.all(np.isin(p.odi[p.used], C.ODI_GRID))
    np.testing.assert_allclose(p.fractions.sum(axis=1), 1.0)
    np.testing.assert_allclose(p.csf_d, 2.6e-3)


def test_signal_is_force_signal():
    bvals, bvecs = _gradients()
    p = C.draw_parameters(300, 2, TRUTH)
    ours = C.calibrated_signal(bvals, bvecs, p)
    ref = force_signal(bvals, bvecs, p)  # its own table, over the drawn span
    ref[:, 0] = 1.0
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_feature_distance_closed_form():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((20_000, 2))
    d = C.FeatureDistance(real, n_projections=0, mmd_weight=0.0)
    assert d(real) == pytest.approx(0.0, abs=1e-12)
    # features are Gaussianised through the real CDF: for N(0, 1) features that is about
    # the identity, so a shift of 0.5 in one of two features is a mean marginal W1 of 0.25
    assert d(real + [0.5, 0.0]) == pytest.approx(0.25, rel=0.05)
    # ranks only: a monotone transform of a feature, applied to both samples, changes nothing
    # (but the linear interpolation of the real CDF between its values)
    full = C.FeatureDistance(real)
    other = rng.standard_normal((5000, 2)) * [1.2, 1.0]
    warp = lambda x: np.c_[np.exp(x[:, 0]), x[:, 1]]  # noqa: E731
    assert C.FeatureDistance(warp(real))(warp(other)) == pytest.approx(full(other), rel=1e-4)  # up to interpolation
    # the kernel part sees dependence the marginals miss: same marginals, correlated
    corr = np.c_[other[:, 0] / 1.2, (other[:, 0] / 1.2 + other[:, 1]) / np.sqrt(2)]
    indep = rng.standard_normal((5000, 2))
    assert full(corr) > full(indep) + 0.05


def _pseudo_scan(hyper, n, bvals, bvecs, sigma, seed):
    rng = np.random.default_rng(seed)
    params = C.draw_parameters(n, rng, hyper)
    clean = C.calibrated_signal(bvals, bvecs, params)
    s = hyper.sigmas(sigma, params.fractions, rng)[:, None]
    return np.hypot(clean + s * rng.standard_normal(clean.shape), s * rng.standard_normal(clean.shape))


def test_fit_started_at_the_truth_stays_there():
    bvals, bvecs = _gradients()
    real = _pseudo_scan(TRUTH, 3000, bvals, bvecs, 0.03, 4)
    cal = C.calibrate(real, bvals, bvecs, sigmas=0.03, start=TRUTH, max_evals=60, seed=1)
    got, want = cal.hyper.summary(), TRUTH.summary()
    assert cal.distance <= cal.distance_start + 1e-12
    assert got["d_par_median"] == pytest.approx(want["d_par_median"], rel=0.1)
    assert got["mean_f_wm"] == pytest.approx(want["mean_f_wm"], abs=0.1)
    assert got["noise_scale"] == pytest.approx(1.0, abs=0.15)


@pytest.fixture(scope="module")
def recovered():
    bvals, bvecs = _gradients(n=60)
    real = _pseudo_scan(TRUTH, 4000, bvals, bvecs, 0.03, 5)
    return C.calibrate(real, bvals, bvecs, sigmas=0.03, max_evals=1500, seed=2)


@pytest.mark.slow
def test_fit_from_the_defaults_moves_towards_a_known_population(recovered):
    """The fit more than halves the distance it starts from (FORCE's defaults) and stops by
    its evaluation budget, not by the time cap (so the same seed gives the same fit)."""
    assert recovered.distance < recovered.distance_start / 2
    assert recovered.settings["stopped_by_time"] == [] and recovered.evaluations >= 1500


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 23: the fit does not yet recover every identifiable quantity within "
                          "RECOVERY_TOLERANCE at this budget (bench_calibration prints which)", strict=False)
def test_fit_from_the_defaults_recovers_a_known_population(recovered):
    """Recovery of the quantities within the stated tolerances (docs/method.md)."""
    got, want = recovered.hyper.summary(), TRUTH.summary()
    for key, tol in C.RECOVERY_TOLERANCE.items():
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])


def test_calibration_json_round_trip():
    import dataclasses
    import json

    odd = dataclasses.replace(TRUTH, noise_scale=0.8, noise_spread=0.5, s0_tissue=(1.5, 2.0))
    assert C.Hyper.from_dict(json.loads(json.dumps(odd.to_dict()))) == odd  # every field survives JSON
    cal = C.Calibration(hyper=TRUTH, distance=0.1, distance_start=0.5, intervals={"csf_d": (2e-3, 3e-3)})
    back = C.Calibration.from_dict(cal.to_dict())
    assert back.hyper == TRUTH and back.intervals == {"csf_d": (2e-3, 3e-3)} and back.distance == 0.1
    with pytest.raises(ValueError, match="not a calibration"):
        C.Calibration.from_dict({"distance": 1})


def test_directions_are_force_vertices():
    p = C.draw_parameters(50, 0, TRUTH)
    v = sphere_vertices()
    used = p.used
    assert np.all(np.abs(np.abs(p.directions[used] @ v.T).max(axis=1) - 1) < 1e-12)
