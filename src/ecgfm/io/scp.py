"""SCP-ECG reader (EN 1064 / ISO 11073-91064).

An SCP-ECG file is a CRC, a length, then numbered sections found through the pointer table in
section 0:

- 1: patient and acquisition tags (id, age, sex, date/time, device)
- 2: Huffman tables (absent: samples are raw int16; 19999: the standard's default table)
- 3: lead definitions (lead codes, first/last sample of each lead, flags)
- 4: QRS locations (where a reference beat was subtracted from the rhythm)
- 5: reference beat (median) data
- 6: rhythm data (amplitude multiplier in nV, sample interval in µs, difference coding)
- 8 / 11: interpretive statements (free text / universal statement codes)

Rhythm samples are rebuilt by Huffman decoding, undoing first or second differences, and, where
the file subtracted the reference beat around each QRS complex, adding it back. Bimodal
compression (a lower sampling rate outside the QRS complexes) is refused with a clear error:
no file available to us uses it, so its reconstruction could not be checked.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError
from ecgfm.io import _huffman
from ecgfm.io._limits import check_declared_size
from ecgfm.record import ECG, MAX_FS, MIN_FS, Metadata

SECTION_HEADER = 16  # CRC, id, length, section version, protocol version, 6 reserved bytes
FILE_HEADER = 6  # CRC, length
WAVEFORMS = ("rhythm", "median")
# The 16-bit per-lead byte count in sections 5/6 tops out here; some writers (Contec) store only
# what fits and leave the count saturated, so the lead is shorter than section 3 declares.
SATURATED_LENGTHS = (0xFFFE, 0xFFFF)

# fmt: off
# Lead codes of section 3 (EN 1064 table 22, extended in ISO 11073-91064) that are ecgfm leads.
LEAD_CODES: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 66: "V8", 67: "V9",
}
# Names of the other codes, for error messages only.
_OTHER_LEAD_NAMES: dict[int, str] = {
    0: "unspecified", 10: "V2R", 15: "V7R", 19: "CC5", 20: "CM5", 21: "left arm",
    22: "right arm", 23: "left leg", 24: "Frank I", 25: "Frank E", 26: "Frank C",
    27: "Frank A", 28: "Frank M", 29: "Frank F", 30: "Frank H", 65: "-aVR", 68: "V8R",
    69: "V9R", 70: "Nehb D", 71: "Nehb A", 72: "Nehb J", 73: "defibrillator lead",
    74: "external pacing lead", 75: "A1", 76: "A2", 77: "A3", 78: "A4",
}
# fmt: on
_AGE_UNIT_YEARS = {1: 1.0, 2: 1 / 12, 3: 7 / 365.25, 4: 1 / 365.25, 5: 1 / 8766}
_SEX = {1: "M", 2: "F"}
_CONFIRMATION = {0: "original", 1: "confirmed", 2: "overread"}


def _lead_name(code: int) -> str:
    if 31 <= code <= 60 or 79 <= code <= 85:
        return "calibration signal"
    return _OTHER_LEAD_NAMES.get(code, "not in the SCP-ECG lead table")


def _crc(data: bytes | memoryview) -> int:
    # CRC-CCITT as SCP-ECG specifies it (polynomial 0x1021, initial 0xFFFF, no reflection):
    # exactly what binascii.crc_hqx computes, in C.
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class _Leads:
    """Section 3."""

    codes: tuple[int, ...]
    starts: tuple[int, ...]  # 1-based first sample of each lead
    ends: tuple[int, ...]  # 1-based last sample, inclusive
    reference_subtracted: bool
    simultaneous: bool


@dataclass(frozen=True)
class _Samples:
    """Section 5 or 6 before decoding: the coded bytes of each lead and how to rebuild them."""

    avm_nv: int  # amplitude value multiplier: nV per unit
    interval_us: int  # sample interval
    difference: int  # 0 none, 1 first, 2 second differences
    bimodal: bool  # section 6 only
    data: tuple[bytes, ...]  # per-lead coded bytes
    lengths: tuple[int, ...]  # per-lead byte counts as declared


class _SCPFile:
    """The sections of one SCP-ECG file, with every pointer and CRC checked."""

    def __init__(self, path: Path, raw: bytes, check_crc: bool) -> None:
        self.path = path
        if len(raw) < FILE_HEADER + SECTION_HEADER:
            raise ReadError(path, f"file is {len(raw)} bytes, too short for an SCP-ECG record")
        crc, length = struct.unpack_from("<HI", raw, 0)
        if length > len(raw):
            raise ReadError(
                path, f"truncated: the record declares {length} bytes, the file has {len(raw)}"
            )
        if length < FILE_HEADER + SECTION_HEADER:
            raise ReadError(path, f"record length {length} is too short to hold section 0")
        self.raw = memoryview(raw)[:length]
        self.sections: dict[int, memoryview] = {}
        self.protocol = 0  # protocol version x 10 (13 = 1.3, 20 = 2.0, 30 = 3.0), from section 0
        self._read_section_table(check_crc)
        # Sections first, so that a corrupt byte is reported against the section holding it.
        if check_crc and _crc(self.raw[2:]) != crc:
            raise ReadError(
                path,
                f"file CRC mismatch (stored {crc:#06x}, computed {_crc(self.raw[2:]):#06x}; "
                "check_crc=False reads it anyway)",
            )

    def _section_at(self, sid: int, offset: int, length: int, check_crc: bool) -> memoryview:
        total = len(self.raw)
        if offset < 0 or length < SECTION_HEADER or offset + length > total:
            raise ReadError(
                self.path,
                f"section {sid} (bytes {offset}-{offset + length}) lies outside the "
                f"{total}-byte record",
            )
        crc, hid, hlen, version, protocol = struct.unpack_from("<HHIBB", self.raw, offset)
        if hid != sid:
            raise ReadError(
                self.path,
                f"section 0 points to section {sid} at byte {offset}, which holds section {hid}",
            )
        if hlen != length:
            raise ReadError(
                self.path, f"section {sid} header says {hlen} bytes, section 0 says {length}"
            )
        if check_crc:
            computed = _crc(self.raw[offset + 2 : offset + length])
            if computed != crc:
                raise ReadError(
                    self.path,
                    f"section {sid} CRC mismatch (stored {crc:#06x}, computed {computed:#06x}; "
                    "check_crc=False reads it anyway)",
                )
        if sid == 0:
            self.protocol = protocol or version
        return self.raw[offset + SECTION_HEADER : offset + length]

    def _read_section_table(self, check_crc: bool) -> None:
        (length0,) = struct.unpack_from("<I", self.raw, FILE_HEADER + 4)
        body0 = self._section_at(0, FILE_HEADER, length0, check_crc)
        for entry in range(len(body0) // 10):
            sid, length, index = struct.unpack_from("<HII", body0, 10 * entry)
            if length == 0 or sid == 0:
                continue  # absent section (pointer kept with length 0, as the standard asks)
            if sid in self.sections:
                raise ReadError(self.path, f"section 0 lists section {sid} twice")
            # Pointers are 1-based byte positions.
            self.sections[sid] = self._section_at(sid, index - 1, length, check_crc)

    def require(self, sid: int, what: str) -> memoryview:
        if sid not in self.sections:
            raise ReadError(self.path, f"no section {sid} ({what}) in the record")
        return self.sections[sid]


def _text(value: bytes | memoryview) -> str:
    raw = bytes(value).split(b"\x00", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # SCP-ECG before version 3 uses ISO 8859 (part chosen by the language code).
        text = raw.decode("latin-1")
    # Some writers put length bytes or other control codes into text fields.
    return "".join(ch for ch in text if ch.isprintable()).strip()


def _date(value: bytes | memoryview) -> date | None:
    if len(value) < 4:
        return None
    year, month, day = struct.unpack_from("<HBB", value, 0)
    try:
        return date(year, month, day) if year else None
    except ValueError:
        return None


def _parse_tags(path: Path, body: memoryview) -> dict[int, list[memoryview]]:
    tags: dict[int, list[memoryview]] = {}
    pos = 0
    while pos + 3 <= len(body):
        tag, length = struct.unpack_from("<BH", body, pos)
        pos += 3
        if tag == 255:
            break
        if pos + length > len(body):
            raise ReadError(
                path,
                f"section 1: tag {tag} declares {length} bytes, {len(body) - pos} left in the section",
            )
        tags.setdefault(tag, []).append(body[pos : pos + length])
        pos += length
    return tags


def _demographics(path: Path, body: memoryview | None) -> dict[str, Any]:
    """Section 1 -> Metadata keyword arguments (names of the patient are left out on purpose)."""
    if body is None:
        return {"extra": {}}
    tags = _parse_tags(path, body)

    def first(tag: int) -> memoryview | None:
        return tags[tag][0] if tag in tags else None

    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if (v := first(2)) is not None and _text(v):
        out["patient_id"] = _text(v)
    if (v := first(31)) is not None and _text(v):
        out["record_id"] = _text(v)

    acquired_date = _date(first(25)) if first(25) is not None else None
    if acquired_date is not None:
        clock = time()
        if (v := first(26)) is not None and len(v) >= 3:
            try:
                clock = time(v[0], v[1], v[2])
            except ValueError:
                pass
        out["acquired"] = datetime.combine(acquired_date, clock)
    if (v := first(34)) is not None and len(v) >= 2:
        (offset,) = struct.unpack_from("<h", v, 0)
        if offset != 0x7FFF:
            extra["utc_offset_minutes"] = offset

    age = None
    if (v := first(4)) is not None and len(v) >= 3:
        value, unit = struct.unpack_from("<HB", v, 0)
        if unit in _AGE_UNIT_YEARS:
            age = value * _AGE_UNIT_YEARS[unit]
    if age is None and first(5) is not None and acquired_date is not None:
        born = _date(first(5))
        if born is not None and born <= acquired_date:
            age = (
                acquired_date.year
                - born.year
                - ((acquired_date.month, acquired_date.day) < (born.month, born.day))
            )
            extra["age_from_date_of_birth"] = True
    if age is not None and 0 <= age <= 150:
        out["age"] = float(age)

    if (v := first(8)) is not None and len(v) >= 1 and v[0] in _SEX:
        out["sex"] = _SEX[v[0]]

    if (v := first(14)) is not None and len(v) >= 14:
        model = _text(v[8:14])
        # Byte 35 is the length of the analysing program revision that follows; then come the
        # serial number, system software, SCP implementation software and manufacturer trade
        # name, each NUL-terminated.
        strings = []
        if len(v) > 36:
            rest = bytes(v[36 + v[35] :])
            strings = [_text(s) for s in rest.split(b"\x00")]
        trade = strings[3] if len(strings) > 3 else ""
        if model:
            out["device"] = model
        elif trade:
            out["device"] = trade
        if trade:
            extra["manufacturer"] = trade
    if (v := first(27)) is not None and len(v) >= 2:
        extra["highpass_hz"] = struct.unpack_from("<H", v, 0)[0] / 100  # stored in 0.01 Hz
    if (v := first(28)) is not None and len(v) >= 2:
        extra["lowpass_hz"] = float(struct.unpack_from("<H", v, 0)[0])
    texts = [_text(v) for v in tags.get(30, []) if _text(v)]
    if texts:
        extra["free_text"] = "\n".join(texts)
    out["extra"] = extra
    return out


def _lead_definitions(path: Path, body: memoryview) -> _Leads:
    if len(body) < 2:
        raise ReadError(path, "section 3 is too short to hold the number of leads")
    n, flags = body[0], body[1]
    if n == 0:
        raise ReadError(path, "section 3 declares 0 leads")
    if len(body) < 2 + 9 * n:
        raise ReadError(
            path, f"section 3 declares {n} leads ({9 * n} bytes), holds {len(body) - 2} bytes"
        )
    starts, ends, codes = [], [], []
    for i in range(n):
        start, end, code = struct.unpack_from("<IIB", body, 2 + 9 * i)
        if start == 0:
            # Sample numbers are 1-based; some writers (ECG Viewer's demo.scp) number from 0 with
            # an exclusive end, which covers the same samples as 1..end.
            start = 1
        if end < start:
            raise ReadError(path, f"section 3: lead {i + 1} spans samples {start}-{end}")
        starts.append(start)
        ends.append(end)
        codes.append(code)
    return _Leads(tuple(codes), tuple(starts), tuple(ends), bool(flags & 0x01), bool(flags & 0x04))


def _sample_section(path: Path, sid: int, body: memoryview, n_leads: int) -> _Samples:
    head = 6 + 2 * n_leads
    if len(body) < head:
        raise ReadError(
            path, f"section {sid} is {len(body)} bytes, too short for {n_leads} lead lengths"
        )
    avm, interval, difference, bimodal = struct.unpack_from("<HHBB", body, 0)
    lengths = struct.unpack_from(f"<{n_leads}H", body, 6)
    if head + sum(lengths) > len(body):
        raise ReadError(
            path,
            f"section {sid}: lead data lengths add up to {sum(lengths)} bytes, the section holds "
            f"{len(body) - head}",
        )
    if avm == 0:
        raise ReadError(path, f"section {sid}: amplitude value multiplier is 0 nV")
    if not MIN_FS <= 1e6 / max(interval, 1) <= MAX_FS:
        raise ReadError(
            path,
            f"section {sid}: sample interval of {interval} µs is not a plausible ECG rate "
            f"({MIN_FS:g}-{MAX_FS:g} Hz)",
        )
    if difference not in (0, 1, 2):
        raise ReadError(
            path, f"section {sid}: unknown difference encoding {difference} (expected 0, 1 or 2)"
        )
    data, pos = [], head
    for length in lengths:
        data.append(bytes(body[pos : pos + length]))
        pos += length
    return _Samples(
        avm, interval, difference, sid == 6 and bimodal != 0, tuple(data), tuple(lengths)
    )


def _undo_differences(values: np.ndarray, difference: int) -> np.ndarray:
    """Rebuild samples from first or second differences (the first 1 or 2 values are samples)."""
    v = values.astype(np.int64)
    if difference == 1:
        v = np.cumsum(v)
    elif difference == 2 and len(v) > 1:
        # x[n] = d[n] + 2 x[n-1] - x[n-2]: the slope x[n] - x[n-1] accumulates d[n].
        slope = np.cumsum(np.concatenate([[v[1] - v[0]], v[2:]]))
        v = np.concatenate([[v[0]], v[0] + np.cumsum(slope)])
    # Encoders work in 16-bit arithmetic (samples are int16), so differences may have wrapped.
    return (v + 32768) % 65536 - 32768


def _decode_leads(
    path: Path,
    sid: int,
    section: _Samples,
    counts: list[int],
    tables: tuple[Any, ...] | None,
    names: list[str],
) -> tuple[list[np.ndarray], bool]:
    """Decode every lead of section 5/6; returns the samples and whether any lead came up short
    because its byte count was saturated at the 16-bit limit."""
    leads, saturated = [], False
    for i, (coded, n) in enumerate(zip(section.data, counts, strict=True)):
        try:
            if tables is None:
                stored = min(n, len(coded) // 2)
                values = np.frombuffer(coded[: 2 * stored], dtype="<i2").astype(np.int64)
            else:
                values = _huffman.decode(coded, n, tables)
        except _huffman.HuffmanError as exc:
            raise ReadError(path, f"section {sid}, lead {names[i]}: {exc}") from None
        if len(values) < n:
            if section.lengths[i] not in SATURATED_LENGTHS or len(values) == 0:
                raise ReadError(
                    path,
                    f"section {sid}, lead {names[i]}: {section.lengths[i]} data bytes hold "
                    f"{len(values)} samples, section 3 declares {n}",
                )
            saturated = True
        leads.append(_undo_differences(values, section.difference))
    return leads, saturated


def _qrs_zones(path: Path, body: memoryview) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """Section 4: reference beat length (ms), its fiducial sample, and (type, start, fiducial, end)
    of every QRS complex (1-based rhythm sample numbers)."""
    if len(body) < 6:
        raise ReadError(path, "section 4 is too short")
    length_ms, fiducial, n_qrs = struct.unpack_from("<HHH", body, 0)
    if 6 + 14 * n_qrs > len(body):
        raise ReadError(
            path, f"section 4 declares {n_qrs} QRS complexes, holds {(len(body) - 6) // 14}"
        )
    zones = [struct.unpack_from("<HIII", body, 6 + 14 * q) for q in range(n_qrs)]
    return length_ms, fiducial, zones


def _interpretation(sections: dict[int, memoryview]) -> tuple[str | None, str | None]:
    """Sections 8 (free text) and 11 (universal statements) -> (text, confirmation status)."""
    lines: list[str] = []
    status = None
    for sid in (8, 11):
        body = sections.get(sid)
        if body is None or len(body) < 9:
            continue
        status = status or _CONFIRMATION.get(body[0])
        n, pos = body[8], 9
        for _ in range(n):
            if pos + 3 > len(body):
                break
            length = struct.unpack_from("<H", body, pos + 1)[0]
            statement = bytes(body[pos + 3 : pos + 3 + length])
            pos += 3 + length
            if sid == 11 and statement:
                kind, statement = statement[0], statement[1:]
                if kind == 3:
                    continue  # statement logic, not a statement
            parts = [_text(p) for p in statement.split(b"\x00")]
            text = "; ".join(p for p in parts if p)
            if text and text not in lines:
                lines.append(text)
    return ("\n".join(lines) or None), status


def read_scp(path: Path, *, waveform: str = "rhythm", check_crc: bool = True) -> ECG:
    """Read an SCP-ECG file (EN 1064 / ISO 11073-91064).

    Args:
        path: the ``.scp`` / ``.ecg`` file.
        waveform: ``"rhythm"`` for the recording (section 6), ``"median"`` for the reference
            beat (section 5) where the file carries one.
        check_crc: verify the CRC-CCITT of the file and of every section (on by default).

    Returns:
        The record, float32 ``[leads, samples]`` in mV at ``1e6 / sample interval`` Hz, leads in
        file order under canonical names (files storing only I, II, V1-V6 keep those 8). Leads
        recorded over different sample ranges (non-simultaneous) are masked outside their range.
        ``meta.extra`` holds the coding details (``amplitude_multiplier_nv``,
        ``sample_interval_us``, ``difference_encoding``, ``huffman``, ...) and, where a writer
        stored fewer samples than section 3 declares, ``declared_samples``.

    Raises:
        ReadError: truncated file, pointer or byte count past the end, CRC mismatch (naming the
            section), unknown lead code, malformed Huffman data, or bimodal compression.

    >>> ecg = read_scp(Path("Example.scp"))  # doctest: +SKIP
    >>> ecg.fs, ecg.leads[:3]  # doctest: +SKIP
    (500.0, ('I', 'II', 'V1'))
    """
    path = Path(path)
    if waveform not in WAVEFORMS:
        raise ReadError(path, f"waveform must be one of {', '.join(WAVEFORMS)}, got {waveform!r}")
    scp = _SCPFile(path, path.read_bytes(), check_crc)
    leads = _lead_definitions(path, scp.require(3, "lead definitions"))
    names = _lead_names(path, leads)
    tables, huffman = _tables(path, scp)

    demo = _demographics(path, scp.sections.get(1))
    extra: dict[str, Any] = dict(demo.pop("extra"))
    interpretation, status = _interpretation(scp.sections)
    if status is not None:
        extra["interpretation_status"] = status

    if waveform == "median":
        sampled, beats, _, _ = _reference_beat(path, scp, names, tables)
        signal = np.stack(beats).astype(np.float64) * (sampled.avm_nv * 1e-6)
    else:
        sampled, signal, declared = _rhythm(path, scp, leads, names, tables)
        if declared is not None:
            extra["declared_samples"] = declared
        extra["reference_beat_subtraction"] = leads.reference_subtracted

    extra.update(
        scp_protocol_version=scp.protocol / 10,
        amplitude_multiplier_nv=sampled.avm_nv,
        sample_interval_us=sampled.interval_us,
        difference_encoding=sampled.difference,
        huffman=huffman,
        leads_simultaneous=leads.simultaneous,
        lead_codes=list(leads.codes),
        sections=sorted(scp.sections),
        waveform=waveform,
    )
    meta = Metadata(
        record_id=demo.pop("record_id", path.stem),
        source_format="scp_ecg",
        source_path=str(path),
        interpretation=interpretation,
        extra=extra,
        **demo,
    )
    return ECG.with_gaps(signal.astype(np.float32), 1e6 / sampled.interval_us, names, meta)


def _lead_names(path: Path, leads: _Leads) -> list[str]:
    names = []
    for code in leads.codes:
        if code not in LEAD_CODES:
            raise ReadError(
                path, f"section 3: lead code {code} ({_lead_name(code)}) is not a lead ecgfm reads"
            )
        names.append(LEAD_CODES[code])
    if len(set(names)) != len(names):
        raise ReadError(path, f"section 3 lists a lead twice: {', '.join(names)}")
    return names


def _tables(path: Path, scp: _SCPFile) -> tuple[tuple[Any, ...] | None, str]:
    """Section 2 -> compiled Huffman tables (None: raw int16 samples) and a description."""
    if 2 not in scp.sections:
        return None, "none"
    try:
        parsed = _huffman.parse_tables(scp.sections[2])
        if parsed is None:
            return None, "none"
        tables = _huffman.compile_tables(parsed)
    except _huffman.HuffmanError as exc:
        raise ReadError(path, f"section 2: {exc}") from None
    return tables, "default" if parsed == (
        _huffman.DEFAULT_TABLE,
    ) else f"{len(parsed)} custom tables"


def _reference_beat(
    path: Path, scp: _SCPFile, names: list[str], tables: tuple[Any, ...] | None
) -> tuple[_Samples, list[np.ndarray], int, list[tuple[int, int, int, int]]]:
    """Sections 4 and 5 -> the section, the decoded reference beat of every lead, its fiducial
    sample and the QRS zones it was subtracted from."""
    section = _sample_section(path, 5, scp.require(5, "reference beat data"), len(names))
    if 4 in scp.sections:
        length_ms, fiducial, zones = _qrs_zones(path, scp.sections[4])
        n = length_ms * 1000 // section.interval_us
    elif tables is None:
        fiducial, zones, n = 0, [], min(section.lengths) // 2
    else:
        raise ReadError(
            path, "no section 4 (QRS locations): the reference beat's length is unknown"
        )
    check_declared_size(path, len(names), n)
    beats, _ = _decode_leads(path, 5, section, [n] * len(names), tables, names)
    return section, beats, fiducial, zones


def _rhythm(
    path: Path, scp: _SCPFile, leads: _Leads, names: list[str], tables: tuple[Any, ...] | None
) -> tuple[_Samples, np.ndarray, int | None]:
    """Section 6 -> the section, the signal in mV (NaN where a lead was not recorded) and the
    declared length when the file stores less than it declares (else None)."""
    rhythm = _sample_section(path, 6, scp.require(6, "rhythm data"), len(names))
    if rhythm.bimodal:
        reference = scp.sections.get(5)
        # The flag only matters where the rhythm rate is below the reference beat's.
        if (
            reference is None
            or len(reference) < 4
            or struct.unpack_from("<H", reference, 2)[0] != rhythm.interval_us
        ):
            raise ReadError(path, "bimodal compression (decimated rhythm data) is not supported")
    n_samples = max(leads.ends)
    check_declared_size(path, len(names), n_samples)
    counts = [end - start + 1 for start, end in zip(leads.starts, leads.ends, strict=True)]
    decoded, saturated = _decode_leads(path, 6, rhythm, counts, tables, names)
    signal = np.full((len(names), n_samples), np.nan)
    for i, values in enumerate(decoded):
        start = leads.starts[i] - 1
        signal[i, start : start + len(values)] = values * (rhythm.avm_nv * 1e-6)
    if leads.reference_subtracted:
        reference, beats, fiducial, zones = _reference_beat(path, scp, names, tables)
        if reference.interval_us != rhythm.interval_us:
            raise ReadError(
                path,
                f"reference beat sampled every {reference.interval_us} µs, rhythm every "
                f"{rhythm.interval_us} µs: reference beat compression at mixed rates is not supported",
            )
        _add_reference_beats(signal, leads, beats, reference.avm_nv * 1e-6, fiducial, zones)
    if not saturated:
        return rhythm, signal, None
    # Keep what is stored; the caller records how much the file meant to hold.
    stored = max(leads.starts[i] - 1 + len(v) for i, v in enumerate(decoded))
    return rhythm, signal[:, :stored], n_samples


def _add_reference_beats(
    signal: np.ndarray,
    leads: _Leads,
    median: list[np.ndarray],
    median_mv: float,
    ref_fiducial: int,
    zones: list[tuple[int, int, int, int]],
) -> None:
    """Add the reference beat back where it was subtracted (QRS complexes of type 0).

    Sample ``s`` of a subtraction zone (1-based rhythm numbering, fiducial at ``fc``) receives
    reference-beat sample ``ref_fiducial + (s - fc)`` (1-based), aligning the two fiducials.
    """
    n = signal.shape[1]
    for kind, start, fc, end in zones:
        if kind != 0:
            continue
        for i, beat in enumerate(median):
            lo = max(start, leads.starts[i])
            hi = min(end, leads.ends[i], n)
            samples = np.arange(lo, hi + 1)
            idx = ref_fiducial + (samples - fc) - 1
            ok = (idx >= 0) & (idx < len(beat))
            signal[i, samples[ok] - 1] += beat[idx[ok]] * median_mv
