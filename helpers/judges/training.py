"""Step 03: train R replicate autoencoders per method on a subject, on every core.

One training run per method is one draw: the simulation seed and the training seed each
move the metrics (and, with the paper's 8-unit ReLU bottleneck, a run can collapse).
So each method is trained ``profile["replicates"]`` times, replicate ``r`` on its own
synthetic set and with its own initial weights and shuffling, both derived from
``(seed, method, r)`` by :func:`helpers.contract.replicate_seeds`. The synthetic sets are
never stored: each is regenerated in memory from its seed (:func:`replicate_data`), which
is byte-identical and takes seconds.

Parallelism: the models are independent, and one model uses one core well (see
:func:`helpers.judges.autoencoder.configure_threads`), so they train in separate worker
processes, one model at a time per worker, each worker with one TensorFlow intra-op and
one inter-op thread. Workers are started with ``spawn`` (TensorFlow is not fork-safe) and
receive only paths and settings: each loads the subject itself, once. The same seed
gives the same weights whichever worker trains a model, or when they train one after
another in the calling process, which is what happens with ``jobs=1``, with a single
model, or when TensorFlow sees a GPU (the GPU then does the work).

Files written in the subject folder (``results/<dataset>/<subject>/``)::

    models/<name>/r<k>.keras          the trained model of replicate k
    models/<name>/r<k>_history.csv    its history: epoch, loss, val_loss
    models/progress.jsonl             one line per finished model (polled by the batch runner)
    models/diagnostics.csv            tidy: val_loss, dead_units, bottleneck_units, collapsed
    models/training.json              profile, seed, methods, seeds and seconds; written last

``<name>`` is :func:`helpers.contract.method_name` of the method (a plugin's function name).
"""

from __future__ import annotations

import json
import math
import os
import time
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: they render in papermill output and in terminals alike

from helpers import contract
from helpers.contract import COLUMNS, DEFAULTS, DIAGNOSTICS
from helpers.io import save_csv, save_json
from helpers.processes import run_in_workers

__all__ = [
    "model_path",
    "history_path",
    "diagnostics_path",
    "progress_path",
    "summary_path",
    "replicate_data",
    "train_replicates",
    "flag_collapsed",
    "load_diagnostics",
    "load_histories",
]

PROFILE_KEYS = ("n_voxels", "n_val", "epochs", "batch_size", "learning_rate", "replicates")
"""Profile entries training needs (:func:`helpers.config.load_profile` gives them)."""


# --------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------


def model_path(subject_dir, name, replicate):
    """``<subject_dir>/models/<name>/r<replicate>.keras`` (``name``: a method spec or name)."""
    return Path(subject_dir) / "models" / contract.method_name(name) / f"r{int(replicate)}.keras"


def history_path(subject_dir, name, replicate):
    """``<subject_dir>/models/<name>/r<replicate>_history.csv``."""
    folder = Path(subject_dir) / "models" / contract.method_name(name)
    return folder / f"r{int(replicate)}_history.csv"


def diagnostics_path(subject_dir):
    """``<subject_dir>/models/diagnostics.csv``."""
    return Path(subject_dir) / "models" / "diagnostics.csv"


def progress_path(subject_dir):
    """``<subject_dir>/models/progress.jsonl``."""
    return Path(subject_dir) / "models" / "progress.jsonl"


def summary_path(subject_dir):
    """``<subject_dir>/models/training.json``."""
    return Path(subject_dir) / "models" / "training.json"


# --------------------------------------------------------------------------------------
# One replicate
# --------------------------------------------------------------------------------------


def replicate_data(
    subject,
    method,
    replicate,
    *,
    n_voxels,
    seed=0,
    snr="auto",
    noise="global",
    pools=None,
    min_pool=DEFAULTS["min_pool"],
    wm_fa_min=DEFAULTS["wm_fa_min"],
):
    """The synthetic set replicate ``replicate`` of ``method`` trains on, regenerated.

    :func:`helpers.generators.simulation.simulate` with the simulation seed of
    :func:`helpers.contract.replicate_seeds` ``(seed, method, replicate)``: the same
    arguments give byte-identical arrays, which is why the sets are never stored.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
    method : str
        A built-in name or ``package.module:function``.
    replicate : int
        0, 1, ... ``replicates - 1``.
    n_voxels : int
        The profile's ``n_voxels`` (training plus validation voxels).
    seed : int, optional
        The run's seed.
    snr, noise, pools, min_pool, wm_fa_min : optional
        As :func:`helpers.generators.simulation.simulate` takes them; ``pools`` computed once
        (:func:`helpers.generators.simulation.tissue_pools`) give the same data as none.

    Returns
    -------
    clean, noisy : (n_voxels, m) float32 ndarray
        Noise-free target and noisy input of the autoencoder.
    """
    from helpers.generators.simulation import simulate

    simulation_seed, _ = contract.replicate_seeds(seed, method, replicate)
    return simulate(
        subject, method, n_voxels, simulation_seed, snr=snr, noise=noise, pools=pools,
        min_pool=min_pool, wm_fa_min=wm_fa_min,
    )


class _Model(NamedTuple):
    """One model to train: the picklable task a worker receives."""

    method: str  # spec as given (a built-in name or "package.module:function")
    name: str  # its table and folder name
    replicate: int
    simulation_seed: list
    training_seed: int


class _Worker:
    """What one process needs to train a subject's models; the subject is loaded once,
    and the tissue pools computed once, on first use."""

    def __init__(self, subject_dir, settings):
        self.subject_dir = Path(subject_dir)
        self.settings = settings
        self._subject = None
        self._pools = None

    @property
    def subject(self):
        if self._subject is None:
            from helpers.scan.subject import Subject

            self._subject = Subject.load(self.subject_dir)
            self._subject.info.update(_folder_names(self.subject_dir))
        return self._subject

    def pools(self, method):
        """Tissue pools for the methods that sample the subject, else None."""
        if not contract.needs_pools(method):
            return None
        if self._pools is None:
            from helpers.generators.simulation import tissue_pools

            s = self.settings
            self._pools = tissue_pools(self.subject, min_pool=s["min_pool"], wm_fa_min=s["wm_fa_min"])
        return self._pools

    def train(self, group):
        """Simulate, train (as one stack: :func:`helpers.judges.autoencoder.train_stacked`), save
        and diagnose a method's replicate models; return their diagnostics."""
        from helpers.judges import autoencoder as ae

        start = time.perf_counter()
        s, profile = self.settings, self.settings["profile"]
        data, networks = [], []
        for model in group:
            clean, noisy = replicate_data(
                self.subject, model.method, model.replicate, n_voxels=profile["n_voxels"],
                seed=s["seed"], snr=s["snr"], noise=s["noise"], pools=self.pools(model.method),
                min_pool=s["min_pool"], wm_fa_min=s["wm_fa_min"],
            )
            data.append((noisy, clean))
            networks.append(ae.build_autoencoder(clean.shape[1], seed=model.training_seed))
        histories = ae.train_stacked(
            networks,
            data,
            epochs=int(profile["epochs"]),
            batch_size=int(profile["batch_size"]),
            learning_rate=float(profile["learning_rate"]),
            # the profile's validation share (paper: 50,000 of 300,000)
            n_val=round(len(data[0][0]) * profile["n_val"] / profile["n_voxels"]),
            seeds=[m.training_seed for m in group],
        )
        del data
        seconds = round((time.perf_counter() - start) / len(group), 3)  # the stack's time, shared
        results = []
        for model, network, history in zip(group, networks, histories):
            ae.save_model(network, model_path(self.subject_dir, model.name, model.replicate))
            ae.save_history(history, history_path(self.subject_dir, model.name, model.replicate))
            n_dead, n_units = ae.dead_units(network, self.subject.attenuation)
            results.append({
                "name": model.name,
                "replicate": model.replicate,
                "val_loss": float(history["val_loss"].iloc[-1]),
                "dead_units": n_dead,
                "bottleneck_units": n_units,
                "seconds": seconds,
            })
        return results


# --------------------------------------------------------------------------------------
# Every replicate of every method
# --------------------------------------------------------------------------------------


def train_replicates(
    subject_dir,
    methods,
    *,
    profile,
    seed=0,
    snr="auto",
    noise="global",
    min_pool=DEFAULTS["min_pool"],
    wm_fa_min=DEFAULTS["wm_fa_min"],
    jobs=None,
    progress=True,
    skipped=None,
):
    """Train ``profile["replicates"]`` autoencoders per method on a subject's synthetic data.

    Parameters
    ----------
    subject_dir : path
        A subject folder ``results/<dataset>/<subject>/`` written by step 01
        (``subject.npz``, ``subject.json``); the tables name the dataset and subject by
        the folder's last two names.
    methods : list of str
        Method specs (built-in names or ``package.module:function``), in the order the
        tables should list them. Pass only the methods the subject supports
        (:func:`helpers.generators.simulation.method_support`).
    profile : dict
        From :func:`helpers.config.load_profile`: ``n_voxels`` (synthetic voxels per
        model), ``n_val`` (of which validation), ``epochs``, ``batch_size``,
        ``learning_rate``, ``replicates``.
    seed : int, optional
        The run's seed; replicate ``r`` of a method uses the simulation and training
        seeds :func:`helpers.contract.replicate_seeds` ``(seed, method, r)`` gives.
    snr, noise, min_pool, wm_fa_min : optional
        Passed to :func:`helpers.generators.simulation.simulate` (as in step 02).
    jobs : int or None, optional
        Worker processes; ``None`` or 0: one per available core. Never more workers
        than methods. ``1``, one model, or a GPU visible to TensorFlow: the models train
        one after another in this process.
    progress : bool, optional
        Show a bar over the models.
    skipped : dict, optional
        ``{method: reason}`` of the methods the caller left out, recorded in
        ``training.json``.

    Returns
    -------
    diagnostics : pandas.DataFrame
        Tidy (:data:`helpers.contract.COLUMNS`): per method and replicate, ``metric`` in
        :data:`helpers.contract.DIAGNOSTICS`: ``val_loss`` (final validation MSE),
        ``dead_units`` (bottleneck units that output 0 on every real voxel of the
        subject), ``bottleneck_units``, ``collapsed`` (1.0 or 0.0, see
        :func:`flag_collapsed`); ``tissue`` is ``"all"``.

    Raises
    ------
    ValueError
        For an unknown method, a profile lacking an entry, a bad ``seed``, ``snr``,
        ``noise`` or ``jobs``, or a folder without a subject. An error while training a
        model stops the run (the models not yet started are cancelled) and is raised
        with a note naming the model.

    Notes
    -----
    A method's replicates train as one stack (:func:`helpers.judges.autoencoder.train_stacked`:
    each keeps its own data, seeds and weights; they share the compiled step), one method
    per worker at a time. Memory: each worker holds its method's ``replicates`` synthetic
    sets and their training copies, about 0.5 GB each for the paper's 300,000 voxels and
    64 directions; lower ``jobs`` on a machine with many cores and little memory. ``progress.jsonl`` is started afresh by each run;
    ``training.json`` and ``diagnostics.csv`` are removed at the start and written at
    the end, so a run that fails leaves no table that looks finished. Replicate files
    beyond ``replicates`` (from an earlier, larger run) are removed from the trained
    methods' folders.
    """
    started = time.perf_counter()
    subject_dir = Path(subject_dir)
    methods = contract.check_methods(methods, where="train_replicates")
    settings = {
        "profile": _check_profile(profile),
        "seed": seed,
        "snr": contract.parse_snr(snr),
        "noise": contract.parse_noise(noise),
        "min_pool": min_pool,
        "wm_fa_min": wm_fa_min,
    }
    jobs = _check_jobs(jobs)
    _check_subject_folder(subject_dir)
    models = _plan_models(methods, settings["profile"]["replicates"], seed)
    device = "gpu" if _gpu_visible() else "cpu"
    workers = 1 if device == "gpu" else _n_workers(jobs, len(_groups(models)))

    _start_run(subject_dir)
    results = _train_all(subject_dir, settings, models, workers, progress=progress, started=started)
    diagnostics = _diagnostics_table(subject_dir, models, results, ratio=DEFAULTS["collapse_ratio"])
    _remove_stale_replicates(subject_dir, methods, settings["profile"]["replicates"])
    save_csv(diagnostics, diagnostics_path(subject_dir))
    summary = {
        **settings,
        "replicates": settings["profile"]["replicates"],
        "methods": list(methods),
        "skipped": dict(skipped or {}),
        "device": device,
        "workers": workers,
        "models": [
            {
                "method": m.name,
                "spec": m.method,
                "replicate": m.replicate,
                "simulation_seed": m.simulation_seed,
                "training_seed": m.training_seed,
                "seconds": results[m.name, m.replicate]["seconds"],
            }
            for m in models
        ],
        "seconds": round(time.perf_counter() - started, 3),
    }
    save_json(summary, summary_path(subject_dir))  # last: its presence marks the step as complete
    return diagnostics


def _plan_models(methods, replicates, seed):
    """Every (method, replicate) to train, with its seeds, methods in the given order."""
    return [
        _Model(m, contract.method_name(m), r, *contract.replicate_seeds(seed, m, r))
        for m in methods
        for r in range(replicates)
    ]


def _train_all(subject_dir, settings, models, workers, *, progress, started):
    """Train every model, here or in workers; log each as it finishes.

    Returns ``{(name, replicate): result}``.
    """
    results = {}
    with tqdm(total=len(models), desc="train", unit="model", disable=not progress) as bar:

        def finished(result):
            results[result["name"], result["replicate"]] = result
            _log_progress(subject_dir, result, done=len(results), total=len(models), started=started)
            bar.update(1)

        run = _train_here if workers == 1 else _train_in_workers
        run(subject_dir, settings, models, workers, finished)
    return results


def _groups(models):
    """The models as one group per method (its replicates, trained as one stack)."""
    groups = {}
    for model in models:
        groups.setdefault(model.name, []).append(model)
    return [tuple(g) for g in groups.values()]


def _train_here(subject_dir, settings, models, workers, finished):
    """Train the models one method (a stack of its replicates) after another in this process."""
    worker = _Worker(subject_dir, settings)
    for group in _groups(models):
        try:
            results = worker.train(group)
        except Exception as e:
            e.add_note(f"while training {group[0].name} replicates {[m.replicate for m in group]} of {subject_dir}")
            raise
        for result in results:
            finished(result)


def _train_in_workers(subject_dir, settings, models, workers, finished):
    """Train the models in ``workers`` spawned processes, one method's stack per worker at a time."""
    pool = run_in_workers(
        _train_in_worker, _groups(models), workers=workers, initializer=_init_worker,
        initargs=(str(subject_dir), settings),
    )
    with pool as outcomes:
        for group, outcome in outcomes:
            if isinstance(outcome, BaseException):
                outcome.add_note(f"while training {group[0].name} replicates {[m.replicate for m in group]} of {subject_dir}")
                raise outcome
            for result in outcome:
                finished(result)


_WORKER = None  # the worker process's _Worker, set by _init_worker


def _init_worker(subject_dir, settings):
    """Worker start: quiet TensorFlow, one intra- and one inter-op thread, no model yet."""
    global _WORKER
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from helpers.judges.autoencoder import configure_threads

    configure_threads(intra_op=1, inter_op=1)
    _WORKER = _Worker(subject_dir, settings)


def _train_in_worker(group):
    return _WORKER.train(group)


def _check_profile(profile):
    if not isinstance(profile, dict):
        raise ValueError(f"profile must be a dict (helpers.config.load_profile), got {profile!r}")
    missing = [k for k in PROFILE_KEYS if k not in profile]
    if missing:
        raise ValueError(f"profile {profile.get('name', '')!r} lacks {missing}; expected {list(PROFILE_KEYS)}")
    for key in ("n_voxels", "n_val", "epochs", "batch_size", "replicates"):
        value = profile[key]
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"profile: {key} must be a positive int, got {value!r}")
    if profile["n_val"] >= profile["n_voxels"]:
        raise ValueError(
            f"profile: n_val={profile['n_val']} leaves no training voxel of n_voxels={profile['n_voxels']}"
        )
    return dict(profile)


def _check_subject_folder(subject_dir):
    for required in ("subject.npz", "subject.json"):
        if not (subject_dir / required).is_file():
            raise ValueError(
                f"{subject_dir / required}: not found; run notebook 01 (load data) for this subject first"
            )


def _check_jobs(jobs):
    if jobs is None:
        return 0
    if isinstance(jobs, bool) or not isinstance(jobs, Integral) or jobs < 0:
        raise ValueError(f"jobs must be a non-negative int (0 or None: every core), got {jobs!r}")
    return int(jobs)


def _n_workers(jobs, n_models):
    """``min(jobs or available cores, n_models)``; cores: those this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(jobs or cores or 1, n_models))


def _gpu_visible():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _folder_names(subject_dir):
    folder = Path(subject_dir).resolve()
    return {"dataset": folder.parent.name, "subject": folder.name}


def _start_run(subject_dir):
    """Remove the completion marker and old tables; start the progress log afresh."""
    summary_path(subject_dir).unlink(missing_ok=True)
    diagnostics_path(subject_dir).unlink(missing_ok=True)
    path = progress_path(subject_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def _log_progress(subject_dir, result, *, done, total, started):
    line = {
        "method": result["name"],
        "replicate": result["replicate"],
        "done": done,
        "total": total,
        "seconds": result["seconds"],
        "elapsed": round(time.perf_counter() - started, 3),
    }
    with open(progress_path(subject_dir), "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def _remove_stale_replicates(subject_dir, methods, replicates):
    for method in methods:
        for r in range(replicates, 10_000):
            paths = [model_path(subject_dir, method, r), history_path(subject_dir, method, r)]
            if not any(p.exists() for p in paths):
                break
            for p in paths:
                p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------


def flag_collapsed(val_losses_by_method, *, ratio=DEFAULTS["collapse_ratio"]):
    """Flag the replicates whose final validation loss is far above their method's median.

    Parameters
    ----------
    val_losses_by_method : dict
        ``{method: sequence of final validation losses, one per replicate}``.
    ratio : float, optional
        A replicate collapsed when its loss is *more than* ``ratio`` times the median of
        its method's finite losses (default :data:`helpers.contract.DEFAULTS`
        ``collapse_ratio``, 2).

    Returns
    -------
    dict
        ``{method: list of bool}``, in the replicates' order. A non-finite loss (the run
        diverged) is always flagged. A lone replicate is its own median and is never
        flagged; nor is either of two, since neither can exceed twice their mean.

    Examples
    --------
    >>> flag_collapsed({"Syn": [1.0, 1.1, 0.9, 3.0]})
    {'Syn': [False, False, False, True]}
    """
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not math.isfinite(ratio) or ratio < 1:
        raise ValueError(f"ratio must be a finite number >= 1, got {ratio!r}")
    flags = {}
    for method, losses in val_losses_by_method.items():
        losses = np.asarray(losses, dtype=float).reshape(-1)
        finite = np.isfinite(losses)
        median = np.median(losses[finite]) if finite.any() else np.nan
        flags[method] = [bool(not ok or loss > ratio * median) for ok, loss in zip(finite, losses)]
    return flags


def _diagnostics_table(subject_dir, models, results, *, ratio):
    """The tidy table of :func:`train_replicates`; ``results`` as :func:`_train_all` gives."""
    losses = {}
    for m in models:
        losses.setdefault(m.name, []).append(results[m.name, m.replicate]["val_loss"])
    collapsed = flag_collapsed(losses, ratio=ratio)
    names = _folder_names(subject_dir)
    rows = []
    for m in models:
        result = results[m.name, m.replicate]
        values = {
            "val_loss": result["val_loss"],
            "dead_units": result["dead_units"],
            "bottleneck_units": result["bottleneck_units"],
            "collapsed": collapsed[m.name][m.replicate],
        }
        rows += [
            (names["dataset"], names["subject"], m.name, m.replicate, metric, "all", float(values[metric]))
            for metric in DIAGNOSTICS
        ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------------------
# Reading the results back
# --------------------------------------------------------------------------------------


def load_diagnostics(subject_dir):
    """The tidy diagnostics table written by :func:`train_replicates`.

    Raises
    ------
    ValueError
        Naming the file, when the subject has not been trained (or the run did not finish).
    """
    path = diagnostics_path(subject_dir)
    if not path.is_file():
        raise ValueError(f"{path}: not found; run notebook 03 (train) for this subject first")
    return pd.read_csv(path, dtype={"dataset": str, "subject": str, "method": str})


def load_histories(subject_dir):
    """``{name: [history DataFrame of replicate 0, 1, ...]}`` of the models in diagnostics.csv,
    methods in the table's order."""
    from helpers.judges.autoencoder import load_history

    table = load_diagnostics(subject_dir)
    histories = {}
    for name in table["method"].unique():
        replicates = sorted(table.loc[table["method"] == name, "replicate"].unique())
        histories[name] = [load_history(history_path(subject_dir, name, r)) for r in replicates]
    return histories
