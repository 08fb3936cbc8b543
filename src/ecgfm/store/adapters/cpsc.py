"""China Physiological Signal Challenges: CPSC 2018 (12-lead classes), 2019 (QRS), 2021 (AF).

**CPSC 2018** (``cpsc2018``): header-less ``.mat`` files (struct ``ECG`` with ``data``, ``sex``,
``age``; 500 Hz) and ``REFERENCE.csv`` (``Recording,First_label,Second_label,Third_label`` with
classes 1-9). Classes map as :data:`CPSC2018_CLASSES`: 1 Normal -> ``NORM`` and ``SR`` (a normal
ECG, in sinus rhythm), 2 AF, 3 I-AVB, 4 LBBB, 5 RBBB, 6 PAC, 7 PVC, 8 STD, 9 STE -> ``AFIB``,
``1AVB``, ``CLBBB``, ``CRBBB``, ``PAC``, ``PVC``, ``STD_``, ``STE_``; a class outside 1-9 is
kept in ``unmapped``. No patient ids (each record its own patient). Extra columns:
``cpsc2018_classes`` (the numbers, ``;``-joined) and ``unmapped``. (The CinC 2020 re-release of
these records, with ``.hea`` headers, is read by the ``cinc`` adapter.)

**CPSC 2019** (``cpsc2019``): 10 s single-lead 500 Hz ``data/*.mat`` with R peaks in
``ref/R_*.mat``; no diagnostic labels. Extra columns: ``n_r_peaks`` and ``r_peaks`` (sample
indices, ``;``-joined; both empty where the reference file is missing).

**CPSC 2021** (``cpsc2021``): 2-lead 200 Hz WFDB records ``data_<patient>_<record>`` with AF
episodes in ``.atr``. The patient is the number in the name. ``mode="records"`` (default): one
sample per record, labelled with its class (header comment: ``PAF``, ``PERSAF``, or none for
non-AF) and the rhythms of its episodes (``AFIB``, and ``SR`` for the stretches outside AF);
extra columns ``cpsc2021_class``, ``n_af_episodes``, ``af_fraction`` (share of samples in AF),
``unmapped``. ``mode="windows"``: fixed windows as for MIT-BIH (``window_s``, ``stride_s``,
``min_rhythm_s``), labelled with the episodes they overlap; extra columns ``window_index``,
``start``, ``window_start_s``, ``af_fraction``, ``cpsc2021_class``, ``unmapped``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.labels.mappers import Episode, map_cpsc2021_class, map_cpsc2021_episodes
from ecgfm.store.adapters.base import (
    Adapter,
    Sample,
    joined,
    read_error,
    register_adapter,
    segment,
    window_starts,
    with_meta,
)
from ecgfm.store.adapters.mitbih import overlapping

#: CPSC 2018 class numbers -> catalogue ids.
CPSC2018_CLASSES: dict[str, tuple[str, ...]] = {
    "1": ("NORM", "SR"),
    "2": ("AFIB",),
    "3": ("1AVB",),
    "4": ("CLBBB",),
    "5": ("CRBBB",),
    "6": ("PAC",),
    "7": ("PVC",),
    "8": ("STD_",),
    "9": ("STE_",),
}


def _mats(root: Path, skip: Any = lambda p: False) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.mat") if not p.name.startswith(".") and not skip(p))


@register_adapter
class CPSC2018Adapter(Adapter):
    """CPSC 2018 ``.mat`` records with the classes of ``REFERENCE.csv``.

    Args:
        root: the folder of ``A*.mat`` files.
        reference: the class table (default ``root/REFERENCE.csv``; without one, no labels).
    """

    name = "cpsc2018"
    options = ("reference",)

    def __init__(self, root: str | Path, *, reference: str | Path | None = None) -> None:
        super().__init__(root)
        self.reference = Path(os.path.abspath(reference)) if reference else self.root / "REFERENCE.csv"

    def _classes(self) -> dict[str, list[str]]:
        def read() -> dict[str, list[str]]:
            if not self.reference.is_file():
                return {}
            out = {}
            with self.reference.open(newline="") as f:
                for row in csv.reader(f):
                    if not row or not row[0].strip() or row[0].strip().lower() == "recording":
                        continue
                    out[row[0].strip()] = [c.strip() for c in row[1:] if c.strip()]
            return out
        return self._cached("classes", read)

    def keys(self) -> list[str]:
        return _mats(self.root, lambda p: p.with_suffix(".hea").is_file())

    def unmatched(self) -> dict[str, list[str]]:
        """Records without a ``REFERENCE.csv`` row, and rows without a record."""
        records = {Path(k).stem for k in self.keys()}
        classes = self._classes()
        if not classes:
            return {"files_without_row": sorted(records), "rows_without_file": []}
        return {"files_without_row": sorted(records - set(classes)), "rows_without_file": sorted(set(classes) - records)}

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        ecg = ecgfm.read(key, format="mat")
        record = Path(key).stem
        ecg = with_meta(ecg, record_id=record)
        numbers = self._classes().get(record, [])
        ids, unknown = [], []
        for n in numbers:
            n = n.removesuffix(".0")
            if n in CPSC2018_CLASSES:
                ids.extend(CPSC2018_CLASSES[n])
            else:
                unknown.append(n)
        extra = {"cpsc2018_classes": joined(numbers), "unmapped": joined(unknown)}
        return [Sample(record, ecg, None, tuple(dict.fromkeys(ids)), extra=extra)]


@register_adapter
class CPSC2019Adapter(Adapter):
    """CPSC 2019 QRS-detection records (unlabelled) with their reference R peaks."""

    name = "cpsc2019"

    def keys(self) -> list[str]:
        return _mats(self.root, lambda p: p.parent.name == "ref" or p.name.startswith("R_"))

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        path = Path(key)
        ecg = ecgfm.read(path)
        record = ecg.meta.record_id or path.stem
        ref = path.parent.parent / "ref" / f"R_{path.stem.removeprefix('data_')}.mat"
        peaks: np.ndarray | None = None
        if ref.is_file():
            import scipy.io

            try:
                content = scipy.io.loadmat(ref)
                peaks = np.asarray(content["R_peak"]).ravel().astype(np.int64)
            except Exception as exc:  # scipy raises several kinds for a bad file
                raise read_error(ref, exc) from None
        extra = {
            "n_r_peaks": None if peaks is None else int(peaks.size),
            "r_peaks": "" if peaks is None else joined(peaks.tolist()),
        }
        return [Sample(record, ecg, None, (), extra=extra)]


_CPSC2021_NAME = re.compile(r"^data_(\d+)_(\d+)$")


@register_adapter
class CPSC2021Adapter(Adapter):
    """CPSC 2021 paroxysmal-AF records, whole or as fixed windows (see the module docs)."""

    name = "cpsc2021"
    options = ("mode", "window_s", "stride_s", "min_rhythm_s")

    def __init__(self, root: str | Path, *, mode: str = "records", window_s: float = 10.0,
                 stride_s: float | None = None, min_rhythm_s: float = 0.0) -> None:
        super().__init__(root)
        if mode not in ("records", "windows"):
            raise ValidationError(f"CPSC 2021 mode must be 'records' or 'windows', got {mode!r}")
        stride_s = window_s if stride_s is None else stride_s
        if min(window_s, stride_s) <= 0 or min_rhythm_s < 0:
            raise ValidationError("window_s and stride_s must be positive, min_rhythm_s non-negative")
        self.mode = mode
        self.window_s = float(window_s)
        self.stride_s = float(stride_s)
        self.min_rhythm_s = float(min_rhythm_s)

    def keys(self) -> list[str]:
        return sorted(str(p) for p in self.root.rglob("*.hea") if p.with_suffix(".atr").is_file())

    def load(self, key: str) -> list[Sample]:
        import ecgfm
        from ecgfm.io.wfdb import read_annotations

        ecg = ecgfm.read(key)
        record = ecg.meta.record_id or Path(key).stem
        match = _CPSC2021_NAME.match(record)
        patient = match.group(1) if match else None
        comments = [str(c) for c in ecg.meta.extra.get("comments", [])]
        if not comments:
            raise ReadError(key, "no record class in the header comments (expected e.g. '# paroxysmal atrial fibrillation')")
        cls = map_cpsc2021_class(comments[0])
        eps = map_cpsc2021_episodes(read_annotations(key, "atr"), ecg.n_samples)
        unknown = joined(list(dict.fromkeys(cls.unknown + eps.unknown)))
        ecg = with_meta(ecg, patient_id=patient)
        if self.mode == "records":
            af = [e for e in eps.episodes if e.id == "AFIB"]
            ids = list(cls.ids) + [e.id for e in eps.episodes]
            extra: dict[str, Any] = {
                "cpsc2021_class": comments[0],
                "n_af_episodes": len(af),
                "af_fraction": _af_samples(af, 0, ecg.n_samples) / ecg.n_samples,
                "unmapped": unknown,
            }
            return [Sample(record, ecg, patient, tuple(dict.fromkeys(ids)), extra=extra)]
        width = int(round(self.window_s * ecg.fs))
        min_samples = int(round(self.min_rhythm_s * ecg.fs))
        out = []
        for k, a in enumerate(window_starts(ecg.n_samples, width, int(round(self.stride_s * ecg.fs))).tolist()):
            b = a + width
            inside = overlapping(eps.episodes, a, b, min_samples)
            rid = f"{record}_w{k:04d}"
            extra = {
                "window_index": k,
                "start": a,
                "window_start_s": a / ecg.fs,
                "af_fraction": _af_samples([e for e in inside if e.id == "AFIB"], a, b) / width,
                "cpsc2021_class": comments[0],
                "unmapped": unknown,
            }
            labels = tuple(dict.fromkeys(e.id for e in inside))
            out.append(Sample(rid, segment(ecg, a, b, rid), patient, labels, extra=extra))
        return out


def _af_samples(episodes: list[Episode], start: int, stop: int) -> int:
    return sum(max(0, min(e.stop, stop) - max(e.start, start)) for e in episodes)
