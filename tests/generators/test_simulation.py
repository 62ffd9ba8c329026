"""The multi-tensor kernel, the four generators, noise and method support (helpers.generators.simulation).

Expected values come from closed forms or from independent code (dipy's
``dipy.sims.voxel``, ``scipy.stats.rice``, ``scipy.spatial.transform.Rotation``), never from
the function under test. Statistical checks draw from seeded generators and state their
tolerance in units of the standard error.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.sims.voxel import all_tensor_evecs
from dipy.sims.voxel import multi_tensor as dipy_multi_tensor
from dipy.sims.voxel import single_tensor as dipy_single_tensor
from scipy import special, stats
from scipy.spatial.transform import Rotation

from helpers.config import PROJECT_ROOT
from helpers.scan.subject import Subject
from helpers.generators.simulation import (
    Mixture,
    add_rician_noise,
    draw_mixture,
    method_support,
    multi_tensor,
    random_rotations,
    resolve_snr,
    sigma_distribution,
    simulate,
    tissue_pools,
)

SEED = 8675309
ALLOWED = ["Syn", "Sampled", "SampleAndMean", "RandomWM"]  # the method paper's four generators

# The method paper's values, written out here, not imported from the module under test.
SYN_WM = (1.5e-3, 3e-4, 3e-4)
SYN_GM = 5e-4
SYN_CSF = 3e-3
FREE_WATER = 3e-3


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


# ----------------------------------------------------------------------------- helpers


def unit_vectors(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fibonacci_hemisphere(n):
    """n well-spread unit vectors (z >= 0), deterministic."""
    i = np.arange(n) + 0.5
    z = 1 - i / n  # (0, 1]
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def two_shell_table(rng, n_b0=3, n_per_shell=20):
    """b0 entries (zero vectors) first, then b=1000 and b=2500 on random directions;
    the b0s are also interleaved, so b0 rows are not only at the start."""
    bvals = np.r_[np.zeros(n_b0), np.full(n_per_shell, 1000.0), np.full(n_per_shell, 2500.0)]
    bvecs = np.r_[np.zeros((n_b0, 3)), unit_vectors(rng, 2 * n_per_shell)]
    order = rng.permutation(len(bvals))
    return bvals[order], bvecs[order]


def random_triplet(rng, isotropic):
    if isotropic:
        return np.full(3, rng.uniform(2e-4, 3.2e-3))
    return np.sort(rng.uniform(1e-4, 2.5e-3, size=3))[::-1]


def random_case(rng, n, k):
    """Random evals (n, k, 3), each compartment isotropic with probability 1/3, fractions
    (n, k) summing to 1, and unit fibre directions (n, k, 3)."""
    iso = rng.random((n, k)) < 1 / 3
    iso[0, 0] = True  # both kinds present whatever the draw
    if k > 1:
        iso[0, 1] = False
    evals = np.array([[random_triplet(rng, iso[i, c]) for c in range(k)] for i in range(n)])
    w = rng.random((n, k)) + 0.05
    fractions = w / w.sum(axis=1, keepdims=True)
    sticks = unit_vectors(rng, n * k).reshape(n, k, 3)
    return evals, fractions, sticks


def fa_closed_form(ev):
    ev = np.asarray(ev, dtype=float)
    l1, l2, l3 = ev[..., 0], ev[..., 1], ev[..., 2]
    return np.sqrt(0.5 * ((l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2) / (l1**2 + l2**2 + l3**2))


SUBJECT_FIELDS = {f.name for f in dataclasses.fields(Subject)}


def make_subject(
    bvals, bvecs, *, attenuation=None, shape=(2, 2, 2), tissue=None, snr=30.0, s0=None, sigma=None, dti_max_b=1500.0
):
    """A Subject built by hand (no loader): every voxel of ``shape`` is brain.

    ``sigma`` (noise sd in scanner units) and ``dti_max_b`` are passed when the Subject
    class has those fields; without a ``sigma`` field, the same noise is stated through
    ``snr = median S0 / sigma``.
    """
    indices = np.argwhere(np.ones(shape, dtype=bool))
    n = len(indices)
    if attenuation is None:
        attenuation = np.full((n, len(bvals)), 0.5, dtype=np.float32)
    if tissue is None:
        tissue = np.full(n, 3, dtype=np.uint8)
    s0 = np.ones(n, dtype=np.float32) if s0 is None else np.asarray(s0, dtype=np.float32)
    extra = {}
    if sigma is not None:
        snr = float(np.median(s0)) / sigma
        if "sigma" in SUBJECT_FIELDS:
            extra["sigma"] = float(sigma)
    if "dti_max_b" in SUBJECT_FIELDS:
        extra["dti_max_b"] = dti_max_b
    return Subject(
        attenuation=np.asarray(attenuation, dtype=np.float32),
        bvals=np.asarray(bvals, dtype=float),
        bvecs=np.asarray(bvecs, dtype=float),
        indices=indices,
        shape=tuple(shape),
        affine=np.eye(4),
        tissue=np.asarray(tissue, dtype=np.uint8),
        s0=s0,
        snr=snr,
        info={"subject": "synthetic-test"},
        **extra,
    )


# ----------------------------------------------------------------------------- 1. dipy


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_multi_tensor_matches_dipy_multi_tensor(rng, k):
    bvals, bvecs = two_shell_table(rng)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=0)
    n = 6
    evals, fractions, sticks = random_case(rng, n, k)
    evecs = np.array([[all_tensor_evecs(sticks[i, c]) for c in range(k)] for i in range(n)])
    expected = np.array(
        [
            dipy_multi_tensor(gtab, evals[i], angles=sticks[i], fractions=100 * fractions[i], snr=None)[0]
            for i in range(n)
        ]
    )
    # the reference is not trivial: b0 rows are 1, diffusion-weighted rows spread out
    assert np.ptp(expected[:, bvals > 0]) > 0.1

    got = multi_tensor(bvals, bvecs, evals, evecs, fractions)
    assert got.dtype == np.float64 and got.shape == (n, len(bvals))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)

    got32 = multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_multi_tensor_general_frames_match_dipy_single_tensor_sum(rng, k):
    """Evecs from random_rotations with general (not axially symmetric) triplets, so every
    column of the frame matters: dipy's single_tensor summed per compartment."""
    bvals, bvecs = two_shell_table(rng)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=0)
    n = 6
    evals = np.sort(rng.uniform(1e-4, 2.5e-3, size=(n, k, 3)), axis=-1)[..., ::-1]
    assert np.all(np.diff(evals, axis=-1) < 0)  # three distinct eigenvalues
    evecs = random_rotations(n * k, rng).reshape(n, k, 3, 3)
    w = rng.random((n, k)) + 0.05
    fractions = w / w.sum(axis=1, keepdims=True)
    expected = np.array(
        [
            sum(
                fractions[i, c] * dipy_single_tensor(gtab, S0=1, evals=evals[i, c], evecs=evecs[i, c], snr=None)
                for c in range(k)
            )
            for i in range(n)
        ]
    )
    np.testing.assert_allclose(multi_tensor(bvals, bvecs, evals, evecs, fractions), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32), expected, rtol=0, atol=1e-5
    )


def test_multi_tensor_chunking_and_single_voxel(rng):
    """Batches that do not divide n give the same rows as one batch; one voxel works."""
    bvals, bvecs = two_shell_table(rng)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=0)
    n, k = 23, 3
    evals, fractions, sticks = random_case(rng, n, k)
    evecs = np.array([[all_tensor_evecs(sticks[i, c]) for c in range(k)] for i in range(n)])
    whole = multi_tensor(bvals, bvecs, evals, evecs, fractions)
    np.testing.assert_array_equal(multi_tensor(bvals, bvecs, evals, evecs, fractions, chunk=5), whole)
    one = multi_tensor(bvals, bvecs, evals[:1], evecs[:1], fractions[:1])
    ref = dipy_multi_tensor(gtab, evals[0], angles=sticks[0], fractions=100 * fractions[0], snr=None)[0]
    assert one.shape == (1, len(bvals))
    np.testing.assert_allclose(one[0], ref, rtol=0, atol=1e-10)


def test_multi_tensor_rejects_mismatched_shapes():
    eye = np.eye(3)[None, None]
    with pytest.raises(ValueError, match="evals"):
        multi_tensor([0, 1000], [[0, 0, 0], [1, 0, 0]], np.full((1, 2, 3), 1e-3), eye, [[1.0]])
    with pytest.raises(ValueError, match="bvecs"):
        multi_tensor([0, 1000], [[1, 0, 0]], np.full((1, 1, 3), 1e-3), eye, [[1.0]])


# ----------------------------------------------------------------------------- 2. closed forms


def test_isotropic_compartment_is_exp_minus_bd(rng):
    bvals = np.array([0.0, 500.0, 1000.0, 2000.0, 3000.0, 3000.0])
    axes = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [1, 0, 0.0]])
    random_dirs = np.r_[np.zeros((1, 3)), unit_vectors(rng, 5)]  # norms 1 to rounding only
    for d in (5e-4, 1e-3, 3e-3):
        expected = np.exp(-bvals * d)
        got = multi_tensor(bvals, axes, [[[d, d, d]]], [[np.eye(3)]], [[1.0]])
        np.testing.assert_allclose(got[0], expected, rtol=1e-15, atol=0)
        R = Rotation.random(random_state=rng).as_matrix()  # any frame of an isotropic tensor
        got = multi_tensor(bvals, random_dirs, [[[d, d, d]]], [[R]], [[1.0]])
        np.testing.assert_allclose(got[0], expected, rtol=1e-12, atol=0)


def test_fibre_along_x_gives_parallel_and_perpendicular_decay():
    l_par, l_perp, b = 1.7e-3, 2e-4, 1200.0
    s = np.sqrt(0.5)
    bvecs = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [s, s, 0], [-1, 0, 0]]
    got = multi_tensor(np.full(5, b), bvecs, [[[l_par, l_perp, l_perp]]], [[np.eye(3)]], [[1.0]])[0]
    expected = np.exp(-b * np.array([l_par, l_perp, l_perp, (l_par + l_perp) / 2, l_par]))
    np.testing.assert_allclose(got, expected, rtol=1e-14)

    # two fibres, along x and along y, fractions 0.3 / 0.7, measured along x and y
    ev = [[[l_par, l_perp, l_perp], [l_par, l_perp, l_perp]]]
    to_y = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])  # columns: y, -x, z
    got = multi_tensor([b, b], [[1, 0, 0], [0, 1, 0]], ev, [[np.eye(3), to_y]], [[0.3, 0.7]])[0]
    ex = 0.3 * np.exp(-b * l_par) + 0.7 * np.exp(-b * l_perp)
    ey = 0.3 * np.exp(-b * l_perp) + 0.7 * np.exp(-b * l_par)
    np.testing.assert_allclose(got, [ex, ey], rtol=1e-14)


def test_axially_symmetric_fibre_at_any_angle(rng):
    """S = exp(-b (l_perp + (l_par - l_perp) cos^2 theta)), theta the fibre-gradient angle."""
    l_par, l_perp, b = 1.5e-3, 3e-4, 2000.0
    n, m = 50, 30
    R = random_rotations(n, rng)  # first column = fibre direction; the others do not matter
    g = unit_vectors(rng, m)
    cos = R[:, :, 0] @ g.T
    expected = np.exp(-b * (l_perp + (l_par - l_perp) * cos**2))
    got = multi_tensor(np.full(m, b), g, np.tile([l_par, l_perp, l_perp], (n, 1, 1)), R[:, None], np.ones((n, 1)))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_b0_gives_one_for_any_mixture(rng):
    n, k = 200, 5
    evals = rng.uniform(1e-4, 3e-3, size=(n, k, 3))
    evecs = random_rotations(n * k, rng).reshape(n, k, 3, 3)
    w = rng.random((n, k))
    fractions = w / w.sum(axis=1, keepdims=True)
    bvals = np.array([0.0, 0.0, 1000.0])
    bvecs = np.r_[np.zeros((1, 3)), unit_vectors(rng, 2)]  # a b0 with a non-zero vector too
    got = multi_tensor(bvals, bvecs, evals, evecs, fractions)
    np.testing.assert_allclose(got[:, :2], 1.0, rtol=0, atol=1e-14)
    assert np.all(got[:, 2] < 1)
    got32 = multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32)
    np.testing.assert_allclose(got32[:, :2], 1.0, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- 3. rotations


def test_random_rotations_are_haar_distributed(rng):
    n = 40_000
    R = random_rotations(n, rng)
    assert R.shape == (n, 3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)

    for col in range(3):  # every column is uniform on the sphere
        v = R[:, :, col]
        # mean: each component has variance 1/3, so the standard error is 0.0029; 0.015 ~ 5 SE
        np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=0.015)
        # E z^2 = 1/3; Var z^2 = 1/5 - 1/9 = 4/45, standard error 0.0015; 0.008 ~ 5 SE
        np.testing.assert_allclose((v**2).mean(axis=0), 1 / 3, atol=0.008)
    # Archimedes: z of a uniform direction is U(-1, 1), the azimuth U(-pi, pi)
    first = R[:, :, 0]
    assert stats.kstest(first[:, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    assert stats.kstest(np.arctan2(first[:, 1], first[:, 0]), stats.uniform(loc=-np.pi, scale=2 * np.pi).cdf).pvalue > 1e-3
    # Haar on SO(3): the trace 1 + 2 cos(angle) has mean 0 and variance 1 (the rotation angle
    # has density (1 - cos a) / pi); a uniform axis with a fixed roll would fail this.
    tr = np.trace(R, axis1=1, axis2=2)
    assert abs(tr.mean()) < 0.03  # SE 0.005
    assert abs(tr.var() - 1.0) < 0.05  # Var(tr^2) = E tr^4 - 1 = 2 here (moments of SO(3) chars): SE 0.007


def test_random_rotations_float32_and_seeded(rng):
    R = random_rotations(1000, np.random.default_rng(3), dtype=np.float32)
    assert R.dtype == np.float32
    np.testing.assert_allclose(np.linalg.det(R.astype(float)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(random_rotations(50, np.random.default_rng(4)), random_rotations(50, np.random.default_rng(4)))


# ----------------------------------------------------------------------------- 4. mixtures


def test_syn_mixture_fractions_counts_and_eigenvalues(rng):
    n = 30_000
    evals, evecs, fractions = draw_mixture("Syn", n, rng)
    assert evals.shape == (n, 5, 3) and evecs.shape == (n, 5, 3, 3) and fractions.shape == (n, 5)
    np.testing.assert_array_equal(evals[:, :3], np.broadcast_to(SYN_WM, (n, 3, 3)))
    np.testing.assert_array_equal(evals[:, 3], SYN_GM)
    np.testing.assert_array_equal(evals[:, 4], SYN_CSF)

    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert fractions.min() >= 0 and fractions.max() <= 1
    assert np.all(fractions[:, 3:] > 0)  # GM and CSF always present
    count = (fractions[:, :3] > 0).sum(axis=1)
    assert set(np.unique(count)) == {1, 2, 3}
    for c in (1, 2, 3):
        # proportion SE = sqrt(2/9 / n) = 0.0027; 0.015 ~ 5.5 SE
        assert abs(np.mean(count == c) - 1 / 3) < 0.015
        # raw weights i.i.d. U(0,1) then normalised: the c + 2 present compartments are
        # exchangeable, so each has mean fraction 1/(c + 2). SE < 0.003 here; 0.012.
        sel = count == c
        present = fractions[sel][fractions[sel] > 0].reshape(sel.sum(), c + 2)
        np.testing.assert_allclose(present.mean(axis=0), 1 / (c + 2), atol=0.012)

    # raw weights U(0,1): for the always-present GM and CSF, the smaller of the two fractions
    # over the larger is min(U1, U2) / max(U1, U2), which is U(0, 1) (P(U1/U2 <= q) = q/2).
    lo, hi = np.sort(fractions[:, 3:], axis=1).T
    assert stats.kstest(lo / hi, "uniform").pvalue > 1e-3

    # fibre directions (first eigenvector) uniform on the sphere
    z = evecs[:, :3, 2, 0].ravel()
    assert abs(z.mean()) < 0.01 and abs((z**2).mean() - 1 / 3) < 0.006


def test_mixture_parameter_changes_compartments(rng):
    mix = Mixture(min_fibers=2, max_fibers=2, gm=False, csf=True)
    evals, _, fractions = draw_mixture("Syn", 500, rng, mixture=mix)
    assert fractions.shape == (500, 3)
    assert np.all(fractions > 0)
    np.testing.assert_array_equal(evals[:, 2], SYN_CSF)
    with pytest.raises(ValueError):
        Mixture(min_fibers=2, max_fibers=1)
    with pytest.raises(ValueError):
        Mixture(max_fibers=0, gm=False, csf=False)
    # a voxel could be left with no compartment at all (0 fibres, no GM, no CSF)
    with pytest.raises(ValueError):
        Mixture(min_fibers=0, max_fibers=2, gm=False, csf=False)


def test_draw_mixture_rejects_unknown_or_untensored_methods(rng):
    pools = _pools_stub()
    for bad in ("RandomWM", "sampled", "Foo"):
        with pytest.raises(ValueError, match="method"):
            draw_mixture(bad, 10, rng, pools=pools)
    with pytest.raises(ValueError, match="pools"):
        draw_mixture("Sampled", 10, rng)


def test_draw_mixture_draws_every_pool_row_uniformly(rng):
    """Each WM fibre, GM and CSF compartment takes a uniformly drawn row of its pool."""
    from helpers.generators.simulation import Pools

    wm = np.c_[np.linspace(1.2e-3, 1.8e-3, 7), np.full(7, 3e-4), np.full(7, 2e-4)]
    gm = np.c_[np.full(5, 9e-4), np.linspace(6e-4, 8e-4, 5), np.full(5, 5e-4)]
    csf = np.c_[np.full(3, 3.3e-3), np.full(3, 3.1e-3), np.linspace(2.7e-3, 2.9e-3, 3)]
    pools = Pools(wm=wm, gm=gm, csf=csf)
    n = 4000
    evals, _, _ = draw_mixture("Sampled", n, rng, pools=pools)
    for rows, pool in ((evals[:, :3].reshape(-1, 3), wm), (evals[:, 3], gm), (evals[:, 4], csf)):
        hit = np.all(rows[:, None, :] == pool[None], axis=-1)
        assert np.all(hit.sum(axis=1) == 1)  # exactly a pool row, not a mix of rows
        counts = hit.sum(axis=0)
        assert np.all(counts > 0)
        assert stats.chisquare(counts).pvalue > 1e-3


def _pools_stub():
    from helpers.generators.simulation import Pools

    return Pools(wm=np.array([[1.5e-3, 3e-4, 2e-4]]), gm=np.array([[8e-4, 7e-4, 6e-4]]), csf=np.array([[3e-3] * 3]))


def test_simulate_syn_fractions_sum_to_one_on_a_b0_row():
    bvecs = np.r_[np.zeros((1, 3)), fibonacci_hemisphere(6)]
    subj = make_subject(np.r_[0.0, np.full(6, 1000.0)], bvecs)
    clean, noisy = simulate(subj, "Syn", 2000, seed=1, snr=None)
    np.testing.assert_allclose(clean[:, 0], 1.0, rtol=0, atol=2e-6)
    assert np.all((clean[:, 1:] > 0) & (clean[:, 1:] < 1))
    np.testing.assert_array_equal(noisy, clean)


def test_simulate_single_syn_fibre_matches_uniform_direction_closed_form():
    """One Syn fibre, no GM/CSF: S = exp(-b (l_perp + (l_par - l_perp) t^2)) with t = cos of
    the fibre-gradient angle, uniform on [-1, 1] for a uniform direction (Archimedes).
    So |t| recovered from S must be U(0, 1), and
    E S = exp(-b l_perp) * sqrt(pi) erf(sqrt(b dl)) / (2 sqrt(b dl))."""
    l_perp = SYN_WM[1]
    b, dl = 1000.0, SYN_WM[0] - SYN_WM[1]
    subj = make_subject(np.full(3, b), np.eye(3))
    n = 20_000
    clean, _ = simulate(subj, "Syn", n, seed=5, snr=None, mixture=Mixture(1, 1, gm=False, csf=False))
    mean = np.exp(-b * l_perp) * np.sqrt(np.pi) * special.erf(np.sqrt(b * dl)) / (2 * np.sqrt(b * dl))
    # the signal spread is < 0.2, so SE < 0.0015; 0.006 ~ 4 SE
    np.testing.assert_allclose(clean.mean(axis=0), mean, atol=0.006)
    t = np.sqrt(np.clip((-np.log(clean[:, 0].astype(float)) / b - l_perp) / dl, 0, 1))
    assert stats.kstest(t, "uniform").pvalue > 1e-3
    # on three orthogonal gradients, the cos^2 of a unit vector sum to 1
    tsq = (-np.log(clean.astype(float)) / b - l_perp) / dl
    np.testing.assert_allclose(tsq.sum(axis=1), 1.0, atol=2e-3)


# ----------------------------------------------------------------------------- 5. pools

# Known tensors per tissue; the slabs are 3 voxels thick along x, so the one-voxel erosion
# keeps exactly the middle layer x = 1, 4, 7 with y, z in 1..4 (16 voxels per tissue).
WM_A = (1.7e-3, 3.0e-4, 2.0e-4)
WM_B = (1.4e-3, 2.5e-4, 2.5e-4)
WM_LOW_FA = (9.0e-4, 6.0e-4, 5.0e-4)  # WM but FA < 0.7: never in the pool
WM_EDGE = (1.9e-3, 2.0e-4, 1.5e-4)  # FA > 0.7 but only on the slab's surface
GM_IN = [(8.0e-4, 7.0e-4, 6.0e-4), (7.0e-4, 7.0e-4, 7.0e-4)]
GM_EDGE = (1.0e-3, 9.0e-4, 8.0e-4)
CSF_IN = [(3.0e-3, 2.9e-3, 2.8e-3), (3.2e-3, 3.2e-3, 3.2e-3)]
CSF_EDGE = (2.0e-3, 2.0e-3, 1.9e-3)
SHAPE = (9, 6, 6)
B = 1000.0


def _tissue_truth():
    """Per voxel (C order over SHAPE): tissue code, known eigenvalues, interior flag."""
    rng = np.random.default_rng(12345)
    idx = np.argwhere(np.ones(SHAPE, dtype=bool))
    x, y, z = idx.T
    tissue = np.where(x < 3, 1, np.where(x < 6, 2, 3)).astype(np.uint8)  # CSF, GM, WM slabs
    interior = (x % 3 == 1) & (y >= 1) & (y <= 4) & (z >= 1) & (z <= 4)
    evals = np.empty((len(idx), 3))
    for code, inside, edge in ((1, CSF_IN, CSF_EDGE), (2, GM_IN, GM_EDGE)):
        sel_in = np.flatnonzero((tissue == code) & interior)
        evals[sel_in] = np.array(inside)[np.arange(len(sel_in)) % 2]
        evals[(tissue == code) & ~interior] = edge
    wm_in = rng.permutation(np.flatnonzero((tissue == 3) & interior))  # 16: 6 A, 6 B, 4 low FA
    evals[wm_in[:6]], evals[wm_in[6:12]], evals[wm_in[12:]] = WM_A, WM_B, WM_LOW_FA
    wm_edge = rng.permutation(np.flatnonzero((tissue == 3) & ~interior))  # 92: 10 low FA, 82 edge
    evals[wm_edge[:10]], evals[wm_edge[10:]] = WM_LOW_FA, WM_EDGE
    return idx, tissue, evals, interior


@pytest.fixture(scope="module")
def tissue_subject():
    idx, tissue, evals, interior = _tissue_truth()
    bvecs = fibonacci_hemisphere(30)
    R = Rotation.random(len(idx), random_state=777).as_matrix()
    D = np.einsum("nij,nj,nkj->nik", R, evals, R)
    att = np.exp(-B * np.einsum("mi,nij,mj->nm", bvecs, D, bvecs))
    subj = make_subject(np.full(30, B), bvecs, attenuation=att, shape=SHAPE, tissue=tissue, snr=25.0)
    return subj, evals, interior


def _rows_are_known(rows, known, rtol=1e-6):
    """Index of the known triplet each row equals (to rtol); fails if one matches none."""
    rows, known = np.asarray(rows), np.asarray(known, dtype=float)
    close = np.all(np.abs(rows[:, None, :] - known[None]) <= rtol * known[None], axis=-1)
    assert np.all(close.sum(axis=1) == 1), rows[close.sum(axis=1) != 1][:5]
    return close.argmax(axis=1)


def test_known_triplets_have_the_intended_fa():
    assert fa_closed_form(WM_A) > 0.7 and fa_closed_form(WM_B) > 0.7 and fa_closed_form(WM_EDGE) > 0.7
    assert fa_closed_form(WM_LOW_FA) < 0.7


def test_tissue_pools_use_eroded_masks_and_fa(tissue_subject):
    subj, evals, interior = tissue_subject
    pools = tissue_pools(subj, min_pool=5)
    tissue = subj.tissue
    fa = fa_closed_form(evals)
    expected = {
        "wm": evals[(tissue == 3) & interior & (fa > 0.7)],
        "gm": evals[(tissue == 2) & interior],
        "csf": evals[(tissue == 1) & interior],
    }
    assert len(expected["wm"]) == 12 and len(expected["gm"]) == 16 and len(expected["csf"]) == 16
    for name, exp in expected.items():
        got = getattr(pools, name)
        assert got.shape == exp.shape, name
        np.testing.assert_allclose(got, exp, rtol=1e-6, err_msg=name)
    # only the two interior WM triplets, both present
    assert set(_rows_are_known(pools.wm, [WM_A, WM_B])) == {0, 1}
    for name, code in (("WM", 3), ("GM", 2), ("CSF", 1)):
        rep = pools.report[name]
        assert rep["mask"] == "eroded"
        assert rep["voxels"] == len(expected[name.lower()])
        np.testing.assert_allclose(rep["mean_md"], expected[name.lower()].mean(), rtol=1e-6)
    # mean MD of GM: half (8,7,6)e-4 and half (7,7,7)e-4 -> 7e-4; CSF: (2.9e-3 + 3.2e-3) / 2
    np.testing.assert_allclose(pools.gm_md, 7e-4, rtol=1e-6)
    np.testing.assert_allclose(pools.csf_md, 3.05e-3, rtol=1e-6)


def test_tissue_pools_fall_back_to_uneroded_mask_and_report_it(tissue_subject):
    subj, evals, interior = tissue_subject
    # 12 eroded WM voxels with FA > 0.7 < 13 <= 16 eroded GM / CSF voxels
    pools = tissue_pools(subj, min_pool=13)
    fa = fa_closed_form(evals)
    wm_all = evals[(subj.tissue == 3) & (fa > 0.7)]
    assert len(wm_all) == 94
    np.testing.assert_allclose(pools.wm, wm_all, rtol=1e-6)
    assert pools.report["WM"]["voxels"] == 94
    assert pools.report["WM"]["mask"].startswith("uneroded")
    assert "13" in pools.report["WM"]["mask"]
    assert pools.report["GM"]["mask"] == "eroded" and pools.report["CSF"]["mask"] == "eroded"
    assert set(_rows_are_known(pools.wm, [WM_A, WM_B, WM_EDGE])) == {0, 1, 2}


def test_tissue_pools_tiny_pool_is_used_and_an_empty_one_named(tissue_subject):
    subj, _, _ = tissue_subject
    pools = tissue_pools(subj, min_pool=95)  # 94 uneroded high-FA WM voxels: below min_pool, still used
    assert pools.report["WM"]["tiny"] is True and pools.report["WM"]["voxels"] == 94 and len(pools.wm) == 94
    # a subject whose WM is all low-FA: an empty pool is an error naming WM
    idx, tissue, evals, _ = _tissue_truth()
    evals = np.where((tissue == 3)[:, None], WM_LOW_FA, evals)
    bvecs = fibonacci_hemisphere(30)
    att = np.exp(-B * (bvecs**2) @ evals.T).T  # axis-aligned tensors
    low = make_subject(np.full(30, B), bvecs, attenuation=att, shape=SHAPE, tissue=tissue)
    with pytest.raises(ValueError, match=r"no WM voxel with FA > 0.7") as err:
        tissue_pools(low, min_pool=1)
    assert "GM" not in str(err.value) and "CSF" not in str(err.value)


def test_sampled_draws_only_pool_triplets(tissue_subject, rng):
    subj, _, _ = tissue_subject
    pools = tissue_pools(subj, min_pool=5)
    n = 3000
    evals, evecs, fractions = draw_mixture("Sampled", n, rng, pools=pools)
    assert evals.shape == (n, 5, 3)
    wm_idx = _rows_are_known(evals[:, :3].reshape(-1, 3), [WM_A, WM_B])
    assert set(wm_idx) == {0, 1}  # both drawn; never the edge or low-FA triplets
    assert 0.3 < wm_idx.mean() < 0.7  # 6 A and 6 B in the pool
    assert set(_rows_are_known(evals[:, 3], GM_IN)) == {0, 1}
    assert set(_rows_are_known(evals[:, 4], CSF_IN)) == {0, 1}
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, atol=1e-12)
    # GM / CSF tensors get a random orientation: a proper rotation, not a fixed frame
    np.testing.assert_allclose(np.linalg.det(evecs[:, 3]), 1.0, atol=1e-12)
    assert abs(evecs[:, 3, 2, 0].mean()) < 0.05 and np.std(evecs[:, 3, 2, 0]) > 0.5


def test_sample_and_mean_uses_isotropic_mean_md(tissue_subject, rng):
    subj, evals_true, interior = tissue_subject
    pools = tissue_pools(subj, min_pool=5)
    gm_md = evals_true[(subj.tissue == 2) & interior].mean()  # from the known tensors
    csf_md = evals_true[(subj.tissue == 1) & interior].mean()
    evals, _, _ = draw_mixture("SampleAndMean", 500, rng, pools=pools)
    np.testing.assert_allclose(evals[:, 3], gm_md, rtol=1e-6)
    np.testing.assert_allclose(evals[:, 4], csf_md, rtol=1e-6)
    assert np.all(evals[:, 3] == evals[:, 3, :1]) and np.all(evals[:, 4] == evals[:, 4, :1])  # isotropic
    _rows_are_known(evals[:, :3].reshape(-1, 3), [WM_A, WM_B])


def test_simulate_sampled_builds_pools_from_subject(tissue_subject):
    subj, _, _ = tissue_subject
    subj = dataclasses.replace(subj)  # fresh tensor cache
    pools = tissue_pools(subj, min_pool=5)
    a = simulate(subj, "Sampled", 300, seed=2, snr=None, min_pool=5)
    b = simulate(subj, "Sampled", 300, seed=2, snr=None, pools=pools)
    np.testing.assert_array_equal(a[0], b[0])


# ----------------------------------------------------------------------------- 6. Rician noise


@pytest.mark.parametrize("A, snr", [(0.5, 5.0), (0.0, 5.0), (0.05, 20.0)])
def test_rician_noise_mean_and_variance(A, snr):
    n = 1_000_000
    sigma = 1 / snr
    out = add_rician_noise(np.full(n, A, dtype=np.float32), sigma, np.random.default_rng(11))
    assert out.dtype == np.float32 and out.shape == (n,) and out.min() >= 0
    ref = stats.rice(b=A / sigma, scale=sigma)
    mean, var = ref.mean(), ref.var()
    # the same mean from the Laguerre closed form: sigma sqrt(pi/2) L_{1/2}(-A^2 / (2 sigma^2))
    lag = special.eval_laguerre(0.5, -(A**2) / (2 * sigma**2))
    np.testing.assert_allclose(mean, sigma * np.sqrt(np.pi / 2) * lag, rtol=1e-10)
    np.testing.assert_allclose(var, 2 * sigma**2 + A**2 - mean**2, rtol=1e-10)
    if A == 0:  # Rayleigh
        np.testing.assert_allclose([mean, var], [sigma * np.sqrt(np.pi / 2), (4 - np.pi) / 2 * sigma**2])
    # SE of the mean sqrt(var/n); 5 SE. SE of the variance <= ~sqrt(2/n) var = 0.0014 var; 1%.
    assert abs(out.mean() - mean) < 5 * np.sqrt(var / n)
    assert abs(out.var() / var - 1) < 0.01


def test_rician_noise_none_returns_the_clean_signal():
    sig = np.random.default_rng(0).random((40, 7)).astype(np.float32)
    out = add_rician_noise(sig, None, np.random.default_rng(1))
    np.testing.assert_array_equal(out, sig)
    assert out is not sig and out.dtype == np.float32


# ----------------------------------------------------------------------------- 7. RandomWM


def test_random_wm_moments_match_closed_form():
    """clean_j = f e_j + (1 - f) U_j, f, U_j i.i.d. U(0, 1), e_j = exp(-3e-3 b_j).

    With g = 1 - f ~ U(0, 1): clean_j = e_j + g (U_j - e_j), so
      E clean_j          = e_j + (1/2)(1/2 - e_j)        = e_j / 2 + 1/4
      Var clean_j        = E g^2 E (U_j - e_j)^2 - (E g)^2 (1/2 - e_j)^2
                         = (1/3)(1/12 + (1/2 - e_j)^2) - (1/4)(1/2 - e_j)^2
      Cov(clean_j, clean_l), j != l: U_j, U_l independent, shared g only:
                         = E g^2 (1/2 - e_j)(1/2 - e_l) - (E g)^2 (1/2 - e_j)(1/2 - e_l)
                         = Var(g) (1/2 - e_j)(1/2 - e_l) = (1/12)(1/2 - e_j)(1/2 - e_l)
    """
    bvals = np.array([1000.0, 1000.0, 2000.0, 2000.0])
    subj = make_subject(bvals, np.r_[np.eye(3), [[0.6, 0.8, 0.0]]])
    n = 200_000
    clean, noisy = simulate(subj, "RandomWM", n, seed=9, snr=None)
    assert clean.shape == (n, 4) and clean.dtype == np.float32
    assert clean.min() >= 0 and clean.max() <= 1
    np.testing.assert_array_equal(noisy, clean)

    e = np.exp(-FREE_WATER * bvals)
    d = 0.5 - e
    mean = e / 2 + 0.25
    var = (1 / 3) * (1 / 12 + d**2) - 0.25 * d**2
    cov = np.outer(d, d) / 12
    np.fill_diagonal(cov, var)
    np.testing.assert_allclose(mean[0], 0.5 * np.exp(-3) + 0.25)
    # SE of the mean sqrt(0.045 / n) = 4.7e-4; of a (co)variance about 0.05 / sqrt(n) = 1.1e-4
    np.testing.assert_allclose(clean.mean(axis=0), mean, atol=2.5e-3)
    np.testing.assert_allclose(np.cov(clean.astype(float), rowvar=False), cov, atol=7e-4)


# ----------------------------------------------------------------------------- 8. determinism


@pytest.mark.parametrize("method", ALLOWED)
def test_simulate_is_deterministic_and_float32(tissue_subject, method):
    subj, _, _ = tissue_subject
    pools = tissue_pools(subj, min_pool=5)
    n = 257
    a = simulate(subj, method, n, seed=42, snr=20, pools=pools)
    b = simulate(subj, method, n, seed=42, snr=20, pools=pools)
    c = simulate(subj, method, n, seed=43, snr=20, pools=pools)
    for x, y in zip(a, b):
        assert x.dtype == np.float32 and x.shape == (n, subj.n_directions)
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[0], a[1])  # noise was added
    # 'auto' uses the subject's SNR (25 here): same as giving 25
    auto = simulate(subj, method, n, seed=42, snr="auto", pools=pools)
    given = simulate(subj, method, n, seed=42, snr=25.0, pools=pools)
    np.testing.assert_array_equal(auto[1], given[1])
    # seed may also be a Generator
    g = simulate(subj, method, n, seed=np.random.default_rng(42), snr=20, pools=pools)
    np.testing.assert_array_equal(g[1], a[1])


# ----------------------------------------------------------------------------- 9. errors


def test_unknown_method_lists_allowed():
    subj = make_subject([1000.0] * 3, np.eye(3))
    with pytest.raises(ValueError) as err:
        simulate(subj, "Synthetic", 10, snr=None)
    msg = str(err.value)
    assert "Synthetic" in msg
    for name in ALLOWED:
        assert name in msg


@pytest.mark.parametrize("bad", [0, 0.0, -5, -1e-3, float("nan"), float("inf"), "loud", True, False, [20]])
def test_bad_snr_raises(bad):
    subj = make_subject([1000.0] * 3, np.eye(3))
    with pytest.raises(ValueError, match="snr"):
        simulate(subj, "Syn", 10, snr=bad)
    with pytest.raises(ValueError, match="snr"):
        resolve_snr(bad, subj)


def test_resolve_snr_accepts_valid_settings():
    subj = make_subject([1000.0] * 3, np.eye(3), snr=17.5)
    assert resolve_snr("auto", subj) == 17.5 and resolve_snr("AUTO", subj) == 17.5
    assert resolve_snr(None) is None and resolve_snr("none") is None and resolve_snr("None") is None
    assert resolve_snr(12) == 12.0 and resolve_snr(np.float32(8.0)) == 8.0


def test_auto_snr_without_an_estimate_raises():
    subj = make_subject([1000.0] * 3, np.eye(3), snr=None)
    with pytest.raises(ValueError, match="auto"):
        simulate(subj, "Syn", 10)
    assert simulate(subj, "Syn", 10, snr=None)[0].shape == (10, 3)


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_voxel_count_raises(n):
    subj = make_subject([1000.0] * 3, np.eye(3))
    with pytest.raises(ValueError, match="n_voxels"):
        simulate(subj, "Syn", n, snr=None)


def test_one_voxel():
    subj = make_subject([1000.0] * 3, np.eye(3))
    clean, noisy = simulate(subj, "Syn", 1, seed=0, snr=10)
    assert clean.shape == noisy.shape == (1, 3)


def rice_moments(A, sigma):
    """Mean and variance of Rice(A, σ) from the closed form
    E R = σ sqrt(π/2) L_{1/2}(-x), x = A²/(2σ²), L_{1/2}(-x) = e^{-x/2}((1 + x) I0(x/2) + x I1(x/2)),
    with exponentially scaled Bessel functions, so it holds at high A/σ where scipy's
    ``rice`` overflows; Var R = 2σ² + A² - (E R)²."""
    A = np.asarray(A, dtype=float)
    x = A**2 / (2 * sigma**2)
    mean = sigma * np.sqrt(np.pi / 2) * ((1 + x) * special.i0e(x / 2) + x * special.i1e(x / 2))
    return mean, 2 * sigma**2 + A**2 - mean**2


def test_rice_moments_helper_matches_scipy():
    for A, s in ((0.0, 0.2), (0.5, 0.2), (0.6, 0.05), (0.3, 0.02)):
        ref = stats.rice(b=A / s, scale=s)
        np.testing.assert_allclose(rice_moments(A, s), (ref.mean(), ref.var()), rtol=1e-9)


def test_rician_noise_per_row_sigma_matches_rice_moments():
    """One σ per row (voxel): each row's noise has that row's Rician moments."""
    levels = np.array([0.01, 0.05, 0.2])
    n, m, A = 30_000, 20, 0.6
    sigma = np.repeat(levels, n // 3)
    out = add_rician_noise(np.full((n, m), A, dtype=np.float32), sigma, np.random.default_rng(5))
    assert out.shape == (n, m) and out.dtype == np.float32
    for s in levels:
        rows = out[sigma == s].astype(float)
        mean, var = rice_moments(A, s)
        k = rows.size  # 200,000 values: SE of the variance ~ sqrt(2/k) = 0.3%; 1.5%
        assert abs(rows.var() / var - 1) < 0.015, s
        assert abs(rows.mean() - mean) < 5 * np.sqrt(var / k), s
    # a per-row σ that is the same everywhere draws exactly what the scalar does
    sig = np.random.default_rng(0).random((50, 7)).astype(np.float32)
    np.testing.assert_array_equal(
        add_rician_noise(sig, np.full(50, 0.05), np.random.default_rng(1)),
        add_rician_noise(sig, 0.05, np.random.default_rng(1)),
    )


@pytest.mark.parametrize("bad", [np.full(3, 0.1), np.full((4, 7), 0.1), -0.1, np.r_[0.1, np.nan, 0.1, 0.1]])
def test_rician_noise_rejects_bad_sigma(bad):
    with pytest.raises(ValueError, match="sigma"):
        add_rician_noise(np.zeros((4, 7)), bad, np.random.default_rng(0))


# ----------------------------------------------------------------------------- 10. shells


def test_multi_shell_syn_matches_dipy_multi_tensor():
    """Several b-values in one table: simulate's clean Syn voxels equal dipy's multi_tensor
    on the compartments draw_mixture draws from the same seed (simulate draws the mixture
    first, then the noise)."""
    rng = np.random.default_rng(SEED)
    bvals = np.r_[np.full(12, 1000.0), np.full(12, 2000.0), np.full(8, 3000.0)]
    bvecs = unit_vectors(rng, len(bvals))
    subj = make_subject(bvals, bvecs)
    n, seed = 40, 77
    clean, noisy = simulate(subj, "Syn", n, seed=seed, snr=None)
    evals, evecs, fractions = draw_mixture("Syn", n, np.random.default_rng(seed))
    gtab = gradient_table(np.r_[0.0, bvals], bvecs=np.r_[np.zeros((1, 3)), bvecs], b0_threshold=0)
    expected = np.array(
        [
            dipy_multi_tensor(gtab, evals[i], angles=evecs[i, :, :, 0], fractions=100 * fractions[i], snr=None)[0][1:]
            for i in range(n)
        ]
    )
    assert clean.shape == (n, len(bvals))
    np.testing.assert_allclose(clean, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(noisy, clean)
    # each shell decays further than the one below it
    means = [clean[:, bvals == b].mean() for b in (1000.0, 2000.0, 3000.0)]
    assert means[0] > means[1] > means[2]


def test_pools_use_only_volumes_up_to_dti_max_b(tissue_subject):
    """A b=3000 shell of nonsense (random values) does not change the pools: the tensor
    is fitted on b <= dti_max_b only (Subject.dti_columns)."""
    if not hasattr(Subject, "dti_columns"):
        pytest.skip("this Subject has no dti_columns (tensor fit on every volume)")
    subj, evals, interior = tissue_subject
    junk = np.random.default_rng(1).uniform(0.05, 0.9, size=(subj.n_voxels, 10))
    bvecs = np.r_[subj.bvecs, unit_vectors(np.random.default_rng(2), 10)]
    multi = make_subject(
        np.r_[subj.bvals, np.full(10, 3000.0)], bvecs, attenuation=np.c_[subj.attenuation, junk],
        shape=SHAPE, tissue=subj.tissue, snr=25.0, dti_max_b=1500.0,
    )
    pools = tissue_pools(multi, min_pool=5)
    np.testing.assert_allclose(pools.wm, tissue_pools(subj, min_pool=5).wm, rtol=1e-6)
    fa = fa_closed_form(evals)
    np.testing.assert_allclose(pools.wm, evals[(subj.tissue == 3) & interior & (fa > 0.7)], rtol=1e-6)
    clean, _ = simulate(multi, "Sampled", 50, seed=1, snr=None, pools=pools)
    assert clean.shape == (50, 40)


# ----------------------------------------------------------------------------- 11. per-voxel noise


def two_class_subject(n_low=16, n_high=48):
    """S0 = 250 in a quarter of the voxels, 1000 in the rest; σ = 10 scanner units, so
    σ/S0 is 0.04 (a quarter) or 0.01 (three quarters): median 0.01."""
    shape = (n_low + n_high, 1, 1)
    s0 = np.r_[np.full(n_low, 250.0), np.full(n_high, 1000.0)]
    b = np.full(30, 200.0)  # low b: high signal, so the noise is close to Gaussian
    return make_subject(b, fibonacci_hemisphere(30), shape=shape, s0=s0, sigma=10.0)


def rician_mean_square(clean, sigma):
    """E (R - A)² for R ~ Rice(A, σ): 2σ² + 2A² - 2A E R."""
    A = clean.astype(float)
    mean, _ = rice_moments(A, sigma)
    return 2 * sigma**2 + 2 * A**2 - 2 * A * mean


@pytest.mark.parametrize("snr, levels", [("auto", (0.01, 0.04)), (50.0, (0.02, 0.08))])
def test_per_voxel_noise_draws_the_subjects_sigma_distribution(snr, levels):
    subj = two_class_subject()
    low, high = levels
    np.testing.assert_allclose(np.sort(np.unique(np.round(sigma_distribution(subj, snr=snr), 10))), levels)
    n = 4000
    clean, noisy = simulate(subj, "Syn", n, seed=3, snr=snr, noise="per_voxel")
    diff = noisy.astype(float) - clean
    rms = np.sqrt((diff**2).mean(axis=1))  # per voxel, over 30 volumes: ~13% spread
    is_high = rms > np.sqrt(low * high)  # the classes are 2x either side of this
    # a quarter of the brain voxels have the high σ/S0: binomial SE 0.0068; 0.03 ~ 4.4 SE
    assert abs(is_high.mean() - 0.25) < 0.03
    for sel, s in ((is_high, high), (~is_high, low)):
        expected = rician_mean_square(clean[sel], s).mean()
        # >= 30,000 values: SE of a mean square ~ sqrt(2 / 30,000) = 0.8%; 4%
        assert abs((diff[sel] ** 2).mean() / expected - 1) < 0.04, s


def test_global_noise_is_one_sigma_for_every_voxel():
    subj = two_class_subject()
    clean, noisy = simulate(subj, "Syn", 2000, seed=3, snr=50.0, noise="global")
    diff = noisy.astype(float) - clean
    rms = np.sqrt((diff**2).mean(axis=1))
    assert np.all(rms < np.sqrt(0.02 * 0.08))  # no voxel in a high-σ class
    np.testing.assert_allclose((diff**2).mean() / rician_mean_square(clean, 0.02).mean(), 1, atol=0.03)


def test_per_voxel_noise_is_deterministic_and_skips_bad_s0():
    subj = two_class_subject()
    subj.s0[:3] = 0.0  # S0 <= 0: no σ/S0; the other voxels keep the two levels
    values = sigma_distribution(subj, snr="auto")
    assert len(values) == subj.n_voxels - 3 and np.all(np.isfinite(values))
    a = simulate(subj, "RandomWM", 300, seed=8, snr=40, noise="per_voxel")
    b = simulate(subj, "RandomWM", 300, seed=8, snr=40, noise="per_voxel")
    np.testing.assert_array_equal(a[1], b[1])
    assert sigma_distribution(subj, snr="none") is None
    none = simulate(subj, "RandomWM", 30, seed=8, snr=None, noise="per_voxel")
    np.testing.assert_array_equal(none[0], none[1])


def test_per_voxel_noise_needs_a_positive_s0():
    subj = make_subject([1000.0] * 3, np.eye(3), s0=np.zeros(8), snr=None)
    with pytest.raises(ValueError, match="S0"):
        simulate(subj, "Syn", 10, snr=20, noise="per_voxel")


def test_unknown_noise_mode_lists_the_modes():
    subj = make_subject([1000.0] * 3, np.eye(3))
    with pytest.raises(ValueError, match=r"noise.*global.*per_voxel"):
        simulate(subj, "Syn", 10, snr=20, noise="local")


# ----------------------------------------------------------------------------- 12. support


def test_tissue_pools_report_tiny_and_wm_fa_min(tissue_subject):
    subj, evals, interior = tissue_subject
    pools = tissue_pools(subj, min_pool=13)
    assert pools.report["WM"]["fallback"] is True and pools.report["WM"]["eroded"] is False
    assert pools.report["WM"]["tiny"] is False  # 94 uneroded voxels >= 13
    assert pools.report["WM"]["eroded_voxels"] == 12 and pools.report["WM"]["fa_min"] == 0.7
    assert pools.report["GM"]["tiny"] is False and pools.report["CSF"]["tiny"] is False
    # a lower FA threshold lets the 4 interior low-FA WM voxels (FA 0.30) into the pool
    low = tissue_pools(subj, min_pool=5, wm_fa_min=0.25)
    assert low.report["WM"]["voxels"] == 16
    np.testing.assert_allclose(low.wm, evals[(subj.tissue == 3) & interior], rtol=1e-6)


def _support_subject(*, low_fa_wm=False, no_csf=False):
    idx, tissue, evals, _ = _tissue_truth()
    if low_fa_wm:
        evals = np.where((tissue == 3)[:, None], WM_LOW_FA, evals)
    if no_csf:
        tissue = np.where(tissue == 1, 2, tissue).astype(np.uint8)  # the CSF slab becomes GM
    bvecs = fibonacci_hemisphere(30)
    att = np.exp(-B * (bvecs**2) @ evals.T).T  # axis-aligned tensors
    return make_subject(np.full(30, B), bvecs, attenuation=att, shape=SHAPE, tissue=tissue)


def test_method_support_names_missing_high_fa_wm():
    subj = _support_subject(low_fa_wm=True)
    for method in ("Sampled", "SampleAndMean"):
        reason = method_support(subj, method, min_pool=20, wm_fa_min=0.7)
        assert reason is not None
        assert method in reason and "no WM voxel with FA > 0.7" in reason
        assert "GM" not in reason and "CSF" not in reason
    for method in ("Syn", "RandomWM", "mylab.gens:ball_stick"):
        assert method_support(subj, method, min_pool=20, wm_fa_min=0.7) is None
    # WM_LOW_FA has FA 0.30: a threshold below it supports the method
    assert method_support(subj, "Sampled", min_pool=20, wm_fa_min=0.25) is None
    with pytest.raises(ValueError, match=r"no WM voxel with FA > 0.7"):
        tissue_pools(subj, min_pool=20)


def test_method_support_names_an_empty_csf_class():
    subj = _support_subject(no_csf=True)
    reason = method_support(subj, "Sampled", min_pool=20, wm_fa_min=0.7)
    assert "no CSF voxel" in reason and "WM" not in reason
    both = method_support(_support_subject(no_csf=True, low_fa_wm=True), "SampleAndMean", min_pool=20, wm_fa_min=0.7)
    assert "no WM voxel with FA > 0.7" in both and "no CSF voxel" in both
    with pytest.raises(ValueError, match="no CSF voxel"):
        simulate(subj, "Sampled", 10, snr=None, min_pool=20)
    assert simulate(subj, "Syn", 10, snr=None)[0].shape == (10, 30)


def test_method_support_is_none_when_pools_suffice(tissue_subject):
    subj, _, _ = tissue_subject
    assert method_support(subj, "Sampled", min_pool=5, wm_fa_min=0.7) is None
    # pools below min_pool are tiny, not missing: the method still runs
    assert method_support(subj, "Sampled", min_pool=95, wm_fa_min=0.7) is None


@pytest.mark.parametrize("kwargs, match", [({"min_pool": 0}, "min_pool"), ({"wm_fa_min": 1.5}, "wm_fa_min")])
def test_method_support_rejects_bad_settings(tissue_subject, kwargs, match):
    subj, _, _ = tissue_subject
    settings = {"min_pool": 20, "wm_fa_min": 0.7, **kwargs}
    with pytest.raises(ValueError, match=match):
        method_support(subj, "Sampled", **settings)
    with pytest.raises(ValueError, match="unknown method"):
        method_support(subj, "Synth", min_pool=20, wm_fa_min=0.7)


# ----------------------------------------------------------------------------- 13. dependencies


def test_simulation_imports_no_config_io_or_runner():
    """The numerical kernel imports neither the YAML config, I/O nor the runner (fresh
    interpreter, so other tests' imports do not count)."""
    forbidden = ("helpers.config", "helpers.io", "helpers.run.pipeline", "helpers.run.batch", "yaml")
    code = f"import sys, helpers.generators.simulation\nprint([m for m in {forbidden!r} if m in sys.modules])\n"
    root = PROJECT_ROOT
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_ground_truth_rebuilds_the_clean_signal(tissue_subject):
    """simulate(truth=True): a tensor generator's clean signal is Σ f exp(-b gᵀ D g) of the
    tensors it returns, written out voxel by voxel; FORCE's sigma is 1/SNR."""
    subj, _, _ = tissue_subject
    clean, noisy, truth = simulate(subj, "Sampled", 20, 3, snr=25.0, truth=True)
    for v in range(20):
        keep = np.flatnonzero(truth["fractions"][v] > 0)
        expected = sum(f * np.exp(-subj.bvals * np.einsum("mi,ij,mj->m", subj.bvecs, R @ np.diag(ev) @ R.T, subj.bvecs))
                       for f, ev, R in zip(truth["fractions"][v][keep], truth["evals"][v][keep], truth["evecs"][v][keep]))
        np.testing.assert_allclose(clean[v], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(truth["directions"], truth["evecs"][..., 0])
    _, _, force = simulate(subj, "FORCE", 5, 3, snr=25.0, truth=True)
    np.testing.assert_allclose(force["sigma"], 1 / 25.0, rtol=1e-6)
