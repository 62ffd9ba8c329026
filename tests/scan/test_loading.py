"""Reading a scan into a Subject: which volumes and voxels are read, masks, bad input,
broken volumes, any scan shape and data type.

Expected values come from the fixtures' ground truth (tensors and S0 chosen by the test)
or from reading the files with nibabel directly; never from the loader itself.
"""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from conftest import _match, _square, build_scan, save_nifti
from helpers.scan import noise
from helpers.scan.layouts import load_hcp, load_paths, load_sample
from helpers.scan.loading import load_dwi
from helpers.scan.subject import Subject


# ----------------------------------------------------------------------------- what is read


def _spy_noise(monkeypatch):
    """Record the arguments load_dwi passes to helpers.scan.noise.estimate_noise."""
    calls = []
    real = noise.estimate_noise

    def spy(b0, indices, shape, **kwargs):
        est = real(b0, indices, shape, **kwargs)
        calls.append(dict(b0=np.array(b0), indices=np.array(indices), shape=shape, est=est, **kwargs))
        return est

    monkeypatch.setattr(noise, "estimate_noise", spy)
    return calls


def test_hcp_noise_gets_the_b0_repeats_and_only_the_dti_columns(hcp, monkeypatch):
    """The noise estimate is helpers.scan.noise's (tested there); here: it receives the 4 b0
    repeats of every brain voxel as read from the file, and for its fallback only the
    selected volumes with b <= dti_max_b (b=1000 of the three shells with shell "all")."""
    calls = _spy_noise(monkeypatch)
    s = load_hcp(hcp.root, hcp.subject_id, shell="all")
    (call,) = calls
    raw = np.asarray(nib.load(hcp.dwi).dataobj, dtype=float)
    np.testing.assert_array_equal(call["indices"], s.indices)
    assert call["shape"] == hcp.shape
    np.testing.assert_allclose(call["b0"], raw[tuple(s.indices.T)][:, hcp.b0_idx], rtol=1e-6)
    np.testing.assert_allclose(call["b0"].mean(axis=1) / s.s0, 1, rtol=1e-6)
    dw = np.flatnonzero(hcp.nominal > 0)
    low = hcp.nominal[dw] == 1000
    np.testing.assert_array_equal(call["bvals"], hcp.bvals[dw][low])
    np.testing.assert_allclose(call["bvecs"], hcp.bvecs[dw][low], atol=1e-9)
    assert call["attenuation"].shape == (s.n_voxels, 9)
    np.testing.assert_array_equal(call["attenuation"], s.attenuation[:, low])
    est = call["est"]
    assert (s.sigma, s.snr, s.snr_method) == (est.sigma, est.snr, est.method)
    assert s.info["snr_voxels"] == est.n_voxels
    # per-voxel sigma / S0 and the noise floor: sqrt(2/pi) mean(sigma/S0), by hand
    np.testing.assert_allclose(s.relative_sigma, est.sigma / s.s0.astype(float), rtol=1e-6)
    assert s.noise_floor == pytest.approx(np.sqrt(2 / np.pi) * np.mean(est.sigma / s.s0.astype(float)), rel=1e-6)


def test_hcp_reads_only_the_needed_volumes(hcp, monkeypatch):
    """Only the b0 and b=1000 volumes are read from the 4-D file, one at a time; the
    whole 4-D array is never materialised (nibabel's ArrayProxy is spied on)."""
    from nibabel.arrayproxy import ArrayProxy

    reads = []
    getitem, array = ArrayProxy.__getitem__, ArrayProxy.__array__

    def spy_getitem(self, slicer):
        if len(self.shape) == 4:
            reads.append(slicer)
        return getitem(self, slicer)

    def spy_array(self, *args, **kwargs):
        if len(self.shape) == 4:
            reads.append("whole")
        return array(self, *args, **kwargs)

    monkeypatch.setattr(ArrayProxy, "__getitem__", spy_getitem)
    monkeypatch.setattr(ArrayProxy, "__array__", spy_array)
    load_hcp(hcp.root, hcp.subject_id)
    assert "whole" not in reads
    volumes = [int(np.arange(28)[s[-1]]) for s in reads]  # last index of each slicer: one volume
    assert sorted(volumes) == sorted(np.r_[hcp.b0_idx, hcp.shell_idx].tolist())


@pytest.mark.parametrize(
    "shell, nominal",
    [(2000.0, [2000]), ([1000, 3000], [1000, 3000]), ("all", [1000, 2000, 3000]), ([3000, 1000], [1000, 3000])],
)
def test_hcp_shell_selection_keeps_each_b_value(hcp, shell, nominal):
    keep = np.flatnonzero(np.isin(hcp.nominal, nominal))  # file order
    s = load_hcp(hcp.root, hcp.subject_id, shell=shell, dti_max_b=3500)
    np.testing.assert_array_equal(s.bvals, hcp.bvals[keep])  # jittered values kept as they are
    np.testing.assert_allclose(s.bvecs, hcp.bvecs[keep], atol=1e-9)
    raw = np.asarray(nib.load(hcp.dwi).dataobj, dtype=float)[tuple(s.indices.T)]
    np.testing.assert_allclose(s.attenuation, raw[:, keep] / raw[:, hcp.b0_idx].mean(axis=1, keepdims=True), rtol=1e-5)
    assert [sh["b"] for sh in s.info["shells"]] == [float(b) for b in sorted(nominal)]
    assert [sh["n"] for sh in s.info["shells"]] == [int((hcp.nominal == b).sum()) for b in sorted(nominal)]
    assert s.info["shell"] == ("all" if shell == "all" else [float(b) for b in np.atleast_1d(shell)])


# ----------------------------------------------------------------------------- bad input


def test_bad_s0_voxels_excluded_and_counted(hcp):
    data = hcp.data.copy()
    b0 = hcp.b0_idx
    bad = {(4, 4, 3): 0.0, (3, 4, 3): -5.0}  # S0 = 0 and S0 < 0
    for v, value in bad.items():
        data[v][b0] = value
    data[4, 5, 3, b0[1]] = np.nan  # non-finite S0
    data[5, 4, 3, b0[2]] = np.inf
    data[5, 4, 3, hcp.shell_idx[1]] = np.nan  # bad S0 and bad signal: counted once, as S0
    data[4, 4, 2, hcp.shell_idx[0]] = np.nan  # finite S0, non-finite shell signal
    excluded = [(4, 4, 3), (3, 4, 3), (4, 5, 3), (5, 4, 3), (4, 4, 2)]
    assert all(hcp.mask[v] for v in excluded)
    save_nifti(hcp.dwi, data, hcp.affine)
    s = load_hcp(hcp.root, hcp.subject_id)
    assert s.info["n_excluded_nonpositive_or_nonfinite_s0"] == 4
    assert s.info["n_excluded_nonfinite_signal"] == 1
    assert s.n_voxels == s.info["n_voxels"] == hcp.mask.sum() - 5
    for v in excluded:
        assert not (s.indices == v).all(axis=1).any(), v
    assert np.isfinite(s.attenuation).all() and (s.s0 > 0).all()


def test_all_s0_bad_is_an_error(hcp):
    data = hcp.data.copy()
    data[..., hcp.b0_idx] = 0.0  # every b0 volume zero: each is broken, and named
    save_nifti(hcp.dwi, data, hcp.affine)
    with pytest.raises(ValueError, match=_match(hcp.dwi, "every b0 volume is broken", "zero in every brain voxel")):
        load_hcp(hcp.root, hcp.subject_id)
    data = hcp.data.copy()
    data[..., hcp.b0_idx] = -np.abs(data[..., hcp.b0_idx])  # S0 negative everywhere but not constant
    save_nifti(hcp.dwi, data, hcp.affine)
    with pytest.raises(ValueError, match=_match(hcp.dwi, "no brain voxel has a positive, finite S0")):
        load_hcp(hcp.root, hcp.subject_id)


def test_mask_of_another_shape(hcp):
    save_nifti(hcp.mask_path, hcp.mask[:, :, :-1].astype(np.uint8), hcp.affine)
    with pytest.raises(ValueError, match=_match(hcp.mask_path, "another grid", str(hcp.dwi))):
        load_hcp(hcp.root, hcp.subject_id)


def test_mask_with_another_affine(hcp):
    shifted = hcp.affine.copy()
    shifted[0, 3] += 2.0
    save_nifti(hcp.mask_path, hcp.mask.astype(np.uint8), shifted)
    with pytest.raises(ValueError, match=_match(hcp.mask_path, "another grid", "affines differ")):
        load_hcp(hcp.root, hcp.subject_id)


def test_empty_mask(hcp):
    save_nifti(hcp.mask_path, np.zeros(hcp.shape, np.uint8), hcp.affine)
    with pytest.raises(ValueError, match=_match(hcp.mask_path, "mask is empty")):
        load_hcp(hcp.root, hcp.subject_id)


def test_pve_of_another_grid(hcp, rng):
    frac = rng.dirichlet([1, 1, 1], size=hcp.shape).astype(np.float32)
    paths = [save_nifti(hcp.diffusion / f"pve_{i}.nii.gz", frac[..., i], hcp.affine) for i in range(3)]
    save_nifti(paths[1], frac[:-1, :, :, 1], hcp.affine)
    with pytest.raises(ValueError, match=_match(paths[1], "tissue map on another grid", str(hcp.dwi))):
        load_paths(hcp.dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path, pve=paths)


def test_label_map_of_another_grid(hcp):
    # the un-resampled 1 mm aparc+aseg given as if it were on the diffusion grid
    with pytest.raises(ValueError, match=_match(hcp.aseg, "tissue map on another grid")):
        load_paths(hcp.dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path, labels=hcp.aseg, label_scheme="freesurfer")


def test_label_map_with_another_affine(hcp):
    shifted = hcp.affine.copy()
    shifted[:3, 3] += 1.0  # same shape, moved by 1 mm
    seg = save_nifti(hcp.diffusion / "seg.nii.gz", hcp.expected_tissue, shifted)
    with pytest.raises(ValueError, match=_match(seg, "tissue map on another grid", str(hcp.dwi))):
        load_paths(hcp.dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path, labels=seg)


def test_corrupt_nifti(hcp, rng):
    hcp.dwi.write_bytes(rng.bytes(5000))
    with pytest.raises(ValueError, match=_match(hcp.dwi, "not a readable NIfTI")):
        load_hcp(hcp.root, hcp.subject_id)


def test_truncated_nifti(hcp):
    whole = hcp.dwi.read_bytes()
    hcp.dwi.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=_match(hcp.dwi, "corrupt or truncated")) as err:
        load_hcp(hcp.root, hcp.subject_id)
    assert not isinstance(err.value, EOFError)  # our ValueError, not gzip's EOFError
    assert err.type is ValueError


def test_truncated_uncompressed_nifti(hcp, tmp_path):
    dwi = tmp_path / "dwi.nii"
    save_nifti(dwi, hcp.data, hcp.affine)
    whole = dwi.read_bytes()
    dwi.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=re.escape(str(dwi))):
        load_dwi(dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path)


# ----------------------------------------------------------------------------- any scan shape


@pytest.mark.parametrize("n_slices", [1, 2])
def test_thin_scan_loads_and_erodes_in_plane(tmp_path, rng, n_slices):
    # 7x7 slices of GM with a 5x5 WM square: eroded in-plane, the 3x3 centre of each slice
    labels = _square((7, 7, n_slices), 1, 6, 3, 2)
    scan = build_scan(tmp_path, rng, labels, n_b0=3)
    s = load_paths(scan.dwi, scan.bval, scan.bvec, mask=scan.mask, labels=scan.labels_path)
    assert s.shape == (7, 7, n_slices) and s.n_voxels == 49 * n_slices
    eroded = s.tissue_mask("WM", eroded=True)
    expected = np.zeros((7, 7, n_slices), bool)
    expected[2:5, 2:5, :] = True
    np.testing.assert_array_equal(s.volume(eroded, fill=False), expected)
    assert s.info["thin"] is True and s.info["erosion"].startswith("in-plane") and "axis 2" in s.info["erosion"]
    meta = json.loads((s.save(tmp_path / "out") / "subject.json").read_text())
    assert meta["thin"] is True and "in-plane" in meta["erosion"]
    np.testing.assert_allclose(s.tensor().evals[s.wm], np.tile([1.7e-3, 0.3e-3, 0.3e-3], (s.wm.sum(), 1)), rtol=1e-5)


def test_empty_tissue_class_is_counted_not_a_crash(tmp_path, rng):
    labels = _square((6, 6, 3), 1, 5, 3, 2)  # WM and GM, no CSF
    scan = build_scan(tmp_path, rng, labels)
    s = load_paths(scan.dwi, scan.bval, scan.bvec, mask=scan.mask, labels=scan.labels_path)
    assert s.info["tissue_counts"] == {"CSF": 0, "GM": 108 - 48, "WM": 48}
    for eroded in (False, True):
        assert not s.tissue_mask("CSF", eroded=eroded).any()
    assert not s.csf.any()
    back = Subject.load(s.save(tmp_path / "out"))
    assert back.info["tissue_counts"]["CSF"] == 0
    # the DTI segmentation of the same scan finds no CSF either (no MD >= 1.6e-3)
    s2 = load_dwi(scan.dwi, scan.bval, scan.bvec, mask=scan.mask)
    assert s2.info["tissue_counts"] == {"CSF": 0, "GM": 60, "WM": 48}


def test_automatic_mask_falls_back_to_every_voxel_of_an_all_brain_crop(tmp_path, rng):
    # a crop inside the brain: bright CSF (S0 3000) in a quarter, GM/WM (1000-1200) elsewhere
    labels = np.full((10, 10, 4), 2, np.int16)
    labels[:, :4, :] = 3
    labels[:5, 5:, :] = 1
    scan = build_scan(tmp_path, rng, labels, sigma=20.0)
    s = load_dwi(scan.dwi, scan.bval, scan.bvec)  # no mask
    assert s.n_voxels == 400 and s.info["mask_fallback"] is True
    assert "all 400 voxels with a finite, positive S0" in s.info["mask"] and "crop" in s.info["mask"]
    # what median_otsu alone keeps: fewer than half of them
    from dipy.segment.mask import median_otsu

    _, otsu = median_otsu(scan.data[..., :3].astype(float).mean(axis=-1), median_radius=2, numpass=1)
    assert otsu.sum() < 200


def test_automatic_mask_keeps_otsu_on_a_head_with_background(tmp_path, rng):
    # a brain in air (magnitude noise, 20 % of the voxels): Otsu keeps the brain, no fallback
    labels = np.zeros((14, 14, 6), np.int16)
    labels[4:10, 4:10, 1:5] = 2
    scan = build_scan(tmp_path, rng, labels, sigma=20.0)
    s = load_dwi(scan.dwi, scan.bval, scan.bvec)
    assert s.info["mask_fallback"] is False and s.info["mask"] == "dipy median_otsu on the mean b0"
    assert s.n_voxels <= 6 * 6 * 4 + 20 and (s.indices == (7, 7, 3)).all(axis=1).any()


def test_sample_without_a_mask_is_taken_for_a_crop():
    s = load_sample(mask=None)
    assert s.n_voxels == 1000 and s.info["mask_fallback"] is True


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_integer_data_types(tmp_path, rng, dtype):
    labels = _square((6, 6, 3), 1, 5, 3, 2)
    scan = build_scan(tmp_path, rng, labels, dtype=dtype, s0={2: 240.0, 3: 200.0})
    assert nib.load(scan.dwi).get_data_dtype() == dtype
    s = load_dwi(scan.dwi, scan.bval, scan.bvec, mask=scan.mask)
    assert s.attenuation.dtype == np.float32 and s.s0.dtype == np.float32 and s.info["dtype"] == np.dtype(dtype).name
    raw = scan.data.astype(float)[tuple(s.indices.T)]
    np.testing.assert_allclose(s.s0, raw[:, :3].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(s.attenuation, raw[:, 3:] / raw[:, :3].mean(axis=1, keepdims=True), rtol=1e-6)


# ----------------------------------------------------------------------------- masks and broken volumes


def test_probability_mask_is_thresholded_at_one_half_and_said(tmp_path, rng):
    """A soft brain mask with a small floor everywhere: the voxels at >= 0.5 are the brain,
    not every voxel above 0 (which would take in the whole floor)."""
    labels = _square((8, 8, 3), 2, 6, 3, 2)
    labels[[0, 7], :, :] = 0
    labels[:, [0, 7], :] = 0  # 6x6x3 of brain in an 8x8x3 volume
    scan = build_scan(tmp_path, rng, labels)
    soft = np.where(labels > 0, 0.9, 0.02).astype(np.float32)
    soft[1, 1, :] = 0.5  # exactly at the threshold: kept
    soft[1, 2, :] = 0.49  # just below: left out
    path = save_nifti(tmp_path / "soft_mask.nii.gz", soft, scan.affine)
    s = load_paths(scan.dwi, scan.bval, scan.bvec, mask=path, labels=scan.labels_path)
    assert s.n_voxels == 6 * 6 * 3 - 3  # (1, 2, :) was brain in the labels but is 0.49 here
    assert "probability mask (values 0.02 to 0.9) thresholded at 0.5: 105 voxels kept of 192 above 0" in s.info["mask"]


@pytest.mark.parametrize("values, kept", [(np.array([0, 1, 1]), 2), (np.array([0, 255, 255]), 2),
                                          (np.array([0.0, 0.7, 0.2]), 1), (np.array([False, True, True]), 2)])
def test_binary_mask_values(values, kept):
    from helpers.scan.loading import binary_mask

    mask, _ = binary_mask(values, path="m.nii.gz")
    assert int(mask.sum()) == kept


@pytest.mark.parametrize("values, message", [(np.array([0, 1, 2, 3]), "3 different non-zero values"),
                                             (np.array([0, np.nan, 1.0]), "NaN"),
                                             (np.array([0, -1.0]), "different non-zero")])
def test_masks_that_cannot_be_read_as_brain_are_refused(values, message):
    from helpers.scan.loading import binary_mask

    with pytest.raises(ValueError, match=f"m.nii.gz: .*{message}"):
        binary_mask(values, path="m.nii.gz")


def test_broken_volumes_are_left_out_by_index_and_b_value(tmp_path, rng):
    """A dropout (a diffusion-weighted volume of zeros) and a constant b0 repeat: both left
    out by name; the remaining volumes give the known tensors."""
    from helpers.scan.loading import load_note

    labels = _square((6, 6, 3), 1, 5, 3, 2)
    scan = build_scan(tmp_path, rng, labels, n_b0=3, shells=((1000, 14),))
    data = scan.data.copy()
    data[..., 5] = 0.0  # volume 5: a diffusion-weighted volume (the b0s are 0-2)
    data[..., 1] = 777.0  # volume 1: a b0 repeat that is constant
    data[0, 0, 0, 8] = -3.0  # one negative value in a brain voxel
    path = save_nifti(tmp_path / "broken.nii.gz", data, scan.affine)
    s = load_paths(path, scan.bval, scan.bvec, mask=scan.mask, labels=scan.labels_path)
    assert s.info["volumes_left_out"] == ["volume 5 (b=1000): zero in every brain voxel",
                                          "volume 1 (b=0): constant (777) in every brain voxel"]
    assert s.n_directions == 13 and s.info["n_negative_clipped"] == 1
    assert s.attenuation.min() >= 0
    # S0 from the two good b0s: the WM tensors come back (the constant b0 would have biased them)
    np.testing.assert_allclose(s.tensor().evals[s.wm], np.tile([1.7e-3, 0.3e-3, 0.3e-3], (s.wm.sum(), 1)), rtol=1e-3)
    note = load_note(s.info)
    assert "volume 5 (b=1000): zero in every brain voxel: left out" in note and "1 negative value(s) clipped to 0" in note


def test_every_b0_broken_is_an_error_naming_the_file(tmp_path, rng):
    labels = _square((6, 6, 3), 1, 5, 3, 2)
    scan = build_scan(tmp_path, rng, labels, n_b0=2)
    data = scan.data.copy()
    data[..., :2] = np.nan
    path = save_nifti(tmp_path / "no_b0.nii.gz", data, scan.affine)
    with pytest.raises(ValueError, match="no_b0.nii.gz: every b0 volume is broken"):
        load_paths(path, scan.bval, scan.bvec, mask=scan.mask, labels=scan.labels_path)
