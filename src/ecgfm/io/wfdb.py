"""PhysioNet WFDB records: headers, signal formats 16/61/80/24/32/212 and 508/516/524 (FLAC).

The common single-segment layouts are decoded here with numpy (no per-sample Python), which is
several times faster than ``wfdb.rdrecord`` and lets every problem be reported precisely.
Multi-segment records, multi-frequency records and the rare formats (8, 310, 311, skewed
signals) go through the ``wfdb`` package. The PhysioNet/CinC 2020-2021 ``.mat`` + ``.hea``
records are WFDB records whose signal file is a MATLAB v4 matrix (format 16 with a 24-byte
offset), so they read here too, including their ``# Age/# Sex/# Dx`` header comments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.io.detect import companion_header
from ecgfm.leads import canonical_lead
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

DEFAULT_GAIN = 200.0  # ADC units per physical unit when a header gives gain 0 (WFDB convention)
MAX_HEADER_BYTES = 1 << 20

# Bytes per sample and the sample value WFDB reserves for "missing" in each aligned format.
_ALIGNED = {"16": ("<i2", -(2**15)), "61": (">i2", -(2**15)), "32": ("<i4", -(2**31)), "80": ("u1", -128)}
_FLAC = {"508": 8, "516": 16, "524": 24}
_MISSING = {"212": -2048, "24": -(2**23), "508": -128, "516": -(2**15), "524": -(2**23)}
_FAST_FORMATS = set(_ALIGNED) | set(_FLAC) | {"212", "24"}


_RECORD_LINE = re.compile(
    r"^(?P<name>[^\s/]+)(?:/(?P<n_seg>\d+))?\s+(?P<n_sig>\d+)"
    r"(?:\s+(?P<fs>[-\d.eE+]+)(?:/(?P<counter>[-\d.eE+]+)(?:\((?P<basecounter>[-\d.eE+]+)\))?)?"
    r"(?:\s+(?P<n_samples>\d+)(?:\s+(?P<time>[\d:.]+)(?:\s+(?P<date>[\d/]+))?)?)?)?\s*$"
)
_SIGNAL_LINE = re.compile(
    r"^(?P<file>\S+)\s+(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?"
    r"(?:\s+(?P<gain>[-\d.eE+]+)(?:\((?P<baseline>[-\d]+)\))?(?:/(?P<units>\S+))?"
    r"(?:\s+(?P<adc_res>\d+)(?:\s+(?P<adc_zero>[-\d]+)(?:\s+(?P<init>[-\d]+)"
    r"(?:\s+(?P<checksum>[-\d]+)(?:\s+(?P<block>\d+)(?:\s+(?P<description>.*))?)?)?)?)?)?)?\s*$"
)


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a WFDB header."""

    file: str  # signal file name, relative to the header's folder
    fmt: str  # WFDB storage format code, e.g. "16", "212", "516"
    samples_per_frame: int  # >1 only in multi-frequency records
    skew: int  # samples of skew (rare; handled by the wfdb fallback)
    byte_offset: int  # bytes to skip at the start of the file (24 for CinC MATLAB v4 files)
    gain: float  # ADC units per physical unit
    baseline: int  # ADC value of 0 physical units
    units: str  # physical units, e.g. "mV"
    adc_zero: int  # ADC value in the middle of the range
    description: str  # the signal name, e.g. "V1"


@dataclass(frozen=True)
class Header:
    """A parsed WFDB header (``.hea``)."""

    record: str  # record name (CinC headers sometimes write it with the ".mat" extension)
    n_signals: int
    fs: float  # samples per second per signal
    n_samples: int | None  # per signal; None when the header leaves it to the file size
    n_segments: int | None  # set for multi-segment records
    base_time: str | None
    base_date: str | None
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...] = field(default=())


def _number(value: str | None, default: float, what: str, path: Path) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ReadError(path, f"header field {what} is not a number: {value!r}") from None


def parse_header(text: str, path: Path) -> Header:
    """Parse the text of a WFDB header; ``path`` is used in error messages.

    Tolerates the PhysioNet/CinC quirk where the record line repeats the file name with its
    extension (``E00271.mat 12 500 5000``).
    """
    lines: list[str] = []
    comments: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        else:
            # A '#' after the fields starts an inline comment.
            lines.append(stripped.split("#", 1)[0].strip())
    if not lines:
        raise ReadError(path, "WFDB header has no record line")
    match = _RECORD_LINE.match(lines[0])
    if match is None:
        raise ReadError(path, f"WFDB record line is malformed: {lines[0]!r}")
    n_sig = int(match["n_sig"])
    n_seg = int(match["n_seg"]) if match["n_seg"] else None
    fs = _number(match["fs"], 250.0, "sampling frequency", path)
    n_samples = int(match["n_samples"]) if match["n_samples"] else None
    if n_seg is not None:
        return Header(match["name"], n_sig, fs, n_samples, n_seg, match["time"], match["date"], (), tuple(comments))
    if len(lines) - 1 < n_sig:
        raise ReadError(path, f"header declares {n_sig} signals but has {len(lines) - 1} signal lines")
    signals = []
    for i, line in enumerate(lines[1 : 1 + n_sig]):
        sm = _SIGNAL_LINE.match(line)
        if sm is None:
            raise ReadError(path, f"signal line {i + 1} is malformed: {line!r}")
        gain = _number(sm["gain"], DEFAULT_GAIN, f"gain of signal {i + 1}", path)
        adc_zero = int(sm["adc_zero"]) if sm["adc_zero"] else 0
        signals.append(
            SignalSpec(
                file=sm["file"],
                fmt=sm["fmt"],
                samples_per_frame=int(sm["spf"] or 1),
                skew=int(sm["skew"] or 0),
                byte_offset=int(sm["offset"] or 0),
                gain=gain if gain != 0 else DEFAULT_GAIN,
                baseline=int(sm["baseline"]) if sm["baseline"] else adc_zero,
                units=sm["units"] or "mV",
                adc_zero=adc_zero,
                description=(sm["description"] or "").strip(),
            )
        )
    return Header(match["name"], n_sig, fs, n_samples, None, match["time"], match["date"], tuple(signals), tuple(comments))


def resolve_header(path: Path) -> Path:
    """The ``.hea`` file for a record given by header, record name or signal file."""
    if path.suffix.lower() == ".hea" and path.is_file():
        return path
    if Path(str(path) + ".hea").is_file():
        return Path(str(path) + ".hea")
    companion = companion_header(path) if path.is_file() else None
    if companion is not None:
        return companion
    if path.is_file():
        return path  # a header with an unusual name; content detection said it is one
    raise ReadError(path, "no WFDB header (.hea) found for this record")


def read_header(path: str | Path) -> Header:
    """Read and parse the header of a WFDB record."""
    hea = resolve_header(Path(path))
    with open(hea, "rb") as fh:
        raw = fh.read(MAX_HEADER_BYTES + 1)
    if len(raw) > MAX_HEADER_BYTES:
        raise ReadError(hea, "WFDB header is larger than 1 MiB; not a header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_header(text, hea)


# -- signal decoding -------------------------------------------------------------------------


def _decode_212(raw: np.ndarray, n_values: int) -> np.ndarray:
    """Unpack format 212: two 12-bit two's-complement samples in every three bytes."""
    n_pairs = (n_values + 1) // 2
    b = raw[: n_pairs * 3].reshape(-1, 3).astype(np.int16)
    out = np.empty(n_pairs * 2, np.int16)
    out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out[out > 2047] -= 4096
    return out[:n_values]


def _decode_24(raw: np.ndarray, n_values: int) -> np.ndarray:
    b = raw[: n_values * 3].reshape(-1, 3).astype(np.int32)
    out = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    out[out >= 2**23] -= 2**24
    return out


def _bytes_needed(fmt: str, n_values: int) -> int:
    if fmt == "212":
        return (n_values + 1) // 2 * 3
    if fmt == "24":
        return n_values * 3
    return n_values * np.dtype(_ALIGNED[fmt][0]).itemsize


def _read_file_group(file: Path, fmt: str, offset: int, n_channels: int, n_samples: int | None, hea: Path) -> np.ndarray:
    """Digital samples ``[samples, channels]`` of one signal file holding ``n_channels``."""
    if not file.is_file():
        raise ReadError(hea, f"signal file {file.name} is missing")
    if fmt in _FLAC:
        return _read_flac(file, fmt, n_channels, n_samples, hea)
    size = file.stat().st_size - offset
    if n_samples is None:
        per_frame = _bytes_needed(fmt, n_channels) if fmt != "212" else 1.5 * n_channels
        n_samples = int(size // per_frame)
    check_declared_size(hea, n_channels, n_samples)
    n_values = n_samples * n_channels
    need = _bytes_needed(fmt, n_values)
    if size < need:
        raise ReadError(
            hea,
            f"header declares {n_samples} samples x {n_channels} signals ({need:,} bytes) but "
            f"{file.name} holds {max(size, 0):,} bytes after its {offset}-byte offset: the file is truncated",
        )
    if fmt in _ALIGNED:
        dtype, _ = _ALIGNED[fmt]
        data = np.fromfile(file, dtype=dtype, count=n_values, offset=offset)
        if fmt == "80":
            data = data.astype(np.int16) - 128
    else:
        raw = np.fromfile(file, dtype=np.uint8, count=need, offset=offset)
        data = _decode_212(raw, n_values) if fmt == "212" else _decode_24(raw, n_values)
    return data.reshape(n_samples, n_channels)


def _read_flac(file: Path, fmt: str, n_channels: int, n_samples: int | None, hea: Path) -> np.ndarray:
    import soundfile

    bits = _FLAC[fmt]
    try:
        with soundfile.SoundFile(file) as sf:
            if sf.channels != n_channels:
                raise ReadError(hea, f"{file.name} holds {sf.channels} FLAC channels, header declares {n_channels}")
            frames = sf.frames
            if n_samples is not None and frames < n_samples:
                raise ReadError(hea, f"header declares {n_samples} samples but {file.name} holds {frames}: truncated")
            count = frames if n_samples is None else n_samples
            check_declared_size(hea, n_channels, count)
            data = sf.read(count, dtype="int32" if bits == 24 else "int16", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ReadError(hea, f"{file.name} is not a readable FLAC stream ({exc})") from None
    if bits == 8:
        data = np.right_shift(data, 8)
    elif bits == 24:
        data = np.right_shift(data, 8)
    if data.shape[0] != count:
        raise ReadError(hea, f"{file.name} decoded to {data.shape[0]} samples, expected {count}: corrupt FLAC")
    return data


def _fast_path_ok(header: Header) -> bool:
    return (
        header.n_segments is None
        and all(s.fmt in _FAST_FORMATS and s.samples_per_frame == 1 and s.skew == 0 for s in header.signals)
        and all(
            len({(s.fmt, s.byte_offset) for s in header.signals if s.file == f}) == 1
            for f in {s.file for s in header.signals}
        )
    )


def _physical_fast(header: Header, hea: Path) -> tuple[np.ndarray, np.ndarray]:
    """Physical signal ``[signals, samples]`` in header units, and the observed-sample mask."""
    files: dict[str, list[int]] = {}
    for i, spec in enumerate(header.signals):
        files.setdefault(spec.file, []).append(i)
    n = header.n_samples
    blocks: dict[int, np.ndarray] = {}
    for name, idx in files.items():
        spec = header.signals[idx[0]]
        digital = _read_file_group(hea.parent / name, spec.fmt, spec.byte_offset, len(idx), n, hea)
        if n is None:
            n = digital.shape[0]
        elif digital.shape[0] != n:
            raise ReadError(hea, f"{name} holds {digital.shape[0]} samples per signal, others {n}")
        for column, i in enumerate(idx):
            blocks[i] = digital[:, column]
    if len(files) == 1 and list(files.values())[0] == list(range(header.n_signals)):
        digital = digital.T  # one file in header order (the usual case): a view, no copy
    else:
        digital = np.stack([blocks[i] for i in range(header.n_signals)])
    missing_value = np.array([_MISSING.get(s.fmt, _ALIGNED.get(s.fmt, (None, None))[1]) for s in header.signals])
    observed = digital != missing_value[:, None]
    gain = np.array([s.gain for s in header.signals], np.float64)[:, None]
    baseline = np.array([s.baseline for s in header.signals], np.float64)[:, None]
    physical = np.subtract(digital, baseline, order="C")
    physical /= gain
    return physical, observed


def _physical_wfdb(header: Header, hea: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str], float]:
    """Fallback through the wfdb package for the layouts the fast path does not decode."""
    import wfdb

    record_path = str(hea.with_suffix(""))
    try:
        rec = wfdb.rdrecord(record_path, physical=True, smooth_frames=True)
    except Exception as exc:  # wfdb raises bare Exceptions and ValueErrors for bad files
        raise ReadError(hea, f"wfdb could not read the record: {exc}") from None
    if rec.p_signal is None:
        raise ReadError(hea, "record has no signals")
    check_declared_size(hea, rec.p_signal.shape[1], rec.p_signal.shape[0])
    signal = rec.p_signal.T
    return signal, np.isfinite(signal), list(rec.sig_name), list(rec.units), float(rec.fs)


# -- metadata ----------------------------------------------------------------------------


def _parse_comments(comments: Sequence[str]) -> dict[str, Any]:
    """Age, sex, diagnoses and codes from the header comment conventions of PhysioNet databases.

    CinC 2020/2021: ``Age: 78``, ``Sex: Male``, ``Dx: 164889003,...``.
    LUDB: ``<age>: 51``, ``<sex>: F``, ``<diagnoses>:`` followed by one statement per line.
    MIT-BIH: a first comment ``75 F 1011 654 x1`` (age, sex, ...).
    """
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    diagnoses: list[str] = []
    in_diagnoses = False
    for i, comment in enumerate(comments):
        key_value = re.match(r"^<?([A-Za-z ]+)>?\s*:\s*(.*)$", comment)
        if key_value and key_value.group(1).strip().lower() in {"age", "sex", "dx", "rx", "hx", "sx", "diagnoses"}:
            key, value = key_value.group(1).strip().lower(), key_value.group(2).strip()
            in_diagnoses = key == "diagnoses"
            if key == "age":
                out["age"] = _age(value)
            elif key == "sex":
                out["sex"] = _sex(value)
            elif key == "dx":
                extra["dx"] = [c.strip() for c in value.split(",") if c.strip()]
            elif key in ("rx", "hx", "sx") and value.lower() not in ("unknown", ""):
                extra[key] = value
            continue
        if in_diagnoses:
            diagnoses.append(comment.rstrip())
            continue
        mitbih = re.match(r"^(\d{1,3}|\?)\s+([MF?])\b", comment) if i == 0 else None
        if mitbih:
            out["age"] = _age(mitbih.group(1))
            out["sex"] = _sex(mitbih.group(2))
        extra.setdefault("comments", []).append(comment)
    if diagnoses:
        out["interpretation"] = " ".join(d.strip() for d in diagnoses)
    out["extra"] = extra
    return out


def _age(value: str) -> float | None:
    try:
        age = float(value)
    except ValueError:
        return None
    return age if 0 <= age <= 150 else None


def _sex(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("m", "male", "man"):
        return "M"
    if v in ("f", "female", "woman"):
        return "F"
    return None


def _acquired(header: Header) -> datetime | None:
    if not header.base_date:
        return None
    try:
        d, m, y = (int(x) for x in header.base_date.split("/"))
        t = time()
        if header.base_time:
            parts = header.base_time.split(":")
            hms = [float(p) for p in parts]
            while len(hms) < 3:
                hms.insert(0, 0.0)
            t = time(int(hms[0]), int(hms[1]), int(hms[2]), int(round((hms[2] % 1) * 1e6)) % 1_000_000)
        return datetime.combine(date(y, m, d), t)
    except (ValueError, TypeError):
        return None


# -- lead names ------------------------------------------------------------------------------


def lead_names_for(channel_names: Sequence[str], units: Sequence[str], source: str, leads: Sequence[str] | None) -> tuple[list[str | None], dict[str, Any]]:
    """Canonical lead name per channel (None for a non-ECG channel to drop), and notes.

    A single channel named ``ECG`` (or unnamed) is read as lead I, as single-lead recorders
    (AliveCor, watches) record lead I; the assumption is noted in ``meta.extra``.
    """
    notes: dict[str, Any] = {}
    if leads is not None:
        if len(leads) != len(channel_names):
            raise ReadError(source, f"leads= names {len(leads)} leads, the file has {len(channel_names)} channels")
        return [canonical_lead(name, source=source) for name in leads], notes
    if len(channel_names) == 1 and channel_names[0].strip().upper() in ("", "ECG", "EKG", "SIGNAL"):
        notes["lead_assumed"] = (
            f"single channel named {channel_names[0]!r} read as lead I (single-lead recorders record "
            "lead I); pass leads=[...] to name it otherwise"
        )
        return ["I"], notes
    names: list[str | None] = []
    for name, unit in zip(channel_names, units):
        if mv_per_unit(unit) is None:
            names.append(None)
            notes.setdefault("dropped_channels", []).append(f"{name} ({unit})")
            continue
        try:
            names.append(canonical_lead(name, source=source))
        except ValidationError as exc:
            raise ReadError(source, str(exc).removeprefix(f"{source}: ") + "; pass leads=[...] to name the channels") from None
    return names, notes


def _to_mv(unit: str, source: str) -> float:
    factor = mv_per_unit(unit)
    if factor is None:
        raise ReadError(source, f"unknown physical unit {unit!r} for an ECG lead")
    return factor


# -- the reader ------------------------------------------------------------------------------


def read_wfdb(path: Path, *, leads: Sequence[str] | None = None) -> ECG:
    """Read a WFDB record into an :class:`~ecgfm.ECG` (mV, canonical lead names).

    Args:
        path: the header (``x.hea``), the record name (``x``) or a signal file with its header
            beside it (``x.dat``, ``x.mat``).
        leads: names for the channels, in file order, overriding the header's names.

    Returns:
        The record. Samples stored as WFDB's "missing" value become masked gaps. Non-voltage
        channels (blood pressure, respiration) are dropped and listed in
        ``meta.extra["dropped_channels"]``. Header comments fill age, sex, ``extra["dx"]``
        (CinC SNOMED codes) and ``interpretation`` (LUDB diagnoses).
    """
    hea = resolve_header(Path(path))
    header = read_header(hea)
    if header.n_signals == 0:
        raise ReadError(hea, "header declares no signals")
    if header.n_samples is not None:
        check_declared_size(hea, header.n_signals, header.n_samples)
    if _fast_path_ok(header):
        physical, observed = _physical_fast(header, hea)
        names = [s.description for s in header.signals]
        units = [s.units for s in header.signals]
        fs = header.fs
    else:
        physical, observed, names, units, fs = _physical_wfdb(header, hea)
    lead_names, notes = lead_names_for(names, units, str(hea), leads)
    keep = [i for i, name in enumerate(lead_names) if name is not None]
    if not keep:
        raise ReadError(hea, f"no ECG channels (channels: {', '.join(names)})")
    scale = np.array([_to_mv(units[i], str(hea)) for i in keep])[:, None]
    everything = len(keep) == len(lead_names)
    signal = physical if everything else physical[keep]
    signal = (signal if np.all(scale == 1.0) else signal * scale).astype(np.float32)
    mask = observed if everything else observed[keep]
    parsed = _parse_comments(header.comments)
    extra = {**parsed.pop("extra"), **notes}
    meta = Metadata(
        record_id=Path(header.record).stem if header.record.endswith(".mat") else header.record,
        source_format="wfdb",
        source_path=str(hea),
        acquired=_acquired(header),
        extra=extra,
        **parsed,
    )
    ecg_leads = tuple(lead_names[i] for i in keep)
    renamed = {names[i]: lead_names[i] for i in keep if names[i].upper() != str(lead_names[i]).upper()}
    if renamed:
        extra["channel_names"] = renamed  # e.g. MIT-BIH's modified lead MLII read as II
    if mask.all():
        return ECG(signal, fs, ecg_leads, meta)
    return ECG(np.where(mask, signal, 0.0), fs, ecg_leads, meta, mask)


# -- annotations ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Annotations:
    """WFDB annotations of one record: beats, rhythm changes or wave boundaries.

    Attributes:
        sample: int64 ``[n]`` sample index of each annotation.
        symbol: ``[n]`` annotation symbols (``N``, ``V``, ``+``, ``(``, ``p``, ``)`` ...).
        aux_note: ``[n]`` auxiliary text (rhythm changes such as ``(AFIB``).
        fs: sampling rate the sample indices refer to.
        extension: the annotator's file extension (``atr``, ``i``, ``v1`` ...).
    """

    sample: np.ndarray
    symbol: tuple[str, ...]
    aux_note: tuple[str, ...]
    fs: float
    extension: str

    def __len__(self) -> int:
        return len(self.symbol)

    def rhythm_episodes(self, n_samples: int | None = None) -> list[tuple[str, int, int]]:
        """Rhythm episodes ``(label, start, stop)`` from ``+`` annotations with ``(LABEL`` notes."""
        marks = [(int(s), note.strip("( \x00")) for s, sym, note in zip(self.sample, self.symbol, self.aux_note) if sym == "+" and note.startswith("(")]
        end = n_samples if n_samples is not None else (int(self.sample[-1]) + 1 if len(self.sample) else 0)
        return [(label, start, marks[i + 1][0] if i + 1 < len(marks) else end) for i, (start, label) in enumerate(marks)]

    def waves(self) -> list[tuple[str, int, int, int]]:
        """Delineated waves ``(kind, onset, peak, offset)`` from ``( peak )`` triplets (LUDB).

        ``kind`` is ``"P"``, ``"QRS"`` or ``"T"`` (from the peak symbols ``p``, ``N``, ``t``).
        """
        kinds = {"p": "P", "N": "QRS", "t": "T"}
        out = []
        sym, samp = self.symbol, self.sample
        for i in range(1, len(sym) - 1):
            if sym[i] in kinds and sym[i - 1] == "(" and sym[i + 1] == ")":
                out.append((kinds[sym[i]], int(samp[i - 1]), int(samp[i]), int(samp[i + 1])))
        return out


def read_annotations(path: str | Path, extension: str = "atr") -> Annotations:
    """Read a WFDB annotation file (``<record>.<extension>``).

    Args:
        path: the record (header, record name or signal file).
        extension: the annotator: ``atr`` for reference beats and rhythm (MIT-BIH, CPSC 2021),
            a lead name such as ``i`` or ``v1`` for LUDB's per-lead delineation.
    """
    import wfdb

    hea = resolve_header(Path(path))
    record = hea.with_suffix("")
    ann_file = Path(f"{record}.{extension}")
    if not ann_file.is_file():
        raise ReadError(ann_file, "annotation file not found")
    try:
        ann = wfdb.rdann(str(record), extension)
    except Exception as exc:
        raise ReadError(ann_file, f"corrupt annotation file: {exc}") from None
    fs = float(ann.fs) if ann.fs else read_header(hea).fs
    aux = tuple(ann.aux_note) if ann.aux_note is not None else ("",) * len(ann.symbol)
    return Annotations(np.asarray(ann.sample, np.int64), tuple(ann.symbol), aux, fs, extension)


def read_delineation(path: str | Path) -> dict[str, Annotations]:
    """LUDB-style per-lead wave delineation: ``{canonical lead: Annotations}`` for each lead file."""
    hea = resolve_header(Path(path))
    header = read_header(hea)
    out = {}
    for spec in header.signals:
        ext = spec.description.lower()
        if Path(f"{hea.with_suffix('')}.{ext}").is_file():
            out[canonical_lead(spec.description, source=str(hea))] = read_annotations(hea, ext)
    if not out:
        raise ReadError(hea, "no per-lead delineation files (<record>.i, .ii, ... .v6) beside the record")
    return out
