"""Every benchmark's tiny mode runs, so a renamed function breaks a test, not a user.

The numbers they print are not checked (timings are never asserted); that each script
runs to its last line, and prints the line its full run is read for, is.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.config import PROJECT_ROOT

BENCH = PROJECT_ROOT / "benchmarks"


def _run(script, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_simulation_tiny():
    out = _run("bench_simulation.py", "--tiny")
    assert "speedup" in out and "x vs dipy multi_tensor" in out
    assert "force speedup" in out and "x vs dipy generate_force_simulations" in out
    assert "Calibrated fit: 20 evaluations" in out  # fitted apart: the Calibrated line times the drawing alone


@pytest.mark.slow
def test_bench_subject_tiny():
    out = _run("bench_subject.py", "--tiny")
    assert "baseline dipy TensorModel WLS" in out and "evaluation" in out


@pytest.mark.slow
def test_bench_training_tiny():
    out = _run("bench_training.py", "--models", "2", "--model-voxels", "600", "--model-epochs", "1",
               "--parallel-repeats", "1", "--epochs", "1", "--repeats", "1", "--voxels", "600")
    assert "parallel speedup" in out and "speedup" in out and "stacked speedup" in out and "per model-step" in out


def test_bench_memory_tiny():
    out = _run("bench_memory.py", "--tiny", timeout=120)
    assert "baseline: the runner process alone" in out and "process tree peak:" in out


def test_bad_inputs_tiny():
    out = _run("bad_inputs.py", "--tiny", timeout=180)
    assert "| case | input | exit code | seconds | first line printed |" in out
    assert "| plugin_import |" in out and "| subject_escape |" in out


def test_bench_intervals_tiny():
    out = _run("bench_intervals.py", "--tiny", timeout=180)
    assert "judge voxels of 1000; generator SubjectFORCE" in out
    assert "width ratio 3 vs 2 replicates: block bootstrap" in out and "replicate-only t" in out


def test_bench_calibration_tiny():
    out = _run("bench_calibration.py", "--tiny", timeout=240)
    assert "two-sample accuracy on the judge voxels: FORCE" in out and "| set | quantity | truth | recovered |" in out
    assert "outside the family, RandomWM: distance" in out
