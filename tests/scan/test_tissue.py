"""Tissue codes (0 none, 1 CSF, 2 GM, 3 WM) from FreeSurfer, FSL FAST and DTI; erosion;
nearest-neighbour lookup between grids. Every expected value is written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.scan.tissue import (
    CODES,
    dti_segmentation,
    erode,
    fast_labels_to_tissue,
    freesurfer_to_tissue,
    is_thin,
    nearest_neighbour_lookup,
    pve_to_tissue,
)


def test_a_fast_seg_map_reads_as_fsl_documents_it():
    # FSL FAST's _seg map, as its documentation numbers the classes: 1 CSF, 2 GM, 3 WM
    seg = np.array([0, 1, 2, 3, 3])
    codes = fast_labels_to_tissue(seg)
    names = {name: np.flatnonzero(codes == code).tolist() for name, code in CODES.items()}
    assert names == {"CSF": [1], "GM": [2], "WM": [3, 4]}


# FreeSurferColorLUT.txt label -> expected code
FS_CASES = [
    (0, 0),  # Unknown
    (2, 3),  # Left-Cerebral-White-Matter
    (41, 3),  # Right-Cerebral-White-Matter
    (7, 3),  # Left-Cerebellum-White-Matter
    (16, 3),  # Brain-Stem
    (77, 3),  # WM-hypointensities
    (251, 3),  # CC_Posterior
    (3, 2),  # Left-Cerebral-Cortex
    (42, 2),  # Right-Cerebral-Cortex
    (1000, 2),  # ctx-lh-unknown (an aparc cortical parcel)
    (1035, 2),  # ctx-lh-insula
    (2002, 2),  # ctx-rh-caudalanteriorcingulate
    (8, 2),  # Left-Cerebellum-Cortex
    (10, 2),  # Left-Thalamus
    (17, 2),  # Left-Hippocampus
    (58, 2),  # Right-Accumbens-area
    (4, 1),  # Left-Lateral-Ventricle
    (43, 1),  # Right-Lateral-Ventricle
    (14, 1),  # 3rd-Ventricle
    (24, 1),  # CSF
    (31, 1),  # Left-choroid-plexus
    (30, 0),  # Left-vessel
    (62, 0),  # Right-vessel
    (85, 3),  # Optic-Chiasm
]


def test_freesurfer_to_tissue_hand_listed_labels():
    labels = np.array([lab for lab, _ in FS_CASES])
    expected = np.array([code for _, code in FS_CASES], dtype=np.uint8)
    out = freesurfer_to_tissue(labels)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_freesurfer_to_tissue_keeps_shape_and_accepts_float_labels():
    labels = np.array([[[2.0, 3.0], [4.0, 0.0]]], dtype=np.float32)  # label maps stored as float
    np.testing.assert_array_equal(freesurfer_to_tissue(labels), [[[3, 2], [1, 0]]])


def test_fast_labels_pass_through_and_reject_others():
    np.testing.assert_array_equal(fast_labels_to_tissue(np.array([0.0, 1, 2, 3])), [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"seg\.nii\.gz.*holds \[4\]"):
        fast_labels_to_tissue(np.array([0, 1, 4]), source="seg.nii.gz")
    with pytest.raises(ValueError, match=r"seg\.nii\.gz.*whole numbers"):
        fast_labels_to_tissue(np.array([0, 1.5]), source="seg.nii.gz")


def test_pve_to_tissue_hand_made_fractions():
    #                  CSF   GM    WM        expected
    fractions = np.array(
        [
            [0.10, 0.20, 0.70],  # WM
            [0.80, 0.15, 0.05],  # CSF
            [0.05, 0.60, 0.35],  # GM
            [0.40, 0.35, 0.25],  # mixed, largest 0.40 < 0.5: none
            [0.30, 0.30, 0.40],  # mixed: none
            [0.20, 0.50, 0.30],  # exactly 0.5: GM
            [0.00, 0.00, 0.00],  # outside the brain: none
        ]
    )
    out = pve_to_tissue(fractions[:, 0], fractions[:, 1], fractions[:, 2])
    np.testing.assert_array_equal(out, [3, 1, 2, 0, 0, 2, 0])
    # a different threshold moves the mixed voxel
    out = pve_to_tissue(*fractions.T, threshold=0.4)
    assert out[3] == 1 and out[4] == 3


def test_dti_segmentation_thresholds():
    fa = np.array([0.29, 0.30, 0.80, 0.80, 0.10, 0.05])
    md = np.array([0.8e-3, 0.8e-3, 1.6e-3, 1.59e-3, 3.0e-3, 0.7e-3])
    # GM below FA 0.3; WM at FA >= 0.3; CSF at MD >= 1.6e-3 whatever the FA
    np.testing.assert_array_equal(dti_segmentation(fa, md), [2, 3, 1, 3, 1, 2])
    np.testing.assert_array_equal(dti_segmentation(fa, md, fa_wm=0.9, md_csf=3.5e-3), [2, 2, 2, 2, 2, 2])


def test_erode_3x3x3_cube_leaves_the_centre():
    vol = np.zeros((5, 5, 5), bool)
    vol[1:4, 1:4, 1:4] = True
    expected = np.zeros_like(vol)
    expected[2, 2, 2] = True
    np.testing.assert_array_equal(erode(vol), expected)
    # the edge of the volume counts as outside: a cube filling its array keeps only its centre
    out = erode(np.ones((3, 3, 3), bool))
    assert out.sum() == 1 and out[1, 1, 1]


def test_erode_is_6_connected():
    # a plus-shaped (6-neighbour) cross survives at its centre: diagonal neighbours
    # are not needed (a 26-connected erosion would remove it)
    vol = np.zeros((5, 5, 5), bool)
    vol[1:4, 2, 2] = vol[2, 1:4, 2] = vol[2, 2, 1:4] = True
    out = erode(vol)
    assert out.sum() == 1 and out[2, 2, 2]


@pytest.mark.parametrize("n_slices", [1, 2])
def test_erode_is_in_plane_on_a_slab(n_slices):
    # a 5x5 square in every slice: in-plane erosion leaves its 3x3 centre in each slice
    # (a 3-D erosion would leave nothing: every voxel touches the volume's edge in z)
    vol = np.zeros((7, 7, n_slices), bool)
    vol[1:6, 1:6] = True
    expected = np.zeros_like(vol)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(erode(vol), expected)
    # any thin axis: the slab lying along x
    np.testing.assert_array_equal(erode(np.moveaxis(vol, 2, 0)), np.moveaxis(expected, 2, 0))


def test_erode_three_slices_is_3d():
    vol = np.zeros((7, 7, 3), bool)
    vol[1:6, 1:6, :] = True
    expected = np.zeros_like(vol)
    expected[2:5, 2:5, 1] = True  # three slices: 3-D, the outer slices touch the edge in z
    np.testing.assert_array_equal(erode(vol), expected)


def test_is_thin():
    assert is_thin((104, 104, 2)) and is_thin((1, 50, 50)) and is_thin((10, 10, 1, 65))
    assert not is_thin((10, 10, 3)) and not is_thin((145, 174, 145, 288))


def test_empty_inputs_are_fine():
    assert not erode(np.zeros((4, 4, 2), bool)).any()
    assert not erode(np.zeros((1, 1, 1), bool)).any()
    out = dti_segmentation(np.zeros(0), np.zeros(0))
    assert out.shape == (0,) and out.dtype == np.uint8
    assert pve_to_tissue(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0,)
    # a scan whose labels hold no CSF: no voxel gets code 1, nothing raises
    assert (freesurfer_to_tissue(np.array([2, 3, 41, 42])) != 1).all()


def test_nearest_neighbour_lookup_on_a_2x_finer_grid(rng):
    # diffusion grid: 2 mm, x flipped (LAS); world = (10 - 2i, -10 + 2j, -8 + 2k)
    coarse = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -10], [0, 0, 2.0, -8], [0, 0, 0, 1]])
    # label grid: 1 mm, RAS, origins a quarter voxel off on each axis:
    # fine index = (15.25 - 2i, 2j + 0.25, 2k - 0.25) -> nearest (15 - 2i, 2j, 2k)
    fine = np.array([[1.0, 0, 0, -5.25], [0, 1.0, 0, -10.25], [0, 0, 1.0, -7.75], [0, 0, 0, 1]])
    volume = rng.permutation(24 * 20 * 16).reshape(24, 20, 16) + 1  # every value unique, > 0
    ii, jj, kk = np.meshgrid(np.arange(8), np.arange(10), np.arange(8), indexing="ij")
    indices = np.c_[ii.ravel(), jj.ravel(), kk.ravel()]
    out = nearest_neighbour_lookup(volume, fine, indices, coarse)
    expected = np.array([volume[15 - 2 * i, 2 * j, 2 * k] for i, j, k in indices])
    np.testing.assert_array_equal(out, expected)
    # positions outside the label grid read 0: i = 9 -> fine x = -2.75; k = 8 -> 16
    out = nearest_neighbour_lookup(volume, fine, np.array([[9, 0, 0], [0, 0, 8], [1, 2, 3]]), coarse)
    np.testing.assert_array_equal(out, [0, 0, volume[13, 4, 6]])
