"""MIT-BIH Arrhythmia Database (360 Hz, two leads, 30 min, ``.atr`` beat and rhythm annotations).

Two ways to cut a 30-minute record into samples (``mode``):

``windows`` (default)
    Fixed windows of ``window_s`` seconds (10 s) every ``stride_s`` seconds (default: the window,
    no overlap); a trailing piece shorter than a window is dropped. Record ids
    ``<record>_w<index:04d>``. Labels: the rhythm episodes (``(N``, ``(AFIB``, ``(B`` ... via
    :func:`~ecgfm.labels.mappers.map_rhythm_episodes`) that overlap the window by more than
    ``min_rhythm_s`` seconds, plus the conditions the window's beats show (``V`` -> ``PVC``, ``A``
    -> ``PAC`` ...; :func:`~ecgfm.labels.mappers.beat_conditions`). Extra columns:
    ``window_index``, ``start`` (sample), ``window_start_s``, ``rhythms`` (native notes,
    ``;``-joined), ``aami_classes`` (AAMI classes present, ``;``-joined in N S V F Q order),
    ``n_beats`` and ``n_N`` ... ``n_Q`` (beats per AAMI class), ``unmapped``.

``beats``
    One segment per annotated beat, from ``before_s`` (0.25 s) before to ``after_s`` (0.45 s)
    after its R peak: 0.7 s, which holds the P wave (at most ~0.2 s before R) and the T wave
    (over by ~0.45 s after R at ordinary rates), the span most beat classifiers use; beats too
    close to either end of the record for a whole segment are passed over. Record ids
    ``<record>_b<beat:06d>``, the beat's index among the record's beat annotations. Labels: the
    beat's conditions plus the rhythm episode its R peak lies in. Extra columns: ``aami_class``
    (N, S, V, F, Q: :func:`~ecgfm.labels.mappers.map_mitbih_beats`), ``symbol``, ``sample`` (R
    peak), ``rhythm`` (native note), ``unmapped``.

The patient is the MIT-BIH record, except that records 201 and 202 come from the same man
(:data:`SAME_PATIENT`), so both get patient ``"201"``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.labels.mappers import (
    AAMI_CLASSES,
    Episode,
    beat_conditions,
    map_mitbih_beats,
    map_rhythm_episodes,
)
from ecgfm.store.adapters.base import (
    Adapter,
    Sample,
    joined,
    register_adapter,
    segment,
    window_starts,
    with_meta,
)

#: MIT-BIH records from the same subject as an earlier record (MIT-BIH directory: 201 and 202).
SAME_PATIENT = {"202": "201"}
MODES = ("windows", "beats")


@lru_cache(maxsize=64)
def _beat_ids(symbol: str) -> tuple[str, ...]:
    return tuple(beat_conditions([symbol]).ids)


def overlapping(episodes: list[Episode], start: int, stop: int, min_samples: int = 0) -> list[Episode]:
    """The episodes that overlap samples ``[start, stop)`` by more than ``min_samples``."""
    return [e for e in episodes if min(e.stop, stop) - max(e.start, start) > min_samples]


def episode_at(episodes: list[Episode], sample: int) -> list[Episode]:
    """The episodes (one per catalogue id of the note) that contain ``sample``."""
    return [e for e in episodes if e.start <= sample < e.stop]


@register_adapter
class MITBIHAdapter(Adapter):
    """MIT-BIH Arrhythmia Database records as fixed windows or beat-centred segments.

    Args:
        root: the folder of ``<record>.hea`` / ``.dat`` / ``.atr``.
        mode: ``"windows"`` or ``"beats"`` (see the module docs).
        window_s, stride_s: window length and step in seconds (``windows``; stride defaults to
            the window).
        min_rhythm_s: a rhythm labels a window only when it covers more than this (seconds).
        before_s, after_s: seconds before and after the R peak (``beats``).
    """

    name = "mitbih"
    options = ("mode", "window_s", "stride_s", "min_rhythm_s", "before_s", "after_s")

    def __init__(
        self,
        root: str | Path,
        *,
        mode: str = "windows",
        window_s: float = 10.0,
        stride_s: float | None = None,
        min_rhythm_s: float = 0.0,
        before_s: float = 0.25,
        after_s: float = 0.45,
    ) -> None:
        super().__init__(root)
        if mode not in MODES:
            raise ValidationError(f"MIT-BIH mode must be one of {MODES}, got {mode!r}")
        stride_s = window_s if stride_s is None else stride_s
        if min(window_s, stride_s) <= 0 or min(before_s, after_s) < 0 or before_s + after_s <= 0 or min_rhythm_s < 0:
            raise ValidationError("window_s and stride_s must be positive, before_s/after_s/min_rhythm_s non-negative")
        self.mode = mode
        self.window_s = float(window_s)
        self.stride_s = float(stride_s)
        self.min_rhythm_s = float(min_rhythm_s)
        self.before_s = float(before_s)
        self.after_s = float(after_s)

    def keys(self) -> list[str]:
        # Only records with reference annotations: the labels come from them.
        return sorted(str(p) for p in self.root.rglob("*.hea") if p.with_suffix(".atr").is_file())

    def load(self, key: str) -> list[Sample]:
        import ecgfm
        from ecgfm.io.wfdb import read_annotations

        ecg = ecgfm.read(key)
        ann = read_annotations(key, "atr")
        record = ecg.meta.record_id or Path(key).stem
        patient = SAME_PATIENT.get(record, record)
        ecg = with_meta(ecg, patient_id=patient)
        rhythms = map_rhythm_episodes(ann, ecg.n_samples)
        beats = map_mitbih_beats(ann.symbol)
        if self.mode == "windows":
            return self._windows(ecg, record, patient, ann.sample, ann.symbol, beats.classes, rhythms.episodes,
                                 rhythms.unknown + beats.unknown)
        return self._beats(ecg, record, patient, ann.sample, ann.symbol, beats.classes, rhythms.episodes,
                           rhythms.unknown + beats.unknown)

    def _windows(self, ecg: Any, record: str, patient: str, samples: np.ndarray, symbols: tuple[str, ...],
                 classes: list[str | None], episodes: list[Episode], unknown: list[str]) -> list[Sample]:
        width = int(round(self.window_s * ecg.fs))
        starts = window_starts(ecg.n_samples, width, int(round(self.stride_s * ecg.fs)))
        min_samples = int(round(self.min_rhythm_s * ecg.fs))
        is_beat = np.array([c is not None for c in classes], bool)
        out = []
        for k, a in enumerate(starts.tolist()):
            b = a + width
            lo, hi = np.searchsorted(samples, [a, b])
            in_window = range(lo, hi)
            eps = overlapping(episodes, a, b, min_samples)
            ids = [e.id for e in eps]
            counts = dict.fromkeys(AAMI_CLASSES, 0)
            for i in in_window:
                if is_beat[i]:
                    counts[classes[i]] += 1  # type: ignore[index]
                    ids.extend(_beat_ids(symbols[i]))
            rid = f"{record}_w{k:04d}"
            extra: dict[str, Any] = {
                "window_index": k,
                "start": a,
                "window_start_s": a / ecg.fs,
                "rhythms": joined(dict.fromkeys(e.note for e in eps)),
                "aami_classes": joined(c for c, n in counts.items() if n),
                "n_beats": sum(counts.values()),
                **{f"n_{c}": n for c, n in counts.items()},
                "unmapped": joined(unknown),
            }
            out.append(Sample(rid, segment(ecg, a, b, rid), patient, tuple(dict.fromkeys(ids)), extra=extra))
        return out

    def _beats(self, ecg: Any, record: str, patient: str, samples: np.ndarray, symbols: tuple[str, ...],
               classes: list[str | None], episodes: list[Episode], unknown: list[str]) -> list[Sample]:
        before = int(round(self.before_s * ecg.fs))
        after = int(round(self.after_s * ecg.fs))
        out = []
        k = -1
        for i, cls in enumerate(classes):
            if cls is None:
                continue
            k += 1
            r = int(samples[i])
            a, b = r - before, r + after
            if a < 0 or b > ecg.n_samples:
                continue
            eps = episode_at(episodes, r)
            ids = [e.id for e in eps] + list(_beat_ids(symbols[i]))
            rid = f"{record}_b{k:06d}"
            extra = {
                "aami_class": cls,
                "symbol": symbols[i],
                "sample": r,
                "rhythm": eps[0].note if eps else "",
                "unmapped": joined(unknown),
            }
            out.append(Sample(rid, segment(ecg, a, b, rid), patient, tuple(dict.fromkeys(ids)), extra=extra))
        return out
