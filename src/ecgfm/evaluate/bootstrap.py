"""Bootstrap confidence intervals resampled by patient, and paired comparisons of two models.

Resampling by patient: each resample draws as many patients as there are, with replacement,
and takes every record of each drawn patient (records of one patient are not independent, so
resampling records would give intervals that are too narrow). One resample is therefore one
weight vector shared by all conditions, ``w[b, i]`` = how many times record ``i``'s patient was
drawn (:func:`resample_weights`), and every metric is computed from the weights with
:class:`~ecgfm.evaluate.metrics.WeightedMetrics`: for 1,000 conditions x 10,000 records x
1,000 resamples that is seconds, not hours, and equals scikit-learn run on the resampled
records (:func:`resample_indices`) to floating-point rounding.

Intervals are percentile intervals: the ``alpha/2`` and ``1 - alpha/2`` quantiles (linear
interpolation) of the resampled values. Resamples where a metric is undefined (e.g. no positive
drawn) are left out of that condition's interval; ``n_valid`` counts the ones used. The macro
average of a resample is the mean over the conditions defined in it; its interval comes from
those per-resample macros, so it reflects the correlation between conditions.

``interval="basic"`` gives the basic (reverse percentile) interval ``[2 * point - q_high,
2 * point - q_low]`` instead, which corrects for a shift of the resampled values: average
precision on a resample is biased upwards (a drawn-twice record ties with itself, and rare
positives lose distinct scores), by about +0.003 on average and +0.006 for conditions with fewer
than 50 positives in ``benchmarks/bench_bootstrap.py``'s data. That is small next to one
condition's interval, but a macro average over many conditions has an interval narrow enough
that its percentile interval can miss the point estimate; AUROC shows no such shift.

Paired comparisons use the same resamples for both models. The two-sided p-value of "no
difference" is ``min(1, 2 * min((1 + #{d_b <= 0}) / (1 + n), (1 + #{d_b >= 0}) / (1 + n)))``
over the ``n`` defined resampled differences ``d_b`` (the percentile-interval inversion, with the
usual +1 so that it is never 0; its smallest value is ``2 / (n + 1)``).

Resample ``b`` of seed ``s`` is drawn by ``numpy.random.default_rng([s, b])``, so a resample does
not depend on how many others are drawn or in which chunks.

>>> import numpy as np
>>> from ecgfm.evaluate.bootstrap import bootstrap
>>> rng = np.random.default_rng(0)
>>> y = rng.random((300, 3)) < 0.3
>>> s = y + rng.normal(size=(300, 3))
>>> res = bootstrap(y, s, groups=np.arange(300) // 2, n_resamples=200, names=["a", "b", "c"])
>>> res.table().columns.tolist()
['auroc', 'auroc_low', 'auroc_high', 'ap', 'ap_low', 'ap_high']
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecgfm.errors import ValidationError
from ecgfm.evaluate.metrics import (
    WeightedMetrics,
    _canonical_metrics,
    _names,
    _prepare,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BootstrapResult", "PairedResult", "bootstrap", "paired_bootstrap", "patient_codes",
    "resample_indices", "resample_weights",
]


def patient_codes(groups: ArrayLike | None, n_records: int) -> tuple[NDArray[np.intp], int]:
    """``(code [N], n_patients)``: each record's patient as 0..P-1 (None: every record its own).

    Args:
        groups: ``[N]`` patient ids (any hashable values: ints, strings).
    """
    if groups is None:
        return np.arange(n_records), n_records
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n_records:
        raise ValidationError(f"groups: expected one patient id per record ({n_records}), got shape {g.shape}")
    if g.dtype.kind == "f" and np.isnan(g).any():
        raise ValidationError("groups: patient ids must not be NaN")
    if g.dtype == object:
        import pandas as pd

        codes, uniques = pd.factorize(g, use_na_sentinel=True)
        if (codes < 0).any():
            raise ValidationError("groups: patient ids must not be missing (None/NaN)")
        return codes.astype(np.intp), len(uniques)
    _, codes = np.unique(g, return_inverse=True)
    return codes.astype(np.intp), int(codes.max(initial=-1)) + 1


def _draw(n_patients: int, seed: int, b: int) -> NDArray[np.int64]:
    """How many times each patient is drawn in resample ``b`` (``[P]``, sums to P)."""
    rng = np.random.default_rng([int(seed), int(b)])
    return np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)


def resample_weights(
    groups: ArrayLike | None,
    n_resamples: int,
    seed: int = 0,
    *,
    n_records: int | None = None,
    start: int = 0,
) -> NDArray[np.int32]:
    """Patient-bootstrap weights: ``w[b, i]`` = times record ``i``'s patient is drawn.

    Args:
        groups: ``[N]`` patient id per record, or None (each record its own patient; then give
            ``n_records``).
        n_resamples: B.
        seed: non-negative integer; resample ``b`` uses ``default_rng([seed, b])``.
        start: index of the first resample (resamples ``start .. start + B - 1``), to draw in
            chunks.

    Returns:
        ``[B, N]`` int32. Each row draws P patients out of P with replacement.
    """
    if groups is None and n_records is None:
        raise ValidationError("resample_weights: give groups or n_records")
    n = int(n_records) if groups is None else len(np.asarray(groups))
    codes, n_patients = patient_codes(groups, n)
    _check_seed(seed)
    w = np.empty((int(n_resamples), n), dtype=np.int32)
    for k in range(int(n_resamples)):
        w[k] = _draw(n_patients, seed, start + k)[codes]
    return w


def resample_indices(
    groups: ArrayLike | None, n_resamples: int, seed: int = 0, *, n_records: int | None = None
) -> Iterator[NDArray[np.intp]]:
    """The record indices of each resample of :func:`resample_weights` (same seed, same draws).

    Yields ``[M_b]`` arrays: record ``i`` repeated ``w[b, i]`` times (records grouped rather than
    in draw order; AUROC, AP and the other metrics do not depend on the order). For checking
    against tools that take resampled arrays, e.g. ``roc_auc_score(y[idx], s[idx])``.
    """
    if groups is None and n_records is None:
        raise ValidationError("resample_indices: give groups or n_records")
    n = int(n_records) if groups is None else len(np.asarray(groups))
    codes, n_patients = patient_codes(groups, n)
    _check_seed(seed)
    for b in range(int(n_resamples)):
        yield np.repeat(np.arange(n), _draw(n_patients, seed, b)[codes])


def _check_seed(seed: int) -> None:
    if int(seed) < 0:
        raise ValidationError(f"seed: expected a non-negative integer, got {seed}")


def _quantiles(samples: NDArray[np.float64], alpha: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, quietly
        q = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return q[0], q[1]


def _interval(
    samples: NDArray[np.float64], point: NDArray[np.float64], alpha: float, interval: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lo, hi = _quantiles(samples, alpha)
    if interval == "basic":
        return 2 * point - hi, 2 * point - lo
    return lo, hi


def _check_interval(interval: str) -> str:
    if interval not in ("percentile", "basic"):
        raise ValidationError(f"interval: expected 'percentile' or 'basic', got {interval!r}")
    return interval


def _nanmean(x: NDArray[np.float64], axis: int | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _check_alpha(alpha: float) -> float:
    if not 0 < float(alpha) < 1:
        raise ValidationError(f"alpha: expected a value in (0, 1), got {alpha}")
    return float(alpha)


def _p_values(d: NDArray[np.float64]) -> NDArray[np.float64]:
    """Two-sided bootstrap p-values of "difference = 0" per column of ``d`` ``[B, ...]``."""
    ok = ~np.isnan(d)
    n = ok.sum(axis=0)
    le = ((d <= 0) & ok).sum(axis=0)
    ge = ((d >= 0) & ok).sum(axis=0)
    p = np.minimum(1.0, 2.0 * np.minimum(le + 1, ge + 1) / (n + 1.0))
    return np.where(n > 0, p, np.nan)


@dataclass
class BootstrapResult:
    """Point estimates and bootstrap intervals per condition and for the macro average.

    Attributes:
        names: the C condition names.
        metrics: canonical metric names.
        point: ``{metric: [C]}`` on the full data.
        low, high: ``{metric: [C]}`` interval bounds.
        n_valid: ``{metric: [C]}`` resamples in which the metric was defined.
        macro: ``{metric: (point, low, high)}`` of the nanmean over conditions.
        samples: ``{metric: [B, C]}`` resampled values (``keep_samples=True``), else empty.
        n_resamples, alpha, seed, interval: the settings used.
    """

    names: list[str]
    metrics: tuple[str, ...]
    point: dict[str, NDArray[np.float64]]
    low: dict[str, NDArray[np.float64]]
    high: dict[str, NDArray[np.float64]]
    n_valid: dict[str, NDArray[np.int64]]
    macro: dict[str, tuple[float, float, float]]
    n_resamples: int
    alpha: float
    seed: int
    samples: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False)
    interval: str = "percentile"

    def table(self, macro: bool = False) -> pd.DataFrame:
        """Columns ``<metric>``, ``<metric>_low``, ``<metric>_high`` per metric, one row per
        condition (index ``condition``), plus a last row ``"macro"`` when ``macro=True``."""
        import pandas as pd

        cols: dict[str, NDArray[np.float64]] = {}
        for m in self.metrics:
            cols[m], cols[f"{m}_low"], cols[f"{m}_high"] = self.point[m], self.low[m], self.high[m]
        df = pd.DataFrame(cols, index=pd.Index(self.names, name="condition"))
        if macro:
            row = {}
            for m in self.metrics:
                row[m], row[f"{m}_low"], row[f"{m}_high"] = self.macro[m]
            df = pd.concat([df, pd.DataFrame([row], index=pd.Index(["macro"], name="condition"))])
        return df


@dataclass
class PairedResult:
    """Model A minus model B on the same resamples, per condition and for the macro average.

    Attributes:
        names, metrics: as :class:`BootstrapResult`.
        point_a, point_b: ``{metric: [C]}`` each model's value on the full data.
        diff: ``{metric: [C]}`` ``point_a - point_b``.
        low, high: ``{metric: [C]}`` interval of the difference.
        p_value: ``{metric: [C]}`` two-sided bootstrap p-value of "no difference".
        macro: ``{metric: (diff, low, high, p_value)}`` of the macro averages' difference.
        samples: ``{metric: [B, C]}`` resampled differences (``keep_samples=True``).
        n_resamples, alpha, seed, interval: the settings used.
    """

    names: list[str]
    metrics: tuple[str, ...]
    point_a: dict[str, NDArray[np.float64]]
    point_b: dict[str, NDArray[np.float64]]
    diff: dict[str, NDArray[np.float64]]
    low: dict[str, NDArray[np.float64]]
    high: dict[str, NDArray[np.float64]]
    p_value: dict[str, NDArray[np.float64]]
    macro: dict[str, tuple[float, float, float, float]]
    n_resamples: int
    alpha: float
    seed: int
    samples: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False)
    interval: str = "percentile"

    def table(self, macro: bool = False) -> pd.DataFrame:
        """Columns ``<metric>_a``, ``<metric>_b``, ``<metric>_diff``, ``<metric>_diff_low``,
        ``<metric>_diff_high``, ``<metric>_p`` per metric; a ``"macro"`` row when asked."""
        import pandas as pd

        cols: dict[str, NDArray[np.float64]] = {}
        for m in self.metrics:
            cols[f"{m}_a"], cols[f"{m}_b"] = self.point_a[m], self.point_b[m]
            cols[f"{m}_diff"], cols[f"{m}_diff_low"] = self.diff[m], self.low[m]
            cols[f"{m}_diff_high"], cols[f"{m}_p"] = self.high[m], self.p_value[m]
        df = pd.DataFrame(cols, index=pd.Index(self.names, name="condition"))
        if macro:
            row: dict[str, float] = {}
            for m in self.metrics:
                d, lo, hi, p = self.macro[m]
                row[f"{m}_a"] = float(_nanmean(self.point_a[m]))
                row[f"{m}_b"] = float(_nanmean(self.point_b[m]))
                row[f"{m}_diff"], row[f"{m}_diff_low"], row[f"{m}_diff_high"], row[f"{m}_p"] = d, lo, hi, p
            df = pd.concat([df, pd.DataFrame([row], index=pd.Index(["macro"], name="condition"))])
        return df


def _resampled(
    engines: Sequence[Any],
    groups: ArrayLike | None,
    n_records: int,
    n_resamples: int,
    seed: int,
    batch: int,
) -> list[dict[str, NDArray[np.float64]]]:
    """Each engine's ``{metric: [B, C]}`` over the same resamples, drawn ``batch`` at a time.

    An engine is a :class:`WeightedMetrics` or anything with its ``metrics``, ``n_conditions``
    and ``__call__(weights [B, N])``.
    """
    codes, n_patients = patient_codes(groups, n_records)
    _check_seed(seed)
    out = [{m: np.empty((n_resamples, e.n_conditions)) for m in e.metrics} for e in engines]
    for b0 in range(0, n_resamples, batch):
        b1 = min(b0 + batch, n_resamples)
        w = np.empty((b1 - b0, n_records), dtype=np.int32)
        for k in range(b0, b1):
            w[k - b0] = _draw(n_patients, seed, k)[codes]
        for e, o in zip(engines, out):
            for m, v in e(w).items():
                o[m][b0:b1] = v
    return out


def _ones(n: int) -> NDArray[np.int8]:
    return np.ones(n, dtype=np.int8)


def bootstrap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    groups: ArrayLike | None = None,
    metrics: str | Iterable[str] = ("auroc", "ap"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    thresholds: ArrayLike | None = None,
    names: Sequence[str] | None = None,
    keep_samples: bool = False,
    interval: str = "percentile",
    n_jobs: int | None = None,
    batch: int = 256,
) -> BootstrapResult:
    """Percentile bootstrap intervals of per-condition metrics, resampling patients.

    Args:
        y_true: ``[N, C]`` labels (0, 1, NaN = missing) or ``[N]``.
        y_score: same shape, scores.
        groups: ``[N]`` patient ids (None: each record is its own patient).
        metrics: any of :data:`~ecgfm.evaluate.metrics.METRICS` (aliases accepted).
        n_resamples: B.
        seed: resample ``b`` is drawn by ``default_rng([seed, b])``.
        alpha: 0.05 gives 95% intervals.
        thresholds: ``[C]`` operating thresholds (fixed, e.g. from validation data), needed for
            sensitivity, specificity, PPV, NPV, F1, FPR.
        names: C condition names.
        keep_samples: keep the ``[B, C]`` resampled values in ``result.samples``.
        interval: ``"percentile"`` or ``"basic"`` (see the module docstring).
        n_jobs: threads (default: up to 8).
        batch: resamples whose weights are held in memory at once (``4 * batch * N`` bytes).

    Returns:
        :class:`BootstrapResult`; ``result.table()`` is a DataFrame.
    """
    y, s, _ = _prepare(y_true, y_score)
    alpha = _check_alpha(alpha)
    names = _names(names, y.shape[1])
    interval = _check_interval(interval)
    metrics = _canonical_metrics(metrics)
    if int(n_resamples) < 1:
        raise ValidationError(f"n_resamples: expected >= 1, got {n_resamples}")
    engine = WeightedMetrics(y, s, metrics, thresholds, n_jobs=n_jobs)
    point = {m: v[0] for m, v in engine(_ones(y.shape[0])).items()}
    (samples,) = _resampled([engine], groups, y.shape[0], int(n_resamples), seed, max(1, int(batch)))
    low, high, n_valid, macro = {}, {}, {}, {}
    for m in metrics:
        low[m], high[m] = _interval(samples[m], point[m], alpha, interval)
        n_valid[m] = (~np.isnan(samples[m])).sum(axis=0)
        per_resample = _nanmean(samples[m], axis=1)
        macro_point = np.array([_nanmean(point[m])])
        lo, hi = _interval(per_resample[:, None], macro_point, alpha, interval)
        macro[m] = (float(macro_point[0]), float(lo[0]), float(hi[0]))
    return BootstrapResult(
        names=names, metrics=metrics, point=point, low=low, high=high, n_valid=n_valid,
        macro=macro, n_resamples=int(n_resamples), alpha=alpha, seed=int(seed),
        samples=samples if keep_samples else {}, interval=interval,
    )


def paired_bootstrap(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    groups: ArrayLike | None = None,
    metrics: str | Iterable[str] = ("auroc", "ap"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    thresholds_a: ArrayLike | None = None,
    thresholds_b: ArrayLike | None = None,
    names: Sequence[str] | None = None,
    keep_samples: bool = False,
    interval: str = "percentile",
    n_jobs: int | None = None,
    batch: int = 256,
) -> PairedResult:
    """Compare two models' scores on the same records: difference A - B, interval, p-value.

    Both models are scored on the same patient resamples, so the interval of the difference
    accounts for their correlation (a paired test). Arguments as :func:`bootstrap` (``interval``
    applies to the difference; the p-value does not depend on it);
    ``thresholds_a`` / ``thresholds_b`` are each model's operating thresholds (threshold
    metrics only).

    Returns:
        :class:`PairedResult`.
    """
    y, sa, _ = _prepare(y_true, score_a)
    _, sb, _ = _prepare(y_true, score_b)
    alpha = _check_alpha(alpha)
    interval = _check_interval(interval)
    names = _names(names, y.shape[1])
    metrics = _canonical_metrics(metrics)
    if int(n_resamples) < 1:
        raise ValidationError(f"n_resamples: expected >= 1, got {n_resamples}")
    ea = WeightedMetrics(y, sa, metrics, thresholds_a, n_jobs=n_jobs)
    eb = WeightedMetrics(y, sb, metrics, thresholds_b, n_jobs=n_jobs)
    one = _ones(y.shape[0])
    pa = {m: v[0] for m, v in ea(one).items()}
    pb = {m: v[0] for m, v in eb(one).items()}
    ra, rb = _resampled([ea, eb], groups, y.shape[0], int(n_resamples), seed, max(1, int(batch)))
    diff, low, high, p, macro, samples = {}, {}, {}, {}, {}, {}
    for m in metrics:
        d = ra[m] - rb[m]
        samples[m] = d
        diff[m] = pa[m] - pb[m]
        low[m], high[m] = _interval(d, diff[m], alpha, interval)
        p[m] = _p_values(d)
        dm = _nanmean(ra[m], axis=1) - _nanmean(rb[m], axis=1)
        macro_diff = np.array([_nanmean(pa[m]) - _nanmean(pb[m])])
        lo, hi = _interval(dm[:, None], macro_diff, alpha, interval)
        macro[m] = (float(macro_diff[0]), float(lo[0]), float(hi[0]), float(_p_values(dm[:, None])[0]))
    return PairedResult(
        names=names, metrics=metrics, point_a=pa, point_b=pb, diff=diff, low=low, high=high,
        p_value=p, macro=macro, n_resamples=int(n_resamples), alpha=alpha, seed=int(seed),
        samples=samples if keep_samples else {}, interval=interval,
    )
