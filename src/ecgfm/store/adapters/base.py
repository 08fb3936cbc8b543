"""What every dataset adapter shares: :class:`Sample`, the :class:`Adapter` base and the registry.

An adapter turns one dataset folder into work items (``keys()``, cheap, no signal read) and each
work item into samples (``load(key)``). The builder sends the adapter to worker processes, so an
adapter holds only picklable, plain attributes (paths, strings, numbers); anything it reads once
and reuses (a metadata table) is a per-process cache that is not pickled.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ecgfm.errors import ECGError, ReadError, ValidationError
from ecgfm.record import ECG

#: Native split names; datasets that define a split use these.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One record (or window, or beat) of a dataset, ready for the store.

    ``patient_id`` None means the record is its own patient: the builder then uses ``record_id``,
    so patient-level splits treat each such record as a patient.
    """

    record_id: str  # unique within the corpus; the dataset's own id ("00001_hr", "101_w0003")
    ecg: ECG  # the raw record before preprocessing; meta has age, sex, source_format, source_path
    patient_id: str | None = None  # None: the record is its own patient (builder uses record_id)
    labels: tuple[str, ...] = ()  # catalogue ids (ecgfm.labels.load_catalogue())
    report: str | None = None  # free-text report, where the dataset has one
    split: str | None = None  # native split ("train"/"val"/"test") where the dataset defines one
    extra: Mapping[str, Any] = field(default_factory=dict)  # more manifest columns: JSON scalars only

    def __post_init__(self) -> None:
        if not self.record_id:
            raise ValidationError("a sample needs a non-empty record_id")
        if self.split is not None and self.split not in SPLITS:
            raise ValidationError(f"record {self.record_id}: split {self.split!r} is not one of {SPLITS}")
        for key, value in self.extra.items():
            if not (value is None or isinstance(value, (str, bool, int, float))):
                raise ValidationError(
                    f"record {self.record_id}: extra column {key!r} holds {type(value).__name__}; "
                    "only str, bool, int, float or None"
                )


class Adapter:
    """Base class of dataset adapters.

    Subclasses set ``name`` (the registry key), take the dataset folder as first argument and
    their options as keywords, and implement :meth:`keys` and :meth:`load`. Attributes are plain
    values so the adapter pickles; per-process caches live in ``self._cache`` (not pickled).
    """

    name: ClassVar[str] = ""
    #: attributes recorded by :meth:`describe` (besides ``root``)
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(root))  # absolute and without "..", links kept
        if not self.root.exists():
            raise ReadError(self.root, f"{self.name} dataset folder not found")
        self._cache: dict[str, Any] = {}

    def keys(self) -> list[str]:
        """Work items in a stable sorted order (usually absolute file paths); reads no signal."""
        raise NotImplementedError

    def load(self, key: str) -> list[Sample]:
        """The samples of one work item; raises :class:`~ecgfm.errors.ECGError` for a bad item."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name and options, as recorded in ``store.json``."""
        out: dict[str, Any] = {"name": self.name, "root": str(self.root)}
        for opt in self.options:
            value = getattr(self, opt)
            out[opt] = str(value) if isinstance(value, Path) else value
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}({str(self.root)!r}{', ' if opts else ''}{opts})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # tables are re-read once per worker process, not shipped
        return state

    def _cached(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]


ADAPTERS: dict[str, type[Adapter]] = {}
A = TypeVar("A", bound=type[Adapter])


def register_adapter(cls: A) -> A:
    """Class decorator: register an adapter under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in ADAPTERS and ADAPTERS[cls.name] is not cls:
        raise ValueError(f"an adapter named {cls.name!r} is already registered")
    ADAPTERS[cls.name] = cls
    return cls


# -- helpers shared by the adapters -----------------------------------------------------------------


def with_meta(ecg: ECG, **changes: Any) -> ECG:
    """``ecg`` with some :class:`~ecgfm.record.Metadata` fields replaced."""
    return ecg.replace(meta=dataclasses.replace(ecg.meta, **changes))


def segment(ecg: ECG, start: int, stop: int, record_id: str) -> ECG:
    """Samples ``[start, stop)`` of ``ecg`` as a record of its own (a copy, not a view)."""
    signal = np.ascontiguousarray(ecg.signal[:, start:stop])
    mask = None if ecg.mask is None else np.ascontiguousarray(ecg.mask[:, start:stop])
    meta = dataclasses.replace(ecg.meta, record_id=record_id)
    return ECG(signal, ecg.fs, ecg.leads, meta, mask)


def window_starts(n_samples: int, window: int, stride: int) -> np.ndarray:
    """Start samples of the windows of ``window`` samples every ``stride`` that fit in the record.

    A trailing piece shorter than ``window`` is dropped.
    """
    if window <= 0 or stride <= 0:
        raise ValidationError(f"window ({window}) and stride ({stride}) must be positive sample counts")
    if n_samples < window:
        return np.zeros(0, np.int64)
    return np.arange(0, n_samples - window + 1, stride, dtype=np.int64)


def joined(values: Any) -> str:
    """``;``-joined text of labels or codes (the manifest's string form of a list)."""
    return ";".join(str(v) for v in values)


def clean_value(value: Any) -> Any:
    """A table cell as a JSON scalar: numpy scalars to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def read_error(path: str | Path, exc: Exception) -> ECGError:
    """``exc`` as an :class:`~ecgfm.errors.ECGError` naming ``path`` (ECG errors pass through)."""
    if isinstance(exc, ECGError):
        return exc
    return ReadError(path, f"{type(exc).__name__}: {exc}")
