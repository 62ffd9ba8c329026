"""Tests for helpers.judges.training: replicate models trained in parallel or one after another
give the same weights, a replicate's data regenerates from its seed, the collapse flag on
hand-made losses, the dead-unit count of trained models, the files of a run, and the
error paths.

Expected values come from elsewhere than the code under test: hand-written numbers for
the collapse flag, a NumPy forward pass of the saved weights for the dead-unit count, a
model retrained here from the documented seeds for the saved weights. (Dead units on
weights set by hand: tests/judges/test_autoencoder.py.)
"""

import json
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest

from helpers.judges import autoencoder as ae
from helpers import contract
from helpers.judges import training
from helpers.scan.subject import Subject
from helpers.generators.simulation import simulate

SHAPE = (6, 6, 6)
N_DIR = 30  # bottleneck max(1, round(30/8)) = 4 units
S0 = 1000.0
SNR = 30.0
TINY = {  # a profile small enough for tests: 500 training + 100 validation voxels, 1 epoch
    "name": "tiny",
    "n_voxels": 600,
    "n_val": 100,
    "epochs": 1,
    "batch_size": 100,
    "learning_rate": 5e-4,
    "replicates": 2,
}
METHODS = ["Syn", "RandomWM"]


def _directions(n):
    """n unit vectors spread over a hemisphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1 - i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def make_subject(rng):
    """A hand-built subject: slabs of CSF (x 0-1), GM (x 2-3) and single-fibre WM (x 4-5),
    every voxel a tensor with a random orientation, b = 1000 s/mm² on 30 directions."""
    indices = np.argwhere(np.ones(SHAPE, dtype=bool))
    tissue = np.array([1, 1, 2, 2, 3, 3], dtype=np.uint8)[indices[:, 0]]
    evals = np.select(
        [tissue[:, None] == 1, tissue[:, None] == 2],
        [np.full(3, 3.0e-3), np.full(3, 0.8e-3)],
        np.array([1.7e-3, 0.2e-3, 0.2e-3]),  # FA 0.87
    )
    q, _ = np.linalg.qr(rng.normal(size=(len(indices), 3, 3)))
    d = np.einsum("nij,nj,nkj->nik", q, evals, q)
    bvecs = _directions(N_DIR)
    bvals = np.full(N_DIR, 1000.0)
    clean = np.exp(-1000.0 * np.einsum("mi,nij,mj->nm", bvecs, d, bvecs))
    noisy = np.hypot(clean + rng.normal(0, 1 / SNR, clean.shape), rng.normal(0, 1 / SNR, clean.shape))
    return Subject(
        attenuation=noisy.astype(np.float32),
        bvals=bvals,
        bvecs=bvecs,
        indices=indices,
        shape=SHAPE,
        affine=np.eye(4),
        tissue=tissue,
        s0=np.full(len(indices), S0, dtype=np.float32),
        snr=SNR,
        snr_method="set by the test",
        sigma=S0 / SNR,
        info={"dataset": "ds", "subject": "sub01"},
    )


@pytest.fixture(scope="module")
def subject():
    return make_subject(np.random.default_rng(20240612))


@pytest.fixture(scope="module")
def subject_root(tmp_path_factory, subject):
    """A folder with the subject saved as step 01 leaves it: <root>/ds/sub01/."""
    root = tmp_path_factory.mktemp("saved")
    subject.save(root / "ds" / "sub01")
    return root


def _copy_subject(subject_root, dest):
    """A fresh results tree holding only the saved subject (same dataset/subject names)."""
    folder = dest / "ds" / "sub01"
    shutil.copytree(subject_root / "ds" / "sub01", folder)
    return folder


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, subject_root):
    """The tiny profile trained with jobs=1 (in this process)."""
    folder = _copy_subject(subject_root, tmp_path_factory.mktemp("seq"))
    table = training.train_replicates(folder, METHODS, profile=TINY, seed=7, jobs=1, progress=False)
    return folder, table


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, subject_root):
    """The same run with two worker processes."""
    folder = _copy_subject(subject_root, tmp_path_factory.mktemp("par"))
    table = training.train_replicates(folder, METHODS, profile=TINY, seed=7, jobs=2, progress=False)
    return folder, table


# -- paths ----------------------------------------------------------------------------


def test_paths_follow_the_results_layout(tmp_path):
    assert training.model_path(tmp_path, "Syn", 3) == tmp_path / "models" / "Syn" / "r3.keras"
    assert training.model_path(tmp_path, "mylab.gens:ball_stick", 0) == (
        tmp_path / "models" / "ball_stick" / "r0.keras"
    )
    assert training.history_path(tmp_path, "Sampled", 1) == (
        tmp_path / "models" / "Sampled" / "r1_history.csv"
    )
    assert training.diagnostics_path(tmp_path) == tmp_path / "models" / "diagnostics.csv"
    assert training.progress_path(tmp_path) == tmp_path / "models" / "progress.jsonl"
    assert training.summary_path(tmp_path) == tmp_path / "models" / "training.json"


# -- collapse flag --------------------------------------------------------------------


@pytest.mark.parametrize(
    "losses, expected",
    [
        # median 1.05, threshold 2.1: only 3.0 is above
        ([1.0, 1.1, 0.9, 3.0], [False, False, False, True]),
        # median 1, threshold 2: exactly twice the median is not *more* than twice
        ([1.0, 1.0, 2.0], [False, False, False]),
        ([1.0, 1.0, 2.001], [False, False, True]),
        # ties at the median, one far above: median 0.5, threshold 1.0
        ([0.5, 0.5, 0.5, 0.5, 1.2], [False, False, False, False, True]),
        # a lone replicate is its own median
        ([7.0], [False]),
        # of two, neither can exceed twice their mean
        ([1.0, 100.0], [False, False]),
        # a diverged run is collapsed; the median is over the finite ones (1.0)
        ([1.0, float("nan"), 1.0, float("inf")], [False, True, False, True]),
    ],
)
def test_flag_collapsed_on_hand_made_losses(losses, expected):
    assert training.flag_collapsed({"m": losses}) == {"m": expected}


def test_flag_collapsed_uses_each_methods_own_median():
    # 3.0 is collapsed among Syn's (median 1) but typical among Sampled's (median 3)
    flags = training.flag_collapsed({"Syn": [1.0, 1.0, 3.0], "Sampled": [3.0, 2.9, 3.2]})
    assert flags == {"Syn": [False, False, True], "Sampled": [False, False, False]}


def test_flag_collapsed_ratio_is_a_setting():
    assert training.flag_collapsed({"m": [1.0, 1.0, 1.6]}, ratio=1.5) == {"m": [False, False, True]}
    with pytest.raises(ValueError, match="ratio must be a finite number >= 1, got 0.5"):
        training.flag_collapsed({"m": [1.0]}, ratio=0.5)


# -- a replicate's data ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["Syn", "Sampled", "RandomWM"])
def test_replicate_data_regenerates_byte_identically(subject, method):
    settings = dict(n_voxels=400, seed=5, snr=SNR, min_pool=5)
    clean, noisy = training.replicate_data(subject, method, 1, **settings)
    again_clean, again_noisy = training.replicate_data(subject, method, 1, **settings)
    assert clean.dtype == noisy.dtype == np.float32 and clean.shape == (400, N_DIR)
    assert clean.tobytes() == again_clean.tobytes() and noisy.tobytes() == again_noisy.tobytes()
    # the documented seed: simulate() with replicate_seeds' simulation seed
    sim_seed, _ = contract.replicate_seeds(5, method, 1)
    expected_clean, expected_noisy = simulate(subject, method, 400, sim_seed, snr=SNR, min_pool=5)
    assert clean.tobytes() == expected_clean.tobytes()
    assert noisy.tobytes() == expected_noisy.tobytes()
    # another replicate draws other voxels
    other, _ = training.replicate_data(subject, method, 2, **settings)
    assert not np.array_equal(clean, other)


def test_pools_computed_once_give_the_same_data(subject):
    from helpers.generators.simulation import tissue_pools

    pools = tissue_pools(subject, min_pool=5, wm_fa_min=0.7)
    with_pools = training.replicate_data(subject, "Sampled", 0, n_voxels=300, snr=SNR, pools=pools, min_pool=5)
    without = training.replicate_data(subject, "Sampled", 0, n_voxels=300, snr=SNR, min_pool=5)
    for a, b in zip(with_pools, without):
        assert a.tobytes() == b.tobytes()


# -- a run ----------------------------------------------------------------------------


def test_run_writes_the_models_and_no_synthetic_set(sequential):
    folder, _ = sequential
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    models = [f for f in files if f.startswith("models/")]
    assert models == sorted(
        [f"models/{m}/r{r}{end}" for m in METHODS for r in (0, 1) for end in (".keras", "_history.csv")]
        + ["models/diagnostics.csv", "models/progress.jsonl", "models/training.json"]
    )
    assert [f for f in files if f.endswith(".npz")] == ["subject.npz"]


def test_diagnostics_table_is_tidy(sequential):
    folder, table = sequential
    assert list(table.columns) == list(contract.COLUMNS)
    assert len(table) == 2 * 2 * len(contract.DIAGNOSTICS)
    assert set(table["dataset"]) == {"ds"} and set(table["subject"]) == {"sub01"}
    assert set(table["tissue"]) == {"all"}
    keys = list(zip(table["method"], table["replicate"], table["metric"]))
    assert keys == [(m, r, d) for m in METHODS for r in (0, 1) for d in contract.DIAGNOSTICS]
    wide = table.pivot_table(index=["method", "replicate"], columns="metric", values="value")
    assert (wide["bottleneck_units"] == 4).all()
    assert (wide["collapsed"] == 0).all()  # two replicates: never flagged
    pd.testing.assert_frame_equal(training.load_diagnostics(folder), table)


def test_val_loss_is_the_last_epoch_of_the_history(sequential):
    folder, table = sequential
    histories = training.load_histories(folder)
    assert list(histories) == METHODS and all(len(h) == 2 for h in histories.values())
    for m in METHODS:
        for r in (0, 1):
            row = table[(table["method"] == m) & (table["replicate"] == r) & (table["metric"] == "val_loss")]
            assert row["value"].item() == pytest.approx(histories[m][r]["val_loss"].iloc[-1], rel=1e-12)
            assert histories[m][r]["epoch"].tolist() == [1]


def test_dead_units_are_counted_on_the_real_voxels(sequential, subject):
    """A NumPy forward pass of the saved weights: relu(relu(x W1 + b1) W2 + b2)."""
    folder, table = sequential
    x = subject.attenuation.astype(np.float64)
    for m in METHODS:
        for r in (0, 1):
            model = ae.load_model(training.model_path(folder, m, r))
            (w1, b1), (w2, b2) = (model.get_layer(n).get_weights() for n in ("encode", "bottleneck"))
            code = np.maximum(np.maximum(x @ w1 + b1, 0) @ w2 + b2, 0)
            expected = int((code.max(axis=0) <= 0).sum())
            row = table[(table["method"] == m) & (table["replicate"] == r) & (table["metric"] == "dead_units")]
            assert row["value"].item() == expected


def test_saved_model_is_retrained_from_its_seeds(sequential, subject):
    """The documented recipe: data from replicate_data, weights and shuffle from the
    training seed of replicate_seeds, n_val from the profile. Same weights as saved."""
    folder, _ = sequential
    _, training_seed = contract.replicate_seeds(7, "Syn", 1)
    clean, noisy = training.replicate_data(subject, "Syn", 1, n_voxels=600, seed=7)  # snr "auto"
    model = ae.build_autoencoder(N_DIR, seed=training_seed)
    ae.train_autoencoder(model, noisy, clean, epochs=1, n_val=100, seed=training_seed, progress=False)
    saved = ae.load_model(training.model_path(folder, "Syn", 1))
    for got, want in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_training_json_records_the_run(sequential):
    folder, _ = sequential
    summary = json.loads(training.summary_path(folder).read_text())
    assert summary["profile"] == TINY and summary["seed"] == 7 and summary["replicates"] == 2
    assert summary["methods"] == METHODS and summary["workers"] == 1 and summary["device"] == "cpu"
    assert summary["seconds"] > 0
    seeds = {(m["method"], m["replicate"]): (m["simulation_seed"], m["training_seed"]) for m in summary["models"]}
    assert seeds == {(m, r): tuple(contract.replicate_seeds(7, m, r)) for m in METHODS for r in (0, 1)}


def test_progress_has_one_line_per_model(sequential):
    folder, _ = sequential
    lines = [json.loads(x) for x in training.progress_path(folder).read_text().splitlines()]
    assert [x["done"] for x in lines] == [1, 2, 3, 4] and {x["total"] for x in lines} == {4}
    assert sorted((x["method"], x["replicate"]) for x in lines) == sorted((m, r) for m in METHODS for r in (0, 1))
    elapsed = [x["elapsed"] for x in lines]
    assert elapsed == sorted(elapsed) and all(x["seconds"] > 0 for x in lines)


@pytest.mark.slow  # starts TensorFlow in two worker processes
def test_parallel_training_gives_the_sequential_weights(sequential, parallel):
    (seq_folder, seq_table), (par_folder, par_table) = sequential, parallel
    assert json.loads(training.summary_path(par_folder).read_text())["workers"] == 2
    for m in METHODS:
        for r in (0, 1):
            a = ae.load_model(training.model_path(seq_folder, m, r)).get_weights()
            b = ae.load_model(training.model_path(par_folder, m, r)).get_weights()
            assert all(np.array_equal(x, y) for x, y in zip(a, b)), (m, r)
    pd.testing.assert_frame_equal(seq_table, par_table)


def test_gpu_run_trains_in_process_and_drops_stale_replicates(sequential, subject_root, tmp_path, monkeypatch):
    folder = _copy_subject(subject_root, tmp_path)
    shutil.copytree(sequential[0] / "models", folder / "models")  # an earlier run with 2 replicates
    monkeypatch.setattr(training, "_gpu_visible", lambda: True)
    table = training.train_replicates(
        folder, ["Syn"], profile={**TINY, "replicates": 1}, seed=7, jobs=2, progress=False
    )
    summary = json.loads(training.summary_path(folder).read_text())
    assert summary["device"] == "gpu" and summary["workers"] == 1
    assert sorted(p.name for p in (folder / "models" / "Syn").iterdir()) == ["r0.keras", "r0_history.csv"]
    assert set(table["method"]) == {"Syn"} and set(table["replicate"]) == {0}


@pytest.mark.slow  # starts TensorFlow in two worker processes
def test_a_failing_model_stops_the_run_and_names_itself(subject_root, tmp_path, monkeypatch):
    """A user generator returning NaN fails in its worker; the error says which model."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken_gen.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def nan_signal(bvals, bvecs, n, rng):
                return np.full((n, len(bvals)), np.nan)
            """
        )
    )
    monkeypatch.syspath_prepend(str(plugins))  # spawned workers inherit sys.path
    folder = _copy_subject(subject_root, tmp_path)
    with pytest.raises(ValueError) as caught:
        training.train_replicates(
            folder, ["broken_gen:nan_signal"], profile=TINY, jobs=2, progress=False
        )
    assert any("while training nan_signal replicate" in note for note in caught.value.__notes__)
    assert not training.summary_path(folder).exists()
    assert not training.diagnostics_path(folder).exists()


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["Syn", "Nope"]}, r"unknown method\(s\) \['Nope'\]"),
        ({"profile": {"n_voxels": 600}}, r"lacks \['n_val', 'epochs'"),
        ({"profile": {**TINY, "replicates": 0}}, "replicates must be a positive int, got 0"),
        ({"profile": {**TINY, "n_val": 600}}, "n_val=600 leaves no training voxel of n_voxels=600"),
        ({"jobs": -1}, r"jobs must be a non-negative int \(0 or None: every core\), got -1"),
        ({"seed": -2}, "seed must be a non-negative int, got -2"),
        ({"noise": "pink"}, r"noise must be one of \['global', 'per_voxel'\], got 'pink'"),
        ({"snr": -3}, "snr must be a positive finite number"),
    ],
)
def test_bad_settings_are_refused_before_any_work(subject_root, tmp_path, change, message):
    folder = _copy_subject(subject_root, tmp_path)
    kwargs = {"methods": ["Syn"], "profile": TINY, "jobs": 1, "progress": False, **change}
    with pytest.raises(ValueError, match=message):
        training.train_replicates(folder, **kwargs)
    assert not (folder / "models").exists()


def test_a_folder_without_a_subject_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"subject.npz: not found; run notebook 01"):
        training.train_replicates(tmp_path / "ds" / "none", ["Syn"], profile=TINY, progress=False)


def test_load_diagnostics_of_an_untrained_subject(tmp_path):
    with pytest.raises(ValueError, match=r"diagnostics.csv: not found; run notebook 03"):
        training.load_diagnostics(tmp_path)


@pytest.mark.parametrize("jobs, n_models, expected", [(1, 10, 1), (5, 2, 2), (3, 8, 3)])
def test_worker_count(jobs, n_models, expected):
    assert training._n_workers(jobs, n_models) == expected


def test_every_core_by_default(monkeypatch):
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert training._n_workers(0, 10) == 3
    assert training._n_workers(0, 2) == 2
