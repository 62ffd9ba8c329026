"""The project's promises about itself: one dependency list, clean notebooks, two commands."""

import json
import re
import tomllib

import yaml

from helpers.config import NOTEBOOK_DIR, PROJECT_ROOT


def _name(requirement):
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    conda_deps = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert pip_deps == conda_deps


def test_notebooks_have_a_literal_parameters_cell_and_no_outputs():
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert names == ["01_load_data", "02_simulate", "03_train_autoencoder", "04_results"]
    for name in names:
        nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, name
        for line in "".join(params[0]["source"]).splitlines():
            # `name: type = literal  # comment`: no call, no derived value
            assert re.fullmatch(r"\w+: \w+ = [^()]+  # .+", line), (name, line)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), name
        assert all("def " not in "".join(c["source"]) for c in code), name


def test_readme_opens_with_the_two_commands_and_ci_calls_make_test():
    readme = (PROJECT_ROOT / "README.md").read_text()
    head = readme[:1500]
    assert "make run" in head and "make test" in head
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
