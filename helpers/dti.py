"""A vectorised weighted-least-squares diffusion tensor fit.

It computes exactly what ``dipy.reconst.dti.TensorModel(gtab, fit_method="WLS").fit`` does —
an OLS fit of the log signal, then a WLS fit weighted by the squared OLS-predicted signal
(Chung et al. 2006), signals clipped below at dipy's ``MIN_POSITIVE_SIGNAL`` and
eigenvalues at its minimum diffusivity — but solves the per-voxel 7x7 normal equations
in batches instead of a pseudo-inverse of a weighted design matrix per voxel. The
metrics fit six tensors over every brain voxel, so this is on the hot path.
``tests/test_dti.py`` checks it against dipy to 1e-6.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import (
    MIN_POSITIVE_SIGNAL,
    decompose_tensor,
    design_matrix,
    fractional_anisotropy,
    from_lower_triangular,
)

__all__ = ["TensorFit", "fit_tensor", "fit_attenuation"]

_TOL = 1e-6  # dipy's tolerance for the smallest eigenvalue, divided by the largest design entry


@dataclass
class TensorFit:
    """Per-voxel tensor fit results.

    Attributes
    ----------
    evals : (n, 3) ndarray
        Eigenvalues in mm²/s (with b in s/mm²), sorted descending.
    evecs : (n, 3, 3) ndarray
        Eigenvectors as columns: ``evecs[i, :, j]`` belongs to ``evals[i, j]``.
    """

    evals: np.ndarray
    evecs: np.ndarray

    @property
    def fa(self):
        """(n,) fractional anisotropy, 0 for an all-zero tensor (dipy's guard)."""
        return fractional_anisotropy(self.evals)

    @property
    def md(self):
        """(n,) mean diffusivity in mm²/s."""
        return self.evals.mean(axis=-1)

    @property
    def direction(self):
        """(n, 3) principal eigenvector (sign arbitrary)."""
        return self.evecs[..., 0]


def fit_tensor(bvals, bvecs, data, *, b0_threshold=50.0, chunk=50_000, workers=None, prepend_b0=False):
    """WLS diffusion tensor fit of many voxels at once.

    Parameters
    ----------
    bvals : (m,) array_like
        b-values in s/mm².
    bvecs : (m, 3) array_like
        Unit gradient directions (anything at b0).
    data : (n, m) array_like
        Signals; values below 1e-4 are clipped to it, as dipy does.
    chunk : int, optional
        Voxels per batch; each batch's temporaries take about ``chunk * m * 40`` bytes.
    workers : int, optional
        Batches fitted at once in threads (NumPy's array and LAPACK calls release the
        GIL). Default: the number of CPUs, at most 4.
    prepend_b0 : bool, optional
        Treat ``data`` as attenuation without its b0 column and prepend a b=0
        measurement of 1 to each batch (``bvals``/``bvecs`` must then include that b0
        first); saves a full copy of the data. See :func:`fit_attenuation`.

    Returns
    -------
    TensorFit

    Notes
    -----
    With design matrix X (dipy's, last column -1) and y = log S, the OLS estimate is
    β₀ = X⁺y, the weights are w = exp(Xβ₀), and the WLS estimate solves
    (Xᵀ W² X) β = Xᵀ W² y. dipy computes (WX)⁺ Wy per voxel; for a full-rank X both are the
    same least-squares solution.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.r_[0, np.full(6, 1000.)]
    >>> g = np.r_[[[0, 0, 0]], np.eye(3), np.sqrt(.5) * np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]])]
    >>> fit = fit_tensor(b, g, np.exp(-b * 1e-3)[None])  # isotropic D = 1e-3
    >>> np.round(fit.evals * 1e3, 6).tolist()
    [[1.0, 1.0, 1.0]]
    """
    bvals = np.asarray(bvals, dtype=float)
    gtab = gradient_table(bvals, bvecs=np.asarray(bvecs, dtype=float), b0_threshold=b0_threshold)
    X = design_matrix(gtab)
    X_pinv = np.linalg.pinv(X)
    XX = (X[:, :, None] * X[:, None, :]).reshape(len(X), 49)
    min_diffusivity = _TOL / -X.min()
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] + prepend_b0 != len(X):
        expected = len(X) - prepend_b0
        raise ValueError(f"data has shape {data.shape}; expected (n_voxels, {expected})")
    n = data.shape[0]
    evals = np.empty((n, 3))
    evecs = np.empty((n, 3, 3))

    def fit_chunk(start):
        sl = slice(start, min(start + chunk, n))
        y = np.maximum(data[sl].astype(float), MIN_POSITIVE_SIGNAL)
        log_s = np.log(y)
        if prepend_b0:  # log 1 = 0
            log_s = np.hstack([np.zeros((len(log_s), 1)), log_s])
        w2 = np.exp(2.0 * (log_s @ X_pinv.T) @ X.T)  # squared OLS-predicted signal
        lhs = (w2 @ XX).reshape(-1, 7, 7)
        rhs = (w2 * log_s) @ X
        beta = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        evals[sl], evecs[sl] = decompose_tensor(from_lower_triangular(beta[:, :6]), min_diffusivity=min_diffusivity)

    starts = range(0, n, chunk)
    workers = workers or min(os.cpu_count() or 1, 4)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fit_chunk, starts))
    else:
        for start in starts:
            fit_chunk(start)
    return TensorFit(evals, evecs)


def fit_attenuation(bvals, bvecs, attenuation, **kwargs):
    """Fit tensors to attenuation E = S/S0 as if a b=0 measurement of 1 preceded it.

    This is the fit the metrics use for both the real signal and its reconstruction:
    the tensor of [S0=1, E] (the b0 column is added per batch, not copied in whole).

    Parameters
    ----------
    bvals : (m,) array_like
        b-values of the diffusion-weighted directions (no b0).
    bvecs : (m, 3) array_like
    attenuation : (n, m) array_like
    """
    return fit_tensor(
        np.r_[0.0, np.asarray(bvals, dtype=float)],
        np.r_[np.zeros((1, 3)), np.asarray(bvecs, dtype=float)],
        attenuation,
        prepend_b0=True,
        **kwargs,
    )
