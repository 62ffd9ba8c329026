"""Dataset layouts: where one subject's files lie, each read by :func:`helpers.scan.loading.load_dwi`.

- :func:`load_sample`: dipy's bundled real scan ``small_64D`` (no download);
- :func:`load_hcp`: the Human Connectome Project layout, tissue from ``aparc+aseg``;
- :func:`load_bids`: ``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with ``.bval``/``.bvec``;
- :func:`load_paths`: explicit files, tissue from FSL FAST ``pve_0/1/2`` or a label map.

:func:`load_subject` loads one subject of a dataset config, whatever its layout.
"""

from __future__ import annotations

from pathlib import Path

from helpers.scan import tissue as _tissue
from helpers.scan.loading import _load_image, _read, _tissue_from_grid, load_dwi

__all__ = [
    "load_sample",
    "load_hcp",
    "load_bids",
    "load_paths",
    "load_subject",
]


def _sample_files():
    import dipy.data

    files = Path(dipy.data.__file__).parent / "files"
    return {"dwi": files / "small_64D.nii", "bval": files / "small_64D.bval", "bvec": files / "small_64D.bvec", "mask": "all"}


def _hcp_files(root, subject_id):
    base = Path(root) / str(subject_id) / "T1w"
    diff = base / "Diffusion"
    if not diff.is_dir():
        raise ValueError(f"{diff}: HCP subject folder not found (expected <root>/<id>/T1w/Diffusion)")
    return {
        "dwi": diff / "data.nii.gz",
        "bval": diff / "bvals",
        "bvec": diff / "bvecs",
        "mask": diff / "nodif_brain_mask.nii.gz",
        "aseg": base / "aparc+aseg.nii.gz",
    }


def _bids_files(root, subject_id):
    sid = str(subject_id).removeprefix("sub-")
    folder = Path(root) / f"sub-{sid}"
    if not folder.is_dir():
        raise ValueError(f"{folder}: BIDS subject folder not found")
    runs = sorted(folder.glob("dwi/*_dwi.nii*")) + sorted(folder.glob("ses-*/dwi/*_dwi.nii*"))
    if not runs:
        raise ValueError(f"{folder}: no dwi/*_dwi.nii.gz found")
    if len(runs) > 1:
        raise ValueError(f"{folder}: {len(runs)} DWI runs found ({[r.name for r in runs]}); keep one per subject")
    dwi = runs[0]
    stem = dwi.name.split(".nii")[0]
    return {"dwi": dwi, "bval": dwi.with_name(stem + ".bval"), "bvec": dwi.with_name(stem + ".bvec"), "mask": None}


def load_sample(**kwargs):
    """dipy's bundled real scan ``small_64D`` (10x10x10 voxels, 2 mm, 1 b0 + 64 directions
    at b=1000), found inside the installed dipy package; nothing is downloaded.

    The volume is a crop from inside the brain (white matter, grey matter and the edge of
    a ventricle), so every voxel is used (``median_otsu`` would keep only the bright CSF
    of the b0). It has no tissue map: tissue comes from the approximate DTI segmentation.
    Keyword arguments go to :func:`load_dwi`.
    """
    files = _sample_files()
    kwargs.setdefault("dataset", "sample")
    kwargs.setdefault("subject", "small_64D")
    kwargs.setdefault("mask", files["mask"])
    return load_dwi(files["dwi"], files["bval"], files["bvec"], **kwargs)


def load_hcp(root, subject_id, **kwargs):
    """A Human Connectome Project subject (preprocessed ``T1w/Diffusion`` layout).

    Reads ``<root>/<id>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}``;
    tissue from ``<root>/<id>/T1w/aparc+aseg.nii.gz`` resampled nearest-neighbour onto the
    diffusion grid and mapped to WM/GM/CSF (:func:`helpers.scan.tissue.freesurfer_to_tissue`).
    """
    files = _hcp_files(root, subject_id)
    aseg = files["aseg"]

    def tissue(indices, affine, shape):
        img = _load_image(aseg, what="aparc+aseg")
        labels = _read(img, path=aseg)
        return _tissue.freesurfer_to_tissue(_tissue.nearest_neighbour_lookup(labels, img.affine, indices, affine))

    kwargs.setdefault("subject", str(subject_id))
    subj = load_dwi(
        files["dwi"],
        files["bval"],
        files["bvec"],
        mask=files["mask"],
        tissue=tissue,
        tissue_source=f"FreeSurfer {aseg}, nearest-neighbour onto the diffusion grid",
        **kwargs,
    )
    # benchmarks/make_hcp_like.py marks its phantoms so that no report passes one off as a scan
    subj.info["synthetic"] = (Path(root) / str(subject_id) / "SYNTHETIC.txt").is_file()
    return subj


def load_bids(root, subject_id, **kwargs):
    """A BIDS subject: ``<root>/sub-<id>/[ses-*/]dwi/*_dwi.nii[.gz]`` with ``.bval``/``.bvec``.

    Exactly one DWI run must match; raw BIDS has no tissue map, so the approximate DTI
    segmentation is used.
    """
    files = _bids_files(root, subject_id)
    kwargs.setdefault("subject", str(subject_id).removeprefix("sub-"))
    return load_dwi(files["dwi"], files["bval"], files["bvec"], **kwargs)


_PATH_KEYS = {"dwi", "bval", "bvec", "mask", "pve", "labels"}


def load_paths(dwi, bval, bvec, *, mask=None, pve=None, labels=None, label_scheme="fast", **kwargs):
    """A scan given by explicit file paths.

    Parameters
    ----------
    pve : sequence of 3 paths, optional
        FSL FAST partial volume maps ``pve_0, pve_1, pve_2`` (CSF, GM, WM) on the DWI grid.
    labels : path, optional
        A label map on the DWI grid: FAST ``_seg`` codes (``label_scheme="fast"``: 1 CSF,
        2 GM, 3 WM) or FreeSurfer labels (``"freesurfer"``).
    """
    if pve is not None and labels is not None:
        raise ValueError("give either pve (FSL FAST maps) or labels, not both")
    tissue, source = None, ""
    if pve is not None:
        if len(pve) != 3:
            raise ValueError(f"pve must list 3 files (pve_0 CSF, pve_1 GM, pve_2 WM), got {len(pve)}")
        lookups = [_tissue_from_grid(p, dwi, lambda a: a) for p in pve]
        tissue = lambda indices, affine, shape: _tissue.pve_to_tissue(*(f(indices, affine, shape) for f in lookups))  # noqa: E731

        source = f"FSL FAST partial volumes {[str(p) for p in pve]} (largest fraction >= 0.5)"
    elif labels is not None:
        if label_scheme not in ("fast", "freesurfer"):
            raise ValueError(f"label_scheme must be 'fast' or 'freesurfer', got {label_scheme!r}")
        convert = (
            _tissue.freesurfer_to_tissue
            if label_scheme == "freesurfer"
            else lambda a: _tissue.fast_labels_to_tissue(a, source=str(labels))
        )
        tissue = _tissue_from_grid(labels, dwi, convert)
        source = f"label map {labels} ({label_scheme})"
    return load_dwi(dwi, bval, bvec, mask=mask, tissue=tissue, tissue_source=source, **kwargs)


def _check_listed(config, sid):
    ids = [str(s) for s in config.subject_ids]
    if sid not in ids:
        raise ValueError(f"{config.path}: subject {sid!r} is not listed; subjects: {ids}")


def _paths_files(config, sid):
    """The files of a ``kind: paths`` subject, relative to ``root`` (or the config's folder)."""
    entry = {str(k): v for k, v in config.subjects.items()}[sid] if isinstance(config.subjects, dict) else None
    if not isinstance(entry, dict):
        raise ValueError(f"{config.path}: kind 'paths' needs subjects as a mapping id -> {{dwi, bval, bvec, ...}}")
    unknown = sorted(set(entry) - _PATH_KEYS)
    if unknown:
        raise ValueError(f"{config.path}: subject {sid}: unknown key(s) {unknown}; allowed: {sorted(_PATH_KEYS)}")
    base = config.root or config.path.parent

    def resolve(p):
        p = Path(p).expanduser()
        return p if p.is_absolute() else base / p

    files = {k: ([resolve(p) for p in v] if k == "pve" else v if v == "all" else resolve(v)) for k, v in entry.items()}
    missing = {"dwi", "bval", "bvec"} - set(files)
    if missing:
        raise ValueError(f"{config.path}: subject {sid} lacks {sorted(missing)}")
    files.setdefault("mask", None)
    return files


def _subject_files(config, sid):
    """dwi, bval, bvec, mask (path, "all" or None) and tissue files of one config subject."""
    if config.kind == "sample":
        return _sample_files()
    if config.kind == "hcp":
        return _hcp_files(config.root, sid)
    if config.kind == "bids":
        return _bids_files(config.root, sid)
    return _paths_files(config, sid)


def load_subject(config, subject_id):
    """Load one subject of a dataset config (:func:`helpers.config.load_config`), with the
    config's shell, tolerance, b0 threshold and ``dti_max_b`` (``config.load_settings()``)."""
    sid = str(subject_id)
    _check_listed(config, sid)
    common = dict(config.load_settings(), dataset=config.dataset, subject=sid)
    if config.kind == "sample":
        return load_sample(**common)
    if config.kind == "hcp":
        return load_hcp(config.root, sid, **common)
    if config.kind == "bids":
        return load_bids(config.root, sid, **common)
    files = _paths_files(config, sid)
    return load_paths(
        files.pop("dwi"), files.pop("bval"), files.pop("bvec"), label_scheme=config.labels, **files, **common
    )
