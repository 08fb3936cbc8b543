"""The review loop: a queue of records to re-annotate, and the corrections folded back in.

1. :func:`review_queue` ranks records (:mod:`ecgfm.active.rank`) and writes the first K as a
   CSV with the columns :data:`QUEUE_COLUMNS`: ``record_id, rank, score, method, reason,
   given_labels, suggested_labels, corrected_labels`` (label ids ";"-separated; the last one
   empty, for the annotator).
2. The annotator fills ``corrected_labels`` with the complete set of the task's labels that
   apply to the record: ids ";"-separated (as in ``given_labels``, or without the
   ``column:`` prefix when that is unambiguous), ``none`` when none applies; a row left empty
   was not reviewed and is skipped.
3. :func:`fold_back` turns the filled queue into a ``data.overrides`` file: for each reviewed
   record, the labels removed (given but not corrected) and added (corrected but not given)
   are applied to the store's label columns, so labels outside the task are kept. Then
   ``ecgfm train --config X data.overrides=overrides.csv`` retrains on the corrected labels.

Label ids name their manifest column as :func:`ecgfm.train.run.resolve_labels` does: an id
``superdiagnostic:MI`` is ``MI`` in the ``superdiagnostic`` column, an id without a column
prefix is in ``labels``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.active.rank import Ranking, _given, rank
from ecgfm.errors import ReadError, ValidationError

__all__ = ["QUEUE_COLUMNS", "fold_back", "given_labels", "label_columns_of", "read_queue", "review_queue",
           "write_queue"]

QUEUE_COLUMNS = ("record_id", "rank", "score", "method", "reason", "given_labels", "suggested_labels",
                 "corrected_labels")
NONE = "none"  # corrected_labels of a record to which no label of the task applies


def label_columns_of(labels: Sequence[str], manifest_columns: Sequence[str]) -> tuple[str, ...]:
    """The manifest columns that label ids come from: the prefix of ``column:id`` ids that name
    a manifest column, and ``labels`` for the others (in order of first use)."""
    columns: list[str] = []
    for label in labels:
        column = _column_of(label, manifest_columns)
        if column not in columns:
            columns.append(column)
    return tuple(columns)


def _column_of(label: str, manifest_columns: Sequence[str]) -> str:
    prefix, sep, _ = str(label).partition(":")
    return prefix if sep and prefix != "labels" and prefix in manifest_columns else "labels"


def _split_id(label: str, manifest_columns: Sequence[str]) -> tuple[str, str]:
    column = _column_of(label, manifest_columns)
    return column, (str(label) if column == "labels" else str(label).partition(":")[2])


def _open(store: str | os.PathLike[str], overrides: str | os.PathLike[str] | None) -> Any:
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_overrides

    return with_overrides(Corpus.open(store), overrides)


def given_labels(store: str | os.PathLike[str], labels: Sequence[str], *, record_ids: Sequence[str] | None = None,
                 label_columns: Sequence[str] | None = None,
                 overrides: str | os.PathLike[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The labels a store gives its records, as a 0/1 matrix over ``labels``.

    Args:
        store: the corpus store folder.
        labels: ``C`` label ids (``column:id`` for ids of another column than ``labels``).
        record_ids: the records, in this order (default: every record of the store).
        label_columns: the manifest columns to read (default: :func:`label_columns_of`).
        overrides: a ``data.overrides`` file applied first (e.g. labels corrected earlier).

    Returns:
        ``(record_ids [N], given float32 [N, C])``.

    Raises:
        ValidationError: a record is not in the store.
    """
    from ecgfm.train.run import _label_matrix, _label_sets

    corpus = _open(store, overrides)
    m = corpus.manifest
    columns = tuple(label_columns) if label_columns else label_columns_of(labels, list(m.columns))
    sets = _label_sets(corpus, columns)
    all_ids = m["record_id"].astype(str).tolist()
    if record_ids is None:
        rows = np.arange(len(all_ids))
        ids = all_ids
    else:
        import pandas as pd

        ids = [str(r) for r in record_ids]
        rows = pd.Index(all_ids).get_indexer(ids)
        if (rows < 0).any():
            missing = [r for r, w in zip(ids, rows) if w < 0]
            raise ValidationError(f"{store}: {len(missing)} record(s) are not in the store, e.g. {missing[:5]}")
    return ids, _label_matrix(sets, rows, list(labels))


def _join(row: np.ndarray, labels: Sequence[str]) -> str:
    return ";".join(label for label, v in zip(labels, row) if v >= 0.5)


def review_queue(record_ids: Sequence[str], given: Any, probs: Any, labels: Sequence[str], *,
                 method: str = "confident", top: int | None = None, task: str = "multilabel", seed: int = 0,
                 exclude: Sequence[str] = (), **options: Any) -> Any:
    """The first ``top`` records to re-annotate, as a table (:data:`QUEUE_COLUMNS`).

    Args:
        record_ids: ``N`` record ids.
        given: ``[N, C]`` 0/1 labels the records carry now.
        probs: out-of-fold probabilities ``[N, C]`` (or ``[M, N, C]``).
        labels: ``C`` label ids.
        method: ``confident``, ``uncertainty``, ``loss`` or ``random`` (:func:`ecgfm.active.rank.rank`).
        top: rows kept (default: all).
        task: ``multilabel`` (also binary) or ``multiclass``.
        seed: seed of the random ranking.
        exclude: record ids left out (e.g. records reviewed in an earlier round).
        options: passed to the ranking (``rank_by``, ``kind``, ``reduce``).

    Returns:
        a pandas DataFrame: ``record_id``, ``rank`` (1 = first), ``score`` (the method's),
        ``method``, ``reason``, ``given_labels``, ``suggested_labels`` (confident learning's
        suggestion, whatever the ranking), ``corrected_labels`` (empty).
    """
    import pandas as pd

    from ecgfm.active.rank import suggested_labels

    ids = [str(r) for r in record_ids]
    p = np.asarray(probs, np.float64)
    n = p.shape[-2] if p.ndim >= 2 else 0
    if len(ids) != n:
        raise ValidationError(f"review queue: {len(ids)} record ids for {n} rows of probabilities")
    ranking: Ranking = rank(method, given, p, labels=labels, task=task, seed=seed, **options)
    suggested = ranking.suggested if ranking.suggested is not None else suggested_labels(given, p, task=task)
    skip = set(map(str, exclude))
    order = [i for i in ranking.order() if ids[i] not in skip]
    if top is not None:
        if top < 1:
            raise ValidationError(f"top: expected >= 1, got {top}")
        order = order[:top]
    y = _given(given, p.shape[-2:], task)  # [N, C] (class indices become one-hot rows)
    return pd.DataFrame({
        "record_id": [ids[i] for i in order],
        "rank": np.arange(1, len(order) + 1),
        "score": [round(float(ranking.scores[i]), 6) for i in order],
        "method": ranking.method,
        "reason": [ranking.reasons[i] for i in order],
        "given_labels": [_join(y[i], labels) for i in order],
        "suggested_labels": [_join(suggested[i], labels) for i in order],
        "corrected_labels": "",
    }, columns=list(QUEUE_COLUMNS))


def write_queue(queue: Any, path: str | os.PathLike[str]) -> Path:
    """Write a queue table as CSV (atomically); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    queue.to_csv(tmp, index=False)
    os.replace(tmp, p)
    return p


def read_queue(path: str | os.PathLike[str]) -> Any:
    """Read a queue CSV (all cells as strings, empty cells as "").

    Raises:
        ReadError: missing or unreadable, or without ``record_id``, ``given_labels`` or
            ``corrected_labels``, or a record listed twice.
    """
    import pandas as pd

    p = Path(path)
    try:
        table = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ReadError(p, f"cannot read the review queue: {error}") from None
    missing = [c for c in ("record_id", "given_labels", "corrected_labels") if c not in table.columns]
    if missing:
        raise ReadError(p, f"a review queue needs the column(s) {missing} (columns: {list(table.columns)})")
    dup = table["record_id"].duplicated()
    if dup.any():
        raise ReadError(p, f"record(s) listed twice: {sorted(set(table['record_id'][dup]))[:5]}")
    return table


def _parse(cell: str) -> list[str]:
    return [v.strip() for v in str(cell).split(";") if v.strip()]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ";".join(str(v) for v in value)
    return str(value)


def fold_back(corrections: Any, out: str | os.PathLike[str], *, store: str | os.PathLike[str],
              overrides: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Turn a filled review queue into a ``data.overrides`` file for retraining.

    Args:
        corrections: the queue (a CSV path or a DataFrame) with ``record_id``, ``given_labels``
            and ``corrected_labels`` filled for the reviewed records (see the module doc).
        out: the overrides CSV to write (``record_id`` plus one column per label column touched;
            label ids ";"-separated).
        store: the corpus store the queue was made from.
        overrides: the overrides file the queue's given labels came from (an earlier round's
            output, or a run's ``data.overrides``); its rows are carried into ``out`` and the
            corrections apply on top of its values.

    Returns:
        ``{"out", "reviewed", "changed", "unchanged", "skipped", "records": [ids changed]}``.

    Raises:
        ReadError: the queue names a record the store lacks, its ``given_labels`` are not the
            record's current labels, or ``corrected_labels`` holds an unknown id (the message
            names the file, the row and the id).
    """
    import pandas as pd

    where = str(corrections) if not isinstance(corrections, pd.DataFrame) else "corrections"
    table = read_queue(corrections) if not isinstance(corrections, pd.DataFrame) else corrections.astype(str)
    corpus = _open(store, overrides)
    m = corpus.manifest
    columns = list(m.columns)
    all_ids = m["record_id"].astype(str)
    rows = pd.Index(all_ids).get_indexer(table["record_id"].astype(str))
    if (rows < 0).any():
        missing = table["record_id"][rows < 0].tolist()
        raise ReadError(where, f"{len(missing)} record(s) are not in the store {store}, e.g. {missing[:5]}")
    # ids the annotator may write without their column prefix
    known = {i for c in ("given_labels", "suggested_labels") if c in table.columns for cell in table[c] for i in _parse(cell)}
    short: dict[str, list[str]] = {}
    for label in known:
        short.setdefault(label.rsplit(":", 1)[-1], []).append(label)

    from ecgfm.train.run import _ids

    def current(row: int, column: str) -> list[str]:
        return _ids(m[column].iloc[row]) if column in columns else []

    in_column: dict[str, set[str]] = {}

    def resolve(label: str, line: int) -> str:
        if label in known:
            return label
        column, value = _split_id(label, columns)
        if column == "labels":
            matches = short.get(label, [])
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ReadError(where, f"row {line}: corrected label {label!r} is ambiguous "
                                       f"({', '.join(sorted(matches))}); write the full id")
        if column in columns:
            if column not in in_column:
                in_column[column] = {i for v in m[column] for i in _ids(v)}
            if value in in_column[column]:
                return label
        raise ReadError(where, f"row {line}: corrected label {label!r} is not a label of the queue or the store "
                               f"(queue labels: {', '.join(sorted(known)[:12])}); write ids ';'-separated, or "
                               f"'{NONE}' for none")

    changes: dict[int, dict[str, list[str]]] = {}
    reviewed = unchanged = skipped = 0
    for line, (row, given_cell, corrected_cell) in enumerate(
            zip(rows, table["given_labels"], table["corrected_labels"]), start=2):
        cell = str(corrected_cell).strip()
        if not cell or cell.lower() == "nan":
            skipped += 1
            continue
        reviewed += 1
        given = _parse(given_cell)
        corrected = [] if cell.lower() == NONE else [resolve(v, line) for v in _parse(cell)]
        for label in given:  # the queue must describe the labels as they stand
            column, value = _split_id(label, columns)
            if value not in current(int(row), column):
                raise ReadError(where, f"row {line}: record {all_ids.iloc[row]} is given {label} in the queue but not in "
                                       f"the store{' with ' + str(overrides) if overrides else ''}; pass the overrides "
                                       "file the queue was made with")
        removed = [x for x in given if x not in corrected]
        added = [x for x in dict.fromkeys(corrected) if x not in given]
        if not removed and not added:
            unchanged += 1
            continue
        record = changes.setdefault(int(row), {})
        for label in removed + added:
            column, _ = _split_id(label, columns)
            record.setdefault(column, current(int(row), column))
        for label in removed:
            column, value = _split_id(label, columns)
            record[column] = [v for v in record[column] if v != value]
        for label in added:
            column, value = _split_id(label, columns)
            if value not in record[column]:
                record[column].append(value)

    base_table = None
    if overrides is not None:
        p = Path(overrides)
        base_table = (pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq")
                      else pd.read_csv(p, dtype=str, keep_default_na=False))
        base_table = base_table.map(_cell) if hasattr(base_table, "map") else base_table.applymap(_cell)
    out_columns = [] if base_table is None else [c for c in base_table.columns if c != "record_id"]
    for record in changes.values():
        out_columns += [c for c in record if c not in out_columns]
    base_rows = [] if base_table is None else pd.Index(all_ids).get_indexer(base_table["record_id"].astype(str)).tolist()
    order = list(dict.fromkeys(base_rows + sorted(changes)))
    frame: dict[str, list[str]] = {"record_id": [str(all_ids.iloc[r]) for r in order]}
    for column in out_columns:
        values = []
        for r in order:
            if r in changes and column in changes[r]:
                values.append(";".join(changes[r][column]))
            else:  # as it stands (after the base overrides): rewriting it changes nothing
                values.append(_cell(m[column].iloc[r]) if column in columns else "")
        frame[column] = values
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(frame, columns=["record_id", *out_columns]).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return {"out": str(path), "reviewed": reviewed, "changed": len(changes), "unchanged": unchanged,
            "skipped": skipped, "records": [str(all_ids.iloc[r]) for r in sorted(changes)]}
