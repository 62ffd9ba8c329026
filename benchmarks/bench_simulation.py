"""How fast are the built-in generators, against a loop over dipy's ``multi_tensor``, and
FORCE against dipy's own ``generate_force_simulations``?

Both run here, in one process, on the sample's real gradient table (64 directions at
b=1000). The project simulates 300,000 voxels per method (the paper's count), noise
included, median of ``--repeats`` runs. The baseline is the documented dipy way of
making a voxel — ``dipy.sims.voxel.multi_tensor`` with the same five-compartment Syn
mixture (three fibres, GM, CSF), fractions in percent, no noise — looped over
``--dipy-voxels`` voxels, median of ``--repeats`` runs. The speedup is the project's
slowest method's voxels per second over dipy's.

Then FORCE: :mod:`bench_force` (beside this file) times
``dipy.sims.force.generate_force_simulations`` and :func:`helpers.generators.force.simulate_force` on
one core in the same run and prints ``force speedup <X>x vs dipy generate_force_simulations``.

    python benchmarks/bench_simulation.py [--repeats 5] [--dipy-voxels 1000]
    python benchmarks/bench_simulation.py --tiny    # seconds: the test suite runs this
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.sims.voxel import multi_tensor as dipy_multi_tensor

from helpers.contract import METHODS, PAPER_METHODS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_force, beside this file
import bench_force  # noqa: E402
from bench_force import median_time  # noqa: E402  (one timing rule for both benchmarks)
from helpers.scan.layouts import load_sample
from helpers.generators.simulation import draw_mixture, fit_calibration, simulate, tissue_pools

N_VOXELS = 300_000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dipy-voxels", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="seconds, not minutes (1 repeat, few voxels): a check that it runs")
    args = parser.parse_args(argv)
    n_voxels = N_VOXELS
    if args.tiny:
        args.repeats, args.dipy_voxels, n_voxels = 1, 20, 2000

    subject = load_sample()
    pools = tissue_pools(subject)
    print(f"gradient table: {subject.n_directions} directions at b={subject.bvals.mean():.0f} (dipy sample small_64D)")

    # Baseline: dipy's multi_tensor, one call per voxel, on the same Syn mixture.
    rng = np.random.default_rng(0)
    evals, evecs, fractions = draw_mixture("Syn", args.dipy_voxels, rng)
    gtab = gradient_table(np.r_[0.0, subject.bvals], bvecs=np.r_[np.zeros((1, 3)), subject.bvecs])
    percent = fractions * 100
    percent[:, -1] = 100 - percent[:, :-1].sum(axis=1)  # dipy checks the sum to 2 decimals

    def dipy_loop():
        for i in range(args.dipy_voxels):
            dipy_multi_tensor(gtab, evals[i], S0=1.0, angles=evecs[i, :, :, 0], fractions=percent[i], snr=None)

    t_dipy = median_time(dipy_loop, args.repeats)
    dipy_rate = args.dipy_voxels / t_dipy
    print(f"baseline dipy.sims.voxel.multi_tensor loop: {dipy_rate:,.0f} voxels/s (median of {args.repeats} x {args.dipy_voxels} voxels, 5 compartments, no noise)")

    # Calibrated draws from a fit the pipeline makes once per subject (calibration.json):
    # fitted here first, timed apart, so its line below is the drawing alone.
    evals = 20 if args.tiny else 200
    t0 = time.perf_counter()
    subject.calibration = fit_calibration(subject, max_evals=evals, n_resamples=0)
    print(f"Calibrated fit: {evals} evaluations in {time.perf_counter() - t0:.1f} s, once per subject "
          "(bench_calibration.py measures it; not counted below)")

    slowest = 0.0
    for method in METHODS:
        t = median_time(lambda: simulate(subject, method, n_voxels, seed=1, pools=pools), args.repeats)
        if method in PAPER_METHODS:
            slowest = max(slowest, t)
        print(f"{method:14s} {t:6.3f} s per {n_voxels} voxels (clean + Rician noisy), {n_voxels / t:,.0f} voxels/s")
    t = median_time(lambda: simulate(subject, "Syn", n_voxels, seed=1, noise="per_voxel"), args.repeats)
    print(f"{'Syn per_voxel':14s} {t:6.3f} s per {n_voxels} voxels (noise σ drawn per voxel from the subject's σ/S0)")
    speedup = n_voxels / slowest / dipy_rate
    print(f"speedup {speedup:.0f}x vs dipy multi_tensor (the paper's four tensor generators); slowest {slowest:.2f} s per {n_voxels} voxels")

    bench_force.main(["--tiny"] if args.tiny else ["--repeats", str(args.repeats)])


if __name__ == "__main__":
    main()
