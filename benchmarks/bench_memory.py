"""The memory one subject needs: the peak of the whole process tree of a run.

A subject's memory is not in the runner: it is in the notebooks' kernels, the evaluation
processes and the training processes each kernel starts (one per core given to the
subject). Dask's memory limit sees only its worker process; a cluster job must be sized
for the tree. This script runs ``synthqa run`` on one subject and samples, every
``--every`` seconds, the proportional set size (PSS: shared pages split among the
processes sharing them, which is what a job's memory cgroup is closest to) and the
resident set size (RSS, an upper bound: shared libraries counted once per process) of
the runner and all of its descendants. It prints the peak of each sum, and the step
that was running at the PSS peak.

Baseline, measured in the same run: the runner process alone (what Dask's memory
monitor would see of a subject run on a worker), printed as a ratio.

    python benchmarks/bench_memory.py [--config configs/invivo.yaml] [--profile quick] [--jobs 2]
    python benchmarks/bench_memory.py --tiny    # `synthqa check` under the monitor: seconds, for the tests
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from helpers.config import PROJECT_ROOT
from helpers.processes import tree_memory


def tree_memory_of_one(pid):
    """The RSS of process ``pid`` alone (0 once it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0



def monitor(cmd, *, every=0.5, cwd=PROJECT_ROOT):
    """Run ``cmd``; return its exit code, the peaks and the output line before the PSS peak."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    peak = {"pss": 0, "rss": 0, "runner": 0, "during": ""}
    while proc.poll() is None:
        pss, rss = tree_memory(proc.pid)
        own = tree_memory_of_one(proc.pid)
        if pss > peak["pss"]:
            peak["pss"], peak["during"] = pss, (lines[-1].strip() if lines else "start-up")
        peak["rss"], peak["runner"] = max(peak["rss"], rss), max(peak["runner"], own)
        time.sleep(every)
    reader.join(timeout=10)
    return proc.returncode, peak, "".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=PROJECT_ROOT / "configs" / "invivo.yaml")
    parser.add_argument("--subject", default=None, help="default: the config's first subject")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--jobs", type=int, default=2, help="training processes (the cores a subject is given)")
    parser.add_argument("--methods", nargs="*", default=None, help="run these generators only (a config copy)")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--tiny", action="store_true", help="monitor `synthqa check` of the sample: a check that it runs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = args.config if not args.tiny else PROJECT_ROOT / "configs" / "sample.yaml"
        if args.methods:
            import yaml

            data = yaml.safe_load(config.read_text())
            data["methods"] = list(args.methods)
            if data.get("root"):  # relative to the original config's folder
                data["root"] = str((config.parent / data["root"]).resolve())
            config = Path(tmp) / config.name
            config.write_text(yaml.safe_dump(data))
        base = [sys.executable, "-m", "helpers.run.cli"]
        if args.tiny:
            cmd = [*base, "check", str(config)]
        else:
            cmd = [*base, "run", str(config), "--profile", args.profile, "--jobs", str(args.jobs), "--out", str(Path(tmp) / "results")]
            if args.subject:
                cmd += ["--subjects", args.subject]
        t = time.perf_counter()
        rc, peak, text = monitor(cmd, every=args.every)
        seconds = time.perf_counter() - t
    if rc != 0:
        print(text, file=sys.stderr)
        raise SystemExit(f"the monitored command exited with {rc}")
    what = "synthqa check (tiny)" if args.tiny else f"{config.stem}, profile {args.profile}, --jobs {args.jobs}"
    if args.methods and not args.tiny:
        what += f", generators {' '.join(args.methods)} only"
    gb = 1024**3
    print(f"{what}: {seconds:.0f} s")
    print(f"baseline: the runner process alone peaked at {peak['runner'] / gb:.2f} GB RSS (what Dask's memory monitor sees)")
    print(f"process tree peak: {peak['pss'] / gb:.2f} GB PSS, {peak['rss'] / gb:.2f} GB RSS summed "
          f"({peak['pss'] / max(peak['runner'], 1):.1f}x the runner alone)")
    print(f"the PSS peak came after the line: {peak['during']}")


if __name__ == "__main__":
    main()
