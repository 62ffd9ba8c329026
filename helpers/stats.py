"""Paired tests between generators, with Holm correction and significance stars.

Every pair of methods is compared per dataset and metric across subjects, pairing each
subject's value under one method with the same subject's value under the other: a paired
t-test (:func:`scipy.stats.ttest_rel`) and a Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`). The p-values of one family, all method pairs of one
(dataset, metric, test), are Holm-corrected with
:func:`statsmodels.stats.multitest.multipletests`.

A dataset with fewer than 3 subjects cannot support a subject-level test. Given the
per-voxel errors it is tested over voxels instead, and every such row carries a caveat:
voxels of one brain are not independent samples, so those p-values overstate
significance.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as _sps
from statsmodels.stats.multitest import multipletests

from helpers import METHODS
from helpers.config import check_methods
from helpers.metrics import COLUMNS, METRICS

__all__ = ["compare_methods", "stars", "METRIC_ORDER", "TESTS", "MIN_SUBJECTS", "STRONG_P"]

METRIC_ORDER = METRICS  # defined once, in helpers.metrics
"""Metrics in the order the method paper reports them; others follow, sorted."""

TESTS = ("paired_t", "wilcoxon")
"""The two paired tests, in the order their rows appear."""

MIN_SUBJECTS = 3
"""Fewest subjects in a dataset for subject-level tests."""

STRONG_P = 1e-8
"""Corrected p below which a difference gets two stars (design.md)."""

_EQUAL_RTOL = 1e-12
"""Differences whose spread is below this fraction of their size count as all equal."""

METRICS_COLUMNS = tuple(COLUMNS)
VOXELS_COLUMNS = ("dataset", "subject", "method", "metric", "voxel", "value")
RESULT_COLUMNS = (
    "dataset", "metric", "tissue", "method_a", "method_b", "test", "level", "n",
    "mean_diff", "statistic", "p", "p_holm", "stars", "caveat", "note",
)


def stars(p, *, alpha=0.05, strong=STRONG_P):
    """Significance stars for (corrected) p-values.

    Parameters
    ----------
    p : float or array_like or pandas.Series
        p-values; NaN means "not tested" and gets no star.
    alpha : float, optional
        One star below this p (design.md: 0.05).
    strong : float, optional
        Two stars below this p (design.md: 1e-8).

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


def compare_methods(metrics, *, voxels=None, tissue="all", alpha=0.05):
    """Paired tests between every pair of methods, per dataset and metric.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy table with columns ``dataset, subject, method, metric, tissue, value``, one
        row per (dataset, subject, method, metric, tissue).
    voxels : pandas.DataFrame, optional
        Per-voxel errors with columns ``dataset, subject, method, metric, voxel, value``
        (and optionally ``tissue``; without it every voxel counts as tissue ``"all"``).
        Used only for datasets with fewer than 3 subjects. NaN values are dropped pairwise.
    tissue : str, optional
        Which tissue rows of ``metrics`` to test (``"all"``, ``"WM"``, ``"GM"``, ``"CSF"``).
    alpha : float, optional
        Family-wise level passed to the Holm correction, and the one-star threshold.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, metric, test, method pair), columns ``dataset, metric,
        tissue, method_a, method_b, test, level, n, mean_diff, statistic, p, p_holm,
        stars, caveat, note``:

        - ``test`` is ``"paired_t"`` or ``"wilcoxon"``; ``level`` is ``"subject"`` or
          ``"voxel"``; ``n`` the number of complete pairs used;
        - ``mean_diff`` the mean of ``a - b`` over those pairs (negative: ``method_a``
          has the lower error);
        - ``statistic`` is t, or the Wilcoxon W (scipy's smaller rank sum);
        - ``caveat`` is empty for subject-level rows and explains voxel-level or
          untestable rows of datasets with fewer than 3 subjects;
        - ``note`` explains a NaN p in a degenerate case (fewer than 2 pairs, all
          differences zero, differences constant) or zero differences Wilcoxon dropped.

    Raises
    ------
    ValueError
        If a column is missing, a method name is unknown, a row is duplicated, or no
        row has the requested ``tissue``.

    Notes
    -----
    Pairs follow ``helpers.METHODS`` order (``method_a`` comes first), among the methods
    with at least one value for that dataset and metric. The Holm family is all pairs
    of one (dataset, metric, test); pairs whose p is NaN are left out of the family, so
    ``m`` is the number of pairs actually tested. The Holm-adjusted p of the i-th
    smallest of ``m`` p-values is ``min(1, max_{j <= i} (m - j + 1) p_(j))``.

    Wilcoxon uses scipy's defaults (``zero_method="wilcox"``: zero differences are
    dropped; exact distribution for small samples without ties, normal approximation
    otherwise). When every difference is zero scipy returns p = 1 with warnings; here the
    p is NaN and ``note`` says why. When the differences are all equal but not zero (to
    12 significant digits, as rounding leaves ``(x + c) - x`` not exactly ``c``), t is
    undefined (zero variance; scipy would return t = inf, p = 0, or a huge t with a
    precision-loss warning) and is reported as NaN likewise.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test procedure.
       Scandinavian Journal of Statistics 6(2), 65-70.

    Examples
    --------
    >>> import pandas as pd
    >>> syn = [0.10, 0.12, 0.11, 0.13, 0.09]
    >>> rows = [("d", f"s{i}", "Syn", "signal_mae", "all", v) for i, v in enumerate(syn)]
    >>> rows += [("d", f"s{i}", "RandomWM", "signal_mae", "all", v + 0.5 + i / 100)
    ...          for i, v in enumerate(syn)]
    >>> table = pd.DataFrame(rows, columns=["dataset", "subject", "method", "metric",
    ...                                     "tissue", "value"])
    >>> out = compare_methods(table)
    >>> out[["method_a", "method_b", "test", "level", "n"]].values.tolist()
    [['Syn', 'RandomWM', 'paired_t', 'subject', 5], ['Syn', 'RandomWM', 'wilcoxon', 'subject', 5]]
    >>> round(float(out["mean_diff"].iloc[0]), 3), out["stars"].tolist()
    (-0.52, ['*', ''])

    With 5 subjects the exact Wilcoxon p cannot go below 2 / 2**5 = 0.0625, hence no star.
    """
    _check_columns(metrics, METRICS_COLUMNS, "metrics")
    _check_methods(metrics["method"], "metrics")
    _check_unique(metrics, ["dataset", "subject", "method", "metric", "tissue"], "metrics")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    table = metrics[metrics["tissue"] == tissue]
    if table.empty:
        raise ValueError(f"metrics has no rows with tissue={tissue!r}; tissues present: "
                         f"{sorted(metrics['tissue'].unique().tolist())}")
    if voxels is not None:
        _check_columns(voxels, VOXELS_COLUMNS, "voxels")
        _check_methods(voxels["method"], "voxels")
        keys = ["dataset", "subject", "method", "metric", "voxel"]
        if "tissue" in voxels.columns:
            voxels = voxels[voxels["tissue"] == tissue]
            keys.append("tissue")
        elif tissue != "all":
            voxels = voxels.iloc[:0]
        _check_unique(voxels, keys, "voxels")

    rows = []
    for dataset in pd.unique(table["dataset"]):
        in_dataset = table[table["dataset"] == dataset]
        n_subjects = in_dataset["subject"].nunique()
        for metric in _metric_order(in_dataset["metric"]):
            values = in_dataset[in_dataset["metric"] == metric]
            base = {"dataset": dataset, "metric": metric, "tissue": tissue}
            if n_subjects >= MIN_SUBJECTS:
                wide = values.pivot(index="subject", columns="method", values="value")
                rows += _pair_rows(wide, base, level="subject", caveat="")
                continue
            wide_voxels = None
            if voxels is not None:
                sel = voxels[(voxels["dataset"] == dataset) & (voxels["metric"] == metric)]
                if not sel.empty:
                    wide_voxels = sel.pivot(index=["subject", "voxel"], columns="method",
                                            values="value")
            if wide_voxels is not None:
                caveat = (f"only {n_subjects} subject(s): voxel-level tests; voxels are not "
                          "independent samples, so p-values overstate significance")
                rows += _pair_rows(wide_voxels, base, level="voxel", caveat=caveat)
            else:
                why = ("no voxel table was given" if voxels is None
                       else f"the voxel table has no {metric!r} values for this dataset"
                       + (f" and tissue {tissue!r}" if tissue != "all" else ""))
                caveat = (f"only {n_subjects} subject(s): too few for subject-level tests and "
                          f"{why}; voxel-level tests would treat voxels as independent "
                          "samples, which overstates significance")
                wide = values.pivot(index="subject", columns="method", values="value")
                rows += _pair_rows(wide, base, level="subject", caveat=caveat, run=False)

    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    if out.empty:
        return out
    out["n"] = out["n"].astype(int)
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["dataset", "metric", "test"], sort=False).groups.items():
        p = out.loc[idx, "p"]
        tested = p.notna()
        if tested.any():
            out.loc[p.index[tested], "p_holm"] = multipletests(
                p[tested].to_numpy(), alpha=alpha, method="holm")[1]
    out["stars"] = stars(out["p_holm"].to_numpy(), alpha=alpha)
    return out


def _pair_rows(wide, base, *, level, caveat, run=True):
    """Rows for every method pair of one (dataset, metric); ``wide`` is unit × method."""
    present = [m for m in METHODS if m in wide.columns and wide[m].notna().any()]
    rows = []
    for test in TESTS:
        for a, b in itertools.combinations(present, 2):
            pair = wide[[a, b]].dropna()
            x, y = pair[a].to_numpy(float), pair[b].to_numpy(float)
            if run:
                statistic, p, note = _paired_test(test, x, y)
            else:
                statistic, p, note = np.nan, np.nan, "not tested"
            rows.append({**base, "method_a": a, "method_b": b, "test": test, "level": level,
                         "n": len(x), "mean_diff": float(np.mean(x - y)) if len(x) else np.nan,
                         "statistic": statistic, "p": p, "p_holm": np.nan, "stars": "",
                         "caveat": caveat, "note": note})
    return rows


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
        if np.ptp(d) <= _EQUAL_RTOL * np.max(np.abs(d)):
            return np.nan, np.nan, "all differences are equal: zero variance, t undefined"
        res = _sps.ttest_rel(x, y)
        return float(res.statistic), float(res.pvalue), ""
    res = _sps.wilcoxon(x, y)
    n_zero = len(d) - np.count_nonzero(d)
    note = f"{n_zero} zero difference(s) dropped (zero_method='wilcox')" if n_zero else ""
    return float(res.statistic), float(res.pvalue), note


def _metric_order(metric_column):
    present = set(pd.unique(metric_column))
    known = [m for m in METRIC_ORDER if m in present]
    return known + sorted(present - set(known))


def _check_columns(frame, required, name):
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; expected {list(required)}, "
                         f"got {list(frame.columns)}")


def _check_methods(names, name):
    check_methods(sorted(set(pd.unique(pd.Series(names))), key=str), where=name)


def _check_unique(frame, keys, name):
    dup = frame.duplicated(subset=keys, keep=False)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"{name} has {int(dup.sum())} rows sharing their ({', '.join(keys)}) "
                         f"with another row, e.g. {first}; expected one row per key")
