"""Processes that die with the run, found by their tag, and the memory of a process tree.

Expected values come from the processes the tests start themselves: their pids, parents,
folders and the memory they were told to hold."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from helpers.processes import tagged_processes, tree_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SLEEP = "import time; time.sleep(60)"


def _wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_tagged_processes_finds_the_tagged_child_only(tmp_path):
    tag = uuid.uuid4().hex
    tagged = subprocess.Popen([sys.executable, "-c", SLEEP, "marker-a"], cwd=tmp_path,
                              env={**os.environ, "SYNTHQA_TEST_TAG": tag})
    other = subprocess.Popen([sys.executable, "-c", SLEEP, "marker-b"], env={**os.environ, "SYNTHQA_TEST_TAG": "x" + tag})
    try:
        found = tagged_processes("SYNTHQA_TEST_TAG", tag)
        assert list(found) == [tagged.pid]
        assert found[tagged.pid].ppid == os.getpid()
        assert found[tagged.pid].cwd == str(tmp_path.resolve())
        assert found[tagged.pid].cmdline.endswith(f"-c {SLEEP} marker-a ")
        assert tagged_processes("SYNTHQA_TEST_TAG", tag[:-1]) == {}  # the whole value, not a prefix
    finally:
        for p in (tagged, other):
            p.kill()
            p.wait()
    assert tagged_processes("SYNTHQA_TEST_TAG", tag) == {}


def test_a_grandchild_that_asked_dies_with_its_killed_parent(tmp_path):
    """A parent SIGKILLed cannot clean up; the child it started goes anyway (parent-death signal)."""
    tag, asked = uuid.uuid4().hex, tmp_path / "asked"
    grandchild = ("import pathlib, sys, time; from helpers.processes import die_with_parent; "
                  "die_with_parent(); pathlib.Path(sys.argv[1]).write_text('yes'); time.sleep(60)")
    child = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}, {str(asked)!r}]); "
             "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "SYNTHQA_TEST_TAG": tag})
    try:
        assert _wait_for(asked.exists)  # the grandchild has asked for the signal
        grandchild_pid = next(pid for pid, p in tagged_processes("SYNTHQA_TEST_TAG", tag).items() if p.ppid == parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: grandchild_pid not in tagged_processes("SYNTHQA_TEST_TAG", tag))
    finally:
        for pid in tagged_processes("SYNTHQA_TEST_TAG", tag):
            os.kill(pid, signal.SIGKILL)


def test_tree_memory_counts_a_childs_memory():
    before_pss, before_rss = tree_memory()
    hog = subprocess.Popen([sys.executable, "-c", "import sys, time; x = b'1' * (300 << 20); "
                            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout.readline() == "ready\n"
        pss, rss = tree_memory()
        assert pss - before_pss > 250 << 20  # the child's 300 MB, shared with nobody
        assert rss >= pss
        assert tree_memory(hog.pid)[0] > 250 << 20
    finally:
        hog.kill()
        hog.wait()
    assert tree_memory(hog.pid) == (0, 0)  # gone
