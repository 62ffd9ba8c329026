"""``synthqa check``: inspect_subject reads headers and gradient tables only, and names
every problem it finds.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _match, _square, build_scan, save_nifti, write_gradients
from helpers.config import CONFIG_DIR, load_config
from helpers.run.inspection import inspect_subject


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
