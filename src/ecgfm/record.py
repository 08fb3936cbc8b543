"""The one record type that flows through ecgfm: :class:`ECG`.

Readers return it, preprocessing steps map it to itself, datasets and models consume it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.leads import DERIVABLE_FROM_I_II, canonical_leads, derive_limb_leads

MIN_FS = 50.0  # Hz; below this no ECG waveform is recoverable
MAX_FS = 20_000.0  # Hz; above this the "rate" is almost surely a unit mistake
SEXES = ("M", "F")


@dataclass(frozen=True)
class Metadata:
    """What is known about a recording besides its samples. Every field is optional."""

    record_id: str | None = None  # the file's own identifier (WFDB record name, UUID, ...)
    patient_id: str | None = None  # identifier of the patient, for patient-level splits
    age: float | None = None  # years at acquisition
    sex: str | None = None  # "M" or "F"
    acquired: datetime | None = None  # acquisition start time, as written in the file
    device: str | None = None  # acquisition device or system, as written in the file
    source_format: str | None = None  # the reader that produced the record, e.g. "wfdb"
    source_path: str | None = None  # the file it was read from
    interpretation: str | None = None  # free-text statements/report carried by the file
    extra: Mapping[str, Any] = field(default_factory=dict)  # format-specific fields

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in SEXES:
            raise ValidationError(f"sex must be 'M', 'F' or None, got {self.sex!r}")
        if self.age is not None and not (0 <= self.age <= 150):
            raise ValidationError(f"age must be 0-150 years, got {self.age!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: datetimes as ISO strings, numpy values as Python values."""
        out = dataclasses.asdict(self)
        if self.acquired is not None:
            out["acquired"] = self.acquired.isoformat()
        out["extra"] = _jsonable(dict(self.extra))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metadata:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("acquired"), str):
            kwargs["acquired"] = datetime.fromisoformat(kwargs["acquired"])
        return cls(**kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, eq=False)
class ECG:
    """A multi-lead ECG recording.

    Attributes:
        signal: float32 array ``[leads, samples]`` in millivolts, C-contiguous.
        fs: sampling rate in Hz (50 Hz to 20 kHz).
        leads: canonical lead names, one per row of ``signal``, unique.
        meta: :class:`Metadata` about the recording.
        mask: optional bool array ``[leads, samples]``, True where a sample was observed.
            Samples that were not observed (gaps, disconnected leads) hold 0.0 in ``signal``
            and False here. ``None`` means every sample was observed.

    Construction validates everything and raises :class:`~ecgfm.errors.ValidationError`
    naming the record. Non-finite samples are refused unless masked; use
    :meth:`ECG.with_gaps` to turn NaN gaps into a mask.

    >>> import numpy as np
    >>> ecg = ECG(np.zeros((2, 1000)), fs=500, leads=("I", "II"))
    >>> ecg.duration
    2.0
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    meta: Metadata = field(default_factory=Metadata)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        name = self.meta.source_path or self.meta.record_id or "record"
        signal = np.asarray(self.signal)
        if signal.ndim == 1:
            signal = signal[None, :]
        if signal.ndim != 2:
            raise ValidationError(f"{name}: signal must be [leads, samples], got shape {signal.shape}")
        if not np.issubdtype(signal.dtype, np.number) or np.iscomplexobj(signal):
            raise ValidationError(f"{name}: signal must be real numbers, got dtype {signal.dtype}")
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        leads = canonical_leads(self.leads, source=name)
        if len(leads) != signal.shape[0]:
            raise ValidationError(
                f"{name}: {len(leads)} lead names for {signal.shape[0]} signal rows"
            )
        try:
            fs = float(self.fs)
        except (TypeError, ValueError):
            raise ValidationError(f"{name}: sampling rate must be a number, got {self.fs!r}") from None
        if not (math.isfinite(fs) and MIN_FS <= fs <= MAX_FS):
            raise ValidationError(
                f"{name}: sampling rate {self.fs!r} Hz is outside the plausible range "
                f"{MIN_FS:g}-{MAX_FS:g} Hz"
            )
        if signal.shape[1] == 0:
            raise ValidationError(f"{name}: signal has no samples")
        mask = self.mask
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != signal.shape:
                raise ValidationError(
                    f"{name}: mask shape {mask.shape} differs from signal shape {signal.shape}"
                )
            if mask.all():
                mask = None
        finite = np.isfinite(signal)
        if mask is None and not finite.all():
            lead = leads[int(np.argmin(finite.all(axis=1)))]
            raise ValidationError(
                f"{name}: lead {lead} has {int((~finite).sum())} non-finite samples in total "
                "(use ECG.with_gaps to mask gaps explicitly)"
            )
        if mask is not None:
            bad = ~finite & mask
            if bad.any():
                raise ValidationError(
                    f"{name}: {int(bad.sum())} non-finite samples are marked as observed"
                )
            if not finite.all() or signal[~mask].any():
                signal = np.where(mask, signal, np.float32(0.0))
        object.__setattr__(self, "signal", signal)
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "leads", leads)
        object.__setattr__(self, "mask", mask)

    @classmethod
    def with_gaps(
        cls,
        signal: np.ndarray,
        fs: float,
        leads: Sequence[str],
        meta: Metadata | None = None,
    ) -> ECG:
        """Build a record whose non-finite samples (NaN gaps) become masked zeros."""
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim == 1:
            signal = signal[None, :]
        finite = np.isfinite(signal)
        return cls(signal, fs, tuple(leads), meta or Metadata(), None if finite.all() else finite)

    # -- derived properties -------------------------------------------------------------

    @property
    def n_leads(self) -> int:
        return self.signal.shape[0]

    @property
    def n_samples(self) -> int:
        return self.signal.shape[1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.fs

    @property
    def name(self) -> str:
        """How errors and logs refer to this record."""
        return self.meta.source_path or self.meta.record_id or "record"

    def __repr__(self) -> str:
        return (
            f"ECG({self.name!r}, leads={list(self.leads)}, fs={self.fs:g} Hz, "
            f"samples={self.n_samples}, duration={self.duration:.2f} s)"
        )

    # -- access and transformation --------------------------------------------------------

    def lead(self, name: str) -> np.ndarray:
        """The samples of one lead, looked up by any accepted spelling."""
        canonical = canonical_leads([name], source=self.name)[0]
        try:
            return self.signal[self.leads.index(canonical)]
        except ValueError:
            raise ValidationError(
                f"{self.name}: has no lead {canonical} (has {', '.join(self.leads)})"
            ) from None

    def replace(self, **changes: Any) -> ECG:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def select(self, leads: Sequence[str], *, derive: bool = True, missing: str = "error") -> ECG:
        """Reorder to ``leads``, deriving limb leads from I and II where needed.

        Args:
            leads: the wanted lead names in order.
            derive: derive III, aVR, aVL, aVF from I and II when the record lacks them.
            missing: ``"error"`` to refuse a lead the record lacks, ``"mask"`` to add it as a
                fully masked row of zeros (for models that accept lead masks).
        """
        wanted = canonical_leads(leads, source=self.name)
        have = dict(zip(self.leads, self.signal))
        have_mask = dict(zip(self.leads, self.mask)) if self.mask is not None else None
        need_derived = [w for w in wanted if w not in have and w in DERIVABLE_FROM_I_II]
        if derive and need_derived and "I" in have and "II" in have:
            derived = derive_limb_leads(have["I"], have["II"])
            for lead in need_derived:
                have[lead] = derived[lead].astype(np.float32)
                if have_mask is not None:
                    have_mask[lead] = have_mask["I"] & have_mask["II"]
        rows, masks = [], []
        for lead in wanted:
            if lead in have:
                rows.append(have[lead])
                masks.append(have_mask[lead] if have_mask is not None else None)
            elif missing == "mask":
                rows.append(np.zeros(self.n_samples, np.float32))
                masks.append(np.zeros(self.n_samples, bool))
            else:
                raise ValidationError(
                    f"{self.name}: has no lead {lead} (has {', '.join(self.leads)}"
                    + ("; III, aVR, aVL, aVF can be derived only from I and II" if lead in DERIVABLE_FROM_I_II else "")
                    + ")"
                )
        mask = None
        if any(m is not None for m in masks):
            mask = np.stack([np.ones(self.n_samples, bool) if m is None else m for m in masks])
        return ECG(np.stack(rows), self.fs, wanted, self.meta, mask)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no samples): rate, leads, duration and metadata."""
        return {
            "fs": self.fs,
            "leads": list(self.leads),
            "n_samples": self.n_samples,
            "duration_s": self.duration,
            "masked_samples": 0 if self.mask is None else int((~self.mask).sum()),
            "meta": self.meta.to_dict(),
        }
