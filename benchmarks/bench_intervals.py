"""Do more replicates shrink a two-sample interval towards zero? The block bootstrap against
the replicate-only interval it replaced, with 3 and 10 replicates, in one run.

For one subject and one generator, R judge sets are drawn (one per replicate, as the
known-answer step draws them) and the cross-fitted two-sample accuracy of each against the
scan's judge voxels is computed. Two 95% intervals of the mean accuracy:

- **baseline, replicate-only** (what the verdict used before): Student's t over the R
  replicate accuracies. It carries the generator's sampling only, so it narrows like
  1/sqrt(R) and tends to zero with more replicates on the same voxels;
- **block bootstrap** (:mod:`helpers.judges.distance`): each draw resamples the judge voxels'
  blocks, the replicates and each judge set's voxels. Its scan share does not shrink.

The two-sample judge needs no trained network, so no model is trained here (the
autoencoders the panel carries are untrained; only their codes would use them).

    python benchmarks/bench_intervals.py [--config configs/invivo.yaml] [--method SubjectFORCE]
    python benchmarks/bench_intervals.py --tiny    # dipy's sample, 2 and 3 replicates: seconds, for the tests
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def widths(subject, method, replicates, *, n_judge, n_draws, seed=0):
    """(bootstrap width, replicate-only t width, mean accuracy) for ``replicates`` judge sets."""
    from scipy import stats

    from helpers.judges.autoencoder import build_autoencoder
    from helpers.judges.distance import distance_check
    from helpers.judges.panel import JudgePanel

    models = {(method, r): build_autoencoder(subject.n_directions, seed=r) for r in range(replicates)}
    panel = JudgePanel(subject, models, {method: method}, seed=seed, n_judge=n_judge)
    scan = panel.scan_data(panel.real.attenuation, reconstruction=False)
    result = distance_check(panel, scan, n_draws=n_draws, seed=seed)
    boot = result.bootstrap
    draws = boot[(boot["metric"] == "c2st_accuracy")]["score"].to_numpy(float)
    low, high = np.quantile(draws, [0.025, 0.975])
    acc = result.scores[result.scores["metric"] == "c2st_accuracy"]["value"].to_numpy(float)
    t_low, t_high = stats.t.interval(0.95, len(acc) - 1, loc=acc.mean(), scale=stats.sem(acc))
    return high - low, t_high - t_low, acc.mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/invivo.yaml")
    parser.add_argument("--method", default="SubjectFORCE")
    parser.add_argument("--replicates", type=int, nargs=2, default=(3, 10))
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--judge-voxels", type=int, default=2000)
    parser.add_argument("--tiny", action="store_true", help="dipy's sample, 2 and 3 replicates, 500 voxels")
    args = parser.parse_args(argv)

    from helpers.run.batch import quiet_logging

    quiet_logging()
    if args.tiny:
        from helpers.scan.layouts import load_sample

        subject, label = load_sample(), "sample small_64D"
        args.replicates, args.draws, args.judge_voxels = (2, 3), 50, 500
    else:
        from helpers.config import load_config
        from helpers.scan.layouts import load_subject

        config = load_config(args.config)
        sid = list(config.subjects)[0]
        subject, label = load_subject(config, sid), f"{config.dataset} {sid}"
    print(f"{label}: {subject.n_judge_voxels} judge voxels of {subject.n_voxels}; generator {args.method}; "
          f"{args.draws} bootstrap draws")
    results = {}
    for r in args.replicates:
        t = time.perf_counter()
        boot, t_width, mean = widths(subject, args.method, r, n_judge=args.judge_voxels, n_draws=args.draws)
        results[r] = (boot, t_width)
        print(f"{r:>2} replicates: accuracy {mean:.3f}; 95% width: block bootstrap {boot:.4f}, "
              f"replicate-only t {t_width:.4f} ({time.perf_counter() - t:.1f} s)")
    a, b = args.replicates
    print(f"width ratio {b} vs {a} replicates: block bootstrap {results[b][0] / results[a][0]:.2f}, "
          f"replicate-only t {results[b][1] / results[a][1]:.2f} (1/sqrt({b}/{a}) = {np.sqrt(a / b):.2f})")


if __name__ == "__main__":
    main()
