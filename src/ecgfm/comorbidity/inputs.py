"""Reading a cohort for ``ecgfm comorbidity``: the manifest (labels, covariates) and the predictions.

**Manifest**: a CSV, TSV, Parquet or JSON Lines table, or a corpus store folder (its
``manifest.parquet``), with a ``record_id`` column and a labels column (default ``labels``)
holding each record's condition ids as a list (Parquet, stores) or as text joined by ``;``
(or ``,``; a Python list literal such as ``['AFIB', 'SR']`` is read too). Other columns can be
scores (``age``, a QTc column ...) and covariates.

**Predictions**: what a model writes per record and condition:

- a table with ``record_id`` and one probability column per condition, as
  ``Model.predict_frame`` writes it (its ``source`` column is ignored; rows whose ``error`` is set
  are dropped with a note) and as ``ecgfm evaluate`` reads it. A numeric column whose values all
  lie in [0, 1] is a condition probability; any other numeric column (an ECG-age output, say) is
  a score only. A non-numeric column that is not metadata (``source``, ``error``, ``patient_id``,
  ``split``, ``path``, ``file``) is an error;
- an ``ecgfm profile --out`` folder (``profiles.jsonl`` plus one ``<record>.json`` per record):
  the probabilities of every model output, and the profile's own positive thresholds
  (``positive_at``) as the default operating points. Refused records are left out.

``ecgfm embed`` output (embeddings, not probabilities) is not a predictions table.

Every problem raises :class:`~ecgfm.errors.ReadError` naming the file, the column and, where it
is one record, the record.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.labels import Catalogue

__all__ = [
    "METADATA_COLUMNS", "Predictions", "covariate_matrix", "label_matrix", "parse_labels",
    "parse_thresholds", "read_manifest", "read_predictions", "resolve_score",
]

#: Prediction-table columns that are not conditions or scores.
METADATA_COLUMNS = frozenset({"source", "error", "patient_id", "split", "path", "file", "status"})
_MISSING = {"", "nan", "none", "null", "na", "n/a"}


def _check_ids(frame: pd.DataFrame, path: str, id_column: str) -> pd.DataFrame:
    if frame.empty:
        raise ReadError(path, "the table has no rows")
    if id_column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        raise ReadError(path, f"no {id_column!r} column (columns: {shown})")
    ids = frame[id_column]
    missing = ids.isna() | ids.astype(str).str.strip().str.lower().isin(_MISSING)
    if missing.any():
        raise ReadError(path, f"{int(missing.sum())} rows have an empty {id_column!r} (first at row {int(np.flatnonzero(missing.to_numpy())[0]) + 1})")
    frame = frame.copy()
    frame[id_column] = ids.astype(str).str.strip()
    dup = frame[id_column].duplicated(keep=False)
    if dup.any():
        shown = ", ".join(sorted(set(frame.loc[dup, id_column]))[:5])
        raise ReadError(path, f"{id_column!r} repeats ({int(dup.sum())} rows share an id, e.g. {shown})")
    return frame.reset_index(drop=True)


def read_manifest(path: str | os.PathLike[str], *, id_column: str = "record_id") -> pd.DataFrame:
    """The cohort table: a CSV/TSV/Parquet/JSON Lines file, or a corpus store folder.

    Returns:
        The table with ``id_column`` as stripped text, unique and non-empty.

    Raises:
        ReadError: unreadable, empty, no id column, empty or repeated ids.
    """
    from ecgfm.evaluate.run import load_table

    p = Path(path)
    if p.is_dir():
        if not (p / "store.json").is_file():
            raise ReadError(p, "a folder given as manifest must be a corpus store (no store.json here)")
        from ecgfm.store.format import Corpus

        try:
            frame = Corpus.open(p, verify=None).manifest
        except Exception as exc:  # CorpusError, pyarrow errors: the folder is what the user can fix
            raise ReadError(p, f"cannot open the corpus store ({exc})") from None
    else:
        frame = load_table(p, id_column=id_column)
    return _check_ids(frame, str(p), id_column)


def _cell_labels(value: Any, path: str, column: str, record: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    elif isinstance(value, float) and np.isnan(value):
        return []
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING or text in ("[]", "()"):
            return []
        if text.startswith(("[", "(")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ReadError(path, f"column {column!r}, record {record}: cannot read labels {text[:60]!r} "
                                "(expected a list literal or ids joined by ';')") from None
            items = list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
        else:
            sep = ";" if ";" in text else ","
            items = text.split(sep)
    else:
        raise ReadError(path, f"column {column!r}, record {record}: labels must be a list or text, got {type(value).__name__}")
    out = []
    for item in items:
        label = str(item).strip()
        if label and label.lower() not in _MISSING and label not in out:
            out.append(label)
    return out


def parse_labels(frame: pd.DataFrame, column: str, path: str, *, id_column: str = "record_id") -> list[list[str]]:
    """Each record's condition ids from a labels column (lists, or ``;``-joined text).

    Raises:
        ReadError: the column is missing or a cell cannot be read (names file, column, record).
    """
    if column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        raise ReadError(path, f"no labels column {column!r} (columns: {shown}; choose one with --labels-column)")
    ids = frame[id_column].astype(str).tolist()
    return [_cell_labels(v, path, column, rid) for v, rid in zip(frame[column].tolist(), ids)]


def label_matrix(labels: Sequence[Sequence[str]], catalogue: Catalogue | None = None) -> tuple[np.ndarray, list[str]]:
    """Label lists to a boolean matrix.

    Returns:
        ``(y [N, C] bool, ids [C])``: ids in catalogue table order (a grouping ``<group>:<id>``
        after plain ids, by its base id), ids the catalogue lacks last, alphabetically.
    """
    from ecgfm.comorbidity.conditions import split_group

    if catalogue is None:
        from ecgfm.labels import load_catalogue

        catalogue = load_catalogue()
    vocab = sorted({label for row in labels for label in row})
    position = {cid: i for i, cid in enumerate(catalogue.ids)}
    far = len(position)

    def key(cid: str) -> tuple[int, int, str]:
        group, base = split_group(cid)
        return (group is not None, position.get(base, far), cid)

    ids = sorted(vocab, key=key)
    index = {cid: j for j, cid in enumerate(ids)}
    y = np.zeros((len(labels), len(ids)), dtype=bool)
    rows = [i for i, row in enumerate(labels) for _ in row]
    cols = [index[label] for row in labels for label in row]
    if rows:
        y[np.asarray(rows), np.asarray(cols)] = True
    return y, ids


@dataclass
class Predictions:
    """A model's per-record outputs.

    Attributes:
        frame: ``record_id`` plus every numeric column, one row per record (failed rows dropped).
        probabilities: columns holding probabilities (values in [0, 1]): the conditions.
        scores: other numeric columns, usable as scores only.
        thresholds: default positive thresholds per probability column (from a profile
            folder), else None.
        source: the file or folder read.
        notes: what was dropped or reinterpreted.
    """

    frame: pd.DataFrame
    probabilities: list[str]
    scores: list[str]
    thresholds: dict[str, float] | None
    source: str
    notes: list[str] = field(default_factory=list)


def _read_profile_folder(root: Path, id_column: str) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    import pandas as pd

    index = root / "profiles.jsonl"
    rows: list[dict[str, Any]] = []
    thresholds: dict[str, float] = {}
    refused = 0
    with index.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise ReadError(index, f"line {line_no}: not JSON ({exc})") from None
            if entry.get("status") != "ok":
                refused += 1
                continue
            name = (entry.get("files") or {}).get("json")
            if not name:
                raise ReadError(index, f"line {line_no}: record {entry.get('record_id')} has no JSON profile "
                                "(run ecgfm profile with --format json)")
            try:
                profile = json.loads((root / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ReadError(root / name, f"cannot read the profile ({exc})") from None
            row: dict[str, Any] = {id_column: str(profile.get("record", {}).get("record_id", entry.get("record_id")))}
            for cond in profile.get("conditions") or []:
                row[str(cond["id"])] = cond.get("probability")
                if cond.get("positive_at") is not None:
                    thresholds.setdefault(str(cond["id"]), float(cond["positive_at"]))
            rows.append(row)
    notes = [f"{refused} refused profiles left out"] if refused else []
    return pd.DataFrame(rows), thresholds, notes


def read_predictions(path: str | os.PathLike[str], *, id_column: str = "record_id") -> Predictions:
    """Read a predictions table or an ``ecgfm profile`` output folder (module docstring).

    Raises:
        ReadError: unreadable, empty, no id column, repeated ids, a non-numeric or missing
            value in an output column (names the file, column and record), no numeric column.
    """
    import pandas as pd

    from ecgfm.evaluate.run import load_table

    p = Path(path)
    notes: list[str] = []
    thresholds: dict[str, float] | None = None
    if p.is_dir():
        if not (p / "profiles.jsonl").is_file():
            raise ReadError(p, "a folder given as predictions must be an 'ecgfm profile --out' folder (no profiles.jsonl)")
        frame, thresholds, notes = _read_profile_folder(p, id_column)
        if frame.empty:
            raise ReadError(p, "no profiled records (all refused or none written)")
    else:
        frame = load_table(p, id_column=id_column)
    frame = _check_ids(frame, str(p), id_column)
    if "error" in frame.columns:
        failed = frame["error"].notna() & (frame["error"].astype(str).str.strip() != "")
        if failed.any():
            notes.append(f"{int(failed.sum())} records whose prediction failed (error column) left out")
            frame = frame.loc[~failed].reset_index(drop=True)
        if frame.empty:
            raise ReadError(p, "every prediction failed (error column)")
    ids = frame[id_column]
    probabilities: list[str] = []
    scores: list[str] = []
    numeric: dict[str, Any] = {id_column: ids}
    for col in frame.columns:
        if col == id_column or str(col).lower() in METADATA_COLUMNS:
            continue
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce") if raw.dtype.kind not in "biuf" else raw.astype(np.float64)
        bad = values.isna() & raw.notna() & ~raw.astype(str).str.strip().str.lower().isin(_MISSING)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ReadError(p, f"column {col!r}, record {ids.iloc[i]}: non-numeric value {str(raw.iloc[i])[:40]!r} "
                            "(expected a probability in [0, 1] or a numeric score)")
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise ReadError(p, f"column {col!r}, record {ids.iloc[i]}: missing value "
                            f"({int(values.isna().sum())} records lack it)")
        arr = values.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise ReadError(p, f"column {col!r}, record {ids.iloc[i]}: value {arr[i]} is not finite")
        numeric[str(col)] = arr
        if arr.min() >= 0 and arr.max() <= 1:
            probabilities.append(str(col))
        else:
            scores.append(str(col))
    if not probabilities and not scores:
        raise ReadError(p, f"no numeric output column beside {id_column!r}")
    if scores:
        notes.append(f"predictions columns outside [0, 1] are scores, not conditions: {', '.join(scores[:8])}"
                     + (" ..." if len(scores) > 8 else ""))
    out = pd.DataFrame(numeric)
    return Predictions(out, probabilities, scores, thresholds, str(p), notes)


def parse_thresholds(specs: Sequence[str], columns: Sequence[str], *,
                     defaults: dict[str, float] | None = None) -> tuple[np.ndarray, str]:
    """Positive thresholds per probability column.

    Args:
        specs: applied in order, later ones winning: ``"0.4"`` (every column), ``"AFIB=0.3"``
            (one column), ``"model"`` (the bundled default model's positive operating points,
            for the columns it has), ``"model:PATH"`` (a portable model folder's).
        columns: the probability columns.
        defaults: the starting thresholds (e.g. a profile folder's); else 0.5 everywhere.

    Returns:
        ``(thresholds [C], description)``; a probability at or above its threshold is positive.

    Raises:
        ValidationError: a malformed spec, an unknown column, a value outside (0, 1].
    """
    cols = list(columns)
    thr = np.full(len(cols), 0.5)
    parts = ["0.5 for every condition"]
    if defaults:
        for j, col in enumerate(cols):
            if col in defaults:
                thr[j] = float(defaults[col])
        parts = ["the profiles' positive thresholds"]
    index = {c: j for j, c in enumerate(cols)}
    for spec in specs:
        for item in (s.strip() for s in str(spec).split(",")):
            if not item:
                continue
            if item == "model" or item.startswith("model:"):
                import ecgfm

                target = item.partition(":")[2] or None
                model = ecgfm.load_model(target)
                points = model.operating_points()
                hit = [c for c in cols if c in points]
                for c in hit:
                    thr[index[c]] = float(points[c][1])
                if len(hit) == len(cols):
                    parts = []
                parts.append(f"{'the default model' if target is None else target}'s positive operating points "
                             f"({len(hit)} of {len(cols)} conditions)")
                continue
            name, eq, value = item.rpartition("=")
            try:
                t = float(value)
            except ValueError:
                raise ValidationError(f"threshold {item!r}: expected a number, NAME=number, model or model:PATH") from None
            if not 0 < t <= 1:
                raise ValidationError(f"threshold {item!r}: expected a value in (0, 1]")
            if eq:
                if name not in index:
                    raise ValidationError(f"threshold {item!r}: {name!r} is not a probability column "
                                          f"(known: {', '.join(cols[:10])}{' ...' if len(cols) > 10 else ''})")
                thr[index[name]] = t
                parts.append(f"{name}={t:g}")
            else:
                thr[:] = t
                parts = [f"{t:g} for every condition"]
    return thr, "; ".join(parts)


def resolve_score(spec: str, tables: Sequence[tuple[str, pd.DataFrame]]) -> tuple[str, np.ndarray]:
    """The values of a score: a column name, ``1-COLUMN`` (complement of a probability) or
    ``logit:COLUMN``, looked up in the tables in order (predictions first, then the manifest).

    Returns:
        ``(name, values [N])`` (float64, NaN where missing).

    Raises:
        ValidationError: no table has the column, or it is not numeric.
    """
    import pandas as pd

    text = str(spec).strip()
    transform = None
    column = text
    if text.startswith("1-"):
        transform, column = "complement", text[2:]
    elif text.startswith("logit:"):
        transform, column = "logit", text[len("logit:"):]
    for source, frame in tables:
        if column in frame.columns:
            raw = frame[column]
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(values).all() and raw.notna().any():
                raise ValidationError(f"{source}: score column {column!r} is not numeric")
            if transform == "complement":
                values = 1.0 - values
            elif transform == "logit":
                if np.nanmin(values) < 0 or np.nanmax(values) > 1:
                    raise ValidationError(f"{source}: logit:{column} needs values in [0, 1]")
                clipped = np.clip(values, 1e-6, 1 - 1e-6)
                values = np.log(clipped / (1 - clipped))
            return text, values
    known = sorted({str(c) for _, f in tables for c in f.columns})
    raise ValidationError(f"score {text!r}: no column {column!r} in {', '.join(s for s, _ in tables)} "
                          f"(columns: {', '.join(known[:15])}{' ...' if len(known) > 15 else ''})")


def covariate_matrix(frame: pd.DataFrame, names: Sequence[str], source: str) -> tuple[np.ndarray, list[str]]:
    """Covariates as numbers: numeric columns as they are; text columns (``sex``: ``M``/``F``)
    as 0/1 indicators of every level but the most frequent. Missing values stay NaN (those
    records are left out of the scan).

    Returns:
        ``(x [N, k], column names [k])``.

    Raises:
        ValidationError: a covariate column is missing, or has a single level.
    """
    import pandas as pd

    columns: list[np.ndarray] = []
    out_names: list[str] = []
    for name in names:
        if name not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:12]))
            raise ValidationError(f"{source}: no covariate column {name!r} (columns: {shown})")
        raw = frame[name]
        values = pd.to_numeric(raw, errors="coerce")
        text_missing = raw.isna() | raw.astype(str).str.strip().str.lower().isin(_MISSING)
        if not (values.isna() & ~text_missing).any():
            columns.append(values.to_numpy(dtype=np.float64))
            out_names.append(str(name))
            continue
        labels = raw.astype(str).str.strip()
        labels = labels.where(~text_missing)
        levels = labels.value_counts()
        if len(levels) < 2:
            raise ValidationError(f"{source}: covariate {name!r} has a single level ({', '.join(map(str, levels.index))})")
        for level in levels.index[1:]:
            col = np.where(labels.isna(), np.nan, (labels == level).astype(np.float64))
            columns.append(col)
            out_names.append(f"{name}={level}")
    if not columns:
        return np.zeros((len(frame), 0)), []
    return np.column_stack(columns), out_names
