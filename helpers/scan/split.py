"""Fit voxels and judge voxels: a spatial split of a scan's brain voxels, and the block
bootstrap that resamples the judge part.

Everything fitted to a subject (the tissue pools of Sampled, SampleAndMean and
SubjectFORCE, the noise estimate and its per-voxel distribution, any calibration) comes
from the *fit* part; every judge scores the *judge* part only, so no judge sees a voxel a
generator was built from (docs/method.md, "Fit voxels and judge voxels").

The split is by blocks, not by voxels: neighbouring voxels share partial volumes and
noise structure, so a voxel-level split would leave each judge voxel with a near twin in
the fit part. The grid is cut into cubes of :data:`BLOCK` voxels a side (8 mm at 2 mm; an
axis shorter than that is one block thick, so a scan of one or two slices is cut
in-plane), and the cubes are coloured like a 3-D chessboard: blocks whose indices sum to
an even number are fit blocks, the others judge blocks. Every region of the brain then
has both, and the two parts hold about half the voxels each.

The same blocks are the unit of the judge part's bootstrap (:func:`block_weights`) and of
its two halves, the real-vs-real floor (:func:`block_halves`).

This module is numerical: it imports numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "MIN_PART", "block_ids", "block_split", "block_halves", "block_weights"]

BLOCK = 4
"""Side of a split block, in voxels."""

MIN_PART = 10
"""Fewest voxels either part may have; a scan too small for a block split is split by
voxels (a voxel chessboard), and one of fewer than twice this is not split at all."""


def _check_indices(indices, shape):
    indices = np.asarray(indices)
    shape = tuple(int(s) for s in tuple(shape)[:3])
    if indices.ndim != 2 or indices.shape[1] != 3 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be an (n, 3) integer array, got {indices.shape} {indices.dtype}")
    if len(indices) and (indices.min() < 0 or np.any(indices.max(axis=0) >= shape)):
        raise ValueError(f"indices fall outside the grid of shape {shape}")
    return indices, shape


def block_ids(indices, shape, *, block=BLOCK):
    """The block of each voxel: cubes of ``block`` voxels a side, numbered over the grid.

    Parameters
    ----------
    indices : (n, 3) int array_like
        Grid coordinates of the voxels.
    shape : tuple of int
        Grid shape.
    block : int
        Side of a block in voxels (an axis shorter than it is one block thick).

    Returns
    -------
    ids : (n,) int64 ndarray
        Flat block number of each voxel.
    coords : (n, 3) int64 ndarray
        The block's coordinates (``index // block``).

    Examples
    --------
    >>> ids, coords = block_ids([[0, 0, 0], [3, 0, 1], [4, 0, 0]], (8, 4, 2))
    >>> ids.tolist(), coords[:, 0].tolist()
    ([0, 0, 1], [0, 0, 1])
    """
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive int (voxels), got {block!r}")
    indices, shape = _check_indices(indices, shape)
    coords = indices.astype(np.int64) // int(block)
    n_blocks = [max(1, -(-s // int(block))) for s in shape]
    ids = np.ravel_multi_index(coords.T, n_blocks) if len(coords) else np.zeros(0, np.int64)
    return ids.astype(np.int64), coords


def block_split(indices, shape, *, block=BLOCK, min_part=MIN_PART):
    """Split voxels into a fit part and a judge part by a chessboard of blocks.

    Parameters
    ----------
    indices : (n, 3) int array_like
        Grid coordinates of the brain voxels.
    shape : tuple of int
        Grid shape.
    block : int
        Side of a block in voxels.
    min_part : int
        When the block chessboard leaves either part with fewer voxels than this, the
        voxels themselves are coloured like a chessboard (blocks of one voxel); when even
        that fails (fewer than ``2 min_part`` voxels) nothing is split.

    Returns
    -------
    judge : (n,) bool ndarray or None
        True for judge voxels, False for fit voxels; None when the scan is too small to
        split.
    blocks : (n,) int64 ndarray or None
        The block of each voxel (the bootstrap's unit).
    block_used : int
        The block side that was used (``block``, or 1 for the voxel chessboard; 0 when
        not split).

    Examples
    --------
    >>> idx = np.argwhere(np.ones((8, 8, 2), bool))
    >>> judge, blocks, side = block_split(idx, (8, 8, 2))
    >>> int(judge.sum()), int((~judge).sum()), side, len(np.unique(blocks))
    (64, 64, 4, 4)
    """
    indices, shape = _check_indices(indices, shape)
    for side in (int(block), 1):
        ids, coords = block_ids(indices, shape, block=side)
        judge = (coords.sum(axis=1) % 2) == 1
        if judge.sum() >= min_part and (~judge).sum() >= min_part:
            return judge, ids, side
        if side == 1:
            break
    return None, None, 0


def _check_blocks(blocks):
    blocks = np.asarray(blocks)
    if blocks.ndim != 1 or len(blocks) == 0:
        raise ValueError(f"blocks must be a non-empty (n,) array of block numbers, got shape {blocks.shape}")
    return blocks


def block_halves(blocks, rng):
    """Two disjoint halves of voxels, by whole blocks: a random half of the blocks each.

    Parameters
    ----------
    blocks : (n,) array_like
        Block number of each voxel (at least two distinct blocks).
    rng : seed or numpy Generator

    Returns
    -------
    (n,) bool ndarray
        True for the voxels of half A (the others are half B).
    """
    blocks = _check_blocks(blocks)
    unique = np.unique(blocks)
    if len(unique) < 2:
        raise ValueError("block_halves: the voxels lie in one block; two halves need at least two")
    rng = np.random.default_rng(rng)
    chosen = rng.permutation(unique)[: len(unique) // 2]
    return np.isin(blocks, chosen)


def block_weights(blocks, n_draws, rng):
    """Block-bootstrap weights: each draw resamples the blocks with replacement.

    Parameters
    ----------
    blocks : (n,) array_like
        Block number of each voxel.
    n_draws : int
    rng : seed or numpy Generator

    Returns
    -------
    (n_draws, n) float64 ndarray
        Weight of each voxel in each draw: how many times its block was drawn. A weighted
        mean with these weights is the statistic on the resampled scan.

    Notes
    -----
    Resampling blocks rather than voxels keeps the spatial correlation of neighbouring
    voxels inside each draw (Künsch 1989), so the interval reflects how much the score
    would move on another scan region of the same size.
    """
    blocks = _check_blocks(blocks)
    unique, inverse = np.unique(blocks, return_inverse=True)
    rng = np.random.default_rng(rng)
    counts = rng.multinomial(len(unique), np.full(len(unique), 1.0 / len(unique)), size=int(n_draws))
    return counts[:, inverse].astype(float)
