"""Distances against the real-vs-real floor, the block bootstrap and where generators differ.

Expected values come from elsewhere than the code under test: the Bayes accuracy Φ(δ/2)
of two unit normals δ apart, scipy's weighted Wasserstein distance and the same sample
with its rows repeated, a loop-by-loop weighted MMD², hand-made cases of the realism rule,
multinomial and Student-t widths computed in the comments, and a phantom whose real voxels
come from a known generator (so the generator that made them must read as realistic and a
different one must not).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import split_phantom
from helpers.judges import realism
from helpers.judges.distance import REALISTIC, _resample_replicates, distance_check, random_halves, realistic
from helpers.run.pipeline import _interval, distance_table, with_disagreement, with_distance
from helpers.scan.split import block_weights

# ----------------------------------------------------------------------------- 3. two-sample tests


def test_crossfit_reads_one_half_on_one_distribution():
    """Two iid samples of one 5-D normal: held-out accuracy over 4000 rows has sd
    0.5 / sqrt(4000) = 0.008 under the null; 0.5 ± 0.04 is five of those."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2000, 5)), rng.standard_normal((2000, 5))
    cf = realism.c2st_crossfit(x, y, seed=1)
    assert abs(cf.accuracy - 0.5) <= 0.04
    # every one of the 2n rows is scored once; the accuracy is their mean
    assert len(cf.real_correct) == len(cf.synthetic_correct) == 2000
    assert cf.accuracy == pytest.approx((cf.real_correct.sum() + cf.synthetic_correct.sum()) / 4000)
    assert cf.p_real.shape == (2000,) and ((cf.p_real >= 0) & (cf.p_real <= 1)).all()


def test_crossfit_reaches_the_bayes_accuracy_of_a_shift():
    """Unit normals δ = 2 apart on one axis: the best classifier (threshold at the
    midpoint) is right with probability Φ(δ/2) = Φ(1) = 0.841. A fitted classifier cannot
    beat it by more than chance (sd 0.006) and should come within a few points."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2000, 5))
    y = rng.standard_normal((2000, 5))
    y[:, 0] += 2.0
    bayes = stats.norm.cdf(1.0)
    acc = realism.c2st_crossfit(x, y, seed=2).accuracy
    assert bayes - 0.04 <= acc <= bayes + 0.02


def test_crossfit_subsamples_the_larger_sample():
    rng = np.random.default_rng(7)
    cf = realism.c2st_crossfit(rng.standard_normal((300, 2)), rng.standard_normal((100, 2)), seed=0)
    assert len(cf.real_rows) == len(cf.synthetic_rows) == 100
    assert len(np.unique(cf.real_rows)) == 100 and cf.real_rows.max() < 300
    assert cf.p_real.shape == (300,)  # every real row gets a probability, scored or not
    with pytest.raises(ValueError, match="4 rows"):
        realism.c2st_crossfit(np.zeros((3, 2)), np.zeros((10, 2)))


def test_weighted_wasserstein_is_scipys_and_repeats_rows():
    rng = np.random.default_rng(8)
    x, y = rng.normal(0, 1, 50), rng.normal(0.5, 2, 40)
    wx, wy = rng.integers(0, 4, 50).astype(float), rng.integers(1, 3, 40).astype(float)
    got = realism.weighted_wasserstein(x, y, wx, wy)
    assert got == pytest.approx(stats.wasserstein_distance(x, y, wx, wy), rel=1e-12)
    # integer weights are repeated rows
    assert got == pytest.approx(stats.wasserstein_distance(np.repeat(x, wx.astype(int)), np.repeat(y, wy.astype(int))),
                                rel=1e-12)
    # unweighted: a shift c gives W1 = |c|
    assert realism.weighted_wasserstein(x, x + 0.3) == pytest.approx(0.3)
    # NaN values (and zero weights) are left out
    x_nan = np.r_[x, np.nan]
    assert realism.weighted_wasserstein(x_nan, y, np.r_[wx, 5.0], wy) == pytest.approx(got, rel=1e-12)


def _loop_weighted_mmd2(K, n_x, w):
    """Σ_{i≠j} w_i w_j k_ij / Σ_{i≠j} w_i w_j within each sample, minus twice the
    weighted mean cross kernel, by explicit loops."""
    N = len(K)
    xs, ys = range(n_x), range(n_x, N)

    def within(rows):
        num = sum(w[i] * w[j] * K[i, j] for i in rows for j in rows if i != j)
        den = sum(w[i] * w[j] for i in rows for j in rows if i != j)
        return num / den

    cross = sum(w[i] * w[j] * K[i, j] for i in xs for j in ys) / (sum(w[i] for i in xs) * sum(w[j] for j in ys))
    return within(xs) + within(ys) - 2 * cross


def test_weighted_mmd2_with_unit_weights_is_the_unbiased_mmd():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.4
    K, h = realism.kernel_matrix(x, y)
    assert np.all(np.diag(K) == 0)
    unit = realism.weighted_mmd2(K, 40, np.ones(70))
    ref = realism.mmd(x, y, permutations=0, max_n=1000)  # no subsampling at 40 and 30 rows
    assert unit == pytest.approx(ref.mmd2, rel=1e-10)
    assert h == pytest.approx(ref.bandwidth)
    assert unit == pytest.approx(_loop_weighted_mmd2(K, 40, np.ones(70)), rel=1e-10)
    # Poisson weights: the loop formula; a column per draw gives each draw's value
    W = rng.poisson(1.0, size=(70, 3)).astype(float) + np.r_[np.zeros(69), 1.0][:, None]
    cols = realism.weighted_mmd2(K, 40, W)
    for d in range(3):
        assert cols[d] == pytest.approx(_loop_weighted_mmd2(K, 40, W[:, d]), rel=1e-10)


def test_feature_differences_ranks_the_shifted_feature_first():
    rng = np.random.default_rng(10)
    real = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.normal(0, 1, 500)})
    syn = pd.DataFrame({"a": rng.normal(0, 1, 400), "b": rng.normal(3, 1, 400)})
    out = realism.feature_differences(real, syn)
    assert out["feature"].tolist() == ["b", "a"] and out["rank"].tolist() == [1, 2]
    ref = stats.ks_2samp(real["b"], syn["b"])
    assert out.loc[0, "ks"] == pytest.approx(ref.statistic) and out.loc[0, "ks_p"] == pytest.approx(ref.pvalue)
    assert out.loc[0, "median_synthetic"] == pytest.approx(np.median(syn["b"]))


# ----------------------------------------------------------------------------- 4. the realism rule


def test_realistic_by_hand():
    assert REALISTIC["c2st_accuracy"] == ("above", 0.05)
    assert realistic("c2st_accuracy", 0.54, 0.50) is True  # 0.04 above the floor
    assert realistic("c2st_accuracy", 0.56, 0.50) is False  # 0.06 above
    assert realistic("c2st_accuracy", 0.47, 0.52) is True  # below the floor
    # a distance at most twice its floor
    assert realistic("error_w1", 0.003, 0.002) is True  # 1.5x
    assert realistic("error_w1", 0.0039, 0.002) is True  # 1.95x
    assert realistic("error_w1", 0.0041, 0.002) is False  # 2.05x
    assert realistic("c2st_accuracy", 0.55, 0.50) is True  # exactly 0.05 above (0.55 - 0.5 rounds above 0.05)
    # the code distance: at most the floor's upper bootstrap bound (an MMD² floor is about 0, often below)
    assert realistic("code_mmd", 0.0002, -0.0006, 0.0009) is True
    assert realistic("code_mmd", 0.05, 0.01, 0.02) is False
    assert np.isnan(realistic("code_mmd", 0.05, 0.01))  # no bound: no claim
    # no rule, or no finite value: NaN
    assert np.isnan(realistic("signal_mae", 0.01, 0.02))
    assert np.isnan(realistic("c2st_accuracy", np.nan, 0.5))
    assert np.isnan(realistic("error_w1", 0.003, np.nan))


def test_random_halves_by_hand():
    a = random_halves(11, 0)
    assert a.dtype == bool and a.sum() == 5  # 11 // 2
    np.testing.assert_array_equal(a, random_halves(11, 0))
    assert not np.array_equal(random_halves(1000, 0), random_halves(1000, 1))


# ----------------------------------------------------------------------------- 6. per-voxel misses


def test_per_voxel_misses_lie_where_the_generator_differs():
    """Real rows: 1000 'WM-like' at N(0, I) and 500 'CSF-like' at N(4, I) in 3-D. The
    synthetic sample has the WM-like group exactly (same distribution) and its CSF-like
    group shifted to N(7, I). The classifier is sure the real CSF rows are real (p → 1)
    and cannot tell on the WM rows (p near 1/2 minus the synthetic excess there)."""
    rng = np.random.default_rng(11)
    real = np.vstack([rng.standard_normal((1000, 3)), rng.standard_normal((500, 3)) + 4.0])
    syn = np.vstack([rng.standard_normal((1000, 3)), rng.standard_normal((500, 3)) + 7.0])
    cf = realism.c2st_crossfit(real, syn, seed=3)
    csf = np.r_[np.zeros(1000, bool), np.ones(500, bool)]
    assert cf.p_real[csf].mean() > 0.9
    assert cf.p_real[csf].mean() - cf.p_real[~csf].mean() > 0.3
    # the misses (real rows called synthetic) are in the WM-like group
    scored = csf[cf.real_rows]
    assert cf.real_correct[scored].mean() > 0.9


# ----------------------------------------------------------------------------- 8. block bootstrap


def _two_sample_draws(n_reps, *, n_draws=2000):
    """Bootstrap draws of a two-sample accuracy, built as helpers.judges.distance builds them.

    The scan: 50 blocks of 20 real voxels; on 25 blocks the classifier is right on every
    voxel, on 25 wrong (real correctness is a property of the scan region, shared by
    every replicate). Each replicate r: 1000 synthetic voxels, right on a share q_r
    (alternating 0.4, 0.6: the replicates disagree). A draw reweights the real voxels by
    one block-bootstrap draw shared across replicates and the synthetic voxels by
    Poisson(1), then helpers.judges.distance._resample_replicates resamples the replicates.
    """
    blocks = np.repeat(np.arange(50), 20)
    real_correct = np.repeat(np.r_[np.ones(25), np.zeros(25)], 20)
    rng = np.random.default_rng(12)
    w = block_weights(blocks, n_draws, rng)
    draws = {}
    for r in range(n_reps):
        q = 0.4 if r % 2 == 0 else 0.6
        syn = (np.arange(1000) < q * 1000).astype(float)
        v = rng.poisson(1.0, size=(n_draws, 1000)).astype(float)
        draws[("G", r)] = {"c2st_accuracy": ((w * real_correct).sum(1) + (v * syn).sum(1)) / (w.sum(1) + v.sum(1))}
    boot = _resample_replicates(["G"], list(range(n_reps)), draws, {k: {} for k in draws}, n_draws, rng,
                                dataset="d", subject="s")
    return boot["score"].to_numpy()


def test_more_replicates_do_not_shrink_the_scans_share_of_the_interval():
    """The real part is half the rows: its block-bootstrap sd is 0.5 sqrt(0.25 / 50) =
    0.0354 whatever the number of replicates, a 95% width of at least 2 x 1.96 x 0.0354 =
    0.139. The replicates add sd 0.5 x 0.1 / sqrt(k) (their accuracies ±0.1 apart, their
    mean resampled): 0.029 for k = 3, 0.016 for k = 10, so the width goes from about
    2 x 1.96 x sqrt(0.0354² + 0.029²) = 0.179 to 0.152: a ratio near 0.85, not towards 0.

    An interval over the replicate accuracies alone (Student t) would shrink with
    t_{0.975, k-1} / sqrt(k): 4.303 / sqrt(3) = 2.48 to 2.262 / sqrt(10) = 0.715, a ratio
    of 0.29."""
    lo3, hi3 = _interval(_two_sample_draws(3))
    lo10, hi10 = _interval(_two_sample_draws(10))
    w3, w10 = hi3 - lo3, hi10 - lo10
    scan_only = 2 * 1.96 * 0.5 * np.sqrt(0.25 / 50)
    assert w10 > 0.6 * w3
    assert w10 > 0.85 * scan_only and w3 > 0.85 * scan_only
    assert 0.12 < w3 < 0.24 and 0.11 < w10 < 0.2  # the widths above, ± sampling
    # the contrast: a replicate-only Student-t interval of the same replicate accuracies
    def t_width(k):
        acc = np.array([0.5 * 0.5 + 0.5 * (0.4 if r % 2 == 0 else 0.6) for r in range(k)])
        return 2 * stats.t.ppf(0.975, k - 1) * acc.std(ddof=1) / np.sqrt(k)
    assert t_width(10) / t_width(3) < 0.4


def test_resample_replicates_means_over_drawn_replicates():
    """Replicate r scores the constant r on every draw: each draw's value is the mean of
    k replicates drawn with replacement, so it lies in [0, k-1], averages (k-1)/2 and
    takes only multiples of 1/k."""
    n_draws, k = 4000, 4
    draws = {("G", r): {"m": np.full(n_draws, float(r))} for r in range(k)}
    floors = {("G", r): {"m": np.full(n_draws, 10.0)} for r in range(k)}
    boot = _resample_replicates(["G"], list(range(k)), draws, floors, n_draws, np.random.default_rng(0),
                                dataset="d", subject="s")
    s = boot["score"].to_numpy()
    assert s.min() >= 0 and s.max() <= k - 1
    np.testing.assert_allclose(s * k, np.round(s * k), atol=1e-9)
    # var of the mean of k uniform draws from {0..3}: ((k²-1)/12) / k = 1.25 / 4
    assert s.mean() == pytest.approx(1.5, abs=4 * np.sqrt(1.25 / 4 / n_draws))
    assert s.var() == pytest.approx(1.25 / 4, rel=0.1)
    assert (boot["floor"] == 10.0).all()
    assert list(boot.columns) == ["dataset", "subject", "method", "metric", "draw", "score", "floor"]


# ----------------------------------------------------------------------------- 5. the verdict on a phantom


@pytest.fixture(scope="module")
def syn_phantom():
    """A 20x20x10 all-brain subject whose voxels are generator Syn's, with per-voxel noise
    (sigma 40 over S0 600-1400), split into fit and judge blocks; judged by a panel of
    untrained autoencoders for Syn and RandomWM (two replicates each)."""
    from helpers.judges.autoencoder import build_autoencoder
    from helpers.judges.panel import JudgePanel
    from helpers.generators.simulation import simulate

    subject = split_phantom(subject="phantom")
    subject.attenuation = simulate(subject, "Syn", subject.n_voxels, 123, snr="auto", noise="per_voxel")[1]
    specs = {"Syn": "Syn", "RandomWM": "RandomWM"}
    models = {(m, r): build_autoencoder(30, seed=10 * i + r) for i, m in enumerate(specs) for r in range(2)}
    panel = JudgePanel(subject, models, specs, seed=0, snr="auto", n_judge=2000)
    scan = panel.scan_data(panel.real.attenuation)
    return panel, distance_check(panel, scan, dataset="d", subject="s", n_draws=200, seed=0)


def test_the_real_scans_generator_reads_realistic_and_another_does_not(syn_phantom):
    panel, res = syn_phantom
    assert panel.real.n_voxels == panel.subject.n_judge_voxels < panel.subject.n_voxels
    c2st = res.scores[res.scores["metric"] == "c2st_accuracy"].groupby("method")["value"].mean()
    floor = res.floor[res.floor["metric"] == "c2st_accuracy"].groupby("method")["value"].mean()
    # the floor is two halves of the scan: chance, within 5 sd of 0.5 (n = 1984 rows)
    assert abs(floor["Syn"] - 0.5) < 5 * 0.5 / np.sqrt(panel.real.n_voxels)
    assert c2st["Syn"] - floor["Syn"] <= 0.05
    assert realistic("c2st_accuracy", c2st["Syn"], floor["Syn"]) is True
    assert c2st["RandomWM"] > 0.9  # random signals: nothing like a tensor scan
    assert realistic("c2st_accuracy", c2st["RandomWM"], floor["RandomWM"]) is False
    # the same through the pipeline's tables
    table = distance_table(res.scores.assign(dataset="d", subject="s"), res.bootstrap, res.floor)
    verdict = table[table["metric"] == "c2st_accuracy"].set_index("method")["realistic"]
    assert verdict.index.tolist() == ["Syn", "RandomWM"] and verdict.tolist() == [True, False]


def test_the_phantoms_bootstrap_is_paired_and_brackets_the_score(syn_phantom):
    _, res = syn_phantom
    boot = res.bootstrap[res.bootstrap["metric"] == "c2st_accuracy"]
    syn = boot[boot["method"] == "Syn"].set_index("draw")
    rwm = boot[boot["method"] == "RandomWM"].set_index("draw")
    assert len(syn) == len(rwm) == 200
    # the two-sample floor is one property of the scan: its per-replicate rows repeat for
    # every generator (the bootstrap's floor differs by generator only through the
    # replicates each draw resamples, which it shares with that generator's score)
    fl = res.floor[res.floor["metric"] == "c2st_accuracy"].pivot(index="replicate", columns="method", values="value")
    np.testing.assert_array_equal(fl["Syn"], fl["RandomWM"])
    lo, hi = _interval(syn["score"].to_numpy())
    score = res.scores[(res.scores["metric"] == "c2st_accuracy") & (res.scores["method"] == "Syn")]["value"].mean()
    assert lo <= score <= hi and hi - lo < 0.1
    # the verdict's margin interval is the draws' percentiles of runner-up minus best
    verdict = pd.DataFrame({"dataset": ["d"], "metric": ["c2st_accuracy"], "best": ["Syn"], "runner_up": ["RandomWM"],
                            "best_mean": [score], "ci_low": [np.nan], "ci_high": [np.nan], "level": ["replicate"]})
    out = with_distance(verdict, res.bootstrap, res.floor).iloc[0]
    diff = rwm["score"].to_numpy() - syn["score"].to_numpy()
    assert out["ci_low"] == pytest.approx(np.quantile(diff, 0.025))
    assert out["ci_high"] == pytest.approx(np.quantile(diff, 0.975))
    assert out["level"] == "bootstrap" and out["realistic"] is True
    assert out["real_vs_real"] == pytest.approx(res.floor.query("metric == 'c2st_accuracy' and method == 'Syn'")["value"].mean())


def test_the_phantoms_feature_differences_point_at_randomwm(syn_phantom):
    panel, res = syn_phantom
    f = res.features
    assert set(f["method"]) == {"Syn", "RandomWM"}
    # Syn's judge sets and the scan are one distribution: every KS distance is small
    # (two samples of ~2000 and ~4000: the 0.1% critical value is about 1.95 sqrt(1/2000 + 1/4000) = 0.053)
    assert f[f["method"] == "Syn"]["ks"].max() < 0.08
    assert f[f["method"] == "RandomWM"]["ks"].max() > 0.5
    # p_real: one value per judge voxel, higher on average where the generator is unlike the scan
    assert res.p_real["Syn"].shape == res.p_real["RandomWM"].shape == (panel.real.n_voxels,)
    assert res.p_real["RandomWM"].mean() > res.p_real["Syn"].mean() + 0.3


# ----------------------------------------------------------------------------- 12. disagreement


def test_with_disagreement_names_the_other_judges_generator():
    verdict = pd.DataFrame({
        "dataset": ["d", "d", "d", "e"],
        "metric": ["c2st_accuracy", "error_w1", "code_mmd", "c2st_accuracy"],
        "best": ["Syn", "FORCE", "Syn", "RandomWM"],
        "validated": [True, True, False, True],
    })
    out = with_disagreement(verdict)
    notes = dict(zip(zip(out["dataset"], out["metric"]), out["disagrees"]))
    # the two validated judges of dataset d name different generators: each names the other's
    assert "FORCE" in notes[("d", "c2st_accuracy")] and "Syn" not in notes[("d", "c2st_accuracy")]
    assert "error-distribution match" in notes[("d", "c2st_accuracy")]
    assert "Syn" in notes[("d", "error_w1")] and "two-sample classifier" in notes[("d", "error_w1")]
    # an unvalidated row gets nothing, and is never cited by the others
    assert notes[("d", "code_mmd")] == ""
    assert "bottleneck" not in notes[("d", "c2st_accuracy")]
    # alone in its dataset: nothing to disagree with
    assert notes[("e", "c2st_accuracy")] == ""
    # agreement: no note
    agree = with_disagreement(verdict.assign(best="Syn"))
    assert (agree["disagrees"] == "").all()
