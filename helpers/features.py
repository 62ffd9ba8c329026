"""Rotation-invariant features of a voxel's attenuation profile, the common language of the
two-sample judges (:mod:`helpers.judges.realism`) and of the calibration's objective
(:mod:`helpers.generators.calibration`):

- DTI: FA, MD and the three eigenvalues (tensor fit of the volumes with b <= dti_max_b);
- per shell: the mean attenuation, the power of the even spherical-harmonic orders
  l = 2 and 4 (the anisotropy's size and shape), and the RMS residual of the harmonic fit
  (noise and whatever a smooth profile cannot hold).

The power of a harmonic order, Σ_m c_lm², is invariant under rotation for an orthonormal
basis; with a finite set of directions the least-squares coefficients of a rotated
profile alias a little, so it is invariant to within a few percent (tested).

A numerical kernel: numpy, scipy, pandas and :mod:`helpers.dti`; it sits at the ground so
that generators and judges can both use it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from helpers.contract import DEFAULTS
from helpers.dti import fit_attenuation

__all__ = ["shell_groups", "sh_basis", "sh_power", "invariant_features"]

_SH_ORDERS = (2, 4)  # harmonic orders whose power is a feature (l = 0 is the mean)
_MAX_FIT_ORDER = 8



def shell_groups(bvals, *, tolerance=DEFAULTS["shell_tolerance"]):
    """Group diffusion-weighted volumes into shells.

    Sorted b-values further apart than ``tolerance`` start a new shell; a shell is named
    by its mean b-value rounded to the nearest 50 s/mm² (HCP's 990-1010 and the dipy
    sample's 987-1003 are both ``1000``).

    Parameters
    ----------
    bvals : (m,) array_like
        b-values (s/mm²) of the diffusion-weighted volumes (no b0).

    Returns
    -------
    dict
        ``{label (int, s/mm²): (k,) int ndarray of column indices}``, by increasing b.

    Examples
    --------
    >>> {b: i.tolist() for b, i in shell_groups([1000, 2005, 990, 1995]).items()}
    {1000: [0, 2], 2000: [1, 3]}
    """
    bvals = np.asarray(bvals, dtype=float).ravel()
    if bvals.size == 0:
        raise ValueError("bvals is empty: no diffusion-weighted volume to group into shells")
    order = np.argsort(bvals, kind="stable")
    breaks = np.flatnonzero(np.diff(bvals[order]) > tolerance) + 1
    groups = {}
    for idx in np.split(order, breaks):
        label = int(round(bvals[idx].mean() / 50.0) * 50)
        groups[label] = np.sort(idx)
    return groups


def _fit_order(m):
    """Largest even harmonic order fitted to ``m`` directions: at most half as many
    coefficients as directions (so the fit leaves residual degrees of freedom), order 2
    from 6 directions on, and never above 8."""
    best = 0
    for order in range(2, _MAX_FIT_ORDER + 1, 2):
        n_coef = (order + 1) * (order + 2) // 2
        if n_coef <= m // 2 or (order == 2 and m >= 6):
            best = order
    return best


def _spherical_harmonic(l, m, polar, azimuth):
    """Complex orthonormal Y_l^m (scipy >= 1.15 ``sph_harm_y``, else ``sph_harm``)."""
    from scipy import special

    if hasattr(special, "sph_harm_y"):
        return special.sph_harm_y(l, m, polar, azimuth)
    return special.sph_harm(m, l, azimuth, polar)  # pragma: no cover - old scipy


def sh_basis(bvecs, order):
    """Real, orthonormal, even spherical harmonics up to ``order`` on directions.

    Parameters
    ----------
    bvecs : (m, 3) array_like
        Directions (normalised here).
    order : int
        Largest (even) order l.

    Returns
    -------
    basis : (m, k) ndarray
        Column j is harmonic (l_j, m_j) at every direction; k = (order+1)(order+2)/2.
    degrees : (k,) int ndarray
        The order l of each column.

    Notes
    -----
    Y_lm = √2 (−1)^m Im Y_l^|m| for m < 0, Y_l^0, √2 (−1)^m Re Y_l^m for m > 0: an
    orthonormal basis of each order's (2l+1)-dimensional space, so Σ_m c_lm² does not
    depend on how the profile is rotated.
    """
    g = np.asarray(bvecs, dtype=float)
    norm = np.linalg.norm(g, axis=1)
    if np.any(norm == 0):
        raise ValueError("sh_basis: a direction has zero length (b0 volumes have no direction)")
    g = g / norm[:, None]
    polar = np.arccos(np.clip(g[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(g[:, 1], g[:, 0])
    columns, degrees = [], []
    for l in range(0, int(order) + 1, 2):
        for m in range(-l, l + 1):
            y = _spherical_harmonic(l, abs(m), polar, azimuth)
            if m < 0:
                columns.append(math.sqrt(2) * (-1) ** m * y.imag)
            elif m == 0:
                columns.append(y.real)
            else:
                columns.append(math.sqrt(2) * (-1) ** m * y.real)
            degrees.append(l)
    return np.stack(columns, axis=1), np.asarray(degrees)


def sh_power(signal, bvecs, *, order=None, orders=_SH_ORDERS):
    """Per-order power of a least-squares even spherical-harmonic fit, and its residual.

    Parameters
    ----------
    signal : (n, m) array_like
        One shell's attenuation profiles.
    bvecs : (m, 3) array_like
        The shell's directions.
    order : int, optional
        Largest order fitted; default: the largest even order with at most m/2
        coefficients (order 2 from 6 directions), at most 8.
    orders : sequence of int
        Orders whose power is returned.

    Returns
    -------
    power : dict
        ``{l: (n,) ndarray}`` with power_l = Σ_m c_lm² / (4π), the mean over the sphere of
        the squared order-l part of the profile (a constant profile 1 has power_0 = 1).
        Orders above the fitted order are left out.
    residual : (n,) ndarray
        RMS over directions of signal − fit.

    Examples
    --------
    >>> from dipy.data import get_sphere
    >>> g = get_sphere(name="repulsion100").vertices
    >>> p, r = sh_power(3 * g[:, 2] ** 2 - 1, g, orders=(0, 2))  # ∝ Y_2^0: mean of its square is 4/5
    >>> round(float(p[0][0]), 6), round(float(p[2][0]), 6), bool(r[0] < 1e-9)
    (0.0, 0.8, True)
    """
    signal = np.asarray(signal, dtype=float)
    if signal.ndim == 1:
        signal = signal[None]
    bvecs = np.asarray(bvecs, dtype=float)
    if signal.shape[1] != len(bvecs):
        raise ValueError(f"signal has {signal.shape[1]} columns but bvecs has {len(bvecs)} directions")
    order = _fit_order(len(bvecs)) if order is None else int(order)
    basis, degrees = sh_basis(bvecs, order)
    coef = np.linalg.pinv(basis) @ signal.T  # (k, n): the least-squares fit, one pseudo-inverse for all voxels
    resid = signal - (basis @ coef).T
    power = {int(l): (coef[degrees == l] ** 2).sum(axis=0) / (4 * np.pi) for l in orders if l <= order}
    return power, np.sqrt((resid**2).mean(axis=1))


def invariant_features(attenuation, bvals, bvecs, *, dti_columns=None, tolerance=DEFAULTS["shell_tolerance"]):
    """Rotation-invariant features of each voxel's attenuation profile.

    Parameters
    ----------
    attenuation : (n, m) array_like
        E = S/S0 on the m diffusion-weighted volumes.
    bvals : (m,) array_like
        b-values, s/mm².
    bvecs : (m, 3) array_like
        Unit gradient directions.
    dti_columns : (m,) bool array_like, optional
        Volumes the tensor is fitted to (a subject's ``dti_columns``: b <= dti_max_b);
        default all.

    Returns
    -------
    pandas.DataFrame
        n rows; columns ``fa``, ``md`` (mm²/s), ``ev1``, ``ev2``, ``ev3`` (eigenvalues,
        descending, mm²/s), then per shell b: ``mean_b<b>``, ``sh2_b<b>``, ``sh4_b<b>``
        (see :func:`sh_power`; only the orders the shell's directions support) and
        ``resid_b<b>``.
    """
    E = np.asarray(attenuation, dtype=float)
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    if E.ndim != 2 or E.shape[1] != len(bvals) or bvecs.shape != (len(bvals), 3):
        raise ValueError(
            f"attenuation {E.shape}, bvals {bvals.shape} and bvecs {bvecs.shape} must be (n, m), (m,) and (m, 3)"
        )
    if E.shape[0] == 0:
        raise ValueError("attenuation has no voxel")
    cols = np.ones(len(bvals), bool) if dti_columns is None else np.asarray(dti_columns, dtype=bool)
    if cols.shape != bvals.shape or cols.sum() < 6:
        raise ValueError(f"dti_columns must be a ({len(bvals)},) boolean mask selecting >= 6 volumes, got {cols.sum()} of {cols.shape}")
    fit = fit_attenuation(bvals[cols], bvecs[cols], E[:, cols])
    out = {"fa": fit.fa, "md": fit.md, "ev1": fit.evals[:, 0], "ev2": fit.evals[:, 1], "ev3": fit.evals[:, 2]}
    for b, idx in shell_groups(bvals, tolerance=tolerance).items():
        out[f"mean_b{b}"] = E[:, idx].mean(axis=1)
        if len(idx) >= 6:
            power, resid = sh_power(E[:, idx], bvecs[idx])
            for l, p in power.items():
                out[f"sh{l}_b{b}"] = p
            out[f"resid_b{b}"] = resid
    return pd.DataFrame(out)
