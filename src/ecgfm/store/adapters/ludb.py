"""LUDB (Lobachevsky University ECG Database): 200 12-lead 10 s records, one patient each.

Labels are the diagnoses in the header comments (``#<diagnoses>:`` lines), mapped with
:func:`~ecgfm.labels.mappers.map_ludb`. Each record is a different patient (``patient_id`` None).
Extra columns: ``diagnoses`` (the header's statements, as read) and ``unmapped``. The per-lead
P/QRS/T delineation (``.i``, ``.ii`` ...) stays beside the records: read it with
:func:`ecgfm.io.wfdb.read_delineation`.
"""

from __future__ import annotations

from pathlib import Path

from ecgfm.labels.mappers import map_ludb
from ecgfm.store.adapters.base import Adapter, Sample, joined, register_adapter


@register_adapter
class LUDBAdapter(Adapter):
    """LUDB records (the folder holding ``ludb.csv`` and ``data/``, or ``data/`` itself)."""

    name = "ludb"

    def keys(self) -> list[str]:
        return sorted(str(p) for p in self.root.rglob("*.hea") if not p.name.startswith("."))

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        ecg = ecgfm.read(key)
        diagnoses = ecg.meta.interpretation or ""
        labels = map_ludb(diagnoses)
        record = ecg.meta.record_id or Path(key).stem
        extra = {"diagnoses": diagnoses, "unmapped": joined(labels.unknown)}
        return [Sample(record, ecg, None, tuple(labels.ids), report=diagnoses or None, extra=extra)]
