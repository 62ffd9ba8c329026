"""Where things are, and what a dataset config may say.

Paths live here and nowhere else. The project's ``configs/`` and ``notebooks/`` folders
are found beside the package in a checkout (an editable install), and inside the
installed package otherwise (a plain ``pip install .`` ships them as package data).
Results go under ``./results/<dataset>/`` of the current directory unless a caller
names another folder. A dataset is described by one YAML file; profiles (``quick`` for
tests, ``paper`` for the method's recipe) live in ``configs/profiles.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.contract import DEFAULTS, METHODS, check_methods, parse_noise, parse_shell, parse_snr

__all__ = [
    "PROJECT_ROOT",
    "CONFIG_DIR",
    "NOTEBOOK_DIR",
    "RESULTS_DIR",
    "KINDS",
    "DatasetConfig",
    "find_config",
    "load_config",
    "load_profile",
    "check_methods",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = _PACKAGE_DIR.parent
"""The checkout holding ``helpers/`` (in an installed copy: site-packages)."""


def _shipped(name):
    """``<checkout>/<name>`` when it exists, else the copy shipped inside the package."""
    beside = PROJECT_ROOT / name
    return beside if beside.is_dir() and (PROJECT_ROOT / "pyproject.toml").is_file() else _PACKAGE_DIR / name


CONFIG_DIR = _shipped("configs")
NOTEBOOK_DIR = _shipped("notebooks")
RESULTS_DIR = Path("results")
"""Default results folder: ``results/`` under the current directory."""

KINDS = ("sample", "hcp", "bids", "paths")
"""Dataset kinds: dipy's embedded real scan, the HCP layout, BIDS, explicit file paths."""

_PROFILE_KEYS = {"n_voxels", "n_val", "epochs", "batch_size", "learning_rate", "replicates"}

_KEYS = {
    "dataset": str,  # name used for the results folder and in the tables
    "kind": str,  # one of KINDS
    "root": str,  # folder holding the subjects (hcp, bids, paths); relative to the config file
    "subjects": (list, dict),  # ids (hcp, bids, sample) or id -> paths (paths)
    "methods": list,  # built-in names and/or "package.module:function"
    "shell": (int, float, list, str),  # b-value, list of b-values, or "all"
    "shell_tolerance": (int, float),  # |b - shell| <= this counts as on the shell
    "b0_threshold": (int, float),  # b <= this counts as b0
    "dti_max_b": (int, float),  # tensor-derived quantities use volumes with b <= this
    "snr": (str, int, float, type(None)),  # "auto", a number, or "none"
    "noise": str,  # "global" or "per_voxel"
    "seed": int,
    "min_pool": int,  # smallest tissue pool before a sampling method is skipped
    "wm_fa_min": (int, float),  # WM voxels above this FA feed the sampled WM pool
    "labels": str,  # paths kind: "fast" (1 CSF, 2 GM, 3 WM) or "freesurfer"
    "profile": str,  # default profile for this dataset
    "source": str,  # where the data comes from, for the report (e.g. a package and licence)
}


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset config file, validated. See ``configs/*.yaml`` for commented examples.

    ``shell`` is ``"all"`` or a tuple of b-values; every other default comes from
    :data:`helpers.contract.DEFAULTS`.
    """

    path: Path
    dataset: str
    kind: str
    subjects: list | dict
    root: Path | None = None
    methods: tuple = METHODS
    shell: object = (DEFAULTS["shell"],)
    shell_tolerance: float = DEFAULTS["shell_tolerance"]
    b0_threshold: float = DEFAULTS["b0_threshold"]
    dti_max_b: float = DEFAULTS["dti_max_b"]
    snr: object = DEFAULTS["snr"]
    noise: str = DEFAULTS["noise"]
    seed: int = DEFAULTS["seed"]
    min_pool: int = DEFAULTS["min_pool"]
    wm_fa_min: float = DEFAULTS["wm_fa_min"]
    labels: str = "fast"
    profile: str = "paper"
    source: str = ""
    text: str = field(default="", repr=False)

    @property
    def subject_ids(self):
        return [str(s) for s in self.subjects]

    def results_dir(self, out=None):
        """``<out>/<dataset>`` as an absolute path (``out`` defaults to ``./results`` of
        the current directory): notebooks and workers run in other folders."""
        return Path(out or RESULTS_DIR).expanduser().resolve() / self.dataset

    def load_settings(self):
        """Keyword arguments of :func:`helpers.scan.loading.load_dwi` that come from this config."""
        return dict(
            shell=self.shell,
            shell_tolerance=self.shell_tolerance,
            b0_threshold=self.b0_threshold,
            dti_max_b=self.dti_max_b,
        )

    def simulation_settings(self):
        """The settings notebooks 02 and 03 take from this config (papermill parameters)."""
        return dict(
            methods=list(self.methods),
            seed=self.seed,
            snr=self.snr,
            noise=self.noise,
            min_pool=self.min_pool,
            wm_fa_min=self.wm_fa_min,
        )


def find_config(name):
    """A config path as given, or the file of that name among the project's configs
    (``find_config("sample.yaml")`` works from any working directory)."""
    path = Path(name).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    shipped = CONFIG_DIR / path.name
    return shipped if shipped.is_file() else path


def load_config(path):
    """Read and validate a dataset config YAML.

    Raises
    ------
    ValueError
        Naming the file and the problem: unknown key, wrong type, unknown kind, method,
        profile, shell, noise or SNR setting, missing root for ``hcp``/``bids``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown config key(s) {unknown}; allowed: {sorted(_KEYS)}")
    for key, types in _KEYS.items():
        if key in raw and (not isinstance(raw[key], types) or isinstance(raw[key], bool)):
            raise ValueError(f"{path}: {key!r} has the wrong type ({type(raw[key]).__name__})")
    for key in ("dataset", "kind", "subjects"):
        if key not in raw:
            raise ValueError(f"{path}: missing required key {key!r}")
    for what, name in [("dataset", raw["dataset"])] + [("subject", sid) for sid in raw["subjects"]]:
        if not _plain_name(name):
            raise ValueError(
                f"{path}: {what} name {name!r} is not a plain folder name (letters, digits, '.', '_', '-', not "
                "starting with '.'); it names a results folder, and must not reach outside it"
            )
    if raw.get("seed", 0) < 0:
        raise ValueError(f"{path}: seed must be a non-negative int, got {raw['seed']!r}")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{path}: unknown dataset kind {raw['kind']!r}; allowed: {list(KINDS)}")
    if raw["kind"] in ("hcp", "bids") and raw.get("root") is None:
        raise ValueError(f"{path}: kind {raw['kind']!r} needs a 'root' folder")
    if raw.get("labels", "fast") not in ("fast", "freesurfer"):
        raise ValueError(f"{path}: labels must be 'fast' or 'freesurfer', got {raw['labels']!r}")
    try:
        methods = check_methods(raw.get("methods", METHODS), where="methods")
        shell = parse_shell(raw.get("shell", DEFAULTS["shell"]))
        parse_snr(raw.get("snr", DEFAULTS["snr"]))
        parse_noise(raw.get("noise", DEFAULTS["noise"]))
        if not 0 <= raw.get("wm_fa_min", 0) < 1:
            raise ValueError(f"wm_fa_min must be in [0, 1), got {raw['wm_fa_min']!r}")
        if raw.get("min_pool", 1) < 1:
            raise ValueError(f"min_pool must be at least 1, got {raw['min_pool']!r}")
        load_profile(raw.get("profile", "paper"))  # validates the name
    except ValueError as e:  # name the dataset config, not only the setting
        raise ValueError(f"{path}: {e}") from e
    methods = tuple(_absolute_library(m, path) for m in methods)
    root = raw.get("root")
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_absolute():
            root = (path.parent / root).resolve()
    kwargs = {k: v for k, v in raw.items() if k not in ("root", "methods", "shell")}
    return DatasetConfig(path=path, root=root, methods=methods, shell=shell, text=text, **kwargs)


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _plain_name(name):
    """A name that is one plain path component: ``sub-01``, ``100307``; not ``../x``, ``a/b``, ``.``."""
    return isinstance(name, (str, int)) and not isinstance(name, bool) and bool(_PLAIN_NAME.match(str(name)))


def _absolute_library(method, config_path):
    """``library:PATH`` with a relative PATH read from the config file's folder."""
    from helpers.contract import LIBRARY_PREFIX, is_library

    if not is_library(method):
        return method
    file = Path(method[len(LIBRARY_PREFIX):]).expanduser()
    return LIBRARY_PREFIX + str(file if file.is_absolute() else (config_path.parent / file).resolve())


def load_profile(name, *, path=None):
    """The training/simulation sizes of a named profile (``quick`` or ``paper``).

    Returns a dict with ``n_voxels`` (synthetic voxels per model, training plus
    validation), ``n_val``, ``epochs``, ``batch_size``, ``learning_rate`` and
    ``replicates`` (models trained per method, each on its own synthetic set and seed),
    plus ``name``.
    """
    path = Path(path or CONFIG_DIR / "profiles.yaml")
    profiles = yaml.safe_load(path.read_text())
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; allowed: {sorted(profiles)} (from {path})")
    profile = dict(profiles[name])
    missing = _PROFILE_KEYS - set(profile)
    if missing:
        raise ValueError(f"{path}: profile {name!r} lacks {sorted(missing)}")
    if not isinstance(profile["replicates"], int) or profile["replicates"] < 1:
        raise ValueError(f"{path}: profile {name!r}: replicates must be a positive int")
    return {**profile, "name": name}
