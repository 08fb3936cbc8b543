"""Data-efficiency curves: a test metric against the fraction of training labels used.

The claim of a foundation model is that it needs fewer labels: a linear probe on its embeddings
at 1 % of the labels should approach a supervised model at 100 %. This module is the harness:
it draws nested, patient-grouped training subsets, calls your ``fit_predict`` on each, scores
the test predictions, and returns a tidy table with one row per (fraction, repeat).

How subsets are drawn (:func:`efficiency_subsets`), per repeat ``r``:

1. **By patient.** Records are grouped by ``train_groups`` (patient ids) and a patient's
   records are always taken together, so a subset never splits a patient. Records whose id is
   missing (``None`` / NaN) are each their own patient.
2. **One random patient order per repeat** (``numpy.random.default_rng([seed, r])``), so
   results are reproducible from ``seed`` and repeats are independent.
3. **Positives first** (``ensure_positives=True``): before the random order, a small *cover*
   set of patients is put at the front so that every condition with at least one positive
   record in ``y_train`` has a positive in every subset. Conditions are visited from the
   rarest (fewest positive patients) to the most common; a condition not yet covered takes
   the positive patient that comes first in the repeat's random order. Conditions without any
   positive in ``y_train`` cannot be covered and are skipped; NaN labels count as not positive.
4. **Prefixes of that order.** For a fraction ``f`` the target is ``max(1, round(f * N))``
   records; the subset is the shortest prefix of the patient order that reaches the target
   (and includes the whole cover set). Subsets are therefore **nested within a repeat**
   (1 % ⊂ 10 % ⊂ 100 %), ``n_train`` is at least the target and exceeds it by less than one
   patient's records, except at tiny fractions where the cover set alone is larger.
   ``f = 1`` is the whole training set in every repeat.

>>> def fit_predict(idx):                                    # doctest: +SKIP
...     probe = LogisticProbe().fit(emb_train[idx], y_train[idx])
...     return probe.predict_proba(emb_test)
>>> table = data_efficiency(fit_predict, y_train, patients, y_test,
...                         score=lambda y, s: {"auroc": macro_auroc(y, s)})  # doctest: +SKIP
>>> summarise(table)                                          # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

#: Columns of a :func:`data_efficiency` table that are bookkeeping, not metrics.
META_COLUMNS = ("fraction", "repeat", "n_train", "n_patients", "min_positives", "seconds")

ScoreFn = Callable[[Any, Any], "float | Mapping[str, float]"]


def efficiency_subsets(
    y_train: np.ndarray,
    train_groups: Sequence[Hashable] | np.ndarray,
    *,
    fractions: Iterable[float] = (0.01, 0.1, 1.0),
    repeats: int = 3,
    seed: int = 0,
    ensure_positives: bool = True,
) -> dict[tuple[float, int], np.ndarray]:
    """The training subsets of a data-efficiency experiment (rules in the module docstring).

    Args:
        y_train: [N, C] (or [N]) training labels, 0/1 with NaN for missing; used only to put a
            positive of every condition in each subset.
        train_groups: [N] patient id of each training record.
        fractions: fractions of the N training records, each in (0, 1].
        repeats: number of independent draws per fraction.
        seed: base seed; repeat ``r`` uses ``default_rng([seed, r])``.
        ensure_positives: put the positive-covering patients first (see above).

    Returns:
        ``{(fraction, repeat): int64 [n] sorted record indices}``, in the order fractions are
        given, repeat by repeat.
    """
    y = _labels(y_train)
    n = len(y)
    fracs = _fractions(fractions)
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValidationError(f"repeats must be a positive integer, got {repeats!r}")
    patient = _patient_index(train_groups, n)
    n_patients = int(patient.max()) + 1 if n else 0
    sizes = np.bincount(patient, minlength=n_patients)
    by_patient = np.argsort(patient, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    positive = np.zeros((n_patients, y.shape[1]), dtype=bool)
    np.logical_or.at(positive, patient, np.nan_to_num(y, nan=0.0) > 0)

    out: dict[tuple[float, int], np.ndarray] = {}
    for r in range(int(repeats)):
        rng = np.random.default_rng([int(seed), r])
        order = rng.permutation(n_patients)
        cover = _cover(positive, order) if ensure_positives else []
        if cover:
            is_cover = np.zeros(n_patients, dtype=bool)
            is_cover[cover] = True
            order = np.concatenate([np.asarray(cover, dtype=np.int64), order[~is_cover[order]]])
        reached = np.cumsum(sizes[order])
        for f in fracs:
            target = max(1, round(f * n))
            k = int(np.searchsorted(reached, target)) + 1  # shortest prefix with >= target records
            k = min(max(k, len(cover)), n_patients)
            chosen = order[:k]
            idx = np.concatenate([by_patient[starts[p]:starts[p + 1]] for p in chosen]) if k else np.empty(0, int)
            out[(f, r)] = np.sort(idx).astype(np.int64)
    return out


def data_efficiency(
    fit_predict: Callable[[np.ndarray], Any],
    y_train: np.ndarray,
    train_groups: Sequence[Hashable] | np.ndarray,
    y_test: Any,
    *,
    score: ScoreFn,
    fractions: Iterable[float] = (0.01, 0.1, 1.0),
    repeats: int = 3,
    seed: int = 0,
    ensure_positives: bool = True,
    reuse_identical: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Fit on nested patient-grouped label fractions and score each fit on the test set.

    Args:
        fit_predict: ``fit_predict(train_indices) -> test_scores``: trains a model on the
            training records ``train_indices`` (int64, sorted, indices into ``y_train``) and
            returns its predictions for the whole test set, in whatever form ``score`` takes.
        y_train: [N, C] training labels (0/1, NaN missing), used to draw subsets.
        train_groups: [N] patient id per training record.
        y_test: the test labels, passed to ``score`` unchanged.
        score: ``score(y_test, test_scores) -> float | {name: float}``; a float becomes the
            column ``"score"``, a dict one column per key.
        fractions, repeats, seed, ensure_positives: the subset design of
            :func:`efficiency_subsets`.
        reuse_identical: fit each distinct subset once and reuse its scores (the 100 % subset
            is the same in every repeat). Leave False when ``fit_predict`` is stochastic and
            the spread over repeats should include that randomness.
        progress: called with each finished row (a dict), e.g. to log or update a bar.

    Returns:
        A pandas DataFrame, one row per (fraction, repeat), with :data:`META_COLUMNS`
        (``fraction``, ``repeat``, ``n_train`` records, ``n_patients``, ``min_positives``: the
        fewest positives of any condition that has positives in ``y_train``, ``seconds`` of
        ``fit_predict`` + ``score``) followed by the metric columns.
    """
    import pandas as pd

    subsets = efficiency_subsets(
        y_train, train_groups, fractions=fractions, repeats=repeats, seed=seed, ensure_positives=ensure_positives
    )
    y = _labels(y_train)
    pos = np.nan_to_num(y, nan=0.0) > 0
    present = pos.any(axis=0)
    patient = _patient_index(train_groups, len(y))
    done: dict[bytes, dict[str, float]] = {}
    rows = []
    for (f, r), idx in subsets.items():
        key = idx.tobytes()
        t0 = time.perf_counter()
        if reuse_identical and key in done:
            metrics = done[key]
        else:
            metrics = _as_metrics(score(y_test, fit_predict(idx)))
            done[key] = metrics
        row: dict[str, Any] = {
            "fraction": f,
            "repeat": r,
            "n_train": len(idx),
            "n_patients": len(np.unique(patient[idx])),
            "min_positives": int(pos[idx][:, present].sum(axis=0).min()) if present.any() else 0,
            "seconds": time.perf_counter() - t0,
            **metrics,
        }
        rows.append(row)
        if progress is not None:
            progress(row)
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over repeats, per fraction.

    Args:
        table: a :func:`data_efficiency` table.
        metrics: metric columns to summarise (default: every column not in :data:`META_COLUMNS`).

    Returns:
        One row per fraction (ascending), columns ``fraction``, ``repeats`` (count),
        ``n_train`` and ``n_patients`` (means), then ``<metric>_mean`` and ``<metric>_sd``
        (sample SD, ddof = 1; NaN with one repeat) for each metric.
    """
    import pandas as pd

    names = list(metrics) if metrics is not None else metric_columns(table)
    missing = [m for m in names if m not in table.columns]
    if missing:
        raise ValidationError(f"no metric column(s) {missing} in the table (columns: {list(table.columns)})")
    g = table.groupby("fraction", sort=True)
    out = pd.DataFrame(
        {
            "repeats": g.size(),
            "n_train": g["n_train"].mean(),
            "n_patients": g["n_patients"].mean(),
        }
    )
    for m in names:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_sd"] = g[m].std(ddof=1)
    return out.reset_index()


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a :func:`data_efficiency` table (those not in :data:`META_COLUMNS`)."""
    return [c for c in table.columns if c not in META_COLUMNS]


def plot_efficiency(
    ax: Axes | None,
    table: pd.DataFrame,
    metric: str | None = None,
    *,
    x: str = "fraction",
    label: str | None = None,
    log_x: bool = True,
    show_repeats: bool = True,
    **plot_kwargs: Any,
) -> Axes:
    """Draw a data-efficiency curve: mean ± SD of ``metric`` per fraction.

    Call again on the same axis to compare models (e.g. a foundation-model probe against a
    supervised baseline).

    Args:
        ax: a matplotlib axis, or ``None`` to create a new figure (a bare
            ``matplotlib.figure.Figure`` with an Agg canvas, not pyplot; ``ax.figure.savefig(...)``).
        table: a :func:`data_efficiency` table.
        metric: the metric column (default: the first one).
        x: ``"fraction"`` (labels as a fraction of the training set) or ``"n_train"``
            (mean number of training records).
        label: legend text.
        log_x: logarithmic x axis (fractions like 1 %, 10 %, 100 % are evenly spaced).
        show_repeats: also draw the individual repeats as faint dots.
        plot_kwargs: passed to ``ax.errorbar``.

    Returns:
        The axis drawn on.
    """
    if ax is None:
        ax = _new_axes((5, 3.5))
    names = metric_columns(table)
    metric = metric or (names[0] if names else None)
    if metric is None or metric not in table.columns:
        raise ValidationError(f"metric {metric!r} is not a column of the table (metrics: {names})")
    if x not in ("fraction", "n_train"):
        raise ValidationError(f"x must be 'fraction' or 'n_train', got {x!r}")
    s = summarise(table, [metric])
    xs = s[x].to_numpy(dtype=float)
    bars = ax.errorbar(xs, s[f"{metric}_mean"], yerr=s[f"{metric}_sd"].fillna(0.0), marker="o",
                       capsize=3, label=label, **plot_kwargs)
    if show_repeats:
        per_fraction = dict(zip(s["fraction"], xs))
        ax.scatter([per_fraction[f] for f in table["fraction"]], table[metric], s=8, alpha=0.3,
                   color=bars.lines[0].get_color(), linewidths=0)
    if log_x:
        ax.set_xscale("log")
    if x == "fraction":
        ax.set_xticks(xs, [f"{100 * v:g}%" for v in xs])
        ax.set_xlabel("fraction of training labels")
    else:
        ax.set_xlabel("training records")
    ax.set_ylabel(metric)
    if label:
        ax.legend(fontsize="small")
    return ax


# -- helpers ----------------------------------------------------------------------------------


def _labels(y_train: np.ndarray) -> np.ndarray:
    y = np.asarray(y_train, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValidationError(f"y_train must be [N] or [N, C], got shape {y.shape}")
    return y


def _fractions(fractions: Iterable[float]) -> list[float]:
    fracs = [float(f) for f in fractions]
    if not fracs:
        raise ValidationError("fractions is empty")
    for f in fracs:
        if not (0 < f <= 1):
            raise ValidationError(f"fraction {f} is outside (0, 1]")
    if len(set(fracs)) != len(fracs):
        raise ValidationError(f"fractions {fracs} repeat a value")
    return fracs


def _patient_index(groups: Sequence[Hashable] | np.ndarray, n: int) -> np.ndarray:
    """Dense patient numbers 0..P-1 in order of first appearance; missing ids are unique."""
    values = list(groups)
    if len(values) != n:
        raise ValidationError(f"train_groups has {len(values)} entries for {n} training records")
    ids: dict[Hashable, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(values):
        if g is None or (isinstance(g, (float, np.floating)) and math.isnan(g)):
            key: Hashable = ("<no patient id>", i)
        else:
            key = g.item() if isinstance(g, np.generic) else g
        out[i] = ids.setdefault(key, len(ids))
    return out


def _cover(positive: np.ndarray, order: np.ndarray) -> list[int]:
    """Patients (in pick order) giving every condition with a positive one positive patient."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    counts = positive.sum(axis=0)
    covered = np.zeros(positive.shape[1], dtype=bool)
    picked: list[int] = []
    for c in np.lexsort((np.arange(len(counts)), counts)):  # rarest condition first
        if counts[c] == 0 or covered[c]:
            continue
        candidates = np.flatnonzero(positive[:, c])
        p = int(candidates[np.argmin(rank[candidates])])
        picked.append(p)
        covered |= positive[p]
    return picked


def _as_metrics(value: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(value, Mapping):
        bad = [k for k in value if k in META_COLUMNS]
        if bad:
            raise ValidationError(f"score returned metric names {bad} that clash with the table's own columns")
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {"score": float(value)}
    except (TypeError, ValueError):
        raise ValidationError(
            f"score must return a float or a dict of floats, got {type(value).__name__}"
        ) from None


def _new_axes(size: tuple[float, float]) -> Axes:
    """A fresh axis on a pyplot-free figure (no global state; safe in servers and threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig.add_subplot()
