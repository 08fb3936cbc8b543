"""Reader for Philips Sierra ECG XML (``restingecgdata``), versions 1.03, 1.04 and 1.04.01.

PageWriter, TraceMasterVue/IntelliSpace and HeartStart devices write these files, often as
UTF-16 with a byte-order mark. The rhythm waveforms live in ``waveforms/parsedwaveforms``:
base64 (or plain/hex) int16 samples, one channel after the other, usually XLI-compressed
(see :mod:`ecgfm.io._xli`). Two Philips conventions matter when decoding them:

* In XLI data the limb leads III, aVR, aVL and aVF are stored as residuals against their
  values derived from I and II (the sierra-ecg-tools decoders and Philips' own aECG export
  agree on the formulas in :func:`_reconstruct_limb_leads`); the stored residuals are the
  device's rounding differences (+-1 unit) plus the calibration pulse.
* The rhythm is stored as 11 s (``durationperchannel="11000"``) whose end is a calibration
  trailer: every channel holds the same zeros and a 1 mV, 200 ms square pulse. The reader cuts
  that trailer off by default (it is identical in all leads, which no real ECG is);
  ``keep_calibration=True`` returns the stored samples unchanged.

The representative (median) beats in ``waveforms/repbeats`` are returned by
``waveform="median"``; Philips pads them with the value 32767, which the reader drops.
"""

from __future__ import annotations

import base64
import binascii
import math
import xml.etree.ElementTree as ET
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.io._xli import XliError, decode_xli
from ecgfm.io._xml import parse_xml, text
from ecgfm.leads import STANDARD_12, canonical_lead
from ecgfm.record import ECG, MAX_FS, MIN_FS, Metadata

FORMAT = "philips_xml"
WAVEFORMS = ("rhythm", "median")
PAD_VALUE = 32767  # Philips fills unused samples of representative beats with this
_LIMB_RESIDUALS = ("III", "aVR", "aVL", "aVF")
# Lead sets whose channels come in the standard order when a 1.03 file names no labels.
_STANDARD_LEADSETS = {"STD-12", "10-WIRE"}
_SEXES = {"male": "M", "female": "F", "m": "M", "f": "F"}


def read_philips_xml(
    path: Path, *, waveform: str = "rhythm", keep_calibration: bool = False
) -> ECG:
    """Read a Philips Sierra ECG XML file.

    Args:
        path: the ``.xml`` file (UTF-8 or UTF-16).
        waveform: ``"rhythm"`` for the continuous recording (``parsedwaveforms``), or
            ``"median"`` for the representative beats (``repbeats``).
        keep_calibration: keep the calibration trailer Philips appends to the rhythm (the
            last 0.4-0.5 s of the 11 s record: zeros and a 1 mV, 200 ms pulse, identical in
            every lead) instead of cutting it off. Ignored for ``waveform="median"``.

    Returns:
        float32 ``[leads, samples]`` in mV with canonical lead names (12 leads for the files
        Philips writes), at the file's sampling rate. ``meta.interpretation`` holds the
        device's statements, ``meta.extra`` the document version, compression, filter
        settings and how the limb leads and calibration trailer were handled.

    Raises:
        ReadError: not a Sierra ECG document, missing waveform elements, corrupt or
            truncated base64/XLI data, a lead that decodes to the wrong length, unknown lead
            names, an implausible sampling rate, or no representative beats for ``"median"``.

    >>> ecg = read_philips_xml(Path("129DYPRG.XML"))  # doctest: +SKIP
    >>> ecg.leads[:3], ecg.fs, ecg.n_samples  # doctest: +SKIP
    (('I', 'II', 'III'), 500.0, 5264)
    """
    path = Path(path)
    if waveform not in WAVEFORMS:
        raise ReadError(path, f"waveform must be one of {', '.join(WAVEFORMS)}; got {waveform!r}")
    root = parse_xml(path)
    if root.tag != "restingecgdata":
        raise ReadError(
            path, f"not a Philips Sierra ECG XML document (root element is <{root.tag}>)"
        )
    meta_fields, extra = _metadata(root)
    waveforms = root.find("waveforms")
    if waveform == "rhythm":
        signal, fs, leads, mask = _read_rhythm(path, root, waveforms, extra, keep_calibration)
    else:
        signal, fs, leads, mask = _read_median(path, waveforms, extra)
    meta = Metadata(source_format=FORMAT, source_path=str(path), extra=extra, **meta_fields)
    try:
        if mask is not None:
            return ECG(np.where(mask, signal, np.nan), fs, leads, meta, mask)
        return ECG(signal, fs, leads, meta)
    except ValidationError as exc:
        raise ReadError(path, str(exc).removeprefix(f"{path}: ")) from None


# -- rhythm ---------------------------------------------------------------------------------


def _read_rhythm(
    path: Path,
    root: ET.Element,
    waveforms: ET.Element | None,
    extra: dict[str, Any],
    keep_calibration: bool,
) -> tuple[np.ndarray, float, tuple[str, ...], None]:
    element = waveforms.find("parsedwaveforms") if waveforms is not None else None
    if element is None:
        if waveforms is not None and waveforms.find("unparsedwaveforms") is not None:
            href = waveforms.find("unparsedwaveforms").get("href", "")
            raise ReadError(path, f"the waveforms are stored outside this file (href {href!r})")
        raise ReadError(path, "no waveforms/parsedwaveforms element: the file holds no rhythm data")
    signal_info = root.find("dataacquisition/signalcharacteristics")
    attrs = element.attrib

    # The parsedwaveforms attributes describe the data as stored; signalcharacteristics
    # describes the acquisition and may predate later filtering or resampling (1.04 schema).
    fs = _number(
        path, attrs.get("samplespersecond") or text(signal_info, "samplingrate"), "sampling rate"
    )
    if fs is None:
        raise ReadError(path, "no sampling rate (samplespersecond / samplingrate)")
    _check_fs(path, fs)
    resolution = _number(
        path,
        attrs.get("resolution")
        or text(signal_info, "resolution")
        or text(signal_info, "signalresolution"),
        "resolution",
    )
    if resolution is None or not resolution > 0:
        raise ReadError(
            path, f"amplitude resolution must be a positive number of uV, got {resolution}"
        )
    offset = (
        _number(
            path, attrs.get("signaloffset") or text(signal_info, "signaloffset"), "signal offset"
        )
        or 0.0
    )
    bits = attrs.get("bitspersample") or attrs.get("nbitspersample") or "16"
    if bits.strip() != "16":
        raise ReadError(path, f"only 16-bit samples are supported, file has bitspersample={bits}")
    signed = (attrs.get("signalsigned") or text(signal_info, "signalsigned") or "True") != "False"

    labels = _rhythm_labels(path, attrs, signal_info)
    n_leads = len(labels)
    duration_ms = _number(path, attrs.get("durationperchannel"), "durationperchannel")
    n_samples = None
    if duration_ms is not None:
        n_samples = round(duration_ms * fs / 1000)
        check_declared_size(path, n_leads, n_samples)

    compression = (attrs.get("compression") or attrs.get("compressmethod") or "").strip()
    if attrs.get("compressflag", "").strip() == "False":
        compression = ""
    encoding = attrs.get("dataencoding", "Base64")
    if compression.upper() == "XLI":
        data = _decode_bytes(path, element.text, encoding, "parsedwaveforms")
        try:
            raw = decode_xli(data, n_leads, n_samples)
        except XliError as exc:
            raise ReadError(path, f"XLI waveform data: {exc}") from None
    elif compression:
        raise ReadError(path, f"unsupported waveform compression {compression!r} (known: XLI)")
    else:
        raw = _uncompressed(path, element.text, encoding, n_leads, n_samples, signed)

    raw, labels = _flip_inverted_avr(raw, labels)
    names = _canonical(path, labels)
    residuals = _limb_leads_are_residuals(names, raw, compressed=bool(compression))
    if residuals:
        raw = _reconstruct_limb_leads(names, raw)

    n_stored = raw.shape[1]
    keep = n_stored if keep_calibration else _calibration_start(raw)
    if keep == 0:
        raise ReadError(path, "the rhythm holds nothing but a calibration signal")
    signal = (raw[:, :keep] - offset) * (resolution / 1000.0)
    extra.update(
        compression=compression or None,
        resolution_uV=resolution,
        stored_samples=n_stored,
        calibration_trimmed_samples=n_stored - keep,
        limb_leads_from_residuals=residuals,
    )
    return signal, fs, names, None


def _rhythm_labels(path: Path, attrs: dict[str, str], signal_info: ET.Element | None) -> list[str]:
    """Channel names: ``leadlabels`` (1.04) or the acquisition lead set (1.03)."""
    declared = attrs.get("numberofleads")
    if attrs.get("leadlabels", "").strip():
        labels = attrs["leadlabels"].split()
        if declared is not None:
            count = _integer(path, declared, "numberofleads")
            if count > len(labels):
                raise ReadError(
                    path, f"numberofleads is {count} but leadlabels names only {len(labels)} leads"
                )
            labels = labels[:count]
        return labels
    leadset = (text(signal_info, "leadset") or text(signal_info, "acquisitiontype") or "").upper()
    count_text = text(signal_info, "numberchannelsvalid") or text(
        signal_info, "numberchannelsallocated"
    )
    count = _integer(path, count_text, "numberchannelsvalid") if count_text else len(STANDARD_12)
    if leadset in _STANDARD_LEADSETS and count == len(STANDARD_12):
        return list(STANDARD_12)
    raise ReadError(
        path,
        f"parsedwaveforms names no leads (no leadlabels) and the lead set {leadset or '(none)'} "
        f"with {count} channels has no known channel order",
    )


def _uncompressed(
    path: Path,
    payload: str | None,
    encoding: str,
    n_leads: int,
    n_samples: int | None,
    signed: bool,
) -> np.ndarray:
    """Samples stored one channel after another, as int16 bytes or plain numbers."""
    if encoding == "Plain":
        try:
            values = np.array((payload or "").split(), dtype=np.int64)
        except ValueError:
            raise ReadError(
                path, "parsedwaveforms (Plain) holds a value that is not an integer"
            ) from None
    else:
        data = _decode_bytes(path, payload, encoding, "parsedwaveforms")
        if len(data) % 2:
            raise ReadError(
                path, f"waveform data has an odd number of bytes ({len(data)}); truncated?"
            )
        values = np.frombuffer(data, dtype="<i2" if signed else "<u2").astype(np.int64)
    if n_samples is None:
        if values.size % n_leads:
            raise ReadError(path, f"{values.size} samples do not split evenly into {n_leads} leads")
        n_samples = values.size // n_leads
        check_declared_size(path, n_leads, n_samples)
    needed = n_leads * n_samples
    # Philips writes all 16 front-end channels in some files: extra whole channels are fine.
    if values.size < needed or values.size % n_samples:
        raise ReadError(
            path,
            f"waveform data holds {values.size} samples, expected {needed} "
            f"({n_leads} leads x {n_samples} samples)",
        )
    return values[:needed].reshape(n_leads, n_samples)


def _limb_leads_are_residuals(
    labels: tuple[str, ...], raw: np.ndarray, *, compressed: bool
) -> bool:
    """Whether III, aVR, aVL, aVF hold Philips' residuals rather than the leads themselves.

    XLI data always does (every published decoder reconstructs them). For uncompressed data
    the format does not say, so pick the reading under which Einthoven's law holds: stored
    residuals make ``III_stored`` small, stored leads make ``III_stored`` close to II - I.
    """
    if not all(name in labels for name in ("I", "II", *_LIMB_RESIDUALS)):
        return False
    if compressed:
        return True
    lead_i, lead_ii, lead_iii = (raw[labels.index(n)] for n in ("I", "II", "III"))
    as_residual = np.abs(lead_iii).mean()
    as_lead = np.abs(lead_iii - (lead_ii - lead_i)).mean()
    return bool(as_residual < as_lead)


def _reconstruct_limb_leads(labels: tuple[str, ...], raw: np.ndarray) -> np.ndarray:
    """Rebuild III, aVR, aVL and aVF from I, II and the stored residuals.

    III = II - I - r3;  aVR = -rR - (I + II)/2;  aVL = (I - III)/2 - rL;  aVF = (II + III)/2 - rF,
    with integer division truncating towards zero as in the C# and Java reference decoders
    (Philips' own aECG export of the shared 1.04 file matches truncation, not flooring).
    """
    out = raw.copy()
    i, ii = raw[labels.index("I")], raw[labels.index("II")]
    iii = ii - i - raw[labels.index("III")]
    out[labels.index("III")] = iii
    out[labels.index("aVR")] = -raw[labels.index("aVR")] - _half(i + ii)
    out[labels.index("aVL")] = _half(i - iii) - raw[labels.index("aVL")]
    out[labels.index("aVF")] = _half(ii + iii) - raw[labels.index("aVF")]
    return out


def _half(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * (np.abs(values) // 2)  # integer halving, truncated towards zero


def _flip_inverted_avr(raw: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """A channel labelled -aVR (Cabrera order) is aVR negated: store it as aVR."""
    if "-aVR" not in labels or "aVR" in labels:
        return raw, labels
    index = labels.index("-aVR")
    raw = raw.copy()
    raw[index] = -raw[index]
    return raw, [*labels[:index], "aVR", *labels[index + 1 :]]


def _calibration_start(raw: np.ndarray) -> int:
    """Index where Philips' calibration trailer begins, or the length if there is none.

    The trailer is the longest run at the end in which every channel holds exactly the same
    value, provided that run contains a non-zero pulse. Real ECG leads are never identical
    sample for sample (aVR alone has the opposite polarity of II), so nothing else is cut.
    """
    n = raw.shape[1]
    if raw.shape[0] < 2:
        return n
    same = np.all(raw == raw[0], axis=0)
    if not same[-1]:
        return n
    differing = np.flatnonzero(~same)
    start = int(differing[-1]) + 1 if differing.size else 0
    if not np.any(raw[0, start:] != 0):
        return n
    return start


# -- representative beats -------------------------------------------------------------------


def _read_median(
    path: Path, waveforms: ET.Element | None, extra: dict[str, Any]
) -> tuple[np.ndarray, float, tuple[str, ...], np.ndarray | None]:
    repbeats = waveforms.find("repbeats") if waveforms is not None else None
    if repbeats is None or not repbeats.findall("repbeat"):
        raise ReadError(path, "no representative beats (waveforms/repbeats) in this file")
    beats = repbeats.findall("repbeat")
    if (repbeats.get("compression") or "").strip():
        raise ReadError(
            path, f"unsupported representative-beat compression {repbeats.get('compression')!r}"
        )
    fs = _number(path, repbeats.get("samplespersec"), "repbeats samplespersec")
    if fs is None:
        raise ReadError(path, "repbeats has no samplespersec attribute")
    _check_fs(path, fs)
    resolution = _number(path, repbeats.get("resolution"), "repbeats resolution")
    if resolution is None or not resolution > 0:
        raise ReadError(
            path, f"repbeats resolution must be a positive number of uV, got {resolution}"
        )
    encoding = repbeats.get("dataencoding", "Base64")

    labels: list[str] = []
    rows: list[np.ndarray] = []
    for beat in beats:
        name = beat.get("leadname")
        if not name:
            raise ReadError(path, "a repbeat element has no leadname")
        # 1.04 keeps the samples in a <waveform duration=...> child; 1.03 in the repbeat itself.
        holder = beat.find("waveform")
        holder = holder if holder is not None else beat
        if encoding == "Plain":
            try:
                values = np.array((holder.text or "").split(), dtype=np.int64)
            except ValueError:
                raise ReadError(path, f"repbeat {name}: a value is not an integer") from None
        else:
            data = _decode_bytes(path, holder.text, encoding, f"repbeat {name}")
            if len(data) % 2:
                raise ReadError(
                    path, f"repbeat {name}: odd number of bytes ({len(data)}); truncated?"
                )
            values = np.frombuffer(data, dtype="<i2").astype(np.int64)
        duration = _number(path, holder.get("duration"), f"repbeat {name} duration")
        if duration is not None and values.size != round(duration * fs / 1000):
            raise ReadError(
                path,
                f"repbeat {name} holds {values.size} samples, its duration of {duration:g} ms at "
                f"{fs:g} Hz means {round(duration * fs / 1000)}",
            )
        labels.append(name)
        rows.append(values)
    lengths = {row.size for row in rows}
    if len(lengths) != 1 or 0 in lengths:
        raise ReadError(
            path, f"representative beats differ in length or are empty: {sorted(lengths)}"
        )
    raw = np.stack(rows)
    raw, labels = _flip_inverted_avr(raw, labels)
    padded = raw == PAD_VALUE
    stored = raw.shape[1]
    used = np.flatnonzero(~padded.all(axis=0))
    if used.size == 0:
        raise ReadError(path, "the representative beats hold only padding (32767)")
    end = int(used[-1]) + 1
    raw, padded = raw[:, :end], padded[:, :end]
    signal = raw * (resolution / 1000.0)
    extra.update(
        resolution_uV=resolution,
        stored_samples=stored,
        padding_trimmed_samples=stored - end,
        repbeat_method=repbeats.get("repbeatmethod"),
    )
    mask = ~padded if padded.any() else None
    return signal, fs, _canonical(path, labels), mask


# -- metadata -------------------------------------------------------------------------------


def _metadata(root: ET.Element) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metadata fields and the ``extra`` dict; unparseable optional values are left out."""
    acquisition = root.find("dataacquisition")
    acquired = _datetime(acquisition) or _datetime(root.find("reportinfo"))
    patient = root.find("patient/generalpatientdata")
    machine = root.find("dataacquisition/machine")
    document_name = text(root, "documentinfo/documentname")
    record_id = (
        document_name[:-4]
        if document_name and document_name.lower().endswith(".xml")
        else document_name
    )

    interpretation = root.find("interpretations/interpretation")
    statements: list[list[str]] = []
    if interpretation is not None:
        for statement in interpretation.findall("statement"):
            left = text(statement, "leftstatement") or ""
            right = text(statement, "rightstatement") or ""
            if left or right:
                statements.append([left, right])
    rendered = "; ".join(
        f"{left} ({right})" if left and right else left or right for left, right in statements
    )
    signal_info = root.find("dataacquisition/signalcharacteristics")
    extra: dict[str, Any] = {
        "document_type": text(root, "documentinfo/documenttype"),
        "document_version": text(root, "documentinfo/documentversion"),
        "status": root.get("status"),
        "machine_id": machine.get("machineid") if machine is not None else None,
        "machine_detail": (machine.get("detaildescription") or None)
        if machine is not None
        else None,
        "acquisition_type": text(signal_info, "acquisitiontype"),
        "severity": text(interpretation, "severity"),
        "statements": statements,
        "signature_line": text(interpretation, "mdsignatureline"),
        "reason_for_order": text(root, "orderinfo/reasonfororder"),
        **_bandwidth(signal_info),
    }
    fields = {
        "record_id": record_id,
        "patient_id": text(patient, "patientid"),
        "age": _age(patient, acquired),
        "sex": _SEXES.get((text(patient, "sex") or "").lower()),
        "acquired": acquired,
        "device": machine.text.strip()
        if machine is not None and machine.text and machine.text.strip()
        else None,
        "interpretation": rendered or None,
    }
    return fields, extra


def _bandwidth(signal_info: ET.Element | None) -> dict[str, Any]:
    """Acquisition filter settings: ``hipass``/``lowpass`` (1.04) or ``signalbandwidth`` (1.03)."""
    highpass, lowpass = text(signal_info, "hipass"), text(signal_info, "lowpass")
    band = text(signal_info, "signalbandwidth")
    if highpass is None and lowpass is None and band and band.count("-") == 1:
        highpass, lowpass = band.split("-")
    out: dict[str, Any] = {}
    for key, value in (("highpass_hz", highpass), ("lowpass_hz", lowpass)):
        try:
            out[key] = float(value) if value is not None else None
        except ValueError:
            out[key] = None
    notch = text(signal_info, "notchfiltered")
    out["notch_filtered"] = None if notch is None else notch == "True"
    return out


def _datetime(element: ET.Element | None) -> datetime | None:
    if element is None or not element.get("date"):
        return None
    stamp = element.get("date", "").strip() + "T" + (element.get("time") or "00:00:00").strip()
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _age(patient: ET.Element | None, acquired: datetime | None) -> float | None:
    """Age in years from ``age/years|months|weeks|days`` or the date of birth.

    ``age/@defaultage`` is not the patient's age: it is the value the analysis program assumes
    when none was entered, so it is ignored.
    """
    if patient is None:
        return None
    per_year = {"years": 1.0, "months": 12.0, "weeks": 52.1775, "days": 365.25, "hours": 8766.0}
    for unit, factor in per_year.items():
        value = text(patient, f"age/{unit}")
        if value is not None:
            try:
                age = float(value) / factor
            except ValueError:
                return None
            return age if 0 <= age <= 150 else None
    birth = text(patient, "age/dateofbirth") or text(patient, "dateofbirth")
    if birth is None or acquired is None:
        return None
    try:
        born = date.fromisoformat(birth)
    except ValueError:
        return None
    day = acquired.date()
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return float(years) if 0 <= years <= 150 else None


# -- helpers --------------------------------------------------------------------------------


def _decode_bytes(path: Path, payload: str | None, encoding: str, what: str) -> bytes:
    """Base64 or hex text to bytes, with a specific error for empty or damaged data."""
    compact = "".join((payload or "").split())
    if not compact:
        raise ReadError(path, f"{what} holds no data")
    if encoding == "Base64":
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReadError(path, f"{what}: base64 data is corrupt or truncated ({exc})") from None
    if encoding == "Hex":
        try:
            return bytes.fromhex(compact)
        except ValueError as exc:
            raise ReadError(path, f"{what}: hex data is corrupt or truncated ({exc})") from None
    raise ReadError(
        path, f"{what}: unsupported dataencoding {encoding!r} (known: Base64, Hex, Plain)"
    )


def _canonical(path: Path, labels: list[str]) -> tuple[str, ...]:
    names = []
    for label in labels:
        try:
            names.append(canonical_lead(label, source=str(path)))
        except ValidationError:
            # IEC chest-lead names C1..C9 (and C3R..) are V1..V9 under another name.
            if label[:1] == "C" and label[1:].rstrip("R").isdigit():
                names.append(canonical_lead("V" + label[1:], source=str(path)))
            else:
                raise ReadError(path, f"lead {label!r} is not a known lead name") from None
    if len(set(names)) != len(names):
        raise ReadError(path, f"lead names repeat: {' '.join(labels)}")
    return tuple(names)


def _number(path: Path, value: str | None, what: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ReadError(path, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ReadError(path, f"{what} is not a finite number: {value!r}")
    return number


def _integer(path: Path, value: str | None, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ReadError(path, f"{what} is not an integer: {value!r}") from None


def _check_fs(path: Path, fs: float) -> None:
    if not MIN_FS <= fs <= MAX_FS:
        raise ReadError(
            path, f"sampling rate {fs:g} Hz is outside the plausible range {MIN_FS:g}-{MAX_FS:g} Hz"
        )
