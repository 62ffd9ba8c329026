"""How fast does the project train the autoencoder, against plain ``keras.Model.fit``?

Both train the same network (64 directions: 64 → 43 → 8 → 43 → 64), from the same
initial weights, on the same data, with the paper's recipe: MSE, Adam(5e-4), batch 100,
250,000 training and 50,000 validation voxels, reshuffled every epoch. The baseline is
``model.fit(x, y, batch_size=100, validation_data=(xv, yv), shuffle=True)``; the project's
path is :func:`helpers.autoencoder.train_autoencoder`. Each timing covers the whole call,
compilation included.

The training set is simulated here, with NumPy only: per voxel two crossing tensors with
random eigenvalues, orientations and volume fractions, ``S/S0 = Σ f_i exp(-b gᵀ D_i g)`` at
b = 1000 s/mm² on 64 directions spread over the sphere, plus Rician noise at SNR 20.

Usage::

    python benchmarks/bench_training.py                 # 50 epochs: several minutes
    python benchmarks/bench_training.py --epochs 5      # quick; times scaled to 50 epochs

The last line reads ``speedup <X>x vs plain fit; <T> s for 50 epochs; val loss <a> vs <b>``:
X is the ratio of median times, T the project's median time (scaled to 50 epochs if
``--epochs`` differs), ``a`` and ``b`` the median final validation losses of the project and
of plain fit over the seeds both ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import numpy as np  # noqa: E402

PAPER_EPOCHS = 50
N_DIRECTIONS = 64


def sphere_directions(n):
    """(n, 3) unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def simulate(n_voxels, n_dir, *, b=1000.0, snr=20.0, n_tensors=2, seed=0, chunk=50_000):
    """Noisy and noise-free attenuation of voxels made of crossing tensors.

    Returns
    -------
    noisy, clean : (n_voxels, n_dir) ndarray of float32
        ``clean = Σ_i f_i exp(-b gᵀ D_i g)`` (unitless); ``noisy`` adds Rician noise with
        sigma = 1/snr.
    """
    rng = np.random.default_rng(seed)
    g = sphere_directions(n_dir)
    clean = np.empty((n_voxels, n_dir), dtype=np.float64)
    for start in range(0, n_voxels, chunk):
        n = min(chunk, n_voxels - start)
        evals = np.stack(  # mm²/s: one fast axis, two slow ones
            [
                rng.uniform(1.2e-3, 2.0e-3, (n, n_tensors)),
                rng.uniform(0.2e-3, 0.6e-3, (n, n_tensors)),
                rng.uniform(0.2e-3, 0.6e-3, (n, n_tensors)),
            ],
            axis=-1,
        )
        q, _ = np.linalg.qr(rng.normal(size=(n, n_tensors, 3, 3)))  # random orientations
        gq = np.einsum("gi,nkij->nkgj", g, q)  # direction g in each tensor's eigenframe
        adc = np.einsum("nkgj,nkj->nkg", gq**2, evals)  # gᵀ D g
        fractions = rng.dirichlet(np.ones(n_tensors), size=n)
        clean[start : start + n] = np.einsum("nk,nkg->ng", fractions, np.exp(-b * adc))
    sigma = 1.0 / snr
    real = clean + sigma * rng.normal(size=clean.shape)
    noisy = np.hypot(real, sigma * rng.normal(size=clean.shape))  # Rician magnitude
    return noisy.astype(np.float32), clean.astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=PAPER_EPOCHS, help="epochs per run (paper: 50)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of the project's path")
    parser.add_argument(
        "--baseline-repeats",
        type=int,
        default=None,
        help="runs of plain fit (default: --repeats up to 10 epochs, 1 beyond)",
    )
    parser.add_argument(
        "--voxels", type=int, default=300_000, help="voxels, one sixth for validation"
    )
    parser.add_argument("--seed", type=int, default=0, help="run r uses seed + r")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.voxels < 12:
        parser.error("--epochs and --repeats must be >= 1, --voxels >= 12")
    baseline_repeats = args.baseline_repeats
    if baseline_repeats is None:
        baseline_repeats = args.repeats if args.epochs <= 10 else 1

    t0 = time.perf_counter()
    noisy, clean = simulate(args.voxels, N_DIRECTIONS, seed=args.seed)
    n_val = round(args.voxels / 6)
    n_train = args.voxels - n_val
    print(
        f"data: {args.voxels} voxels x {N_DIRECTIONS} directions (2 tensors per voxel, "
        f"b=1000 s/mm^2, Rician SNR 20), {n_train} train / {n_val} val, "
        f"simulated in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    import keras
    import tensorflow as tf

    from helpers import autoencoder as ae

    ae.build_autoencoder(N_DIRECTIONS)  # first project call: sets the thread pool (see helpers)
    print(
        f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, inter-op "
        f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} (both methods)",
        flush=True,
    )
    scale = PAPER_EPOCHS / args.epochs
    if args.epochs != PAPER_EPOCHS:
        print(
            f"epochs: {args.epochs} per run; the '50 epochs' time below is the measured time "
            f"x {scale:g} (compilation scaled too, so an upper estimate)",
            flush=True,
        )
    print(
        f"runs: train_autoencoder x {args.repeats}, plain fit x {baseline_repeats} "
        f"(interleaved; run r: initial weights and shuffling from seed {args.seed} + r)",
        flush=True,
    )

    x_train, y_train = noisy[:n_train], clean[:n_train]
    x_val, y_val = noisy[n_train:], clean[n_train:]
    fast_times, fast_losses, plain_times, plain_losses = [], [], [], []
    for r in range(max(args.repeats, baseline_repeats)):
        seed = args.seed + r
        line = f"run {r + 1}:"
        if r < args.repeats:
            model = ae.build_autoencoder(N_DIRECTIONS, seed=seed)
            t = time.perf_counter()
            history = ae.train_autoencoder(
                model, noisy, clean, epochs=args.epochs, n_val=n_val, seed=seed, progress=False
            )
            fast_times.append(time.perf_counter() - t)
            fast_losses.append(float(history["val_loss"].iloc[-1]))
            line += f" train_autoencoder {fast_times[-1]:.2f} s, val loss {fast_losses[-1]:.3g};"
        if r < baseline_repeats:
            model = ae.build_autoencoder(N_DIRECTIONS, seed=seed)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=5e-4), loss="mse")
            keras.utils.set_random_seed(seed)
            t = time.perf_counter()
            fit = model.fit(
                x_train,
                y_train,
                batch_size=100,
                epochs=args.epochs,
                validation_data=(x_val, y_val),
                shuffle=True,
                verbose=0,
            )
            plain_times.append(time.perf_counter() - t)
            plain_losses.append(float(fit.history["val_loss"][-1]))
            line += f" plain fit {plain_times[-1]:.2f} s, val loss {plain_losses[-1]:.3g};"
        print(line, flush=True)

    fast_t, plain_t = statistics.median(fast_times), statistics.median(plain_times)
    # Validation losses are compared over the seeds both methods ran (same initial weights).
    paired = min(len(fast_losses), len(plain_losses))
    fast_l = statistics.median(fast_losses[:paired])
    plain_l = statistics.median(plain_losses[:paired])
    speedup = plain_t / fast_t
    t50 = fast_t * scale
    for name, t, runs in (
        ("train_autoencoder", fast_t, fast_times),
        ("plain Model.fit  ", plain_t, plain_times),
    ):
        print(f"{name}: median {t:.2f} s for {args.epochs} epochs over {len(runs)} run(s)")
    print(
        f"final val loss, median over the {paired} seed(s) both ran: project {fast_l:.4g}, "
        f"plain fit {plain_l:.4g} (ratio {fast_l / plain_l:.3f}). A single run's final val "
        "loss depends on how many of the 8 bottleneck ReLU units survive training, which "
        "changes with the seed: compare over several runs.",
        flush=True,
    )
    print(f"time ratio plain/project {speedup:.2f}", flush=True)
    print(
        "targets: >= 4x faster "
        f"{'met' if speedup >= 4 else 'MISSED'}; <= 25 s for 50 epochs "
        f"{'met' if t50 <= 25 else 'MISSED'}{'' if scale == 1 else ' (scaled estimate)'}; "
        "val loss within 5% of plain fit "
        f"{'met' if abs(fast_l / plain_l - 1) <= 0.05 else 'MISSED'}",
        flush=True,
    )
    print(
        f"speedup {speedup:.1f}x vs plain fit; {t50:.1f} s for 50 epochs; "
        f"val loss {fast_l:.3g} vs {plain_l:.3g}"
    )


if __name__ == "__main__":
    main()
