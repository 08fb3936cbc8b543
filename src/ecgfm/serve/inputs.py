"""What a request may carry, and how it becomes :class:`~ecgfm.ECG` records.

Uploads (``multipart/form-data``) are written to a private temporary folder under safe names
that keep each file's suffix, zip archives are unpacked there (within limits), and the folder is
split into records: every WFDB header with its signal files, and every other file on its own.
Each record is read by :func:`ecgfm.read`, which detects the format from the content.

JSON bodies carry the samples themselves (:class:`SamplesIn`).

Everything the client got wrong raises :class:`RequestProblem` with an HTTP status, a short code
and a message that names the file and the problem, with the server's temporary paths removed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ecgfm.errors import ECGError, ReadError, UnsupportedFormatError, ValidationError
from ecgfm.record import ECG, Metadata

__all__ = ["MAX_FILES", "RequestProblem", "SamplesIn", "StagedUpload", "ecg_from_samples",
           "problem_from_error", "read_record", "safe_name", "stage_upload"]

MAX_FILES = 256  # files in one upload, counting the members of zip archives
ZIP_EXPANSION = 8  # an archive may unpack to at most this many times the upload limit
UNIT_SCALE = {"mV": 1.0, "uV": 1e-3, "µV": 1e-3, "V": 1e3}  # to millivolts


class RequestProblem(ECGError):
    """A request the service refuses: ``status`` (4xx/5xx), ``code`` (a slug) and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------
# JSON samples
# ---------------------------------------------------------------------------------------------
class SamplesIn(BaseModel):
    """An ECG sent as numbers: ``samples`` is ``[leads][samples]``, one row per lead name.

    ``null`` marks a missing sample (a gap); NaN and Infinity are refused.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "samples": [[0.0, 0.01, 0.02], [0.0, -0.01, 0.03]], "fs": 500, "leads": ["I", "II"],
        "units": "mV", "record_id": "demo"}]})

    samples: list[list[float | None]] = Field(description="signal values, [leads][samples]")
    fs: float = Field(description="sampling rate in Hz (50-20000)")
    leads: list[str] = Field(description="lead names, one per row of samples (I, II, V1 ...)")
    units: Literal["mV", "uV", "µV", "V"] = Field("mV", description="unit of the values")
    record_id: str | None = Field(None, max_length=200, description="an identifier to echo back")
    age: float | None = Field(None, description="patient age in years (0-150)")
    sex: Literal["M", "F"] | None = Field(None, description="patient sex")


def ecg_from_samples(body: SamplesIn) -> ECG:
    """The record a :class:`SamplesIn` body describes (values scaled to mV; nulls as gaps).

    Raises:
        RequestProblem: 422 for ragged rows, a lead count that differs from the names, a
            transposed array, non-finite values, or a record the ECG type refuses (rate
            outside 50-20000 Hz, unknown lead names, an implausible age).
    """
    name = body.record_id or "samples"
    rows = body.samples
    if not rows or not any(rows):
        raise RequestProblem(422, "invalid_samples", f"{name}: samples is empty")
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        shown = ", ".join(f"{lead}: {len(row)}" for lead, row in zip(body.leads, rows))
        raise RequestProblem(422, "invalid_samples",
                             f"{name}: lead rows have different lengths ({shown or sorted(lengths)})")
    n = lengths.pop()
    if len(rows) != len(body.leads):
        hint = ""
        if n == len(body.leads) and len(rows) != n:
            hint = "; the array looks like [samples][leads]: send one row per lead, [leads][samples]"
        raise RequestProblem(422, "invalid_samples",
                             f"{name}: {len(rows)} sample rows for {len(body.leads)} lead names{hint}")
    signal = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    gaps = np.array([[v is None for v in row] for row in rows], dtype=bool)
    bad = ~np.isfinite(signal) & ~gaps
    if bad.any():
        lead = body.leads[int(np.argmax(bad.any(axis=1)))]
        raise RequestProblem(422, "invalid_samples",
                             f"{name}: {int(bad.sum())} sample(s) are NaN or infinite (first in lead "
                             f"{lead}); send null for a missing sample")
    signal *= UNIT_SCALE[body.units]
    if np.abs(signal[~gaps]).max(initial=0.0) > 1e5:
        raise RequestProblem(422, "invalid_samples",
                             f"{name}: values up to {np.abs(signal[~gaps]).max():.3g} mV are not an ECG "
                             f"(check units, given as {body.units!r})")
    try:
        meta = Metadata(record_id=name, age=body.age, sex=body.sex, source_format="json")
        return ECG.with_gaps(signal.astype(np.float32), body.fs, tuple(body.leads), meta)
    except ECGError as error:
        raise RequestProblem(422, "invalid_samples", str(error)) from None


# ---------------------------------------------------------------------------------------------
# uploads
# ---------------------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def safe_name(filename: str | None, index: int) -> str:
    """A file name safe to create in the upload folder, keeping the suffix when it can.

    Folders are dropped (``../../x.hea`` -> ``x.hea``), characters outside ``A-Za-z0-9._+-``
    become ``_``, leading dots go (no hidden files, no ``..``), and the name is cut to 120
    characters. An empty result becomes ``upload<index>``.
    """
    base = re.split(r"[/\\]", filename or "")[-1]
    base = unicodedata.normalize("NFKC", base)
    base = _UNSAFE.sub("_", base).lstrip(".-")
    if len(base) > 120:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[: 120 - len(suffix) - 1] + dot + suffix) if dot and len(suffix) <= 16 else base[:120]
    return base or f"upload{index}"


@dataclass
class StagedUpload:
    """An upload written to ``folder``: the record entry points and what each file was called."""

    folder: Path
    records: list[Path]  # one per record: a WFDB header, or a file of another format
    names: dict[str, str]  # safe name -> the name the client gave

    def display(self, path: Path) -> str:
        return self.names.get(path.name, path.name)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def stage_upload(files: Sequence[tuple[str | None, IO[bytes]]], folder: Path, *,
                 max_bytes: int) -> StagedUpload:
    """Write uploaded files into ``folder`` (unpacking zip archives) and find the records.

    Args:
        files: ``(client file name, readable binary file)`` pairs.
        folder: an empty private folder.
        max_bytes: the upload limit; archives may unpack to ``ZIP_EXPANSION`` times it.

    Raises:
        RequestProblem: 400 for no files, too many files or two files of one name; 413 for an
            archive that unpacks too large; 422 for a corrupt archive.
    """
    if not files:
        raise RequestProblem(400, "no_file", "the upload holds no file (send the ECG in the "
                                             "multipart field 'file')")
    names: dict[str, str] = {}
    budget = [max_bytes * ZIP_EXPANSION]

    def claim(client_name: str | None) -> Path:
        if len(names) >= MAX_FILES:
            raise RequestProblem(400, "too_many_files", f"the upload holds more than {MAX_FILES} files")
        name = safe_name(client_name, len(names))
        if name in names:
            raise RequestProblem(400, "duplicate_file",
                                 f"two files in the upload are named {client_name or name!r}")
        names[name] = client_name or name
        return folder / name

    for client_name, stream in files:
        head = stream.read(4)
        stream.seek(0)
        if head == b"PK\x03\x04" and not _is_npz(stream):
            _unzip(stream, client_name or "upload.zip", claim, budget)
            continue
        with open(claim(client_name), "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    records = _records(folder, [folder / n for n in names])
    return StagedUpload(folder, records, names)


def _is_npz(stream: IO[bytes]) -> bool:
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.namelist()
        return any(m.endswith(".npy") for m in members)  # as ecgfm.io.detect decides
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    finally:
        stream.seek(0)


def _unzip(stream: IO[bytes], name: str, claim: Any, budget: list[int]) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise RequestProblem(422, "corrupt_archive", f"{name}: not a readable zip archive ({error})") from None
    with archive:
        for info in archive.infolist():
            base = re.split(r"[/\\]", info.filename)[-1]
            if info.is_dir() or not base or base.startswith(".") or info.filename.startswith("__MACOSX"):
                continue
            if info.flag_bits & 0x1:
                raise RequestProblem(422, "corrupt_archive", f"{name}: {info.filename} is encrypted")
            target = claim(base)
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    # Count what really comes out: the sizes in the directory may lie (zip bombs).
                    while chunk := src.read(1 << 20):
                        budget[0] -= len(chunk)
                        if budget[0] < 0:
                            raise RequestProblem(413, "archive_too_large",
                                                 f"{name}: unpacks to more than {ZIP_EXPANSION}x "
                                                 "the upload limit")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                    RuntimeError) as error:
                raise RequestProblem(422, "corrupt_archive",
                                     f"{name}: cannot unpack {info.filename} ({error})") from None


def _records(folder: Path, paths: Iterable[Path]) -> list[Path]:
    """Record entry points: WFDB headers, and files that no staged header claims."""
    from ecgfm.io.detect import companion_header

    records = []
    for path in paths:
        if path.suffix.lower() != ".hea" and companion_header(path) is not None:
            continue  # a signal file of a WFDB record whose header was uploaded too
        records.append(path)
    return records


def read_record(path: Path, upload: StagedUpload) -> ECG:
    """Read one staged record; the record's ``source_path`` becomes the client's file name.

    Raises:
        RequestProblem: 415 (no supported format), 422 (unreadable), naming the client's file.
    """
    import ecgfm

    shown = upload.display(path)
    if path.suffix.lower() == ".dat" and not path.with_suffix(".hea").is_file():
        raise RequestProblem(422, "missing_header",
                             f"{shown}: a WFDB signal file without its header; upload the "
                             "record's .hea file with it (or both in one zip archive)")
    try:
        if ecgfm.detect_format(path) == "wfdb":
            _check_wfdb_names(path, shown)
        ecg = ecgfm.read(path)
    except ECGError as error:
        raise problem_from_error(error, upload.folder) from None
    source = upload.names.get(Path(ecg.meta.source_path or path).name, shown)
    return ecg.replace(meta=dataclasses.replace(ecg.meta, source_path=source))


def _check_wfdb_names(path: Path, shown: str) -> None:
    """Refuse a WFDB header that names files outside its folder (``../../etc/passwd``): the
    reader would open them, and the profile (or its plot) would show their bytes."""
    from ecgfm.io.wfdb import resolve_header

    header = resolve_header(path)
    with open(header, "rb") as fh:
        text = fh.read(1 << 20).decode("latin-1")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line in lines[1:]:  # the record line, then one line per signal file or segment
        name = line.split()[0]
        if "/" in name or "\\" in name or name.startswith(".."):
            raise RequestProblem(422, "invalid_record",
                                 f"{shown}: the WFDB header names {name!r}, outside the upload; "
                                 "signal files must sit beside their header")


def problem_from_error(error: Exception, folder: Path | None = None) -> RequestProblem:
    """The HTTP answer to an ecgfm error about the client's input (temporary paths removed)."""
    message = str(error)
    if folder is not None:
        message = message.replace(str(folder) + os.sep, "").replace(str(folder), "upload")
    if isinstance(error, UnsupportedFormatError):
        return RequestProblem(415, "unsupported_format", message)
    if isinstance(error, ReadError):
        return RequestProblem(422, "unreadable_record", message)
    if isinstance(error, ValidationError):
        return RequestProblem(422, "invalid_record", message)
    return RequestProblem(422, "invalid_record", message)
