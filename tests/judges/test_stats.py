"""Tests of helpers.judges.stats: every number against a hand computation or a direct scipy call."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.contract import COLUMNS
from helpers.judges.stats import (
    LEVEL_NOTES, STATS_COLUMNS, VERDICT_COLUMNS, check_table, collapsed_models,
    compare_methods, rank_counts, replicate_summary, stars, verdict,
)


def _table(values, *, dataset="d1", metric="signal_mae", tissue="all"):
    """Tidy table from {method: {subject: [value per replicate]}} (replicate = list index)."""
    rows = [(dataset, subject, method, r, metric, tissue, v)
            for method, by_subject in values.items()
            for subject, replicates in by_subject.items()
            for r, v in enumerate(replicates)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(out, a, b, test):
    sel = out[(out["method_a"] == a) & (out["method_b"] == b) & (out["test"] == test)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def _holm_by_hand(p):
    """Holm step-down: sorted p times (m - i), running maximum, clipped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def _welch_ci_by_hand(x, y, level=0.95):
    x, y = np.asarray(x, float), np.asarray(y, float)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = sps.t.ppf(0.5 + level / 2, df) * se
    diff = x.mean() - y.mean()
    return diff - half, diff + half


def _paired_ci_by_hand(d, level=0.95):
    d = np.asarray(d, float)
    half = sps.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


# One subject, five replicates: "Sampled < Syn in 4/5 replicates" (all but replicate 3).
SAMPLED = [0.081, 0.083, 0.078, 0.095, 0.080]
SYN = [0.086, 0.090, 0.082, 0.079, 0.101]


@pytest.fixture
def one_subject():
    # Sampled first: it is method_a of the pair, whatever the built-in order says. Syn's
    # rows come in reverse: replicates pair by their index, not by row position.
    tab = _table({"Sampled": {"s0": SAMPLED}, "Syn": {"s0": SYN}})
    return pd.concat([tab[tab["method"] == "Sampled"], tab[tab["method"] == "Syn"][::-1]])


# --------------------------------------------------------------------------- replicate level


def test_columns_and_replicate_level(one_subject):
    out = compare_methods(one_subject)
    assert list(out.columns) == list(STATS_COLUMNS)
    assert "caveat" not in out.columns
    assert out[["method_a", "method_b", "test", "level"]].values.tolist() == [
        ["Sampled", "Syn", "welch_t", "replicate"],
        ["Sampled", "Syn", "mann_whitney", "replicate"]]
    assert (out["n"] == 10).all()


def test_welch_matches_scipy_and_hand_interval(one_subject):
    row = _row(compare_methods(one_subject), "Sampled", "Syn", "welch_t")
    res = sps.ttest_ind(SAMPLED, SYN, equal_var=False)
    assert row["statistic"] == pytest.approx(res.statistic, rel=1e-12)
    assert row["p"] == pytest.approx(res.pvalue, rel=1e-12)
    assert row["mean_diff"] == pytest.approx(np.mean(SAMPLED) - np.mean(SYN), rel=1e-12)
    low, high = _welch_ci_by_hand(SAMPLED, SYN)
    assert row["ci_low"] == pytest.approx(low, rel=1e-9)
    assert row["ci_high"] == pytest.approx(high, rel=1e-9)
    ci = res.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_mann_whitney_matches_scipy_and_hand_u(one_subject):
    row = _row(compare_methods(one_subject), "Sampled", "Syn", "mann_whitney")
    # U of method_a: pairs (a_i, b_j) with a_i > b_j, ties counting one half.
    a, b = np.array(SAMPLED)[:, None], np.array(SYN)[None, :]
    u = np.sum(a > b) + 0.5 * np.sum(a == b)
    # by eye: 0.081 beats 0.079; 0.083 beats 0.082, 0.079; 0.078 none; 0.095 four; 0.080 one
    assert u == 1 + 2 + 0 + 4 + 1
    assert row["statistic"] == u
    res = sps.mannwhitneyu(SAMPLED, SYN, alternative="two-sided")
    assert row["p"] == pytest.approx(res.pvalue, rel=1e-12)
    assert row["ci_low"] == _row(compare_methods(one_subject), "Sampled", "Syn",
                                 "welch_t")["ci_low"]


def test_held_counts_same_replicate_pairs(one_subject):
    out = compare_methods(one_subject)
    assert out["held"].tolist() == [4, 4]  # Sampled < Syn in 4/5 replicates
    assert out["n_compared"].tolist() == [5, 5]
    # Drop Syn's replicate 0: only 4 pairs remain, Sampled lower in 3.
    fewer = one_subject[~((one_subject["method"] == "Syn") & (one_subject["replicate"] == 0))]
    out = compare_methods(fewer)
    assert out["held"].tolist() == [3, 3] and out["n_compared"].tolist() == [4, 4]
    assert out["n"].tolist() == [9, 9]


def test_two_subjects_pool_replicate_values():
    tab = _table({"Syn": {"a": [1.0, 2.0], "b": [3.0, 5.0]},
                  "Sampled": {"a": [1.5, 1.0], "b": [2.0, 6.0]}})
    row = _row(compare_methods(tab), "Syn", "Sampled", "welch_t")
    assert row["level"] == "replicate" and row["n"] == 8
    assert row["p"] == pytest.approx(
        sps.ttest_ind([1, 2, 3, 5], [1.5, 1, 2, 6], equal_var=False).pvalue, rel=1e-12)
    assert row["held"] == 2 and row["n_compared"] == 4  # a/0 and b/1
    assert row["mean_diff"] == pytest.approx(0.125)


# --------------------------------------------------------------------------- subject level

# Four subjects, two replicates each; the per-subject means are written out by hand.
SUBJECTS = {
    "Syn": {"s1": [0.10, 0.12], "s2": [0.09, 0.11], "s3": [0.13, 0.13], "s4": [0.08, 0.10]},
    "Sampled": {"s1": [0.09, 0.09], "s2": [0.10, 0.08], "s3": [0.11, 0.12], "s4": [0.09, 0.08]},
    "RandomWM": {"s1": [0.30, 0.32], "s2": [0.35, 0.33], "s3": [0.31, 0.29], "s4": [0.30, 0.36]},
}
MEANS = {"Syn": [0.11, 0.10, 0.13, 0.09], "Sampled": [0.09, 0.09, 0.115, 0.085],
         "RandomWM": [0.31, 0.34, 0.30, 0.33]}


@pytest.fixture
def subjects():
    return _table(SUBJECTS)


def test_subject_level_tests_on_replicate_means(subjects):
    out = compare_methods(subjects)
    assert set(out["level"]) == {"subject"}
    assert out.loc[out["test"] == "paired_t", ["method_a", "method_b"]].values.tolist() == [
        ["Syn", "Sampled"], ["Syn", "RandomWM"], ["Sampled", "RandomWM"]]
    for a, b in [("Syn", "Sampled"), ("Syn", "RandomWM"), ("Sampled", "RandomWM")]:
        x, y = np.array(MEANS[a]), np.array(MEANS[b])
        t, w = _row(out, a, b, "paired_t"), _row(out, a, b, "wilcoxon")
        assert t["p"] == pytest.approx(sps.ttest_rel(x, y).pvalue, rel=1e-9)
        assert t["statistic"] == pytest.approx(sps.ttest_rel(x, y).statistic, rel=1e-9)
        assert w["p"] == pytest.approx(sps.wilcoxon(x, y).pvalue, rel=1e-9)
        assert t["mean_diff"] == pytest.approx(np.mean(x - y), rel=1e-9)
        assert t["n"] == 4 and t["n_compared"] == 4


def test_paired_interval_by_hand(subjects):
    row = _row(compare_methods(subjects), "Syn", "Sampled", "paired_t")
    d = [0.02, 0.01, 0.015, 0.005]
    low, high = _paired_ci_by_hand(d)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert row["held"] == 0  # Syn is above Sampled in every subject
    assert _row(compare_methods(subjects), "Syn", "RandomWM", "paired_t")["held"] == 4


def test_holm_by_hand(subjects):
    assert _holm_by_hand([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = compare_methods(subjects)
    for test in ("paired_t", "wilcoxon"):
        family = out[out["test"] == test]
        np.testing.assert_allclose(family["p_holm"], _holm_by_hand(family["p"].tolist()),
                                   rtol=1e-12)
    t = out[out["test"] == "paired_t"]
    assert (t["p_holm"] > t["p"]).any()  # the correction did something
    for p, s in zip(out["p_holm"], out["stars"]):
        assert s == ("**" if p < 1e-8 else "*" if p < 0.05 else "")


def test_holm_family_is_one_dataset_metric_test(subjects, one_subject):
    alone = compare_methods(subjects)
    other_metric = subjects.assign(metric="fa_mae", value=subjects["value"] * 2)
    both = compare_methods(pd.concat([subjects, other_metric, one_subject.assign(dataset="d2")]))
    d1 = both[(both["dataset"] == "d1") & (both["metric"] == "signal_mae")]
    np.testing.assert_allclose(d1["p_holm"], alone["p_holm"])
    d2 = both[both["dataset"] == "d2"]  # a family of one pair: Holm leaves p unchanged
    np.testing.assert_allclose(d2["p_holm"], d2["p"])
    assert set(d2["level"]) == {"replicate"} and set(d1["level"]) == {"subject"}


# --------------------------------------------------------------------------- degenerate cases


def test_one_replicate_gives_nan_with_note():
    tab = _table({"Syn": {"s0": [0.1]}, "Sampled": {"s0": [0.2]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(tab)
    assert out["p"].isna().all() and out["p_holm"].isna().all() and out["ci_low"].isna().all()
    assert out["note"].str.contains("at least 2").all()
    assert (out["stars"] == "").all()
    assert out["mean_diff"].iloc[0] == pytest.approx(-0.1)
    assert out["held"].tolist() == [1, 1]


def test_all_equal_values_give_nan_with_note():
    tab = _table({"Syn": {"s0": [0.1, 0.1, 0.1]}, "Sampled": {"s0": [0.1, 0.1, 0.1]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(tab)
    assert out["p"].isna().all()
    assert out["note"].str.contains("equal").all()
    assert out["held"].tolist() == [0, 0] and out["mean_diff"].tolist() == [0, 0]


def test_constant_but_different_replicates_run_mann_whitney_only():
    tab = _table({"Syn": {"s0": [0.1, 0.1, 0.1]}, "Sampled": {"s0": [0.2, 0.2, 0.2]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(tab)
    welch = _row(out, "Syn", "Sampled", "welch_t")
    assert np.isnan(welch["p"]) and "zero variance" in welch["note"]
    mw = _row(out, "Syn", "Sampled", "mann_whitney")
    assert mw["statistic"] == 0  # no Syn value above a Sampled one
    assert mw["p"] == pytest.approx(sps.mannwhitneyu([.1] * 3, [.2] * 3).pvalue)


def test_identical_subject_means_give_nan_not_crash(subjects):
    same = subjects[subjects["method"] != "Sampled"]
    same = pd.concat([same, same[same["method"] == "Syn"].assign(method="Sampled")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(same)
    for test in ("paired_t", "wilcoxon"):
        row = _row(out, "Syn", "Sampled", test)
        assert np.isnan(row["p"]) and "zero" in row["note"]
    t = out[(out["test"] == "paired_t") & out["p"].notna()]
    np.testing.assert_allclose(t["p_holm"], _holm_by_hand(t["p"].tolist()), rtol=1e-12)


def test_constant_subject_difference_leaves_t_undefined(subjects):
    syn = subjects[subjects["method"] == "Syn"]
    tab = pd.concat([syn, syn.assign(method="RandomWM", value=syn["value"] + 0.25)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(tab)
    t = _row(out, "Syn", "RandomWM", "paired_t")
    assert np.isnan(t["p"]) and np.isnan(t["ci_low"]) and "variance" in t["note"]
    w = _row(out, "Syn", "RandomWM", "wilcoxon")
    assert w["p"] == pytest.approx(sps.wilcoxon(MEANS["Syn"],
                                                [m + 0.25 for m in MEANS["Syn"]]).pvalue)


def test_nan_values_are_left_out(subjects):
    tab = subjects.copy()
    tab.loc[(tab["method"] == "Syn") & (tab["subject"] == "s1") & (tab["replicate"] == 1),
            "value"] = np.nan  # s1's Syn mean becomes 0.10
    row = _row(compare_methods(tab), "Syn", "Sampled", "paired_t")
    expected = sps.ttest_rel([0.10, 0.10, 0.13, 0.09], MEANS["Sampled"])
    assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)


# --------------------------------------------------------------------------- input handling


def test_method_order_is_first_appearance_and_plugins_pass():
    tab = _table({"ball_stick": {"s0": [0.2, 0.3]}, "Syn": {"s0": [0.1, 0.2]},
                  "Sampled": {"s0": [0.3, 0.1]}})
    out = compare_methods(tab)
    pairs = out.loc[out["test"] == "welch_t", ["method_a", "method_b"]].values.tolist()
    assert pairs == [["ball_stick", "Syn"], ["ball_stick", "Sampled"], ["Syn", "Sampled"]]


def test_tissue_selects_rows(one_subject):
    gm = one_subject.assign(tissue="GM", value=one_subject["value"][::-1].to_numpy())
    out = compare_methods(pd.concat([one_subject, gm]), tissue="GM")
    assert set(out["tissue"]) == {"GM"}
    g = gm.set_index(["method", "replicate"])["value"]
    row = _row(out, "Sampled", "Syn", "welch_t")
    assert row["p"] == pytest.approx(sps.ttest_ind(
        g["Sampled"].sort_index(), g["Syn"].sort_index(), equal_var=False).pvalue)
    with pytest.raises(ValueError, match="tissue='CSF'"):
        compare_methods(one_subject, tissue="CSF")


def test_errors_are_named(one_subject):
    with pytest.raises(ValueError, match=r"metrics is missing column\(s\) \['replicate'\]"):
        compare_methods(one_subject.drop(columns="replicate"))
    with pytest.raises(ValueError, match="one row per key"):
        compare_methods(pd.concat([one_subject, one_subject.iloc[:1]]))
    with pytest.raises(ValueError, match="alpha"):
        compare_methods(one_subject, alpha=5)
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        check_table([1, 2], ["a"], "stats")
    check_table(one_subject, COLUMNS, "metrics")  # extra columns would be fine too


def test_level_notes_cover_both_levels():
    assert set(LEVEL_NOTES) == {"subject", "replicate"}
    assert "voxel" in LEVEL_NOTES["replicate"]


@pytest.mark.parametrize("p, expected", [
    (0.05, ""), (0.0499, "*"), (1e-8, "*"), (9.99e-9, "**"), (float("nan"), ""), (1.0, ""),
])
def test_stars_thresholds(p, expected):
    assert stars(p) == expected


def test_stars_vectorised_and_bad_thresholds():
    np.testing.assert_array_equal(stars(np.array([0.01, 1e-9, 0.5])), ["*", "**", ""])
    s = stars(pd.Series([0.001, 0.2], index=["a", "b"]))
    assert s.to_dict() == {"a": "*", "b": ""}
    with pytest.raises(ValueError, match="strong"):
        stars(0.1, alpha=0.05, strong=0.1)


# --------------------------------------------------------------------------- summary


def test_replicate_summary_by_hand():
    tab = _table({"Syn": {"s0": [1.0, 2.0, 6.0], "s1": [4.0]}, "Sampled": {"s0": [2.0, np.nan]}})
    out = replicate_summary(tab)
    assert list(out.columns) == ["dataset", "subject", "method", "metric", "tissue", "mean",
                                 "sd", "n_replicates"]
    assert out[["subject", "method", "n_replicates"]].values.tolist() == [
        ["s0", "Syn", 3], ["s1", "Syn", 1], ["s0", "Sampled", 1]]
    assert out["mean"].tolist() == [3.0, 4.0, 2.0]
    assert out["sd"].iloc[0] == pytest.approx(math.sqrt(((1 - 3) ** 2 + 1 + 9) / 2))
    assert out["sd"].iloc[1:].isna().all()  # one replicate: no sd


# --------------------------------------------------------------------------- ranks

# Three methods, four replicates; ranks by eye (1 = lowest):
#   r0: A 1, B 2, C 3    r1: B 1, A 2, C 3    r2: B 1, A 2, C 3    r3: C 1, A and B tie at 2
A, B, C = [1.0, 5.0, 2.0, 3.0], [2.0, 4.0, 1.0, 3.0], [3.0, 6.0, 3.0, 1.0]


@pytest.fixture
def ranked():
    tab = _table({"A": {"s0": A + [0.5]}, "B": {"s0": B + [9.0]}, "C": {"s0": C}})
    return tab  # replicate 4 lacks C: not a complete unit


def test_rank_counts_by_hand(ranked):
    out = rank_counts(ranked)
    assert list(out.columns) == ["dataset", "metric", "method", "rank", "count", "n"]
    counts = {(m, r): c for m, r, c in out[["method", "rank", "count"]].values.tolist()}
    assert counts == {("A", 1): 1, ("A", 2): 3, ("A", 3): 0,
                      ("B", 1): 2, ("B", 2): 2, ("B", 3): 0,
                      ("C", 1): 1, ("C", 2): 0, ("C", 3): 3}
    assert (out["n"] == 4).all()


def test_rank_counts_skip_nan_units(ranked):
    tab = ranked.copy()
    tab.loc[(tab["method"] == "C") & (tab["replicate"] == 0), "value"] = np.nan
    out = rank_counts(tab)
    assert (out["n"] == 3).all()
    assert out.loc[(out["method"] == "A") & (out["rank"] == 1), "count"].item() == 0


# --------------------------------------------------------------------------- verdict


def test_verdict_one_subject_by_hand(ranked):
    v = verdict(ranked.assign(metric="angle_deg"))
    assert list(v.columns) == list(VERDICT_COLUMNS)
    row = v.iloc[0]
    # Means over replicates: A (1+5+2+3+0.5)/5 = 2.3, B (2+4+1+3+9)/5 = 3.8, C 13/4 = 3.25.
    assert (row["best"], row["runner_up"]) == ("A", "C")
    assert row["best_mean"] == pytest.approx(2.3) and row["runner_mean"] == pytest.approx(3.25)
    assert row["margin"] == pytest.approx(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        _welch_ci_by_hand(C, A + [0.5]), rel=1e-9)
    assert row["level"] == "replicate" and row["n_units"] == 9
    assert (row["rank_held"], row["rank_n"]) == (1, 4)  # A lowest only in r0
    assert np.isnan(row["floor"]) and np.isnan(row["ratio_to_floor"])


def test_verdict_subjects_paired_interval(subjects):
    v = verdict(subjects, floors={"d1": 0.05})
    row = v.iloc[0]
    # Means of subject means: Sampled 0.095, Syn 0.1075, RandomWM 0.32.
    assert (row["best"], row["runner_up"]) == ("Sampled", "Syn")
    assert row["margin"] == pytest.approx(0.0125)
    low, high = _paired_ci_by_hand([0.02, 0.01, 0.015, 0.005])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert row["level"] == "subject" and row["n_units"] == 4
    # Units (subject, replicate) where Sampled is lowest of the three: by eye from SUBJECTS.
    held = sum(SUBJECTS["Sampled"][s][r] < min(SUBJECTS["Syn"][s][r], SUBJECTS["RandomWM"][s][r])
               for s in SUBJECTS["Syn"] for r in (0, 1))
    assert held == 6  # not s2/r0 (0.10 > 0.09) nor s4/r0 (0.09 > 0.08)
    assert (row["rank_held"], row["rank_n"]) == (6, 8)
    assert row["floor"] == 0.05 and row["ratio_to_floor"] == pytest.approx(0.095 / 0.05)


def test_floor_only_on_signal_mae(subjects):
    v = verdict(pd.concat([subjects, subjects.assign(metric="fa_mae")]), floors={"d1": 0.05})
    assert v["metric"].tolist() == ["signal_mae", "fa_mae"]
    assert v["floor"].iloc[0] == 0.05 and np.isnan(v["floor"].iloc[1])
    assert np.isnan(v["ratio_to_floor"].iloc[1])
    assert np.isnan(verdict(subjects, floors={"other": 0.05})["floor"].iloc[0])
    for bad in (0, -1.0, "x"):
        with pytest.raises(ValueError, match="floors"):
            verdict(subjects, floors={"d1": bad})


# A collapsed Syn replicate (r3) makes Sampled look best; without it Syn is best.
COLLAPSE = {"Syn": {"s0": [0.080, 0.081, 0.079, 0.200]},
            "Sampled": {"s0": [0.085, 0.084, 0.086, 0.085]}}


def test_exclude_collapsed_replicate_changes_verdict():
    tab = _table(COLLAPSE)
    before = verdict(tab).iloc[0]
    assert before["best"] == "Sampled" and before["best_mean"] == pytest.approx(0.085)
    assert before["runner_mean"] == pytest.approx(0.110)  # (0.08+0.081+0.079+0.2)/4
    assert (before["rank_held"], before["rank_n"]) == (1, 4)
    diagnostics = pd.DataFrame(
        [("d1", "s0", m, r, "collapsed", "all", float(m == "Syn" and r == 3))
         for m in ("Syn", "Sampled") for r in range(4)], columns=list(COLUMNS))
    exclude = collapsed_models(diagnostics)
    assert exclude.values.tolist() == [["d1", "s0", "Syn", 3]]
    after = verdict(tab, exclude=exclude).iloc[0]
    assert (after["best"], after["runner_up"]) == ("Syn", "Sampled")
    assert after["best_mean"] == pytest.approx(0.080) and after["margin"] == pytest.approx(0.005)
    assert (after["rank_held"], after["rank_n"]) == (3, 3)  # r3 is no longer complete
    assert after["n_units"] == 7
    assert (after["ci_low"], after["ci_high"]) == pytest.approx(
        _welch_ci_by_hand(COLLAPSE["Sampled"]["s0"], [0.080, 0.081, 0.079]), rel=1e-9)
    assert "1 excluded model" in after["note"]


def test_exclude_matches_csv_types():
    tab = _table(COLLAPSE)
    exclude = pd.DataFrame({"dataset": ["d1"], "subject": ["s0"], "method": ["Syn"],
                            "replicate": [3.0], "value": [1]})  # as read back from a CSV
    assert verdict(tab, exclude=exclude).iloc[0]["best"] == "Syn"
    with pytest.raises(ValueError, match=r"exclude is missing column\(s\) \['replicate'\]"):
        verdict(tab, exclude=exclude.drop(columns="replicate"))


def test_verdict_one_method():
    v = verdict(_table({"Syn": {"s0": [0.1, 0.3]}})).iloc[0]
    assert v["best"] == "Syn" and v["best_mean"] == pytest.approx(0.2)
    assert v["runner_up"] == "" and np.isnan(v["margin"]) and np.isnan(v["ci_low"])
    assert "only one method" in v["note"]
    assert (v["rank_held"], v["rank_n"]) == (2, 2)


def test_verdict_one_replicate_has_no_interval():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = verdict(_table({"Syn": {"s0": [0.1]}, "Sampled": {"s0": [0.2]}})).iloc[0]
    assert v["best"] == "Syn" and v["margin"] == pytest.approx(0.1)
    assert np.isnan(v["ci_low"]) and "no interval" in v["note"]


def test_verdict_empty_tissue_says_so():
    tab = _table({"Syn": {"s0": [np.nan, np.nan]}, "Sampled": {"s0": [np.nan, np.nan]}},
                 tissue="CSF")
    v = verdict(tab, tissue="CSF").iloc[0]
    assert v["best"] == "" and np.isnan(v["best_mean"]) and v["note"] == "no finite values"
    assert compare_methods(tab, tissue="CSF").empty
    assert rank_counts(tab, tissue="CSF").empty
