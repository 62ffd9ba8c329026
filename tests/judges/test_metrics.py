"""Metrics on hand-made reconstructions: zeros for the identity, known angles for known
rotations, FA errors against dipy's own TensorModel."""

import numpy as np
import pandas as pd
import pytest
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel

from helpers.scan.subject import Subject
from helpers.contract import COLUMNS
from helpers.judges.metrics import angle_deg, evaluate, mean_errors, summarise, voxel_errors, write_error_maps


def _table(n_dirs=40, b=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_dirs, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.full(n_dirs, b), g


def _rotation_z(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def _signal(bvals, bvecs, evals, R):
    """exp(-b gᵀ D g) for D = R diag(evals) Rᵀ, written out here by hand."""
    D = R @ np.diag(evals) @ R.T
    return np.exp(-bvals * np.einsum("mi,ij,mj->m", bvecs, D, bvecs))


def test_angle_closed_forms():
    assert angle_deg([1, 0, 0], [1, 0, 0]) == pytest.approx(0)
    assert angle_deg([1, 0, 0], [-1, 0, 0]) == pytest.approx(0)  # sign-invariant
    assert angle_deg([1, 0, 0], [0, 3, 0]) == pytest.approx(90)  # length-invariant
    assert angle_deg([1, 0, 0], [1, 1, 0]) == pytest.approx(45)
    assert angle_deg([1, 0, 0], [np.cos(np.radians(30)), np.sin(np.radians(30)), 0]) == pytest.approx(30)
    assert np.isnan(angle_deg([0, 0, 0], [1, 0, 0]))


def test_identity_reconstruction_gives_zero_errors():
    bvals, bvecs = _table()
    real = np.stack([_signal(bvals, bvecs, [1.7e-3, 2e-4, 2e-4], _rotation_z(a)) for a in (0, 40, 80)])
    err = voxel_errors(bvals, bvecs, real, real.copy())
    np.testing.assert_array_equal(err["signal_mae"], 0)
    np.testing.assert_array_equal(err["fa_mae"], 0)
    np.testing.assert_allclose(err["angle_deg"], 0, atol=1e-5)


def test_rotated_reconstruction_gives_that_angle_and_no_fa_error():
    bvals, bvecs = _table(60)
    evals = [1.7e-3, 2.5e-4, 2.5e-4]  # FA ~ 0.83, inside [0.5, 0.9]
    real = _signal(bvals, bvecs, evals, np.eye(3))[None]
    for deg in (5, 20, 60, 90):
        recon = _signal(bvals, bvecs, evals, _rotation_z(deg))[None]
        err = voxel_errors(bvals, bvecs, real, recon)
        assert err["angle_deg"][0] == pytest.approx(deg, abs=1e-4)
        assert err["fa_mae"][0] == pytest.approx(0, abs=1e-6)  # rotation keeps the eigenvalues
        assert err["signal_mae"][0] == pytest.approx(np.abs(recon - real).mean())


def test_signal_mae_by_hand():
    bvals, bvecs = _table(4)
    real = np.array([[0.5, 0.4, 0.3, 0.2]])
    recon = np.array([[0.6, 0.4, 0.1, 0.2]])  # |diff| = .1, 0, .2, 0 -> mean .075
    assert voxel_errors(bvals, bvecs, real, recon)["signal_mae"][0] == pytest.approx(0.075)


def test_fa_error_matches_dipy_tensor_model():
    bvals, bvecs = _table(64, seed=3)
    rng = np.random.default_rng(1)
    real = np.stack([_signal(bvals, bvecs, ev, _rotation_z(a)) for ev, a in zip(rng.uniform(2e-4, 2e-3, (20, 3)), rng.uniform(0, 180, 20))])
    recon = np.clip(real + rng.normal(0, 0.02, real.shape), 1e-3, None)
    err = voxel_errors(bvals, bvecs, real, recon)
    gtab = gradient_table(np.r_[0, bvals], bvecs=np.r_[np.zeros((1, 3)), bvecs])
    model = TensorModel(gtab, fit_method="WLS")
    ones = np.ones((len(real), 1))
    fa_real = model.fit(np.hstack([ones, real])).fa
    fa_rec = model.fit(np.hstack([ones, recon])).fa
    np.testing.assert_allclose(err["fa_mae"], np.abs(fa_rec - fa_real), atol=1e-6)


def test_angle_only_in_fa_range():
    bvals, bvecs = _table(60)
    iso = _signal(bvals, bvecs, [1e-3, 1e-3, 1e-3], np.eye(3))  # FA 0: excluded
    fib = _signal(bvals, bvecs, [1.7e-3, 2.5e-4, 2.5e-4], np.eye(3))  # FA ~ 0.83: kept
    err = voxel_errors(bvals, bvecs, np.stack([iso, fib]), np.stack([iso, fib]))
    assert np.isnan(err["angle_deg"][0]) and np.isfinite(err["angle_deg"][1])


def test_tensor_metrics_use_only_the_dti_volumes():
    # Two shells; the b=3000 volumes of the reconstruction are wrecked. Fits restricted to
    # b <= 1500 must see no FA error; signal MAE counts every volume.
    b1, g1 = _table(30, b=1000.0, seed=4)
    b3, g3 = _table(30, b=3000.0, seed=5)
    bvals, bvecs = np.r_[b1, b3], np.r_[g1, g3]
    real = np.stack([_signal(bvals, bvecs, [1.7e-3, 3e-4, 3e-4], _rotation_z(a)) for a in (0, 45)])
    recon = real.copy()
    recon[:, 30:] = 0.5
    cols = bvals <= 1500
    err = voxel_errors(bvals, bvecs, real, recon, dti_columns=cols)
    np.testing.assert_allclose(err["fa_mae"], 0, atol=1e-6)
    np.testing.assert_allclose(err["angle_deg"], 0, atol=1e-3)
    np.testing.assert_allclose(err["signal_mae"], np.abs(0.5 - real[:, 30:]).sum(axis=1) / 60)
    # and the FA of the real data is dipy's on the b=1000 volumes alone
    gtab = gradient_table(np.r_[0, b1], bvecs=np.r_[np.zeros((1, 3)), g1])
    fa_dipy = TensorModel(gtab, fit_method="WLS").fit(np.hstack([np.ones((2, 1)), real[:, :30]])).fa
    err_all = voxel_errors(bvals, bvecs, real, real * 0 + 1e-3, dti_columns=cols)
    np.testing.assert_allclose(err_all["fa_mae"], np.abs(0 - fa_dipy), atol=1e-6)  # isotropic recon: FA 0


def test_shape_mismatch_is_an_error():
    bvals, bvecs = _table(4)
    with pytest.raises(ValueError, match="shape"):
        voxel_errors(bvals, bvecs, np.ones((3, 4)), np.ones((3, 5)))


def test_summarise_means_per_tissue_and_skips_empty():
    errors = {
        "signal_mae": np.array([1.0, 3.0, 5.0, 7.0]),
        "fa_mae": np.array([0.1, 0.1, 0.3, 0.3]),
        "angle_deg": np.array([np.nan, np.nan, 10.0, 20.0]),
    }
    tissue = np.array([1, 1, 3, 3], dtype=np.uint8)  # CSF, CSF, WM, WM; no GM
    t = pd.DataFrame(summarise(errors, tissue, dataset="d", subject="s", method="Syn", replicate=3), columns=list(COLUMNS))
    assert set(t.replicate) == {3}
    get = lambda m, ti: t[(t.metric == m) & (t.tissue == ti)].value.item()  # noqa: E731
    assert get("signal_mae", "all") == pytest.approx(4.0)
    assert get("signal_mae", "CSF") == pytest.approx(2.0)
    assert get("signal_mae", "WM") == pytest.approx(6.0)
    assert get("angle_deg", "all") == pytest.approx(15.0)
    assert not ((t.tissue == "GM").any())  # no GM voxel, no row
    assert not ((t.metric == "angle_deg") & (t.tissue == "CSF")).any()  # all NaN there


def test_evaluate_table_and_error_maps(tmp_path):
    import nibabel as nib

    bvals, bvecs = _table(30)
    real = np.stack([_signal(bvals, bvecs, [1.7e-3, 2.5e-4, 2.5e-4], _rotation_z(a)) for a in (0, 30, 60, 90)]).astype(np.float32)
    subj = Subject(
        attenuation=real,
        bvals=bvals,
        bvecs=bvecs,
        indices=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]]),
        shape=(2, 2, 2),
        affine=np.diag([2.0, 2.0, 2.0, 1.0]),
        tissue=np.array([3, 3, 2, 1], dtype=np.uint8),
        s0=np.ones(4, np.float32),
        info={"dataset": "toy", "subject": "s1"},
    )
    recon = {("Syn", 0): real, ("RandomWM", 0): real * 0.9, ("RandomWM", 1): lambda: real * 0.7}
    table, errors = evaluate(subj, recon)
    assert list(table.columns) == list(COLUMNS)
    syn = table[table.method == "Syn"]
    assert np.allclose(syn[syn.metric == "signal_mae"].value, 0)
    rw = table[(table.method == "RandomWM") & (table.metric == "signal_mae") & (table.tissue == "all")]
    assert rw.replicate.tolist() == [0, 1]
    assert rw.value.tolist() == pytest.approx([np.abs(real * 0.9 - real).mean(), np.abs(real * 0.7 - real).mean()], rel=1e-6)
    paths = write_error_maps(subj, mean_errors(errors), tmp_path)
    assert len(paths) == 6
    img = nib.load(tmp_path / "RandomWM_signal_mae.nii.gz")
    vol = np.asarray(img.dataobj)
    assert vol.shape == (2, 2, 2) and np.allclose(img.affine, subj.affine)
    # the map is the mean over the two replicates: |0.9 - 1| and |0.7 - 1| of the voxel's signal
    assert vol[1, 1, 1] == pytest.approx(0.2 * real[3].mean(), rel=1e-5)
    assert np.isnan(vol[0, 0, 1])  # outside the brain
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_diverged_reconstruction_is_named(tmp_path):
    bvals, bvecs = _table(10)
    real = np.full((2, 10), 0.5, np.float32)
    subj = Subject(attenuation=real, bvals=bvals, bvecs=bvecs, indices=np.array([[0, 0, 0], [1, 0, 0]]),
                   shape=(2, 1, 1), affine=np.eye(4), tissue=np.array([3, 2], np.uint8), s0=np.ones(2, np.float32))
    bad = real.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="Sampled replicate 0: the reconstruction holds NaN"):
        evaluate(subj, {"Syn": real, "Sampled": bad})


def test_mean_errors_ignores_nan_replicates_per_voxel():
    errors = {
        ("Syn", 0): {"angle_deg": np.array([np.nan, 10.0, np.nan])},
        ("Syn", 1): {"angle_deg": np.array([np.nan, 20.0, 4.0])},
    }
    out = mean_errors(errors)["Syn"]["angle_deg"]
    assert np.isnan(out[0]) and out[1] == pytest.approx(15.0) and out[2] == pytest.approx(4.0)
