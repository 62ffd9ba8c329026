"""Write a SYNTHETIC subject with the size and layout of a Human Connectome Project scan.

It is a benchmark input, not data: a brain-shaped phantom (an ellipsoid brain with a
white-matter core whose fibre direction turns smoothly, a grey-matter rim, ventricles and
outer CSF) whose signals come from the project's own multi-tensor simulator with Rician
noise. It lets loading and evaluation be measured at the real size without the real data.
A ``SYNTHETIC.txt`` file in the subject folder makes every report made from it say so.

Layout and size as HCP's preprocessed ``T1w`` folder: 145x174x145 voxels of 1.25 mm,
288 volumes (18 b0 interleaved, 90 directions at each of b=1000/2000/3000, b-values
jittered by a few s/mm² as in the real files), float32 ``data.nii.gz`` (about 4 GB
uncompressed), ``nodif_brain_mask.nii.gz``, and an ``aparc+aseg.nii.gz`` on the 0.7 mm
T1w grid (260x311x260) with FreeSurfer labels.

    python benchmarks/make_hcp_like.py OUT_ROOT [--subject 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from helpers.io import atomic_path
from helpers.generators.simulation import draw_mixture, multi_tensor, random_rotations

SHAPE = (145, 174, 145)
VOXEL = 1.25
T1_SHAPE = (260, 311, 260)
T1_VOXEL = 0.7
SNR = 25.0  # of the b0 signal, roughly HCP's in white matter


def hcp_affine(shape, voxel):
    """An LAS affine centred on the grid, like HCP's (x flipped)."""
    centre = (np.array(shape) - 1) / 2 * voxel
    return np.array(
        [[-voxel, 0, 0, centre[0]], [0, voxel, 0, -centre[1]], [0, 0, voxel, -centre[2]], [0, 0, 0, 1.0]]
    )


def gradient_scheme(rng):
    """18 b0 volumes interleaved with 3 x 90 directions, HCP-like b-value jitter."""
    n_dw = 270
    bvals = np.repeat([1000.0, 2000.0, 3000.0], 90) + rng.integers(-10, 11, n_dw)
    rng.shuffle(bvals)
    dirs = rng.standard_normal((n_dw, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    b0_pos = np.linspace(0, 287, 18).round().astype(int)
    b = np.empty(288)
    g = np.zeros((288, 3))
    dw = np.setdiff1d(np.arange(288), b0_pos)
    b[b0_pos] = 5.0
    b[dw] = bvals
    g[dw] = dirs
    return b, g


def phantom_labels(shape, affine):
    """FreeSurfer labels (2/41 WM, 3/42 cortex, 4/43 ventricles, 24 CSF) of a brain-shaped
    phantom, evaluated at the world coordinates of a grid."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    x, y, z = (xyz / np.array([70.0, 88.0, 70.0], dtype=np.float32)).T  # brain semi-axes in mm
    r = np.sqrt(x * x + y * y + z * z)
    vent = np.sqrt(((np.abs(xyz[:, 0]) - 10) / 8) ** 2 + (xyz[:, 1] / 30) ** 2 + (xyz[:, 2] / 10) ** 2)
    labels = np.zeros(len(r), dtype=np.int32)
    left = xyz[:, 0] > 0
    labels[r < 1.0] = 24  # outer CSF
    labels[r < 0.93] = np.where(left[r < 0.93], 3, 42)  # cortex
    labels[r < 0.80] = np.where(left[r < 0.80], 2, 41)  # white matter
    labels[vent < 1.0] = np.where(left[vent < 1.0], 4, 43)  # ventricles
    return labels.reshape(shape)


def brain_signal(labels, indices, affine, bvals, bvecs, rng):
    """Noise-free signal (S0 = 1) of the brain voxels: WM fibres turning smoothly with
    position (plus a crossing fibre in part of the WM), isotropic GM, free-water CSF,
    each with some partial volume, through the project's multi-tensor kernel."""
    n = len(indices)
    xyz = indices @ affine[:3, :3].T + affine[:3, 3]
    lab = labels
    wm = np.isin(lab, (2, 41))
    gm = np.isin(lab, (3, 42))
    evals, evecs, fractions = draw_mixture("Syn", n, rng)  # 3 fibres, GM, CSF
    # fibre 1 turns with position; fibre 2 crosses it in a third of the WM; fibre 3 off
    theta = np.pi * (xyz[:, 1] / 88.0)
    phi = np.pi * (xyz[:, 2] / 70.0)
    d1 = np.stack([np.cos(theta) * np.cos(phi), np.sin(theta), np.cos(theta) * np.sin(phi)], axis=1)
    rot = random_rotations(n, rng)
    evecs[:, 0] = _frame(d1)
    evecs[:, 1] = _frame(np.cross(d1, rot[:, :, 0]))
    w = np.zeros((n, 5))
    w[wm, 0] = 0.75
    w[wm, 1] = np.where(xyz[wm, 0] > 20, 0.2, 0.0)
    w[wm, 3] = 0.15
    w[wm, 4] = 0.05
    w[gm, 3] = 0.85
    w[gm, 4] = 0.15
    w[~(wm | gm), 4] = 0.9
    w[~(wm | gm), 3] = 0.1
    w *= rng.uniform(0.8, 1.2, w.shape)
    fractions = w / w.sum(axis=1, keepdims=True)
    return multi_tensor(bvals, bvecs, evals, evecs, fractions, dtype=np.float32)


def _frame(d):
    """Rotation matrices whose first column is ``d`` (normalised)."""
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    a = np.where(np.abs(d[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e2 = np.cross(d, a)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    return np.stack([d, e2, np.cross(d, e2)], axis=2)


def write_streamed_nifti(path, shape, affine, volumes, *, zooms):
    """Write a 4-D float32 .nii.gz volume by volume (the whole array never in memory)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms(zooms)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_data_offset(352)  # 348-byte header + 4-byte extension flag
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            hdr.write_to(f)
            f.write(b"\x00" * (352 - f.tell()))  # extension flag: none
            for vol in volumes:
                f.write(np.asarray(vol, dtype="<f4").tobytes(order="F"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--subject", default="100000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    base = args.out_root / args.subject / "T1w"
    diff = base / "Diffusion"
    diff.mkdir(parents=True, exist_ok=True)
    (args.out_root / args.subject / "SYNTHETIC.txt").write_text(
        "This subject is a synthetic phantom written by benchmarks/make_hcp_like.py, not a scan.\n"
    )

    aff = hcp_affine(SHAPE, VOXEL)
    t1_aff = hcp_affine(T1_SHAPE, T1_VOXEL)
    t1_labels = phantom_labels(T1_SHAPE, t1_aff)
    with atomic_path(base / "aparc+aseg.nii.gz") as tmp:
        nib.save(nib.Nifti1Image(t1_labels, t1_aff), tmp)
    labels = phantom_labels(SHAPE, aff)
    brain = labels > 0
    with atomic_path(diff / "nodif_brain_mask.nii.gz") as tmp:
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), aff), tmp)
    bvals, bvecs = gradient_scheme(rng)
    np.savetxt(diff / "bvals", bvals[None], fmt="%d")
    np.savetxt(diff / "bvecs", bvecs.T, fmt="%.6f")
    print(f"labels and mask: {brain.sum():,} brain voxels ({time.perf_counter() - t0:.0f} s)")

    idx = np.argwhere(brain)
    s0 = np.where(np.isin(labels[brain], (4, 43, 24)), 1800.0, 1000.0).astype(np.float32)  # CSF brighter
    signal = brain_signal(labels[brain], idx, aff, bvals, bvecs, rng)
    sigma = np.float32(1000.0 / SNR)
    print(f"signals simulated ({time.perf_counter() - t0:.0f} s)")

    def volumes():
        ii = tuple(idx.T)
        for j in range(len(bvals)):
            vol = np.zeros(SHAPE, dtype=np.float32)
            vol[ii] = signal[:, j] * s0
            noise = rng.standard_normal((2,) + SHAPE, dtype=np.float32) * sigma
            yield np.hypot(vol + noise[0], noise[1])

    write_streamed_nifti(diff / "data.nii.gz", SHAPE + (len(bvals),), aff, volumes(), zooms=(VOXEL,) * 3 + (1.0,))
    print(f"wrote {args.out_root / args.subject} (synthetic, HCP layout) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
