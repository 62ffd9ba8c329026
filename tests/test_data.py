"""Loading real scans into a Subject: HCP, BIDS, explicit paths, the embedded sample.

Expected values come from the fixtures' ground truth (tensors and S0 chosen by the test)
or from reading the files with nibabel directly; never from the loader itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import B0_FACTORS, save_nifti, write_gradients
from helpers.config import load_config
from helpers.data import Subject, estimate_snr, load_bids, load_dwi, load_hcp, load_paths, load_sample, load_subject
from helpers.io import atomic_path


def _row(subject, voxel):
    """The row of ``subject`` holding grid voxel ``voxel`` (fails if absent)."""
    rows = np.flatnonzero((subject.indices == np.asarray(voxel)).all(axis=1))
    assert rows.size == 1, f"voxel {voxel} found {rows.size} times"
    return int(rows[0])


def _match(path, *words):
    """A regex requiring the file name and each word, in any order."""
    parts = [re.escape(str(path))] + [re.escape(w) for w in words]
    return "".join(f"(?=[\\s\\S]*{p})" for p in parts)


# ----------------------------------------------------------------------------- HCP


@pytest.fixture
def hcp_subject(hcp):
    return load_hcp(hcp.root, hcp.subject_id, dataset="hcp")


def test_hcp_keeps_only_the_b1000_shell(hcp, hcp_subject):
    s = hcp_subject
    assert s.n_directions == 9  # the fixture has 9 directions at nominal b=1000
    np.testing.assert_array_equal(s.bvals, hcp.bvals[hcp.shell_idx])
    assert np.all(np.abs(s.bvals - 1000) <= 10) and len(set(s.bvals)) > 1  # jittered, kept
    np.testing.assert_allclose(s.bvecs, hcp.bvecs[hcp.shell_idx], atol=1e-9)
    assert s.info["n_b0"] == 4 and s.info["n_volumes_file"] == 28
    assert s.info["voxel_size_mm"] == [2.0, 2.0, 2.0]


def test_hcp_attenuation_of_one_voxel_by_hand(hcp, hcp_subject):
    voxel = (4, 4, 3)
    assert hcp.mask[voxel]
    D = hcp.D[voxel]
    expected = np.array(
        [np.exp(-hcp.bvals[i] * hcp.bvecs[i] @ D @ hcp.bvecs[i]) for i in hcp.shell_idx]
    )
    row = _row(hcp_subject, voxel)
    np.testing.assert_allclose(hcp_subject.attenuation[row], expected, rtol=1e-5)
    np.testing.assert_allclose(hcp_subject.s0[row], hcp.s0[voxel], rtol=1e-5)
    assert hcp_subject.attenuation.dtype == np.float32


def test_hcp_all_voxels_go_back_where_they_came_from(hcp, hcp_subject):
    s = hcp_subject
    assert s.shape == hcp.shape
    np.testing.assert_allclose(s.affine, hcp.affine)
    # every brain voxel, and only those (the voxels outside the mask hold valid signal)
    assert s.n_voxels == hcp.mask.sum() == s.info["n_mask_voxels"]
    back = s.volume(np.ones(s.n_voxels, dtype=bool), fill=False)
    np.testing.assert_array_equal(back, hcp.mask)
    s0 = s.volume(s.s0)
    np.testing.assert_allclose(s0[hcp.mask], hcp.s0[hcp.mask], rtol=1e-5)
    assert np.isnan(s0[~hcp.mask]).all()
    # the whole attenuation, put back on the grid, equals S/S0 read from the file
    E = s.volume(s.attenuation)
    assert E.shape == hcp.shape + (9,)
    raw = np.asarray(nib.load(hcp.dwi).dataobj, dtype=float)
    S, S0 = raw[..., hcp.shell_idx], raw[..., hcp.b0_idx].mean(axis=-1)
    np.testing.assert_allclose(E[hcp.mask], (S / S0[..., None])[hcp.mask], rtol=1e-5)


def test_hcp_tissue_resampled_nearest_neighbour(hcp, hcp_subject):
    s = hcp_subject
    expected = hcp.expected_tissue[tuple(s.indices.T)]
    np.testing.assert_array_equal(s.tissue, expected)
    assert set(np.unique(s.tissue)) == {1, 2, 3}  # all three present, no decoy leaked
    counts = {name: int((expected == code).sum()) for name, code in (("CSF", 1), ("GM", 2), ("WM", 3))}
    assert s.info["tissue_counts"] == counts
    assert "aparc+aseg" in s.info["tissue_source"] and "approximate" not in s.info["tissue_source"]
    np.testing.assert_array_equal(s.wm, expected == 3)
    np.testing.assert_array_equal(s.tissue_mask("CSF"), expected == 1)


def test_hcp_snr_from_b0_repeats(hcp_subject):
    # Every voxel's b0 repeats are S0 x (0.98, 1.02, 1.01, 0.99): mean/std = 1/0.018257...
    f = B0_FACTORS
    expected = f.mean() / np.sqrt(((f - f.mean()) ** 2).sum() / 3)
    assert hcp_subject.snr == pytest.approx(expected, rel=1e-3)
    assert "4 b0 repeats" in hcp_subject.snr_method


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


def test_hcp_missing_subject_folder(hcp):
    with pytest.raises(ValueError, match=_match(hcp.root / "999999" / "T1w" / "Diffusion", "not found")):
        load_hcp(hcp.root, "999999")


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
    assert back.info == s.info

    with np.load(folder / "subject.npz", allow_pickle=False) as z:  # no object arrays
        assert set(z.files) == {"attenuation", "bvals", "bvecs", "indices", "tissue", "s0"}
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


def test_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    target = tmp_path / "map.nii.gz"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
            tmp.write_bytes(b"half-written new cont")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz"]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()  # nothing at the final name until the body finishes
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


# ----------------------------------------------------------------------------- BIDS


def test_bids_through_config(bids):
    config = load_config(bids.config)
    assert config.root == bids.root.resolve()
    for sid in ("01", "02"):  # 02 lives in a ses-1 folder
        run = bids.runs[sid]
        s = load_subject(config, sid)
        shell = np.flatnonzero(run.nominal == 1000)
        b0 = np.flatnonzero(run.nominal == 0)
        assert s.n_directions == 12
        np.testing.assert_array_equal(s.bvals, run.bvals[shell])
        assert s.info["dwi"] == str(run.dwi) and s.info["dataset"] == "mybids" and s.info["subject"] == sid
        assert s.shape == bids.shape
        np.testing.assert_allclose(s.affine, bids.affine)
        # median_otsu found the bright box: its centre in, the dark corner out
        centre, corner = (7, 7, 5), (0, 0, 0)
        assert (s.indices == centre).all(axis=1).any()
        assert not (s.indices == corner).all(axis=1).any()
        assert s.n_voxels <= 8 * 8 * 6
        # attenuation read back from the file with nibabel
        raw = np.asarray(nib.load(run.dwi).dataobj, dtype=float)[centre]
        np.testing.assert_allclose(s.attenuation[_row(s, centre)], raw[shell] / raw[b0].mean(), rtol=1e-5)
        assert "approximate" in s.info["tissue_source"]
        assert np.isfinite(s.snr) and s.snr > 0


def test_bids_accepts_sub_prefix(bids):
    s = load_bids(bids.root, "sub-01")
    assert s.info["subject"] == "01"


def test_bids_two_runs_is_an_error(bids):
    run = bids.runs["01"]
    extra = run.dwi.with_name("sub-01_acq-b_dwi.nii.gz")
    extra.write_bytes(run.dwi.read_bytes())
    with pytest.raises(ValueError, match=_match(bids.root / "sub-01", "2 DWI runs")):
        load_bids(bids.root, "01")


def test_bids_missing_subject(bids):
    with pytest.raises(ValueError, match=_match(bids.root / "sub-07", "not found")):
        load_bids(bids.root, "07")


# ----------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture(scope="module")
def sample_files():
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    img = nib.load(files / "small_64D.nii")
    return img, np.asarray(img.dataobj, dtype=float), np.loadtxt(files / "small_64D.bval")


def test_sample_shape_and_shell(sample, sample_files):
    img, raw, bvals = sample_files
    assert sample.shape == (10, 10, 10) and sample.n_voxels == 1000
    assert sample.n_directions == 64
    assert np.all(np.abs(sample.bvals - 1000) < 20)
    np.testing.assert_allclose(sample.bvals, bvals[1:])
    np.testing.assert_allclose(np.linalg.norm(sample.bvecs, axis=1), 1, atol=1e-2)
    np.testing.assert_allclose(sample.affine, img.affine)


def test_sample_attenuation_is_file_over_b0(sample, sample_files):
    _, raw, bvals = sample_files
    assert bvals[0] == 0 and (bvals[1:] > 900).all()
    voxel = (4, 5, 6)
    np.testing.assert_allclose(sample.attenuation[_row(sample, voxel)], raw[voxel][1:] / raw[voxel][0], rtol=1e-6)
    E = sample.volume(sample.attenuation)
    np.testing.assert_allclose(E, raw[..., 1:] / raw[..., :1], rtol=1e-6)


def test_sample_snr_and_tissue(sample):
    assert np.isfinite(sample.snr) and sample.snr > 0
    assert isinstance(sample.snr_method, str) and "residual" in sample.snr_method
    counts = sample.info["tissue_counts"]
    assert sum(counts.values()) == 1000 and all(v > 0 for v in counts.values())
    assert "approximate" in sample.info["tissue_source"]


def test_sample_tissue_matches_dipy_thresholds(sample):
    """DTI segmentation recomputed with dipy's own TensorModel and the stated thresholds."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(np.r_[0, sample.bvals], bvecs=np.r_[[[0, 0, 0]], sample.bvecs])
    fit = TensorModel(gtab, fit_method="WLS").fit(np.hstack([np.ones((1000, 1)), sample.attenuation]))
    expected = np.where(fit.md >= 1.6e-3, 1, np.where(fit.fa >= 0.3, 3, 2))
    np.testing.assert_array_equal(sample.tissue, expected)


# ----------------------------------------------------------------------------- explicit paths


def test_paths_with_fast_pve(hcp, rng):
    shape = hcp.shape
    # hand-made fractions: CSF, GM, WM per voxel; a few voxels set explicitly
    frac = rng.dirichlet([1, 1, 1], size=shape)
    frac[2, 3, 3] = (0.1, 0.2, 0.7)  # WM
    frac[3, 4, 3] = (0.6, 0.3, 0.1)  # CSF
    frac[4, 4, 3] = (0.4, 0.35, 0.25)  # mixed: largest below 0.5 -> none
    frac[4, 5, 3] = (0.2, 0.5, 0.3)  # exactly 0.5 -> GM
    paths = [
        save_nifti(hcp.diffusion / f"fast_pve_{i}.nii.gz", frac[..., i].astype(np.float32), hcp.affine)
        for i in range(3)
    ]
    s = load_paths(hcp.dwi, hcp.bval, hcp.bvec, mask=hcp.mask_path, pve=paths)
    assert [s.tissue[_row(s, v)] for v in [(2, 3, 3), (3, 4, 3), (4, 4, 3), (4, 5, 3)]] == [3, 1, 0, 2]
    f = frac[tuple(s.indices.T)].astype(np.float32)
    hand = np.where(f.max(axis=1) >= 0.5, f.argmax(axis=1) + 1, 0)
    np.testing.assert_array_equal(s.tissue, hand)
    assert "FSL FAST" in s.info["tissue_source"]


def test_paths_through_config_with_fast_labels(hcp, tmp_path):
    seg = np.where(hcp.mask, hcp.expected_tissue, 0).astype(np.int16)
    save_nifti(tmp_path / "seg.nii.gz", seg, hcp.affine)
    cfg = tmp_path / "paths.yaml"
    rel = hcp.diffusion.relative_to(tmp_path)
    cfg.write_text(
        "dataset: explicit\nkind: paths\nlabels: fast\nsubjects:\n  s1:\n"
        f"    dwi: {rel}/data.nii.gz\n    bval: {rel}/bvals\n    bvec: {rel}/bvecs\n"
        f"    mask: {rel}/nodif_brain_mask.nii.gz\n    labels: seg.nii.gz\n"
    )
    s = load_subject(load_config(cfg), "s1")
    np.testing.assert_array_equal(s.tissue, hcp.expected_tissue[tuple(s.indices.T)])
    assert s.n_voxels == hcp.mask.sum()


# ----------------------------------------------------------------------------- bad input


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
    data[..., hcp.b0_idx] = 0.0
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


def test_missing_aparc_aseg(hcp):
    hcp.aseg.unlink()
    with pytest.raises(ValueError, match=_match(hcp.aseg, "not found")):
        load_hcp(hcp.root, hcp.subject_id)


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


@pytest.mark.parametrize("k", [3, 5, 18])
def test_snr_from_b0_repeats_is_unbiased_with_few_repeats(k):
    """b0 = S0 (1 + n/20): the SNR is 20 whatever S0; a per-voxel mean/std median would
    read about 24 with three repeats."""
    rng = np.random.default_rng(k)
    s0 = rng.uniform(500, 1500, 20000)
    b0 = s0[:, None] * (1 + rng.standard_normal((20000, k)) / 20)
    snr, method = estimate_snr(None, b0)
    assert snr == pytest.approx(20, rel=0.02)
    assert f"{k} b0 repeats" in method
