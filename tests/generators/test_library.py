"""``library:PATH``: any simulator's saved signals as a generator.

Expected values are built by hand: a library written from known attenuations with a
known S0, shuffled and padded with columns the subject does not have, must give back
exactly those attenuations on the subject's volumes in the subject's order.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.generators.library import ANGLE_TOLERANCE_DEG, draw_library, library_name, load_library, match_columns


def _table(rng, m=12):
    g = rng.standard_normal((m, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.full(m, 1000.0), g


def test_columns_in_any_order_with_extras_and_flipped_signs(tmp_path, rng):
    bvals, bvecs = _table(rng)
    truth = rng.uniform(0.1, 0.9, (50, 12))  # attenuation of 50 voxels on the subject's 12 volumes
    s0 = rng.uniform(50, 150, 50)
    # the library: a b0 column, the 12 volumes shuffled and sign-flipped, and a b=3000 shell
    order = rng.permutation(12)
    extra_dirs = _table(rng, 5)[1]
    lib_bvals = np.r_[0.0, bvals[order] + 7.0, np.full(5, 3000.0)]  # 1007: within the shell tolerance
    lib_bvecs = np.vstack([[0, 0, 0], -bvecs[order], extra_dirs])
    signals = np.hstack([s0[:, None], truth[:, order] * s0[:, None], rng.uniform(0, 1, (50, 5)) * s0[:, None]])
    path = tmp_path / "mc_sims.npz"
    np.savez(path, signals=signals, bvals=lib_bvals, bvecs=lib_bvecs.T)  # (3, c) is accepted too
    lib = load_library(path)
    assert lib.n_unique == 50 and lib.name == "mc_sims" and library_name("a/b/force.npz") == "force"
    assert lib.s0_source.startswith("mean of the b <= 50")
    cols = match_columns(lib, bvals, bvecs)
    np.testing.assert_array_equal(cols, 1 + np.argsort(order))
    np.testing.assert_allclose(lib.attenuation[:, cols], truth, rtol=1e-6)
    # draws with replacement, seeded
    a = draw_library(lib, cols, 200, np.random.default_rng(1))
    b = draw_library(lib, cols, 200, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (200, 12)
    nearest = np.abs(a[:, None, :] - truth[None, :, :]).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-6  # every drawn voxel is one of the library's


def test_an_s0_array_wins_over_b0_columns(tmp_path, rng):
    bvals, bvecs = _table(rng)
    truth = rng.uniform(0.1, 0.9, (10, 12))
    s0 = rng.uniform(50, 150, 10)
    path = tmp_path / "lib.npz"
    np.savez(path, signals=truth * s0[:, None], bvals=bvals, bvecs=bvecs, s0=s0)
    lib = load_library(path)
    assert lib.s0_source == "s0 array"
    np.testing.assert_allclose(lib.attenuation[:, match_columns(lib, bvals, bvecs)], truth, rtol=1e-6)


def test_a_table_that_does_not_cover_the_subject_says_what_is_missing(tmp_path, rng):
    bvals, bvecs = _table(rng)
    path = tmp_path / "lib.npz"
    np.savez(path, signals=np.ones((4, 13)), bvals=np.r_[0, bvals], bvecs=np.vstack([[0, 0, 0], bvecs]))
    lib = load_library(path)
    with pytest.raises(ValueError, match=r"lib.npz: the library does not cover 12 of the subject's 12 volumes \(b=2000"):
        match_columns(lib, np.full(12, 2000.0), bvecs)
    tilted = bvecs + 0.2 * np.roll(bvecs, 1, axis=1)  # directions more than 2 degrees away
    with pytest.raises(ValueError, match=f"within {ANGLE_TOLERANCE_DEG:g} degrees"):
        match_columns(lib, bvals, tilted)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(signals=np.full((3, 2), np.nan), bvals=[0, 1000], bvecs=np.eye(3)[:2]), "NaN or infinite"),
        (dict(signals=np.ones((3, 2)) * 2, bvals=[0, 1000], bvecs=np.eye(3)[:2], s0=np.ones(3)), r"outside \[0, 1.5\]"),
        (dict(signals=np.ones((3, 2)), bvals=[1000, 1000], bvecs=np.eye(3)[:2]), "no column with b <= 50"),
        (dict(signals=np.ones((3, 2)), bvals=[0, 1000, 2000], bvecs=np.eye(3)), "'bvals' has 3 values"),
        (dict(signals=np.ones((3, 2)), bvecs=np.eye(3)[:2]), r"lacks \['bvals'\]"),
        (dict(signals=np.zeros((3, 2)), bvals=[0, 1000], bvecs=np.eye(3)[:2]), "S0 that is not a positive"),
    ],
)
def test_bad_libraries_are_refused_naming_the_file(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        load_library(path)
    assert "bad.npz" in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="nope.npz: library file not found"):
        load_library(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
        load_library(tmp_path / "junk.npz")


def test_a_library_runs_as_a_generator_on_a_subject(tmp_path):
    """dipy's sample as the subject; a library saved like dipy's FORCE output (S0 = 100,
    one b0 column) on the sample's own table, in reverse order."""
    from helpers.contract import check_methods, method_name
    from helpers.scan.layouts import load_sample
    from helpers.generators.simulation import describe_generator, simulate

    subject = load_sample()
    rng = np.random.default_rng(5)
    truth = rng.uniform(0.2, 0.8, (30, subject.n_directions))
    order = np.arange(subject.n_directions)[::-1]
    path = tmp_path / "force_like.npz"
    np.savez(path, signals=np.hstack([np.full((30, 1), 100.0), 100 * truth[:, order]]),
             bvals=np.r_[0.0, subject.bvals[order]], bvecs=np.vstack([[0, 0, 0], subject.bvecs[order]]))
    spec = f"library:{path}"
    assert check_methods([spec]) == (spec,) and method_name(spec) == "force_like"
    clean, noisy = simulate(subject, spec, 500, seed=3, snr=20)
    nearest = np.abs(clean[:, None, :] - truth[None].astype(np.float32)).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-6
    # Rician noise at SNR 20 on top: the mean of noisy - clean is small and the spread is 1/20
    assert abs(float((noisy - clean).std()) - 0.05) < 0.01
    again, _ = simulate(subject, spec, 500, seed=3, snr=20)
    np.testing.assert_array_equal(clean, again)
    assert describe_generator(spec, subject)["unique_voxels"] == 30
    with pytest.raises(ValueError, match="nope.npz: library file not found"):
        simulate(subject, f"library:{tmp_path / 'nope.npz'}", 5, seed=0)
