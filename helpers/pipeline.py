"""The steps of the notebooks, as functions that read and write a subject folder.

A subject folder (``results/<dataset>/<subject>/``) holds, step by step::

    subject.npz, subject.json, mask/tissue/s0.nii.gz    01 load data
    synthetic/<method>.npz, synthetic/report.json        02 simulate
    models/<method>.keras, models/<method>_history.csv   03 train
    metrics/metrics.csv, voxels.npz, maps/*.nii.gz       evaluation (batch runner or 04)

The notebooks call these functions and show what they return; the batch runner calls
:func:`evaluate_subject` itself so that the evaluation runs where the subject runs.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: they render in papermill output and in terminals alike

from helpers.config import check_methods
from helpers.io import save_csv, save_json, save_npz

__all__ = [
    "synthetic_path",
    "model_path",
    "history_path",
    "simulate_methods",
    "load_synthetic",
    "train_methods",
    "load_histories",
    "evaluate_subject",
    "load_voxel_table",
    "find_subjects",
    "collect_results",
]


def synthetic_path(subject_dir, method):
    return Path(subject_dir) / "synthetic" / f"{method}.npz"


def model_path(subject_dir, method):
    return Path(subject_dir) / "models" / f"{method}.keras"


def history_path(subject_dir, method):
    return Path(subject_dir) / "models" / f"{method}_history.csv"


def method_seed(seed, method):
    """A per-method seed derived from the run's seed, so methods draw independent voxels
    and the same seed gives the same numbers."""
    from helpers import METHODS

    return [int(seed), METHODS.index(method)]


def simulate_methods(subject, methods, *, n_voxels, seed=0, snr="auto", min_pool=20, out_dir=None, progress=True):
    """Simulate every method's synthetic set and write ``synthetic/<method>.npz``.

    Returns
    -------
    data : dict
        method -> (clean, noisy) float32 arrays of shape (n_voxels, m).
    report : dict
        SNR used, pools (voxels, eroded or fallback, mean MD), seconds per method.
    """
    from helpers.simulation import resolve_snr, simulate, tissue_pools

    methods = check_methods(methods)
    needs_pools = any(m in ("Sampled", "SampleAndMean") for m in methods)
    pools = tissue_pools(subject, min_pool=min_pool) if needs_pools else None
    snr_value = resolve_snr(snr, subject)
    report = {
        "n_voxels": int(n_voxels),
        "seed": int(seed),
        "snr_setting": snr,
        "snr": None if snr_value is None else round(snr_value, 3),
        "snr_method": subject.snr_method if str(snr).lower() == "auto" else "given",
        "pools": pools.report if pools else {},
        "seconds": {},
    }
    data = {}
    for method in tqdm(methods, desc="simulate", disable=not progress):
        t = time.perf_counter()
        data[method] = simulate(subject, method, n_voxels, method_seed(seed, method), snr=snr, pools=pools)
        report["seconds"][method] = round(time.perf_counter() - t, 3)
        if out_dir is not None:
            clean, noisy = data[method]
            # uncompressed: noisy floats barely compress (-12%) and zlib costs ~5 s per method
            save_npz(synthetic_path(out_dir, method), compress=False, clean=clean, noisy=noisy)
    if out_dir is not None:
        save_json(report, Path(out_dir) / "synthetic" / "report.json")
    return data, report


def load_synthetic(subject_dir, method):
    """(clean, noisy) arrays written by :func:`simulate_methods`."""
    path = synthetic_path(subject_dir, method)
    if not path.is_file():
        raise ValueError(f"{path}: no synthetic data for {method}; run notebook 02 (simulate) first")
    with np.load(path, allow_pickle=False) as z:
        return z["clean"], z["noisy"]


def train_methods(subject_dir, methods, *, profile, seed=0, progress=True):
    """Train one autoencoder per method on its synthetic set; save model and history.

    Parameters
    ----------
    profile : dict
        From :func:`helpers.config.load_profile`: epochs, batch_size, learning_rate, n_val.

    Returns
    -------
    dict
        method -> history DataFrame (epoch, loss, val_loss).
    """
    from helpers.autoencoder import build_autoencoder, save_history, save_model, train_autoencoder

    subject_dir = Path(subject_dir)
    histories = {}
    for method in tqdm(check_methods(methods), desc="train", disable=not progress):
        clean, noisy = load_synthetic(subject_dir, method)
        model = build_autoencoder(clean.shape[1], seed=seed)
        # the profile's validation share (paper: 50,000 of 300,000), whatever n_voxels was used
        n_val = round(len(clean) * profile["n_val"] / profile["n_voxels"])
        histories[method] = train_autoencoder(
            model,
            noisy,
            clean,
            epochs=int(profile["epochs"]),
            batch_size=int(profile["batch_size"]),
            learning_rate=float(profile["learning_rate"]),
            n_val=n_val,
            seed=seed,
            progress=progress,
        )
        save_model(model, model_path(subject_dir, method))
        save_history(histories[method], history_path(subject_dir, method))
    return histories


def load_histories(subject_dir, methods):
    """method -> training history written by :func:`train_methods`."""
    from helpers.autoencoder import load_history

    return {m: load_history(history_path(subject_dir, m)) for m in methods}


def evaluate_subject(subject_dir, methods, *, force=False, batch_size=65536):
    """Reconstruct a subject's real voxels with each method's model and write the metrics.

    Reads ``subject.npz``/``subject.json`` and ``models/<method>.keras``; writes
    ``metrics/metrics.csv`` (tidy), ``metrics/voxels.npz`` (per-voxel errors, keys
    ``<method>__<metric>``) and ``metrics/maps/<method>_<metric>.nii.gz``. Skips the work
    when ``metrics.csv`` is newer than every model and covers the methods, unless
    ``force``.

    Returns
    -------
    pandas.DataFrame
        The tidy table: dataset, subject, method, metric, tissue, value.
    """
    from helpers.data import Subject
    from helpers.metrics import evaluate, write_error_maps

    subject_dir = Path(subject_dir)
    out = subject_dir / "metrics"
    table_path = out / "metrics.csv"
    models = {m: model_path(subject_dir, m) for m in check_methods(methods)}
    for m, p in models.items():
        if not p.is_file():
            raise ValueError(f"{p}: no trained model for method {m}; run notebook 03 for this subject first")
    newest = max(p.stat().st_mtime for p in [*models.values(), subject_dir / "subject.npz"])
    if not force and table_path.is_file() and table_path.stat().st_mtime >= newest:
        table = pd.read_csv(table_path, dtype={"subject": str, "dataset": str})
        if set(methods) <= set(table["method"]) and set(table["subject"]) == {subject_dir.name}:
            return table[table["method"].isin(methods)].reset_index(drop=True)
    subject = Subject.load(subject_dir)
    # the table names the subject by where its results live: results/<dataset>/<subject>/
    subject.info.update(dataset=subject_dir.parent.name, subject=subject_dir.name)
    # callables: one method's reconstruction in memory at a time (an HCP subject's is 0.4 GB)
    recon = {m: partial(_reconstruct_file, p, subject.attenuation, batch_size) for m, p in models.items()}
    table, errors = evaluate(subject, recon)
    write_error_maps(subject, errors, out / "maps")
    save_npz(out / "voxels.npz", **{f"{m}__{k}": v.astype(np.float32) for m, e in errors.items() for k, v in e.items()})
    save_csv(table, table_path)  # last: its presence marks the evaluation as complete
    return table


def _reconstruct_file(model_path, attenuation, batch_size):
    from helpers.autoencoder import load_model, reconstruct

    return reconstruct(load_model(model_path), attenuation, batch_size=batch_size)


def load_voxel_table(subject_dir):
    """Per-voxel errors of an evaluated subject as a long table
    ``dataset, subject, method, metric, voxel, value`` (NaN dropped)."""
    subject_dir = Path(subject_dir)
    frames = []
    with np.load(subject_dir / "metrics" / "voxels.npz", allow_pickle=False) as z:
        for key in z.files:
            method, metric = key.split("__")
            v = z[key]
            keep = np.flatnonzero(np.isfinite(v))
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": subject_dir.parent.name,
                        "subject": subject_dir.name,
                        "method": method,
                        "metric": metric,
                        "voxel": keep,
                        "value": v[keep],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def find_subjects(results_dir, subjects=None):
    """Subject folders of a dataset results folder (those with ``subject.json``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ValueError(f"{results_dir}: results folder not found")
    found = sorted(p.parent for p in results_dir.glob("*/subject.json"))
    if subjects:
        by_name = {p.name: p for p in found}
        missing = [s for s in subjects if str(s) not in by_name]
        if missing:
            raise ValueError(f"{results_dir}: no results for subject(s) {missing}; found {sorted(by_name)}")
        found = [by_name[str(s)] for s in subjects]
    if not found:
        raise ValueError(f"{results_dir}: no subject folders (run notebook 01 first)")
    return found


def collect_results(results_dirs, methods, *, subjects=None, progress=True):
    """Evaluate (where not done yet) and gather every subject of every dataset folder.

    Returns
    -------
    metrics : DataFrame
        The tidy table of all subjects.
    voxels : DataFrame or None
        Per-voxel errors of the datasets with fewer than 3 subjects (for the voxel-level
        tests that stand in for subject-level ones there), else None.
    subject_dirs : list of Path
    """
    from helpers.stats import MIN_SUBJECTS

    dirs = [d for r in results_dirs for d in find_subjects(r, subjects if len(results_dirs) == 1 else None)]
    tables = [evaluate_subject(d, methods) for d in tqdm(dirs, desc="evaluate", disable=not progress)]
    metrics = pd.concat(tables, ignore_index=True)
    metrics["subject"] = metrics["subject"].astype(str)
    counts = metrics.groupby("dataset")["subject"].nunique()
    small = set(counts[counts < MIN_SUBJECTS].index)
    voxel_tables = [load_voxel_table(d) for d in dirs if d.parent.name in small]
    voxel_tables = [t[t["method"].isin(methods)] for t in voxel_tables]
    voxels = pd.concat(voxel_tables, ignore_index=True) if voxel_tables else None
    return metrics, voxels, dirs
