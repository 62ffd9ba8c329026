"""``synthqa check``: :func:`inspect_subject` checks one subject's files from their headers
and gradient tables alone, finding what loading would refuse without reading image data.
"""

from __future__ import annotations

import numpy as np

from helpers.scan import tissue as _tissue
from helpers.contract import parse_shell
from helpers.scan.gradients import (
    check_dti_directions,
    check_gradients,
    count_directions,
    find_shells,
    read_gradients,
    select_shell,
)
from helpers.scan.layouts import _check_listed, _subject_files
from helpers.scan.loading import _check_file_size, _check_same_grid, _load_image
from helpers.scan.subject import _erosion_note

__all__ = [
    "inspect_subject",
]


def _generator_problems(methods, bvals, bvecs):
    """What a run would find wrong with the config's own generators on this subject's
    volumes, in a second: a ``library:PATH`` is read and matched to the volumes; a
    ``package.module:function`` is imported and called on 8 voxels (one that takes the
    subject is only imported: the subject is not loaded here)."""
    from helpers.contract import is_library, is_plugin, load_plugin
    from helpers.generators.simulation import call_plugin, library_columns

    problems = []
    for spec in methods:
        try:
            if is_library(spec):
                library_columns(spec, bvals, bvecs)
            elif is_plugin(spec):
                _, wants_subject = load_plugin(spec)
                if not wants_subject:
                    call_plugin(spec, bvals, bvecs, 8, np.random.default_rng(0))
        except ValueError as e:
            problems.append(str(e))
    return problems


def inspect_subject(config, subject_id):
    """Check one subject's files quickly, without reading any image data (``synthqa check``).

    Reads the NIfTI headers (nibabel loads data lazily) and the gradient tables, and checks
    what :func:`helpers.scan.layouts.load_subject` would refuse: files present and readable, a 4-D DWI,
    gradient and volume counts, a b0 volume, unit b-vectors, the requested shells, at
    least 6 non-collinear directions with b <= ``dti_max_b``, the mask and tissue maps on
    the DWI grid, and (uncompressed files only) a file as long as its header promises.
    What needs the data (an empty mask, S0 <= 0, a truncated gzip stream) is found when
    the subject loads.

    Returns
    -------
    dict
        dataset, subject, files, shape, voxel_size_mm, dtype, n_volumes, n_b0,
        shells_in_file, shells (selected), n_selected, n_dti_volumes, n_dti_directions,
        thin, erosion, mask, tissue.

    Raises
    ------
    ValueError
        Naming the config, the subject and every problem found (one per line, each
        naming its file).
    """
    sid = str(subject_id)
    _check_listed(config, sid)
    settings = config.load_settings()
    shell, tol = parse_shell(settings["shell"]), settings["shell_tolerance"]
    b0_thr, dti_max_b = settings["b0_threshold"], settings["dti_max_b"]
    files = _subject_files(config, sid)
    problems = []
    report = {
        "dataset": config.dataset,
        "subject": sid,
        "files": {k: ([str(p) for p in v] if isinstance(v, list) else None if v is None else str(v)) for k, v in files.items()},
    }

    img = None
    try:
        img = _load_image(files["dwi"], what="DWI")
        if len(img.shape) != 4:
            raise ValueError(f"{files['dwi']}: DWI must be 4-D, got shape {img.shape}")
        _check_file_size(img, files["dwi"])
        grid = tuple(int(s) for s in img.shape[:3])
        report.update(
            shape=list(grid),
            voxel_size_mm=[float(v) for v in img.header.get_zooms()[:3]],
            dtype=str(img.get_data_dtype()),
            n_volumes=int(img.shape[3]),
            thin=_tissue.is_thin(grid),
            erosion=_erosion_note(grid),
        )
    except ValueError as e:
        problems.append(str(e))
        img = img if img is not None and len(img.shape) == 4 else None

    try:
        bvals, bvecs = read_gradients(files["bval"], files["bvec"])
    except ValueError as e:
        problems.append(str(e))
    else:
        b0 = bvals <= b0_thr
        report["n_b0"] = int(b0.sum())
        report["shells_in_file"] = find_shells(bvals, b0_threshold=b0_thr, tolerance=tol)
        if img is not None and len(bvals) != img.shape[3]:
            problems.append(f"{files['dwi']} has {img.shape[3]} volumes but there are {len(bvals)} b-values/b-vectors")
        try:  # b0 and unit length; the count is checked above (when the header was read)
            bvecs = check_gradients(bvals, bvecs, len(bvals), b0_threshold=b0_thr, dwi_path=files["dwi"], bvec_path=files["bvec"])
        except ValueError as e:
            problems.append(str(e))
            bvecs = np.where(b0[:, None], 0.0, bvecs)
        try:
            sel = select_shell(bvals, shell, tolerance=tol, b0_threshold=b0_thr, source=str(files["bval"]))
        except ValueError as e:
            problems.append(str(e))
        else:
            dti = bvals[sel] <= dti_max_b
            report.update(
                shells=find_shells(bvals[sel], b0_threshold=b0_thr, tolerance=tol),
                n_selected=int(len(sel)),
                n_dti_volumes=int(dti.sum()),
                n_dti_directions=count_directions(bvecs[sel][dti]),
            )
            try:
                check_dti_directions(
                    bvals[sel][dti], bvecs[sel][dti], dti_max_b=dti_max_b, source=str(files["bval"]),
                    all_bvals=bvals, shell=shell,
                )
            except ValueError as e:
                problems.append(str(e))
            problems += _generator_problems(config.methods, bvals[sel], bvecs[sel])

    def same_grid(path, what):
        try:
            other = _load_image(path, what=what)
            _check_file_size(other, path)
            if img is not None:
                _check_same_grid(other, img.shape, img.affine, path=path, ref_path=files["dwi"], what=what)
        except ValueError as e:
            problems.append(str(e))

    mask = files.get("mask")
    if mask is None:
        report["mask"] = "automatic (dipy median_otsu on the mean b0, or every voxel of a crop)"
    elif isinstance(mask, str) and mask == "all":
        report["mask"] = "all voxels of the volume"
    else:
        report["mask"] = str(mask)
        same_grid(mask, "mask")

    if files.get("pve") is not None:
        pve = files["pve"]
        if len(pve) != 3:
            problems.append(f"{config.path}: subject {sid}: pve must list 3 files (pve_0 CSF, pve_1 GM, pve_2 WM), got {len(pve)}")
        for p in pve:
            same_grid(p, "tissue map")
        report["tissue"] = "FSL FAST partial volumes"
    elif files.get("labels") is not None:
        same_grid(files["labels"], "tissue map")
        report["tissue"] = f"label map ({config.labels})"
    elif files.get("aseg") is not None:
        try:
            _load_image(files["aseg"], what="aparc+aseg")  # resampled onto the DWI grid: any grid
        except ValueError as e:
            problems.append(str(e))
        report["tissue"] = "FreeSurfer aparc+aseg"
    else:
        report["tissue"] = "approximate DTI segmentation"

    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"{config.path}: subject {sid}: {len(problems)} problem(s):\n{lines}")
    return report
