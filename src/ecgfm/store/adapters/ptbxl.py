"""PTB-XL (Wagner et al. 2020): WFDB records described by ``ptbxl_database.csv``.

One sample per ``ecg_id`` whose file at the chosen rate is present (rows with an empty
``filename_hr`` / ``filename_lr`` are passed over and counted in :meth:`PTBXLAdapter.describe`);
``rate="best"`` (the default) takes the 500 Hz file where there is one, else the 100 Hz file, so
every record is read once at the highest rate available.
Labels are the ``scp_codes`` statements (every statement present, the benchmark convention, or
those with likelihood >= ``min_likelihood``). The native split follows ``strat_fold``: folds 1-8
train, 9 val, 10 test; patients never cross folds.

Extra manifest columns: ``ecg_id``, ``strat_fold``, ``scp_codes`` (the cell as written),
``unmapped`` (codes the catalogue lacks, ``;``-joined), ``age_censored`` (PTB-XL writes 300 for
ages of 90 and over; stored as age 90), and the benchmark groupings ``superdiagnostic``,
``subdiagnostic``, ``diagnostic``, ``form``, ``rhythm`` (``;``-joined, from
:func:`ecgfm.labels.mappers.ptbxl_groups`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ecgfm.errors import ReadError, ValidationError
from ecgfm.labels.mappers import PTBXL_GROUPS, map_ptbxl_scp, ptbxl_groups
from ecgfm.store.adapters.base import Adapter, Sample, joined, register_adapter, with_meta

DATABASE = "ptbxl_database.csv"
_RATE_COLUMN = {500: "filename_hr", 100: "filename_lr"}


def fold_split(fold: int) -> str:
    """PTB-XL's recommended split of a ``strat_fold``: 1-8 train, 9 val, 10 test."""
    if not 1 <= fold <= 10:
        raise ValidationError(f"strat_fold {fold} is outside 1-10")
    return "test" if fold == 10 else "val" if fold == 9 else "train"


@register_adapter
class PTBXLAdapter(Adapter):
    """PTB-XL records at 500 Hz (``rate=500``, the ``_hr`` files), 100 Hz (``rate=100``) or the
    best rate each record has (``rate="best"``).

    Args:
        root: the PTB-XL folder (holding ``ptbxl_database.csv`` and ``records500/`` ...).
        rate: 500 or 100 (Hz): which of the two copies of each record to read; ``"best"``: 500 Hz
            where present, else 100 Hz.
        min_likelihood: keep ``scp_codes`` statements with likelihood >= this (0-100; default 0
            keeps every statement, as the PTB-XL benchmark does).
        groups: add the benchmark groupings as extra columns.
    """

    name = "ptbxl"
    options = ("rate", "min_likelihood", "groups")

    def __init__(self, root: str | Path, *, rate: int | str = "best", min_likelihood: float = 0.0, groups: bool = True) -> None:
        super().__init__(root)
        if str(rate) != "best" and (not str(rate).isdigit() or int(rate) not in _RATE_COLUMN):
            raise ValidationError(f"PTB-XL rate must be 500, 100 or 'best', got {rate!r}")
        if not 0 <= float(min_likelihood) <= 100:
            raise ValidationError(f"min_likelihood must be 0-100, got {min_likelihood!r}")
        self.rate: int | str = "best" if str(rate) == "best" else int(rate)
        self.min_likelihood = float(min_likelihood)
        self.groups = bool(groups)
        self.database = self.root / DATABASE
        if not self.database.is_file():
            raise ReadError(self.database, "PTB-XL metadata table not found")

    def _rows(self) -> dict[str, dict[str, str]]:
        """``{record name ("00001_hr"): CSV row}`` for the rows with a file at this rate."""
        def read() -> dict[str, dict[str, str]]:
            columns = list(_RATE_COLUMN.values()) if self.rate == "best" else [_RATE_COLUMN[self.rate]]
            out: dict[str, dict[str, str]] = {}
            with self.database.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"ecg_id", "patient_id", "scp_codes", "strat_fold", *columns} - set(reader.fieldnames or ())
                if missing:
                    raise ReadError(self.database, f"missing column(s) {sorted(missing)}")
                skipped = 0
                for row in reader:
                    name = next((n for n in (row[c].strip() for c in columns) if n), "")
                    if not name:
                        skipped += 1
                        continue
                    row["_header"] = str(self.root / f"{name}.hea")
                    out[Path(name).name] = row
            self._cache["skipped"] = skipped
            return out
        return self._cached("rows", read)

    def keys(self) -> list[str]:
        return sorted(row["_header"] for row in self._rows().values())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        self._rows()
        out["rows_without_file_at_rate"] = self._cache.get("skipped", 0)
        return out

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        row = self._rows().get(Path(key).name.removesuffix(".hea"))
        if row is None:
            raise ReadError(key, f"not a record listed in {self.database} at rate {self.rate}")
        where = f"{self.database}: ecg_id {row['ecg_id']}"
        try:
            fold = int(float(row["strat_fold"]))
            split = fold_split(fold)
        except ValueError:
            raise ReadError(key, f"{where}: strat_fold {row['strat_fold']!r} is not a fold 1-10") from None
        try:
            labels = map_ptbxl_scp(row["scp_codes"], min_likelihood=self.min_likelihood)
            groups = ptbxl_groups(row["scp_codes"], min_likelihood=self.min_likelihood) if self.groups else {}
        except ValidationError as exc:
            raise ReadError(key, f"{where}: {exc}") from None
        ecg = ecgfm.read(key)
        age, censored = _age(row.get("age", ""))
        patient = _patient(row["patient_id"])
        report = (row.get("report") or "").strip() or None
        ecg = with_meta(ecg, patient_id=patient, age=age, sex=_sex(row.get("sex", "")), interpretation=report)
        extra: dict[str, Any] = {
            "ecg_id": int(row["ecg_id"]),
            "strat_fold": fold,
            "scp_codes": row["scp_codes"],
            "unmapped": joined(labels.unknown),
            "age_censored": censored,
        }
        for group in PTBXL_GROUPS:
            if group != "all" and self.groups:
                extra[group] = joined(groups[group])
        return [Sample(ecg.meta.record_id or Path(key).stem, ecg, patient, tuple(labels.ids), report, split, extra)]


def _patient(value: str) -> str | None:
    """``"15709.0"`` -> ``"15709"`` (the CSV writes patient ids as floats)."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def _age(value: str) -> tuple[float | None, bool]:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None, False
    if age != age or age < 0:
        return None, False
    if age >= 300:  # PTB-XL's (and MIMIC's) de-identified "90 or older"
        return 90.0, True
    return (age, False) if age <= 150 else (None, False)


def _sex(value: str) -> str | None:
    # PTB-XL codes sex as 0 = male, 1 = female.
    return {"0": "M", "1": "F", "0.0": "M", "1.0": "F"}.get(str(value).strip())
