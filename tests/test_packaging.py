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


def _copy_project(dest):
    """The files a wheel is built from, copied (building in the checkout would leave build/)."""
    import shutil

    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, dest / name)
    for name in ("helpers", "configs", "notebooks"):
        shutil.copytree(PROJECT_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))


def test_a_plain_install_ships_configs_notebooks_and_the_command(tmp_path):
    """Build the wheel as `pip install .` would, unpack it outside the checkout, and use it."""
    import os
    import subprocess
    import sys
    import zipfile

    import helpers

    src, wheels, site, elsewhere = (tmp_path / n for n in ("src", "wheels", "site", "elsewhere"))
    for d in (src, elsewhere):
        d.mkdir()
    _copy_project(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(wheels)],
                   cwd=src, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("synthqa-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
        z.extractall(site)
    assert {"helpers/configs/profiles.yaml", "helpers/configs/sample.yaml", "helpers/notebooks/01_load_data.ipynb",
            "helpers/notebooks/04_results.ipynb", "helpers/run/cli.py"} <= names
    assert f"Version: {helpers.__version__}\n" in metadata
    assert "synthqa = helpers.run.cli:main" in entry_points

    # the unpacked package, not the checkout, from a folder that is not the project
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = ("import helpers.config as c; p = c.load_profile('quick');"
             "print(c.CONFIG_DIR); print(c.NOTEBOOK_DIR); print(sorted(x.name for x in c.NOTEBOOK_DIR.glob('*.ipynb')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    config_dir, notebook_dir, notebooks = done.stdout.strip().splitlines()
    assert config_dir == str(site / "helpers" / "configs") and notebook_dir == str(site / "helpers" / "notebooks")
    assert "01_load_data.ipynb" in notebooks
    check = subprocess.run([sys.executable, "-m", "helpers.run.cli", "check", str(site / "helpers" / "configs" / "sample.yaml")],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout


def test_the_slow_marker_is_registered():
    options = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in options["markers"])
