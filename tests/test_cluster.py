"""Per-subject work on a Dask LocalCluster: two small real subjects and a broken one."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers.batch import main
from helpers.cluster import dask_map
from helpers.results import SubjectResult

pytest.importorskip("distributed")


def _dies(config_path, subject, **kwargs):
    """A task whose worker process dies under it (as when killed for memory)."""
    import os

    if subject == "doomed":
        os._exit(1)
    return SubjectResult(subject=subject, dataset="d")


@pytest.mark.slow
def test_a_task_whose_worker_died_becomes_a_failed_result():
    results = {r.subject: r for r in dask_map(_dies, "c.yaml", ["fine", "doomed"], scheduler="local", workers=1)}
    assert results["fine"].ok
    doomed = results["doomed"]
    assert not doomed.ok and doomed.failed_step == "dask task" and doomed.error


@pytest.mark.slow
def test_local_cluster_runs_both_subjects_and_reports_the_broken_one(tmp_path, capsys):
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    dwi = files / "small_64D.nii"
    # subject "half": the sample's first five slices only, through a mask on its grid;
    # subject "broken": an empty mask, which only loading the data finds (check passes it)
    img = nib.load(dwi)
    mask = np.zeros(img.shape[:3], dtype=np.uint8)
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "empty_mask.nii.gz")
    mask[:, :, :5] = 1
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "half_mask.nii.gz")
    grad = f"bval: {files / 'small_64D.bval'}, bvec: {files / 'small_64D.bvec'}"
    config = tmp_path / "two.yaml"
    config.write_text(
        "dataset: two\nkind: paths\nprofile: quick\nmethods: [Syn, RandomWM]\nsubjects:\n"
        f"  whole: {{dwi: {dwi}, {grad}, mask: all}}\n"
        f"  half: {{dwi: {dwi}, {grad}, mask: half_mask.nii.gz}}\n"
        f"  broken: {{dwi: {dwi}, {grad}, mask: empty_mask.nii.gz}}\n"
    )
    out = tmp_path / "results"
    rc = main([str(config), "--out", str(out), "--scheduler", "local", "--jobs", "1"])
    err = capsys.readouterr().err
    assert rc == 1  # one subject failed ...
    assert "two/broken: 01_load_data failed: ValueError" in err and "empty_mask.nii.gz" in err
    # ... and the other two finished and are both in the summary
    metrics = pd.read_csv(out / "two" / "summary" / "metrics.csv", dtype={"subject": str})
    assert set(metrics["subject"]) == {"whole", "half"}
    n_voxels = {s: len(np.load(out / "two" / s / "subject.npz")["indices"]) for s in ("whole", "half")}
    assert n_voxels == {"whole": 1000, "half": 500}
    # the same files as the local runner writes, provenance from the worker included
    for s in ("whole", "half"):
        for name in ("01_load_data", "02_simulate", "03_train_autoencoder"):
            assert (out / "two" / s / f"{name}.html").is_file()
        assert (out / "two" / s / "provenance.json").is_file()
    assert (out / "two" / "summary" / "04_results.html").is_file()
    assert (out / "two" / "index.html").is_file()
