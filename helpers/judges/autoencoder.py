"""The self-adapting denoising autoencoder: build, train, reconstruct, save and load.

The network maps a voxel's noisy diffusion attenuation (one value per diffusion-weighted
direction) to its noise-free version. Its shape and recipe follow the method paper:

- Dense layers ``N → round(N·4/6) → max(1, round(N/8)) → round(N·4/6) → N``
  (:func:`layer_widths`), ReLU on the hidden layers, linear output;
- mean squared error, Adam with learning rate 5e-4, batch 100, 50 epochs;
- 300,000 synthetic voxels: the last 50,000 (one sixth) for validation, the rest for training.

:func:`train_autoencoder` keeps that recipe (the same loss, optimiser, batch size, number of
updates per epoch and per-epoch reshuffling) but runs each epoch as one XLA-compiled call,
instead of one Python round trip per batch as ``keras.Model.fit`` does (timings against
``fit``: ``benchmarks/bench_training.py``). The model stays an ordinary Keras model: it
predicts, saves as ``.keras`` and loads like any other. :func:`dead_units` counts the
bottleneck units a trained model no longer uses on a set of voxels.

TensorFlow threads: the first of :func:`build_autoencoder`, :func:`train_autoencoder`,
:func:`reconstruct`, :func:`dead_units` or :func:`load_model` to run in a process gives
TensorFlow one intra-op thread, unless its runtime has already started (then nothing
changes); :func:`configure_threads` sets other counts. Training several models at once is
:mod:`helpers.judges.training`'s job (one model per worker process).
"""

from __future__ import annotations

import functools
import math
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

import keras
import tensorflow as tf

from helpers.io import atomic_path, save_csv

__all__ = [
    "layer_widths",
    "build_autoencoder",
    "train_autoencoder",
    "train_stacked",
    "reconstruct",
    "dead_units",
    "encode",
    "DenseForward",
    "configure_threads",
    "save_model",
    "load_model",
    "save_history",
    "load_history",
    "HISTORY_COLUMNS",
]

HISTORY_COLUMNS = ("epoch", "loss", "val_loss")
"""Columns of the training history table, in order."""


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


def layer_widths(n):
    """Widths of the autoencoder's five layers for ``n`` diffusion directions.

    Parameters
    ----------
    n : int
        Number of diffusion-weighted directions (the input and output width), ``n >= 1``.

    Returns
    -------
    widths : tuple of 5 int
        ``(n, round(n*4/6), max(1, round(n/8)), round(n*4/6), n)``.

    Notes
    -----
    Rounding is Python's built-in :func:`round` (half to even), i.e. the design's formula
    read literally as Python. It only matters where a width ends in exactly .5: never for
    ``n*4/6`` (= 2n/3, whose fraction is 0, 1/3 or 2/3), but for ``n/8`` whenever
    ``n ≡ 4 (mod 8)``. Half to even and half up then disagree for ``n ≡ 4 (mod 16)``,
    ``n >= 20``: ``n = 20`` gives a bottleneck of 2 (half up: 3), ``n = 36`` gives 4 (half
    up: 5); for ``n = 12`` and ``n = 28`` both rules give 2 and 4. All widths are at least 1.

    Examples
    --------
    >>> layer_widths(64)
    (64, 43, 8, 43, 64)
    >>> layer_widths(20)
    (20, 13, 2, 13, 20)
    """
    n = _check_n_inputs(n)
    wide = max(1, round(n * 4 / 6))
    bottleneck = max(1, round(n / 8))
    return (n, wide, bottleneck, wide, n)


def build_autoencoder(n_inputs, *, seed=None):
    """Build the (uncompiled) denoising autoencoder for ``n_inputs`` directions.

    Parameters
    ----------
    n_inputs : int
        Number of diffusion-weighted directions N, the input and output width.
    seed : int or None, optional
        Seed of the Glorot-uniform kernel initialisers (biases start at zero). The same
        seed gives the same initial weights; ``None`` draws fresh ones. No global random
        state is touched.

    Returns
    -------
    model : keras.Model
        ``Input(N) → Dense(round(4N/6), relu) → Dense(max(1, round(N/8)), relu)
        → Dense(round(4N/6), relu) → Dense(N, linear)`` (widths from :func:`layer_widths`).

    Raises
    ------
    ValueError
        If ``n_inputs`` is not a positive integer.

    Examples
    --------
    >>> model = build_autoencoder(64, seed=0)
    >>> [layer.units for layer in model.layers[1:]]
    [43, 8, 43, 64]
    """
    widths = layer_widths(n_inputs)
    seeds = _layer_seeds(seed, len(widths) - 1)
    _configure_threads()
    inputs = keras.Input(shape=(widths[0],), name="attenuation")
    h = inputs
    names = ("encode", "bottleneck", "decode", "output")
    for i, (units, name) in enumerate(zip(widths[1:], names)):
        last = i == len(names) - 1
        h = keras.layers.Dense(
            units,
            activation=None if last else "relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seeds[i]),
            bias_initializer="zeros",
            name=name,
        )(h)
    return keras.Model(inputs, h, name="denoising_autoencoder")


def _layer_seeds(seed, n):
    if seed is None:
        return [None] * n
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    # Independent, reproducible per-layer seeds from one user seed.
    return [int(s) for s in np.random.default_rng(int(seed)).integers(0, 2**31 - 1, size=n)]


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def train_autoencoder(
    model,
    noisy,
    clean,
    *,
    epochs=50,
    batch_size=100,
    learning_rate=5e-4,
    n_val=None,
    seed=0,
    progress=True,
):
    """Train ``model`` to map noisy attenuation to clean attenuation (in place).

    The recipe of ``model.fit(noisy_train, clean_train, batch_size=100, epochs=50,
    validation_data=(noisy_val, clean_val), shuffle=True)`` with MSE and Adam, with each
    epoch run as one XLA-compiled call (:func:`_fit_epochs`): one gather shuffles the
    training set, a ``tf.while_loop`` applies a Keras Adam update after every batch. The
    number of updates per epoch (``ceil(n_train / batch_size)``, the last batch possibly
    smaller), the loss and the optimiser are those of ``fit``; only the order of the
    voxels differs, since the shuffle comes from NumPy.

    Parameters
    ----------
    model : keras.Model
        A model with input and output width N, e.g. from :func:`build_autoencoder`. It is
        (re)compiled with a fresh ``Adam(learning_rate)`` and MSE, replacing any earlier
        ``compile``; its weights, and the optimiser's state, are updated in place, so
        the model saves with its optimiser and could go on with ``fit``.
    noisy : (n, N) array_like of float
        Network input: noisy synthetic attenuation S/S0 (unitless), one voxel per row.
    clean : (n, N) array_like of float
        Target: the noise-free attenuation of the same voxels.
    epochs : int, optional
        Passes over the training set (paper: 50).
    batch_size : int, optional
        Voxels per Adam update (paper: 100).
    learning_rate : float, optional
        Adam's learning rate (paper: 5e-4); ``beta_1``, ``beta_2`` and ``epsilon`` are
        Keras' defaults (0.9, 0.999, 1e-7).
    n_val : int, optional
        The *last* ``n_val`` voxels are the validation set, the others the training set.
        Default ``round(n / 6)``: 50,000 of the paper's 300,000.
    seed : int, optional
        Seeds the shuffling: epoch ``k`` visits the training voxels in the order of the
        ``k``-th ``rng.permutation(n_train)`` of ``rng = np.random.default_rng(seed)``.
        Also passed to ``keras.utils.set_random_seed`` (for randomness inside a model of
        your own, e.g. dropout; it reseeds the global ``random``, ``np.random`` and
        TensorFlow generators too), with TensorFlow's op determinism switched on: the same
        model, data and seed give the same weights on the same machine.
    progress : bool, optional
        Show a per-epoch progress bar with the losses.

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch: ``epoch`` (1, 2, ...), ``loss`` (mean of the epoch's per-batch
        training MSE, as Keras reports it) and ``val_loss`` (MSE over the validation
        set after the epoch), both in squared attenuation units.

    Raises
    ------
    ValueError
        If ``noisy`` and ``clean`` differ in shape, are not 2-D, hold NaN or inf, have a
        column count other than the model's input width, or leave no voxel for training
        or validation; or if ``epochs``, ``batch_size``, ``learning_rate`` or ``seed`` are
        not valid.

    Notes
    -----
    Loss of a batch :math:`B`: :math:`L = \\frac{1}{|B|\\,N} \\sum_{v \\in B}
    \\sum_{j=1}^{N} (\\hat a_{vj} - a_{vj})^2`.

    Besides the caller's arrays, training holds the training voxels as one
    (n_train, 2N) float32 tensor (inputs beside targets) and, during an epoch, a shuffled
    copy of it: 2 x 128 MB for 250,000 voxels and 64 directions.

    Training is sensitive to the order of the voxels: with the paper's 8-unit ReLU
    bottleneck, some units can die early (output 0 for every voxel, see
    :func:`dead_units`), and the final validation loss then depends on how many survive.
    Runs that differ only in ``seed`` can end a factor of two apart; ``Model.fit`` shows
    the same spread. Speed against ``Model.fit``: ``benchmarks/bench_training.py``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.uniform(0.2, 1.0, size=(600, 8)).astype("float32")
    >>> noisy = clean + rng.normal(0, 0.05, size=clean.shape).astype("float32")
    >>> model = build_autoencoder(8, seed=0)
    >>> history = train_autoencoder(model, noisy, clean, epochs=2, progress=False)
    >>> list(history.columns)
    ['epoch', 'loss', 'val_loss']
    """
    _configure_threads()
    noisy, clean = _check_training_data(model, noisy, clean)
    epochs, batch_size, learning_rate, seed = _check_recipe(epochs, batch_size, learning_rate, seed)
    n_val = _validation_size(len(noisy), n_val)
    _seed_training(seed)
    optimizer = _compile_adam(model, learning_rate)
    train, val = _training_tensors(noisy, clean, n_val)
    del noisy, clean  # the float32 copies, if any, are no longer needed
    return _fit_epochs(
        model, optimizer, train, val, epochs=epochs, batch_size=batch_size, seed=seed,
        progress=progress,
    )


def train_stacked(models, data, *, epochs=50, batch_size=100, learning_rate=5e-4, n_val=None, seeds=(0,),
                  progress=False):
    """Train several autoencoders of one architecture at once, each on its own data.

    Each model gets exactly :func:`train_autoencoder`'s recipe with its own data and
    shuffling seed: the K models' weights are stacked into (K, in, out) tensors, every
    layer is one batched matrix product, and one compiled step updates all K with Adam
    (Keras' update, term for term). The models do not interact (the summed loss has a
    block-diagonal gradient), so each ends where it would alone, up to float rounding;
    what is shared is the per-step overhead, which dominates for networks this small
    (``benchmarks/bench_training.py``). The trained weights are written back into
    ``models``.

    Parameters
    ----------
    models : sequence of keras.Model
        From :func:`build_autoencoder`, all with the same widths.
    data : sequence of (noisy, clean) pairs
        One per model, all of the same shape (n, N).
    epochs, batch_size, learning_rate, n_val
        As :func:`train_autoencoder` (the same for every model).
    seeds : sequence of int
        One shuffling seed per model (:func:`train_autoencoder`'s ``seed``).
    progress : bool

    Returns
    -------
    list of pandas.DataFrame
        Each model's history, as :func:`train_autoencoder` returns it.
    """
    _configure_threads()
    models, data, seeds = list(models), list(data), [int(s) for s in seeds]
    if not models or len(data) != len(models) or len(seeds) != len(models):
        raise ValueError(f"train_stacked: {len(models)} models, {len(data)} data sets and {len(seeds)} seeds; "
                         "need one of each per model")
    shapes = [[tuple(w.shape) for w in m.trainable_variables] for m in models]
    if any(sh != shapes[0] for sh in shapes):
        raise ValueError("train_stacked: the models differ in their layers' shapes")
    checked = [_check_training_data(m, noisy, clean) for m, (noisy, clean) in zip(models, data)]
    if len({x[0].shape for x in checked}) != 1:
        raise ValueError(f"train_stacked: the data sets differ in shape: {sorted({x[0].shape for x in checked})}")
    for s in seeds:
        _check_recipe(epochs, batch_size, learning_rate, s)
    epochs, batch_size, learning_rate, _ = _check_recipe(epochs, batch_size, learning_rate, seeds[0])
    n = len(checked[0][0])
    n_val = _validation_size(n, n_val)
    tf.config.experimental.enable_op_determinism()
    stack = _Stack(models, learning_rate)
    n_train = n - n_val
    train = tf.constant(np.stack([np.concatenate([x[:n_train], y[:n_train]], axis=1) for x, y in checked]))
    val = [(tf.constant(np.stack([x[i:i + _VAL_CHUNK] for x, _ in checked])),
            tf.constant(np.stack([y[i:i + _VAL_CHUNK] for _, y in checked]))) for i in range(n_train, n, _VAL_CHUNK)]
    del checked
    n_in = int(train.shape[2]) // 2
    run_epoch = tf.function(functools.partial(_run_epoch, step=functools.partial(stack.step, n_in=n_in), n_train=n_train,
                                              batch_size=batch_size, k=len(models)), jit_compile=True)
    sse = tf.function(stack.sum_squared_error, jit_compile=True)
    rngs = [np.random.default_rng(s) for s in seeds]
    bar = keras.utils.Progbar(epochs) if progress else None
    rows = [[] for _ in models]
    for epoch in range(1, epochs + 1):
        perm = tf.constant(np.stack([r.permutation(n_train) for r in rngs]).astype(np.int32))
        loss = run_epoch(train, perm).numpy()
        val_loss = sum(sse(x, y).numpy().astype(np.float64) for x, y in val) / (n_val * n_in)
        for k in range(len(models)):
            rows[k].append((epoch, float(loss[k]), float(val_loss[k])))
        if bar is not None:
            bar.update(epoch)
    stack.write_back()
    return [pd.DataFrame(r, columns=list(HISTORY_COLUMNS)) for r in rows]


class _Stack:
    """K Dense networks as stacked variables, with Keras' Adam on each (see train_stacked)."""

    def __init__(self, models, learning_rate):
        self.models = models
        self.layers = [[l for l in m.layers if isinstance(l, keras.layers.Dense)] for m in models]
        first = self.layers[0]
        self.relu = [l.activation is keras.activations.relu for l in first]
        self.kernels = [tf.Variable(np.stack([ls[i].kernel.numpy() for ls in self.layers])) for i in range(len(first))]
        self.biases = [tf.Variable(np.stack([ls[i].bias.numpy() for ls in self.layers])) for i in range(len(first))]
        self.variables = self.kernels + self.biases
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.variables]
        self.iterations = tf.Variable(0.0)
        self.lr, self.beta_1, self.beta_2, self.epsilon = float(learning_rate), 0.9, 0.999, 1e-7

    def forward(self, x):
        h = x
        for w, b, relu in zip(self.kernels, self.biases, self.relu):
            h = tf.einsum("kbi,kio->kbo", h, w) + b[:, None, :]
            if relu:
                h = tf.nn.relu(h)
        return h

    def step(self, batch, n_in):
        """One Adam update of every model on its own batch; returns the K batch losses."""
        x, y = batch[..., :n_in], batch[..., n_in:]
        with tf.GradientTape() as tape:
            per_model = tf.reduce_mean(tf.square(self.forward(x) - y), axis=[1, 2])
            total = tf.reduce_sum(per_model)
        grads = tape.gradient(total, self.variables)
        self.iterations.assign_add(1.0)
        t = self.iterations
        alpha = self.lr * tf.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v):  # Keras 3's Adam.update_step
            m.assign_add((g - m) * (1 - self.beta_1))
            v.assign_add((tf.square(g) - v) * (1 - self.beta_2))
            var.assign_sub(m * alpha / (tf.sqrt(v) + self.epsilon))
        return per_model

    def sum_squared_error(self, x, y):
        return tf.reduce_sum(tf.square(self.forward(x) - y), axis=[1, 2])

    def write_back(self):
        for k, layers in enumerate(self.layers):
            for i, layer in enumerate(layers):
                layer.kernel.assign(self.kernels[i][k])
                layer.bias.assign(self.biases[i][k])


def _check_training_data(model, noisy, clean):
    """Validate the training pair against the model; return both as float32 (n, N)."""
    n_in = _model_width(model)
    noisy = _check_array(noisy, "noisy")
    clean = _check_array(clean, "clean")
    if noisy.shape != clean.shape:
        raise ValueError(
            f"noisy has shape {noisy.shape} but clean has shape {clean.shape}; "
            "they must match (one row per voxel, one column per direction)"
        )
    if noisy.shape[1] != n_in:
        raise ValueError(f"noisy has {noisy.shape[1]} directions but the model expects {n_in}")
    n_out = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if n_out != n_in:
        raise ValueError(
            f"the model outputs {n_out} values per voxel but takes {n_in}: an autoencoder "
            "must give back one value per direction"
        )
    return noisy, clean


def _check_recipe(epochs, batch_size, learning_rate, seed):
    """Validate the training recipe; return (epochs, batch_size, learning_rate, seed)."""
    epochs = _check_positive_int(epochs, "epochs")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, Real) or not (
        math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return epochs, batch_size, float(learning_rate), int(seed)


def _validation_size(n, n_val):
    """Voxels held out for validation: ``n_val``, default ``round(n / 6)``."""
    n_val = round(n / 6) if n_val is None else _check_positive_int(n_val, "n_val")
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"{n} voxels are too few for n_val={n_val}: need at least one validation and "
            "one training voxel (n_val defaults to round(n/6))"
        )
    return n_val


def _seed_training(seed):
    """Seed Keras' (and the global) generators and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _compile_adam(model, learning_rate):
    """Compile ``model`` with MSE and a fresh Adam; return the built optimiser."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model.optimizer


def _training_tensors(noisy, clean, n_val):
    """Split off the last ``n_val`` voxels for validation and lay out the tensors.

    Returns
    -------
    train : (n_train, 2N) float32 tf.Tensor
        Inputs and targets side by side, so that one gather per epoch shuffles both (on
        CPU, twice as fast as gathering the two arrays).
    val : list of (x, y) tf.Tensor pairs
        The validation voxels in chunks of at most ``_VAL_CHUNK``.
    """
    n_train = len(noisy) - n_val
    train = tf.constant(np.concatenate([noisy[:n_train], clean[:n_train]], axis=1))
    val = [
        (tf.constant(noisy[i : i + _VAL_CHUNK]), tf.constant(clean[i : i + _VAL_CHUNK]))
        for i in range(n_train, len(noisy), _VAL_CHUNK)
    ]
    return train, val


def _fit_epochs(model, optimizer, train, val, *, epochs, batch_size, seed, progress):
    """The training loop: per epoch, a NumPy shuffle, one compiled pass, the val loss."""
    n_train, n_in = int(train.shape[0]), int(train.shape[1]) // 2
    n_val = sum(int(x.shape[0]) for x, _ in val)
    run_epoch = _make_epoch_function(
        model, optimizer, model.trainable_variables, n_train=n_train, n_in=n_in,
        batch_size=batch_size,
    )
    sum_squared_error = _make_loss_function(model)
    shuffle_rng = np.random.default_rng(seed)
    bar = keras.utils.Progbar(epochs, stateful_metrics=["loss", "val_loss"]) if progress else None
    rows = []
    for epoch in range(1, epochs + 1):
        perm = tf.constant(shuffle_rng.permutation(n_train).astype(np.int32))
        loss = float(run_epoch(train, perm))
        val_loss = sum(float(sum_squared_error(x, y)) for x, y in val) / (n_val * n_in)
        rows.append((epoch, loss, val_loss))
        if bar is not None:
            bar.update(epoch, values=[("loss", loss), ("val_loss", val_loss)])
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


_VAL_CHUNK = 65536  # validation voxels per compiled call


def _make_epoch_function(model, optimizer, variables, *, n_train, n_in, batch_size):
    """Compile one epoch: shuffle by ``perm``, then one optimiser update per batch.

    The function is built around a :func:`functools.partial`: TensorFlow keys its
    "frequent retracing" warning on the wrapped function's code, which would otherwise be
    shared by every model trained in the process (each needs its own trace).
    """

    def step(batch):
        x, y = batch[:, :n_in], batch[:, n_in:]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    epoch = functools.partial(_run_epoch, step=step, n_train=n_train, batch_size=batch_size)
    return tf.function(epoch, jit_compile=True)


def _run_epoch(train, perm, *, step, n_train, batch_size, k=None):
    """Body of a compiled epoch: shuffle by ``perm``, then ``step`` on every batch in order.

    One model: ``train`` (n_train, 2N), inputs then targets, ``perm`` (n_train,) and
    ``step(batch)`` on a (b, 2N) batch returns its loss. A stack of ``k`` models
    (:func:`train_stacked`): ``train`` (K, n_train, 2N), ``perm`` (K, n_train), each model in
    its own order, and ``step`` on a (K, b, 2N) batch returns the K losses.
    """
    lead = [] if k is None else [k]
    n_full, rest = divmod(n_train, batch_size)
    shuffled = tf.gather(train, perm, batch_dims=len(lead))  # one gather: the whole epoch's batches, in order
    total = tf.zeros(lead, tf.float32)
    if n_full:
        batches = tf.reshape(shuffled[..., : n_full * batch_size, :], [*lead, n_full, batch_size, int(train.shape[-1])])

        def body(i, total):
            return i + 1, total + step(batches[..., i, :, :])

        _, total = tf.while_loop(lambda i, _: i < n_full, body, (tf.constant(0), total))
    if rest:  # the last, smaller batch, as Model.fit makes it
        total = total + step(shuffled[..., n_full * batch_size :, :])
    return total / (n_full + (rest > 0))


def _make_loss_function(model):
    """Compiled sum of squared errors of ``model`` on one chunk (partial: see above)."""
    return tf.function(functools.partial(_sum_squared_error, model=model), jit_compile=True)


def _sum_squared_error(x, y, *, model):
    return tf.reduce_sum(tf.square(model(x, training=False) - y))


def _make_forward_function(model):
    """Compiled ``model(x)`` for inference (partial: see above). ``predict_on_batch``
    would do the same, but makes TensorFlow warn about retracing from the sixth model
    a process uses on."""
    return tf.function(functools.partial(_forward, model=model), jit_compile=True)


def _forward(x, *, model):
    return model(x, training=False)


# --------------------------------------------------------------------------------------
# TensorFlow threads
# --------------------------------------------------------------------------------------

_THREADS_CONFIGURED = False


def configure_threads(*, intra_op=1, inter_op=None):
    """Set TensorFlow's thread pools, if its runtime has not started yet.

    Parameters
    ----------
    intra_op : int, optional
        Threads one operation may use. One by default: each product is a batch of 100
        voxels times a weight matrix of at most N x 4N/6, too small to gain from being
        split (measured in ``benchmarks/bench_training.py``).
    inter_op : int or None, optional
        Operations run side by side; ``None`` keeps TensorFlow's default. Worker
        processes that train one model each (:mod:`helpers.judges.training`) use 1, so that
        each worker stays on one core.

    Returns
    -------
    applied : bool
        False when the runtime had already started: the setting can then no longer
        change, and the pools stay as they are.
    """
    global _THREADS_CONFIGURED
    _THREADS_CONFIGURED = True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        return False  # runtime already running: keep its thread pools
    return True


def _configure_threads():
    """One intra-op thread (:func:`configure_threads`), once per process, first call only."""
    if not _THREADS_CONFIGURED:
        configure_threads()


# --------------------------------------------------------------------------------------
# Using a trained model
# --------------------------------------------------------------------------------------


def reconstruct(model, attenuation, *, batch_size=65536):
    """Denoise attenuation voxel by voxel with a trained autoencoder.

    Parameters
    ----------
    model : keras.Model
        Trained autoencoder with input width N.
    attenuation : (n, N) array_like of float
        Attenuation S/S0 (unitless), one voxel per row, directions in the order the model
        was trained on.
    batch_size : int, optional
        Voxels predicted per call; memory beyond input and output is one chunk.

    Returns
    -------
    reconstructed : (n, N) ndarray of float32
        The model's output for every voxel.

    Raises
    ------
    ValueError
        If ``attenuation`` is not 2-D, has a column count other than the model's input
        width, or holds NaN or inf.

    Examples
    --------
    >>> model = build_autoencoder(6, seed=0)
    >>> reconstruct(model, np.ones((3, 6))).shape
    (3, 6)
    """
    _configure_threads()
    n_in = _model_width(model)
    attenuation = np.asarray(attenuation)
    if attenuation.ndim != 2:
        raise ValueError(
            f"attenuation must be 2-D (voxels, directions), got shape {attenuation.shape}"
        )
    if attenuation.shape[1] != n_in:
        raise ValueError(
            f"attenuation has {attenuation.shape[1]} directions but the model expects {n_in}"
        )
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_real(attenuation, "attenuation")
    n = attenuation.shape[0]
    for start in range(0, n, batch_size):  # check first, in chunks, before any work
        _check_finite(attenuation[start : start + batch_size], "attenuation", offset=start)
    forward = _make_forward_function(model)
    out = np.empty((n, n_in), dtype=np.float32)
    for start in range(0, n, batch_size):
        chunk = np.asarray(attenuation[start : start + batch_size], dtype=np.float32)
        out[start : start + len(chunk)] = forward(tf.constant(chunk))
    return out


def dead_units(model, attenuation, *, layer="bottleneck", batch_size=65536):
    """Count the bottleneck units that output 0 on every voxel of ``attenuation``.

    A ReLU unit whose pre-activation is negative for every input is "dead": it passes
    nothing on, and gets no gradient to recover. With the paper's narrow bottleneck
    (8 units for 64 directions) each dead unit is a lost eighth of the code.

    Parameters
    ----------
    model : keras.Model
        A functional model (e.g. from :func:`build_autoencoder`), trained or not.
    attenuation : (n, N) array_like of float
        The voxels to test the units on; for a subject, its real brain voxels
        (``subject.attenuation``), not the synthetic training set.
    layer : str, optional
        Name of the layer whose units are counted (:func:`build_autoencoder` names its
        bottleneck ``"bottleneck"``).
    batch_size : int, optional
        Voxels per forward pass.

    Returns
    -------
    n_dead : int
        Units of ``layer`` whose output is exactly 0 for every voxel.
    n_units : int
        Units of ``layer``.

    Raises
    ------
    ValueError
        If the model has no layer ``layer``, or ``attenuation`` is not a finite 2-D array
        of the model's input width, or holds no voxel.

    Examples
    --------
    >>> model = build_autoencoder(16, seed=0)  # a bottleneck of 2 units
    >>> kernel, bias = model.get_layer("bottleneck").get_weights()
    >>> kernel[:] = 0.0  # no input reaches the units: each outputs relu(bias)
    >>> bias[:] = [-1.0, 1.0]  # unit 0 dead, unit 1 alive
    >>> model.get_layer("bottleneck").set_weights([kernel, bias])
    >>> dead_units(model, np.full((5, 16), 0.5))
    (1, 2)
    """
    codes = encode(model, attenuation, layer=layer, batch_size=batch_size)
    if codes.shape[0] == 0:
        raise ValueError("attenuation holds no voxel: dead units need at least one")
    alive = np.any(codes != 0, axis=0)
    return int((~alive).sum()), int(alive.size)


def encode(model, attenuation, *, layer="bottleneck", batch_size=65536):
    """The output of one layer (by default the bottleneck code) for every voxel.

    Parameters
    ----------
    model : keras.Model
        A functional model (e.g. from :func:`build_autoencoder`).
    attenuation : (n, N) array_like of float
        Voxels of the model's input width.
    layer : str, optional
        Name of the layer to read.
    batch_size : int, optional
        Voxels per forward pass.

    Returns
    -------
    codes : (n, k) float32 ndarray
        The layer's k outputs per voxel (ReLU: 0 for an inactive unit).

    Raises
    ------
    ValueError
        If the model has no layer ``layer``, or ``attenuation`` is not a finite 2-D array
        of the model's input width.
    """
    _configure_threads()
    n_in = _model_width(model)
    try:
        target = model.get_layer(layer)
    except ValueError as e:
        names = [lay.name for lay in model.layers]
        raise ValueError(f"the model has no layer {layer!r}; its layers: {names}") from e
    attenuation = np.asarray(attenuation)
    if attenuation.ndim != 2 or attenuation.shape[1] != n_in:
        raise ValueError(
            f"attenuation must be (voxels, {n_in}) to match the model, got shape {attenuation.shape}"
        )
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_real(attenuation, "attenuation")
    _check_finite(attenuation, "attenuation")
    forward = _make_forward_function(keras.Model(model.inputs, target.output))
    out = np.empty((len(attenuation), int(target.output.shape[-1])), dtype=np.float32)
    for start in range(0, len(attenuation), batch_size):
        chunk = np.asarray(attenuation[start : start + batch_size], dtype=np.float32)
        out[start : start + len(chunk)] = np.asarray(forward(tf.constant(chunk)))
    return out


class DenseForward:
    """A trained autoencoder's forward pass in numpy: the reconstruction and the bottleneck
    code of many small batches, without compiling a TensorFlow function per call.

    The judges (:mod:`helpers.judges.panel`) run every replicate model on dozens of scans of a
    few thousand voxels; a compiled call costs about 0.15 s to set up for each, the
    matrix products a millisecond. The result equals :func:`reconstruct` and
    :func:`encode` to float32 rounding (tested).

    Parameters
    ----------
    model : keras.Model
        A model of :func:`build_autoencoder`'s shape: Dense layers, ReLU on all but the
        last, the bottleneck layer named ``"bottleneck"``.

    Examples
    --------
    >>> model = build_autoencoder(12, seed=0)
    >>> recon, code = DenseForward(model)(np.full((4, 12), 0.5))
    >>> recon.shape, code.shape
    ((4, 12), (4, 2))
    """

    def __init__(self, model, *, layer="bottleneck"):
        self.layers = []
        self.code_index = None
        for lay in model.layers:
            if not isinstance(lay, keras.layers.Dense):
                continue
            kernel, bias = (np.asarray(w, dtype=np.float32) for w in lay.get_weights())
            relu = lay.get_config().get("activation") == "relu"
            self.layers.append((kernel, bias, relu))
            if lay.name == layer:
                self.code_index = len(self.layers) - 1
        if self.code_index is None:
            raise ValueError(f"the model has no Dense layer {layer!r}; its layers: {[lay.name for lay in model.layers]}")
        self.n_inputs = self.layers[0][0].shape[0]

    def __call__(self, attenuation):
        """(reconstruction, code): (n, N) and (n, k) float32 arrays."""
        h = np.asarray(attenuation, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.n_inputs:
            raise ValueError(f"attenuation must be (voxels, {self.n_inputs}) to match the model, got shape {h.shape}")
        _check_finite(h, "attenuation")
        code = None
        for i, (kernel, bias, relu) in enumerate(self.layers):
            h = h @ kernel + bias
            if relu:
                np.maximum(h, 0.0, out=h)
            if i == self.code_index:
                code = h
        return h, code


def save_model(model, path):
    """Save a model as a ``.keras`` file, atomically (temporary name, then rename).

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.keras``.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got {path}")
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_model(path):
    """Load a model saved by :func:`save_model`.

    Raises
    ------
    ValueError
        Naming the file, if it is missing or not a readable ``.keras`` model.
    """
    _configure_threads()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise ValueError(f"{path}: not a readable Keras model ({type(e).__name__}: {e})") from e


def save_history(history, path):
    """Write the training history (columns ``epoch, loss, val_loss``) as CSV, atomically.

    Raises
    ------
    ValueError
        If a column is missing.
    """
    _check_history_columns(history, "history")
    save_csv(history.loc[:, list(HISTORY_COLUMNS)], path)


def load_history(path):
    """Read a history CSV written by :func:`save_history`.

    Raises
    ------
    ValueError
        Naming the file, if it is missing, not CSV, or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: history file not found")
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from e
    _check_history_columns(history, str(path))
    return history


# --------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------


def _check_n_inputs(n):
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n_inputs must be a positive int (number of directions), got {n!r}")
    return int(n)


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _model_width(model):
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[1] is None:
        raise ValueError(
            f"model must take one 2-D input (voxels, directions), got input shape {shape}"
        )
    return int(shape[1])


def _check_array(values, name):
    """Return ``values`` as a C-contiguous float32 (n, N) array, or raise."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (voxels, directions), got shape {values.shape}")
    _check_real(values, name)
    values = np.ascontiguousarray(values, dtype=np.float32)
    _check_finite(values, name)
    return values


def _check_real(values, name):
    dtype = values.dtype
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")


def _check_finite(values, name, *, offset=0):
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.argwhere(~finite)
        row, col = bad[0]
        raise ValueError(
            f"{name} holds {len(bad)} NaN or inf value(s), the first at voxel {offset + row}, "
            f"direction {col}"
        )


def _check_history_columns(history, where):
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected {list(HISTORY_COLUMNS)}")
