"""Per-subject work on a Dask LocalCluster: two small real subjects and a broken one."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers.processes import tagged_processes
from helpers.run.cluster import dask_map, free_port
from helpers.config import PROJECT_ROOT
from helpers.run.results import SubjectResult

pytest.importorskip("distributed")


def _dies(config_path, subject, **kwargs):
    """A task whose worker process dies under it (as when killed for memory)."""
    import os

    if subject == "doomed":
        os._exit(1)
    return SubjectResult(subject=subject, dataset="d")


@pytest.mark.slow
def test_a_task_whose_worker_died_becomes_a_failed_result():
    results = {r.subject: r for r in dask_map(_dies, "c.yaml", ["fine", "doomed"], scheduler="local", workers=1)}
    assert results["fine"].ok
    doomed = results["doomed"]
    assert not doomed.ok and doomed.failed_step == "dask task" and doomed.error


def _processes(tag):
    """{pid: (ppid, cwd, cmdline)} of the processes whose environment carries the tag."""
    return tagged_processes("SYNTHQA_TEST_TAG", tag)


EXAMPLES = PROJECT_ROOT / "docs" / "examples"


def _two_subject_config(tmp_path):
    """Two small real subjects cut from dipy's sample (the whole grid and half of it) and a
    broken one (an empty mask, which only loading the data finds: `check` passes it).
    Beside Syn they run the documented example of a researcher's own generator
    (docs/examples/ball_stick.py) and a library of saved signals (Syn's noise-free voxels
    on the sample's table, with s0) through every step."""
    import dipy.data

    from helpers.scan.layouts import load_sample
    from helpers.generators.simulation import simulate

    files = Path(dipy.data.__file__).parent / "files"
    dwi = files / "small_64D.nii"
    img = nib.load(dwi)
    mask = np.zeros(img.shape[:3], dtype=np.uint8)
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "empty_mask.nii.gz")
    mask[:, :, :5] = 1
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "half_mask.nii.gz")
    sample = load_sample()
    clean, _ = simulate(sample, "Syn", 400, seed=9, snr="none")
    np.savez(tmp_path / "synlib.npz", signals=50 * clean, s0=np.full(400, 50.0), bvals=sample.bvals, bvecs=sample.bvecs)
    grad = f"bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}"
    config = tmp_path / "two.yaml"
    config.write_text(
        "dataset: two\nkind: paths\nprofile: quick\nmethods: [Syn, 'ball_stick:ball_stick', 'library:synlib.npz']\n"
        "subjects:\n"
        f"  whole: {{dwi: {dwi}, {grad}, mask: all}}\n"
        f"  half: {{dwi: {dwi}, {grad}, mask: half_mask.nii.gz}}\n"
        f"  broken: {{dwi: {dwi}, {grad}, mask: empty_mask.nii.gz}}\n"
    )
    return config


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_real_scheduler_and_two_workers_match_a_local_run_and_survive_a_lost_worker(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, as a cluster is
    started by hand: the run gets a line per step from the workers, survives losing the
    worker that trains a subject (its kernel and training processes go with it, Dask
    re-runs the subject on the other one, the console says so), and writes the same
    numbers as a run without Dask."""
    import socket
    import threading
    import uuid

    config = _two_subject_config(tmp_path)
    tag = uuid.uuid4().hex
    path = os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))  # the plugin's module
    env = {**os.environ, "SYNTHQA_TEST_TAG": tag, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [str(Path(sys.executable).parent / "dask")]
    started = []

    def start(*args):
        proc = subprocess.Popen([*dask, *args], cwd=tmp_path, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    # the run without Dask to compare with, at the same time (the test waits on start-ups
    # far more than it computes); its own tag keeps its processes out of the hunt below
    local = tmp_path / "local"
    local_run = subprocess.Popen([sys.executable, "-m", "helpers.run.cli", "run", str(config), "--jobs", "2",
                                  "--out", str(local)], cwd=PROJECT_ROOT,
                                 env={**env, "SYNTHQA_TEST_TAG": "local"}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        workers = [start("worker", address, "--nthreads", "2", "--resources", "subject=1", "--no-dashboard",
                         "--host", "127.0.0.1", "--name", name, "--local-directory", str(tmp_path / name))
                   for name in ("a", "b")]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        out = tmp_path / "dask"
        run = subprocess.Popen([sys.executable, "-m", "helpers.run.cli", "run", str(config), "--scheduler", address,
                                "--out", str(out)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
        reader.start()
        # wait until a subject's models train on a worker (a kernel with training
        # processes under it), then kill that whole worker, nanny and all
        deadline, victim = time.monotonic() + 300, None
        while victim is None and time.monotonic() < deadline and run.poll() is None:
            procs = _processes(tag)
            for pid, (ppid, _, cmd) in procs.items():
                kernel = procs.get(ppid)
                if "spawn_main" in cmd and kernel and "ipykernel" in kernel[2]:
                    victim = (kernel[0], ppid, [p for p, (pp, _, _) in procs.items() if pp == ppid], kernel[1])
                    break
            time.sleep(0.2)
        assert victim is not None, "no subject reached training on a worker:\n" + "".join(lines)
        worker_pid, kernel_pid, trainers, subject_dir = victim
        worker = next(w for w in workers if w.pid == os.getpgid(worker_pid))
        os.killpg(worker.pid, signal.SIGKILL)
        gone = [kernel_pid, *trainers]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and set(gone) & set(_processes(tag)):
            time.sleep(0.3)
        assert not set(gone) & set(_processes(tag)), "the lost worker's kernel or training processes live on"
        rc = run.wait(timeout=600)
        reader.join(timeout=10)
    except BaseException:
        local_run.kill()
        raise
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(lines)
    subject = Path(subject_dir).name
    assert rc == 1, text  # the broken subject failed ...
    assert "two/broken: 01_load_data failed: ValueError" in text and "empty_mask.nii.gz" in text
    assert f"two/{subject}  re-run by Dask on {socket.gethostname()}" in text  # ... the lost one was re-run
    for s in ("whole", "half"):  # ... and each step of the other two was told as it finished, with its host
        assert f"two/{s}  01_load_data" in text and f"two/{s}  done on {socket.gethostname()}" in text
        assert json.loads((out / "two" / s / "provenance.json").read_text())["machine"]["host"] == socket.gethostname()
    metrics = pd.read_csv(out / "two" / "summary" / "metrics.csv", dtype={"subject": str})
    assert set(metrics["subject"]) == {"whole", "half"}

    local_text, _ = local_run.communicate(timeout=600)
    _failing_subject_does_not_stop_the_others(local, local_run.returncode, local_text)
    for s in ("whole", "half"):
        tables = sorted(p.relative_to(local) for p in (local / "two" / s).glob("*/*.csv"))
        assert any(p.parent.name == "metrics" for p in tables) and any(p.parent.name == "judges" for p in tables)
        for rel in tables:
            assert (out / rel).read_bytes() == (local / rel).read_bytes(), rel


def test_the_console_tells_a_dask_rerun_and_where_each_step_ran():
    """Events forwarded from workers carry the host: each step line names it, a subject
    that starts twice is a re-run, and the subject's end says where it ran and how long."""
    import io

    from helpers.run.console import Console

    out = io.StringIO()
    console = Console(out, errors=out, live=False)
    where = {"dataset": "d", "subject": "s1", "subject_dir": "/r/d/s1", "index": 1, "total": 1,
             "host": "node7", "worker": "tcp://10.0.0.7:4000"}
    console({"event": "subject", "jobs": 4, **where})
    console({"event": "step_done", "step": "01_load_data", "status": "ran", "seconds": 8.2, **where})
    console({"event": "subject", "jobs": 4, **where, "host": "node8"})
    result = SubjectResult(subject="s1", dataset="d", steps=[("01_load_data", "skipped", 0.4), ("02_simulate", "ran", 70.0)],
                           host="node8", worker="tcp://10.0.0.8:4000")
    console({"event": "result", "result": result})
    assert out.getvalue().splitlines() == [
        "  d/s1  01_load_data           ran      8 s  on node7",
        "  d/s1  re-run by Dask on node8: the worker running it was lost; finished steps are kept",
        "  d/s1  done on node8 in 1 min 10 s",
    ]


def test_a_scheduler_whose_workers_lack_the_subject_resource_is_refused():
    from distributed import LocalCluster

    from helpers.run.cluster import scheduler_problems

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        problems = scheduler_problems(cluster.scheduler_address)
    assert len(problems) == 1 and "none of its 1 workers has the resource 'subject'" in problems[0]
    assert "--resources subject=1" in problems[0]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      resources={"subject": 1}) as cluster:
        assert scheduler_problems(cluster.scheduler_address) == []
    assert "cannot reach a Dask scheduler there" in scheduler_problems("tcp://127.0.0.1:9", timeout=1)[0]


@pytest.mark.parametrize("nthreads, resources, cores", [(4, {"subject": 1}, 4), (8, {"subject": 2}, 4),
                                                        (4, {}, 1), (1, {"subject": 1}, 1), (3, {"subject": 2}, 1)])
def test_a_subject_gets_its_workers_threads_over_the_subjects_it_runs_at_once(nthreads, resources, cores):
    from types import SimpleNamespace

    from helpers.run.cluster import subject_cores

    worker = SimpleNamespace(state=SimpleNamespace(nthreads=nthreads, total_resources=resources))
    assert subject_cores(worker) == cores


def _hog(config_path, subject, **kwargs):
    """A subject whose process (a child of the worker, like a kernel) takes 800 MB."""
    done = subprocess.run([sys.executable, "-c", "import time; x = b'1' * (800 << 20); time.sleep(60)"])
    ok = done.returncode == 0
    return SubjectResult(subject=subject, dataset="d", ok=ok, failed_step="" if ok else "03_train_autoencoder",
                         error="" if ok else f"the kernel died ({done.returncode})")


@pytest.mark.slow
def test_a_subject_past_its_workers_memory_limit_is_stopped_and_told(monkeypatch):
    """Dask's limit counts the worker process only; the watch counts its children too."""
    from distributed import LocalCluster

    real = LocalCluster

    def small(**kw):
        return real(**{**kw, "memory_limit": "500MB"})

    monkeypatch.setattr("distributed.LocalCluster", small)
    t = time.monotonic()
    (result,) = list(dask_map(_hog, "c.yaml", ["big"], scheduler="local", workers=1))
    assert time.monotonic() - t < 50  # stopped, not left to sleep out its minute
    assert not result.ok and result.failed_step == "03_train_autoencoder"
    assert result.error.startswith("MemoryError: the subject's processes used ")
    assert "over its Dask worker's memory limit of 0.5 GB" in result.error


def _failing_subject_does_not_stop_the_others(out, rc, text):
    """The run without Dask: the broken subject fails at loading, named with its notebook;
    the others go through every step with the researcher's generator and the library."""
    assert rc == 1, text
    failed_nb = out / "two" / "broken" / "01_load_data.failed.ipynb"
    assert failed_nb.is_file() and f"open {failed_nb}" in text
    assert "two/broken: 01_load_data failed: ValueError" in text and "empty_mask.nii.gz" in text
    summary = out / "two" / "summary"
    metrics = pd.read_csv(summary / "metrics.csv", dtype={"subject": str})
    assert set(metrics["subject"]) == {"whole", "half"}
    # the plugin and the library went through training, evaluation and the statistics under their names
    assert set(metrics["method"]) == {"Syn", "ball_stick", "synlib"} and set(metrics["replicate"]) == {0, 1}
    assert (out / "two" / "whole" / "models" / "ball_stick" / "r1.keras").is_file()
    stats = pd.read_csv(summary / "stats.csv")
    assert {("Syn", "ball_stick"), ("Syn", "synlib"), ("ball_stick", "synlib")} == set(zip(stats["method_a"], stats["method_b"]))
    # the known-answer check ran for every generator, the library included
    known = pd.read_csv(summary / "known_answer.csv", dtype={"subject": str})
    assert set(known["truth"]) == {"Syn", "ball_stick", "synlib"}
    # Syn and a library of Syn's own voxels are one distribution: the pseudo-scans cannot tell them apart
    sep = pd.read_csv(summary / "separability.csv", dtype={"subject": str})
    assert not sep.set_index(["subject", "a", "b"]).loc[("whole", "Syn", "synlib"), "separable"]
    assert "synlib: a library of 400 unique voxels" in (summary / "04_results.html").read_text()


def test_a_run_waiting_on_workers_that_cannot_take_a_subject_says_so():
    """Workers that join after the run started are checked too: a run must not wait
    without a word for a subject no worker can take."""
    import threading

    from distributed import Client, LocalCluster

    from helpers.run.cluster import _watch_workers

    for n_workers, expected in ((0, "waiting for Dask workers to join"),
                                (1, "waiting: none of its 1 workers has the resource 'subject'")):
        with LocalCluster(n_workers=n_workers, processes=False, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            events, done = [], threading.Event()
            watch = threading.Thread(target=_watch_workers, args=(client, cluster.scheduler_address, events.append, done),
                                     kwargs={"every": 0.1})
            watch.start()
            time.sleep(1.0)
            done.set()
            watch.join()
        assert [e["event"] for e in events] == ["notice"]  # said once, not every look
        assert events[0]["text"].startswith(expected), events


def test_free_port_is_free_and_nothing_answers_there():
    import socket

    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as s:  # and a scheduler could listen there
        s.bind(("127.0.0.1", port))
        s.listen()
