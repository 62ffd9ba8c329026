"""The words of the results report: a verdict first, a compact statistics table, maps.

:func:`verdict_markdown` turns the verdict table (:func:`helpers.stats.verdict`) into the
Markdown the summary report opens with: per dataset and metric, the closest generator,
its margin over the next with a 95% confidence interval, how often it ranked first, and
the noise floor beside signal MAE. What a reader must know to weigh it (a quick profile,
skipped methods, collapsed models, tiny tissue pools) comes right after; the caveats come
once, at the end. :func:`stats_display` shortens the pairwise tests to what a reader reads.

Labels come from :mod:`helpers.contract`; this module imports no figure code.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from helpers.contract import DEFAULTS, METRIC_LABELS, method_name
from helpers.stats import MIN_SUBJECTS, check_table

__all__ = ["verdict_markdown", "stats_display", "error_map_volumes", "metric_name", "verdict_head",
           "told_apart", "judge_title",
           "VERDICT_COLUMNS", "STATS_COLUMNS"]

VERDICT_COLUMNS = ("dataset", "metric", "best", "runner_up", "best_mean", "runner_mean",
                   "margin", "ci_low", "ci_high", "level", "n_units", "rank_held", "rank_n",
                   "floor", "ratio_to_floor")
"""Columns of the verdict table (:func:`helpers.stats.verdict`)."""

STATS_COLUMNS = ("dataset", "metric", "method_a", "method_b", "test", "mean_diff", "ci_low",
                 "ci_high", "p_holm", "stars", "held", "n_compared")
"""Columns of the pairwise tests (:func:`helpers.stats.compare_methods`) this module reads."""

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
        pipeline, not a finding. Then per dataset one line per metric, e.g.
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
    lines += _caveat_lines(datasets, n_subjects, approximate_tissue, synthetic)
    return "\n".join(lines).rstrip() + "\n"


def stats_display(stats, *, tests=None):
    """The pairwise tests as a compact table for the report.

    Parameters
    ----------
    stats : pandas.DataFrame
        :func:`helpers.stats.compare_methods` output (columns :data:`STATS_COLUMNS`).
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


def _judged_lines(rows):
    """A dataset's verdict lines, the validated judges first, then those that failed the
    known-answer check, each with its known-answer result."""
    validated = rows[rows["validated"].astype(bool)]
    failed = rows[~rows["validated"].astype(bool)]
    lines = []
    if len(validated):
        lines += ["**Judges validated on this scan** (the known-answer check: each named the "
                  "generator that made a pseudo-scan, wherever the pseudo-scans could be told apart):", ""]
        for row in validated.itertuples(index=False):
            lines.append(f"- *{judge_title(row)}*: {_verdict_line(row)} {_how_sure(row)} "
                         f"Known answers: {row.known_answer}.")
    else:
        lines += ["**No judge passed the known-answer check on this scan**: none of the rankings "
                  "below can be read as which generator is closest.", ""]
    if len(failed):
        lines += ["", "**Not validated on this scan** (they failed the known-answer check; shown "
                  "for what they measure, not as a verdict):", ""]
        for row in failed.itertuples(index=False):
            what = (" It ranks which generator's data trains the better denoiser for this scan."
                    if getattr(row, "judge", "") == "reconstruction" else "")
            lines.append(f"- *{judge_title(row)}*: {_verdict_line(row, validated=False)}{what} "
                         f"Known answers: {row.known_answer}.")
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


def _caveat_lines(datasets, n_subjects, approximate_tissue, synthetic):
    caveats = []
    approximate_tissue, synthetic = list(approximate_tissue), list(synthetic)
    few = [d for d in datasets if _n_for(n_subjects, d) < MIN_SUBJECTS]
    if few:
        caveats.append(
            f"{', '.join(map(str, few))}: fewer than {MIN_SUBJECTS} subjects, so the intervals "
            "and tests run across replicate models of the same scan(s). They carry training "
            "randomness only, not the variation between subjects: the verdict is about these "
            "scans, not a population.")
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

    Reads ``known_answer.csv``, ``validation.csv``, ``noise_check.csv`` and
    ``verdict.csv`` of a summary folder (``results/summary`` after ``make run``) and writes
    per dataset: the truth x picked table of every judge metric (truth_first/n in each
    cell), which judges were validated, the noise-model check and the verdict lines as the
    console prints them. Nothing in it is typed by hand (``docs/make_findings.py``).
    """
    from helpers.render import verdict_lines

    summary_dir = Path(summary_dir)
    known = pd.read_csv(summary_dir / "known_answer.csv", dtype={"subject": str})
    validation = pd.read_csv(summary_dir / "validation.csv", dtype={"subject": str})
    noise = pd.read_csv(summary_dir / "noise_check.csv", dtype={"subject": str})
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
        lines += ["", "| judge metric | validated | named | mixtures followed | why not |", "|---|---|---|---|---|"]
        for r in v.to_dict("records"):
            reason = r["reason"] if isinstance(r["reason"], str) else ""
            lines.append(f"| {r['metric']} | {'yes' if r['validated'] else 'no'} | {r['named']} of {r['cases']} "
                         f"({r['acceptable']} with the inseparable) | {r['mixtures_ok']} of {r['mixtures']} | {reason} |")
        nz = noise[(noise["dataset"] == ds) & (noise["subject"] == sid)]
        wide_noise = nz.pivot_table(index="method", columns="synthetic_noise", values="accuracy", sort=False)
        lines += ["", "Classifier accuracy, pseudo-scan (per-voxel noise) vs the same generator's data:", "",
                  "| generator | global noise | per-voxel noise |", "|---|---|---|"]
        lines += [f"| {m} | {r.get('global', float('nan')):.3f} | {r.get('per_voxel', float('nan')):.3f} |"
                  for m, r in wide_noise.iterrows()]
        lines.append("")
    verdicts = verdict_lines(summary_dir / "verdict.csv")
    if verdicts:
        lines += ["## Verdict lines, as printed", "", "```", *verdicts, "```", ""]
    return "\n".join(lines)
