"""helpers.generators.force against dipy's own FORCE code (dipy.sims.force / dipy.sims._force_core).

Every expected value comes from dipy: the compiled ``create_mixed_signal`` (signals and the
parameters it returns), dipy's public building blocks (``dispersion_lut``,
``_single_bingham_to_sf``, ``all_tensor_evecs``, ``dipy.sims.voxel.multi_tensor``), or the
distribution of dipy's draws. ``create_mixed_signal`` does not return the fibre order or
the extra-axonal d_perp, so :func:`_replay` re-runs its sequence of global ``np.random``
calls (read from ``_force_core.pyx``) from the same seed; every test that uses a replay
first checks it against everything dipy returned for that voxel.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.data import default_sphere, get_fnames
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.bingham import _single_bingham_to_sf
from dipy.sims._force_core import angle_between, create_mixed_signal, is_angle_valid
from dipy.sims._multi_tensor_omp import multi_tensor as omp_multi_tensor
from dipy.sims.force import dispersion_lut, get_default_diffusivity_config
from dipy.sims.voxel import all_tensor_evecs
from dipy.sims.voxel import multi_tensor as dipy_multi_tensor
from scipy import stats

from helpers.config import PROJECT_ROOT
from helpers.generators.force import (
    ForceParameters,
    ForceRanges,
    draw_force_parameters,
    force_signal,
    simulate_force,
    sphere_vertices,
)

ROOT = PROJECT_ROOT
P_MIN = 1e-3  # two-sample tests: fail only below this p-value
ODI = np.linspace(0.01, 0.3, 10)  # generate_force_simulations' default grid


@pytest.fixture(autouse=True)
def keep_global_state():
    """dipy's FORCE draws from the global np.random: restore it after every test."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture(scope="module")
def dipy_force():
    """What generate_force_simulations hands create_mixed_signal (sphere, evecs, LUT)."""
    vertices = np.ascontiguousarray(default_sphere.vertices, dtype=np.float64)
    evecs = np.array([all_tensor_evecs(tuple(v)) for v in vertices], dtype=np.float64)
    return vertices, evecs, dispersion_lut(vertices, ODI)


@pytest.fixture(scope="module")
def single_shell():
    """dipy's small_64D table: 1 b0 + 64 directions at b ≈ 1000 (b0 b-vector zeroed)."""
    _, fbval, fbvec = get_fnames(name="small_64D")
    bvals, bvecs = read_bvals_bvecs(str(fbval), str(fbvec))
    gtab = gradient_table(bvals, bvecs=bvecs)
    return np.ascontiguousarray(gtab.bvals, dtype=float), np.ascontiguousarray(gtab.bvecs, dtype=float)


@pytest.fixture(scope="module")
def multi_shell():
    """1 b0 + 30 random directions at each of b = 1000, 2000, 3000."""
    rng = np.random.default_rng(7)
    g = rng.normal(size=(90, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    bvals = np.r_[0.0, np.repeat([1000.0, 2000.0, 3000.0], 30)]
    return bvals, np.ascontiguousarray(np.r_[np.zeros((1, 3)), g])


def _replay(seed, vertices, *, tortuosity):
    """Re-draw create_mixed_signal's parameters: its np.random calls, in its order."""
    np.random.seed(seed)
    fractions = np.random.dirichlet([2.0, 1.0, 1.0])
    k = int(np.random.choice([1, 2, 3], p=[0.1, 0.2, 0.7]))
    n_dirs = len(vertices)
    if k == 1:
        f_in = np.array([np.random.uniform(0.6, 0.9)])
        weights = np.array([1.0])
    elif k == 2:
        f_in = np.random.uniform(0.6, 0.9, 2)
        u = np.random.uniform(0.2, 0.8)
        weights = np.array([u, 1.0 - u])
    else:
        f_in = np.random.uniform(0.6, 0.9, 3)
        weights = np.random.dirichlet([1.0, 1.0, 1.0])
        while np.any(weights < 0.2):
            weights = np.random.dirichlet([1.0, 1.0, 1.0])
    d_par = np.random.uniform(2.0e-3, 3.0e-3)
    d_perp = d_par * (1 - f_in[0]) / (1 + f_in[0]) if tortuosity else np.random.uniform(0.3e-3, 1.5e-3)
    if k == 1:
        index = np.array([np.random.randint(0, n_dirs)])
    else:
        threshold = 30 if k == 2 else 60

        def separated(ix):
            pairs = [(0, 1)] if k == 2 else [(0, 1), (0, 2), (1, 2)]
            return all(is_angle_valid(angle_between(vertices[ix[a]], vertices[ix[b]]), threshold=threshold) for a, b in pairs)

        index = np.random.randint(0, n_dirs, k)
        while not separated(index):
            index = np.random.randint(0, n_dirs, k)
    odi = float(np.random.choice(ODI))
    gm_d = np.random.uniform(0.7e-3, 1.2e-3)
    return dict(fractions=fractions, k=k, f_in=f_in, weights=weights, d_par=d_par, d_perp=d_perp, index=index, odi=odi, gm_d=gm_d)


def _check_replay(p, r):
    """The replayed parameters are the ones create_mixed_signal used (its return ``r``)."""
    k = p["k"]
    assert r[2] == k
    np.testing.assert_array_equal([r[4], r[5], r[6]], p["fractions"])
    assert (r[12], r[13], r[15], r[16]) == (p["odi"], p["d_par"], p["gm_d"], 3.0e-3)
    np.testing.assert_array_equal(np.flatnonzero(r[1]), np.sort(p["index"]))
    np.testing.assert_array_equal(r[11][:k], p["weights"].astype(np.float32))
    np.testing.assert_array_equal(r[17][:k], p["f_in"].astype(np.float32))
    assert r[14] == pytest.approx(np.sum(p["weights"] * (1 - p["f_in"]) * p["d_perp"]), rel=1e-12)


def _as_params(replayed):
    n = len(replayed)
    per_fibre = {name: np.zeros((n, 3)) for name in ("weights", "odi", "d_par", "d_perp", "f_intra")}
    index = np.full((n, 3), -1)
    for i, p in enumerate(replayed):
        k = p["k"]
        index[i, :k] = p["index"]
        per_fibre["weights"][i, :k] = p["weights"]
        per_fibre["f_intra"][i, :k] = p["f_in"]
        per_fibre["odi"][i, :k] = p["odi"]
        per_fibre["d_par"][i, :k] = p["d_par"]
        per_fibre["d_perp"][i, :k] = p["d_perp"]
    return ForceParameters(
        fractions=np.array([p["fractions"] for p in replayed]),
        n_fibers=np.array([p["k"] for p in replayed]),
        sphere_index=index,
        gm_d=np.array([p["gm_d"] for p in replayed]),
        csf_d=np.full(n, 3.0e-3),
        **per_fibre,
    )


def _dipy_voxels(seeds, bvals, bvecs, dipy_force, *, tortuosity):
    """Signals (S0 = 1) from create_mixed_signal, and the parameters it drew, per seed."""
    vertices, evecs, lut = dipy_force
    signals, replayed = [], []
    for seed in seeds:
        p = _replay(seed, vertices, tortuosity=tortuosity)
        np.random.seed(seed)
        r = create_mixed_signal(vertices, evecs, lut, ODI, bvals, bvecs, omp_multi_tensor, -1.0, tortuosity)
        _check_replay(p, r)
        signals.append(r[0] / 100.0)  # dipy's S0 is 100
        replayed.append(p)
    return np.array(signals), _as_params(replayed)


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("table", ["single_shell", "multi_shell"])
@pytest.mark.parametrize("tortuosity", [False, True])
def test_signal_equals_dipy_create_mixed_signal(table, tortuosity, dipy_force, request):
    bvals, bvecs = request.getfixturevalue(table)
    expected, params = _dipy_voxels(range(60), bvals, bvecs, dipy_force, tortuosity=tortuosity)
    assert set(params.n_fibers) == {1, 2, 3}
    np.testing.assert_allclose(force_signal(bvals, bvecs, params), expected, rtol=0, atol=1e-6)
    ours32 = force_signal(bvals, bvecs, params, dtype=np.float32)
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32, expected, rtol=0, atol=1e-6)


def test_signal_equals_dipy_building_blocks_for_general_parameters(multi_shell):
    """Per-fibre diffusivities and off-grid ODI (beyond what FORCE draws), against the
    Bingham SF and dipy.sims.voxel.multi_tensor directly, following _force_core.pyx."""
    bvals, bvecs = multi_shell
    vertices = sphere_vertices()
    evecs = [all_tensor_evecs(tuple(v)) for v in vertices]
    params = ForceParameters(
        fractions=[[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.2, 0.2, 0.6]],
        n_fibers=[3, 1, 2],
        sphere_index=[[5, 100, 250], [361, -1, -1], [0, 180, -1]],
        weights=[[0.5, 0.3, 0.2], [1.0, 0, 0], [0.7, 0.3, 0]],
        odi=[[0.05, 0.137, 0.9], [0.01, 0, 0], [0.3, 1.0, 0]],
        d_par=[[1.7e-3, 2.2e-3, 3.1e-3], [2.5e-3, 0, 0], [0.9e-3, 2.0e-3, 0]],
        d_perp=[[0.2e-3, 1.4e-3, 0.5e-3], [0.0, 0, 0], [1.2e-3, 0.4e-3, 0]],  # d_perp > d_par: oblate
        f_intra=[[0.6, 0.75, 0.9], [1.0, 0, 0], [0.0, 0.5, 0]],
        gm_d=[0.8e-3, 1.0e-3, 0.0],
        csf_d=[3.0e-3, 3.0e-3, 2.5e-3],
    )
    gtab = gradient_table(bvals, bvecs=bvecs)
    expected = np.zeros((3, len(bvals)))
    for i in range(3):
        for f in range(params.n_fibers[i]):
            axis = evecs[params.sphere_index[i, f]]
            kappa = 1 / np.tan(np.pi / 2 * params.odi[i, f])
            sf = _single_bingham_to_sf(1, kappa, kappa, axis[:, 1], axis[:, 2], vertices)
            percent = 100 * sf / sf.sum()
            d_par, d_perp = params.d_par[i, f], params.d_perp[i, f]
            kw = dict(S0=1.0, angles=vertices, fractions=percent, snr=None)
            stick, _ = dipy_multi_tensor(gtab, np.tile([d_par, 0, 0], (len(vertices), 1)), **kw)
            zeppelin, _ = dipy_multi_tensor(gtab, np.tile([d_par, d_perp, d_perp], (len(vertices), 1)), **kw)
            fi = params.f_intra[i, f]
            expected[i] += params.fractions[i, 0] * params.weights[i, f] * (fi * stick + (1 - fi) * zeppelin)
        expected[i] += params.fractions[i, 1] * np.exp(-bvals * params.gm_d[i]) + params.fractions[i, 2] * np.exp(-bvals * params.csf_d[i])
    np.testing.assert_allclose(force_signal(bvals, bvecs, params), expected, rtol=0, atol=1e-6)


def test_b0_and_single_voxel(single_shell):
    bvals, bvecs = single_shell
    params = draw_force_parameters(1, 3)
    signal = force_signal(bvals, bvecs, params)
    assert signal.shape == (1, len(bvals))
    np.testing.assert_allclose(signal[:, bvals == 0], 1.0, rtol=0, atol=1e-12)  # Σ fractions
    clean = simulate_force(np.r_[5.0, bvals], np.r_[[[1.0, 0, 0]], bvecs], 50, 3)
    assert clean.dtype == np.float32 and clean.shape == (50, len(bvals) + 1)
    assert np.all(clean[:, :2] == 1.0)  # b = 5 and b = 0 are b0 (<= 50 s/mm²)
    assert np.all((clean[:, 2:] > 0) & (clean[:, 2:] < 1))


# ----------------------------------------------------------------------------- distributions


def _dipy_draws(n, dipy_force, *, tortuosity, seed):
    """n voxels from create_mixed_signal (one global seed), on a tiny table for speed."""
    vertices, evecs, lut = dipy_force
    bvals = np.array([0.0, 1000.0])
    bvecs = np.ascontiguousarray([[0.0, 0, 0], [1.0, 0, 0]])
    np.random.seed(seed)
    rows = [create_mixed_signal(vertices, evecs, lut, ODI, bvals, bvecs, omp_multi_tensor, -1.0, tortuosity) for _ in range(n)]
    k = np.array([r[2] for r in rows])
    weights = np.array([r[11] for r in rows], dtype=float)
    f_in = np.array([r[17] for r in rows], dtype=float)
    used = np.arange(3) < k[:, None]
    extra = np.sum(np.where(used, weights * (1 - f_in), 0), axis=1)
    index = [np.flatnonzero(r[1]) for r in rows]
    return dict(
        k=k,
        fractions=np.array([r[4:7] for r in rows]),
        odi=np.array([r[12] for r in rows]),
        d_par=np.array([r[13] for r in rows]),
        d_perp=np.array([r[14] for r in rows]) / extra,  # r[14] = Σ w (1 - f) d_perp
        gm_d=np.array([r[15] for r in rows]),
        weights=weights,
        f_intra=f_in[used],
        index=index,
    )


def _ours(params):
    used = params.used
    return dict(
        k=params.n_fibers,
        fractions=params.fractions,
        odi=params.odi[:, 0],
        d_par=params.d_par[:, 0],
        d_perp=params.d_perp[:, 0],
        gm_d=params.gm_d,
        weights=params.weights,
        f_intra=params.f_intra[used],
        index=[row[:k] for row, k in zip(params.sphere_index, params.n_fibers)],
    )


def _min_axial_angle(index_rows, k, vertices):
    """Smallest pairwise angle between fibre axes (degrees, in [0, 90]) of k-fibre voxels."""
    rows = np.array([ix for ix in index_rows if len(ix) == k])
    v = vertices[rows]  # (n, k, 3)
    cos = np.abs(np.einsum("nad,nbd->nab", v, v))
    a, b = np.triu_indices(k, 1)
    return np.degrees(np.arccos(np.clip(cos[:, a, b].max(axis=1), -1, 1)))


def _chi2_p(a, b, categories):
    table = np.array([[np.sum(a == c) for c in categories], [np.sum(b == c) for c in categories]])
    return stats.chi2_contingency(table).pvalue


def test_parameter_distributions_match_dipy(dipy_force):
    vertices = dipy_force[0]
    theirs = _dipy_draws(3000, dipy_force, tortuosity=False, seed=2024)
    ours = _ours(draw_force_parameters(20_000, np.random.default_rng(11)))
    p = {
        "n_fibers": _chi2_p(theirs["k"], ours["k"], [1, 2, 3]),
        "odi": _chi2_p(theirs["odi"], ours["odi"], ODI),
    }
    for j, tissue in enumerate(["wm", "gm", "csf"]):
        p[tissue] = stats.ks_2samp(theirs["fractions"][:, j], ours["fractions"][:, j]).pvalue
    for name in ("d_par", "d_perp", "gm_d", "f_intra"):
        p[name] = stats.ks_2samp(theirs[name], ours[name]).pvalue
    for k in (2, 3):
        t, o = theirs["weights"][theirs["k"] == k], ours["weights"][ours["k"] == k]
        p[f"max weight, {k} fibres"] = stats.ks_2samp(t.max(axis=1), o.max(axis=1)).pvalue
        p[f"min weight, {k} fibres"] = stats.ks_2samp(t[:, :k].min(axis=1), o[:, :k].min(axis=1)).pvalue
        p[f"angle, {k} fibres"] = stats.ks_2samp(
            _min_axial_angle(theirs["index"], k, vertices), _min_axial_angle(ours["index"], k, vertices)
        ).pvalue
    z_theirs = np.abs(vertices[np.concatenate(theirs["index"]), 2])
    z_ours = np.abs(vertices[np.concatenate(ours["index"]), 2])
    p["|z| of fibre axes"] = stats.ks_2samp(z_theirs, z_ours).pvalue
    low = {name: value for name, value in p.items() if value <= P_MIN}
    assert not low, f"distributions differ from dipy's (p <= {P_MIN}): {low}"


def test_tortuosity_distribution_matches_dipy(dipy_force):
    theirs = _dipy_draws(1000, dipy_force, tortuosity=True, seed=77)
    ours = _ours(draw_force_parameters(10_000, 5, ranges=ForceRanges(tortuosity=True)))
    assert stats.ks_2samp(theirs["d_perp"], ours["d_perp"]).pvalue > P_MIN


def test_drawn_parameters_obey_dipy_constraints():
    params = draw_force_parameters(600, 8)
    vertices = sphere_vertices()
    for row, k in zip(params.sphere_index, params.n_fibers):
        threshold = 30 if k == 2 else 60
        for a in range(k):
            for b in range(a + 1, k):
                assert is_angle_valid(angle_between(vertices[row[a]], vertices[row[b]]), threshold=threshold)
    used = params.used
    np.testing.assert_allclose(params.weights.sum(axis=1), 1.0)
    assert np.all(params.weights[used & (params.n_fibers[:, None] > 1)] >= 0.2)
    assert np.all(params.weights[~used] == 0) and np.all(params.directions[~used] == 0)
    np.testing.assert_allclose(np.linalg.norm(params.directions[used], axis=1), 1.0)
    np.testing.assert_allclose(params.fractions.sum(axis=1), 1.0)
    d_par = params.d_par[:, :1]  # one d_par, d_perp and ODI per voxel, as dipy draws them
    assert np.all(np.where(used, params.d_par == d_par, True)) and np.all(np.where(used, params.odi == params.odi[:, :1], True))


def test_ranges_default_to_dipys():
    assert ForceRanges.from_dipy(get_default_diffusivity_config()) == ForceRanges()
    np.testing.assert_array_equal(ForceRanges().odi_grid, ODI)
    fixed = ForceRanges.from_dipy({"wm_d_par_range": 2.5e-3, "csf_d": 2.0e-3}, tortuosity=True)
    params = draw_force_parameters(100, 0, ranges=fixed)
    assert np.all(params.d_par[params.used] == 2.5e-3) and np.all(params.csf_d == 2.0e-3)
    np.testing.assert_allclose(params.d_perp[:, 0], 2.5e-3 * (1 - params.f_intra[:, 0]) / (1 + params.f_intra[:, 0]))


# ----------------------------------------------------------------------------- seeding


def test_seeded_and_no_global_state(single_shell):
    bvals, bvecs = single_shell
    np.random.seed(123)
    before = np.random.get_state()
    a = simulate_force(bvals, bvecs, 200, 42)
    b = simulate_force(bvals, bvecs, 200, np.random.default_rng(42))
    c = simulate_force(bvals, bvecs, 200, 43)
    pa, pb = draw_force_parameters(50, 9), draw_force_parameters(50, 9)
    after = np.random.get_state()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for name in ("fractions", "sphere_index", "weights", "odi", "d_par", "d_perp", "f_intra", "gm_d"):
        np.testing.assert_array_equal(getattr(pa, name), getattr(pb, name))
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(wm_d_par=(3e-3, 2e-3)), "wm_d_par"),
        (dict(wm_d_par=(0.0, 2e-3)), "wm_d_par"),
        (dict(wm_d_perp=(-1e-3, 1e-3)), "wm_d_perp"),
        (dict(f_intra=(0.5, 1.2)), "f_intra"),
        (dict(gm_d=(1e-3,)), "gm_d"),
        (dict(csf_d="water"), "csf_d"),
        (dict(fiber_probs=(0.5, 0.5, 0.5)), "fiber_probs"),
        (dict(odi_range=(0.0, 0.3)), "odi_range"),
        (dict(n_odi=0), "n_odi"),
        (dict(min_separation_deg=(30, 95)), "min_separation_deg"),
        (dict(min_separation_deg=(30, 89.9)), "no 3 vertices"),
        (dict(min_fiber_weight=0.4), "min_fiber_weight"),
        (dict(tissue_alpha=(2, 1, 0)), "tissue_alpha"),
        (dict(tortuosity="yes"), "tortuosity"),
    ],
)
def test_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForceRanges(**kwargs)


def test_bad_dipy_config():
    with pytest.raises(ValueError, match="unknown keys"):
        ForceRanges.from_dipy({"wm_dpar": (2e-3, 3e-3)})


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n(n, single_shell):
    with pytest.raises(ValueError, match="n must be"):
        simulate_force(*single_shell, n, 0)
    with pytest.raises(ValueError, match="n must be"):
        draw_force_parameters(n, 0)


def test_bad_gradients(single_shell):
    bvals, bvecs = single_shell
    params = draw_force_parameters(3, 0)
    with pytest.raises(ValueError, match="bvecs has shape"):
        force_signal(bvals, bvecs[1:], params)
    with pytest.raises(ValueError, match="bvecs has shape"):
        simulate_force(bvals[1:], bvecs, 3, 0)
    with pytest.raises(ValueError, match="bvals must be"):
        force_signal(bvals[:, None], bvecs, params)
    with pytest.raises(ValueError, match="bvals must be"):
        force_signal(-bvals, bvecs, params)
    nan_b0 = bvecs.copy()
    nan_b0[0] = np.nan  # the raw small_64D file stores NaN at b0
    with pytest.raises(ValueError, match=r"bvecs has non-finite rows \[0\]"):
        force_signal(bvals, nan_b0, params)


def test_bad_parameters(single_shell):
    good = draw_force_parameters(4, 0)
    fields = {name: getattr(good, name) for name in good.__dataclass_fields__}

    def with_(**change):
        return ForceParameters(**{**fields, **change})

    with pytest.raises(ValueError, match=r"params.weights has shape \(4, 2\)"):
        with_(weights=good.weights[:, :2])
    with pytest.raises(ValueError, match="params.n_fibers must be 1, 2 or 3"):
        with_(n_fibers=np.full(4, 4))
    with pytest.raises(ValueError, match="params.sphere_index"):
        with_(sphere_index=np.where(good.used, 400, -1))
    with pytest.raises(ValueError, match=r"params.odi .* \(0, 1\]"):
        with_(odi=np.where(good.used, 0.0, 0.0))
    with pytest.raises(ValueError, match="params.d_perp"):
        with_(d_perp=-good.d_perp - 1e-3)
    with pytest.raises(ValueError, match="params must be ForceParameters"):
        force_signal(*single_shell, fields)
    with pytest.raises(ValueError, match="ranges must be a ForceRanges"):
        draw_force_parameters(3, 0, ranges={"wm_d_par": (2e-3, 3e-3)})


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_tiny(capsys):
    spec = importlib.util.spec_from_file_location("bench_force", ROOT / "benchmarks" / "bench_force.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--tiny"])
    lines = capsys.readouterr().out.splitlines()
    speed = [line for line in lines if line.startswith("force speedup ")]
    assert len(speed) == 1 and speed[0].endswith("x vs dipy generate_force_simulations")
    assert float(speed[0].split()[2].rstrip("x")) > 0
    assert any("voxels/s" in line and "per 300,000 voxels" in line for line in lines)
