"""Out-of-fold predictions: every training record scored by a model that never saw it.

:func:`out_of_fold` splits a run's training split into k patient-grouped folds and, for each
fold, trains the run's configuration (:func:`ecgfm.train.run.train`) on the other folds with
the fold held out, using ``data.overrides`` to move the held-out records into a split of their
own (``oof-holdout``) at run time; validation stays the configuration's validation split. The
held-out records are then scored by the fold's exported model. It leaves this in ``out_dir``::

    out_dir/fingerprint.json       what the folds depend on (configuration, overrides content, labels,
                                   fold assignment): a rerun with other ones is refused
    out_dir/folds.csv              record_id, patient, fold (the assignment, checked on a rerun)
    out_dir/fold{k}/overrides.csv  the run-time manifest changes of fold k
    out_dir/fold{k}/run/           the fold's training run (checkpoints, logs, model/)
    out_dir/fold{k}/predictions.csv  the held-out records' probabilities (a cache)
    out_dir/oof.csv                record_id, fold, one probability column per label
    out_dir/oof_mc.csv             with mc_passes: the same plus a "pass" column (dropout on)

A rerun resumes: a fold whose model exists is not trained again, and an interrupted fold
continues from its last checkpoint.

**Which predictions.** The held-out records are read from the store as the run's test split is
(``data.eval_crop`` windows of ``data.eval_window``) and fed to the exported model's
:meth:`~ecgfm.models.portable.Model.forward`, which applies the contract's sliding windows and
aggregation: the same computation as the training module's test evaluation (the tests check the
two agree). ``Model.predict`` on the stored records would run the store's preprocessing a
second time over signals that already went through it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError

__all__ = ["HOLDOUT", "OutOfFold", "out_of_fold", "patient_folds", "predict_split", "read_predictions"]

HOLDOUT = "oof-holdout"  # the split name the held-out fold gets at run time


@dataclass
class OutOfFold:
    """What :func:`out_of_fold` returns.

    Attributes:
        record_ids: ``N`` training records, in manifest order.
        patients: ``[N]`` patient keys.
        folds: int ``[N]``, the fold each record was held out in.
        labels: ``C`` label ids (resolved once over the whole training split).
        given: float32 ``[N, C]``, the labels the folds trained on (after ``data.overrides``).
        probabilities: float32 ``[N, C]`` out-of-fold probabilities.
        mc: float32 ``[T, N, C]`` dropout passes, or None.
        path: ``out_dir/oof.csv``.
        runs: per fold, ``{"fold", "model_dir", "trained", "test"}`` (``trained`` False when the
            model existed; ``test``: the held-out metrics logged by the run that trained it).
    """

    record_ids: tuple[str, ...]
    patients: np.ndarray
    folds: np.ndarray
    labels: tuple[str, ...]
    given: np.ndarray
    probabilities: np.ndarray
    mc: np.ndarray | None
    path: Path
    runs: list[dict[str, Any]]


def patient_folds(patients: Sequence[Any] | np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """Assign records to ``k`` folds so that no patient spans two folds, with sizes as equal as
    the patients allow.

    Patients are shuffled (``numpy.random.default_rng(seed)``), ordered by their number of
    records (most first, stable), and each goes to the fold with the fewest records so far
    (lowest index on a tie).

    Returns:
        int64 ``[N]`` fold index in ``0..k-1`` per record.
    """
    keys = np.asarray([str(p) for p in patients], dtype=object)
    if k < 2:
        raise ValidationError(f"folds: expected 2 or more, got {k}")
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    if len(uniq) < k:
        raise ValidationError(f"folds: {k} folds need at least {k} patients, the training split has {len(uniq)}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    perm = perm[np.argsort(-counts[perm], kind="stable")]
    sizes = np.zeros(k, np.int64)
    fold_of = np.empty(len(uniq), np.int64)
    for u in perm:
        f = int(np.argmin(sizes))
        fold_of[u] = f
        sizes[f] += counts[u]
    return fold_of[inverse]


def _patients(manifest: Any, rows: np.ndarray) -> np.ndarray:
    for column in ("patient_key", "patient_id"):
        if column in manifest.columns:
            values = manifest[column].to_numpy()[rows]
            ids = manifest["record_id"].to_numpy()[rows]
            # a record without a patient is a patient of its own
            return np.array([str(v) if v is not None and str(v) not in ("", "nan", "None") else f"record:{r}"
                             for v, r in zip(values, ids)], dtype=object)
    return np.array([f"record:{r}" for r in manifest["record_id"].to_numpy()[rows]], dtype=object)


def _cell(value: Any) -> str:
    """A manifest value as one CSV cell that ``with_overrides`` reads back."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ";".join(str(v) for v in value)
    return str(value)


def _fold_overrides(base: Path | None, corpus: Any, train_rows: np.ndarray, holdout: np.ndarray,
                    train_split: str, path: Path) -> Path:
    """The overrides of one fold: the run's own ``data.overrides`` (values as they stand after
    it) plus the ``split`` of every training record (the held-out ones in :data:`HOLDOUT`)."""
    import pandas as pd

    m = corpus.manifest
    ids = m["record_id"].astype(str).to_numpy()
    rows = dict.fromkeys(train_rows.tolist())
    columns: list[str] = ["split"]
    if base is not None:
        table = pd.read_parquet(base) if base.suffix.lower() in (".parquet", ".pq") else pd.read_csv(
            base, dtype=str, keep_default_na=False)
        where = pd.Index(ids).get_indexer(table["record_id"].astype(str))
        rows.update(dict.fromkeys(int(w) for w in where))
        columns += [c for c in table.columns if c not in ("record_id", "split")]
    row_list = sorted(rows)
    out = {"record_id": ids[row_list]}
    for c in columns:
        out[c] = [_cell(v) for v in m[c].to_numpy()[row_list]]
    split = dict(zip(train_rows.tolist(), np.where(holdout, HOLDOUT, train_split)))
    out["split"] = [split.get(r, c) for r, c in zip(row_list, out["split"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(out).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def predict_split(model_dir: str | os.PathLike[str], corpus: Any, split: str, labels: Sequence[str], *,
                  crop: str = "center", batch_size: int = 64, mc_passes: int = 0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probabilities of a portable model for the records of one split of a store.

    Args:
        model_dir: the model folder (``out_dir/model`` of a training run).
        corpus: the open :class:`~ecgfm.store.format.Corpus` (its manifest as the run saw it:
            overrides applied, label columns merged into ``labels``).
        split: the manifest split to score.
        labels: the label ids; must be the model's outputs, in order.
        crop: the window crop (the run's ``data.eval_crop``).
        mc_passes: also run this many passes with the dropout layers active.
        seed: seed of the dropout passes.

    Returns:
        ``(rows, probs, mc)``: manifest rows int64 ``[n]``, float32 ``[n, C]`` and float32
        ``[T, n, C]`` (None without ``mc_passes``).
    """
    import torch

    from ecgfm.models.heads import predict_from_logits
    from ecgfm.models.portable import load_model
    from ecgfm.store.dataset import CorpusDataset

    model = load_model(model_dir)
    if tuple(model.labels) != tuple(labels):
        raise ValidationError(f"{model_dir}: the model predicts {list(model.labels)[:8]}, expected {list(labels)[:8]}")
    c = model.input
    ds = CorpusDataset(corpus, split=split, window=c.seconds, crop=crop, leads=c.leads, label_ids=list(labels))
    batches = [list(range(i, min(i + batch_size, len(ds)))) for i in range(0, len(ds), batch_size)]
    inputs = [ds.__getitems__(b) for b in batches]

    def run() -> np.ndarray:
        out = [predict_from_logits(model.forward(x["signal"], x["mask"]).float(), model.head).cpu().numpy()
               for x in inputs]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(labels)), np.float32)

    probs = run()
    mc = None
    if mc_passes > 0:
        dropouts = [m for m in model.encoder.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        if not dropouts:
            raise ValidationError(f"{model_dir}: the encoder has no dropout layer; mc_passes needs one")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for m in dropouts:
                m.train()
            try:
                mc = np.stack([run() for _ in range(mc_passes)])
            finally:
                for m in dropouts:
                    m.eval()
    return np.asarray(ds.rows, np.int64), probs, mc


def _write_predictions(path: Path, ids: Sequence[str], folds: np.ndarray, labels: Sequence[str],
                       probs: np.ndarray, passes: np.ndarray | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame(np.asarray(probs, np.float64), columns=list(labels))
    frame.insert(0, "fold", np.asarray(folds, np.int64))
    if passes is not None:
        frame.insert(0, "pass", np.asarray(passes, np.int64))
    frame.insert(0, "record_id", list(ids))
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.9g")
    os.replace(tmp, path)


def read_predictions(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                     labels: Sequence[str] | None = None) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """Read prediction tables (``record_id``, optional ``fold``/``pass``/``source``/``error``
    columns, one probability column per label).

    Several files (several models), or one file with a ``pass`` column (dropout passes), give
    ``M`` predictions per record; every file must hold the same records.

    Args:
        paths: one CSV/Parquet file or several.
        labels: the label columns to read (default: every other column of the first file).

    Returns:
        ``(record_ids [N], labels [C], probs float64 [M, N, C])``.

    Raises:
        ReadError: a file is missing or unreadable, lacks ``record_id`` or a label column,
            repeats a record, holds a non-numeric or out-of-range value, or holds other records
            than the first file.
    """
    import pandas as pd

    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValidationError("predictions: give at least one file")
    meta = {"record_id", "fold", "pass", "source", "error", "patient", "patient_id"}
    ids: list[str] | None = None
    stacks: list[np.ndarray] = []
    for item in items:
        p = Path(item)
        try:
            table = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
        except (OSError, ValueError) as error:
            raise ReadError(p, f"cannot read the predictions: {error}") from None
        if "record_id" not in table.columns:
            raise ReadError(p, f"predictions need a record_id column (columns: {list(table.columns)})")
        table["record_id"] = table["record_id"].astype(str)
        if labels is None:
            labels = tuple(c for c in table.columns if c not in meta)
            if not labels:
                raise ReadError(p, "predictions hold no probability column besides record_id")
        missing = [c for c in labels if c not in table.columns]
        if missing:
            raise ReadError(p, f"predictions lack the label column(s) {missing[:5]} (columns: {list(table.columns)[:12]})")
        groups = [g for _, g in table.groupby("pass", sort=True)] if "pass" in table.columns else [table]
        for g in groups:
            dup = g["record_id"].duplicated()
            if dup.any():
                raise ReadError(p, f"record(s) listed twice: {sorted(set(g['record_id'][dup]))[:5]}")
            values = g[list(labels)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            if not np.isfinite(values).all():
                r, c = np.argwhere(~np.isfinite(values))[0]
                raise ReadError(p, f"record {g['record_id'].iloc[r]}: {labels[c]} is not a number "
                                   f"({g[labels[c]].iloc[r]!r})")
            if (values < 0).any() or (values > 1).any():
                r, c = np.argwhere((values < 0) | (values > 1))[0]
                raise ReadError(p, f"record {g['record_id'].iloc[r]}: {labels[c]}={values[r, c]:.4g} is not a "
                                   "probability in [0, 1]")
            order = g["record_id"].tolist()
            if ids is None:
                ids = order
            elif set(order) != set(ids) or len(order) != len(ids):
                raise ReadError(p, f"holds other records than {items[0]} ({len(order)} vs {len(ids)})")
            else:
                values = values[pd.Index(order).get_indexer(ids)]
            stacks.append(values)
    assert ids is not None and labels is not None
    return ids, tuple(labels), np.stack(stacks)


def out_of_fold(config: Any, folds: int = 5, out_dir: str | os.PathLike[str] | None = None,
                overrides: Sequence[str] = (), *, seed: int | None = None, mc_passes: int = 0,
                batch_size: int = 64, log: Callable[[str], None] | None = None,
                callbacks: Sequence[Any] = ()) -> OutOfFold:
    """Out-of-fold probabilities for every record of a run's training split.

    Args:
        config: a :class:`~ecgfm.train.config.TrainConfig` or YAML file (a multilabel,
            binary or multiclass head); ``data.overrides`` in it (e.g. labels after an earlier
            round of re-annotation) apply to every fold.
        folds: k, the number of patient-grouped folds.
        out_dir: where the folds go (default: ``<config out_dir>/oof``); see the module doc.
        overrides: ``section.key=value`` items applied to the config first.
        seed: seed of the fold assignment (default: the config's ``seed``).
        mc_passes: also score each held-out fold this many times with dropout active
            (``oof_mc.csv``; for :func:`~ecgfm.active.rank.uncertainty` with ``kind="bald"``).
        batch_size: records per forward pass when scoring.
        log: called with one line per fold (progress).
        callbacks: extra Lightning callbacks of every fold's training.

    Returns:
        an :class:`OutOfFold`.

    Raises:
        ValidationError: a regression head, too few patients, a store that already uses the
            split name ``oof-holdout``, or an ``out_dir`` holding folds of other records or
            trained with another configuration or other labels.
    """
    import pandas as pd

    from ecgfm.store.format import Corpus
    from ecgfm.train.config import TrainConfig, apply_overrides, load_config
    from ecgfm.train.run import (
        _label_matrix,
        _label_sets,
        resolve_labels,
        train,
        with_label_columns,
        with_overrides,
    )

    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    d = cfg.data
    if cfg.model.head not in ("multilabel", "binary", "multiclass"):
        raise ValidationError(f"out_of_fold: a {cfg.model.head} head has no labels to review "
                              "(multilabel, binary or multiclass)")
    if not d.store:
        raise ValidationError("data.store: give the corpus store folder (data.store=PATH)")
    say = log or (lambda _m: None)
    out = Path(out_dir) if out_dir is not None else Path(cfg.out_dir) / "oof"
    base = Path(d.overrides) if d.overrides else None
    corpus = with_overrides(Corpus.open(d.store), base)
    m = corpus.manifest
    if "split" not in m.columns:
        raise ValidationError(f"{d.store}: the manifest has no split column")
    splits = m["split"].astype(object).to_numpy()
    if HOLDOUT in set(splits.tolist()):
        raise ValidationError(f"{d.store}: the manifest already uses the split name {HOLDOUT!r}")
    train_rows = np.flatnonzero(splits == d.train_split)
    if len(train_rows) == 0:
        raise ValidationError(f"{d.store}: no record in the training split {d.train_split!r}")
    labels = resolve_labels(corpus, d.labels, d.label_columns, d.train_split)
    ids = m["record_id"].astype(str).to_numpy()[train_rows]
    patients = _patients(m, train_rows)
    fold = patient_folds(patients, folds, seed=cfg.seed if seed is None else seed)

    out.mkdir(parents=True, exist_ok=True)
    _check_fingerprint(out, _fingerprint(cfg, base, labels, folds, fold))
    folds_csv = out / "folds.csv"
    assignment = pd.DataFrame({"record_id": ids, "patient": patients, "fold": fold})
    if folds_csv.is_file():
        saved = pd.read_csv(folds_csv, dtype={"record_id": str, "patient": str})
        if saved["record_id"].tolist() != ids.tolist() or saved["fold"].tolist() != fold.tolist():
            raise ValidationError(f"{folds_csv}: this folder holds folds of other training records, another fold "
                                  "count or seed; choose another out_dir or delete it")
    else:
        assignment.to_csv(folds_csv, index=False)

    sets = _label_sets(corpus, d.label_columns)
    given = _label_matrix(sets, train_rows, labels)
    probs = np.full((len(train_rows), len(labels)), np.nan, np.float32)
    mc = np.full((mc_passes, len(train_rows), len(labels)), np.nan, np.float32) if mc_passes else None
    position = {int(r): i for i, r in enumerate(train_rows)}
    runs: list[dict[str, Any]] = []
    for k in range(folds):
        fold_dir = out / f"fold{k}"
        run_dir = fold_dir / "run"
        model_dir = run_dir / "model"
        cache, cache_mc = fold_dir / "predictions.csv", fold_dir / "predictions_mc.csv"
        fold_overrides = _fold_overrides(base, corpus, train_rows, fold == k, d.train_split,
                                         fold_dir / "overrides.csv")
        info: dict[str, Any] = {"fold": k, "model_dir": str(model_dir), "trained": False, "test": None,
                                "n_holdout": int((fold == k).sum())}
        if not (model_dir / "config.json").is_file():
            for stale in (cache, cache_mc):
                stale.unlink(missing_ok=True)
            say(f"fold {k + 1}/{folds}: training on {int((fold != k).sum())} records, "
                f"{info['n_holdout']} held out -> {run_dir}")
            result = train(cfg, [f"data.overrides={json.dumps(str(fold_overrides))}",
                                 f"data.test_split={HOLDOUT}", f"data.labels={json.dumps(list(labels))}",
                                 f"out_dir={json.dumps(str(run_dir))}", "resume=auto", "trainer.export=true"],
                           callbacks=callbacks)
            info.update(trained=True, test=result.get("test"), seconds=result.get("seconds"))
        else:
            say(f"fold {k + 1}/{folds}: model exists ({model_dir}), not retrained")
        fold_corpus = with_label_columns(with_overrides(Corpus.open(d.store), fold_overrides), d.label_columns)
        if cache.is_file() and (not mc_passes or cache_mc.is_file()):
            _, _, fold_probs = read_predictions(cache, labels)
            rows_k = train_rows[fold == k]
            cached_ids = pd.read_csv(cache, usecols=["record_id"], dtype=str)["record_id"].tolist()
            if cached_ids != ids[fold == k].tolist():
                raise ValidationError(f"{cache}: holds other records than fold {k}; delete it")
            fold_p, fold_mc = fold_probs[0], read_predictions(cache_mc, labels)[2] if mc_passes else None
        else:
            rows_k, fold_p, fold_mc = predict_split(model_dir, fold_corpus, HOLDOUT, labels, crop=d.eval_crop,
                                                    batch_size=batch_size, mc_passes=mc_passes, seed=cfg.seed + k)
            _write_predictions(cache, _ids_of(m, rows_k), np.full(len(rows_k), k), labels, fold_p)
            if fold_mc is not None:
                _write_predictions(cache_mc, _ids_of(m, rows_k) * mc_passes, np.full(len(rows_k) * mc_passes, k),
                                   labels, fold_mc.reshape(-1, len(labels)),
                                   passes=np.repeat(np.arange(mc_passes), len(rows_k)))
        where = [position[int(r)] for r in rows_k]
        probs[where] = fold_p
        if mc is not None and fold_mc is not None:
            mc[:, where] = fold_mc
        runs.append(info)
    path = out / "oof.csv"
    _write_predictions(path, ids, fold, labels, probs)
    if mc is not None:
        _write_predictions(out / "oof_mc.csv", list(ids) * mc_passes, np.tile(fold, mc_passes), labels,
                           mc.reshape(-1, len(labels)), passes=np.repeat(np.arange(mc_passes), len(ids)))
    (out / "oof.json").write_text(json.dumps({
        "store": str(d.store), "train_split": d.train_split, "folds": folds, "labels": list(labels),
        "label_columns": list(d.label_columns), "overrides": None if base is None else str(base),
        "head": cfg.model.head, "mc_passes": mc_passes, "runs": runs}, indent=1, default=str) + "\n")
    return OutOfFold(tuple(ids.tolist()), patients, fold, tuple(labels), given, probs, mc, path, runs)


def _fingerprint(cfg: Any, base: Path | None, labels: Sequence[str], folds: int, fold: np.ndarray) -> dict[str, Any]:
    """What the folds' models depend on: the configuration (less where its outputs go and how
    progress shows), the content of its overrides file, the labels and the fold assignment."""
    import hashlib

    config = cfg.to_dict()
    for key in ("out_dir", "resume"):
        config.pop(key, None)
    config["trainer"].pop("progress", None)
    config["data"].pop("num_workers", None)
    config["data"]["overrides"] = None if base is None else hashlib.sha256(base.read_bytes()).hexdigest()
    text = json.dumps({"config": config, "labels": list(labels), "folds": folds, "assignment": fold.tolist()},
                      sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "config": config}


def _check_fingerprint(out: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to reuse fold models trained with another configuration or other labels (a
    folder without a fingerprint, from an older version, is trusted and stamped)."""
    path = out / "fingerprint.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("sha256") != fingerprint["sha256"]:
            from ecgfm.train.run import _changed_keys

            changed = _changed_keys(saved.get("config") or {}, fingerprint["config"])
            raise ValidationError(
                f"{out}: holds folds trained with another configuration, other labels or another fold "
                f"assignment (differs in {', '.join(changed) or 'the labels or folds'}); choose another out_dir "
                "or delete it")
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _ids_of(manifest: Any, rows: np.ndarray) -> list[str]:
    """The ``record_id`` of manifest ``rows``."""
    return manifest["record_id"].astype(str).to_numpy()[rows].tolist()
