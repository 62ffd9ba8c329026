"""How fast is :func:`helpers.generators.force.simulate_force` against dipy's own FORCE simulator?

Both run here, in one process, on one core (BLAS/OpenMP pools limited to one thread with
threadpoolctl; dipy with ``num_cpus=1``, its in-process path), on dipy's sample gradient
table ``small_64D`` (1 b0 + 64 directions at b ≈ 1000), median of ``--repeats`` runs.

* dipy: ``dipy.sims.force.generate_force_simulations`` with ``compute_dti=False`` (signals
  and parameters only). Its per-voxel time is the *marginal* one,
  (t(n) - t(1)) / (n - 1), so its fixed set-up (the 362 × 10 Bingham look-up table, about
  0.5 s) is not charged to the voxels.
* ours: ``simulate_force`` for ``--voxels`` voxels (default 300,000, the project's count
  per method), set-up included.

    python benchmarks/bench_force.py [--repeats 5] [--dipy-voxels 300] [--voxels 300000]
    python benchmarks/bench_force.py --tiny     # a few seconds, for the test suite
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.data import get_fnames
from dipy.io.gradients import read_bvals_bvecs
from dipy.sims.force import generate_force_simulations
from threadpoolctl import threadpool_limits

from helpers.generators.force import simulate_force

N_VOXELS = 300_000


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn``, seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def sample_gradients():
    """dipy's small_64D table as a GradientTable (its NaN b0 b-vector zeroed)."""
    _, fbval, fbvec = get_fnames(name="small_64D")
    bvals, bvecs = read_bvals_bvecs(str(fbval), str(fbvec))
    return gradient_table(bvals, bvecs=bvecs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing; the median is kept")
    parser.add_argument("--dipy-voxels", type=int, default=300, help="voxels per dipy run")
    parser.add_argument("--voxels", type=int, default=N_VOXELS, help="voxels per simulate_force run")
    parser.add_argument("--tiny", action="store_true", help="seconds, not minutes: 1 repeat, few voxels")
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.dipy_voxels, args.voxels = 1, 50, 2000
    if args.repeats < 1 or args.dipy_voxels < 2 or args.voxels < 1:
        parser.error("--repeats >= 1, --dipy-voxels >= 2 and --voxels >= 1 are required")

    gtab = sample_gradients()
    b0 = gtab.bvals <= gtab.b0_threshold
    print(f"gradient table: {b0.sum()} b0 + {(~b0).sum()} directions at b={gtab.bvals[~b0].mean():.0f} (dipy sample small_64D), one core")

    def dipy_run(n):
        generate_force_simulations(gtab, num_simulations=n, num_cpus=1, batch_size=n, compute_dti=False, verbose=False)

    with threadpool_limits(limits=1):
        dipy_run(1)  # warm-up: first-call imports are not dipy's per-voxel cost
        t_dipy_one = median_time(lambda: dipy_run(1), args.repeats)
        t_dipy = median_time(lambda: dipy_run(args.dipy_voxels), args.repeats)
        # Marginal cost; when timing noise swamps it (tiny runs), the plain average instead.
        marginal = (t_dipy - t_dipy_one) / (args.dipy_voxels - 1)
        dipy_per_voxel = marginal if marginal > 0 else t_dipy / args.dipy_voxels
        t_ours = median_time(lambda: simulate_force(gtab.bvals, gtab.bvecs, args.voxels, 1), args.repeats)
    ours_per_voxel = t_ours / args.voxels
    scaled = "" if args.voxels == N_VOXELS else f" (extrapolated from {args.voxels:,})"
    print(
        f"voxels/s on one core: ours {1 / ours_per_voxel:,.0f}, dipy {1 / dipy_per_voxel:,.0f} "
        f"(dipy set-up {t_dipy_one:.2f} s not counted); ours {ours_per_voxel * N_VOXELS:.2f} s per {N_VOXELS:,} voxels{scaled}"
    )
    print(f"force speedup {dipy_per_voxel / ours_per_voxel:.0f}x vs dipy generate_force_simulations")


if __name__ == "__main__":
    main()
