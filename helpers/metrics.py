"""How badly does an autoencoder reconstruct a real scan? (design.md, "Metrics")

For every brain voxel of a subject and every method's autoencoder:

- **signal MAE**: mean |AE(E) − E| over directions, averaged over voxels (also per tissue);
- **FA MAE**: |FA(AE(E)) − FA(E)| from WLS tensor fits of [S0=1, E] and [S0=1, AE(E)];
- **angular deviation**: for voxels whose real FA is in [0.5, 0.9], the angle in degrees
  between the principal eigenvectors, sign-invariant: arccos |v·w|.

Per-voxel errors are kept (NIfTI maps, and ``voxels.npz`` through
:func:`helpers.pipeline.evaluate_subject`) for voxel-level statistics and error-map
figures; per-subject means form the tidy table ``dataset, subject, method, metric,
tissue, value``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.dti import fit_attenuation
from helpers.tissue import CODES

__all__ = [
    "METRICS",
    "FA_RANGE",
    "angle_deg",
    "voxel_errors",
    "summarise",
    "evaluate",
    "write_error_maps",
]

METRICS = ("signal_mae", "fa_mae", "angle_deg")
FA_RANGE = (0.5, 0.9)
"""Real-FA range of the voxels whose main direction is compared (the method's Fig. 2)."""
COLUMNS = ["dataset", "subject", "method", "metric", "tissue", "value"]


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


def voxel_errors(bvals, bvecs, real, recon, *, real_fit=None):
    """Per-voxel errors of one reconstruction.

    Parameters
    ----------
    bvals : (m,) ndarray
    bvecs : (m, 3) ndarray
    real, recon : (n, m) ndarray
        Real attenuation and its reconstruction.
    real_fit : TensorFit, optional
        The fit of ``real`` when already computed (it is shared by all methods).

    Returns
    -------
    dict of (n,) float ndarrays
        ``signal_mae`` (mean absolute error over directions), ``fa_mae`` (absolute FA
        difference) and ``angle_deg`` (NaN where the real FA is outside :data:`FA_RANGE`).
    """
    real = np.asarray(real)
    recon = np.asarray(recon)
    if real.shape != recon.shape:
        raise ValueError(f"reconstruction has shape {recon.shape}; the real data {real.shape}")
    real_fit = real_fit or fit_attenuation(bvals, bvecs, real)
    rec_fit = fit_attenuation(bvals, bvecs, recon)
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


def summarise(errors, tissue, *, dataset, subject, method):
    """Tidy rows (means over voxels, NaN ignored) for all voxels and per tissue.

    A tissue with no voxel (or, for the angle, no voxel in the FA range) gets no row.
    """
    rows = []
    groups = {"all": np.ones(len(tissue), dtype=bool)}
    groups.update({name: tissue == code for name, code in CODES.items()})
    for metric in METRICS:
        values = errors[metric]
        for name, mask in groups.items():
            v = values[mask]
            v = v[np.isfinite(v)]
            if v.size:
                rows.append((dataset, subject, method, metric, name, float(v.mean())))
    return rows


def evaluate(subject, reconstructions):
    """Metrics of several methods' reconstructions of one subject.

    Parameters
    ----------
    subject : helpers.data.Subject
    reconstructions : dict
        method -> (n, m) reconstruction of ``subject.attenuation``, or a callable that
        returns it (then only one reconstruction is held in memory at a time).

    Returns
    -------
    table : pandas.DataFrame
        Tidy: dataset, subject, method, metric, tissue, value.
    errors : dict
        method -> :func:`voxel_errors` dict.
    """
    real_fit = subject.tensor()
    errors, rows = {}, []
    ds, sid = subject.info.get("dataset", ""), subject.info.get("subject", "")
    for method, recon in reconstructions.items():
        recon = recon() if callable(recon) else recon
        if not np.isfinite(recon).all():
            raise ValueError(f"{method}: the reconstruction holds NaN or inf values (did its training diverge?)")
        errors[method] = voxel_errors(subject.bvals, subject.bvecs, subject.attenuation, recon, real_fit=real_fit)
        rows += summarise(errors[method], subject.tissue, dataset=ds, subject=sid, method=method)
    return pd.DataFrame(rows, columns=COLUMNS), errors


def write_error_maps(subject, errors, folder):
    """One NIfTI map per method and metric on the subject's grid (NaN outside the brain).

    Returns the list of paths written.
    """
    folder = Path(folder)
    paths = []
    for method, errs in errors.items():
        for metric, values in errs.items():
            path = folder / f"{method}_{metric}.nii.gz"
            subject.save_nifti(values.astype(np.float32), path)
            paths.append(path)
    return paths
