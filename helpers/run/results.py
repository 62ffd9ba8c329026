"""What happened to one unit of batch work (a subject, or a summary), in one place.

The batch runner (:mod:`helpers.run.batch`) and the Dask bridge (:mod:`helpers.run.cluster`)
both turn exceptions into :class:`SubjectResult` objects through :func:`failed`, so a
failure reads the same wherever it happened: the subject, the step, the exception's last
line and the notebook to open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SubjectResult", "failed", "error_line"]


@dataclass
class SubjectResult:
    """What happened to one subject (or to a summary: ``subject="summary"``)."""

    subject: str
    ok: bool = True
    dataset: str = ""
    steps: list = field(default_factory=list)  # (step, "ran" | "skipped", seconds)
    failed_step: str = ""
    failed_notebook: str = ""  # the partly executed notebook to open, when there is one
    error: str = ""  # the exception's last line: "ValueError: x.nii.gz: not a readable NIfTI"
    log: str = ""  # the kernel's own output (start-up lines, crashes), when there is one
    host: str = ""  # the machine that computed it
    worker: str = ""  # the Dask worker that computed it ("" in a run without Dask)

    def describe(self):
        """One or two lines saying what failed, for the console (empty when ok)."""
        if self.ok:
            return ""
        who = f"{self.dataset}/{self.subject}" if self.dataset else self.subject
        text = f"{who}: {self.failed_step or 'unknown step'} failed: {self.error or 'no message'}"
        if self.failed_notebook:
            text += f"\n    open {self.failed_notebook}"
        if self.log and (not self.failed_notebook or "died" in self.error.lower()):
            text += f"\n    log {self.log}"  # a crashed kernel's last words are only there
        return text


def error_line(exc):
    """An exception as one line, as a reader wants it: ``Type: message``.

    A notebook cell's error (papermill's ``PapermillExecutionError``) names the error the
    cell raised, not papermill's wrapper; ANSI colour codes are removed.
    """
    import re

    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if not ename:
        ename, evalue = type(exc).__name__, str(exc)
    evalue = re.sub(r"\x1b\[[0-9;]*m", "", str(evalue or ""))
    message = " ".join(line.strip() for line in evalue.splitlines() if line.strip())
    text = f"{ename}: {message}" if message else str(ename)
    return text if len(text) <= 500 else text[:497] + "..."


def failed(subject, step, exc, *, dataset=""):
    """A failed :class:`SubjectResult` for ``exc`` raised at ``step``.

    ``exc.failed_notebook`` and ``exc.kernel_log`` (set by the runner) are kept.
    """
    return SubjectResult(
        subject=str(subject),
        ok=False,
        dataset=dataset,
        failed_step=step,
        failed_notebook=str(getattr(exc, "failed_notebook", "") or ""),
        error=error_line(exc),
        log=str(getattr(exc, "kernel_log", "") or ""),
    )
