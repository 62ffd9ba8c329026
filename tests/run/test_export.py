"""``synthqa export``: the file's signals follow from its own ground truth, the same seed
gives the same bytes, large N is written in bounded chunks, and every bad input is
refused with exit status 2 and one line.

Expected values come from elsewhere than the exporter: the closed form of Syn's
axially symmetric tensors with the method paper's diffusivities written out by hand,
FORCE's kernel (:func:`helpers.generators.force.force_signal`, checked against dipy in
test_force.py) on parameters rebuilt from the file, the seeds' documented formula, and
the subject's own SNR.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from helpers.run import export as export_module
from helpers.generators import simulation
from helpers.run.cli import main
from helpers.config import load_config
from helpers.generators.force import ForceParameters, force_signal, sphere_vertices
from helpers.scan.layouts import load_subject
from helpers.scan.subject import Subject

N = 200
SEED = 3
SNR = 20.0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder holding dipy's small_64D sample as notebook 01 saves it, and a
    config that lists it (plus a subject, ``absent``, with no folder)."""
    root = tmp_path_factory.mktemp("export")
    config = root / "sample.yaml"
    config.write_text(f"dataset: sample\nkind: sample\nsubjects: [small_64D, absent]\nseed: {SEED}\nsnr: {SNR}\n")
    folder = root / "results" / "sample" / "small_64D"
    load_subject(load_config(config), "small_64D").save(folder)
    return {"config": config, "results": root / "results", "folder": folder}


def _export(results, out, *args):
    return main(["export", str(results["config"]), "--results", str(results["results"]), "--out", str(out), *map(str, args)])


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _table(folder, *, b=2000.0, n_dw=12, n_b0=2, seed=0, scale=2.0):
    """An FSL table of n_b0 b0s and n_dw directions at b, its b-vectors written at length
    ``scale`` (the exporter normalises them)."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n_dw, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    bvals = np.r_[np.zeros(n_b0), np.full(n_dw, b)]
    bvecs = np.r_[np.zeros((n_b0, 3)), g]
    np.savetxt(folder / "t.bval", bvals[None], fmt="%g")
    np.savetxt(folder / "t.bvec", (scale * bvecs).T, fmt="%.12f")
    return folder / "t.bval", folder / "t.bvec", bvals, bvecs


def _syn_closed_form(bvals, bvecs, fractions, directions):
    """S = Σ_c f_c exp(-b gᵀ D_c g): 3 fibres (1.5e-3, 3e-4, 3e-4) along their principal
    direction v (axially symmetric, so gᵀ D g = λ⊥ + (λ∥ − λ⊥)(g·v)²), GM 5e-4 and CSF
    3e-3 isotropic (mm²/s; the method paper's values)."""
    cos2 = np.einsum("mi,nki->nkm", bvecs, directions[:, :3]) ** 2
    wm = np.exp(-bvals * (3e-4 + (1.5e-3 - 3e-4) * cos2))
    gm, csf = np.exp(-bvals * 5e-4), np.exp(-bvals * 3e-3)
    return np.einsum("nk,nkm->nm", fractions[:, :3], wm) + fractions[:, 3:4] * gm + fractions[:, 4:5] * csf


def _force_rebuilt(data):
    """ForceParameters from the file's ground truth: each used fibre's direction is a
    vertex of FORCE's sphere, found by matching."""
    used = np.arange(3) < data["n_fibers"][:, None]
    cos = np.abs(data["directions"] @ sphere_vertices().T)  # (n, 3, 362)
    index = np.where(used, cos.argmax(axis=-1), -1)
    np.testing.assert_allclose(cos.max(axis=-1)[used], 1.0, atol=1e-9)  # every used direction is a vertex
    assert np.all(data["directions"][~used] == 0)
    return ForceParameters(fractions=data["fractions"], n_fibers=data["n_fibers"], sphere_index=index,
                           weights=data["weights"], odi=data["odi"], d_par=data["d_par"], d_perp=data["d_perp"],
                           f_intra=data["f_intra"], gm_d=data["gm_d"], csf_d=data["csf_d"])


# ----------------------------------------------------------------------------- ground truth


def test_syn_clean_is_the_closed_form_of_its_ground_truth(results, tmp_path, capsys):
    out = tmp_path / "syn.npz"
    assert _export(results, out, "--method", "Syn", "--voxels", N) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    d = _load(out)
    subject = Subject.load(results["folder"])
    assert d["signals"].shape == d["clean"].shape == (N, 64) and d["signals"].dtype == d["clean"].dtype == np.float32
    np.testing.assert_array_equal(d["bvals"], subject.bvals)
    np.testing.assert_array_equal(d["bvecs"], subject.bvecs)
    assert d["fractions"].shape == (N, 5) and d["evals"].shape == (N, 5, 3) and d["directions"].shape == (N, 5, 3)
    np.testing.assert_array_equal(d["evals"][:, :3], np.broadcast_to([1.5e-3, 3e-4, 3e-4], (N, 3, 3)))
    np.testing.assert_array_equal(d["evals"][:, 3], np.full((N, 3), 5e-4))
    np.testing.assert_array_equal(d["evals"][:, 4], np.full((N, 3), 3e-3))
    np.testing.assert_allclose(d["fractions"].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(d["clean"], _syn_closed_form(d["bvals"], d["bvecs"], d["fractions"], d["directions"]),
                               atol=2e-6)
    np.testing.assert_array_equal(d["sigma"], np.full(N, 1 / SNR, np.float32))  # the config's snr: 20
    assert not np.array_equal(d["signals"], d["clean"])
    meta = json.loads(str(d["meta"]))
    assert meta | {"version": None} == meta | {
        "method": "Syn", "subject": "small_64D", "dataset": "sample", "seed": SEED, "n": N, "chunks": 1,
        "version": None, "gradients": "subject",
    }


def test_force_clean_resimulates_from_its_ground_truth(results, tmp_path):
    out = tmp_path / "force.npz"
    assert _export(results, out, "--method", "FORCE", "--voxels", N, "--snr", "none") == 0
    d = _load(out)
    assert d["fractions"].shape == (N, 3) and d["directions"].shape == (N, 3, 3)
    np.testing.assert_allclose(d["fractions"].sum(axis=1), 1.0, atol=1e-12)
    assert set(np.unique(d["n_fibers"])) <= {1, 2, 3}
    params = _force_rebuilt(d)
    np.testing.assert_allclose(d["clean"], force_signal(d["bvals"], d["bvecs"], params, dtype=np.float64), atol=1e-5)
    np.testing.assert_array_equal(d["signals"], d["clean"])  # --snr none: no noise
    np.testing.assert_array_equal(d["sigma"], np.zeros(N, np.float32))


def test_another_gradient_table_keeps_the_subjects_noise(results, tmp_path):
    bval, bvec, bvals, bvecs = _table(tmp_path)
    out = tmp_path / "force_table.npz"
    assert _export(results, out, "--method", "FORCE", "--voxels", N, "--bval", bval, "--bvec", bvec,
                   "--snr", "auto") == 0
    d = _load(out)
    np.testing.assert_array_equal(d["bvals"], bvals)
    np.testing.assert_allclose(d["bvecs"], bvecs, atol=1e-12)  # written at length 2, stored unit
    assert d["clean"].shape == (N, 14)
    np.testing.assert_array_equal(d["clean"][:, :2], 1.0)  # b0 volumes
    expected = force_signal(bvals, bvecs, _force_rebuilt(d), dtype=np.float64)
    np.testing.assert_allclose(d["clean"][:, 2:], expected[:, 2:], atol=1e-5)
    snr = json.loads((results["folder"] / "subject.json").read_text())["snr"]  # the subject's estimate
    np.testing.assert_allclose(d["sigma"], 1 / snr, rtol=1e-6)
    assert json.loads(str(d["meta"]))["gradients"] == str(bval)


def test_syn_on_another_table_is_its_closed_form(results, tmp_path):
    bval, bvec, bvals, bvecs = _table(tmp_path, b=3000.0, n_dw=7, n_b0=1)
    out = tmp_path / "syn_table.npz"
    assert _export(results, out, "--method", "Syn", "--voxels", N, "--bval", bval, "--bvec", bvec) == 0
    d = _load(out)
    assert d["clean"].shape == (N, 8)
    np.testing.assert_allclose(d["clean"], _syn_closed_form(bvals, bvecs, d["fractions"], d["directions"]), atol=2e-6)


def test_sampled_on_another_table_draws_from_the_subjects_pools(results, tmp_path):
    bval, bvec, _, _ = _table(tmp_path)
    out = tmp_path / "sampled.npz"
    assert _export(results, out, "--method", "Sampled", "--voxels", N, "--bval", bval, "--bvec", bvec) == 0
    d = _load(out)
    subject = Subject.load(results["folder"])
    pools = simulation.tissue_pools(subject, min_pool=20, wm_fa_min=0.7)  # the config's (defaults)
    wm = {tuple(row) for row in pools.wm}
    assert all(tuple(row) in wm for row in d["evals"][:, :3].reshape(-1, 3))


def test_randomwm_clean_lies_between_its_free_water_bounds(results, tmp_path):
    out = tmp_path / "rwm.npz"
    assert _export(results, out, "--method", "RandomWM", "--voxels", N) == 0
    d = _load(out)
    f = d["free_water_fraction"][:, None]
    water = f * np.exp(-d["bvals"] * 3e-3)  # f e^(-b 3e-3) + (1 - f) U(0, 1)
    assert np.all(d["clean"] >= water - 1e-6) and np.all(d["clean"] <= water + (1 - f) + 1e-6)
    assert set(d) == {"signals", "clean", "bvals", "bvecs", "free_water_fraction", "sigma", "meta"}


# ----------------------------------------------------------------------------- seeds, chunks


def test_same_seed_same_bytes_other_seed_other_voxels(results, tmp_path):
    a, b, c = (tmp_path / f"{x}.npz" for x in "abc")
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        assert _export(results, out, "--method", "FORCE", "--voxels", N, "--seed", seed) == 0
    assert a.read_bytes() == b.read_bytes()
    da, dc = _load(a), _load(c)
    for name in ("signals", "clean", "d_par", "fractions"):
        assert not np.array_equal(da[name], dc[name]), name
    assert json.loads(str(dc["meta"]))["seed"] == 8


def test_chunks_are_bounded_and_seeded_by_their_index(results, tmp_path, monkeypatch):
    sizes = []
    real = simulation.simulate

    def recording(subject, method, n, seed, **kw):
        sizes.append(n)
        return real(subject, method, n, seed, **kw)

    monkeypatch.setattr(export_module.simulation, "simulate", recording)
    out = tmp_path / "chunked.npz"
    assert _export(results, out, "--method", "Syn", "--voxels", 250, "--chunk", 100) == 0
    assert sizes == [100, 100, 50]  # never more than a chunk in memory
    d = _load(out)
    assert d["signals"].shape == (250, 64) and d["evals"].shape == (250, 5, 3)
    assert json.loads(str(d["meta"]))["chunks"] == 3
    subject = Subject.load(results["folder"])
    for i, (start, size) in enumerate(((0, 100), (100, 100), (200, 50))):
        clean, noisy, truth = real(subject, "Syn", size, [SEED, zlib.crc32(b"Syn"), i, 6], snr=SNR, truth=True)
        np.testing.assert_array_equal(d["signals"][start:start + size], noisy)
        np.testing.assert_array_equal(d["clean"][start:start + size], clean)
        np.testing.assert_array_equal(d["fractions"][start:start + size], truth["fractions"])
    again = tmp_path / "again.npz"
    assert _export(results, again, "--method", "Syn", "--voxels", 250, "--chunk", 100) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("error, status", [(ValueError("chunk two went wrong"), 2), (KeyboardInterrupt(), 130)])
def test_a_failed_export_leaves_the_old_file_and_nothing_else(results, tmp_path, monkeypatch, capsys, error, status):
    out = tmp_path / "keep.npz"
    out.write_bytes(b"the previous export")
    calls = []
    real = simulation.simulate

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real(*args, **kw)

    monkeypatch.setattr(export_module.simulation, "simulate", failing)
    assert _export(results, out, "--method", "Syn", "--voxels", 30, "--chunk", 10) == status
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]
    if status == 2:
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
        assert last == "synthqa export: chunk two went wrong"


# ----------------------------------------------------------------------------- refusals


def _refusals(results, tmp_path):
    """Each bad input: the options that differ from a good export, and a phrase the line must hold."""
    bval, bvec, _, _ = _table(tmp_path)
    (tmp_path / "short").mkdir()
    short_bval, short_bvec, _, _ = _table(tmp_path / "short", n_dw=5)
    np.savetxt(tmp_path / "three.bval", np.array([[0, 1000, 1000]]), fmt="%g")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "dir.npz").mkdir()
    folder = results["folder"]
    return {
        "unknown method": ({"--method": "Magic"}, "unknown method(s) ['Magic']"),
        "missing subject folder": ({"--subject": "absent"}, str(folder.parent / "absent" / "subject.npz")),
        "missing results folder": ({"--results": tmp_path / "no_results"},
                                   str(tmp_path / "no_results" / "sample" / "small_64D" / "subject.npz")),
        "unknown subject": ({"--subject": "nobody"}, "unknown subject 'nobody'"),
        "N=0": ({"--voxels": "0"}, "--voxels must be positive, got 0"),
        "N=-5": ({"--voxels": "-5"}, "--voxels must be positive, got -5"),
        "N not an integer": ({"--voxels": "2.5"}, "--voxels must be an integer, got '2.5'"),
        "missing output folder": ({"--out": tmp_path / "nowhere" / "x.npz"}, f"folder {tmp_path / 'nowhere'} does not exist"),
        "output is a folder": ({"--out": tmp_path / "dir.npz"}, "is a directory"),
        "output under a file": ({"--out": tmp_path / "a_file" / "x.npz"}, "does not exist"),
        "output not .npz": ({"--out": tmp_path / "x.h5"}, "must end in .npz"),
        "bval without bvec": ({"--bval": bval}, "--bval and --bvec go together"),
        "missing bval file": ({"--bval": tmp_path / "none.bval", "--bvec": bvec}, "none.bval: b-values file not found"),
        "counts disagree": ({"--bval": tmp_path / "three.bval", "--bvec": bvec}, "three.bval"),
        "too few directions": ({"--bval": short_bval, "--bvec": short_bvec}, "need at least 6"),
        "negative seed": ({"--seed": "-1"}, "--seed must be >= 0, got -1"),
        "bad snr": ({"--snr": "loud"}, "snr must be"),
        "Calibrated without its fit": ({"--method": "Calibrated"}, str(folder / "calibration.json")),
    }


def test_every_refusal_exits_2_with_one_line(results, tmp_path, capsys):
    for name, (changes, phrase) in _refusals(results, tmp_path).items():
        options = {"--results": results["results"], "--method": "Syn", "--voxels": "10",
                   "--out": tmp_path / "out.npz", **changes}
        argv = ["export", str(results["config"])] + [str(x) for kv in options.items() for x in kv]
        assert main(argv) == 2, name
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "\n" not in err and err.startswith("synthqa export: "), (name, err)
        assert phrase in err, (name, err)
        assert captured.out == "", name
    assert not (tmp_path / "out.npz").exists()
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary file left behind


def test_calibrated_exports_from_its_saved_fit_and_clean_resimulates(results, tmp_path):
    """Calibrated reads calibration.json from the results folder; its clean signal is the
    FORCE signal of its ground truth, and its σ the fitted noise model's."""
    import json

    from helpers.generators.calibration import Calibration, Hyper
    from helpers.generators.force import force_signal

    hyper = Hyper.force_defaults()
    path = results["folder"] / "calibration.json"
    path.write_text(json.dumps(Calibration(hyper=hyper, distance=0.1, distance_start=0.5).to_dict()))
    try:
        assert _export(results, tmp_path / "c.npz", "--method", "Calibrated", "--voxels", N, "--seed", 1) == 0
    finally:
        path.unlink()
    d = _load(tmp_path / "c.npz")
    assert d["signals"].shape == d["clean"].shape == (N, len(d["bvals"])) and d["fractions"].shape == (N, 3)
    expected = force_signal(d["bvals"], d["bvecs"], _force_rebuilt(d))
    expected[:, d["bvals"] <= 50] = 1.0
    np.testing.assert_allclose(d["clean"], expected, atol=2e-5)
    assert np.all(d["sigma"] > 0)
