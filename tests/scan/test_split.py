"""The fit / judge split of a scan's voxels and the block bootstrap, checked by hand.

Expected values come from the construction: a chessboard of 4x4x4 blocks on a grid whose
block counts and voxel counts are written out below; tensors with known eigenvalues on
the fit and on the judge voxels (so a pool that draws a judge voxel shows it); multinomial
moments for the bootstrap weights; b-value and diffusivity entering the signal only as
their product, exp(-b s D) = exp(-(s b) D), for the scaled generators.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.contract import check_methods
from helpers.generators.simulation import simulate, tissue_pools
from helpers.scan.split import block_halves, block_ids, block_split, block_weights
from helpers.scan.subject import Subject


def grid(shape):
    return np.argwhere(np.ones(shape, bool))


def hand_chessboard(indices, side):
    """Judge voxels by hand: block coordinates (index // side) summing to an odd number."""
    return ((np.asarray(indices) // side).sum(axis=1) % 2) == 1


# ----------------------------------------------------------------------------- 1. the split


@pytest.mark.parametrize(
    "shape, n_fit, n_judge, n_blocks",
    [
        # 12^3: 3x3x3 = 27 blocks of 64; 14 have an even coordinate sum (fit), 13 odd
        ((12, 12, 12), 14 * 64, 13 * 64, 27),
        # 20x20x2: 5x5x1 = 25 in-plane blocks of 4x4x2 = 32; 13 even, 12 odd
        ((20, 20, 2), 13 * 32, 12 * 32, 25),
        # 8x8x2: 2x2x1 = 4 blocks of 32; 2 even, 2 odd (the docstring's case)
        ((8, 8, 2), 64, 64, 4),
    ],
)
def test_fit_and_judge_parts_by_hand(shape, n_fit, n_judge, n_blocks):
    idx = grid(shape)
    judge, blocks, side = block_split(idx, shape)
    assert side == 4
    assert judge.dtype == bool and judge.shape == (len(idx),)
    assert int((~judge).sum()) == n_fit and int(judge.sum()) == n_judge
    assert n_fit + n_judge == len(idx)  # together every voxel, no voxel in both
    np.testing.assert_array_equal(judge, hand_chessboard(idx, 4))
    assert len(np.unique(blocks)) == n_blocks
    fit_vox = {tuple(v) for v in idx[~judge]}
    judge_vox = {tuple(v) for v in idx[judge]}
    assert fit_vox.isdisjoint(judge_vox) and len(fit_vox | judge_vox) == len(idx)
    for b in np.unique(blocks):  # a block never straddles the two parts
        members = blocks == b
        assert judge[members].all() or not judge[members].any()
        # and its voxels are the hand-computed cube
        assert len({tuple(c) for c in idx[members] // 4}) == 1


def test_two_slice_scan_is_split_in_plane():
    """On a 2-slice scan every block holds both slices, so a voxel and the voxel above it
    are always in the same part (a split across the slices would give each judge voxel a
    fit twin one slice away)."""
    shape = (20, 20, 2)
    idx = grid(shape)
    judge, blocks, _ = block_split(idx, shape)
    for b in np.unique(blocks):
        assert set(idx[blocks == b, 2]) == {0, 1}
    vol = np.zeros(shape, bool)
    vol[tuple(idx.T)] = judge
    np.testing.assert_array_equal(vol[..., 0], vol[..., 1])


def test_a_brain_shaped_mask_is_split_on_the_grid():
    """Only the brain voxels are listed; the colour still comes from the grid position."""
    shape = (12, 12, 12)
    ii, jj, kk = np.indices(shape)
    ball = (ii - 5.5) ** 2 + (jj - 5.5) ** 2 + (kk - 5.5) ** 2 <= 5.5**2
    idx = np.argwhere(ball)
    judge, blocks, side = block_split(idx, shape)
    assert side == 4
    np.testing.assert_array_equal(judge, hand_chessboard(idx, 4))
    assert judge.any() and (~judge).any()


def test_block_ids_by_hand():
    ids, coords = block_ids([[0, 0, 0], [3, 3, 1], [4, 0, 0], [0, 4, 1], [7, 7, 1]], (8, 8, 2))
    # blocks on a 2x2x1 grid numbered row-major: (bx, by, 0) -> 2 bx + by
    assert coords.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert ids.tolist() == [0, 0, 2, 1, 3]
    with pytest.raises(ValueError, match="outside"):
        block_ids([[8, 0, 0]], (8, 8, 2))
    with pytest.raises(ValueError, match="block"):
        block_ids([[0, 0, 0]], (8, 8, 2), block=0)


def test_tiny_scans_fall_back_to_a_voxel_chessboard():
    # 4x4x2 = 32 voxels: one block, so the block chessboard leaves the judge part empty;
    # the voxel chessboard gives 16 and 16
    idx = grid((4, 4, 2))
    judge, blocks, side = block_split(idx, (4, 4, 2))
    assert side == 1 and int(judge.sum()) == 16 and int((~judge).sum()) == 16
    np.testing.assert_array_equal(judge, idx.sum(axis=1) % 2 == 1)
    assert len(np.unique(blocks)) == 32  # every voxel its own block
    # 5x4x1 = 20 voxels: the voxel chessboard gives 10 and 10, just enough
    judge, _, side = block_split(grid((5, 4, 1)), (5, 4, 1))
    assert side == 1 and int(judge.sum()) == 10
    # 3x3x2 = 18 voxels (< 2 x 10): not split
    assert block_split(grid((3, 3, 2)), (3, 3, 2)) == (None, None, 0)


# ----------------------------------------------------------------------------- 2. Subject parts


def _table(rng, n=20):
    g = rng.standard_normal((n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.full(n, 1000.0), g


FIT_EVALS = np.array([1.7e-3, 0.3e-3, 0.3e-3])  # FA 0.80
JUDGE_EVALS = np.array([1.2e-3, 0.15e-3, 0.15e-3])  # FA 0.86: also a "single fibre"


def split_subject(rng, shape=(8, 8, 8)):
    """An all-WM 8x8x8 subject: fit voxels hold axis-aligned tensors with FIT_EVALS, judge
    voxels JUDGE_EVALS (attenuation exp(-b Σ λ_k g_k²), noise-free)."""
    b, g = _table(rng)
    idx = grid(shape)
    judge = hand_chessboard(idx, 4)
    ev = np.where(judge[:, None], JUDGE_EVALS, FIT_EVALS)
    att = np.exp(-b[None, :] * (ev @ (g**2).T)).astype(np.float32)
    blocks = block_ids(idx, shape)[0]
    return Subject(attenuation=att, bvals=b, bvecs=g, indices=idx, shape=shape, affine=np.eye(4),
                   tissue=np.full(len(idx), 3, np.uint8), s0=np.linspace(500, 1500, len(idx)).astype(np.float32),
                   snr=25.0, sigma=40.0, info={"subject": "split"}, judge=judge, blocks=blocks)


def test_subject_parts_are_disjoint_and_sized(rng):
    s = split_subject(rng)
    assert s.is_split and s.n_voxels == 512
    # 8^3: 2x2x2 blocks of 64, 4 of each colour
    assert s.n_fit_voxels == 256 and s.n_judge_voxels == 256
    fit, jud = s.fit_part(), s.judge_part()
    assert fit.n_voxels == 256 and jud.n_voxels == 256
    assert not fit.is_split and not jud.is_split
    assert {tuple(v) for v in fit.indices}.isdisjoint({tuple(v) for v in jud.indices})
    np.testing.assert_array_equal(jud.indices, s.indices[s.judge])
    np.testing.assert_array_equal(fit.attenuation, s.attenuation[~s.judge])
    np.testing.assert_array_equal(fit.s0, s.s0[~s.judge])
    np.testing.assert_array_equal(jud.blocks, s.blocks[s.judge])
    assert fit.sigma == s.sigma and fit.bvals is s.bvals
    assert s.fit_part() is fit  # computed once


def test_unsplit_subject_is_its_own_part(rng):
    s = split_subject(rng)
    whole = Subject(attenuation=s.attenuation, bvals=s.bvals, bvecs=s.bvecs, indices=s.indices, shape=s.shape,
                    affine=s.affine, tissue=s.tissue, s0=s.s0)
    assert not whole.is_split and whole.fit_part() is whole and whole.judge_part() is whole
    assert whole.n_fit_voxels == whole.n_judge_voxels == 512


def test_parts_keep_the_whole_subjects_erosion(rng):
    """Eroding the whole 8^3 cube keeps its 6^3 interior; each of the 4 fit blocks holds a
    3^3 corner of it, so the fit part's eroded WM has 4 x 27 = 108 voxels. Eroding the fit
    part on its own grid would also strip every face it shares with a judge block."""
    s = split_subject(rng)
    interior = ((s.indices >= 1) & (s.indices <= 6)).all(axis=1)
    assert int(s.tissue_mask("WM", eroded=True).sum()) == 216
    fit = s.fit_part()
    np.testing.assert_array_equal(fit.tissue_mask("WM", eroded=True), interior[~s.judge])
    assert int(fit.tissue_mask("WM", eroded=True).sum()) == 108


def tissue_subject(rng):
    """8x8x8: GM on the slab i = 0, CSF on i = 7, WM between. Fit and judge voxels of each
    tissue hold different, known, axis-aligned tensors."""
    b, g = _table(rng)
    shape = (8, 8, 8)
    idx = grid(shape)
    judge = hand_chessboard(idx, 4)
    tissue = np.where(idx[:, 0] == 0, 2, np.where(idx[:, 0] == 7, 1, 3)).astype(np.uint8)
    fit_ev = {3: FIT_EVALS, 2: [0.8e-3] * 3, 1: [3.0e-3] * 3}
    judge_ev = {3: JUDGE_EVALS, 2: [0.6e-3] * 3, 1: [2.5e-3] * 3}
    ev = np.array([judge_ev[t] if j else fit_ev[t] for t, j in zip(tissue, judge)])
    att = np.exp(-b[None, :] * (ev @ (g**2).T)).astype(np.float32)
    return Subject(attenuation=att, bvals=b, bvecs=g, indices=idx, shape=shape, affine=np.eye(4), tissue=tissue,
                   s0=np.ones(len(idx), np.float32), snr=25.0, info={"subject": "split"}, judge=judge,
                   blocks=block_ids(idx, shape)[0])


def test_tissue_pools_of_a_split_subject_draw_only_fit_voxels(rng):
    s = tissue_subject(rng)
    pools = tissue_pools(s, min_pool=20, wm_fa_min=0.7)
    # WM is i = 1..6; eroded (in the whole subject) i = 2..5, j, k = 1..6. Each of the 4
    # fit blocks holds 2 x 3 x 3 of that: 72 voxels, every one with FA 0.80 > 0.7
    assert len(pools.wm) == 72
    np.testing.assert_allclose(pools.wm, np.tile(FIT_EVALS, (72, 1)), rtol=1e-3, atol=1e-7)
    assert np.abs(pools.wm[:, 0] - JUDGE_EVALS[0]).min() > 4e-4  # no judge voxel's tensor
    # GM and CSF are one-voxel slabs: eroded empty, so the uneroded slab is used; the fit
    # half of a 64-voxel slab is 32 voxels (2 of its 4 blocks)
    assert len(pools.gm) == 32 and len(pools.csf) == 32
    np.testing.assert_allclose(pools.gm, 0.8e-3, rtol=1e-3)
    np.testing.assert_allclose(pools.csf, 3.0e-3, rtol=1e-3)
    # the construction: on the whole subject the 256 - 32 - 32 judge WM voxels fit to their own tensors
    whole_ev = s.tensor().evals
    np.testing.assert_allclose(whole_ev[s.judge & (s.tissue == 3)], np.tile(JUDGE_EVALS, (192, 1)), rtol=1e-3, atol=1e-7)


def test_save_load_keeps_the_split(rng, tmp_path):
    s = split_subject(rng)
    s.save(tmp_path)
    back = Subject.load(tmp_path)
    assert back.is_split
    np.testing.assert_array_equal(back.judge, s.judge)
    np.testing.assert_array_equal(back.blocks, s.blocks)
    assert back.n_fit_voxels == 256 and back.n_judge_voxels == 256
    np.testing.assert_array_equal(back.judge_part().indices, s.indices[s.judge])
    # an unsplit subject stays unsplit
    whole = Subject(attenuation=s.attenuation, bvals=s.bvals, bvecs=s.bvecs, indices=s.indices, shape=s.shape,
                    affine=s.affine, tissue=s.tissue, s0=s.s0)
    whole.save(tmp_path / "whole")
    assert not Subject.load(tmp_path / "whole").is_split


def test_a_judge_mask_of_the_wrong_length_is_refused(rng):
    s = split_subject(rng)
    with pytest.raises(ValueError, match="judge"):
        Subject(attenuation=s.attenuation, bvals=s.bvals, bvecs=s.bvecs, indices=s.indices, shape=s.shape,
                affine=s.affine, tissue=s.tissue, s0=s.s0, judge=s.judge[:-1])


# ----------------------------------------------------------------------------- 9. block bootstrap


def test_block_weights_resample_whole_blocks():
    # 6 blocks of unequal sizes 1..6 voxels (21 voxels), shuffled order
    rng = np.random.default_rng(3)
    blocks = rng.permutation(np.repeat(np.array([10, 20, 30, 40, 50, 60]), [1, 2, 3, 4, 5, 6]))
    w = block_weights(blocks, 4000, np.random.default_rng(1))
    assert w.shape == (4000, 21)
    assert np.all(w == np.round(w)) and w.min() >= 0
    # voxels of one block share a weight in every draw
    for b in np.unique(blocks):
        cols = w[:, blocks == b]
        assert (cols == cols[:, :1]).all()
    # the block counts of a draw (one voxel per block) are a multinomial draw of 6 blocks:
    # they sum to 6, and the voxel weights to the voxels of the blocks drawn
    first = np.array([np.flatnonzero(blocks == b)[0] for b in np.unique(blocks)])
    counts = w[:, first]
    sizes = np.array([1, 2, 3, 4, 5, 6])
    assert (counts.sum(axis=1) == 6).all()
    np.testing.assert_array_equal(w.sum(axis=1), counts @ sizes)
    # multinomial(6, 1/6) moments: mean 1, variance 6 (1/6)(5/6) = 5/6 per block
    assert np.abs(counts.mean(axis=0) - 1).max() < 4 * np.sqrt(5 / 6 / 4000)
    np.testing.assert_allclose(counts.var(axis=0), 5 / 6, rtol=0.1)
    # equal-size blocks: every draw's weights sum to the number of voxels
    eq = block_weights(np.repeat(np.arange(5), 8), 100, 0)
    assert (eq.sum(axis=1) == 40).all()
    # seeded
    np.testing.assert_array_equal(block_weights(blocks, 10, 7), block_weights(blocks, 10, 7))


def test_block_halves_take_whole_blocks():
    blocks = np.repeat(np.arange(9), 5)
    a = block_halves(blocks, 0)
    chosen = np.unique(blocks[a])
    assert len(chosen) == 4  # 9 // 2 blocks, all 5 voxels of each
    assert a.sum() == 20
    assert not np.isin(blocks[~a], chosen).any()
    with pytest.raises(ValueError, match="two"):
        block_halves(np.zeros(5, int), 0)


# ----------------------------------------------------------------------------- 10. scaled generators


def _simple_subject(bvals, bvecs):
    n = 20
    return Subject(attenuation=np.full((n, len(bvals)), 0.5, np.float32), bvals=np.asarray(bvals, float),
                   bvecs=bvecs, indices=grid((5, 4, 1)), shape=(5, 4, 1), affine=np.eye(4),
                   tissue=np.full(n, 3, np.uint8), s0=np.ones(n, np.float32), snr=30.0)


@pytest.mark.parametrize("base, scale", [("Syn", 2.0), ("Syn", 0.8), ("FORCE", 1.5)])
def test_a_scaled_generator_is_the_same_draw_on_scaled_b_values(rng, base, scale):
    """Every diffusivity D enters the signal as exp(-b D): scaling all of them by s on
    b-values b is the unscaled generator on b-values s b, draw for draw (same seed)."""
    b = np.r_[np.full(10, 1000.0), np.full(10, 2000.0)]
    _, g = _table(rng, 20)
    scaled = simulate(_simple_subject(b, g), f"{base}*{scale:g}", 300, 11, snr="none")[0]
    plain = simulate(_simple_subject(scale * b, g), base, 300, 11, snr="none")[0]
    np.testing.assert_allclose(scaled, plain, rtol=1e-5, atol=1e-6)
    # and it is not the unscaled generator on the same table
    assert np.abs(scaled - simulate(_simple_subject(b, g), base, 300, 11, snr="none")[0]).max() > 0.01


def test_check_methods_takes_scaled_built_ins_only():
    assert check_methods(["Syn*1.2", "FORCE*0.8", "Sampled*1", "Syn"]) == ("Syn*1.2", "FORCE*0.8", "Sampled*1", "Syn")
    for bad in ("RandomWM*2", "Syn*0", "Syn*abc", "Syn*11", "Syn*-1"):
        with pytest.raises(ValueError, match=bad.replace("*", r"\*")):
            check_methods([bad])


# ----------------------------------------------------------------------------- the loader


def test_the_loader_splits_and_estimates_noise_from_fit_voxels_only(tmp_path, rng):
    """Two scans identical on the fit voxels; on the judge voxels the second has ten times
    the noise. The loader's split is the hand chessboard of the grid, and its noise
    estimate, taken from the fit part, is the same for both."""
    from conftest import build_scan
    from helpers.scan.loading import load_dwi
    import nibabel as nib

    labels = np.full((12, 12, 12), 3, np.int16)
    scan = build_scan(tmp_path / "a", rng, labels, n_b0=4, sigma=20.0)
    a = load_dwi(scan.dwi, scan.bval, scan.bvec, mask=scan.mask)
    assert a.is_split
    np.testing.assert_array_equal(a.judge, hand_chessboard(a.indices, 4))
    assert a.n_fit_voxels == 14 * 64 and a.n_judge_voxels == 13 * 64
    assert "896 fit voxels, 832 judge voxels" in a.info["split"]

    data = np.asarray(nib.load(scan.dwi).dataobj).astype(np.float32)
    ii, jj, kk = np.indices(labels.shape)
    judge_vox = ((ii // 4 + jj // 4 + kk // 4) % 2) == 1
    noisy = data.copy()
    noisy[judge_vox] = np.abs(noisy[judge_vox] + rng.normal(0, 200.0, noisy[judge_vox].shape))
    path = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(noisy, scan.affine), path)
    b = load_dwi(path, scan.bval, scan.bvec, mask=scan.mask)
    assert b.sigma == pytest.approx(a.sigma, rel=1e-9)
    assert 10.0 < a.sigma < 40.0  # the 20 that was added, roughly (not the 200)
