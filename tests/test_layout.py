"""The package's layout: subpackages by stage, imports one way (docs/layout.md).

The import graph is read from the source with ``ast`` (every ``import``, at module level or
inside a function), so a cycle hidden in a function body counts as one."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "helpers"

# The stages, lowest first: a module may import its own stage, a lower one, or the ground.
STAGES = ("scan", "generators", "judges", "report", "run")
GROUND = "ground"

# Numerical kernels: numpy, scipy and each other; never configuration, files or the runner.
KERNELS = ("dti", "features", "scan.tissue", "scan.noise", "scan.split", "generators.force",
           "generators.library", "generators.simulation", "generators.calibration", "judges.metrics",
           "judges.stats", "judges.realism", "judges.distance")
NOT_FOR_KERNELS = ("config", "io")


def _modules():
    """{dotted name below helpers: path} of every module but the package's own __init__."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts:
            found[".".join(parts)] = path
    return found


def _imports(path, modules):
    """The package modules ``path`` imports, as names below helpers."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("helpers."):
                name = name[len("helpers."):]
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    out.add(name)
    return out


def _graph():
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _stage(module):
    head = module.split(".")[0]
    return head if head in STAGES else GROUND


def _rank(stage):
    return -1 if stage == GROUND else STAGES.index(stage)


def _cycle(graph):
    """One import cycle of ``graph`` as a list of nodes, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_module_belongs_to_a_stage_or_the_ground():
    ground = sorted(m for m in _modules() if _stage(m) == GROUND)
    assert ground == ["config", "contract", "dti", "features", "io", "processes"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(STAGES)


def test_no_import_cycle_between_modules():
    assert _cycle(_graph()) is None


def test_no_import_cycle_between_stages_and_imports_run_down():
    upward = sorted(f"{m} imports {n}" for m, deps in _graph().items() for n in deps
                    if _rank(_stage(n)) > _rank(_stage(m)))
    assert upward == []
    stages = {}
    for m, deps in _graph().items():
        stages.setdefault(_stage(m), set()).update(_stage(n) for n in deps if _stage(n) != _stage(m))
    assert _cycle(stages) is None


def test_kernels_import_no_configuration_files_or_runner():
    graph = _graph()
    bad = sorted(f"{k} imports {n}" for k in KERNELS for n in graph[k]
                 if n in NOT_FOR_KERNELS or _stage(n) in ("report", "run"))
    assert bad == []


def test_the_layout_picture_in_the_docs_lists_every_module():
    """docs/layout.md's table names each stage's modules; it must be the package as it is."""
    text = (PROJECT_ROOT / "docs" / "layout.md").read_text()
    rows = dict(re.findall(r"^\| `helpers/(\w*)/?` \| ([^|]+) \|", text, re.M))
    listed = {stage or GROUND: sorted(re.findall(r"`(\w+)`", cell)) for stage, cell in rows.items()}
    actual = {}
    for m in _modules():
        if "." in m or _stage(m) == GROUND:
            actual.setdefault(_stage(m), []).append(m.split(".")[-1] if "." in m else m)
    assert listed == {stage: sorted(names) for stage, names in actual.items()}


@pytest.mark.parametrize("old", ["simulation", "batch", "render", "subject", "realism"])
def test_no_flat_module_is_left_behind(old):
    assert not (PACKAGE / f"{old}.py").exists()


# Test files named for what they test rather than for one module.
TOPICS = {"judges/test_ladder.py": "judges.panel", "generators/test_plugins.py": "generators.simulation",
          "test_benchmarks.py": None, "test_hcp_like.py": None, "test_packaging.py": None, "test_layout.py": None}


def test_tests_mirror_the_layout():
    """tests/<stage>/test_<module>.py tests helpers/<stage>/<module>.py; the ground's tests sit
    in tests/ itself."""
    modules, tests = _modules(), PROJECT_ROOT / "tests"
    misplaced = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests).as_posix()
        stage = "" if path.parent == tests else path.parent.name
        module = f"{stage}.{path.stem[5:]}" if stage else path.stem[5:]
        if rel in TOPICS:
            assert TOPICS[rel] is None or TOPICS[rel] in modules, rel
        elif module not in modules:
            misplaced.append(rel)
    assert misplaced == []
