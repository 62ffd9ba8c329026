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
import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

import helpers.batch as batch
from helpers.batch import FAIL_AT, main
from helpers.config import CONFIG_DIR, PROJECT_ROOT
from helpers.contract import COLUMNS, METHODS, METRICS
from helpers.results import SubjectResult

SAMPLE = CONFIG_DIR / "sample.yaml"
NOTEBOOKS = ["01_load_data", "02_simulate", "03_train_autoencoder"]
NOISE = ("IPKernelApp", "without encryption", "cuInit", "cudart", "oneDNN", "absl::", "Passed unknown parameter", "FAILED ()")


def _batch(*args, env=None, timeout=1500):
    return subprocess.run(
        [sys.executable, "-m", "helpers.batch", *map(str, args)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The quick sample run, killed by itself (SIGKILL) as notebook 02 starts, then rerun."""
    out = tmp_path_factory.mktemp("results")
    subject_dir = out / "sample" / "small_64D"
    first = _batch(SAMPLE, "--profile", "quick", "--out", out, env={FAIL_AT: "02_simulate:kill"})
    state = {
        "first_rc": first.returncode,
        "first_log": first.stdout + first.stderr,
        "done_after_kill": sorted(p.name for p in subject_dir.glob("*.ipynb") if not p.name.startswith(".")),
        "leftovers": sorted(p.name for p in out.rglob(".*.tmp-*")),
        "first_mtime": (subject_dir / "01_load_data.ipynb").stat().st_mtime if (subject_dir / "01_load_data.ipynb").exists() else None,
    }
    second = _batch(SAMPLE, "--profile", "quick", "--out", out)
    return {"out": out, "subject_dir": subject_dir, "rc": second.returncode, "stdout": second.stdout,
            "stderr": second.stderr, "log": second.stdout + second.stderr, **state}


@pytest.mark.slow
def test_killed_run_left_only_whole_files_and_the_rerun_finished(sample_run):
    assert sample_run["first_rc"] == -signal.SIGKILL, sample_run["first_log"][-3000:]
    assert sample_run["rc"] == 0, sample_run["log"][-3000:]
    sd = sample_run["subject_dir"]
    # the kill came while 02's output was still under its temporary name: never renamed into place
    assert sample_run["done_after_kill"] == ["01_load_data.ipynb"]
    assert any(name.startswith(".02_simulate.ipynb.tmp-") for name in sample_run["leftovers"])
    # the rerun skipped the finished notebook and cleaned the killed run's temporaries
    assert (sd / "01_load_data.ipynb").stat().st_mtime == sample_run["first_mtime"]
    assert re.search(r"small_64D\s+01_load_data\s+skipped", sample_run["log"])
    assert not list(sample_run["out"].rglob(".*.tmp-*"))
    for name in NOTEBOOKS:
        nb = nbformat.read(sd / f"{name}.ipynb", as_version=4)  # whole, valid notebooks
        assert nb.metadata.papermill.parameters["subject_dir" if name != "01_load_data" else "out_dir"] == str(sd)
        assert (sd / f"{name}.html").stat().st_size > 10_000
    params = nbformat.read(sd / "03_train_autoencoder.ipynb", as_version=4).metadata.papermill.parameters
    assert set(params) == {"subject_dir", "methods", "profile", "seed", "snr", "noise", "min_pool", "wm_fa_min", "jobs"}
    assert params["profile"] == "quick"


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
def test_failing_subject_does_not_stop_the_others(sample_run, tmp_path, capsys, monkeypatch):
    """A 'paths' dataset: the sample again, and a subject whose mask is empty (which only
    loading the data can find: `check` passes it). The good subject also runs the
    documented example of a researcher's own generator (docs/examples/ball_stick.py)
    through every step, beside Syn."""
    import dipy.data
    import nibabel as nib

    files = Path(dipy.data.__file__).parent / "files"
    img = nib.load(files / "small_64D.nii")
    nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), tmp_path / "empty_mask.nii.gz")
    grad = f"bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}"
    config = tmp_path / "mixed.yaml"
    examples = PROJECT_ROOT / "docs" / "examples"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(examples), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(examples))
    # a library of saved signals (Syn's noise-free voxels on the sample's table, with s0)
    from helpers.layouts import load_sample
    from helpers.simulation import simulate

    sample = load_sample()
    clean, _ = simulate(sample, "Syn", 400, seed=9, snr="none")
    np.savez(tmp_path / "synlib.npz", signals=50 * clean, s0=np.full(400, 50.0), bvals=sample.bvals, bvecs=sample.bvecs)
    config.write_text(
        "dataset: mixed\nkind: paths\nprofile: quick\nmethods: [Syn, 'ball_stick:ball_stick', 'library:synlib.npz']\nsubjects:\n"
        f"  good: {{dwi: {files / 'small_64D.nii'}, {grad}, mask: all}}\n"
        f"  empty: {{dwi: {files / 'small_64D.nii'}, {grad}, mask: empty_mask.nii.gz}}\n"
    )
    out = tmp_path / "results"
    rc = main([str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    failed_nb = out / "mixed" / "empty" / "01_load_data.failed.ipynb"
    assert failed_nb.is_file() and f"open {failed_nb}" in err
    assert "mixed/empty: 01_load_data failed: ValueError" in err and "empty_mask.nii.gz" in err
    metrics = pd.read_csv(out / "mixed" / "summary" / "metrics.csv", dtype={"subject": str})
    assert set(metrics["subject"]) == {"good"}
    # the plugin went through training, evaluation and the statistics under its function's name
    assert set(metrics["method"]) == {"Syn", "ball_stick", "synlib"} and set(metrics["replicate"]) == {0, 1}
    assert (out / "mixed" / "good" / "models" / "ball_stick" / "r1.keras").is_file()
    stats = pd.read_csv(out / "mixed" / "summary" / "stats.csv")
    assert {("Syn", "ball_stick"), ("Syn", "synlib"), ("ball_stick", "synlib")} == set(zip(stats["method_a"], stats["method_b"]))
    # the known-answer check ran for every generator, the library included
    known = pd.read_csv(out / "mixed" / "summary" / "known_answer.csv", dtype={"subject": str})
    assert set(known["truth"]) == {"Syn", "ball_stick", "synlib"}
    # Syn and a library of Syn's own voxels are one distribution: the pseudo-scans cannot tell them apart
    sep = pd.read_csv(out / "mixed" / "summary" / "separability.csv").set_index(["a", "b"])
    assert not sep.loc[("Syn", "synlib"), "separable"]
    report = (out / "mixed" / "summary" / "04_results.html").read_text()
    assert "synlib: a library of 400 unique voxels" in report


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
    from helpers.batch import _executed_parameters, run_notebook

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


def _tagged(tag):
    """pids of the processes whose environment carries ``SYNTHQA_TEST_TAG=tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"SYNTHQA_TEST_TAG={tag}".encode() in env.split(b"\0"):
            found.append((int(entry.name), cmd))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_run_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    """SIGKILL to the runner's process group while models train: the kernel (its own
    session) and the training workers (the kernel's children) die with it."""
    import time
    import uuid

    tag = uuid.uuid4().hex
    system_tmp = tmp_path / "system_tmp"  # the run's TMPDIR: nothing of the run may be left in it
    system_tmp.mkdir()
    env = {**os.environ, "SYNTHQA_TEST_TAG": tag, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(system_tmp)}
    run = subprocess.Popen(
        [sys.executable, "-m", "helpers.cli", "run", str(CONFIG_DIR / "sample.yaml"), "--profile", "quick",
         "--out", str(tmp_path / "results")],
        cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("spawn_main" in cmd for _, cmd in _tagged(tag)):
            assert run.poll() is None, "the run ended before its training workers started"
            time.sleep(0.5)
        before = _tagged(tag)
        assert any("spawn_main" in cmd for _, cmd in before), "no training worker started"
        assert any("ipykernel" in cmd for _, cmd in before)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _tagged(tag):
        time.sleep(0.5)
    assert _tagged(tag) == []
    # the kernel's connection file, autograph's files and the notebooks' temporaries are
    # all under the results folder (the next run clears them), none in the system's
    assert sorted(p.name for p in system_tmp.iterdir()) == []


def test_a_steps_temporary_folder_is_its_own_and_goes_with_it(tmp_path, monkeypatch):
    """The step's processes get TMPDIR under the results folder through their own
    environment; this process's environment is untouched (a Dask worker runs subjects in
    threads of one process), and the step's folder is removed."""
    import tempfile

    from helpers.batch import TMP_FOLDER, step_env, step_tempdir

    outside = Path(tempfile.mkdtemp())
    monkeypatch.setenv("TMPDIR", str(outside))
    with step_tempdir(tmp_path / "subject") as folder:
        assert folder == tmp_path / "subject" / TMP_FOLDER and folder.is_dir()
        assert step_env(folder)["TMPDIR"] == str(folder)
        assert step_env(folder, 3)["OPENBLAS_NUM_THREADS"] == "3" == step_env(folder, 3)["OMP_NUM_THREADS"]
        assert os.environ["TMPDIR"] == str(outside)
        (folder / "left.json").write_text("{}")
    assert not folder.exists() and os.environ["TMPDIR"] == str(outside)
