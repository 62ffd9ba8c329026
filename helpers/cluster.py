"""Per-subject work on a Dask cluster (``dask.distributed``), for the batch runner.

``--scheduler local`` starts a :class:`distributed.LocalCluster` of ``--jobs`` worker
processes on this machine; any other value is the address of a running scheduler, for
example one started by ``dask-jobqueue`` on SLURM or PBS (see the README). Workers must
see the same file system as the runner: they read the configs and data and write into
the results folder, and they must have this project installed in their environment.
"""

from __future__ import annotations

import uuid

__all__ = ["dask_map"]


def dask_map(fn, config_path, subjects, *, scheduler, jobs=1, **kwargs):
    """Submit ``fn(config_path, subject, **kwargs)`` for every subject; yield the results
    as they complete.

    ``fn`` returns a :class:`helpers.batch.SubjectResult` and never raises; a task that
    still fails — its worker was killed, ran out of memory, or the cluster lost it — is
    turned into a failed result for that subject, so the other subjects go on.
    """
    from distributed import Client, LocalCluster, as_completed

    from helpers.batch import SubjectResult

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True, dashboard_address=None)
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
                yield SubjectResult(subject=str(subject), ok=False, failed_step="dask task", error=f"{type(e).__name__}: {e}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
