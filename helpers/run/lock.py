"""One run at a time per results folder.

Two runs on the same ``--out`` would both do all the work, interleave their progress files
and, with different settings, mix their results. ``synthqa run`` therefore takes a lock:
``<out>/.synthqa.lock``, a small JSON file naming the process id, the host, the start time
and the command. A second run is refused with those details. A lock whose process is gone
(same host, no such process) was left by a killed run and is taken over; a lock from
another host cannot be checked and is refused, naming the file to remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["LOCK_NAME", "LockedError", "results_lock"]

LOCK_NAME = ".synthqa.lock"


class LockedError(ValueError):
    """Another run holds the results folder."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def results_lock(out, *, command=""):
    """Hold ``<out>/.synthqa.lock`` while the block runs.

    Yields
    ------
    str
        "" or a note that a stale lock (a killed run's) was taken over.

    Raises
    ------
    LockedError
        When a live run (or one on another host) holds the folder.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    note = ""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError):
                held = {}
            pid, host = held.get("pid"), held.get("host")
            if isinstance(pid, int) and host == me["host"] and not _alive(pid):
                path.unlink(missing_ok=True)  # left by a killed run
                note = f"took over the lock of run {pid} (started {held.get('started', '?')}), which is no longer running"
                continue
            raise LockedError(
                f"{out}: another run holds this results folder (pid {pid}, host {host}, started "
                f"{held.get('started', '?')}: {held.get('command', '')}); wait for it, or use another --out. "
                f"If that run is gone, remove {path}"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield note
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass
