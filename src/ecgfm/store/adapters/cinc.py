"""PhysioNet/CinC Challenges: 2020/2021 (12-lead ``.mat`` + ``.hea`` with ``# Dx:``) and 2017.

**CinC 2020/2021** (``cinc``): every ``*.hea`` under the folder (nested folders allowed, as the
challenge ships ``training/<source>/<part>/``). Labels are the ``# Dx:`` SNOMED CT codes mapped
with :func:`~ecgfm.labels.mappers.map_cinc_dx`; the challenge gives no patient ids, so each record
is its own patient (``patient_id`` None). Extra columns: ``dx`` (the codes, ``;``-joined),
``unmapped``, and ``source_db``, the contributing database told by the record-name prefix
(``HR`` PTB-XL, ``E`` Georgia, ``JS`` Chapman-Shaoxing/Ningbo, ``A``/``Q`` CPSC 2018, ``I``
St Petersburg INCART, ``S`` PTB; ``""`` otherwise). Note that INCART's 75 records come from 32
patients and PTB's from 290 patients, which the challenge files do not tell apart: patient-level
splits of those two sources are record-level.

**CinC 2017** (``cinc2017``): single-lead AliveCor records (lead I, 300 Hz) with classes in
``REFERENCE.csv`` (N, A, O, ~ -> ``SR``, ``AFIB``, ``OTHER_RHYTHM``, ``NOISE``). Extra columns:
``cinc2017_class`` (the letter; ``""`` for a record missing from ``REFERENCE.csv``, which then
has no labels) and ``unmapped``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecgfm.errors import ReadError
from ecgfm.labels.mappers import LabelMap, map_cinc_dx, read_cinc2017_reference
from ecgfm.store.adapters.base import Adapter, Sample, joined, register_adapter

#: CinC 2020/2021 record-name prefixes -> contributing database (longest prefix wins).
CINC_SOURCES = {
    "HR": "ptbxl",
    "JS": "chapman_ningbo",
    "E": "georgia",
    "A": "cpsc2018",
    "Q": "cpsc2018_extra",
    "I": "incart",
    "S": "ptb",
}


def cinc_source(record: str) -> str:
    """The contributing database of a CinC 2020/2021 record name (``"E07500"`` -> ``"georgia"``)."""
    for prefix in sorted(CINC_SOURCES, key=len, reverse=True):
        rest = record[len(prefix):]
        if record.startswith(prefix) and rest[:1].isdigit():
            return CINC_SOURCES[prefix]
    return ""


@register_adapter
class CinCAdapter(Adapter):
    """PhysioNet/CinC 2020/2021 records (``.mat`` + ``.hea`` with ``# Dx:``)."""

    name = "cinc"

    def keys(self) -> list[str]:
        return sorted(str(p) for p in self.root.rglob("*.hea") if not p.name.startswith("."))

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        ecg = ecgfm.read(key)
        codes = [str(c) for c in ecg.meta.extra.get("dx", [])]
        labels = map_cinc_dx(codes)
        record = ecg.meta.record_id or Path(key).stem
        extra = {"dx": joined(codes), "unmapped": joined(labels.unknown), "source_db": cinc_source(record)}
        return [Sample(record, ecg, None, tuple(labels.ids), extra=extra)]


@register_adapter
class CinC2017Adapter(Adapter):
    """PhysioNet/CinC 2017 AF classification records with ``REFERENCE.csv``.

    Args:
        root: the folder of ``A*.hea`` / ``A*.mat`` records.
        reference: the class table (default ``root/REFERENCE.csv``).
    """

    name = "cinc2017"
    options = ("reference",)

    def __init__(self, root: str | Path, *, reference: str | Path | None = None) -> None:
        super().__init__(root)
        self.reference = Path(os.path.abspath(reference)) if reference else self.root / "REFERENCE.csv"
        if not self.reference.is_file():
            raise ReadError(self.reference, "CinC 2017 class table not found")

    def _classes(self) -> dict[str, tuple[str, LabelMap]]:
        def read() -> dict[str, tuple[str, LabelMap]]:
            import csv

            letters = {}
            with self.reference.open(newline="") as f:
                for row in csv.reader(f):
                    if len(row) >= 2 and row[0].strip():
                        letters[row[0].strip()] = row[1].strip()
            maps = read_cinc2017_reference(self.reference)
            return {rec: (letters.get(rec, ""), lm) for rec, lm in maps.items()}
        return self._cached("classes", read)

    def keys(self) -> list[str]:
        return sorted(str(p) for p in self.root.rglob("*.hea") if not p.name.startswith("."))

    def unmatched(self) -> dict[str, list[str]]:
        """Records without a ``REFERENCE.csv`` row, and rows without a record."""
        records = {Path(k).stem for k in self.keys()}
        classes = self._classes()
        return {"files_without_row": sorted(records - set(classes)), "rows_without_file": sorted(set(classes) - records)}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({k: len(v) for k, v in self.unmatched().items()})
        return out

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        ecg = ecgfm.read(key)
        record = ecg.meta.record_id or Path(key).stem
        letter, labels = self._classes().get(record, ("", LabelMap([], [])))
        extra = {"cinc2017_class": letter, "unmapped": joined(labels.unknown)}
        return [Sample(record, ecg, None, tuple(labels.ids), extra=extra)]
