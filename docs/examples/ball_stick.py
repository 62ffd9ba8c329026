"""An example generator of your own for SynthQA: ball and sticks.

Name it in a dataset config next to the built-in generators (here a copy of
configs/sample.yaml saved as my_sample.yaml) and run with this folder on the Python path
(see docs/plugins.md)::

    methods: [Syn, Sampled, ball_stick:ball_stick]

    PYTHONPATH=docs/examples synthqa run my_sample.yaml

The model (Behrens et al. 2003, with its own ball diffusivity): each voxel is one or two
"sticks" — axons as cylinders of zero radius, which restrict diffusion to their axis — and
an isotropic "ball" for everything else (extra-axonal water, grey matter, CSF)::

    S / S0 = f_ball exp(-b d_ball) + Σ_k f_k exp(-b d_stick (g · v_k)²)

with b the b-value (s/mm²), g the unit gradient direction, v_k the k-th stick's direction,
d_stick and d_ball diffusivities (mm²/s), and fractions f_ball + Σ f_k = 1.

Every parameter is drawn from fixed ranges that do not depend on the subject (so the
generator ignores the scan it is compared with, like the method paper's Syn), chosen to
cover healthy adult brain tissue:

- number of sticks: 1 or 2, equally likely;
- stick directions: uniform on the sphere, independently;
- total stick fraction: U(0.1, 0.8), split between two sticks by a U(0, 1) share;
- d_stick: U(1.5e-3, 2.5e-3) mm²/s (intra-axonal parallel diffusivity), shared by the
  voxel's sticks;
- d_ball: U(0.5e-3, 3.0e-3) mm²/s (from grey matter to free water).

A generator may also accept ``subject=`` (keyword) to sample the scan it is compared with;
this one does not.
"""

from __future__ import annotations

import numpy as np

STICKS = (1, 2)
"""Fewest and most sticks per voxel."""
STICK_FRACTION = (0.1, 0.8)
"""Range of the total stick (intra-axonal) fraction."""
D_STICK = (1.5e-3, 2.5e-3)
"""Range of the stick diffusivity, mm²/s."""
D_BALL = (0.5e-3, 3.0e-3)
"""Range of the ball diffusivity, mm²/s."""


def ball_stick_signal(bvals, bvecs, fractions, directions, d_stick, d_ball):
    """Ball-and-sticks attenuation of many voxels, vectorised (no loop over voxels or
    gradients).

    Parameters
    ----------
    bvals : (m,) array_like
        b-values in s/mm².
    bvecs : (m, 3) array_like
        Unit gradient directions (anything at b = 0).
    fractions : (n, k) array_like
        Stick fractions; the ball has ``1 - fractions.sum(axis=1)``.
    directions : (n, k, 3) array_like
        Unit stick directions.
    d_stick, d_ball : (n,) array_like
        Stick and ball diffusivities in mm²/s.

    Returns
    -------
    (n, m) ndarray
        S / S0, in [0, 1].

    Examples
    --------
    A stick along x seen along x decays as exp(-b d); seen across, it does not decay:

    >>> S = ball_stick_signal([1000, 1000], [[1, 0, 0], [0, 1, 0]], [[1.0]], [[[1, 0, 0]]], [2e-3], [1e-3])
    >>> np.allclose(S, [[np.exp(-2), 1.0]])
    True
    """
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    fractions = np.asarray(fractions, dtype=float)
    directions = np.asarray(directions, dtype=float)
    d_stick = np.asarray(d_stick, dtype=float)
    d_ball = np.asarray(d_ball, dtype=float)
    cos2 = np.einsum("nkj,mj->nkm", directions, bvecs) ** 2  # (g · v_k)²
    sticks = np.exp(-bvals * d_stick[:, None, None] * cos2)  # (n, k, m)
    ball = np.exp(-bvals * d_ball[:, None])  # (n, m)
    f_ball = 1.0 - fractions.sum(axis=1, keepdims=True)
    return f_ball * ball + np.einsum("nk,nkm->nm", fractions, sticks)


def ball_stick(bvals, bvecs, n, rng):
    """SynthQA generator: ``n`` ball-and-sticks voxels on the gradient table (bvals, bvecs).

    Parameters
    ----------
    bvals : (m,) ndarray
        b-values (s/mm²) of the subject's selected volumes.
    bvecs : (m, 3) ndarray
        Their unit gradient directions.
    n : int
        Number of voxels.
    rng : numpy.random.Generator
        The only source of randomness, so a seed reproduces the set exactly.

    Returns
    -------
    (n, m) ndarray
        Clean attenuation with S0 = 1; SynthQA adds the Rician noise.
    """
    k_max = STICKS[1]
    n_sticks = rng.integers(STICKS[0], k_max + 1, size=n)
    total = rng.uniform(*STICK_FRACTION, size=n)
    share = rng.random(n)
    fractions = np.where(n_sticks[:, None] == 2, np.c_[share, 1 - share], np.c_[np.ones(n), np.zeros(n)])
    fractions *= total[:, None]
    directions = rng.standard_normal((n, k_max, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)  # uniform on the sphere
    d_stick = rng.uniform(*D_STICK, size=n)
    d_ball = rng.uniform(*D_BALL, size=n)
    return ball_stick_signal(bvals, bvecs, fractions, directions, d_stick, d_ball)
