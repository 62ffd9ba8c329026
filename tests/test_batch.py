"""The batch runner end to end on the real sample, quick profile: papermill runs of the
four notebooks, a run killed mid-subject and resumed, a failing subject beside a good
one, and configs that name what does not exist."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import METHODS
from helpers.batch import main
from helpers.config import CONFIG_DIR, PROJECT_ROOT

SAMPLE = CONFIG_DIR / "sample.yaml"
NOTEBOOKS = ["01_load_data", "02_simulate", "03_train_autoencoder"]


def _batch(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "helpers.batch", *map(str, args)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a kill reaches papermill's kernel too
        **kwargs,
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """Start the quick sample run, kill it once notebook 01 is done, then rerun it."""
    out = tmp_path_factory.mktemp("results")
    subject_dir = out / "sample" / "small_64D"
    proc = _batch(SAMPLE, "--profile", "quick", "--out", out)
    deadline = time.time() + 240
    while not (subject_dir / "01_load_data.ipynb").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into notebook 02
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (subject_dir / "01_load_data.ipynb").exists(), "the first run never finished notebook 01"
    first_mtime = (subject_dir / "01_load_data.ipynb").stat().st_mtime
    done_after_kill = sorted(p.name for p in subject_dir.glob("*.ipynb"))

    proc = _batch(SAMPLE, "--profile", "quick", "--out", out)
    log, _ = proc.communicate(timeout=600)
    return {"out": out, "subject_dir": subject_dir, "rc": proc.returncode, "log": log,
            "first_mtime": first_mtime, "done_after_kill": done_after_kill}


def test_killed_run_left_only_whole_files_and_the_rerun_finished(sample_run):
    assert sample_run["rc"] == 0, sample_run["log"][-3000:]
    sd = sample_run["subject_dir"]
    # whatever the kill interrupted was never renamed into place
    assert "03_train_autoencoder.ipynb" not in sample_run["done_after_kill"]
    # the rerun skipped the finished notebook and cleaned the killed run's temporaries
    assert (sd / "01_load_data.ipynb").stat().st_mtime == sample_run["first_mtime"]
    assert "01_load_data skipped" in sample_run["log"]
    assert not list(sample_run["out"].rglob(".*.tmp-*"))
    for name in NOTEBOOKS:
        nb = nbformat.read(sd / f"{name}.ipynb", as_version=4)  # whole, valid notebooks
        assert nb.metadata.papermill.parameters["subject_dir" if name != "01_load_data" else "out_dir"] == str(sd)
        assert (sd / f"{name}.html").stat().st_size > 10_000
    assert nbformat.read(sd / "02_simulate.ipynb", as_version=4).metadata.papermill.parameters["profile"] == "quick"


def test_outputs_of_every_step_exist(sample_run):
    sd = sample_run["subject_dir"]
    for f in ["subject.npz", "subject.json", "mask.nii.gz", "tissue.nii.gz", "synthetic/report.json"]:
        assert (sd / f).is_file(), f
    for m in METHODS:
        assert (sd / "synthetic" / f"{m}.npz").is_file()
        assert (sd / "models" / f"{m}.keras").is_file()
        history = pd.read_csv(sd / "models" / f"{m}_history.csv")
        assert list(history["epoch"]) == [1, 2]  # quick profile: 2 epochs
        assert (sd / "metrics" / "maps" / f"{m}_angle_deg.nii.gz").is_file()
    summary = sample_run["out"] / "sample" / "summary"
    for f in ["04_results.ipynb", "04_results.html", "signal_mae.html", "angle_deg.html", "error_maps.html"]:
        assert (summary / f).is_file(), f


def test_tidy_tables_have_the_documented_shape_and_names(sample_run):
    summary = sample_run["out"] / "sample" / "summary"
    metrics = pd.read_csv(summary / "metrics.csv", dtype={"subject": str})
    assert list(metrics.columns) == ["dataset", "subject", "method", "metric", "tissue", "value"]
    assert set(metrics["method"]) == set(METHODS)
    assert set(metrics["metric"]) == {"signal_mae", "fa_mae", "angle_deg"}
    assert set(metrics["dataset"]) == {"sample"} and set(metrics["subject"]) == {"small_64D"}
    overall = metrics[metrics["tissue"] == "all"]
    assert len(overall) == len(METHODS) * 3  # one value per method and metric
    assert not metrics.duplicated(["dataset", "subject", "method", "metric", "tissue"]).any()
    assert (metrics["value"] >= 0).all() and (metrics.loc[metrics.metric == "angle_deg", "value"] <= 90).all()
    stats = pd.read_csv(summary / "stats.csv")
    assert set(stats["level"]) == {"voxel"}  # one subject: voxel-level tests, said so
    assert stats["caveat"].str.contains("voxel").all()
    assert len(stats) == 3 * 6 * 2  # metrics x method pairs x tests


def test_rerun_skips_finished_steps(sample_run):
    sd = sample_run["subject_dir"]
    before = {n: (sd / f"{n}.ipynb").stat().st_mtime for n in NOTEBOOKS}
    assert main([str(SAMPLE), "--profile", "quick", "--out", str(sample_run["out"])]) == 0
    assert {n: (sd / f"{n}.ipynb").stat().st_mtime for n in NOTEBOOKS} == before


def test_failing_subject_does_not_stop_the_others(sample_run, tmp_path, capsys):
    """A 'paths' dataset: the sample again (its finished steps copied in) and a corrupt scan."""
    import shutil

    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    (tmp_path / "bad_dwi.nii.gz").write_bytes(b"not a nifti at all" * 100)
    config = tmp_path / "mixed.yaml"
    config.write_text(
        "dataset: mixed\nkind: paths\nprofile: quick\nsubjects:\n"
        f"  good: {{dwi: {files / 'small_64D.nii'}, bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}, mask: all}}\n"
        f"  broken: {{dwi: bad_dwi.nii.gz, bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}}}\n"
    )
    out = tmp_path / "results"
    # a finished copy: its notebooks ran with other parameters (config, out_dir), so they rerun
    shutil.copytree(sample_run["subject_dir"], out / "mixed" / "good", ignore=shutil.ignore_patterns("metrics"))
    rc = main([str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    failed_nb = out / "mixed" / "broken" / "01_load_data.failed.ipynb"
    assert failed_nb.is_file() and str(failed_nb) in err
    assert "bad_dwi.nii.gz" in err and "not a readable NIfTI" in err
    metrics = pd.read_csv(out / "mixed" / "summary" / "metrics.csv", dtype={"subject": str})
    assert set(metrics["subject"]) == {"good"}


def test_unknown_method_in_config_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: s\nkind: sample\nsubjects: [small_64D]\nmethods: [Syn, Magic]\n")
    assert main([str(config), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "Magic" in err and "SampleAndMean" in err


def test_subject_not_in_config_is_a_clear_error(tmp_path, capsys):
    assert main([str(SAMPLE), "--subjects", "nobody", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nobody" in err and "small_64D" in err
    assert not (tmp_path / "sample").exists() or not list((tmp_path / "sample").iterdir())


def test_unknown_profile_is_a_clear_error(tmp_path, capsys):
    assert main([str(SAMPLE), "--profile", "huge", "--out", str(tmp_path)]) == 2
    assert "huge" in capsys.readouterr().err


def test_summary_across_two_datasets_draws_a_panel_each(sample_run, tmp_path):
    """Notebook 04 over two dataset folders (the sample, and a copy named otherwise)."""
    import shutil

    from helpers.batch import run_notebook

    other = tmp_path / "other_site"
    shutil.copytree(sample_run["subject_dir"], other / "subj01", ignore=shutil.ignore_patterns("metrics", "*.ipynb", "*.html"))
    summary = tmp_path / "summary"
    params = {"results_dirs": [str(sample_run["out"] / "sample"), str(other)], "subjects": [], "methods": list(METHODS), "out_dir": str(summary)}
    assert run_notebook("04_results", summary, params) == "ran"
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


def test_a_step_reruns_when_its_parameters_change(sample_run, tmp_path):
    from helpers.batch import _executed_parameters, run_notebook

    sd = sample_run["subject_dir"]
    params = _executed_parameters(sd / "01_load_data.ipynb")
    before = (sd / "01_load_data.ipynb").stat().st_mtime
    assert run_notebook("01_load_data", sd, params) == "skipped"
    assert (sd / "01_load_data.ipynb").stat().st_mtime == before
    elsewhere = tmp_path / "copy"
    assert run_notebook("01_load_data", sd, {**params, "out_dir": str(elsewhere)}) == "ran"
    assert (elsewhere / "subject.npz").is_file()


def test_relative_paths_are_resolved_before_work_is_sent_out(tmp_path, monkeypatch):
    import helpers.batch as batch

    seen = {}

    def fake_map(config_path, subjects, **kwargs):
        seen.update(config=config_path, out=kwargs["out"])
        return iter(())

    monkeypatch.setattr(batch, "_map_subjects", fake_map)
    monkeypatch.chdir(PROJECT_ROOT)
    batch.run_dataset("configs/sample.yaml", profile="quick", out="relative_results_dir")
    assert Path(seen["config"]).is_absolute() and Path(seen["config"]) == SAMPLE
    assert Path(seen["out"]) == PROJECT_ROOT / "relative_results_dir"
    assert not (PROJECT_ROOT / "relative_results_dir").exists()
