"""Tests of helpers.report.figures on hand-written tables: the points drawn are the numbers
written here (or their per-subject means, computed by hand below), the intervals are
hand-computed t-intervals, and the brackets come from hand-written stats rows."""

import ast
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from scipy import stats as sps

from helpers.report import figures as F
from helpers.contract import COLUMNS

# One subject, three replicate models per method (replicate level), values by hand.
# "ball_stick" is a user's generator (plugin).
ONE = {
    "Syn": [0.090, 0.085, 0.100],
    "Sampled": [0.082, 0.081, 0.083],
    "ball_stick": [0.095, 0.097, 0.093],
}
# Three subjects, two replicates each (subject level): per-subject means by hand below.
THREE = {
    "Sampled": {"s1": [4.0, 6.0], "s2": [5.0, 5.0], "s3": [3.0, 7.0]},
    "Syn": {"s1": [8.0, 10.0], "s2": [9.0, 12.0], "s3": [7.0, 8.0]},
}
THREE_MEANS = {"Sampled": [5.0, 5.0, 5.0], "Syn": [9.0, 10.5, 7.5]}


def _table(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


@pytest.fixture
def one():
    return _table([("scan", "sub-01", m, r, "signal_mae", "all", v)
                   for m, values in ONE.items() for r, v in enumerate(values)])


@pytest.fixture
def three():
    return _table([("cohort", s, m, r, "angle_deg", "all", v)
                   for m, subjects in THREE.items() for s, values in subjects.items()
                   for r, v in enumerate(values)])


def _kind(fig, kind, xaxis=None):
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("kind") == kind
            and (xaxis is None or t.xaxis == xaxis)]


def _note(fig, xaxis):
    """The text under one panel."""
    (note,) = [a.text for a in fig.layout.annotations
               if a.name == "note" and a.xref == f"{xaxis} domain"]
    return note


def _stats_rows(rows):
    columns = ["dataset", "metric", "tissue", "method_a", "method_b", "test", "level", "n",
               "mean_diff", "ci_low", "ci_high", "statistic", "p", "p_holm", "stars", "held",
               "n_compared", "note"]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------ metric figures


def test_replicate_level_points_are_every_replicate_value(one):
    fig = F.signal_mae_figure(one)
    units = _kind(fig, "units")
    assert [t.name for t in units] == ["Syn", "Sampled", "ball_stick"]  # first appearance
    for i, t in enumerate(units):
        np.testing.assert_array_equal(t.y, ONE[t.name])
        assert np.all(np.abs(np.asarray(t.x) - i) < 0.5)  # in the method's own column
    assert list(units[0].customdata) == ["sub-01, replicate 0", "sub-01, replicate 1",
                                         "sub-01, replicate 2"]
    assert list(fig.layout.xaxis.ticktext) == ["Syn", "Sampled", "ball_stick"]
    assert _note(fig, "x") == "each point: one replicate model"


def test_subject_level_points_are_subject_means(three):
    fig = F.angle_figure(three)
    units = {t.name: t for t in _kind(fig, "units")}
    for method, means in THREE_MEANS.items():
        np.testing.assert_allclose(units[method].y, means)
    assert list(units["Syn"].customdata) == [f"s{i} (mean of 2 replicates)" for i in (1, 2, 3)]
    assert _note(fig, "x").startswith("each point: a subject")


def test_error_bar_is_the_95_percent_t_interval(one, three):
    fig = F.signal_mae_figure(one)
    syn = next(t for t in _kind(fig, "mean") if t.meta["method"] == "Syn")
    y = np.array(ONE["Syn"])
    # t-interval by hand: mean ± t(0.975, n-1) · sd / sqrt(n), sd with n - 1.
    half = sps.t.ppf(0.975, 2) * math.sqrt(((y - y.mean()) ** 2).sum() / 2) / math.sqrt(3)
    assert syn.y[0] == pytest.approx(0.275 / 3)
    assert syn.error_y.array[0] == pytest.approx(half)
    assert syn.error_y.arrayminus[0] == pytest.approx(min(half, y.mean()))  # stops at zero
    assert syn.error_y.visible
    assert syn.meta["n"] == 3 and syn.meta["level"] == "replicate"
    # Subject level: the interval is over the three subject means 9, 10.5, 7.5 (sd 1.5).
    syn3 = next(t for t in _kind(F.angle_figure(three), "mean") if t.meta["method"] == "Syn")
    assert syn3.y[0] == pytest.approx(9.0)
    assert syn3.error_y.array[0] == pytest.approx(4.302652729911275 * 1.5 / math.sqrt(3))


def test_single_unit_has_no_interval():
    table = _table([("d", "s", "Syn", 0, "fa_mae", "all", 0.2)])
    mean = _kind(F.fa_mae_figure(table), "mean")[0]
    assert mean.y[0] == 0.2 and not mean.error_y.visible


@pytest.mark.parametrize("make", [F.signal_mae_figure, F.fa_mae_figure, F.angle_figure])
def test_every_y_axis_starts_at_zero(make):
    rows = [(d, "s", m, r, metric, "all", 10.0 + r + k)
            for d in ("a", "b") for k, m in enumerate(["Syn", "Sampled"]) for r in range(3)
            for metric in ("signal_mae", "fa_mae", "angle_deg")]
    fig = make(_table(rows))
    for name in ("yaxis", "yaxis2"):
        axis = fig.layout[name]
        assert axis.rangemode == "tozero"
        assert axis.range[0] == 0 and axis.range[1] >= 12.0  # the largest point, 10 + 2
        assert axis.matches is None  # own y-axis per dataset


def test_one_panel_per_dataset_one_legend_entry_per_method():
    rows = [(d, "s", m, r, "fa_mae", "all", 0.1 * (k + 1) + r / 100)
            for d in ("sample", "invivo") for k, m in enumerate(["Syn", "RandomWM"])
            for r in range(2)]
    fig = F.fa_mae_figure(_table(rows))
    assert [a.text for a in fig.layout.annotations][:2] == ["sample", "invivo"]
    assert {t.xaxis for t in _kind(fig, "units")} == {"x", "x2"}
    np.testing.assert_allclose(_kind(fig, "units", "x2")[1].y, [0.2, 0.21])
    assert sum(bool(t.showlegend) for t in fig.data) == 2


def test_builtin_and_plugin_colours(one):
    fig = F.signal_mae_figure(one)
    colours = {t.name: t.marker.color for t in _kind(fig, "units")}
    assert colours["Syn"] == F.METHOD_COLORS["Syn"] == "#0072B2"
    assert colours["Sampled"] == F.METHOD_COLORS["Sampled"]
    assert colours["ball_stick"] not in F.METHOD_COLORS.values()
    many = F.method_colors(["Syn", "a", "b", "Sampled", "c", "a"])
    assert list(many) == ["Syn", "a", "b", "Sampled", "c"]
    plugin = [many[k] for k in ("a", "b", "c")]
    assert len(set(plugin)) == 3 and not set(plugin) & set(F.METHOD_COLORS.values())
    assert F.REAL_COLOR not in plugin
    # Thirty plugins: thirty distinct colours, none a built-in's or the real data's.
    thirty = set(F.method_colors([f"gen{i}" for i in range(30)]).values())
    assert len(thirty) == 30 and not thirty & {*F.METHOD_COLORS.values(), F.REAL_COLOR}


def test_noise_floor_line_on_its_panel(one):
    two = pd.concat([one, one.assign(dataset="other")], ignore_index=True)
    fig = F.signal_mae_figure(two, floor={"scan": 0.081})
    floors = _kind(fig, "floor")
    assert len(floors) == 1 and floors[0].xaxis == "x"  # "other" has no floor
    assert list(floors[0].y) == [0.081, 0.081]
    assert floors[0].line.dash == "dash" and floors[0].name == "noise floor"
    labels = [a for a in fig.layout.annotations if a.name == "noise floor"]
    assert len(labels) == 1 and labels[0].text == "noise floor" and labels[0].y == 0.081


def test_collapsed_replicates_drawn_as_x(one):
    collapsed = pd.DataFrame([("scan", "sub-01", "Syn", 2)],
                             columns=["dataset", "subject", "method", "replicate"])
    fig = F.signal_mae_figure(one, collapsed=collapsed)
    syn = _kind(fig, "units")[0]
    assert list(syn.marker.symbol) == ["circle", "circle", "x"]
    assert syn.customdata[2] == "sub-01, replicate 2 (collapsed)"
    assert list(_kind(fig, "units")[1].marker.symbol) == ["circle"] * 3
    assert [t.name for t in _kind(fig, "legend")] == ["collapsed replicate"]
    assert not _kind(F.signal_mae_figure(one), "legend")


def test_brackets_come_from_hand_written_stats_rows(one):
    stats = _stats_rows([
        # significant: drawn
        ("scan", "signal_mae", "all", "Sampled", "Syn", "welch_t", "replicate", 6, -0.0097,
         -0.02, 0.0, -3.1, 0.004, 0.012, "*", 3, 3, ""),
        ("scan", "signal_mae", "all", "Sampled", "ball_stick", "welch_t", "replicate", 6,
         -0.013, -0.02, -0.01, -9.0, 1e-10, 3e-10, "**", 3, 3, ""),
        # not significant after Holm: no bracket
        ("scan", "signal_mae", "all", "Syn", "ball_stick", "welch_t", "replicate", 6, -0.003,
         -0.01, 0.005, -0.8, 0.4, 0.4, "", 2, 3, ""),
        # another test of the same pairs: not drawn by default
        ("scan", "signal_mae", "all", "Syn", "ball_stick", "mann_whitney", "replicate", 6,
         -0.003, np.nan, np.nan, 1.0, 0.01, 0.03, "*", 2, 3, ""),
        # another metric: not drawn
        ("scan", "fa_mae", "all", "Syn", "ball_stick", "welch_t", "replicate", 6, -0.003,
         -0.01, 0.005, -0.8, 0.001, 0.003, "*", 2, 3, ""),
    ])
    fig = F.signal_mae_figure(one, stats=stats)
    marks = {a.name: a for a in fig.layout.annotations if a.name and " vs " in a.name}
    assert set(marks) == {"Sampled vs Syn", "Sampled vs ball_stick"}
    assert marks["Sampled vs Syn"].text == "*" and marks["Sampled vs ball_stick"].text == "**"
    hover = marks["Sampled vs Syn"].hovertext
    assert "welch_t" in hover and "0.012" in hover and "3/3 replicates" in hover
    assert len(fig.layout.shapes) == 2 * 3  # a bracket is three lines
    # Sampled is column 1, Syn column 0, ball_stick column 2: brackets span those.
    spans = {(s.name, min(s.x0, s.x1), max(s.x0, s.x1)) for s in fig.layout.shapes
             if s.y0 == s.y1}
    assert spans == {("Sampled vs Syn", 0, 1), ("Sampled vs ball_stick", 1, 2)}
    # Above the data, inside a y-range that still starts at zero.
    top = max(s.y1 for s in fig.layout.shapes)
    assert min(s.y0 for s in fig.layout.shapes) > max(max(v) for v in ONE.values())
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] > top
    # Naming the other test draws its rows instead.
    other = F.signal_mae_figure(one, stats=stats, test="mann_whitney")
    assert [a.name for a in other.layout.annotations if a.name and " vs " in a.name] == [
        "Syn vs ball_stick"]
    with pytest.raises(ValueError, match="test 'wilcoxon' is not in stats"):
        F.signal_mae_figure(one, stats=stats, test="wilcoxon")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['p_holm'\]"):
        F.signal_mae_figure(one, stats=stats.drop(columns="p_holm"))


def test_brackets_survive_a_csv_round_trip(one, tmp_path):
    """Empty stars come back from CSV as NaN: no bracket may be labelled 'nan'."""
    stats = _stats_rows([
        ("scan", "signal_mae", "all", "Sampled", "Syn", "welch_t", "replicate", 6, -0.01,
         -0.02, 0.0, -3.1, 0.004, 0.012, "*", 3, 3, ""),
        ("scan", "signal_mae", "all", "Syn", "ball_stick", "welch_t", "replicate", 6, -0.003,
         -0.01, 0.005, -0.8, 0.4, 0.4, "", 2, 3, ""),
    ])
    stats.to_csv(tmp_path / "stats.csv", index=False)
    back = pd.read_csv(tmp_path / "stats.csv")
    assert back["stars"].isna().any()  # the case being tested
    texts = [a.text for a in F.signal_mae_figure(one, stats=back).layout.annotations]
    assert "nan" not in texts and texts.count("*") == 1


def test_far_worse_method_is_shown_and_noted(three):
    worse = three[three["method"] == "Syn"].assign(method="RandomWM",
                                                   value=lambda d: d["value"] * 10)
    fig = F.angle_figure(pd.concat([three, worse], ignore_index=True))
    assert "RandomWM" in [t.name for t in _kind(fig, "units")]
    assert "RandomWM is far worse" in _note(fig, "x")
    assert "far worse" not in _note(F.angle_figure(three), "x")
    assert "far worse" not in _note(F.angle_figure(pd.concat([three, worse]), note_ratio=None),
                                    "x")


def test_metric_figure_errors(one):
    with pytest.raises(ValueError, match="metric='signal_mae' and tissue='WMX'"):
        F.signal_mae_figure(one, tissue="WMX")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['replicate'\]"):
        F.signal_mae_figure(one.drop(columns="replicate"))
    with pytest.raises(ValueError, match=r"collapsed is missing column\(s\) \['replicate'\]"):
        F.signal_mae_figure(one, collapsed=pd.DataFrame(columns=["dataset", "subject", "method"]))


def test_figures_do_not_import_private_stats_helpers():
    tree = ast.parse(Path(F.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            assert node.module != "helpers.judges.stats" or not any(
                a.name.startswith("_") for a in node.names)


# ------------------------------------------------------------------------- tissue figure


def test_tissue_figure_shows_an_empty_tissue_with_a_note():
    # WM and GM have values; CSF has no rows at all (a scan without CSF voxels).
    rows = [("d", "s", m, r, "signal_mae", t, v + r / 100)
            for m, v in (("Syn", 0.1), ("my_gen", 0.2)) for r in range(2)
            for t in ("all", "WM", "GM")]
    fig = F.tissue_figure(_table(rows))
    assert fig.layout.boxmode == "group"
    assert list(fig.layout.xaxis.categoryarray) == ["WM", "GM", "CSF"]
    syn = next(t for t in fig.data if t.name == "Syn")
    np.testing.assert_array_equal(syn.x, ["WM", "WM", "GM", "GM"])
    np.testing.assert_allclose(syn.y, [0.1, 0.11, 0.1, 0.11])
    notes = [a for a in fig.layout.annotations if a.name == "no voxels"]
    assert [(a.text, a.x) for a in notes] == [("no voxels", "CSF")]
    assert any(t.name == "no voxels" and list(t.x) == ["CSF"] for t in fig.data)
    assert fig.layout.yaxis.rangemode == "tozero"
    # NaN values (a metric undefined on an empty class) count as empty too.
    nan_rows = rows + [("d", "s", "Syn", 0, "signal_mae", "CSF", np.nan)]
    assert [a.x for a in F.tissue_figure(_table(nan_rows)).layout.annotations
            if a.name == "no voxels"] == ["CSF"]
    with pytest.raises(ValueError, match="no rows with metric='fa_mae'"):
        F.tissue_figure(_table(rows), "fa_mae")


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_figure_marks_collapsed_and_names_dead_units():
    rows = []
    for m, losses in (("Syn", [1e-3, 1.1e-3, 3.5e-3]), ("ball_stick", [2e-3, 2.1e-3, 1.9e-3])):
        for r, loss in enumerate(losses):
            rows += [("d", "s", m, r, "val_loss", "all", loss),
                     ("d", "s", m, r, "dead_units", "all", 4 if loss > 3e-3 else 1),
                     ("d", "s", m, r, "bottleneck_units", "all", 8),
                     ("d", "s", m, r, "collapsed", "all", float(loss > 3e-3))]
    fig = F.diagnostics_figure(_table(rows))
    syn, plug = _kind(fig, "units")
    np.testing.assert_allclose(syn.y, [1e-3, 1.1e-3, 3.5e-3])
    np.testing.assert_allclose(plug.y, [2e-3, 2.1e-3, 1.9e-3])
    assert list(syn.marker.symbol) == ["circle", "circle", "x"]
    assert "dead bottleneck units 4/8" in syn.customdata[2] and "collapsed" in syn.customdata[2]
    assert "dead bottleneck units 1/8" in syn.customdata[0]
    assert fig.layout.yaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext) == ["Syn", "ball_stick"]
    with pytest.raises(ValueError, match="no 'val_loss' rows"):
        F.diagnostics_figure(_table([r for r in rows if r[4] != "val_loss"]))


# ------------------------------------------------------------------------ training curves


def test_training_curves_one_colour_per_method_replicates_as_lines():
    epochs = np.arange(1, 4)
    runs = {"my_gen": [pd.DataFrame({"epoch": epochs, "loss": 1.0 / epochs + r,
                                     "val_loss": 1.2 / epochs + r}) for r in range(2)],
            "Syn": pd.DataFrame({"epoch": epochs, "loss": 2.0 / epochs})}  # one DataFrame
    fig = F.training_curves_figure(runs)
    assert [(t.name, t.meta["replicate"]) for t in fig.data] == [
        ("my_gen train", 0), ("my_gen validation", 0), ("my_gen train", 1),
        ("my_gen validation", 1), ("Syn train", 0)]
    assert [bool(t.showlegend) for t in fig.data] == [True, True, False, False, True]
    assert [t.line.dash for t in fig.data] == ["solid", "dash", "solid", "dash", "solid"]
    assert len({t.line.color for t in fig.data[:4]}) == 1
    assert fig.data[4].line.color == F.METHOD_COLORS["Syn"] != fig.data[0].line.color
    np.testing.assert_allclose(fig.data[3].y, 1.2 / epochs + 1)
    assert fig.layout.yaxis.type == "log"
    assert "own synthetic data" in fig.layout.title.text and "not across methods" in fig.layout.title.text
    with pytest.raises(ValueError, match=r"histories\['Syn'\]\[0\] is missing.*'loss'"):
        F.training_curves_figure({"Syn": [runs["Syn"].drop(columns="loss")]})
    with pytest.raises(ValueError, match="no history"):
        F.training_curves_figure({"Syn": []})


# -------------------------------------------------------------------------------- density


def test_density_figure_one_panel_per_method_over_real():
    # 2 x 2 bins of width 1 on [0, 2]²: counts per (x bin, y bin) by hand.
    real = ([0.5, 0.5, 1.5, 1.5], [0.5, 0.5, 1.5, 0.5])
    syn = ([0.5, 1.5, np.nan], [1.5, 1.5, 0.2])  # the NaN pair is dropped
    fig = F.density_figure({"real": real, "Syn": syn, "my_gen": ([], [])}, xlabel="MD",
                           ylabel="FA", bins=2, x_range=(0, 2), y_range=(0, 2))
    assert [a.text for a in fig.layout.annotations][:2] == ["Syn", "my_gen"]
    assert [(t.name, t.xaxis) for t in fig.data] == [("Syn", "x"), ("real", "x"),
                                                     ("real", "x2")]
    syn_t, real_t = fig.data[0], fig.data[1]
    # z[j][i]: y bin j, x bin i; density = count / (n · cell area 1).
    np.testing.assert_allclose(real_t.z, [[0.5, 0.25], [0.0, 0.25]])
    np.testing.assert_allclose(syn_t.z, [[0.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(real_t.x, [0.5, 1.5])
    assert real_t.contours.coloring == "lines" and syn_t.contours.coloring == "fill"
    assert syn_t.meta["n"] == 2
    notes = [a for a in fig.layout.annotations if a.name == "no voxels"]
    assert len(notes) == 1 and notes[0].xref == "x2 domain"
    with pytest.raises(ValueError, match=r"samples\['real'\] has 2 x values but 1 y values"):
        F.density_figure({"real": ([1, 2], [1])}, xlabel="x", ylabel="y")


# ---------------------------------------------------------------------------- histograms


def test_histograms_are_densities_on_common_bins(rng):
    groups = {"real": rng.normal(0.5, 0.1, 1000), "Syn": rng.normal(0.6, 0.2, 300),
              "WM": np.append(rng.uniform(0, 1, 50), np.nan), "ball_stick": rng.uniform(0, 1, 9)}
    fig = F.histogram_by_group_figure(groups, xlabel="attenuation", bins=20)
    assert [t.name for t in fig.data] == ["real", "Syn", "WM", "ball_stick"]
    for t in fig.data:
        width = np.diff(t.x)[0]
        assert np.sum(t.y) * width == pytest.approx(1.0)
        np.testing.assert_array_equal(t.x, fig.data[0].x)
    assert [t.line.color for t in fig.data[:3]] == [F.REAL_COLOR, F.METHOD_COLORS["Syn"],
                                                    F.TISSUE_COLORS["WM"]]
    assert fig.data[3].line.color == F.PLUGIN_COLORS[0]


def test_empty_histogram_group_is_an_entry_not_an_error():
    fig = F.histogram_by_group_figure({"WM": [0.2, 0.4, 0.6], "CSF": [], "GM": [np.nan]},
                                      xlabel="FA", bins=2)
    assert [t.name for t in fig.data] == ["WM", "CSF (no voxels)", "GM (no voxels)"]
    np.testing.assert_allclose(fig.data[0].x, [0.3, 0.5])
    out = F.histogram_by_group_figure({"WM": [5.0]}, xlabel="FA", value_range=(0, 1))
    assert [t.name for t in out.data] == ["WM (none in range)"]
    only_empty = F.histogram_by_group_figure({"CSF": []}, xlabel="FA")
    assert [t.name for t in only_empty.data] == ["CSF (no voxels)"]


# -------------------------------------------------------------------------------- slices


def _brain_on(shape, k, n_voxels, fill=np.nan):
    """A volume of ``fill`` with ``n_voxels`` brain voxels (value 1..) on slice ``k``."""
    v = np.full(shape, fill, dtype=float)
    flat = v[:, :, k].ravel()
    flat[:n_voxels] = np.arange(1, n_voxels + 1)
    v[:, :, k] = flat.reshape(shape[:2])
    return v


def test_default_slice_is_the_one_with_most_brain_voxels():
    # 5 slices; brain (finite voxels) mostly on slice 0, a little on slice 3: not the middle.
    vol = _brain_on((4, 4, 5), 0, 10)
    vol[0, 0, 3] = 7.0
    fig = F.error_map_figure({"Syn": vol, "my_gen": vol * 2})
    np.testing.assert_array_equal(fig.data[0].z, vol[:, :, 0].T)
    assert "axial slice 0" in fig.layout.title.text
    # Zero-filled instead of NaN-filled (a raw b0): non-zero voxels are the brain.
    b0 = _brain_on((3, 3, 4), 3, 5, fill=0.0)
    s = F.slices_figure({"b0": b0, "FA": _brain_on((3, 3, 2), 1, 2)})
    np.testing.assert_array_equal(s.data[0].z, b0[:, :, 3].T)  # own slice per shape
    np.testing.assert_array_equal(s.data[1].z, _brain_on((3, 3, 2), 1, 2)[:, :, 1].T)
    # Ties (all slices full, as before): the middle slice.
    full = np.arange(2 * 2 * 5, dtype=float).reshape(2, 2, 5) + 1
    np.testing.assert_array_equal(F.slices_figure({"x": full}).data[0].z, full[:, :, 2].T)
    # An explicit slice still wins.
    np.testing.assert_array_equal(F.error_map_figure({"a": vol}, slice_index=3).data[0].z,
                                  vol[:, :, 3].T)


def test_tissue_overlay_default_slice_follows_the_labels(rng):
    background = rng.uniform(1, 2, (5, 4, 6))  # finite everywhere: no help
    labels = np.zeros((5, 4, 6), dtype=int)
    labels[1:4, 1:3, 5] = 3
    labels[2, 2, 1] = 1
    fig = F.tissue_overlay_figure(background, labels)
    np.testing.assert_array_equal(fig.data[0].z, background[:, :, 5].T)
    assert fig.layout.title.text.endswith("(axial slice 5)")


def test_error_map_shares_colour_scale(rng):
    vols = {m: rng.uniform(0, k + 1, (6, 5, 4)) for k, m in enumerate(["Syn", "RandomWM"])}
    vols["Syn"][0, 0, :] = np.nan
    fig = F.error_map_figure(vols, slice_index=2)
    assert len(fig.data) == 2 and {t.xaxis for t in fig.data} == {"x", "x2"}
    assert all(t.coloraxis == "coloraxis" for t in fig.data)
    np.testing.assert_array_equal(fig.data[1].z, vols["RandomWM"][:, :, 2].T)
    shown = np.concatenate([v[:, :, 2].ravel() for v in vols.values()])
    assert fig.layout.coloraxis.cmin == pytest.approx(np.nanmin(shown))
    assert fig.layout.coloraxis.cmax == pytest.approx(np.nanpercentile(shown, 99))
    assert F.error_map_figure(vols, slice_index=2, zmax=7.0).layout.coloraxis.cmax == 7.0  # given: kept
    with pytest.raises(ValueError, match="outside 0..3"):
        F.error_map_figure(vols, slice_index=4)
    with pytest.raises(ValueError, match="share one shape"):
        F.error_map_figure({"a": np.zeros((2, 2, 2)), "b": np.zeros((2, 2, 3))})
    with pytest.raises(ValueError, match="no finite value"):
        F.error_map_figure({"a": np.full((2, 2, 2), np.nan)})
    with pytest.raises(ValueError, match="must be 3-D"):
        F.slices_figure({"b0": np.zeros((3, 3))})


def test_tissue_overlay(rng):
    background = rng.uniform(0, 1, (5, 4, 3))
    labels = rng.integers(0, 4, (5, 4, 3))
    fig = F.tissue_overlay_figure(background, labels, slice_index=0)
    bg, overlay = fig.data
    np.testing.assert_array_equal(bg.z, background[:, :, 0].T)
    lab = labels[:, :, 0].T
    z = np.asarray(overlay.z, dtype=float)
    assert np.isnan(z[lab == 0]).all()
    np.testing.assert_array_equal(z[lab > 0], lab[lab > 0])
    assert list(overlay.colorbar.ticktext) == ["CSF", "GM", "WM"]
    with pytest.raises(ValueError, match=r"labels has value\(s\) \[7\]"):
        F.tissue_overlay_figure(background, np.full(background.shape, 7))
    with pytest.raises(ValueError, match="one grid"):
        F.tissue_overlay_figure(background, labels[:, :, :2])


# -------------------------------------------------------------------- signals, recon


def test_example_signals(rng):
    bvecs = rng.normal(size=(6, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    signals = {"real": rng.uniform(0, 1, (10, 6)), "Syn": rng.uniform(0, 1, (2, 6))}
    fig = F.example_signals_figure(signals, bvecs=bvecs, n_examples=3)
    real_traces = [t for t in fig.data if t.xaxis == "x"]
    syn_traces = [t for t in fig.data if t.xaxis == "x2"]
    assert len(real_traces) == 3 and len(syn_traces) == 2  # Syn has only 2 voxels
    rows = {tuple(r) for r in signals["real"]}
    assert all(tuple(t.y) in rows for t in real_traces)
    with pytest.raises(ValueError, match="6 directions but there are 5 rows in bvecs"):
        F.example_signals_figure(signals, bvecs=bvecs[:5])


def test_reconstruction_figure(rng):
    real = rng.uniform(0, 1, (20, 8))
    recon = {"my_gen": real + 0.3, "Syn": real + 0.01}
    fig = F.reconstruction_figure(real, recon, n_examples=2, seed=3)
    panel = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.name for t in panel] == ["real", "my_gen", "Syn"]  # the dict's order
    idx = int(fig.layout.annotations[1].text.split()[-1])
    np.testing.assert_array_equal(panel[0].y, real[idx])
    np.testing.assert_array_equal(panel[1].y, recon["my_gen"][idx])
    assert panel[2].line.color == F.METHOD_COLORS["Syn"]
    assert panel[1].line.color == F.PLUGIN_COLORS[0]
    with pytest.raises(ValueError, match=r"recon_by_method\['Syn'\] has shape \(20, 7\)"):
        F.reconstruction_figure(real, {"Syn": real[:, :7]})


# ------------------------------------------------------------------------------ save_html


def test_one_outlying_voxel_does_not_set_the_error_maps_colour_scale():
    """Real error maps: median 0.03, 99th percentile 0.18, one voxel 0.60. The scale must
    follow the bulk, or every map is one colour."""
    typical = np.linspace(0.0, 0.2, 400).reshape(20, 20, 1)  # values 0.2 i / 399
    outlier = typical.copy()
    outlier[0, 0, 0] = 0.6
    fig = F.error_map_figure({"Syn": typical, "Sampled": outlier}, slice_index=0)
    # the 800 values sorted: 0, each 0.2 i / 399 (i >= 1) twice, 0.6; the 99th percentile sits at
    # position 0.99 * 799 = 791.01, between the 792nd and 793rd values, both i = 396
    assert fig.layout.coloraxis.cmax == pytest.approx(0.2 * 396 / 399, rel=1e-9)
    assert fig.layout.coloraxis.cmax < 0.21
    assert "99th percentile" in fig.layout.coloraxis.colorbar.title.text  # the top colour says "at least"
    flat = F.error_map_figure({"Syn": np.full((3, 3, 1), 0.1)}, slice_index=0)  # nothing above: nothing to say
    assert "percentile" not in flat.layout.coloraxis.colorbar.title.text


def test_standalone_pages_have_a_link_back_and_a_caption(tmp_path):
    fig = go.Figure(layout=dict(title="Known answers<br><sup>detail</sup>"))
    page = F.save_html(fig, tmp_path / "s" / "known_answers.html", plotlyjs="../plotly.min.js",
                       caption="Rows: the generator that made the pseudo-scan & its share.",
                       back=("04_results.html", "Back to the report"))
    text = page.read_text()
    assert text.index('<a href="04_results.html">Back to the report</a>') < text.index("Plotly.newPlot")
    assert "Rows: the generator that made the pseudo-scan &amp; its share." in text  # escaped
    assert "<title>Known answers</title>" in text and 'src="../plotly.min.js"' in text
    assert text.count("<html>") == 1 and text.rstrip().endswith("</html>")


def test_save_html_writes_plotlyjs_once_per_folder(tmp_path, one):
    fig = F.signal_mae_figure(one)
    fig.update_layout(title="unique-title-4821")
    first = F.save_html(fig, tmp_path / "out" / "a.html")
    bundle = tmp_path / "out" / "plotly.min.js"
    stamp = bundle.stat().st_mtime_ns
    F.save_html(fig, tmp_path / "out" / "b.html")
    assert first == tmp_path / "out" / "a.html"
    assert sorted(p.name for p in first.parent.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    assert bundle.stat().st_mtime_ns == stamp and bundle.stat().st_size > 1_000_000
    html = first.read_text()
    assert "unique-title-4821" in html and '"name":"ball_stick"' in html
    assert re.search(r'<script[^>]*src="plotly.min.js"', html)
    assert len(html) < 1_500_000 and first.stat().st_size < 100_000


def test_save_html_relative_src_and_embedded(tmp_path):
    fig = go.Figure()
    page = F.save_html(fig, tmp_path / "sub" / "x.html", plotlyjs="../plotly.min.js")
    assert 'src="../plotly.min.js"' in page.read_text()
    assert [p.name for p in page.parent.iterdir()] == ["x.html"]  # the caller provides it
    embedded = F.save_html(fig, tmp_path / "emb" / "y.html", plotlyjs=True)
    assert embedded.stat().st_size > 1_000_000
    assert not re.search(r"<script[^>]*\bsrc=", embedded.read_text())
    with pytest.raises(ValueError, match="plotlyjs must be"):
        F.save_html(fig, tmp_path / "z.html", plotlyjs="plotly")


def test_save_html_failure_leaves_no_page(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(go.Figure, "write_html", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        F.save_html(go.Figure(), tmp_path / "fig.html")
    assert [p.name for p in tmp_path.iterdir()] == ["plotly.min.js"]  # complete, reusable
    with pytest.raises(ValueError, match="plotly.graph_objects.Figure"):
        F.save_html({"data": []}, tmp_path / "x.html")


def test_the_note_under_a_panel_sits_below_turned_tick_labels():
    """Seven generators with long names: the labels are turned and the note goes under them
    (it overlapped them in the merged summary); two short ones stay level."""
    names = ["Syn", "Sampled", "SampleAndMean", "RandomWM", "FORCE", "SubjectFORCE", "Calibrated"]
    many = _table([("scan", "s", m, r, "signal_mae", "all", 0.05 + 0.01 * i) for i, m in enumerate(names) for r in range(2)])
    fig = F.signal_mae_figure(many)
    note = next(a for a in fig.layout.annotations if a.name == "note")
    assert fig.layout.xaxis.tickangle == -40
    assert note.yshift == -int(16 + 7 * len("SampleAndMean") * 0.643)  # under 13 characters turned 40°
    assert fig.layout.margin.b >= -note.yshift + 18
    few = _table([("scan", "s", m, r, "signal_mae", "all", 0.05) for m in ("Syn", "FORCE") for r in range(2)])
    level = F.signal_mae_figure(few)
    assert level.layout.xaxis.tickangle == 0
    assert next(a for a in level.layout.annotations if a.name == "note").yshift == -28
