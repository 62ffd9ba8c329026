"""Processes that die with the run that started them.

A run starts kernels (papermill), an evaluation process per step and training workers
inside the kernels. Killing the runner (SIGKILL of its process group, a lost Dask worker)
must not leave any of them idle under PID 1 holding a gigabyte each. Linux delivers a
*parent-death signal* to a child whose parent exits, whatever killed the parent:
:func:`die_with_parent` asks for SIGKILL. It is set in the child itself — as a ``Popen``
``preexec_fn`` for kernels and the evaluation, and in the initializer of every training
worker — so a chain runner → kernel → worker unwinds from any link. On systems without
``prctl`` it does nothing (the runner's own clean-up still runs on a normal exit).

:func:`tree_memory` measures what such a tree of processes holds: the memory a subject
needs is in its kernels and training processes, not in the process that started them.
:func:`tagged_processes` finds the processes a run started, by a variable in their
environment, however they were started (the kill tests and ``benchmarks/bad_inputs.py``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = ["die_with_parent", "run_in_workers", "tree_memory", "tagged_processes", "Tagged"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid=None, sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` to this process when its parent exits.

    Parameters
    ----------
    parent_pid : int, optional
        The parent's pid as the parent knew it. When given and this process's parent is
        already another one (the parent died before the request, and this process was
        adopted), the process kills itself at once: the signal would never come.

    Returns True when the request was made (Linux), False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


def tree_memory(pid=None):
    """Memory of process ``pid`` (default: this one) and all of its descendants, in bytes.

    Returns
    -------
    pss, rss : int
        The sums of the proportional set sizes (shared pages split among the processes
        sharing them: close to what a batch job's memory cgroup counts) and of the
        resident set sizes (an upper bound: each process's shared libraries counted in
        full). A process that ends while it is read is skipped; (0, 0) when ``pid`` is gone.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    pss = rss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.AccessDenied:
            info = proc.memory_info()
        except psutil.Error:  # ended between listing and reading
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


class Tagged(NamedTuple):
    """A process found by :func:`tagged_processes`."""

    ppid: int
    cwd: str
    cmdline: str


def tagged_processes(variable, value):
    """The processes whose environment holds ``variable=value`` (Linux: reads ``/proc``).

    A variable set in a run's environment is inherited by everything it starts, through
    kernels, workers and ``spawn``; a process that changes its own environment later is not
    seen (``/proc/PID/environ`` is the environment it started with).

    Returns
    -------
    dict of int to Tagged
        pid -> parent pid, working folder and command line (arguments joined by spaces).
        Processes that end while they are read, or that are not ours to read, are skipped.
    """
    needle, found = f"{variable}={value}".encode(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cwd = os.readlink(entry / "cwd")
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        found[int(entry.name)] = Tagged(ppid, cwd, cmd)
    return found


@contextlib.contextmanager
def run_in_workers(func, tasks, *, workers, initializer=None, initargs=()):
    """Run ``func(task)`` for every task in spawned worker processes.

    A context manager yielding an iterator of ``(task, result)`` pairs in the order the
    tasks finish; ``result`` is the exception when ``func`` raised one in the worker. On
    leaving the ``with`` block early (an exception, a ``break``), the tasks not yet
    started are cancelled and the running ones finish. :func:`helpers.judges.training.train_replicates` trains
    with it and :func:`helpers.generators.calibration.calibrate` fits with it.

    Parameters
    ----------
    func : callable
        A module-level function (workers import it by name).
    tasks : iterable
        Picklable arguments, one call each.
    workers : int
        Processes to start (``spawn``: TensorFlow is not fork-safe).
    initializer, initargs : optional
        Run once in each worker before its first task.
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, tuple(initargs)),
    )
    try:
        futures = {pool.submit(func, task): task for task in tasks}
        yield _as_finished(futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(parent_pid, initializer, initargs):
    """Every worker dies with the process that started it (a killed kernel or runner
    leaves no worker behind: :func:`helpers.processes.die_with_parent`), then runs the
    caller's initializer."""
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _as_finished(futures):
    for future in concurrent.futures.as_completed(futures):
        try:
            result = future.result()
        except concurrent.futures.process.BrokenProcessPool:
            raise  # a worker died (killed, out of memory): nothing to pair with one task
        except Exception as e:  # raised by the task in its worker
            result = e
        yield futures[future], result
