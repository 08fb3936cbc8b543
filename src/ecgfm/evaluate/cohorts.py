"""One model on several datasets: per-cohort tables and one table of conditions x cohorts.

Typical use: thresholds fitted on the internal validation split are carried, unchanged, to the
internal test split and to every external cohort; each cohort gets an
:func:`~ecgfm.evaluate.metrics.evaluate` table with patient-bootstrap intervals, and
:func:`cohort_table` lays one metric out as conditions x cohorts, ready for CSV or markdown.

>>> import pandas as pd
>>> from ecgfm.evaluate.cohorts import cohort_table
>>> internal = pd.DataFrame({"auroc": [0.91], "auroc_low": [0.89], "auroc_high": [0.93]},
...                         index=pd.Index(["AF"], name="condition"))
>>> external = pd.DataFrame({"auroc": [0.85]}, index=pd.Index(["AF"], name="condition"))
>>> cohort_table({"internal": internal, "external": external}).loc["AF"].tolist()
['0.910 [0.890, 0.930]', '0.850']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.errors import ValidationError
from ecgfm.evaluate.metrics import THRESHOLD_METRICS, _canonical_metrics, canonical_metric

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Cohort", "cohort_table", "evaluate_cohorts", "to_markdown"]

MACRO = "macro"
"""Index label of the macro-average row that :func:`evaluate_cohorts` appends."""


@dataclass(frozen=True)
class Cohort:
    """One dataset's labels and one model's scores on it.

    Attributes:
        y_true: ``[N, C]`` labels (0, 1, NaN = missing), columns in the order of the names.
        y_score: ``[N, C]`` scores.
        groups: ``[N]`` patient ids for the bootstrap (None: records are independent).
    """

    y_true: ArrayLike
    y_score: ArrayLike
    groups: ArrayLike | None = None


def evaluate_cohorts(
    cohorts: Mapping[str, Cohort | tuple[Any, ...]],
    names: Sequence[str],
    thresholds: ArrayLike | None = None,
    metrics: str | Iterable[str] = ("auroc", "ap"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    method: str = "youden",
    target: float | None = None,
    n_jobs: int | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`~ecgfm.evaluate.metrics.evaluate` on each cohort, with bootstrap intervals.

    Args:
        cohorts: ``{cohort name: Cohort}`` (or ``(y_true, y_score[, groups])`` tuples), in the
            order the columns should appear.
        names: the C condition names (same columns in every cohort).
        thresholds: ``[C]`` operating thresholds carried to every cohort (e.g. fitted on the
            internal validation split). Default: fitted within each cohort (optimistic).
        metrics: metrics that get ``<metric>_low`` / ``<metric>_high`` interval columns.
        n_resamples: 0 for point estimates only.
        seed, alpha, method, target, n_jobs: as :func:`~ecgfm.evaluate.bootstrap.bootstrap`
            and :func:`~ecgfm.evaluate.metrics.evaluate`.

    Returns:
        ``{cohort name: DataFrame}``: the ``evaluate`` columns, the interval columns, and a last
        row ``"macro"`` (nanmean over conditions of every metric, with the macro interval).
    """
    import pandas as pd

    from ecgfm.evaluate.bootstrap import bootstrap
    from ecgfm.evaluate.metrics import evaluate

    names = [str(x) for x in names]
    if MACRO in names:
        raise ValidationError(f"names: a condition may not be called {MACRO!r} (the macro row's label)")
    ci_metrics = _canonical_metrics(metrics)
    out: dict[str, pd.DataFrame] = {}
    for cname, cohort in cohorts.items():
        if not isinstance(cohort, Cohort):
            cohort = Cohort(*cohort)
        table = evaluate(cohort.y_true, cohort.y_score, names, thresholds, method, target, n_jobs=n_jobs)
        value_cols = ["auroc", "ap", "brier", "fmax", *THRESHOLD_METRICS[:5]]
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                macro = {c: float(np.nanmean(table[c].to_numpy(dtype=float))) for c in value_cols}
        table = pd.concat([table, pd.DataFrame([macro], index=pd.Index([MACRO], name="condition"))])
        if n_resamples:
            res = bootstrap(
                cohort.y_true, cohort.y_score, cohort.groups, ci_metrics, n_resamples, seed, alpha,
                thresholds=table["threshold"].to_numpy(dtype=float)[:-1], names=names, n_jobs=n_jobs,
            )
            ci = res.table(macro=True)
            for m in ci_metrics:
                table[f"{m}_low"] = ci[f"{m}_low"]
                table[f"{m}_high"] = ci[f"{m}_high"]
        out[str(cname)] = table
    return out


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def cohort_table(
    tables: Mapping[str, pd.DataFrame],
    metric: str = "auroc",
    digits: int = 3,
    ci: bool = True,
    conditions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One metric as conditions (rows) x cohorts (columns).

    Args:
        tables: ``{cohort name: per-condition DataFrame}`` indexed by condition, with a column
            named ``metric`` (and optionally ``<metric>_low``, ``<metric>_high``), e.g. from
            :func:`evaluate_cohorts`, :func:`~ecgfm.evaluate.metrics.evaluate` or
            ``BootstrapResult.table()``.
        metric: column to show (aliases accepted: ``"average_precision"`` -> ``"ap"``).
        digits: decimals in the formatted cells.
        ci: format cells as ``"0.912 [0.901, 0.923]"`` where the interval columns exist.
            ``ci=False`` returns the plain float values (NaN where missing), for CSV.
        conditions: rows to show, in this order (default: every condition of every table, in
            order of first appearance, ``"macro"`` last).

    Returns:
        DataFrame indexed by condition (index name ``condition``), one column per cohort;
        strings (``"n/a"`` where a cohort lacks the condition or the metric is undefined) when
        ``ci`` is True, floats otherwise.
    """
    import pandas as pd

    if not tables:
        raise ValidationError("tables: no cohort given")
    try:
        metric = canonical_metric(metric)
    except ValidationError:
        metric = str(metric)  # any other numeric column (e.g. "n_pos") can be laid out too
    for name, df in tables.items():
        if metric not in df.columns:
            raise ValidationError(f"cohort {name!r}: no column {metric!r} (columns: {', '.join(map(str, df.columns))})")
    if conditions is None:
        order: dict[str, None] = {}
        for df in tables.values():
            order.update((str(i), None) for i in df.index)
        rows = [r for r in order if r != MACRO] + ([MACRO] if MACRO in order else [])
    else:
        rows = [str(c) for c in conditions]
    out: dict[str, list[Any]] = {}
    for name, df in tables.items():
        df = df.set_axis([str(i) for i in df.index])
        has_ci = ci and f"{metric}_low" in df.columns and f"{metric}_high" in df.columns
        col: list[Any] = []
        for r in rows:
            if r not in df.index:
                col.append("n/a" if ci else np.nan)
                continue
            v = float(df.at[r, metric])
            if not ci:
                col.append(v)
            elif has_ci and np.isfinite(v):
                lo, hi = float(df.at[r, f"{metric}_low"]), float(df.at[r, f"{metric}_high"])
                col.append(f"{_fmt(v, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]")
            else:
                col.append(_fmt(v, digits))
        out[str(name)] = col
    return pd.DataFrame(out, index=pd.Index(rows, name="condition"))


def to_markdown(df: pd.DataFrame, digits: int = 3, index: bool = True) -> str:
    """A DataFrame as a GitHub markdown table (floats with ``digits`` decimals, NaN as n/a).

    Needs no extra package (``DataFrame.to_markdown`` needs ``tabulate``).
    """

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return _fmt(float(v), digits)
        return str(v).replace("|", "\\|")

    head = ([str(df.index.name or "")] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in zip(df.index, df.itertuples(index=False)):
        cells = ([cell(i)] if index else []) + [cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
