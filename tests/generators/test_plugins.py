"""A researcher's own generator (``package.module:function``) in helpers.generators.simulation, and
the documented example, docs/examples/ball_stick.py.

Expected signals come from closed forms and dipy's ``multi_tensor``; expected noise from
the closed-form Rice moments; the plugin errors each have their own test.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import textwrap

import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.sims.voxel import multi_tensor as dipy_multi_tensor
from scipy import integrate, special

from helpers.config import PROJECT_ROOT
from helpers.scan.subject import Subject
from helpers.generators.simulation import call_plugin, method_support, simulate

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
MODULE = "synthqa_test_generators"  # written by the fixture below

GENERATORS = '''
import numpy as np

def constant(bvals, bvecs, n, rng):
    return np.full((n, len(bvals)), 0.6)

def wrong_shape(bvals, bvecs, n, rng):
    return np.full((n, len(bvals) + 1), 0.5)

def transposed(bvals, bvecs, n, rng):
    return np.full((len(bvals), n), 0.5)

def as_list(bvals, bvecs, n, rng):
    return [[0.5] * len(bvals)] * n

def too_big(bvals, bvecs, n, rng):
    out = np.full((n, len(bvals)), 0.5)
    out[0, 0] = 1000.0  # scanner units, not attenuation
    return out

def negative(bvals, bvecs, n, rng):
    return np.full((n, len(bvals)), -0.1)

def has_nan(bvals, bvecs, n, rng):
    out = np.full((n, len(bvals)), 0.5)
    out[1, 2] = np.nan
    return out

def has_inf(bvals, bvecs, n, rng):
    out = np.full((n, len(bvals)), 0.5)
    out[0, 1] = np.inf
    return out

def fails(bvals, bvecs, n, rng):
    raise RuntimeError("model not fitted")

def mutates(bvals, bvecs, n, rng):
    bvals[:] = 0.0
    bvecs[:] = 0.0
    return rng.uniform(0, 1, size=(n, len(bvals)))

def from_subject(bvals, bvecs, n, rng, *, subject):
    return subject.attenuation[rng.integers(subject.n_voxels, size=n)].astype(float)
'''


@pytest.fixture(scope="module", autouse=True)
def plugin_path(tmp_path_factory):
    """docs/examples and a module of test generators on sys.path, as a user's
    PYTHONPATH would put them."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(GENERATORS))
    added = [str(EXAMPLES), str(folder)]
    sys.path[:0] = added
    yield
    for p in added:
        sys.path.remove(p)
    for name in (MODULE, "ball_stick"):
        sys.modules.pop(name, None)


def make_subject(n=8, m=3, *, b=1000.0, snr=20.0):
    """A hand-built Subject: n brain voxels in a row, m volumes at b along x, y, z, ..."""
    rng = np.random.default_rng(0)
    bvecs = rng.standard_normal((m, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvecs[: min(m, 3)] = np.eye(3)[: min(m, 3)]
    fields = {f.name for f in dataclasses.fields(Subject)}
    extra = {"dti_max_b": 1500.0} if "dti_max_b" in fields else {}
    return Subject(
        attenuation=rng.uniform(0.2, 0.8, size=(n, m)).astype(np.float32),
        bvals=np.full(m, b),
        bvecs=bvecs,
        indices=np.c_[np.arange(n), np.zeros((n, 2), dtype=int)],
        shape=(n, 1, 1),
        affine=np.eye(4),
        tissue=np.full(n, 3, dtype=np.uint8),
        s0=np.ones(n, dtype=np.float32),
        snr=snr,
        info={"subject": "plugin-test"},
        **extra,
    )


def rice_moments(A, sigma):
    """Mean and variance of Rice(A, σ): E R = σ sqrt(π/2) L_{1/2}(-A²/2σ²) (scaled Bessel
    form), Var R = 2σ² + A² - (E R)²."""
    x = A**2 / (2 * sigma**2)
    mean = sigma * np.sqrt(np.pi / 2) * ((1 + x) * special.i0e(x / 2) + x * special.i1e(x / 2))
    return mean, 2 * sigma**2 + A**2 - mean**2


# ----------------------------------------------------------------------------- the example


def test_ball_stick_signal_closed_forms():
    from ball_stick import ball_stick_signal

    b, d, d_ball = 2000.0, 2.2e-3, 1.1e-3
    s = np.sqrt(0.5)
    bvecs = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [s, s, 0]]
    bvals = np.full(4, b)
    # one stick along x, fraction 1: along the gradient exp(-b d), across it 1, at 45° exp(-b d / 2)
    got = ball_stick_signal(bvals, bvecs, [[1.0]], [[[1, 0, 0]]], [d], [d_ball])
    np.testing.assert_allclose(got[0], [np.exp(-b * d), 1, 1, np.exp(-b * d / 2)], rtol=1e-14)
    # ball only (stick fraction 0): exp(-b d_ball) in every direction
    got = ball_stick_signal(bvals, bvecs, [[0.0]], [[[1, 0, 0]]], [d], [d_ball])
    np.testing.assert_allclose(got[0], np.exp(-b * d_ball), rtol=1e-14)
    # two sticks (x, y) of 0.3 / 0.2 and a ball of 0.5, measured along x and along z
    got = ball_stick_signal(bvals[:3], bvecs[:3], [[0.3, 0.2]], [[[1, 0, 0], [0, 1, 0]]], [d], [d_ball])
    ball = 0.5 * np.exp(-b * d_ball)
    np.testing.assert_allclose(
        got[0], [ball + 0.3 * np.exp(-b * d) + 0.2, ball + 0.3 + 0.2 * np.exp(-b * d), ball + 0.5], rtol=1e-14
    )


def test_ball_stick_signal_matches_dipy_multi_tensor():
    """A stick is a tensor with eigenvalues (d, 0, 0), the ball one with (d_ball,) * 3."""
    from ball_stick import ball_stick_signal

    rng = np.random.default_rng(4)
    m = 40
    bvecs = rng.standard_normal((m, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvals = np.r_[np.full(20, 1000.0), np.full(20, 2500.0)]
    gtab = gradient_table(np.r_[0.0, bvals], bvecs=np.r_[np.zeros((1, 3)), bvecs], b0_threshold=0)
    n = 5
    dirs = rng.standard_normal((n, 2, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    fractions = rng.uniform(0.1, 0.4, size=(n, 2))
    d_stick, d_ball = rng.uniform(1.5e-3, 2.5e-3, n), rng.uniform(5e-4, 3e-3, n)
    got = ball_stick_signal(bvals, bvecs, fractions, dirs, d_stick, d_ball)
    for i in range(n):
        evals = [[d_stick[i], 0, 0], [d_stick[i], 0, 0], [d_ball[i]] * 3]
        angles = [dirs[i, 0], dirs[i, 1], [1.0, 0, 0]]
        percent = 100 * np.r_[fractions[i], 1 - fractions[i].sum()]
        ref = dipy_multi_tensor(gtab, np.array(evals), angles=angles, fractions=percent, snr=None)[0][1:]
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-10)


def test_ball_stick_generator_mean_signal_matches_its_parameter_ranges():
    """E S(b) = E f_ball E exp(-b d_ball) + E f_sticks E_d[F(b d)], F(x) = √π erf(√x) / (2√x)
    (a uniform direction makes cos² θ the square of a U(0, 1) variable); the fraction
    (mean 0.45), d_stick ~ U(1.5, 2.5)e-3 and d_ball ~ U(0.5, 3)e-3 are independent."""
    from ball_stick import ball_stick

    bvals = np.r_[0.0, np.full(3, 1000.0), np.full(3, 2500.0)]
    bvecs = np.r_[np.zeros((1, 3)), np.eye(3), np.eye(3)]
    n = 40_000
    S = ball_stick(bvals, bvecs, n, np.random.default_rng(7))
    assert S.shape == (n, 7) and np.all(np.isfinite(S)) and S.min() >= 0 and S.max() <= 1
    np.testing.assert_allclose(S[:, 0], 1.0, rtol=0, atol=1e-12)

    def F(x):
        return np.sqrt(np.pi) * special.erf(np.sqrt(x)) / (2 * np.sqrt(x))

    for b, cols in ((1000.0, slice(1, 4)), (2500.0, slice(4, 7))):
        ball = integrate.quad(lambda d: np.exp(-b * d), 0.5e-3, 3.0e-3)[0] / 2.5e-3
        stick = integrate.quad(lambda d: F(b * d), 1.5e-3, 2.5e-3)[0] / 1e-3
        expected = 0.55 * ball + 0.45 * stick
        # sd of a voxel's signal < 0.25, so SE < 0.0013 per column; 0.006 ~ 4.6 SE
        np.testing.assert_allclose(S[:, cols].mean(axis=0), expected, atol=0.006)


def test_ball_stick_through_simulate_on_the_sample():
    from helpers.scan.layouts import load_sample

    subject = load_sample()
    clean, noisy = simulate(subject, "ball_stick:ball_stick", 500, seed=3, snr=30.0)
    assert clean.shape == noisy.shape == (500, subject.n_directions)
    assert clean.dtype == noisy.dtype == np.float32
    from ball_stick import ball_stick

    expected = ball_stick(subject.bvals, subject.bvecs, 500, np.random.default_rng(3))
    np.testing.assert_allclose(clean, expected, rtol=0, atol=1e-6)  # float32 of the same draw
    assert method_support(subject, "ball_stick:ball_stick", min_pool=20, wm_fa_min=0.7) is None


# ----------------------------------------------------------------------------- noise


def test_plugin_gets_rician_noise_with_the_right_sigma():
    subj = make_subject(m=30, snr=20.0)
    n = 20_000
    clean, noisy = simulate(subj, f"{MODULE}:constant", n, seed=1, snr="auto")
    np.testing.assert_array_equal(clean, np.float32(0.6))
    mean, var = rice_moments(0.6, 1 / 20.0)
    k = noisy.size  # 600,000 values: SE of the mean 6e-5, of the variance ~0.2%
    assert abs(noisy.mean() - mean) < 5 * np.sqrt(var / k)
    assert abs(noisy.astype(float).var() / var - 1) < 0.01
    # a number overrides the subject's estimate
    _, loud = simulate(subj, f"{MODULE}:constant", n, seed=1, snr=5.0)
    assert abs(loud.astype(float).var() / rice_moments(0.6, 0.2)[1] - 1) < 0.01


def test_plugin_gets_per_voxel_noise():
    """Two S0 classes (a quarter at S0 = 250, the rest at 1000, σ/S0 0.04 / 0.01, scaled to
    median 1/50): a quarter of the plugin's voxels get σ = 0.08, the rest 0.02."""
    subj = make_subject(n=64, m=30)
    subj.s0[:] = np.r_[np.full(16, 250.0), np.full(48, 1000.0)]
    clean, noisy = simulate(subj, f"{MODULE}:constant", 4000, seed=2, snr=50.0, noise="per_voxel")
    sd = (noisy.astype(float) - clean).std(axis=1)
    high = sd > 0.04
    assert abs(high.mean() - 0.25) < 0.03  # binomial SE 0.007
    np.testing.assert_allclose(noisy[high].astype(float).var(), rice_moments(0.6, 0.08)[1], rtol=0.04)
    np.testing.assert_allclose(noisy[~high].astype(float).var(), rice_moments(0.6, 0.02)[1], rtol=0.04)


def test_plugin_is_seeded_and_cannot_change_the_subject():
    subj = make_subject()
    bvals, bvecs = subj.bvals.copy(), subj.bvecs.copy()
    a = simulate(subj, f"{MODULE}:mutates", 50, seed=9, snr=20.0)
    b = simulate(subj, f"{MODULE}:mutates", 50, seed=9, snr=20.0)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(subj.bvals, bvals)
    np.testing.assert_array_equal(subj.bvecs, bvecs)


def test_plugin_that_accepts_subject_gets_it():
    subj = make_subject(n=8, m=3)
    clean, _ = simulate(subj, f"{MODULE}:from_subject", 100, seed=0, snr=None)
    rows = {tuple(r) for r in subj.attenuation}
    assert all(tuple(r) in rows for r in clean)


# ----------------------------------------------------------------------------- errors


def test_module_that_cannot_be_imported():
    subj = make_subject()
    with pytest.raises(ValueError, match=r"'no_such_lab\.gens:ball_stick'.*cannot import module 'no_such_lab\.gens'"):
        simulate(subj, "no_such_lab.gens:ball_stick", 10, snr=None)


def test_module_without_the_function():
    with pytest.raises(ValueError, match=rf"module '{MODULE}' has no function 'nope'"):
        call_plugin(f"{MODULE}:nope", [1000.0], [[1, 0, 0]], 5, np.random.default_rng(0))


@pytest.mark.parametrize(
    "function, match",
    [
        ("wrong_shape", r"returned shape \(10, 4\); expected \(10, 3\)"),
        ("transposed", r"returned shape \(3, 10\); expected \(10, 3\)"),
        ("as_list", r"returned list; expected a numpy ndarray of shape \(10, 3\)"),
        ("too_big", r"values outside \[0, 1\.5\] \(min 0\.5, max 1000\)"),
        ("negative", r"values outside \[0, 1\.5\] \(min -0\.1, max -0\.1\)"),
        ("has_nan", r"returned 1 NaN value"),
        ("has_inf", r"infinite value"),
        ("fails", r"raised RuntimeError: model not fitted"),
    ],
)
def test_bad_generator_output_names_the_spec_and_the_problem(function, match):
    subj = make_subject(m=3)
    spec = f"{MODULE}:{function}"
    with pytest.raises(ValueError, match=re.escape(f"generator '{spec}'") + ".*" + match):
        simulate(subj, spec, 10, seed=0, snr=20.0)


def test_malformed_spec_is_an_unknown_method():
    subj = make_subject()
    with pytest.raises(ValueError, match=r"unknown method.*package\.module:function"):
        simulate(subj, "ball_stick.ball_stick", 10, snr=None)
