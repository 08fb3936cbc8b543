"""Philips Sierra ECG XML reader (``ecgfm.io.philips``) and its XLI decompressor.

Independent references used below:
* ``ad4d3d80-d165_1-04_converted.xml`` is Philips' own HL7 aECG export of
  ``ad4d3d80-d165_1-04_orig.xml``; it is parsed here directly (not through ecgfm's aECG reader).
  Its representative beats must match ours exactly; its rhythm went through the export's
  adaptive 60 Hz notch filter, so it matches to within a few quantisation steps.
* Every file carries the device's own per-lead QRS peak-to-peak amplitude (``qrsppk``, uV),
  measured by the Philips analysis program on the representative beats.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ReadError
from ecgfm.io import detect_format, read
from ecgfm.io._xli import XliError, decode_xli, integrate_deltas, lzw_decode
from ecgfm.io._xml import parse_xml
from ecgfm.io.philips import read_philips_xml
from ecgfm.leads import STANDARD_12

FOLDER = ("formats", "philips_sierra_xml")
LSB_MV = 0.005  # 5 uV per unit in every rhythm here

# name -> (version, samples after the calibration trailer is cut, UTF-16?)
FILES = {
    "129DYPRG.XML": ("1.03", 5264, False),
    "repbeats_example.xml": ("1.03", 5264, False),
    "2020-5-18_15-48-11.xml": ("1.04.01", 5300, True),
    "3191723_ZZDEMOPTONLY_1-04_orig.xml": ("1.04", 5300, True),
    "ad4d3d80-d165_1-04_orig.xml": ("1.04", 5300, True),
}
WITH_REPBEATS = {  # name -> (fs, samples, resolution uV, padding dropped)
    "repbeats_example.xml": (1000.0, 1200, 1.0, 0),
    "2020-5-18_15-48-11.xml": (1000.0, 1200, 1.0, 0),
    "3191723_ZZDEMOPTONLY_1-04_orig.xml": (500.0, 600, 2.5, 600),
    "ad4d3d80-d165_1-04_orig.xml": (500.0, 600, 2.5, 600),
}


def philips(name: str) -> Path:
    return data_path(*FOLDER, name)


def qrsppk_mv(path: Path) -> dict[str, float]:
    root = parse_xml(path)
    return {
        m.get("leadname"): float(m.findtext("qrsppk")) / 1000 for m in root.iter("leadmeasurement")
    }


# -- real files: rhythm -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_rhythm_shape_rate_and_leads(name: str) -> None:
    version, n_samples, utf16 = FILES[name]
    path = philips(name)
    assert (path.read_bytes()[:2] == b"\xff\xfe") == utf16
    ecg = read_philips_xml(path)
    assert ecg.leads == STANDARD_12
    assert ecg.fs == 500.0
    assert ecg.signal.shape == (12, n_samples)
    assert ecg.duration == pytest.approx(n_samples / 500)
    assert ecg.mask is None
    assert ecg.meta.extra["document_version"] == version
    assert ecg.meta.extra["compression"] == "XLI"
    assert ecg.meta.extra["stored_samples"] == 5500  # durationperchannel 11000 ms at 500 Hz
    assert ecg.meta.extra["calibration_trimmed_samples"] == 5500 - n_samples
    assert ecg.meta.extra["limb_leads_from_residuals"] is True
    assert ecg.meta.source_format == "philips_xml"
    assert ecg.meta.source_path == str(path)


@pytest.mark.parametrize("name", FILES)
def test_rhythm_satisfies_einthoven_and_goldberger(name: str) -> None:
    ecg = read_philips_xml(philips(name))
    lead = {n: s.astype(np.float64) for n, s in zip(ecg.leads, ecg.signal, strict=True)}
    # Philips stores III, aVR, aVL, aVF as residuals of +-1 (HeartStart: +-2) units: the
    # reconstructed leads obey the laws to within that quantisation.
    assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() <= 2 * LSB_MV + 1e-6
    assert np.abs(lead["aVR"] + lead["aVL"] + lead["aVF"]).max() <= 2 * LSB_MV + 1e-6
    assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() <= 1.5 * LSB_MV + 1e-6


@pytest.mark.parametrize("name", FILES)
def test_rhythm_amplitude_matches_device_qrs_measurements(name: str) -> None:
    path = philips(name)
    ecg = read_philips_xml(path)
    ppk = qrsppk_mv(path)
    # Peak-to-peak per 1-s window, median over the first 10 s: close to the QRS peak-to-peak the
    # device measured (a few leads run higher where the T wave outgrows the QRS).
    ratios = []
    for lead, row in zip(ecg.leads, ecg.signal, strict=True):
        windows = row[:5000].reshape(10, 500)
        ratios.append(np.median(np.ptp(windows, axis=1)) / ppk[lead])
    assert 0.97 <= np.median(ratios) <= 1.05
    assert min(ratios) >= 0.95


def test_rhythm_values_1_03() -> None:
    ecg = read_philips_xml(philips("129DYPRG.XML"))
    np.testing.assert_allclose(ecg.lead("II")[:4], [0.585, 0.575, 0.555, 0.535], atol=1e-6)
    np.testing.assert_allclose(ecg.lead("V1")[:3], [0.165, 0.185, 0.19], atol=1e-6)
    np.testing.assert_allclose(ecg.signal.min(axis=1)[:3], [-0.17, -0.465, -0.975], atol=1e-6)
    np.testing.assert_allclose(ecg.signal.max(axis=1)[:3], [0.87, 0.625, 0.37], atol=1e-6)
    # The HeartStart file zero-fills 86 samples before its calibration pulse; both are cut.
    full = read_philips_xml(philips("129DYPRG.XML"), keep_calibration=True)
    assert (full.signal[:, 5264:5350] == 0).all()
    np.testing.assert_allclose(full.signal[:, 5350:5450], 1.0, atol=1e-6)
    assert not (full.signal[:, 5263] == 0).all()
    np.testing.assert_array_equal(full.signal[:, :5264], ecg.signal)


def test_rhythm_values_1_04_01() -> None:
    ecg = read_philips_xml(philips("2020-5-18_15-48-11.xml"))
    np.testing.assert_allclose(ecg.lead("II")[:4], [0.695, 0.685, 0.67, 0.645], atol=1e-6)
    assert ecg.lead("V4").max() == pytest.approx(2.005, abs=1e-6)
    assert ecg.lead("aVR").max() == pytest.approx(-0.06, abs=1e-6)  # aVR stays negative


def test_rhythm_matches_philips_aecg_export() -> None:
    ecg = read_philips_xml(philips("ad4d3d80-d165_1-04_orig.xml"), keep_calibration=True)
    reference = _aecg_leads(philips("ad4d3d80-d165_1-04_converted.xml"), scale="5.00")
    for lead, row in zip(ecg.leads, ecg.signal, strict=True):
        ref = reference[lead.upper()] * LSB_MV
        assert ref.shape == row.shape == (5500,)
        diff = np.abs(row - ref) / LSB_MV
        assert diff.max() <= 4.01, lead  # the export's adaptive notch moves samples by <= 4 units
        assert diff.mean() <= 0.8, lead
        assert np.corrcoef(row, ref)[0, 1] > 0.9995, lead
    # V3 really sits near -17 mV at the start (electrode offset, also in Philips' export).
    assert ecg.lead("V3")[0] == pytest.approx(-3445 * LSB_MV, abs=4 * LSB_MV)


def test_augmented_leads_use_truncating_division() -> None:
    # aVR, aVL and aVF are rebuilt with (I + II) / 2 etc. Halving with truncation towards zero
    # (as the C#/Java reference decoders do) makes them agree with Philips' export as often as
    # the directly stored leads I and II do; flooring would shift 1 in 4 negative odd samples
    # and drop the agreement below lead I's (measured: 0.62-0.64 vs 0.60; flooring 0.55-0.58).
    ecg = read_philips_xml(philips("ad4d3d80-d165_1-04_orig.xml"), keep_calibration=True)
    reference = _aecg_leads(philips("ad4d3d80-d165_1-04_converted.xml"), scale="5.00")
    agree = {
        lead: np.mean(np.round(row / LSB_MV) == reference[lead.upper()])
        for lead, row in zip(ecg.leads, ecg.signal, strict=True)
    }
    assert min(agree["aVR"], agree["aVL"], agree["aVF"]) > agree["I"] > 0.55


def test_keep_calibration_returns_the_stored_trailer() -> None:
    ecg = read_philips_xml(philips("3191723_ZZDEMOPTONLY_1-04_orig.xml"), keep_calibration=True)
    assert ecg.n_samples == 5500 and ecg.duration == pytest.approx(11.0)
    trailer = ecg.signal[:, 5300:]
    assert (trailer == trailer[0]).all()  # identical in all 12 leads
    np.testing.assert_allclose(trailer[0, :50], 0.0)
    np.testing.assert_allclose(trailer[0, 50:150], 1.0, atol=1e-6)  # 1 mV for 200 ms
    np.testing.assert_allclose(trailer[0, 150:], 0.0)
    assert ecg.meta.extra["calibration_trimmed_samples"] == 0


# -- real files: metadata -------------------------------------------------------------------


METADATA = {
    "129DYPRG.XML": dict(
        record_id="03d494f2-94f2-13d4-857f-00095c028bdc",
        patient_id="1112010721168bdc",
        age=50.0,  # age/years
        sex="M",
        acquired=datetime(2011, 12, 1, 7, 27, 34),
        device="HeartstartMRx",
        interpretation=(
            "Sinus bradycardia (rate< 50); Nonspecific intraventricular conduction delay "
            "(QRSd >115mS, not LBBB/RBBB); Inferior infarct, acute (LCx) "
            "(ST>0.10mV, II III aVF, STd V1-V3); >>> Acute MI <<<"
        ),
    ),
    "2020-5-18_15-48-11.xml": dict(
        record_id="b8359e00-9949-11ea-4823-100b21b20029",
        patient_id="xxxxxx",
        age=69.0,  # born 1951-01-01, recorded 2020-05-18 (defaultage="50" is not the age)
        sex=None,  # "Unknown"
        acquired=datetime(2020, 5, 18, 15, 48, 11),
        device="PageWriter TC",
        interpretation=(
            "Sinus rhythm (normal P axis, V-rate 50-99); Abnormal R-wave progression, early "
            "transition (QRS area>0 in V2)"
        ),
    ),
    "3191723_ZZDEMOPTONLY_1-04_orig.xml": dict(
        record_id="7eacbc80-0549-11df-4823-000738300029",
        patient_id="9999",
        age=60.0,  # born 1950-01-01, recorded 2010-01-19
        sex="M",
        acquired=datetime(2010, 1, 19, 15, 19, 22),
        device="PageWriter Touch",
        interpretation=(
            "SINUS RHYTHM (normal P axis, V-rate 60-99); PROBABLE LEFT VENTRICULAR HYPERTROPHY "
            "((RaVL+SV3)xQRSd >280); ANTERIOR ST ELEVATION, PROBABLY DUE TO LVH "
            "(ST >0.20 mV in V1-V4 & LVH)"
        ),
    ),
    "ad4d3d80-d165_1-04_orig.xml": dict(
        record_id="ad4d3d80-d165-11dd-4823-0161c6aa0029",
        patient_id="9999",
        age=32.0,  # born 1976-01-01, recorded 2008-12-23
        sex="F",
        acquired=datetime(2008, 12, 23, 19, 44, 46),
        device="PageWriter Touch",
        interpretation="SINUS BRADYCARDIA (V-rate<60); NO PREVIOUS TRACING AVAILABLE FOR COMPARISON",
    ),
}


@pytest.mark.parametrize("name", METADATA)
def test_metadata(name: str) -> None:
    meta = read_philips_xml(philips(name)).meta
    for field, expected in METADATA[name].items():
        assert getattr(meta, field) == expected, field


def test_metadata_extra_fields() -> None:
    extra = read_philips_xml(philips("ad4d3d80-d165_1-04_orig.xml")).meta.extra
    assert extra["severity"] == "- OTHERWISE NORMAL ECG -"
    assert extra["statements"] == [
        ["SINUS BRADYCARDIA", "V-rate<60"],
        ["NO PREVIOUS TRACING AVAILABLE FOR COMPARISON", ""],
    ]
    assert extra["machine_id"] == "EKG16296"
    assert extra["machine_detail"] == "Philips Medical Products:M5000:C.01.02.00"
    assert extra["resolution_uV"] == 5.0
    assert (extra["highpass_hz"], extra["lowpass_hz"], extra["notch_filtered"]) == (
        0.05,
        150,
        False,
    )
    extra_103 = read_philips_xml(philips("129DYPRG.XML")).meta.extra
    assert (extra_103["highpass_hz"], extra_103["lowpass_hz"]) == (0.05, 150)  # "0.05-150"


# -- real files: representative beats -------------------------------------------------------


@pytest.mark.parametrize("name", WITH_REPBEATS)
def test_median_beats(name: str) -> None:
    fs, n_samples, resolution, padding = WITH_REPBEATS[name]
    path = philips(name)
    ecg = read_philips_xml(path, waveform="median")
    assert ecg.leads == STANDARD_12
    assert ecg.fs == fs and ecg.signal.shape == (12, n_samples)
    assert ecg.mask is None
    assert ecg.meta.extra["resolution_uV"] == resolution
    assert ecg.meta.extra["padding_trimmed_samples"] == padding
    assert ecg.meta.interpretation  # the metadata comes along with the beats
    lead = dict(zip(ecg.leads, ecg.signal.astype(np.float64), strict=True))
    # Each lead is averaged on its own, so Einthoven holds only approximately (< 0.1 mV).
    assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() < 0.1


@pytest.mark.parametrize(
    "name",
    ["2020-5-18_15-48-11.xml", "3191723_ZZDEMOPTONLY_1-04_orig.xml", "ad4d3d80-d165_1-04_orig.xml"],
)
def test_median_qrs_amplitude_matches_device_measurement(name: str) -> None:
    path = philips(name)
    ecg = read_philips_xml(path, waveform="median")
    ppk = qrsppk_mv(path)
    root = parse_xml(path)
    for beat, row in zip(list(root.iter("repbeat")), ecg.signal, strict=True):
        onset, duration = int(beat.findtext("qonset")), int(beat.findtext("qrsdur"))  # ms
        start, stop = int(onset * ecg.fs / 1000), int((onset + duration) * ecg.fs / 1000) + 1
        # The device measured on the same beats; its QRS window may differ by a sample or two.
        assert np.ptp(row[start:stop]) == pytest.approx(ppk[beat.get("leadname")], abs=0.011)


def test_median_beats_match_philips_aecg_export_exactly() -> None:
    ecg = read_philips_xml(philips("ad4d3d80-d165_1-04_orig.xml"), waveform="median")
    reference = _aecg_leads(philips("ad4d3d80-d165_1-04_converted.xml"), scale="2.50")
    for lead, row in zip(ecg.leads, ecg.signal, strict=True):
        ref = reference[lead.upper()]
        assert (ref[600:] == 32767).all()  # the export keeps Philips' padding
        np.testing.assert_array_equal(np.round(row / 0.0025).astype(int), ref[:600], err_msg=lead)


def test_median_absent_is_a_read_error() -> None:
    with pytest.raises(ReadError, match="no representative beats"):
        read_philips_xml(philips("129DYPRG.XML"), waveform="median")


# -- detection and the registry -------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_detected_and_read_through_registry(name: str) -> None:
    path = philips(name)
    assert detect_format(path) == "philips_xml"
    ecg = read(path)
    np.testing.assert_array_equal(ecg.signal, read_philips_xml(path).signal)
    assert read(path, waveform="median" if name in WITH_REPBEATS else "rhythm").n_leads == 12


# -- XLI building blocks --------------------------------------------------------------------


def _reference_integrate(deltas: list[int], first: int) -> list[int]:
    """The delta decoder exactly as sierra-ecg-tools writes it (XliDecompressor.decodeDeltas)."""
    out = list(deltas)
    x, y, last = out[0], out[1], first
    for i in range(2, len(out)):
        z = 2 * y - x - last
        last = out[i] - 64
        out[i] = z
        x, y = y, z
    return out


def test_integrate_deltas_matches_reference_loop() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 1000):
        deltas = rng.integers(-300, 300, size=n)
        first = int(rng.integers(-5, 5))
        assert integrate_deltas(deltas, first).tolist() == _reference_integrate(
            deltas.tolist(), first
        )


def _lzw_encode(data: bytes) -> bytes:
    """Plain 10-bit LZW (dictionary to 1022, end code 1023), packed MSB first."""
    table = {bytes([i]): i for i in range(256)}
    codes, current = [], b""
    for value in data:
        candidate = current + bytes([value])
        if candidate in table:
            current = candidate
            continue
        codes.append(table[current])
        if len(table) <= 1022:
            table[candidate] = len(table)
        current = bytes([value])
    if current:
        codes.append(table[current])
    codes.append(1023)
    bits = "".join(f"{code:010b}" for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


@pytest.mark.parametrize(
    "payload", [b"", b"a", b"abababababab", b"aaaaaaaaaaaaaaaaaaaaaaaaaaa", bytes(range(256)) * 20]
)
def test_lzw_round_trip(payload: bytes) -> None:
    assert lzw_decode(_lzw_encode(payload), limit=len(payload)) == payload


def test_xli_chunk_round_trip() -> None:
    # Build a chunk from a known signal: second differences + 64, high bytes then low bytes.
    x = (300 * np.sin(np.linspace(0, 20, 400))).astype(np.int64)
    first = int(-(x[2] - 2 * x[1] + x[0]))
    deltas = np.concatenate([x[:2], -(x[3:] - 2 * x[2:-1] + x[1:-2]) + 64, [64]])
    words = deltas.astype(np.int16).view(np.uint16)
    raw = (words >> 8).astype(np.uint8).tobytes() + (words & 0xFF).astype(np.uint8).tobytes()
    packed = _lzw_encode(raw)
    block = struct.pack("<ihh", len(packed), 1, first) + packed
    np.testing.assert_array_equal(decode_xli(block * 2, 2, 400), np.stack([x, x]))
    with pytest.raises(XliError, match="decompresses to 800 bytes, expected 802"):
        decode_xli(block, 1, 401)
    with pytest.raises(XliError, match="ends after 2 of 3 lead chunks"):
        decode_xli(block * 2, 3, 400)


def test_lzw_rejects_undefined_code_and_overlong_output() -> None:
    with pytest.raises(XliError, match="code 1000 is not yet defined"):
        lzw_decode(int("1111101000" + "0" * 6, 2).to_bytes(2, "big"), limit=100)
    with pytest.raises(XliError, match="more than the 10 bytes"):
        lzw_decode(_lzw_encode(b"x" * 50), limit=10)


# -- uncompressed variants (constructed from a real file) -----------------------------------


def _rewrite(name: str, tmp_path: Path, edit: Callable[[str], str]) -> Path:
    """A copy of a shared file with its text edited, written in the original encoding."""
    raw = philips(name).read_bytes()
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    out = tmp_path / name
    out.write_bytes(edit(raw.decode(encoding)).encode(encoding))
    return out


_PARSED = re.compile(r"(<parsedwaveforms)([^>]*)>(.*?)(</parsedwaveforms>)", re.DOTALL)


def _replace_waveforms(
    attributes: Callable[[str], str], payload: Callable[[str], str]
) -> Callable[[str], str]:
    def edit(document: str) -> str:
        match = _PARSED.search(document)
        assert match is not None
        return (
            document[: match.start()]
            + match.group(1)
            + attributes(match.group(2))
            + ">"
            + payload(match.group(3))
            + match.group(4)
            + document[match.end() :]
        )

    return edit


def _uncompressed(values: np.ndarray, encoding: str = "Base64") -> Callable[[str], str]:
    def attributes(attrs: str) -> str:
        attrs = attrs.replace(' compression="XLI"', "")
        return attrs.replace('dataencoding="Base64"', f'dataencoding="{encoding}"')

    if encoding == "Plain":
        text = " ".join(str(v) for v in values.ravel())
    else:
        text = base64.b64encode(values.astype("<i2").tobytes()).decode()
    return _replace_waveforms(attributes, lambda _: text)


@pytest.mark.parametrize("encoding", ["Base64", "Plain"])
def test_uncompressed_full_leads(tmp_path: Path, encoding: str) -> None:
    name = "2020-5-18_15-48-11.xml"
    original = read_philips_xml(philips(name), keep_calibration=True)
    units = np.round(original.signal / LSB_MV).astype(np.int64)
    path = _rewrite(name, tmp_path, _uncompressed(units, encoding))
    ecg = read_philips_xml(path)
    assert ecg.meta.extra["compression"] is None
    assert ecg.meta.extra["limb_leads_from_residuals"] is False
    np.testing.assert_array_equal(ecg.signal, read_philips_xml(philips(name)).signal)


def test_uncompressed_limb_residuals_are_recognised(tmp_path: Path) -> None:
    name = "ad4d3d80-d165_1-04_orig.xml"
    original = read_philips_xml(philips(name), keep_calibration=True)
    units = np.round(original.signal / LSB_MV).astype(np.int64)
    i, ii, iii = units[0], units[1], units[2]
    stored = units.copy()  # encode III, aVR, aVL, aVF as Philips' residuals
    half = lambda v: np.sign(v) * (np.abs(v) // 2)  # noqa: E731
    stored[2] = ii - i - iii
    stored[3] = -units[3] - half(i + ii)
    stored[4] = half(i - iii) - units[4]
    stored[5] = half(ii + iii) - units[5]
    ecg = read_philips_xml(_rewrite(name, tmp_path, _uncompressed(stored)), keep_calibration=True)
    assert ecg.meta.extra["limb_leads_from_residuals"] is True
    np.testing.assert_array_equal(ecg.signal, original.signal)


def test_uncompressed_wrong_length(tmp_path: Path) -> None:
    name = "2020-5-18_15-48-11.xml"
    units = np.zeros((12, 5499), dtype=np.int64)
    with pytest.raises(ReadError, match=r"holds 65988 samples, expected 66000 \(12 leads x 5500"):
        read_philips_xml(_rewrite(name, tmp_path, _uncompressed(units)))


# -- malformed input ------------------------------------------------------------------------


def _payload(edit: Callable[[str], str]) -> Callable[[str], str]:
    return _replace_waveforms(lambda attrs: attrs, lambda text: edit("".join(text.split())))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_payload(lambda b64: b64[:-5]), "parsedwaveforms: base64 data is corrupt or truncated"),
        (
            _payload(lambda b64: b64[:8000]),
            r"XLI waveform data: lead chunk \d+ declares \d+ bytes but \d+ remain",
        ),
        (_payload(lambda b64: b64[: 2000 * 4]), "truncated"),
        (_payload(lambda b64: b64[:40]), r"declares 1518 bytes but 22 remain \(truncated\?\)"),
        (_payload(lambda b64: "!!" + b64[2:]), "base64 data is corrupt"),
        (_payload(lambda b64: ""), "parsedwaveforms holds no data"),
        (
            lambda doc: doc.replace('durationperchannel="11000"', 'durationperchannel="10000"'),
            "lead chunk 1: decompresses to more than the 10000 bytes expected",
        ),
        (
            lambda doc: doc.replace('durationperchannel="11000"', 'durationperchannel="12000"'),
            r"lead chunk 1 decompresses to 11000 bytes, expected 12000 \(6000 samples x 2 bytes\)",
        ),
        (lambda doc: _PARSED.sub("", doc), "no waveforms/parsedwaveforms element"),
        (
            lambda doc: doc.replace('compressmethod="XLI"', 'compressmethod="ZIP"'),
            "unsupported waveform compression 'ZIP'",
        ),
        (
            lambda doc: doc.replace(
                "<samplingrate>500</samplingrate>", "<samplingrate>0</samplingrate>"
            ),
            "sampling rate 0 Hz is outside the plausible range",
        ),
        (
            lambda doc: doc.replace(
                "<samplingrate>500</samplingrate>", "<samplingrate>fast</samplingrate>"
            ),
            "sampling rate is not a number: 'fast'",
        ),
        (
            lambda doc: doc.replace("<leadset>STD-12</leadset>", "<leadset>EASI</leadset>").replace(
                "<acquisitiontype>STD-12</acquisitiontype>",
                "<acquisitiontype>EASI</acquisitiontype>",
            ),
            "lead set EASI with 12 channels has no known channel order",
        ),
        (
            lambda doc: doc.replace("<restingecgdata", "<otherecg").replace(
                "</restingecgdata>", "</otherecg>"
            ),
            "not a Philips Sierra ECG XML document",
        ),
        (lambda doc: doc[: len(doc) // 2], "malformed XML"),
    ],
)
def test_malformed_1_03(tmp_path: Path, edit: Callable[[str], str], message: str) -> None:
    path = _rewrite("129DYPRG.XML", tmp_path, edit)
    with pytest.raises(ReadError, match=message) as info:
        read_philips_xml(path)
    assert str(info.value).startswith(str(path))


def test_malformed_lzw_stream(tmp_path: Path) -> None:
    def corrupt(b64: str) -> str:
        data = bytearray(base64.b64decode(b64))
        data[8:10] = (
            b"\xfa\x00"  # first code of lead 1 becomes 1000, which no stream can start with
        )
        return base64.b64encode(bytes(data)).decode()

    path = _rewrite("129DYPRG.XML", tmp_path, _payload(corrupt))
    with pytest.raises(
        ReadError, match="lead chunk 1: corrupt LZW stream: code 1000 is not yet defined"
    ):
        read_philips_xml(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda doc: doc.replace('leadlabels="I II III', 'leadlabels="I II Q3'),
            "lead 'Q3' is not a known lead name",
        ),
        (
            lambda doc: doc.replace('numberofleads="12"', 'numberofleads="13"'),
            "numberofleads is 13 but leadlabels names only 12 leads",
        ),
        (
            lambda doc: doc.replace('samplespersecond="500"', 'samplespersecond="50000"'),
            "sampling rate 50000 Hz is outside the plausible range",
        ),
        (
            lambda doc: doc.replace('resolution="5"', 'resolution="0"'),
            "resolution must be a positive number",
        ),
        (
            lambda doc: doc.replace('bitspersample="16"', 'bitspersample="14"'),
            "only 16-bit samples are supported",
        ),
        (
            lambda doc: doc.replace(
                'durationperchannel="11000"', 'durationperchannel="99999999999"'
            ),
            "over the limit",
        ),
    ],
)
def test_malformed_1_04_utf16(tmp_path: Path, edit: Callable[[str], str], message: str) -> None:
    path = _rewrite("2020-5-18_15-48-11.xml", tmp_path, edit)
    assert path.read_bytes()[:2] == b"\xff\xfe"
    with pytest.raises(ReadError, match=message):
        read_philips_xml(path)


def test_age_counts_completed_years_from_date_of_birth(tmp_path: Path) -> None:
    # Recorded 2020-05-18: born 1951-12-31 is 68, not 69; defaultage="50" is never the age.
    path = _rewrite(
        "2020-5-18_15-48-11.xml",
        tmp_path,
        lambda doc: doc.replace("<dateofbirth>1951-01-01", "<dateofbirth>1951-12-31"),
    )
    assert read_philips_xml(path).meta.age == 68.0
    no_birth = _rewrite(
        "2020-5-18_15-48-11.xml",
        tmp_path,
        lambda doc: doc.replace("<dateofbirth>1951-01-01</dateofbirth>", ""),
    )
    assert read_philips_xml(no_birth).meta.age is None


def test_chest_leads_named_c1_to_c6(tmp_path: Path) -> None:
    path = _rewrite(
        "2020-5-18_15-48-11.xml",
        tmp_path,
        lambda doc: doc.replace(
            'leadlabels="I II III aVR aVL aVF V1 V2 V3 V4 V5 V6"',
            'leadlabels="I II III aVR aVL aVF C1 C2 C3 C4 C5 C6"',
        ),
    )
    assert read_philips_xml(path).leads == STANDARD_12


def test_median_malformed(tmp_path: Path) -> None:
    name = "3191723_ZZDEMOPTONLY_1-04_orig.xml"
    beat = re.compile(
        r'(<repbeat leadname="V2">.*?<waveform duration="2400">)(.*?)(</waveform>)', re.DOTALL
    )
    truncated = _rewrite(
        name,
        tmp_path,
        lambda doc: beat.sub(
            lambda m: m.group(1) + "".join(m.group(2).split())[:400] + m.group(3), doc
        ),
    )
    with pytest.raises(
        ReadError,
        match="repbeat V2 holds 150 samples, its duration of 2400 ms at 500 Hz means 1200",
    ):
        read_philips_xml(truncated, waveform="median")
    broken = _rewrite(
        name, tmp_path, lambda doc: beat.sub(lambda m: m.group(1) + "@@" + m.group(3), doc)
    )
    with pytest.raises(ReadError, match="repbeat V2: base64 data is corrupt"):
        read_philips_xml(broken, waveform="median")


def test_bad_waveform_option() -> None:
    with pytest.raises(ReadError, match="waveform must be one of rhythm, median; got 'beats'"):
        read_philips_xml(philips("129DYPRG.XML"), waveform="beats")


# -- helpers --------------------------------------------------------------------------------


def _aecg_leads(path: Path, *, scale: str) -> dict[str, np.ndarray]:
    """Digits per lead from an HL7 aECG file, for the sequences with the given scale (uV)."""
    out = {}
    for sequence in parse_xml(path).iter("sequence"):
        code = sequence.find("code").get("code")
        value = sequence.find("value")
        if code.startswith("MDC_ECG_LEAD_") and value.find("scale").get("value") == scale:
            out[code.removeprefix("MDC_ECG_LEAD_")] = np.array(
                value.findtext("digits").split(), dtype=np.int64
            )
    assert len(out) == 12
    return out
