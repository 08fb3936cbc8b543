"""EDF and EDF+ recordings (European Data Format, Kemp et al. 1992 / Kemp & Olivan 2003).

An EDF file is a 256-byte ASCII header, 256 more header bytes per signal (written field by
field: all labels, then all transducers, ...), then data records. Each data record holds, signal
after signal, that signal's samples for the record's duration as little-endian int16. EDF+ adds
``EDF Annotations`` signals whose "samples" are bytes of Time-stamped Annotation Lists (TALs),
and discontinuous files (``EDF+D``) whose records need not follow one another in time.

The parser is plain numpy: the data records are memory-mapped and only the ECG leads and the
annotation bytes are copied out. Discontinuous recordings are read with the gaps between
records masked (see :func:`read_edf`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.leads import canonical_lead
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

ANNOTATION_LABEL = "EDF Annotations"
Annotation = tuple[float, float | None, str]  # (onset s, duration s or None, text)

# Physical dimensions of a voltage, as written in EDF headers, to millivolts.
# Electrode-pair spellings of the bipolar limb leads (EDF+ "ECG LA-RA" style labels).
_ELECTRODE_PAIRS = {"LA-RA": "I", "LL-RA": "II", "LL-LA": "III"}
_ECG_LABEL = re.compile(r"^(?:ECG|EKG)(?P<sep>[\s_:\-.]*)(?P<rest>.*)$", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_TAL_ONSET = re.compile(r"^[+-]\d+(?:\.\d*)?$")

# The fixed header: (name, width) in file order, then the per-signal fields.
_FIXED_FIELDS = (
    ("version", 8), ("patient", 80), ("recording", 80), ("start date", 8), ("start time", 8),
    ("header bytes", 8), ("reserved", 44), ("number of data records", 8),
    ("data record duration", 8), ("number of signals", 4),
)
_SIGNAL_FIELDS = (
    ("label", 16), ("transducer type", 80), ("physical dimension", 8), ("physical minimum", 8),
    ("physical maximum", 8), ("digital minimum", 8), ("digital maximum", 8), ("prefiltering", 80),
    ("samples per data record", 8), ("reserved", 32),
)


@dataclass(frozen=True)
class EdfSignal:
    """One signal's header entry."""

    label: str  # e.g. "ECG V1", "EDF Annotations"
    transducer: str  # transducer type, e.g. "AgAgCl electrode"
    dimension: str  # physical dimension (unit), e.g. "uV"
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefiltering: str  # e.g. "HP:0.1Hz LP:75Hz"
    samples_per_record: int

    @property
    def is_annotation(self) -> bool:
        return self.label.strip().lower() == ANNOTATION_LABEL.lower()

    @property
    def gain(self) -> float:
        """Physical units per digital unit."""
        return (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min)

    @property
    def offset(self) -> float:
        """Physical value of digital 0."""
        return self.physical_min - self.gain * self.digital_min


@dataclass(frozen=True)
class EdfHeader:
    """A parsed EDF/EDF+ header."""

    version: str
    patient: str  # local patient identification (EDF+: code sex birthdate name)
    recording: str  # local recording identification (EDF+: "Startdate dd-MMM-yyyy ...")
    start_date: str  # "dd.mm.yy" as written
    start_time: str  # "hh.mm.ss" as written
    header_bytes: int
    variant: str  # "EDF", "EDF+C" (continuous) or "EDF+D" (discontinuous)
    n_records: int  # data records in the file (resolved from the file size when declared -1)
    record_duration: float  # seconds per data record (0 in annotation-only EDF+ files)
    record_duration_text: str  # that field as written (its decimals bound the rate's precision)
    signals: tuple[EdfSignal, ...]
    record_bytes: int  # bytes per data record
    trailing_bytes: int  # bytes after the last complete data record

    @property
    def is_plus(self) -> bool:
        return self.variant.startswith("EDF+")

    @property
    def start(self) -> datetime | None:
        """Start of the file (EDF+ four-digit ``Startdate`` year preferred), or None if invalid."""
        return _start_datetime(self)


# -- header ---------------------------------------------------------------------------------


def read_edf_header(path: Path) -> EdfHeader:
    """Parse and check the header of an EDF/EDF+ file against the file's size.

    Raises:
        ReadError: the header is short, a numeric field is not a number (the message names the
            field and, for signal fields, the signal), the sizes contradict each other, or the
            file holds fewer data records than the header declares.
    """
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fixed = fh.read(256)
            if fixed.startswith(b"\xffBIOSEMI"):
                raise ReadError(path, "is a BDF (24-bit BioSemi) file; only 16-bit EDF/EDF+ is supported")
            if len(fixed) < 256:
                raise ReadError(path, f"truncated EDF header: {len(fixed)} of 256 bytes")
            fields = _split(fixed, _FIXED_FIELDS)
            version = fields["version"].strip()
            if version != "0":
                raise ReadError(path, f"header field 'version' is {version!r}, expected '0' for EDF")
            n_signals = _int(path, fields, "number of signals")
            if n_signals <= 0:
                raise ReadError(path, f"header field 'number of signals' is {n_signals}; an EDF file needs at least one signal")
            need = 256 * (n_signals + 1)
            if size < need:
                raise ReadError(
                    path,
                    f"header field 'number of signals' is {n_signals}, which needs {need} header "
                    f"bytes, but the file has only {size} bytes",
                )
            per_signal = fh.read(256 * n_signals)
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    header_bytes = _int(path, fields, "header bytes")
    if header_bytes != need:
        raise ReadError(
            path,
            f"header field 'header bytes' is {header_bytes}, but {n_signals} signals make the "
            f"header {need} bytes",
        )
    signals = _parse_signals(path, per_signal, n_signals)
    reserved = fields["reserved"].strip()
    variant = "EDF+D" if reserved.startswith("EDF+D") else "EDF+C" if reserved.startswith("EDF+C") else "EDF"

    duration = _float(path, fields, "data record duration")
    if duration < 0:
        raise ReadError(path, f"header field 'data record duration' is {duration:g} s, which is negative")
    record_bytes = 2 * sum(s.samples_per_record for s in signals)
    available = size - header_bytes
    n_records = _int(path, fields, "number of data records")
    complete = available // record_bytes
    if n_records == -1:
        # Allowed while a recording is still being written: the file size decides.
        n_records = complete
    elif n_records < 0:
        raise ReadError(path, f"header field 'number of data records' is {n_records}")
    elif n_records > complete:
        raise ReadError(
            path,
            f"header field 'number of data records' declares {n_records} records of "
            f"{record_bytes} bytes ({n_records * record_bytes} bytes), but the file holds only "
            f"{available} bytes after the header ({complete} complete records): truncated file",
        )
    if n_records == 0:
        raise ReadError(path, "the file holds no data records")
    return EdfHeader(
        version=version,
        patient=fields["patient"].rstrip(),  # leading spaces are empty EDF+ subfields
        recording=fields["recording"].strip(),
        start_date=fields["start date"].strip(),
        start_time=fields["start time"].strip(),
        header_bytes=header_bytes,
        variant=variant,
        n_records=n_records,
        record_duration=duration,
        record_duration_text=fields["data record duration"].strip(),
        signals=signals,
        record_bytes=record_bytes,
        trailing_bytes=available - n_records * record_bytes,
    )


def _split(raw: bytes, layout: tuple[tuple[str, int], ...]) -> dict[str, str]:
    out, pos = {}, 0
    for name, width in layout:
        # EDF headers are ASCII; latin-1 never fails and keeps a stray "µ" in "µV" readable.
        out[name] = raw[pos : pos + width].decode("latin-1")
        pos += width
    return out


def _int(path: Path, fields: Mapping[str, str], name: str, where: str = "") -> int:
    text = fields[name].strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)  # "-32768.0" is not EDF, but harmless when it is a whole number
    except ValueError:
        value = math.nan
    if value.is_integer():
        return int(value)
    raise ReadError(path, f"header field '{name}'{where} is {text!r}, not an integer")


def _float(path: Path, fields: Mapping[str, str], name: str, where: str = "") -> float:
    text = fields[name].strip()
    try:
        value = float(text)
    except ValueError:
        raise ReadError(path, f"header field '{name}'{where} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ReadError(path, f"header field '{name}'{where} is {text!r}, not a finite number")
    return value


def _parse_signals(path: Path, raw: bytes, n: int) -> tuple[EdfSignal, ...]:
    # The per-signal header is stored field-major: n labels, then n transducers, ...
    columns: dict[str, list[str]] = {}
    pos = 0
    for name, width in _SIGNAL_FIELDS:
        columns[name] = [raw[pos + i * width : pos + (i + 1) * width].decode("latin-1") for i in range(n)]
        pos += width * n
    signals = []
    for i in range(n):
        fields = {name: values[i] for name, values in columns.items()}
        label = fields["label"].strip()
        where = f" of signal {i + 1} ({label!r})"
        sig = EdfSignal(
            label=label,
            transducer=fields["transducer type"].strip(),
            dimension=fields["physical dimension"].strip(),
            physical_min=_float(path, fields, "physical minimum", where),
            physical_max=_float(path, fields, "physical maximum", where),
            digital_min=_int(path, fields, "digital minimum", where),
            digital_max=_int(path, fields, "digital maximum", where),
            prefiltering=fields["prefiltering"].strip(),
            samples_per_record=_int(path, fields, "samples per data record", where),
        )
        if sig.samples_per_record <= 0:
            raise ReadError(path, f"header field 'samples per data record'{where} is {sig.samples_per_record}")
        if not sig.is_annotation:
            if sig.digital_max <= sig.digital_min:
                raise ReadError(
                    path,
                    f"header fields 'digital minimum' ({sig.digital_min}) and 'digital maximum' "
                    f"({sig.digital_max}){where}: the maximum must exceed the minimum",
                )
            if sig.digital_min < -(2**15) or sig.digital_max > 2**15 - 1:
                raise ReadError(
                    path,
                    f"header fields 'digital minimum'/'digital maximum'{where} are "
                    f"{sig.digital_min}/{sig.digital_max}, outside the 16-bit range of EDF samples",
                )
            if sig.physical_max == sig.physical_min:
                raise ReadError(
                    path,
                    f"header fields 'physical minimum' and 'physical maximum'{where} are both "
                    f"{sig.physical_min:g}, so samples cannot be scaled",
                )
        signals.append(sig)
    return tuple(signals)


# -- data records ---------------------------------------------------------------------------


def _records(path: Path, header: EdfHeader) -> np.ndarray:
    """The data records as a read-only int16 map ``[records, samples per record]``."""
    width = header.record_bytes // 2
    return np.memmap(path, dtype="<i2", mode="r", offset=header.header_bytes, shape=(header.n_records, width))


def _signal_columns(header: EdfHeader) -> list[slice]:
    out, pos = [], 0
    for sig in header.signals:
        out.append(slice(pos, pos + sig.samples_per_record))
        pos += sig.samples_per_record
    return out


# -- annotations ----------------------------------------------------------------------------


def _parse_tals(path: Path, raw: bytes, record: int) -> tuple[float | None, list[Annotation]]:
    """One record's annotation bytes: its start time (timekeeping TAL) and its annotations."""
    record_start: float | None = None
    annotations: list[Annotation] = []
    for k, tal in enumerate(raw.split(b"\x00")):
        if not tal:
            continue  # separators and the zero padding after the last TAL
        parts = tal.split(b"\x14")
        stamp = parts[0].decode("ascii", "replace")
        onset_text, _, duration_text = stamp.partition("\x15")
        if not _TAL_ONSET.match(onset_text):
            raise ReadError(path, f"data record {record}: annotation onset {onset_text!r} is not a signed number (malformed TAL)")
        onset = float(onset_text)
        duration: float | None = None
        if duration_text:
            try:
                duration = float(duration_text)
            except ValueError:
                raise ReadError(path, f"data record {record}: annotation duration {duration_text!r} is not a number") from None
        texts = [p.decode("utf-8", "replace") for p in parts[1:]]
        if texts and texts[-1] == "":
            texts.pop()  # every TAL ends with \x14
        if k == 0 and texts and texts[0] == "":
            # The first TAL of a record is the timekeeping one: when the record starts.
            record_start = onset
            texts = texts[1:]
        annotations.extend((onset, duration, text) for text in texts if text)
    return record_start, annotations


def _read_annotations(
    path: Path, header: EdfHeader, records: np.ndarray
) -> tuple[list[float | None], list[Annotation]]:
    """Start time of every record (None where unknown) and all annotations, file-relative."""
    columns = _signal_columns(header)
    indices = [i for i, s in enumerate(header.signals) if s.is_annotation]
    starts: list[float | None] = [None] * header.n_records
    annotations: list[Annotation] = []
    for n_ann, i in enumerate(indices):
        block = np.ascontiguousarray(records[:, columns[i]]).astype("<i2", copy=False)
        for r in range(header.n_records):
            start, found = _parse_tals(path, block[r].tobytes(), r)
            if n_ann == 0:
                starts[r] = start
            annotations.extend(found)
    annotations.sort(key=lambda a: a[0])
    return starts, annotations


def read_edf_annotations(path: Path) -> list[Annotation]:
    """The annotations of an EDF+ file: ``(onset_s, duration_s or None, text)``, by onset.

    Onsets are seconds from the file's start date/time as written in its header; the
    per-record timekeeping stamps are not included. Works on annotation-only files (for
    example hypnograms) that :func:`read_edf` refuses. A plain EDF file has none: ``[]``.

    >>> read_edf_annotations(Path("test_edfann.edf"))[:2]  # doctest: +SKIP
    [(0.0, 30.0, 'Sleep stage W'), (30.0, 30.0, 'Sleep stage W')]
    """
    path = Path(path)
    header = read_edf_header(path)
    records = _records(path, header)
    return _read_annotations(path, header, records)[1]


# -- leads ----------------------------------------------------------------------------------


def _classify(label: str, dimension: str, lead_names: Mapping[str, str], source: str) -> tuple[str | None, str | None]:
    """``(lead, None)`` for an ECG lead, ``(None, reason)`` for a signal to leave out.

    A label starting with ECG/EKG claims to be a lead: when it names no lead ecgfm knows this
    raises ValidationError (the caller reports it as a ReadError) rather than dropping it.
    """
    if label in lead_names:
        return canonical_lead(lead_names[label], source=source), None
    match = _ECG_LABEL.match(label)
    is_ecg = match is not None
    rest = match.group("rest").strip() if match else label.strip()
    if match and not match.group("sep") and rest.isdigit():
        rest = ""  # "ECG1", "EKG2": channel numbers of a Holter, not leads I and II
    lead: str | None = None
    if rest.upper() in _ELECTRODE_PAIRS:
        lead = _ELECTRODE_PAIRS[rest.upper()]
    elif rest:
        try:
            lead = canonical_lead(rest, source=source)
        except ValidationError:
            lead = None
    is_voltage = mv_per_unit(dimension) is not None
    if lead is not None and (is_voltage or is_ecg):
        return lead, None
    if is_ecg:
        raise ValidationError(
            f"{source}: signal {label!r} is an ECG signal but names no known lead; pass "
            f"lead_names={{{label!r}: '<lead>'}} to name it (known leads: I, II, III, aVR, aVL, "
            "aVF, V1-V6, ...)"
        )
    if lead is not None:
        return None, f"not a voltage ({dimension or 'no unit'})"
    return None, "not an ECG lead"


def _to_mv(path: Path, sig: EdfSignal) -> float:
    factor = mv_per_unit(sig.dimension)
    if factor is None:
        raise ReadError(
            path,
            f"header field 'physical dimension' of signal {sig.label!r} is {sig.dimension!r}; "
            "expected a voltage (uV, mV or V)",
        )
    return factor


def _snap_rate(samples: int, duration_text: str, duration: float) -> float:
    """Sampling rate, snapped to a whole number of Hz when the 8-character duration field was
    too short to hold the exact duration (``0.001953`` s for 1 sample at 512 Hz)."""
    fs = samples / duration
    if len(duration_text) < 8 or "." not in duration_text:
        return fs  # the writer had room for more digits, so the duration is exact
    decimals = len(duration_text.split(".", 1)[1])
    # The written duration is within half a unit of its last digit of the true one.
    tolerance = fs * (0.5 * 10.0**-decimals) / duration
    nearest = round(fs)
    return float(nearest) if abs(fs - nearest) <= tolerance else fs


# -- metadata -------------------------------------------------------------------------------


def _two_digit_year(yy: int) -> int:
    # EDF: 85-99 are 1985-1999, 00-84 are 2000-2084 (EDF+ spec, section 2.1.3.2).
    return 1900 + yy if yy >= 85 else 2000 + yy


def _edf_plus_date(text: str) -> date | None:
    """``dd-MMM-yyyy`` as in EDF+ Startdate and birthdate subfields."""
    match = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text.strip())
    if not match or match.group(2).upper() not in _MONTHS:
        return None
    try:
        return date(int(match.group(3)), _MONTHS[match.group(2).upper()], int(match.group(1)))
    except ValueError:
        return None


def _start_datetime(header: EdfHeader) -> datetime | None:
    day: date | None = None
    fields = header.recording.split(" ")
    if len(fields) >= 2 and fields[0] == "Startdate":
        day = _edf_plus_date(fields[1])
    date_match = re.fullmatch(r"(\d{1,2})\D(\d{1,2})\D(\d{2})", header.start_date)
    if day is None and date_match:
        d, m, y = (int(g) for g in date_match.groups())
        try:
            day = date(_two_digit_year(y), m, d)
        except ValueError:
            day = None
    time_match = re.fullmatch(r"(\d{1,2})\D(\d{1,2})\D(\d{1,2})", header.start_time)
    if day is None or not time_match:
        return None
    h, mi, s = (int(g) for g in time_match.groups())
    try:
        return datetime(day.year, day.month, day.day, h, mi, s)
    except ValueError:
        return None


def _subfield(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "X") else value


def _header_metadata(header: EdfHeader, start: datetime | None) -> dict[str, Any]:
    """Patient and recording identification, EDF+ subfields where the file uses them."""
    out: dict[str, Any] = {"patient_id": None, "sex": None, "age": None, "device": None}
    extra: dict[str, Any] = {}
    structured = header.is_plus or header.recording.startswith("Startdate ")
    if structured:
        # EDF+: "code sex birthdate name [more]", single spaces, "X" for unknown.
        parts = header.patient.split(" ")
        parts += [""] * (4 - len(parts))
        out["patient_id"] = _subfield(parts[0])
        sex = (_subfield(parts[1]) or "").upper()
        out["sex"] = sex if sex in ("M", "F") else None
        birth = _edf_plus_date(parts[2])
        if birth is not None and start is not None and birth <= start.date():
            age = (start.date() - birth).days / 365.25
            out["age"] = age if age <= 150 else None
        rec = header.recording.split(" ")
        rec += [""] * (5 - len(rec))
        if _subfield(rec[2]):
            extra["admin_code"] = rec[2].strip()
        if _subfield(rec[3]):
            extra["technician"] = rec[3].strip()
        out["device"] = _subfield(" ".join(rec[4:]))
    else:
        out["patient_id"] = header.patient.strip() or None
        if header.recording:
            extra["recording"] = header.recording
    out["extra"] = extra
    return out


# -- the reader -----------------------------------------------------------------------------


def read_edf(path: Path, *, lead_names: Mapping[str, str] | None = None) -> ECG:
    """Read the ECG leads of an EDF or EDF+ file into an :class:`~ecgfm.ECG`.

    Args:
        path: the ``.edf`` file.
        lead_names: signal label -> lead name, for labels that do not name their lead
            (``{"ECG": "II"}`` for a polysomnogram's single ECG channel).

    Returns:
        The record: float32 ``[leads, samples]`` in mV, scaled from the digital values with each
        signal's physical/digital minimum and maximum and converted from its physical dimension
        (uV, mV, V). Labels such as ``"ECG I"``, ``"EKG V1"``, ``"II"``, ``"ECG LA-RA"`` become
        canonical lead names. Signals that are not ECG leads (EEG, respiration, SpO2, ...) are
        left out whatever their rate and listed in ``meta.extra["dropped_channels"]``.
        EDF+ annotations are in ``meta.extra["annotations"]`` as ``(onset_s, duration_s or
        None, text)`` with onsets in seconds from the first sample. ``EDF+D`` (discontinuous)
        files are placed on one time axis from each record's timekeeping stamp; the time
        between records is masked (``ecg.mask`` False, samples 0). ``meta.acquired`` is the
        time of the first sample; ``meta.age`` comes from an EDF+ birthdate.

    Raises:
        ReadError: malformed or truncated header or data (naming the field), no ECG leads
            (``"no ECG signals; only annotations"`` for an annotation-only file, see
            :func:`read_edf_annotations`), ECG leads at different rates, an ECG label that
            names no known lead, a non-voltage physical dimension on an ECG lead, overlapping
            EDF+D records.
    """
    path = Path(path)
    source = str(path)
    header = read_edf_header(path)
    lead_names = dict(lead_names or {})

    leads: list[str] = []
    lead_index: list[int] = []
    dropped: list[str] = []
    for i, sig in enumerate(header.signals):
        if sig.is_annotation:
            continue
        try:
            lead, reason = _classify(sig.label, sig.dimension, lead_names, source)
        except ValidationError as exc:
            raise ReadError(path, str(exc).removeprefix(f"{source}: ")) from None
        if lead is None:
            dropped.append(f"{sig.label} ({reason})")
            continue
        if lead in leads:
            raise ReadError(path, f"signals {header.signals[lead_index[leads.index(lead)]].label!r} and {sig.label!r} are both lead {lead}")
        leads.append(lead)
        lead_index.append(i)
    if not leads:
        n_ann = sum(s.is_annotation for s in header.signals)
        if n_ann and not dropped:
            raise ReadError(path, "no ECG signals; only annotations (read them with read_edf_annotations)")
        raise ReadError(path, f"no ECG signals (signals: {', '.join(s.label for s in header.signals)})")

    rates = {header.signals[i].samples_per_record for i in lead_index}
    if len(rates) > 1:
        listing = ", ".join(f"{lead}: {header.signals[i].samples_per_record}" for lead, i in zip(leads, lead_index, strict=True))
        raise ReadError(
            path,
            f"the ECG leads have different rates (samples per {header.record_duration:g} s data "
            f"record: {listing}); resample or select leads before reading",
        )
    if header.record_duration <= 0:
        raise ReadError(path, f"header field 'data record duration' is {header.record_duration:g} s, but the file has signals")
    spr = rates.pop()
    fs = _snap_rate(spr, header.record_duration_text, header.record_duration)

    records = _records(path, header)
    columns = _signal_columns(header)
    has_annotations = any(s.is_annotation for s in header.signals)
    starts: list[float | None] = [None] * header.n_records
    annotations: list[Annotation] = []
    if has_annotations:
        starts, annotations = _read_annotations(path, header, records)

    # Where each record's first sample lands on the output time axis.
    first = starts[0] if starts[0] is not None else 0.0
    if header.variant == "EDF+D":
        if any(s is None for s in starts):
            missing = next(r for r, s in enumerate(starts) if s is None)
            raise ReadError(path, f"EDF+D file: data record {missing} has no timekeeping annotation, so its time is unknown")
        offsets = np.array([round((s - first) * fs) for s in starts], dtype=np.int64)  # type: ignore[operator]
        steps = np.diff(offsets)
        if (steps < spr).any():
            r = int(np.argmax(steps < spr)) + 1
            raise ReadError(
                path,
                f"EDF+D file: data record {r} starts at {starts[r]:.6g} s, before the previous "
                f"record ends ({starts[r - 1]:.6g} s + {header.record_duration:g} s)",
            )
        n_samples = int(offsets[-1]) + spr
    else:
        offsets = np.arange(header.n_records, dtype=np.int64) * spr
        n_samples = header.n_records * spr
    check_declared_size(path, len(leads), n_samples)

    gaps = header.variant == "EDF+D" and n_samples != header.n_records * spr
    signal = np.full((len(leads), n_samples), np.nan, dtype=np.float32)
    for row, i in enumerate(lead_index):
        sig = header.signals[i]
        to_mv = _to_mv(path, sig)
        # physical = (digital - digital_min) * gain + physical_min, computed in float64
        values = (np.asarray(records[:, columns[i]], dtype=np.float64) * sig.gain + sig.offset) * to_mv
        if gaps:
            for r in range(header.n_records):
                signal[row, offsets[r] : offsets[r] + spr] = values[r]
        else:
            signal[row] = values.reshape(-1)
    del records

    start = header.start
    acquired = start + timedelta(seconds=first) if start is not None else None
    parsed = _header_metadata(header, start)
    extra: dict[str, Any] = {
        "edf_variant": header.variant,
        "record_duration_s": header.record_duration,
        "n_records": header.n_records,
        **parsed.pop("extra"),
    }
    if annotations:
        extra["annotations"] = [(round(onset - first, 9), duration, text) for onset, duration, text in annotations]
    if first:
        extra["start_offset_s"] = first
    if dropped:
        extra["dropped_channels"] = dropped
    if header.trailing_bytes:
        extra["trailing_bytes"] = header.trailing_bytes
    filters = {lead: header.signals[i].prefiltering for lead, i in zip(leads, lead_index, strict=True) if header.signals[i].prefiltering}
    if filters:
        extra["prefiltering"] = filters
    if gaps:
        extra["gaps_masked_samples"] = int(n_samples - header.n_records * spr)
    meta = Metadata(
        record_id=path.stem,
        source_format="edf",
        source_path=source,
        acquired=acquired,
        extra=extra,
        **parsed,
    )
    try:
        if gaps:
            return ECG.with_gaps(signal, fs, tuple(leads), meta)
        return ECG(signal, fs, tuple(leads), meta)
    except ValidationError as exc:  # implausible rate: report against the file
        raise ReadError(path, str(exc).removeprefix(f"{source}: ")) from None
