"""Plotly figures: results (notebook 04) and data checks (notebooks 01-03).

Every function returns a :class:`plotly.graph_objects.Figure` and has no display side
effect; the notebook shows it, :func:`save_html` writes it. Methods always appear in
``helpers.METHODS`` order and always in the colour :data:`METHOD_COLORS` gives them, so a
reader can follow one generator from figure to figure.

Volumes are shown as axial slices ``volume[:, :, k]`` in voxel coordinates: the first
array axis runs left to right, the second bottom to top. No affine is applied, so the
left-right convention is the array's, not necessarily radiological or neurological.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from helpers import METHODS
from helpers.io import atomic_path
from helpers.tissue import CODES
from helpers.stats import METRICS_COLUMNS, _check_columns, _check_methods

__all__ = [
    "METHOD_COLORS", "REAL_COLOR", "TISSUE_COLORS", "TISSUE_LABELS", "METRIC_LABELS",
    "signal_mae_figure", "angle_figure", "fa_mae_figure", "tissue_figure",
    "training_curves_figure", "error_map_figure", "slices_figure", "tissue_overlay_figure",
    "histogram_by_group_figure", "example_signals_figure", "reconstruction_figure",
    "save_html",
]

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
METHOD_COLORS = {
    "Syn": "#0072B2",
    "Sampled": "#E69F00",
    "SampleAndMean": "#009E73",
    "RandomWM": "#CC79A7",
}
"""One fixed colour per method, used by every figure."""

REAL_COLOR = "#000000"
"""Colour of the real (measured) data wherever it is drawn next to the methods."""

TISSUE_COLORS = {"CSF": "#56B4E9", "GM": "#009E73", "WM": "#D55E00"}
"""One fixed colour per tissue class."""

TISSUE_LABELS = {code: name for name, code in CODES.items()}
"""Integer codes of a tissue label volume (0: no tissue)."""

METRIC_LABELS = {
    "signal_mae": "signal MAE (attenuation)",
    "fa_mae": "FA MAE",
    "angle_deg": "angular deviation (degrees)",
}
"""Axis labels of the metrics."""

_STATS_COLUMNS = ("dataset", "metric", "tissue", "method_a", "method_b", "test", "level",
                  "n", "p_holm", "stars", "caveat")
_TEMPLATE = "plotly_white"


# --------------------------------------------------------------------------- results


def signal_mae_figure(metrics, *, tissue="all"):
    """Per-subject signal MAE by method, one panel per dataset with its own y-axis.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, metric, tissue, value``).
    tissue : str, optional
        Which tissue rows to draw.

    Returns
    -------
    plotly.graph_objects.Figure
        One box trace per (dataset, method), every subject drawn as a point over its box
        (hover gives the subject), like Fig. 1 of the method paper. The y-axes are not
        shared: datasets differ in noise and b-value, so their errors differ in scale.
    """
    fig, _ = _metric_box_figure(metrics, "signal_mae", tissue=tissue,
                                title="Signal reconstruction error by method")
    return fig


def fa_mae_figure(metrics, *, tissue="all"):
    """Per-subject FA MAE by method, one panel per dataset with its own y-axis.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, metric, tissue, value``).
    tissue : str, optional
        Which tissue rows to draw.

    Returns
    -------
    plotly.graph_objects.Figure
        As :func:`signal_mae_figure`, for the mean absolute FA difference between DTI fits
        of the real and the reconstructed signal.
    """
    fig, _ = _metric_box_figure(metrics, "fa_mae", tissue=tissue,
                                title="FA error by method")
    return fig


def angle_figure(metrics, stats=None, *, test="paired_t", tissue="all", note_ratio=2.0):
    """Angular deviation by method per dataset, with significance brackets.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, metric, tissue, value``).
    stats : pandas.DataFrame, optional
        Output of :func:`helpers.stats.compare_methods`. Its ``angle_deg`` rows of the
        chosen ``test`` and ``tissue`` with a non-empty ``stars`` become brackets.
    test : {"paired_t", "wilcoxon"}, optional
        Which test's (Holm-corrected) stars to draw. The paired t-test is the default
        because the method paper reports it; with few subjects the exact Wilcoxon p has a
        floor (0.0625 for 5 subjects) and would never reach a star.
    tissue : str, optional
        Which tissue rows to draw.
    note_ratio : float or None, optional
        A method whose median is more than this many times the largest median of the
        other methods in a panel gets a note under that panel. It is still drawn: the
        paper left RandomWM out of its Fig. 2; we show every method and say so instead.
        ``None`` turns the note off.

    Returns
    -------
    plotly.graph_objects.Figure
        Boxes with subject points as in :func:`signal_mae_figure`; for each significant
        pair a bracket (three line shapes) and an annotation with the stars whose
        ``name`` is ``"<method_a> vs <method_b>"`` and whose hover text gives the test,
        the corrected p and n. Pairs without a star get no mark. Voxel-level rows (fewer
        than 3 subjects) are marked too, with their caveat under the panel.

    Raises
    ------
    ValueError
        If ``metrics`` or ``stats`` lacks a column, ``test`` is unknown, or no angle rows
        exist for ``tissue``.
    """
    if test not in ("paired_t", "wilcoxon"):
        raise ValueError(f"test must be 'paired_t' or 'wilcoxon', got {test!r}")
    fig, panels = _metric_box_figure(metrics, "angle_deg", tissue=tissue,
                                     title="Angular deviation of the principal direction")
    if stats is not None:
        _check_columns(stats, _STATS_COLUMNS, "stats")
        sel = stats[(stats["metric"] == "angle_deg") & (stats["tissue"] == tissue)
                    & (stats["test"] == test)]
    notes = {col: [] for col in range(1, len(panels) + 1)}
    for col, (dataset, present, values) in enumerate(panels, start=1):
        if note_ratio is not None:
            notes[col] += _far_worse_notes(values, present, note_ratio)
        if stats is None:
            continue
        # a stats table read back from CSV has NaN where the stars were empty
        rows = sel[(sel["dataset"] == dataset) & (sel["stars"].fillna("").astype(str) != "")
                   & sel["method_a"].isin(present) & sel["method_b"].isin(present)]
        if rows.empty:
            continue
        _add_brackets(fig, col, rows, present, values["value"].to_numpy(float), test)
        caveats = sorted({c for c in rows["caveat"].fillna("").astype(str) if c})
        notes[col] += caveats
    for col, lines in notes.items():
        if lines:
            xref = fig.get_subplot(1, col).xaxis.plotly_name.replace("axis", "")
            fig.add_annotation(text="<br>".join(lines), xref=f"{xref} domain", yref="paper",
                               x=0.5, y=-0.12, xanchor="center", yanchor="top",
                               showarrow=False, font=dict(size=11), align="left",
                               name="note")
    if any(notes.values()):
        fig.update_layout(margin=dict(b=140))
    return fig


def tissue_figure(metrics, metric="signal_mae", *, tissues=("WM", "GM", "CSF")):
    """A metric per tissue class and method: grouped boxes, one panel per dataset.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (``dataset, subject, method, metric, tissue, value``).
    metric : str, optional
        Which metric to draw (``"signal_mae"``, ``"fa_mae"``, ``"angle_deg"``).
    tissues : sequence of str, optional
        Tissue classes on the x-axis, in this order; those without rows are skipped.

    Returns
    -------
    plotly.graph_objects.Figure
        One box trace per (dataset, method) with ``x`` the tissue of each subject's value,
        grouped by tissue (``boxmode="group"``), own y-axis per dataset.
    """
    _check_metrics(metrics)
    sel = metrics[(metrics["metric"] == metric) & metrics["tissue"].isin(tissues)]
    if sel.empty:
        raise ValueError(f"metrics has no rows with metric={metric!r} and tissue in "
                         f"{list(tissues)}")
    datasets = list(pd.unique(sel["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=False,
                        subplot_titles=[str(d) for d in datasets])
    shown = set()
    for col, dataset in enumerate(datasets, start=1):
        d = sel[sel["dataset"] == dataset]
        present_tissues = [t for t in tissues if t in set(d["tissue"])]
        for method in _present_methods(d):
            v = d[d["method"] == method]
            fig.add_trace(go.Box(
                x=v["tissue"].to_numpy(), y=v["value"].to_numpy(float), name=method,
                legendgroup=method, showlegend=method not in shown,
                marker_color=METHOD_COLORS[method], boxpoints="all", jitter=0.3,
                pointpos=0, customdata=v["subject"].to_numpy(),
                hovertemplate="%{customdata} (%{x}): %{y:.4g}<extra>" + method + "</extra>",
            ), row=1, col=col)
            shown.add(method)
        fig.update_xaxes(categoryorder="array", categoryarray=present_tissues, row=1, col=col)
    fig.update_yaxes(title_text=METRIC_LABELS.get(metric, metric), row=1, col=1)
    fig.update_layout(boxmode="group", template=_TEMPLATE,
                      title=f"{METRIC_LABELS.get(metric, metric)} per tissue")
    return fig


def training_curves_figure(histories, *, title="Training curves"):
    """Training and validation loss per epoch, one colour per method, log y-axis.

    Parameters
    ----------
    histories : dict of str to pandas.DataFrame
        Method name to its Keras history with columns ``epoch, loss`` and optionally
        ``val_loss`` (the CSV written by training).
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Per method a solid ``"<method> train"`` line and, where ``val_loss`` exists, a
        dashed ``"<method> validation"`` line in the same colour.
    """
    if not histories:
        raise ValueError("histories is empty; expected a dict method -> history DataFrame")
    _check_methods(list(histories), "histories")
    fig = go.Figure()
    for method in (m for m in METHODS if m in histories):
        h = histories[method]
        _check_columns(h, ("epoch", "loss"), f"histories[{method!r}]")
        color = METHOD_COLORS[method]
        fig.add_trace(go.Scatter(x=h["epoch"].to_numpy(), y=h["loss"].to_numpy(float),
                                 mode="lines", name=f"{method} train", legendgroup=method,
                                 line=dict(color=color, dash="solid")))
        if "val_loss" in h.columns:
            fig.add_trace(go.Scatter(x=h["epoch"].to_numpy(), y=h["val_loss"].to_numpy(float),
                                     mode="lines", name=f"{method} validation",
                                     legendgroup=method, line=dict(color=color, dash="dash")))
    fig.update_yaxes(type="log", title_text="loss (MSE)")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=_TEMPLATE, title=title)
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
        Axial slice ``k`` of ``volume[:, :, k]``; the middle slice ``Z // 2`` by default.
    title : str, optional
        Figure title.
    colorscale : str, optional
        Plotly colour scale name.
    zmin, zmax : float, optional
        Colour range; by default the smallest and largest finite value on the slice over
        all volumes, so that equal colours mean equal errors across panels.
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
    zmax = float(finite.max()) if zmax is None else zmax
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
        Axial slice for every volume; the middle slice of each by default.
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
    where = "middle axial slices" if k is None else f"axial slice {k}"
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
        Axial slice; the middle one by default.
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
        the values inside). By default the smallest and largest finite value.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One step-line trace per group with ``x`` the bin centres and ``y`` the density
        (area 1). Histograms are computed here with numpy, so the figure stays small even
        for millions of values. Methods, ``"real"`` and tissues get their fixed colours.
    """
    if not values_by_group:
        raise ValueError("values_by_group is empty; expected a dict group -> values")
    if int(bins) < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    finite = {}
    for name, v in values_by_group.items():
        v = np.asarray(v, dtype=float).ravel()
        finite[name] = v[np.isfinite(v)]
        if finite[name].size == 0:
            raise ValueError(f"values_by_group[{name!r}] has no finite value")
    if value_range is None:
        lo = min(v.min() for v in finite.values())
        hi = max(v.max() for v in finite.values())
    else:
        lo, hi = map(float, value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    if lo == hi:  # all values equal: one bin of width 1 around them
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for i, (name, v) in enumerate(finite.items()):
        counts, _ = np.histogram(v, bins=edges)
        if counts.sum() == 0:
            raise ValueError(f"values_by_group[{name!r}] has no value inside {lo, hi}")
        density = counts / (counts.sum() * np.diff(edges))
        fig.add_trace(go.Scatter(x=centres, y=density, mode="lines", line_shape="hvh",
                                 name=str(name), line=dict(color=_group_color(name, i)),
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
        Method to its reconstruction of ``real``, row for row.
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
    _check_methods(list(recon_by_method), "recon_by_method")
    recon = {}
    for method in (m for m in METHODS if m in recon_by_method):
        recon[method] = np.asarray(recon_by_method[method], dtype=float)
        if recon[method].shape != real.shape:
            raise ValueError(f"recon_by_method[{method!r}] has shape {recon[method].shape} "
                             f"but real has shape {real.shape}")
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
                                     line=dict(color=METHOD_COLORS[method])), **pos)
    fig.update_xaxes(title_text="direction index")
    fig.update_yaxes(title_text="attenuation", col=1)
    fig.update_layout(template=_TEMPLATE, title="Real voxels and their reconstructions",
                      height=max(350, 300 * n_rows))
    return fig


def save_html(fig, path):
    """Write ``fig`` as a standalone HTML file, atomically.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        The figure.
    path : str or pathlib.Path
        Output file, usually ``*.html``; parent folders are created.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    plotly.js is embedded (``include_plotlyjs=True``, about 4.5 MB), so the file opens
    without internet, e.g. on a cluster node or offline laptop; ``"cdn"`` would not.
    """
    if not isinstance(fig, go.Figure):
        raise ValueError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True)
    return path


# --------------------------------------------------------------------------- helpers


def _check_metrics(metrics):
    _check_columns(metrics, METRICS_COLUMNS, "metrics")
    _check_methods(metrics["method"], "metrics")


def _present_methods(frame):
    names = set(frame.loc[frame["value"].notna(), "method"])
    return [m for m in METHODS if m in names]


def _metric_box_figure(metrics, metric, *, tissue, title):
    """Boxes of one metric by method, one panel per dataset; also returns the panels."""
    _check_metrics(metrics)
    sel = metrics[(metrics["metric"] == metric) & (metrics["tissue"] == tissue)]
    if sel.empty:
        raise ValueError(f"metrics has no rows with metric={metric!r} and tissue={tissue!r}")
    datasets = list(pd.unique(sel["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=False,
                        subplot_titles=[str(d) for d in datasets])
    label = METRIC_LABELS.get(metric, metric)
    panels, shown = [], set()
    for col, dataset in enumerate(datasets, start=1):
        d = sel[sel["dataset"] == dataset]
        present = _present_methods(d)
        for method in present:
            v = d[d["method"] == method]
            fig.add_trace(go.Box(
                x=[method] * len(v), y=v["value"].to_numpy(float), name=method,
                legendgroup=method, showlegend=method not in shown,
                marker_color=METHOD_COLORS[method], boxpoints="all", jitter=0.3, pointpos=0,
                customdata=v["subject"].to_numpy(),
                hovertemplate="%{customdata}: %{y:.4g}<extra>" + method + "</extra>",
            ), row=1, col=col)
            shown.add(method)
        fig.update_xaxes(categoryorder="array", categoryarray=present, row=1, col=col)
        panels.append((dataset, present, d[d["method"].isin(present)]))
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(template=_TEMPLATE, title=title)
    return fig, panels


def _add_brackets(fig, col, rows, present, values, test):
    """Significance brackets over panel ``col``; x positions are category indices."""
    sub = fig.get_subplot(1, col)
    xref = sub.xaxis.plotly_name.replace("axis", "")
    yref = sub.yaxis.plotly_name.replace("axis", "")
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    step = 0.08 * span
    pairs = sorted(((present.index(a), present.index(b), r) for a, b, r in
                    zip(rows["method_a"], rows["method_b"], rows.itertuples())),
                   key=lambda t: (t[1] - t[0], t[0]))
    levels = []  # per level, the (left, right) spans already drawn there
    for ia, ib, r in pairs:
        # The lowest level where this bracket touches no other one.
        k = next((k for k, spans in enumerate(levels)
                  if all(ib < s0 or ia > s1 for s0, s1 in spans)), len(levels))
        if k == len(levels):
            levels.append([])
        levels[k].append((ia, ib))
        y = hi + step * (k + 1)
        line = dict(color="#444444", width=1)
        for x0, x1, y0, y1 in ((ia, ib, y, y), (ia, ia, y - step / 3, y),
                               (ib, ib, y - step / 3, y)):
            fig.add_shape(type="line", x0=x0, x1=x1, y0=y0, y1=y1, xref=xref, yref=yref,
                          line=line, name=f"{r.method_a} vs {r.method_b}")
        fig.add_annotation(
            x=(ia + ib) / 2, y=y, xref=xref, yref=yref, text=r.stars, showarrow=False,
            yanchor="bottom", name=f"{r.method_a} vs {r.method_b}",
            hovertext=(f"{r.method_a} vs {r.method_b}: {test}, Holm p = {r.p_holm:.3g}, "
                       f"n = {r.n} ({r.level} level)"))
    fig.update_yaxes(range=[lo - 0.05 * span, hi + step * (len(levels) + 1)], row=1, col=col)


def _far_worse_notes(values, present, ratio):
    medians = values.groupby("method")["value"].median()
    notes = []
    for method in present:
        others = medians.drop(method)
        if others.empty or not np.isfinite(others.max()) or others.max() <= 0:
            continue
        if medians[method] > ratio * others.max():
            notes.append(f"{method} is far worse (median {medians[method]:.3g} vs at most "
                         f"{others.max():.3g}); shown, not hidden as in the paper")
    return notes


def _group_color(name, i):
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    if name in TISSUE_COLORS:
        return TISSUE_COLORS[name]
    if str(name).lower() == "real":
        return REAL_COLOR
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def _slice_index(shape, slice_index):
    if slice_index is None:
        return shape[2] // 2
    k = int(slice_index)
    if not 0 <= k < shape[2]:
        raise ValueError(f"slice_index {slice_index} is outside 0..{shape[2] - 1} "
                         f"for a volume of shape {shape}")
    return k


def _axial_slices(volumes, slice_index, *, same_shape):
    """Dict name -> 2-D axial slice; the slice index (None when per-volume middles)."""
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
    slices = {n: v[:, :, _slice_index(v.shape, slice_index)] for n, v in arrays.items()}
    if slice_index is not None or len(shapes) == 1:
        k = _slice_index(next(iter(arrays.values())).shape, slice_index)
    else:
        k = None
    return slices, k


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
