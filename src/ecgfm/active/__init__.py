"""Active learning for noisy labels: which records to send back for re-annotation.

* :mod:`~ecgfm.active.rank`: rankings over given labels and out-of-fold probabilities
  (confident learning, predictive uncertainty, per-sample loss, random) with a reason per record,
  and precision@K.
* :mod:`~ecgfm.active.oof`: out-of-fold predictions by patient-grouped k-fold training.
* :mod:`~ecgfm.active.probe`: out-of-fold predictions of cross-fitted linear probes on a frozen
  encoder (seconds instead of k trainings).
* :mod:`~ecgfm.active.review`: the review queue and the fold-back of corrected labels into a
  ``data.overrides`` file for retraining.
* :mod:`~ecgfm.active.cli`: ``ecgfm review-queue`` and ``ecgfm review-apply``.

The names below load their module on first use; ``import ecgfm.active`` imports numpy at most.

>>> from ecgfm.active import confident_learning                      # doctest: +SKIP
>>> ranking = confident_learning(given, oof_probs, labels=label_ids)  # doctest: +SKIP
>>> ranking.top(100), ranking.reasons[ranking.top(1)[0]]              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecgfm.active.oof import (
        OutOfFold,
        out_of_fold,
        patient_folds,
        predict_split,
        read_predictions,
    )
    from ecgfm.active.probe import cross_fit_probes, probe_out_of_fold
    from ecgfm.active.rank import (
        Ranking,
        confident_learning,
        confident_thresholds,
        label_issues,
        precision_at_k,
        random_ranking,
        rank,
        recall_at_k,
        sample_loss,
        uncertainty,
    )
    from ecgfm.active.review import fold_back, given_labels, read_queue, review_queue, write_queue

_LAZY = {
    "Ranking": "rank", "confident_learning": "rank", "confident_thresholds": "rank", "label_issues": "rank",
    "precision_at_k": "rank", "random_ranking": "rank", "rank": "rank", "recall_at_k": "rank",
    "sample_loss": "rank", "uncertainty": "rank",
    "OutOfFold": "oof", "out_of_fold": "oof", "patient_folds": "oof", "predict_split": "oof",
    "read_predictions": "oof", "cross_fit_probes": "probe", "probe_out_of_fold": "probe",
    "fold_back": "review", "given_labels": "review", "read_queue": "review", "review_queue": "review",
    "write_queue": "review",
}

__all__ = [
    "OutOfFold", "Ranking", "confident_learning", "confident_thresholds", "cross_fit_probes", "fold_back", "given_labels",
    "label_issues", "out_of_fold", "patient_folds", "precision_at_k", "predict_split", "probe_out_of_fold", "random_ranking", "rank",
    "read_predictions", "read_queue", "recall_at_k", "review_queue", "sample_loss", "uncertainty", "write_queue",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ecgfm.active.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ecgfm.active' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
