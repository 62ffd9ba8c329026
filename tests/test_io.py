"""Atomic writes: the final name holds the old file or the whole new one, never a part."""

import os
import stat

import numpy as np
import pytest

from helpers.io import atomic_path, load_json, save_json, save_npz


def test_written_files_are_readable_by_others_like_any_file(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.nii.gz") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.nii.gz").stat().st_mode)
    assert mode == 0o644  # not mkstemp's 0600


def test_temporary_name_keeps_the_suffixes(tmp_path):
    with atomic_path(tmp_path / "m.keras") as tmp:
        assert tmp.name.endswith(".keras") and tmp.parent == tmp_path
        tmp.write_text("x")


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    save_json({"v": 1}, tmp_path / "r.json")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "r.json") as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed")
    assert load_json(tmp_path / "r.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_npz_round_trip_without_pickle(tmp_path):
    save_npz(tmp_path / "x.npz", a=np.arange(3), b=np.eye(2, dtype=np.float32))
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["a"], [0, 1, 2])
        assert z["b"].dtype == np.float32


def test_invalid_json_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_json(tmp_path / "bad.json")
