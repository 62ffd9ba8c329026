"""Where things are, and what a dataset config may say.

Paths live here and nowhere else: the project root is found from this file, results go
under ``results/<dataset>/`` unless a caller names another folder. A dataset is described
by one YAML file in ``configs/``; profiles (``quick`` for tests, ``paper`` for the method's
recipe) live in ``configs/profiles.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from helpers import METHODS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
RESULTS_DIR = PROJECT_ROOT / "results"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"

KINDS = ("sample", "hcp", "bids", "paths")
"""Dataset kinds: dipy's embedded real scan, the HCP layout, BIDS, explicit file paths."""

_PROFILE_KEYS = {"n_voxels", "n_val", "epochs", "batch_size", "learning_rate"}

_KEYS = {
    "dataset": str,  # name used for the results folder and in the tables
    "kind": str,  # one of KINDS
    "root": str,  # folder holding the subjects (hcp, bids); relative to the config file
    "subjects": (list, dict),  # ids (hcp, bids, sample) or id -> paths (paths)
    "methods": list,  # a subset of helpers.METHODS
    "shell": (int, float),  # b-value of the shell to use, s/mm^2
    "shell_tolerance": (int, float),  # |b - shell| <= this counts as on the shell
    "b0_threshold": (int, float),  # b <= this counts as b0
    "snr": (str, int, float, type(None)),  # "auto", a number, or "none"
    "seed": int,
    "min_pool": int,  # smallest eroded tissue pool before falling back to the uneroded one
    "labels": str,  # paths kind: "fast" (1 CSF, 2 GM, 3 WM) or "freesurfer"
    "profile": str,  # default profile for this dataset
}


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset config file, validated. See ``configs/*.yaml`` for commented examples."""

    path: Path
    dataset: str
    kind: str
    subjects: list | dict
    root: Path | None = None
    methods: tuple = METHODS
    shell: float = 1000.0
    shell_tolerance: float = 100.0
    b0_threshold: float = 50.0
    snr: object = "auto"
    seed: int = 0
    min_pool: int = 20
    labels: str = "fast"
    profile: str = "paper"

    @property
    def subject_ids(self):
        return [str(s) for s in self.subjects]

    def results_dir(self, out=None):
        """``results/<dataset>`` (or ``<out>/<dataset>`` when ``out`` is given)."""
        return Path(out or RESULTS_DIR) / self.dataset


def load_config(path):
    """Read and validate a dataset config YAML.

    Raises
    ------
    ValueError
        Naming the file and the problem: unknown key, wrong type, unknown kind or method,
        missing root for ``hcp``/``bids``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown config key(s) {unknown}; allowed: {sorted(_KEYS)}")
    for key, types in _KEYS.items():
        if key in raw and not isinstance(raw[key], types):
            raise ValueError(f"{path}: {key!r} has the wrong type ({type(raw[key]).__name__})")
    for key in ("dataset", "kind", "subjects"):
        if key not in raw:
            raise ValueError(f"{path}: missing required key {key!r}")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{path}: unknown dataset kind {raw['kind']!r}; allowed: {list(KINDS)}")
    methods = tuple(raw.get("methods", METHODS))
    check_methods(methods, where=str(path))
    root = raw.get("root")
    if raw["kind"] in ("hcp", "bids"):
        if root is None:
            raise ValueError(f"{path}: kind {raw['kind']!r} needs a 'root' folder")
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_absolute():
            root = (path.parent / root).resolve()
    if raw.get("labels", "fast") not in ("fast", "freesurfer"):
        raise ValueError(f"{path}: labels must be 'fast' or 'freesurfer', got {raw['labels']!r}")
    snr = raw.get("snr", "auto")
    if not (isinstance(snr, str) and snr.lower() == "auto"):
        from helpers.simulation import resolve_snr  # the one rule for SNR settings

        try:
            resolve_snr(snr)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    profile = raw.get("profile", "paper")
    try:
        load_profile(profile)  # validates the name
    except ValueError as e:  # name the dataset config too, not only profiles.yaml
        raise ValueError(f"{path}: {e}") from e
    kwargs = {k: v for k, v in raw.items() if k not in ("root", "methods")}
    return DatasetConfig(path=path, root=root, methods=methods, **kwargs)


def check_methods(methods, *, where="methods"):
    """Raise ``ValueError`` listing the allowed names if any method is unknown."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"{where}: unknown method(s) {bad}; allowed: {list(METHODS)}")
    return tuple(methods)


def load_profile(name, *, path=None):
    """The training/simulation sizes of a named profile (``quick`` or ``paper``).

    Returns a dict with ``n_voxels`` (synthetic voxels per method, training plus
    validation), ``n_val``, ``epochs``, ``batch_size`` and ``learning_rate``.
    """
    path = Path(path or CONFIG_DIR / "profiles.yaml")
    profiles = yaml.safe_load(path.read_text())
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; allowed: {sorted(profiles)} (from {path})")
    profile = dict(profiles[name])
    missing = _PROFILE_KEYS - set(profile)
    if missing:
        raise ValueError(f"{path}: profile {name!r} lacks {sorted(missing)}")
    return profile
