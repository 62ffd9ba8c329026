"""How fast does the project train the autoencoder: against plain ``keras.Model.fit``,
and with several models on several cores against one after another?

**One model against plain fit.** Both train the same network (64 directions:
64 → 43 → 8 → 43 → 64), from the same initial weights, on the same data, with the
paper's recipe: MSE, Adam(5e-4), batch 100, 250,000 training and 50,000 validation
voxels, reshuffled every epoch. The baseline is ``model.fit(x, y, batch_size=100,
validation_data=(xv, yv), shuffle=True)``; the project's path is
:func:`helpers.judges.autoencoder.train_autoencoder`. Each timing covers the whole call,
compilation included. The training set is simulated here, with NumPy only: per voxel two
crossing tensors with random eigenvalues, orientations and volume fractions,
``S/S0 = Σ f_i exp(-b gᵀ D_i g)`` at b = 1000 s/mm² on 64 directions spread over the
sphere, plus Rician noise at SNR 20.

**K models, in parallel against one after another.** K replicates of one method (``Syn``)
on a hand-built 64-direction subject, each exactly as step 03 makes it: its synthetic
set simulated from its seed, trained, saved, its dead units counted.
:func:`helpers.judges.training.train_replicates` runs them once with ``jobs=1`` (one after
another, in this already running process: no start-up cost on that side) and once with
``jobs=0`` (one spawned worker process per core, at most K, one TensorFlow thread each;
the workers' start, about 5 s of importing TensorFlow, is inside the timing). Runs
alternate which side goes first; the line reports the ratio of the medians. Both sides
must give the same diagnostics (the same weights), which is checked.

Measurements (2-core reference machine; notes moved here from the code):

- An epoch of the paper's recipe (250,000 two-tensor voxels, 64 directions) takes about
  0.3 s with ``train_autoencoder`` and about 3 s with ``Model.fit``; the first epoch
  includes XLA compilation (about a second).
- Threads: one intra-op thread per model (:func:`helpers.judges.autoencoder.configure_threads`).
  Each product is a batch of 100 voxels times a weight matrix of at most 64 x 43; split
  across threads the pieces wait on each other more than they compute: an epoch took
  0.28 s with one intra-op thread and 0.34 s with two (medians of 7 epochs, two runs
  each). ``Model.fit`` ran at the same speed either way.
- Stacking models as separate subgraphs of one TensorFlow graph did not help on CPU (about
  230 µs per model-step from 1 to 20 models). Stacking their *weights* does: K models as
  (K, in, out) tensors, one batched product per layer and one Adam update for all
  (:func:`helpers.judges.autoencoder.train_stacked`), so the per-step overhead that dominates
  such small networks is paid once for K. The pipeline trains a method's replicates so,
  one method per worker process. The ``stacked speedup`` line measures it.
- Latest full run, 2-core machine shared with other jobs: ``train_autoencoder`` 14.1 s
  for 50 epochs, ``Model.fit`` 215 s (15.3x). Parallel part: 8 paper-size models, about
  16-17 s each one after another; 125-140 s one after another against 69-80 s through 2
  workers; medians 1.71x (full run) and 1.83x (``--quick``, run just before).
- A worker's start (spawn, importing TensorFlow) costs about 5 s of both cores, so the
  ratio needs enough work per worker: with K models of t seconds on 2 cores it is about
  K t / (5 s + K t / 2), e.g. 1.75x for 4 such models and 1.87x for 8 (estimates, not
  measured on an idle machine); 2 models measured 1.06x under load. The paper profile
  trains 20 models per subject.

Usage::

    python benchmarks/bench_training.py                 # 50 epochs: many minutes
    python benchmarks/bench_training.py --epochs 5      # plain-fit part scaled to 50 epochs
    python benchmarks/bench_training.py --quick         # only the parallel measurement

Printed results (both ratios need idle cores; each run prints the load average beside it):

- ``speedup <X>x vs plain fit; <T> s for 50 epochs; val loss <a> vs <b>``: X is the ratio
  of median times, T the project's median time (scaled to 50 epochs if ``--epochs``
  differs), ``a`` and ``b`` the median final validation losses of the project and of
  plain fit over the seeds both ran. Skipped with ``--quick``.
- ``parallel speedup <X>x over training the same <K> models one after another``: X is the
  median time of the K models one after another over the median time through the
  workers. Target on 2 cores: X >= 1.7.
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
    parser.add_argument(
        "--quick", action="store_true", help="skip the plain-fit comparison (the slow part)"
    )
    parser.add_argument(
        "--models", type=int, default=8,
        help="K: models of the parallel part (8: a quick run's four methods x 2 replicates)",
    )
    parser.add_argument(
        "--model-voxels", type=int, default=300_000,
        help="synthetic voxels per model of the parallel part (paper: 300,000)",
    )
    parser.add_argument(
        "--model-epochs", type=int, default=PAPER_EPOCHS,
        help="epochs per model of the parallel part (paper: 50)",
    )
    parser.add_argument(
        "--parallel-repeats", type=int, default=3, help="runs of each side of the parallel part"
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="workers of the parallel side (0: every core)"
    )
    parser.add_argument(
        "--stack", type=int, default=3, help="models per stack (the pipeline stacks a method's replicates: demo 3)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.voxels < 12:
        parser.error("--epochs and --repeats must be >= 1, --voxels >= 12")
    if args.models < 2 or args.model_voxels < 12 or args.model_epochs < 1 or args.parallel_repeats < 1:
        parser.error("--models >= 2, --model-voxels >= 12, --model-epochs and --parallel-repeats >= 1")

    import keras
    import tensorflow as tf

    from helpers.judges import autoencoder as ae

    ae.build_autoencoder(N_DIRECTIONS)  # first project call: sets the thread pool (see helpers)
    print(
        f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"load average {_load()}; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"this process: intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, inter-op "
        f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'}",
        flush=True,
    )
    if not args.quick:
        plain_fit_comparison(args)
    parallel_comparison(args)


def plain_fit_comparison(args):
    """One model: train_autoencoder against Model.fit (prints the ``speedup`` line)."""
    import keras

    from helpers.judges import autoencoder as ae

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
    steps = args.epochs * -(-n_train // 100)
    print(f"per model-step: train_autoencoder {1e6 * fast_t / steps:.0f} us, plain fit {1e6 * plain_t / steps:.0f} us "
          f"(arithmetic of one step, about 3.7 MFLOP: under 50 us on one core)", flush=True)

    # K models as one stack (the pipeline trains a method's replicates so), each its own seed
    k = args.stack
    stacked_times, stacked_losses = [], []
    for r in range(args.repeats):
        seeds = [args.seed + r + 100 * j for j in range(k)]
        models = [ae.build_autoencoder(N_DIRECTIONS, seed=sd) for sd in seeds]
        t = time.perf_counter()
        histories = ae.train_stacked(models, [(noisy, clean)] * k, epochs=args.epochs, n_val=n_val, seeds=seeds)
        stacked_times.append((time.perf_counter() - t) / k)
        stacked_losses.append(float(histories[0]["val_loss"].iloc[-1]))  # model 0: seed args.seed + r, as above
        print(f"stacked run {r + 1}: {k} models in {stacked_times[-1] * k:.2f} s ({stacked_times[-1]:.2f} s per model), "
              f"model 0 val loss {stacked_losses[-1]:.3g} (train_autoencoder, same seed: "
              f"{fast_losses[r]:.3g})", flush=True)
    st = statistics.median(stacked_times)
    st_l = statistics.median(stacked_losses)
    print(f"per model-step, {k} stacked: {1e6 * st / steps:.0f} us", flush=True)
    print(
        f"stacked speedup {plain_t / st:.1f}x vs plain fit per model ({k} models in one stack; "
        f"{fast_t / st:.2f}x train_autoencoder alone); {st * scale:.1f} s per model for 50 epochs; "
        f"val loss {st_l:.3g} vs {fast_l:.3g} alone, same seeds (ratio {st_l / fast_l:.3f})"
    )


def parallel_comparison(args):
    """K models: train_replicates one after another (jobs=1) against its worker processes."""
    import json
    import shutil
    import tempfile

    from helpers.judges import training

    k = args.models
    profile = {
        "name": "bench",
        "n_voxels": args.model_voxels,
        "n_val": round(args.model_voxels / 6),
        "epochs": args.model_epochs,
        "batch_size": 100,
        "learning_rate": 5e-4,
        "replicates": k,
    }
    print(
        f"parallel part: {k} replicates of Syn, each {args.model_voxels} voxels "
        f"({profile['n_voxels'] - profile['n_val']} train / {profile['n_val']} val) x "
        f"{N_DIRECTIONS} directions, {args.model_epochs} epochs, simulated from its seed, "
        f"saved, dead units counted; one after another (jobs=1, this process) vs "
        f"worker processes (jobs={args.jobs}, start-up included); "
        f"{args.parallel_repeats} run(s) each, alternating which goes first",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        subject = bench_subject(seed=args.seed)
        times = {"one after another": [], "workers": []}
        tables = {}
        for r in range(args.parallel_repeats):
            order = [("one after another", 1), ("workers", args.jobs)]
            line = f"run {r + 1}:"
            for name, jobs in order if r % 2 == 0 else order[::-1]:
                folder = root / name.replace(" ", "_") / f"run{r}" / "sub"
                subject.save(folder)
                t = time.perf_counter()
                tables[name] = training.train_replicates(
                    folder, ["Syn"], profile=profile, seed=args.seed, snr=20.0, jobs=jobs,
                    progress=False,
                )
                times[name].append(time.perf_counter() - t)
                summary = json.loads(training.summary_path(folder).read_text())
                per_model = statistics.median(m["seconds"] for m in summary["models"])
                line += (
                    f" {name} {times[name][-1]:.1f} s ({summary['workers']} worker(s), "
                    f"median {per_model:.1f} s per model);"
                )
                shutil.rmtree(folder.parent)
            same = tables["one after another"].equals(tables["workers"])
            print(f"{line} same diagnostics (weights): {'yes' if same else 'NO'}; load {_load()}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seq, par = statistics.median(times["one after another"]), statistics.median(times["workers"])
    speedup = seq / par
    print(
        f"{k} models: median {seq:.1f} s one after another ({seq / k:.1f} s per model), "
        f"{par:.1f} s through the workers; target on 2 cores >= 1.7x: "
        f"{'met' if speedup >= 1.7 else 'MISSED'}",
        flush=True,
    )
    print(f"parallel speedup {speedup:.2f}x over training the same {k} models one after another")


def bench_subject(*, seed=0, shape=(10, 10, 10), snr=20.0):
    """A hand-built subject for the parallel part: one tensor per voxel (random
    eigenvalues and orientation) on 64 directions at b = 1000 s/mm², Rician noise."""
    from helpers.scan.subject import Subject

    rng = np.random.default_rng(seed)
    indices = np.argwhere(np.ones(shape, dtype=bool))
    noisy, clean = simulate(len(indices), N_DIRECTIONS, snr=snr, n_tensors=1, seed=seed)
    return Subject(
        attenuation=noisy,
        bvals=np.full(N_DIRECTIONS, 1000.0),
        bvecs=sphere_directions(N_DIRECTIONS),
        indices=indices,
        shape=shape,
        affine=np.eye(4),
        tissue=rng.choice(np.array([1, 2, 3], dtype=np.uint8), size=len(indices)),
        s0=np.ones(len(indices), dtype=np.float32),
        snr=snr,
        snr_method="given (benchmark)",
        sigma=1.0 / snr,
        info={"dataset": "bench", "subject": "sub"},
    )


def _load():
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
