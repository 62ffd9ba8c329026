"""What a checkout of SynthQA does with bad input and faults: one table row per case.

Each case builds a bad input (a config, a scan, a plugin module) or a fault (Ctrl-C,
SIGKILL, a second run on the same results folder, an unreachable or unsuitable Dask
scheduler) in a fresh temporary folder, runs the command line on it and records the
exit code, the seconds and the first line printed. The checkout under test is only ever
run as ``python -m helpers.run.cli ...`` (with this script's Python, cwd and ``PYTHONPATH``
set to the checkout, so the runner and the notebooks' kernels import its ``helpers``),
never imported: the same script measures an old checkout, before the fixes, and the
working tree after them.

Kinds of case:

- data (prob_mask, zero_volume, negative_dw, nan_voxels): the in-vivo example scan made
  bad; ``run`` is stopped as soon as step ``01_load_data`` prints its console line, which
  is the row's line (what loading said about the bad data).
- check (plugin_*, seed_negative, jobs_negative, out_is_file, scheduler_*, *_escape): a
  bad config or option on ``check`` or ``run``; a run still going at its timeout is
  stopped and reported as "running after N s".
- process (ctrl_c, sigkill, second_run): the sample (``configs/sample.yaml`` of the
  checkout) interrupted, killed, or run twice on one results folder.
- cluster (scheduler_no_resource): a real ``dask scheduler`` and a worker without the
  ``subject`` resource.

The line column is the first non-empty line of stdout+stderr; for a command that failed,
the first line that reads as an error (the banner line of ``run`` says nothing). A
traceback is shown by its exception line, a heading ending in ':' ("1 problem:") with the
first line under it that is not one; the case's temporary folder is written ``$TMP``. Every
command runs in its own session with a timeout and is ended with its process group;
processes it left in other sessions (notebook kernels start their own) are found by a tag
in their environment (``SYNTHQA_BAD_TAG``) and ended too. Linux (reads ``/proc``).

    python benchmarks/bad_inputs.py [--project DIR] [--cases NAME ...]
    python benchmarks/bad_inputs.py --tiny     # two check-only cases, seconds: for the tests
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers.processes import tagged_processes
from helpers.run.cluster import free_port

REPO = Path(__file__).resolve().parent.parent  # the default checkout, and where the in-vivo scan is
TAG = "SYNTHQA_BAD_TAG"
LINE_CHARS = 160

CHECK_TIMEOUT = 60  # `check`: seconds (it reads headers and calls generators on a few voxels)
RUN_TIMEOUT = 180  # a `run` that should be refused at once but may not be: a quick one-method run
DATA_TIMEOUT = 240  # a data case: until step 01's console line
STOP_GRACE = 5  # SIGTERM, then SIGKILL after this many seconds


# --------------------------------------------------------------------------- running commands


@dataclass
class Result:
    """A row's measured columns."""

    code: str
    seconds: float | None
    line: str


class Run:
    """A command started in its own session; its merged stdout+stderr is read line by line
    in a thread into ``lines`` as (seconds since start, text)."""

    def __init__(self, cmd, *, cwd, env):
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                     start_new_session=True)
        self.lines = []
        self.ended_at = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for text in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, text.rstrip("\n")))

    @property
    def seconds(self):
        """Seconds from start to exit (or until now, while it runs)."""
        return (self.ended_at or time.monotonic()) - self.started

    @property
    def code(self):
        return self.proc.returncode

    def running(self):
        if self.proc.poll() is None:
            return True
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self._reader.join(timeout=2)  # its last lines (an orphan may keep the pipe open: not forever)
        return False

    def wait_for(self, match, timeout):
        """The first line (seconds, text) matching ``match``, or None once the command has
        ended or ``timeout`` seconds have passed without one."""
        deadline, seen = time.monotonic() + timeout, 0
        while True:
            alive = self.running()
            new = self.lines[seen:]
            seen += len(new)
            for seconds, text in new:
                if match(text):
                    return seconds, text
            if not alive or time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def wait(self, timeout):
        """True when the command ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def signal(self, sig):
        """Send ``sig`` to the command's process group."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self):
        """SIGTERM the process group, SIGKILL it after STOP_GRACE seconds."""
        if self.running():
            self.signal(signal.SIGTERM)
            if not self.wait(STOP_GRACE):
                self.signal(signal.SIGKILL)
                self.wait(STOP_GRACE)
        self.signal(signal.SIGKILL)  # what is left of its group


def tagged(tag):
    """{pid: command line} of the processes whose environment carries ``SYNTHQA_BAD_TAG=tag``."""
    return {pid: p.cmdline for pid, p in tagged_processes(TAG, tag).items()}


def kill_tagged(tag):
    """SIGKILL every process that carries the case's tag (all started by this script)."""
    for pid in tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Case:
    """One case's temporary folder, environment and the commands it started (ended by ``close``)."""

    def __init__(self, project, tmp):
        self.project, self.tmp = project, Path(tmp)
        self.tag = uuid.uuid4().hex
        self.plugins = self.tmp / "plugins"  # on PYTHONPATH: where a case writes its generator module
        self.plugins.mkdir()
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(self.plugins)]),
                    "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", TAG: self.tag}
        self.runs = []

    def start(self, cmd, **env):
        run = Run(cmd, cwd=self.project, env={**self.env, **env})
        self.runs.append(run)
        return run

    def cli(self, *args, **env):
        """``python -m helpers.run.cli ARGS`` of the checkout under test."""
        return self.start([sys.executable, "-m", "helpers.run.cli", *args], **env)

    def command(self, *args, timeout):
        """Run the command line to its end (or stop it at ``timeout``): its Result."""
        run = self.cli(*args)
        if not run.wait(timeout):
            return Result(f"running after {timeout} s", timeout, self.headline(run.lines))
        return Result(str(run.code), run.seconds, self.headline(run.lines, errors=run.code != 0))

    def headline(self, lines, *, errors=False):
        return headline([text for _, text in lines], errors=errors).replace(str(self.tmp), "$TMP")

    def close(self):
        for run in self.runs:
            run.stop()
        kill_tagged(self.tag)


TRACEBACK = "Traceback (most recent call last):"
ERROR = re.compile(r"FAILED|Error|error|problem|refused|cannot|must ")
EXCEPTION = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b")


def headline(lines, *, errors=False):
    """The line that says what happened: the first non-empty one, or with ``errors`` (a
    command that failed) the first that reads as an error, else the last. A traceback is
    shown by its exception line; a heading ("1 problem:", "Nothing ran: 1 problem in the
    inputs") with the first line indented under it that is not a heading itself."""
    raw = [line.rstrip() for line in lines if line.strip()]
    text = [line.strip() for line in raw]
    if not text:
        return "(nothing printed)"
    if TRACEBACK in text and (errors or text[0] == TRACEBACK):
        exception = next((line for line in reversed(text) if EXCEPTION.match(line)), text[-1])
        return f"Traceback … {exception}"
    at = next((i for i, line in enumerate(text) if ERROR.search(line)), len(text) - 1) if errors else 0
    indent = len(raw[at]) - len(text[at])
    for below, line in zip(raw[at + 1:], text[at + 1:]):
        if len(below) - len(line) <= indent:
            break
        if not line.endswith(":"):
            return f"{text[at]} … {line}"
    return text[at]


# --------------------------------------------------------------------------- inputs


def sample_files():
    """dipy's bundled real scan small_64D (10x10x10 voxels, one b0, 64 directions)."""
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    return {"dwi": str(files / "small_64D.nii"), "bval": str(files / "small_64D.bval"),
            "bvec": str(files / "small_64D.bvec"), "mask": "all"}


def write_config(folder, subjects, *, dataset="bad", methods=("Syn",), **keys):
    """A ``kind: paths`` config (JSON values are YAML) in ``folder``; its path."""
    lines = [f"dataset: {json.dumps(dataset)}", "kind: paths", "profile: quick", f"methods: {json.dumps(list(methods))}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in keys.items()]
    lines += ["subjects:"] + [f"  {json.dumps(name)}: {json.dumps(files)}" for name, files in subjects.items()]
    path = Path(folder) / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sample_config(case, **keys):
    """SAMPLE_CONFIG: dipy's sample, every voxel, Syn only, profile quick."""
    return write_config(case.tmp, {"s1": sample_files()}, **keys)


def invivo_folder(project):
    """data/invivo of the checkout under test, else of this script's repository (git-ignored)."""
    for root in (project, REPO):
        folder = Path(root) / "data" / "invivo"
        if (folder / "b1k_b2k.bval").is_file():
            return folder
    raise FileNotFoundError("data/invivo/ not fetched (python -m helpers.scan.datasets)")


def invivo(case):
    """The in-vivo scan as arrays: (dwi float32, mask bool, bvals, affine, folder)."""
    folder = invivo_folder(case.project)
    img = nib.load(folder / "b1k_b2k_example_slices_24_38.nii.gz")
    mask = np.asanyarray(nib.load(folder / "b1k_b2k_example_slices_24_38_mask.nii.gz").dataobj) > 0
    return img.get_fdata(dtype=np.float32), mask, np.loadtxt(folder / "b1k_b2k.bval"), img.affine, folder


def invivo_config(case, *, dwi=None, mask=None):
    """A config of the in-vivo scan (b=1000 shell, Syn) with a changed DWI and/or mask array."""
    data, brain, _, affine, folder = invivo(case)
    files = {"dwi": str(folder / "b1k_b2k_example_slices_24_38.nii.gz"), "bval": str(folder / "b1k_b2k.bval"),
             "bvec": str(folder / "b1k_b2k.bvec"), "mask": str(folder / "b1k_b2k_example_slices_24_38_mask.nii.gz")}
    for key, array in (("dwi", dwi), ("mask", mask)):
        if array is not None:
            files[key] = str(case.tmp / f"{key}.nii.gz")
            nib.save(nib.Nifti1Image(array, affine), files[key])
    return write_config(case.tmp, {"s1": files}, shell=1000)


def brain_voxels(brain, n):
    """``n`` distinct brain voxels (a fixed draw) as index arrays (x, y, z)."""
    return np.unravel_index(np.random.default_rng(0).choice(np.flatnonzero(brain), n, replace=False), brain.shape)


def first_dw_volume(bvals, start=5, shell=1000):
    """The first volume of the b=``shell`` shell from index ``start`` (index 5 is a b0 here)."""
    return int(next(i for i in range(start, len(bvals)) if abs(bvals[i] - shell) < 100))


BADGEN = '''\
"""Generators that break the contract (written by benchmarks/bad_inputs.py)."""
import numpy as np


def wrong_shape(bvals, bvecs, n, rng):
    return np.full((n, len(bvals) + 1), 0.5)


def nan_out(bvals, bvecs, n, rng):
    return np.full((n, len(bvals)), np.nan)
'''


# --------------------------------------------------------------------------- cases

CASES = {}


def case(name, what, *, tiny=False):
    """Register a case: ``fn(case) -> Result``; ``what`` is the table's input column."""

    def register(fn):
        CASES[name] = (what, fn, tiny)
        return fn

    return register


def stop_after_load(case, config):
    """``run`` until step 01's console line: that line, or how the run ended without one."""
    run = case.cli("run", config, "--profile", "quick", "--out", case.tmp / "out")
    hit = run.wait_for(lambda text: "01_load_data" in text, DATA_TIMEOUT)
    if hit:
        return Result("stopped after 01", hit[0], hit[1].strip())
    if run.running():
        return Result(f"running after {DATA_TIMEOUT} s", DATA_TIMEOUT, case.headline(run.lines))
    return Result(str(run.code), run.seconds, case.headline(run.lines, errors=True))


@case("prob_mask", "in-vivo mask as a float probability map (0.97 in the brain, 0.02 outside)")
def prob_mask(case):
    _, brain, *_ = invivo(case)
    return stop_after_load(case, invivo_config(case, mask=np.where(brain, 0.97, 0.02).astype(np.float32)))


@case("zero_volume", "in-vivo DWI, one b=1000 volume (the first from index 5) all 0")
def zero_volume(case):
    dwi, _, bvals, *_ = invivo(case)
    dwi[..., first_dw_volume(bvals)] = 0
    return stop_after_load(case, invivo_config(case, dwi=dwi))


@case("negative_dw", "in-vivo DWI, 200 brain voxels negative in one b=1000 volume")
def negative_dw(case):
    dwi, brain, bvals, *_ = invivo(case)
    voxels = brain_voxels(brain, 200)
    at = (*voxels, first_dw_volume(bvals))
    dwi[at] = -np.abs(dwi[at]) - 1
    return stop_after_load(case, invivo_config(case, dwi=dwi))


@case("nan_voxels", "in-vivo DWI, 50 brain voxels NaN in every volume, 30 with b0 = 0")
def nan_voxels(case):
    dwi, brain, bvals, *_ = invivo(case)
    x, y, z = brain_voxels(brain, 80)
    dwi[x[:50], y[:50], z[:50]] = np.nan  # every volume
    for b0 in np.flatnonzero(bvals < 50):
        dwi[x[50:], y[50:], z[50:], b0] = 0
    return stop_after_load(case, invivo_config(case, dwi=dwi))


@case("plugin_import", "check: methods [Syn, nosuchmodule:make]", tiny=True)
def plugin_import(case):
    return case.command("check", sample_config(case, methods=["Syn", "nosuchmodule:make"]), timeout=CHECK_TIMEOUT)


@case("plugin_shape", "check: badgen:wrong_shape returns (n, m+1)")
def plugin_shape(case):
    (case.plugins / "badgen.py").write_text(BADGEN)
    return case.command("check", sample_config(case, methods=["Syn", "badgen:wrong_shape"]), timeout=CHECK_TIMEOUT)


@case("plugin_nan", "check: badgen:nan_out returns NaN everywhere")
def plugin_nan(case):
    (case.plugins / "badgen.py").write_text(BADGEN)
    return case.command("check", sample_config(case, methods=["Syn", "badgen:nan_out"]), timeout=CHECK_TIMEOUT)


@case("seed_negative", "run: seed: -1")
def seed_negative(case):
    config = sample_config(case, seed=-1)
    return case.command("run", config, "--profile", "quick", "--out", case.tmp / "out", timeout=120)


@case("jobs_negative", "run --jobs -1")
def jobs_negative(case):
    return case.command("run", sample_config(case), "--jobs", "-1", "--out", case.tmp / "out", timeout=RUN_TIMEOUT)


@case("out_is_file", "run --out FILE (an existing file)")
def out_is_file(case):
    file = case.tmp / "results.txt"
    file.write_text("not a folder\n")
    return case.command("run", sample_config(case), "--out", file, timeout=RUN_TIMEOUT)


@case("scheduler_unreachable", "run --scheduler tcp://127.0.0.1:9")
def scheduler_unreachable(case):
    return case.command("run", sample_config(case), "--scheduler", "tcp://127.0.0.1:9", "--out", case.tmp / "out",
                        timeout=60)


@case("scheduler_typo", "run --scheduler lcoal")
def scheduler_typo(case):
    return case.command("run", sample_config(case), "--scheduler", "lcoal", "--out", case.tmp / "out", timeout=60)


@case("dataset_escape", "run: dataset: ../escape, --out OUT/results")
def dataset_escape(case):
    out = case.tmp / "out"
    out.mkdir()
    result = case.command("run", sample_config(case, dataset="../escape"), "--out", out / "results", timeout=120)
    outside = sorted(p.name for p in out.iterdir() if p.name != "results")
    result.line += f"; wrote outside --out ({', '.join(outside)})" if outside else "; nothing outside --out"
    return result


@case("subject_escape", "check: a subject named ../x", tiny=True)
def subject_escape(case):
    return case.command("check", write_config(case.tmp, {"../x": sample_files()}), timeout=CHECK_TIMEOUT)


def sample_run(case, **env):
    """``run configs/sample.yaml --profile quick`` of the checkout, into the case's folder."""
    return case.cli("run", case.project / "configs" / "sample.yaml", "--profile", "quick", "--out", case.tmp / "out",
                    **env)


@case("ctrl_c", "SIGINT to the run's process group once 02_simulate has printed (or 40 s)")
def ctrl_c(case):
    run = sample_run(case)
    run.wait_for(lambda text: "02_simulate" in text, 40)
    if not run.running():
        return Result(str(run.code), run.seconds, "ended before SIGINT: " + case.headline(run.lines, errors=True))
    before, sent = len(run.lines), time.monotonic()
    run.signal(signal.SIGINT)
    ended = run.wait(60)
    seconds, after = time.monotonic() - sent, run.lines[before:]
    if not ended:
        return Result("running 60 s after SIGINT", seconds, f"{len(after)} line(s) after SIGINT: {case.headline(after)}")
    time.sleep(5)
    left = len(tagged(case.tag))  # kernels and training processes that outlived the run
    first = case.headline(after) if after else "(nothing)"
    return Result(str(run.code), seconds, f"{len(after)} line(s) after SIGINT, {left} process(es) left 5 s after exit, "
                                          f"first: {first}")


@case("sigkill", "SIGKILL to the run's process group once training processes run (or 90 s)")
def sigkill(case):
    tmpdir = case.tmp / "tmpdir"
    tmpdir.mkdir()
    run = sample_run(case, TMPDIR=str(tmpdir))
    deadline, training = time.monotonic() + 90, False
    while run.running() and time.monotonic() < deadline and not training:
        training = any("spawn_main" in cmd for cmd in tagged(case.tag).values())
        time.sleep(0.5)
    if not run.running():
        return Result(str(run.code), run.seconds, "ended before SIGKILL: " + case.headline(run.lines, errors=True))
    killed_at = run.seconds
    run.signal(signal.SIGKILL)
    time.sleep(10)
    run.running()
    left = tagged(case.tag)
    files = sum(1 for p in tmpdir.rglob("*") if p.is_file())
    when = "training" if training else "no training process after 90 s"
    return Result(str(run.code), killed_at, f"{len(left)} processes, {files} files in TMPDIR left after 10 s ({when})")


@case("second_run", "a second identical run on the same --out once the first has printed a line")
def second_run(case):
    first = sample_run(case)
    if not first.wait_for(lambda text: text.strip(), 60):
        return Result("-", None, "the first run printed nothing in 60 s: " + case.headline(first.lines))
    second = sample_run(case)
    if not second.wait(60):
        return Result("running after 60 s", 60, case.headline(second.lines))
    return Result(str(second.code), second.seconds, case.headline(second.lines, errors=second.code != 0))


@case("scheduler_no_resource", "run --scheduler: a dask scheduler and one worker without --resources subject=1")
def scheduler_no_resource(case):
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = Path(sys.executable).parent / "dask"
    case.start([dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"])
    case.start([dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--local-directory", case.tmp / "worker"])
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
    except Exception as error:  # noqa: BLE001 - the row says what happened
        return Result("-", None, f"the dask cluster did not start: {type(error).__name__}: {error}")
    return case.command("run", sample_config(case), "--scheduler", address, "--out", case.tmp / "out", timeout=90)


# --------------------------------------------------------------------------- the table


def describe(project):
    """The header line: checkout, commit, date, cores and load."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD") or "(not a git checkout)"
    if git("status", "--porcelain"):
        commit += " + uncommitted changes"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{project} at {commit}, {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores "
            f"(load average {load})")


def cell(text):
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS - 1] + "…"


def try_case(name, project):
    """One case in its own temporary folder, its commands ended whatever happens."""
    what, fn, _ = CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"bad_inputs_{name}_", ignore_cleanup_errors=True) as tmp:
        current = Case(project, tmp)
        try:
            result = fn(current)
        except Exception as error:  # noqa: BLE001 - a case that cannot run is a row, not a crash
            result = Result("error", None, f"the case could not run: {type(error).__name__}: {error}")
        finally:
            current.close()
    seconds = "" if result.seconds is None else f"{result.seconds:.1f}"
    return f"| {name} | {cell(what)} | {cell(result.code)} | {seconds} | {cell(result.line)} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO, help="the checkout to try (default: this repository)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), metavar="NAME",
                        help=f"cases to run (default: all): {' '.join(CASES)}")
    parser.add_argument("--tiny", action="store_true", help="only the two check-only cases marked tiny (seconds)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    names = args.cases or [name for name, (_, _, tiny) in CASES.items() if tiny or not args.tiny]

    print(describe(project), flush=True)
    print()
    print("| case | input | exit code | seconds | first line printed |")
    print("|---|---|---|---|---|", flush=True)
    for name in names:
        print(try_case(name, project), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
