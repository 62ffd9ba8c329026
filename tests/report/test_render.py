"""Shareable HTML: no code, stderr or progress debris, plotly.js once per folder, an index
that links what is there, and provenance with the keys a reader needs."""

import json
import os
import re

import nbformat
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from plotly.offline import get_plotlyjs

import helpers
from conftest import HAND_VERDICT
from helpers.config import CONFIG_DIR, load_config, load_profile
from helpers.contract import method_name, replicate_seeds
from helpers.report.provenance import PACKAGES, provenance_markdown, write_provenance
from helpers.report.render import (
    PLOTLY_MIME,
    figure_html,
    render_html,
    setup_notebook,
    accuracy_chart,
    write_index,
    write_plotlyjs,
    write_root_index,
)

PROGRESS = (
    "result 42\n"
    " 45%|####5     | 9/20 [00:01<00:01, 8.00it/s]\r100%|##########| 20/20 [00:02<00:00]\n"
    "\x1b[1m1/30\x1b[0m ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.1\x08\x08\x08\n"
    "Epoch 1/50\n"
    "30/30 [==============================] - 0s 1ms/step\n"
    "\u25a1\u25a1\u25a1\u25a1\n"
    "final table row\n"
)


def _figure():
    return go.Figure(go.Bar(x=["Syn", "Sampled"], y=[0.08, 0.07]), layout={"title": "FIGURE_TITLE"})


@pytest.fixture
def renderer(monkeypatch):
    """setup_notebook() changes plotly's default renderer: put it back afterwards."""
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    setup_notebook()
    return pio.renderers["synthqa"]


@pytest.fixture
def executed(renderer):
    """An executed notebook as the kernel leaves it: code, stdout with progress bars,
    stderr, a figure from our renderer and one from plotly's own embedding renderer."""
    embedded = {"text/html": "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
                f"<script charset=\"utf-8\">{get_plotlyjs()}</script>"}
    return new_notebook(cells=[
        new_markdown_cell("# The verdict\nPROSE_MARKER"),
        new_code_cell("CODE_MARKER = 1\nprint('result 42')", execution_count=1, outputs=[
            new_output("stream", name="stdout", text=PROGRESS),
            new_output("stream", name="stderr", text="I0000 cudart_stub.cc:31] STDERR_MARKER GPU will not be used\n"),
            new_output("display_data", data=embedded),
            new_output("display_data", data=renderer.to_mimebundle(_figure().to_dict())),
        ]),
        new_code_cell("OTHER_CODE = 2", execution_count=2, outputs=[
            new_output("display_data", data={PLOTLY_MIME: _figure().to_plotly_json(), "text/plain": "Figure"}),
        ]),
    ])


def test_setup_notebook_figures_carry_a_div_and_the_json_but_no_plotlyjs(renderer):
    assert pio.renderers.default == "synthqa"
    bundle = renderer.to_mimebundle(_figure().to_dict())
    assert set(bundle) == {"text/html", PLOTLY_MIME}
    assert bundle[PLOTLY_MIME]["layout"]["title"]["text"] == "FIGURE_TITLE"
    assert "Plotly.newPlot" in bundle["text/html"] and "FIGURE_TITLE" in bundle["text/html"]
    assert len(bundle["text/html"]) < 20_000  # plotly.js itself is ~4.7 MB
    assert "<script src" not in figure_html(_figure())


def test_rendering_hides_code_stderr_and_progress_and_loads_plotlyjs_once(executed, tmp_path):
    html_path = render_html(executed, tmp_path / "subject" / "02_simulate.html", plotlyjs_src="../plotly.min.js")
    page = html_path.read_text()
    assert "PROSE_MARKER" in page and "result 42" in page and "final table row" in page
    for absent in ("CODE_MARKER", "OTHER_CODE", "STDERR_MARKER", "cudart", "9/20", "20/20", "━", "Epoch 1/50",
                   "[=====", "\u25a1", "\x08", "\r", "window.PlotlyConfig"):
        assert absent not in page, absent
    assert get_plotlyjs()[:2000] not in page  # not embedded
    sources = re.findall(r"<script[^>]*\ssrc=\"([^\"]+)\"", page)
    assert [s for s in sources if "plotly" in s] == ["../plotly.min.js"]
    head = page[page.index("<head>"):page.index("</head>")]
    assert head.index("../plotly.min.js") < head.index("require")  # before require.js: window.Plotly
    assert page.count("Plotly.newPlot") == 2  # both figures drawn from the shared copy
    assert html_path.stat().st_size < 1_500_000
    # the executed notebook itself is untouched
    assert any(o.get("name") == "stderr" for o in executed.cells[1].outputs)


def test_rendering_reads_a_notebook_file(executed, tmp_path):
    nbformat.write(executed, tmp_path / "n.ipynb")
    page = render_html(tmp_path / "n.ipynb", tmp_path / "n.html").read_text()
    assert "PROSE_MARKER" in page and "CODE_MARKER" not in page
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_plotlyjs_is_written_once_per_folder(tmp_path):
    path = write_plotlyjs(tmp_path)
    assert path == tmp_path / "plotly.min.js" and path.read_text() == get_plotlyjs()
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    assert write_plotlyjs(tmp_path).stat().st_mtime_ns == before - 10**9  # not rewritten


def test_accuracy_chart_draws_every_generator_and_the_floor():
    distances = pd.DataFrame([
        dict(dataset="invivo", metric="c2st_accuracy", method="Calibrated", score=0.69, score_low=0.67,
             score_high=0.71, real_vs_real=0.5),
        dict(dataset="invivo", metric="c2st_accuracy", method="RandomWM", score=0.96, score_low=0.95,
             score_high=0.97, real_vs_real=0.5),
        dict(dataset="invivo", metric="code_mmd", method="RandomWM", score=0.3, score_low=0.2, score_high=0.4,
             real_vs_real=0.0),
    ])
    svg = accuracy_chart(distances, "invivo", width=420)
    assert svg.startswith("<svg") and svg.count("<rect") == 2  # c2st rows only
    assert ">69%<" in svg and ">96%<" in svg and "two halves of the scan: 50%" in svg
    # bars on a 0.4-1.0 axis from x = 130 to 370: 0.69 -> 130 + 240 * 0.29 / 0.6 = 246
    assert 'width="116.0"' in svg
    assert accuracy_chart(distances, "sample") == ""


def _touch(path, text="<html></html>"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _links(page):
    return set(re.findall(r'href="([^"]+)"', page))


def test_index_links_the_summary_each_subjects_reports_and_failures(tmp_path):
    ds = tmp_path / "sample"
    _touch(ds / "summary" / "04_results.html")
    _touch(ds / "summary" / "signal_mae.html")
    HAND_VERDICT.to_csv(ds / "summary" / "verdict.csv", index=False)
    for name in ("01_load_data", "02_simulate", "03_train_autoencoder"):
        _touch(ds / "s01" / f"{name}.html")
    _touch(ds / "s01" / "metrics" / "error_maps.html")
    _touch(ds / "s02" / "01_load_data.failed.ipynb", "{}")
    _touch(ds / "provenance.json", "{}")
    _touch(ds / "plotly.min.js", "")
    page = write_index(ds).read_text()
    assert _links(page) == {
        "summary/04_results.html", "summary/signal_mae.html",
        "s01/01_load_data.html", "s01/02_simulate.html", "s01/03_train_autoencoder.html", "s01/metrics/error_maps.html",
        "s02/01_load_data.failed.ipynb", "provenance.json",
    }
    assert "Sampled closest, 0.0042 below Syn" in page and "best in 4/5 replicates" in page


def test_index_without_a_summary_says_there_is_no_verdict(tmp_path):
    _touch(tmp_path / "d" / "s01" / "01_load_data.html")
    page = write_index(tmp_path / "d").read_text()
    assert "No verdict yet" in page and _links(page) == {"s01/01_load_data.html"}


def test_root_index_links_every_dataset_and_the_combined_summary(tmp_path):
    _touch(tmp_path / "summary" / "04_results.html")
    page = write_root_index(tmp_path, [tmp_path / "a", tmp_path / "b"]).read_text()
    assert _links(page) == {"summary/04_results.html", "a/index.html", "b/index.html"}


def test_provenance_records_versions_machine_profile_seeds_config_and_command(tmp_path):
    from importlib.metadata import version

    config = load_config(CONFIG_DIR / "sample.yaml")
    profile = load_profile("quick")
    path = write_provenance(tmp_path, config=config, profile=profile, subject="small_64D", command="synthqa run x.yaml")
    record = json.loads(path.read_text())
    assert path == tmp_path / "provenance.json"
    assert {"written", "command", "versions", "git", "machine", "profile", "seeds", "config", "dataset", "subject"} <= set(record)
    assert record["versions"]["synthqa"] == helpers.__version__
    assert {"python", *PACKAGES} <= set(record["versions"])
    assert record["versions"]["numpy"] == version("numpy") and record["versions"]["dipy"] == version("dipy")
    assert record["git"] is None or re.fullmatch(r"[\w.\-]+", record["git"])
    assert record["machine"]["cpu_count"] == os.cpu_count() and isinstance(record["machine"]["gpus"], list)
    assert record["profile"] == profile
    assert record["seeds"]["seed"] == config.seed
    syn = record["seeds"]["per_replicate"][method_name("Syn")]
    assert len(syn) == profile["replicates"]
    assert syn[1] == dict(zip(("simulation", "training"), replicate_seeds(config.seed, "Syn", 1)))
    assert record["config"]["text"] == (CONFIG_DIR / "sample.yaml").read_text()
    assert record["command"] == "synthqa run x.yaml" and record["subject"] == "small_64D"

    text = provenance_markdown(tmp_path)
    assert helpers.__version__ in text and "quick" in text and "synthqa run x.yaml" in text
    assert "kind: sample" in text  # the config itself
    assert "No provenance" in provenance_markdown(tmp_path / "elsewhere")


def test_tables_show_every_row_and_cell_without_nan_or_row_numbers():
    from helpers.report.render import table_html

    long_text = "named the true generator in 6 of 6 known-answer cases on this scan; " * 3
    frame = pd.DataFrame({"judge": ["c2st"] * 70, "reason": [long_text] + [None] * 69, "score": [0.123456] * 70})
    page = table_html(frame)
    assert page.count("<tr") == 71  # the header and every row: no head-and-tail cut
    assert long_text.strip() in page and "…" not in page and "..." not in page
    assert "NaN" not in page and "None" not in page and "<td>0.1235</td>" in page
    assert "<th></th>" not in page  # no column of row numbers
    pivot = frame.head(2).set_index("judge")
    assert "<th>c2st</th>" in table_html(pivot)  # a meaningful index stays


def test_a_summary_over_datasets_records_each_datasets_seeds(tmp_path):
    configs = [load_config(CONFIG_DIR / "sample.yaml"), load_config(CONFIG_DIR / "invivo.yaml")]
    write_provenance(tmp_path, configs=configs, profile=load_profile("quick"), command="synthqa run a b")
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert {d: s["seed"] for d, s in record["seeds"]["per_dataset"].items()} == {"sample": configs[0].seed,
                                                                                  "invivo": configs[1].seed}
    assert f"| seed | invivo {configs[1].seed}; sample {configs[0].seed} |" in provenance_markdown(tmp_path)  # by name

