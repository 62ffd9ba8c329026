"""The synthetic HCP-like benchmark input: streamed NIfTI writing and the HCP scheme."""

import sys

import nibabel as nib
import numpy as np

from helpers.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from make_hcp_like import gradient_scheme, write_streamed_nifti  # noqa: E402


def test_streamed_volumes_read_back_exactly_where_they_were_written(tmp_path):
    """A volume shifted by even one voxel (a wrong data offset) must fail this."""
    affine = np.diag([1.25, 1.25, 1.25, 1.0])
    vols = [np.arange(60, dtype=np.float32).reshape(3, 4, 5) + 100 * k for k in range(4)]
    path = tmp_path / "data.nii.gz"
    write_streamed_nifti(path, (3, 4, 5, 4), affine, iter(vols), zooms=(1.25, 1.25, 1.25, 1.0))
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.stack(vols, axis=-1))
    np.testing.assert_allclose(img.affine, affine)


def test_gradient_scheme_is_hcp_shaped():
    b, g = gradient_scheme(np.random.default_rng(0))
    assert len(b) == 288 and (b <= 50).sum() == 18
    for shell in (1000, 2000, 3000):
        on = np.abs(b - shell) <= 10
        assert on.sum() == 90
        np.testing.assert_allclose(np.linalg.norm(g[on], axis=1), 1)
    np.testing.assert_array_equal(g[b <= 50], 0)
