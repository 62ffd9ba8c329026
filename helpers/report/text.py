"""The words of the results report: a verdict first, a compact statistics table, maps.

:func:`verdict_markdown` turns the verdict table (:func:`helpers.judges.stats.verdict`) into the
Markdown the summary report opens with: per dataset and metric, the closest generator,
its margin over the next with a 95% confidence interval, how often it ranked first, and
the noise floor beside signal MAE. What a reader must know to weigh it (a quick profile,
skipped methods, collapsed models, tiny tissue pools) comes right after; the caveats come
once, at the end. :func:`stats_display` shortens the pairwise tests to what a reader reads;
:func:`distance_display`, :func:`top_features`, :func:`feature_table`, :func:`ladder_display`
and :func:`validation_display` do the same for the distance-first tables, and
:func:`p_real_maps` reads the classifier's per-voxel maps.

Labels come from :mod:`helpers.contract`; this module imports no figure code.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from helpers.contract import DEFAULTS, METRIC_LABELS, method_name
from helpers.io import load_json
from helpers.judges.stats import MIN_SUBJECTS, check_table

__all__ = ["verdict_markdown", "stats_display", "error_map_volumes", "metric_name", "verdict_head",
           "told_apart", "judge_title", "findings_markdown", "summary_table", "closest_generators",
           "distance_display", "top_features", "feature_table", "ladder_display", "validation_display",
           "p_real_maps", "figure_caption", "first_subjects", "csv_links", "FIGURE_CAPTIONS", "distance_phrase", "headline_lines", "verdict_lines",
           "compact_lines", "VERDICT_COLUMNS", "STATS_COLUMNS"]

VERDICT_COLUMNS = ("dataset", "metric", "best", "runner_up", "best_mean", "runner_mean",
                   "margin", "ci_low", "ci_high", "level", "n_units", "rank_held", "rank_n",
                   "floor", "ratio_to_floor")
"""Columns of the verdict table (:func:`helpers.judges.stats.verdict`)."""

STATS_COLUMNS = ("dataset", "metric", "method_a", "method_b", "test", "mean_diff", "ci_low",
                 "ci_high", "p_holm", "stars", "held", "n_compared")
"""Columns of the pairwise tests (:func:`helpers.judges.stats.compare_methods`) this module reads."""

_QUICK = "quick"


def metric_name(metric):
    """A metric's name in prose: its label without the unit, e.g. ``"angular deviation"``.

    >>> metric_name("angle_deg"), metric_name("signal_mae"), metric_name("other")
    ('angular deviation', 'signal MAE', 'other')
    """
    return METRIC_LABELS.get(metric, metric).split(" (")[0]


def verdict_markdown(verdict, *, profile, n_subjects, skipped=None, collapsed=None,
                     tiny_pools=None, approximate_tissue=(), synthetic=(),
                     realism_agreement=None, verdict_without_collapsed=None, generator_notes=()):
    """The report's opening: which generator is closest, by how much, how sure.

    Parameters
    ----------
    verdict : pandas.DataFrame
        One row per (dataset, metric), columns :data:`VERDICT_COLUMNS`; ``margin`` is
        ``runner_mean - best_mean`` and ``ci_low, ci_high`` its 95% interval across
        ``n_units`` units of ``level`` (``"subject"`` or ``"replicate"``); ``rank_held``
        of ``rank_n`` units ranked ``best`` first; ``floor``/``ratio_to_floor`` are NaN
        except for signal MAE.
    profile : str or dict
        The profile name (``"quick"``, ``"paper"``), or the profile dict with ``name``.
    n_subjects : int or dict of str to int
        Subjects per dataset (one number for every dataset).
    skipped : dict or pandas.DataFrame, optional
        Methods a scan could not support: ``{method: reason}``, ``{subject: {method:
        reason}}``, or a table with ``method, reason`` (and optionally ``dataset,
        subject``).
    collapsed : pandas.DataFrame, optional
        Collapsed replicate models: ``dataset, subject, method, replicate`` and
        optionally ``ratio`` (its validation loss over its method's median).
    tiny_pools : str, list of str, dict or pandas.DataFrame, optional
        Tissue pools with fewer than ``min_pool`` voxels, as sentences (a dict maps a
        subject to its sentence(s); a table's rows are joined ``column: value``).
    approximate_tissue : iterable of str, optional
        Subjects whose tissue maps are approximate (DTI thresholds).
    synthetic : iterable of str, optional
        Subjects that are synthetic phantoms, not scans.
    realism_agreement : str, dict or pandas.DataFrame, optional
        Whether the second judge agrees: a sentence, ``{dataset: sentence}``, or a table
        with ``dataset`` and ``agree`` (bool) and optionally ``note``.
    verdict_without_collapsed : pandas.DataFrame, optional
        The verdict recomputed without the collapsed models; the text says whether the
        closest generator changes.
    generator_notes : iterable of str, optional
        One sentence per generator whose data depends on a file or the subject: how many
        unique voxels a ``library:PATH`` held, SubjectFORCE's ranges.

    Returns
    -------
    str
        Markdown. A quick profile opens with a bold line saying it is a smoke test of the
        pipeline, not a finding. A judged verdict (with ``validated``, and the distance
        columns of :func:`helpers.run.pipeline.with_distance`) opens each dataset with its
        headline in bold (:func:`headline_lines`), e.g. ``**No candidate is
        realistic for this scan: the closest, Sampled, is told from it in 72% of voxels
        (two halves of the scan: 50%).**``; each judge's line then gives the closest
        generator's score with its interval, the real-vs-real floor and whether it is
        realistic, and where validated judges name different generators one line says so
        and shows each judge's pick. Otherwise per dataset one line per metric, e.g.
        ``**Closest: Sampled** on angular deviation — 4.6° vs 5.5° (SampleAndMean),
        margin 0.9° [95% CI -1.1, 2.9], lowest in 4/5 replicates.`` followed by whether
        the interval excludes 0. Skipped methods, collapsed models and tiny pools are
        named after the verdicts; caveats come once, at the end.
    """
    check_table(verdict, VERDICT_COLUMNS, "verdict")
    name = profile.get("name", "") if isinstance(profile, dict) else str(profile)
    lines = []
    if name == _QUICK:
        lines += ["**Quick profile: this is a smoke test of the pipeline, not a finding.** "
                  "Few voxels, few epochs and few replicates only show that every step "
                  "runs; run the paper profile before reading anything into the numbers.", ""]
    elif name == "demo":
        lines += ["Profile: **demo** — the paper's recipe with 30 epochs instead of 50 and 3 replicates "
                  "instead of 5 (what `make run` uses to stay within 10 minutes); the reconstruction "
                  "errors are not the paper's recipe, and the intervals are wider.", ""]
    else:
        lines += [f"Profile: **{name}**.", ""]
    datasets = list(pd.unique(verdict["dataset"]))
    agreement = _agreement(realism_agreement, datasets)
    judged = "validated" in verdict.columns
    for dataset in datasets:
        n = _n_for(n_subjects, dataset)
        lines.append(f"### {dataset}: {n} subject{'s' if n != 1 else ''}")
        lines.append("")
        rows = verdict[verdict["dataset"] == dataset]
        if judged:
            lines += _headline(rows)
            lines += _judged_lines(rows)
        else:
            for row in rows.itertuples(index=False):
                lines.append(f"- {_verdict_line(row)} {_how_sure(row)}")
        if dataset in agreement:
            lines.append(f"- Second judge (two-sample test): {agreement[dataset]}")
        lines.append("")
    lines += _skipped_lines(skipped)
    lines += _collapsed_lines(collapsed, verdict, verdict_without_collapsed)
    lines += _pool_lines(tiny_pools)
    generator_notes = list(generator_notes or ())
    if generator_notes:
        lines += ["**Generators drawn from files or from the subject:**"] + [f"- {x}" for x in generator_notes] + [""]
    resampled = set(verdict.loc[verdict["level"] == "bootstrap", "dataset"])
    lines += _caveat_lines(datasets, n_subjects, approximate_tissue, synthetic, bootstrap=resampled)
    return "\n".join(lines).rstrip() + "\n"


def stats_display(stats, *, tests=None):
    """The pairwise tests as a compact table for the report.

    Parameters
    ----------
    stats : pandas.DataFrame
        :func:`helpers.judges.stats.compare_methods` output (columns :data:`STATS_COLUMNS`).
    tests : sequence of str, optional
        Keep only these tests (e.g. ``["paired_t", "welch_t"]``).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, metric, pair, test, mean diff [95% CI], Holm p, stars, held``,
        numbers formatted as text: ``pair`` is ``"A vs B"``, the difference is A − B
        (negative: A closer), ``held`` is ``"n/N"`` units where A < B. No per-row caveats:
        they belong once under the table.
    """
    check_table(stats, STATS_COLUMNS, "stats")
    s = stats if tests is None else stats[stats["test"].isin(list(tests))]
    out = pd.DataFrame({
        "dataset": s["dataset"].to_numpy(),
        "metric": [metric_name(m) for m in s["metric"]],
        "pair": [f"{a} vs {b}" for a, b in zip(s["method_a"], s["method_b"])],
        "test": s["test"].to_numpy(),
        "mean diff [95% CI]": [
            f"{_num(d, m)} [{_num(lo, m)}, {_num(hi, m)}]" if _finite(d) else "–"
            for d, lo, hi, m in zip(s["mean_diff"], s["ci_low"], s["ci_high"], s["metric"])],
        "Holm p": [f"{float(p):.2g}" if _finite(p) else "–" for p in s["p_holm"]],
        "stars": [x if isinstance(x, str) else "" for x in s["stars"]],
        "held": [f"{int(h)}/{int(n)}" if _finite(h) and _finite(n) else "–"
                 for h, n in zip(s["held"], s["n_compared"])],
    })
    return out.reset_index(drop=True)


def error_map_volumes(subject_dir, methods, metric):
    """Method name -> 3-D per-voxel error map (NaN outside the brain), the mean over
    replicates, read from ``metrics/maps/<name>_<metric>.nii.gz``.

    ``methods`` may be names or specs (``package.module:function``). A method without a
    map (skipped for this subject) is left out; none at all is a ``ValueError``.
    """
    maps = Path(subject_dir) / "metrics" / "maps"
    out = {}
    for spec in methods:
        name = method_name(spec)
        path = maps / f"{name}_{metric}.nii.gz"
        if path.is_file():
            out[name] = np.asarray(nib.load(path).dataobj, dtype=float)
    if not out:
        names = [method_name(m) for m in methods]
        raise ValueError(f"{maps}: no {metric!r} map for any of {names}")
    return out


# --------------------------------------------------------------------------- distance tables


def summary_table(folder, name):
    """``<folder>/<name>.csv`` (subject and dataset as text), or None where the file is
    absent or has no rows: a summary written before the table existed."""
    path = Path(folder) / f"{name}.csv"
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"subject": str, "dataset": str})
    except pd.errors.EmptyDataError:
        return None
    return table if len(table) else None


def closest_generators(verdict):
    """Dataset -> the generator the verdict names closest: the best of the headline's row
    (the first validated judge with a floor), else of the first validated judge, else of
    the two-sample classifier (whose per-voxel maps the report shows), else the first row."""
    out = {}
    for ds, rows in verdict.groupby("dataset", sort=False):
        ok = rows["validated"].astype(bool) if "validated" in rows.columns else pd.Series(False, index=rows.index)
        floor = rows["realistic"].astype(str).isin(["True", "False"]) if "realistic" in rows.columns else ok & False
        for pick in (rows[ok & floor], rows[ok], rows[rows["metric"] == "c2st_accuracy"], rows):
            if len(pick):
                out[ds] = pick["best"].iloc[0]
                break
    return out


def _appearance(values):
    """Each value's rank by first appearance (datasets and subjects keep the run's order)."""
    first = {v: i for i, v in enumerate(pd.unique(values))}
    return values.map(first)


def _yes_no(x):
    return {"True": "yes", "False": "no"}.get(str(x), "–")


def distance_display(distances):
    """Every generator's distance from the scan, per dataset and judge, closest first.

    Parameters
    ----------
    distances : pandas.DataFrame
        ``distances.csv`` (:func:`helpers.run.pipeline.distance_table`): ``dataset, metric,
        method, score, score_low, score_high, real_vs_real, realistic``.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, judge, generator, score [95% CI], two halves of the scan,
        realistic`` as text: the floor is the same judge on two halves of the scan's judge
        voxels ("–" for the reconstruction errors, which have none).
    """
    check_table(distances, ("dataset", "metric", "method", "score", "score_low", "score_high", "real_vs_real",
                            "realistic"), "distances")
    # judges with a floor first (the distances proper), each in the table's order, closest first
    floored = set(distances.loc[pd.to_numeric(distances["real_vs_real"], errors="coerce").notna(), "metric"])
    order = {m: (m not in floored, i) for i, m in enumerate(pd.unique(distances["metric"]))}
    d = distances.assign(_d=_appearance(distances["dataset"]), _m=distances["metric"].map(order)).sort_values(
        ["_d", "_m", "score"], kind="stable")
    interval = [f"{_num(v, m)} [{_num(lo, m)}, {_num(hi, m)}]" if _finite(lo) and _finite(hi) else _num(v, m)
                for v, lo, hi, m in zip(d["score"], d["score_low"], d["score_high"], d["metric"])]
    return pd.DataFrame({
        "dataset": d["dataset"].to_numpy(),
        "judge": [judge_title({"metric": m}) for m in d["metric"]],
        "generator": d["method"].to_numpy(),
        "score [95% CI]": interval,
        "two halves of the scan": [_num(f, m) for f, m in zip(d["real_vs_real"], d["metric"])],
        "realistic": [_yes_no(x) for x in d["realistic"]],
    })


_FEATURE_COLUMNS = ("dataset", "subject", "method", "feature", "ks", "median_real", "median_synthetic", "rank")


def calibration_display(subject_dirs):
    """Calibrated's fitted hyperparameters per subject, with their intervals, beside FORCE's
    defaults; and, with more than one subject, their spread across subjects.

    Parameters
    ----------
    subject_dirs : sequence of path
        Subject folders; those without ``calibration.json`` are left out.

    Returns
    -------
    per_subject, spread : pandas.DataFrame or None
        ``dataset, subject, quantity, fitted, 95% interval, FORCE default``; and per
        quantity the median, min and max over subjects (None with fewer than two).
    """
    from helpers.generators.calibration import Calibration

    rows = []
    for folder in map(Path, subject_dirs):
        path = folder / "calibration.json"
        if not path.is_file():
            continue
        table = Calibration.from_dict(load_json(path)).table()
        for r in table.itertuples(index=False):
            interval = "–" if not np.isfinite(r.low) else f"{r.low:.3g} – {r.high:.3g}"
            rows.append({"dataset": folder.parent.name, "subject": folder.name, "quantity": r.quantity,
                         "fitted": float(r.fitted), "95% interval": interval, "FORCE default": float(r[4])})
    if not rows:
        return None, None
    per_subject = pd.DataFrame(rows)
    spread = None
    if per_subject["subject"].nunique() > 1:
        spread = per_subject.groupby(["dataset", "quantity"], sort=False)["fitted"].agg(["median", "min", "max"]).reset_index()
    return per_subject, spread


def top_features(features, closest, *, n=5):
    """The ``n`` features that differ most between each subject's scan and its dataset's
    closest generator (largest Kolmogorov-Smirnov distance first).

    Parameters
    ----------
    features : pandas.DataFrame
        ``features.csv`` (:func:`helpers.judges.realism.feature_differences` per subject and
        generator): ``dataset, subject, method, feature, ks, median_real,
        median_synthetic, rank``.
    closest : dict of str to str
        Dataset -> generator (:func:`closest_generators`).
    n : int
        Features per subject.

    Returns
    -------
    pandas.DataFrame
        ``dataset, subject, generator, feature, KS, median (scan), median (generator)``.
    """
    check_table(features, _FEATURE_COLUMNS, "features")
    keep = features["method"] == features["dataset"].astype(str).map(closest)
    f = features[keep & (features["rank"] <= n)]
    f = f.assign(_d=_appearance(f["dataset"]), _s=_appearance(f["subject"])).sort_values(
        ["_d", "_s", "rank"], kind="stable")
    return pd.DataFrame({
        "dataset": f["dataset"].to_numpy(), "subject": f["subject"].to_numpy(), "generator": f["method"].to_numpy(),
        "feature": f["feature"].to_numpy(), "KS": f["ks"].round(3).to_numpy(),
        "median (scan)": [f"{v:.3g}" for v in f["median_real"]],
        "median (generator)": [f"{v:.3g}" for v in f["median_synthetic"]],
    }).reset_index(drop=True)


def feature_table(features):
    """Every feature's Kolmogorov-Smirnov distance per generator: index ``dataset,
    subject, feature`` (the features that differ most across generators first), one
    column per generator, values to 3 decimals."""
    check_table(features, _FEATURE_COLUMNS, "features")
    wide = features.pivot_table(index=["dataset", "subject", "feature"], columns="method", values="ks",
                                aggfunc="first", sort=False)
    wide = wide[list(pd.unique(features["method"]))]
    mean = wide.mean(axis=1).rename("_mean").reset_index()
    mean = mean.assign(_d=_appearance(mean["dataset"]), _s=_appearance(mean["subject"]))
    order = mean.sort_values(["_d", "_s", "_mean"], ascending=[True, True, False], kind="stable")
    wide = wide.loc[list(zip(order["dataset"], order["subject"], order["feature"]))]
    wide.columns.name = None
    return wide.round(3)


def ladder_display(ladder):
    """The ladders as text: ``dataset, subject, judge, family, truth (scale), judge's order
    (closest first), rho, passed``. A family's rungs are one generator with every
    diffusivity scaled (:func:`helpers.judges.panel.ladder_specs`); the order is the rungs'
    scales as the judge ranked them, and a ladder passes when Spearman's rho of score
    against distance from the truth is high enough (:data:`helpers.judges.panel.LADDER_RHO`)."""
    check_table(ladder, ("dataset", "subject", "metric", "family", "truth", "order", "rho", "passed"), "ladder")
    return pd.DataFrame({
        "dataset": ladder["dataset"].to_numpy(), "subject": ladder["subject"].to_numpy(),
        "judge": [judge_title(r) for r in ladder.to_dict("records")],
        "family": ladder["family"].to_numpy(), "truth (scale)": [f"{x:g}" if _finite(x) else str(x)
                                                                 for x in ladder["truth"]],
        "judge's order (closest first)": [str(x).replace(";", ", ") for x in ladder["order"]],
        "rho": [f"{float(x):.2f}" if _finite(x) else "–" for x in ladder["rho"]],
        "passed": [_yes_no(x) for x in ladder["passed"]],
    })


def validation_display(validation):
    """Which judges passed the known-answer check, per subject, as text: ``dataset,
    subject, judge metric, validated, named, mixtures followed, ladders ordered, why
    not`` (ladders "–" in a table written before the ladder)."""
    check_table(validation, ("dataset", "subject", "metric", "validated", "named", "acceptable", "cases",
                             "mixtures_ok", "mixtures", "reason"), "validation")
    v = validation
    ladders = ([f"{int(a)} of {int(b)}" if _finite(a) and _finite(b) else "–"
                for a, b in zip(v["ladders_ok"], v["ladders"])]
               if {"ladders_ok", "ladders"} <= set(v.columns) else ["–"] * len(v))
    return pd.DataFrame({
        "dataset": v["dataset"].to_numpy(), "subject": v["subject"].to_numpy(), "judge metric": v["metric"].to_numpy(),
        "validated": [_yes_no(x) for x in v["validated"]],
        "named": [f"{n} of {c} ({a} with the inseparable)" for n, a, c in zip(v["named"], v["acceptable"], v["cases"])],
        "mixtures followed": [f"{a} of {b}" for a, b in zip(v["mixtures_ok"], v["mixtures"])],
        "ladders ordered": ladders,
        "why not": [r if isinstance(r, str) else "" for r in v["reason"]],
    })


def p_real_maps(subject_dirs, closest):
    """Subject folder -> ``{generator: (X, Y, Z) ndarray}``: the two-sample classifier's
    held-out probability that each real judge voxel is real (NaN elsewhere), for the
    dataset's closest generator, read from ``judges/maps/<generator>_p_real.nii.gz``.

    Near 0.5 the generator makes voxels like that one; near 1 it makes none like it.
    Subjects without the map (an older run, or a generator skipped there) are left out.
    """
    out = {}
    for folder in map(Path, subject_dirs):
        name = closest.get(folder.parent.name)
        path = folder / "judges" / "maps" / f"{name}_p_real.nii.gz"
        if isinstance(name, str) and path.is_file():
            out[folder] = {name: np.asarray(nib.load(path).dataobj, dtype=float)}
    return out


def _markdown_table(table):
    """A DataFrame (its index as columns where named) as a Markdown table."""
    t = table.reset_index() if any(n is not None for n in table.index.names) else table

    def cell(x):
        return "–" if isinstance(x, float) and math.isnan(x) else str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, t.columns)) + " |", "|---" * len(t.columns) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in t.itertuples(index=False)]
    return lines


# --------------------------------------------------------------------------- helpers


def _finite(x):
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _num(x, metric):
    """A value in the metric's unit: degrees to 0.1, others to 3 significant digits."""
    if not _finite(x):
        return "–"
    return f"{float(x):.1f}" if metric == "angle_deg" else f"{float(x):.3g}"



def _unit(metric):
    return "°" if metric == "angle_deg" else ""


def told_apart(row):
    """Whether a verdict row's margin interval excludes 0 (the best is lower than the
    runner-up with 95% confidence). No interval, or one that includes 0: not told apart."""
    get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
    runner = get("runner_up")
    if not (isinstance(runner, str) and runner):
        return True  # a single generator: nothing to tell apart from
    return _finite(get("ci_low")) and float(get("ci_low")) > 0


def verdict_head(row, *, validated=True):
    """The verdict's claim: ``Closest: X`` (validated judge, interval excludes 0),
    ``Lowest: X`` (a judge that is not validated), or ``X ≈ Y`` where the interval of the
    margin includes 0 (or there is none): then the two cannot be told apart, and no line
    says one is closest.

    >>> verdict_head({"best": "Sampled", "runner_up": "SampleAndMean", "ci_low": -0.01})
    'Sampled ≈ SampleAndMean'
    >>> verdict_head({"best": "Sampled", "runner_up": "Syn", "ci_low": 0.002})
    'Closest: Sampled'
    """
    get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
    if not told_apart(row):
        return f"{get('best')} ≈ {get('runner_up')}"
    return f"{'Closest' if validated else 'Lowest'}: {get('best')}"


def judge_title(row):
    """A verdict row's judge and metric in prose, e.g. ``two-sample classifier`` or
    ``denoiser-training error (the method paper's reconstruction error), signal MAE``."""
    from helpers.contract import JUDGE_LABELS, JUDGE_OF

    get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
    metric = get("metric")
    judge = get("judge") if isinstance(get("judge"), str) else JUDGE_OF.get(metric, metric)
    label = JUDGE_LABELS.get(judge, judge)
    return f"{label}, {metric_name(metric)}" if judge == "reconstruction" else label


def _headline(rows):
    """A dataset's headline (:func:`headline_lines`) as a bold line; [] when
    no validated judge has a floor."""

    found = headline_lines(rows)
    if not found:
        return []
    text = found[0].split(" · ", 1)[1]  # without the "dataset · " the heading already says
    return [f"**{text[0].upper()}{text[1:]}.**", ""]


def _distance(row, *, validated=True):
    """The closest generator's distance in words (:func:`distance_phrase`),
    e.g. ``told from the scan in 72% of voxels (95% CI 70-75%; two halves of the scan:
    50%): not realistic``; "" for a row with neither an interval nor a floor (its score is
    in the verdict line). A judge that is not validated says nothing of realistic: it
    cannot tell."""

    if not any(_finite(getattr(row, k, None)) for k in ("score_low", "score_high", "real_vs_real")):
        return ""
    fields = row._asdict()
    if not validated:
        fields["realistic"] = None
    return distance_phrase(fields)


def _distance_sentence(row, *, validated=True):
    """:func:`_distance` as a sentence with its generator and the rule, e.g. ``Sampled is
    told from the scan in 72% of voxels (95% CI 70-75%; two halves of the scan: 50%): not
    realistic (realistic: at most 0.05 above the floor).``; "" without a distance."""
    phrase = _distance(row, validated=validated)
    if not phrase:
        return ""
    text = f"{row.best} is {phrase}" if row.metric == "c2st_accuracy" else f"{row.best}: {phrase}"
    rule = getattr(row, "realistic_rule", "")
    if validated and str(getattr(row, "realistic", "")) in ("True", "False") and isinstance(rule, str) and rule:
        text += f" (realistic: {rule})"
    return text + "."


def _disagreement_lines(validated):
    """One line where validated judges name different closest generators (the verdict's
    ``disagrees``, :func:`helpers.run.pipeline.with_disagreement`), showing each judge's pick
    with its distance."""
    if "disagrees" not in validated.columns or not any(
            isinstance(x, str) and x for x in validated["disagrees"]):
        return []
    picks = []
    for row in validated.itertuples(index=False):
        phrase = _distance(row)
        picks.append(f"*{judge_title(row)}* names {row.best}" + (f", {phrase}" if phrase else ""))
    return [f"- **The validated judges disagree** on which generator is closest: {'; '.join(picks)}. "
            "Both are shown: neither is the verdict alone."]


def _judged_lines(rows):
    """A dataset's verdict lines, the validated judges first, then those that failed the
    known-answer check, each with its distance and its known-answer result."""
    validated = rows[rows["validated"].astype(bool)]
    failed = rows[~rows["validated"].astype(bool)]
    lines = []
    if len(validated):
        lines += ["**Judges validated on this scan** (the known-answer check: each named the "
                  "generator that made a pseudo-scan, wherever the pseudo-scans could be told apart):", ""]
        for row in validated.itertuples(index=False):
            distance = _distance_sentence(row)
            lines.append(f"- *{judge_title(row)}*: {_verdict_line(row)}{' ' + distance if distance else ''} "
                         f"{_how_sure(row)} Known answers: {row.known_answer}.")
        lines += _disagreement_lines(validated)
    else:
        lines += ["**No judge passed the known-answer check on this scan**: none of the rankings "
                  "below can be read as which generator is closest.", ""]
    if len(failed):
        lines += ["", "**Not validated on this scan** (they failed the known-answer check; shown "
                  "for what they measure, not as a verdict):", ""]
        for row in failed.itertuples(index=False):
            what = (" It ranks which generator's data trains the better denoiser for this scan."
                    if getattr(row, "judge", "") == "reconstruction" else "")
            distance = _distance_sentence(row, validated=False)
            lines.append(f"- *{judge_title(row)}*: {_verdict_line(row, validated=False)}{what}"
                         f"{' ' + distance if distance else ''} Known answers: {row.known_answer}.")
    return lines


def _verdict_line(r, *, validated=True):
    u = _unit(r.metric)
    line = f"**{verdict_head(r, validated=validated)}** on {metric_name(r.metric)} — {_num(r.best_mean, r.metric)}{u}"
    if isinstance(r.runner_up, str) and r.runner_up:
        line += (f" vs {_num(r.runner_mean, r.metric)}{u} ({r.runner_up}), "
                 f"margin {_num(r.margin, r.metric)}{u}")
        if _finite(r.ci_low) and _finite(r.ci_high):
            line += f" [95% CI {_num(r.ci_low, r.metric)}, {_num(r.ci_high, r.metric)}]"
    else:
        line += " (the only method)"
    if _finite(r.rank_held) and _finite(r.rank_n) and int(r.rank_n) > 0:
        # ranks are counted over (subject, replicate) models at either level
        line += f", lowest in {int(r.rank_held)}/{int(r.rank_n)} replicates"
    if _finite(r.ratio_to_floor) and _finite(r.floor):
        line += f"; {float(r.ratio_to_floor):.2f}x the noise floor {float(r.floor):.2g}"
    note = getattr(r, "note", "")
    if isinstance(note, str) and note.strip():
        line += f" ({note.strip()})"
    return line + "."


def _how_sure(r):
    if not (isinstance(r.runner_up, str) and r.runner_up):
        return ""
    n = int(r.n_units) if _finite(r.n_units) else 0
    if r.level == "subject":
        across = f"across {n} subject{'s' if n != 1 else ''}"
    elif r.level == "bootstrap":  # helpers.run.pipeline.with_distance: the scan and the replicates resampled
        across = "block bootstrap of the judge voxels and the replicate models"
    else:  # a Welch interval over both methods' replicate values
        across = f"across {n} replicate models of the two methods"
    if not (_finite(r.ci_low) and _finite(r.ci_high)):
        return f"Too few units for an interval ({across})."
    if float(r.ci_low) > 0:
        return (f"The interval excludes 0 ({across}): {r.best} is closer than "
                f"{r.runner_up} with 95% confidence.")
    if float(r.ci_high) < 0:
        return (f"The interval lies below 0 ({across}): the order of {r.best} and "
                f"{r.runner_up} is not settled.")
    return (f"The interval includes 0 ({across}): {r.best} and {r.runner_up} cannot be told "
            "apart on this metric.")


def _n_for(n_subjects, dataset):
    if isinstance(n_subjects, dict):
        return int(n_subjects.get(dataset, 0))
    return int(n_subjects)


def _agreement(realism_agreement, datasets):
    """{dataset: sentence} from the forms :func:`verdict_markdown` accepts."""
    if realism_agreement is None:
        return {}
    if isinstance(realism_agreement, str):
        return dict.fromkeys(datasets, realism_agreement)
    if isinstance(realism_agreement, dict):
        return {d: str(v) for d, v in realism_agreement.items()}
    check_table(realism_agreement, ("dataset", "agree"), "realism_agreement")
    out = {}
    for row in realism_agreement.to_dict("records"):
        text = ("the two judges agree on which generator is closest" if bool(row["agree"])
                else "the two judges disagree on which generator is closest")
        note = row.get("note")
        out[row["dataset"]] = text + (f" ({note})" if isinstance(note, str) and note else "") + "."
    return out


def _skipped_records(skipped):
    if skipped is None:
        return []
    if isinstance(skipped, pd.DataFrame):
        check_table(skipped, ("method", "reason"), "skipped")
        return skipped.to_dict("records")
    records = []
    for key, value in dict(skipped).items():
        if isinstance(value, dict):  # {subject: {method: reason}}
            records += [{"subject": key, "method": m, "reason": r} for m, r in value.items()]
        else:
            records.append({"method": key, "reason": value})
    return records


def _skipped_lines(skipped):
    records = _skipped_records(skipped)
    if not records:
        return []
    groups = {}
    for r in records:
        where = "/".join(str(r[k]) for k in ("dataset", "subject") if r.get(k) is not None
                         and str(r[k]) not in ("", "nan"))
        groups.setdefault((str(r["method"]), str(r["reason"])), []).append(where)
    lines = ["**Skipped methods** (the scan cannot support them; the other methods ran):"]
    for (method, reason), where in groups.items():
        on = ", ".join(w for w in dict.fromkeys(where) if w)
        lines.append(f"- {method}{' on ' + on if on else ''}: {reason}")
    return lines + [""]


def _collapsed_lines(collapsed, verdict, without):
    if collapsed is None or len(collapsed) == 0:
        return []
    check_table(collapsed, ("dataset", "subject", "method", "replicate"), "collapsed")
    ratio = DEFAULTS["collapse_ratio"]
    lines = [f"**Collapsed replicate models** (validation loss above {ratio:g}x their method's "
             "median; kept in the tables, marked X in the figures):"]
    for r in collapsed.to_dict("records"):
        text = f"- {r['method']} replicate {r['replicate']} of {r['dataset']}/{r['subject']}"
        if _finite(r.get("ratio")):
            text += f" (validation loss {float(r['ratio']):.1f}x its method's median)"
        lines.append(text)
    if without is None:
        lines.append("- The verdict was not recomputed without them.")
    else:
        check_table(without, ("dataset", "metric", "best"), "verdict_without_collapsed")
        before = {(d, m): b for d, m, b in zip(verdict["dataset"], verdict["metric"],
                                               verdict["best"])}
        changes = [f"{d} {metric_name(m)}: {b} instead of {before[(d, m)]}"
                   for d, m, b in zip(without["dataset"], without["metric"], without["best"])
                   if (d, m) in before and b != before[(d, m)]]
        lines.append("- Without them the verdict changes: " + "; ".join(changes) + "."
                     if changes else "- Without them the verdict is unchanged.")
    return lines + [""]


def _pool_lines(tiny_pools):
    if tiny_pools is None or len(tiny_pools) == 0:
        return []
    if isinstance(tiny_pools, str):
        items = [tiny_pools]
    elif isinstance(tiny_pools, pd.DataFrame):
        items = [", ".join(f"{k}: {v}" for k, v in row.items())
                 for row in tiny_pools.to_dict("records")]
    elif isinstance(tiny_pools, dict):
        items = [f"{subject}: {'; '.join(v) if isinstance(v, (list, tuple)) else v}"
                 for subject, v in tiny_pools.items()]
    else:
        items = [str(x) for x in tiny_pools]
    lines = ["**Tiny tissue pools** (fewer than `min_pool` voxels even before erosion; "
             "the sampling methods draw from few voxels there):"]
    return lines + [f"- {x}" for x in items] + [""]


def _caveat_lines(datasets, n_subjects, approximate_tissue, synthetic, *, bootstrap=()):
    """The caveats, once; ``bootstrap``: datasets whose intervals resample the judge voxels
    (:func:`helpers.run.pipeline.with_distance`), not only the replicate models."""
    caveats = []
    approximate_tissue, synthetic = list(approximate_tissue), list(synthetic)
    few = [d for d in datasets if _n_for(n_subjects, d) < MIN_SUBJECTS]
    replicates = [d for d in few if d not in set(bootstrap)]
    resampled = [d for d in few if d in set(bootstrap)]
    if replicates:
        caveats.append(
            f"{', '.join(map(str, replicates))}: fewer than {MIN_SUBJECTS} subjects, so the intervals "
            "and tests run across replicate models of the same scan(s). They carry training "
            "randomness only, not the variation between subjects: the verdict is about these "
            "scans, not a population.")
    if resampled:
        caveats.append(
            f"{', '.join(map(str, resampled))}: fewer than {MIN_SUBJECTS} subjects, so the intervals "
            "resample the judge voxels and the replicate models of the same scan(s). They carry "
            "the scan's sampling and the training randomness, not the variation between subjects: "
            "the verdict is about these scans, not a population.")
    if approximate_tissue:
        caveats.append(f"Tissue maps of {', '.join(map(str, approximate_tissue))} are "
                       "approximate (DTI thresholds): per-tissue numbers are indicative.")
    if synthetic:
        caveats.append(f"{', '.join(map(str, synthetic))} are synthetic benchmark phantoms, "
                       "not scans.")
    if not caveats:
        return []
    return ["**Caveats**", ""] + [f"- {c}" for c in caveats] + [""]


def findings_markdown(summary_dir, *, source="make run"):
    """The known-answer findings of a run as Markdown, from its summary tables only.

    Reads ``known_answer.csv``, ``validation.csv``, ``noise_check.csv``, ``ladder.csv``,
    ``distances.csv``, ``features.csv`` and ``verdict.csv`` of a summary folder
    (``results/summary`` after ``make run``) and writes per subject: the truth x picked
    table of every judge metric (truth_first/n in each cell), which judges were validated
    (with the ladders they ordered), the ladders and the noise-model check; then every
    generator's distance with its floor (:func:`distance_display`), the features that
    differ most for the closest generator (:func:`top_features`) and every feature's KS
    distance (:func:`feature_table`), and the verdict lines as the console prints them. A
    table a summary lacks (an older run) is one line saying so. Nothing in it is typed by
    hand (``docs/make_findings.py``).
    """

    summary_dir = Path(summary_dir)
    known = pd.read_csv(summary_dir / "known_answer.csv", dtype={"subject": str})
    validation = pd.read_csv(summary_dir / "validation.csv", dtype={"subject": str})
    noise = pd.read_csv(summary_dir / "noise_check.csv", dtype={"subject": str})
    ladder = summary_table(summary_dir, "ladder")
    tables = {name: summary_table(summary_dir, name) for name in ("distances", "features", "verdict")}
    lines = [f"# What the known-answer check found ({source})", "",
             f"Written by `docs/make_findings.py` from `{summary_dir.as_posix()}`; every number below is the "
             "run's own output. Rows: the generator that made the pseudo-scan. Cells: the generator the "
             "judge named closest, and in how many replicates the truth ranked first.", ""]
    for (ds, sid), k in known.groupby(["dataset", "subject"], sort=False):
        lines += [f"## {ds} / {sid}", ""]
        table = k.assign(cell=[f"{p or '–'} ({t}/{n})" for p, t, n in zip(k["picked"], k["truth_first"], k["n"])])
        wide = table.pivot_table(index="truth", columns="metric", values="cell", aggfunc="first", sort=False)
        lines.append("| made by | " + " | ".join(wide.columns) + " |")
        lines.append("|---" * (len(wide.columns) + 1) + "|")
        for truth, row in wide.iterrows():
            lines.append(f"| {truth} | " + " | ".join(str(row[c]) for c in wide.columns) + " |")
        v = validation[(validation["dataset"] == ds) & (validation["subject"] == sid)]
        shown = validation_display(v).drop(columns=["dataset", "subject"])
        lines += ["", *_markdown_table(shown)]
        if ladder is not None:
            lad = ladder[(ladder["dataset"] == ds) & (ladder["subject"] == sid)]
            if len(lad):
                lines += ["", "Ladders (the truth is none of the candidates; a judge should rank the rungs by "
                          "their distance from it):", "", *_markdown_table(ladder_display(lad).drop(
                              columns=["dataset", "subject"]))]
        nz = noise[(noise["dataset"] == ds) & (noise["subject"] == sid)]
        wide_noise = nz.pivot_table(index="method", columns="synthetic_noise", values="accuracy", sort=False)
        lines += ["", "Classifier accuracy, pseudo-scan (per-voxel noise) vs the same generator's data:", "",
                  "| generator | global noise | per-voxel noise |", "|---|---|---|"]
        lines += [f"| {m} | {r.get('global', float('nan')):.3f} | {r.get('per_voxel', float('nan')):.3f} |"
                  for m, r in wide_noise.iterrows()]
        lines.append("")
    if ladder is None:
        lines += ["No `ladder.csv` in this summary (written before the ladder).", ""]
    lines += ["## Distance from the scan", ""]
    if tables["distances"] is None:
        lines += ["No `distances.csv` in this summary (written before the distances).", ""]
    else:
        lines += ["Every generator's score on the scan's judge voxels with its block-bootstrap 95% interval, "
                  "beside the same judge on two halves of the scan (the floor); closest first.", "",
                  *_markdown_table(distance_display(tables["distances"])), ""]
    lines += ["## Where the closest generator differs", ""]
    missing = [name for name in ("features", "verdict") if tables[name] is None]
    if missing:
        lines += [f"No `{name}.csv` in this summary (written before it): no feature table." for name in missing] + [""]
    else:
        closest = closest_generators(tables["verdict"])
        lines += ["The features whose distribution differs most between the scan and its closest generator "
                  "(Kolmogorov-Smirnov distance: 0 same, 1 disjoint):", "",
                  *_markdown_table(top_features(tables["features"], closest)), "",
                  "Every feature's KS distance, per generator:", "",
                  *_markdown_table(feature_table(tables["features"])), ""]
    verdicts = verdict_lines(summary_dir / "verdict.csv")
    if verdicts:
        lines += ["## Verdict lines, as printed", "", "```", *verdicts, "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- verdict


def _number(value, digits=3):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else f"{value:.{digits}g}"


def _percent(value):
    return f"{100 * float(value):.0f}%"


def _getter(row):
    return row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)


def _score(get, key):
    """A score in its judge's unit: a percentage for the classifier's accuracy, else three
    digits; None when absent or NaN."""
    if _number(get(key)) is None:
        return None
    return _percent(get(key)) if get("metric") == "c2st_accuracy" else _number(get(key))


def _score_interval(get):
    """The score's 95% interval, ``70-75%`` or ``0.024 to 0.054``; None without one."""
    low, high = _score(get, "score_low"), _score(get, "score_high")
    if low is None or high is None:
        return None
    return f"{low[:-1]}-{high}" if get("metric") == "c2st_accuracy" else f"{low} to {high}"


def distance_phrase(row):
    """The closest generator's distance in words: its score with its interval, the floor,
    and whether it is realistic; "" for a row without a score.

    >>> distance_phrase({"metric": "c2st_accuracy", "best_mean": 0.723, "score_low": 0.70, "score_high": 0.75,
    ...                  "real_vs_real": 0.50, "realistic": False})
    'told from the scan in 72% of voxels (95% CI 70-75%; two halves of the scan: 50%): not realistic'
    """
    get = _getter(row)
    score, interval, floor = _score(get, "best_mean"), _score_interval(get), _score(get, "real_vs_real")
    if score is None:
        return ""
    ok = get("realistic")
    verdict = "" if not isinstance(ok, (bool, np.bool_)) and str(ok) not in ("True", "False") else (
        ": realistic" if str(ok) == "True" else ": not realistic")
    if get("metric") == "c2st_accuracy":
        inner = ([f"95% CI {interval}"] if interval else []) + ([f"two halves of the scan: {floor}"] if floor else [])
        return f"told from the scan in {score} of voxels" + (f" ({'; '.join(inner)})" if inner else "") + verdict
    text = f"score {score}" + (f" (95% CI {interval})" if interval else "")
    if floor is not None:
        text += f", floor {floor} (two halves of the scan)"
    return text + verdict


def headline_lines(table):
    """What a dataset's verdict says first: that no candidate is realistic, by any
    validated judge with a floor, or which one is; [] when no validated judge has a floor.

    Example: ``no candidate is realistic for this scan: the closest, SubjectFORCE, is told
    from it in 72% of voxels (two halves of the scan: 50%)``.
    """
    lines = []
    if "realistic" not in table.columns or "validated" not in table.columns:
        return lines
    for ds, rows in table.groupby("dataset", sort=False):
        rows = rows[rows["validated"].astype(bool) & rows["realistic"].astype(str).isin(["True", "False"])]
        if rows.empty:
            continue
        first = rows.iloc[0]
        what = (f"is told from it in {_percent(first['best_mean'])} of voxels (two halves of the scan: "
                f"{_percent(first['real_vs_real'])})" if first["metric"] == "c2st_accuracy"
                else f"scores {_number(first['best_mean'])} against a floor of {_number(first['real_vs_real'])}")
        if (rows["realistic"].astype(str) == "True").any():
            ok = rows[rows["realistic"].astype(str) == "True"].iloc[0]
            lines.append(f"{ds} · {ok['best']} is realistic for this scan by the {_judge(ok)}: "
                         f"{distance_phrase(ok).split(':')[0]}")
        else:
            lines.append(f"{ds} · no candidate is realistic for this scan: the closest, {first['best']}, {what}")
    return lines


def _judge(row):
    return judge_title(row)


def verdict_lines(path):
    """The headline and one sentence per (dataset, metric) of a ``verdict.csv``; [] when
    it is absent.

    Example: ``sample · two-sample classifier [validated]: Sampled closest, told from the
    scan in 72% of voxels (95% CI 70-75%; two halves of the scan: 50%): not realistic;
    0.0012 below Syn (95% CI 0.0003 to 0.0021), best in 4/5 replicates``. A margin whose
    interval includes 0 reads ``Sampled ≈ SampleAndMean (cannot be told apart)``; a judge
    that failed the known-answer check says so and what it scored there, and its best is
    "lowest", never "closest"; validated judges that name different generators say so.
    """

    path = Path(path)
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    judged = "validated" in table.columns
    lines = headline_lines(table) if judged else []
    for row in table.to_dict("records"):
        if judged:
            ok = bool(row["validated"])
            status = "validated" if ok else f"not validated: {row.get('known_answer', '')}"
            text = f"{row.get('dataset', '')} · {judge_title(row)} [{status}]: "
        else:
            ok = True
            text = f"{row.get('dataset', '')} · {METRIC_LABELS.get(row.get('metric'), row.get('metric'))}: "
        if told_apart(row):
            text += f"{row.get('best')} {'closest' if ok else 'lowest'}"
        else:
            text += f"{row.get('best')} ≈ {row.get('runner_up')} (cannot be told apart)"
        distance = distance_phrase(row) if "real_vs_real" in row else ""
        if distance:
            text += f", {distance};"
        margin = _number(row.get("margin"))
        if margin is not None and isinstance(row.get("runner_up"), str):
            text += f"{'' if distance else ','} {margin} below {row['runner_up']}"
            low, high = _number(row.get("ci_low")), _number(row.get("ci_high"))
            if low is not None and high is not None:
                text += f" (95% CI {low} to {high})"
        held, n = _number(row.get("rank_held"), 6), _number(row.get("rank_n"), 6)
        if held is not None and n is not None:
            text += f", best in {held}/{n} replicates"
        ratio = _number(row.get("ratio_to_floor"))
        if ratio is not None:
            text += f"; {ratio}x the noise floor"
        disagrees = row.get("disagrees")
        if ok and isinstance(disagrees, str) and disagrees:
            text += f"; validated judges disagree: {disagrees}"
        lines.append(text)
    return lines


def _short_distance(row):
    """The distance in a few words: ``73% (95% CI 72-75%; floor 50%)`` or ``0.036 (95% CI
    0.024 to 0.054; floor -0.00098)``."""
    get = _getter(row)
    score, interval, floor = _score(get, "best_mean"), _score_interval(get), _score(get, "real_vs_real")
    if score is None:
        return ""
    parts = ([f"95% CI {interval}"] if interval else []) + ([f"floor {floor}"] if floor else [])
    return score + (f" ({'; '.join(parts)})" if parts else "")


def compact_lines(path, *, width=None, skip=()):
    """A verdict.csv as a console block per dataset: the headline, then one short line
    per judge (validated first: the closest generator, its distance and the floor), lines
    wrapped at ``width`` (default: the terminal's). Datasets in ``skip`` are left out
    (already printed). The full sentences stay in verdict.csv and the report.

    Returns
    -------
    dict of str to list of str
        Dataset -> its lines (without indentation).
    """
    import shutil
    import textwrap


    path = Path(path)
    if not path.is_file():
        return {}
    width = width or shutil.get_terminal_size((100, 24)).columns
    table = pd.read_csv(path)
    if "validated" not in table.columns:
        return {ds: [line.split(" · ", 1)[-1] for line in verdict_lines(path) if line.startswith(f"{ds} · ")]
                for ds in table["dataset"].unique() if ds not in skip}
    heads = {line.split(" · ", 1)[0]: line.split(" · ", 1)[1] for line in headline_lines(table)}
    out = {}
    for ds, rows in table.groupby("dataset", sort=False):
        if ds in skip:
            continue
        lines = [heads[ds]] if ds in heads else []
        rows = pd.concat([rows[rows["validated"].astype(bool)], rows[~rows["validated"].astype(bool)]])
        for row in rows.to_dict("records"):
            ok = bool(row["validated"])
            who = (f"{row['best']} {'closest' if ok else 'lowest'}" if told_apart(row)
                   else f"{row['best']} ≈ {row.get('runner_up')}")
            distance = _short_distance(row)
            title = re.sub(r" \([^)]*\)", "", judge_title(row))  # the parenthesis is in the report
            line = f"{title} [{'validated' if ok else 'not validated'}]: {who}"
            lines.append(line + (f", {distance}" if distance else ""))
            if ok and isinstance(row.get("disagrees"), str) and row["disagrees"]:
                lines.append(f"validated judges disagree: {row['disagrees']}")
        lines = list(dict.fromkeys(lines))
        out[ds] = [w for line in lines for w in textwrap.wrap(line, width=max(width - 4, 40), subsequent_indent="    ")]
    return out


FIGURE_CAPTIONS = {
    "known_answers": "Each row is a pseudo-scan drawn by a known generator with the scan's own gradient "
                     "table, voxel count and noise; each cell, the share of replicate models in which the "
                     "judge ranked that column's generator first. A judge that knows its answers has its "
                     "weight on the diagonal.",
    "signal_mae": "Reconstruction error of the real judge voxels per generator the autoencoder was trained on, "
                  "one point per model; brackets mark differences the tests find. Lower means a better "
                  "denoiser for this scan, not a more realistic generator: see the validated judges first.",
    "fa_mae": "Error in the FA of the reconstructed real voxels, per training generator, one point per model.",
    "angle_deg": "Angle between the main fibre direction of the real voxels and of their reconstruction, "
                 "per training generator, one point per model.",
    "tissue": "Signal MAE per tissue class (WM, GM, CSF), per training generator.",
    "diagnostics": "Final validation loss of every model, on its own synthetic data: a model far above "
                   "its replicates did not train.",
    "training": "Training (solid) and validation (dashed) loss per epoch, each replicate a line. Each "
                "method's losses are on its own synthetic data: compare a method's curves with each other, "
                "not across methods.",
    "error_maps": "Signal MAE per voxel on one axial slice, mean over replicates, one panel per training "
                  "generator; the colour scale is shared and tops out at the 99th percentile.",
    "p_real": "The two-sample classifier's probability that each real judge voxel is real, against the "
              "closest generator: 0.5 where it cannot tell, near 1 where the generator has nothing like it.",
}
"""What each standalone figure page says under its figure (by the figure's name or its prefix)."""


def figure_caption(name):
    """The caption of the figure saved as ``<name>.html``: :data:`FIGURE_CAPTIONS` by name,
    or by the prefix before its dataset (``training_invivo``); None when there is none."""
    for key, text in FIGURE_CAPTIONS.items():
        if name == key or name.startswith(f"{key}_"):
            return text
    return None


def first_subjects(subject_dirs):
    """The first subject folder of each dataset (``<results>/<dataset>/<subject>``), in order:
    the subjects a summary's per-subject figures show, each named in its title."""
    first = {}
    for folder in map(Path, subject_dirs):
        first.setdefault(folder.parent.name, folder)
    return first


def csv_links(folder):
    """A Markdown line linking every CSV table of a summary folder (the report shows them
    formatted; the CSVs hold every column and digit)."""
    names = sorted(p.name for p in Path(folder).glob("*.csv"))
    if not names:
        return ""
    return "**Every table as CSV**, in this folder: " + ", ".join(f"[{n}]({n})" for n in names) + "."
