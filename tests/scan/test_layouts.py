"""Dataset layouts: HCP, BIDS, explicit paths, the embedded sample, a config's subjects.

Expected values come from the fixtures' ground truth (tensors and S0 chosen by the test)
or from reading the files with nibabel directly; never from the loader itself.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import _match, _row, save_nifti
from helpers.scan import noise
from helpers.config import CONFIG_DIR, load_config
from helpers.run.inspection import inspect_subject
from helpers.scan.layouts import load_bids, load_hcp, load_paths, load_sample, load_subject


# ----------------------------------------------------------------------------- HCP


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


def test_hcp_missing_subject_folder(hcp):
    with pytest.raises(ValueError, match=_match(hcp.root / "999999" / "T1w" / "Diffusion", "not found")):
        load_hcp(hcp.root, "999999")


def test_missing_aparc_aseg(hcp):
    hcp.aseg.unlink()
    with pytest.raises(ValueError, match=_match(hcp.aseg, "not found")):
        load_hcp(hcp.root, hcp.subject_id)


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
    # one b0: helpers.scan.noise falls back on tensor residuals of the 64 b=1000 directions,
    # of the fit voxels only: the 4x4x4 blocks whose block coordinates sum to an even number
    idx = np.argwhere(np.ones((10, 10, 10), bool))
    fit_rows = (idx // 4).sum(axis=1) % 2 == 0
    expected = noise.estimate_noise(
        raw[..., :1].reshape(-1, 1), idx, (10, 10, 10),
        attenuation=(raw[..., 1:] / raw[..., :1]).reshape(-1, 64), bvals=sample.bvals, bvecs=sample.bvecs,
        rows=fit_rows,
    )
    assert int(fit_rows.sum()) == sample.n_fit_voxels == 504
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


# ----------------------------------------------------------------------------- config


def test_load_subject_passes_dti_max_b_from_the_config(hcp, tmp_path):
    cfg = tmp_path / "hcp.yaml"
    cfg.write_text(f"dataset: h\nkind: hcp\nroot: {hcp.root}\nsubjects: [100307]\nshell: [2000]\ndti_max_b: 2500\n")
    s = load_subject(load_config(cfg), "100307")
    assert s.dti_max_b == 2500 and s.n_directions == 8 and s.dti_columns.all()


# ----------------------------------------------------------------------------- the in-vivo scan


def _invivo_config():
    config = load_config(CONFIG_DIR / "invivo.yaml")
    if not (config.root / "b1k_b2k_example_slices_24_38.nii.gz").is_file():
        pytest.skip(f"{config.root}: the mdt b1k_b2k scan is not fetched (python -m helpers.scan.datasets)")
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
