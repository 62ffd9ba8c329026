"""Per-subject work on a Dask cluster (``dask.distributed``), for the batch runner.

``--scheduler local`` starts a :class:`distributed.LocalCluster` of worker processes on
this machine; any other value is the address of a running scheduler, for example one
started by ``dask-jobqueue`` on SLURM or PBS (see the README). Workers must see the same
file system as the runner: they read the configs and data and write into the results
folder, and they must have this project installed in their environment.

One subject at a time per worker. Every task asks for one unit of the worker resource
:data:`RESOURCE` (``subject``), so a worker started with ``--resources subject=1`` runs
one subject and gives it all of its threads: the subject trains with that many processes
(:func:`subject_cores`), not with every core of the node. A worker that does not
advertise the resource gets no subject; :func:`scheduler_problems` says so before a run.

What happens on a worker is told to the runner as it happens: each event of
:func:`helpers.run.batch.run_subject` (a step started, a step done) goes through Dask's event
log (``Worker.log_event``) to the client, which hands it to the runner's console with the
host that computed it. A subject that starts a second time was re-run by Dask after the
worker running it was lost; the console says so.

Dask's memory limit counts only the worker process, while a subject's memory is in the
kernels and training processes the worker starts. :class:`MemoryWatch` counts them all
(:func:`helpers.processes.tree_memory`, PSS) against the worker's memory limit and, past
it, ends them and fails the subject with a line that says so, rather than let the batch
system kill the whole job without a word.

This module knows nothing of the runner: it maps a function over subjects and turns a
task that died into a failed :class:`helpers.run.results.SubjectResult`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from helpers.processes import tree_memory
from helpers.run.results import failed

__all__ = ["RESOURCE", "MemoryWatch", "dask_map", "free_port", "scheduler_problems", "subject_cores"]

RESOURCE = "subject"
"""The Dask worker resource one subject takes: start workers with ``--resources subject=1``."""


def subject_cores(worker):
    """The cores one subject gets on ``worker``: its threads over the number of subjects
    it may run at once (its :data:`RESOURCE`), at least 1."""
    state = worker.state
    slots = int(state.total_resources.get(RESOURCE, 0)) or state.nthreads
    return max(1, state.nthreads // max(1, slots))


def _plain(event):
    """``event`` with only the values Dask's event log can carry (numbers, strings)."""
    return {k: v for k, v in event.items() if isinstance(v, (str, int, float, bool)) or v is None}


class MemoryWatch(threading.Thread):
    """Every ``every`` seconds, the memory of this process and its descendants (PSS);
    past ``limit`` bytes, kill the descendants (the subject's kernels, evaluation and
    training processes) and keep the peak in :attr:`exceeded`. Stop with :meth:`stop`."""

    def __init__(self, limit, *, every=2.0):
        super().__init__(daemon=True)
        self.limit, self.every, self.exceeded = int(limit), every, 0
        self._stop_event = threading.Event()

    def run(self):
        import psutil

        while not self._stop_event.wait(self.every):
            pss, _ = tree_memory(os.getpid())
            if pss > self.limit:
                self.exceeded = pss
                for child in psutil.Process().children(recursive=True):
                    try:
                        child.kill()
                    except psutil.Error:
                        pass
                return

    def stop(self):
        self._stop_event.set()
        self.join(timeout=self.every + 5)


def _memory_failure(result, watch, worker):
    """``result`` as the failure the memory watch caused, in words a user can act on."""
    gb = 1024**3
    text = (f"MemoryError: the subject's processes used {watch.exceeded / gb:.1f} GB, over its Dask worker's memory "
            f"limit of {watch.limit / gb:.1f} GB ({worker.address}); give each job more memory or fewer cores "
            f"(README: Many subjects, clusters)")
    result.ok, result.error = False, text
    result.failed_step = result.failed_step or "dask task"
    return result


def _on_worker(fn, topic, config_path, subject, *, jobs=0, **kwargs):
    """Run ``fn`` for one subject on this worker, telling the client what happens."""
    from distributed import get_worker

    worker = get_worker()
    where = {"host": socket.gethostname(), "worker": worker.address}

    def tell(event):
        try:
            worker.log_event(topic, {**_plain(event), **where})
        except Exception:  # the client's console must never fail the subject
            pass

    cores = jobs if jobs and jobs > 0 else subject_cores(worker)
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    watch = MemoryWatch(limit) if limit else None
    if watch is not None:
        watch.start()
    try:
        result = fn(config_path, subject, jobs=cores, progress=tell, **kwargs)
    finally:
        if watch is not None:
            watch.stop()
    if watch is not None and watch.exceeded:
        result = _memory_failure(result, watch, worker)
    result.worker = worker.address
    return result


def dask_map(fn, config_path, subjects, *, scheduler, workers=1, cores=1, progress=None, **kwargs):
    """Submit ``fn(config_path, subject, jobs=..., progress=..., **kwargs)`` for every
    subject; yield the results as they complete.

    ``fn`` returns a :class:`~helpers.run.results.SubjectResult` and never raises; a task
    that still fails (its worker was killed, ran out of memory, or the cluster lost it
    more often than Dask's ``allowed-failures``) becomes a failed result for that subject
    at step ``"dask task"``, so the other subjects go on. ``progress`` receives ``fn``'s
    events from the workers, each with ``host`` and ``worker`` added, in the order the
    scheduler saw them.

    Parameters
    ----------
    scheduler : str
        ``"local"`` for a LocalCluster of ``workers`` processes with ``cores`` threads
        each, one subject at a time each; or a scheduler address such as
        ``"tcp://10.0.0.5:8786"``.
    """
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=max(1, cores), processes=True,
                               resources={RESOURCE: 1}, dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    run = uuid.uuid4().hex[:8]  # keys are scheduler-wide: another dataset may have a subject "01" too
    topic = f"synthqa-{run}"
    done = threading.Event()
    if progress is not None:
        client.subscribe_topic(topic, lambda event: progress(event[1]))
        threading.Thread(target=_watch_workers, args=(client, scheduler, progress, done), daemon=True).start()
    try:
        futures = {
            client.submit(_on_worker, fn, topic, str(config_path), s, key=f"synthqa-{run}-{s}", pure=False,
                          retries=0, resources={RESOURCE: 1}, **kwargs): s
            for s in subjects
        }
        for fut in as_completed(futures):
            subject = futures[fut]
            try:
                yield fut.result()
            except Exception as e:  # the task or its worker died
                yield failed(subject, "dask task", e)
    finally:
        done.set()
        if progress is not None:
            client.unsubscribe_topic(topic)
        client.close()
        if cluster is not None:
            cluster.close()


def _resource_problem(workers, address):
    """The line that says why no subject can start on ``workers`` (the scheduler's
    ``scheduler_info()["workers"]``), or "" when one of them can take a subject."""
    able = [w for w in workers.values() if w.get("resources", {}).get(RESOURCE, 0) >= 1]
    if workers and not able:
        return (f"--scheduler {address}: none of its {len(workers)} workers has the resource '{RESOURCE}'; "
                f"start them with `--resources {RESOURCE}=1` (dask worker, or worker_extra_args in "
                f"dask-jobqueue) so that each runs one subject on all of its cores")
    return ""


def _watch_workers(client, address, say, done, *, every=10.0):
    """While subjects wait, say (once per change) when no connected worker can take one:
    none connected yet, or none with the resource. Ends when ``done`` is set."""
    said = ""
    while not done.wait(every):
        try:
            workers = client.scheduler_info().get("workers", {})
        except Exception:  # noqa: BLE001 - the scheduler went away: the futures will say so
            return
        text = _resource_problem(workers, address) or ("" if workers else f"waiting for Dask workers to join {address}")
        if text and text != said:
            say({"event": "notice", "text": text.replace(f"--scheduler {address}: ", "waiting: ")})
        said = text


def scheduler_problems(address, *, timeout=5.0):
    """What would keep a run on the scheduler at ``address`` from starting: workers that
    are connected but none of which advertises :data:`RESOURCE`. One line each; empty
    when all is well (no worker yet is fine: dask-jobqueue starts them on demand)."""
    from distributed import Client

    try:
        client = Client(address, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - any failure to connect is the same problem to the user
        return [f"--scheduler {address}: cannot reach a Dask scheduler there within {timeout:g} s ({e})"]
    try:
        workers = client.scheduler_info().get("workers", {})
    finally:
        client.close()
    problem = _resource_problem(workers, address)
    return [problem] if problem else []


def free_port(host="127.0.0.1"):
    """A TCP port on ``host`` that nothing listens on now (the system picks it), for a
    scheduler to be started on, or for an address where no scheduler answers."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
