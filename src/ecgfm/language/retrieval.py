"""ECG <-> report retrieval: recall@k both ways, and the nearest-neighbour report baseline.

Retrieval scores every (ECG, report) pair of a test set by the cosine similarity of their joint
embeddings. For an ECG, recall@k is 1 when its own report is among the ``k`` most similar
reports (ECG -> report); for a report, when its own ECG is among the ``k`` most similar ECGs
(report -> ECG); each is averaged over the set. Ties are broken by position (stable sort), so
the figures are deterministic.

Identical reports: with ``groups`` (equal id = identical normalised text) a retrieved report
counts as correct when its text is the query's report text, and a retrieved ECG when its report
is the query text. On PTB-XL, where one test report in ten reads "sinus rhythm. normal ecg.",
instance matching (``groups=None``) asks the impossible: to tell apart ECGs whose reports are
the same words. The benchmark reports both.

The nearest-neighbour report baseline of report generation returns, for each query ECG, the
report of the most similar training ECG by encoder embedding (cosine similarity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError

__all__ = ["nearest_neighbours", "nearest_neighbour_reports", "retrieval_recall", "text_groups"]


def _unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValidationError(f"{what} must be [N, E], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValidationError(f"{what} holds non-finite values")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def text_groups(texts: Sequence[str | None]) -> np.ndarray:
    """Group id per text (int64 ``[N]``): equal ids for equal texts, numbered in first-seen order;
    missing texts get a group of their own each."""
    seen: dict[str, int] = {}
    out = np.empty(len(texts), np.int64)
    n = 0
    for i, t in enumerate(texts):
        if t is None or t != t:
            out[i] = n
            n += 1
            continue
        key = str(t)
        if key not in seen:
            seen[key] = n
            n += 1
        out[i] = seen[key]
    return out


def retrieval_recall(ecg: np.ndarray, text: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                     groups: np.ndarray | None = None) -> dict[str, float]:
    """Recall@k of ECG -> report and report -> ECG retrieval (see the module docstring).

    Args:
        ecg: ``[N, E]`` ECG embeddings; row ``i`` belongs with ``text`` row ``i``.
        text: ``[N, E]`` report embeddings.
        ks: the cut-offs.
        groups: ``[N]`` ids, equal for identical reports (:func:`text_groups`), or None
            (each pair is its own).

    Returns:
        ``{"ecg_to_report@k": ..., "report_to_ecg@k": ..., "n": N}`` for each ``k``
        (``k`` above N is clipped to N).
    """
    e, t = _unit(ecg, "ecg embeddings"), _unit(text, "text embeddings")
    if e.shape != t.shape:
        raise ValidationError(f"ecg {e.shape} and text {t.shape} embeddings differ in shape")
    n = e.shape[0]
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValidationError(f"groups must be [N] = [{n}], got {g.shape}")
    sim = e @ t.T  # [N ECGs, N reports]
    order_e2t = np.argsort(-sim, axis=1, kind="stable")  # reports, best first, per ECG
    order_t2e = np.argsort(-sim.T, axis=1, kind="stable")  # ECGs, best first, per report
    hit_e2t = g[order_e2t] == g[:, None]  # [N, N]: is the j-th retrieved report right?
    hit_t2e = g[order_t2e] == g[:, None]
    out: dict[str, float] = {"n": float(n)}
    for k in ks:
        if int(k) < 1:
            raise ValidationError(f"ks must be >= 1, got {k}")
        kk = min(int(k), n)
        out[f"ecg_to_report@{k}"] = float(hit_e2t[:, :kk].any(axis=1).mean()) if n else float("nan")
        out[f"report_to_ecg@{k}"] = float(hit_t2e[:, :kk].any(axis=1).mean()) if n else float("nan")
    return out


def nearest_neighbours(query: np.ndarray, gallery: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Index into ``gallery`` ``[M, D]`` of the most cosine-similar row for each ``query`` row
    ``[N, D]`` (int64 ``[N]``; ties go to the lower index)."""
    q, g = _unit(query, "query embeddings"), _unit(gallery, "gallery embeddings")
    if q.shape[1] != g.shape[1]:
        raise ValidationError(f"query ({q.shape[1]}) and gallery ({g.shape[1]}) widths differ")
    if g.shape[0] == 0:
        raise ValidationError("the gallery is empty")
    out = np.empty(q.shape[0], np.int64)
    for s in range(0, q.shape[0], batch):
        out[s:s + batch] = np.argmax(q[s:s + batch] @ g.T, axis=1)
    return out


def nearest_neighbour_reports(query: np.ndarray, gallery: np.ndarray, reports: Sequence[Any]) -> list[Any]:
    """The report of the most similar gallery (training) ECG for each query ECG (the baseline
    report generation is measured against)."""
    if len(reports) != np.asarray(gallery).shape[0]:
        raise ValidationError(f"{len(reports)} reports for a gallery of {np.asarray(gallery).shape[0]} ECGs")
    return [reports[i] for i in nearest_neighbours(query, gallery)]
