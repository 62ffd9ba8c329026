"""Judges of realism, and the known-answer check that says which of them to trust.

A *judge* ranks the generators on a scan; every score here is lower-is-closer, one value
per (generator, replicate), so every judge gets the same verdict, margin, interval and
rank counts (:func:`helpers.judges.stats.verdict`). The judges:

``reconstruction`` (``signal_mae``, ``fa_mae``, ``angle_deg``)
    The method paper's: each replicate autoencoder of a generator reconstructs the scan;
    the error is the score (:mod:`helpers.judges.metrics`). Tried on known answers it ranks which
    generator's data trains the better denoiser for this scan, a property of the training
    data that hardly depends on the scan judged, not which generator made the scan.
``two_sample`` (``c2st_accuracy``)
    A classifier two-sample test (:func:`helpers.judges.realism.c2st`) between the scan's voxels
    and replicate r's held-out synthetic set, on rotation-invariant features
    (:func:`helpers.features.invariant_features`); 0.5 = indistinguishable.
``code_distance`` (``code_mmd``)
    Each replicate autoencoder encodes the scan and its own generator's held-out set; the
    score is the MMD² between the two clouds of bottleneck codes (:func:`helpers.judges.realism.mmd`,
    standardised, median-heuristic bandwidth, so scale-free across models).
``error_match`` (``error_w1``)
    Each replicate autoencoder's per-voxel reconstruction error on the scan against its
    error on its own generator's held-out set: the Wasserstein-1 distance between the two
    error distributions. A scan like the generator's data is reconstructed as that data
    is, neither better nor worse.

The held-out sets ("judge sets") are drawn per replicate from
:func:`helpers.contract.judge_seed` (never a training seed), with ``noise="per_voxel"``:
a scan's noise is not one SNR, and a classifier tells one-SNR synthetic data from the
same generator's per-voxel-noise pseudo-scan (see :func:`noise_check`) before it sees the
microstructure.

**Known answers** (:func:`known_answer_check`). For every generator T a pseudo-scan is
drawn by T with the subject's selected volumes, its voxel count and per-voxel noise
(Sampled and SampleAndMean from the real subject's pools); every judge scores it exactly
as the real scan (every replicate, the same judge sets, nothing retrained). Mixtures of two
generators' pseudo-scans at weights 0, 0.25, 0.5, 0.75, 1 check that a judge's preference
moves with the truth when the truth is none of the candidates. Which pseudo-scans can be
told apart at all is measured independently of any judge (:func:`separability`). The rule
that makes a judge *validated* is :func:`validate` (and docs/method.md).

This module is numerical: it imports numpy, pandas, scipy and the package's numerical
modules (simulation, realism, metrics, autoencoder, stats), never the configuration, I/O
or the runner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _sps

from helpers.contract import COLUMNS, DEFAULTS, JUDGE_OF, METRICS, judge_seed, method_name, needs_pools, replicate_seeds
from helpers.judges.metrics import voxel_errors
from helpers.features import invariant_features
from helpers.judges.realism import c2st, mmd, wasserstein_1d
from helpers.generators.simulation import simulate, tissue_pools

__all__ = [
    "MIX_WEIGHTS",
    "SEPARABLE_ACCURACY",
    "MONOTONE_RHO",
    "KNOWN_COLUMNS",
    "LADDER_FAMILIES",
    "LADDER_TRUTH",
    "LADDER_RUNGS",
    "LADDER_RHO",
    "ladder_recipe",
    "train_ladder",
    "ladder_check",
    "ScanData",
    "JudgePanel",
    "pseudo_scan",
    "separability",
    "noise_check",
    "known_answers",
    "mixture_preferences",
    "validate",
    "known_answer_check",
    "known_answer_sentence",
    "confusion_table",
]

MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Share of generator A's voxels in the mixed pseudo-scans (the rest are B's)."""

SEPARABLE_ACCURACY = 0.55
"""Two generators' pseudo-scans count as *told apart* when a classifier separates them with
held-out accuracy at least this (and a Holm-corrected binomial p < 0.05): with thousands of
voxels a trivial difference is significant, and a judge cannot be asked to resolve one that
a classifier given both samples outright barely sees."""

MONOTONE_RHO = 0.9
"""A judge's preference over the five mixing weights must rank-correlate with the weight at
least this much (Spearman; 0.9 allows one swap of neighbouring weights)."""

KNOWN_COLUMNS = ("dataset", "subject", "judge", "metric", "truth", "picked", "runner_up",
                 "told_apart", "ci_low", "ci_high", "truth_first", "n", "correct", "acceptable")
"""Columns of ``known_answer.csv``: per judge metric and true generator, what the verdict
procedure named closest on that generator's pseudo-scan (``picked``, ``runner_up``, whether
the margin's 95% interval excludes 0), in how many of ``n`` replicates the truth ranked
first, whether ``picked`` is the truth (``correct``) or a generator the pseudo-scans cannot
tell apart from it (``acceptable``)."""

LADDER_FAMILIES = ("Syn", "FORCE")
"""The built-in families a ladder is built on: the multi-tensor family (Syn's diffusivities)
and FORCE's. Each rung is the family with every diffusivity scaled by s (``Syn*s``)."""

LADDER_TRUTH = 1.2
"""The rung a ladder's pseudo-scan is drawn at; it is never among the candidates."""

LADDER_RUNGS = (0.8, 1.0, 1.15, 1.5, 2.0)
"""The candidate rungs, on both sides of the truth, at distances |s - 1.2| of 0.4, 0.2,
0.05, 0.3 and 0.8: all different, so the order a judge must find is unique."""

LADDER_RHO = 0.9
"""A judge passes a ladder when its scores rank-correlate with the rungs' distance from the
truth at least this much (Spearman; with five rungs, one swap of neighbours gives 0.9)."""

_C2ST_MAX = 2000  # voxels per pseudo-scan in the separability and noise checks
_MMD_N = 600  # codes per sample in the code distance


# ----------------------------------------------------------------------------- per-voxel data


@dataclass
class ScanData:
    """Everything the judges need from one scan, per voxel, so that a mixture of two
    scans is a selection of rows (:meth:`take`, :meth:`join`) and nothing is recomputed.

    Attributes
    ----------
    features : pandas.DataFrame
        n rows of rotation-invariant features.
    codes : dict
        (method, replicate) -> (n, k) bottleneck codes.
    signal_err : dict
        (method, replicate) -> (n,) mean |AE(E) − E| over volumes.
    errors : dict or None
        (method, replicate) -> :func:`helpers.judges.metrics.voxel_errors` dict (signal, FA,
        angle), for the reconstruction judge; None where it is not needed (the real scan,
        whose reconstruction metrics the evaluation already wrote).
    """

    features: pd.DataFrame
    codes: dict
    signal_err: dict
    errors: dict | None = None

    @property
    def n(self):
        return len(self.features)

    def take(self, rows):
        rows = np.asarray(rows)
        pick = lambda d: {k: v[rows] for k, v in d.items()}  # noqa: E731
        errors = None if self.errors is None else {k: pick(v) for k, v in self.errors.items()}
        return ScanData(self.features.iloc[rows].reset_index(drop=True), pick(self.codes), pick(self.signal_err), errors)

    @staticmethod
    def join(a, b):
        cat = lambda x, y: {k: np.concatenate([x[k], y[k]]) for k in x}  # noqa: E731
        errors = None
        if a.errors is not None and b.errors is not None:
            errors = {k: cat(a.errors[k], b.errors[k]) for k in a.errors}
        return ScanData(pd.concat([a.features, b.features], ignore_index=True), cat(a.codes, b.codes),
                        cat(a.signal_err, b.signal_err), errors)


class JudgePanel:
    """Every judge of one subject: its trained models and their held-out judge sets.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
        The real subject (its gradient table, pools and noise).
    models : dict
        (table name, replicate) -> a trained keras autoencoder.
    specs : dict
        Table name -> method spec (built-in name or ``package.module:function``).
    seed, snr, min_pool, wm_fa_min
        The run's settings (as training used them).
    n_judge : int
        Voxels per judge set (and per replicate classifier).

    Notes
    -----
    The judge set of replicate r of generator G is drawn with
    ``judge_seed(seed, G, r, "judge_set")`` and ``noise="per_voxel"``. Generators draw
    from the subject's fit part (pools, noise); ``real`` is its judge part, the only real
    voxels any judge scores.
    """

    def __init__(self, subject, models, specs, *, seed=DEFAULTS["seed"], snr=DEFAULTS["snr"],
                 min_pool=DEFAULTS["min_pool"], wm_fa_min=DEFAULTS["wm_fa_min"], n_judge=2000):
        from helpers.judges.autoencoder import DenseForward

        self.subject, self.specs = subject, dict(specs)
        self.real = subject.judge_part() if hasattr(subject, "judge_part") else subject
        self.models = {key: DenseForward(model) for key, model in models.items()}
        self.methods = list(dict.fromkeys(name for name, _ in self.models))
        self.replicates = sorted({r for _, r in self.models})
        self.seed, self.snr = int(seed), snr
        self.min_pool, self.wm_fa_min = min_pool, wm_fa_min
        n_real = self.real.n_voxels
        self.n_judge = int(min(n_judge, n_real)) if n_real >= 10 else int(n_judge)
        needs = any(needs_pools(self.specs[m]) for m in self.methods)
        self.pools = tissue_pools(subject, min_pool=min_pool, wm_fa_min=wm_fa_min) if needs else None
        self.judge_features, self.judge_codes, self.judge_err = {}, {}, {}
        for key, model in self.models.items():
            name, r = key
            noisy = self.simulate(name, self.n_judge, judge_seed(self.seed, self.specs[name], r, "judge_set"))
            recon, self.judge_codes[key] = model(noisy)
            self.judge_features[key] = self.features(noisy)
            self.judge_err[key] = np.abs(recon - noisy).mean(axis=1)

    # -- data

    def simulate(self, name, n, seed, *, noise="per_voxel"):
        """Noisy voxels of generator ``name`` on the subject's table (pools: the real subject's);
        a name that is not one of the panel's generators is taken as a spec (a ladder's truth)."""
        return simulate(self.subject, self.specs.get(name, name), n, seed, snr=self.snr, noise=noise, pools=self.pools,
                        min_pool=self.min_pool, wm_fa_min=self.wm_fa_min)[1]

    def features(self, attenuation):
        s = self.subject
        return invariant_features(attenuation, s.bvals, s.bvecs, dti_columns=s.dti_columns)

    def scan_data(self, attenuation, *, reconstruction=False):
        """:class:`ScanData` of a scan's voxels ((n, m) attenuation) through every model."""
        attenuation = np.asarray(attenuation, dtype=np.float32)
        codes, signal_err, errors = {}, {}, ({} if reconstruction else None)
        s = self.subject
        fit = None
        if reconstruction:
            from helpers.dti import fit_attenuation

            cols = s.dti_columns
            fit = fit_attenuation(s.bvals[cols], s.bvecs[cols], attenuation[:, cols])
        for key, model in self.models.items():
            recon, codes[key] = model(attenuation)
            signal_err[key] = np.abs(recon - attenuation).mean(axis=1)
            if reconstruction:
                errors[key] = voxel_errors(s.bvals, s.bvecs, attenuation, recon, real_fit=fit, dti_columns=s.dti_columns)
        return ScanData(self.features(attenuation), codes, signal_err, errors)

    # -- scores

    def scores(self, scan, *, methods=None, reconstruction=True, seed=(0,)):
        """Every judge's score of every (method, replicate) on ``scan``, as tidy rows.

        Returns
        -------
        list of (method, replicate, metric, value)
        """
        methods = self.methods if methods is None else methods
        rows = []
        real = scan.features.to_numpy()
        for key in self.models:
            name, r = key
            if name not in methods:
                continue
            key_seed = [*seed, self.methods.index(name), r]
            test = c2st(real, self.judge_features[key].to_numpy(), seed=key_seed + [1])
            rows.append((name, r, "c2st_accuracy", test.accuracy))
            rows.append((name, r, "code_mmd", _code_distance(scan.codes[key], self.judge_codes[key], key_seed + [2])))
            rows.append((name, r, "error_w1", wasserstein_1d(scan.signal_err[key], self.judge_err[key])))
            if reconstruction and scan.errors is not None:
                for metric, values in scan.errors[key].items():
                    v = values[np.isfinite(values)]
                    rows.append((name, r, metric, float(v.mean()) if v.size else np.nan))
        return rows


def _code_distance(scan_codes, set_codes, seed):
    """MMD² between two clouds of codes; NaN when no unit varies (a collapsed model's
    codes carry nothing to compare, and an MMD of 0 would read as a perfect match)."""
    if np.ptp(np.vstack([scan_codes, set_codes]), axis=0).max(initial=0.0) == 0:
        return np.nan
    return mmd(scan_codes, set_codes, permutations=0, max_n=_MMD_N, seed=seed).mmd2


# ----------------------------------------------------------------------------- known answers


def pseudo_scan(panel, truth, *, replicate=0):
    """A scan whose generator is known: ``truth``'s noisy voxels, as many as the subject has
    judge voxels, on its volumes, with its per-voxel noise (pools and noise from the fit
    part), drawn from ``judge_seed(seed, truth, replicate, "pseudo_scan")``."""
    return panel.simulate(truth, panel.real.n_voxels, judge_seed(panel.seed, panel.specs[truth], replicate, "pseudo_scan"))


def separability(panel, scans, *, alpha=0.05):
    """Which generators' pseudo-scans can be told apart at all, judged by no judge.

    A classifier two-sample test between the two pseudo-scans' invariant features (up to
    2,000 voxels each); a pair is ``separable`` when its held-out accuracy is at least
    :data:`SEPARABLE_ACCURACY` and its Holm-corrected binomial p-value below ``alpha``.

    Returns
    -------
    pandas.DataFrame
        ``a, b, accuracy, p, p_holm, separable``, one row per unordered pair.
    """
    from statsmodels.stats.multitest import multipletests

    names = list(scans)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            fa, fb = scans[a].features.to_numpy(), scans[b].features.to_numpy()
            seed = judge_seed(panel.seed, panel.specs[a], 0, "separability") + [i, names.index(b)]
            res = c2st(fa[:_C2ST_MAX], fb[:_C2ST_MAX], seed=seed)
            rows.append({"a": a, "b": b, "accuracy": res.accuracy, "p": res.p})
    out = pd.DataFrame(rows, columns=["a", "b", "accuracy", "p"])
    out["p_holm"] = multipletests(out["p"], method="holm")[1] if len(out) else []
    out["separable"] = (out["accuracy"] >= SEPARABLE_ACCURACY) & (out["p_holm"] < alpha)
    return out


def noise_check(panel, scans):
    """Can a generator's own pseudo-scan (per-voxel noise) be told from its synthetic data?

    For each generator: the classifier two-sample accuracy between its pseudo-scan and a
    synthetic set of the same generator drawn with ``noise="global"`` (the paper's one
    SNR) and with ``noise="per_voxel"`` (the judges' sets). Near 0.5 means the noise model
    matches the scan's; above it, a judge would tell the noise models apart before the
    microstructure.

    Returns
    -------
    pandas.DataFrame
        ``method, synthetic_noise, accuracy, p``.
    """
    rows = []
    for name, scan in scans.items():
        real = scan.features.to_numpy()[:_C2ST_MAX]
        for noise in ("global", "per_voxel"):
            seed = judge_seed(panel.seed, panel.specs[name], 0, "noise_check")
            syn = panel.features(panel.simulate(name, min(len(real), _C2ST_MAX), seed + [int(noise == "global")], noise=noise))
            res = c2st(real, syn.to_numpy(), seed=seed + [7])
            rows.append({"method": name, "synthetic_noise": noise, "accuracy": res.accuracy, "p": res.p})
    return pd.DataFrame(rows, columns=["method", "synthetic_noise", "accuracy", "p"])


def _tidy(rows, *, dataset, subject, scan):
    frame = pd.DataFrame(rows, columns=["method", "replicate", "metric", "value"])
    frame.insert(0, "subject", subject)
    frame.insert(0, "dataset", dataset)
    frame["tissue"] = "all"
    frame["scan"] = scan
    return frame[[*COLUMNS, "scan"]]


def known_answers(scores, separable):
    """Truth x picked, per judge metric, from the pseudo-scans' scores.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores (:data:`helpers.contract.COLUMNS` plus ``scan``, the true generator)
        of every (method, replicate) on every pure pseudo-scan.
    separable : pandas.DataFrame
        :func:`separability` output.

    Returns
    -------
    pandas.DataFrame
        :data:`KNOWN_COLUMNS`. ``picked`` is :func:`helpers.judges.stats.verdict`'s ``best`` on
        that pseudo-scan; ``truth_first`` the replicates in which the truth ranked first
        (ties count as first) of ``n``.
    """
    from helpers.judges.stats import rank_counts, verdict

    apart = _apart(separable)
    rows = []
    for truth, frame in scores.groupby("scan", sort=False):
        table = frame[list(COLUMNS)]
        v = verdict(table)
        ranks = rank_counts(table)
        for rec in v.to_dict("records"):
            r = ranks[(ranks["metric"] == rec["metric"]) & (ranks["method"] == truth) & (ranks["rank"] == 1)]
            picked = rec["best"] if isinstance(rec["best"], str) else ""
            told = bool(np.isfinite(rec["ci_low"]) and rec["ci_low"] > 0)
            rows.append({
                "dataset": rec["dataset"], "subject": frame["subject"].iloc[0], "judge": JUDGE_OF.get(rec["metric"], rec["metric"]),
                "metric": rec["metric"], "truth": truth, "picked": picked,
                "runner_up": rec["runner_up"] if isinstance(rec["runner_up"], str) else "",
                "told_apart": told, "ci_low": rec["ci_low"], "ci_high": rec["ci_high"],
                "truth_first": int(r["count"].iloc[0]) if len(r) else 0, "n": int(r["n"].iloc[0]) if len(r) else 0,
                "correct": picked == truth,
                "acceptable": picked == truth or (picked != "" and frozenset((picked, truth)) not in apart),
            })
    return pd.DataFrame(rows, columns=list(KNOWN_COLUMNS))


def _apart(separable):
    """Set of frozenset pairs that the pseudo-scans tell apart."""
    sel = separable[separable["separable"].astype(bool)]
    return {frozenset((a, b)) for a, b in zip(sel["a"], sel["b"])}


def mixture_preferences(scores, separable):
    """How each judge's preference for A over B moves with A's share of the voxels.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores with columns ``scan`` = ``"A+B@w"`` (mixtures, A's share w; w = 0 and
        1 are the pure pseudo-scans of B and A).
    separable : pandas.DataFrame
        :func:`separability` output; only separable pairs must move.

    Returns
    -------
    pandas.DataFrame
        ``dataset, subject, judge, metric, a, b, separable, weights, preference``
        (preference = mean score of B's replicates − mean of A's at each weight, ';'
        joined; positive prefers A), ``rho`` (Spearman with the weight), ``monotone``
        (rho >= :data:`MONOTONE_RHO`), ``crosses`` (prefers B at w = 0 and A at w = 1),
        ``ok`` (monotone and crosses, or not separable).
    """
    apart = _apart(separable)
    mix = scores[scores["scan"].str.contains("@", regex=False)].copy()
    parts = mix["scan"].str.extract(r"^(?P<a>.+)\+(?P<b>.+)@(?P<w>[0-9.]+)$")
    mix = pd.concat([mix, parts], axis=1)
    mix["w"] = mix["w"].astype(float)
    rows = []
    for (a, b, metric), frame in mix.groupby(["a", "b", "metric"], sort=False):
        means = frame.groupby(["w", "method"])["value"].mean().unstack("method")
        pref = (means[b] - means[a]).sort_index()
        w = pref.index.to_numpy(float)
        p = pref.to_numpy(float)
        finite = np.isfinite(p)
        rho = float(_sps.spearmanr(w[finite], p[finite]).statistic) if finite.sum() >= 3 and np.ptp(p[finite]) > 0 else np.nan
        monotone = bool(np.isfinite(rho) and rho >= MONOTONE_RHO)
        crosses = bool(finite[0] and finite[-1] and p[0] < 0 < p[-1])
        sep = frozenset((a, b)) in apart
        rows.append({
            "dataset": frame["dataset"].iloc[0], "subject": frame["subject"].iloc[0], "judge": JUDGE_OF.get(metric, metric),
            "metric": metric, "a": a, "b": b, "separable": sep, "weights": ";".join(f"{x:g}" for x in w),
            "preference": ";".join(f"{x:.4g}" for x in p), "rho": rho, "monotone": monotone, "crosses": crosses,
            "ok": (monotone and crosses) or not sep,
        })
    return pd.DataFrame(rows, columns=["dataset", "subject", "judge", "metric", "a", "b", "separable", "weights",
                                       "preference", "rho", "monotone", "crosses", "ok"])


def validate(known, mixtures, ladder=None):
    """Which judge metrics pass the known-answer check on one subject.

    The rule (docs/method.md): a judge metric is *validated* when

    1. on every generator's pseudo-scan it names that generator, or one whose
       pseudo-scans cannot be told apart from it (:func:`separability`);
    2. for every pair of generators that can be told apart, its preference moves
       monotonically with the mixing weight and changes sign between the two pure ends
       (:func:`mixture_preferences`); and
    3. on every ladder (:func:`ladder_check`: the truth is none of the candidates) it
       orders the rungs by their distance from the truth.

    With fewer than two generators nothing can be told apart and nothing is validated.
    ``ladder=None`` checks identity and mixtures only (the known-answer check always
    passes its ladder table; a metric with no ladder row there is not validated).

    Returns
    -------
    pandas.DataFrame
        ``dataset, subject, judge, metric, validated, named, acceptable, cases,
        mixtures_ok, mixtures, ladders_ok, ladders, reason``.
    """
    rows = []
    for (ds, sid, metric), frame in known.groupby(["dataset", "subject", "metric"], sort=False):
        mix = mixtures[(mixtures["metric"] == metric) & (mixtures["subject"] == sid) & (mixtures["dataset"] == ds)]
        named, acceptable, cases = int(frame["correct"].sum()), int(frame["acceptable"].sum()), len(frame)
        sep_mix = mix[mix["separable"].astype(bool)]  # empty (one generator): an object column
        mix_ok = int(sep_mix["ok"].sum())
        reasons = []
        if cases < 2:
            reasons.append("one generator: nothing to tell apart")
        wrong = frame[~frame["acceptable"]]
        if len(wrong):
            reasons.append("named " + ", ".join(f"{p or 'nothing'} for {t}" for t, p in zip(wrong["truth"], wrong["picked"])))
        bad = sep_mix[~sep_mix["ok"]]
        if len(bad):
            reasons.append("mixtures not followed: " + ", ".join(f"{a} vs {b}" for a, b in zip(bad["a"], bad["b"])))
        ladders_ok = n_ladders = 0
        if ladder is not None:
            lad = ladder[(ladder["metric"] == metric) & (ladder["subject"] == sid) & (ladder["dataset"] == ds)]
            n_ladders, ladders_ok = len(lad), int(lad["passed"].astype(bool).sum())
            if not n_ladders:
                reasons.append("no ladder was run")
            failed = lad[~lad["passed"].astype(bool)]
            if len(failed):
                reasons.append("ladder not ordered: " + ", ".join(
                    f"{f} (ρ {r:.2f})" if np.isfinite(r) else f"{f} (no order)" for f, r in zip(failed["family"], failed["rho"])))
        rows.append({
            "dataset": ds, "subject": sid, "judge": JUDGE_OF.get(metric, metric), "metric": metric,
            "validated": not reasons, "named": named, "acceptable": acceptable, "cases": cases,
            "mixtures_ok": mix_ok, "mixtures": len(sep_mix), "ladders_ok": ladders_ok, "ladders": n_ladders,
            "reason": "; ".join(reasons),
        })
    return pd.DataFrame(rows, columns=["dataset", "subject", "judge", "metric", "validated", "named", "acceptable",
                                       "cases", "mixtures_ok", "mixtures", "ladders_ok", "ladders", "reason"])


def known_answer_sentence(row):
    """One line on a judge metric's known-answer result, e.g. ``named the true generator in
    1 of 4 known-answer cases on this scan``."""
    text = f"named the true generator in {int(row['named'])} of {int(row['cases'])} known-answer cases on this scan"
    if int(row["acceptable"]) > int(row["named"]):
        text += f" ({int(row['acceptable'])} counting generators the pseudo-scans cannot tell apart)"
    if int(row["mixtures"]):
        text += f"; followed {int(row['mixtures_ok'])} of {int(row['mixtures'])} mixtures"
    if int(row.get("ladders", 0) or 0):
        text += f"; ordered {int(row['ladders_ok'])} of {int(row['ladders'])} ladders"
    return text


@dataclass
class CheckResult:
    """What :func:`known_answer_check` returns (each a DataFrame), and the seconds it took."""

    judges: pd.DataFrame
    scores: pd.DataFrame
    known: pd.DataFrame
    mixtures: pd.DataFrame
    separability: pd.DataFrame
    noise: pd.DataFrame
    validation: pd.DataFrame
    floor: pd.DataFrame = None
    bootstrap: pd.DataFrame = None
    features: pd.DataFrame = None
    ladder: pd.DataFrame = None
    ladder_scores: pd.DataFrame = None
    p_real: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def known_answer_check(panel, *, dataset="", subject="", weights=MIX_WEIGHTS, progress=None, workers=None,
                       ladder_panel=None, ladder_families=LADDER_FAMILIES, n_draws=None):
    """Every judge on the real scan and on known answers, for one subject.

    Parameters
    ----------
    panel : JudgePanel
    dataset, subject : str
        Identifying columns of the tables.
    weights : sequence of float
        Mixing weights (must include 0 and 1).
    progress : callable, optional
        Called with a short text as each stage starts.
    workers : int, optional
        Threads scoring scans at once (default: the cores this process may use). The
        classifiers and kernel sums release the GIL; every score has its own seed, so the
        numbers do not depend on the number of threads.
    ladder_panel : JudgePanel, optional
        The ladder's rungs as generators (:func:`train_ladder`); None runs no ladder, and
        the judges are then validated on identity and mixtures alone (the pipeline always
        gives one).
    ladder_families : sequence of str
        Families whose ladders ``ladder_panel`` holds.
    n_draws : int, optional
        Bootstrap draws of the distance check (:data:`helpers.judges.distance.N_DRAWS`).

    Returns
    -------
    CheckResult
        ``judges``: the real judge voxels' scores (tidy, metrics ``c2st_accuracy``,
        ``code_mmd``, ``error_w1``; the reconstruction metrics are the evaluation's, on
        the same voxels); ``floor``, ``bootstrap``, ``features``, ``p_real``
        (:func:`helpers.judges.distance.distance_check`); ``scores``: every score on every
        pseudo-scan and mixture (tidy plus ``scan``); ``known`` (:func:`known_answers`),
        ``mixtures`` (:func:`mixture_preferences`), ``separability``, ``noise``
        (:func:`noise_check`), ``ladder`` and ``ladder_scores`` (:func:`ladder_check`),
        ``validation`` (:func:`validate`), each with ``dataset`` and ``subject`` where it
        has rows per subject.
    """
    from helpers.judges.distance import N_DRAWS, distance_check

    say = progress or (lambda text: None)
    seconds = {}
    t = time.perf_counter()
    say("judging the real scan's judge voxels, with its floor and a block bootstrap")
    real = panel.scan_data(panel.real.attenuation, reconstruction=True)
    distance = distance_check(panel, real, dataset=dataset, subject=subject,
                              n_draws=N_DRAWS if n_draws is None else int(n_draws), seed=panel.seed)
    judges = distance.scores[~distance.scores["metric"].isin(METRICS)].reset_index(drop=True)
    seconds["real scan"] = time.perf_counter() - t

    t = time.perf_counter()
    say("drawing and judging pseudo-scans")
    scans = {name: panel.scan_data(pseudo_scan(panel, name), reconstruction=True) for name in panel.methods}
    tidy = lambda rows, scan: _tidy(rows, dataset=dataset, subject=subject, scan=scan)  # noqa: E731
    pure = _in_threads(lambda task: tidy(panel.scores(task[1], seed=(1, task[0])), task[2]),
                       [(i, scan, name) for i, (name, scan) in enumerate(scans.items())], workers)
    seconds["pseudo-scans"] = time.perf_counter() - t

    t = time.perf_counter()
    say("mixtures of two generators")
    n = panel.real.n_voxels
    frames, tasks = list(pure), []
    for i, a in enumerate(panel.methods):
        for j, b in enumerate(panel.methods[i + 1:], start=i + 1):
            for w in weights:
                if w in (0.0, 1.0):  # the pure ends: the pseudo-scans' own scores
                    ends = pure[j if w == 0.0 else i]
                    frames.append(ends[ends["method"].isin([a, b])].assign(scan=f"{a}+{b}@{w:g}"))
                else:
                    tasks.append((i, j, a, b, w))

    def mixture(task):
        i, j, a, b, w = task
        k = int(round(w * n))
        mixed = ScanData.join(scans[a].take(np.arange(k)), scans[b].take(np.arange(k, n)))
        return tidy(panel.scores(mixed, methods=[a, b], seed=(2, i, j, int(w * 100))), f"{a}+{b}@{w:g}")

    frames += _in_threads(mixture, tasks, workers)
    scores = pd.concat(frames, ignore_index=True)
    seconds["mixtures"] = time.perf_counter() - t

    t = time.perf_counter()
    say("which pseudo-scans can be told apart; noise models")
    sep = separability(panel, scans)
    noise = noise_check(panel, scans)
    seconds["separability and noise"] = time.perf_counter() - t

    t = time.perf_counter()
    if ladder_panel is not None:
        say("ladders: a pseudo-scan none of the candidates made")
        ladder, ladder_scores = ladder_check(ladder_panel, ladder_families, dataset=dataset, subject=subject,
                                             workers=workers)
    else:
        ladder, ladder_scores = _empty_ladder(), pd.DataFrame(columns=[*COLUMNS, "scan"])
    seconds["ladders"] = time.perf_counter() - t

    pure = scores[~scores["scan"].str.contains("@", regex=False)]
    known = known_answers(pure, sep)
    mixtures = mixture_preferences(scores, sep)
    validation = validate(known, mixtures, ladder if ladder_panel is not None else None)
    for frame in (sep, noise):
        frame.insert(0, "subject", subject)
        frame.insert(0, "dataset", dataset)
    return CheckResult(judges=judges, scores=scores, known=known, mixtures=mixtures, separability=sep,
                       noise=noise, validation=validation, floor=distance.floor, bootstrap=distance.bootstrap,
                       features=distance.features, ladder=ladder, ladder_scores=ladder_scores,
                       p_real=distance.p_real, seconds=seconds)


# ----------------------------------------------------------------------------- ladders

LADDER_COLUMNS = ("dataset", "subject", "judge", "metric", "family", "truth", "rungs", "distances", "scores",
                  "order", "rho", "passed")
"""Columns of ``ladder.csv``: per judge metric and family, the truth's scale, the candidate
rungs, their distances |s - truth|, the judge's mean score of each (';' joined, in rung
order), the rungs as the judge ordered them (closest first), Spearman's rho of score
against distance, and whether rho >= :data:`LADDER_RHO`."""


def _empty_ladder():
    return pd.DataFrame(columns=list(LADDER_COLUMNS))


def ladder_specs(family, rungs=LADDER_RUNGS):
    """The candidate generators of a family's ladder, e.g. ``['Syn*0.8', 'Syn*1', ...]``."""
    return [f"{family}*{s:g}" for s in rungs]


def ladder_recipe(profile):
    """The training recipe of the ladder's models: the profile's batch and learning rate,
    at most 50,000 voxels, 10 epochs and one replicate per rung (the ladder tests the judge
    procedure; its models need to be trained alike, not to the full recipe)."""
    n = int(min(profile["n_voxels"], 50_000))
    return {"n_voxels": n, "n_val": max(1, round(n * profile["n_val"] / profile["n_voxels"])),
            "epochs": int(min(profile["epochs"], 10)), "batch_size": int(profile["batch_size"]),
            "learning_rate": float(profile["learning_rate"]), "replicates": 1}


def train_ladder(subject, families=LADDER_FAMILIES, *, recipe, seed=DEFAULTS["seed"], snr=DEFAULTS["snr"],
                 noise=DEFAULTS["noise"], progress=None):
    """Train the autoencoders of every ladder rung (as step 03 trains a generator's).

    Returns
    -------
    models : dict
        (spec, replicate) -> trained keras model; spec as :func:`ladder_specs`.
    specs : dict
        spec -> spec (the ladder's generators, for a :class:`JudgePanel`).
    """
    from helpers.judges import autoencoder as ae
    from helpers.generators.simulation import simulate

    models, specs = {}, {}
    for family in families:
        for spec in ladder_specs(family):
            specs[spec] = spec
            for r in range(recipe["replicates"]):
                if progress:
                    progress(f"ladder model {spec} r{r}")
                sim_seed, train_seed = replicate_seeds(seed, spec, r)
                clean, noisy = simulate(subject, spec, recipe["n_voxels"], sim_seed, snr=snr, noise=noise)
                net = ae.build_autoencoder(clean.shape[1], seed=train_seed)
                ae.train_autoencoder(net, noisy, clean, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                                     learning_rate=recipe["learning_rate"], n_val=recipe["n_val"], seed=train_seed,
                                     progress=False)
                models[(spec, r)] = net
    return models, specs


def ladder_check(panel, families=LADDER_FAMILIES, *, truth=LADDER_TRUTH, rungs=LADDER_RUNGS, dataset="", subject="",
                 workers=None):
    """Does each judge order candidates by their distance from a truth none of them is?

    For each family a pseudo-scan is drawn at ``family*truth`` (the scan's gradient table,
    judge-voxel count and per-voxel noise); every judge scores the candidate rungs on it as
    it scores generators on the real scan, and its mean score per rung (over replicates)
    is rank-correlated with the rung's distance |s - truth|.

    Parameters
    ----------
    panel : JudgePanel
        Generators: the rungs (:func:`train_ladder`).

    Returns
    -------
    ladder : pandas.DataFrame
        :data:`LADDER_COLUMNS`.
    scores : pandas.DataFrame
        Tidy scores plus ``scan`` (the truth's spec).
    """
    rows, frames = [], []
    tasks = []
    for i, family in enumerate(families):
        truth_spec = f"{family}*{truth:g}"
        noisy = panel.simulate(truth_spec, panel.real.n_voxels, judge_seed(panel.seed, truth_spec, 0, "pseudo_scan"))
        tasks.append((i, family, truth_spec, panel.scan_data(noisy, reconstruction=True)))

    def score(task):
        i, family, truth_spec, scan = task
        candidates = [m for m in ladder_specs(family, rungs) if m in panel.methods]
        return _tidy(panel.scores(scan, methods=candidates, seed=(3, i)), dataset=dataset, subject=subject,
                     scan=truth_spec)

    frames = _in_threads(score, tasks, workers)
    for (i, family, truth_spec, _), frame in zip(tasks, frames):
        scale = {m: s for m, s in zip(ladder_specs(family, rungs), rungs)}
        for metric, sel in frame.groupby("metric", sort=False):
            means = sel.groupby("method", sort=False)["value"].mean()
            present = [m for m in scale if m in means.index]
            s = np.array([scale[m] for m in present])
            v = means[present].to_numpy(float)
            d = np.abs(s - truth)
            ok = np.isfinite(v)
            rho = float(_sps.spearmanr(v[ok], d[ok]).statistic) if ok.sum() >= 4 and np.ptp(v[ok]) > 0 else np.nan
            order = [f"{x:g}" for x, _ in sorted(zip(s[ok], v[ok]), key=lambda t: t[1])]
            rows.append({"dataset": dataset, "subject": subject, "judge": JUDGE_OF.get(metric, metric), "metric": metric,
                         "family": family, "truth": truth, "rungs": ";".join(f"{x:g}" for x in s),
                         "distances": ";".join(f"{x:g}" for x in d), "scores": ";".join(f"{x:.4g}" for x in v),
                         "order": ";".join(order), "rho": rho, "passed": bool(np.isfinite(rho) and rho >= LADDER_RHO - 1e-9)})
    ladder = pd.DataFrame(rows, columns=list(LADDER_COLUMNS))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "scan"])
    return ladder, scores


def _in_threads(func, tasks, workers):
    """``[func(t) for t in tasks]``, computed by up to ``workers`` threads, in order."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= 1 or len(tasks) <= 1:
        return [func(t) for t in tasks]
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, tasks))


def confusion_table(scores):
    """Truth x judged: how often each generator ranked first on each pseudo-scan.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores with ``scan`` (``known_answer_scores.csv``; mixture rows are ignored),
        one or more subjects.

    Returns
    -------
    pandas.DataFrame
        ``dataset, judge, metric, truth, method, first, n``: in ``first`` of the ``n``
        (subject, replicate) units of the truth's pseudo-scans, ``method`` ranked first
        (ties count for each tied method).
    """
    from helpers.judges.stats import rank_counts

    pure = scores[~scores["scan"].astype(str).str.contains("@", regex=False)]
    rows = []
    for truth, frame in pure.groupby("scan", sort=False):
        ranks = rank_counts(frame[list(COLUMNS)])
        first = ranks[ranks["rank"] == 1]
        for rec in first.to_dict("records"):
            rows.append({"dataset": rec["dataset"], "judge": JUDGE_OF.get(rec["metric"], rec["metric"]),
                         "metric": rec["metric"], "truth": truth, "method": rec["method"],
                         "first": int(rec["count"]), "n": int(rec["n"])})
    return pd.DataFrame(rows, columns=["dataset", "judge", "metric", "truth", "method", "first", "n"])

