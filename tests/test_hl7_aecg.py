"""HL7 aECG reader: the HL7 reference example, the FDA eCTD variants, the minimum examples, a
Philips-converted aECG, and hand-written edge cases."""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import ecgfm
from conftest import data_path
from ecgfm import ReadError
from ecgfm.io.hl7_aecg import read_hl7_aecg

FDA_ORDER = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF")
STANDARD_ORDER = ecgfm.STANDARD_12
MINIMUM_DIGITS = [-2, -2, -2, -2, -3, -4, -3, -5, -5, -4, -6, -9, -9]  # written in minimum_aecg.xml


def _examples(name: str) -> Path:
    return data_path("formats", "hl7_aecg", "examples", "examples", name)


def _fda(name: str) -> Path:
    return data_path("formats", "hl7_aecg", "ectd_example", "aecg", name)


def _regex_digits(path: Path) -> list[tuple[str, np.ndarray]]:
    """Every lead's digits, found with a regular expression rather than an XML parser."""
    found = re.findall(
        r'code="MDC_ECG_LEAD_(\w+)".*?<digits>(.*?)</digits>', path.read_text("utf-8"), re.S
    )
    return [(lead, np.array(digits.split(), dtype=float)) for lead, digits in found]


# -- the minimum examples ----------------------------------------------------------------------


def test_empty_document_is_a_clear_error() -> None:
    path = _examples("empty.xml")
    with pytest.raises(ReadError, match="no waveform series") as info:
        ecgfm.read(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "minimum_aecg.xml",
        "minimum_aecg_effectiveTime_high.xml",
        "minimum_aecg_effectiveTime_interval.xml",
        "minimum_aecg_effectiveTime_low.xml",
        "minimum_aecg_nouuid.xml",
    ],
)
def test_minimum_examples(name: str) -> None:
    path = _examples(name)
    assert ecgfm.detect_format(path) == "hl7_aecg"
    ecg = ecgfm.read(path)
    assert ecg.leads == ("II",)
    assert ecg.fs == 500.0
    assert ecg.n_samples == 13
    # scale 2.5 uV per digit, origin 0 -> mV
    np.testing.assert_allclose(ecg.signal[0], np.array(MINIMUM_DIGITS) * 0.0025, rtol=0, atol=1e-7)
    assert ecg.mask is None
    assert ecg.meta.patient_id == "SBJ-123"
    # The first sample's time (TIME_ABSOLUTE head) whatever the document's effectiveTime says.
    assert ecg.meta.acquired == datetime(2002, 11, 22, 9, 10, 0)
    assert ecg.meta.source_format == "hl7_aecg"
    expected_id = (
        "minimum_aecg_nouuid"
        if name.endswith("nouuid.xml")
        else "61d1a24f-b47e-41aa-ae95-f8ac302f4eeb"
    )
    assert ecg.meta.record_id == expected_id
    assert (
        ecg.meta.extra["effective_time"]
        == {
            "minimum_aecg.xml": {"center": "20021122091000"},
            "minimum_aecg_effectiveTime_high.xml": {"high": "20021122091010"},
            "minimum_aecg_effectiveTime_interval.xml": {
                "low": "20021122091000",
                "high": "20021122091010",
            },
            "minimum_aecg_effectiveTime_low.xml": {"low": "20021122091000"},
            "minimum_aecg_nouuid.xml": {"center": "20021122091000"},
        }[name]
    )


def test_minimum_example_has_no_median() -> None:
    with pytest.raises(ReadError, match=r"no REPRESENTATIVE_BEAT series .*has: RHYTHM"):
        ecgfm.read(_examples("minimum_aecg.xml"), waveform="median")


# -- the FDA eCTD variants of the HL7 example ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subject", "hour"),
    [
        ("subject1_0.xml", "subject1", 9),
        ("subject1_1.xml", "subject1", 10),
        ("subject1_2.xml", "subject1", 11),
        ("subject2_0.xml", "subject2", 9),
        ("subject2_1.xml", "subject2", 10),
        ("subject2_2.xml", "subject2", 11),
    ],
)
def test_fda_variants_rhythm(name: str, subject: str, hour: int) -> None:
    ecg = ecgfm.read(_fda(name))
    assert ecg.leads == FDA_ORDER
    assert ecg.fs == 500.0
    assert ecg.signal.shape == (12, 5000)
    assert ecg.signal.dtype == np.float32
    assert ecg.mask is None
    assert ecg.meta.record_id == name.removesuffix(".xml")
    assert ecg.meta.patient_id == subject
    assert ecg.meta.acquired == datetime(2002, 11, 22, hour, 10, 0)
    # Amplitude ranges in mV (digits * 2.5 uV).
    assert float(ecg.lead("I").min()) == pytest.approx(-0.305)
    assert float(ecg.lead("I").max()) == pytest.approx(0.415)
    assert float(ecg.lead("V2").min()) == pytest.approx(-1.9275)
    assert float(ecg.lead("V6").max()) == pytest.approx(0.9725)


def test_fda_variant_matches_regex_decoding_and_einthoven() -> None:
    path = _fda("subject1_0.xml")
    rhythm = read_hl7_aecg(path)
    median = read_hl7_aecg(path, waveform="median")
    found = _regex_digits(path)
    assert len(found) == 24  # 12 rhythm leads then 12 median leads
    for ecg, block in ((rhythm, found[:12]), (median, found[12:])):
        for lead, digits in block:
            np.testing.assert_allclose(ecg.lead(lead), digits * 0.0025, rtol=0, atol=1e-6)
    # Einthoven: III = II - I holds to float precision; the augmented leads to half a digit.
    lead_i, lead_ii = rhythm.lead("I").astype(float), rhythm.lead("II").astype(float)
    assert np.abs(rhythm.lead("III") - (lead_ii - lead_i)).max() < 1e-6
    assert np.abs(rhythm.lead("aVR") + (lead_i + lead_ii) / 2).max() <= 0.00125 + 1e-6
    assert np.abs(rhythm.lead("aVF") - (lead_ii - lead_i / 2)).max() <= 0.00125 + 1e-6


def test_fda_variant_metadata_and_median() -> None:
    ecg = read_hl7_aecg(_fda("subject2_1.xml"), waveform="median")
    assert ecg.leads == FDA_ORDER
    assert ecg.signal.shape == (12, 599)
    assert ecg.fs == 500.0
    assert float(ecg.lead("V2").min()) == pytest.approx(-1.7375)
    assert float(ecg.lead("V6").max()) == pytest.approx(0.9575)
    meta = ecg.meta
    assert meta.sex == "M"
    assert meta.age == 46.0  # the "Reported Age" observation, not the age from birthTime (49)
    assert meta.extra["birth_date"] == "1953-05-08"
    assert meta.device == "Mortara Instrument, Inc. ELI250"
    assert meta.extra["device_software"] == "5.3"
    assert meta.interpretation == "Sinus Rhythm"
    assert meta.extra["waveform"] == "median"
    assert meta.extra["series_code"] == "REPRESENTATIVE_BEAT"
    assert meta.extra["measurements"]["MDC_ECG_TIME_PD_QT"] == (420.0, "ms")
    assert meta.extra["measurements"]["MDC_ECG_TIME_PD_QRS"] == (120.0, "ms")
    # acquired comes from the parent RHYTHM series for a derived series without absolute time
    assert meta.acquired == datetime(2002, 11, 22, 10, 10, 0)


def test_hl7_reference_example_from_zip(tmp_path: Path) -> None:
    archive = data_path("formats", "hl7_aecg", "examples", "hl7.zip")
    with zipfile.ZipFile(archive) as zf:
        target = tmp_path / "Example aECG.xml"
        target.write_bytes(zf.read("hl7/2003-12 Schema/example/Example aECG.xml"))
    ecg = ecgfm.read(target)
    assert ecg.leads == FDA_ORDER
    assert ecg.signal.shape == (12, 5000)
    assert ecg.meta.patient_id == "SBJ-123"
    assert ecg.meta.acquired == datetime(2002, 11, 22, 9, 10, 0)
    # The FDA variants are copies of this example with only ids and times changed.
    variant = ecgfm.read(_fda("subject1_0.xml"))
    np.testing.assert_array_equal(ecg.signal, variant.signal)
    median = ecgfm.read(target, waveform="median")
    assert median.signal.shape == (12, 599)


# -- an aECG converted from Philips Sierra XML ---------------------------------------------------


def _philips_converted() -> Path:
    return data_path("formats", "philips_sierra_xml", "ad4d3d80-d165_1-04_converted.xml")


def test_philips_converted_rhythm() -> None:
    ecg = ecgfm.read(_philips_converted())
    assert ecg.leads == STANDARD_ORDER
    assert ecg.fs == 500.0
    assert ecg.signal.shape == (12, 5500)
    assert ecg.mask is None
    # Philips appends a 1 mV, 200 ms calibration pulse after the 10.7 s strip: an independent
    # check of the uV -> mV scaling.
    pulse = ecg.signal[:, 5355:5445]
    np.testing.assert_allclose(pulse.mean(axis=1), 1.0, atol=0.01)
    assert np.abs(ecg.signal[:, 5300:5345]).max() < 0.05
    # The limb leads obey Einthoven/Goldberger (to the converter's rounding) before the pulse.
    lead_i, lead_ii = (ecg.lead(x)[:5350].astype(float) for x in ("I", "II"))
    assert np.corrcoef(ecg.lead("III")[:5350], lead_ii - lead_i)[0, 1] > 0.995
    assert np.corrcoef(ecg.lead("aVR")[:5350], -(lead_i + lead_ii) / 2)[0, 1] > 0.995
    assert np.abs(ecg.lead("III")[:5350] - (lead_ii - lead_i)).max() < 0.035
    assert float(ecg.lead("V3").min()) == pytest.approx(-17.225)  # an artefact spike, as written
    meta = ecg.meta
    assert meta.patient_id == "20044"
    assert meta.sex == "F"
    assert meta.age == 32.0  # Reported Age is empty: from birthTime 1976-01-01 at 2008-12-23
    assert meta.acquired == datetime(2008, 12, 23, 19, 44, 46)
    assert meta.device == "Philips Medical Systems PageWriter Touch"
    assert meta.interpretation == (
        "(SB) SINUS BRADYCARDIA, V-rate<60\n(NPTA) NO PREVIOUS TRACING AVAILABLE FOR COMPARISON"
    )
    assert meta.extra["measurements"]["MDC_ECG_HEART_RATE"] == (41.0, "/min")


def test_philips_converted_median_drops_int16_filler() -> None:
    ecg = ecgfm.read(_philips_converted(), waveform="median")
    # 1200 digits per lead, the last 600 of them the 32767 filler Philips writes after its beats.
    assert ecg.signal.shape == (12, 600)
    assert ecg.mask is None
    assert ecg.meta.extra["fill_samples_removed"] == 600
    assert float(np.abs(ecg.signal).max()) == pytest.approx(1.48)  # V2 minimum, mV
    assert float(ecg.lead("II").max()) == pytest.approx(0.9025)


# -- hand-written edge cases --------------------------------------------------------------------


def _sequence_set(
    leads: dict[str, list[int]],
    *,
    time_code: str = "TIME_ABSOLUTE",
    head: str = '<head value="20200101120000"/>',
    increment: str = '<increment value="0.002" unit="s"/>',
    origin: str = '<origin value="0" unit="uV"/>',
    scale: str = '<scale value="5" unit="uV"/>',
) -> str:
    kind = "GLIST_TS" if time_code == "TIME_ABSOLUTE" else "GLIST_PQ"
    parts = (
        [
            f'<component><sequence><code code="{time_code}"/><value xsi:type="{kind}">{head}{increment}'
            "</value></sequence></component>"
        ]
        if time_code
        else []
    )
    for code, digits in leads.items():
        parts.append(
            f'<component><sequence><code code="{code}"/><value xsi:type="SLIST_PQ">{origin}{scale}'
            f"<digits>{' '.join(map(str, digits))}</digits></value></sequence></component>"
        )
    return "<component><sequenceSet>" + "".join(parts) + "</sequenceSet></component>"


def _document(tmp_path: Path, *sets: str, name: str = "edge.xml") -> Path:
    path = tmp_path / name
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<id root="edge"/><component><series><code code="RHYTHM"/>'
        + "".join(sets)
        + "</series></component></AnnotatedECG>",
        encoding="utf-8",
    )
    return path


RAMP = list(range(-50, 50))  # 100 samples


def test_units_ms_increment_and_millivolt_scale(tmp_path: Path) -> None:
    path = _document(
        tmp_path,
        _sequence_set(
            {"MDC_ECG_LEAD_I": RAMP, "MDC_ECG_LEAD_V1": RAMP},
            time_code="TIME_RELATIVE",
            head='<head value="0" unit="ms"/>',
            increment='<increment value="4" unit="ms"/>',
            origin='<origin value="0.1" unit="mV"/>',
            scale='<scale value="0.000010" unit="V"/>',
        ),
    )
    ecg = ecgfm.read(path)
    assert ecg.fs == 250.0
    assert ecg.meta.acquired is None  # relative time, no effectiveTime anywhere
    # 0.1 mV + digit * 10 uV
    np.testing.assert_allclose(ecg.lead("V1"), 0.1 + np.array(RAMP) * 0.01, atol=1e-6)


def test_unequal_leads_are_masked(tmp_path: Path) -> None:
    path = _document(
        tmp_path, _sequence_set({"MDC_ECG_LEAD_I": RAMP, "MDC_ECG_LEAD_II": RAMP[:60]})
    )
    ecg = ecgfm.read(path)
    assert ecg.signal.shape == (2, 100)
    assert ecg.mask is not None
    assert ecg.mask[0].all()
    assert ecg.mask[1, :60].all() and not ecg.mask[1, 60:].any()
    assert not ecg.signal[1, 60:].any()
    assert ecg.meta.extra["masked_leads"] == ["II"]


def test_sequence_sets_are_aligned_by_head_time(tmp_path: Path) -> None:
    # A 3-channel cart: I, II, III for the first 0.2 s, then V1-V3 for the next 0.2 s, with
    # lead II recorded throughout (split over both sets).
    first = _sequence_set(
        {"MDC_ECG_LEAD_I": RAMP, "MDC_ECG_LEAD_II": RAMP, "MDC_ECG_LEAD_III": RAMP},
        head='<head value="20200101120000.000"/>',
    )
    second = _sequence_set(
        {"MDC_ECG_LEAD_V1": RAMP, "MDC_ECG_LEAD_II": RAMP, "MDC_ECG_LEAD_V3": RAMP},
        head='<head value="20200101120000.200"/>',
    )
    ecg = ecgfm.read(_document(tmp_path, first, second))
    assert ecg.leads == ("I", "II", "III", "V1", "V3")
    assert ecg.n_samples == 200
    assert ecg.meta.acquired == datetime(2020, 1, 1, 12, 0, 0)
    assert ecg.mask is not None
    assert ecg.mask[1].all()  # lead II covers both halves
    assert ecg.mask[0, :100].all() and not ecg.mask[0, 100:].any()
    assert not ecg.mask[3, :100].any() and ecg.mask[3, 100:].all()
    np.testing.assert_allclose(ecg.lead("V1")[100:], np.array(RAMP) * 0.005, atol=1e-7)
    assert ecg.meta.extra["sequence_sets"] == 2


def test_overlapping_sequence_sets_are_refused(tmp_path: Path) -> None:
    first = _sequence_set({"MDC_ECG_LEAD_I": RAMP}, head='<head value="20200101120000.000"/>')
    second = _sequence_set({"MDC_ECG_LEAD_I": RAMP}, head='<head value="20200101120000.100"/>')
    with pytest.raises(ReadError, match="lead I is recorded twice"):
        ecgfm.read(_document(tmp_path, first, second))


@pytest.mark.parametrize(
    ("sequence_set", "message"),
    [
        (_sequence_set({"MDC_ECG_LEAD_FOO": RAMP}), r"'MDC_ECG_LEAD_FOO' is not a known ECG lead"),
        (_sequence_set({"MDC_ECG_LEAD_I": ["1", "2", "x3"]}), r"digits contain 'x3'"),
        (_sequence_set({"MDC_ECG_LEAD_I": []}), r"lead I: no samples"),
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, time_code=""),
            "no TIME_ABSOLUTE or TIME_RELATIVE",
        ),
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, increment='<increment value="0" unit="s"/>'),
            "not positive",
        ),
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, increment='<increment value="2" unit="m"/>'),
            "not a time unit",
        ),
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, scale='<scale value="5" unit="mm[Hg]"/>'),
            "not a voltage unit",
        ),
        (_sequence_set({"MDC_ECG_LEAD_I": RAMP}, scale=""), "SLIST_PQ has no <scale>"),
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, head='<head value="yesterday"/>'),
            "no valid head time",
        ),
        # 1 Hz is below the plausible ECG range: refused by the record contract.
        (
            _sequence_set({"MDC_ECG_LEAD_I": RAMP}, increment='<increment value="1" unit="s"/>'),
            "sampling rate",
        ),
    ],
)
def test_malformed_content_is_a_specific_read_error(
    tmp_path: Path, sequence_set: str, message: str
) -> None:
    path = _document(tmp_path, sequence_set)
    with pytest.raises(ReadError, match=message) as info:
        ecgfm.read(path)
    assert str(info.value).startswith(str(path))


def test_bad_options_and_wrong_root(tmp_path: Path) -> None:
    path = _document(tmp_path, _sequence_set({"MDC_ECG_LEAD_I": RAMP}))
    with pytest.raises(ReadError, match="waveform must be 'rhythm' or 'median'"):
        ecgfm.read(path, waveform="beats")
    other = tmp_path / "other.xml"
    other.write_text("<RestingECG/>")
    with pytest.raises(ReadError, match=r"not <AnnotatedECG>"):
        ecgfm.read(other, format="hl7_aecg")


def test_truncated_real_file(tmp_path: Path) -> None:
    data = _fda("subject1_0.xml").read_bytes()
    path = tmp_path / "truncated.xml"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="malformed XML"):
        ecgfm.read(path)
