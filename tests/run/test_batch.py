"""The batch runner end to end on the real sample, quick profile: papermill runs of the
four notebooks, a run killed at a named step (a deterministic fault, not a timer) and
resumed, a failing subject beside a good one, shareable HTML, a quiet console; and, without
notebooks, the orchestration of several datasets."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

import helpers.run.batch as batch
from helpers.run.batch import main
from helpers.config import CONFIG_DIR, PROJECT_ROOT
from helpers.contract import COLUMNS, METHODS, METRICS
from helpers.processes import tagged_processes
from helpers.run.results import SubjectResult

SAMPLE = CONFIG_DIR / "sample.yaml"
NOTEBOOKS = ["01_load_data", "02_simulate", "03_train_autoencoder"]
NOISE = ("IPKernelApp", "without encryption", "cuInit", "cudart", "oneDNN", "absl::", "Passed unknown parameter", "FAILED ()")


def _batch(*args, env=None, timeout=1500):
    return subprocess.run(
        [sys.executable, "-m", "helpers.run.batch", *map(str, args)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def _tagged(tag):
    """(pid, command line) of the processes whose environment carries ``SYNTHQA_TEST_TAG=tag``."""
    return [(pid, p.cmdline) for pid, p in tagged_processes("SYNTHQA_TEST_TAG", tag).items()]


def _killed_while_training(out, tmp):
    """The quick sample run, SIGKILLed with its whole process group once its models train
    (a training worker exists), as a user's `kill -9` or a cluster's OOM killer would.
    Returns what was left: processes 15 s later, files in the run's own TMPDIR."""
    import time
    import uuid

    tag = uuid.uuid4().hex
    env = {**os.environ, "SYNTHQA_TEST_TAG": tag, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp)}
    run = subprocess.Popen([sys.executable, "-m", "helpers.run.batch", str(SAMPLE), "--profile", "quick", "--out", str(out)],
                           cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        simulated = out / "sample" / "small_64D" / "02_simulate.ipynb"  # 02's calibration spawns workers too

        def training():
            return simulated.exists() and any("spawn_main" in c for _, c in _tagged(tag))

        while time.monotonic() < deadline and run.poll() is None and not training():
            time.sleep(0.3)
        before = _tagged(tag)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        log, _ = run.communicate()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _tagged(tag):
        time.sleep(0.5)
    return {"first_rc": run.returncode, "first_log": log, "before_kill": [c for _, c in before],
            "left_processes": [c for _, c in _tagged(tag)], "left_in_tmp": sorted(p.name for p in Path(tmp).iterdir())}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The quick sample run, killed (SIGKILL to its process group) while its models train,
    then rerun."""
    out = tmp_path_factory.mktemp("results")
    subject_dir = out / "sample" / "small_64D"
    state = _killed_while_training(out, tmp_path_factory.mktemp("system_tmp"))
    state |= {
        "done_after_kill": sorted(p.name for p in subject_dir.glob("*.ipynb") if not p.name.startswith(".")),
        "leftovers": sorted(p.name for p in out.rglob(".*.tmp-*")),
        "first_mtime": {n: (subject_dir / f"{n}.ipynb").stat().st_mtime for n in NOTEBOOKS[:2]
                        if (subject_dir / f"{n}.ipynb").exists()},
    }
    second = _batch(SAMPLE, "--profile", "quick", "--out", out)
    return {"out": out, "subject_dir": subject_dir, "rc": second.returncode, "stdout": second.stdout,
            "stderr": second.stderr, "log": second.stdout + second.stderr, **state}


@pytest.mark.slow
def test_killed_run_left_only_whole_files_and_the_rerun_finished(sample_run):
    assert sample_run["first_rc"] == -signal.SIGKILL, sample_run["first_log"][-3000:]
    assert sample_run["rc"] == 0, sample_run["log"][-3000:]
    sd = sample_run["subject_dir"]
    # the kill came while 03's output was still under its temporary name: never renamed into place
    assert sample_run["done_after_kill"] == ["01_load_data.ipynb", "02_simulate.ipynb"]
    assert any(name.startswith(".03_train_autoencoder.ipynb.tmp-") for name in sample_run["leftovers"])
    # the rerun skipped the finished notebooks and cleaned the killed run's temporaries
    for name, mtime in sample_run["first_mtime"].items():
        assert (sd / f"{name}.ipynb").stat().st_mtime == mtime
        assert re.search(rf"small_64D\s+{name}\s+skipped", sample_run["log"])
    assert not list(sample_run["out"].rglob(".*.tmp-*"))
    for name in NOTEBOOKS:
        nb = nbformat.read(sd / f"{name}.ipynb", as_version=4)  # whole, valid notebooks
        assert nb.metadata.papermill.parameters["subject_dir" if name != "01_load_data" else "out_dir"] == str(sd)
        assert (sd / f"{name}.html").stat().st_size > 10_000
    params = nbformat.read(sd / "03_train_autoencoder.ipynb", as_version=4).metadata.papermill.parameters
    assert set(params) == {"subject_dir", "methods", "profile", "seed", "snr", "noise", "min_pool", "wm_fa_min", "jobs"}
    assert params["profile"] == "quick"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_run_killed_with_sigkill_leaves_no_process_behind(sample_run):
    """The kernel (its own session) and the training workers (the kernel's children) die
    with the runner's process group, within seconds."""
    assert any("spawn_main" in cmd for cmd in sample_run["before_kill"]), "no training worker started"
    assert any("ipykernel" in cmd for cmd in sample_run["before_kill"])
    assert sample_run["left_processes"] == []
    # the kernel's connection file, autograph's files and the notebooks' temporaries are
    # all under the results folder (the next run clears them), none in the system's
    assert sample_run["left_in_tmp"] == []


@pytest.mark.slow
def test_console_is_quiet_and_ends_with_the_verdict_and_the_report_to_open(sample_run):
    log = sample_run["log"]
    for noise in NOISE:
        assert noise not in log, noise
    assert sample_run["stderr"] == ""  # nothing failed, nothing else to say
    for step in (*NOTEBOOKS, "evaluate", "04_results"):
        assert re.search(rf"\s{step}\s+(ran|skipped)\s", sample_run["stdout"]), step  # one line per step (not a TTY)
    tail = sample_run["stdout"].rsplit("Done in", 1)[1]
    # a verdict line per judge, from summary/verdict.csv, saying whether the judge passed its check
    assert "two-sample classifier [" in tail and "denoiser-training error" in tail
    assert tail.strip().endswith(f"open {sample_run['out'] / 'sample' / 'index.html'}")


@pytest.mark.slow
def test_outputs_of_every_step_exist(sample_run):
    sd = sample_run["subject_dir"]
    for f in ["subject.npz", "subject.json", "mask.nii.gz", "tissue.nii.gz", "synthetic/report.json",
              "models/diagnostics.csv", "models/training.json", "models/progress.jsonl",
              "metrics/metrics.csv", "metrics/noise.json", "provenance.json"]:
        assert (sd / f).is_file(), f
    assert not list((sd / "synthetic").glob("*.npz"))  # synthetic sets are regenerated, never stored
    for m in METHODS:
        for r in range(2):  # quick profile: 2 replicates
            assert (sd / "models" / m / f"r{r}.keras").is_file()
        for metric in METRICS:
            assert (sd / "metrics" / "maps" / f"{m}_{metric}.nii.gz").is_file()
    for name in ("judges", "known_answer", "known_answer_scores", "mixtures", "separability", "noise_check", "validation"):
        assert (sd / "judges" / f"{name}.csv").is_file(), name
    assert (sd / "judges" / "check.json").is_file()
    summary = sample_run["out"] / "sample" / "summary"
    for f in ["04_results.ipynb", "04_results.html", "metrics.csv", "stats.csv", "verdict.csv", "provenance.json",
              "known_answer.csv", "validation.csv"]:
        assert (summary / f).is_file(), f
    assert (sample_run["out"] / "sample" / "provenance.json").is_file()
    # every step's temporary files (TensorFlow's autograph files among them) are gone
    assert not list(sample_run["out"].rglob("logs/tmp"))
    assert json.loads((sd / "provenance.json").read_text())["machine"]["host"]
    verdict = pd.read_csv(summary / "verdict.csv")
    assert {"judge", "validated", "known_answer"} <= set(verdict.columns)
    assert list(verdict["validated"]) == sorted(verdict["validated"], reverse=True)  # validated judges first


@pytest.mark.slow
def test_reports_are_shareable(sample_run):
    dataset = sample_run["out"] / "sample"
    assert list(sample_run["out"].rglob("plotly.min.js")) == [dataset / "plotly.min.js"]  # once per dataset folder
    signature = get_plotlyjs()[:300]
    pages = list(dataset.rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        assert page.stat().st_size < 1_500_000, page
        text = page.read_text()
        assert signature not in text, page
        for noise in ("cudart", "IPKernelApp", "import helpers", "from helpers"):
            assert noise not in text, (page, noise)
    report = (dataset / "summary" / "04_results.html").read_text()
    assert '<script src="../plotly.min.js"' in report
    index = (dataset / "index.html").read_text()
    for link in ("summary/04_results.html", *(f"small_64D/{n}.html" for n in NOTEBOOKS)):
        assert f'href="{link}"' in index
    assert "two-sample classifier [" in index  # the verdict lines, validated judges first


@pytest.mark.slow
def test_tidy_tables_have_the_documented_shape_and_names(sample_run):
    summary = sample_run["out"] / "sample" / "summary"
    metrics = pd.read_csv(summary / "metrics.csv", dtype={"subject": str})
    assert list(metrics.columns) == list(COLUMNS)
    assert set(metrics["method"]) == set(METHODS) and set(metrics["metric"]) == set(METRICS)
    assert set(metrics["dataset"]) == {"sample"} and set(metrics["subject"]) == {"small_64D"}
    assert set(metrics["replicate"]) == {0, 1}
    overall = metrics[metrics["tissue"] == "all"]
    assert len(overall) == len(METHODS) * 2 * len(METRICS)  # one value per method, replicate and metric
    assert not metrics.duplicated(["dataset", "subject", "method", "replicate", "metric", "tissue"]).any()
    stats = pd.read_csv(summary / "stats.csv")
    assert set(stats["level"]) == {"replicate"}  # one subject: tests across replicates, never voxels


@pytest.mark.slow
def test_rerun_skips_finished_steps_whatever_the_jobs(sample_run, capsys):
    sd = sample_run["subject_dir"]
    before = {n: (sd / f"{n}.ipynb").stat().st_mtime for n in NOTEBOOKS}
    assert main([str(SAMPLE), "--profile", "quick", "--jobs", "1", "--out", str(sample_run["out"])]) == 0
    assert {n: (sd / f"{n}.ipynb").stat().st_mtime for n in NOTEBOOKS} == before
    assert capsys.readouterr().out.count("skipped") >= 3


@pytest.mark.slow
def test_summary_across_two_datasets_draws_a_panel_each(sample_run, tmp_path):
    """Notebook 04 over two dataset folders (the sample, and a copy named otherwise)."""
    other = tmp_path / "other_site"
    shutil.copytree(sample_run["subject_dir"], other / "subj01", ignore=shutil.ignore_patterns("metrics", "*.ipynb", "*.html"))
    assert batch.evaluate(other / "subj01") == "ran"  # the tables name the subject by its folder
    summary = tmp_path / "summary"
    result = batch.run_summary([sample_run["out"] / "sample", other], summary)
    assert result.ok, result.describe()
    metrics = pd.read_csv(summary / "metrics.csv", dtype={"subject": str})
    assert set(zip(metrics["dataset"], metrics["subject"])) == {("sample", "small_64D"), ("other_site", "subj01")}
    nb = nbformat.read(summary / "04_results.ipynb", as_version=4)
    fig = next(
        o["data"]["application/vnd.plotly.v1+json"]
        for c in nb.cells if "signal_mae_figure" in c.source
        for o in c.outputs if "data" in o and "application/vnd.plotly.v1+json" in o["data"]
    )
    axes = [k for k in fig["layout"] if k.startswith("xaxis")]
    assert len(axes) == 2  # one panel per dataset
    assert {a["text"] for a in fig["layout"]["annotations"]} >= {"sample", "other_site"}


@pytest.mark.slow
def test_a_step_reruns_when_its_parameters_change(sample_run, tmp_path):
    from helpers.run.batch import _executed_parameters, run_notebook

    sd = sample_run["subject_dir"]
    params = _executed_parameters(sd / "01_load_data.ipynb")
    before = (sd / "01_load_data.ipynb").stat().st_mtime
    assert run_notebook("01_load_data", sd, params) == "skipped"
    assert (sd / "01_load_data.ipynb").stat().st_mtime == before
    elsewhere = tmp_path / "copy"
    assert run_notebook("01_load_data", elsewhere, {**params, "out_dir": str(elsewhere)}) == "ran"
    assert (elsewhere / "subject.npz").is_file()


# --------------------------------------------------------------------------- no notebooks


def test_relative_paths_are_resolved_before_work_is_sent_out(tmp_path, monkeypatch):
    seen = {}

    def fake_map(config_path, subjects, **kwargs):
        seen.update(config=config_path, out=kwargs["out"])
        return iter(())

    monkeypatch.setattr(batch, "_map_subjects", fake_map)
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLE, tmp_path / "sample.yaml")
    batch.run_dataset("sample.yaml", profile="quick", out="relative_results_dir")
    assert Path(seen["config"]).is_absolute() and Path(seen["config"]) == tmp_path / "sample.yaml"
    assert Path(seen["out"]) == tmp_path / "relative_results_dir"


def test_several_datasets_get_their_own_summary_and_a_combined_one(tmp_path, monkeypatch, capsys):
    """The orchestration, with the notebooks replaced by stand-ins that write what they would."""
    calls = []

    def fake_subject(config_path, subject, *, out, **kwargs):
        config = batch.load_config(config_path)
        metrics = config.results_dir(out) / subject / "metrics" / "metrics.csv"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(",".join(COLUMNS) + "\n")
        calls.append(("subject", config.dataset, subject, kwargs["jobs"]))
        return SubjectResult(subject=subject, dataset=config.dataset, steps=[("01_load_data", "ran", 1.0)])

    def fake_notebook(name, out_dir, parameters, **kwargs):
        calls.append((name, tuple(Path(d).name for d in parameters["results_dirs"]), Path(out_dir)))
        Path(out_dir, "04_results.html").write_text("<html></html>")
        return "ran"

    monkeypatch.setattr(batch, "run_subject", fake_subject)
    monkeypatch.setattr(batch, "run_notebook", fake_notebook)
    other = tmp_path / "other.yaml"
    other.write_text(SAMPLE.read_text().replace("dataset: sample", "dataset: other_site"))
    out = tmp_path / "out"
    assert main([str(SAMPLE), str(other), "--profile", "quick", "--jobs", "3", "--out", str(out)]) == 0
    assert calls == [
        ("subject", "sample", "small_64D", 3),
        ("04_results", ("sample",), out / "sample" / "summary"),
        ("subject", "other_site", "small_64D", 3),
        ("04_results", ("other_site",), out / "other_site" / "summary"),
        ("04_results", ("sample", "other_site"), out / "summary"),
    ]
    for folder in (out / "sample", out / "other_site", out):
        assert (folder / "index.html").is_file() and (folder / "plotly.min.js").is_file()
    assert (out / "summary" / "provenance.json").is_file()
    printed = capsys.readouterr().out
    assert f"open {out / 'index.html'}" in printed and f"open {out / 'sample' / 'index.html'}" in printed


def test_a_steps_temporary_folder_is_its_own_and_goes_with_it(tmp_path, monkeypatch):
    """The step's processes get TMPDIR under the results folder through their own
    environment; this process's environment is untouched (a Dask worker runs subjects in
    threads of one process), and the step's folder is removed."""
    import tempfile

    from helpers.run.batch import TMP_FOLDER, step_env, step_tempdir

    outside = Path(tempfile.mkdtemp())
    monkeypatch.setenv("TMPDIR", str(outside))
    with step_tempdir(tmp_path / "subject") as folder:
        assert folder == tmp_path / "subject" / TMP_FOLDER and folder.is_dir()
        assert step_env(folder)["TMPDIR"] == str(folder)
        assert step_env(folder, 3)["OPENBLAS_NUM_THREADS"] == "3" == step_env(folder, 3)["OMP_NUM_THREADS"]
        assert os.environ["TMPDIR"] == str(outside)
        (folder / "left.json").write_text("{}")
    assert not folder.exists() and os.environ["TMPDIR"] == str(outside)
