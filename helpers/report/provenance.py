"""``provenance.json``: what produced a results folder, so a number can be traced back.

Results depend on the machine (TensorFlow's kernels differ between CPUs, GPUs and
versions), so every results folder (dataset, subject, summary) records the package
versions, the git commit of the checkout, the CPU and GPUs, the profile, the seeds, the
dataset config's text and the command line. Collecting it is cheap: versions come from
the installed packages' metadata (nothing is imported), GPUs from TensorFlow only when
the process has already imported it, else from ``nvidia-smi -L``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from helpers.io import save_json

__all__ = ["PACKAGES", "collect", "write_provenance", "provenance_markdown"]

PACKAGES = ("dipy", "tensorflow", "keras", "numpy", "nibabel")
"""Packages whose versions are recorded (beside synthqa and Python)."""

FILENAME = "provenance.json"


def _version(package):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _git_commit():
    """``git describe --always --dirty`` of the checkout, or None (no git, not a checkout)."""
    from helpers.config import PROJECT_ROOT

    if not (PROJECT_ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _gpus():
    """GPU names: TensorFlow's view when this process imported it, else ``nvidia-smi -L``."""
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        try:
            return [d.name for d in tf.config.list_physical_devices("GPU")], "tensorflow"
        except Exception:  # a half-initialised TensorFlow: fall back to the driver's list
            pass
    if shutil.which("nvidia-smi") is None:
        return [], "no nvidia-smi"
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return [], "nvidia-smi failed"
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU")], "nvidia-smi -L"


def _seeds(config, profile):
    from helpers.contract import method_name, replicate_seeds

    replicates = int((profile or {}).get("replicates", 1))
    per_model = {}
    for method in config.methods:
        per_model[method_name(method)] = [
            dict(zip(("simulation", "training"), replicate_seeds(config.seed, method, r))) for r in range(replicates)
        ]
    return {"seed": config.seed, "per_replicate": per_model}


def collect(*, config=None, configs=(), profile=None, subject=None, command=None):
    """The provenance record as a dict.

    Parameters
    ----------
    config : helpers.config.DatasetConfig, optional
        Gives the dataset, its config file and text, and the seeds.
    configs : sequence of helpers.config.DatasetConfig, optional
        For a summary over several datasets: each one's seeds, under ``seeds["per_dataset"]``.
    profile : dict, optional
        From :func:`helpers.config.load_profile`.
    subject : str, optional
        The subject, for a subject folder.
    command : str, optional
        The command line that ran; defaults to this process's ``sys.argv``.
    """
    from helpers import __version__

    gpus, gpu_source = _gpus()
    record = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "versions": {
            "synthqa": __version__,
            "python": platform.python_version(),
            **{name: _version(name) for name in PACKAGES},
        },
        "git": _git_commit(),
        "machine": {
            "host": socket.gethostname(),  # which node computed it (a cluster's workers differ)
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "gpus": gpus,
            "gpus_from": gpu_source,
        },
        "profile": dict(profile) if profile else None,
    }
    if config is not None:
        record["dataset"] = config.dataset
        record["seeds"] = _seeds(config, profile)
        record["config"] = {"path": str(Path(config.path).resolve()), "text": config.text}
    elif configs:
        record["seeds"] = {"per_dataset": {c.dataset: _seeds(c, profile) for c in configs}}
    if subject is not None:
        record["subject"] = str(subject)
    return record


def _seed_text(seeds):
    if "seed" in seeds:
        return str(seeds["seed"])
    if "per_dataset" in seeds:
        return "; ".join(f"{d} {s['seed']}" for d, s in sorted(seeds["per_dataset"].items()))
    return "not recorded"


def write_provenance(folder, **kwargs):
    """Write ``<folder>/provenance.json`` (see :func:`collect` for the keywords)."""
    path = Path(folder) / FILENAME
    save_json(collect(**kwargs), path)
    return path


def provenance_markdown(path):
    """A short Markdown section on how a results folder was made, for the end of a report.

    ``path`` is a ``provenance.json`` or the folder holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        return f"*No provenance recorded ({path} is not there).*"
    record = json.loads(path.read_text())
    versions = record.get("versions", {})
    machine = record.get("machine", {})
    profile = record.get("profile") or {}
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    size = ", ".join(f"{k} {v}" for k, v in profile.items() if k != "name")
    rows = [
        ("SynthQA", f"{versions.get('synthqa')}" + (f" (git {record['git']})" if record.get("git") else "")),
        ("packages", ", ".join(f"{k} {versions.get(k)}" for k in ("python", *PACKAGES) if versions.get(k))),
        ("machine", f"{machine.get('cpu')} × {machine.get('cpu_count')} cores; GPU: {gpus}"),
        ("profile", f"{profile.get('name', '?')} ({size})" if profile else "not recorded"),
        ("seed", _seed_text(record.get("seeds") or {})),
        ("command", f"`{record.get('command', '')}`"),
        ("written", record.get("written", "")),
    ]
    lines = ["### How this was made", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    config = record.get("config")
    if config and config.get("text"):
        lines += ["", f"Dataset config `{config.get('path')}`:", "", "```yaml", config["text"].rstrip(), "```"]
    return "\n".join(lines)
