"""Dataset adapters: each public dataset (and a user's own folder) as samples for the store.

An adapter lists its work items cheaply (:meth:`Adapter.keys`, usually absolute file paths in
sorted order) and turns one item into :class:`Sample` objects (:meth:`Adapter.load`): the raw
:class:`~ecgfm.ECG`, the patient, the native labels mapped to catalogue ids
(:func:`ecgfm.labels.load_catalogue`), the native split where the dataset has one, and extra
manifest columns. Native labels without a catalogue mapping are kept in the ``unmapped`` column
(``;``-joined), never dropped and never a failure. A bad item raises
:class:`~ecgfm.errors.ECGError` naming the file.

=============  ===========================================================  ===================
name           dataset                                                      module
=============  ===========================================================  ===================
``ptbxl``      PTB-XL (``ptbxl_database.csv``; ``strat_fold`` split)        :mod:`.ptbxl`
``cinc``       PhysioNet/CinC 2020/2021 (``.mat`` + ``.hea``, ``# Dx:``)    :mod:`.cinc`
``cinc2017``   PhysioNet/CinC 2017 (``REFERENCE.csv``, N/A/O/~)             :mod:`.cinc`
``ludb``       LUDB (header diagnoses)                                      :mod:`.ludb`
``mitbih``     MIT-BIH Arrhythmia (windows or beats, AAMI classes)          :mod:`.mitbih`
``cpsc2018``   CPSC 2018 (``.mat`` + ``REFERENCE.csv``)                     :mod:`.cpsc`
``cpsc2019``   CPSC 2019 (unlabelled, R peaks)                              :mod:`.cpsc`
``cpsc2021``   CPSC 2021 (AF episodes; records or windows)                  :mod:`.cpsc`
``folder``     any folder of ECG files + optional labels CSV/Parquet        :mod:`.folder`
=============  ===========================================================  ===================

>>> adapter = adapter_for(Path("../shared/data/ptb-xl"), rate=500)   # doctest: +SKIP
>>> samples = adapter.load(adapter.keys()[0])                         # doctest: +SKIP
>>> samples[0].record_id, samples[0].labels, samples[0].split         # doctest: +SKIP
('00001_hr', ('NORM', 'LVOLT', 'SR'), 'train')
"""

from __future__ import annotations

import inspect
import re
from itertools import islice
from pathlib import Path
from typing import Any

from ecgfm.errors import ValidationError
from ecgfm.store.adapters.base import ADAPTERS, SPLITS, Adapter, Sample, register_adapter
from ecgfm.store.adapters.cinc import CinC2017Adapter, CinCAdapter
from ecgfm.store.adapters.cpsc import CPSC2018Adapter, CPSC2019Adapter, CPSC2021Adapter
from ecgfm.store.adapters.folder import FolderAdapter
from ecgfm.store.adapters.ludb import LUDBAdapter
from ecgfm.store.adapters.mitbih import MITBIHAdapter
from ecgfm.store.adapters.ptbxl import PTBXLAdapter

_HEADERS_LOOKED_AT = 50
_CPSC2021_NAME = re.compile(r"^data_\d+_\d+$")


def _header_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(16384)
    except OSError:
        return ""


def _header_fs(text: str) -> float | None:
    parts = text.split("\n", 1)[0].split()
    try:
        return float(parts[2].split("/")[0]) if len(parts) > 2 else None
    except ValueError:
        return None


def detect_dataset(path: str | Path) -> str:
    """The adapter name for a dataset folder, from the files in it (reads only small files).

    ``ptbxl`` where ``ptbxl_database.csv`` is there; ``cpsc2018`` for ``REFERENCE.csv`` with a
    ``Recording`` header or ``A*.mat`` without headers; ``cinc2017`` for ``REFERENCE.csv`` with
    ``A*.hea``; ``ludb`` for ``ludb.csv`` or headers with ``<diagnoses>``; ``cpsc2019`` for
    ``data/`` + ``ref/R_*.mat``; then, from the first WFDB headers found: ``mitbih`` for
    360 Hz records with ``.atr``, ``cpsc2021`` for ``data_<n>_<n>`` records with ``.atr``,
    ``cinc`` for ``# Dx:`` comments; else ``folder``.
    """
    root = Path(path)
    if not root.is_dir():
        return "folder"
    if (root / "ptbxl_database.csv").is_file():
        return "ptbxl"
    reference = root / "REFERENCE.csv"
    if reference.is_file():
        first = _header_text(reference).lstrip("\ufeff").split("\n", 1)[0].strip().lower()
        if first.startswith("recording"):
            return "cpsc2018"
        if next(root.glob("A*.hea"), None) is not None:
            return "cinc2017"
        if next(root.glob("A*.mat"), None) is not None:
            return "cpsc2018"
    if (root / "ludb.csv").is_file():
        return "ludb"
    if (root / "data").is_dir() and next((root / "ref").glob("R_*.mat"), None) is not None:
        return "cpsc2019"
    votes = set()
    for hea in islice((p for p in root.rglob("*.hea") if not p.name.startswith(".")), _HEADERS_LOOKED_AT):
        text = _header_text(hea)
        if hea.with_suffix(".atr").is_file():
            if _header_fs(text) == 360.0:
                votes.add("mitbih")
            elif _CPSC2021_NAME.match(hea.stem):
                votes.add("cpsc2021")
        if re.search(r"(?m)^#\s*<diagnoses>", text):
            votes.add("ludb")
        if re.search(r"(?m)^#\s*Dx\s*:", text):
            votes.add("cinc")
    for name in ("mitbih", "cpsc2021", "ludb", "cinc"):
        if name in votes:
            return name
    return "folder"


def adapter_for(source: str | Path, dataset: str = "auto", labels: str | Path | None = None, **options: Any) -> Adapter:
    """The adapter for a dataset folder.

    Args:
        source: the dataset folder.
        dataset: an adapter name from :data:`ADAPTERS`, or ``"auto"`` (:func:`detect_dataset`).
        labels: a labels table: joined to the files by the ``folder`` adapter; the class table
            (``reference=``) of ``cinc2017`` and ``cpsc2018``. Other datasets carry their own
            labels and refuse one.
        **options: the adapter's options (e.g. ``rate=100`` for PTB-XL, ``mode="beats"`` for
            MIT-BIH).

    Raises:
        ValidationError: unknown dataset name or option.
    """
    name = detect_dataset(source) if dataset == "auto" else dataset
    if name not in ADAPTERS:
        raise ValidationError(f"unknown dataset {name!r} (known: {', '.join(sorted(ADAPTERS))}, auto)")
    cls = ADAPTERS[name]
    if labels is not None:
        if name == "folder":
            options["labels"] = labels
        elif name in ("cinc2017", "cpsc2018"):
            options["reference"] = labels
        else:
            raise ValidationError(f"labels= is for the folder adapter (and the class tables of cinc2017, "
                                  f"cpsc2018); the {name} adapter reads the dataset's own labels")
    signature = inspect.signature(cls.__init__)
    try:
        signature.bind(None, source, **options)
    except TypeError as exc:
        known = [n for n, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise ValidationError(f"{name} adapter: {exc} (options: {', '.join(known) or 'none'})") from None
    return cls(source, **options)


__all__ = [
    "ADAPTERS", "SPLITS", "Adapter", "CPSC2018Adapter", "CPSC2019Adapter", "CPSC2021Adapter",
    "CinC2017Adapter", "CinCAdapter", "FolderAdapter", "LUDBAdapter", "MITBIHAdapter", "PTBXLAdapter",
    "Sample", "adapter_for", "detect_dataset", "register_adapter",
]
