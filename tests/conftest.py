"""Shared fixtures: small scans written to ``tmp_path`` with a ground truth the tests know.

Every fixture draws its randomness from the seeded ``rng`` fixture. The ground truth is
kept next to the files (the ``truth`` namespaces below), so a test can compute what the
loader should return by hand, without calling the code it is testing.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers.scan.layouts import load_hcp

SEED = 20240611

# FreeSurfer labels used by the synthetic aparc+aseg and the tissue code each one must get
# (0 none, 1 CSF, 2 GM, 3 WM), written out by hand from FreeSurferColorLUT.txt.
FS_EXPECTED = {
    0: 0,  # Unknown / background
    2: 3,  # Left-Cerebral-White-Matter
    41: 3,  # Right-Cerebral-White-Matter
    3: 2,  # Left-Cerebral-Cortex
    42: 2,  # Right-Cerebral-Cortex
    1005: 2,  # ctx-lh-cuneus (aparc)
    2024: 2,  # ctx-rh-precentral (aparc)
    10: 2,  # Left-Thalamus
    4: 1,  # Left-Lateral-Ventricle
    43: 1,  # Right-Lateral-Ventricle
}
# A label of another tissue for each tissue: the fine-grid voxels that a correct
# nearest-neighbour lookup must *not* pick hold it, so a wrong pick changes the answer.
_DECOY = {0: 2, 1: 2, 2: 4, 3: 3}


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


# ----------------------------------------------------------------------------- writers


def save_nifti(path, data, affine):
    """Write ``data`` as NIfTI with ``affine`` (the dtype of ``data`` is kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float)), path)
    return path


def write_gradients(bval_path, bvec_path, bvals, bvecs, *, fsl_layout=True):
    """FSL text files: one row of b-values; b-vectors as 3 rows (FSL) or k rows of 3."""
    bval_path, bvec_path = Path(bval_path), Path(bvec_path)
    bval_path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(bval_path, np.asarray(bvals, dtype=float)[None], fmt="%g")
    bvecs = np.asarray(bvecs, dtype=float)
    np.savetxt(bvec_path, bvecs.T if fsl_layout else bvecs, fmt="%.10f")
    return bval_path, bvec_path


def random_unit_vectors(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_rotations(rng, n):
    """(n, 3, 3) random rotation matrices (QR of Gaussian matrices, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def tensor_signal(s0, bvals, bvecs, D):
    """S = S0 exp(-b gᵀ D g) for tensors ``D`` (..., 3, 3) on every gradient."""
    quad = np.einsum("mi,...ij,mj->...m", bvecs, D, bvecs)
    return np.asarray(s0)[..., None] * np.exp(-np.asarray(bvals) * quad)


# ----------------------------------------------------------------------------- HCP


HCP_SHAPE = (8, 9, 7)
HCP_AFFINE = np.array(  # 2 mm, x flipped like HCP's LAS-stored T1w/Diffusion
    [[-2.0, 0, 0, 7.0], [0, 2.0, 0, -8.0], [0, 0, 2.0, -6.0], [0, 0, 0, 1]]
)
# aparc+aseg at 1 mm with its origin a quarter voxel off: diffusion voxel (i, j, k) lands
# at fine index (2i + 0.25, 2j - 0.25, 2k + 0.25), whose nearest voxel is (2i, 2j, 2k)
# (rounding down or up instead of to the nearest would pick a decoy on one axis).
ASEG_AFFINE = np.array(
    [[-1.0, 0, 0, 7.25], [0, 1.0, 0, -7.75], [0, 0, 1.0, -6.25], [0, 0, 0, 1]]
)
B0_FACTORS = np.array([0.98, 1.02, 1.01, 0.99])  # the 4 b0 repeats, relative to S0


def _hcp_scheme(rng):
    """4 interleaved b0 (b=5) and shells of 9, 8, 7 directions at b≈1000, 2000, 3000
    with HCP-like jitter of up to ±10. Returns bvals, bvecs, nominal shell of each."""
    nominal_dw = np.repeat([1000, 2000, 3000], [9, 8, 7])
    nominal_dw = rng.permutation(nominal_dw)
    nominal = np.insert(nominal_dw, [0, 6, 12, 18], 0)  # b0 at 0, 7, 14, 21
    jitter = rng.integers(-10, 11, size=nominal.size)
    bvals = np.where(nominal == 0, 5, nominal + jitter).astype(float)
    bvecs = random_unit_vectors(rng, nominal.size)
    bvecs[nominal == 0] = 0.0
    return bvals, bvecs, nominal


def build_hcp(root, rng, subject_id="100307"):
    """Write one HCP-layout subject under ``root`` and return its ground truth."""
    root = Path(root)
    diff = root / subject_id / "T1w" / "Diffusion"
    bvals, bvecs, nominal = _hcp_scheme(rng)
    shape = HCP_SHAPE
    n = int(np.prod(shape))

    # Known tensors: sorted eigenvalues in [0.2, 2.5] x 1e-3 mm²/s, random orientation.
    evals = np.sort(rng.uniform(0.2e-3, 2.5e-3, size=(n, 3)), axis=1)[:, ::-1]
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R).reshape(shape + (3, 3))
    s0 = rng.uniform(400.0, 1200.0, size=shape)

    data = tensor_signal(s0, bvals, bvecs, D)  # b0 volumes: S0 (quad is 0)
    b0_idx = np.flatnonzero(nominal == 0)
    data[..., b0_idx] = s0[..., None] * B0_FACTORS
    data = data.astype(np.float32)

    # Brain mask: an ellipsoid; the voxels outside still hold valid signal, so a loader
    # ignoring the mask would return more voxels.
    ii, jj, kk = np.indices(shape)
    c = (np.array(shape) - 1) / 2
    mask = ((ii - c[0]) / 3.6) ** 2 + ((jj - c[1]) / 4.1) ** 2 + ((kk - c[2]) / 3.2) ** 2 <= 1.0

    # Intended FreeSurfer label of each diffusion voxel (never 0 inside the brain),
    # written at the fine voxel (2i, 2j, 2k); decoys everywhere else.
    brain_labels = [k for k in FS_EXPECTED if k != 0]
    labels = rng.choice(brain_labels, size=shape)
    labels[~mask] = rng.choice(list(FS_EXPECTED), size=int((~mask).sum()))
    expected_tissue = np.vectorize(FS_EXPECTED.get)(labels).astype(np.uint8)
    decoy = np.vectorize(_DECOY.get)(expected_tissue)
    fine = np.repeat(np.repeat(np.repeat(decoy, 2, 0), 2, 1), 2, 2).astype(np.int32)
    fine[::2, ::2, ::2] = labels

    save_nifti(diff / "data.nii.gz", data, HCP_AFFINE)
    save_nifti(diff / "nodif_brain_mask.nii.gz", mask.astype(np.uint8), HCP_AFFINE)
    write_gradients(diff / "bvals", diff / "bvecs", bvals, bvecs)
    save_nifti(diff.parent / "aparc+aseg.nii.gz", fine, ASEG_AFFINE)

    return SimpleNamespace(
        root=root,
        subject_id=subject_id,
        diffusion=diff,
        dwi=diff / "data.nii.gz",
        bval=diff / "bvals",
        bvec=diff / "bvecs",
        mask_path=diff / "nodif_brain_mask.nii.gz",
        aseg=diff.parent / "aparc+aseg.nii.gz",
        shape=shape,
        affine=HCP_AFFINE.copy(),
        bvals=bvals,
        bvecs=bvecs,
        nominal=nominal,
        b0_idx=b0_idx,
        shell_idx=np.flatnonzero(nominal == 1000),  # from the nominal shells, not the jitter
        s0=s0 * B0_FACTORS.mean(),  # S0 = mean of the b0 repeats
        D=D,
        data=data,
        mask=mask,
        labels=labels,
        expected_tissue=expected_tissue,
    )


@pytest.fixture
def hcp(tmp_path, rng):
    """An HCP-layout subject ``100307`` under ``tmp_path/hcp`` (see :func:`build_hcp`)."""
    return build_hcp(tmp_path / "hcp", rng)


# ----------------------------------------------------------------------------- BIDS


BIDS_SHAPE = (14, 14, 10)
BIDS_AFFINE = np.array([[2.0, 0, 0, -14], [0, 2.0, 0, -14], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def _write_bids_run(folder, stem, rng):
    """A two-shell run (2 b0, 12 directions at b≈1000, 6 at b≈2000): a bright box of
    tensors in air (magnitude noise only), so that median_otsu finds the box."""
    nominal = np.r_[0, rng.permutation(np.repeat([1000, 2000], [12, 6])), 0]
    bvals = np.where(nominal == 0, 0, nominal + rng.integers(-5, 6, nominal.size)).astype(float)
    bvecs = random_unit_vectors(rng, nominal.size)
    bvecs[nominal == 0] = 0.0
    n = int(np.prod(BIDS_SHAPE))
    evals = np.sort(rng.uniform(0.3e-3, 2.0e-3, size=(n, 3)), axis=1)[:, ::-1]
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R).reshape(BIDS_SHAPE + (3, 3))
    s0 = np.zeros(BIDS_SHAPE)  # air around the box: magnitude noise only
    s0[3:11, 3:11, 2:8] = rng.uniform(800, 1000, size=(8, 8, 6))
    data = tensor_signal(s0, bvals, bvecs, D)
    data = np.abs(data + rng.normal(0, 5.0, size=data.shape)).astype(np.float32)
    dwi = save_nifti(folder / f"{stem}_dwi.nii.gz", data, BIDS_AFFINE)
    write_gradients(folder / f"{stem}_dwi.bval", folder / f"{stem}_dwi.bvec", bvals, bvecs)
    return SimpleNamespace(dwi=dwi, bvals=bvals, bvecs=bvecs, nominal=nominal, data=data)


@pytest.fixture
def bids(tmp_path, rng):
    """A BIDS dataset: ``sub-01/dwi/`` and ``sub-02/ses-1/dwi/``, and a YAML config for it
    (root written relative to the config's folder)."""
    root = tmp_path / "bids"
    runs = {
        "01": _write_bids_run(root / "sub-01" / "dwi", "sub-01", rng),
        "02": _write_bids_run(root / "sub-02" / "ses-1" / "dwi", "sub-02_ses-1", rng),
    }
    config = tmp_path / "bids.yaml"
    config.write_text(
        "dataset: mybids\nkind: bids\nroot: bids\nsubjects: ['01', '02']\n"
        "shell: 1000\nshell_tolerance: 50\nprofile: quick\n"
    )
    return SimpleNamespace(root=root, config=config, runs=runs, shape=BIDS_SHAPE, affine=BIDS_AFFINE)


# ----------------------------------------------------------------------------- small scans


TISSUE_EVALS = {1: (3.0e-3, 3.0e-3, 3.0e-3), 2: (0.8e-3, 0.8e-3, 0.8e-3), 3: (1.7e-3, 0.3e-3, 0.3e-3)}
"""Eigenvalues (mm²/s) of the tensor each tissue code gets in :func:`build_scan`:
CSF free water, GM isotropic, WM prolate (FA 0.80)."""
TISSUE_S0 = {0: 0.0, 1: 3000.0, 2: 1200.0, 3: 1000.0}
"""S0 of each tissue code in :func:`build_scan` (CSF bright on b0, as in a real scan)."""


def build_scan(folder, rng, labels, *, n_b0=3, shells=((1000, 12),), dtype=np.float32, s0=None,
               sigma=0.0, affine=None, stem="dwi"):
    """Write a small scan whose every voxel holds a known tensor, and its label map.

    Parameters
    ----------
    labels : (X, Y, Z) int ndarray
        Tissue codes (0 outside, 1 CSF, 2 GM, 3 WM); written as ``<stem>_labels.nii.gz``
        (FSL FAST codes) and ``labels > 0`` as ``<stem>_mask.nii.gz``.
    shells : sequence of (b, n_directions)
        Random unit directions per shell; the b0 volumes come first.
    dtype : numpy dtype
        Stored data type; integer types are rounded and clipped at 0.
    s0 : dict, optional
        S0 per tissue code (default :data:`TISSUE_S0`).
    sigma : float
        Gaussian noise sd added to every volume (scanner units); the magnitude is stored,
        so voxels outside (S0 0) hold air: noise that does not attenuate.

    Returns a namespace with the paths and the ground truth (bvals, bvecs, D, s0, data as
    stored, labels). WM tensors point along a random direction per voxel.
    """
    folder = Path(folder)
    labels = np.asarray(labels, dtype=np.int16)
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else np.asarray(affine, float)
    s0_map = np.vectorize({**TISSUE_S0, **(s0 or {})}.get)(labels).astype(float)
    bvals = np.r_[np.zeros(n_b0), np.concatenate([np.full(n, float(b)) for b, n in shells])]
    bvecs = np.r_[np.zeros((n_b0, 3)), random_unit_vectors(rng, len(bvals) - n_b0)]
    n = labels.size
    evals = np.array([TISSUE_EVALS.get(int(c), (1e-3,) * 3) for c in labels.ravel()])
    R = random_rotations(rng, n)
    D = np.einsum("nij,nj,nkj->nik", R, evals, R).reshape(labels.shape + (3, 3))
    data = tensor_signal(s0_map, bvals, bvecs, D)
    if sigma:
        data = np.abs(data + rng.normal(0, sigma, data.shape))
    if np.issubdtype(dtype, np.integer):
        data = np.clip(np.round(data), 0, np.iinfo(dtype).max)
    data = data.astype(dtype)
    dwi = save_nifti(folder / f"{stem}.nii.gz", data, affine)
    bval, bvec = write_gradients(folder / f"{stem}.bval", folder / f"{stem}.bvec", bvals, bvecs)
    mask = save_nifti(folder / f"{stem}_mask.nii.gz", (labels > 0).astype(np.uint8), affine)
    label_path = save_nifti(folder / f"{stem}_labels.nii.gz", labels, affine)
    return SimpleNamespace(
        dwi=dwi, bval=bval, bvec=bvec, mask=mask, labels_path=label_path, labels=labels, affine=affine,
        shape=labels.shape, bvals=bvals, bvecs=bvecs, D=D, s0=s0_map, data=data,
    )


# ----------------------------------------------------------------------------- loading tests
# Shared by test_gradients, test_subject, test_loading, test_layouts and test_inspection;
# hcp_subject is the one fixture here that calls the loader (the HCP fixture through load_hcp).


def _row(subject, voxel):
    """The row of ``subject`` holding grid voxel ``voxel`` (fails if absent)."""
    rows = np.flatnonzero((subject.indices == np.asarray(voxel)).all(axis=1))
    assert rows.size == 1, f"voxel {voxel} found {rows.size} times"
    return int(rows[0])


def _match(path, *words):
    """A regex requiring the file name and each word, in any order."""
    parts = [re.escape(str(path))] + [re.escape(w) for w in words]
    return "".join(f"(?=[\\s\\S]*{p})" for p in parts)


@pytest.fixture
def hcp_subject(hcp):
    return load_hcp(hcp.root, hcp.subject_id, dataset="hcp")


def _square(shape, lo, hi, code, fill):
    labels = np.full(shape, fill, np.int16)
    labels[lo:hi, lo:hi, :] = code
    return labels



def split_phantom(seed=13, **info):
    """A 20x20x10 all-WM phantom split into fit and judge blocks: 30 directions on two
    shells (b = 1000, 2000), S0 ~ U(600, 1400) with noise sigma 40, attenuation all zero
    (the caller fills it)."""
    from helpers.scan.split import block_split
    from helpers.scan.subject import Subject

    rng = np.random.default_rng(seed)
    g = rng.standard_normal((30, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    b = np.r_[np.full(15, 1000.0), np.full(15, 2000.0)]
    shape = (20, 20, 10)
    idx = np.argwhere(np.ones(shape, bool))
    n = len(idx)
    judge, blocks, _ = block_split(idx, shape)
    s0 = rng.uniform(600, 1400, n).astype(np.float32)
    return Subject(attenuation=np.zeros((n, 30), np.float32), bvals=b, bvecs=g, indices=idx, shape=shape,
                   affine=np.eye(4), tissue=np.full(n, 3, np.uint8), s0=s0, snr=float(np.median(s0) / 40),
                   sigma=40.0, judge=judge, blocks=blocks, info=info)


HAND_VERDICT = pd.DataFrame([
    # hand-written rows in the columns of helpers.judges.stats.verdict
    dict(dataset="sample", metric="signal_mae", best="Sampled", runner_up="Syn", best_mean=0.0815, runner_mean=0.0857,
         margin=0.0042, ci_low=0.0011, ci_high=0.0073, level="replicate", n_units=5, rank_held=4, rank_n=5,
         floor=0.08, ratio_to_floor=1.02),
    dict(dataset="sample", metric="angle_deg", best="Sampled", runner_up="SampleAndMean", best_mean=4.6, runner_mean=5.49,
         margin=0.89, ci_low=-1.5, ci_high=3.3, level="replicate", n_units=5, rank_held=3, rank_n=5,
         floor=float("nan"), ratio_to_floor=float("nan")),
])
"""Two verdict rows written by hand (the report's and the index's tests read them as verdict.csv)."""
