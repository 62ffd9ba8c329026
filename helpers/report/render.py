"""Shareable HTML: executed notebooks without code or debris, plotly.js once per folder,
and an ``index.html`` per dataset.

A results folder holds one ``plotly.min.js`` (:func:`write_plotlyjs`); every rendering
and figure below it loads that copy with ``<script src="../plotly.min.js">`` instead of
embedding its own 4.7 MB. The notebooks call :func:`setup_notebook` first, so a figure's
output is a small ``<div>`` plus plotly's JSON (which JupyterLab draws itself).

:func:`render_html` keeps what a reader wants from an executed notebook: prose, tables,
figures, printed results and errors. It hides the code cells (the executed ``.ipynb``
keeps them) and drops what is noise outside a live kernel: stderr streams (warnings,
TensorFlow start-up lines) and progress bars (tqdm, Keras), whose carriage returns and
backspaces become rows of empty boxes in a browser.
"""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path

import numpy as np

from helpers.io import atomic_path
from helpers.report.text import compact_lines, verdict_lines

__all__ = [
    "PLOTLYJS",
    "setup_notebook",
    "table_html",
    "figure_html",
    "clean_outputs",
    "render_html",
    "write_plotlyjs",
    "accuracy_chart",
    "write_index",
    "write_root_index",
]

PLOTLYJS = "plotly.min.js"
"""The file name of the one copy of plotly.js in a results folder."""

PLOTLY_MIME = "application/vnd.plotly.v1+json"
_RENDERER = "synthqa"
_DEFAULT_HEIGHT = 525  # px, as plotly's own notebook renderer

# --------------------------------------------------------------------------- notebooks


def figure_html(fig):
    """A figure as an HTML ``<div>`` drawn by an already loaded plotly.js (none embedded).

    ``fig`` is a plotly Figure or its dict (``fig.to_dict()``, or the JSON of a notebook
    output).
    """
    import plotly.io as pio

    # a height set in the figure's layout wins over the default (plotly's rule)
    return pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        default_width="100%",
        default_height=f"{_DEFAULT_HEIGHT}px",
        validate=False,
    )


def setup_notebook():
    """Make plotly figures small in executed notebooks; call it once, first thing.

    Registers and selects a plotly renderer whose output carries

    - ``text/html``: a ``<div>`` from :func:`figure_html`, drawn by the results folder's
      one ``plotly.min.js`` in the HTML renderings (:func:`render_html`), and
    - ``application/vnd.plotly.v1+json``: the figure itself, which JupyterLab draws.

    It also asks TensorFlow (if imported later in this kernel) for errors only.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer, PlotlyRenderer

    class _DivAndJson(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            bundle = PlotlyRenderer().to_mimebundle(fig_dict)
            bundle["text/html"] = figure_html(bundle[PLOTLY_MIME])
            return bundle

    pio.renderers[_RENDERER] = _DivAndJson()
    pio.renderers.default = _RENDERER
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - notebooks always have IPython
        return
    shell = get_ipython()
    if shell is not None:  # every table the notebook shows, as table_html writes it
        import pandas as pd

        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)


def table_html(frame):
    """A table as a reader wants it: every row and every cell in full, empty cells for
    missing values (not NaN), numbers to 4 significant digits, and no column of row
    numbers (a meaningful index, such as a pivot's, stays).

    >>> import pandas as pd
    >>> print(table_html(pd.DataFrame({"a": [0.123456, float("nan")]})).split("<tbody>")[1].split())
    ['<tr>', '<td>0.1235</td>', '</tr>', '<tr>', '<td></td>', '</tr>', '</tbody>', '</table>']
    """
    import pandas as pd

    plain = isinstance(frame.index, pd.RangeIndex)
    with pd.option_context("display.max_colwidth", None):
        return frame.to_html(index=not plain, na_rep="", max_rows=None, max_cols=None, border=0,
                             float_format=lambda x: f"{x:.4g}", classes="synthqa-table")


# Lines that are progress, not results: carriage returns or backspaces (bars redrawn in
# place), tqdm bars ("45%|####  | 9/20"), Keras bars ("3/30 ━━━━" or "[=====>...]"),
# Keras "Epoch 3/50" headers, and runs of block or box glyphs.
_DEBRIS = re.compile(
    r"[\r\x08]"
    r"|\d+%\|"
    r"|\d+/\d+\s*(?:\[[=>.]+\]|[━─=>.\u2500-\u257f]{3,})"
    r"|^\s*Epoch \d+/\d+\s*$"
    r"|[\u2580-\u259f\u25a0-\u25ff\u2500-\u257f]{3,}"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are text
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EMBEDDED_PLOTLYJS = re.compile(r"<script[^>]*>\s*/\*\*?\s*\n?\s*\*?\s*plotly\.js v|window\.PlotlyConfig", re.S)
_CDN_SCRIPT = re.compile(r"<script[^>]*src=\"https?://cdn\.plot\.ly/[^\"]*\"[^>]*>\s*</script>")


def _clean_text(text):
    """Stream text without progress lines and control characters."""
    if isinstance(text, list):
        text = "".join(text)
    kept = []
    for line in _ANSI.sub("", text).split("\n"):
        if _DEBRIS.search(line):
            continue
        kept.append(_CONTROL.sub("", line))
    cleaned = "\n".join(kept)
    return cleaned if cleaned.strip() else ""


def _clean_output(output):
    """One output made shareable, or None to drop it."""
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") == "stderr":
            return None
        text = _clean_text(output.get("text", ""))
        if not text:
            return None
        output["text"] = text
        return output
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        if "application/vnd.jupyter.widget-view+json" in data:
            return None  # a live widget (tqdm.auto's bar): nothing to show without a kernel
        if PLOTLY_MIME in data:
            output["data"] = {"text/html": figure_html(data[PLOTLY_MIME])}
            return output
        page = data.get("text/html")
        if page is not None:
            page = "".join(page) if isinstance(page, list) else page
            if _EMBEDDED_PLOTLYJS.search(page):
                return None  # plotly's "notebook" renderer loading its own copy
            data["text/html"] = _CDN_SCRIPT.sub("", page)
        return output
    return output  # errors stay: they say what failed


def clean_outputs(nb):
    """A copy of notebook ``nb`` whose outputs are fit to share (see the module doc)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = [o for o in (_clean_output(o) for o in cell.get("outputs", [])) if o is not None]
    return nb


def render_html(notebook, html_path, *, plotlyjs_src=f"../{PLOTLYJS}"):
    """Render an executed notebook to HTML for sharing, atomically.

    Parameters
    ----------
    notebook : str, pathlib.Path or nbformat.NotebookNode
        The executed notebook (it is not modified).
    html_path : str or pathlib.Path
        The HTML file to write.
    plotlyjs_src : str
        URL of plotly.js relative to ``html_path`` (the results folder's single copy,
        :func:`write_plotlyjs`); one ``<script src>`` for it goes first in ``<head>``,
        before nbconvert's require.js, so that plotly.js defines ``window.Plotly``.

    Returns
    -------
    pathlib.Path
        ``html_path``.
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(
        template_name="lab", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(clean_outputs(nb))
    script = f'<script src="{html.escape(plotlyjs_src, quote=True)}" charset="utf-8"></script>'
    body = re.sub(r"<head>", lambda m: f"<head>\n{script}", body, count=1)
    html_path = Path(html_path)
    with atomic_path(html_path) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return html_path


def write_plotlyjs(folder):
    """Write ``<folder>/plotly.min.js`` from the installed plotly, unless it is already there.

    Returns
    -------
    pathlib.Path
        The file.
    """
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLYJS
    source = get_plotlyjs()
    if path.is_file() and path.stat().st_size == len(source.encode("utf-8")):
        return path
    with atomic_path(path) as tmp:
        tmp.write_text(source, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- index pages

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }
.failed { color: #b00020; } .muted { color: #777; } li { margin: .2rem 0; }
"""

_NOTEBOOK_HTML = re.compile(r"^\d\d_.*\.html$")


def _link(path, base, text=None):
    rel = Path(path).relative_to(base).as_posix()
    return f'<a href="{html.escape(rel, quote=True)}">{html.escape(text or rel)}</a>'


def _figure_name(path):
    from helpers.contract import METRIC_LABELS

    return METRIC_LABELS.get(path.stem, path.stem.replace("_", " "))


def _page(title, body):
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def accuracy_chart(distances, dataset, *, width=420, bar=16):
    """An inline SVG bar chart of every generator's two-sample accuracy on one dataset,
    the real-vs-real floor drawn as a dashed line; "" without those rows.

    The axis runs from 0.4 to 1.0 (0.5: the classifier cannot tell the two apart; 1.0:
    every voxel told apart), so the charts of two datasets compare.
    """
    rows = distances[(distances["dataset"] == dataset) & (distances["metric"] == "c2st_accuracy")]
    rows = rows.sort_values("score", kind="stable")
    if rows.empty:
        return ""
    left, right, lo, hi = 130, 50, 0.4, 1.0
    x = lambda v: left + (width - left - right) * (min(max(float(v), lo), hi) - lo) / (hi - lo)  # noqa: E731
    height = bar * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="two-sample accuracy per generator, {html.escape(str(dataset))}" style="font: 11px sans-serif">']
    for i, r in enumerate(rows.itertuples(index=False)):
        y = 4 + i * bar
        out.append(f'<text x="{left - 6}" y="{y + bar - 5}" text-anchor="end">{html.escape(str(r.method))}</text>')
        out.append(f'<rect x="{left}" y="{y + 2}" width="{x(r.score) - left:.1f}" height="{bar - 4}" fill="#4477AA"/>')
        if np.isfinite(r.score_low) and np.isfinite(r.score_high):
            out.append(f'<line x1="{x(r.score_low):.1f}" x2="{x(r.score_high):.1f}" y1="{y + bar / 2}" '
                       f'y2="{y + bar / 2}" stroke="#222"/>')
        out.append(f'<text x="{x(r.score) + 4:.1f}" y="{y + bar - 5}">{100 * r.score:.0f}%</text>')
    floor = rows["real_vs_real"].dropna()
    axis = 4 + bar * len(rows)
    if len(floor):
        f = x(floor.iloc[0])
        out.append(f'<line x1="{f:.1f}" x2="{f:.1f}" y1="2" y2="{axis}" stroke="#CC3311" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{f:.1f}" y="{axis + 12}" text-anchor="middle" fill="#CC3311">'
                   f'two halves of the scan: {100 * floor.iloc[0]:.0f}%</text>')
    out.append(f'<text x="{left}" y="{axis + 24}" fill="#777">two-sample accuracy, 40%–100%</text>')
    out.append("</svg>")
    return "".join(out)


def _glance(summary):
    """The index's opening: per dataset its headline and the accuracy chart."""
    import pandas as pd

    blocks = compact_lines(summary / "verdict.csv", width=10_000)
    if not blocks:
        return ""
    distances = pd.read_csv(summary / "distances.csv") if (summary / "distances.csv").is_file() else None
    items = []
    for ds, lines in blocks.items():
        chart = accuracy_chart(distances, ds) if distances is not None else ""
        items.append(f"<li><strong>{html.escape(str(ds))}</strong>: {html.escape(lines[0])}<br>{chart}</li>")
    return f"<h2>At a glance</h2>\n<ul>{''.join(items)}</ul>"


def _summary_section(summary, base):
    parts = []
    glance = _glance(summary)
    if glance:
        parts.append(glance)
    lines = verdict_lines(summary / "verdict.csv")
    if lines:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        parts.append(f"<h2>Verdict, every judge</h2>\n<ul>{items}</ul>")
    else:
        parts.append('<h2>Verdict</h2>\n<p class="muted">No verdict yet: summary/verdict.csv is not there.</p>')
    report = summary / "04_results.html"
    figures = sorted(p for p in summary.glob("*.html") if p != report) if summary.is_dir() else []
    items = []
    if report.is_file():
        items.append(f"<li><strong>{_link(report, base, 'Summary report')}</strong></li>")
    elif (summary / "04_results.failed.ipynb").is_file():
        items.append(f'<li class="failed">summary failed: {_link(summary / "04_results.failed.ipynb", base)}</li>')
    items += [f"<li>{_link(p, base, _figure_name(p))}</li>" for p in figures]
    if items:
        parts.append(f"<h2>Summary</h2>\n<ul>{''.join(items)}</ul>")
    return "\n".join(parts)


def write_index(dataset_dir, *, title=None):
    """Write ``<dataset_dir>/index.html``: the verdict (from ``summary/verdict.csv``), the
    summary report and figures, and each subject's notebook reports, figures and failures.

    Returns
    -------
    pathlib.Path
        The index.
    """
    base = Path(dataset_dir)
    parts = [_summary_section(base / "summary", base)]
    rows = []
    subjects = sorted(p for p in base.iterdir() if p.is_dir() and p.name != "summary" and not p.name.startswith("."))
    for folder in subjects:
        reports = sorted(p for p in folder.glob("*.html") if _NOTEBOOK_HTML.match(p.name))
        figures = sorted(p for p in folder.rglob("*.html") if p not in reports)
        failed = sorted(folder.glob("*.failed.ipynb"))
        if not (reports or figures or failed or (folder / "subject.json").is_file()):
            continue
        cells = [
            html.escape(folder.name),
            " · ".join(_link(p, base, p.stem) for p in reports) or '<span class="muted">none yet</span>',
            " · ".join(_link(p, base, _figure_name(p)) for p in figures),
            " ".join(f'<span class="failed">failed: {_link(p, base, p.name)}</span>' for p in failed) or "ok",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if rows:
        head = "<tr><th>subject</th><th>reports</th><th>figures</th><th>status</th></tr>"
        parts.append(f"<h2>Subjects</h2>\n<table>{head}{''.join(rows)}</table>")
    if (base / "provenance.json").is_file():
        parts.append(f"<p class=\"muted\">How this was made: {_link(base / 'provenance.json', base)}</p>")
    path = base / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(_page(title or f"SynthQA: {base.name}", "\n".join(parts)), encoding="utf-8")
    return path


def write_root_index(out_dir, dataset_dirs):
    """Write ``<out_dir>/index.html`` over several datasets and their combined summary
    (``<out_dir>/summary``)."""
    base = Path(out_dir)
    parts = [_summary_section(base / "summary", base)] if (base / "summary").is_dir() else []
    items = "".join(f"<li>{_link(Path(d) / 'index.html', base, Path(d).name)}</li>" for d in dataset_dirs)
    parts.append(f"<h2>Datasets</h2>\n<ul>{items}</ul>")
    path = base / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(_page("SynthQA: all datasets", "\n".join(parts)), encoding="utf-8")
    return path
