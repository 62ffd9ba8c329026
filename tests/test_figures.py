"""Tests of helpers.figures: panels, axes, traces carrying the input numbers, marks, HTML."""

import base64
import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from helpers import METHODS
from helpers import figures as F
from helpers.stats import compare_methods

COLUMNS = ["dataset", "subject", "method", "metric", "tissue", "value"]
# Angular deviation (degrees) per subject: Syn vs Sampled clearly apart, Sampled vs
# SampleAndMean differing by symmetric noise only, RandomWM far worse.
ANGLE = {
    "Syn": [20.0, 22.0, 19.0, 21.0, 20.5],
    "Sampled": [15.0, 16.5, 14.0, 15.8, 15.1],
    "SampleAndMean": [15.2, 16.2, 14.3, 15.5, 15.2],
    "RandomWM": [44.0, 47.0, 43.5, 46.0, 45.0],
}


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def metrics(rng):
    rows = []
    for dataset, scale in (("sample", 1.0), ("hcp", 0.1)):
        for i in range(5):
            subject = f"{dataset}-{i}"
            for m, method in enumerate(METHODS):
                for tissue in ("all", "WM", "GM", "CSF"):
                    rows.append((dataset, subject, method, "signal_mae", tissue,
                                 scale * (0.05 + 0.01 * m) + rng.uniform(0, 0.002)))
                    rows.append((dataset, subject, method, "fa_mae", tissue,
                                 0.1 + 0.02 * m + rng.uniform(0, 0.01)))
                rows.append((dataset, subject, method, "angle_deg", "all",
                             ANGLE[method][i] + (5.0 if dataset == "hcp" else 0.0)))
    return pd.DataFrame(rows, columns=COLUMNS)


def _values(metrics, dataset, method, metric="signal_mae", tissue="all"):
    sel = metrics[(metrics["dataset"] == dataset) & (metrics["method"] == method)
                  & (metrics["metric"] == metric) & (metrics["tissue"] == tissue)]
    return sel["value"].to_numpy()


def _traces(fig, xaxis):
    return [t for t in fig.data if t.xaxis == xaxis]


@pytest.mark.parametrize("make, metric", [(F.signal_mae_figure, "signal_mae"),
                                          (F.fa_mae_figure, "fa_mae"),
                                          (F.angle_figure, "angle_deg")])
def test_metric_figures_one_panel_per_dataset_with_own_y_axis(metrics, make, metric):
    fig = make(metrics)
    assert isinstance(fig, go.Figure)
    assert {t.xaxis for t in fig.data} == {"x", "x2"}  # two datasets, two panels
    assert "xaxis3" not in fig.layout.to_plotly_json()
    assert fig.layout.yaxis2.matches is None and fig.layout.yaxis.matches is None
    assert [a.text for a in fig.layout.annotations][:2] == ["sample", "hcp"]
    for xaxis, dataset in (("x", "sample"), ("x2", "hcp")):
        traces = _traces(fig, xaxis)
        assert [t.name for t in traces] == list(METHODS)
        for t in traces:
            np.testing.assert_array_equal(t.y, _values(metrics, dataset, t.name, metric))
            assert t.marker.color == F.METHOD_COLORS[t.name]
    # One legend entry per method, not one per panel.
    assert sum(bool(t.showlegend) for t in fig.data) == len(METHODS)


def test_metric_figure_without_rows_raises(metrics):
    with pytest.raises(ValueError, match="metric='signal_mae' and tissue='WMX'"):
        F.signal_mae_figure(metrics, tissue="WMX")


def test_metric_figure_names_missing_column(metrics):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['subject'\]"):
        F.signal_mae_figure(metrics.drop(columns="subject"))


def test_angle_figure_marks_significant_pair_only(metrics):
    stats = compare_methods(metrics)
    t = stats[(stats["metric"] == "angle_deg") & (stats["test"] == "paired_t")
              & (stats["dataset"] == "sample")].set_index(["method_a", "method_b"])
    # Premises of the test, from the numbers above.
    assert t.loc[("Syn", "Sampled"), "stars"] != ""
    assert t.loc[("Sampled", "SampleAndMean"), "stars"] == ""
    fig = F.angle_figure(metrics, stats)
    marks = {(a.xref, a.name): a.text for a in fig.layout.annotations if a.name
             and " vs " in a.name}
    assert marks[("x", "Syn vs Sampled")] == t.loc[("Syn", "Sampled"), "stars"]
    assert marks[("x2", "Syn vs Sampled")] in ("*", "**")
    assert ("x", "Sampled vs SampleAndMean") not in marks
    assert ("x2", "Sampled vs SampleAndMean") not in marks
    n_significant = int((stats.query("metric == 'angle_deg' and test == 'paired_t'")
                         ["stars"] != "").sum())
    assert len(marks) == n_significant
    assert len(fig.layout.shapes) == 3 * n_significant  # a bracket is three lines
    # Brackets sit above the data and the axis range makes room for them.
    top = max(s.y1 for s in fig.layout.shapes if s.yref == "y")
    assert top > max(_values(metrics, "sample", "RandomWM", "angle_deg"))
    assert fig.layout.yaxis.range[1] > top


def test_angle_figure_shows_and_notes_far_worse_method(metrics):
    fig = F.angle_figure(metrics)
    assert "RandomWM" in [t.name for t in fig.data]
    notes = [a.text for a in fig.layout.annotations if a.name == "note"]
    assert notes and all("RandomWM is far worse" in n for n in notes)
    assert not [a for a in F.angle_figure(metrics, note_ratio=None).layout.annotations
                if a.name == "note"]


def test_angle_figure_wilcoxon_has_no_star_with_five_subjects(metrics):
    # The exact Wilcoxon p for 5 pairs is at least 0.0625: no pair can be marked.
    fig = F.angle_figure(metrics, compare_methods(metrics), test="wilcoxon")
    assert not [a for a in fig.layout.annotations if a.name and " vs " in a.name]
    assert not fig.layout.shapes


def test_angle_figure_shows_voxel_level_caveat(metrics):
    stats = compare_methods(metrics)
    stats.loc[stats["dataset"] == "sample", "caveat"] = "only 1 subject(s): voxel-level"
    fig = F.angle_figure(metrics, stats)
    notes = [a for a in fig.layout.annotations if a.name == "note"]
    assert any("voxel-level" in a.text and a.xref == "x domain" for a in notes)
    with pytest.raises(ValueError, match="test must be"):
        F.angle_figure(metrics, stats, test="t")


def test_tissue_figure_groups_by_tissue(metrics):
    fig = F.tissue_figure(metrics, "fa_mae")
    assert fig.layout.boxmode == "group"
    assert fig.layout.yaxis2.matches is None
    traces = _traces(fig, "x2")
    assert [t.name for t in traces] == list(METHODS)
    sel = metrics[(metrics["dataset"] == "hcp") & (metrics["method"] == "Sampled")
                  & (metrics["metric"] == "fa_mae") & metrics["tissue"].isin(["WM", "GM", "CSF"])]
    t = traces[1]
    np.testing.assert_array_equal(t.x, sel["tissue"].to_numpy())
    np.testing.assert_array_equal(t.y, sel["value"].to_numpy())
    assert list(fig.layout.xaxis.categoryarray) == ["WM", "GM", "CSF"]


def test_training_curves(rng):
    epochs = np.arange(1, 6)
    histories = {m: pd.DataFrame({"epoch": epochs, "loss": 1.0 / epochs + k,
                                  "val_loss": 1.2 / epochs + k})
                 for k, m in enumerate(["RandomWM", "Syn"])}
    fig = F.training_curves_figure(histories)
    assert [t.name for t in fig.data] == ["Syn train", "Syn validation",
                                          "RandomWM train", "RandomWM validation"]
    assert [t.line.dash for t in fig.data] == ["solid", "dash"] * 2
    assert fig.data[0].line.color == fig.data[1].line.color == F.METHOD_COLORS["Syn"]
    np.testing.assert_array_equal(fig.data[3].y, histories["RandomWM"]["val_loss"])
    assert fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="allowed"):
        F.training_curves_figure({"Synth": histories["Syn"]})
    with pytest.raises(ValueError, match=r"histories\['Syn'\] is missing.*'loss'"):
        F.training_curves_figure({"Syn": histories["Syn"].drop(columns="loss")})


def test_error_map_shares_colour_scale(rng):
    vols = {m: rng.uniform(0, k + 1, (6, 5, 4)) for k, m in enumerate(["Syn", "RandomWM"])}
    vols["Syn"][0, 0, :] = np.nan
    fig = F.error_map_figure(vols)
    assert len(fig.data) == 2 and {t.xaxis for t in fig.data} == {"x", "x2"}
    assert all(t.coloraxis == "coloraxis" for t in fig.data)
    np.testing.assert_array_equal(fig.data[1].z, vols["RandomWM"][:, :, 2].T)
    shown = np.concatenate([v[:, :, 2].ravel() for v in vols.values()])
    assert fig.layout.coloraxis.cmin == pytest.approx(np.nanmin(shown))
    assert fig.layout.coloraxis.cmax == pytest.approx(np.nanmax(shown))
    np.testing.assert_array_equal(F.error_map_figure(vols, slice_index=0).data[0].z,
                                  vols["Syn"][:, :, 0].T)
    with pytest.raises(ValueError, match="outside 0..3"):
        F.error_map_figure(vols, slice_index=4)
    with pytest.raises(ValueError, match="share one shape"):
        F.error_map_figure({"a": np.zeros((2, 2, 2)), "b": np.zeros((2, 2, 3))})
    with pytest.raises(ValueError, match="no finite value"):
        F.error_map_figure({"a": np.full((2, 2, 2), np.nan)})


def test_slices_figure(rng):
    vols = {"b0": rng.uniform(100, 200, (4, 4, 3)), "FA": rng.uniform(0, 1, (4, 4, 5))}
    fig = F.slices_figure(vols)
    assert [t.name for t in fig.data] == ["b0", "FA"]
    np.testing.assert_array_equal(fig.data[0].z, vols["b0"][:, :, 1].T)
    np.testing.assert_array_equal(fig.data[1].z, vols["FA"][:, :, 2].T)
    assert fig.data[0].colorbar.x != fig.data[1].colorbar.x
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
    assert 0 < overlay.opacity < 1
    with pytest.raises(ValueError, match=r"labels has value\(s\) \[7\]"):
        F.tissue_overlay_figure(background, np.full(background.shape, 7))
    with pytest.raises(ValueError, match="one grid"):
        F.tissue_overlay_figure(background, labels[:, :, :2])


def test_histograms_are_densities_on_common_bins(rng):
    groups = {"real": rng.normal(0.5, 0.1, 1000), "Syn": rng.normal(0.6, 0.2, 300),
              "WM": np.append(rng.uniform(0, 1, 50), np.nan)}
    fig = F.histogram_by_group_figure(groups, xlabel="attenuation", bins=20)
    assert [t.name for t in fig.data] == ["real", "Syn", "WM"]
    for t in fig.data:
        width = np.diff(t.x)[0]
        assert np.sum(t.y) * width == pytest.approx(1.0)
        np.testing.assert_array_equal(t.x, fig.data[0].x)
    assert [t.line.color for t in fig.data] == [F.REAL_COLOR, F.METHOD_COLORS["Syn"],
                                                F.TISSUE_COLORS["WM"]]
    with pytest.raises(ValueError, match="'empty'.*no finite"):
        F.histogram_by_group_figure({"empty": [np.nan]}, xlabel="x")


def test_example_signals(rng):
    bvecs = rng.normal(size=(6, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    signals = {"real": rng.uniform(0, 1, (10, 6)), "Syn": rng.uniform(0, 1, (2, 6))}
    fig = F.example_signals_figure(signals, bvecs=bvecs, n_examples=3)
    real_traces, syn_traces = _traces(fig, "x"), _traces(fig, "x2")
    assert len(real_traces) == 3 and len(syn_traces) == 2  # Syn has only 2 voxels
    rows = {tuple(r) for r in signals["real"]}
    assert all(tuple(t.y) in rows for t in real_traces)
    np.testing.assert_array_equal(real_traces[0].x, np.arange(6))
    with pytest.raises(ValueError, match="6 directions but there are 5 rows in bvecs"):
        F.example_signals_figure(signals, bvecs=bvecs[:5])


def test_reconstruction_figure(rng):
    real = rng.uniform(0, 1, (20, 8))
    recon = {"RandomWM": real + 0.3, "Syn": real + 0.01}
    fig = F.reconstruction_figure(real, recon, n_examples=2, seed=3)
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    panel = _traces(fig, "x2")
    assert [t.name for t in panel] == ["real", "Syn", "RandomWM"]
    idx = int(fig.layout.annotations[1].text.split()[-1])
    np.testing.assert_array_equal(panel[0].y, real[idx])
    np.testing.assert_array_equal(panel[2].y, recon["RandomWM"][idx])
    assert panel[1].line.color == F.METHOD_COLORS["Syn"]
    with pytest.raises(ValueError, match=r"recon_by_method\['Syn'\] has shape \(20, 7\)"):
        F.reconstruction_figure(real, {"Syn": real[:, :7]})


def test_save_html_is_standalone_and_atomic(tmp_path, metrics):
    fig = F.signal_mae_figure(metrics)
    fig.update_layout(title="unique-title-4821")
    path = F.save_html(fig, tmp_path / "out" / "fig.html")
    assert path == tmp_path / "out" / "fig.html"
    html = path.read_text()
    assert "unique-title-4821" in html
    assert '"name":"RandomWM"' in html
    # The numbers themselves: plotly writes float arrays as base64 ("bdata") in escaped
    # JSON; decode every such array in the file and look for the input values.
    arrays = [np.frombuffer(base64.b64decode(json.loads(f'"{b}"')), dtype="<f8")
              for dtype, b in re.findall(r'"dtype":"(f8)","bdata":"([^"]*)"', html)]
    for method in METHODS:
        expected = _values(metrics, "hcp", method)
        assert any(a.shape == expected.shape and np.array_equal(a, expected) for a in arrays)
    assert "Plotly.newPlot" in html
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing fetched from a CDN
    assert len(html) > 1_000_000  # plotly.js itself is embedded
    assert [p.name for p in path.parent.iterdir()] == ["fig.html"]


def test_save_html_failure_leaves_nothing(tmp_path, monkeypatch):
    fig = go.Figure()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(go.Figure, "write_html", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        F.save_html(fig, tmp_path / "fig.html")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="plotly.graph_objects.Figure"):
        F.save_html({"data": []}, tmp_path / "x.html")


def test_angle_marks_survive_a_csv_round_trip(tmp_path):
    """Empty stars come back from CSV as NaN: no bracket may be labelled 'nan'."""
    rows = []
    for s in range(5):
        for m, v in zip(("Syn", "Sampled", "SampleAndMean"), (10.0, 5.0, 10.0)):
            rows.append(("d", f"s{s}", m, "angle_deg", "all", v + 0.1 * s + (0.3 * s if m == "SampleAndMean" else 0)))
    metrics = pd.DataFrame(rows, columns=["dataset", "subject", "method", "metric", "tissue", "value"])
    stats = compare_methods(metrics)
    stats.to_csv(tmp_path / "stats.csv", index=False)
    back = pd.read_csv(tmp_path / "stats.csv")
    assert back["stars"].isna().any()  # the case being tested
    texts = [a.text for a in F.angle_figure(metrics, back).layout.annotations]
    assert "nan" not in texts
    assert texts.count("*") + texts.count("**") == int((back[back.test == "paired_t"]["stars"].fillna("") != "").sum())
