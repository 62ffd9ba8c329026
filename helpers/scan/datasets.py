"""Fetch the in-vivo scan that ``configs/invivo.yaml`` describes.

The Microstructure Diffusion Toolbox (mdt 1.2.7, Robbert Harms, LGPL-3.0; on PyPI)
ships a real in-vivo human scan inside its wheel, ``mdt/data/mdt_example_data/b1k_b2k/``:
104x104x2 voxels of 2 mm, 13 b0 volumes, 30 directions at b=1000 and 60 at b=2000 s/mm²
(the ``.bval`` file is in s/mm²), float32, with a brain mask of 8,865 voxels.

:func:`fetch_invivo` downloads that one wheel with ``python -m pip download --no-deps
mdt==1.2.7`` into a temporary folder, checks its sha256, and extracts only the scan's four
files (each checked against its own sha256) into ``data/invivo/``. mdt is never installed:
its dependencies are not ours. Files already in place with the right hashes are kept,
so a second call does nothing.

Set ``SYNTHQA_MDT_WHEEL`` to a copy of the wheel you already have to skip the download
(the copy is checked against the same sha256).

Command line::

    python -m helpers.scan.datasets [DEST]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from helpers.io import atomic_path

__all__ = [
    "MDT_VERSION",
    "WHEEL_NAME",
    "WHEEL_SHA256",
    "MEMBER_DIR",
    "FILES",
    "WHEEL_ENV",
    "default_dest",
    "fetch_invivo",
    "sha256",
]

MDT_VERSION = "1.2.7"
WHEEL_NAME = f"mdt-{MDT_VERSION}-py2.py3-none-any.whl"
WHEEL_SHA256 = "8a3351be197a25a60c45cdbd97e88c13d39a15c0c4b08bdd06ef475fb3e9546a"
"""sha256 of ``mdt-1.2.7-py2.py3-none-any.whl`` as published on PyPI."""

MEMBER_DIR = "mdt/data/mdt_example_data/b1k_b2k"
"""Folder of the scan inside the wheel."""

FILES = {
    "b1k_b2k.bval": "896cc6413582001c083504df232f6c79ddb04762cbec67cd9ee4f81fc6d3f945",
    "b1k_b2k.bvec": "40b5ee294762eae4e2d4182260e04193e3788ab43cf4d90c7dda414add8f1e61",
    "b1k_b2k_example_slices_24_38.nii.gz": "993bd917b680805eb5fab213917d9960adff905f6cfd9286c3a748782a81daa4",
    "b1k_b2k_example_slices_24_38_mask.nii.gz": "18886f0e2ac0105bd9bc01434771315dfabf79607825eb34cdf00cbc66befde0",
}
"""The files extracted, with the sha256 of each (from the wheel above)."""

WHEEL_ENV = "SYNTHQA_MDT_WHEEL"
"""Environment variable naming a local copy of the wheel (skips the download)."""


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_dest():
    """The folder ``configs/invivo.yaml`` reads the scan from (its ``root``)."""
    from helpers.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "invivo.yaml").root


def _in_place(dest):
    """True when every file is in ``dest`` with its expected hash."""
    return all((dest / name).is_file() and sha256(dest / name) == digest for name, digest in FILES.items())


def _check_wheel(path):
    if not Path(path).is_file():
        raise ValueError(f"{path}: mdt wheel not found")
    actual = sha256(path)
    if actual != WHEEL_SHA256:
        raise ValueError(
            f"{path}: sha256 {actual} does not match the pinned mdt {MDT_VERSION} wheel "
            f"({WHEEL_SHA256}); this is not the file SynthQA expects: delete it and fetch again"
        )


def _download(folder):
    """``python -m pip download --no-deps mdt==1.2.7`` into ``folder``; the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(folder), f"mdt=={MDT_VERSION}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = Path(folder) / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-5:]
        raise RuntimeError(
            f"could not download {WHEEL_NAME} with `{' '.join(cmd[2:])}` (exit {done.returncode}): "
            + " | ".join(tail)
            + f". Without network access, download the wheel elsewhere and set {WHEEL_ENV} to its path."
        )
    return wheel


def _extract(wheel, dest):
    """Check every member's sha256 first, then write each atomically into ``dest``."""
    contents = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name, digest in FILES.items():
            member = f"{MEMBER_DIR}/{name}"
            if member not in names:
                raise ValueError(f"{wheel}: {member} is missing from the wheel")
            data = zf.read(member)
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ValueError(f"{wheel}: {member} has sha256 {actual}, expected {digest}")
            contents[name] = data
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        with atomic_path(dest / name) as tmp:
            tmp.write_bytes(data)


def fetch_invivo(dest=None, *, force=False):
    """Put the mdt ``b1k_b2k`` in-vivo scan into ``dest`` (default: ``data/invivo/``).

    Parameters
    ----------
    dest : path, optional
        Target folder; default :func:`default_dest` (the ``root`` of ``configs/invivo.yaml``).
    force : bool
        Fetch again even when the files are in place.

    Returns
    -------
    dict
        ``dest``, ``files`` (paths), ``action``: ``"cached"`` (already in place, nothing
        read), ``"extracted from <wheel>"`` (the :data:`WHEEL_ENV` copy) or ``"downloaded"``.

    Raises
    ------
    ValueError
        When a wheel or an extracted member does not have its pinned sha256 (nothing is
        written then), or the :data:`WHEEL_ENV` file does not exist.
    RuntimeError
        When pip cannot download the wheel (no network): the message says how to use a copy.
    """
    dest = Path(dest) if dest is not None else default_dest()
    files = [str(dest / name) for name in FILES]
    if not force and _in_place(dest):
        return {"dest": str(dest), "files": files, "action": "cached"}
    local = os.environ.get(WHEEL_ENV)
    if local:
        _check_wheel(local)
        _extract(Path(local), dest)
        return {"dest": str(dest), "files": files, "action": f"extracted from {local} ({WHEEL_ENV})"}
    with tempfile.TemporaryDirectory(prefix="synthqa-mdt-") as tmp:
        wheel = _download(tmp)
        _check_wheel(wheel)
        _extract(wheel, dest)
    return {"dest": str(dest), "files": files, "action": f"downloaded {WHEEL_NAME} from PyPI"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        result = fetch_invivo(argv[0] if argv else None)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result["action"] == "cached":
        print(f"mdt {MDT_VERSION} b1k_b2k scan already in {result['dest']} (sha256 checked); nothing to do")
    else:
        print(f"mdt {MDT_VERSION} b1k_b2k scan: {result['action']}; wrote {len(result['files'])} files to {result['dest']}:")
        for f in result["files"]:
            print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
