"""One HCP-sized subject on one machine: time and peak memory of loading and evaluation.

Input: the SYNTHETIC HCP-layout subject of ``benchmarks/make_hcp_like.py`` (145x174x145
voxels, 288 volumes; written first if missing, about 4 GB on disk). Steps:

1. load the b=1000 shell (only the b0 and shell volumes are read) — timed, peak RSS;
2. set-up, not timed: simulate each method's quick-profile training set from this
   subject and train four quick-profile models;
3. evaluation — timed, peak RSS: the real signal through the four models and every
   metric, i.e. five WLS tensor fits of all brain voxels (the real signal's and four
   reconstructions') plus the four reconstructions;
4. baseline, in the same run: dipy's ``TensorModel(gtab, fit_method="WLS").fit`` on the
   same five signals (fed in chunks of ``--dipy-chunk`` voxels, which only bounds its
   memory), median-free since it runs once per signal; its peak memory is not counted.

Peak memory is the process's maximum resident set size (``getrusage``) read after each
phase. Every number printed comes from a synthetic phantom, not a scan.

    python benchmarks/bench_subject.py [--root data/hcp_like] [--subject 100000]
    python benchmarks/bench_subject.py --tiny    # dipy's 10x10x10 sample instead: seconds, for the tests
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from helpers.config import PROJECT_ROOT, load_profile
from helpers.contract import PAPER_METHODS


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "data" / "hcp_like")
    parser.add_argument("--subject", default="100000")
    parser.add_argument("--dipy-chunk", type=int, default=100_000)
    parser.add_argument("--tiny", action="store_true", help="dipy's sample scan, one epoch: a check that it runs")
    args = parser.parse_args(argv)

    if not args.tiny and not (args.root / args.subject / "T1w" / "Diffusion" / "data.nii.gz").is_file():
        from make_hcp_like import main as make

        print(f"writing the synthetic HCP-like subject to {args.root} (a few minutes, once)")
        make([str(args.root), "--subject", args.subject])

    from helpers.judges.autoencoder import build_autoencoder, reconstruct, train_autoencoder
    from helpers.scan.layouts import load_hcp, load_sample
    from helpers.judges.metrics import evaluate
    from helpers.generators.simulation import simulate, tissue_pools

    t = time.perf_counter()
    subject = load_sample() if args.tiny else load_hcp(args.root, args.subject)
    t_load = time.perf_counter() - t
    peak_load = peak_gb()
    if args.tiny:
        print(f"subject: dipy's sample scan (--tiny), {subject.n_voxels:,} brain voxels x {subject.n_directions} directions")
    else:
        assert subject.info.get("synthetic"), "bench_subject expects the synthetic phantom"
        print(f"subject: SYNTHETIC HCP-like phantom, {subject.n_voxels:,} brain voxels x {subject.n_directions} directions (b=1000), SNR {subject.snr:.1f}")
    print(f"load {t_load:.1f} s, peak {peak_load:.2f} GB")

    quick = load_profile("quick")
    epochs = 1 if args.tiny else quick["epochs"]
    pools = tissue_pools(subject)
    models = {}
    for m in PAPER_METHODS:
        clean, noisy = simulate(subject, m, quick["n_voxels"], seed=0, pools=pools)
        models[m] = build_autoencoder(subject.n_directions, seed=0)
        train_autoencoder(models[m], noisy, clean, epochs=epochs, n_val=quick["n_val"], seed=0, progress=False)
        del clean, noisy
    subject._tensor = None  # the pools' fit is cached: drop it so the evaluation makes all five fits
    print("set-up: four quick-profile models trained (not timed)")

    t = time.perf_counter()
    table, _ = evaluate(subject, {m: (lambda model=model: reconstruct(model, subject.attenuation)) for m, model in models.items()})
    t_eval = time.perf_counter() - t
    peak_eval = peak_gb()
    print(f"evaluation (4 reconstructions + 5 WLS fits of {subject.n_voxels:,} voxels + metrics) {t_eval:.1f} s, peak {peak_eval:.2f} GB")
    print(table[table.tissue == "all"].pivot(index="method", columns="metric", values="value").round(4).to_string())

    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(np.r_[0.0, subject.bvals], bvecs=np.r_[np.zeros((1, 3)), subject.bvecs])
    model = TensorModel(gtab, fit_method="WLS")
    signals = [subject.attenuation] + [reconstruct(mm, subject.attenuation) for mm in models.values()]
    t_dipy = 0.0
    for signal in signals:
        for start in range(0, len(signal), args.dipy_chunk):
            chunk = signal[start : start + args.dipy_chunk]
            chunk = np.hstack([np.ones((len(chunk), 1), chunk.dtype), chunk])
            t = time.perf_counter()
            model.fit(chunk)
            t_dipy += time.perf_counter() - t
    print(f"baseline dipy TensorModel WLS: {t_dipy:.1f} s for the same 5 fits ({t_dipy / t_eval:.1f}x the whole evaluation)")
    print(f"evaluation {t_eval:.1f} s, peak {max(peak_load, peak_eval):.2f} GB, dipy fits {t_dipy:.1f} s")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    main()
