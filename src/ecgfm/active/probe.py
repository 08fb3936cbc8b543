"""Out-of-fold predictions in seconds: cross-fitted linear probes on a frozen encoder.

:func:`~ecgfm.active.oof.out_of_fold` trains the whole network k times, which is what a
re-annotation queue over a few thousand records can afford and a million records cannot.
:func:`probe_out_of_fold` embeds every training record once with a frozen encoder (a
self-supervised checkpoint from ``ecgfm pretrain``, or any portable model), then fits k
L2-regularised logistic regressions (:class:`~ecgfm.models.probe.LogisticProbe`) on
patient-grouped folds of the embeddings; each record is scored by the probe that did not see it.

The probe and the trained network make different mistakes, so the mean of their out-of-fold
probabilities ranks label errors better than either (``docs/benchmarks/active_learning.md``);
``ecgfm review-queue --predictions oof.csv --encoder MODEL`` ranks on that mean.

The encoder must not have been trained on the labels under review: a supervised model trained
on those very records has memorised them, errors included, and its features expose nothing.

It leaves this in ``out_dir``::

    out_dir/embeddings.npz   record ids and the encoder's pooled features (a cache, redone when
                             the encoder, the store or the split change)
    out_dir/folds.csv        record_id, patient, fold
    out_dir/oof.csv          record_id, fold, one probability column per label
    out_dir/probe.json       the L2 strengths tried, the cross-validated AUROC of each, the one kept
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.active.oof import OutOfFold, _patients, _write_predictions, patient_folds
from ecgfm.errors import ValidationError

__all__ = ["PROBE_CS", "cross_fit_probes", "probe_out_of_fold"]

PROBE_CS = (0.003, 0.01, 0.03, 0.1, 0.3)  # inverse L2 strengths tried


def cross_fit_probes(features: np.ndarray, given: np.ndarray, folds: np.ndarray, *,
                     cs: Sequence[float] = PROBE_CS, task: str = "multilabel",
                     max_iter: int = 300) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold probabilities of logistic probes, the L2 strength chosen by cross-validation.

    For each ``C`` in ``cs`` and each fold, a :class:`~ecgfm.models.probe.LogisticProbe` is
    fitted on the other folds' standardised features and scores the fold. The ``C`` whose
    out-of-fold probabilities have the best macro AUROC against the given labels is kept (the
    first on a tie).

    Args:
        features: ``[N, D]`` embeddings.
        given: ``[N, C]`` 0/1 given labels (one-hot rows for a multi-class task).
        folds: int ``[N]`` fold of each record (e.g. :func:`~ecgfm.active.oof.patient_folds`).
        cs: inverse regularisation strengths tried.
        task: ``multilabel`` (also binary) or ``multiclass``.
        max_iter: L-BFGS iterations per probe.

    Returns:
        ``(probabilities float32 [N, C], info)``; ``info`` holds ``C`` (the one kept) and
        ``auroc`` (macro AUROC of each ``C``, by its ``str``).
    """
    from ecgfm.evaluate.metrics import auroc
    from ecgfm.models.probe import LogisticProbe

    x = np.asarray(features, np.float64)
    y = np.asarray(given, np.float64)
    folds = np.asarray(folds)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(folds) != len(x):
        raise ValidationError(f"cross_fit_probes: features {x.shape}, labels {y.shape} and folds {folds.shape} "
                              "must be [N, D], [N, C] and [N]")
    if not np.isfinite(x).all():
        raise ValidationError("cross_fit_probes: the features hold NaN or infinite values")
    if task not in ("multilabel", "binary", "multiclass"):
        raise ValidationError(f"cross_fit_probes: task must be multilabel, binary or multiclass, got {task!r}")
    if len(np.unique(folds)) < 2:
        raise ValidationError("cross_fit_probes: give at least two folds")
    multiclass = task == "multiclass"
    target = y.argmax(axis=1) if multiclass else y
    scores: dict[str, float] = {}
    best: tuple[float, float, np.ndarray] | None = None
    for c in cs:
        probs = np.zeros_like(y)
        for k in np.unique(folds):
            train, held = folds != k, folds == k
            mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
            if multiclass and len(np.unique(target[train])) < y.shape[1]:
                raise ValidationError(f"cross_fit_probes: a class has no record outside fold {k}; use fewer folds")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an L-BFGS iteration limit on a probe is harmless here
                probe = LogisticProbe(C=c, max_iter=max_iter).fit((x[train] - mean) / std, target[train])
            probs[held] = probe.predict_proba((x[held] - mean) / std)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a label without positives has no AUROC
            score = float(np.nanmean(auroc(y, probs)))
        scores[str(c)] = score
        if best is None or score > best[1]:
            best = (float(c), score, probs)
    assert best is not None
    return best[2].astype(np.float32), {"C": best[0], "auroc": scores}


def probe_out_of_fold(encoder: Any, store: str | os.PathLike[str], labels: Sequence[str], *, folds: int = 5,
                      out_dir: str | os.PathLike[str] | None = None, split: str = "train",
                      overrides: str | os.PathLike[str] | None = None,
                      label_columns: Sequence[str] | None = None, seed: int = 0, cs: Sequence[float] = PROBE_CS,
                      task: str = "multilabel", window: float | None = None, batch_size: int = 64,
                      log: Callable[[str], None] | None = None) -> OutOfFold:
    """Out-of-fold probabilities of cross-fitted linear probes on a frozen encoder's features.

    Args:
        encoder: a portable model (its folder or file, or a loaded
            :class:`~ecgfm.models.portable.Model`) used as a frozen feature extractor; its rate
            must be the store's.
        store: the corpus store whose labels are reviewed.
        labels: ``C`` label ids (``column:id`` for ids of another column than ``labels``).
        folds: k, the number of patient-grouped folds.
        out_dir: where the embeddings, folds and ``oof.csv`` go (none written when None).
        split: the store's split to review.
        overrides: a ``data.overrides`` file applied to the store's labels first.
        label_columns: the manifest columns the labels are read from (default: from ``labels``).
        seed: seed of the fold assignment.
        cs: inverse L2 strengths tried (:func:`cross_fit_probes`).
        task: ``multilabel`` (also binary) or ``multiclass``.
        window: seconds per record fed to the encoder (default: the model's contract).
        batch_size: records per forward pass.
        log: called with progress lines.

    Returns:
        an :class:`~ecgfm.active.oof.OutOfFold` (``mc`` None; ``runs`` one entry with the
        chosen ``C`` and the AUROC of every ``C`` tried).

    Raises:
        ValidationError: no record in the split, too few patients for the folds, or a label no
            record of the split carries.
    """
    import pandas as pd

    from ecgfm.active.review import given_labels
    from ecgfm.models.portable import Model, load_model
    from ecgfm.models.probe import extract_embeddings
    from ecgfm.store.format import Corpus

    say = log or (lambda _m: None)
    labels = tuple(labels)
    if not labels:
        raise ValidationError("probe_out_of_fold: give the label ids to review")
    corpus = Corpus.open(store)
    m = corpus.manifest
    if "split" not in m.columns:
        raise ValidationError(f"{store}: the manifest has no split column")
    rows = np.flatnonzero(m["split"].astype(str).to_numpy() == split)
    if len(rows) == 0:
        raise ValidationError(f"{store}: no record in the split {split!r}")
    ids = m["record_id"].astype(str).to_numpy()[rows]
    _, given = given_labels(store, labels, record_ids=list(ids), label_columns=label_columns, overrides=overrides)
    empty = [name for name, column in zip(labels, given.T) if not column.any()]
    if empty:
        raise ValidationError(f"probe_out_of_fold: no record of the split {split!r} is given {empty[:5]}")
    patients = _patients(m, rows)
    fold = patient_folds(patients, folds, seed=seed)

    out = Path(out_dir) if out_dir is not None else None
    model = encoder if isinstance(encoder, Model) else load_model(encoder)
    source = encoder.path if isinstance(encoder, Model) else Path(encoder)
    key = {"encoder": str(Path(source).resolve()) if source is not None else repr(model),
           "encoder_stamp": _stamp(source), "store": str(Path(store).resolve()), "split": split,
           "window": window, "records": len(ids)}
    features = _cached_embeddings(out, key, ids)
    if features is None:
        say(f"embedding {len(ids)} records of {store} ({split}) with {key['encoder']}")
        features = extract_embeddings(model, corpus, split=split, window=window, batch_size=batch_size)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / "embeddings.npz", record_id=ids.astype(str), features=features,
                     key=json.dumps(key, sort_keys=True))
    say(f"fitting {folds} x {len(cs)} probes on {features.shape[1]}-dimensional features")
    probs, info = cross_fit_probes(features, given, fold, cs=cs, task=task)
    say(f"kept C={info['C']:g} (cross-validated macro AUROC against the given labels "
        f"{info['auroc'][str(info['C'])]:.3f})")
    path = Path(os.devnull)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"record_id": ids, "patient": patients, "fold": fold}).to_csv(out / "folds.csv", index=False)
        path = out / "oof.csv"
        _write_predictions(path, ids, fold, labels, probs)
        (out / "probe.json").write_text(json.dumps({**key, "folds": folds, "seed": seed, "labels": list(labels),
                                                    "overrides": None if overrides is None else str(overrides),
                                                    "task": task, **info}, indent=1) + "\n")
    runs = [{"kind": "probe", **info, "dimensions": int(features.shape[1])}]
    return OutOfFold(tuple(ids.tolist()), patients, fold, labels, given, probs, None, path, runs)


def _stamp(source: Any) -> list[float] | None:
    """Size and modification time of a model's files: a changed checkpoint invalidates the cache."""
    if source is None or not Path(source).exists():
        return None
    files = sorted(Path(source).rglob("*")) if Path(source).is_dir() else [Path(source)]
    return [v for f in files if f.is_file() for v in (f.stat().st_size, f.stat().st_mtime)]


def _cached_embeddings(out: Path | None, key: dict[str, Any], ids: np.ndarray) -> np.ndarray | None:
    if out is None or not (out / "embeddings.npz").is_file():
        return None
    try:
        saved = np.load(out / "embeddings.npz", allow_pickle=False)
        same = json.loads(str(saved["key"])) == json.loads(json.dumps(key, sort_keys=True))
        if same and saved["record_id"].astype(str).tolist() == ids.tolist():
            return saved["features"]
    except (OSError, ValueError, KeyError):
        pass  # an unreadable cache is redone
    return None
