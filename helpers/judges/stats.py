"""Comparisons between generators that respect training randomness, and the verdict.

Each (subject, method) is trained as several replicate models, each with its own
simulation and training seed, so every metric has one value per replicate. The unit of
every test is therefore a subject or a replicate model, never a voxel: the voxels of one
brain are not independent samples, and voxel-level p-values flipped direction between
training seeds (issue 10).

- :func:`replicate_summary`: mean, sd and count over the replicates of each subject and
  method.
- :func:`compare_methods`: every pair of methods per dataset and metric. With at least
  :data:`MIN_SUBJECTS` subjects, a paired t-test (:func:`scipy.stats.ttest_rel`) and a
  Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`) across subjects on their
  replicate means; with fewer, a Welch t-test (:func:`scipy.stats.ttest_ind`,
  ``equal_var=False``) and a Mann-Whitney U test (:func:`scipy.stats.mannwhitneyu`)
  between the two methods' replicate values. Holm correction per (dataset, metric, test)
  with :func:`statsmodels.stats.multitest.multipletests`.
- :func:`rank_counts`: how often each method ranks first, second, ... over the
  (subject, replicate) units.
- :func:`verdict`: per dataset and metric, the closest generator, its margin over the
  runner-up with a confidence interval, how often it ranked first, and its ratio to the
  noise floor.

Method names are arbitrary strings (a researcher's own generators appear under their
function names); methods keep the order in which they first appear in the table.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as _sps
from statsmodels.stats.multitest import multipletests

from helpers.contract import COLUMNS, METRICS

__all__ = [
    "replicate_summary",
    "compare_methods",
    "rank_counts",
    "verdict",
    "collapsed_models",
    "check_table",
    "stars",
    "METRIC_ORDER",
    "MIN_SUBJECTS",
    "STRONG_P",
    "CONFIDENCE",
    "TESTS",
    "LEVEL_NOTES",
    "METRICS_COLUMNS",
    "SUMMARY_COLUMNS",
    "STATS_COLUMNS",
    "RANK_COLUMNS",
    "VERDICT_COLUMNS",
    "EXCLUDE_COLUMNS",
]

METRIC_ORDER = METRICS
"""Metrics in the order the method paper reports them; others follow, sorted."""

MIN_SUBJECTS = 3
"""Fewest subjects in a dataset for subject-level (paired) tests."""

STRONG_P = 1e-8
"""Corrected p below which a difference gets two stars."""

CONFIDENCE = 0.95
"""Level of every confidence interval."""

TESTS = {"subject": ("paired_t", "wilcoxon"), "replicate": ("welch_t", "mann_whitney")}
"""The two tests of each level, in the order their rows appear."""

LEVEL_NOTES = {
    "subject": (
        "paired tests across subjects on each subject's mean over replicate models "
        "(paired t and Wilcoxon signed-rank), Holm-corrected per dataset, metric and test"
    ),
    "replicate": (
        f"fewer than {MIN_SUBJECTS} subjects: tests across replicate models, the unit that "
        "carries training randomness (Welch t and Mann-Whitney U), Holm-corrected per "
        "dataset, metric and test; they speak for these subjects' scans, not for subjects "
        "in general, and voxel-level tests are not used because voxels of one brain are "
        "not independent samples"
    ),
}
"""What each ``level`` of the tables means: the caveat a report states once."""

_EQUAL_RTOL = 1e-12
"""Values whose spread is below this fraction of their size count as all equal."""

METRICS_COLUMNS = tuple(COLUMNS)
SUMMARY_COLUMNS = ("dataset", "subject", "method", "metric", "tissue", "mean", "sd",
                   "n_replicates")
STATS_COLUMNS = (
    "dataset", "metric", "tissue", "method_a", "method_b", "test", "level", "n",
    "mean_diff", "ci_low", "ci_high", "statistic", "p", "p_holm", "stars", "held",
    "n_compared", "note",
)
RANK_COLUMNS = ("dataset", "metric", "method", "rank", "count", "n")
VERDICT_COLUMNS = (
    "dataset", "metric", "best", "runner_up", "best_mean", "runner_mean", "margin",
    "ci_low", "ci_high", "level", "n_units", "rank_held", "rank_n", "floor",
    "ratio_to_floor", "note",
)
EXCLUDE_COLUMNS = ("dataset", "subject", "method", "replicate")

_GROUP = ["dataset", "subject", "method", "metric", "tissue"]
_KEYS = ["dataset", "subject", "method", "replicate", "metric", "tissue"]


# --------------------------------------------------------------------------- validation


def check_table(frame, columns, name):
    """Raise ``ValueError`` unless ``frame`` is a DataFrame holding every column of ``columns``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table to check; extra columns are allowed.
    columns : sequence of str
        Required column names.
    name : str
        What the table is called in the message (``"metrics"``, ``"stats"``, ...).

    Examples
    --------
    >>> check_table(pd.DataFrame({"a": [1]}), ["a", "b"], "table")
    Traceback (most recent call last):
    ...
    ValueError: table is missing column(s) ['b']; expected ['a', 'b'], got ['a']
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; expected {list(columns)}, "
                         f"got {list(frame.columns)}")


def _check_unique(frame, keys, name):
    dup = frame.duplicated(subset=keys, keep=False)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"{name} has {int(dup.sum())} rows sharing their ({', '.join(keys)}) "
                         f"with another row, e.g. {first}; expected one row per key")


def _check_metrics(metrics, tissue):
    """Validate a tidy metrics table; return (its rows of ``tissue``, method order)."""
    check_table(metrics, METRICS_COLUMNS, "metrics")
    _check_unique(metrics, _KEYS, "metrics")
    table = metrics[metrics["tissue"] == tissue]
    if table.empty:
        raise ValueError(f"metrics has no rows with tissue={tissue!r}; tissues present: "
                         f"{sorted(map(str, pd.unique(metrics['tissue'])))}")
    return table, list(pd.unique(metrics["method"]))


# --------------------------------------------------------------------------- summaries


def stars(p, *, alpha=0.05, strong=STRONG_P):
    """Significance stars for (corrected) p-values.

    Parameters
    ----------
    p : float or array_like or pandas.Series
        p-values; NaN means "not tested" and gets no star.
    alpha : float, optional
        One star below this p.
    strong : float, optional
        Two stars below this p.

    Returns
    -------
    str or ndarray of str or pandas.Series
        ``"**"`` if ``p < strong``, ``"*"`` if ``p < alpha``, ``""`` otherwise; a scalar in
        gives a ``str``, an array an array of the same shape, a Series a Series with the
        same index.

    Examples
    --------
    >>> stars(0.01), stars(1e-9), stars(0.2), stars(float("nan"))
    ('*', '**', '', '')
    >>> stars([0.01, 0.5]).tolist()
    ['*', '']
    """
    if not 0 < strong <= alpha <= 1:
        raise ValueError(f"need 0 < strong <= alpha <= 1, got strong={strong}, alpha={alpha}")
    if isinstance(p, pd.Series):
        return pd.Series(stars(p.to_numpy(dtype=float), alpha=alpha, strong=strong),
                         index=p.index, name=p.name)
    arr = np.asarray(p, dtype=float)
    # NaN compares False with everything, so untested pairs fall through to "".
    out = np.where(arr < strong, "**", np.where(arr < alpha, "*", ""))
    return str(out) if out.ndim == 0 else out.astype(object)


def replicate_summary(metrics):
    """Mean, sd and count over the replicate models of each subject, method, metric, tissue.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy table with columns :data:`helpers.contract.COLUMNS`, one row per (dataset,
        subject, method, replicate, metric, tissue).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, subject, method, metric, tissue, mean, sd, n_replicates``, in
        the order the groups first appear. NaN values (an empty tissue) are left out:
        ``n_replicates`` counts the finite ones, ``sd`` has ``ddof=1`` and is NaN for a
        single replicate, ``mean`` is NaN when none is left.

    Examples
    --------
    >>> t = pd.DataFrame({"dataset": "d", "subject": "s", "method": "Syn",
    ...                   "replicate": [0, 1, 2], "metric": "fa_mae", "tissue": "all",
    ...                   "value": [0.1, 0.2, 0.3]})
    >>> replicate_summary(t)[["mean", "sd", "n_replicates"]].round(3).values.tolist()
    [[0.2, 0.1, 3.0]]
    """
    check_table(metrics, METRICS_COLUMNS, "metrics")
    _check_unique(metrics, _KEYS, "metrics")
    grouped = metrics.groupby(_GROUP, sort=False)["value"]
    out = grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1), n_replicates="count")
    out = out.reset_index()
    out["n_replicates"] = out["n_replicates"].astype(int)
    return out[list(SUMMARY_COLUMNS)]


def collapsed_models(diagnostics):
    """The replicate models flagged as collapsed, as an ``exclude`` table for :func:`verdict`.

    Parameters
    ----------
    diagnostics : pandas.DataFrame
        Tidy diagnostics (:data:`helpers.contract.COLUMNS`; ``metric == "collapsed"`` rows
        hold 1 for a collapsed model, 0 otherwise).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, subject, method, replicate``, one row per collapsed model.
    """
    check_table(diagnostics, METRICS_COLUMNS, "diagnostics")
    flagged = diagnostics[(diagnostics["metric"] == "collapsed")
                          & (pd.to_numeric(diagnostics["value"], errors="coerce") > 0)]
    return flagged[list(EXCLUDE_COLUMNS)].drop_duplicates().reset_index(drop=True)


# --------------------------------------------------------------------------- tests


def compare_methods(metrics, *, tissue="all", alpha=0.05):
    """Tests between every pair of methods, per dataset and metric, at subject or replicate level.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy table with columns :data:`helpers.contract.COLUMNS`, one row per (dataset,
        subject, method, replicate, metric, tissue). NaN values are left out.
    tissue : str, optional
        Which tissue rows to test (``"all"``, ``"WM"``, ``"GM"``, ``"CSF"``).
    alpha : float, optional
        Family-wise level passed to the Holm correction, and the one-star threshold.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, metric, test, method pair), columns :data:`STATS_COLUMNS`:

        - ``level`` ``"subject"`` (dataset with at least :data:`MIN_SUBJECTS` subjects):
          ``test`` ``"paired_t"`` or ``"wilcoxon"`` on each subject's mean over its
          replicates, paired by subject; ``n`` is the number of subjects with both methods.
        - ``level`` ``"replicate"`` (fewer subjects): ``test`` ``"welch_t"`` or
          ``"mann_whitney"`` (two-sided) between the two methods' replicate values, every
          (subject, replicate) one value; ``n`` is the number of values of both methods
          together.
        - ``mean_diff``: mean of ``a`` minus mean of ``b`` over those units (negative:
          ``method_a`` has the lower error); ``ci_low, ci_high``: its :data:`CONFIDENCE`
          interval (paired t interval, or Welch's with Welch-Satterthwaite degrees of
          freedom), the same on both rows of a pair.
        - ``statistic``: t, Wilcoxon's W (scipy's smaller rank sum) or Mann-Whitney's U of
          ``method_a``; ``p`` uncorrected, ``p_holm`` Holm-corrected, ``stars`` from
          ``p_holm`` (``*`` below ``alpha``, ``**`` below :data:`STRONG_P`).
        - ``held``: units where ``a`` is strictly lower than ``b`` out of ``n_compared``
          (subjects; or (subject, replicate) pairs where both methods have that replicate
          index), so a report can say "Sampled < Syn in 4/5 replicates". Units where ``b``
          is lower are ``n_compared - held`` less the ties.
        - ``note`` explains a NaN p (too few units, all values equal, zero variance) or
          zero differences Wilcoxon dropped.

        :data:`LEVEL_NOTES` holds the caveat of each level, to state once in a report.

    Raises
    ------
    ValueError
        If a column is missing, a row is duplicated, ``alpha`` is outside (0, 1) or no
        row has the requested ``tissue``.

    Notes
    -----
    Pairs follow the order in which methods first appear in ``metrics`` (``method_a``
    comes first), among the methods with a finite value for that dataset and metric. The
    Holm family is all pairs of one (dataset, metric, test); pairs whose p is NaN are left
    out of it. The Holm-adjusted p of the i-th smallest of ``m`` p-values is
    ``min(1, max_{j <= i} (m - j + 1) p_(j))`` [1]_.

    Wilcoxon uses scipy's defaults (``zero_method="wilcox"``: zero differences are
    dropped); Mann-Whitney scipy's ``method="auto"`` (exact for small samples without
    ties). When every value is equal the p is NaN and ``note`` says why; when the t
    statistic's variance is zero (to 12 significant digits) t, p and the interval are NaN.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test procedure.
       Scandinavian Journal of Statistics 6(2), 65-70.

    Examples
    --------
    One subject, five replicate models per method: tests across replicates.

    >>> rows = [("d", "s0", m, r, "angle_deg", "all", v)
    ...         for m, vals in (("Syn", [9, 4, 5, 6, 12]), ("Sampled", [4, 5, 3, 4, 5]))
    ...         for r, v in enumerate(vals)]
    >>> out = compare_methods(pd.DataFrame(rows, columns=list(METRICS_COLUMNS)))
    >>> out[["method_a", "method_b", "test", "level", "n", "held", "n_compared"]].values.tolist()
    [['Syn', 'Sampled', 'welch_t', 'replicate', 10, 1, 5], ['Syn', 'Sampled', 'mann_whitney', 'replicate', 10, 1, 5]]
    >>> float(out["mean_diff"].iloc[0])
    3.0
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    table, order = _check_metrics(metrics, tissue)

    rows = []
    for dataset, metric, level, values, present in _metric_groups(table, order):
        base = {"dataset": dataset, "metric": metric, "tissue": tissue, "level": level}
        pairs = list(itertools.combinations(present, 2))
        if level == "subject":
            means = _subject_means(values, present)
            rows += _subject_rows(means, pairs, base)
        else:
            rows += _replicate_rows(values, pairs, base)

    out = pd.DataFrame(rows, columns=list(STATS_COLUMNS))
    if out.empty:
        return out
    for col in ("n", "held", "n_compared"):
        out[col] = out[col].astype(int)
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["dataset", "metric", "test"], sort=False).groups.items():
        p = out.loc[idx, "p"]
        tested = p.notna()
        if tested.any():
            out.loc[p.index[tested], "p_holm"] = multipletests(
                p[tested].to_numpy(), alpha=alpha, method="holm")[1]
    out["stars"] = stars(out["p_holm"].to_numpy(), alpha=alpha)
    return out


def _subject_means(values, methods):
    """Subject x method table of each subject's mean over its (finite) replicate values."""
    means = values.groupby(["subject", "method"], sort=False)["value"].mean().unstack("method")
    return means.reindex(columns=methods)


def _replicate_wide(values, methods):
    """(subject, replicate) x method table of the replicate values."""
    wide = values.pivot(index=["subject", "replicate"], columns="method", values="value")
    return wide.reindex(columns=methods)


def _subject_rows(means, pairs, base):
    rows = []
    for test in TESTS["subject"]:
        for a, b in pairs:
            pair = means[[a, b]].dropna()
            x, y = pair[a].to_numpy(float), pair[b].to_numpy(float)
            statistic, p, note = _paired_test(test, x, y)
            ci, ci_note = _paired_ci(x, y)
            rows.append({**base, "method_a": a, "method_b": b, "test": test, "n": len(x),
                         "mean_diff": float(np.mean(x - y)) if len(x) else np.nan,
                         "ci_low": ci[0], "ci_high": ci[1], "statistic": statistic, "p": p,
                         "p_holm": np.nan, "stars": "", "held": int(np.sum(x < y)),
                         "n_compared": len(x), "note": note or ci_note})
    return rows


def _replicate_rows(values, pairs, base):
    wide = _replicate_wide(values, list(dict.fromkeys(m for pair in pairs for m in pair)))
    rows = []
    for test in TESTS["replicate"]:
        for a, b in pairs:
            x, y = wide[a].dropna().to_numpy(float), wide[b].dropna().to_numpy(float)
            both = wide[[a, b]].dropna()
            statistic, p, note = _two_sample_test(test, x, y)
            ci, ci_note = _welch_ci(x, y)
            mean_diff = float(np.mean(x) - np.mean(y)) if len(x) and len(y) else np.nan
            rows.append({**base, "method_a": a, "method_b": b, "test": test,
                         "n": len(x) + len(y), "mean_diff": mean_diff, "ci_low": ci[0],
                         "ci_high": ci[1], "statistic": statistic, "p": p, "p_holm": np.nan,
                         "stars": "", "held": int(np.sum(both[a] < both[b])),
                         "n_compared": len(both), "note": note or ci_note})
    return rows


def _all_equal(v):
    """True when the values of ``v`` are equal up to rounding (see ``_EQUAL_RTOL``)."""
    return len(v) > 0 and np.ptp(v) <= _EQUAL_RTOL * np.max(np.abs(v))


def _paired_test(test, x, y):
    """(statistic, p, note) of one paired test, NaN with a note where it is undefined."""
    d = x - y
    if len(d) < 2:
        return np.nan, np.nan, f"{len(d)} complete pair(s): at least 2 needed"
    if not np.any(d):
        return np.nan, np.nan, "all differences are zero: the methods agree on every pair"
    if test == "paired_t":
        # Equal up to rounding (x + c - x is not exactly c): t would be huge or infinite
        # and scipy warns of catastrophic cancellation; the variance is really zero.
        if _all_equal(d):
            return np.nan, np.nan, "all differences are equal: zero variance, t undefined"
        res = _sps.ttest_rel(x, y)
        return float(res.statistic), float(res.pvalue), ""
    res = _sps.wilcoxon(x, y)
    n_zero = len(d) - np.count_nonzero(d)
    note = f"{n_zero} zero difference(s) dropped (zero_method='wilcox')" if n_zero else ""
    return float(res.statistic), float(res.pvalue), note


def _two_sample_test(test, x, y):
    """(statistic, p, note) of one two-sample test, NaN with a note where it is undefined."""
    if min(len(x), len(y)) < 2:
        return np.nan, np.nan, (f"{len(x)} and {len(y)} replicate value(s): at least 2 per "
                                "method needed")
    if _all_equal(np.concatenate([x, y])):
        return np.nan, np.nan, "all values are equal: the methods agree on every replicate"
    if test == "welch_t":
        if _all_equal(x) and _all_equal(y):
            return np.nan, np.nan, "each method's values are constant: zero variance, t undefined"
        res = _sps.ttest_ind(x, y, equal_var=False)
        return float(res.statistic), float(res.pvalue), ""
    res = _sps.mannwhitneyu(x, y, alternative="two-sided")
    return float(res.statistic), float(res.pvalue), ""


def _paired_ci(x, y):
    """((low, high), note): the paired t interval of mean(x - y), NaN where undefined."""
    d = x - y
    if len(d) < 2:
        return (np.nan, np.nan), f"{len(d)} complete pair(s): no interval"
    if _all_equal(d):
        return (np.nan, np.nan), "all differences are equal: zero variance, no interval"
    ci = _sps.ttest_rel(x, y).confidence_interval(CONFIDENCE)
    return (float(ci.low), float(ci.high)), ""


def _welch_ci(x, y):
    """((low, high), note): Welch's interval of mean(x) - mean(y), NaN where undefined."""
    if min(len(x), len(y)) < 2:
        return (np.nan, np.nan), "fewer than 2 replicate values in a method: no interval"
    if _all_equal(x) and _all_equal(y):
        return (np.nan, np.nan), "each method's values are constant: zero variance, no interval"
    ci = _sps.ttest_ind(x, y, equal_var=False).confidence_interval(CONFIDENCE)
    return (float(ci.low), float(ci.high)), ""


def _metric_groups(table, order):
    """(dataset, metric, level, finite rows, methods present in ``order``) per family;
    the level is "subject" with at least :data:`MIN_SUBJECTS` subjects, else "replicate"."""
    for dataset in pd.unique(table["dataset"]):
        in_dataset = table[table["dataset"] == dataset]
        level = "subject" if in_dataset["subject"].nunique() >= MIN_SUBJECTS else "replicate"
        for metric in _metric_order(in_dataset["metric"]):
            values = in_dataset[(in_dataset["metric"] == metric) & in_dataset["value"].notna()]
            yield dataset, metric, level, values, [m for m in order if m in set(values["method"])]


def _metric_order(metric_column):
    present = set(pd.unique(metric_column))
    known = [m for m in METRIC_ORDER if m in present]
    return known + sorted(present - set(known), key=str)


# --------------------------------------------------------------------------- ranks, verdict


def rank_counts(metrics, *, tissue="all"):
    """How often each method ranks 1st, 2nd, ... over the (subject, replicate) units.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy table with columns :data:`helpers.contract.COLUMNS`.
    tissue : str, optional
        Which tissue rows to rank.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, metric, method, rank, count, n``: for every method and every
        rank ``1 .. k`` (k methods with a finite value for that dataset and metric), the
        number of units in which the method had that rank, out of ``n`` units. A unit is
        one (subject, replicate index) in which every one of the k methods has a finite
        value; rank 1 is the lowest error. Tied values share the lowest of their ranks
        (``method="min"``), so a rank may be skipped.

    Examples
    --------
    >>> rows = [("d", "s0", m, r, "fa_mae", "all", v)
    ...         for m, vals in (("Syn", [3, 1]), ("Sampled", [2, 2])) for r, v in enumerate(vals)]
    >>> out = rank_counts(pd.DataFrame(rows, columns=list(METRICS_COLUMNS)))
    >>> out[["method", "rank", "count", "n"]].values.tolist()
    [['Syn', 1, 1, 2], ['Syn', 2, 1, 2], ['Sampled', 1, 1, 2], ['Sampled', 2, 1, 2]]
    """
    table, order = _check_metrics(metrics, tissue)
    rows = []
    for dataset in pd.unique(table["dataset"]):
        in_dataset = table[table["dataset"] == dataset]
        for metric in _metric_order(in_dataset["metric"]):
            values = in_dataset[(in_dataset["metric"] == metric) & in_dataset["value"].notna()]
            present = [m for m in order if m in set(values["method"])]
            ranks = _unit_ranks(values, present)
            for method in present:
                counts = ranks[method].value_counts()
                for rank in range(1, len(present) + 1):
                    rows.append({"dataset": dataset, "metric": metric, "method": method,
                                 "rank": rank, "count": int(counts.get(rank, 0)),
                                 "n": len(ranks)})
    out = pd.DataFrame(rows, columns=list(RANK_COLUMNS))
    for col in ("rank", "count", "n"):
        out[col] = out[col].astype(int)
    return out


def _unit_ranks(values, methods):
    """(subject, replicate) x method ranks (1 = lowest) over the units complete in ``methods``."""
    if not methods:
        return pd.DataFrame(columns=methods)
    complete = _replicate_wide(values, methods).dropna()
    return complete.rank(axis=1, method="min").astype(int)


def verdict(metrics, *, floors=None, exclude=None, tissue="all"):
    """The closest generator per dataset and metric, by how much, and how sure.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy table with columns :data:`helpers.contract.COLUMNS`.
    floors : dict, optional
        Dataset name -> noise floor (expected signal MAE of a perfect denoiser at the
        dataset's estimated noise); used on ``signal_mae`` rows only. NaN or None for a
        dataset: no floor.
    exclude : pandas.DataFrame, optional
        Rows ``dataset, subject, method, replicate`` of models to leave out (collapsed
        replicates, see :func:`collapsed_models`); other columns are ignored. Comparing
        the verdict with and without them tells whether they change it.
    tissue : str, optional
        Which tissue rows to judge.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, metric), columns :data:`VERDICT_COLUMNS`:

        - ``best``, ``runner_up``: the methods with the lowest and second lowest mean over
          subjects of each subject's mean over its replicates (``best_mean``,
          ``runner_mean``); ties go to the method that appears first in ``metrics``.
        - ``margin = runner_mean - best_mean`` and its :data:`CONFIDENCE` interval
          ``ci_low, ci_high``: ``level`` ``"subject"`` (at least :data:`MIN_SUBJECTS`
          subjects), the paired t interval of runner-up minus best across the subjects that
          have both; ``level`` ``"replicate"``, Welch's interval between their replicate
          values. ``n_units``: those subjects, or the replicate values of both together.
        - ``rank_held`` of ``rank_n``: the (subject, replicate) units, complete in every
          method, in which ``best`` ranked first (ties count as first); see
          :func:`rank_counts`.
        - ``floor`` and ``ratio_to_floor = best_mean / floor`` on ``signal_mae`` rows with
          a floor, NaN otherwise.
        - ``note``: why a value is missing (one method only, no finite values, zero
          variance) and how many excluded models were left out.

    Raises
    ------
    ValueError
        If a column is missing, a row is duplicated, no row has the requested ``tissue``
        or a floor is not a positive number.

    Notes
    -----
    With fewer than 3 subjects and unequal replicate counts per subject (after
    ``exclude``), the Welch interval is centred on the difference of the pooled replicate
    means, which can differ slightly from ``margin`` (a mean of subject means). With one
    subject, or equal counts, they agree.

    Examples
    --------
    >>> rows = [("d", "s0", m, r, "signal_mae", "all", v)
    ...         for m, vals in (("Syn", [0.09, 0.08]), ("Sampled", [0.07, 0.08]))
    ...         for r, v in enumerate(vals)]
    >>> v = verdict(pd.DataFrame(rows, columns=list(METRICS_COLUMNS)), floors={"d": 0.05})
    >>> v[["best", "runner_up", "rank_held", "rank_n"]].values.tolist()
    [['Sampled', 'Syn', 2, 2]]
    >>> round(float(v["margin"].iloc[0]), 3), round(float(v["ratio_to_floor"].iloc[0]), 2)
    (0.01, 1.5)
    """
    table, order = _check_metrics(metrics, tissue)
    floors = _check_floors(floors)
    n_excluded = {}
    if exclude is not None:
        table, n_excluded = _exclude(table, exclude)

    rows = []
    for dataset, metric, level, values, present in _metric_groups(table, order):
        row = _verdict_row(values, present, level)
        floor = floors.get(dataset, np.nan) if metric == "signal_mae" else np.nan
        note = row.pop("note")
        notes = [note] if note else []
        if n_excluded.get(dataset):
            notes.append(f"{n_excluded[dataset]} excluded model(s) left out")
        rows.append({"dataset": dataset, "metric": metric, **row, "floor": floor,
                     "ratio_to_floor": row["best_mean"] / floor,
                     "note": "; ".join(notes)})
    out = pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
    for col in ("n_units", "rank_held", "rank_n"):
        out[col] = out[col].astype(int)
    return out


def _verdict_row(values, present, level):
    """best, runner-up, margin, interval and rank counts of one (dataset, metric)."""
    row = {"best": "", "runner_up": "", "best_mean": np.nan, "runner_mean": np.nan,
           "margin": np.nan, "ci_low": np.nan, "ci_high": np.nan, "level": level,
           "n_units": 0, "rank_held": 0, "rank_n": 0, "note": ""}
    if not present:
        row["note"] = "no finite values"
        return row
    means = _subject_means(values, present)
    overall = means.mean(axis=0)  # NaN-skipping: subjects lacking a method are left out
    ranked = sorted(present, key=lambda m: overall[m])  # stable: ties keep table order
    best = ranked[0]
    row.update(best=best, best_mean=float(overall[best]))
    ranks = _unit_ranks(values, present)
    row.update(rank_held=int((ranks[best] == 1).sum()) if len(ranks) else 0, rank_n=len(ranks))
    if len(present) < 2:
        row["note"] = f"only one method ({best}): no runner-up, no margin"
        return row
    runner = ranked[1]
    row.update(runner_up=runner, runner_mean=float(overall[runner]),
               margin=float(overall[runner] - overall[best]))
    if level == "subject":
        pair = means[[runner, best]].dropna()
        (low, high), note = _paired_ci(pair[runner].to_numpy(float), pair[best].to_numpy(float))
        n_units = len(pair)
    else:
        wide = _replicate_wide(values, [runner, best])
        x, y = wide[runner].dropna().to_numpy(float), wide[best].dropna().to_numpy(float)
        (low, high), note = _welch_ci(x, y)
        n_units = len(x) + len(y)
    row.update(ci_low=low, ci_high=high, n_units=n_units, note=note)
    return row


def _check_floors(floors):
    if floors is None:
        return {}
    if not hasattr(floors, "items"):
        raise ValueError(f"floors must be a dict of dataset -> noise floor, got "
                         f"{type(floors).__name__}")
    out = {}
    for dataset, floor in floors.items():
        if floor is None:
            floor = np.nan
        try:
            floor = float(floor)
        except (TypeError, ValueError) as e:
            raise ValueError(f"floors[{dataset!r}] must be a positive number, got "
                             f"{floor!r}") from e
        if not np.isnan(floor) and not 0 < floor < np.inf:
            raise ValueError(f"floors[{dataset!r}] must be a positive number, got {floor!r}")
        out[dataset] = floor
    return out


def _exclude(table, exclude):
    """``table`` without the models in ``exclude``; and per dataset the count left out."""
    check_table(exclude, EXCLUDE_COLUMNS, "exclude")
    keys = list(EXCLUDE_COLUMNS)
    drop = exclude[keys].drop_duplicates()
    def key_frame(frame):
        # Names compare as strings (CSV turns subject 100307 into an int) and replicates
        # as numbers (0 and 0.0 are one replicate).
        out = frame[keys].astype(str)
        out["replicate"] = pd.to_numeric(frame["replicate"], errors="coerce").to_numpy()
        return out

    merged = key_frame(table).merge(key_frame(drop).assign(_drop=True), on=keys, how="left")
    hit = merged["_drop"].eq(True).to_numpy()
    models = table.loc[hit, keys].drop_duplicates()
    counts = models.groupby("dataset", sort=False).size().to_dict()
    return table.loc[~hit], counts
