"""Plain arrays: NumPy ``.npz``/``.npy`` and CSV/TSV, and ecgfm's own ``.npz`` container.

An ``.npz`` written by :func:`ecgfm.io.write.write_npz` holds ``signal`` (float32 mV), ``fs``,
``leads``, ``meta`` (JSON) and optionally ``mask``, so it reads back with no options. A CSV
with a first column named ``time``/``time_s``/``t`` gives its own rate; otherwise pass ``fs=``.
Arrays never load with pickle.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError
from ecgfm.io._limits import check_declared_size
from ecgfm.leads import canonical_leads
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

_TIME_COLUMNS = {"time", "time_s", "t", "seconds", "sec", "time [s]"}


def _scale(units: str, path: Path) -> float:
    factor = mv_per_unit(units)
    if factor is None:
        raise ReadError(path, f"unknown units {units!r} (known: mV, uV, V)")
    return factor


def _require(path: Path, fs: float | None, leads: Sequence[str] | None, n_rows: int) -> tuple[float, tuple[str, ...]]:
    if fs is None:
        raise ReadError(path, "a bare array carries no sampling rate: pass fs= (Hz)")
    if leads is None:
        raise ReadError(path, f"a bare array carries no lead names: pass leads= ({n_rows} names)")
    if len(leads) != n_rows:
        raise ReadError(path, f"{len(leads)} lead names for {n_rows} channels")
    return fs, canonical_leads(leads, source=str(path))


def _as_leads_by_samples(array: np.ndarray, n_leads: int | None, path: Path) -> np.ndarray:
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ReadError(path, f"expected a 2-D array [leads, samples], got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ReadError(path, f"expected numbers, got dtype {array.dtype}")
    if n_leads is not None and array.shape[0] != n_leads and array.shape[1] == n_leads:
        array = array.T
    elif n_leads is None and array.shape[0] > array.shape[1]:
        array = array.T  # [samples, leads] is the common on-disk layout
    return array


def read_npz(path: Path, *, fs: float | None = None, leads: Sequence[str] | None = None, units: str = "mV", key: str = "signal") -> ECG:
    """Read an ``.npz``: ecgfm's container as is, any other given ``fs``/``leads``/``key``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            if key not in files:
                if len(files) != 1:
                    raise ReadError(path, f"no array {key!r} (arrays: {', '.join(sorted(files))}); pass key=")
                key = next(iter(files))
            array = npz[key]
            stored_fs = float(npz["fs"]) if "fs" in files else None
            stored_leads = [str(x) for x in npz["leads"]] if "leads" in files else None
            meta_json = str(npz["meta"]) if "meta" in files else None
            mask = npz["mask"] if "mask" in files else None
    except ValueError as exc:
        raise ReadError(path, f"cannot load NPZ without pickle ({exc})") from None
    leads = leads or stored_leads
    array = _as_leads_by_samples(array, len(leads) if leads else None, path)
    fs, lead_names = _require(path, fs or stored_fs, leads, array.shape[0])
    check_declared_size(path, *array.shape)
    meta: dict[str, Any] = json.loads(meta_json) if meta_json else {}
    meta.update(source_format="npz", source_path=str(path))
    meta.setdefault("record_id", path.stem)
    signal = array.astype(np.float64) * _scale(units, path)
    return ECG(signal, fs, lead_names, Metadata.from_dict(meta), mask) if mask is not None else ECG.with_gaps(signal, fs, lead_names, Metadata.from_dict(meta))


def read_npy(path: Path, *, fs: float | None = None, leads: Sequence[str] | None = None, units: str = "mV") -> ECG:
    """Read a ``.npy`` array ``[leads, samples]`` (or ``[samples, leads]``); needs ``fs``, ``leads``."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise ReadError(path, f"cannot load .npy without pickle ({exc})") from None
    array = _as_leads_by_samples(np.asarray(array), len(leads) if leads else None, path)
    fs, lead_names = _require(path, fs, leads, array.shape[0])
    check_declared_size(path, *array.shape)
    signal = array.astype(np.float64) * _scale(units, path)
    return ECG.with_gaps(signal, fs, lead_names, Metadata(record_id=path.stem, source_format="npy", source_path=str(path)))


def read_csv(path: Path, *, fs: float | None = None, leads: Sequence[str] | None = None, units: str = "mV", delimiter: str | None = None) -> ECG:
    """Read a CSV/TSV with one column per lead and one row per sample.

    A header row names the leads; a first column named ``time``/``time_s``/``t`` (seconds) gives
    the sampling rate. Without them pass ``leads=`` and ``fs=``.
    """
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) < 2:
        raise ReadError(path, "CSV has fewer than two rows")
    if delimiter is None:
        delimiter = next((d for d in (",", "\t", ";") if d in lines[1]), ",")
    first = [field.strip().strip("\"'") for field in lines[0].split(delimiter)]
    has_header = any(not _is_number(field) for field in first)
    columns = first if has_header else None
    try:
        data = np.loadtxt(io.StringIO("\n".join(lines[1:] if has_header else lines)), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ReadError(path, f"non-numeric value in CSV data ({exc})") from None
    if columns is not None and len(columns) != data.shape[1]:
        raise ReadError(path, f"header has {len(columns)} columns, data rows have {data.shape[1]}")
    if columns is not None and columns[0].lower() in _TIME_COLUMNS:
        t = data[:, 0]
        steps = np.diff(t)
        if len(steps) == 0 or not np.all(steps > 0):
            raise ReadError(path, "time column is not strictly increasing")
        inferred = 1.0 / float(np.median(steps))
        if np.max(np.abs(steps - np.median(steps))) > 1e-3 * np.median(steps) + 1e-9:
            raise ReadError(path, "time column is not evenly spaced")
        fs = fs or round(inferred, 6)
        columns, data = columns[1:], data[:, 1:]
    leads = leads or columns
    signal = data.T
    fs_value, lead_names = _require(path, fs, leads, signal.shape[0])
    check_declared_size(path, *signal.shape)
    meta = Metadata(record_id=path.stem, source_format="csv", source_path=str(path))
    return ECG.with_gaps(signal * _scale(units, path), fs_value, lead_names, meta)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
