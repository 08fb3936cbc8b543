"""GE MUSE resting ECG XML (``RestingECG``, restecg.dtd), as exported by the MUSE ECG system.

No public MUSE file is available to this project; the layout below was checked against public
readers: GE's own ``musexmlex.py`` (A. Ricke, GE Healthcare 2009, github.com/rickead/
musexmlexport), UMMISCO/ECGDataKit ``parsing/parsers/ge_muse_xml.py`` and the MUSE pipelines of
several hospital research groups (CRC32 of the decoded bytes, MM-DD-YYYY dates)::

    RestingECG
      PatientDemographics   PatientID, PatientAge + AgeUnits (YEARS, MONTHS, ...), Gender
                            (MALE/FEMALE), DateofBirth (MM-DD-YYYY)
      TestDemographics      AcquisitionDate (MM-DD-YYYY), AcquisitionTime (HH:MM:SS),
                            AcquisitionDevice, AcquisitionSoftwareVersion, Status, ...
      RestingECGMeasurements / OriginalRestingECGMeasurements   VentricularRate, PRInterval, ...
      Diagnosis / OriginalDiagnosis   DiagnosisStatement* (StmtFlag*, StmtText)
      Waveform*             WaveformType (Median | Rhythm), SampleBase, SampleExponent,
                            LeadData* (LeadID, LeadSampleCountTotal, LeadByteCountTotal,
                            LeadSampleSize, LeadAmplitudeUnitsPerBit, LeadAmplitudeUnits,
                            LeadOffsetFirstSample, LeadDataCRC32, WaveFormData)

``WaveFormData`` is base64 of little-endian signed integers (``LeadSampleSize`` bytes, 2 in
practice); physical value = sample * ``LeadAmplitudeUnitsPerBit`` ``LeadAmplitudeUnits``
(usually 4.88 MICROVOLTS); the rate is ``SampleBase * 10 ** SampleExponent`` Hz.

MUSE stores the 8 independent leads I, II, V1-V6 (III, aVR, aVL, aVF follow from I and II).
This reader returns the leads the file stores, usually those 8; ``ecg.select(STANDARD_12)``
derives the other four.
"""

from __future__ import annotations

import base64
import binascii
import math
import xml.etree.ElementTree as ET
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.io._xml import parse_xml, text
from ecgfm.leads import canonical_lead
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

WAVEFORM_TYPES = {"rhythm": "Rhythm", "median": "Median"}

_AGE_UNITS_TO_YEARS = {
    "YEARS": 1.0,
    "MONTHS": 1 / 12,
    "WEEKS": 7 / 365.25,
    "DAYS": 1 / 365.25,
    "HOURS": 1 / 8766,
}
_SEX = {"MALE": "M", "M": "M", "FEMALE": "F", "F": "F"}
_DATE_FORMATS = ("%m-%d-%Y", "%m/%d/%Y", "%Y-%m-%d")
_TIME_FORMATS = ("%H:%M:%S", "%H:%M")


def read_muse_xml(path: Path, *, waveform: str = "rhythm", check_crc: bool = True) -> ECG:
    """Read a GE MUSE XML export into an :class:`~ecgfm.ECG`.

    Args:
        path: an XML file whose root element is ``RestingECG``.
        waveform: ``"rhythm"`` (default) for the rhythm strip (usually 10 s), ``"median"`` for
            the median beats (usually 600 samples at 500 Hz).
        check_crc: verify each lead's ``LeadDataCRC32`` (CRC-32 of the decoded bytes) when the
            file has one, and refuse the file on a mismatch.

    Returns:
        The record: float32 ``[leads, samples]`` in mV, the leads the file stores (usually the
        8 independent leads I, II, V1-V6; use ``ecg.select(STANDARD_12)`` to derive III, aVR,
        aVL, aVF), ``fs = SampleBase * 10 ** SampleExponent``. A lead that starts later
        (``LeadOffsetFirstSample``) or is shorter than the others is masked where it has no
        samples. ``meta.interpretation`` holds the (confirmed) ``Diagnosis`` statements, one
        line per ``ENDSLINE``-flagged statement, falling back to ``OriginalDiagnosis``;
        ``meta.extra["measurements"]`` the ``RestingECGMeasurements``.

    Raises:
        ReadError: not a ``RestingECG`` document, no waveform of the requested type, missing or
            implausible ``SampleBase``, invalid base64, sample or byte counts that differ from
            the data, CRC mismatch, unknown lead names or amplitude units.

    >>> ecg = read_muse_xml(Path("MUSE_20140325_123456_12345.xml"))  # doctest: +SKIP
    >>> ecg.leads  # doctest: +SKIP
    ('I', 'II', 'V1', 'V2', 'V3', 'V4', 'V5', 'V6')
    """
    path = Path(path)
    if waveform not in WAVEFORM_TYPES:
        raise ReadError(path, f"waveform must be 'rhythm' or 'median', got {waveform!r}")
    root = parse_xml(path)
    if root.tag != "RestingECG":
        raise ReadError(
            path, f"root element is <{root.tag}>, not <RestingECG>: not a GE MUSE XML file"
        )

    element = _choose_waveform(path, root, waveform)
    fs = _sampling_rate(path, root, element)
    signal, mask, leads, notes = _decode_waveform(path, element, check_crc)

    demographics = root.find("PatientDemographics")
    test = root.find("TestDemographics")
    extra: dict[str, Any] = {"waveform": waveform, **notes}
    for tag in (
        "AcquisitionSoftwareVersion",
        "AnalysisSoftwareVersion",
        "Status",
        "DataType",
        "Site",
        "Location",
    ):
        value = text(test, tag)
        if value:
            extra[tag] = value
    version = text(root, "MuseInfo/MuseVersion")
    if version:
        extra["muse_version"] = version
    birth = _parse_date(text(demographics, "DateofBirth"))
    if birth is not None:
        extra["birth_date"] = birth.date().isoformat()
    filters = {
        tag: value
        for tag in ("HighPassFilter", "LowPassFilter", "ACFilter")
        if (value := text(element, tag))
    }
    if filters:
        extra["filters"] = filters
    measurements = _measurements(root.find("RestingECGMeasurements"))
    if measurements:
        extra["measurements"] = measurements

    statements = _statements(root.find("Diagnosis"))
    original = _statements(root.find("OriginalDiagnosis"))
    if not statements:
        statements = original
    elif original and original != statements:
        # The computer's reading before a physician edited it: useful as a second label.
        extra["original_diagnosis"] = "\n".join(original)

    acquired = _acquired(test)
    meta = Metadata(
        record_id=path.stem,
        patient_id=text(demographics, "PatientID"),
        age=_age(demographics, extra),
        sex=_SEX.get((text(demographics, "Gender") or "").upper()),
        acquired=acquired,
        device=text(test, "AcquisitionDevice"),
        source_format="muse_xml",
        source_path=str(path),
        interpretation="\n".join(statements) or None,
        extra=extra,
    )
    return ECG(signal, fs, leads, meta, mask)


# -- waveforms -------------------------------------------------------------------------------


def _choose_waveform(path: Path, root: ET.Element, waveform: str) -> ET.Element:
    elements = root.findall("Waveform")
    if not elements:
        raise ReadError(path, "no waveform data: the document has no <Waveform> element")
    want = WAVEFORM_TYPES[waveform]
    for element in elements:
        if (text(element, "WaveformType") or "").lower() == want.lower():
            return element
    have = ", ".join(text(e, "WaveformType") or "(no WaveformType)" for e in elements)
    raise ReadError(path, f"no {want} waveform for waveform={waveform!r} (the file has: {have})")


def _number(path: Path, where: str, raw: str | None, name: str) -> float:
    try:
        # Some MUSE installations write the locale's decimal comma ("4,88").
        value = float((raw or "").replace(",", "."))
    except ValueError:
        raise ReadError(path, f"{where}: {name} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ReadError(path, f"{where}: {name} {raw!r} is not finite")
    return value


def _sampling_rate(path: Path, root: ET.Element, element: ET.Element) -> float:
    where = f"{text(element, 'WaveformType') or 'Waveform'} waveform"
    base = text(element, "SampleBase")
    exponent = text(element, "SampleExponent") or "0"
    if base is None:
        # Older exports give the rate only with the measurements.
        base = text(root, "RestingECGMeasurements/ECGSampleBase")
        exponent = text(root, "RestingECGMeasurements/ECGSampleExponent") or "0"
    if base is None:
        raise ReadError(path, f"{where}: no SampleBase (sampling rate)")
    fs = _number(path, where, base, "SampleBase") * 10 ** _number(
        path, where, exponent, "SampleExponent"
    )
    if not fs > 0:
        raise ReadError(path, f"{where}: sampling rate {base} * 10^{exponent} Hz is not positive")
    return fs


def _decode_waveform(
    path: Path, element: ET.Element, check_crc: bool
) -> tuple[np.ndarray, np.ndarray | None, list[str], dict[str, Any]]:
    kind = text(element, "WaveformType") or "Waveform"
    rows: list[tuple[str, int, np.ndarray]] = []
    for lead_data in element.findall("LeadData"):
        lead_id = text(lead_data, "LeadID")
        if lead_id is None:
            raise ReadError(path, f"{kind} waveform: a <LeadData> has no LeadID")
        where = f"{kind} waveform, lead {lead_id}"
        try:
            lead = canonical_lead(lead_id, source=str(path))
        except ValidationError:
            raise ReadError(path, f"{where}: {lead_id!r} is not a known lead name") from None
        if any(lead == r[0] for r in rows):
            raise ReadError(path, f"{where}: lead {lead} appears twice")
        samples = _decode_lead(path, where, lead_data, check_crc)
        offset = int(
            _number(
                path,
                where,
                text(lead_data, "LeadOffsetFirstSample") or "0",
                "LeadOffsetFirstSample",
            )
        )
        if offset < 0:
            raise ReadError(path, f"{where}: LeadOffsetFirstSample {offset} is negative")
        rows.append((lead, offset, samples))
    if not rows:
        raise ReadError(path, f"{kind} waveform has no <LeadData>")
    declared = text(element, "NumberofLeads")
    n_samples = max(offset + len(samples) for _, offset, samples in rows)
    check_declared_size(path, len(rows), n_samples)
    signal = np.zeros((len(rows), n_samples), np.float32)
    observed = np.zeros((len(rows), n_samples), bool)
    for i, (_, offset, samples) in enumerate(rows):
        signal[i, offset : offset + len(samples)] = samples
        observed[i, offset : offset + len(samples)] = True
    notes: dict[str, Any] = {}
    if declared is not None and declared.isdigit() and int(declared) != len(rows):
        notes["declared_leads"] = int(declared)
    mask = None if observed.all() else observed
    if mask is not None:
        notes["masked_leads"] = [
            lead for (lead, _, _), row in zip(rows, observed, strict=True) if not row.all()
        ]
    return signal, mask, [lead for lead, _, _ in rows], notes


def _decode_lead(path: Path, where: str, lead_data: ET.Element, check_crc: bool) -> np.ndarray:
    encoded = text(lead_data, "WaveFormData")
    if encoded is None:
        raise ReadError(path, f"{where}: no WaveFormData")
    try:
        # MUSE wraps the base64 text in lines; validate=True refuses anything else.
        payload = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReadError(path, f"{where}: WaveFormData is not valid base64 ({exc})") from None
    size = int(_number(path, where, text(lead_data, "LeadSampleSize") or "2", "LeadSampleSize"))
    if size not in (1, 2, 4):
        raise ReadError(path, f"{where}: LeadSampleSize {size} is not 1, 2 or 4 bytes")
    if len(payload) % size:
        raise ReadError(
            path,
            f"{where}: {len(payload)} bytes of data is not a whole number of {size}-byte samples",
        )
    count = text(lead_data, "LeadSampleCountTotal")
    n = len(payload) // size
    if count is not None and int(_number(path, where, count, "LeadSampleCountTotal")) != n:
        raise ReadError(
            path,
            f"{where}: LeadSampleCountTotal is {count} but the data holds {n} samples "
            "(truncated or corrupt)",
        )
    byte_count = text(lead_data, "LeadByteCountTotal")
    if byte_count is not None and int(
        _number(path, where, byte_count, "LeadByteCountTotal")
    ) != len(payload):
        raise ReadError(
            path,
            f"{where}: LeadByteCountTotal is {byte_count} but the data holds {len(payload)} bytes",
        )
    if n == 0:
        raise ReadError(path, f"{where}: no samples")
    crc = text(lead_data, "LeadDataCRC32")
    if check_crc and crc is not None and crc.isdigit() and zlib.crc32(payload) != int(crc):
        raise ReadError(
            path,
            f"{where}: CRC-32 of the data is {zlib.crc32(payload)}, the file says {crc} (corrupt; "
            "pass check_crc=False to read it anyway)",
        )
    scale = text(lead_data, "LeadAmplitudeUnitsPerBit")
    if scale is None:
        raise ReadError(path, f"{where}: no LeadAmplitudeUnitsPerBit (amplitude scale)")
    per_bit = _number(path, where, scale, "LeadAmplitudeUnitsPerBit")
    if per_bit <= 0:
        raise ReadError(path, f"{where}: LeadAmplitudeUnitsPerBit {scale} is not positive")
    # restecg.dtd makes MICROVOLTS the default unit.
    units = (text(lead_data, "LeadAmplitudeUnits") or "MICROVOLTS").upper()
    factor = mv_per_unit(units)
    if factor is None:
        raise ReadError(
            path,
            f"{where}: LeadAmplitudeUnits {units!r} is not a voltage unit (expected MICROVOLTS)",
        )
    counts = np.frombuffer(payload, dtype=f"<i{size}")
    return counts * (per_bit * factor)


# -- metadata --------------------------------------------------------------------------------


def _parse_date(raw: str | None) -> datetime | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime((raw or "").strip(), fmt)
        except ValueError:
            continue
    return None


def _acquired(test: ET.Element | None) -> datetime | None:
    day = _parse_date(text(test, "AcquisitionDate"))
    if day is None:
        return None
    clock = text(test, "AcquisitionTime")
    for fmt in _TIME_FORMATS:
        try:
            t = datetime.strptime((clock or "").strip(), fmt).time()
        except ValueError:
            continue
        return datetime.combine(day.date(), t)
    return day


def _age(demographics: ET.Element | None, extra: dict[str, Any]) -> float | None:
    raw = text(demographics, "PatientAge")
    if raw is None:
        return None
    units = (text(demographics, "AgeUnits") or "YEARS").upper()
    try:
        age = float(raw) * _AGE_UNITS_TO_YEARS[units]
    except (ValueError, KeyError):
        age = math.nan
    if not 0 <= age <= 150:  # also false for NaN
        extra["age_as_written"] = f"{raw} {units}"
        return None
    return age


def _measurements(element: ET.Element | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if element is None:
        return out
    for child in element:
        if child.tag.startswith("ECGSample"):  # the sampling rate, not a measurement
            continue
        try:
            out[child.tag] = float((child.text or "").strip())
        except ValueError:
            continue
    return out


def _statements(diagnosis: ET.Element | None) -> list[str]:
    """Diagnosis lines: statement fragments are joined until one flagged ENDSLINE.

    A file without any ENDSLINE flag (an exporter that drops them) gives one line per statement.
    """
    if diagnosis is None:
        return []
    items = [
        (
            text(s, "StmtText"),
            "ENDSLINE" in {(f.text or "").strip().upper() for f in s.findall("StmtFlag")},
        )
        for s in diagnosis.findall("DiagnosisStatement")
    ]
    if not any(ends for _, ends in items):
        return [fragment for fragment, _ in items if fragment]
    lines: list[str] = []
    current: list[str] = []
    for fragment, ends in items:
        if fragment:
            current.append(fragment)
        if ends and current:
            lines.append(" ".join(current))
            current = []
    if current:
        lines.append(" ".join(current))
    return lines
