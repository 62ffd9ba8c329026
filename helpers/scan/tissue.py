"""White matter, grey matter and CSF: from FreeSurfer labels, FSL FAST, or DTI thresholds.

Tissue is coded as small integers everywhere in the package: 0 none, 1 CSF, 2 GM, 3 WM
(FSL FAST's ``_seg`` convention), so that one label volume holds all three masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "CODES",
    "freesurfer_to_tissue",
    "fast_labels_to_tissue",
    "pve_to_tissue",
    "dti_segmentation",
    "erode",
    "nearest_neighbour_lookup",
]

CODES = {"CSF": 1, "GM": 2, "WM": 3}

# FreeSurfer aseg labels (FreeSurferColorLUT.txt). Cortical parcels of aparc+aseg
# (1000-1035, 2000-2035) are GM. Labels not listed (unknown, vessels, optic nerve,
# non-WM hypointensities ...) belong to no tissue.
_FS_WM = [2, 41, 7, 46, 16, 28, 60, 77, 78, 79, 85, 192, 251, 252, 253, 254, 255]
_FS_GM = [3, 42, 8, 47, 10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58]
_FS_CSF = [4, 5, 14, 15, 24, 31, 43, 44, 63, 72]


def freesurfer_to_tissue(labels):
    """Map FreeSurfer ``aseg``/``aparc+aseg`` labels to tissue codes.

    WM: cerebral and cerebellar white matter, brainstem, ventral DC, WM hypointensities,
    optic chiasm, corpus callosum. GM: cortex (label 3/42 and the aparc parcels
    1000-2999), cerebellar cortex, deep grey nuclei. CSF: ventricles, CSF, choroid plexus.

    Parameters
    ----------
    labels : ndarray of int
        Any shape.

    Returns
    -------
    ndarray of uint8, same shape: 0 none, 1 CSF, 2 GM, 3 WM.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[np.isin(labels, _FS_CSF)] = CODES["CSF"]
    out[np.isin(labels, _FS_GM) | ((labels >= 1000) & (labels < 3000))] = CODES["GM"]
    out[np.isin(labels, _FS_WM)] = CODES["WM"]
    return out


def fast_labels_to_tissue(labels, *, source="labels"):
    """Check an FSL FAST ``_seg``-style map (0 none, 1 CSF, 2 GM, 3 WM) and return it."""
    labels = np.asarray(labels)
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise ValueError(f"{source}: tissue label map must hold whole numbers 0-3")
    bad = np.setdiff1d(np.unique(labels), [0, 1, 2, 3])
    if bad.size:
        raise ValueError(f"{source}: tissue label map holds {bad[:5].tolist()}; expected 0 none, 1 CSF, 2 GM, 3 WM")
    return labels.astype(np.uint8)


def pve_to_tissue(csf, gm, wm, *, threshold=0.5):
    """FSL FAST partial volume maps (``pve_0/1/2`` = CSF/GM/WM) to tissue codes.

    A voxel belongs to the tissue with the largest fraction when that fraction is at least
    ``threshold``; otherwise (a mixed voxel) to none.
    """
    pve = np.stack([np.asarray(csf), np.asarray(gm), np.asarray(wm)], axis=-1)
    best = pve.argmax(axis=-1)
    return np.where(pve.max(axis=-1) >= threshold, best + 1, 0).astype(np.uint8)


def dti_segmentation(fa, md, *, fa_wm=0.3, md_csf=1.6e-3):
    """Approximate tissue classes from DTI, for scans without a tissue map.

    CSF where MD >= ``md_csf`` (mm²/s; free water is 3e-3), else WM where FA >= ``fa_wm``,
    else GM. Partial volume and crossing fibres make this approximate: reports that use it
    say so.
    """
    fa = np.asarray(fa)
    md = np.asarray(md)
    out = np.full(fa.shape, CODES["GM"], dtype=np.uint8)
    out[fa >= fa_wm] = CODES["WM"]
    out[md >= md_csf] = CODES["CSF"]
    return out


THIN = 2
"""A grid axis with at most this many voxels is a slab: erosion stays in-plane."""


def erode(mask, *, iterations=1):
    """Binary erosion by one voxel, outside the volume counting as empty.

    6-connected in 3-D. Along an axis with at most :data:`THIN` voxels (a scan of one or
    two slices) the structuring element has no neighbours, so the erosion is in-plane:
    eroding across two slices would leave nothing.

    Examples
    --------
    >>> m = np.ones((5, 5, 2), bool)
    >>> int(erode(m).sum())  # the 3x3 centre of each slice
    18
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    for axis, size in enumerate(mask.shape):
        if size <= THIN:
            index = [slice(None)] * mask.ndim
            index[axis] = [0, 2]
            structure[tuple(index)] = False
    return ndimage.binary_erosion(mask, structure=structure, iterations=iterations)


def is_thin(shape):
    """True when the grid has an axis of at most :data:`THIN` voxels (eroded in-plane)."""
    return any(int(s) <= THIN for s in shape[:3])


def nearest_neighbour_lookup(volume, volume_affine, indices, target_affine):
    """Values of ``volume`` at the world positions of voxel ``indices`` of another grid.

    Nearest-neighbour resampling restricted to the voxels that are needed (for example a
    0.7 mm ``aparc+aseg`` onto the brain voxels of a 1.25 mm diffusion grid).

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
    volume_affine, target_affine : (4, 4) ndarray
        Voxel-to-world affines of ``volume`` and of the grid ``indices`` refer to.
    indices : (n, 3) int ndarray

    Returns
    -------
    (n,) ndarray; 0 where the position falls outside ``volume``.
    """
    vox2vox = np.linalg.solve(volume_affine, target_affine)
    ijk = np.asarray(indices, dtype=float) @ vox2vox[:3, :3].T + vox2vox[:3, 3]
    ijk = np.floor(ijk + 0.5).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(volume.shape[:3])), axis=1)
    out = np.zeros(len(ijk), dtype=np.asarray(volume).dtype)
    i, j, k = ijk[inside].T
    out[inside] = np.asarray(volume)[i, j, k]
    return out
