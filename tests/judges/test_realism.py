"""The two-sample judge: tests and distances against closed forms and scipy.

Expected values come from elsewhere than the code under test:
scipy's Wasserstein distance, a loop-by-loop MMD, binomial intervals,
hand-ranked tables for the Spearman correlation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import random_rotations, tensor_signal
from helpers.features import invariant_features
from helpers.judges import realism
from helpers.contract import COLUMNS
from helpers.scan.layouts import load_sample


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def binomial_interval(n, level=0.95):
    """Accuracies a fair coin gives with probability ``level`` on ``n`` trials."""
    lo, hi = stats.binom.interval(level, n, 0.5)
    return lo / n, hi / n


def tensor_voxels(rng, n, bvals, bvecs, *, snr=20.0):
    """Single-tensor voxels (prolate, random eigenvalues and orientation) with Rician noise."""
    l1 = rng.uniform(1.2e-3, 2.0e-3, n)
    l23 = rng.uniform(0.2e-3, 0.7e-3, n)
    evals = np.stack([l1, l23, l23], axis=1)
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R)
    clean = tensor_signal(np.ones(n), bvals, bvecs, D)
    sigma = 1 / snr
    return np.hypot(clean + sigma * rng.standard_normal(clean.shape), sigma * rng.standard_normal(clean.shape))


def test_c2st_same_distribution_is_at_chance(sample):
    """Two independent draws from one generator, and the real scan split in halves."""
    bvals, bvecs = sample.bvals, sample.bvecs
    a = invariant_features(tensor_voxels(np.random.default_rng(1), 1500, bvals, bvecs), bvals, bvecs)
    b = invariant_features(tensor_voxels(np.random.default_rng(2), 1500, bvals, bvecs), bvals, bvecs)
    res = realism.c2st(a.to_numpy(), b.to_numpy(), seed=0)
    assert res.n_test == 1500 and res.correct == round(res.accuracy * res.n_test)
    lo, hi = binomial_interval(res.n_test)
    assert lo <= res.accuracy <= hi
    assert res.p > 0.025

    real = invariant_features(sample.attenuation, bvals, bvecs).to_numpy()
    halves = np.random.default_rng(3).permutation(len(real))
    res = realism.c2st(real[halves[:500]], real[halves[500:]], seed=0)
    lo, hi = binomial_interval(res.n_test)
    assert lo <= res.accuracy <= hi


def test_c2st_tells_noise_from_tensors(sample):
    bvals, bvecs = sample.bvals, sample.bvecs
    tensors = tensor_voxels(np.random.default_rng(4), 1000, bvals, bvecs)
    noise = np.random.default_rng(5).uniform(0, 1, size=tensors.shape)
    res = realism.c2st(
        invariant_features(tensors, bvals, bvecs).to_numpy(),
        invariant_features(noise, bvals, bvecs).to_numpy(),
        seed=0,
    )
    assert res.accuracy > 0.9
    assert res.p == pytest.approx(stats.binomtest(res.correct, res.n_test, 0.5, alternative="greater").pvalue)
    assert res.p < 1e-10


def test_c2st_equal_sizes_and_seeded(rng):
    x, y = rng.normal(size=(300, 2)), rng.normal(0.3, 1, size=(200, 2))
    a, b = realism.c2st(x, y, seed=7), realism.c2st(x, y, seed=7)
    assert a == b
    assert a.n_test == 200  # the larger sample is cut to 200: 400 rows, half held out
    with pytest.raises(ValueError, match="same d"):
        realism.c2st(x, y[:, :1])
    with pytest.raises(ValueError, match="test_fraction"):
        realism.c2st(x, y, test_fraction=1.0)


# ----------------------------------------------------------------------------- Wasserstein


def test_wasserstein_matches_scipy(rng):
    cases = [
        ([0.0, 1.0, 3.0], [5.0, 6.0, 8.0]),
        ([0.0, 0.0, 1.0, 2.0], [1.0, 1.0, 4.0]),  # ties, unequal sizes
        (rng.normal(size=137), rng.gamma(2.0, size=61)),
        (rng.uniform(size=1), rng.uniform(size=50)),
    ]
    for x, y in cases:
        assert realism.wasserstein_1d(x, y) == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-12, abs=1e-15)


def test_wasserstein_closed_forms(rng):
    x = rng.normal(size=400)
    assert realism.wasserstein_1d(x, x + 0.37) == pytest.approx(0.37, rel=1e-12)
    assert realism.wasserstein_1d([2.0], [-1.5]) == pytest.approx(3.5)
    assert realism.wasserstein_1d([0, 1], [0, 0]) == pytest.approx(0.5)  # half the mass moves 1
    assert realism.wasserstein_1d(x, x) == 0.0
    with pytest.raises(ValueError, match="empty"):
        realism.wasserstein_1d([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        realism.wasserstein_1d([np.nan], [1.0])


# ----------------------------------------------------------------------------- MMD


def mmd2_by_loops(x, y, h):
    """Unbiased MMD² (Gretton et al. 2012, Eq. 3), term by term."""
    k = lambda a, b: math.exp(-float(np.sum((a - b) ** 2)) / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_the_formula(rng):
    x, y = rng.normal(size=(9, 3)), rng.normal(0.5, 1, size=(7, 3))
    res = realism.mmd(x, y, standardise=False, bandwidth=1.3, permutations=0)
    assert res.mmd2 == pytest.approx(mmd2_by_loops(x, y, 1.3), rel=1e-10)
    assert math.isnan(res.p)
    # median heuristic: the median pooled pairwise distance
    z = np.vstack([x, y])
    d = [np.linalg.norm(z[i] - z[j]) for i, j in itertools.combinations(range(len(z)), 2)]
    assert realism.mmd(x, y, standardise=False, permutations=0).bandwidth == pytest.approx(np.median(d))


def test_mmd_permutation_test(rng):
    x, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    same = realism.mmd(x, y, seed=0)
    assert abs(same.mmd2) < 0.01
    assert same.p > 0.05
    shifted = realism.mmd(x, y + 0.5, seed=0)
    assert shifted.mmd2 > 10 * abs(same.mmd2)
    assert shifted.p == pytest.approx(1 / 201)  # no permutation reaches it
    assert realism.mmd(x, y, seed=3) == realism.mmd(x, y, seed=3)
    assert realism.mmd(x, y, max_n=100, permutations=10).n == 100
    with pytest.raises(ValueError, match="NaN"):
        realism.mmd(np.full((3, 1), np.nan), y[:, :1])
    with pytest.raises(ValueError, match="at least 2"):
        realism.mmd(x[:1], y)


# ----------------------------------------------------------------------------- a subject


def test_realism_table_on_the_sample(sample):
    methods = ["Syn", "RandomWM"]
    kwargs = dict(n=300, seed=0, snr=sample.snr, permutations=50, mmd_n=300)
    table = realism.realism_table(sample, methods, **kwargs)
    assert list(table.columns) == list(COLUMNS)
    assert (table["replicate"] == 0).all() and (table["tissue"] == "all").all()
    assert (table["dataset"] == "sample").all() and (table["subject"] == "small_64D").all()
    wide = table.pivot(index="method", columns="metric", values="value")
    assert set(wide.columns) == {"c2st_accuracy", "c2st_p", "w1_fa", "w1_md", "w1_mean_b1000", "mmd", "mmd_p"}
    # uniform per-gradient signals are far easier to spot than tensor mixtures
    assert wide.loc["RandomWM", "c2st_accuracy"] > wide.loc["Syn", "c2st_accuracy"]
    assert wide.loc["RandomWM", "c2st_accuracy"] > 0.9
    # same seed, same numbers; the distances are scipy's on the same voxels
    again = realism.realism_table(sample, methods, **kwargs)
    pd.testing.assert_frame_equal(table, again)
    fa_md = realism.realism_features(sample, methods, n=300, seed=0, snr=sample.snr)
    assert list(fa_md) == ["real", "Syn", "RandomWM"]
    assert all(len(fa) == len(md) == 300 for fa, md in fa_md.values())
    for m in methods:
        assert wide.loc[m, "w1_fa"] == pytest.approx(stats.wasserstein_distance(fa_md["real"][0], fa_md[m][0]))
        assert wide.loc[m, "w1_md"] == pytest.approx(stats.wasserstein_distance(fa_md["real"][1], fa_md[m][1]))
    # a precomputed feature set gives the same table; names/ids can be overridden
    sets = realism.feature_sets(sample, methods, n=300, seed=0, snr=sample.snr)
    reused = realism.realism_table(sample, methods, features=sets, dataset="d", subject_id="s", permutations=50, mmd_n=300)
    np.testing.assert_allclose(reused["value"], table["value"])
    assert (reused["dataset"] == "d").all() and (reused["subject"] == "s").all()
    assert realism.realism_features(sets)["Syn"][0] == pytest.approx(fa_md["Syn"][0])
    with pytest.raises(ValueError, match="no set for method 'Sampled'"):
        realism.realism_table(sample, ["Sampled"], features=sets)


def test_feature_sets_rejects_tiny_n(sample):
    with pytest.raises(ValueError, match="n must be"):
        realism.feature_sets(sample, ["Syn"], n=3)
    with pytest.raises(ValueError, match="give the methods"):
        realism.realism_features(sample)


def test_realism_label():
    assert "b=2000" in realism.realism_label("w1_mean_b2000")
    assert realism.realism_label("c2st_accuracy").startswith("classifier")


# ----------------------------------------------------------------------------- two judges


def _tidy(rows, metric):
    return pd.DataFrame(
        [(ds, subj, m, r, metric, "all", v) for ds, subj, m, r, v in rows], columns=list(COLUMNS)
    )


def test_judges_agree_on_a_hand_made_table():
    # dataset "one": autoencoder order A < B < C < D (two subjects x two replicates;
    # the per-subject means are A 1, B 2, C 3, D 4), realism order B < A < C < D:
    # rank differences 1, 1, 0, 0 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    ae_rows, real_rows = [], []
    for subj in ("s1", "s2"):
        for m, v in zip("ABCD", (1.0, 2.0, 3.0, 4.0)):
            ae_rows += [("one", subj, m, 0, v - 0.1), ("one", subj, m, 1, v + 0.1)]
        for m, v in zip("ABCD", (0.6, 0.55, 0.7, 0.9)):
            real_rows.append(("one", subj, m, 0, v))
    # dataset "two": the same order by both judges (rho = 1), and a method only one judges
    for m, v in zip("ABCE", (1.0, 2.0, 3.0, 9.0)):
        ae_rows.append(("two", "s1", m, 0, v))
    for m, v in zip("ABC", (0.5, 0.6, 0.8)):
        real_rows.append(("two", "s1", m, 0, v))
    metrics, real = _tidy(ae_rows, "signal_mae"), _tidy(real_rows, "c2st_accuracy")
    out = realism.judges_agree(metrics, real).set_index("dataset")
    assert out.loc["one", "rho"] == pytest.approx(0.8)
    assert out.loc["one", "autoencoder_ranking"] == "A, B, C, D"
    assert out.loc["one", "realism_ranking"] == "B, A, C, D"
    assert not out.loc["one", "top_agrees"]
    assert "disagree" in out.loc["one", "sentence"]
    assert out.loc["two", "rho"] == pytest.approx(1.0) and out.loc["two", "n_methods"] == 3
    assert out.loc["two", "top_agrees"] and "agree on" in out.loc["two", "sentence"]

    # p-values: larger is more realistic, so 1 - accuracy ranks alike
    pvals = real.assign(metric="mmd_p", value=1 - real["value"])
    flipped = realism.judges_agree(metrics, pvals, realism_metric="mmd_p").set_index("dataset")
    assert flipped.loc["one", "realism_ranking"] == "B, A, C, D"
    assert flipped.loc["one", "rho"] == pytest.approx(0.8)

    # a verdict knows only the winner: no rank correlation
    verdict = pd.DataFrame({"dataset": ["one"], "metric": ["signal_mae"], "best": ["A"], "runner_up": ["B"]})
    v = realism.judges_agree(verdict, real).set_index("dataset")
    assert v.loc["one", "top_autoencoder"] == "A" and v.loc["one", "top_realism"] == "B"
    assert math.isnan(v.loc["one", "rho"])

    with pytest.raises(ValueError, match="no rows of metric 'fa_mae'"):
        realism.judges_agree(metrics, real, metric="fa_mae")
    with pytest.raises(ValueError, match="lacks column"):
        realism.judges_agree(metrics, real.drop(columns="subject"))
