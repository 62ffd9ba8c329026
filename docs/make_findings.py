"""Write docs/findings.md from the summary tables of a run (default results/summary).

    .venv/bin/python docs/make_findings.py [SUMMARY_DIR]

The numbers in docs/findings.md are the run's own output; rerun this after `make run`.
"""
import sys
from pathlib import Path

from helpers.io import atomic_path
from helpers.report.text import findings_markdown

summary = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/summary")
target = Path(__file__).resolve().parent / "findings.md"
with atomic_path(target) as tmp:
    Path(tmp).write_text(findings_markdown(summary, source=f"make run, summary {summary.as_posix()}"))
print(f"wrote {target}")
