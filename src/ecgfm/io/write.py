"""Writing records: WFDB (format 16), ecgfm's ``.npz`` container, and CSV.

Every writer takes an :class:`~ecgfm.ECG` and an output folder or path and returns the path of
what it wrote (the header, for WFDB). What it writes reads back with :func:`ecgfm.read`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.record import ECG

WRITERS: dict[str, Callable[[ECG, Path], Path]] = {}


def _writer(name: str) -> Callable[[Callable[[ECG, Path], Path]], Callable[[ECG, Path], Path]]:
    def register(fn: Callable[[ECG, Path], Path]) -> Callable[[ECG, Path], Path]:
        WRITERS[name] = fn
        return fn

    return register


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so an interrupted job leaves no half file."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@_writer("npz")
def write_npz(ecg: ECG, path: Path) -> Path:
    """ecgfm's container: ``signal`` float32 mV, ``fs``, ``leads``, ``meta`` JSON, ``mask``."""
    path = _target(ecg, path, ".npz")
    arrays = {
        "signal": ecg.signal,
        "fs": np.float64(ecg.fs),
        "leads": np.array(ecg.leads),
        "meta": np.array(json.dumps(ecg.meta.to_dict())),
    }
    if ecg.mask is not None:
        arrays["mask"] = ecg.mask
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _atomic_write_bytes(path, buffer.getvalue())
    return path


@_writer("csv")
def write_csv(ecg: ECG, path: Path) -> Path:
    """CSV with a ``time_s`` column and one column per lead (mV, 6 decimals)."""
    path = _target(ecg, path, ".csv")
    t = np.arange(ecg.n_samples) / ecg.fs
    signal = ecg.signal if ecg.mask is None else np.where(ecg.mask, ecg.signal, np.nan)
    table = np.column_stack([t, signal.T])
    buffer = io.StringIO()
    np.savetxt(buffer, table, delimiter=",", fmt=["%.9g"] + ["%.6f"] * ecg.n_leads, header="time_s," + ",".join(ecg.leads), comments="")
    _atomic_write_bytes(path, buffer.getvalue().encode())
    return path


@_writer("wfdb")
def write_wfdb(ecg: ECG, path: Path) -> Path:
    """WFDB format 16 record (``<id>.hea`` + ``<id>.dat``) at 1 µV resolution where it fits.

    The gain is 1000 ADC units per mV unless a lead exceeds +-32.7 mV, in which case that lead's
    gain is lowered to fit. Masked samples are written as WFDB's missing value (-32768).
    """
    path = Path(path)
    folder, record = (path.parent, path.stem) if path.suffix == ".hea" else (path, _stem(ecg))
    folder.mkdir(parents=True, exist_ok=True)
    peak = np.abs(ecg.signal).max(axis=1).astype(np.float64)
    gain = np.where(peak * 1000 > 32000, np.floor(32000 / np.maximum(peak, 1e-12)), 1000.0)
    if np.any(gain < 1):
        raise ValidationError(f"{ecg.name}: amplitudes above 32 V cannot be stored in WFDB format 16")
    digital = np.round(ecg.signal * gain[:, None]).astype(np.int16)
    if ecg.mask is not None:
        digital[~ecg.mask] = -32768
    _atomic_write_bytes(folder / f"{record}.dat", digital.T.astype("<i2").tobytes())
    lines = [f"{record} {ecg.n_leads} {ecg.fs:g} {ecg.n_samples}"]
    for i, lead in enumerate(ecg.leads):
        first = int(digital[i, 0])
        checksum = int(digital[i].astype(np.int64).sum()) & 0xFFFF
        checksum = checksum - 0x10000 if checksum >= 0x8000 else checksum
        lines.append(f"{record}.dat 16 {gain[i]:g}(0)/mV 16 0 {first} {checksum} 0 {lead}")
    meta = ecg.meta
    if meta.age is not None:
        lines.append(f"# Age: {meta.age:g}")
    if meta.sex is not None:
        lines.append(f"# Sex: {'Male' if meta.sex == 'M' else 'Female'}")
    if "dx" in meta.extra:
        lines.append("# Dx: " + ",".join(meta.extra["dx"]))
    header = folder / f"{record}.hea"
    _atomic_write_bytes(header, ("\n".join(lines) + "\n").encode())
    return header


def _target(ecg: ECG, path: Path, suffix: str) -> Path:
    """``path`` itself when it names a ``suffix`` file, else ``<record id><suffix>`` inside it."""
    path = Path(path)
    if path.suffix != suffix:
        path = path / f"{_stem(ecg)}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _stem(ecg: ECG) -> str:
    name = ecg.meta.record_id or Path(ecg.name).stem or "record"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write(ecg: ECG, out: str | os.PathLike[str], to: str) -> Path:
    """Write ``ecg`` in format ``to`` (``wfdb``, ``npz`` or ``csv``) into folder or file ``out``."""
    if to not in WRITERS:
        raise ValidationError(f"unknown output format {to!r} (known: {', '.join(WRITERS)})")
    return WRITERS[to](ecg, Path(out))
