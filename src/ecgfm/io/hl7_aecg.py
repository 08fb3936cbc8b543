"""HL7 annotated ECG (aECG, HL7 v3 ``PORT_MT020001``): the XML format of FDA ECG submissions.

The parts read here (HL7 aECG Implementation Guide, 2005)::

    AnnotatedECG
      id, effectiveTime
      componentOf/timepointEvent/componentOf/subjectAssignment/subject/trialSubject
          id (the subject), subjectDemographicPerson (administrativeGenderCode, birthTime)
      controlVariable/relatedObservation  code 21612-7 "Reported Age"
      component/series                    code RHYTHM
          author/seriesAuthor             manufacturedSeriesDevice, manufacturerOrganization
          component/sequenceSet           one set of simultaneously recorded sequences
              component/sequence          code TIME_ABSOLUTE (GLIST_TS) or TIME_RELATIVE (GLIST_PQ):
                                          head + increment give the start and the sample period
              component/sequence          code MDC_ECG_LEAD_*, value SLIST_PQ:
                                          physical value = origin + scale * digit
          subjectOf/annotationSet         statements (MDC_ECG_INTERPRETATION_STATEMENT,
                                          MDC_ECG_RHY) and global measurements
          derivation/derivedSeries        code REPRESENTATIVE_BEAT (the median beats), same layout

Design decisions:

* Leads of unequal length (within a sequence set, or in several sequence sets that start at
  different times, as 3-channel carts write them) are placed on one time axis and the samples a
  lead does not cover are *masked* (``ECG.mask``), rather than refused or silently truncated.
* Several sequence sets are aligned by their ``head`` times; a lead that appears in more than
  one set is merged, and refused if two sets claim the same instant for it.
* A trailing run of int16 fill values (``32767`` or ``-32768``) is "no data" padding: Philips'
  aECG converter keeps the 32767 filler after its 1.2 s representative beats. Padding shared by
  every lead is cut off; padding of single leads is masked.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError
from ecgfm.io._limits import check_declared_size
from ecgfm.io._xml import parse_xml
from ecgfm.leads import canonical_lead
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit

# HL7 ActCode series codes for the two kinds of waveform a file may carry.
SERIES_CODES = {"rhythm": "RHYTHM", "median": "REPRESENTATIVE_BEAT"}
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")

# UCUM units (case as UCUM writes them, plus the micro-sign spellings seen in the wild).
_TO_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6}
_AGE_UNITS_TO_YEARS = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25, "h": 1 / 8766}
_REPORTED_AGE = "21612-7"  # LOINC "Age - Reported"

# HL7 TS: YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]
_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d+))?(?:([+-])(\d{2})(\d{2}))?$"
)
_INT16_FILL = (32767.0, -32768.0)


def read_hl7_aecg(path: Path, *, waveform: str = "rhythm") -> ECG:
    """Read an HL7 aECG XML file into an :class:`~ecgfm.ECG`.

    Args:
        path: an XML file whose root element is ``AnnotatedECG`` (namespace ``urn:hl7-org:v3``).
        waveform: ``"rhythm"`` (default) for the ``RHYTHM`` series, ``"median"`` for the
            ``REPRESENTATIVE_BEAT`` series (a ``series`` or a ``derivedSeries``). When a file
            holds several series of that kind, the first is read.

    Returns:
        The record: float32 ``[leads, samples]`` in mV (``origin + scale * digits``, converted
        from uV/mV/V), ``fs`` from the time sequence's increment, leads in file order with
        canonical names. Samples a lead does not cover are masked (see the module notes).
        ``meta.patient_id`` is the trial subject id, ``meta.acquired`` the first sample's time,
        ``meta.interpretation`` the statements of the annotation sets (one per line),
        ``meta.extra["measurements"]`` the series' global measurements as
        ``{code: (value, unit)}``.

    Raises:
        ReadError: not an aECG document, no waveform series (``empty.xml``), no series of the
            requested kind, no time sequence or a non-positive increment, unknown lead codes or
            units, non-numeric digits, sequence sets that cannot be aligned.

    >>> ecg = read_hl7_aecg(Path("subject1_0.xml"))  # doctest: +SKIP
    >>> ecg.fs, ecg.n_samples, ecg.leads[:3]  # doctest: +SKIP
    (500.0, 5000, ('I', 'II', 'V1'))
    """
    path = Path(path)
    if waveform not in SERIES_CODES:
        raise ReadError(path, f"waveform must be 'rhythm' or 'median', got {waveform!r}")
    root = parse_xml(path)
    if root.tag != "AnnotatedECG":
        raise ReadError(
            path, f"root element is <{root.tag}>, not <AnnotatedECG>: not an HL7 aECG file"
        )

    series, parent, n_matching = _choose_series(path, root, waveform)
    sets = series.findall("component/sequenceSet")
    if not sets:
        raise ReadError(path, f"the {_code(series)} series has no sequenceSet (no waveform data)")
    decoded = [_decode_sequence_set(path, s, i) for i, s in enumerate(sets)]
    signal, mask, fs, leads, notes = _assemble(path, decoded)

    # The first sample's time; else the series' (or its parent's) effective time; else the
    # document's, which is the time of the finding rather than of the recording.
    starts = [d.start for d in decoded if isinstance(d.start, datetime)]
    acquired = min(starts) if starts else _series_time(series)  # _assemble checked they compare
    if acquired is None and parent is not None:
        acquired = _series_time(parent)
    if acquired is None:
        acquired = _series_time(root)
    extra: dict[str, Any] = {"waveform": waveform, "series_code": _code(series), **notes}
    if n_matching > 1:
        extra["matching_series"] = n_matching
    if len(sets) > 1:
        extra["sequence_sets"] = len(sets)
    doc_id = _ii(root.find("id"))
    if doc_id:
        extra["id"] = doc_id
    effective = {
        k: e.get("value")
        for k in ("low", "high", "center")
        if (e := root.find(f"effectiveTime/{k}")) is not None and e.get("value")
    }
    if effective:
        extra["effective_time"] = effective

    person = root.find(".//trialSubject/subjectDemographicPerson")
    birth = (
        _parse_ts(person.find("birthTime").get("value"))
        if person is not None and person.find("birthTime") is not None
        else None
    )
    if birth is not None:
        extra["birth_date"] = birth.date().isoformat()
    age = _reported_age(root, extra)
    if age is None and birth is not None and acquired is not None:
        age = _completed_years(birth, acquired)
    if age is not None and not 0 <= age <= 150:
        extra["age_as_written"] = age
        age = None

    device, software = _device(series)
    if device is None and parent is not None:
        device, software = _device(parent)
    if software:
        extra["device_software"] = software
    measurements = _measurements(series)
    if measurements:
        extra["measurements"] = measurements
    comment = _text(root.find("pertainsTo/subjectFindingComment/text"))
    if comment:
        extra["subject_finding_comment"] = comment

    statements = _statements(root)
    meta = Metadata(
        record_id=_id_text(root.find("id")) or path.stem,
        patient_id=_id_text(root.find(".//trialSubject/id")),
        age=age,
        sex=_sex(person),
        acquired=acquired,
        device=device,
        source_format="hl7_aecg",
        source_path=str(path),
        interpretation="\n".join(statements) or None,
        extra=extra,
    )
    return ECG(signal, fs, leads, meta, mask)


# -- series and sequence sets ----------------------------------------------------------------


def _code(element: ET.Element | None) -> str:
    found = element.find("code") if element is not None else None
    return (found.get("code") or "").strip() if found is not None else ""


def _choose_series(
    path: Path, root: ET.Element, waveform: str
) -> tuple[ET.Element, ET.Element | None, int]:
    """The first series of the wanted kind, its parent (for a derivedSeries), how many match."""
    candidates: list[tuple[ET.Element, ET.Element | None]] = []
    for series in root.iter("series"):
        candidates.append((series, None))
        candidates.extend((derived, series) for derived in series.iter("derivedSeries"))
    if not candidates:
        raise ReadError(path, "no waveform series: the document has no <series> element")
    want = SERIES_CODES[waveform]
    matching = [(s, p) for s, p in candidates if _code(s) == want]
    if not matching:
        have = ", ".join(sorted({_code(s) or "(no code)" for s, _ in candidates}))
        raise ReadError(path, f"no {want} series for waveform={waveform!r} (the file has: {have})")
    series, parent = matching[0]
    return series, parent, len(matching)


class _SequenceSet:
    """One decoded sequence set: lead -> samples in mV, the rate, the first sample's time."""

    def __init__(self, leads: dict[str, np.ndarray], fs: float, start: datetime | float) -> None:
        self.leads = leads
        self.fs = fs
        self.start = start  # datetime (TIME_ABSOLUTE) or seconds (TIME_RELATIVE)


def _decode_sequence_set(path: Path, sequence_set: ET.Element, index: int) -> _SequenceSet:
    where = f"sequence set {index + 1}"
    fs: float | None = None
    start: datetime | float | None = None
    leads: dict[str, np.ndarray] = {}
    for sequence in sequence_set.findall("component/sequence"):
        code = _code(sequence)
        value = sequence.find("value")
        kind = value.get("type", "") if value is not None else ""
        if code in _TIME_CODES:
            if fs is not None:
                raise ReadError(path, f"{where}: more than one time sequence")
            fs, start = _time_axis(path, where, code, value, kind)
            continue
        if value is None:
            raise ReadError(path, f"{where}: sequence {code or '(no code)'} has no value")
        if kind and kind != "SLIST_PQ":
            raise ReadError(
                path,
                f"{where}: sequence {code or '(no code)'} is of type {kind}; "
                "only SLIST_PQ leads are supported",
            )
        try:
            lead = canonical_lead(code, source=str(path))
        except ValidationError:
            raise ReadError(
                path,
                f"{where}: sequence code {code!r} is not a known ECG lead "
                "(expected MDC_ECG_LEAD_I, ..._AVF, ..._V6 and the like)",
            ) from None
        if lead in leads:
            raise ReadError(path, f"{where}: lead {lead} appears twice")
        leads[lead] = _decode_lead(path, f"{where}, lead {lead}", value)
    if fs is None or start is None:
        raise ReadError(
            path, f"{where}: no TIME_ABSOLUTE or TIME_RELATIVE sequence gives the sampling interval"
        )
    if not leads:
        raise ReadError(path, f"{where}: no lead sequences (MDC_ECG_LEAD_*)")
    return _SequenceSet(leads, fs, start)


def _time_axis(
    path: Path, where: str, code: str, value: ET.Element | None, kind: str
) -> tuple[float, datetime | float]:
    if value is None or value.find("increment") is None:
        raise ReadError(
            path,
            f"{where}: the {code} sequence has no <increment> ({kind or 'no type'}); only regularly "
            "sampled GLIST_TS / GLIST_PQ time axes are supported",
        )
    increment = value.find("increment")
    period = _seconds(path, where, increment, "increment")
    if not (math.isfinite(period) and period > 0):
        raise ReadError(
            path,
            f"{where}: time increment {increment.get('value')!r} "
            f"{increment.get('unit') or ''} is not positive",
        )
    fs = 1.0 / period
    # 1 / 0.002 is 499.99999999999994 in floating point; rates are whole or rational numbers.
    fs = round(fs, 6)
    head = value.find("head")
    if code == "TIME_ABSOLUTE":
        start = _parse_ts(head.get("value")) if head is not None else None
        if start is None:
            raise ReadError(
                path,
                f"{where}: TIME_ABSOLUTE sequence has no valid head time "
                f"({head.get('value') if head is not None else 'missing'})",
            )
        return fs, start
    return fs, (_seconds(path, where, head, "head") if head is not None else 0.0)


def _seconds(path: Path, where: str, element: ET.Element, name: str) -> float:
    raw, unit = element.get("value"), (element.get("unit") or "s").strip()
    if unit not in _TO_SECONDS:
        raise ReadError(
            path, f"{where}: time {name} unit {unit!r} is not a time unit (expected s, ms or us)"
        )
    try:
        return float(raw) * _TO_SECONDS[unit]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReadError(path, f"{where}: time {name} value {raw!r} is not a number") from None


def _physical(
    path: Path, where: str, element: ET.Element | None, name: str, default: float | None
) -> float:
    """A PQ voltage (origin or scale) in mV."""
    if element is None:
        if default is None:
            raise ReadError(path, f"{where}: SLIST_PQ has no <{name}>")
        return default
    raw, unit = element.get("value"), (element.get("unit") or "").strip()
    factor = mv_per_unit(unit)
    if factor is None:
        raise ReadError(
            path, f"{where}: {name} unit {unit!r} is not a voltage unit (expected uV, mV or V)"
        )
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReadError(path, f"{where}: {name} value {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ReadError(path, f"{where}: {name} value {raw!r} is not finite")
    return value * factor


def _decode_lead(path: Path, where: str, value: ET.Element) -> np.ndarray:
    origin = _physical(path, where, value.find("origin"), "origin", 0.0)
    scale = _physical(path, where, value.find("scale"), "scale", None)
    if scale == 0:
        raise ReadError(path, f"{where}: scale is 0")
    digits_el = value.find("digits")
    tokens = (digits_el.text or "").split() if digits_el is not None else []
    if not tokens:
        raise ReadError(path, f"{where}: no samples (empty <digits>)")
    try:
        digits = np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise ReadError(path, f"{where}: digits contain {bad!r}, which is not a number") from None
    if not np.isfinite(digits).all():
        raise ReadError(path, f"{where}: digits contain non-finite values")
    # Trailing int16 extremes are "no data" filler (see the module notes); keep them as NaN so
    # that _assemble can cut or mask them.
    end = len(digits)
    if digits[-1] in _INT16_FILL:
        while end > 0 and digits[end - 1] == digits[-1]:
            end -= 1
    samples = origin + scale * digits
    samples[end:] = np.nan
    return samples


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _assemble(
    path: Path, sets: list[_SequenceSet]
) -> tuple[np.ndarray, np.ndarray | None, float, list[str], dict[str, Any]]:
    """Place every set's leads on one time axis; uncovered samples become masked."""
    rates = {s.fs for s in sets}
    if len(rates) > 1:
        raise ReadError(
            path,
            "sequence sets have different sampling rates "
            f"({', '.join(f'{r:g}' for r in sorted(rates))} Hz)",
        )
    fs = sets[0].fs
    if len(sets) == 1:
        offsets = [0]
    else:
        kinds = {type(s.start) for s in sets}
        if len(kinds) > 1:
            raise ReadError(
                path, "sequence sets mix absolute and relative time axes; they cannot be aligned"
            )
        try:
            first = min(s.start for s in sets)  # type: ignore[type-var]
            deltas = [s.start - first for s in sets]  # type: ignore[operator]
        except TypeError:  # head times with and without a time zone
            raise ReadError(
                path, "sequence sets mix head times with and without a time zone"
            ) from None
        offsets = [
            round((d.total_seconds() if isinstance(d, timedelta) else float(d)) * fs)
            for d in deltas
        ]
    n_samples = max(
        off + len(x) for s, off in zip(sets, offsets, strict=True) for x in s.leads.values()
    )
    leads: list[str] = []
    for s in sets:
        leads.extend(lead for lead in s.leads if lead not in leads)
    check_declared_size(path, len(leads), n_samples)

    signal = np.full((len(leads), n_samples), np.nan)
    for i, s in enumerate(sets):
        for lead, samples in s.leads.items():
            row = signal[leads.index(lead), offsets[i] : offsets[i] + len(samples)]
            clash = np.isfinite(row) & np.isfinite(samples)
            if clash.any():
                raise ReadError(
                    path,
                    f"lead {lead} is recorded twice over the same time "
                    f"(sequence set {i + 1} overlaps an earlier one)",
                )
            np.copyto(row, samples, where=np.isfinite(samples))
    observed = np.isfinite(signal)
    notes: dict[str, Any] = {}
    # Cut the padding every lead shares (e.g. Philips' 32767 filler after median beats).
    covered = np.flatnonzero(observed.any(axis=0))
    if covered.size == 0:
        raise ReadError(path, "every sample is int16 fill (32767/-32768): no data")
    keep = covered[-1] + 1
    if keep < n_samples:
        notes["fill_samples_removed"] = int(n_samples - keep)
        signal, observed = signal[:, :keep], observed[:, :keep]
    mask = None if observed.all() else observed
    if mask is not None:
        signal = np.where(observed, signal, 0.0)
        partial = [lead for lead, row in zip(leads, observed, strict=True) if not row.all()]
        notes["masked_leads"] = partial
    return signal.astype(np.float32), mask, fs, leads, notes


# -- metadata --------------------------------------------------------------------------------


def _parse_ts(raw: str | None) -> datetime | None:
    """An HL7 TS (``YYYYMMDDHHMMSS.UUUU[+ZZzz]``, any trailing precision may be missing)."""
    match = _TS.match((raw or "").strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, sign, tzh, tzm = match.groups()
    try:
        tz = None
        if sign:
            offset = timedelta(hours=int(tzh), minutes=int(tzm))
            tz = timezone(offset if sign == "+" else -offset)
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(round(float(f"0.{fraction}") * 1e6)) if fraction else 0,
            tzinfo=tz,
        )
    except ValueError:
        return None


def _series_time(series: ET.Element) -> datetime | None:
    """The start of an element's effectiveTime (an IVL_TS: low, else center, else high)."""
    for key in ("low", "center", "high"):
        element = series.find(f"effectiveTime/{key}")
        if element is not None and (ts := _parse_ts(element.get("value"))) is not None:
            return ts
    return None


def _ii(element: ET.Element | None) -> dict[str, str]:
    """An HL7 instance identifier (II) as ``{"root": ..., "extension": ...}``, parts present."""
    if element is None:
        return {}
    return {k: v.strip() for k in ("root", "extension") if (v := element.get(k)) and v.strip()}


def _id_text(element: ET.Element | None) -> str | None:
    # The extension is the identifier within the namespace that the root (an OID) names.
    ii = _ii(element)
    return ii.get("extension") or ii.get("root")


def _text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    value = " ".join("".join(element.itertext()).split())
    return value or None


def _sex(person: ET.Element | None) -> str | None:
    code = person.find("administrativeGenderCode") if person is not None else None
    value = (code.get("code") or "").strip().upper() if code is not None else ""
    return value if value in ("M", "F") else None


def _reported_age(root: ET.Element, extra: dict[str, Any]) -> float | None:
    for observation in root.iter("relatedObservation"):
        if _code(observation) != _REPORTED_AGE:
            continue
        value = observation.find("value")
        if value is None or not value.get("value"):
            return None
        unit = (value.get("unit") or "a").strip()
        try:
            number = float(value.get("value"))  # type: ignore[arg-type]
        except ValueError:
            extra["age_as_written"] = value.get("value")
            return None
        if unit not in _AGE_UNITS_TO_YEARS:
            extra["age_as_written"] = f"{number:g} {unit}"
            return None
        return number * _AGE_UNITS_TO_YEARS[unit]
    return None


def _completed_years(birth: datetime, at: datetime) -> float:
    years = at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))
    return float(years)


def _device(series: ET.Element) -> tuple[str | None, str | None]:
    author = series.find("author/seriesAuthor")
    if author is None:
        return None, None
    device = author.find("manufacturedSeriesDevice")
    organisation = _text(author.find("manufacturerOrganization/name"))
    model = _text(device.find("manufacturerModelName")) if device is not None else None
    software = _text(device.find("softwareName")) if device is not None else None
    name = " ".join(p for p in (organisation, model) if p) or None
    return name, software


def _measurements(series: ET.Element) -> dict[str, tuple[float, str | None]]:
    """Global numeric annotations (those directly in an annotation set, not inside a beat)."""
    out: dict[str, tuple[float, str | None]] = {}
    for annotation in series.findall("subjectOf/annotationSet/component/annotation"):
        value = annotation.find("value")
        code = _code(annotation)
        if value is None or value.get("type") != "PQ" or not code or code in out:
            continue
        try:
            number = float(value.get("value"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        out[code] = (number, value.get("unit"))
    return out


def _statements(root: ET.Element) -> list[str]:
    """Interpretation statements and rhythm calls from every annotation set, in order, once each."""
    lines: list[str] = []
    for annotation in root.iter("annotation"):
        code = _code(annotation)
        value = annotation.find("value")
        if value is None:
            continue
        text: str | None = None
        if code.startswith("MDC_ECG_INTERPRETATION") and value.get("type") == "ST":
            text = _text(value)
        elif code == "MDC_ECG_RHY" and value.get("type") == "CE":
            text = (value.get("displayName") or value.get("code") or "").strip() or None
        if text:
            # Converters pad empty statement fields with ", " (e.g. "SINUS BRADYCARDIA, , ").
            text = text.rstrip(" ,")
        if text and text not in lines:
            lines.append(text)
    return lines
