"""Metrics per subgroup (sex, age band, site, any manifest column) and gaps between subgroups.

:func:`subgroup_table` computes any metric of :mod:`ecgfm.evaluate.metrics` within each
subgroup, with patient-bootstrap intervals, and the gaps in true-positive rate (sensitivity) and
false-positive rate at the operating point between subgroups, as DeepECG reports them: the
largest minus the smallest subgroup, and each subgroup minus a reference subgroup, each with an
interval and (for the differences to the reference) a two-sided bootstrap p-value.

All subgroups share the same resamples of patients from the whole cohort (a patient is drawn
with all their records, whatever their subgroup), so gaps are paired comparisons; a subgroup's
size varies between resamples as it would between cohorts. Thresholds are fixed (fit them on
validation data with :func:`~ecgfm.evaluate.metrics.operating_thresholds` and pass them): the
same threshold is applied to every subgroup, which is what makes rate gaps meaningful.

The max-min gap is biased upwards in small subgroups (the largest of noisy estimates minus the
smallest); its interval is the percentile interval of the resampled max-min, and it has no
p-value.

>>> import numpy as np
>>> from ecgfm.evaluate.fairness import age_bands
>>> age_bands([17, 18, 45, 80, np.nan]).tolist()
['<18', '18-39', '40-59', '80+', 'unknown']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecgfm.errors import ValidationError
from ecgfm.evaluate.bootstrap import _check_alpha, _p_values, _quantiles, _resampled
from ecgfm.evaluate.metrics import (
    WeightedMetrics,
    _canonical_metrics,
    _names,
    _prepare,
    _thresholds,
    operating_thresholds,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SubgroupResult", "age_bands", "subgroup_labels", "subgroup_table"]


def age_bands(
    ages: ArrayLike, edges: Sequence[float] = (18, 40, 60, 80), unknown: str = "unknown"
) -> NDArray[np.object_]:
    """Age band label of each record: ``<18``, ``18-39``, ``40-59``, ``60-79``, ``80+``.

    Bands are ``[edge_k, edge_k+1)``; with integer edges a band is written ``lo-(hi-1)`` (whole
    years), otherwise ``lo-<hi``. Missing ages (NaN, None) get ``unknown``. PTB-XL writes 300 for
    ages above 89, which falls in the last band.

    Returns:
        ``[N]`` object array of strings.
    """
    a = np.asarray(ages, dtype=object)
    a = np.array([np.nan if v is None else v for v in a.ravel()], dtype=np.float64)
    e = [float(x) for x in edges]
    if not e or any(b <= a_ for a_, b in zip(e, e[1:])):
        raise ValidationError(f"edges: expected increasing age edges, got {list(edges)}")

    def fmt(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    whole = all(float(x).is_integer() for x in e)
    labels = [f"<{fmt(e[0])}"]
    for lo, hi in zip(e, e[1:]):
        labels.append(f"{fmt(lo)}-{fmt(hi - 1)}" if whole else f"{fmt(lo)}-<{fmt(hi)}")
    labels.append(f"{fmt(e[-1])}+")
    idx = np.searchsorted(np.asarray(e), a, side="right")
    out = np.array([labels[i] for i in idx], dtype=object)
    out[np.isnan(a)] = unknown
    return out


def subgroup_labels(subgroups: ArrayLike, n_records: int) -> tuple[NDArray[np.intp], list[str]]:
    """``(code [N], levels)``: each record's subgroup as an index into the sorted level names;
    -1 where the label is missing (None, NaN, empty string): those records are left out."""
    import pandas as pd

    g = pd.Series(np.asarray(subgroups, dtype=object).ravel())
    if len(g) != n_records:
        raise ValidationError(f"subgroups: expected one label per record ({n_records}), got {len(g)}")
    g = g.where(g.astype(str).str.strip() != "", None)
    codes, levels = pd.factorize(g, sort=True, use_na_sentinel=True)
    return codes.astype(np.intp), [str(x) for x in levels]


@dataclass
class SubgroupResult:
    """Output of :func:`subgroup_table`.

    Attributes:
        table: rows ``(subgroup, condition)``; columns ``n``, ``n_pos``, then ``<metric>``,
            ``<metric>_low``, ``<metric>_high`` per metric.
        gaps: rows ``(condition, metric, comparison)`` for metric ``sensitivity`` (the TPR) and
            ``fpr``, comparison ``"max-min"`` or ``"<subgroup> - <reference>"``; columns ``gap``,
            ``low``, ``high``, ``p_value`` (NaN for max-min).
        reference: the reference subgroup.
        thresholds: ``[C]`` thresholds used.
        levels: subgroup names, sorted.
    """

    table: pd.DataFrame
    gaps: pd.DataFrame
    reference: str
    thresholds: NDArray[np.float64]
    levels: list[str]


GAP_METRICS = ("sensitivity", "fpr")


def subgroup_table(
    y_true: ArrayLike,
    y_score: ArrayLike,
    subgroups: ArrayLike,
    thresholds: ArrayLike | None = None,
    groups: ArrayLike | None = None,
    metrics: str | Iterable[str] = ("auroc", "ap", "sensitivity", "specificity"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    names: Sequence[str] | None = None,
    reference: str | None = None,
    method: str = "youden",
    target: float | None = None,
    n_jobs: int | None = None,
    batch: int = 500,
) -> SubgroupResult:
    """Metrics per subgroup and condition, with TPR and FPR gaps between subgroups.

    Args:
        y_true: ``[N, C]`` labels (0, 1, NaN = missing) or ``[N]``.
        y_score: same shape, scores.
        subgroups: ``[N]`` subgroup label per record (e.g. sex, :func:`age_bands`, site);
            missing labels leave the record out.
        thresholds: ``[C]`` operating thresholds, e.g. fitted on validation data. Default:
            fitted on these data with ``method``/``target`` (optimistic).
        groups: ``[N]`` patient ids for the bootstrap (None: records are independent).
        metrics: metrics reported per subgroup (any of
            :data:`~ecgfm.evaluate.metrics.METRICS`).
        n_resamples, seed, alpha: bootstrap settings (``n_resamples=0``: no intervals).
        names: C condition names.
        reference: subgroup the others are compared with (default: the largest).
        n_jobs, batch: as :func:`~ecgfm.evaluate.bootstrap.bootstrap`.

    Returns:
        :class:`SubgroupResult` (``.table`` and ``.gaps`` DataFrames).
    """
    import pandas as pd

    y, s, _ = _prepare(y_true, y_score)
    n, n_c = y.shape
    alpha = _check_alpha(alpha)
    names = _names(names, n_c)
    shown = _canonical_metrics(metrics)
    wanted = tuple(dict.fromkeys((*shown, *GAP_METRICS)))
    codes, levels = subgroup_labels(subgroups, n)
    if not levels:
        raise ValidationError("subgroups: every label is missing")
    sizes = np.bincount(codes[codes >= 0], minlength=len(levels))
    if reference is None:
        reference = levels[int(np.argmax(sizes))]
    elif str(reference) not in levels:
        raise ValidationError(f"reference: {reference!r} is not a subgroup (subgroups: {', '.join(levels)})")
    reference = str(reference)
    ref = levels.index(reference)
    if thresholds is None:
        thr = np.atleast_1d(operating_thresholds(y, s, method, target))
    else:
        thr = _thresholds(thresholds, n_c)

    masks = [codes == k for k in range(len(levels))]
    engines = [WeightedMetrics(y[m], s[m], wanted, thr, n_jobs=n_jobs) for m in masks]
    points = [{k: v[0] for k, v in e(np.ones(int(m.sum()), dtype=np.int8)).items()} for e, m in zip(engines, masks)]
    n_b = int(n_resamples)
    if n_b < 0:
        raise ValidationError(f"n_resamples: expected >= 0, got {n_resamples}")
    samples: list[dict[str, NDArray[np.float64]]] = []
    if n_b:
        subsets = [_Masked(e, m) for e, m in zip(engines, masks)]
        samples = _resampled(subsets, groups, n, n_b, seed, max(1, int(batch)))

    # per subgroup x condition
    frames = []
    for k, lev in enumerate(levels):
        yk = y[masks[k]]
        cols: dict[str, Any] = {"n": (~np.isnan(yk)).sum(0), "n_pos": (yk == 1).sum(0)}
        for m in shown:
            cols[m] = points[k][m]
            if n_b:
                cols[f"{m}_low"], cols[f"{m}_high"] = _quantiles(samples[k][m], alpha)
            else:
                cols[f"{m}_low"] = cols[f"{m}_high"] = np.full(n_c, np.nan)
        idx = pd.MultiIndex.from_arrays([[lev] * n_c, names], names=["subgroup", "condition"])
        frames.append(pd.DataFrame(cols, index=idx))
    table = pd.concat(frames)

    # gaps at the operating point
    rows = []
    for m in GAP_METRICS:
        pt = np.stack([p[m] for p in points])  # [K, C]
        with np.errstate(invalid="ignore"):
            spread = _nanmax(pt, 0) - _nanmin(pt, 0)
        if n_b:
            rs = np.stack([smp[m] for smp in samples])  # [K, B, C]
            lo, hi = _quantiles(_nanmax(rs, 0) - _nanmin(rs, 0), alpha)
        else:
            lo = hi = np.full(n_c, np.nan)
        for c, name in enumerate(names):
            rows.append((name, m, "max-min", spread[c], lo[c], hi[c], np.nan))
        for k, lev in enumerate(levels):
            if k == ref:
                continue
            d = pt[k] - pt[ref]
            if n_b:
                ds = rs[k] - rs[ref]
                lo, hi = _quantiles(ds, alpha)
                p = _p_values(ds)
            else:
                lo = hi = p = np.full(n_c, np.nan)
            for c, name in enumerate(names):
                rows.append((name, m, f"{lev} - {reference}", d[c], lo[c], hi[c], p[c]))
    gaps = pd.DataFrame(rows, columns=["condition", "metric", "comparison", "gap", "low", "high", "p_value"])
    gaps = gaps.set_index(["condition", "metric", "comparison"]).sort_index(level=[0, 1], sort_remaining=False)
    return SubgroupResult(table=table, gaps=gaps, reference=reference, thresholds=thr, levels=levels)


class _Masked:
    """A subgroup's engine, called with the subgroup's columns of the whole cohort's weights."""

    def __init__(self, engine: WeightedMetrics, mask: NDArray[np.bool_]) -> None:
        self.engine, self.mask = engine, mask
        self.metrics, self.n_conditions = engine.metrics, engine.n_conditions

    def __call__(self, w: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        return self.engine(w[:, self.mask])


def _nanmax(x: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    return np.where(np.isnan(x).all(axis), np.nan, np.nanmax(np.where(np.isnan(x), -np.inf, x), axis))


def _nanmin(x: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    return np.where(np.isnan(x).all(axis), np.nan, np.nanmin(np.where(np.isnan(x), np.inf, x), axis))

