"""Per-subject work on a Dask cluster (``dask.distributed``), for the batch runner.

``--scheduler local`` starts a :class:`distributed.LocalCluster` of worker processes on
this machine; any other value is the address of a running scheduler, for example one
started by ``dask-jobqueue`` on SLURM or PBS (see the README). Workers must see the same
file system as the runner: they read the configs and data and write into the results
folder, and they must have this project installed in their environment.

This module knows nothing of the runner: it maps a function over subjects and turns a
task that died into a failed :class:`helpers.results.SubjectResult`.
"""

from __future__ import annotations

import logging
import uuid

from helpers.results import failed

__all__ = ["dask_map"]


def dask_map(fn, config_path, subjects, *, scheduler, workers=1, **kwargs):
    """Submit ``fn(config_path, subject, **kwargs)`` for every subject; yield the results
    as they complete.

    ``fn`` returns a :class:`~helpers.results.SubjectResult` and never raises; a task
    that still fails (its worker was killed, ran out of memory, or the cluster lost it)
    becomes a failed result for that subject at step ``"dask task"``, so the other
    subjects go on.

    Parameters
    ----------
    scheduler : str
        ``"local"`` for a LocalCluster of ``workers`` processes (one thread each), or a
        scheduler address such as ``"tcp://10.0.0.5:8786"``.
    """
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        run = uuid.uuid4().hex[:8]  # keys are scheduler-wide: another dataset may have a subject "01" too
        futures = {
            client.submit(fn, str(config_path), s, key=f"synthqa-{run}-{s}", pure=False, retries=0, **kwargs): s
            for s in subjects
        }
        for fut in as_completed(futures):
            subject = futures[fut]
            try:
                yield fut.result()
            except Exception as e:  # the task or its worker died
                yield failed(subject, "dask task", e)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
