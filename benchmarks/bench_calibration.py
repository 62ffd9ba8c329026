"""Calibrated: what the fit costs, how close it gets, and whether it recovers a known truth.

Three parts, one run, on one subject's gradient table and noise model:

1. **The scan.** Calibrate on the subject's fit voxels (the profile's budget, with the
   bootstrap refits); report the fit's seconds beside the seconds to train one autoencoder
   on Calibrated voxels at the profile's recipe, and the cross-fitted two-sample accuracy
   against the judge voxels of FORCE's defaults, of Calibrated, and of two random halves
   of the judge voxels (the floor).
2. **Known answers.** Pseudo-scans drawn by the family with hyperparameter sets unlike
   FORCE's defaults (the scan's gradient table and noise), split into fit and judge
   halves: calibrate from FORCE's defaults on the fit half; print truth, recovered value
   and tolerance (:data:`helpers.generators.calibration.RECOVERY_TOLERANCE`) per quantity, and the
   two-sample accuracy of the calibrated generator against the judge half.
3. **Outside the family.** A RandomWM scan and a multi-tensor ladder rung (Syn*1.5): the
   fit reports the distance it reached and the accuracy; it cannot reach the floor.

    python benchmarks/bench_calibration.py [--config configs/invivo.yaml] [--evals 1000]
    python benchmarks/bench_calibration.py --tiny    # dipy's sample, 40 evaluations per fit: for the tests
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SETS = {
    "A: slow, dispersed, more GM": dict(
        fiber_probs=(0.5, 0.3, 0.2), tissue_alpha=(1.0, 2.0, 0.5), pure=(0.1, 0.15, 0.02),
        d_par=(-0.8, 0.3), ratio=(-0.5, 0.3), f_intra=(0.0, 0.4), odi=(-0.8, 0.3), gm_d=(-1.3, 0.2),
        csf_d=2.5e-3, noise_scale=0.9),
    "B: fast, coherent, pure WM": dict(
        fiber_probs=(0.7, 0.2, 0.1), tissue_alpha=(4.0, 1.0, 0.3), pure=(0.3, 0.05, 0.01),
        d_par=(0.3, 0.2), ratio=(-1.5, 0.3), f_intra=(0.8, 0.3), odi=(-2.5, 0.3), gm_d=(-0.9, 0.2),
        csf_d=3.0e-3, noise_scale=1.1),
    "C: much CSF": dict(
        fiber_probs=(0.3, 0.3, 0.4), tissue_alpha=(1.5, 1.0, 1.5), pure=(0.05, 0.05, 0.1),
        d_par=(-0.3, 0.4), ratio=(-1.0, 0.4), f_intra=(0.3, 0.3), odi=(-1.5, 0.5), gm_d=(-1.0, 0.3),
        csf_d=2.0e-3, noise_scale=1.0),
}


def c2st(real, synthetic, subject, seed=0):
    from helpers.generators.calibration import _features_of
    from helpers.judges.realism import c2st_crossfit

    f = lambda x: _features_of(x, subject.bvals, subject.bvecs, subject.dti_columns)  # noqa: E731
    return c2st_crossfit(f(real), f(synthetic), seed=seed).accuracy


def draw(hyper, n, subject, sigmas, seed):
    from helpers.generators.calibration import calibrated_signal, draw_parameters
    from helpers.generators.simulation import add_rician_noise

    rng = np.random.default_rng(seed)
    params = draw_parameters(n, rng, hyper)
    clean = calibrated_signal(subject.bvals, subject.bvecs, params)
    return add_rician_noise(clean, hyper.sigmas(sigmas, params.fractions, rng), rng)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/invivo.yaml")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--evals", type=int, default=None, help="fit budget in evaluations (default: the profile's)")
    parser.add_argument("--voxels", type=int, default=4000, help="voxels of each pseudo-scan's fit and judge half")
    parser.add_argument("--tiny", action="store_true", help="dipy's sample, 2 s fits, one known-answer set")
    args = parser.parse_args(argv)

    from helpers.run.batch import quiet_logging
    from helpers.generators.calibration import RECOVERY_TOLERANCE, Hyper, calibrate
    from helpers.config import load_profile
    from helpers.run.pipeline import calibration_budget
    from helpers.generators.simulation import noise_sigmas, simulate

    quiet_logging()
    profile = load_profile("quick" if args.tiny else args.profile)
    from helpers.generators.simulation import CALIBRATION_BUDGET

    budget = {**CALIBRATION_BUDGET, **calibration_budget(profile)}
    if args.evals is not None:
        budget["max_evals"] = args.evals
    if args.tiny:
        from helpers.scan.layouts import load_sample

        subject, label = load_sample(), "sample small_64D"
        budget, args.voxels, sets = {"max_evals": 40, "n_resamples": 1, "resample_evals": 20}, 400, dict(list(SETS.items())[:1])
    else:
        from helpers.config import load_config
        from helpers.scan.layouts import load_subject

        config = load_config(args.config)
        sid = list(config.subjects)[0]
        subject, label = load_subject(config, sid), f"{config.dataset} {sid}"
        sets = SETS
    fit, judge = subject.fit_part(), subject.judge_part()
    sigmas = noise_sigmas(fit, noise="per_voxel")
    print(f"{label}: {fit.n_voxels} fit voxels, {judge.n_voxels} judge voxels; budget {budget}")

    # 1. the scan
    t = time.perf_counter()
    cal = calibrate(fit.attenuation, subject.bvals, subject.bvecs, sigmas=sigmas, dti_columns=subject.dti_columns,
                    blocks=fit.blocks, **budget)
    fit_s = time.perf_counter() - t
    subject.calibration = cal
    n = judge.n_voxels
    from helpers.judges.autoencoder import build_autoencoder, train_autoencoder

    n_train = min(int(profile["n_voxels"]), 20_000 if args.tiny else int(profile["n_voxels"]))
    clean, noisy = simulate(subject, "Calibrated", n_train, 1)
    t = time.perf_counter()
    train_autoencoder(build_autoencoder(subject.n_directions, seed=0), noisy, clean, epochs=int(profile["epochs"]),
                      batch_size=int(profile["batch_size"]), learning_rate=float(profile["learning_rate"]),
                      n_val=min(int(profile["n_val"]), n_train // 5), progress=False)
    train_s = time.perf_counter() - t
    halves = np.random.default_rng(0).permutation(n)
    floor = c2st(judge.attenuation[halves[: n // 2]], judge.attenuation[halves[n // 2:]], subject)
    acc_default = c2st(judge.attenuation, simulate(subject, "FORCE", n, 2)[1], subject)
    acc_cal = c2st(judge.attenuation, simulate(subject, "Calibrated", n, 2)[1], subject)
    print(f"fit {fit_s:.1f} s ({cal.evaluations} evaluations, distance {cal.distance_start:.4f} at FORCE's defaults "
          f"-> {cal.distance:.4f}); training one model ({n_train} voxels, {profile['epochs']} epochs) {train_s:.1f} s")
    print(f"two-sample accuracy on the judge voxels: FORCE {acc_default:.3f}, Calibrated {acc_cal:.3f}, "
          f"two halves of the scan {floor:.3f}")
    print("| quantity | fitted | 95% interval | FORCE default |")
    print("|---|---|---|---|")
    for row in cal.table().itertuples():
        print(f"| {row.quantity} | {row.fitted:.4g} | {row.low:.4g} – {row.high:.4g} | {row._5:.4g} |")

    # 2. known answers
    start = Hyper.force_defaults()
    print("\n| set | quantity | truth | recovered | tolerance | within |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for i, (name, kw) in enumerate(sets.items()):
        truth = Hyper(**kw)
        scan = draw(truth, 2 * args.voxels, subject, sigmas, 10 + i)
        t = time.perf_counter()
        got = calibrate(scan[: args.voxels], subject.bvals, subject.bvecs, sigmas=sigmas,
                        dti_columns=subject.dti_columns, start=start, max_evals=budget["max_evals"], seed=i)
        secs = time.perf_counter() - t
        want, have = truth.summary(), got.hyper.summary()
        for key in want:
            tol = RECOVERY_TOLERANCE.get(key)
            ok = "" if tol is None else ("yes" if abs(have[key] - want[key]) <= tol else "NO")
            print(f"| {name} | {key} | {want[key]:.4g} | {have[key]:.4g} | {'' if tol is None else f'{tol:.3g}'} | {ok} |")
        acc = c2st(scan[args.voxels:], draw(got.hyper, args.voxels, subject, sigmas, 99), subject)
        verdicts.append(f"{name}: fit {secs:.1f} s, distance {got.distance_start:.4f} -> {got.distance:.4f}, "
                        f"two-sample accuracy against the held-out half {acc:.3f}")
    print("\n" + "\n".join(verdicts))

    # 3. outside the family
    for spec in ("RandomWM", "Syn*1.5"):
        scan = simulate(subject, spec, 2 * args.voxels, 7, noise="per_voxel")[1]
        got = calibrate(scan[: args.voxels], subject.bvals, subject.bvecs, sigmas=sigmas,
                        dti_columns=subject.dti_columns, max_evals=budget["max_evals"], seed=3)
        acc = c2st(scan[args.voxels:], draw(got.hyper, args.voxels, subject, sigmas, 98), subject)
        print(f"outside the family, {spec}: distance {got.distance_start:.4f} -> {got.distance:.4f}, "
              f"two-sample accuracy against the held-out half {acc:.3f}")


if __name__ == "__main__":
    main()
