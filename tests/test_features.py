"""Rotation-invariant features (helpers.features) against closed forms and dipy: spherical
harmonic powers of known profiles, rotation invariance, the tensor's FA from dipy."""

from __future__ import annotations

import numpy as np
import pytest
from dipy.data import get_sphere
from dipy.reconst.dti import fractional_anisotropy

from conftest import random_rotations, tensor_signal
from helpers import features
from helpers.scan.layouts import load_sample


@pytest.fixture(scope="module")
def sample():
    return load_sample()

def test_shell_groups_by_gaps():
    groups = features.shell_groups([5, 990, 2010, 1005, 3000, 1995, 2985][1:])
    assert {b: idx.tolist() for b, idx in groups.items()} == {1000: [0, 2], 2000: [1, 4], 3000: [3, 5]}
    with pytest.raises(ValueError, match="empty"):
        features.shell_groups([])


def test_sh_power_closed_forms():
    g = get_sphere(name="repulsion100").vertices
    z = g[:, 2]
    profiles = np.stack([np.ones_like(z), 3 * z**2 - 1, 35 * z**4 - 30 * z**2 + 3])
    power, resid = features.sh_power(profiles, g, orders=(0, 2, 4))
    # mean over the sphere of each profile squared: 1, ∫(3z²−1)²/2 dz = 4/5,
    # and Y_4^0 = 3/(16√π)(35z⁴ − 30z² + 3) gives (16√π/3)² / (4π) = 64/9
    expected = {0: [1, 0, 0], 2: [0, 4 / 5, 0], 4: [0, 0, 64 / 9]}
    for l, values in expected.items():
        np.testing.assert_allclose(power[l], values, atol=1e-9)
    np.testing.assert_allclose(resid, 0, atol=1e-9)


def test_sh_power_is_rotation_invariant(sample, rng):
    """A tensor profile rotated 50 ways on the sample's 64 directions keeps its power per
    order within 5% of the same tensor's power on a dense 724-direction sphere."""
    R = random_rotations(rng, 50)
    D = np.einsum("nij,j,nkj->nik", R, [1.7e-3, 0.3e-3, 0.3e-3], R)
    power, _ = features.sh_power(tensor_signal(np.ones(50), sample.bvals, sample.bvecs, D), sample.bvecs)
    dense = get_sphere(name="repulsion724").vertices
    reference, resid = features.sh_power(tensor_signal(np.ones(1), 1000.0 * np.ones(len(dense)), dense, D[:1]), dense, order=12)
    assert resid[0] < 1e-6  # the dense fit holds the whole profile
    assert set(power) == {2, 4}
    for l in (2, 4):
        np.testing.assert_allclose(power[l], reference[l][0], rtol=0.05)


def test_sh_basis_rejects_a_zero_direction():
    with pytest.raises(ValueError, match="zero length"):
        features.sh_basis([[0, 0, 0], [1, 0, 0]], 2)


def test_invariant_features_of_known_tensors(sample, rng):
    evals = np.array([[1.7e-3, 0.3e-3, 0.2e-3], [1.0e-3, 0.8e-3, 0.7e-3], [3e-3, 3e-3, 3e-3]])
    R = random_rotations(rng, 3)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R)
    E = tensor_signal(np.ones(3), sample.bvals, sample.bvecs, D)
    f = features.invariant_features(E, sample.bvals, sample.bvecs)
    assert list(f.columns) == ["fa", "md", "ev1", "ev2", "ev3", "mean_b1000", "sh2_b1000", "sh4_b1000", "resid_b1000"]
    np.testing.assert_allclose(f[["ev1", "ev2", "ev3"]], evals, rtol=1e-6)
    np.testing.assert_allclose(f["fa"], fractional_anisotropy(evals), atol=1e-6)
    np.testing.assert_allclose(f["md"], evals.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(f["mean_b1000"], E.mean(axis=1), rtol=1e-12)
    # the same tensors in another orientation: every feature within a few percent
    R2 = random_rotations(rng, 3)
    E2 = tensor_signal(np.ones(3), sample.bvals, sample.bvecs, np.einsum("nij,nj,nkj->nik", R2, evals, R2))
    f2 = features.invariant_features(E2, sample.bvals, sample.bvecs)
    np.testing.assert_allclose(f2.drop(columns="mean_b1000"), f.drop(columns="mean_b1000"), rtol=0.05, atol=1e-5)


def test_invariant_features_dti_columns_and_shells(rng):
    """Two shells: the tensor uses only the columns asked for; each shell gets its features."""
    g = get_sphere(name="repulsion100").vertices[:30]
    bvals = np.r_[np.full(30, 1000.0), np.full(30, 3000.0)]
    bvecs = np.vstack([g, g])
    evals = np.array([[1.5e-3, 0.4e-3, 0.4e-3]])
    R = random_rotations(rng, 1)[0]
    D = (R * evals[0]) @ R.T
    E = tensor_signal(1.0, bvals, bvecs, D)[None]
    E[:, 30:] *= 0.5  # not a tensor at b=3000: a fit of every column would be off
    f = features.invariant_features(E, bvals, bvecs, dti_columns=bvals <= 1500)
    np.testing.assert_allclose(f[["ev1", "ev2", "ev3"]].to_numpy()[0], evals[0], rtol=1e-6)
    assert {"mean_b1000", "mean_b3000", "sh4_b1000", "sh4_b3000", "resid_b3000"} <= set(f.columns)
    with pytest.raises(ValueError, match="dti_columns"):
        features.invariant_features(E, bvals, bvecs, dti_columns=np.zeros(60, bool))
    with pytest.raises(ValueError, match="must be"):
        features.invariant_features(E[:, :10], bvals, bvecs)


# ----------------------------------------------------------------------------- C2ST
