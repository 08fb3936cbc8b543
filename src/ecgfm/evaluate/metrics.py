"""Per-condition classification metrics, vectorised over conditions and over record weightings.

Conventions shared by every function here (and by :mod:`ecgfm.evaluate.bootstrap`,
:mod:`~ecgfm.evaluate.fairness` and :mod:`~ecgfm.evaluate.cohorts`):

- ``y_true`` is ``[N, C]`` (N records, C conditions) with values 0, 1 or NaN. NaN means "label
  missing for this record and condition": the record is left out of that condition only. Booleans
  are accepted. A 1-D ``[N]`` input is one condition, and scalar results are then plain floats.
- ``y_score`` is ``[N, C]`` (or ``[N]``) of finite floats (probabilities, logits, any score where
  higher means more likely positive); it may be anything where ``y_true`` is NaN.
- A condition with no positive or no negative record has AUROC, AP and Fmax NaN (scikit-learn
  raises or warns instead). Rates whose denominator is zero (e.g. PPV when nothing is predicted
  positive) are NaN (scikit-learn's ``zero_division=np.nan``).
- Macro = ``nanmean`` over conditions; micro = the metric on all (record, condition) pairs pooled.
- Operating points: a record is predicted positive when ``score >= threshold``.

Metric names (``metrics=`` arguments, table columns) are canonical: ``auroc``, ``ap`` (average
precision, the step-wise PR-AUC of scikit-learn's ``average_precision_score``), ``fmax``,
``brier``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``, ``fpr``. Aliases such as
``average_precision``, ``prauc``, ``auc``, ``tpr``, ``recall``, ``precision`` are accepted and
mapped to them (:func:`canonical_metric`).

AUROC, AP and Fmax are computed from one sort per condition, as weighted sums (see
:class:`WeightedMetrics`): with integer weights they equal scikit-learn on the correspondingly
repeated records, which is what makes the patient bootstrap in :mod:`ecgfm.evaluate.bootstrap`
fast and exact.

>>> import numpy as np
>>> from ecgfm.evaluate.metrics import auroc, evaluate
>>> y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
>>> s = np.array([[0.1, 0.8], [0.9, 0.3], [0.7, 0.6], [0.2, 0.1]])
>>> auroc(y, s)
array([1., 1.])
>>> evaluate(y, s, names=["AF", "LBBB"])[["n_pos", "auroc", "threshold"]]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse

__all__ = [
    "RANKING_METRICS", "THRESHOLD_METRICS", "METRICS", "WeightedMetrics", "auroc",
    "average_precision", "brier_score", "canonical_metric", "confusion_at", "evaluate", "f1_at",
    "fmax", "operating_thresholds", "pr_curve", "rates", "roc_curve", "summary",
    "threshold_metrics",
]

RANKING_METRICS = ("auroc", "ap", "fmax")
"""Metrics of the ranking of scores (no threshold)."""
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "fpr")
"""Metrics at an operating point (need one threshold per condition)."""
METRICS = (*RANKING_METRICS, "brier", *THRESHOLD_METRICS)
"""Every canonical metric name."""

_ALIASES = {
    "auc": "auroc", "roc_auc": "auroc", "rocauc": "auroc", "auroc": "auroc",
    "ap": "ap", "average_precision": "ap", "prauc": "ap", "pr_auc": "ap", "auprc": "ap",
    "fmax": "fmax", "f_max": "fmax", "brier": "brier", "brier_score": "brier",
    "sensitivity": "sensitivity", "sens": "sensitivity", "tpr": "sensitivity",
    "recall": "sensitivity", "specificity": "specificity", "spec": "specificity",
    "tnr": "specificity", "ppv": "ppv", "precision": "ppv", "npv": "npv", "f1": "f1",
    "fpr": "fpr",
}

# Integer weights are summed in float32, exactly, while every sum stays below 2**24.
_F32_EXACT = 2.0**24


def canonical_metric(name: str) -> str:
    """The canonical name of a metric (``"average_precision"`` -> ``"ap"``).

    Raises:
        ValidationError: unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _ALIASES:
        raise ValidationError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    return _ALIASES[key]


def _canonical_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    out = tuple(dict.fromkeys(canonical_metric(m) for m in metrics))
    if not out:
        raise ValidationError("metrics: at least one metric is needed")
    return out


# ---------------------------------------------------------------------------------------------
# input checks


def _prepare(y_true: ArrayLike, y_score: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], bool]:
    """``(y [N, C], s [N, C], was_1d)`` as float64, checked against the conventions above."""
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    if y.dtype == object or s.dtype == object:
        try:
            y = y.astype(np.float64)
            s = s.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"y_true/y_score: values must be numbers ({exc})") from None
    was_1d = y.ndim == 1
    if y.ndim not in (1, 2):
        raise ValidationError(f"y_true: expected [N] or [N, C], got shape {y.shape}")
    if s.shape != y.shape:
        raise ValidationError(f"y_score: shape {s.shape} does not match y_true {y.shape}")
    y = np.array(y, dtype=np.float64, copy=True).reshape(y.shape[0], -1)
    s = np.asarray(s, dtype=np.float64).reshape(y.shape)
    missing = np.isnan(y)
    bad = ~(missing | (y == 0) | (y == 1))
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise ValidationError(
            f"y_true: values must be 0, 1 or NaN (label missing); found {y[i, c]!r} at record {i},"
            f" condition {c}"
        )
    bad = ~np.isfinite(s) & ~missing
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise ValidationError(
            f"y_score: values must be finite where y_true is labelled; found {s[i, c]!r} at"
            f" record {i}, condition {c}"
        )
    return y, s, was_1d


def _out(values: NDArray[Any], was_1d: bool) -> Any:
    return float(values[0]) if was_1d else values


def _thresholds(thresholds: ArrayLike, n_conditions: int) -> NDArray[np.float64]:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n_conditions, float(t))
    if t.shape != (n_conditions,):
        raise ValidationError(
            f"thresholds: expected one per condition ({n_conditions}), got shape {t.shape}"
        )
    return t


def _weights_1d(sample_weight: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValidationError(f"sample_weight: expected shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValidationError("sample_weight: values must be finite and >= 0")
    return w


# ---------------------------------------------------------------------------------------------
# the ranking engine


def _cumsum0(x: NDArray[Any]) -> NDArray[np.float64]:
    """Cumulative sum along axis 0 of ``[G, B]`` as float64.

    ``np.cumsum(axis=0)`` walks one element at a time; this "strip scan" adds whole rows of
    ``sqrt(G)`` strips at once (about 10x faster for G in the hundreds) and is exact for
    integer-valued inputs, which is what the bootstrap feeds it.
    """
    g, b = x.shape
    if g < 64:
        return np.cumsum(x, axis=0, dtype=np.float64)
    m = int(np.sqrt(g))
    k = -(-g // m)
    y = np.empty((k * m, b), dtype=np.float64)
    y[:g] = x
    y[g:] = 0.0
    v = y.reshape(k, m, b)
    for i in range(1, m):
        np.add(v[:, i], v[:, i - 1], out=v[:, i])
    off = np.cumsum(v[:-1, -1], axis=0)
    v[1:] += off[:, None, :]
    return y[:g]


class _Plan:
    """One condition, sorted once: the bins whose weight sums give AUROC, AP and Fmax.

    Positive scores are grouped by distinct value, ``u[0] > u[1] > ... > u[G-1]``. Row ``g`` of
    ``Z`` (``g < G``) holds the positives of group ``g``; row ``G + g`` the negatives with
    ``u[g] <= score < u[g-1]`` (so cumulative sums give true and false positives at threshold
    ``u[g]``); rows ``2G + j`` the negatives tied with ``u[ties[j]]`` (for AUROC's half credit).
    Negatives below every positive are never needed one by one: their weight is the condition's
    total minus the rest.
    """

    __slots__ = ("G", "Z", "ties", "u")

    def __init__(self, y: NDArray[np.float64], s: NDArray[np.float64]) -> None:
        import scipy.sparse

        n = y.shape[0]
        self.G = 0
        self.u = np.zeros(0)
        self.ties = np.zeros(0, dtype=np.intp)
        self.Z: scipy.sparse.csr_matrix | None = None
        valid = ~np.isnan(y)
        records = np.flatnonzero(valid)
        sv = s[records]
        order = np.argsort(sv)
        records, ss = records[order], sv[order]  # ascending score
        pos = y[records] == 1
        n_pos = int(pos.sum())
        if n_pos == 0:
            return
        # runs of equal scores; the count of distinct positive scores <= each run's score
        new_run = np.empty(ss.size, dtype=bool)
        new_run[0] = True
        np.not_equal(ss[1:], ss[:-1], out=new_run[1:])
        run = np.cumsum(new_run) - 1
        run_pos = np.zeros(int(run[-1]) + 1, dtype=bool)
        run_pos[run[pos]] = True
        below = np.cumsum(run_pos)
        self.G = g = int(below[-1])
        self.u = ss[new_run][run_pos][::-1]  # distinct positive scores, descending
        if n_pos == ss.size:
            return
        # descending score order: group index g = G - (distinct positive scores <= score) rises
        grp = (g - below[run])[::-1]
        rec = records[::-1]
        pos = pos[::-1]
        neg = ~pos & (grp < g)  # negatives below every positive need no bin
        tie = neg & run_pos[run][::-1]
        gp, gn, gt = grp[pos], grp[neg], grp[tie]
        first = np.r_[True, gt[1:] != gt[:-1]] if gt.size else np.zeros(0, dtype=bool)
        self.ties = gt[first]
        counts = np.concatenate([
            np.bincount(gp, minlength=g), np.bincount(gn, minlength=g),
            np.bincount(np.cumsum(first) - 1, minlength=self.ties.size),
        ])
        indptr = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.concatenate([rec[pos], rec[neg], rec[tie]]).astype(np.int32)
        self.Z = scipy.sparse.csr_matrix(
            (np.ones(indices.size, dtype=np.float32), indices, indptr), shape=(counts.size, n)
        )

    def counts(self, wt: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[np.float64], NDArray[Any]]:
        """``(P [G, B], TP [G, B], FP [G, B], T [K, B])`` for weights ``wt`` ``[N, B]``."""
        assert self.Z is not None
        z = self.Z if self.Z.dtype == wt.dtype else self.Z.astype(wt.dtype)
        sums = z @ wt  # [2G + K, B]: one pass over the condition's records per resample
        g = self.G
        p = sums[:g]
        return p, _cumsum0(p), _cumsum0(sums[g: 2 * g]), sums[2 * g:]

    def evaluate(self, wt: NDArray[Any], total: NDArray[np.float64], metrics: Sequence[str]) -> dict[str, NDArray[np.float64]]:
        """Ranking metrics ``{name: [B]}`` under the weights ``wt`` ``[N, B]``.

        ``total`` ``[B]`` is the weight of the condition's labelled records.
        """
        p, tp, fp, t = self.counts(wt)
        p = p.astype(np.float64)
        wpos = tp[-1]
        wneg = total - wpos
        ok = (wpos > 0) & (wneg > 0)
        out: dict[str, NDArray[np.float64]] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            if "auroc" in metrics:
                # sum over positives of w * (negative weight scored at or above it, ties half)
                above = np.einsum("gb,gb->b", p, fp)
                if self.ties.size:
                    above -= 0.5 * np.einsum("gb,gb->b", p[self.ties], t)
                out["auroc"] = np.where(ok, 1.0 - above / (wpos * wneg), np.nan)
            if "ap" in metrics or "fmax" in metrics:
                d = tp + fp
                if "fmax" in metrics:
                    f = tp / (d + wpos)
                    out["fmax"] = np.where(ok, 2.0 * f.max(axis=0), np.nan)
                if "ap" in metrics:
                    np.maximum(d, 1e-300, out=d)  # d == 0 only where tp == 0 (and p == 0)
                    np.divide(tp, d, out=d)
                    out["ap"] = np.where(ok, np.einsum("gb,gb->b", p, d) / wpos, np.nan)
        return out


class WeightedMetrics:
    """Metrics of C conditions under many weightings of the N records, one sort per condition.

    Built once from the labels and scores; calling it with weights ``[B, N]`` returns
    ``{metric: [B, C]}``. With weights of ones this is the plain metric; with ``w[b, i]`` = how
    many times record ``i`` was drawn in bootstrap resample ``b`` it equals the metric on the
    resampled records (exactly, for integer weights: they are summed in float32 or float64
    without rounding).

    How: per condition the records are sorted once and put in bins (each distinct positive score,
    the negatives between consecutive positive scores, negatives tied with a positive score), so
    the weight of every bin under all B weightings is one sparse product ``Z [bins, N] @ W.T``
    (about B x N multiply-adds per condition, in compiled code), and AUROC, AP and Fmax follow from
    cumulative sums over the bins. Threshold metrics and the Brier score are linear in the weights
    and come from dense products ``W @ indicator[N, C]``.

    Args:
        y_true: ``[N, C]`` or ``[N]`` labels (0, 1, NaN = missing).
        y_score: same shape, scores.
        metrics: names from :data:`METRICS` (aliases accepted).
        thresholds: ``[C]`` operating thresholds, needed for the threshold metrics.
        n_jobs: threads over conditions (default: up to 8, as many as CPUs).
        chunk: resamples processed together (bounds memory to about ``8 * chunk`` bytes per bin).

    Attributes:
        metrics: canonical metric names, in the order given.
        n_records, n_conditions: N and C.

    >>> import numpy as np
    >>> engine = WeightedMetrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], metrics=("auroc",))
    >>> engine(np.array([[1, 1, 1, 1], [2, 0, 1, 1]]))["auroc"][:, 0]
    array([0.75, 1.  ])
    """

    def __init__(
        self,
        y_true: ArrayLike,
        y_score: ArrayLike,
        metrics: str | Iterable[str] = ("auroc", "ap"),
        thresholds: ArrayLike | None = None,
        *,
        n_jobs: int | None = None,
        chunk: int = 256,
    ) -> None:
        y, s, _ = _prepare(y_true, y_score)
        self.metrics = _canonical_metrics(metrics)
        self.n_records, self.n_conditions = y.shape
        self.n_jobs = _n_jobs(n_jobs)
        self.chunk = max(1, int(chunk))
        self._rank = [m for m in self.metrics if m in RANKING_METRICS]
        self._thr = [m for m in self.metrics if m in THRESHOLD_METRICS]
        valid = ~np.isnan(y)
        self._nan_cols = np.flatnonzero(~valid.all(axis=0))
        self._valid = valid[:, self._nan_cols].astype(np.float32)
        if self._thr:
            if thresholds is None:
                raise ValidationError(
                    f"thresholds: needed for {', '.join(self._thr)} (one per condition; see"
                    " operating_thresholds)"
                )
            t = _thresholds(thresholds, self.n_conditions)
            with np.errstate(invalid="ignore"):
                pred = s >= t[None, :]
            self._no_thr = np.isnan(t)
            self._m_pos = (y == 1).astype(np.float32)
            self._m_tp = ((y == 1) & pred).astype(np.float32)
            self._m_fp = ((y == 0) & pred).astype(np.float32)
        if "brier" in self.metrics:
            self._sq = np.where(valid, (np.where(valid, s, 0.0) - np.nan_to_num(y)) ** 2, 0.0)
        self._plans: list[_Plan | None] = []
        if self._rank:
            cols = range(self.n_conditions)
            if self.n_jobs > 1 and self.n_conditions > 1:
                with ThreadPoolExecutor(self.n_jobs) as pool:
                    self._plans = list(pool.map(lambda c: _Plan(y[:, c], s[:, c]), cols))
            else:
                self._plans = [_Plan(y[:, c], s[:, c]) for c in cols]

    def __call__(self, weights: ArrayLike) -> dict[str, NDArray[np.float64]]:
        """``{metric: [B, C]}`` for weights ``[B, N]`` (or ``[N]``, giving ``[1, C]``)."""
        w = np.asarray(weights)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != self.n_records:
            raise ValidationError(
                f"weights: expected [B, {self.n_records}] (one weight per record), got {w.shape}"
            )
        if not np.issubdtype(w.dtype, np.integer):
            w = w.astype(np.float64)
            if not np.isfinite(w).all():
                raise ValidationError("weights: values must be finite")
        if (w < 0).any():
            raise ValidationError("weights: values must be >= 0")
        integral = np.issubdtype(w.dtype, np.integer) or bool(np.all(w == np.floor(w)))
        exact32 = integral and float(w.sum(axis=1, dtype=np.float64).max(initial=0)) < _F32_EXACT
        dtype = np.float32 if exact32 else np.float64
        n_b, n_c = w.shape[0], self.n_conditions
        out = {m: np.full((n_b, n_c), np.nan) for m in self.metrics}

        total = np.empty((n_b, n_c))
        total[:] = w.sum(axis=1, dtype=np.float64)[:, None]
        if self._nan_cols.size:
            total[:, self._nan_cols] = w.astype(dtype) @ self._valid.astype(dtype)
        if self._thr:
            wd = w.astype(dtype)
            counts = {
                "pos": wd @ self._m_pos.astype(dtype), "tp": wd @ self._m_tp.astype(dtype),
                "fp": wd @ self._m_fp.astype(dtype),
            }
            pos = counts["pos"].astype(np.float64)
            tp = counts["tp"].astype(np.float64)
            fp = counts["fp"].astype(np.float64)
            conf = {"tp": tp, "fp": fp, "fn": pos - tp, "tn": total - pos - fp}
            for m, v in rates(conf).items():
                if m in self._thr:
                    v[:, self._no_thr] = np.nan
                    out[m] = v
        if "brier" in self.metrics:
            with np.errstate(divide="ignore", invalid="ignore"):
                out["brier"] = (w.astype(np.float64) @ self._sq) / total
        if self._rank:
            self._ranking(w, dtype, total, out)
        return out

    def _ranking(self, w: NDArray[Any], dtype: Any, total: NDArray[np.float64], out: dict[str, NDArray[np.float64]]) -> None:
        live = [c for c, p in enumerate(self._plans) if p is not None and p.Z is not None]
        if not live:
            return
        chunks = [(b0, min(b0 + self.chunk, w.shape[0])) for b0 in range(0, w.shape[0], self.chunk)]
        # blocks of conditions of similar total work, several per thread for load balance
        cost = np.array([self._plans[c].Z.nnz + 2 * self._plans[c].G for c in live], dtype=float)  # type: ignore[union-attr]
        n_blocks = 1 if self.n_jobs == 1 else 4 * self.n_jobs
        edges = np.searchsorted(np.cumsum(cost), np.linspace(0, cost.sum(), n_blocks + 1)[1:-1])
        blocks = [b for b in np.split(np.asarray(live), edges) if b.size]

        def run(wt: NDArray[Any], b0: int, b1: int, block: NDArray[np.intp]) -> None:
            for c in block:
                plan = self._plans[c]
                assert plan is not None
                for m, v in plan.evaluate(wt, total[b0:b1, c], self._rank).items():
                    out[m][b0:b1, c] = v

        if self.n_jobs == 1 or len(blocks) == 1:
            for b0, b1 in chunks:
                wt = np.ascontiguousarray(w[b0:b1].T, dtype=dtype)  # [N, chunk]
                for block in blocks:
                    run(wt, b0, b1, block)
            return
        with ThreadPoolExecutor(self.n_jobs) as pool:
            for b0, b1 in chunks:
                wt = np.ascontiguousarray(w[b0:b1].T, dtype=dtype)
                futures = [pool.submit(run, wt, b0, b1, block) for block in blocks]
                for f in futures:
                    f.result()


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None:
        return max(1, min(8, os.cpu_count() or 1))
    if int(n_jobs) < 1:
        raise ValidationError(f"n_jobs: expected >= 1, got {n_jobs}")
    return int(n_jobs)


# ---------------------------------------------------------------------------------------------
# point metrics


def _ranking_point(y_true: ArrayLike, y_score: ArrayLike, metric: str, sample_weight: ArrayLike | None) -> Any:
    y, s, was_1d = _prepare(y_true, y_score)
    w = _weights_1d(sample_weight, y.shape[0])
    engine = WeightedMetrics(y, s, (metric,), n_jobs=1)
    values = engine(np.ones(y.shape[0], dtype=np.int8) if w is None else w)[metric][0]
    return _out(values, was_1d)


def auroc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> Any:
    """Area under the ROC curve per condition (ties count half), as ``roc_auc_score``.

    Args:
        y_true: ``[N, C]`` or ``[N]`` labels (0, 1, NaN = missing).
        y_score: same shape, scores.
        sample_weight: optional ``[N]`` record weights.

    Returns:
        ``[C]`` float array (float for 1-D input); NaN where a condition lacks positives or
        negatives.
    """
    return _ranking_point(y_true, y_score, "auroc", sample_weight)


def average_precision(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> Any:
    """Average precision (step-wise PR-AUC) per condition, as ``average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct scores taken as thresholds, tied scores
    forming one step. Returns ``[C]`` (float for 1-D input); NaN without positives or negatives.
    """
    return _ranking_point(y_true, y_score, "ap", sample_weight)


def fmax(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> tuple[Any, Any]:
    """Best F1 over all thresholds, and the threshold that gives it, per condition.

    The maximum is reached at a threshold equal to a positive record's score (lowering the
    threshold past negatives only adds false positives); the highest such threshold is returned.

    Returns:
        ``(fmax [C], threshold [C])`` (floats for 1-D input); NaN without positives or
        negatives. ``f1_at(y_true, y_score, threshold)`` gives back ``fmax``.
    """
    y, s, was_1d = _prepare(y_true, y_score)
    w = _weights_1d(sample_weight, y.shape[0])
    values, thr = _fmax_from(_curves(y, s, w))
    return _out(values, was_1d), _out(thr, was_1d)


def _fmax_from(curves: Iterable[tuple[Any, Any, Any, float, float]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    values, thr = [], []
    for u, tp, fp, wpos, _ in curves:
        if u is None:
            values.append(np.nan)
            thr.append(np.nan)
            continue
        f = 2.0 * tp / (tp + fp + wpos)
        k = int(np.argmax(f))
        values.append(f[k])
        thr.append(u[k])
    return np.array(values, dtype=np.float64), np.array(thr, dtype=np.float64)


def _curves(
    y: NDArray[np.float64], s: NDArray[np.float64], w: NDArray[np.float64] | None,
    plans: Sequence[_Plan | None] | None = None,
) -> Iterable[tuple[Any, Any, Any, float, float]]:
    """Per condition ``(u [G] descending positive scores, TP [G], FP [G], Wpos, Wneg)`` at the
    thresholds ``u`` (``(None, ...)`` where undefined); ``plans`` reuses sorts already made."""
    for c in range(y.shape[1]):
        plan = plans[c] if plans else _Plan(y[:, c], s[:, c])
        if plan is None or plan.Z is None:
            yield None, None, None, np.nan, np.nan
            continue
        valid = ~np.isnan(y[:, c])
        wc = np.ones(y.shape[0]) if w is None else w
        wt = wc.reshape(-1, 1).astype(np.float64)
        _, tp, fp, _ = plan.counts(wt)
        wpos = float(tp[-1, 0])
        wneg = float(wc[valid].sum()) - wpos
        if wpos <= 0 or wneg <= 0:
            yield None, None, None, np.nan, np.nan
            continue
        yield plan.u, tp[:, 0], fp[:, 0], wpos, wneg


def brier_score(y_true: ArrayLike, y_prob: ArrayLike, sample_weight: ArrayLike | None = None) -> Any:
    """Mean squared difference between probability and label per condition (``brier_score_loss``).

    Args:
        y_prob: probabilities in [0, 1] (raises :class:`ValidationError` otherwise).

    Returns:
        ``[C]`` (float for 1-D input); NaN for a condition without labelled records.
    """
    y, p, was_1d = _prepare(y_true, y_prob)
    valid = ~np.isnan(y)
    if ((p < 0) | (p > 1))[valid].any():
        raise ValidationError("y_prob: Brier score needs probabilities in [0, 1]")
    w = _weights_1d(sample_weight, y.shape[0])
    wv = valid * (1.0 if w is None else w[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (wv * np.where(valid, (p - np.nan_to_num(y)) ** 2, 0.0)).sum(0) / wv.sum(0)
    return _out(values, was_1d)


def confusion_at(y_true: ArrayLike, y_score: ArrayLike, thresholds: ArrayLike, sample_weight: ArrayLike | None = None) -> dict[str, Any]:
    """Confusion counts at one threshold per condition (predicted positive: ``score >= t``).

    Returns:
        ``{"tp", "fp", "tn", "fn"}``, each ``[C]`` float (weighted counts), or floats for 1-D
        input. A NaN threshold gives NaN counts.
    """
    y, s, was_1d = _prepare(y_true, y_score)
    t = _thresholds(thresholds, y.shape[1])
    w = _weights_1d(sample_weight, y.shape[0])
    wc = np.ones((y.shape[0], 1)) if w is None else w[:, None]
    with np.errstate(invalid="ignore"):
        pred = s >= t[None, :]
    out = {
        "tp": ((y == 1) & pred) * wc, "fp": ((y == 0) & pred) * wc,
        "tn": ((y == 0) & ~pred) * wc, "fn": ((y == 1) & ~pred) * wc,
    }
    res = {}
    for k, v in out.items():
        v = v.sum(axis=0)
        v[np.isnan(t)] = np.nan
        res[k] = _out(v, was_1d)
    return res


def rates(confusion: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, F1 and FPR from confusion counts.

    Args:
        confusion: ``{"tp", "fp", "tn", "fn"}`` arrays of any (common) shape, or floats.

    Returns:
        Arrays (or floats) of the same shape; NaN where a denominator is zero.
    """
    tp, fp, tn, fn = (np.asarray(confusion[k], dtype=np.float64) for k in ("tp", "fp", "tn", "fn"))
    with np.errstate(divide="ignore", invalid="ignore"):
        res = {
            "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn), "f1": 2 * tp / (2 * tp + fp + fn), "fpr": fp / (fp + tn),
        }
    return {k: (float(v) if v.ndim == 0 else v) for k, v in res.items()}


def threshold_metrics(y_true: ArrayLike, y_score: ArrayLike, thresholds: ArrayLike, sample_weight: ArrayLike | None = None) -> dict[str, Any]:
    """``rates(confusion_at(...))``: sensitivity, specificity, PPV, NPV, F1, FPR per condition."""
    return rates(confusion_at(y_true, y_score, thresholds, sample_weight))


def f1_at(y_true: ArrayLike, y_score: ArrayLike, thresholds: ArrayLike, sample_weight: ArrayLike | None = None) -> Any:
    """F1 per condition at the given thresholds (``f1_score`` of ``score >= t``)."""
    return threshold_metrics(y_true, y_score, thresholds, sample_weight)["f1"]


def operating_thresholds(
    y_true: ArrayLike,
    y_score: ArrayLike,
    method: str = "youden",
    target: float | None = None,
    sample_weight: ArrayLike | None = None,
) -> Any:
    """One operating threshold per condition, to fit on validation data and carry to test data.

    Args:
        method: ``"youden"`` (maximise sensitivity + specificity - 1), ``"sensitivity"`` (the
            highest threshold with sensitivity >= ``target``, i.e. the best specificity there),
            ``"specificity"`` (the lowest threshold with specificity >= ``target``, i.e. the best
            sensitivity there) or ``"f1"`` (the Fmax threshold).
        target: the sensitivity or specificity to reach, in (0, 1].

    Returns:
        ``[C]`` thresholds (float for 1-D input). Each is a positive record's score, the highest
        threshold of its ROC corner (ties: the highest threshold wins). ``+inf`` (nothing
        predicted positive) where no threshold reaches a ``"specificity"`` target; NaN for a
        condition without positives or negatives.

    >>> operating_thresholds([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.7, 0.9], "sensitivity", 0.6)
    0.7
    """
    method = _check_method(method, target)
    y, s, was_1d = _prepare(y_true, y_score)
    w = _weights_1d(sample_weight, y.shape[0])
    return _out(_thresholds_from(_curves(y, s, w), method, target), was_1d)


def _check_method(method: str, target: float | None) -> str:
    method = str(method).lower()
    if method not in ("youden", "sensitivity", "specificity", "f1"):
        raise ValidationError(
            f"method: expected 'youden', 'sensitivity', 'specificity' or 'f1', got {method!r}"
        )
    if method in ("sensitivity", "specificity"):
        if target is None or not 0 < float(target) <= 1:
            raise ValidationError(f"target: method {method!r} needs a target in (0, 1], got {target!r}")
    return method


def _thresholds_from(curves: Iterable[tuple[Any, Any, Any, float, float]], method: str, target: float | None) -> NDArray[np.float64]:
    if method == "f1":
        return _fmax_from(curves)[1]
    out = []
    tol = 1e-12
    for u, tp, fp, wpos, wneg in curves:
        if u is None:
            out.append(np.nan)
            continue
        sens, fpr = tp / wpos, fp / wneg
        if method == "youden":
            out.append(u[int(np.argmax(sens - fpr))])
        elif method == "sensitivity":
            out.append(u[int(np.argmax(sens >= float(target) - tol))])  # type: ignore[arg-type]
        else:
            ok = np.flatnonzero(1.0 - fpr >= float(target) - tol)  # type: ignore[arg-type]
            out.append(u[ok[-1]] if ok.size else np.inf)
    return np.array(out, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# curves (one condition, for plots)


def _binary_curve(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fps, tps, thresholds)`` at each distinct score, descending (scikit-learn's
    ``_binary_clf_curve``); records with a NaN label are dropped."""
    y, s, _ = _prepare(y_true, y_score)
    if y.shape[1] != 1:
        raise ValidationError(f"curves take one condition ([N] arrays), got {y.shape[1]} conditions")
    w = _weights_1d(sample_weight, y.shape[0])
    keep = ~np.isnan(y[:, 0])
    y1, s1 = y[keep, 0], s[keep, 0]
    w1 = None if w is None else w[keep]
    order = np.argsort(s1, kind="mergesort")[::-1]
    s1, y1 = s1[order], y1[order]
    wo = np.ones_like(y1) if w1 is None else w1[order]
    distinct = np.flatnonzero(np.diff(s1))
    idx = np.r_[distinct, y1.size - 1]
    tps = np.cumsum(y1 * wo)[idx]
    fps = np.cumsum((1 - y1) * wo)[idx] if w1 is not None else 1 + idx - tps
    return fps, tps, s1[idx]


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None, drop_intermediate: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve points of one condition, as scikit-learn's ``roc_curve``.

    Args:
        y_true, y_score: ``[N]`` (NaN labels dropped).
        drop_intermediate: drop collinear points (scikit-learn's default).

    Returns:
        ``(fpr, tpr, thresholds)``; ``thresholds[0]`` is ``+inf`` so the curve starts at (0, 0).
        ``fpr`` (``tpr``) is all NaN without negatives (positives).
    """
    fps, tps, thr = _binary_curve(y_true, y_score, sample_weight)
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thr = np.r_[np.inf, thr]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def pr_curve(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision-recall curve of one condition, as scikit-learn's ``precision_recall_curve``.

    Returns:
        ``(precision, recall, thresholds)``: recall decreasing, with a final point (1, 0) that
        has no threshold. Recall is 1 everywhere without positives (as scikit-learn).
        ``average_precision = -sum(diff(recall) * precision[:-1])``.
    """
    fps, tps, thr = _binary_curve(y_true, y_score, sample_weight)
    ps = tps + fps
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(ps != 0, tps / ps, 0.0)
    recall = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


# ---------------------------------------------------------------------------------------------
# tables


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValidationError(f"names: expected {n} condition names, got {len(names)}")
    if len(set(names)) != n:
        dup = sorted({x for x in names if names.count(x) > 1})
        raise ValidationError(f"names: duplicated condition names {dup[:5]}")
    return names


def evaluate(
    y_true: ArrayLike,
    y_score: ArrayLike,
    names: Sequence[str] | None = None,
    thresholds: ArrayLike | None = None,
    method: str = "youden",
    target: float | None = None,
    *,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """One row per condition: counts, ranking metrics and metrics at an operating point.

    Args:
        y_true: ``[N, C]`` labels (0, 1, NaN = missing); ``[N]`` is one condition.
        y_score: ``[N, C]`` scores.
        names: C condition names (default ``"0"``, ``"1"``, ...).
        thresholds: ``[C]`` operating thresholds, typically ``operating_thresholds`` fitted on
            validation data. Default: fitted here with ``method``/``target`` (optimistic: the
            threshold is tuned on the data it is scored on).
        method, target: see :func:`operating_thresholds` (used when ``thresholds`` is None).

    Returns:
        DataFrame indexed by condition name (index name ``condition``) with columns ``n``
        (labelled records), ``n_pos``, ``prevalence``, ``auroc``, ``ap``, ``brier`` (NaN when
        scores are not probabilities in [0, 1]), ``fmax``, ``fmax_threshold``, ``threshold``,
        ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``.
    """
    import pandas as pd

    y, s, _ = _prepare(y_true, y_score)
    names = _names(names, y.shape[1])
    if thresholds is None:
        method = _check_method(method, target)
    else:
        thr = _thresholds(thresholds, y.shape[1])
    engine = WeightedMetrics(y, s, ("auroc", "ap"), n_jobs=n_jobs)
    ranking = engine(np.ones(y.shape[0], dtype=np.int8))
    curves = list(_curves(y, s, None, engine._plans))  # the same sorts give Fmax and thresholds
    fm, fm_thr = _fmax_from(curves)
    if thresholds is None:
        thr = _thresholds_from(curves, method, target)
    at = threshold_metrics(y, s, thr)
    valid = ~np.isnan(y)
    probs = bool(((s >= 0) & (s <= 1))[valid].all())
    n = valid.sum(0)
    n_pos = (y == 1).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prevalence = n_pos / n
    table = pd.DataFrame(
        {
            "n": n, "n_pos": n_pos, "prevalence": prevalence, "auroc": ranking["auroc"][0],
            "ap": ranking["ap"][0],
            "brier": brier_score(y, s) if probs else np.full(y.shape[1], np.nan),
            "fmax": fm, "fmax_threshold": fm_thr, "threshold": thr,
            **{m: np.atleast_1d(at[m]) for m in THRESHOLD_METRICS[:5]},
        },
        index=pd.Index(names, name="condition"),
    )
    return table


AUROC_CUTS = (0.7, 0.8, 0.9)
"""AUROC levels counted by :func:`summary` (the AnyECG-style summary)."""


def summary(
    y_true: ArrayLike,
    y_score: ArrayLike,
    thresholds: ArrayLike | None = None,
    method: str = "youden",
    target: float | None = None,
    *,
    table: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Macro and micro averages, and how many conditions exceed AUROC 0.7, 0.8 and 0.9.

    Args:
        y_true, y_score, thresholds, method, target: as :func:`evaluate`.
        table: the :func:`evaluate` table of the same data, if already computed.

    Returns:
        ``{"n_conditions", "n_evaluable" (conditions with a defined AUROC), "macro_<metric>"
        for auroc, ap, brier, fmax, sensitivity, specificity, ppv, npv, f1, "micro_auroc",
        "micro_ap", "micro_brier", "micro_<rate>" (pooled confusion counts at each condition's
        threshold), "n_auroc_gt_0.7", "n_auroc_gt_0.8", "n_auroc_gt_0.9"}``. Micro values pool
        all labelled (record, condition) pairs.
    """
    y, s, _ = _prepare(y_true, y_score)
    if table is None:
        table = evaluate(y, s, thresholds=thresholds, method=method, target=target)
    thr = table["threshold"].to_numpy(dtype=np.float64)
    out: dict[str, float] = {
        "n_conditions": float(y.shape[1]),
        "n_evaluable": float(np.isfinite(table["auroc"].to_numpy(dtype=float)).sum()),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in ("auroc", "ap", "brier", "fmax", *THRESHOLD_METRICS[:5]):
            out[f"macro_{m}"] = float(np.nanmean(table[m].to_numpy(dtype=float)))
    valid = ~np.isnan(y)
    yf, sf = y[valid], s[valid]
    micro = WeightedMetrics(yf, sf, ("auroc", "ap"), n_jobs=1)(np.ones(yf.size, dtype=np.int8))
    out["micro_auroc"] = float(micro["auroc"][0, 0])
    out["micro_ap"] = float(micro["ap"][0, 0])
    out["micro_brier"] = float(brier_score(yf, sf)) if ((sf >= 0) & (sf <= 1)).all() else np.nan
    conf = confusion_at(y, s, thr)
    pooled = {k: float(np.nansum(v)) for k, v in conf.items()}
    for m, v in rates(pooled).items():
        if m != "fpr":
            out[f"micro_{m}"] = float(v)
    a = table["auroc"].to_numpy(dtype=float)
    for cut in AUROC_CUTS:
        out[f"n_auroc_gt_{cut}"] = float((a > cut).sum())
    return out
