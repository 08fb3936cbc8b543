"""Reading ECG files: one door, :func:`read`, for every supported format.

The format is detected from the file's content (:func:`detect_format`); each format's reader
lives in its own module and is imported only when a file of that format is read, so
``import ecgfm`` stays light.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgfm.errors import ECGError, ReadError
from ecgfm.io.detect import detect_format
from ecgfm.record import ECG


@dataclass(frozen=True)
class Reader:
    """A registered format: its name, what it reads, and where its reader function lives."""

    name: str  # the key users pass as ``format=`` and that ``detect_format`` returns
    description: str  # one line for ``ecgfm formats`` and the docs
    target: str  # "module:function" of the reader, imported on first use

    def load(self) -> Callable[..., ECG]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


READERS: dict[str, Reader] = {}


def register_reader(name: str, description: str, target: str) -> None:
    """Register a reader under ``name``; ``target`` is ``"package.module:function"``."""
    if name in READERS:
        raise ValueError(f"a reader named {name!r} is already registered")
    READERS[name] = Reader(name, description, target)


register_reader("wfdb", "PhysioNet WFDB records (formats 16, 212, 516 FLAC, multi-segment), incl. CinC .mat+.hea", "ecgfm.io.wfdb:read_wfdb")
register_reader("mat", "MATLAB .mat arrays without a WFDB header (CPSC 2018/2019 variants)", "ecgfm.io.mat:read_mat")
register_reader("hl7_aecg", "HL7 annotated ECG (aECG) XML, incl. FDA variants", "ecgfm.io.hl7_aecg:read_hl7_aecg")
register_reader("philips_xml", "Philips Sierra ECG XML 1.03, 1.04, 1.04.01 (XLI-compressed or plain)", "ecgfm.io.philips:read_philips_xml")
register_reader("muse_xml", "GE MUSE resting ECG XML (rhythm and median waveforms)", "ecgfm.io.muse:read_muse_xml")
register_reader("dicom", "DICOM 12-lead / general ECG Waveform Storage", "ecgfm.io.dicom:read_dicom")
register_reader("scp_ecg", "SCP-ECG (EN 1064 / ISO 11073-91064), Huffman and difference coded", "ecgfm.io.scp:read_scp")
register_reader("edf", "EDF and EDF+ recordings", "ecgfm.io.edf:read_edf")
register_reader("npz", "NumPy .npz written by ecgfm, or any .npz given fs and leads", "ecgfm.io.arrays:read_npz")
register_reader("npy", "a NumPy .npy array [leads, samples], given fs and leads", "ecgfm.io.arrays:read_npy")
register_reader("csv", "CSV/TSV columns per lead, with a time column or given fs", "ecgfm.io.arrays:read_csv")


def read(path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> ECG:
    """Read one ECG file of any supported format into an :class:`~ecgfm.ECG`.

    Args:
        path: the file. WFDB records may be named by header, record name or signal file.
        format: a reader name from :data:`READERS` to skip content detection.
        **options: passed to the reader, e.g. ``fs=`` and ``leads=`` for bare arrays, or
            ``waveform="median"`` for XML formats that carry median beats.

    Returns:
        The record: float32 ``[leads, samples]`` in mV with canonical lead names.

    Raises:
        ReadError: the file is missing, corrupt, truncated, of an unknown format, or violates
            the record contract; the message names the file and the problem.

    >>> ecg = ecgfm.read("examples/ptbxl_00001_hr.hea")  # doctest: +SKIP
    """
    name = format or detect_format(path)
    if name not in READERS:
        raise ReadError(path, f"unknown format {name!r} (known: {', '.join(READERS)})")
    reader = READERS[name].load()
    try:
        return reader(Path(path), **options)
    except ReadError:
        raise
    except ECGError as exc:
        raise ReadError(path, str(exc).removeprefix(f"{os.fspath(path)}: ")) from exc
    except (OSError, EOFError) as exc:
        raise ReadError(path, f"cannot read file: {exc}") from exc
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError) as exc:
        # A reader met bytes it did not expect: report it against the file, keep the batch alive.
        raise ReadError(path, f"corrupt or unsupported {name} content ({type(exc).__name__}: {exc})") from exc


__all__ = ["READERS", "Reader", "ReadError", "detect_format", "read", "register_reader"]
