"""GE MUSE XML reader, on hand-made fixtures (no MUSE file is public).

The fixtures in ``tests/fixtures/muse`` are written by ``make_fixtures.py`` there from a known
integer waveform, so the decoded values can be asserted exactly.
"""

from __future__ import annotations

import importlib.util
import zlib
from datetime import datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import ecgfm
from ecgfm import ReadError
from ecgfm.io.muse import read_muse_xml

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "muse"
MUSE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "muse_make_fixtures", FIXTURES / "make_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _expected_mv(n: int, fs: float) -> np.ndarray:
    """What the reader must return: the generator's int16 counts * 4.88 uV, in mV."""
    return np.stack([gen.counts(i, n, fs) for i in range(8)]).astype(np.float64) * 4.88e-3


def test_committed_fixtures_match_their_generator() -> None:
    for name, data in gen.build().items():
        assert (FIXTURES / name).read_bytes() == data, f"{name} is stale: run make_fixtures.py"


def test_rhythm_values_and_metadata() -> None:
    path = FIXTURES / "rhythm_8lead_500hz.xml"
    assert ecgfm.detect_format(path) == "muse_xml"
    ecg = ecgfm.read(path)
    assert ecg.leads == MUSE_LEADS  # the 8 stored leads; derivation is ECG.select's job
    assert ecg.fs == 500.0
    assert ecg.signal.shape == (8, 1000)
    assert ecg.signal.dtype == np.float32
    assert ecg.mask is None
    np.testing.assert_allclose(ecg.signal, _expected_mv(1000, 500.0), rtol=1e-6, atol=1e-6)
    # Literal values: the int16 extremes of V6 (sign of little-endian decoding) and lead I at
    # sample 100 (t = 0.2 s): round(50 * sin(2 pi 1.25 0.2)) = 50 counts = 0.244 mV.
    assert ecg.lead("V6")[0] == pytest.approx(-32768 * 4.88e-3)
    assert ecg.lead("V6")[1] == pytest.approx(32767 * 4.88e-3)
    assert ecg.lead("I")[100] == pytest.approx(0.244)
    assert float(ecg.lead("II").max()) == pytest.approx((100 + 10) * 4.88e-3)  # 0.5368 mV
    meta = ecg.meta
    assert meta.source_format == "muse_xml"
    assert meta.patient_id == "MUSE-0001"
    assert meta.age == 63.0
    assert meta.sex == "F"
    assert meta.acquired == datetime(2014, 3, 25, 8, 15, 42)
    assert meta.device == "MAC55"
    # "Sinus rhythm" has no ENDSLINE flag, so it continues on the next statement's line.
    assert meta.interpretation == "Sinus rhythm with 1st degree A-V block\nOtherwise normal ECG"
    assert meta.extra["original_diagnosis"] == "Sinus rhythm\nNormal ECG"
    assert meta.extra["measurements"]["VentricularRate"] == 75.0
    assert "ECGSampleBase" not in meta.extra["measurements"]
    assert meta.extra["birth_date"] == "1951-01-15"
    assert meta.extra["muse_version"] == "8.0.2.10132"


def test_select_derives_the_other_four_limb_leads() -> None:
    ecg = ecgfm.read(FIXTURES / "rhythm_8lead_500hz.xml").select(ecgfm.STANDARD_12)
    assert ecg.leads == ecgfm.STANDARD_12
    expected = _expected_mv(1000, 500.0)
    np.testing.assert_allclose(ecg.lead("III"), expected[1] - expected[0], atol=1e-5)


def test_median_and_rhythm_in_one_file() -> None:
    path = FIXTURES / "median_and_rhythm.xml"
    median = read_muse_xml(path, waveform="median")
    assert median.leads == MUSE_LEADS
    assert median.fs == 500.0
    assert median.signal.shape == (8, 600)
    np.testing.assert_allclose(median.signal, _expected_mv(600, 500.0), rtol=1e-6, atol=1e-6)
    assert median.meta.extra["waveform"] == "median"
    # The Median waveform comes first in the file; the default still reads the Rhythm one.
    rhythm = ecgfm.read(path)
    assert rhythm.fs == 250.0
    assert rhythm.signal.shape == (8, 500)
    np.testing.assert_allclose(rhythm.signal, _expected_mv(500, 250.0), rtol=1e-6, atol=1e-6)
    assert rhythm.meta.age == pytest.approx(1.5)  # 18 MONTHS
    assert rhythm.meta.sex == "M"
    # No ENDSLINE flags at all: one line per statement.
    assert rhythm.meta.interpretation == "Normal sinus rhythm\nNormal ECG"


def test_mismatched_sample_count_fixture() -> None:
    path = FIXTURES / "bad_sample_count.xml"
    with pytest.raises(ReadError) as info:
        ecgfm.read(path)
    assert str(info.value) == (
        f"{path}: Rhythm waveform, lead V3: LeadSampleCountTotal is 1000 but the data holds 998 "
        "samples (truncated or corrupt)"
    )


def test_no_median_waveform() -> None:
    with pytest.raises(ReadError, match=r"no Median waveform .*has: Rhythm"):
        ecgfm.read(FIXTURES / "rhythm_8lead_500hz.xml", waveform="median")


# -- variants written to tmp_path ---------------------------------------------------------------


def _write(
    tmp_path: Path, leads: list[str], *, sample_base: str = "500", name: str = "x.xml"
) -> Path:
    path = tmp_path / name
    path.write_bytes(gen.document([gen.waveform("Rhythm", sample_base, leads)]))
    return path


def test_crc_mismatch_is_refused_unless_told(tmp_path: Path) -> None:
    leads = gen.standard_leads(200, 500.0)
    good = gen.counts(0, 200, 500.0)
    leads[0] = gen.lead_data("I", good, crc=zlib.crc32(good.astype("<i2").tobytes()) ^ 1)
    path = _write(tmp_path, leads)
    with pytest.raises(ReadError, match=r"lead I: CRC-32 of the data is \d+, the file says \d+"):
        ecgfm.read(path)
    ecg = ecgfm.read(path, check_crc=False)
    np.testing.assert_allclose(ecg.lead("I"), good * 4.88e-3, atol=1e-6)


def test_units_and_decimal_comma(tmp_path: Path) -> None:
    x = gen.counts(1, 200, 500.0)
    leads = [
        gen.lead_data("I", x, units_per_bit="0,005", units="MILLIVOLTS"),
        gen.lead_data("II", x, units_per_bit="1", units="MICROVOLTS"),
    ]
    ecg = ecgfm.read(_write(tmp_path, leads))
    np.testing.assert_allclose(ecg.lead("I"), x * 0.005, atol=1e-6)
    np.testing.assert_allclose(ecg.lead("II"), x * 0.001, atol=1e-6)


def test_late_and_short_leads_are_masked(tmp_path: Path) -> None:
    leads = [
        gen.lead_data("I", gen.counts(0, 200, 500.0)),
        gen.lead_data("II", gen.counts(1, 150, 500.0), offset=50),
        gen.lead_data("V1", gen.counts(2, 120, 500.0)),
    ]
    ecg = ecgfm.read(_write(tmp_path, leads))
    assert ecg.signal.shape == (3, 200)
    assert ecg.mask is not None
    assert not ecg.mask[1, :50].any() and ecg.mask[1, 50:].all()
    assert ecg.mask[2, :120].all() and not ecg.mask[2, 120:].any()
    np.testing.assert_allclose(ecg.lead("II")[50:], gen.counts(1, 150, 500.0) * 4.88e-3, atol=1e-6)
    assert ecg.meta.extra["masked_leads"] == ["II", "V1"]


def _one_lead(**options: object) -> list[str]:
    return [gen.lead_data("I", gen.counts(0, 100, 500.0), **options)]


@pytest.mark.parametrize(
    ("leads", "sample_base", "message"),
    [
        (
            _one_lead(declared_samples=99),
            "500",
            "LeadSampleCountTotal is 99 but the data holds 100",
        ),
        (
            [gen.lead_data("V7x", gen.counts(0, 100, 500.0))],
            "500",
            "'V7x' is not a known lead name",
        ),
        (_one_lead(units="MILLIMETERS"), "500", "'MILLIMETERS' is not a voltage unit"),
        (_one_lead(units_per_bit="abc"), "500", "LeadAmplitudeUnitsPerBit 'abc' is not a number"),
        (_one_lead(units_per_bit="0"), "500", "LeadAmplitudeUnitsPerBit 0 is not positive"),
        (_one_lead(), "0", "sampling rate 0 \\* 10\\^0 Hz is not positive"),
        (_one_lead(), "5", "sampling rate"),  # 5 Hz: refused by the record contract
        (
            [
                gen.lead_data("I", gen.counts(0, 100, 500.0)),
                gen.lead_data("I", gen.counts(0, 100, 500.0)),
            ],
            "500",
            "lead I appears twice",
        ),
        ([], "500", "Rhythm waveform has no <LeadData>"),
    ],
)
def test_malformed_content_is_a_specific_read_error(
    tmp_path: Path, leads: list[str], sample_base: str, message: str
) -> None:
    path = _write(tmp_path, leads, sample_base=sample_base)
    with pytest.raises(ReadError, match=message) as info:
        ecgfm.read(path)
    assert str(info.value).startswith(str(path))


def test_corrupt_base64(tmp_path: Path) -> None:
    lead = gen.lead_data("I", gen.counts(0, 100, 500.0), wrap=False)
    start = lead.index("<WaveFormData>") + len("<WaveFormData>")
    broken = lead[:start] + "!!" + lead[start + 2 :]
    with pytest.raises(ReadError, match="lead I: WaveFormData is not valid base64"):
        ecgfm.read(_write(tmp_path, [broken]))


def test_no_waveform_and_wrong_root(tmp_path: Path) -> None:
    bare = tmp_path / "bare.xml"
    bare.write_bytes(gen.document([]))
    with pytest.raises(ReadError, match="no <Waveform> element"):
        ecgfm.read(bare)
    with pytest.raises(ReadError, match="waveform must be 'rhythm' or 'median'"):
        ecgfm.read(FIXTURES / "rhythm_8lead_500hz.xml", waveform="Rhythm")
    other = tmp_path / "other.xml"
    other.write_text('<AnnotatedECG xmlns="urn:hl7-org:v3"/>')
    with pytest.raises(ReadError, match="not <RestingECG>"):
        ecgfm.read(other, format="muse_xml")


def test_implausible_age_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "age.xml"
    path.write_bytes(gen.document([gen.waveform("Rhythm", "500", _one_lead())], age="999"))
    ecg = ecgfm.read(path)
    assert ecg.meta.age is None
    assert ecg.meta.extra["age_as_written"] == "999 YEARS"


def test_detects_muse_with_root_right_after_doctype(tmp_path: Path) -> None:
    data = (FIXTURES / "rhythm_8lead_500hz.xml").read_bytes()
    path = tmp_path / "adjacent.xml"
    path.write_bytes(data.replace(b'"restecg.dtd">\n<RestingECG>', b'"restecg.dtd"><RestingECG>'))
    assert ecgfm.detect_format(path) == "muse_xml"
