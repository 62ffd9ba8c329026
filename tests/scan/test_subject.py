"""The Subject: saved and read back, its tissue masks, the volumes its tensor fit uses.

Expected values come from the fixtures' ground truth (tensors and S0 chosen by the test)
or from reading the files with nibabel directly; never from the loader itself.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import _match, save_nifti
from helpers.scan.layouts import load_hcp
from helpers.scan.subject import Subject


# ----------------------------------------------------------------------------- save / load


def test_subject_save_load_round_trip(hcp, hcp_subject, tmp_path):
    s = hcp_subject
    folder = s.save(tmp_path / "out" / "100307")
    back = Subject.load(folder)
    for name in ("attenuation", "bvals", "bvecs", "indices", "tissue", "s0"):
        a, b = getattr(s, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert back.shape == s.shape
    np.testing.assert_array_equal(back.affine, s.affine)
    assert back.snr == s.snr and back.snr_method == s.snr_method
    assert back.sigma == s.sigma and back.dti_max_b == s.dti_max_b == 1500.0
    assert back.info == s.info
    meta = json.loads((folder / "subject.json").read_text())
    assert meta["snr"] == s.snr and meta["sigma"] == s.sigma and meta["snr_method"] == s.snr_method
    assert meta["dti_max_b"] == 1500.0 and meta["thin"] is False and meta["erosion"].startswith("3-D")
    assert [(sh["b"], sh["n"]) for sh in meta["shells"]] == [(1000.0, 9)]

    with np.load(folder / "subject.npz", allow_pickle=False) as z:  # no object arrays
        expected = {"attenuation", "bvals", "bvecs", "indices", "tissue", "s0"}
        assert set(z.files) == (expected | {"judge", "blocks"} if s.is_split else expected)
        np.testing.assert_array_equal(z["indices"], s.indices)

    for name in ("mask", "tissue", "s0"):
        img = nib.load(folder / f"{name}.nii.gz")
        assert img.shape == hcp.shape, name
        np.testing.assert_allclose(img.affine, hcp.affine, err_msg=name)
    mask = np.asarray(nib.load(folder / "mask.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, hcp.mask.astype(np.uint8))
    tissue = np.asarray(nib.load(folder / "tissue.nii.gz").dataobj)
    np.testing.assert_array_equal(tissue, np.where(hcp.mask, hcp.expected_tissue, 0))
    s0 = np.asarray(nib.load(folder / "s0.nii.gz").dataobj)
    np.testing.assert_allclose(s0[hcp.mask], hcp.s0[hcp.mask], rtol=1e-5)
    assert (s0[~hcp.mask] == 0).all()
    assert not list(folder.glob(".*tmp-*"))  # no temporary file left behind


def test_subject_load_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=_match(tmp_path / "nothing" / "subject.npz", "not found")):
        Subject.load(tmp_path / "nothing")


# ----------------------------------------------------------------------------- tissue masks and the tensor


def test_subject_eroded_tissue_mask():
    # a 5x5x5 grid, every voxel a row; WM is a 3x3x3 cube: eroded, only its centre is left
    idx = np.argwhere(np.ones((5, 5, 5), bool))
    cube = np.all((idx >= 1) & (idx <= 3), axis=1)
    n = len(idx)
    s = Subject(
        attenuation=np.ones((n, 2), np.float32), bvals=np.full(2, 1000.0), bvecs=np.eye(3)[:2],
        indices=idx, shape=(5, 5, 5), affine=np.eye(4), tissue=np.where(cube, 3, 2).astype(np.uint8),
        s0=np.ones(n, np.float32),
    )
    assert s.tissue_mask("WM").sum() == 27
    eroded = s.tissue_mask("WM", eroded=True)
    assert eroded.sum() == 1 and tuple(idx[eroded][0]) == (2, 2, 2)
    with pytest.raises(ValueError, match=r"unknown tissue 'wm'; allowed: \['CSF', 'GM', 'WM'\]"):
        s.tissue_mask("wm")
    with pytest.raises(ValueError, match="values has 3 rows; the subject has 125 voxels"):
        s.volume(np.zeros(3))


def test_dti_columns_are_the_selected_volumes_up_to_dti_max_b(hcp):
    s = load_hcp(hcp.root, hcp.subject_id, shell="all")
    dw = hcp.nominal[hcp.nominal > 0]
    np.testing.assert_array_equal(s.dti_columns, dw == 1000)
    assert s.info["n_dti_volumes"] == 9 and s.info["n_dti_directions"] == 9 and s.dti_max_b == 1500
    s.dti_max_b = 2500
    np.testing.assert_array_equal(s.dti_columns, dw <= 2000)


def test_subject_tensor_fits_only_the_dti_columns(hcp):
    """Signals above b=1500 are made non-Gaussian (x1.3): the tensor of the b<=1500
    columns is still the fixture's D, equal to dipy's TensorModel on those columns;
    fitting every column (dti_max_b=3500) is not."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    data = hcp.data.copy()
    data[..., hcp.nominal > 1500] *= 1.3
    save_nifti(hcp.dwi, data, hcp.affine)
    s = load_hcp(hcp.root, hcp.subject_id, shell="all")
    fit = s.tensor()
    low = np.flatnonzero(hcp.nominal == 1000)
    S0 = data[..., hcp.b0_idx].mean(axis=-1)[tuple(s.indices.T)].astype(float)
    E = data[..., low][tuple(s.indices.T)].astype(float) / S0[:, None]
    gtab = gradient_table(np.r_[0, hcp.bvals[low]], bvecs=np.r_[[[0, 0, 0]], hcp.bvecs[low]])
    ref = TensorModel(gtab, fit_method="WLS").fit(np.hstack([np.ones((len(E), 1)), E]))
    np.testing.assert_allclose(fit.evals, ref.evals, rtol=1e-5, atol=1e-9)
    true = np.linalg.eigvalsh(hcp.D[tuple(s.indices.T)])[:, ::-1]
    np.testing.assert_allclose(fit.evals, true, rtol=1e-4, atol=1e-8)
    everything = load_hcp(hcp.root, hcp.subject_id, shell="all", dti_max_b=3500).tensor()
    assert np.abs(everything.evals - true).max() > 1e-4


def _split_subject(n=8):
    idx = np.argwhere(np.ones((2, 2, 2), bool))
    return Subject(attenuation=np.arange(n * 6, dtype=np.float32).reshape(n, 6), bvals=np.full(6, 1000.0),
                   bvecs=np.eye(3)[[0, 1, 2, 0, 1, 2]], indices=idx, shape=(2, 2, 2), affine=np.eye(4),
                   tissue=np.full(n, 3, np.uint8), s0=np.ones(n, np.float32), judge=np.arange(n) % 2 == 0)


def test_a_part_follows_what_is_set_on_the_whole_after_it_was_cut():
    subject = _split_subject()
    fit = subject.fit_part()
    assert fit is subject.fit_part() and fit.calibration is None  # cut once, then kept
    subject.calibration = {"hyper": "fitted later"}
    assert subject.fit_part().calibration == {"hyper": "fitted later"}  # not the stale None
    assert subject.judge_part().n_voxels == 4
    subject.judge = np.arange(8) < 2  # a new split: parts of 2 and 6 voxels
    np.testing.assert_array_equal(subject.judge_part().attenuation, np.arange(12, dtype=np.float32).reshape(2, 6))
    assert subject.fit_part().n_voxels == 6
