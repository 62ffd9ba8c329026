"""Tests of helpers.stats: p-values against direct scipy calls, Holm by hand, edge cases."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.stats import compare_methods, stars

COLUMNS = ["dataset", "subject", "method", "metric", "tissue", "value"]

# Five subjects, three methods, hand-picked so that the three pairs differ in strength.
SYN = [0.100, 0.120, 0.090, 0.110, 0.105]
SAMPLED = [0.080, 0.110, 0.085, 0.095, 0.090]
RANDOM = [0.300, 0.350, 0.280, 0.330, 0.310]


def _table(values_by_method, *, dataset="d1", metric="signal_mae", tissue="all"):
    rows = [(dataset, f"s{i}", method, metric, tissue, v)
            for method, values in values_by_method.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def table():
    # Rows deliberately listed RandomWM first: pair order must follow METHODS, not input.
    return _table({"RandomWM": RANDOM, "Syn": SYN, "Sampled": SAMPLED})


def _row(out, a, b, test, **where):
    sel = out[(out["method_a"] == a) & (out["method_b"] == b) & (out["test"] == test)]
    for key, value in where.items():
        sel = sel[sel[key] == value]
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


def test_pairs_follow_methods_order_and_columns(table):
    out = compare_methods(table)
    assert list(out.columns) == ["dataset", "metric", "tissue", "method_a", "method_b",
                                 "test", "level", "n", "mean_diff", "statistic", "p",
                                 "p_holm", "stars", "caveat", "note"]
    pairs = out.loc[out["test"] == "paired_t", ["method_a", "method_b"]].values.tolist()
    assert pairs == [["Syn", "Sampled"], ["Syn", "RandomWM"], ["Sampled", "RandomWM"]]
    assert set(out["level"]) == {"subject"}
    assert (out["caveat"] == "").all()
    assert (out["n"] == 5).all()


def test_p_values_match_direct_scipy_calls(table):
    out = compare_methods(table)
    arrays = {"Syn": SYN, "Sampled": SAMPLED, "RandomWM": RANDOM}
    for a, b in [("Syn", "Sampled"), ("Syn", "RandomWM"), ("Sampled", "RandomWM")]:
        x, y = np.array(arrays[a]), np.array(arrays[b])
        t = sps.ttest_rel(x, y)
        w = sps.wilcoxon(x, y)
        row_t = _row(out, a, b, "paired_t")
        row_w = _row(out, a, b, "wilcoxon")
        assert row_t["statistic"] == pytest.approx(t.statistic, rel=1e-12)
        assert row_t["p"] == pytest.approx(t.pvalue, rel=1e-12)
        assert row_w["statistic"] == pytest.approx(w.statistic, rel=1e-12)
        assert row_w["p"] == pytest.approx(w.pvalue, rel=1e-12)
        assert row_t["mean_diff"] == pytest.approx(np.mean(x - y), rel=1e-12)


def test_holm_matches_hand_computation(table):
    out = compare_methods(table)
    for test in ("paired_t", "wilcoxon"):
        family = out[out["test"] == test]
        p = family["p"].tolist()
        assert len(p) == 3
        expected = _holm_by_hand(p)
        np.testing.assert_allclose(family["p_holm"].to_numpy(), expected, rtol=1e-12)
    # The adjustment must actually do something here, or the check above proves little.
    t = out[out["test"] == "paired_t"]
    assert (t["p_holm"] > t["p"]).any()


def test_holm_family_is_one_dataset_metric_test(table):
    alone = compare_methods(table)
    other = _table({"Syn": [1.0, 2.0, 3.0, 4.0, 5.0], "Sampled": [1.1, 2.3, 2.9, 4.6, 5.2]},
                   dataset="d2")
    other_metric = _table({"Syn": SYN, "Sampled": SAMPLED}, metric="fa_mae")
    both = compare_methods(pd.concat([table, other, other_metric]))
    d1 = both[(both["dataset"] == "d1") & (both["metric"] == "signal_mae")]
    np.testing.assert_allclose(d1["p_holm"].to_numpy(), alone["p_holm"].to_numpy())
    # A family of one pair: Holm leaves p unchanged.
    d2 = both[both["dataset"] == "d2"]
    np.testing.assert_allclose(d2["p_holm"].to_numpy(), d2["p"].to_numpy())


def test_stars_column_follows_thresholds(table):
    out = compare_methods(table)
    for p, s in zip(out["p_holm"], out["stars"]):
        assert s == ("**" if p < 1e-8 else "*" if p < 0.05 else "")
    assert "*" in set(out["stars"])  # Syn vs RandomWM under the t-test


@pytest.mark.parametrize("p, expected", [
    (0.05, ""), (0.0499, "*"), (0.2, ""), (1e-8, "*"), (9.99e-9, "**"), (0.0, "**"),
    (float("nan"), ""), (1.0, ""),
])
def test_stars_scalar_thresholds(p, expected):
    assert stars(p) == expected
    assert isinstance(stars(p), str)


def test_stars_vectorised_and_series():
    np.testing.assert_array_equal(stars(np.array([0.01, 1e-9, 0.5, np.nan])),
                                  ["*", "**", "", ""])
    s = pd.Series([0.001, 0.2], index=["a", "b"])
    out = stars(s)
    assert isinstance(out, pd.Series) and out.to_dict() == {"a": "*", "b": ""}
    assert stars(0.03, alpha=0.01) == ""


def test_stars_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="strong"):
        stars(0.1, alpha=0.05, strong=0.1)


def test_identical_methods_give_nan_not_crash():
    tab = _table({"Syn": SYN, "Sampled": SYN, "RandomWM": RANDOM})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warnings must not occur
        out = compare_methods(tab)
    for test in ("paired_t", "wilcoxon"):
        row = _row(out, "Syn", "Sampled", test)
        assert np.isnan(row["p"]) and np.isnan(row["p_holm"])
        assert row["stars"] == ""
        assert "zero" in row["note"]
        assert row["mean_diff"] == 0
    # The untestable pair leaves the family: m = 2 for the other two pairs.
    t = out[(out["test"] == "paired_t") & out["p"].notna()]
    np.testing.assert_allclose(t["p_holm"], _holm_by_hand(t["p"].tolist()), rtol=1e-12)


def test_constant_difference_leaves_t_undefined_but_runs_wilcoxon():
    shifted = [v + 0.25 for v in SYN]  # differences equal up to rounding only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_methods(_table({"Syn": SYN, "RandomWM": shifted}))
    t = _row(out, "Syn", "RandomWM", "paired_t")
    assert np.isnan(t["p"]) and "variance" in t["note"]
    w = _row(out, "Syn", "RandomWM", "wilcoxon")
    assert w["p"] == pytest.approx(sps.wilcoxon(SYN, shifted).pvalue)


def test_nan_values_are_dropped_pairwise():
    syn = list(SYN)
    syn[2] = np.nan
    out = compare_methods(_table({"Syn": syn, "Sampled": SAMPLED}))
    row = _row(out, "Syn", "Sampled", "paired_t")
    assert row["n"] == 4
    keep = [0, 1, 3, 4]
    expected = sps.ttest_rel([SYN[i] for i in keep], [SAMPLED[i] for i in keep]).pvalue
    assert row["p"] == pytest.approx(expected, rel=1e-12)


def test_tissue_selects_rows():
    wm = _table({"Syn": SYN, "Sampled": SAMPLED}, tissue="WM")
    gm = _table({"Syn": SAMPLED, "Sampled": SYN}, tissue="GM")
    out = compare_methods(pd.concat([wm, gm]), tissue="GM")
    row = _row(out, "Syn", "Sampled", "paired_t")
    assert row["tissue"] == "GM"
    assert row["p"] == pytest.approx(sps.ttest_rel(SAMPLED, SYN).pvalue)
    with pytest.raises(ValueError, match="tissue='CSF'"):
        compare_methods(wm, tissue="CSF")


def _voxels(n_subjects, rng):
    """Per-voxel errors of two subjects, Syn worse than Sampled, rows shuffled."""
    rows = []
    for s in range(n_subjects):
        syn = rng.uniform(0.1, 0.2, 40)
        for method, values in (("Syn", syn), ("Sampled", syn - rng.uniform(0, 0.02, 40))):
            rows += [("d1", f"s{s}", method, "signal_mae", v, x) for v, x in enumerate(values)]
    frame = pd.DataFrame(rows, columns=["dataset", "subject", "method", "metric", "voxel",
                                        "value"])
    frame.loc[3, "value"] = np.nan  # s0, Syn, voxel 3: its pair must go
    return frame.sample(frac=1, random_state=1).reset_index(drop=True)


def test_fewer_than_three_subjects_use_voxels_with_caveat(rng):
    tab = _table({"Syn": SYN[:2], "Sampled": SAMPLED[:2]})
    vox = _voxels(2, rng)
    out = compare_methods(tab, voxels=vox)
    assert set(out["level"]) == {"voxel"}
    assert out["caveat"].str.contains("only 2 subject").all()
    assert out["caveat"].str.contains("not independent").all()
    wide = vox.pivot(index=["subject", "voxel"], columns="method", values="value").dropna()
    row = _row(out, "Syn", "Sampled", "paired_t")
    assert row["n"] == 79
    assert row["p"] == pytest.approx(sps.ttest_rel(wide["Syn"], wide["Sampled"]).pvalue)
    row = _row(out, "Syn", "Sampled", "wilcoxon")
    assert row["p"] == pytest.approx(sps.wilcoxon(wide["Syn"], wide["Sampled"]).pvalue)
    assert row["stars"] == "**"


def test_fewer_than_three_subjects_without_voxels_gives_nan_and_caveat():
    out = compare_methods(_table({"Syn": SYN[:1], "Sampled": SAMPLED[:1]}))
    assert len(out) == 2
    assert out["p"].isna().all() and out["p_holm"].isna().all()
    assert (out["stars"] == "").all()
    assert out["caveat"].str.contains("only 1 subject").all()
    assert out["caveat"].str.contains("no voxel table").all()


def test_levels_are_chosen_per_dataset(table, rng):
    small = _table({"Syn": SYN[:2], "Sampled": SAMPLED[:2]}, dataset="d_small")
    vox = _voxels(2, rng).assign(dataset="d_small")
    out = compare_methods(pd.concat([table, small]), voxels=vox)
    assert set(out.loc[out["dataset"] == "d1", "level"]) == {"subject"}
    assert set(out.loc[out["dataset"] == "d_small", "level"]) == {"voxel"}


def test_missing_column_is_named(table):
    with pytest.raises(ValueError, match=r"metrics is missing column\(s\) \['value'\]"):
        compare_methods(table.drop(columns="value"))


def test_missing_voxel_column_is_named(table, rng):
    with pytest.raises(ValueError, match=r"voxels is missing column\(s\) \['voxel'\]"):
        compare_methods(table, voxels=_voxels(1, rng).drop(columns="voxel"))


def test_unknown_method_lists_allowed(table):
    bad = table.replace({"method": {"Sampled": "Sampeld"}})
    with pytest.raises(ValueError, match=r"unknown method\(s\) \[.Sampeld.\].*allowed"):
        compare_methods(bad)


def test_duplicate_rows_are_refused(table):
    with pytest.raises(ValueError, match="one row per key"):
        compare_methods(pd.concat([table, table.iloc[:1]]))


def test_bad_alpha_is_refused(table):
    with pytest.raises(ValueError, match="alpha"):
        compare_methods(table, alpha=5)
