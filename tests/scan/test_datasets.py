"""Fetching the mdt in-vivo scan: hash pinning, extraction of only the scan's files,
caching, the pip command. Every test uses a small fake wheel built here (zipfile), with
the expected hashes patched to the fake's (computed with hashlib, not by the module)."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile

import pytest

from helpers.scan import datasets


def _sha(data):
    return hashlib.sha256(data).hexdigest()


CONTENTS = {
    "b1k_b2k.bval": b"0 1000 2000\n",
    "b1k_b2k.bvec": b"0 1 0\n0 0 1\n0 0 0\n",
    "b1k_b2k_example_slices_24_38.nii.gz": b"not really a nifti",
    "b1k_b2k_example_slices_24_38_mask.nii.gz": b"mask bytes",
}


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A wheel holding the four members (plus files that must not be extracted), with
    the module's pinned hashes patched to match it."""
    wheel = tmp_path / "wheels" / datasets.WHEEL_NAME
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in CONTENTS.items():
            zf.writestr(f"{datasets.MEMBER_DIR}/{name}", data)
        zf.writestr(f"{datasets.MEMBER_DIR}/b1k_b2k.prtcl", b"protocol")
        zf.writestr("mdt/__init__.py", b"import mot\n")
    monkeypatch.setattr(datasets, "WHEEL_SHA256", _sha(wheel.read_bytes()))
    monkeypatch.setattr(datasets, "FILES", {name: _sha(data) for name, data in CONTENTS.items()})
    monkeypatch.setenv(datasets.WHEEL_ENV, str(wheel))
    return wheel


def test_pinned_hash_is_the_published_one():
    # sha256 of mdt-1.2.7-py2.py3-none-any.whl as listed on PyPI (written out by hand)
    assert datasets.WHEEL_NAME == "mdt-1.2.7-py2.py3-none-any.whl"
    assert datasets.WHEEL_SHA256 == "8a3351be197a25a60c45cdbd97e88c13d39a15c0c4b08bdd06ef475fb3e9546a"
    assert set(datasets.FILES) == set(CONTENTS)


def test_extracts_only_the_scan_files(fake_wheel, tmp_path):
    dest = tmp_path / "data" / "invivo"
    result = datasets.fetch_invivo(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(CONTENTS)  # no .prtcl, no code, no temp file
    for name, data in CONTENTS.items():
        assert (dest / name).read_bytes() == data
    assert result["action"].startswith("extracted from") and datasets.WHEEL_ENV in result["action"]
    assert result["files"] == [str(dest / name) for name in CONTENTS]


def test_second_call_is_cached_and_reads_no_wheel(fake_wheel, tmp_path, monkeypatch):
    dest = tmp_path / "invivo"
    datasets.fetch_invivo(dest)
    monkeypatch.setenv(datasets.WHEEL_ENV, str(tmp_path / "gone.whl"))
    assert datasets.fetch_invivo(dest)["action"] == "cached"
    # a damaged file is fetched again
    (dest / "b1k_b2k.bval").write_bytes(b"edited")
    monkeypatch.setenv(datasets.WHEEL_ENV, str(fake_wheel))
    assert datasets.fetch_invivo(dest)["action"] != "cached"
    assert (dest / "b1k_b2k.bval").read_bytes() == CONTENTS["b1k_b2k.bval"]


def test_wheel_hash_mismatch_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    wheel = tmp_path / datasets.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in CONTENTS.items():
            zf.writestr(f"{datasets.MEMBER_DIR}/{name}", data)
    monkeypatch.setenv(datasets.WHEEL_ENV, str(wheel))  # the real pinned hash stays
    dest = tmp_path / "invivo"
    with pytest.raises(ValueError, match=rf"{wheel}: sha256 {_sha(wheel.read_bytes())} does not match .* mdt 1\.2\.7"):
        datasets.fetch_invivo(dest)
    assert not dest.exists()


def test_member_hash_mismatch_is_an_error_and_writes_nothing(fake_wheel, tmp_path, monkeypatch):
    files = dict(datasets.FILES)
    files["b1k_b2k_example_slices_24_38_mask.nii.gz"] = "0" * 64
    monkeypatch.setattr(datasets, "FILES", files)
    dest = tmp_path / "invivo"
    with pytest.raises(ValueError, match=r"b1k_b2k_example_slices_24_38_mask\.nii\.gz has sha256 [0-9a-f]{64}, expected 0{64}"):
        datasets.fetch_invivo(dest)
    assert not dest.exists() or not any(dest.iterdir())


def test_missing_member_and_missing_wheel(fake_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FILES", {**datasets.FILES, "extra.txt": "0" * 64})
    with pytest.raises(ValueError, match=r"mdt/data/mdt_example_data/b1k_b2k/extra\.txt is missing from the wheel"):
        datasets.fetch_invivo(tmp_path / "a")
    monkeypatch.setenv(datasets.WHEEL_ENV, str(tmp_path / "nowhere.whl"))
    with pytest.raises(ValueError, match=r"nowhere\.whl: mdt wheel not found"):
        datasets.fetch_invivo(tmp_path / "b")


def test_download_runs_pip_download_no_deps(fake_wheel, tmp_path, monkeypatch):
    """Without the environment variable: `python -m pip download --no-deps mdt==1.2.7`
    into a temporary folder (pip replaced by a copy of the fake wheel)."""
    monkeypatch.delenv(datasets.WHEEL_ENV)
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        folder = cmd[cmd.index("--dest") + 1]
        (datasets.Path(folder) / datasets.WHEEL_NAME).write_bytes(fake_wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(datasets.subprocess, "run", fake_run)
    result = datasets.fetch_invivo(tmp_path / "invivo")
    (cmd,) = seen
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "mdt==1.2.7"
    assert "install" not in cmd
    assert result["action"].startswith("downloaded")
    assert sorted(p.name for p in (tmp_path / "invivo").iterdir()) == sorted(CONTENTS)


def test_failed_download_says_how_to_use_a_copy(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.WHEEL_ENV, raising=False)
    monkeypatch.setattr(
        datasets.subprocess, "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for mdt==1.2.7"),
    )
    with pytest.raises(RuntimeError, match=rf"No matching distribution.*set {datasets.WHEEL_ENV}"):
        datasets.fetch_invivo(tmp_path / "invivo")


def test_command_line_prints_what_it_did(fake_wheel, tmp_path, capsys):
    dest = tmp_path / "cli"
    assert datasets.main([str(dest)]) == 0
    out = capsys.readouterr().out
    assert "extracted from" in out and str(dest / "b1k_b2k.bval") in out
    assert datasets.main([str(dest)]) == 0
    assert "already in" in capsys.readouterr().out


def test_default_destination_is_the_config_root():
    from helpers.config import CONFIG_DIR, load_config

    assert datasets.default_dest() == load_config(CONFIG_DIR / "invivo.yaml").root
    assert datasets.default_dest().parts[-2:] == ("data", "invivo")
