"""What the batch runner prints: progress that moves, and a summary that answers.

The runner reports events (plain dicts) to a :class:`Console`:

- ``{"event": "dataset", "dataset", "subjects", "profile"}``
- ``{"event": "subject", "dataset", "subject", "jobs", ...}`` when a subject starts; on
  Dask a second start of the same subject means Dask re-ran it (its worker was lost),
- ``{"event": "step", "dataset", "subject", "step", "index", "total", "subject_dir"}``
  when a step starts,
- ``{"event": "step_done", ..., "status": "ran" | "skipped", "seconds"}``,
- ``{"event": "result", "result": SubjectResult}`` when a subject (or summary) is done.
- ``{"event": "notice", "text"}``: something to act on while the run waits (a Dask
  cluster whose workers cannot take a subject).

Events from a Dask worker carry ``host`` and ``worker``; their lines name the host.

On a terminal one status line is redrawn every half second: dataset, subject, step,
the training step's models done and the last finished replicate (read from the subject's
``models/progress.jsonl``), and the elapsed times. Everywhere, one line is printed per
finished step, so CI logs show where a run is. Failures are printed when they happen and
again at the end, each saying the subject, the step, the exception and the notebook to
open.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

__all__ = ["Console", "duration", "training_progress"]


def duration(seconds):
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _clock(seconds):
    """``"4:05"``, ``"1:02:03"``."""
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def training_progress(subject_dir, *, since=0.0):
    """The last line of ``<subject_dir>/models/progress.jsonl`` as a dict, or None when
    there is none written after ``since`` (a time stamp)."""
    path = Path(subject_dir) / "models" / "progress.jsonl"
    try:
        if path.stat().st_mtime < since:
            return None
        lines = path.read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


class Console:
    """Prints the runner's events to ``stream`` (default: stdout; failures: stderr).

    ``live`` (default: whether ``stream`` is a terminal) redraws a status line in place.
    """

    def __init__(self, stream=None, *, errors=None, live=None):
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.time()
        self._lock = threading.Lock()
        self._state = None  # the step now running: dict of the last "step" event + start time
        self._stop = threading.Event()
        self._thread = None
        self._width = 0
        self._started = set()  # (dataset, subject) seen starting: a second start is a Dask re-run
        if self.live:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ events
    def __call__(self, event):
        kind = event.get("event")
        if kind == "dataset":
            n = len(event["subjects"])
            self.print(f"{event['dataset']}: {n} subject{'s' if n != 1 else ''}, profile {event['profile']}")
        elif kind == "subject":
            key = (event["dataset"], event["subject"])
            if key in self._started:
                self.print(f"  {key[0]}/{key[1]}  re-run by Dask on {event.get('host', '?')}: the worker running it "
                           "was lost; finished steps are kept")
            self._started.add(key)
        elif kind == "notice":  # something the user should act on while the run waits
            self.print(f"  {event['text']}")
        elif kind == "step":
            with self._lock:
                self._state = {**event, "since": time.time()}
        elif kind == "step_done":
            with self._lock:
                self._state = None
            who = f"{event['dataset']}/{event['subject']}"
            note = f"  ({event['note']})" if event.get("note") else ""
            host = f"  on {event['host']}" if event.get("worker") else ""
            self.print(f"  {who}  {event['step']:<22} {event['status']:<8} {duration(event['seconds'])}{host}{note}")
        elif kind == "result":
            result = event["result"]
            if not result.ok:
                self.print(f"  FAILED {result.describe()}", error=True)
            elif result.worker:  # ran on Dask: its steps were printed as the worker reported them
                total = sum(seconds for _, _, seconds in result.steps)
                self.print(f"  {result.dataset}/{result.subject}  done on {result.host} in {duration(total)}")

    def print(self, text, *, error=False):
        with self._lock:
            self._clear()
            print(text, file=self.errors if error else self.stream, flush=True)

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._clear()

    # ------------------------------------------------------------------ status line
    def status(self):
        """The status line for the step now running ("" when none)."""
        state = self._state
        if state is None:
            return ""
        now = time.time()
        parts = [f"[{state['index']}/{state['total']}] {state['dataset']}/{state['subject']}", state["step"]]
        if state["step"].startswith("03"):
            done = training_progress(state["subject_dir"], since=state["since"])
            if done:
                parts.append(f"models {done.get('done')}/{done.get('total')}, last {done.get('method')} r{done.get('replicate')}")
            else:
                parts.append("training the first models")
        parts.append(f"{_clock(now - state['since'])} (total {_clock(now - self.started)})")
        return " · ".join(str(p) for p in parts)

    def _tick(self):
        while not self._stop.wait(0.5):
            line = self.status()[: shutil.get_terminal_size((100, 20)).columns - 1]
            with self._lock:
                if self._state is None:
                    continue
                self._clear()
                self.stream.write(line)
                self.stream.flush()
                self._width = len(line)

    def _clear(self):
        if self._width:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._width = 0
