"""DICOM ECG waveforms: 12-Lead ECG, General ECG and Ambulatory ECG Waveform Storage.

A DICOM ECG object holds one or more *multiplex groups* in ``WaveformSequence``: usually the
rhythm strip (``WaveformOriginality`` ORIGINAL) and often a median beat (DERIVED). Each group
interleaves its channels sample by sample and describes every channel in
``ChannelDefinitionSequence``: the lead (a coded ``ChannelSourceSequence`` entry), the
sensitivity that turns stored integers into physical units, and those units.

The samples are decoded here rather than with pydicom's ``waveform_array``: that helper ignores
the dataset's byte order, decodes mu-law/A-law (MB/AB) samples as plain bytes, and leaves the
values in whatever unit the file uses. pydicom is imported only when a file is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.leads import canonical_lead
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

# SOP classes that carry ECG leads (PS3.4 B.5). Other waveform IODs (hemodynamic, audio,
# arterial pulse, respiratory) hold no ECG leads in the sense of this package.
ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
}

# Lead term codes of ISO/IEEE 11073-10101 partition 2 (MDC_ECG_LEAD_*). DICOM CID 3001 writes
# them as "2:<code>" (or as the context-free number 2 * 65536 + code); SCP-ECG coding scheme
# "5.6.3-9-<code>" (older DICOM files, Mortara) uses the same numbers.
_LEAD_CODES = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 66: "V8", 67: "V9",
    # "Derived lead" codes (e.g. leads reconstructed from EASI electrodes): same lead axes.
    31: "I", 32: "II", 33: "V1", 34: "V2", 35: "V3", 36: "V4", 37: "V5", 38: "V6",
    111: "III", 112: "aVR", 113: "aVL", 114: "aVF",
}
_DERIVED_CODES = {31, 32, 33, 34, 35, 36, 37, 38, 111, 112, 113, 114}
_MDC_PARTITION_ECG = 2
_SCPECG_LEAD = re.compile(r"^5\.6\.3-9-(\d+)$")
_MDC_LEAD = re.compile(r"^2:(\d+)$")


# (WaveformBitsAllocated, WaveformSampleInterpretation) -> numpy dtype without byte order.
_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1",
    (16, "SS"): "i2", (16, "US"): "u2",
    (32, "SL"): "i4", (32, "UL"): "u4",
    (64, "SV"): "i8", (64, "UV"): "u8",
}

_MEDIAN_LABEL = re.compile(r"MEDIAN|BEAT|TEMPLATE|REPRESENTATIVE|AVERAGE", re.IGNORECASE)


def read_dicom(
    path: Path,
    *,
    waveform: str = "rhythm",
    multiplex: int | None = None,
) -> ECG:
    """Read a DICOM ECG waveform object into an :class:`~ecgfm.ECG`.

    Args:
        path: a DICOM Part 10 file of SOP class 12-Lead, General or Ambulatory ECG Waveform
            Storage.
        waveform: ``"rhythm"`` (default) for the rhythm strip, ``"median"`` for the median
            (representative) beat when the file carries one.
        multiplex: index into ``WaveformSequence`` to read that multiplex group, overriding
            ``waveform``.

    Returns:
        The record: float32 ``[leads, samples]`` in mV at the group's ``SamplingFrequency``,
        with canonical lead names. Samples equal to ``WaveformPaddingValue`` are masked.
        ``meta.interpretation`` holds the unformatted-text annotations (the device's
        statements), ``meta.extra["measurements"]`` the numeric ones (intervals, axes) as
        ``{name: (value, unit)}``, ``meta.extra["multiplex_groups"]`` the label of every group.

    Raises:
        ReadError: not DICOM, truncated, no waveform, not an ECG SOP class, no group of the
            requested kind, unknown sample encoding, units or lead codes, data shorter than
            declared.

    >>> ecg = read_dicom(Path("waveform_ecg.dcm"))  # doctest: +SKIP
    >>> ecg.fs, ecg.leads[:3]  # doctest: +SKIP
    (1000.0, ('I', 'II', 'III'))
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ReadError(path, f"not a DICOM file ({exc})") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise ReadError(path, "no such file") from None
        raise ReadError(path, f"truncated or corrupt DICOM file ({type(exc).__name__}: {exc})") from None

    sop_class = str(ds.get("SOPClassUID", "") or "")
    groups = ds.get("WaveformSequence")
    if not groups:
        kind = ECG_SOP_CLASSES.get(sop_class) or _sop_name(sop_class)
        raise ReadError(path, f"no waveform: the dataset has no WaveformSequence (SOP class {kind})")
    if sop_class and sop_class not in ECG_SOP_CLASSES:
        raise ReadError(
            path,
            f"SOP class {_sop_name(sop_class)} is not an ECG waveform "
            f"(expected one of: {', '.join(ECG_SOP_CLASSES.values())})",
        )

    index = _choose_group(path, groups, waveform, multiplex)
    group = groups[index]
    signal, mask, fs, leads, notes = _decode_group(path, ds, group, index)

    extra: dict[str, Any] = {
        "sop_class": ECG_SOP_CLASSES.get(sop_class, sop_class or None),
        "waveform": "median" if _is_median(group) else "rhythm",
        "multiplex_index": index,
        "multiplex_groups": [str(g.get("MultiplexGroupLabel", "") or "") for g in groups],
        **notes,
    }
    statements, measurements = _annotations(ds)
    if measurements:
        extra["measurements"] = measurements
    manufacturer = " ".join(
        str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")
    ).strip()
    patient_id = str(ds.get("PatientID", "") or "").strip() or None
    meta = Metadata(
        record_id=str(ds.get("SOPInstanceUID", "") or "") or path.stem,
        patient_id=patient_id,
        age=_age(ds.get("PatientAge")),
        sex=_sex(ds.get("PatientSex")),
        acquired=_acquired(ds),
        device=manufacturer or None,
        source_format="dicom",
        source_path=str(path),
        interpretation="\n".join(statements) or None,
        extra=extra,
    )
    try:
        return ECG(signal, fs, leads, meta, mask)
    except ValidationError as exc:  # implausible rate, repeated lead: report against the file
        raise ReadError(path, str(exc).removeprefix(f"{path}: ")) from None


# -- multiplex groups ------------------------------------------------------------------------


def _sop_name(uid: str) -> str:
    if not uid:
        return "not given"
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _is_median(group: Any) -> bool:
    label = str(group.get("MultiplexGroupLabel", "") or "")
    if _MEDIAN_LABEL.search(label):
        return True
    # A derived group with a trigger position is a beat template aligned on its fiducial point.
    return str(group.get("WaveformOriginality", "")).upper() == "DERIVED" and "TriggerSamplePosition" in group


def _choose_group(path: Path, groups: Sequence[Any], waveform: str, multiplex: int | None) -> int:
    if multiplex is not None:
        if not 0 <= multiplex < len(groups):
            raise ReadError(path, f"multiplex={multiplex} but the file has {len(groups)} waveform groups")
        return multiplex
    if waveform not in ("rhythm", "median"):
        raise ReadError(path, f"waveform must be 'rhythm' or 'median', got {waveform!r}")
    want_median = waveform == "median"
    for i, group in enumerate(groups):
        if _is_median(group) == want_median:
            return i
    labels = ", ".join(repr(str(g.get("MultiplexGroupLabel", "") or "")) for g in groups)
    raise ReadError(path, f"no {waveform} waveform among the {len(groups)} multiplex groups ({labels})")


def _number(path: Path, item: Any, keyword: str, where: str, default: float | None = None) -> float:
    value = item.get(keyword)
    if value is None or value == "":
        if default is not None:
            return default
        raise ReadError(path, f"{where} has no {keyword}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReadError(path, f"{where}: {keyword} {value!r} is not a number") from None
    if not np.isfinite(number):
        raise ReadError(path, f"{where}: {keyword} {value!r} is not finite")
    return number


def _decode_group(
    path: Path, ds: Any, group: Any, index: int
) -> tuple[np.ndarray, np.ndarray | None, float, tuple[str, ...], dict[str, Any]]:
    """Samples of one multiplex group as ``([leads, samples] mV, mask or None, fs, leads, notes)``."""
    where = f"waveform group {index}"
    n_channels = int(_number(path, group, "NumberOfWaveformChannels", where))
    n_samples = int(_number(path, group, "NumberOfWaveformSamples", where))
    fs = _number(path, group, "SamplingFrequency", where)
    check_declared_size(path, n_channels, n_samples)
    if not fs > 0:
        raise ReadError(path, f"{where}: SamplingFrequency {fs:g} Hz is not positive")

    bits = int(_number(path, group, "WaveformBitsAllocated", where))
    interpretation = str(group.get("WaveformSampleInterpretation", "")).strip().upper()
    if interpretation in ("MB", "AB"):
        raise ReadError(path, f"{where}: {'mu' if interpretation == 'MB' else 'A'}-law companded samples (audio encoding) are not supported for ECG")
    if (bits, interpretation) not in _DTYPES:
        raise ReadError(
            path,
            f"{where}: WaveformBitsAllocated {bits} with WaveformSampleInterpretation "
            f"{interpretation!r} is not a supported sample encoding",
        )
    little = _little_endian(ds)
    dtype = np.dtype(_DTYPES[(bits, interpretation)]).newbyteorder("<" if little else ">")

    data = group.get("WaveformData")
    if data is None:
        raise ReadError(path, f"{where} has no WaveformData")
    data = bytes(data)
    need = n_channels * n_samples * dtype.itemsize
    if len(data) < need:
        raise ReadError(
            path,
            f"{where}: WaveformData holds {len(data)} bytes, fewer than the {need} declared "
            f"({n_channels} channels x {n_samples} samples x {dtype.itemsize} bytes); file truncated?",
        )
    # Samples are interleaved channel by channel: C1S1, C2S1, ..., CnS1, C1S2, ...
    raw = np.frombuffer(data[:need], dtype=dtype).reshape(n_samples, n_channels).T

    channels = group.get("ChannelDefinitionSequence") or []
    if len(channels) != n_channels:
        raise ReadError(
            path,
            f"{where}: ChannelDefinitionSequence describes {len(channels)} channels, "
            f"NumberOfWaveformChannels says {n_channels}",
        )

    leads: list[str] = []
    derived: list[str] = []
    signal = np.empty((n_channels, n_samples), dtype=np.float64)
    for c, channel in enumerate(channels):
        lead, is_derived = _lead_name(path, channel, f"{where} channel {c + 1}")
        leads.append(lead)
        if is_derived:
            derived.append(lead)
        cwhere = f"{where} channel {c + 1} ({lead})"
        if channel.get("ChannelSensitivity") in (None, ""):
            raise ReadError(path, f"{cwhere} has no ChannelSensitivity, so its samples cannot be converted to mV")
        sensitivity = _number(path, channel, "ChannelSensitivity", cwhere)
        correction = _number(path, channel, "ChannelSensitivityCorrectionFactor", cwhere, default=1.0)
        baseline = _number(path, channel, "ChannelBaseline", cwhere, default=0.0)
        to_mv = _unit_to_mv(path, channel, cwhere)
        # PS3.3 C.10.9.1.4: value = stored x sensitivity x correction + baseline, in the
        # channel's sensitivity units.
        signal[c] = (raw[c].astype(np.float64) * (sensitivity * correction) + baseline) * to_mv

    mask = None
    padding = group.get("WaveformPaddingValue")
    if padding is not None and len(bytes(padding)) >= dtype.itemsize:
        pad_value = np.frombuffer(bytes(padding)[: dtype.itemsize], dtype=dtype)[0]
        observed = raw != pad_value
        if not observed.all():
            mask = observed

    notes: dict[str, Any] = {}
    label = str(group.get("MultiplexGroupLabel", "") or "")
    if label:
        notes["multiplex_label"] = label
    if derived:
        notes["derived_leads"] = derived
    filters = _filters(channels)
    if filters:
        notes["filters_hz"] = filters
    if "TriggerSamplePosition" in group:
        # 1-based in DICOM; the fiducial point of a median beat.
        notes["trigger_sample"] = int(group.TriggerSamplePosition) - 1
    lead_tuple = tuple(leads)
    if len(set(lead_tuple)) != len(lead_tuple):
        dup = sorted({name for name in leads if leads.count(name) > 1})
        raise ReadError(path, f"{where}: lead(s) {', '.join(dup)} appear more than once")
    return signal.astype(np.float32), mask, fs, lead_tuple, notes


def _little_endian(ds: Any) -> bool:
    encoding = getattr(ds, "original_encoding", None)
    if encoding and encoding[1] is not None:
        return bool(encoding[1])
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    # Explicit VR Big Endian (retired) is the only big-endian transfer syntax.
    return syntax != "1.2.840.10008.1.2.2"


def _filters(channels: Sequence[Any]) -> dict[str, float] | None:
    first = channels[0]
    out = {}
    for keyword, key in (("FilterLowFrequency", "low"), ("FilterHighFrequency", "high"), ("NotchFilterFrequency", "notch")):
        value = first.get(keyword)
        if value not in (None, ""):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out or None


# -- lead names and units -------------------------------------------------------------------


def _lead_from_code(value: str, scheme: str) -> tuple[int | None, bool]:
    """The MDC lead term code in a coded entry, and whether the entry is a lead code at all."""
    value = value.strip()
    scheme = scheme.strip().upper()
    match = _SCPECG_LEAD.match(value)
    if match:
        return int(match.group(1)), True
    match = _MDC_LEAD.match(value)
    if match and scheme in ("MDC", ""):
        return int(match.group(1)), True
    if scheme == "MDC" and value.isdigit():
        number = int(value)
        if number >> 16 == _MDC_PARTITION_ECG:
            return number & 0xFFFF, True
    return None, False


def _lead_name(path: Path, channel: Any, where: str) -> tuple[str, bool]:
    """Canonical lead of one channel, and whether the file calls it a derived lead."""
    sources = channel.get("ChannelSourceSequence") or []
    if not sources:
        label = str(channel.get("ChannelLabel", "") or "").strip()
        if label:
            return _lead_from_meaning(path, label, where), False
        raise ReadError(path, f"{where} has no ChannelSourceSequence naming its lead")
    source = sources[0]
    value = str(source.get("CodeValue", "") or "")
    scheme = str(source.get("CodingSchemeDesignator", "") or "")
    meaning = str(source.get("CodeMeaning", "") or "").strip()
    code, is_lead_code = _lead_from_code(value, scheme)
    if is_lead_code:
        if code in _LEAD_CODES:
            return _LEAD_CODES[code], code in _DERIVED_CODES
        # A lead the standard names but this package has no canonical name for (V2R, -aVR,
        # nonaugmented VR ...): refuse rather than guess from the meaning.
        raise ReadError(
            path,
            f"{where}: lead code {scheme}/{value} ({meaning or 'no meaning given'}) is not a "
            "lead ecgfm knows",
        )
    if not meaning:
        raise ReadError(path, f"{where}: channel source {scheme}/{value} is not a known ECG lead code")
    return _lead_from_meaning(path, meaning, where), False


def _lead_from_meaning(path: Path, meaning: str, where: str) -> str:
    # "Lead I (Einthoven)", "aVR, augmented voltage, right", "Lead V1": drop the comments.
    core = re.sub(r"\(.*?\)", "", meaning).split(",")[0].strip()
    try:
        return canonical_lead(core, source=str(path))
    except ValidationError:
        raise ReadError(path, f"{where}: channel source {meaning!r} is not a known lead name") from None


def _unit_to_mv(path: Path, channel: Any, where: str) -> float:
    units = channel.get("ChannelSensitivityUnitsSequence") or []
    if not units:
        raise ReadError(path, f"{where} has no ChannelSensitivityUnitsSequence, so its units are unknown")
    unit = units[0]
    for text in (unit.get("CodeValue"), unit.get("CodeMeaning")):
        factor = mv_per_unit(str(text or ""))
        if factor is not None:
            return factor
    raise ReadError(
        path,
        f"{where}: channel sensitivity unit {unit.get('CodeValue')!r} "
        f"({unit.get('CodeMeaning')!r}) is not a voltage (expected uV, mV or V)",
    )


# -- metadata -------------------------------------------------------------------------------


def _annotations(ds: Any) -> tuple[list[str], dict[str, tuple[float, str | None]]]:
    """Free-text statements and named numeric measurements of ``WaveformAnnotationSequence``."""
    statements: list[str] = []
    measurements: dict[str, tuple[float, str | None]] = {}
    for item in ds.get("WaveformAnnotationSequence") or []:
        text = str(item.get("UnformattedTextValue", "") or "").strip()
        if text:
            statements.append(text)
            continue
        names = item.get("ConceptNameCodeSequence") or []
        value = item.get("NumericValue")
        if names and value not in (None, "") and "ReferencedSamplePositions" not in item:
            name = str(names[0].get("CodeMeaning", "") or names[0].get("CodeValue", ""))
            units = item.get("MeasurementUnitsCodeSequence") or []
            unit = str(units[0].get("CodeValue", "")) if units else None
            try:
                number = float(value if not isinstance(value, (list, tuple)) else value[0])
            except (TypeError, ValueError):
                continue
            measurements.setdefault(name, (number, unit))
    return statements, measurements


def _age(value: Any) -> float | None:
    """DICOM Age String ``nnnD|W|M|Y`` in years."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(value or ""))
    if not match:
        return None
    number = int(match.group(1))
    years = {"D": number / 365.25, "W": number * 7 / 365.25, "M": number / 12, "Y": float(number)}[match.group(2)]
    return years if 0 <= years <= 150 else None


def _sex(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in ("M", "F") else None


def _acquired(ds: Any) -> datetime | None:
    """Acquisition start: AcquisitionDateTime, else Content, Acquisition or Study date + time."""
    from pydicom.valuerep import DA, DT

    candidates = [str(ds.get("AcquisitionDateTime", "") or "")]
    for date_kw, time_kw in (("ContentDate", "ContentTime"), ("AcquisitionDate", "AcquisitionTime"), ("StudyDate", "StudyTime")):
        date = str(ds.get(date_kw, "") or "").strip()
        if date:
            candidates.append(date + str(ds.get(time_kw, "") or "").strip())
    for text in candidates:
        text = text.strip()
        if not text:
            continue
        try:
            value = DT(text) if len(text) > 8 else DA(text)
        except (TypeError, ValueError):
            continue
        if value is None:
            continue
        if isinstance(value, datetime):
            return datetime(
                value.year, value.month, value.day, value.hour, value.minute, value.second,
                value.microsecond, tzinfo=value.tzinfo,
            )
        return datetime(value.year, value.month, value.day)
    return None
