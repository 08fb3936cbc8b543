"""A user's own data: any folder of ECG files, with an optional labels table.

The folder is walked as the CLI walks it (:func:`ecgfm.cli.expand_inputs`: every file any
ecgfm reader handles; a WFDB record counts once, by its header) and each file is read with
:func:`ecgfm.read`. The record id is the file's path relative to the folder without its suffix
(``rec1``, ``site_a/rec1``).

The labels table (CSV or Parquet) has one row per record:

- an id column (``id_column``, or the first of ``record_id``, ``id``, ``file``, ``filename``,
  ``path``, ``ecg_id``, ``record``) matched against, in order, the file's relative path with and
  without its suffix and its name with and without its suffix;
- ``labels``: catalogue ids separated by ``;`` (``"AFIB;CLBBB"``), and/or one 0/1 column per
  catalogue id (a column named ``AFIB`` holding only 0/1/true/false/empty). Ids the catalogue
  does not know are kept in the ``unmapped`` column, never dropped;
- optional ``patient_id``, ``split`` (train/val/test; ``valid``/``validation`` read as val),
  ``report``, ``age`` (years), ``sex`` (M/F);
- every other column (outcomes, site, ...) becomes a manifest column of its own; a name the store
  uses itself (``shard``, ``offset`` ...) is prefixed with ``table_``.

Rows that match no file and files with no row are reported, not dropped silently:
:meth:`FolderAdapter.unmatched` lists them and :meth:`FolderAdapter.describe` (recorded in
``store.json``) counts them. Files without a row are stored unlabelled (column ``in_table``
False) unless ``require_labels=True``, which leaves them out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecgfm.errors import ReadError, ValidationError
from ecgfm.store.adapters.base import (
    Adapter,
    Sample,
    clean_value,
    joined,
    register_adapter,
    with_meta,
)

ID_COLUMNS = ("record_id", "id", "file", "filename", "path", "ecg_id", "record")
_SPECIAL = {"patient_id", "labels", "split", "report", "age", "sex"}
# Manifest columns the store or builder writes itself; a table column of that name is renamed.
_STORE_COLUMNS = {"record_id", "shard", "offset", "n_samples", "scale", "lead_mask", "source",
                  "source_format", "fs", "unmapped", "in_table", "dataset", "quality", "n_leads"}
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test", "testing": "test"}
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def _norm_id(value: Any) -> str:
    text = str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return False


@register_adapter
class FolderAdapter(Adapter):
    """Any folder of ECG files, optionally joined with a labels table (see the module docs).

    Args:
        root: the folder (or a single file).
        labels: a CSV or Parquet table of per-record labels and columns.
        id_column: the table's id column (default: detected, see :data:`ID_COLUMNS`).
        require_labels: leave out files the table has no row for.
        **read_options: passed to :func:`ecgfm.read` (e.g. ``fs=``, ``leads=`` for bare arrays).
    """

    name = "folder"
    options = ("labels", "id_column", "require_labels", "read_options")

    def __init__(self, root: str | Path, *, labels: str | Path | None = None, id_column: str | None = None,
                 require_labels: bool = False, **read_options: Any) -> None:
        super().__init__(root)
        self.base = self.root if self.root.is_dir() else self.root.parent
        self.labels = None if labels is None else Path(os.path.abspath(labels))
        if self.labels is not None and not self.labels.is_file():
            raise ReadError(self.labels, "labels table not found")
        self.id_column = id_column
        self.require_labels = bool(require_labels)
        if require_labels and self.labels is None:
            raise ValidationError("require_labels=True needs a labels= table")
        self.read_options = dict(read_options)

    # -- the table ------------------------------------------------------------------------------
    def _table(self) -> dict[str, Any]:
        """``{"rows": {id: row dict}, "label_columns": [...], "extra_columns": {column: name}}``."""
        return self._cached("table", self._read_table)

    def _read_table(self) -> dict[str, Any]:
        if self.labels is None:
            return {"rows": {}, "label_columns": [], "extra_columns": {}}
        import pandas as pd

        from ecgfm.labels import load_catalogue

        path = self.labels
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            else:
                sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
                header = pd.read_csv(path, sep=sep, nrows=0).columns
                # Ids and text stay text ("00123" keeps its zeros); other columns get their types.
                text = {c: str for c in header
                        if c == self.id_column or c.lower() in ID_COLUMNS or c.lower() in _SPECIAL - {"age"}}
                frame = pd.read_csv(path, sep=sep, dtype=text)
        except Exception as exc:  # pandas/pyarrow raise many kinds for a bad table
            raise ReadError(path, f"unreadable labels table ({type(exc).__name__}: {exc})") from None
        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        id_col = self.id_column
        if id_col is None:
            lower = {c.lower(): c for c in columns}
            id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
            if id_col is None:
                raise ReadError(path, f"no id column (looked for {', '.join(ID_COLUMNS)}; columns: "
                                      f"{', '.join(columns)}); pass id_column=")
        elif id_col not in columns:
            raise ReadError(path, f"no column {id_col!r} (columns: {', '.join(columns)})")
        cat = load_catalogue()
        label_columns = [c for c in columns if c != id_col and c in cat and _binary(frame[c])]
        specials = {c for c in columns if c.lower() in _SPECIAL}
        extra_columns = {
            c: (f"table_{c}" if c.lower() in _STORE_COLUMNS else c)
            for c in columns if c != id_col and c not in label_columns and c not in specials
        }
        ids = frame[id_col].map(lambda v: "" if _is_missing(v) else _norm_id(v))
        if (ids == "").any():
            row = int((ids == "").to_numpy().argmax()) + 1
            raise ReadError(path, f"data row {row}: empty {id_col!r}")
        dup = ids[ids.duplicated()]
        if len(dup):
            raise ReadError(path, f"{id_col} {dup.iloc[0]!r} appears more than once")
        records = frame.to_dict("records")
        rows = {rid: {k.lower() if k in specials else k: v for k, v in row.items()}
                for rid, row in zip(ids.tolist(), records)}
        return {"rows": rows, "label_columns": label_columns, "extra_columns": extra_columns}

    def _row(self, key: str) -> tuple[str | None, dict[str, Any] | None]:
        rows = self._table()["rows"]
        if not rows:
            return None, None
        rel = self._relative(key)
        rid = self.record_id(key)
        for candidate in (rel, rid, rel.rsplit("/", 1)[-1], rid.rsplit("/", 1)[-1]):
            if candidate in rows:
                return candidate, rows[candidate]
        return None, None

    # -- files ----------------------------------------------------------------------------------
    def _relative(self, key: str) -> str:
        try:
            return Path(os.path.abspath(key)).relative_to(self.base).as_posix()
        except ValueError:
            return Path(key).name

    def record_id(self, key: str) -> str:
        """The record id of a file: its path relative to the folder, without its suffix."""
        rel = self._relative(key)
        head, _, name = rel.rpartition("/")
        stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
        return f"{head}/{stem}" if head else stem

    def _files(self) -> list[str]:
        def walk() -> list[str]:
            from ecgfm.cli import expand_inputs

            files, _ = expand_inputs([self.root])
            skip = {self.labels}
            return sorted(os.path.abspath(p) for p in files if Path(os.path.abspath(p)) not in skip)
        return self._cached("files", walk)

    def keys(self) -> list[str]:
        self._table()  # a bad table fails here, in the parent, not in every worker
        files = self._files()
        seen: dict[str, str] = {}
        for f in files:
            rid = self.record_id(f)
            if rid in seen:
                raise ValidationError(f"{self.root}: files {seen[rid]} and {f} would both be record {rid!r}; "
                                      "rename one (record ids are paths without suffix)")
            seen[rid] = f
        if self.require_labels:
            files = [f for f in files if self._row(f)[1] is not None]
        return files

    def unmatched(self) -> dict[str, list[str]]:
        """``{"files_without_row": [relative paths], "rows_without_file": [table ids]}``."""
        rows = self._table()["rows"]
        if self.labels is None:
            return {"files_without_row": [], "rows_without_file": []}
        used, without = set(), []
        for f in self._files():
            rid, _ = self._row(f)
            if rid is None:
                without.append(self._relative(f))
            else:
                used.add(rid)
        return {"files_without_row": without, "rows_without_file": sorted(set(rows) - used)}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["labels"] = None if self.labels is None else os.fspath(self.labels)
        out.update({k: len(v) for k, v in self.unmatched().items()})
        return out

    # -- loading --------------------------------------------------------------------------------
    def load(self, key: str) -> list[Sample]:
        import ecgfm
        from ecgfm.labels import load_catalogue

        ecg = ecgfm.read(key, **self.read_options)
        table = self._table()
        rid, row = self._row(key)
        record = self.record_id(key)
        extra: dict[str, Any] = {name: None for name in table["extra_columns"].values()}
        if self.labels is not None:
            extra["in_table"] = row is not None
            extra["unmapped"] = ""
        if row is None:
            ecg = with_meta(ecg, record_id=record)
            return [Sample(record, ecg, ecg.meta.patient_id, (), ecg.meta.interpretation, None, extra)]
        where = f"{self.labels}: {rid}"
        cat = load_catalogue()
        ids, unknown = [], []
        text = row.get("labels")
        if not _is_missing(text):
            items = list(text) if isinstance(text, (list, tuple)) or hasattr(text, "tolist") else str(text).split(";")
            for item in items:
                item = str(item).strip()
                if item:
                    (ids if item in cat else unknown).append(item)
        for column in table["label_columns"]:
            if str(row[column]).strip().lower() in _TRUE:
                ids.append(column)
        for column, name in table["extra_columns"].items():
            extra[name] = clean_value(row[column])
        extra["unmapped"] = joined(dict.fromkeys(unknown))
        patient = None if _is_missing(row.get("patient_id")) else _norm_id(row["patient_id"]) or None
        split = None
        if not _is_missing(row.get("split")) and str(row["split"]).strip():
            split = _SPLIT_NAMES.get(str(row["split"]).strip().lower())
            if split is None:
                raise ReadError(self.labels, f"{rid}: split {row['split']!r} is not train, val or test")
        report = None if _is_missing(row.get("report")) else str(row["report"]).strip() or None
        changes: dict[str, Any] = {"record_id": record}
        if patient is not None:
            changes["patient_id"] = patient
        if report is not None:
            changes["interpretation"] = report
        age = _age(row.get("age"))
        if age is not None:
            changes["age"] = age
        sex = {"m": "M", "male": "M", "f": "F", "female": "F"}.get(str(row.get("sex", "")).strip().lower())
        if sex is not None:
            changes["sex"] = sex
        try:
            ecg = with_meta(ecg, **changes)
        except ValidationError as exc:
            raise ReadError(key, f"{where}: {exc}") from None
        return [Sample(record, ecg, ecg.meta.patient_id, tuple(dict.fromkeys(ids)), ecg.meta.interpretation,
                       split, extra)]


def _binary(column: Any) -> bool:
    values = {str(v).strip().lower() for v in column.unique() if not _is_missing(v)}
    return values <= (_TRUE | _FALSE) and bool(values)


def _age(value: Any) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return age if 0 <= age <= 150 else None
