"""Plotly figures: results (notebook 04) and data checks (notebooks 01-03).

Every function returns a :class:`plotly.graph_objects.Figure` and has no display side
effect; the notebook shows it, :func:`save_html` writes it.

Methods are arbitrary names (the four built-ins and a user's own generators). They appear
in the order they first appear in the table (or dict) given, and in the colour
:func:`method_colors` gives them: the built-ins keep their fixed Okabe-Ito colours
(:data:`METHOD_COLORS`), any other name gets the next colour of :data:`PLUGIN_COLORS`, so a
reader can follow one generator from figure to figure.

Result figures show spread, not just a summary: every unit is a point (a subject's mean
over its replicate models when a dataset has at least 3 subjects, else every
(subject, replicate) model), next to the mean with its 95% t-interval. Error axes start at
zero, so a 5% difference looks like one.

Volumes are shown as axial slices ``volume[:, :, k]`` in voxel coordinates: the first
array axis runs left to right, the second bottom to top. No affine is applied, so the
left-right convention is the array's, not necessarily radiological or neurological. By
default the slice shown is the one with the most brain voxels, so that scans of a few
slices, or with the brain off-centre, show brain.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from scipy import stats as sps

from helpers.contract import COLUMNS, DIAGNOSTICS, METRIC_LABELS, TISSUES
from helpers.io import atomic_path
from helpers.judges.stats import CONFIDENCE, MIN_SUBJECTS, STRONG_P, TESTS, check_table
from helpers.scan.tissue import CODES

__all__ = [
    "METHOD_COLORS", "PLUGIN_COLORS", "REAL_COLOR", "TISSUE_COLORS", "TISSUE_LABELS",
    "METRIC_LABELS", "method_colors", "confusion_figure",
    "metric_figure", "signal_mae_figure", "angle_figure", "fa_mae_figure", "tissue_figure",
    "diagnostics_figure", "training_curves_figure", "density_figure", "error_map_figure",
    "slices_figure", "tissue_overlay_figure", "histogram_by_group_figure",
    "example_signals_figure", "reconstruction_figure", "save_html",
]

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
METHOD_COLORS = {
    "Syn": "#0072B2",
    "Sampled": "#E69F00",
    "SampleAndMean": "#009E73",
    "RandomWM": "#CC79A7",
    "FORCE": "#D55E00",
    "SubjectFORCE": "#56B4E9",
    "Calibrated": "#000000",
}
"""One fixed colour per built-in method, used by every figure."""

PLUGIN_COLORS = ("#882255", "#44AA99", "#332288", "#999933", "#AA4499", "#117733",
                 "#661100", "#6699CC", "#F0E442", "#DDCC77")
"""Colours of other methods (a user's generators), in order of first appearance: Paul
Tol's muted palette, then the Okabe-Ito colours the built-ins do not use; after these,
plotly's Dark24."""

REAL_COLOR = "#000000"
"""Colour of the real (measured) data wherever it is drawn next to the methods."""

TISSUE_COLORS = {"CSF": "#56B4E9", "GM": "#009E73", "WM": "#D55E00"}
"""One fixed colour per tissue class."""

TISSUE_LABELS = {code: name for name, code in CODES.items()}
"""Integer codes of a tissue label volume (0: no tissue)."""

_STATS_REQUIRED = ("dataset", "metric", "tissue", "method_a", "method_b", "test", "p_holm")
_COLLAPSED_COLUMNS = ("dataset", "subject", "method", "replicate")
_HISTORY_COLUMNS = ("epoch", "loss")
_TEMPLATE = "plotly_white"
ROBUST_PERCENTILE = 99.0
"""Default top of a map's colour scale: this percentile of its values, not the maximum."""
_FLOOR_COLOR = "#555555"
_BRACKET_COLOR = "#444444"


def method_colors(methods):
    """Colour of each method name, in order of first appearance.

    Parameters
    ----------
    methods : iterable of str
        Method names, possibly repeated (e.g. a table's ``method`` column).

    Returns
    -------
    dict of str to str
        Built-in methods get :data:`METHOD_COLORS`; every other name the next unused
        colour of :data:`PLUGIN_COLORS` (then plotly's Dark24, cycling).

    Examples
    --------
    >>> method_colors(["Syn", "ball_stick", "Syn", "zeppelin"])
    {'Syn': '#0072B2', 'ball_stick': '#882255', 'zeppelin': '#44AA99'}
    """
    used = set(METHOD_COLORS.values()) | {REAL_COLOR}
    palette = list(PLUGIN_COLORS) + [c for c in qualitative.Dark24
                                     if c not in used and c not in PLUGIN_COLORS]
    out, k = {}, 0
    for name in dict.fromkeys(methods):
        if name in METHOD_COLORS:
            out[name] = METHOD_COLORS[name]
        else:
            out[name] = palette[k % len(palette)]
            k += 1
    return out


# --------------------------------------------------------------------------- results


def metric_figure(metrics, metric, *, stats=None, floor=None, tissue="all", collapsed=None,
                  test=None, alpha=0.05, note_ratio=2.0, title=None):
    """One metric by method: every unit as a point, the mean with its 95% t-interval.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, replicate, metric, tissue,
        value``).
    metric : str
        Which metric (``"signal_mae"``, ``"fa_mae"``, ``"angle_deg"`` or any other).
    stats : pandas.DataFrame, optional
        Pairwise tests (:func:`helpers.judges.stats.compare_methods`; at least ``dataset, metric,
        tissue, method_a, method_b, test, p_holm``). Its rows of this metric and tissue
        with ``p_holm < alpha`` become brackets, labelled with ``stars``; the hover gives
        the test, p, and ``held``/``n_compared`` when present.
    floor : dict of str to float, or float, optional
        Noise floor per dataset (expected signal MAE of a perfect denoiser), drawn as a
        dashed horizontal line labelled "noise floor"; a number applies to every panel.
        Meant for signal MAE; datasets missing from the dict get no line.
    tissue : str, optional
        Which tissue rows to draw.
    collapsed : pandas.DataFrame, optional
        Collapsed replicate models (``dataset, subject, method, replicate``): drawn with
        an X marker (a subject's mean with an X includes a collapsed model). They stay in
        the mean: collapsed models are reported, not hidden.
    test : str, optional
        Which test's brackets to draw; by default, per panel, the first test of the
        panel's level in :data:`helpers.judges.stats.TESTS` (paired t across subjects, Welch t
        across replicates), or else the first test in ``stats``.
    alpha : float, optional
        Corrected p below which a pair gets a bracket.
    note_ratio : float or None, optional
        A method whose median is more than this many times the largest median of the
        others in a panel gets a note under that panel. It is still drawn (the method
        paper left RandomWM out of its Fig. 2; we show every method and say so instead).
        ``None`` turns the note off.
    title : str, optional
        Figure title; by default the metric's label.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per dataset (first-appearance order), each with its own y-axis from
        zero (datasets differ in noise and b-value, so their errors differ in scale).
        Method ``i`` of a panel sits at x = i (tick labels name the methods). Per method:
        a ``"markers"`` trace of its units (``meta["kind"] == "units"``; hover names the
        subject, and the replicate at replicate level) and a ``"<method> mean"`` trace
        (``meta["kind"] == "mean"``) with the 95% t-interval as its error bar. For each
        significant pair, a bracket (three line shapes) and an annotation named
        ``"<method_a> vs <method_b>"`` holding the stars.

    Raises
    ------
    ValueError
        If a table lacks a column, no row has this metric and tissue, or ``test`` is not
        in ``stats``.

    Notes
    -----
    With at least :data:`MIN_SUBJECTS` subjects the unit is the subject (its mean over
    replicate models), as in the subject-level tests; with fewer, every replicate model
    is a unit, as in the replicate-level tests. The interval is
    ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` over those units (none for n < 2).
    """
    check_table(metrics, COLUMNS, "metrics")
    sel = metrics[(metrics["metric"] == metric) & (metrics["tissue"] == tissue)]
    if sel.empty:
        raise ValueError(f"metrics has no rows with metric={metric!r} and tissue={tissue!r}")
    colors = method_colors(pd.unique(sel["method"]))
    bad = _collapsed_keys(collapsed)
    if stats is not None:
        check_table(stats, _STATS_REQUIRED, "stats")
        if test is not None and test not in set(stats["test"]):
            raise ValueError(f"test {test!r} is not in stats; tests present: "
                             f"{sorted(map(str, pd.unique(stats['test'])))}")
    datasets = list(pd.unique(sel["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=False,
                        subplot_titles=[str(d) for d in datasets])
    label = METRIC_LABELS.get(metric, metric)
    shown, any_collapsed, n_note_lines, below = set(), False, 1, 0
    for col, dataset in enumerate(datasets, start=1):
        units, level = _units(sel[sel["dataset"] == dataset], bad)
        present = [m for m in colors if m in set(units["method"])]
        tops = [0.0]
        medians = {}
        for i, method in enumerate(present):
            u = units[units["method"] == method]
            tops.append(_draw_method(fig, col, i, u, method=method, color=colors[method],
                                     level=level, dataset=dataset,
                                     showlegend=method not in shown))
            medians[method] = float(np.median(u["value"]))
            any_collapsed |= bool(u["collapsed"].any())
            shown.add(method)
        sub = fig.get_subplot(1, col)
        xref = sub.xaxis.plotly_name.replace("axis", "")
        yref = sub.yaxis.plotly_name.replace("axis", "")
        unit_words = ("each point: a subject (mean over its replicate models)"
                      if level == "subject" else "each point: one replicate model")
        angle, drop = _tick_layout(present)
        below = max(below, drop)
        fig.update_xaxes(tickvals=list(range(len(present))), ticktext=present, tickangle=angle,
                         range=[-0.6, max(len(present), 1) - 0.4], row=1, col=col)
        value = floor.get(dataset) if isinstance(floor, dict) else floor
        if value is not None and np.isfinite(float(value)):
            tops.append(float(value))
            _draw_floor(fig, col, float(value), len(present),
                        showlegend="noise floor" not in shown)
            shown.add("noise floor")
        if not present:
            fig.add_annotation(text="no values", xref=f"{xref} domain", yref=f"{yref} domain",
                               x=0.5, y=0.5, showarrow=False, name="no values")
        top = max(tops)
        if stats is not None and present:
            rows = _bracket_rows(stats, dataset, metric, tissue, test, present, alpha, level)
            if not rows.empty:
                top = _add_brackets(fig, xref, yref, rows, present, top, level)
        # from zero, always (an interval reaching below zero would otherwise move it)
        fig.update_yaxes(range=[0, top * (1.0 if top > max(tops) else 1.05) or 1.0], row=1, col=col)
        notes = [unit_words]
        if note_ratio is not None:
            notes += _far_worse_notes(medians, note_ratio)
        n_note_lines = max(n_note_lines, len(notes))
        _panel_note(fig, xref, notes, shift=drop)
    if any_collapsed:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="collapsed replicate",
                                 marker=dict(symbol="x", color="#333333", size=8),
                                 meta={"kind": "legend"}, hoverinfo="skip"))
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(template=_TEMPLATE,
                      title=title or f"{label[:1].upper()}{label[1:]} by method",
                      margin=dict(b=22 + below + 18 * n_note_lines))
    return fig


def signal_mae_figure(metrics, *, stats=None, floor=None, tissue="all", collapsed=None, **kw):
    """Signal MAE by method with the noise floor: :func:`metric_figure` for
    ``"signal_mae"``. ``floor`` is the expected MAE of a perfect denoiser per dataset."""
    return metric_figure(metrics, "signal_mae", stats=stats, floor=floor, tissue=tissue,
                         collapsed=collapsed,
                         **{"title": "Signal reconstruction error by method", **kw})


def fa_mae_figure(metrics, *, stats=None, tissue="all", collapsed=None, **kw):
    """FA MAE by method (DTI fits of the real and the reconstructed signal):
    :func:`metric_figure` for ``"fa_mae"``."""
    return metric_figure(metrics, "fa_mae", stats=stats, tissue=tissue, collapsed=collapsed,
                         **{"title": "FA error by method", **kw})


def angle_figure(metrics, stats=None, *, tissue="all", collapsed=None, **kw):
    """Angular deviation of the principal direction by method, with significance
    brackets: :func:`metric_figure` for ``"angle_deg"``."""
    return metric_figure(metrics, "angle_deg", stats=stats, tissue=tissue, collapsed=collapsed,
                         **{"title": "Angular deviation of the principal direction", **kw})


def tissue_figure(metrics, metric="signal_mae", *, tissues=TISSUES):
    """A metric per tissue class and method: grouped boxes, one panel per dataset.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, replicate, metric, tissue,
        value``).
    metric : str, optional
        Which metric to draw.
    tissues : sequence of str, optional
        Tissue classes on the x-axis, in this order.

    Returns
    -------
    plotly.graph_objects.Figure
        One box trace per (dataset, method) with ``x`` the tissue of each unit (as in
        :func:`metric_figure`: subject means with >= 3 subjects, else replicate models),
        every unit drawn as a point, grouped by tissue, own y-axis per dataset from zero.
        A tissue with no value in a dataset (a scan without CSF, say) still has its place
        on the x-axis, with a ``"no voxels"`` annotation.

    Raises
    ------
    ValueError
        If a column is missing or no row has ``metric`` at all.
    """
    check_table(metrics, COLUMNS, "metrics")
    in_metric = metrics[metrics["metric"] == metric]
    if in_metric.empty:
        raise ValueError(f"metrics has no rows with metric={metric!r}; metrics present: "
                         f"{sorted(map(str, pd.unique(metrics['metric'])))}")
    tissues = list(tissues)
    sel = in_metric[in_metric["tissue"].isin(tissues)]
    colors = method_colors(pd.unique(in_metric["method"]))
    datasets = list(pd.unique(in_metric["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=False,
                        subplot_titles=[str(d) for d in datasets])
    shown = set()
    for col, dataset in enumerate(datasets, start=1):
        d = sel[sel["dataset"] == dataset]
        parts = []
        for t in tissues:
            u, _ = _units(d[d["tissue"] == t], set())
            parts.append(u.assign(tissue=t))
        units = pd.concat(parts, ignore_index=True)
        for method in colors:
            u = units[units["method"] == method]
            if u.empty:
                continue
            fig.add_trace(go.Box(
                x=u["tissue"].to_numpy(), y=u["value"].to_numpy(float), name=method,
                legendgroup=method, showlegend=method not in shown,
                marker_color=colors[method], boxpoints="all", jitter=0.3, pointpos=0,
                customdata=u["label"].to_numpy(),
                hovertemplate="%{customdata} (%{x}): %{y:.4g}<extra>" + method + "</extra>",
            ), row=1, col=col)
            shown.add(method)
        sub = fig.get_subplot(1, col)
        xref = sub.xaxis.plotly_name.replace("axis", "")
        yref = sub.yaxis.plotly_name.replace("axis", "")
        for t in (t for t in tissues if t not in set(units["tissue"])):
            # An invisible point keeps the empty class on the axis; the note says why.
            fig.add_trace(go.Scatter(x=[t], y=[0.0], mode="markers", name="no voxels",
                                     marker=dict(opacity=0), showlegend=False,
                                     hoverinfo="skip"), row=1, col=col)
            fig.add_annotation(x=t, xref=xref, y=0.5, yref=f"{yref} domain", text="no voxels",
                               showarrow=False, font=dict(color="#777777"), name="no voxels")
        fig.update_xaxes(categoryorder="array", categoryarray=tissues, row=1, col=col)
    label = METRIC_LABELS.get(metric, metric)
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(boxmode="group", template=_TEMPLATE, title=f"{label} per tissue")
    return fig


def confusion_figure(confusion, *, dataset=None, title=None):
    """Truth x judged heat maps, one panel per judge metric: the known-answer check.

    Parameters
    ----------
    confusion : pandas.DataFrame
        :func:`helpers.judges.panel.confusion_table` (``dataset, judge, metric, truth, method,
        first, n``).
    dataset : str, optional
        Draw only this dataset (default: every dataset, its panels titled with its name).

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per (dataset, judge metric). Rows: the generator that made the
        pseudo-scan; columns: the generator judged; colour and text: the share (and count)
        of replicates in which it ranked first. A judge that names the truth has a bright
        diagonal.
    """
    check_table(confusion, ("dataset", "metric", "truth", "method", "first", "n"), "confusion")
    if not len(confusion):
        raise ValueError("confusion has no rows: no known-answer check ran")
    c = confusion if dataset is None else confusion[confusion["dataset"] == dataset]
    panels = list(dict.fromkeys(zip(c["dataset"], c["metric"])))
    several = c["dataset"].nunique() > 1
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    titles = [(f"{d}: " if several else "") + _judge_panel_title(m) for d, m in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.09,
                        vertical_spacing=min(0.2, 0.5 / rows))
    for i, (ds, metric) in enumerate(panels):
        m = c[(c["dataset"] == ds) & (c["metric"] == metric)]
        names = list(pd.unique(m["truth"]))
        first = m.pivot_table(index="truth", columns="method", values="first", aggfunc="sum").reindex(index=names, columns=names)
        n = m.pivot_table(index="truth", columns="method", values="n", aggfunc="max").reindex(index=names, columns=names)
        share = (first / n).to_numpy(float)
        text = [[f"{int(f)}/{int(k)}" if np.isfinite(f) and np.isfinite(k) else "" for f, k in zip(fr, kr)]
                for fr, kr in zip(first.to_numpy(float), n.to_numpy(float))]
        fig.add_trace(go.Heatmap(
            z=share, x=names, y=names, text=text, texttemplate="%{text}", zmin=0, zmax=1,
            colorscale="Blues", showscale=i == 0, colorbar=dict(title="ranked first"),
            hovertemplate="made by %{y}<br>judged %{x}: first in %{text}<extra>" + metric + "</extra>",
        ), row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="generator judged")
    fig.update_yaxes(title_text="made the pseudo-scan", col=1)
    fig.update_layout(template=_TEMPLATE, height=340 * rows + 110, margin=dict(t=130),
                      title=title or ("Known answers: in what share of the replicate models each judge ranked each "
                                        "generator first<br><sup>the verdict and the known-answer count rank the mean over "
                                        "replicates, so a truth ranked first by 1 of 3 models can still be named</sup>"))
    return fig


def _judge_panel_title(metric):
    from helpers.contract import JUDGE_LABELS, JUDGE_OF

    judge = JUDGE_OF.get(metric, metric)
    label = JUDGE_LABELS.get(judge, judge).split(" (")[0]
    return f"{label}: {METRIC_LABELS.get(metric, metric).split(' (')[0]}" if judge == "reconstruction" else label


def diagnostics_figure(diagnostics, *, title="Final validation loss per model"):
    """Final validation loss of every replicate model, by method; collapsed ones marked.

    Parameters
    ----------
    diagnostics : pandas.DataFrame
        Tidy diagnostics (``models/diagnostics.csv``: COLUMNS, ``metric`` in
        ``val_loss, dead_units, bottleneck_units, collapsed``).
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per dataset, log y-axis; per method one ``"markers"`` trace with a point
        per (subject, replicate) model, drawn as an X when flagged ``collapsed``; the
        hover names the subject, replicate, loss and dead bottleneck units.

    Raises
    ------
    ValueError
        If a column is missing or there is no ``val_loss`` row.
    """
    check_table(diagnostics, COLUMNS, "diagnostics")
    d = diagnostics[diagnostics["metric"].isin(DIAGNOSTICS)]
    if not (d["metric"] == "val_loss").any():
        raise ValueError("diagnostics has no 'val_loss' rows")
    keys = ["dataset", "subject", "method", "replicate"]
    wide = d.pivot_table(index=keys, columns="metric", values="value", aggfunc="first",
                         sort=False).reset_index()
    wide = wide[wide["val_loss"].notna()]
    for name in DIAGNOSTICS:
        if name not in wide.columns:
            wide[name] = np.nan
    colors = method_colors(pd.unique(d["method"]))
    datasets = list(pd.unique(wide["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=[str(s) for s in datasets])
    shown, any_collapsed = set(), False
    for col, dataset in enumerate(datasets, start=1):
        w = wide[wide["dataset"] == dataset]
        present = [m for m in colors if m in set(w["method"])]
        for i, method in enumerate(present):
            u = w[w["method"] == method]
            flag = u["collapsed"].fillna(0).astype(float).to_numpy() > 0
            any_collapsed |= bool(flag.any())
            text = [f"{s}, replicate {_rep(r)}: dead bottleneck units {_count(du)}/{_count(bu)}"
                    + (" (collapsed)" if c else "")
                    for s, r, du, bu, c in zip(u["subject"], u["replicate"], u["dead_units"],
                                               u["bottleneck_units"], flag)]
            fig.add_trace(go.Scatter(
                x=i + _spread(len(u), 0.15), y=u["val_loss"].to_numpy(float), mode="markers",
                name=method, legendgroup=method, showlegend=method not in shown,
                marker=dict(color=colors[method], size=9,
                            symbol=np.where(flag, "x", "circle").tolist()),
                customdata=text, meta={"kind": "units", "method": method},
                hovertemplate="%{customdata}<br>val loss %{y:.4g}<extra>" + method + "</extra>",
            ), row=1, col=col)
            shown.add(method)
        fig.update_xaxes(tickvals=list(range(len(present))), ticktext=present,
                         range=[-0.6, max(len(present), 1) - 0.4], row=1, col=col)
    if any_collapsed:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="collapsed",
                                 marker=dict(symbol="x", color="#333333", size=8),
                                 meta={"kind": "legend"}, hoverinfo="skip"))
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="final validation loss (MSE)", row=1, col=1)
    fig.update_layout(template=_TEMPLATE, title=title)
    return fig


def training_curves_figure(histories, *, title="Training curves"):
    """Training and validation loss per epoch: one colour per method, replicates as thin
    lines, log y-axis.

    Parameters
    ----------
    histories : dict of str to list of pandas.DataFrame (or to one DataFrame)
        Method name to the Keras history of each replicate model, columns ``epoch,
        loss`` and optionally ``val_loss`` (``training.load_histories``). Methods are drawn
        in the dict's order; a method with an empty list is left out.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Per method and replicate a solid ``"<method> train"`` line and, where
        ``val_loss`` exists, a dashed ``"<method> validation"`` line in the method's
        colour; one legend entry per method and kind (the legend group hides or shows
        all replicates at once). ``meta["replicate"]`` is the replicate's position in
        the list; the hover names it.
    """
    if not histories:
        raise ValueError("histories is empty; expected a dict method -> [history per replicate]")
    runs = {name: [h] if isinstance(h, pd.DataFrame) else list(h)
            for name, h in histories.items()}
    if not any(runs.values()):
        raise ValueError("histories has no history DataFrame for any method")
    colors = method_colors(runs)
    fig = go.Figure()
    for name, frames in runs.items():
        for r, h in enumerate(frames):
            check_table(h, _HISTORY_COLUMNS, f"histories[{name!r}][{r}]")
            for column, kind, dash in (("loss", "train", "solid"),
                                       ("val_loss", "validation", "dash")):
                if column not in h.columns:
                    continue
                fig.add_trace(go.Scatter(
                    x=h["epoch"].to_numpy(), y=h[column].to_numpy(float), mode="lines",
                    name=f"{name} {kind}", legendgroup=f"{name} {kind}", showlegend=r == 0,
                    line=dict(color=colors[name], dash=dash, width=1.2), opacity=0.8,
                    meta={"method": name, "replicate": r, "kind": kind},
                    hovertemplate=(f"replicate {r}, epoch %{{x}}: %{{y:.4g}}"
                                   f"<extra>{name} {kind}</extra>")))
    fig.update_yaxes(type="log", title_text="loss (MSE)")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=_TEMPLATE, title=dict(text=f"{title}<br><sup>{CURVES_CAVEAT}</sup>"))
    return fig


CURVES_CAVEAT = ("each method's losses are on its own synthetic data: compare a method's curves "
                 "with each other, not across methods")
"""What the training curves cannot say, in their subtitle."""


def density_figure(samples, *, xlabel, ylabel, bins=40, x_range=None, y_range=None,
                   quantiles=(0.005, 0.995), title=None):
    """2-D densities of each method over the real one (e.g. FA against MD).

    Parameters
    ----------
    samples : dict of str to (x, y)
        Name to two equally long arrays, the first entry the reference (``"real"``), the
        others methods. Pairs where either value is not finite are dropped.
    xlabel, ylabel : str
        Axis titles, with units.
    bins : int, optional
        Bins per axis of the common 2-D histogram.
    x_range, y_range : (float, float), optional
        Histogram ranges; by default the ``quantiles`` of all samples together (so a few
        outlying tensor fits do not squash the picture).
    quantiles : (float, float), optional
        Default range quantiles.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per method (grid of up to 3 columns, shared axes): the method's density
        as filled contours in its colour (trace named after it) under the reference's
        density as black contour lines (trace named after the reference). ``z`` is the
        density on the bin grid (``z[j, i]`` at ``y`` centre j, ``x`` centre i), so it
        integrates to 1 over the values inside the range. A method without values gets
        a ``"no voxels"`` note in its panel. Densities are computed here with numpy, so
        the figure stays small for any number of voxels.
    """
    if not samples:
        raise ValueError("samples is empty; expected a dict name -> (x, y), reference first")
    if int(bins) < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    pairs = {name: _xy(v, name) for name, v in samples.items()}
    names = list(pairs)
    ref, methods = names[0], names[1:] or names[:1]
    every = [p for p in pairs.values() if len(p[0])]
    ex = _edges(x_range, [p[0] for p in every], quantiles, bins, "x_range")
    ey = _edges(y_range, [p[1] for p in every], quantiles, bins, "y_range")
    cx, cy = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
    colors = method_colors(methods)
    n_cols = min(3, len(methods))
    n_rows = math.ceil(len(methods) / n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[str(m) for m in methods],
                        shared_xaxes="all", shared_yaxes="all")
    ref_density = _density2d(*pairs[ref], ex, ey)
    for j, name in enumerate(methods):
        pos = dict(row=j // n_cols + 1, col=j % n_cols + 1)
        density = _density2d(*pairs[name], ex, ey)
        if name != ref:
            if density is None:
                sub = fig.get_subplot(**pos)
                fig.add_annotation(text="no voxels", showarrow=False, x=0.5, y=0.5,
                                   name="no voxels",
                                   xref=sub.xaxis.plotly_name.replace("axis", "") + " domain",
                                   yref=sub.yaxis.plotly_name.replace("axis", "") + " domain")
            else:
                fig.add_trace(go.Contour(
                    x=cx, y=cy, z=density.T, name=str(name), showscale=False, ncontours=8,
                    colorscale=[[0, "rgba(255,255,255,0)"], [1, colors[name]]],
                    contours=dict(coloring="fill", showlines=False), opacity=0.85,
                    meta={"kind": "method", "n": int(len(pairs[name][0]))},
                    hovertemplate=f"{name}: density %{{z:.3g}}<extra></extra>"), **pos)
        if ref_density is not None:
            fig.add_trace(go.Contour(
                x=cx, y=cy, z=ref_density.T, name=str(ref), showscale=False, ncontours=8,
                colorscale=[[0, REAL_COLOR], [1, REAL_COLOR]], showlegend=j == 0,
                contours=dict(coloring="lines"), line=dict(width=1),
                meta={"kind": "reference", "n": int(len(pairs[ref][0]))},
                hovertemplate=f"{ref}: density %{{z:.3g}}<extra></extra>"), **pos)
    fig.update_xaxes(title_text=xlabel, row=n_rows)
    fig.update_yaxes(title_text=ylabel, col=1)
    fig.update_layout(template=_TEMPLATE, height=max(380, 330 * n_rows),
                      title=title or f"{ylabel} against {xlabel}: each method over {ref} (lines)")
    return fig


def error_map_figure(volumes, *, slice_index=None, title="Per-voxel error",
                     colorscale="Viridis", zmin=None, zmax=None, label="error"):
    """A row of error maps on one axial slice, sharing one colour scale.

    Parameters
    ----------
    volumes : dict of str to (X, Y, Z) ndarray
        Name (e.g. method) to a per-voxel error map, NaN outside the brain; all of one
        shape.
    slice_index : int, optional
        Axial slice ``k`` of ``volume[:, :, k]``; by default the slice with the most brain
        voxels over all volumes (ties: the one nearest the middle).
    title : str, optional
        Figure title.
    colorscale : str, optional
        Plotly colour scale name.
    zmin, zmax : float, optional
        Colour range, shared by every panel so that equal colours mean equal errors; by
        default the smallest finite value on the slice and the 99th percentile over all
        volumes (one outlying voxel would otherwise set the scale and every map would look
        alike). Larger values take the top colour; the colour bar says so.
    label : str, optional
        Colour bar title.

    Returns
    -------
    plotly.graph_objects.Figure
        One heatmap per volume, all on the layout's ``coloraxis``; NaN is transparent.
    """
    slices, k = _axial_slices(volumes, slice_index, same_shape=True)
    finite = np.concatenate([s[np.isfinite(s)] for s in slices.values()])
    if finite.size == 0:
        raise ValueError(f"slice {k} has no finite value in any volume; "
                         "choose a slice_index inside the brain")
    zmin = float(finite.min()) if zmin is None else zmin
    robust = zmax is None
    zmax = float(np.percentile(finite, ROBUST_PERCENTILE)) if robust else zmax
    if robust and zmax < float(finite.max()):
        label = f"{label}<br>(top colour: ≥ {zmax:.3g},<br>the {ROBUST_PERCENTILE:g}th percentile)"
    fig = _slice_grid(list(slices))
    for i, (name, s) in enumerate(slices.items(), start=1):
        fig.add_trace(go.Heatmap(z=s.T, coloraxis="coloraxis", name=name,
                                 hovertemplate="i=%{x} j=%{y}: %{z:.4g}<extra>%{fullData.name}"
                                               "</extra>"), row=1, col=i)
    _square_pixels(fig, len(slices))
    fig.update_layout(template=_TEMPLATE, title=f"{title} (axial slice {k})",
                      coloraxis=dict(colorscale=colorscale, cmin=zmin, cmax=zmax,
                                     colorbar=dict(title=dict(text=label))))
    return fig


# ------------------------------------------------------------------------ data checks


def slices_figure(volumes, *, slice_index=None, colorscale="Gray"):
    """Axial slices of several volumes side by side, each with its own colour scale.

    Parameters
    ----------
    volumes : dict of str to (X, Y, Z) ndarray
        Name to volume (e.g. ``"b0"``, ``"FA"``); shapes may differ.
    slice_index : int, optional
        Axial slice for every volume. By default the slice with the most brain voxels
        (finite, and non-zero where a volume has no NaN), over all volumes when they share
        one shape, else per volume.
    colorscale : str, optional
        Plotly colour scale name.

    Returns
    -------
    plotly.graph_objects.Figure
        One heatmap per volume with a colour bar next to its panel.
    """
    slices, k = _axial_slices(volumes, slice_index, same_shape=False)
    fig = _slice_grid(list(slices))
    for i, (name, s) in enumerate(slices.items(), start=1):
        right = fig.get_subplot(1, i).xaxis.domain[1]
        fig.add_trace(go.Heatmap(z=s.T, name=name, colorscale=colorscale,
                                 colorbar=dict(x=right + 0.005, xanchor="left", thickness=10,
                                               len=0.8),
                                 hovertemplate="i=%{x} j=%{y}: %{z:.4g}<extra>%{fullData.name}"
                                               "</extra>"), row=1, col=i)
    _square_pixels(fig, len(slices))
    where = "the axial slice with most brain voxels of each" if k is None else f"axial slice {k}"
    fig.update_layout(template=_TEMPLATE, title=f"Data check: {where}")
    return fig


def tissue_overlay_figure(background, labels, *, slice_index=None, opacity=0.45):
    """Tissue labels in discrete colours over a grey background, on one axial slice.

    Parameters
    ----------
    background : (X, Y, Z) ndarray
        Background volume, e.g. the mean b0.
    labels : (X, Y, Z) ndarray of int
        0 no tissue, 1 CSF, 2 GM, 3 WM (:data:`TISSUE_LABELS`).
    slice_index : int, optional
        Axial slice; by default the one with the most labelled voxels (the most brain
        voxels of the background if nothing is labelled).
    opacity : float, optional
        Opacity of the label layer.

    Returns
    -------
    plotly.graph_objects.Figure
        A grey ``"background"`` heatmap and a ``"tissue"`` heatmap on top whose colour bar
        names the classes; label 0 is transparent.
    """
    background = np.asarray(background, dtype=float)
    labels = np.asarray(labels)
    if background.ndim != 3:
        raise ValueError(f"background must be 3-D, got shape {background.shape}")
    if labels.shape != background.shape:
        raise ValueError(f"labels has shape {labels.shape} but background has shape "
                         f"{background.shape}; they must be on one grid")
    bad = np.setdiff1d(np.unique(labels), [0, *TISSUE_LABELS])
    if bad.size:
        raise ValueError(f"labels has value(s) {bad[:5].tolist()}; expected 0 (none), "
                         f"{', '.join(f'{c} ({n})' for c, n in TISSUE_LABELS.items())}")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if slice_index is None:
        counts = (labels > 0).sum(axis=(0, 1))
        if not counts.any():
            counts = _brain(background).sum(axis=(0, 1))
        k = _best_slice(counts)
    else:
        k = _slice_index(background.shape, slice_index)
    bg, lab = background[:, :, k].T, labels[:, :, k].T.astype(int)
    overlay = np.where(lab > 0, lab, np.nan)
    names = np.vectorize(lambda c: TISSUE_LABELS.get(c, "none"))(lab)
    codes = sorted(TISSUE_LABELS)
    colors = [TISSUE_COLORS[TISSUE_LABELS[c]] for c in codes]
    n = len(colors)
    # A stepped colour scale: each integer code in [c - 0.5, c + 0.5] gets one flat colour.
    scale = [pair for i, c in enumerate(colors) for pair in ([i / n, c], [(i + 1) / n, c])]
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=bg, colorscale="Gray", showscale=False, name="background",
                             hovertemplate="i=%{x} j=%{y}: %{z:.4g}<extra>background</extra>"))
    fig.add_trace(go.Heatmap(z=overlay, colorscale=scale, zmin=0.5, zmax=n + 0.5,
                             opacity=opacity, name="tissue", text=names,
                             hovertemplate="i=%{x} j=%{y}: %{text}<extra>tissue</extra>",
                             colorbar=dict(tickvals=codes,
                                           ticktext=[TISSUE_LABELS[c] for c in codes],
                                           title=dict(text="tissue"))))
    fig.update_yaxes(scaleanchor="x", constrain="domain", showticklabels=False)
    fig.update_xaxes(constrain="domain", showticklabels=False)
    fig.update_layout(template=_TEMPLATE, title=f"Tissue classes (axial slice {k})")
    return fig


def histogram_by_group_figure(values_by_group, *, xlabel, bins=60, value_range=None,
                              title=None):
    """Overlaid normalised histograms (densities) of several groups, on common bins.

    Parameters
    ----------
    values_by_group : dict of str to array_like
        Group name (a tissue, a method, ``"real"``) to its values; any shape, flattened;
        non-finite values are dropped.
    xlabel : str
        x-axis title, with units.
    bins : int, optional
        Number of equal-width bins spanning all groups.
    value_range : (float, float), optional
        Bin range; values outside it are left out (each density is then normalised over
        the values inside). By default the smallest and largest finite value (0 to 1
        when no group has any).
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One step-line trace per group with ``x`` the bin centres and ``y`` the density
        (area 1). A group with no finite value (an empty tissue class) is an empty legend
        entry named ``"<name> (no voxels)"``; one with no value inside the range,
        ``"<name> (none in range)"``. Histograms are computed here with numpy, so the
        figure stays small even for millions of values. ``"real"`` and tissues get their
        fixed colours, methods those of :func:`method_colors`.
    """
    if not values_by_group:
        raise ValueError("values_by_group is empty; expected a dict group -> values")
    if int(bins) < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    finite = {}
    for name, v in values_by_group.items():
        v = np.asarray(v, dtype=float).ravel()
        finite[name] = v[np.isfinite(v)]
    nonempty = [v for v in finite.values() if v.size]
    if value_range is not None:
        lo, hi = map(float, value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    elif nonempty:
        lo = min(v.min() for v in nonempty)
        hi = max(v.max() for v in nonempty)
    else:
        lo, hi = 0.0, 1.0
    if lo == hi:  # all values equal: one bin of width 1 around them
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    colors = _group_colors(finite)
    fig = go.Figure()
    for name, v in finite.items():
        counts, _ = np.histogram(v, bins=edges)
        if counts.sum() == 0:
            why = "no voxels" if v.size == 0 else "none in range"
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{name} ({why})",
                                     line=dict(color=colors[name]), hoverinfo="skip"))
            continue
        density = counts / (counts.sum() * np.diff(edges))
        fig.add_trace(go.Scatter(x=centres, y=density, mode="lines", line_shape="hvh",
                                 name=str(name), line=dict(color=colors[name]),
                                 hovertemplate="%{x:.4g}: %{y:.4g}<extra>"
                                               + f"{name} (n={counts.sum()})</extra>"))
    fig.update_xaxes(title_text=xlabel)
    fig.update_yaxes(title_text="density")
    fig.update_layout(template=_TEMPLATE, title=title or f"Distribution of {xlabel}")
    return fig


def example_signals_figure(signals_by_name, *, bvecs, n_examples=3, seed=0):
    """Signal against gradient direction for a few voxels, one panel per name.

    Parameters
    ----------
    signals_by_name : dict of str to (n, N) ndarray
        Name (``"real"``, a method) to voxels × directions, e.g. attenuation.
    bvecs : (N, 3) ndarray
        Unit gradient directions of the N columns, shown on hover.
    n_examples : int, optional
        Voxels drawn per name (fewer if a name has fewer voxels).
    seed : int or numpy.random.Generator, optional
        Which voxels: drawn without replacement, independently per name.

    Returns
    -------
    plotly.graph_objects.Figure
        Panels in a grid of up to 3 columns; in each, one line per example voxel against
        the direction index, in the order the directions are given (no reordering).
    """
    if not signals_by_name:
        raise ValueError("signals_by_name is empty; expected a dict name -> (n, N) array")
    bvecs = np.asarray(bvecs, dtype=float)
    if bvecs.ndim != 2 or bvecs.shape[1] != 3:
        raise ValueError(f"bvecs must have shape (N, 3), got {bvecs.shape}")
    arrays = {name: _check_2d(a, f"signals_by_name[{name!r}]", n_cols=len(bvecs),
                              what="rows in bvecs")
              for name, a in signals_by_name.items()}
    _check_n_examples(n_examples)
    rng = np.random.default_rng(seed)
    names = list(arrays)
    n_cols = min(3, len(names))
    n_rows = math.ceil(len(names) / n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[str(n) for n in names])
    x = np.arange(len(bvecs))
    palette = qualitative.Dark24
    for i, name in enumerate(names):
        a = arrays[name]
        picks = np.sort(rng.choice(len(a), size=min(n_examples, len(a)), replace=False))
        for j, idx in enumerate(picks):
            fig.add_trace(go.Scatter(
                x=x, y=a[idx], mode="lines+markers", marker=dict(size=4),
                name=f"example {j + 1}", legendgroup=f"example {j + 1}", showlegend=i == 0,
                line=dict(color=palette[j % len(palette)]), customdata=bvecs,
                hovertemplate="direction %{x} (%{customdata[0]:.2f}, %{customdata[1]:.2f}, "
                              "%{customdata[2]:.2f}): %{y:.4g}<extra>"
                              + f"{name}, voxel {idx}</extra>",
            ), row=i // n_cols + 1, col=i % n_cols + 1)
    fig.update_xaxes(title_text="direction index")
    fig.update_layout(template=_TEMPLATE, title="Example signals",
                      height=max(350, 300 * n_rows))
    return fig


def reconstruction_figure(real, recon_by_method, *, n_examples=3, seed=0):
    """A few real voxels and each method's autoencoder reconstruction of them.

    Parameters
    ----------
    real : (n, N) ndarray
        Real attenuation, voxels × directions.
    recon_by_method : dict of str to (n, N) ndarray
        Method to its reconstruction of ``real``, row for row; drawn in the dict's order.
    n_examples : int, optional
        Voxels shown (fewer if there are fewer voxels).
    seed : int or numpy.random.Generator, optional
        Which voxels: drawn without replacement.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per example voxel (grid of up to 3 columns): the real signal as black
        markers (``"real"``) and one line per method in its colour, against the direction
        index.
    """
    real = _check_2d(real, "real")
    if not recon_by_method:
        raise ValueError("recon_by_method is empty; expected a dict method -> (n, N) array")
    recon = {}
    for method, r in recon_by_method.items():
        recon[method] = np.asarray(r, dtype=float)
        if recon[method].shape != real.shape:
            raise ValueError(f"recon_by_method[{method!r}] has shape {recon[method].shape} "
                             f"but real has shape {real.shape}")
    colors = method_colors(recon)
    _check_n_examples(n_examples)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(real), size=min(n_examples, len(real)), replace=False))
    n_cols = min(3, len(picks))
    n_rows = math.ceil(len(picks) / n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols,
                        subplot_titles=[f"voxel {idx}" for idx in picks])
    x = np.arange(real.shape[1])
    for j, idx in enumerate(picks):
        pos = dict(row=j // n_cols + 1, col=j % n_cols + 1)
        fig.add_trace(go.Scatter(x=x, y=real[idx], mode="markers", name="real",
                                 legendgroup="real", showlegend=j == 0,
                                 marker=dict(color=REAL_COLOR, size=5)), **pos)
        for method, r in recon.items():
            fig.add_trace(go.Scatter(x=x, y=r[idx], mode="lines", name=method,
                                     legendgroup=method, showlegend=j == 0,
                                     line=dict(color=colors[method])), **pos)
    fig.update_xaxes(title_text="direction index")
    fig.update_yaxes(title_text="attenuation", col=1)
    fig.update_layout(template=_TEMPLATE, title="Real voxels and their reconstructions",
                      height=max(350, 300 * n_rows))
    return fig


def save_html(fig, path, *, plotlyjs="directory", caption=None, back=None):
    """Write ``fig`` as an HTML file, atomically.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        The figure.
    path : str or pathlib.Path
        Output file, usually ``*.html``; parent folders are created.
    plotlyjs : str or bool, optional
        Passed to ``write_html`` as ``include_plotlyjs``. ``"directory"`` (default): the
        page loads ``plotly.min.js`` from its own folder, written there (atomically) when
        missing, so a results folder holds plotly.js once and each figure stays small.
        A relative path ending in ``.js`` (e.g. ``"../plotly.min.js"``) loads that file,
        which the caller provides; ``True`` embeds plotly.js (about 4.6 MB) in the page;
        ``"cdn"`` loads it from the internet.
    caption : str, optional
        A sentence or two under the figure: what it shows and how to read it.
    back : (str, str), optional
        ``(href, text)`` of a link above the figure, e.g. back to the report it belongs to.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(fig, go.Figure):
        raise ValueError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    ok = isinstance(plotlyjs, bool) or (isinstance(plotlyjs, str) and (
        plotlyjs in ("directory", "cdn", "require") or plotlyjs.endswith(".js")))
    if not ok:
        raise ValueError(f"plotlyjs must be True, False, 'directory', 'cdn', 'require' or a "
                         f"path ending in .js, got {plotlyjs!r}")
    path = Path(path)
    if plotlyjs == "directory":
        bundle = path.parent / "plotly.min.js"
        if not bundle.is_file():
            with atomic_path(bundle) as tmp:
                tmp.write_text(get_plotlyjs(), encoding="utf-8")
    with atomic_path(path) as tmp:
        # The bundle already sits beside ``path``; plotly only links to it.
        if caption is None and back is None:
            fig.write_html(tmp, include_plotlyjs=plotlyjs, full_html=True)
        else:
            tmp.write_text(_page_html(fig, plotlyjs, caption, back), encoding="utf-8")
    return path


def _page_html(fig, plotlyjs, caption, back):
    """A standalone figure page: a link back, the figure, its caption."""
    import html

    title = html.escape(str(fig.layout.title.text or "figure").split("<br>")[0])
    link = "" if back is None else f'<p><a href="{html.escape(back[0])}">{html.escape(back[1])}</a></p>\n'
    text = "" if caption is None else f'<p class="caption">{html.escape(caption)}</p>\n'
    body = fig.to_html(include_plotlyjs=plotlyjs, full_html=False)
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            '<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}'
            '.caption{color:#333;max-width:60em}</style>\n</head>\n<body>\n'
            f"{link}{body}\n{text}</body>\n</html>\n")


# --------------------------------------------------------------------------- helpers


def _rep(r):
    try:
        return int(r)
    except (TypeError, ValueError):
        return r


def _count(v):
    return "?" if v is None or not np.isfinite(float(v)) else int(v)


def _key(dataset, subject, method, replicate):
    return str(dataset), str(subject), str(method), str(_rep(replicate))


def _collapsed_keys(collapsed):
    if collapsed is None:
        return set()
    check_table(collapsed, _COLLAPSED_COLUMNS, "collapsed")
    return {_key(*row) for row in collapsed[list(_COLLAPSED_COLUMNS)].itertuples(index=False)}


def _units(frame, collapsed_keys):
    """The points of one dataset's rows of one metric and tissue, and their level.

    Subject level (>= MIN_SUBJECTS subjects): one point per (method, subject), the mean
    over its replicates. Replicate level: one point per row. Non-finite values dropped.
    """
    values = frame["value"].to_numpy(float)
    frame = frame[np.isfinite(values)]
    flags = np.array([_key(*k) in collapsed_keys for k in frame[list(_COLLAPSED_COLUMNS)]
                      .itertuples(index=False)], dtype=bool)
    frame = frame.assign(collapsed=flags)
    columns = ["method", "value", "label", "collapsed"]
    if frame.empty:
        return pd.DataFrame(columns=columns), "replicate"
    if frame["subject"].nunique() >= MIN_SUBJECTS:
        g = frame.groupby(["method", "subject"], sort=False)
        units = g.agg(value=("value", "mean"), n=("value", "size"),
                      collapsed=("collapsed", "any")).reset_index()
        units["label"] = [f"{s} (mean of {n} replicate{'s' if n != 1 else ''}"
                          + (", one collapsed)" if c else ")")
                          for s, n, c in zip(units["subject"], units["n"], units["collapsed"])]
        return units[columns], "subject"
    units = frame[["method", "value", "collapsed"]].copy()
    units["label"] = [f"{s}, replicate {_rep(r)}" + (" (collapsed)" if c else "")
                      for s, r, c in zip(frame["subject"], frame["replicate"], flags)]
    return units[columns], "replicate"


def _draw_method(fig, col, i, units, *, method, color, level, dataset, showlegend):
    """One method's units and its mean with the t-interval at x = i of panel ``col``;
    returns the highest y drawn."""
    y = units["value"].to_numpy(float)
    mean, low, high = _t_interval(y)
    fig.add_trace(go.Scatter(
        x=i - 0.12 + _spread(len(y)), y=y, mode="markers", name=method, legendgroup=method,
        showlegend=showlegend,
        marker=dict(color=color, size=8, opacity=0.75, line=dict(width=0),
                    symbol=np.where(units["collapsed"], "x", "circle").tolist()),
        customdata=units["label"].to_numpy(),
        meta={"kind": "units", "method": method, "dataset": str(dataset)},
        hovertemplate="%{customdata}: %{y:.4g}<extra>" + method + "</extra>",
    ), row=1, col=col)
    has_interval = bool(np.isfinite(high))
    interval = (f"{CONFIDENCE:.0%} CI [{low:.4g}, {high:.4g}]" if has_interval
                else "no interval (one unit)")
    n = len(y)
    fig.add_trace(go.Scatter(
        x=[i + 0.18], y=[mean], mode="markers", name=f"{method} mean", legendgroup=method,
        showlegend=False,
        marker=dict(color=color, size=11, symbol="diamond", line=dict(color="#222222", width=1)),
        # errors are never negative: the lower whisker stops at zero (the hover keeps the
        # interval as computed), so that every axis can start at zero
        error_y=dict(type="data", symmetric=False, array=[high - mean if has_interval else 0.0],
                     arrayminus=[min(mean - low, max(mean, 0.0)) if has_interval else 0.0],
                     color=color, thickness=2, width=6, visible=has_interval),
        meta={"kind": "mean", "method": method, "dataset": str(dataset), "n": n,
              "level": level},
        hovertemplate=(f"mean %{{y:.4g}}, {interval}, n = {n} {level}{'s' if n != 1 else ''}"
                       f"<extra>{method}</extra>"),
    ), row=1, col=col)
    return max(float(y.max()), high if has_interval else mean)


def _draw_floor(fig, col, value, n_methods, *, showlegend):
    """The noise floor as a dashed line across panel ``col``, labelled at its right end."""
    sub = fig.get_subplot(1, col)
    right = max(n_methods, 1) - 0.5
    fig.add_trace(go.Scatter(
        x=[-0.5, right], y=[value, value], mode="lines", name="noise floor",
        legendgroup="noise floor", showlegend=showlegend, meta={"kind": "floor"},
        line=dict(color=_FLOOR_COLOR, dash="dash", width=1.5),
        hovertemplate=(f"noise floor {value:.3g}: expected signal MAE of a perfect denoiser "
                       "at this scan's noise<extra></extra>"),
    ), row=1, col=col)
    fig.add_annotation(x=right, y=value, xref=sub.xaxis.plotly_name.replace("axis", ""),
                       yref=sub.yaxis.plotly_name.replace("axis", ""), text="noise floor",
                       showarrow=False, xanchor="right", yanchor="bottom",
                       font=dict(size=10, color=_FLOOR_COLOR), name="noise floor")


def _t_interval(values, confidence=CONFIDENCE):
    """(mean, low, high) of the two-sided t-interval; low = high = NaN for n < 2."""
    y = np.asarray(values, dtype=float)
    mean = float(y.mean())
    if len(y) < 2:
        return mean, np.nan, np.nan
    half = sps.t.ppf(0.5 + confidence / 2, len(y) - 1) * y.std(ddof=1) / math.sqrt(len(y))
    return mean, mean - half, mean + half


def _spread(n, width=0.1):
    """Horizontal offsets of n points side by side (deterministic, no random jitter)."""
    return np.linspace(-width, width, n) if n > 1 else np.zeros(n)


def _bracket_rows(stats, dataset, metric, tissue, test, present, alpha, level):
    s = stats[(stats["dataset"].astype(str) == str(dataset)) & (stats["metric"] == metric)
              & (stats["tissue"] == tissue)]
    if s.empty:
        return s
    if test is None:
        tests = list(pd.unique(s["test"]))
        preferred = TESTS.get(level, ())[:1]
        test = next((t for t in preferred if t in tests), tests[0])
    s = s[s["test"] == test]
    p = pd.to_numeric(s["p_holm"], errors="coerce")
    return s[(p < alpha) & s["method_a"].isin(present) & s["method_b"].isin(present)]


def _add_brackets(fig, xref, yref, rows, present, top, level):
    """Significance brackets above the data of one panel; returns the new axis top."""
    step = 0.08 * top if top > 0 else 1.0
    pairs = sorted(((present.index(r.method_a), present.index(r.method_b), r)
                    for r in rows.itertuples()),
                   key=lambda t: (abs(t[1] - t[0]), min(t[0], t[1])))
    levels = []  # per level, the (left, right) spans already drawn there
    for ia, ib, r in pairs:
        left, right = min(ia, ib), max(ia, ib)
        # The lowest level where this bracket touches no other one.
        k = next((k for k, spans in enumerate(levels)
                  if all(right < s0 or left > s1 for s0, s1 in spans)), len(levels))
        if k == len(levels):
            levels.append([])
        levels[k].append((left, right))
        y = top + step * (k + 1)
        name = f"{r.method_a} vs {r.method_b}"
        for x0, x1, y0, y1 in ((left, right, y, y), (left, left, y - step / 3, y),
                               (right, right, y - step / 3, y)):
            fig.add_shape(type="line", x0=x0, x1=x1, y0=y0, y1=y1, xref=xref, yref=yref,
                          line=dict(color=_BRACKET_COLOR, width=1), name=name)
        fig.add_annotation(x=(left + right) / 2, y=y, xref=xref, yref=yref,
                           text=_stars_of(r), showarrow=False, yanchor="bottom", name=name,
                           hovertext=_bracket_hover(r, level))
    return top + step * (len(levels) + 1)


def _stars_of(row):
    text = getattr(row, "stars", None)
    if isinstance(text, str) and text.strip():
        return text.strip()
    return "**" if float(row.p_holm) < STRONG_P else "*"


def _bracket_hover(r, level):
    parts = [f"{r.method_a} vs {r.method_b}: {r.test}, Holm p = {float(r.p_holm):.3g}"]
    p = getattr(r, "p", None)
    if p is not None and np.isfinite(float(p)):
        parts[0] += f" (uncorrected {float(p):.3g})"
    held, n = getattr(r, "held", None), getattr(r, "n_compared", None)
    if held is not None and n is not None and np.isfinite(float(held)) and np.isfinite(float(n)):
        unit = getattr(r, "level", level)
        parts.append(f"{r.method_a} < {r.method_b} in {int(held)}/{int(n)} {unit}s")
    return "<br>".join(parts)


def _far_worse_notes(medians, ratio):
    notes = []
    for method, median in medians.items():
        others = [v for m, v in medians.items() if m != method and np.isfinite(v)]
        if not others or max(others) <= 0:
            continue
        if median > ratio * max(others):
            notes.append(f"{method} is far worse (median {median:.3g} vs at most "
                         f"{max(others):.3g}); shown, not hidden as in the paper")
    return notes


def _tick_layout(labels):
    """(tick angle, pixels the tick labels reach below the axis) for a panel's method names:
    level while they fit, else turned 40° (set, not left to plotly, so that the note under
    the panel can be placed below them)."""
    longest = max((len(str(s)) for s in labels), default=0)
    if len(labels) <= 4 and longest <= 10:
        return 0, 28
    return -40, int(16 + 7 * longest * 0.643)  # 7 px a character at the default 12 px font; sin 40°


def _panel_note(fig, xref, lines, *, shift=28):
    """Lines of small text under one panel, ``shift`` pixels below the axis (under its tick labels)."""
    if lines:
        fig.add_annotation(text="<br>".join(lines), xref=f"{xref} domain", yref="paper",
                           x=0.5, y=0, yshift=-shift, xanchor="center", yanchor="top",
                           showarrow=False, font=dict(size=11), align="center", name="note")


def _group_colors(names):
    special = {n for n in names if n in TISSUE_COLORS or str(n).lower() == "real"}
    colors = method_colors(n for n in names if n not in special)
    for n in special:
        colors[n] = TISSUE_COLORS.get(n, REAL_COLOR)
    return colors


def _xy(value, name):
    try:
        x, y = value
    except (TypeError, ValueError) as e:
        raise ValueError(f"samples[{name!r}] must be a pair (x, y) of arrays") from e
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"samples[{name!r}] has {x.size} x values but {y.size} y values")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _edges(value_range, arrays, quantiles, bins, what):
    if value_range is not None:
        lo, hi = map(float, value_range)
        if not lo < hi:
            raise ValueError(f"{what} must be (low, high) with low < high, got {value_range}")
    elif arrays:
        every = np.concatenate(arrays)
        lo, hi = (float(q) for q in np.quantile(every, quantiles))
    else:
        lo, hi = 0.0, 1.0
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(bins) + 1)


def _density2d(x, y, ex, ey):
    counts, _, _ = np.histogram2d(x, y, bins=[ex, ey])
    total = counts.sum()
    if total == 0:
        return None
    return counts / (total * np.diff(ex)[:, None] * np.diff(ey)[None, :])


def _brain(volume):
    """Voxels that hold brain: finite ones, or non-zero ones in a volume without NaN."""
    finite = np.isfinite(volume)
    return finite & (volume != 0) if finite.all() else finite


def _best_slice(counts):
    """Index of the largest count; among ties, the one nearest the middle."""
    counts = np.asarray(counts)
    best = np.flatnonzero(counts == counts.max())
    middle = len(counts) // 2
    return int(best[np.argmin(np.abs(best - middle))])


def _slice_index(shape, slice_index):
    k = int(slice_index)
    if not 0 <= k < shape[2]:
        raise ValueError(f"slice_index {slice_index} is outside 0..{shape[2] - 1} "
                         f"for a volume of shape {shape}")
    return k


def _axial_slices(volumes, slice_index, *, same_shape):
    """Dict name -> 2-D axial slice; the slice index (None when chosen per volume)."""
    if not volumes:
        raise ValueError("volumes is empty; expected a dict name -> 3-D array")
    arrays = {name: np.asarray(v, dtype=float) for name, v in volumes.items()}
    for name, v in arrays.items():
        if v.ndim != 3:
            raise ValueError(f"volumes[{name!r}] must be 3-D, got shape {v.shape}")
    shapes = {v.shape for v in arrays.values()}
    if same_shape and len(shapes) > 1:
        raise ValueError(f"volumes must share one shape, got "
                         f"{ {n: v.shape for n, v in arrays.items()} }")
    if slice_index is not None:
        ks = {n: _slice_index(v.shape, slice_index) for n, v in arrays.items()}
        k = int(slice_index)
    elif len(shapes) == 1:
        k = _best_slice(sum(_brain(v).sum(axis=(0, 1)) for v in arrays.values()))
        ks = dict.fromkeys(arrays, k)
    else:
        ks = {n: _best_slice(_brain(v).sum(axis=(0, 1))) for n, v in arrays.items()}
        k = None
    return {n: v[:, :, ks[n]] for n, v in arrays.items()}, k


def _slice_grid(names):
    return make_subplots(rows=1, cols=len(names), subplot_titles=[str(n) for n in names],
                         horizontal_spacing=0.06)


def _square_pixels(fig, n):
    for col in range(1, n + 1):
        sub = fig.get_subplot(1, col)
        fig.update_yaxes(scaleanchor=sub.xaxis.plotly_name.replace("axis", ""),
                         constrain="domain", showticklabels=False, row=1, col=col)
        fig.update_xaxes(constrain="domain", showticklabels=False, row=1, col=col)


def _check_2d(a, name, *, n_cols=None, what=None):
    a = np.asarray(a, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (voxels, directions), got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{name} has no voxels")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} has {a.shape[1]} directions but there are {n_cols} {what}")
    return a


def _check_n_examples(n_examples):
    if int(n_examples) < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
