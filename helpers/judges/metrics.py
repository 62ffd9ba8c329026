"""How badly does an autoencoder reconstruct a real scan?

For every brain voxel of a subject and every trained model (method and replicate):

- **signal MAE**: mean |AE(E) − E| over the selected volumes, averaged over voxels (also
  per tissue);
- **FA MAE**: |FA(AE(E)) − FA(E)| from WLS tensor fits of [S0=1, E] and [S0=1, AE(E)],
  each on the selected volumes with b <= ``dti_max_b`` (the tensor model does not hold
  at high b);
- **angular deviation**: for voxels whose real FA is in [0.5, 0.9], the angle in degrees
  between the principal eigenvectors, sign-invariant: arccos |v·w|.

Per-subject means form the tidy table ``dataset, subject, method, replicate, metric,
tissue, value`` (:data:`helpers.contract.COLUMNS`); per-voxel errors, averaged over a
method's replicates, become NIfTI maps. This module is numerical: it imports the tensor
fit and the shared names, nothing from the configuration or the runner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.contract import COLUMNS, METRICS, TISSUES
from helpers.dti import fit_attenuation
from helpers.scan.tissue import CODES

__all__ = [
    "METRICS",
    "COLUMNS",
    "FA_RANGE",
    "angle_deg",
    "voxel_errors",
    "summarise",
    "evaluate",
    "mean_errors",
    "write_error_maps",
]

FA_RANGE = (0.5, 0.9)
"""Real-FA range of the voxels whose main direction is compared (the method's Fig. 2)."""


def angle_deg(v, w):
    """Sign-invariant angle in degrees between direction vectors, ``arccos |v·w|``.

    Parameters
    ----------
    v, w : (..., 3) array_like
        Directions (need not be unit length; zero vectors give NaN).

    Examples
    --------
    >>> float(angle_deg([1, 0, 0], [-1, 1, 0]).round(6))
    45.0
    """
    v = np.asarray(v, dtype=float)
    w = np.asarray(w, dtype=float)
    norm = np.linalg.norm(v, axis=-1) * np.linalg.norm(w, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs((v * w).sum(axis=-1)) / np.where(norm > 0, norm, np.nan)
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


def voxel_errors(bvals, bvecs, real, recon, *, real_fit=None, dti_columns=None):
    """Per-voxel errors of one reconstruction.

    Parameters
    ----------
    bvals : (m,) ndarray
        b-values (s/mm²) of the m selected volumes.
    bvecs : (m, 3) ndarray
    real, recon : (n, m) ndarray
        Real attenuation and its reconstruction.
    real_fit : TensorFit, optional
        The fit of ``real[:, dti_columns]`` when already computed (shared by all models).
    dti_columns : (m,) bool ndarray, optional
        The volumes the tensor fits use (b <= dti_max_b); all by default.

    Returns
    -------
    dict of (n,) float ndarrays
        ``signal_mae`` (mean absolute error over all m volumes), ``fa_mae`` (absolute FA
        difference) and ``angle_deg`` (NaN where the real FA is outside :data:`FA_RANGE`).
    """
    real = np.asarray(real)
    recon = np.asarray(recon)
    if real.shape != recon.shape:
        raise ValueError(f"reconstruction has shape {recon.shape}; the real data {real.shape}")
    cols = np.ones(real.shape[1], dtype=bool) if dti_columns is None else np.asarray(dti_columns, dtype=bool)
    bvals, bvecs = np.asarray(bvals)[cols], np.asarray(bvecs)[cols]
    real_fit = real_fit or fit_attenuation(bvals, bvecs, real[:, cols])
    rec_fit = fit_attenuation(bvals, bvecs, recon[:, cols])
    real_fa = real_fit.fa
    in_range = (real_fa >= FA_RANGE[0]) & (real_fa <= FA_RANGE[1])
    angle = np.full(len(real), np.nan)
    angle[in_range] = angle_deg(real_fit.direction[in_range], rec_fit.direction[in_range])
    return {
        "signal_mae": _row_mae(real, recon),
        "fa_mae": np.abs(rec_fit.fa - real_fa),
        "angle_deg": angle,
    }


def _row_mae(a, b, chunk=65536):
    """Per-row mean absolute difference, in chunks (no full-size float64 temporaries)."""
    out = np.empty(len(a))
    for start in range(0, len(a), chunk):
        sl = slice(start, start + chunk)
        out[sl] = np.abs(b[sl].astype(float) - a[sl]).mean(axis=1)
    return out


def summarise(errors, tissue, *, dataset, subject, method, replicate=0):
    """Tidy rows (means over voxels, NaN ignored) for all voxels and per tissue.

    A tissue with no voxel (or, for the angle, no voxel in the FA range) gets no row: it
    is shown as empty, never as a number.
    """
    rows = []
    groups = {"all": np.ones(len(tissue), dtype=bool)}
    groups.update({name: tissue == CODES[name] for name in TISSUES})
    for metric in METRICS:
        values = errors[metric]
        for name, mask in groups.items():
            v = values[mask]
            v = v[np.isfinite(v)]
            if v.size:
                rows.append((dataset, subject, method, int(replicate), metric, name, float(v.mean())))
    return rows


def evaluate(subject, reconstructions, *, rows=None):
    """Metrics of several models' reconstructions of one subject.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
    reconstructions : dict
        ``(method, replicate)`` (or a bare method name, replicate 0) -> (n, m)
        reconstruction of ``subject.attenuation``, or a callable that returns it (then only
        one reconstruction is held in memory at a time).
    rows : (n,) bool array_like, optional
        Voxels the table summarises (a subject's judge part, :mod:`helpers.scan.split`); the
        per-voxel errors cover every voxel (for the maps). Default: all.

    Returns
    -------
    table : pandas.DataFrame
        Tidy: dataset, subject, method, replicate, metric, tissue, value.
    errors : dict
        ``(method, replicate)`` -> :func:`voxel_errors` dict.
    """
    real_fit = subject.tensor()
    cols = getattr(subject, "dti_columns", None)
    errors, table = {}, []
    ds, sid = subject.info.get("dataset", ""), subject.info.get("subject", "")
    rows_ = np.ones(subject.n_voxels, bool) if rows is None else np.asarray(rows, dtype=bool)
    if rows_.shape != (subject.n_voxels,) or not rows_.any():
        raise ValueError(f"rows must be a ({subject.n_voxels},) boolean mask selecting at least one voxel")
    for key, recon in reconstructions.items():
        method, replicate = key if isinstance(key, tuple) else (key, 0)
        recon = recon() if callable(recon) else recon
        if not np.isfinite(recon).all():
            raise ValueError(
                f"{method} replicate {replicate}: the reconstruction holds NaN or inf values (did its training diverge?)"
            )
        errors[(method, replicate)] = voxel_errors(
            subject.bvals, subject.bvecs, subject.attenuation, recon, real_fit=real_fit, dti_columns=cols
        )
        part = {metric: v[rows_] for metric, v in errors[(method, replicate)].items()}
        table += summarise(part, subject.tissue[rows_], dataset=ds, subject=sid, method=method, replicate=replicate)
    return pd.DataFrame(table, columns=list(COLUMNS)), errors


def mean_errors(errors):
    """method -> per-voxel errors averaged over that method's replicates (NaN kept where
    every replicate is NaN, e.g. the angle outside the FA range)."""
    by_method = {}
    for (method, _), errs in errors.items():
        by_method.setdefault(method, []).append(errs)
    out = {}
    for method, runs in by_method.items():
        out[method] = {}
        for metric in runs[0]:
            stack = np.stack([r[metric] for r in runs])
            valid = np.isfinite(stack)
            total = np.where(valid, stack, 0.0).sum(axis=0)
            count = valid.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[method][metric] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def write_error_maps(subject, errors, folder):
    """One NIfTI map per method and metric on the subject's grid (NaN outside the brain).

    ``errors`` maps a method name to its per-voxel errors (see :func:`mean_errors`).
    Returns the list of paths written.
    """
    folder = Path(folder)
    paths = []
    for method, errs in errors.items():
        for metric, values in errs.items():
            path = folder / f"{method}_{metric}.nii.gz"
            subject.save_nifti(np.asarray(values, dtype=np.float32), path)
            paths.append(path)
    return paths
