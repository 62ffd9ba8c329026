"""The batch runner: the notebooks per subject, then the summary, for one or more datasets.

    synthqa run CONFIG [CONFIG ...] [--profile quick|paper] [--subjects ID ...] [--jobs N]
                       [--out DIR] [--force] [--scheduler ADDRESS|local]
    python -m helpers.run.batch CONFIG [CONFIG ...] [same options]

Before anything runs, every config and every subject's input files are checked
(:func:`check_inputs`, the same as ``synthqa check``): a wrong dataset root or a missing
file stops the run in seconds, before a notebook starts.

Per subject, notebooks 01-03 run under papermill into ``<out>/<dataset>/<subject>/``,
then the evaluation (:func:`helpers.run.pipeline.evaluate_subject`) and the judges with their
known-answer check (:func:`helpers.run.pipeline.judge_subject`); then notebook 04 into
``<out>/<dataset>/summary/``. Several configs: each dataset gets its own summary, and
``<out>/summary/`` compares them all (one figure panel per dataset). Subjects run one
after another; ``--jobs`` is the number of worker processes training the models inside a
subject (0: every core). ``--scheduler`` sends subjects to Dask instead
(:mod:`helpers.run.cluster`): ``local`` starts a ``LocalCluster`` on this machine, any other
value is the address of a running scheduler (for example one started by ``dask-jobqueue``
on SLURM or PBS; see the README). There each subject takes a worker's resource
``subject=1`` and trains with the worker's threads.

A step whose executed notebook exists and ran with the same parameters is skipped on
rerun unless ``--force``. Every file is written under a temporary name and renamed, so a
killed run leaves no half-written result; its leftovers are removed at the next start.
One subject failing does not stop the others: each failure names the subject, the step,
the error and the notebook to open. Exit status: 0 all done, 1 some subject or summary
failed, 2 a bad config or input (nothing ran).

Shareable output: each executed notebook is rendered to HTML without code, stderr or
progress bars, loading the dataset folder's single ``plotly.min.js``
(:mod:`helpers.report.render`); ``index.html`` links everything; ``provenance.json`` in every
results folder says what produced it (:mod:`helpers.report.provenance`).

Fault injection, for tests: ``SYNTHQA_FAIL_AT=[SUBJECT/]STEP[:kill]`` makes the runner
fail when it reaches STEP (``01_load_data`` ... ``evaluate``, ``known_answers``, ``04_results``) with an
:class:`InjectedFault`, or, with ``:kill``, kill its own process with SIGKILL right after
the step's temporary output file was created, exactly as an interrupted run would.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from helpers.config import NOTEBOOK_DIR, load_config, load_profile
from helpers.run.console import Console, duration
from helpers.io import atomic_path
from helpers.run.lock import LockedError, results_lock
from helpers.processes import die_with_parent
from helpers.run.results import SubjectResult, failed

__all__ = [
    "SUBJECT_NOTEBOOKS",
    "SUMMARY_NOTEBOOK",
    "FAIL_AT",
    "InjectedFault",
    "run_notebook",
    "evaluate",
    "run_subject",
    "run_summary",
    "check_inputs",
    "run_dataset",
    "run_datasets",
    "add_run_arguments",
    "run_command",
    "check_command",
    "main",
]

SUBJECT_NOTEBOOKS = ("01_load_data", "02_simulate", "03_train_autoencoder")
EVALUATE = "evaluate"
KNOWN_ANSWERS = "known_answers"
_STEP_FUNCTIONS = {EVALUATE: "evaluate_subject", KNOWN_ANSWERS: "judge_subject"}
SUMMARY_NOTEBOOK = "04_results"
FAIL_AT = "SYNTHQA_FAIL_AT"

KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ log: errors only
    "GRPC_VERBOSITY": "ERROR",
    "PYTHONUNBUFFERED": "1",
}
"""Environment of the notebooks' kernels (added to this process's)."""

_RESULT_NEUTRAL = {"jobs"}  # parameters that do not change a step's results: no rerun for them


class InjectedFault(RuntimeError):
    """The failure asked for by ``SYNTHQA_FAIL_AT`` (tests only)."""


def inject_fault(step, subject=""):
    """Fail (or kill this process) here when ``SYNTHQA_FAIL_AT`` names this step."""
    spec = os.environ.get(FAIL_AT, "")
    if not spec:
        return
    where, _, how = spec.partition(":")
    who, _, at = where.rpartition("/")
    if at != step or (who and who != str(subject)):
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"{FAIL_AT}={spec}: fault injected at step {step}")


def quiet_logging():
    """Keep the libraries' own chatter off the console (papermill's unknown-parameter
    warnings, kernel start-up, Dask's worker logs): the runner says what matters."""
    for name in ("papermill", "traitlets", "jupyter_client", "nbclient", "distributed", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- one notebook


def _kernel_manager_class(log_path, tmp, cores=None):
    """A kernel manager whose kernel runs with :func:`step_env` and writes its own
    stdout/stderr (the ``[IPKernelApp]`` warnings, TensorFlow's start-up lines, a crash's
    last words) to ``log_path`` instead of the console. Its connection file is written in
    the step's temporary folder ``tmp`` (jupyter_client's default is the system's)."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            if not self.connection_file:
                self.connection_file = str(Path(tmp) / f"kernel-{uuid.uuid4().hex}.json")
            kw["env"] = {**(kw.get("env") or os.environ), **step_env(tmp, cores)}
            kw["preexec_fn"] = functools.partial(die_with_parent, os.getpid())  # dies with the runner
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:  # the kernel keeps its own copy of the handle
                kw["stdout"] = kw["stderr"] = log
                return await super().start_kernel(**kw)

    return QuietKernelManager


def _executed_parameters(path):
    """The parameters an executed notebook ran with (papermill's provenance), or None."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4).metadata.get("papermill", {}).get("parameters")
    except Exception:  # unreadable: treat as not done
        return None


def _comparable(parameters):
    if parameters is None:
        return None
    return {k: v for k, v in json.loads(json.dumps(parameters)).items() if k not in _RESULT_NEUTRAL}


def _kernel_name():
    """The project's kernel (``make`` installs ``synthqa`` into .venv), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "synthqa" if "synthqa" in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(name, out_dir, parameters, *, force=False, subject="", cores=None):
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``out_dir`` and render it.

    The executed notebook is written to a temporary name, rendered to HTML
    (:func:`helpers.report.render.render_html`, loading ``../plotly.min.js``), and renamed once
    both succeeded; its presence marks the step as done. A step is skipped when its
    executed notebook and HTML exist and it ran with the same parameters (papermill keeps
    them in the notebook's metadata; ``jobs`` does not count); changed parameters
    (another profile, seed, method list) rerun it. The kernel's own output goes to
    ``out_dir/logs/<name>.log``. On failure the partly executed notebook is kept as
    ``<name>.failed.ipynb`` and the error is re-raised with that path attached
    (``failed_notebook``, ``kernel_log``).

    Returns
    -------
    "ran" or "skipped"
    """
    from helpers.report.render import render_html

    out_dir = Path(out_dir)
    out = out_dir / f"{name}.ipynb"
    with step_tempdir(out_dir) as tmp:
        return _run_notebook(name, out_dir, out, parameters, force=force, subject=subject, render_html=render_html,
                             step_tmp=tmp, cores=cores)


def _run_notebook(name, out_dir, out, parameters, *, force, subject, render_html, step_tmp, cores):
    import papermill as pm

    html = out.with_suffix(".html")
    failed_nb = out_dir / f"{name}.failed.ipynb"
    log = out_dir / "logs" / f"{name}.log"
    if not force and out.is_file() and html.is_file():
        if _comparable(parameters) == _comparable(_executed_parameters(out)):
            return "skipped"
    out_dir.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    with atomic_path(out) as tmp:
        try:
            inject_fault(name, subject)
            pm.execute_notebook(
                str(NOTEBOOK_DIR / f"{name}.ipynb"),
                str(tmp),
                parameters=parameters,
                kernel_name=_kernel_name(),
                kernel_manager_class=_kernel_manager_class(log, step_tmp, cores),
                cwd=str(out_dir),
                progress_bar=False,
                log_output=False,
            )
        except Exception as e:
            if tmp.is_file() and tmp.stat().st_size:
                os.replace(tmp, failed_nb)
                e.failed_notebook = str(failed_nb)
            e.kernel_log = str(log) if log.is_file() else ""
            raise
        render_html(tmp, html)
    failed_nb.unlink(missing_ok=True)
    return "ran"


TMP_FOLDER = Path("logs") / "tmp"
"""Where a step's processes (the kernel, its training workers, the evaluation) put their
temporary files — TensorFlow's autograph writes one ``__autograph_generated_file*.py`` per
traced function — relative to the results folder; removed when the step ends."""


@contextlib.contextmanager
def step_tempdir(out_dir):
    """The temporary folder of the processes a step starts, under ``out_dir``; removed
    afterwards (also after a failure; a killed run's leftovers go with the next run's).

    This process's environment is left alone (a Dask worker runs several subjects in
    threads of one process): the step's processes get the folder through :func:`step_env`.
    """
    import shutil

    folder = Path(out_dir) / TMP_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""The numeric libraries' thread counts, set to a subject's cores in its steps' processes."""


def step_env(tmp, cores=None):
    """The environment of a step's processes: this process's, :data:`KERNEL_ENV`, and
    ``TMPDIR`` set to the step's temporary folder ``tmp`` (inherited by the training
    workers, so TensorFlow's autograph files land there too).

    With ``cores``, the BLAS/OpenMP thread counts (:data:`THREAD_VARIABLES`) are set to
    it: a subject computes with the cores it was given, and with the same cores gives the
    same bits wherever it runs (a Dask nanny sets them to 1; a float32 sum's rounding
    depends on how the threads split it)."""
    env = {**os.environ, **KERNEL_ENV, "TMPDIR": str(tmp)}
    if cores:
        env.update({name: str(int(cores)) for name in THREAD_VARIABLES})
    return env


def remove_stale_temporaries(folders):
    """Delete temporary files left by a killed run (``.<name>.tmp-*``) in ``folders``
    (this run's subject folders and summaries only: another run may be writing elsewhere)."""
    for folder in map(Path, folders):
        if folder.is_dir():
            for p in folder.rglob(".*.tmp-*"):
                p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one subject


def subject_parameters(config, subject, subject_dir, *, profile, jobs=0):
    """The papermill parameters of notebooks 01-03 for one subject (the notebooks'
    documented parameters, nothing else)."""
    settings = config.simulation_settings()  # methods, seed, snr, noise, min_pool, wm_fa_min
    common = {"subject_dir": str(subject_dir), **settings, "profile": profile}
    return {
        "01_load_data": {"config": str(Path(config.path).resolve()), "subject": str(subject), "out_dir": str(subject_dir)},
        "02_simulate": dict(common),
        "03_train_autoencoder": {**common, "jobs": int(jobs)},
    }


class StepError(RuntimeError):
    """A step that ran in its own process failed; ``ename``/``evalue`` carry its error."""

    def __init__(self, ename, evalue, log):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.kernel_log = ename, evalue, str(log)


_EVALUATE = """\
import sys
from helpers.run import pipeline
from helpers.run.results import error_line
try:
    getattr(pipeline, sys.argv[4])(sys.argv[1], force=sys.argv[2] == "1")
except Exception as e:
    import traceback
    traceback.print_exc()
    with open(sys.argv[3], "w") as f:
        f.write(error_line(e))
    sys.exit(1)
"""


def evaluate(subject_dir, *, force=False, step=EVALUATE, cores=None):
    """:func:`helpers.run.pipeline.evaluate_subject` (``step="evaluate"``) or
    :func:`helpers.run.pipeline.judge_subject` (``step="known_answers"``: every judge on the
    real scan and the known-answer check) in a process of its own.

    Like the notebooks' kernels, it runs with :data:`KERNEL_ENV` and writes TensorFlow's
    start-up lines and warnings to ``logs/<step>.log``, not the console; and the
    runner's memory does not grow with each subject's models. Returns "ran".
    """
    subject_dir = Path(subject_dir)
    with step_tempdir(subject_dir) as tmp:
        return _evaluate(subject_dir, force=force, step=step, tmp=tmp, cores=cores)


def _evaluate(subject_dir, *, force, step, tmp, cores):
    import subprocess
    import tempfile

    import helpers

    log = subject_dir / "logs" / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    package_root = str(Path(helpers.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**step_env(tmp, cores), "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(dir=tmp) as here:
        error = Path(here) / "error.txt"
        with open(log, "wb") as out:
            done = subprocess.run(
                [sys.executable, "-c", _EVALUATE, str(subject_dir), "1" if force else "0", str(error), _STEP_FUNCTIONS[step]],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, cwd=subject_dir, check=False,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),  # dies with the runner
            )
        if done.returncode != 0:
            text = error.read_text() if error.is_file() else f"the evaluation process exited with status {done.returncode}"
            ename, _, evalue = text.partition(": ")
            raise StepError(ename, evalue, log)
    return "ran"


def run_subject(config_path, subject, *, profile, out, force=False, jobs=0, progress=None, command=None, index=1, total=1):
    """Notebooks 01-03 and the evaluation for one subject; never raises.

    This is the unit of work sent to a Dask worker (:mod:`helpers.run.cluster`), so it
    writes the subject's ``provenance.json`` where it runs. ``progress`` receives the
    events listed in :mod:`helpers.run.console`. The subject computes with ``jobs`` cores
    (0: every core of this machine): that many training processes, and as many BLAS
    threads in its steps' processes (:func:`step_env`).
    """
    import socket

    from helpers.report.provenance import write_provenance

    quiet_logging()
    report = progress or (lambda event: None)
    config = load_config(config_path)
    subject = str(subject)
    subject_dir = config.results_dir(out) / subject
    host = socket.gethostname()
    result = SubjectResult(subject=subject, dataset=config.dataset, host=host)
    params = subject_parameters(config, subject, subject_dir, profile=profile, jobs=jobs)
    where = dict(dataset=config.dataset, subject=subject, subject_dir=str(subject_dir), index=index, total=total)
    cores = int(jobs) if jobs and int(jobs) > 0 else (os.cpu_count() or 1)  # what this subject computes with
    report({"event": "subject", "jobs": cores, **where})
    step = "provenance"
    try:
        write_provenance(subject_dir, config=config, profile=load_profile(profile), subject=subject, command=command)
        for step in (*SUBJECT_NOTEBOOKS, EVALUATE, KNOWN_ANSWERS):
            report({"event": "step", "step": step, **where})
            t = time.perf_counter()
            if step in _STEP_FUNCTIONS:
                inject_fault(step, subject)
                status = evaluate(subject_dir, force=force, step=step, cores=cores)
            else:
                status = run_notebook(step, subject_dir, params[step], force=force, subject=subject, cores=cores)
                force = force or status == "ran"  # later steps depend on this one's output
            result.steps.append((step, status, time.perf_counter() - t))
            report({"event": "step_done", "step": step, "status": status, "seconds": time.perf_counter() - t,
                    "note": _step_note(step, subject_dir), **where})
    except Exception as e:  # one subject failing must not stop the others
        result = failed(subject, step, e, dataset=config.dataset)
        result.host = host
    return result


def _step_note(step, subject_dir):
    """What the console should say beside a finished step: for loading, what was left out
    (voxels, broken volumes, clipped values, a thresholded probability mask)."""
    if step != SUBJECT_NOTEBOOKS[0]:
        return ""
    from helpers.scan.loading import load_note

    meta = Path(subject_dir) / "subject.json"
    return load_note(json.loads(meta.read_text()).get("info", {})) if meta.is_file() else ""


def _newest(paths):
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def run_summary(results_dirs, out_dir, *, subjects=(), config=None, configs=(), profile=None, force=False, command=None,
                progress=None):
    """Notebook 04 over ``results_dirs`` (dataset folders) into ``out_dir``; never raises.
    ``configs`` (a summary over several datasets): their seeds go into the provenance.

    Reruns when a subject's metrics are newer than the summary, or with ``force``.
    """
    from helpers.report.provenance import write_provenance

    report = progress or (lambda event: None)
    out_dir = Path(out_dir)
    dataset = config.dataset if config is not None else "all datasets"
    result = SubjectResult(subject="summary", dataset=dataset)
    params = {"results_dirs": [str(d) for d in results_dirs], "subjects": [str(s) for s in subjects], "out_dir": str(out_dir)}
    metrics = [p for d in map(Path, results_dirs) for pattern in ("*/metrics/metrics.csv", "*/judges/check.json")
               for p in d.glob(pattern)]
    force = force or _newest(metrics) > _newest([out_dir / f"{SUMMARY_NOTEBOOK}.ipynb"])
    where = dict(dataset=dataset, subject="summary", subject_dir=str(out_dir), index=1, total=1)
    try:
        write_provenance(out_dir, config=config, configs=configs, profile=load_profile(profile) if profile else None,
                         command=command)
        report({"event": "step", "step": SUMMARY_NOTEBOOK, **where})
        t = time.perf_counter()
        status = run_notebook(SUMMARY_NOTEBOOK, out_dir, params, force=force, subject="summary")
        result.steps.append((SUMMARY_NOTEBOOK, status, time.perf_counter() - t))
        report({"event": "step_done", "step": SUMMARY_NOTEBOOK, "status": status, "seconds": time.perf_counter() - t, **where})
    except Exception as e:
        result = failed("summary", SUMMARY_NOTEBOOK, e, dataset=dataset)
    return result


# --------------------------------------------------------------------------- checks


def _select(config, subjects, *, strict):
    """The config's subject ids restricted to ``subjects`` (all when None)."""
    ids = config.subject_ids
    if not subjects:
        return ids
    wanted = [str(s) for s in subjects]
    unknown = [s for s in wanted if s not in ids]
    if unknown and strict:
        raise ValueError(f"{config.path}: subject(s) {unknown} not in the config; subjects: {ids}")
    return [s for s in ids if s in wanted]


def _summary_of(info):
    """A few words on one inspected subject, from :func:`helpers.run.inspection.inspect_subject`."""
    if not isinstance(info, dict):
        return ""
    words = []
    if info.get("shape"):
        words.append("x".join(map(str, info["shape"][:3])) + " voxels")
    if info.get("n_volumes") is not None:
        words.append(f"{info['n_volumes']} volumes")
    shells = info.get("shells")
    if shells:
        shells = [f"b={s['b']:g} x{s['n']}" if isinstance(s, dict) and "b" in s and "n" in s else str(s) for s in shells]
        words.append("shells " + ", ".join(shells))
    if info.get("n_dti_directions") is not None:
        words.append(f"{info['n_dti_directions']} tensor directions")
    return ", ".join(words)


def check_inputs(config_paths, *, profile=None, subjects=None):
    """Check configs and every selected subject's input files, reading no image data.

    Returns
    -------
    plan : list of (DatasetConfig, [subject ids], profile name)
        What would run.
    problems : list of str
        Each problem, naming its file (empty when all is well).
    notes : list of str
        One line per subject checked, for the OK summary.
    """
    from helpers.run.inspection import inspect_subject

    plan, problems, notes, datasets = [], [], [], {}
    strict = len(config_paths) == 1
    if profile is not None:
        try:
            load_profile(profile)
        except ValueError as e:
            return [], [str(e)], []
    for path in config_paths:
        try:
            config = load_config(path)
        except ValueError as e:
            problems.append(str(e))
            continue
        if config.dataset in datasets:
            problems.append(f"{config.path}: dataset name {config.dataset!r} is also used by {datasets[config.dataset]}; results would mix")
        datasets[config.dataset] = config.path
        name = profile or config.profile  # a config's own profile was checked by load_config
        try:
            ids = _select(config, subjects, strict=strict)
        except ValueError as e:
            problems.append(str(e))
            continue
        if config.root is not None and not config.root.is_dir():
            problems.append(f"{config.path}: dataset root {config.root} does not exist or is not a folder (set 'root')")
            continue  # every subject would say the same
        for sid in ids:
            try:
                info = inspect_subject(config, sid)
            except ValueError as e:
                problems.append(str(e))
            else:
                notes.append(f"{config.dataset}/{sid}: {_summary_of(info)}".rstrip(": "))
        if ids:
            plan.append((config, ids, name))
    if subjects and not strict:
        listed = {s for _, ids, _ in plan for s in ids}
        missing = [s for s in map(str, subjects) if s not in listed]
        if missing:
            problems.append(f"subject(s) {missing} are in none of the configs")
    if not plan and not problems:
        problems.append("no subject to run")
    return plan, problems, notes


# --------------------------------------------------------------------------- datasets


def _cluster_workers(jobs, n_subjects):
    """Dask LocalCluster workers and the cores (threads) of each: one subject per worker,
    ``jobs`` cores each (0: every core for one worker)."""
    cores = os.cpu_count() or 1
    per_subject = min(jobs, cores) if jobs and jobs > 0 else cores
    return max(1, min(n_subjects, cores // per_subject)), per_subject


def _map_subjects(config_path, subjects, *, scheduler, jobs, progress, **kwargs):
    """Run ``run_subject`` for every subject: one after another here, or on Dask."""
    if scheduler:
        from helpers.run.cluster import dask_map

        workers, cores = _cluster_workers(jobs, len(subjects))
        yield from dask_map(run_subject, config_path, subjects, scheduler=scheduler, workers=workers, cores=cores,
                            jobs=jobs, progress=progress, **kwargs)
        return
    for i, s in enumerate(subjects, 1):
        yield run_subject(config_path, s, jobs=jobs, progress=progress, index=i, total=len(subjects), **kwargs)


def run_dataset(config_path, *, profile=None, subjects=None, jobs=0, out=None, force=False, scheduler=None,
                progress=None, command=None):
    """Run one dataset config: its subjects, then its summary, index and provenance.

    The inputs are not checked here (:func:`run_datasets` does, for the command).

    Returns
    -------
    list of SubjectResult
        Subjects first (in the order they finished), the summary last.
    """
    from helpers.report.provenance import write_provenance
    from helpers.report.render import write_index, write_plotlyjs

    report = progress or (lambda event: None)
    # absolute paths: notebooks run in the results folders, workers anywhere
    config_path = Path(config_path).resolve()
    out = Path(out or "results").expanduser().resolve()  # absolute: notebooks and workers run elsewhere
    config = load_config(config_path)
    profile = profile or config.profile
    subjects = _select(config, subjects, strict=True)
    dataset_dir = config.results_dir(out).resolve()
    remove_stale_temporaries([dataset_dir / s for s in subjects] + [dataset_dir / "summary"])
    write_plotlyjs(dataset_dir)
    write_provenance(dataset_dir, config=config, profile=load_profile(profile), command=command)
    report({"event": "dataset", "dataset": config.dataset, "subjects": subjects, "profile": profile})
    results = []
    for res in _map_subjects(config_path, subjects, profile=profile, out=out, force=force, jobs=jobs,
                             scheduler=scheduler, progress=progress, command=command):
        results.append(res)
        report({"event": "result", "result": res})
    # the summary covers every evaluated subject of the dataset, not only this run's
    evaluated = [s for s in config.subject_ids if (dataset_dir / s / "metrics" / "metrics.csv").is_file()]
    if evaluated:
        res = run_summary([dataset_dir], dataset_dir / "summary", subjects=evaluated, config=config,
                          profile=profile, force=force, command=command, progress=progress)
        results.append(res)
        report({"event": "result", "result": res})
    write_index(dataset_dir)
    return results


def run_datasets(plan, *, jobs=0, out=None, force=False, scheduler=None, progress=None, command=None):
    """Run every (config, subjects, profile) of ``plan`` (from :func:`check_inputs`); with
    several datasets, add the combined summary in ``<out>/summary/``.

    Returns
    -------
    dict
        dataset folder (Path) -> list of SubjectResult; the combined summary under ``<out>``.
    """
    from helpers.report.render import write_plotlyjs, write_root_index

    outcome = {}
    for config, subjects, profile in plan:
        results = run_dataset(config.path, profile=profile, subjects=subjects, jobs=jobs, out=out, force=force,
                              scheduler=scheduler, progress=progress, command=command)
        outcome[config.results_dir(out).resolve()] = results
    if len(plan) > 1:
        root = Path(out).resolve() if out else plan[0][0].results_dir(None).resolve().parent
        dirs = [d for d in outcome if list(d.glob("*/metrics/metrics.csv"))]
        if dirs:
            write_plotlyjs(root)
            profiles = {p for _, _, p in plan}
            res = run_summary(dirs, root / "summary", force=force, command=command, progress=progress,
                              configs=[c for c, _, _ in plan if c.results_dir(out).resolve() in dirs],
                              profile=profiles.pop() if len(profiles) == 1 else None)
            outcome[root] = [res]
            if progress:
                progress({"event": "result", "result": res})
        write_root_index(root, list(outcome.keys() - {root}))
    return outcome


# --------------------------------------------------------------------------- command line


RUN_EPILOG = (
    "Subjects run one after another (--jobs is the number of training processes inside a "
    "subject) unless --scheduler sends them to Dask. Every config and subject is checked "
    "first (as `synthqa check`). A finished step is skipped on rerun unless --force. "
    "Exit status: 0 done, 1 a subject or summary failed, 2 bad config or input (nothing ran)."
)


def _jobs(text):
    """``--jobs``: 0 (one per core) or a positive number of training processes."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (one per core) or a positive number of processes, got {text!r}")
    return value


def add_run_arguments(parser):
    """The options of ``synthqa run`` (and ``python -m helpers.run.batch``)."""
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="dataset config YAML (configs/*.yaml); several give a combined summary")
    parser.add_argument("--profile", help="quick (a smoke test) or paper (the method's recipe); default: each config's, else paper")
    parser.add_argument("--subjects", nargs="+", metavar="ID", help="subject ids (default: every subject in the configs)")
    parser.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                        help="worker processes training the models inside a subject (default 0: every core; "
                             "on a Dask worker, its threads). Subjects run one after another unless --scheduler "
                             "is given")
    parser.add_argument("--out", metavar="DIR", help="results folder (default: ./results)")
    parser.add_argument("--force", action="store_true", help="rerun steps that are already done")
    parser.add_argument("--scheduler", metavar="ADDRESS|local",
                        help="run subjects on Dask: 'local' starts a LocalCluster here (cores / --jobs workers), "
                             "or the address of a running scheduler (e.g. dask-jobqueue on SLURM/PBS) whose "
                             "workers have the resource subject=1 (README)")
    return parser


def _final_summary(outcome, console, seconds, *, profiles=None):
    """The end of a run: its time, then per dataset a compact verdict block (each line
    once: the merged summary repeats no dataset already shown), and the report to open."""
    from helpers.report.text import compact_lines

    console.print(f"\nDone in {duration(seconds)}.")
    shown = set()
    for folder, results in outcome.items():
        blocks = compact_lines(folder / "summary" / "verdict.csv", skip=shown)
        profile = (profiles or {}).get(folder)
        smoke = " (profile quick: a smoke test of the pipeline, not a finding)" if profile == "quick" else ""
        if blocks:
            for ds, lines in blocks.items():
                console.print(f"{ds}{smoke}:")
                for line in lines:
                    console.print(f"  {line}")
                shown.add(ds)
        elif not (folder / "summary" / "verdict.csv").is_file():
            console.print(f"{folder.name or folder}{smoke}:")
            console.print("  no verdict: summary/verdict.csv was not written" + (" (the summary failed)" if any(r.subject == "summary" and not r.ok for r in results) else ""))
        index = folder / "index.html"
        if index.is_file():
            console.print(f"  open {index}" if blocks or len(outcome) == 1 else f"all datasets: open {index}")
    failures = [r for results in outcome.values() for r in results if not r.ok]
    if failures:
        console.print(f"\n{len(failures)} failed:", error=True)
        for r in failures:
            console.print(f"  {r.describe()}", error=True)
    return 1 if failures else 0


def _print_problems(console, problems, header):
    """The input problems found by :func:`check_inputs`, one indented block each, after
    ``header`` (``{}`` becomes "N problem(s)")."""
    console.print(header.format(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"), error=True)
    for p in problems:
        console.print("  " + p.replace("\n", "\n  "), error=True)


def run_command(args, *, console=None):
    """``synthqa run``: check, run, print the verdicts. Returns the exit status."""
    from helpers import __version__

    quiet_logging()
    t0 = time.perf_counter()
    console = console or Console()
    try:
        plan, problems, _ = check_inputs(args.configs, profile=args.profile, subjects=args.subjects)
        problems += run_problems(out=args.out, scheduler=args.scheduler)
        if problems:
            _print_problems(console, problems, "Nothing ran: {} in the inputs")
            return 2
        n = sum(len(ids) for _, ids, _ in plan)
        console.print(f"SynthQA {__version__}: {len(plan)} dataset{'s' if len(plan) != 1 else ''}, {n} subject{'s' if n != 1 else ''}, inputs checked in {duration(time.perf_counter() - t0)}")
        command = getattr(args, "command_line", None) or " ".join(map(shlex.quote, sys.argv))
        try:
            with results_lock(Path(args.out or "results"), command=command) as note:
                if note:
                    console.print(f"  {note}")
                outcome = run_datasets(plan, jobs=args.jobs, out=args.out, force=args.force, scheduler=args.scheduler,
                                       progress=console, command=command)
        except LockedError as e:
            console.print(str(e), error=True)
            return 2
        profiles = {config.results_dir(args.out).resolve(): name for config, _, name in plan}
        if len({name for _, _, name in plan}) == 1:
            profiles.update({folder: plan[0][2] for folder in outcome})
        return _final_summary(outcome, console, time.perf_counter() - t0, profiles=profiles)
    finally:
        console.close()


def run_problems(*, out=None, scheduler=None, timeout=3.0):
    """What would stop a run that the configs do not say: an output folder that is a file,
    a scheduler address that is mistyped or cannot be reached (tried for ``timeout``
    seconds). Each problem is one line."""
    from urllib.parse import urlsplit

    problems = []
    target = Path(out or "results")
    if target.exists() and not target.is_dir():
        problems.append(f"--out {target}: is a file, not a folder; give a folder for the results")
    if scheduler and scheduler != "local":
        text = scheduler if "://" in scheduler else f"tcp://{scheduler}"
        parts = urlsplit(text)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if parts.scheme not in ("tcp", "tls", "ws", "wss") or not host or not port:
            problems.append(f"--scheduler {scheduler!r}: not 'local' nor an address like tcp://HOST:PORT")
        else:
            from helpers.run.cluster import scheduler_problems

            problems += scheduler_problems(text, timeout=timeout)
    return problems


def check_command(args, *, console=None):
    """``synthqa check``: the inputs of ``run``, checked. Returns the exit status."""
    t0 = time.perf_counter()
    console = console or Console(live=False)
    plan, problems, notes = check_inputs(args.configs, profile=args.profile, subjects=args.subjects)
    if problems:
        _print_problems(console, problems, "{}:")
        return 2
    for note in notes:
        console.print(f"  {note}")
    n = sum(len(ids) for _, ids, _ in plan)
    console.print(f"OK: {len(plan)} config{'s' if len(plan) != 1 else ''}, {n} subject{'s' if n != 1 else ''}, "
                  f"profile {', '.join(sorted({p for _, _, p in plan}))} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None):
    """``python -m helpers.run.batch``: the same as ``synthqa run``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.run.batch",
        description="Run SynthQA on dataset configs (the same as `synthqa run`).",
        epilog=RUN_EPILOG,
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = command_line(parser.prog, argv)
    return interruptible(run_command, args)


INTERRUPTED = "interrupted; rerun the same command to resume"


def interruptible(handler, args):
    """Run a command; Ctrl-C prints one line (:data:`INTERRUPTED`), no traceback, and
    returns 130 (128 + SIGINT), as shells expect of an interrupted program."""
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
        return 130


def command_line(prog, argv=None):
    """The command as the user typed it, for provenance: ``synthqa run configs/x.yaml ...``."""
    return " ".join([prog, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
