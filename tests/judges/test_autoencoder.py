"""Tests for helpers.judges.autoencoder: the network's shape, that training follows the Keras
recipe and learns, reproducibility, dead bottleneck units on weights set by hand, saving
and loading, and every error path."""

import numpy as np
import pandas as pd
import pytest

import keras
import tensorflow as tf

from helpers.judges import autoencoder as ae

N_DIR = 16  # directions in the small synthetic set
N_VOX = 2000  # voxels: 1667 training, 333 validation (round(2000/6))


def _simulate(rng, n_voxels, n_dir, *, snr=20.0, b=1000.0):
    """Single-tensor attenuation exp(-b gᵀDg) with Rician noise (sigma = 1/snr)."""
    g = rng.normal(size=(n_dir, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    evals = np.sort(rng.uniform(0.2e-3, 2.0e-3, size=(n_voxels, 3)), axis=1)[:, ::-1]
    q, _ = np.linalg.qr(rng.normal(size=(n_voxels, 3, 3)))
    d = np.einsum("vij,vj,vkj->vik", q, evals, q)  # D = Q diag(evals) Qᵀ, mm²/s
    clean = np.exp(-b * np.einsum("gi,vij,gj->vg", g, d, g))
    sigma = 1.0 / snr
    real = clean + sigma * rng.normal(size=clean.shape)
    noisy = np.hypot(real, sigma * rng.normal(size=clean.shape))
    return noisy.astype(np.float32), clean.astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture(scope="module")
def data():
    return _simulate(np.random.default_rng(7), N_VOX, N_DIR)


@pytest.fixture(scope="module")
def trained(data):
    """A model trained for 3 epochs with the paper's recipe, its history and its start."""
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR, seed=3)
    untrained = model.predict(noisy, verbose=0)
    # A learning rate 20 times the paper's, so that 3 short epochs (51 updates) suffice.
    history = ae.train_autoencoder(
        model, noisy, clean, epochs=3, learning_rate=1e-2, seed=3, progress=False
    )
    return model, history, untrained


# -- the network ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, expected",
    [
        # round(4n/6) and max(1, round(n/8)), worked out by hand
        (6, (6, 4, 1, 4, 6)),  # 4.0, 0.75
        (25, (25, 17, 3, 17, 25)),  # 16.67, 3.125
        (64, (64, 43, 8, 43, 64)),  # 42.67, 8.0
        (90, (90, 60, 11, 60, 90)),  # 60.0, 11.25
        (101, (101, 67, 13, 67, 101)),  # 67.33, 12.625
        (20, (20, 13, 2, 13, 20)),  # 13.33, 2.5 -> 2: Python's round, half to even
        (1, (1, 1, 1, 1, 1)),  # 0.67, 0.125 -> bottleneck clipped to 1
    ],
)
def test_layer_widths_follow_the_formula(n, expected):
    assert ae.layer_widths(n) == expected


def test_build_autoencoder_has_the_paper_architecture():
    model = ae.build_autoencoder(64, seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert model.input_shape == (None, 64)
    assert model.output_shape == (None, 64)
    assert [layer.units for layer in dense] == [43, 8, 43, 64]
    activations = [layer.activation.__name__ for layer in dense]
    assert activations == ["relu", "relu", "relu", "linear"]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "64", True, None])
def test_build_autoencoder_rejects_bad_widths(bad):
    with pytest.raises(ValueError, match="n_inputs must be a positive int"):
        ae.build_autoencoder(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_build_autoencoder_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int or None"):
        ae.build_autoencoder(8, seed=bad)


def test_build_seed_fixes_the_initial_weights():
    a = ae.build_autoencoder(12, seed=5).get_weights()
    b = ae.build_autoencoder(12, seed=5).get_weights()
    c = ae.build_autoencoder(12, seed=6).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# -- training -------------------------------------------------------------------------


def test_training_reduces_validation_loss_well_below_untrained(data, trained):
    noisy, clean = data
    model, history, untrained = trained
    n_val = round(N_VOX / 6)
    untrained_loss = np.mean((untrained[-n_val:] - clean[-n_val:]) ** 2)
    assert list(history.columns) == ["epoch", "loss", "val_loss"]
    assert history["epoch"].tolist() == [1, 2, 3]
    assert np.all(np.isfinite(history[["loss", "val_loss"]].to_numpy()))
    assert history["val_loss"].iloc[-1] < 0.1 * untrained_loss
    assert history["val_loss"].is_monotonic_decreasing


def test_reported_val_loss_is_the_mse_of_the_trained_model(data, trained):
    noisy, clean = data
    model, history, _ = trained
    n_val = round(N_VOX / 6)
    predicted = model.predict(noisy[-n_val:], verbose=0)
    expected = np.mean((predicted.astype(np.float64) - clean[-n_val:]) ** 2)
    assert history["val_loss"].iloc[-1] == pytest.approx(expected, rel=1e-5)


def test_training_matches_an_eager_keras_loop(rng):
    """The compiled epoch does what a plain loop of Keras Adam updates does: same batches
    (the documented shuffle), same loss, same optimiser formula, a smaller last batch."""
    noisy, clean = _simulate(rng, 530, 8)  # n_val 88, n_train 442: 4 batches of 100 and one of 42
    n_val = 88
    n_train = len(noisy) - n_val
    fast = ae.build_autoencoder(8, seed=11)
    ref = ae.build_autoencoder(8, seed=11)
    history = ae.train_autoencoder(
        fast, noisy, clean, epochs=2, batch_size=100, learning_rate=1e-3, n_val=n_val, seed=4,
        progress=False,
    )

    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    shuffle = np.random.default_rng(4)
    batch_losses = []
    for _ in range(2):
        perm = shuffle.permutation(n_train)
        epoch_losses = []
        for start in range(0, n_train, 100):
            idx = perm[start : start + 100]
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(ref(noisy[idx], training=True) - clean[idx]))
            grads = tape.gradient(loss, ref.trainable_variables)
            optimizer.apply_gradients(zip(grads, ref.trainable_variables))
            epoch_losses.append(float(loss))
        batch_losses.append(np.mean(epoch_losses))
    assert len(epoch_losses) == 5
    for got, want in zip(fast.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(history["loss"], batch_losses, rtol=1e-4)


def test_same_seed_same_weights_different_seed_different(data):
    noisy, clean = data
    noisy, clean = noisy[:600], clean[:600]

    def run(seed):
        model = ae.build_autoencoder(N_DIR, seed=seed)
        ae.train_autoencoder(model, noisy, clean, epochs=1, seed=seed, progress=False)
        return model.get_weights()

    first, again, other = run(1), run(1), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_training_seed_alone_changes_the_shuffle(data):
    noisy, clean = data
    noisy, clean = noisy[:600], clean[:600]
    weights = []
    for seed in (1, 2):
        model = ae.build_autoencoder(N_DIR, seed=0)
        ae.train_autoencoder(model, noisy, clean, epochs=1, seed=seed, progress=False)
        weights.append(model.get_weights())
    assert not np.array_equal(weights[0][0], weights[1][0])


def test_progress_bar_is_shown_per_epoch(data, capsys):
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR, seed=0)
    ae.train_autoencoder(model, noisy[:300], clean[:300], epochs=2, progress=True)
    out = capsys.readouterr().out
    assert "2/2" in out and "val_loss" in out


# -- training errors ------------------------------------------------------------------


def test_train_rejects_shape_mismatch(data):
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR, seed=0)
    message = r"noisy has shape \(2000, 16\) but clean has shape \(1999, 16\)"
    with pytest.raises(ValueError, match=message):
        ae.train_autoencoder(model, noisy, clean[:-1], progress=False)


def test_train_rejects_wrong_direction_count(data):
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR + 1, seed=0)
    with pytest.raises(ValueError, match="noisy has 16 directions but the model expects 17"):
        ae.train_autoencoder(model, noisy, clean, progress=False)


def test_train_rejects_a_model_that_is_no_autoencoder(data):
    noisy, clean = data
    inputs = keras.Input((N_DIR,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="the model outputs 1 values per voxel but takes 16"):
        ae.train_autoencoder(model, noisy, clean, progress=False)


@pytest.mark.parametrize("which", ["noisy", "clean"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_train_rejects_nan_and_inf(data, which, bad):
    noisy, clean = (a.copy() for a in data)
    (noisy if which == "noisy" else clean)[17, 3] = bad
    model = ae.build_autoencoder(N_DIR, seed=0)
    message = f"{which} holds 1 NaN or inf value.*voxel 17, direction 3"
    with pytest.raises(ValueError, match=message):
        ae.train_autoencoder(model, noisy, clean, progress=False)


def test_train_rejects_one_dimensional_input(data):
    model = ae.build_autoencoder(N_DIR, seed=0)
    with pytest.raises(ValueError, match="noisy must be 2-D"):
        ae.train_autoencoder(model, np.ones(N_DIR), np.ones(N_DIR), progress=False)


@pytest.mark.parametrize("n_val", [2000, 5000])
def test_train_rejects_too_few_voxels_for_validation(data, n_val):
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR, seed=0)
    with pytest.raises(ValueError, match=f"2000 voxels are too few for n_val={n_val}"):
        ae.train_autoencoder(model, noisy, clean, n_val=n_val, progress=False)


def test_train_rejects_a_single_voxel():
    model = ae.build_autoencoder(4, seed=0)
    with pytest.raises(ValueError, match="1 voxels are too few for n_val=0"):
        ae.train_autoencoder(model, np.ones((1, 4)), np.ones((1, 4)), progress=False)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("epochs", 0, "epochs must be a positive int"),
        ("batch_size", 2.5, "batch_size must be a positive int"),
        ("learning_rate", -1e-3, "learning_rate must be a positive number"),
        ("n_val", 0, "n_val must be a positive int"),
        ("seed", "zero", "seed must be a non-negative int"),
        ("seed", -1, "seed must be a non-negative int"),
    ],
)
def test_train_rejects_bad_options(data, option, value, message):
    noisy, clean = data
    model = ae.build_autoencoder(N_DIR, seed=0)
    with pytest.raises(ValueError, match=message):
        ae.train_autoencoder(model, noisy, clean, progress=False, **{option: value})


# -- reconstruction -------------------------------------------------------------------


def test_reconstruct_matches_predict_in_any_chunk_size(data, trained):
    noisy, _ = data
    model, _, _ = trained
    expected = model.predict(noisy, verbose=0)
    whole = ae.reconstruct(model, noisy)
    chunked = ae.reconstruct(model, noisy.astype(np.float64), batch_size=300)
    assert whole.dtype == np.float32 and whole.shape == noisy.shape
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked, expected, rtol=1e-5, atol=1e-6)


def test_reconstruct_handles_one_voxel(data, trained):
    noisy, _ = data
    model, _, _ = trained
    assert ae.reconstruct(model, noisy[:1]).shape == (1, N_DIR)


def test_reconstruct_rejects_wrong_direction_count():
    model = ae.build_autoencoder(64, seed=0)
    with pytest.raises(ValueError, match="attenuation has 65 directions but the model expects 64"):
        ae.reconstruct(model, np.ones((10, 65)))


def test_reconstruct_rejects_nan(data, trained):
    noisy, _ = data
    model, _, _ = trained
    bad = noisy.copy()
    bad[1234, 5] = np.nan
    message = "attenuation holds 1 NaN or inf value.*voxel 1234, direction 5"
    with pytest.raises(ValueError, match=message):
        ae.reconstruct(model, bad, batch_size=500)


def test_reconstruct_rejects_non_2d():
    model = ae.build_autoencoder(8, seed=0)
    with pytest.raises(ValueError, match=r"attenuation must be 2-D .* got shape \(2, 3, 8\)"):
        ae.reconstruct(model, np.ones((2, 3, 8)))


N_DEAD = 30  # directions of the dead-unit model: a bottleneck of round(30/8) = 4 units


# -- dead units -----------------------------------------------------------------------


def _hand_set_model():
    """An autoencoder for 30 directions (bottleneck of 4) whose first two layers are set by hand:
    encode unit 0 = relu(x0) (every other encode unit 0); bottleneck units:
    0: no input, bias -1   -> always 0: dead
    1: no input, bias +0.5 -> always 0.5: alive
    2: -1 x encode 0       -> relu(-x0) = 0 for x0 >= 0: dead on attenuation
    3: encode 0 - 0.9      -> positive only where x0 > 0.9
    """
    model = ae.build_autoencoder(N_DEAD, seed=0)
    enc_w, enc_b = model.get_layer("encode").get_weights()
    enc_w[:] = 0.0
    enc_w[0, 0] = 1.0
    enc_b[:] = 0.0
    model.get_layer("encode").set_weights([enc_w, enc_b])
    w, b = model.get_layer("bottleneck").get_weights()
    assert w.shape == (20, 4)
    w[:] = 0.0
    w[0, 2], w[0, 3] = -1.0, 1.0
    b[:] = [-1.0, 0.5, 0.0, -0.9]
    model.get_layer("bottleneck").set_weights([w, b])
    return model


def test_dead_units_on_hand_set_weights():
    model = _hand_set_model()
    x = np.full((3, N_DEAD), 0.5, dtype=np.float32)
    x[:, 0] = [0.5, 0.6, 0.7]  # x0 <= 0.9 everywhere: unit 3 never fires
    assert ae.dead_units(model, x) == (3, 4)
    x[2, 0] = 0.95  # one voxel above 0.9: unit 3 is alive
    assert ae.dead_units(model, x) == (2, 4)
    # one voxel per pass: a unit alive in any chunk is alive
    assert ae.dead_units(model, x, batch_size=1) == (2, 4)


def test_dead_units_errors():
    model = ae.build_autoencoder(N_DEAD, seed=0)
    with pytest.raises(ValueError, match=r"attenuation must be \(voxels, 30\) .* got shape \(4, 29\)"):
        ae.dead_units(model, np.ones((4, 29)))
    with pytest.raises(ValueError, match="attenuation holds no voxel"):
        ae.dead_units(model, np.ones((0, N_DEAD)))
    bad = np.full((3, N_DEAD), 0.5)
    bad[2, 7] = np.nan
    with pytest.raises(ValueError, match="attenuation holds 1 NaN or inf value.*voxel 2, direction 7"):
        ae.dead_units(model, bad)
    with pytest.raises(ValueError, match="the model has no layer 'middle'; its layers"):
        ae.dead_units(model, np.ones((2, N_DEAD)), layer="middle")


def test_configure_threads_reports_a_running_runtime():
    ae.build_autoencoder(4, seed=0)(np.ones((1, 4), dtype=np.float32))  # the runtime is up
    assert ae.configure_threads(intra_op=2) is False
    assert tf.config.threading.get_intra_op_parallelism_threads() in (0, 1)


# -- saving and loading ---------------------------------------------------------------


def test_save_load_round_trip_gives_identical_reconstructions(data, trained, tmp_path):
    noisy, _ = data
    model, _, _ = trained
    path = tmp_path / "sub" / "model.keras"
    ae.save_model(model, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras"]  # no temporary left
    loaded = ae.load_model(path)
    np.testing.assert_array_equal(ae.reconstruct(loaded, noisy), ae.reconstruct(model, noisy))


def test_save_model_needs_keras_suffix(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ValueError, match="must end in .keras"):
        ae.save_model(model, tmp_path / "model.h5")


def test_load_model_names_a_missing_file(tmp_path):
    path = tmp_path / "absent.keras"
    with pytest.raises(ValueError, match="absent.keras: model file not found"):
        ae.load_model(path)


def test_load_model_names_a_corrupt_file(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="broken.keras: not a readable Keras model"):
        ae.load_model(path)


def test_history_round_trip(trained, tmp_path):
    _, history, _ = trained
    path = tmp_path / "history.csv"
    ae.save_history(history, path)
    pd.testing.assert_frame_equal(ae.load_history(path), history, check_exact=False, rtol=1e-12)


def test_history_with_missing_column_is_rejected(tmp_path):
    frame = pd.DataFrame({"epoch": [1], "loss": [0.1]})
    with pytest.raises(ValueError, match=r"history: missing column\(s\) \['val_loss'\]"):
        ae.save_history(frame, tmp_path / "h.csv")
    frame.to_csv(tmp_path / "h.csv", index=False)
    with pytest.raises(ValueError, match=r"h.csv: missing column\(s\) \['val_loss'\]"):
        ae.load_history(tmp_path / "h.csv")


def test_load_history_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nothing.csv: history file not found"):
        ae.load_history(tmp_path / "nothing.csv")


def test_stacked_training_ends_where_each_model_would_alone():
    """Models trained as one stack keep their own data, seed and weights: each ends where
    train_autoencoder takes it alone (float rounding apart)."""
    from helpers.judges.autoencoder import build_autoencoder, train_autoencoder, train_stacked

    rng = np.random.default_rng(7)
    data = []
    for _ in range(3):
        clean = rng.uniform(0.2, 1.0, size=(1230, 12)).astype("float32")  # 1025 train: a last batch of 25
        data.append((clean + rng.normal(0, 0.05, size=clean.shape).astype("float32"), clean))
    alone = []
    for k, (noisy, clean) in enumerate(data):
        model = build_autoencoder(12, seed=k)
        history = train_autoencoder(model, noisy, clean, epochs=3, n_val=205, seed=10 + k, progress=False)
        alone.append((model, history))
    stacked = [build_autoencoder(12, seed=k) for k in range(3)]
    histories = train_stacked(stacked, data, epochs=3, n_val=205, seeds=[10, 11, 12])
    for (model, history), other, h in zip(alone, stacked, histories):
        for a, b in zip(model.get_weights(), other.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(h["val_loss"], history["val_loss"], rtol=1e-4)
        np.testing.assert_allclose(h["loss"], history["loss"], rtol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        train_stacked([build_autoencoder(12, seed=0), build_autoencoder(16, seed=0)], data[:1] * 2, seeds=[0, 1])
