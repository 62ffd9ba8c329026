"""Gradient tables and shells: reading and checking b-values and b-vectors (directly and
through a loader), finding and selecting shells, enough directions for the tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _match, _square, build_scan, random_unit_vectors, write_gradients
from helpers.scan.gradients import count_directions, find_shells, select_shell
from helpers.scan.layouts import load_hcp
from helpers.scan.loading import load_dwi


# ----------------------------------------------------------------------------- shells


def test_find_shells_groups_jittered_b_values():
    b = [0, 5, 990, 1010, 1000, 2005, 1995, 3000, 3000]
    assert find_shells(b) == [
        {"b": 1000.0, "n": 3, "b_min": 990.0, "b_max": 1010.0},
        {"b": 2000.0, "n": 2, "b_min": 1995.0, "b_max": 2005.0},
        {"b": 3000.0, "n": 2, "b_min": 3000.0, "b_max": 3000.0},
    ]
    # a q-space sweep in small steps is one spread-out group
    (sweep,) = find_shells(np.linspace(300, 4000, 101))
    assert (sweep["n"], sweep["b_min"], sweep["b_max"]) == (101, 300.0, 4000.0)


def test_select_shell_number_list_and_all():
    b = np.array([0, 1000, 2000, 5, 1010, 3000, 2000, 990])
    np.testing.assert_array_equal(select_shell(b, 1000), [1, 4, 7])
    np.testing.assert_array_equal(select_shell(b, 1000.0), [1, 4, 7])
    np.testing.assert_array_equal(select_shell(b, [3000, 1000]), [1, 4, 5, 7])  # file order
    np.testing.assert_array_equal(select_shell(b, "all"), [1, 2, 4, 5, 6, 7])
    with pytest.raises(ValueError, match=r"bvals\.txt: no volume in the b=1500, 2500 shells \(±100\)"):
        select_shell(b, [1000, 1500, 2500], source="bvals.txt")
    with pytest.raises(ValueError, match="shell must be a b-value, a list of b-values or 'all'"):
        select_shell(b, "everything")
    with pytest.raises(ValueError, match="no diffusion-weighted volume"):
        select_shell([0, 0, 5], "all", source="b.txt")


def test_count_directions_ignores_sign_and_near_duplicates():
    g = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1], [np.cos(0.01), np.sin(0.01), 0]])
    assert count_directions(g) == 3  # 0.57 degrees from x: the same axis
    assert count_directions(g, degrees=0.1) == 4
    assert count_directions(np.zeros((0, 3))) == 0


# ----------------------------------------------------------------------------- gradient files


def test_bval_bvec_counts_disagree(hcp):
    write_gradients(hcp.bval, hcp.bvec, hcp.bvals, hcp.bvecs[:-1])
    with pytest.raises(ValueError, match=_match(hcp.bvec, "27 b-vectors", str(hcp.bval), "28 b-values")):
        load_hcp(hcp.root, hcp.subject_id)


def test_gradient_and_volume_counts_disagree(hcp):
    write_gradients(hcp.bval, hcp.bvec, hcp.bvals[:-1], hcp.bvecs[:-1])
    with pytest.raises(ValueError, match=_match(hcp.dwi, "28 volumes", "27 b-values")):
        load_hcp(hcp.root, hcp.subject_id)


def test_no_b0(hcp):
    bvals = np.where(hcp.bvals <= 50, 100.0, hcp.bvals)
    write_gradients(hcp.bval, hcp.bvec, bvals, np.where(hcp.bvals[:, None] <= 50, [1.0, 0, 0], hcp.bvecs))
    with pytest.raises(ValueError, match=_match(hcp.dwi, "no b0 volume")):
        load_hcp(hcp.root, hcp.subject_id)


def test_no_volume_in_requested_shell(hcp):
    with pytest.raises(ValueError, match=_match(hcp.bval, "no volume in the b=1500 shell", "1000", "2000", "3000")):
        load_hcp(hcp.root, hcp.subject_id, shell=1500, shell_tolerance=100)


def test_bvecs_not_unit_length(hcp):
    bvecs = hcp.bvecs.copy()
    i = int(hcp.shell_idx[2])
    bvecs[i] *= 1.1
    write_gradients(hcp.bval, hcp.bvec, hcp.bvals, bvecs)
    with pytest.raises(ValueError, match=_match(hcp.bvec, "not unit length", f"volume {i}", "norm 1.1")):
        load_hcp(hcp.root, hcp.subject_id)


def test_zero_bvecs_at_b0_are_fine(hcp):
    # the fixture stores zero vectors at b0; a loader rejecting them would fail here
    assert np.all(hcp.bvecs[hcp.b0_idx] == 0)
    s = load_dwi(hcp.dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path)
    assert s.n_voxels == hcp.mask.sum()


def test_odd_gradient_files_give_the_same_subject(hcp, hcp_subject):
    """b-values in a column, b-vectors k x 3 with NaN at b0: read as the FSL layout is."""
    np.savetxt(hcp.bval, hcp.bvals[:, None], fmt="%g")
    bvecs = hcp.bvecs.copy()
    bvecs[hcp.b0_idx] = np.nan
    np.savetxt(hcp.bvec, bvecs, fmt="%.10f")
    s = load_hcp(hcp.root, hcp.subject_id)
    np.testing.assert_array_equal(s.bvals, hcp_subject.bvals)
    np.testing.assert_array_equal(s.bvecs, hcp_subject.bvecs)
    np.testing.assert_array_equal(s.attenuation, hcp_subject.attenuation)


def test_nan_b_value_is_an_error(hcp):
    bvals = hcp.bvals.copy()
    bvals[3] = np.nan
    write_gradients(hcp.bval, hcp.bvec, bvals, hcp.bvecs)
    with pytest.raises(ValueError, match=_match(hcp.bval, "finite and >= 0", "volume 3")):
        load_hcp(hcp.root, hcp.subject_id)


# ----------------------------------------------------------------------------- directions for the tensor


def test_fewer_than_six_directions_at_low_b_is_a_clear_error(hcp):
    # b=2000 alone: no volume with b <= 1500
    with pytest.raises(ValueError, match=_match(hcp.bval, "at least 6", "shell 2000", "0 non-collinear",
                                                "~1000 (9 volumes", "~2000 (8", "~3000 (7", "dti_max_b")):
        load_hcp(hcp.root, hcp.subject_id, shell=2000)
    # ... which dti_max_b fixes
    s = load_hcp(hcp.root, hcp.subject_id, shell=2000, dti_max_b=2500)
    assert s.dti_columns.all() and s.n_directions == 8


def test_five_directions_repeated_is_a_clear_error(hcp, rng):
    bvecs = hcp.bvecs.copy()
    shell = hcp.shell_idx
    five = random_unit_vectors(rng, 5)
    bvecs[shell] = five[np.arange(len(shell)) % 5] * np.where(np.arange(len(shell)) % 2, 1, -1)[:, None]
    write_gradients(hcp.bval, hcp.bvec, hcp.bvals, bvecs)
    with pytest.raises(ValueError, match=_match(hcp.bval, "5 non-collinear directions", "9 with b <= 1500")):
        load_hcp(hcp.root, hcp.subject_id)


def test_coplanar_directions_do_not_span_the_tensor(hcp):
    bvecs = hcp.bvecs.copy()
    angles = np.linspace(0, np.pi, len(hcp.shell_idx), endpoint=False)
    bvecs[hcp.shell_idx] = np.c_[np.cos(angles), np.sin(angles), np.zeros_like(angles)]
    write_gradients(hcp.bval, hcp.bvec, hcp.bvals, bvecs)
    with pytest.raises(ValueError, match=_match(hcp.bval, "9 non-collinear directions", "do not span the tensor")):
        load_hcp(hcp.root, hcp.subject_id)


def test_q_space_sweep_needs_shell_all(tmp_path, rng):
    """101 volumes at b from 300 to 4000 (the issue's q-space crop): the default shell
    keeps a handful of volumes and says so clearly; ``shell: all`` loads every one, and
    the tensor uses those with b <= 1500."""
    labels = _square((6, 6, 3), 1, 5, 3, 2)
    b = np.round(np.linspace(300, 4000, 101))
    scan = build_scan(tmp_path, rng, labels, n_b0=1, shells=[(v, 1) for v in b])
    near = int((np.abs(b - 1000) <= 100).sum())
    assert near < 6
    with pytest.raises(ValueError, match=_match(scan.bval, f"have {near} non-collinear", "300-4000 (101 volumes")):
        load_dwi(scan.dwi, scan.bval, scan.bvec, mask=scan.mask)
    s = load_dwi(scan.dwi, scan.bval, scan.bvec, mask=scan.mask, shell="all")
    assert s.n_directions == 101 and s.dti_columns.sum() == int((b <= 1500).sum())
    np.testing.assert_array_equal(s.bvals, b)
