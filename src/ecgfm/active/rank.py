"""Rankings of records for re-annotation, from the given labels and out-of-fold predictions.

Each ranking takes the labels a data set gives, ``given`` ``[N, C]`` (0/1; one-hot rows for a
multi-class task), and predicted probabilities, ``probs`` ``[N, C]`` from a model that did not
train on the record (out-of-fold, :func:`ecgfm.active.oof.out_of_fold`), or ``[M, N, C]`` from
M models or Monte-Carlo dropout passes. It returns a :class:`Ranking`: one score per record
(higher = review first) and one reason per record that names the label and the numbers behind
the score.

* :func:`confident_learning` (Northcutt, Jiang & Chuang, JAIR 70, 2021): per-class thresholds,
  the mean predicted probability of the records given that class; a label issue is a record
  whose given label disagrees with the class its probabilities confidently point to. Multi-label
  tasks are handled one label at a time as a binary problem (as cleanlab does for multi-label
  data). Records with an issue come first, ordered by self-confidence.
* :func:`uncertainty`: predictive entropy, margin, or (with several models) mutual information
  (BALD); it ignores the given labels.
* :func:`sample_loss`: per-record binary cross-entropy (multi-label) or cross-entropy
  (multi-class) of the given labels under the predictions.
* :func:`random_ranking`: the baseline.

Only numpy is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError

__all__ = [
    "METHODS", "Ranking", "confident_learning", "confident_thresholds", "label_issues", "precision_at_k",
    "random_ranking", "rank", "recall_at_k", "sample_loss", "suggested_labels", "uncertainty",
]

METHODS = ("confident", "uncertainty", "loss", "random")
TASKS = ("multilabel", "multiclass")
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] inside logarithms
TOL = 1e-6  # cleanlab's tolerance: p >= threshold - TOL counts as confident


@dataclass(frozen=True)
class Ranking:
    """Scores and reasons of one ranking method.

    Attributes:
        method: ``"confident"``, ``"uncertainty"``, ``"loss"`` or ``"random"``.
        scores: float64 ``[N]``; higher = review first.
        reasons: ``N`` strings, one per record.
        issues: bool ``[N, C]``, the confident-learning label issues (True where the given
            label of that record and class is judged wrong); None for the other methods.
        suggested: float32 ``[N, C]``, the labels confident learning suggests (the given ones
            with the issues corrected); None for the other methods.
    """

    method: str
    scores: np.ndarray
    reasons: tuple[str, ...]
    issues: np.ndarray | None = None
    suggested: np.ndarray | None = None

    def order(self) -> np.ndarray:
        """Record indices ``[N]`` from the first to review to the last (ties keep the input order)."""
        return np.argsort(-self.scores, kind="stable")

    def top(self, k: int) -> np.ndarray:
        """The first ``k`` indices of :meth:`order`."""
        return self.order()[: max(int(k), 0)]


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _task(task: str) -> str:
    if task not in TASKS:
        raise ValidationError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    return task


def _probs(probs: Any, what: str = "probs") -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValidationError(f"{what}: expected [N, C] or [M, N, C] probabilities, got shape {p.shape}")
    if not np.isfinite(p).all():
        bad = np.argwhere(~np.isfinite(p))[0]
        raise ValidationError(f"{what}: non-finite probability at record {bad[1]}, label {bad[2]}")
    if (p < 0).any() or (p > 1).any():
        raise ValidationError(f"{what}: probabilities must lie in [0, 1] (got {p.min():.3g} .. {p.max():.3g})")
    return p


def _given(given: Any, shape: tuple[int, int], task: str) -> np.ndarray:
    y = np.asarray(given, np.float64)
    if y.ndim == 1 and task == "multiclass":  # class indices
        if len(y) != shape[0] or np.any((y < 0) | (y >= shape[1]) | (y != np.round(y))):
            raise ValidationError(f"given: expected {shape[0]} class indices in 0..{shape[1] - 1}")
        y = np.eye(shape[1])[y.astype(int)]
    if y.shape != shape:
        raise ValidationError(f"given labels have shape {y.shape} but the probabilities {shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValidationError("given labels must be 0 or 1")
    if task == "multiclass" and not np.all(y.sum(axis=1) == 1):
        bad = int(np.flatnonzero(y.sum(axis=1) != 1)[0])
        raise ValidationError(f"given: a multi-class record has exactly one label; record {bad} has "
                              f"{int(y[bad].sum())}")
    return y


def _names(labels: Sequence[str] | None, c: int) -> list[str]:
    if labels is None:
        return [f"label {j}" for j in range(c)]
    names = [str(x) for x in labels]
    if len(names) != c:
        raise ValidationError(f"labels: {len(names)} names for {c} probability columns")
    return names


def _short(name: str) -> str:
    """``superdiagnostic:MI`` -> ``MI`` in reasons (the prefix names a manifest column)."""
    return name.rsplit(":", 1)[-1]


def _bits(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits of probabilities ``p`` (any shape)."""
    q = np.clip(p, EPS, 1 - EPS)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    """Entropy in bits over the last axis (distributions)."""
    q = np.clip(p, EPS, 1.0)
    return -(p * np.log2(q)).sum(axis=-1)


# ---------------------------------------------------------------------------------------------
# confident learning
# ---------------------------------------------------------------------------------------------
def confident_thresholds(given: Any, probs: Any, *, task: str = "multilabel") -> tuple[np.ndarray, np.ndarray]:
    """Per-class thresholds of confident learning.

    Args:
        given: ``[N, C]`` 0/1 labels (multi-class: one-hot rows or ``[N]`` class indices).
        probs: ``[N, C]`` (or ``[M, N, C]``, averaged over M) probabilities.
        task: ``"multilabel"`` (also binary: C = 1) or ``"multiclass"``.

    Returns:
        ``(present, absent)``, float64 ``[C]`` each: ``present[c]`` is the mean ``P(c)`` over
        the records given ``c`` (the class threshold ``t_c`` of Northcutt et al.); ``absent[c]``
        is the mean ``P(c)`` over the records not given ``c`` (in the one-vs-rest binary problem
        of a multi-label class, the threshold of "absent" is the mean ``1 - P(c)`` over those
        records, i.e. ``1 - absent[c]``). NaN where no record is given (not given) the class.
    """
    task = _task(task)
    p = _probs(probs).mean(axis=0)
    y = _given(given, p.shape, task)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = (p * y).sum(axis=0) / y.sum(axis=0)
        absent = (p * (1 - y)).sum(axis=0) / (1 - y).sum(axis=0)
    return present, absent


def label_issues(given: Any, probs: Any, *, task: str = "multilabel") -> tuple[np.ndarray, np.ndarray]:
    """The off-diagonal entries of the confident joint: given labels judged wrong.

    Multi-label (each class a binary problem with classes absent/present): an entry is
    *confidently present* when ``P(c) >= present[c]`` and *confidently absent* when
    ``1 - P(c) >= 1 - absent[c]`` (both with cleanlab's tolerance of 1e-6); when both hold, the
    larger of ``P(c)`` and ``1 - P(c)`` decides (a tie: absent); when neither holds, the entry is
    not counted. A label issue is a counted entry whose confident class differs from the given
    bit. Multi-class: the classes with ``P(j) >= present[j]`` are confident; with several, the
    most probable class; an issue is a record whose confident class is not the given one.

    Returns:
        ``(issues, guess)``: bool ``[N, C]`` (multi-class: at most one True per row, at the
        given class) and the confident labels float32 ``[N, C]`` (the given ones where no class
        is confident).
    """
    task = _task(task)
    p = _probs(probs).mean(axis=0)
    y = _given(given, p.shape, task)
    present, absent = confident_thresholds(y, p, task=task)
    if task == "multilabel":
        with np.errstate(invalid="ignore"):
            pos = p >= present - TOL  # NaN threshold (class never given): never confident
            neg = (1 - p) >= (1 - absent) - TOL
        guess = np.where(pos & neg, (p > 1 - p).astype(np.float64), np.where(pos, 1.0, np.where(neg, 0.0, y)))
        issues = (pos | neg) & (guess != y)
        return issues, guess.astype(np.float32)
    with np.errstate(invalid="ignore"):
        confident = p >= present - TOL
    n_conf = confident.sum(axis=1)
    choice = np.where(n_conf > 1, p.argmax(axis=1), confident.argmax(axis=1))
    given_class = y.argmax(axis=1)
    wrong = (n_conf > 0) & (choice != given_class)
    issues = np.zeros_like(y, dtype=bool)
    issues[np.flatnonzero(wrong), given_class[wrong]] = True
    guess = y.copy()
    guess[wrong] = np.eye(y.shape[1])[choice[wrong]]
    return issues, guess.astype(np.float32)


def suggested_labels(given: Any, probs: Any, *, task: str = "multilabel") -> np.ndarray:
    """The labels confident learning suggests: the given ones with each label issue corrected
    (float32 ``[N, C]``)."""
    return label_issues(given, probs, task=task)[1]


def confident_learning(given: Any, probs: Any, *, labels: Sequence[str] | None = None, task: str = "multilabel",
                       rank_by: str = "self_confidence", max_reasons: int = 3) -> Ranking:
    """Rank records by confident-learning label issues, then by how little the predictions
    support the given labels.

    Per record, the self-confidence of each given bit is ``P(c)`` where the label is given and
    ``1 - P(c)`` where it is not (multi-class: ``P(given class)``); the record's quality ``q``
    is the lowest over its labels (multi-class: its given class). With
    ``rank_by="normalized_margin"``, ``q = (1 + margin) / 2`` with the margin ``P(given) -
    max P(other)`` (for a binary label this equals the self-confidence, so multi-label rankings
    are the same).

    ``score = [record has a label issue] + (1 - q)``: every flagged record comes before every
    other one, and among each group, the least confident first.

    Args:
        given: ``[N, C]`` 0/1 labels (multi-class: one-hot rows or ``[N]`` class indices).
        probs: out-of-fold probabilities ``[N, C]`` (or ``[M, N, C]``: their mean is used).
        labels: the class names (used in the reasons).
        task: ``"multilabel"`` (also binary) or ``"multiclass"``.
        rank_by: ``"self_confidence"`` or ``"normalized_margin"``.
        max_reasons: label issues named per reason at most.

    Returns:
        a :class:`Ranking` with ``issues`` and ``suggested``; reasons like ``"given MI but
        out-of-fold P(MI)=0.03 <= 0.12 (mean P(MI) of records not given MI)"`` or ``"not given
        LVH but P(LVH)=0.93 >= 0.41 (mean P(LVH) of records given LVH)"``.
    """
    task = _task(task)
    if rank_by not in ("self_confidence", "normalized_margin"):
        raise ValidationError(f"rank_by: expected self_confidence or normalized_margin, got {rank_by!r}")
    p = _probs(probs).mean(axis=0)
    y = _given(given, p.shape, task)
    names = _names(labels, p.shape[1])
    present, absent = confident_thresholds(y, p, task=task)
    issues, guess = label_issues(y, p, task=task)
    if task == "multilabel":
        entry_q = np.where(y == 1, p, 1 - p)  # self-confidence of each given bit
        q = entry_q.min(axis=1)  # the binary normalised margin 2q - 1 ranks identically
    else:
        given_class = y.argmax(axis=1)
        p_given = p[np.arange(len(p)), given_class]
        if rank_by == "self_confidence":
            q = p_given
        else:
            other = np.where(y == 1, -np.inf, p).max(axis=1) if p.shape[1] > 1 else np.zeros(len(p))
            q = (1 + p_given - other) / 2
        entry_q = np.where(y == 1, p, 1.0)
    flagged = issues.any(axis=1)
    scores = flagged.astype(np.float64) + (1 - q)
    reasons = []
    for i in range(len(p)):
        if flagged[i]:
            cols = np.flatnonzero(issues[i])
            if task == "multilabel":
                cols = cols[np.argsort(entry_q[i, cols], kind="stable")]
                parts = [_ml_issue(names[j], y[i, j], p[i, j], present[j], absent[j]) for j in cols[:max_reasons]]
                if len(cols) > max_reasons:
                    parts.append(f"and {len(cols) - max_reasons} more")
            else:
                g, c = int(cols[0]), int(np.flatnonzero(guess[i])[0])
                parts = [f"given {_short(names[g])} (P={p[i, g]:.2f}) but out-of-fold P({_short(names[c])})="
                         f"{p[i, c]:.2f} >= {present[c]:.2f} (mean P({_short(names[c])}) of records given "
                         f"{_short(names[c])})"]
            reasons.append("; ".join(parts))
        else:
            j = int(np.argmin(entry_q[i]))
            state = "given" if y[i, j] == 1 else "not given"
            reasons.append(f"no label issue; least supported label: {_short(names[j])} {state}, "
                           f"out-of-fold P({_short(names[j])})={p[i, j]:.2f}")
    return Ranking("confident", scores, tuple(reasons), issues, guess)


def _ml_issue(name: str, given: float, p: float, present: float, absent: float) -> str:
    n = _short(name)
    if given == 1:
        return f"given {n} but out-of-fold P({n})={p:.2f} <= {absent:.2f} (mean P({n}) of records not given {n})"
    return f"not given {n} but out-of-fold P({n})={p:.2f} >= {present:.2f} (mean P({n}) of records given {n})"


# ---------------------------------------------------------------------------------------------
# uncertainty, loss, random
# ---------------------------------------------------------------------------------------------
def uncertainty(probs: Any, *, labels: Sequence[str] | None = None, task: str = "multilabel",
                kind: str = "entropy", reduce: str = "max") -> Ranking:
    """Rank records by predictive uncertainty (the given labels play no part).

    ``probs`` ``[N, C]`` or ``[M, N, C]`` (M models or dropout passes; ``p`` below is their mean).

    Multi-label, per label then reduced over labels by ``reduce`` (``"max"`` or ``"mean"``):

    * ``entropy``: ``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` bits;
    * ``margin``: ``1 - |2p - 1|`` (1 at p = 0.5, 0 at p = 0 or 1);
    * ``bald``: mutual information ``H(p) - mean_m H(p_m)`` (needs M >= 2): where the models
      disagree, not where they agree on 0.5.

    Multi-class, per record: the entropy of the row (bits), ``1 - (p_top1 - p_top2)``, or the
    mutual information.
    """
    task = _task(task)
    if kind not in ("entropy", "margin", "bald"):
        raise ValidationError(f"uncertainty kind: expected entropy, margin or bald, got {kind!r}")
    if reduce not in ("max", "mean"):
        raise ValidationError(f"reduce: expected max or mean, got {reduce!r}")
    pm = _probs(probs)
    if kind == "bald" and pm.shape[0] < 2:
        raise ValidationError("uncertainty kind 'bald' needs predictions of two or more models or dropout passes "
                              f"(probs [M, N, C] with M >= 2), got M = {pm.shape[0]}")
    p = pm.mean(axis=0)
    names = _names(labels, p.shape[1])
    if task == "multilabel":
        if kind == "entropy":
            entry = _bits(p)
        elif kind == "margin":
            entry = 1 - np.abs(2 * p - 1)
        else:
            entry = _bits(p) - _bits(pm).mean(axis=0)
        scores = entry.max(axis=1) if reduce == "max" else entry.mean(axis=1)
        worst = entry.argmax(axis=1)
        reasons = []
        for i, j in enumerate(worst):
            n = _short(names[j])
            if kind == "bald":
                lo, hi = pm[:, i, j].min(), pm[:, i, j].max()
                text = (f"models disagree most on {n}: P({n}) from {lo:.2f} to {hi:.2f} "
                        f"(mutual information {entry[i, j]:.3f} bits)")
            elif kind == "entropy":
                text = f"most uncertain label {n}: out-of-fold P({n})={p[i, j]:.2f} (entropy {entry[i, j]:.2f} bits)"
            else:
                text = f"most uncertain label {n}: out-of-fold P({n})={p[i, j]:.2f} (margin {1 - entry[i, j]:.2f})"
            if reduce == "mean":
                text += f"; mean over labels {scores[i]:.3f}"
            reasons.append(text)
        return Ranking("uncertainty", scores.astype(np.float64), tuple(reasons))
    top2 = np.sort(p, axis=1)[:, ::-1]
    if kind == "entropy":
        scores = _entropy_rows(p)
    elif kind == "margin":
        scores = 1 - (top2[:, 0] - (top2[:, 1] if p.shape[1] > 1 else 0))
    else:
        scores = _entropy_rows(p) - _entropy_rows(pm).mean(axis=0)
    order = np.argsort(-p, axis=1)
    reasons = []
    for i in range(len(p)):
        a, b = order[i, 0], order[i, min(1, p.shape[1] - 1)]
        reasons.append(f"{kind} {scores[i]:.3f}: out-of-fold P({_short(names[a])})={p[i, a]:.2f}, "
                       f"P({_short(names[b])})={p[i, b]:.2f}")
    return Ranking("uncertainty", scores.astype(np.float64), tuple(reasons))


def sample_loss(given: Any, probs: Any, *, labels: Sequence[str] | None = None, task: str = "multilabel") -> Ranking:
    """Rank records by the loss of their given labels under the out-of-fold predictions.

    Multi-label: the mean over labels of the binary cross-entropy ``-(y log p + (1 - y) log(1 -
    p))`` in nats (what ``bce`` trains on); multi-class: ``-log P(given class)``. ``p`` is
    clipped to ``[1e-7, 1 - 1e-7]``; with ``[M, N, C]`` it is the mean of the M predictions.
    """
    task = _task(task)
    p = _probs(probs).mean(axis=0)
    y = _given(given, p.shape, task)
    names = _names(labels, p.shape[1])
    q = np.clip(p, EPS, 1 - EPS)
    if task == "multilabel":
        entry = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        scores = entry.mean(axis=1)
        reasons = []
        for i, j in enumerate(entry.argmax(axis=1)):
            n = _short(names[j])
            state = "given" if y[i, j] == 1 else "not given"
            reasons.append(f"largest loss on {n} ({state}, out-of-fold P({n})={p[i, j]:.2f}, BCE {entry[i, j]:.2f}); "
                           f"mean BCE {scores[i]:.3f}")
        return Ranking("loss", scores, tuple(reasons))
    g = y.argmax(axis=1)
    scores = -np.log(q[np.arange(len(q)), g])
    reasons = tuple(f"given {_short(names[c])} but out-of-fold P({_short(names[c])})={p[i, c]:.2f} "
                    f"(cross-entropy {scores[i]:.2f})" for i, c in enumerate(g))
    return Ranking("loss", scores, reasons)


def random_ranking(n: int, *, seed: int = 0) -> Ranking:
    """The baseline: uniform random scores for ``n`` records (``numpy.random.default_rng(seed)``)."""
    if n < 0:
        raise ValidationError(f"random ranking: n must be >= 0, got {n}")
    scores = np.random.default_rng(seed).random(int(n))
    return Ranking("random", scores, tuple(f"random draw (baseline, seed {seed})" for _ in range(n)))


def rank(method: str, given: Any, probs: Any, *, labels: Sequence[str] | None = None, task: str = "multilabel",
         seed: int = 0, **options: Any) -> Ranking:
    """One ranking by name: ``"confident"`` (:func:`confident_learning`), ``"uncertainty"``
    (:func:`uncertainty`), ``"loss"`` (:func:`sample_loss`) or ``"random"``
    (:func:`random_ranking`); ``options`` go to that function (``rank_by``, ``kind``, ``reduce``)."""
    p = _probs(probs)
    _given(given, p.shape[1:], _task(task))  # the same checks for every method
    if method == "confident":
        return confident_learning(given, p, labels=labels, task=task, **options)
    if method == "uncertainty":
        return uncertainty(p, labels=labels, task=task, **options)
    if method == "loss":
        return sample_loss(given, p, labels=labels, task=task, **options)
    if method == "random":
        if options:
            raise ValidationError(f"random ranking takes no options, got {sorted(options)}")
        return random_ranking(p.shape[1], seed=seed)
    raise ValidationError(f"ranking method: expected one of {', '.join(METHODS)}, got {method!r}")


# ---------------------------------------------------------------------------------------------
# figures of merit
# ---------------------------------------------------------------------------------------------
def _order(ranking: Ranking | Any) -> np.ndarray:
    return ranking.order() if isinstance(ranking, Ranking) else np.asarray(ranking, np.int64).reshape(-1)


def precision_at_k(ranking: Ranking | Any, relevant: Any, k: int) -> float:
    """Fraction of the first ``k`` records of ``ranking`` (a :class:`Ranking` or an order of
    indices) that are ``relevant`` (bool ``[N]``, e.g. the records whose labels were flipped).

    A random order's expected value is ``relevant.mean()``.
    """
    order, rel = _order(ranking), np.asarray(relevant, bool).reshape(-1)
    if k < 1 or k > len(order):
        raise ValidationError(f"precision@k: k must be in 1..{len(order)}, got {k}")
    if len(rel) != len(order):
        raise ValidationError(f"precision@k: {len(rel)} relevance flags for {len(order)} ranked records")
    return float(rel[order[:k]].mean())


def recall_at_k(ranking: Ranking | Any, relevant: Any, k: int) -> float:
    """Fraction of the ``relevant`` records found among the first ``k`` of ``ranking``."""
    rel = np.asarray(relevant, bool).reshape(-1)
    if not rel.any():
        raise ValidationError("recall@k: no relevant record")
    return precision_at_k(ranking, rel, k) * k / float(rel.sum())
