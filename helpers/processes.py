"""Processes that die with the run that started them.

A run starts kernels (papermill), an evaluation process per step and training workers
inside the kernels. Killing the runner (SIGKILL of its process group, a lost Dask worker)
must not leave any of them idle under PID 1 holding a gigabyte each. Linux delivers a
*parent-death signal* to a child whose parent exits, whatever killed the parent:
:func:`die_with_parent` asks for SIGKILL. It is set in the child itself — as a ``Popen``
``preexec_fn`` for kernels and the evaluation, and in the initializer of every training
worker — so a chain runner → kernel → worker unwinds from any link. On systems without
``prctl`` it does nothing (the runner's own clean-up still runs on a normal exit).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent"]

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
