"""Dataset configs and profiles: valid files load with their defaults, every mistake is
answered with the file's name and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from helpers import METHODS
from helpers.config import CONFIG_DIR, check_methods, find_config, load_config, load_profile
from helpers.scan.layouts import load_subject


def _write(tmp_path, text, name="dataset.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _raises(path, *words):
    """pytest.raises(ValueError) whose message names ``path`` and every word."""
    parts = [re.escape(str(path))] + [re.escape(w) for w in words]
    return pytest.raises(ValueError, match="".join(f"(?=[\\s\\S]*{p})" for p in parts))


def test_configs_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # JupyterLab started anywhere
    assert find_config("sample.yaml") == CONFIG_DIR / "sample.yaml"
    assert load_config(find_config("sample.yaml")).dataset == "sample"
    own = _write(tmp_path, "dataset: mine\nkind: sample\nsubjects: [x]\n", name="sample.yaml")
    assert find_config("sample.yaml").resolve() == own  # a file of that name here wins


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: hcp\nroot: data/hcp\nsubjects: [100307, 100408]\n")
    c = load_config(path)
    assert c.path == path and c.dataset == "d" and c.kind == "hcp"
    assert c.root == (tmp_path / "data" / "hcp").resolve()  # relative to the config file
    assert c.subject_ids == ["100307", "100408"]  # ints in YAML, strings here
    assert c.methods == METHODS
    assert (c.shell, c.shell_tolerance, c.b0_threshold, c.dti_max_b) == ((1000.0,), 100.0, 50.0, 1500.0)
    assert c.snr == "auto" and c.seed == 0 and c.profile == "paper" and c.labels == "fast"
    assert (c.noise, c.min_pool, c.wm_fa_min) == ("global", 20, 0.7)
    assert c.results_dir() == Path.cwd() / "results" / "d"  # under the current directory, made absolute
    assert c.results_dir(tmp_path / "out") == tmp_path / "out" / "d"


def test_absolute_root_and_explicit_values(tmp_path):
    path = _write(
        tmp_path,
        f"dataset: b\nkind: bids\nroot: {tmp_path / 'elsewhere'}\nsubjects: ['01']\n"
        "methods: [Syn, RandomWM]\nshell: 2000\nshell_tolerance: 50\nsnr: 30\nseed: 7\nprofile: quick\n",
    )
    c = load_config(path)
    assert c.root == tmp_path / "elsewhere"
    assert c.methods == ("Syn", "RandomWM") and c.shell == (2000.0,) and c.snr == 30 and c.seed == 7


@pytest.mark.parametrize(
    "text, expected",
    [("shell: 2000", (2000.0,)), ("shell: [1000, 2000]", (1000.0, 2000.0)), ("shell: all", "all"), ("shell: ALL", "all")],
)
def test_shell_settings(tmp_path, text, expected):
    path = _write(tmp_path, f"dataset: d\nkind: sample\nsubjects: [x]\n{text}\n")
    assert load_config(path).shell == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("shell: '1000'", ["shell must be a b-value", "'1000'"]),
        ("shell: []", ["shell is an empty list"]),
        ("shell: [1000, -5]", ["positive b-values", "-5"]),
        ("noise: pervoxel", ["noise must be one of", "'global'", "'per_voxel'", "'pervoxel'"]),
        ("wm_fa_min: 1.5", ["wm_fa_min must be in [0, 1)"]),
        ("min_pool: 0", ["min_pool must be at least 1"]),
        ("methods: [Syn, 'my-lab.gens:ball']", ["unknown method", "'my-lab.gens:ball'", "package.module:function"]),
        ("methods: [Syn, 'a.b:Syn']", ["'Syn'", "more than once"]),
    ],
)
def test_bad_settings_are_named(tmp_path, text, words):
    path = _write(tmp_path, f"dataset: d\nkind: sample\nsubjects: [x]\n{text}\n")
    with _raises(path, *words):
        load_config(path)


def test_plugin_methods_are_accepted(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: sample\nsubjects: [x]\nmethods: [Syn, 'mylab.gens:ball_stick']\n")
    assert load_config(path).methods == ("Syn", "mylab.gens:ball_stick")


def test_unknown_key(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: sample\nsubjects: [x]\nshel: 1000\n")
    with _raises(path, "unknown config key", "'shel'", "'shell'"):  # and lists the allowed keys
        load_config(path)


def test_wrong_type(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: sample\nsubjects: [x]\nseed: '1'\n")
    with _raises(path, "'seed'", "wrong type"):
        load_config(path)


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, "dataset: d\nsubjects: [x]\n")
    with _raises(path, "missing required key 'kind'"):
        load_config(path)


def test_unknown_dataset_kind(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: nifti\nsubjects: [x]\n")
    with _raises(path, "unknown dataset kind 'nifti'", "'sample'", "'hcp'", "'bids'", "'paths'"):
        load_config(path)


def test_unknown_method(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: sample\nsubjects: [x]\nmethods: [Syn, Sampeld]\n")
    with _raises(path, "unknown method", "'Sampeld'", *METHODS):
        load_config(path)


def test_unknown_profile(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: sample\nsubjects: [x]\nprofile: fast\n")
    with _raises(path, "unknown profile 'fast'", "'paper'", "'quick'", "profiles.yaml"):
        load_config(path)


def test_hcp_needs_a_root(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: hcp\nsubjects: [1]\n")
    with _raises(path, "'hcp' needs a 'root'"):
        load_config(path)


def test_bad_label_scheme(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: paths\nsubjects: {}\nlabels: aseg\n")
    with _raises(path, "labels must be 'fast' or 'freesurfer'", "'aseg'"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with _raises(tmp_path / "nope.yaml", "not found"):
        load_config(tmp_path / "nope.yaml")
    path = _write(tmp_path, "dataset: [unclosed\n")
    with _raises(path, "not valid YAML"):
        load_config(path)
    path = _write(tmp_path, "- a\n- b\n", name="list.yaml")
    with _raises(path, "expected a mapping"):
        load_config(path)


def test_check_methods():
    assert check_methods(["Syn"]) == ("Syn",)
    with pytest.raises(ValueError, match=r"profile\.yaml: unknown method\(s\) \['syn'\]; allowed: \['Syn'"):
        check_methods(["syn"], where="profile.yaml")


def test_profiles():
    quick, paper = load_profile("quick"), load_profile("paper")
    # the method paper's recipe, trained 5 times per method (replicates)
    assert paper == {"n_voxels": 300_000, "n_val": 50_000, "epochs": 50, "batch_size": 100, "learning_rate": 5e-4,
                     "replicates": 5, "name": "paper", "calibration_evals": 2500, "calibration_resamples": 3,
                     "calibration_resample_evals": 2500}
    assert quick["n_voxels"] < paper["n_voxels"] and quick["epochs"] < paper["epochs"] and quick["replicates"] == 2


def test_profile_missing_keys(tmp_path):
    path = _write(tmp_path, "tiny:\n  n_voxels: 10\n", name="profiles.yaml")
    with _raises(path, "profile 'tiny' lacks", "epochs"):
        load_profile("tiny", path=path)


@pytest.mark.parametrize("name, kind", [("sample", "sample"), ("hcp", "hcp"), ("bids", "bids"), ("invivo", "paths")])
def test_shipped_configs_are_valid(name, kind):
    c = load_config(CONFIG_DIR / f"{name}.yaml")
    assert c.kind == kind and c.subject_ids


# ----------------------------------------------------------------------------- load_subject


def test_subject_not_listed(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: hcp\nroot: hcp\nsubjects: [100307]\n")
    with _raises(path, "subject '100408' is not listed", "'100307'"):
        load_subject(load_config(path), "100408")


def test_hcp_through_config(hcp, tmp_path):
    path = _write(tmp_path, "dataset: hcp\nkind: hcp\nroot: hcp\nsubjects: [100307]\nshell: 1000\n")
    s = load_subject(load_config(path), 100307)  # an int id, as YAML would give it
    assert s.info["dataset"] == "hcp" and s.info["subject"] == "100307"
    assert s.n_voxels == hcp.mask.sum()
    np.testing.assert_array_equal(s.bvals, hcp.bvals[hcp.shell_idx])


def test_shell_and_tolerance_come_from_the_config(hcp, tmp_path):
    # b=3000 shell (7 directions in the fixture); a tolerance of 5 drops the jittered ones
    path = _write(tmp_path, "dataset: hcp\nkind: hcp\nroot: hcp\nsubjects: [100307]\nshell: 3000\ndti_max_b: 3500\n")
    s = load_subject(load_config(path), "100307")
    np.testing.assert_array_equal(s.bvals, hcp.bvals[hcp.nominal == 3000])
    path = _write(tmp_path, "dataset: hcp\nkind: hcp\nroot: hcp\nsubjects: [100307]\n"
                  "shell: [1000, 2000, 3000]\nshell_tolerance: 5\ndti_max_b: 3500\n")
    s = load_subject(load_config(path), "100307")
    np.testing.assert_array_equal(s.bvals, hcp.bvals[(hcp.nominal > 0) & (np.abs(hcp.bvals - hcp.nominal) <= 5)])


def test_sample_through_config():
    s = load_subject(load_config(CONFIG_DIR / "sample.yaml"), "small_64D")
    assert s.n_voxels == 1000 and s.n_directions == 64 and s.info["dataset"] == "sample"


def test_paths_subject_with_unknown_file_key(tmp_path):
    path = _write(
        tmp_path, "dataset: d\nkind: paths\nsubjects:\n  s1: {dwi: a.nii.gz, bval: a.bval, bvec: a.bvec, t1: t.nii}\n"
    )
    with _raises(path, "subject s1", "unknown key(s) ['t1']"):
        load_subject(load_config(path), "s1")


def test_paths_subject_lacking_files(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: paths\nsubjects:\n  s1: {dwi: a.nii.gz, bval: a.bval}\n")
    with _raises(path, "subject s1 lacks ['bvec']"):
        load_subject(load_config(path), "s1")


def test_paths_subjects_must_be_a_mapping(tmp_path):
    path = _write(tmp_path, "dataset: d\nkind: paths\nsubjects: [s1]\n")
    with _raises(path, "needs subjects as a mapping"):
        load_subject(load_config(path), "s1")


@pytest.mark.parametrize("bad, words", [("atuo", "snr must be"), (0, "snr must be"), (-3, "snr must be"),
                                        (".inf", "snr must be"), ("true", "'snr' has the wrong type")])
def test_bad_snr_setting_is_named(tmp_path, bad, words):
    p = tmp_path / "c.yaml"
    p.write_text(f"dataset: d\nkind: sample\nsubjects: [a]\nsnr: {bad}\n")
    with pytest.raises(ValueError, match=rf"{p.name}: {words}"):
        load_config(p)
