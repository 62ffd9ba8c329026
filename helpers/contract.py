"""Names and defaults shared by the numerical kernels and the runner, defined once.

This module imports nothing from the package (and nothing beyond the standard library),
so that every other module may import it: the numerical kernels (simulation, dti,
metrics) take their defaults and method names from here instead of from the YAML
config module, and the config module validates settings with the same rules.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import zlib
from numbers import Real

__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "LIBRARY_PREFIX",
    "is_library",
    "METRICS",
    "METRIC_LABELS",
    "TISSUES",
    "COLUMNS",
    "DIAGNOSTICS",
    "NOISE_MODES",
    "DEFAULTS",
    "check_methods",
    "method_name",
    "is_plugin",
    "load_plugin",
    "parse_snr",
    "parse_shell",
    "parse_noise",
    "replicate_seeds",
    "JUDGE_OF",
    "JUDGE_LABELS",
    "SEED_PURPOSES",
    "judge_seed",
]

PAPER_METHODS = ("Syn", "Sampled", "SampleAndMean", "RandomWM")
"""The method paper's four generators, in the order it reports them."""

METHODS = PAPER_METHODS + ("FORCE", "SubjectFORCE", "Calibrated")
"""The built-in generators: the paper's four, dipy's FORCE signal model with dipy's
default ranges (:mod:`helpers.generators.force`), FORCE with its diffusivity ranges taken from the
subject's own tissue (``SubjectFORCE``), and a FORCE-like family whose distributions are
fitted to the subject's fit voxels (``Calibrated``, :mod:`helpers.generators.calibration`)."""

CALIBRATED_MIN_VOXELS = 20
"""Fit voxels ``Calibrated`` needs (fewer: the method is skipped for the subject)."""

SUBJECT_METHODS = ("Sampled", "SampleAndMean", "SubjectFORCE")
"""Built-in methods that sample the subject's tissue (they need WM voxels with high FA)."""

LIBRARY_PREFIX = "library:"
"""``library:PATH`` names a file of any simulator's saved signals (:mod:`helpers.generators.library`)."""

METRICS = ("signal_mae", "fa_mae", "angle_deg")
"""Per-voxel reconstruction errors, in the order the method paper reports them."""

METRIC_LABELS = {
    "signal_mae": "signal MAE (attenuation)",
    "fa_mae": "FA MAE",
    "angle_deg": "angular deviation (degrees)",
    "c2st_accuracy": "classifier two-sample accuracy (0.5 = indistinguishable)",
    "code_mmd": "MMD² of bottleneck codes, scan vs the generator's own held-out data",
    "error_w1": "Wasserstein-1 of per-voxel error, scan vs the generator's own held-out data",
}
"""Axis labels of the metrics (the reconstruction metrics and the other judges' scores)."""

JUDGE_OF = {
    "signal_mae": "reconstruction",
    "fa_mae": "reconstruction",
    "angle_deg": "reconstruction",
    "c2st_accuracy": "two_sample",
    "code_mmd": "code_distance",
    "error_w1": "error_match",
}
"""The judge each score belongs to (:mod:`helpers.judges.panel`); lower is closer for all of them."""

JUDGE_LABELS = {
    "reconstruction": "denoiser-training error (the method paper's reconstruction error)",
    "two_sample": "two-sample classifier",
    "code_distance": "bottleneck-code distance",
    "error_match": "error-distribution match",
}
"""What each judge is called in reports: the reconstruction error ranks which generator's
data trains the better denoiser for the scan, not which generator is closest to it."""

TISSUES = ("WM", "GM", "CSF")
"""Tissue classes, as rows of the tables (besides "all")."""

COLUMNS = ("dataset", "subject", "method", "replicate", "metric", "tissue", "value")
"""Columns of every tidy table (metrics, diagnostics, realism): one value per row."""

DIAGNOSTICS = ("val_loss", "dead_units", "bottleneck_units", "collapsed")
"""Per-model diagnostics written beside the metrics (``metric`` column of diagnostics.csv)."""

NOISE_MODES = ("global", "per_voxel")
"""``noise: global`` (one sigma = 1/SNR, the paper's) or ``per_voxel`` (sigma/S0 drawn
from the subject's brain voxels)."""

DEFAULTS = {
    "shell": 1000.0,  # b-value(s) of the diffusion-weighted volumes used, s/mm²; or "all"
    "shell_tolerance": 100.0,  # |b - shell| <= this counts as on the shell, s/mm²
    "b0_threshold": 50.0,  # b <= this counts as b0, s/mm²
    "dti_max_b": 1500.0,  # tensor-derived quantities use selected volumes with b <= this
    "snr": "auto",  # estimated from the subject; or a number, or "none"
    "noise": "global",  # see NOISE_MODES
    "seed": 0,
    "min_pool": 20,  # eroded tissue pools below this fall back to uneroded; below it even then: "tiny"
    "wm_fa_min": 0.7,  # WM voxels above this FA feed the sampled WM pool
    "collapse_ratio": 2.0,  # a model whose val loss exceeds this x its method's median collapsed
    "judge_voxels": 2000,  # voxels per judge set and per two-sample classifier (helpers.judges.panel)
}
"""Every tunable default of the method, in one place."""

_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

SCALABLE = ("Syn", "Sampled", "SampleAndMean", "FORCE", "SubjectFORCE")
"""Built-in generators that take a diffusivity scale, ``NAME*s``: every diffusivity the
generator draws (tensor eigenvalues; FORCE's d_par, d_perp, GM and CSF ranges) times s.
The known-answer ladder (:mod:`helpers.judges.panel`) is made of them; a config may name one too."""

SCALE_RANGE = (0.1, 10.0)
"""Scales a ``NAME*s`` generator accepts."""

_SCALED = re.compile(r"^(" + "|".join(SCALABLE) + r")\*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")


def scaled_method(method):
    """``(base, scale)`` of a scaled generator ``NAME*s``, else None.

    >>> scaled_method("Syn*1.15"), scaled_method("Syn")
    (('Syn', 1.15), None)
    """
    match = _SCALED.match(method) if isinstance(method, str) else None
    if match is None:
        return None
    scale = float(match.group(2))
    return (match.group(1), scale) if SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] else None


def base_method(method):
    """The built-in a method is made from: ``Syn`` for ``Syn*1.2``, else the method itself."""
    scaled = scaled_method(method)
    return scaled[0] if scaled else method


def needs_pools(method):
    """Whether a method draws from the subject's tissue pools (Sampled, SampleAndMean,
    SubjectFORCE and their scaled forms)."""
    return base_method(method) in SUBJECT_METHODS


def is_library(method):
    """True for a file of saved signals named ``library:PATH`` (PATH ends in ``.npz``)."""
    return isinstance(method, str) and method.startswith(LIBRARY_PREFIX) and method.endswith(".npz") \
        and len(method) > len(LIBRARY_PREFIX) + len(".npz")


def is_plugin(method):
    """True for a user's generator named ``package.module:function``."""
    return isinstance(method, str) and not method.startswith(LIBRARY_PREFIX) and bool(_PLUGIN.match(method))


def method_name(method):
    """The name a method has in tables and figures: the function name of a plugin, the
    file's stem of a library.

    Examples
    --------
    >>> method_name("Syn"), method_name("mylab.gens:ball_stick"), method_name("library:/sims/mc_b1000.npz")
    ('Syn', 'ball_stick', 'mc_b1000')
    """
    if is_library(method):
        return method[len(LIBRARY_PREFIX):].replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".npz")
    return method.split(":", 1)[1] if is_plugin(method) else method


def check_methods(methods, *, where="methods"):
    """Validate a list of method specs: built-in names or ``package.module:function``.

    Returns the tuple of specs. Raises ``ValueError`` naming ``where``, the bad entries
    and the allowed names; two specs with the same table name are an error too.
    """
    if isinstance(methods, str) or not hasattr(methods, "__iter__"):
        raise ValueError(f"{where}: methods must be a list, got {methods!r}")
    methods = tuple(methods)
    bad = [m for m in methods if not (m in METHODS or is_plugin(m) or is_library(m) or scaled_method(m))]
    if bad:
        raise ValueError(
            f"{where}: unknown method(s) {bad}; allowed: {list(METHODS)}, "
            f"one of {list(SCALABLE)} with its diffusivities scaled as 'NAME*s' "
            f"(s in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]), "
            "a generator of your own as 'package.module:function', "
            "or a file of saved signals as 'library:PATH.npz'"
        )
    names = [method_name(m) for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: method name(s) {dup} appear more than once")
    if not methods:
        raise ValueError(f"{where}: no method given")
    return methods


def load_plugin(spec):
    """Import a user's generator ``package.module:function``.

    Returns
    -------
    function : callable
        Called as ``function(bvals, bvecs, n, rng)`` (plus ``subject=`` when it accepts
        that keyword); returns (n, m) clean attenuation with S0 = 1.
    wants_subject : bool
        Whether it accepts ``subject=``.
    """
    if not is_plugin(spec):
        raise ValueError(f"{spec!r} is not a generator name of the form 'package.module:function'")
    module_name, func_name = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or an error inside the user's module
        raise ValueError(f"generator {spec!r}: cannot import module {module_name!r} ({type(e).__name__}: {e})") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"generator {spec!r}: module {module_name!r} has no function {func_name!r}")
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    wants_subject = "subject" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return func, wants_subject


def parse_snr(snr):
    """The ``snr`` setting: ``"auto"`` (kept as the string), a positive number, or None
    (``"none"``/None: no noise). Raises ``ValueError`` otherwise."""
    if snr is None or (isinstance(snr, str) and snr.lower() == "none"):
        return None
    if isinstance(snr, str) and snr.lower() == "auto":
        return "auto"
    if isinstance(snr, bool) or not isinstance(snr, Real):
        raise ValueError(f"snr must be 'auto', 'none' or a positive number, got {snr!r}")
    if not math.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be a positive finite number, got {snr!r}")
    return float(snr)


def parse_shell(shell):
    """The ``shell`` setting: a b-value, a list of b-values, or ``"all"``.

    Returns ``"all"`` or a tuple of floats (a single number gives a 1-tuple).

    Examples
    --------
    >>> parse_shell(1000), parse_shell([1000, 2000]), parse_shell("all")
    ((1000.0,), (1000.0, 2000.0), 'all')
    """
    if isinstance(shell, str):
        if shell.lower() == "all":
            return "all"
        raise ValueError(f"shell must be a b-value, a list of b-values or 'all', got {shell!r}")
    values = shell if isinstance(shell, (list, tuple)) else [shell]
    if not values:
        raise ValueError("shell is an empty list; give at least one b-value or 'all'")
    out = []
    for b in values:
        if isinstance(b, bool) or not isinstance(b, Real) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"shell must hold positive b-values (s/mm²), got {b!r}")
        out.append(float(b))
    return tuple(out)


def parse_noise(noise):
    """The ``noise`` setting: one of :data:`NOISE_MODES`."""
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {list(NOISE_MODES)}, got {noise!r}")
    return noise


def replicate_seeds(seed, method, replicate):
    """The simulation and training seeds of one replicate model, from (seed, method, replicate).

    The method enters through a checksum of its table name, so adding or reordering
    methods in a config does not change any other method's numbers.

    Returns
    -------
    simulation_seed : list of int
        For ``numpy.random.default_rng``: ``[seed, crc32(name), replicate, 0]``.
    training_seed : int
        For the network's initial weights and the shuffling: a non-negative 31-bit int.

    Examples
    --------
    >>> replicate_seeds(0, "Syn", 1)[0]
    [0, 3310143259, 1, 0]
    """
    for value, what in ((seed, "seed"), (replicate, "replicate")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    key = zlib.crc32(method_name(method).encode())
    training = int(_seed_int([seed, key, replicate, 1]))
    return [int(seed), int(key), int(replicate), 0], training


def _seed_int(entropy):
    # numpy is imported lazily: this module stays importable without it
    import numpy as np

    return np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF


SEED_PURPOSES = {"simulation": 0, "judge_set": 2, "pseudo_scan": 3, "separability": 4, "noise_check": 5}
"""Last entropy word of every seed derived from (seed, method, replicate): training sets use
0 (and 1, through :func:`replicate_seeds`, for the network's weights); the judges' held-out
sets, the known-answer pseudo-scans and their checks use the others, so no judge ever sees
a voxel a model was trained on."""


def judge_seed(seed, method, replicate, purpose):
    """The seed of a judge's synthetic set or a known-answer pseudo-scan.

    ``[seed, crc32(name), replicate, SEED_PURPOSES[purpose]]``: disjoint from every
    training seed (:func:`replicate_seeds` uses the purpose words 0 and 1).

    Examples
    --------
    >>> judge_seed(0, "Syn", 1, "pseudo_scan")
    [0, 3310143259, 1, 3]
    """
    if purpose not in SEED_PURPOSES or purpose == "simulation":
        raise ValueError(f"purpose must be one of {[p for p in SEED_PURPOSES if p != 'simulation']}, got {purpose!r}")
    sim, _ = replicate_seeds(seed, method, replicate)
    return sim[:3] + [SEED_PURPOSES[purpose]]
