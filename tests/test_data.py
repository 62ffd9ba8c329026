"""Loading real scans into a Subject: HCP, BIDS, explicit paths, the embedded sample.

Expected values come from the fixtures' ground truth (tensors and S0 chosen by the test)
or from reading the files with nibabel directly; never from the loader itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import build_scan, random_unit_vectors, save_nifti, write_gradients
from helpers import noise
from helpers.config import CONFIG_DIR, load_config
from helpers.data import (
    Subject,
    count_directions,
    find_shells,
    inspect_subject,
    load_bids,
    load_dwi,
    load_hcp,
    load_paths,
    load_sample,
    load_subject,
    select_shell,
)


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


def _spy_noise(monkeypatch):
    """Record the arguments load_dwi passes to helpers.noise.estimate_noise."""
    calls = []
    real = noise.estimate_noise

    def spy(b0, indices, shape, **kwargs):
        est = real(b0, indices, shape, **kwargs)
        calls.append(dict(b0=np.array(b0), indices=np.array(indices), shape=shape, est=est, **kwargs))
        return est

    monkeypatch.setattr(noise, "estimate_noise", spy)
    return calls


def test_hcp_noise_gets_the_b0_repeats_and_only_the_dti_columns(hcp, monkeypatch):
    """The noise estimate is helpers.noise's (tested there); here: it receives the 4 b0
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
    assert back.sigma == s.sigma and back.dti_max_b == s.dti_max_b == 1500.0
    assert back.info == s.info
    meta = json.loads((folder / "subject.json").read_text())
    assert meta["snr"] == s.snr and meta["sigma"] == s.sigma and meta["snr_method"] == s.snr_method
    assert meta["dti_max_b"] == 1500.0 and meta["thin"] is False and meta["erosion"].startswith("3-D")
    assert [(sh["b"], sh["n"]) for sh in meta["shells"]] == [(1000.0, 9)]

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


def test_sample_snr_and_tissue(sample, sample_files):
    _, raw, _ = sample_files
    # one b0: helpers.noise falls back on tensor residuals of the 64 b=1000 directions
    expected = noise.estimate_noise(
        raw[..., :1].reshape(-1, 1), np.argwhere(np.ones((10, 10, 10), bool)), (10, 10, 10),
        attenuation=(raw[..., 1:] / raw[..., :1]).reshape(-1, 64), bvals=sample.bvals, bvecs=sample.bvecs,
    )
    assert sample.sigma == pytest.approx(expected.sigma, rel=1e-5)
    assert sample.snr == pytest.approx(expected.snr, rel=1e-5) and sample.snr_method == expected.method
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


def test_load_subject_passes_dti_max_b_from_the_config(hcp, tmp_path):
    cfg = tmp_path / "hcp.yaml"
    cfg.write_text(f"dataset: h\nkind: hcp\nroot: {hcp.root}\nsubjects: [100307]\nshell: [2000]\ndti_max_b: 2500\n")
    s = load_subject(load_config(cfg), "100307")
    assert s.dti_max_b == 2500 and s.n_directions == 8 and s.dti_columns.all()


# ----------------------------------------------------------------------------- any scan shape


def _square(shape, lo, hi, code, fill):
    labels = np.full(shape, fill, np.int16)
    labels[lo:hi, lo:hi, :] = code
    return labels


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


# ----------------------------------------------------------------------------- inspect_subject


@pytest.fixture
def no_data_reads(monkeypatch):
    """Fail on any read of image data (nibabel's ArrayProxy)."""
    from nibabel.arrayproxy import ArrayProxy

    def refuse(self, *args, **kwargs):
        raise AssertionError("image data was read")

    monkeypatch.setattr(ArrayProxy, "__getitem__", refuse)
    monkeypatch.setattr(ArrayProxy, "__array__", refuse)


def _paths_config(tmp_path, scan, extra="", **entries):
    files = dict(dwi=scan.dwi, bval=scan.bval, bvec=scan.bvec, mask=scan.mask, labels=scan.labels_path)
    files.update(entries)
    lines = "".join(f"    {k}: {v}\n" for k, v in files.items() if v is not None)
    cfg = tmp_path / "scan.yaml"
    cfg.write_text(f"dataset: d\nkind: paths\nsubjects:\n  s1:\n{lines}{extra}")
    return load_config(cfg)


def test_inspect_subject_reads_headers_only(tmp_path, rng, no_data_reads):
    labels = _square((7, 7, 2), 1, 6, 3, 2)
    scan = build_scan(tmp_path, rng, labels, n_b0=2, shells=((1000, 10), (2000, 7)))
    report = inspect_subject(_paths_config(tmp_path, scan, "shell: all\n"), "s1")
    assert report["shape"] == [7, 7, 2] and report["n_volumes"] == 19 and report["n_b0"] == 2
    assert [(sh["b"], sh["n"]) for sh in report["shells"]] == [(1000.0, 10), (2000.0, 7)]
    assert report["n_selected"] == 17 and report["n_dti_volumes"] == 10 and report["n_dti_directions"] == 10
    assert report["thin"] is True and report["dtype"] == "float32" and report["tissue"] == "label map (fast)"


def test_inspect_subject_of_the_sample_and_hcp(hcp, tmp_path, no_data_reads):
    report = inspect_subject(load_config(CONFIG_DIR / "sample.yaml"), "small_64D")
    assert report["n_b0"] == 1 and report["n_dti_directions"] == 64 and report["mask"] == "all voxels of the volume"
    cfg = tmp_path / "hcp.yaml"
    cfg.write_text(f"dataset: h\nkind: hcp\nroot: {hcp.root}\nsubjects: [100307]\n")
    report = inspect_subject(load_config(cfg), "100307")
    assert report["n_b0"] == 4 and report["n_selected"] == 9 and report["tissue"] == "FreeSurfer aparc+aseg"


def test_inspect_subject_names_every_problem(tmp_path, rng, no_data_reads):
    labels = _square((7, 7, 3), 1, 6, 3, 2)
    scan = build_scan(tmp_path, rng, labels)
    other = save_nifti(tmp_path / "other_mask.nii.gz", np.ones((7, 7, 2), np.uint8), scan.affine)
    config = _paths_config(tmp_path, scan, "shell: [1000, 1500]\n", mask=other, labels=tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError) as err:
        inspect_subject(config, "s1")
    message = str(err.value)
    assert "3 problem(s)" in message and str(config.path) in message and "subject s1" in message
    assert f"{other}: mask on another grid" in message
    assert f"{tmp_path / 'missing.nii.gz'}: tissue map file not found" in message
    assert f"{scan.bval}: no volume in the b=1500 shell" in message


def test_inspect_subject_counts_b0_unit_length_and_directions(tmp_path, rng, no_data_reads):
    labels = _square((7, 7, 3), 1, 6, 3, 2)
    scan = build_scan(tmp_path, rng, labels, n_b0=2, shells=((1000, 5), (2000, 9)))
    bvecs = scan.bvecs.copy()
    bvecs[4] *= 1.2
    write_gradients(scan.bval, scan.bvec, np.r_[scan.bvals, 2000], np.r_[bvecs, [[1, 0, 0]]])
    with pytest.raises(ValueError) as err:
        inspect_subject(_paths_config(tmp_path, scan, "shell: all\n"), "s1")
    message = str(err.value)
    assert f"{scan.dwi} has 16 volumes but there are 17 b-values" in message
    assert f"{scan.bvec}: 1 diffusion-weighted b-vector(s) are not unit length" in message
    assert f"{scan.bval}: the tensor fit" in message and "5 non-collinear directions" in message


def test_inspect_subject_truncated_uncompressed_dwi(tmp_path, rng, no_data_reads):
    labels = _square((7, 7, 3), 1, 6, 3, 2)
    scan = build_scan(tmp_path, rng, labels)
    dwi = tmp_path / "dwi.nii"
    save_nifti(dwi, scan.data, scan.affine)
    whole = dwi.read_bytes()
    dwi.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(ValueError, match=_match(dwi, "truncated NIfTI")):
        inspect_subject(_paths_config(tmp_path, scan, dwi=dwi), "s1")


# ----------------------------------------------------------------------------- the in-vivo scan


def _invivo_config():
    config = load_config(CONFIG_DIR / "invivo.yaml")
    if not (config.root / "b1k_b2k_example_slices_24_38.nii.gz").is_file():
        pytest.skip(f"{config.root}: the mdt b1k_b2k scan is not fetched (python -m helpers.datasets)")
    return config


@pytest.mark.slow
@pytest.mark.parametrize("shell, n_dirs", [(1000, 30), ([1000, 2000], 90), ("all", 90)])
def test_invivo_scan_loads(shell, n_dirs):
    import dataclasses

    config = dataclasses.replace(_invivo_config(), shell=shell if shell == "all" else tuple(np.atleast_1d(shell).astype(float)))
    s = load_subject(config, "b1k_b2k")
    assert s.shape == (104, 104, 2) and s.n_voxels == 8865 and s.info["n_b0"] == 13
    assert s.n_directions == n_dirs and s.dti_columns.sum() == 30
    assert set(np.unique(s.bvals)) == ({1000.0} if n_dirs == 30 else {1000.0, 2000.0})
    assert s.info["thin"] is True and all(v > 0 for v in s.info["tissue_counts"].values())
    # the two independent reads: per-voxel median b0 SNR ~36, MP-PCA ~25
    assert 20 <= s.snr <= 45, s.snr_method
    report = inspect_subject(config, "b1k_b2k")
    assert report["n_selected"] == n_dirs and report["n_dti_directions"] == 30


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
    from helpers.data import binary_mask

    mask, _ = binary_mask(values, path="m.nii.gz")
    assert int(mask.sum()) == kept


@pytest.mark.parametrize("values, message", [(np.array([0, 1, 2, 3]), "3 different non-zero values"),
                                             (np.array([0, np.nan, 1.0]), "NaN"),
                                             (np.array([0, -1.0]), "different non-zero")])
def test_masks_that_cannot_be_read_as_brain_are_refused(values, message):
    from helpers.data import binary_mask

    with pytest.raises(ValueError, match=f"m.nii.gz: .*{message}"):
        binary_mask(values, path="m.nii.gz")


def test_broken_volumes_are_left_out_by_index_and_b_value(tmp_path, rng):
    """A dropout (a diffusion-weighted volume of zeros) and a constant b0 repeat: both left
    out by name; the remaining volumes give the known tensors."""
    from helpers.data import load_note

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
