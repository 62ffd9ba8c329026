"""The `synthqa` command: version, input checks that fail in seconds, exit codes, and a
console that says what failed. Nothing here runs a notebook."""

import io
import json
import subprocess
import sys
import time
import tomllib

import pytest

import helpers
import helpers.run.batch as batch
from helpers.run.cli import build_parser, main
from helpers.config import CONFIG_DIR, PROJECT_ROOT
from helpers.run.console import Console, training_progress
from helpers.run.results import SubjectResult, error_line, failed

SAMPLE = CONFIG_DIR / "sample.yaml"


def _cli(*args, env=None, timeout=60):
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "helpers.run.cli", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    return done, time.perf_counter() - t


@pytest.fixture
def no_notebooks(monkeypatch):
    """Any notebook launch fails the test: these runs must stop (or fail) before one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a notebook was launched")

    monkeypatch.setattr(batch, "run_notebook", refuse)


def test_version_is_the_package_version():
    done, _ = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"synthqa {helpers.__version__}"


def test_console_script_is_declared():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"synthqa": "helpers.run.cli:main"}


def test_help_says_subjects_run_one_after_another():
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for option in ("--profile", "--subjects", "--jobs", "--out", "--force", "--scheduler"):
        assert option in text
    assert "one after another" in " ".join(text.split())


def test_check_with_a_wrong_root_fails_in_seconds_naming_the_root(tmp_path):
    root = tmp_path / "no_such_study"
    config = tmp_path / "hcp.yaml"
    config.write_text(f"dataset: hcp\nkind: hcp\nroot: {root}\nsubjects: [100307, 100408]\n")
    done, seconds = _cli("check", config)
    assert done.returncode == 2
    assert str(root) in done.stderr and "hcp.yaml" in done.stderr
    assert done.stderr.count(str(root)) == 1  # said once, not once per subject
    assert seconds < 20  # the interpreter start and imports included, on a shared machine


def test_check_names_every_missing_file_of_every_subject(tmp_path, capsys):
    config = tmp_path / "p.yaml"
    config.write_text(
        "dataset: p\nkind: paths\nsubjects:\n"
        "  a: {dwi: a_dwi.nii.gz, bval: a.bval, bvec: a.bvec}\n"
        "  b: {dwi: b_dwi.nii.gz, bval: b.bval, bvec: b.bvec}\n"
    )
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert "a_dwi.nii.gz" in err and "b_dwi.nii.gz" in err


def test_check_on_the_sample_passes(capsys):
    assert main(["check", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "sample/small_64D" in out


@pytest.mark.parametrize("command", ["check", "run"])
def test_unknown_profile_exits_2_naming_the_profiles(command, tmp_path, capsys, no_notebooks):
    assert main([command, str(SAMPLE), "--profile", "huge", *(["--out", str(tmp_path)] if command == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "paper" in err and "quick" in err
    assert not list(tmp_path.iterdir())  # nothing was written


def test_unknown_method_and_unknown_subject_exit_2(tmp_path, capsys, no_notebooks):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: s\nkind: sample\nsubjects: [small_64D]\nmethods: [Syn, Magic]\n")
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "Magic" in err and "SampleAndMean" in err
    assert main(["run", str(SAMPLE), "--subjects", "nobody", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nobody" in err and "small_64D" in err
    assert not (tmp_path / "out").exists()


def test_run_stops_before_any_notebook_when_a_subject_file_is_missing(tmp_path, capsys, no_notebooks):
    import dipy.data
    from pathlib import Path

    files = Path(dipy.data.__file__).parent / "files"
    config = tmp_path / "two.yaml"
    config.write_text(
        "dataset: two\nkind: paths\nsubjects:\n"
        f"  good: {{dwi: {files / 'small_64D.nii'}, bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}}}\n"
        f"  gone: {{dwi: missing_dwi.nii.gz, bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}}}\n"
    )
    t = time.perf_counter()
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t < 15
    err = capsys.readouterr().err
    assert "Nothing ran" in err and "missing_dwi.nii.gz" in err and "gone" in err
    assert not (tmp_path / "out").exists()


def test_two_configs_with_one_dataset_name_are_refused(tmp_path):
    other = tmp_path / "copy.yaml"
    other.write_text(SAMPLE.read_text())
    _, problems, _ = batch.check_inputs([SAMPLE, other])
    assert any("'sample'" in p and "copy.yaml" in p for p in problems)


def test_a_failure_names_subject_step_error_and_never_prints_empty_parentheses(tmp_path, capsys, monkeypatch):
    """A deterministic fault at the first step: the subject fails, the run exits 1."""
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("the fault did not stop the step"))
    monkeypatch.setenv(batch.FAIL_AT, "small_64D/01_load_data")
    out = tmp_path / "out"
    assert main(["run", str(SAMPLE), "--profile", "quick", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "sample/small_64D: 01_load_data failed: InjectedFault: SYNTHQA_FAIL_AT=small_64D/01_load_data" in captured.err
    assert "()" not in captured.err
    assert "no verdict" in captured.out and str(out / "sample" / "index.html") in captured.out
    # what a run always leaves: the one plotly.js, provenance, the index
    dataset = out / "sample"
    assert (dataset / "plotly.min.js").is_file() and (dataset / "index.html").is_file()
    record = json.loads((dataset / "small_64D" / "provenance.json").read_text())
    assert record["subject"] == "small_64D" and record["profile"]["name"] == "quick"
    assert record["command"] == f"synthqa run {SAMPLE} --profile quick --out {out}"


def test_fault_injection_names_a_step_and_optionally_a_subject(monkeypatch):
    monkeypatch.setenv(batch.FAIL_AT, "s2/evaluate")
    batch.inject_fault("evaluate", "s1")  # another subject: nothing
    batch.inject_fault("02_simulate", "s2")  # another step: nothing
    with pytest.raises(batch.InjectedFault, match="evaluate"):
        batch.inject_fault("evaluate", "s2")
    monkeypatch.setenv(batch.FAIL_AT, "04_results")
    with pytest.raises(batch.InjectedFault):
        batch.inject_fault("04_results", "summary")


def test_failed_results_read_the_same_from_every_source():
    class CellError(Exception):  # what papermill raises for an error in a notebook cell
        ename, evalue = "ValueError", "x_dwi.nii.gz: not a readable NIfTI\x1b[0m"

    e = CellError("papermill's long text")
    e.failed_notebook = "/r/d/s/01_load_data.failed.ipynb"
    result = failed("s", "01_load_data", e, dataset="d")
    assert result == SubjectResult(subject="s", ok=False, dataset="d", failed_step="01_load_data",
                                   failed_notebook="/r/d/s/01_load_data.failed.ipynb",
                                   error="ValueError: x_dwi.nii.gz: not a readable NIfTI")
    assert result.describe() == ("d/s: 01_load_data failed: ValueError: x_dwi.nii.gz: not a readable NIfTI\n"
                                 "    open /r/d/s/01_load_data.failed.ipynb")
    assert error_line(KeyError("k")) == "KeyError: 'k'"
    assert error_line(RuntimeError()) == "RuntimeError"


def test_console_prints_a_line_per_step_and_reads_training_progress(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, errors=err, live=False)
    where = dict(dataset="d", subject="s", subject_dir=str(tmp_path), index=1, total=2)
    console({"event": "step", "step": "03_train_autoencoder", **where})
    assert "training the first models" in console.status()
    (tmp_path / "models").mkdir()
    lines = [dict(method="Syn", replicate=0, done=1, total=4, seconds=3.0, elapsed=3.0),
             dict(method="Sampled", replicate=1, done=2, total=4, seconds=3.1, elapsed=6.1)]
    (tmp_path / "models" / "progress.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert training_progress(tmp_path) == lines[1]
    assert training_progress(tmp_path, since=time.time() + 60) is None  # an older run's file
    status = console.status()
    assert status.startswith("[1/2] d/s · 03_train_autoencoder · models 2/4, last Sampled r1 · 0:0")
    console({"event": "step_done", "step": "03_train_autoencoder", "status": "ran", "seconds": 75, **where})
    console({"event": "result", "result": failed("s", "evaluate", ValueError("boom"), dataset="d")})
    console.close()
    assert out.getvalue() == "  d/s  03_train_autoencoder   ran      1 min 15 s\n"
    assert err.getvalue() == "  FAILED d/s: evaluate failed: ValueError: boom\n"
    assert console.status() == ""


@pytest.mark.parametrize("text, message", [
    ("dataset: ../escape\nkind: sample\nsubjects: [small_64D]\n", "dataset name '../escape' is not a plain folder name"),
    ("dataset: s\nkind: sample\nsubjects: [a/b]\n", "subject name 'a/b' is not a plain folder name"),
    ("dataset: s\nkind: sample\nsubjects: [small_64D]\nseed: -1\n", "seed must be a non-negative int"),
])
def test_check_refuses_names_and_seeds_with_one_line_and_exit_2(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    done, seconds = _cli("check", config)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert message in done.stderr + done.stdout
    assert seconds < 30


def test_negative_jobs_is_a_usage_error():
    done, _ = _cli("run", SAMPLE, "--jobs", "-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--jobs: must be 0 (one per core) or a positive number" in done.stderr


def test_ctrl_c_prints_one_line_and_exits_130(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert batch.interruptible(interrupted, None) == 130
    assert capsys.readouterr().err.strip() == "interrupted; rerun the same command to resume"


def test_out_as_a_file_and_bad_scheduler_addresses_exit_2_in_seconds(tmp_path):
    from helpers.run.cluster import free_port

    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    port = free_port()  # nothing listens there
    for extra, message in [(["--out", a_file], "is a file, not a folder"),
                           (["--scheduler", "lcoal"], "not 'local' nor an address like tcp://HOST:PORT"),
                           (["--scheduler", f"tcp://127.0.0.1:{port}"], "cannot reach a Dask scheduler there")]:
        done, seconds = _cli("run", SAMPLE, "--profile", "quick", "--out", tmp_path / "r", *extra)
        assert done.returncode == 2 and "Traceback" not in done.stderr, extra
        assert message in done.stderr, (extra, done.stderr)
        assert seconds < 60


def test_a_second_run_on_the_same_results_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    import json
    import os
    import socket

    from helpers.run.lock import LOCK_NAME, LockedError, results_lock

    with results_lock(tmp_path, command="synthqa run a.yaml"):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(LockedError, match=rf"pid {os.getpid()}, host {socket.gethostname()}, started .*synthqa run a.yaml"):
            with results_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()  # released
    # a lock left by a process that no longer exists is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "then"}))
    with results_lock(tmp_path) as note:
        assert f"took over the lock of run {int(dead.stdout)}" in note
