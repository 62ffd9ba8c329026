"""Synthetic voxels with their ground truth, written to one ``.npz`` for training a model
elsewhere: ``synthqa export``.

    synthqa export CONFIG --results DIR --method NAME --voxels N --out FILE.npz
                   [--subject ID] [--seed S] [--bval FILE --bvec FILE] [--snr auto|none|X]
                   [--noise global|per_voxel] [--chunk N]

The voxels are drawn by :func:`helpers.generators.simulation.simulate` for one subject of a results
folder written by ``synthqa run`` (``<DIR>/<dataset>/<subject>/subject.npz``): on the
subject's own gradient table, or on another one (``--bval``/``--bvec``) with the subject's
tissue pools, noise model and calibration kept. ``docs/export.md`` lists what the file
holds and how to feed it to Keras or PyTorch.

Large files are written in chunks of :data:`CHUNK` voxels, each drawn with its own seed
(:func:`chunk_seed`) and written straight into ``.npy`` files on disk
(``numpy.lib.format.open_memmap``), so memory is bounded by one chunk whatever N is. The
``.npy`` files are then stored (not compressed: noisy floats barely shrink) in the
``.npz``, which is renamed into place: a failed or interrupted export leaves no partial
file and an existing output untouched. The same config, subject, method, N, chunk size and
seed give the same file, byte for byte.

Exit status: 0 written, 1 the file could not be written (disk full...), 2 bad input (one
line on stderr naming it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from helpers.generators import simulation
from helpers.contract import DEFAULTS, check_methods, method_name, needs_pools, parse_noise, parse_snr

__all__ = [
    "CHUNK",
    "EXPORT_PURPOSE",
    "chunk_seed",
    "read_table",
    "export",
    "add_export_arguments",
    "export_command",
]

CHUNK = 50_000
"""Voxels simulated and written at a time (the bound on memory, about 50 MB of float32
signals per 100 volumes)."""

EXPORT_PURPOSE = 6
"""Last entropy word of an exported chunk's seed. :data:`helpers.contract.SEED_PURPOSES`
uses 0-5 (training sets, network weights, judge sets, pseudo-scans, checks), so an
exported file never repeats a voxel the pipeline trained or judged on."""

MIN_DIRECTIONS = 6
"""Diffusion-weighted volumes a gradient table needs (a tensor has 6 unknowns besides S0)."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip member timestamps: the same seed gives the same bytes


def chunk_seed(seed, method, index):
    """The seed of chunk ``index`` of an export: ``[seed, crc32(name), index, 6]``.

    The method enters through a checksum of its table name (as in
    :func:`helpers.contract.replicate_seeds`), so two methods exported with one seed do
    not share random numbers.

    Examples
    --------
    >>> chunk_seed(0, "Syn", 2)
    [0, 3310143259, 2, 6]
    """
    for value, what in ((seed, "seed"), (index, "index")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return [int(seed), zlib.crc32(method_name(method).encode()), int(index), EXPORT_PURPOSE]


def read_table(bval_path, bvec_path, *, b0_threshold=50.0):
    """Read an FSL ``bvals``/``bvecs`` pair to simulate on.

    Returns
    -------
    bvals : (m,) float64 ndarray
        b-values, s/mm².
    bvecs : (m, 3) float64 ndarray
        Unit gradient directions; zero at b0 (b <= ``b0_threshold``).

    Raises
    ------
    ValueError
        Naming the file: missing, not numbers, counts that disagree, negative or
        non-finite b-values, a zero or non-finite diffusion-weighted b-vector, fewer than
        :data:`MIN_DIRECTIONS` diffusion-weighted volumes.
    """
    from helpers.scan.gradients import read_gradients

    bvals, bvecs = read_gradients(bval_path, bvec_path)  # files, layout, counts, b-values
    dw = bvals > b0_threshold
    if int(dw.sum()) < MIN_DIRECTIONS:
        raise ValueError(
            f"{bval_path}: {int(dw.sum())} diffusion-weighted volume(s) (b > {b0_threshold:g}); need at least {MIN_DIRECTIONS}"
        )
    norms = np.linalg.norm(np.where(dw[:, None], bvecs, 1.0), axis=1)
    bad = ~(np.isfinite(norms) & (norms > 1e-6))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{bvec_path}: volume {i} (b={bvals[i]:g}) has a zero or non-finite b-vector")
    bvecs = np.where(dw[:, None], bvecs / norms[:, None], 0.0)
    return bvals, bvecs


class _OnTable:
    """A subject seen through another gradient table.

    Only ``bvals`` and ``bvecs`` are replaced; everything else :func:`simulate` reads —
    SNR, σ and S0 (the noise model), the fit part, the tissue and its tensor fit (pools),
    the calibration — is the original subject's. Its ``attenuation`` keeps the original
    columns, so nothing here may fit to the subject (the caller computes pools and the
    calibration on the original first). A user generator that takes ``subject=`` gets the
    original fit part, with the original table.
    """

    def __init__(self, subject, bvals, bvecs):
        self._subject = subject
        self.bvals = bvals
        self.bvecs = bvecs

    def __getattr__(self, name):
        return getattr(self._subject, name)


def export(subject, method, n_voxels, out, *, seed=DEFAULTS["seed"], snr=DEFAULTS["snr"], noise=DEFAULTS["noise"],
           min_pool=DEFAULTS["min_pool"], wm_fa_min=DEFAULTS["wm_fa_min"],
           bvals=None, bvecs=None, chunk=CHUNK, meta=None, progress=True):
    """Simulate ``n_voxels`` voxels of ``method`` and write them, with their ground truth, to ``out``.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
        Gives the gradient table (unless ``bvals``/``bvecs``), the tissue pools, the noise
        model and, for ``Calibrated``, the fitted hyperparameters (``subject.calibration``).
    method : str
        Any method :func:`helpers.generators.simulation.simulate` takes.
    n_voxels : int
        Voxels, >= 1.
    out : path
        The ``.npz`` to write (its folder must exist); replaced atomically.
    seed : int
        Chunk i is drawn with ``numpy.random.default_rng(chunk_seed(seed, method, i))``.
    snr, noise, min_pool, wm_fa_min
        As in :func:`helpers.generators.simulation.simulate`.
    bvals : (m,) array_like, optional
        Another gradient table (s/mm²), with ``bvecs`` (m, 3) unit vectors, zero at b0
        (:func:`read_table`).
    chunk : int
        Voxels per chunk: the bound on memory. Part of what the file's numbers depend on.
    meta : dict, optional
        Extra entries for the file's ``meta`` record (dataset, subject...).
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    pathlib.Path
        ``out``. The file holds ``signals`` (noisy) and ``clean``, (N, m) float32;
        ``bvals`` (m,), ``bvecs`` (m, 3); every ground-truth array of ``simulate(...,
        truth=True)`` under its own name, N rows each; ``meta``, a JSON string.

    Raises
    ------
    ValueError
        Bad arguments, or a method the subject cannot support; nothing is written.
    """
    from tqdm import tqdm

    from helpers import __version__

    (method,) = check_methods([method], where="export")
    for value, what in ((n_voxels, "n_voxels"), (chunk, "chunk")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{what} must be a positive int, got {value!r}")
    chunk_seed(seed, method, 0)  # validates the seed
    parse_snr(snr)
    parse_noise(noise)
    if (bvals is None) != (bvecs is None):
        raise ValueError("bvals and bvecs go together: give both or neither")
    out = Path(out)
    reason = simulation.method_support(subject, method, min_pool=min_pool, wm_fa_min=wm_fa_min)
    if reason:
        raise ValueError(reason)
    pools = simulation.tissue_pools(subject, min_pool=min_pool, wm_fa_min=wm_fa_min) if needs_pools(method) else None
    if method == "Calibrated":
        simulation.calibration_of(subject, snr=snr)  # on the original table, once
    table = subject
    if bvals is not None:
        table = _OnTable(subject, np.asarray(bvals, dtype=float), np.asarray(bvecs, dtype=float))
    n, chunk = int(n_voxels), int(chunk)
    starts = range(0, n, chunk)
    record = {**(meta or {}), "method": method, "n": n, "seed": int(seed), "chunks": len(starts), "chunk_size": chunk,
              "snr": snr, "noise": noise, "volumes": int(len(table.bvals)), "version": __version__,
              "seeds": f"chunk i: numpy.random.default_rng([seed, crc32('{method_name(method)}'), i, {EXPORT_PURPOSE}])"}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays = {}
        with tqdm(total=n, desc=f"export {method_name(method)}", unit="voxel", unit_scale=True,
                  disable=not progress, file=sys.stderr) as bar:
            for index, start in enumerate(starts):
                size = min(chunk, n - start)
                clean, noisy, truth = simulation.simulate(
                    table, method, size, chunk_seed(seed, method, index), snr=snr, noise=noise, pools=pools,
                    min_pool=min_pool, wm_fa_min=wm_fa_min, truth=True,
                )
                rows = {"signals": noisy, "clean": clean, **{k: truth[k] for k in sorted(truth)}}
                if not arrays:
                    arrays = _open_arrays(tmp, rows, n)
                _write_rows(arrays, rows, start, size)
                bar.update(size)
        record["truth"] = [k for k in arrays if k not in ("signals", "clean")]
        for values in arrays.values():
            values.flush()
        names = list(arrays)
        arrays.clear()  # closes the memory maps
        extra = {"bvals": table.bvals, "bvecs": table.bvecs, "meta": np.array(json.dumps(record, sort_keys=True))}
        for name, values in extra.items():
            np.save(tmp / f"{name}.npy", np.asarray(values))
        order = names[:2] + ["bvals", "bvecs"] + names[2:] + ["meta"]  # signals, clean, table, truth, meta
        _store([(name, tmp / f"{name}.npy") for name in order], tmp / out.name)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _open_arrays(folder, rows, n):
    """One ``.npy`` memory map of n rows per array of the first chunk."""
    return {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.asarray(v).dtype,
                                            shape=(n,) + np.shape(v)[1:])
            for name, v in rows.items()}


def _write_rows(arrays, rows, start, size):
    if set(rows) != set(arrays):
        raise ValueError(f"simulate returned the arrays {sorted(rows)} for one chunk and {sorted(arrays)} for the first")
    for name, values in rows.items():
        values = np.asarray(values)
        target = arrays[name]
        if values.shape != (size,) + target.shape[1:]:
            raise ValueError(f"simulate returned {name} of shape {values.shape}; expected {(size,) + target.shape[1:]}")
        target[start:start + size] = values


def _store(files, path):
    """Zip ``(name, .npy path)`` pairs into an ``.npz`` (stored, ZIP64 when large, fixed
    timestamps), streaming each file: memory stays bounded."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, source in files:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.file_size = source.stat().st_size  # decides ZIP64 for the member
            with open(source, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


# --------------------------------------------------------------------------- the command


def add_export_arguments(parser):
    """The options of ``synthqa export``."""
    parser.add_argument("config", metavar="CONFIG", help="dataset config YAML (configs/*.yaml)")
    parser.add_argument("--results", required=True, metavar="DIR",
                        help="results folder of a `synthqa run` (holds DIR/<dataset>/<subject>/subject.npz)")
    parser.add_argument("--method", required=True, metavar="NAME",
                        help="generator: a built-in (Syn, FORCE, Calibrated, ...), NAME*s, package.module:function "
                             "or library:PATH.npz")
    parser.add_argument("--voxels", required=True, metavar="N", help="synthetic voxels to write")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="file to write (its folder must exist)")
    parser.add_argument("--subject", metavar="ID", help="subject id (default: the config's first)")
    parser.add_argument("--seed", metavar="S", help="seed (default: the config's)")
    parser.add_argument("--bval", metavar="FILE", help="simulate on this gradient table instead of the subject's "
                                                       "(FSL text, with --bvec; at least 6 diffusion-weighted volumes)")
    parser.add_argument("--bvec", metavar="FILE", help="b-vectors of --bval (3 x m or m x 3)")
    parser.add_argument("--snr", metavar="auto|none|X", help="noise level (default: the config's)")
    parser.add_argument("--noise", metavar="global|per_voxel", help="noise model (default: the config's)")
    parser.add_argument("--chunk", default=str(CHUNK), metavar="N",
                        help=f"voxels simulated and written at a time, the bound on memory (default {CHUNK}); "
                             "part of what the numbers depend on")
    parser.set_defaults(handler=export_command)
    return parser


def _int(text, what, *, minimum):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{what} must be {'positive' if minimum == 1 else f'>= {minimum}'}, got {value}")
    return value


def _snr(text):
    if text is None or isinstance(text, (int, float)):
        return parse_snr(text)
    try:
        return parse_snr(float(text))
    except ValueError:
        return parse_snr(text)


def _check_output(path):
    """The output path, or a ValueError saying why it cannot be written."""
    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise ValueError(f"--out {path}: the file name must end in .npz")
    if path.is_dir():
        raise ValueError(f"--out {path}: is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"--out {path}: cannot write there: folder {folder} does not exist")
    try:  # os.access says yes to root and no to some network mounts: try it
        tempfile.TemporaryDirectory(prefix=f".{path.name}.tmp-", dir=folder).cleanup()
    except OSError as e:
        raise ValueError(f"--out {path}: cannot write in {folder} ({e.strerror or e})") from e
    return path


def _plan(args):
    """Every input of ``synthqa export``, checked; raises ValueError naming the first bad one."""
    from helpers.config import load_config
    from helpers.scan.subject import CALIBRATION_FILE, Subject

    n = _int(args.voxels, "--voxels", minimum=1)
    chunk = _int(args.chunk, "--chunk", minimum=1)
    (method,) = check_methods([args.method], where="--method")
    out = _check_output(args.out)
    config = load_config(args.config)
    settings = config.simulation_settings()
    ids = config.subject_ids
    sid = ids[0] if args.subject is None else str(args.subject)
    if sid not in ids:
        raise ValueError(f"unknown subject {sid!r}: {config.path} lists {ids}")
    seed = settings["seed"] if args.seed is None else _int(args.seed, "--seed", minimum=0)
    snr = settings["snr"] if args.snr is None else args.snr
    _snr(snr)
    noise = parse_noise(settings["noise"] if args.noise is None else args.noise)
    folder = Path(args.results).expanduser() / config.dataset / sid
    for name in ("subject.npz", "subject.json"):
        if not (folder / name).is_file():
            raise ValueError(f"results folder lacks subject {sid}: {folder / name} not found "
                             f"(run `synthqa run {args.config}` with --out {args.results} first)")
    if method == "Calibrated" and not (folder / CALIBRATION_FILE).is_file():
        raise ValueError(f"Calibrated needs the subject's fit, and {folder / CALIBRATION_FILE} is not there "
                         "(notebook 02 writes it when Calibrated is in the config's methods)")
    if (args.bval is None) != (args.bvec is None):
        raise ValueError("--bval and --bvec go together: give both files or neither")
    table = {}
    if args.bval is not None:
        bvals, bvecs = read_table(args.bval, args.bvec, b0_threshold=config.b0_threshold)
        table = {"bvals": bvals, "bvecs": bvecs}
    subject = Subject.load(folder)
    meta = {"dataset": config.dataset, "subject": sid, "gradients": str(args.bval) if table else "subject"}
    return dict(subject=subject, method=method, n_voxels=n, out=out, seed=seed, snr=_snr(snr), noise=noise,
                min_pool=settings["min_pool"], wm_fa_min=settings["wm_fa_min"], chunk=chunk, meta=meta, **table)


def _refuse(error, status=2):
    print(f"synthqa export: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
    return status


def export_command(args):
    """``synthqa export``: check the inputs, write the file. Returns the exit status."""
    try:
        plan = _plan(args)
        path = export(**plan)
    except ValueError as e:
        return _refuse(e)
    except OSError as e:  # the disk filled, the folder went away...
        return _refuse(f"cannot write {args.out}: {e}", status=1)
    m = len(plan["bvals"]) if "bvals" in plan else len(plan["subject"].bvals)
    print(f"wrote {path}: {plan['n_voxels']:,} {method_name(plan['method'])} voxels x {m} volumes, "
          f"subject {plan['meta']['subject']}, seed {plan['seed']}")
    return 0
