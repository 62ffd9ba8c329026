"""How far each generator is from the scan: scores against the judge's own real-vs-real
floor, with intervals that resample the scan, and where the differences lie.

A judge's score on its own means little: a two-sample accuracy of 0.72 is far from the
scan only because two halves of the scan read 0.50. So every judge that compares two
samples is also run on two disjoint random halves of the scan's judge voxels,
drawn voxel by voxel (:func:`random_halves`): its *floor*. A generator is *realistic* for a
judge when its score is within :data:`REALISTIC` of that floor.

Intervals resample both sources of randomness (docs/method.md, "Distance"):

- the scan: a block bootstrap of the judge voxels (:func:`helpers.scan.split.block_weights`),
  each draw reweighting the same voxels for every generator and replicate, so a margin
  between two generators is paired;
- the generators: each draw resamples the replicate models (and reweights each judge
  set's synthetic voxels, Poisson(1) weights).

No classifier is refitted in a draw: the cross-fitted two-sample test
(:func:`helpers.judges.realism.c2st_crossfit`) gives every voxel's held-out correctness, and a
draw is a weighted mean of it. More replicates shrink only the generators' share of the
interval; the scan's share stays.

Where a generator differs: per rotation-invariant feature, the Kolmogorov-Smirnov
distance and the medians (:func:`helpers.judges.realism.feature_differences`), and per voxel,
the classifier's held-out probability that a real voxel is real (1: the classifier is
sure it is not synthetic, so the generator makes nothing like it).

This module is numerical: it imports numpy, pandas, scipy and the package's numerical
modules, never the configuration, I/O or the runner.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.judges.realism import (
    c2st_crossfit,
    feature_differences,
    kernel_matrix,
    weighted_mmd2,
    weighted_wasserstein,
)
from helpers.scan.split import BLOCK, block_ids, block_weights

__all__ = [
    "FLOOR_METRICS",
    "REALISTIC",
    "N_DRAWS",
    "DistanceResult",
    "distance_check",
    "realistic",
    "realistic_rule",
    "random_halves",
]

FLOOR_METRICS = ("c2st_accuracy", "code_mmd", "error_w1")
"""The judge metrics that compare two samples, and so have a real-vs-real floor. The
reconstruction errors are not distances between two samples: they have none."""

REALISTIC = {"c2st_accuracy": ("above", 0.05), "code_mmd": ("within", 0.975), "error_w1": ("times", 2.0)}
"""How close to its floor a score must be to call a generator realistic: the two-sample
accuracy at most 0.05 above the floor (the classifier tells it from the scan in at most 5
voxels in 100 more than it tells two halves of the scan apart; the same effect size as
:data:`helpers.judges.panel.SEPARABLE_ACCURACY`); the code distance (an unbiased MMD², about 0
and often below it for two samples of one distribution, so no ratio of it means anything)
at most the floor's own 97.5th bootstrap percentile; the error match at most twice the
distance between the two halves."""

N_DRAWS = 200
"""Bootstrap draws per subject."""

_MAX_CODES = 500  # codes per sample in the code distance (each draw is a kernel product)


def random_halves(n, seed):
    """Two random halves of ``n`` voxels ((n,) bool, True for half A; sizes differ by at
    most one).

    The floor compares two samples of the scan's own voxel distribution, as an ideal
    generator's judge set would be one: so the halves are drawn voxel by voxel, not by
    blocks (two regions of a scan differ in tissue make-up, which is not the question).
    The blocks carry the uncertainty instead (:func:`helpers.scan.split.block_weights`).
    """
    a = np.zeros(int(n), bool)
    a[np.random.default_rng(seed).permutation(int(n))[: int(n) // 2]] = True
    return a


def realistic(metric, score, floor, floor_high=np.nan):
    """Whether ``score`` is within :data:`REALISTIC` of ``floor`` (NaN where there is no
    rule or no finite values; ``floor_high``, the floor's upper bootstrap bound, is needed
    by the code distance's rule).

    >>> realistic("c2st_accuracy", 0.55, 0.50), realistic("c2st_accuracy", 0.72, 0.50)
    (True, False)
    >>> realistic("error_w1", 0.003, 0.002), realistic("code_mmd", 0.0002, -0.0006, 0.0009)
    (True, True)
    """
    rule = REALISTIC.get(metric)
    if rule is None or not (np.isfinite(score) and np.isfinite(floor)):
        return np.nan
    kind, value = rule
    if kind == "above":
        return bool(score - floor <= value + 1e-9)
    if kind == "within":
        return bool(score <= floor_high + 1e-12) if np.isfinite(floor_high) else np.nan
    return bool(score <= value * max(floor, 0.0) + 1e-12)


def realistic_rule(metric):
    """The rule in words, e.g. ``within 0.05 of the floor``; "" without one."""
    rule = REALISTIC.get(metric)
    if rule is None:
        return ""
    kind, value = rule
    if kind == "within":
        return "at most the floor's 97.5th bootstrap percentile"
    return f"at most {value:g} above the floor" if kind == "above" else f"at most {value:g}x the floor"


@dataclass
class DistanceResult:
    """What :func:`distance_check` returns.

    Attributes
    ----------
    scores : pandas.DataFrame
        Tidy (:data:`helpers.contract.COLUMNS`): every judge's score per (method,
        replicate) on the real judge voxels (the two-sample accuracy is the cross-fitted
        one).
    floor : pandas.DataFrame
        The same columns: the floor of each metric in :data:`FLOOR_METRICS` per (method,
        replicate) (the two-sample floor does not depend on the method: its rows repeat).
    bootstrap : pandas.DataFrame
        ``dataset, subject, method, metric, draw, score, floor``: each draw's mean over
        resampled replicates on the reweighted judge voxels.
    features : pandas.DataFrame
        ``dataset, subject, method, feature, ks, ks_p, median_real, median_synthetic,
        rank``: the real judge voxels against the generator's judge sets (all replicates).
    p_real : dict
        Method -> (n_judge,) mean over replicates of each real judge voxel's held-out
        probability of "real".
    """

    scores: pd.DataFrame
    floor: pd.DataFrame
    bootstrap: pd.DataFrame
    features: pd.DataFrame
    p_real: dict


def _blocks_of(part):
    blocks = getattr(part, "blocks", None)
    if blocks is not None:
        return np.asarray(blocks)
    return block_ids(part.indices, part.shape, block=BLOCK)[0]


def _subsample(n, k, rng):
    return np.sort(rng.choice(n, k, replace=False)) if n > k else np.arange(n)


def distance_check(panel, scan, *, dataset="", subject="", n_draws=N_DRAWS, seed=0):
    """Every judge on the real judge voxels, its floor, a block bootstrap and the
    per-feature and per-voxel differences.

    Parameters
    ----------
    panel : helpers.judges.panel.JudgePanel
        Its judge sets and models; ``panel.real`` is the judge part of the subject.
    scan : helpers.judges.panel.ScanData
        The real judge voxels through every model, with reconstruction errors.
    dataset, subject : str
    n_draws : int
        Bootstrap draws.
    seed : int or sequence of int

    Returns
    -------
    DistanceResult
    """
    from helpers.contract import COLUMNS
    from helpers.judges.realism import wasserstein_1d

    real = panel.real
    blocks = _blocks_of(real)
    n = scan.n
    if len(blocks) != n:
        raise ValueError(f"the scan has {n} voxels but the judge part has {len(blocks)}")
    rng = np.random.default_rng([*np.atleast_1d(seed), 19])
    weights = block_weights(blocks, n_draws, rng)  # (B, n), shared by every generator
    feats = scan.features.to_numpy()
    keys = list(panel.models)
    replicates = sorted({r for _, r in keys})

    halves = {r: random_halves(n, [*np.atleast_1d(seed), 23, r]) if n >= 8 else None for r in replicates}

    def poisson(k):
        return rng.poisson(1.0, size=(n_draws, k)).astype(float)

    score_rows, floor_rows, draws, floor_draws, p_real = [], [], {}, {}, {}
    # the two-sample floor: per replicate, one split of the scan into halves
    c2st_floor = {}
    for r in replicates:
        a = halves[r]
        if a is None or a.sum() < 4 or (~a).sum() < 4:
            continue
        ia, ib = np.flatnonzero(a), np.flatnonzero(~a)
        cf = c2st_crossfit(feats[ia], feats[ib], seed=[*np.atleast_1d(seed), 29, r])
        rows_a, rows_b = ia[cf.real_rows], ib[cf.synthetic_rows]
        correct = np.r_[cf.real_correct, cf.synthetic_correct]
        w = weights[:, np.r_[rows_a, rows_b]]
        c2st_floor[r] = (cf.accuracy, (w * correct).sum(axis=1) / w.sum(axis=1))

    for key in keys:
        name, r = key
        key_seed = [*np.atleast_1d(seed), panel.methods.index(name), r]
        values, boot, fl, fl_boot = {}, {}, {}, {}
        # two-sample accuracy, cross-fitted: every real voxel scored by a model that did not see it
        cf = c2st_crossfit(feats, panel.judge_features[key].to_numpy(), seed=key_seed + [1])
        w_real = weights[:, cf.real_rows]
        v = poisson(len(cf.synthetic_correct))
        values["c2st_accuracy"] = cf.accuracy
        boot["c2st_accuracy"] = ((w_real * cf.real_correct).sum(axis=1) + (v * cf.synthetic_correct).sum(axis=1)) / (
            w_real.sum(axis=1) + v.sum(axis=1))
        p_real.setdefault(name, []).append(cf.p_real)
        if r in c2st_floor:
            fl["c2st_accuracy"], fl_boot["c2st_accuracy"] = c2st_floor[r]

        # the code distance: real codes against the judge set's codes
        sub = np.random.default_rng(key_seed + [2])
        ri = _subsample(n, _MAX_CODES, sub)
        si = _subsample(len(panel.judge_codes[key]), _MAX_CODES, sub)
        codes = scan.codes[key]
        if np.ptp(np.vstack([codes[ri], panel.judge_codes[key][si]]), axis=0).max(initial=0.0) > 0:
            K, _ = kernel_matrix(codes[ri], panel.judge_codes[key][si])
            W = np.vstack([weights[:, ri].T, poisson(len(si)).T])
            values["code_mmd"] = weighted_mmd2(K, len(ri), np.ones(len(ri) + len(si)))
            boot["code_mmd"] = weighted_mmd2(K, len(ri), W)
            if halves[r] is not None:
                ia = _subsample_rows(np.flatnonzero(halves[r]), _MAX_CODES, sub)
                ib = _subsample_rows(np.flatnonzero(~halves[r]), _MAX_CODES, sub)
                Kf, _ = kernel_matrix(codes[ia], codes[ib])
                fl["code_mmd"] = weighted_mmd2(Kf, len(ia), np.ones(len(ia) + len(ib)))
                fl_boot["code_mmd"] = weighted_mmd2(Kf, len(ia), weights[:, np.r_[ia, ib]].T)
        else:  # a collapsed model's codes carry nothing to compare
            values["code_mmd"], boot["code_mmd"] = np.nan, np.full(n_draws, np.nan)

        # the error match: the scan's reconstruction errors against the judge set's
        err, set_err = scan.signal_err[key], panel.judge_err[key]
        values["error_w1"] = wasserstein_1d(err, set_err)
        v = poisson(len(set_err))
        boot["error_w1"] = np.array([weighted_wasserstein(err, set_err, weights[b], v[b]) for b in range(n_draws)])
        if halves[r] is not None:
            a = halves[r]
            fl["error_w1"] = wasserstein_1d(err[a], err[~a])
            fl_boot["error_w1"] = np.array([weighted_wasserstein(err[a], err[~a], weights[b, a], weights[b, ~a])
                                            for b in range(n_draws)])

        # the reconstruction errors (the paper's judge): weighted means over the voxels
        for metric, per_voxel in (scan.errors or {}).get(key, {}).items():
            ok = np.isfinite(per_voxel)
            values[metric] = float(per_voxel[ok].mean()) if ok.any() else np.nan
            wv = weights[:, ok]
            with np.errstate(invalid="ignore", divide="ignore"):
                boot[metric] = (wv * per_voxel[ok]).sum(axis=1) / wv.sum(axis=1)

        score_rows += [(dataset, subject, name, r, m, "all", float(x)) for m, x in values.items()]
        floor_rows += [(dataset, subject, name, r, m, "all", float(x)) for m, x in fl.items()]
        draws[key], floor_draws[key] = boot, fl_boot

    bootstrap = _resample_replicates(panel.methods, replicates, draws, floor_draws, n_draws, rng,
                                     dataset=dataset, subject=subject)
    features = []
    for name in panel.methods:
        synthetic = pd.concat([panel.judge_features[k] for k in keys if k[0] == name], ignore_index=True)
        diff = feature_differences(scan.features, synthetic)
        diff.insert(0, "method", name)
        features.append(diff)
    features = pd.concat(features, ignore_index=True) if features else pd.DataFrame()
    features.insert(0, "subject", subject)
    features.insert(0, "dataset", dataset)
    return DistanceResult(
        scores=pd.DataFrame(score_rows, columns=list(COLUMNS)),
        floor=pd.DataFrame(floor_rows, columns=list(COLUMNS)),
        bootstrap=bootstrap,
        features=features,
        p_real={name: np.mean(v, axis=0) for name, v in p_real.items()},
    )


def _subsample_rows(rows, k, rng):
    return rows[_subsample(len(rows), k, rng)]


def _resample_replicates(methods, replicates, draws, floor_draws, n_draws, rng, *, dataset, subject):
    """Per method and metric, each draw's mean over replicates drawn with replacement."""
    rows = []
    for name in methods:
        reps = [r for r in replicates if (name, r) in draws]
        if not reps:
            continue
        pick = rng.integers(len(reps), size=(n_draws, len(reps)))
        metrics = list(dict.fromkeys(m for r in reps for m in draws[(name, r)]))
        for metric in metrics:
            score = np.stack([draws[(name, r)].get(metric, np.full(n_draws, np.nan)) for r in reps], axis=1)
            floor = np.stack([floor_draws[(name, r)].get(metric, np.full(n_draws, np.nan)) for r in reps], axis=1)
            take = lambda a: np.take_along_axis(a, pick, axis=1)  # noqa: E731
            with warnings.catch_warnings():  # a draw where every replicate is NaN stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                s = np.nanmean(take(score), axis=1) if np.isfinite(score).any() else np.full(n_draws, np.nan)
                f = np.nanmean(take(floor), axis=1) if np.isfinite(floor).any() else np.full(n_draws, np.nan)
            rows.append(pd.DataFrame({"dataset": dataset, "subject": subject, "method": name, "metric": metric,
                                      "draw": np.arange(n_draws), "score": s, "floor": f}))
    cols = ["dataset", "subject", "method", "metric", "draw", "score", "floor"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)
