"""EDF/EDF+ reader: the real Contec 12-lead EDF and annotation-only EDF+, and constructed files.

Independent references: ``wfdb.io.convert.edf.read_edf`` (wfdb 4.x) for the real recording's
values, and the EDF formula applied by hand to the raw int16 samples read with numpy.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ReadError
from ecgfm.io import read
from ecgfm.io.edf import read_edf, read_edf_annotations, read_edf_header
from ecgfm.leads import STANDARD_12

CONTEC_HEADER_BYTES = 3328  # 256 * (12 + 1)
CONTEC_LSB_MV = 2000 / 65535  # physical -1000..1000 mV over digital -32768..32767


def contec() -> Path:
    return data_path("formats", "edf", "contec_0000050.ECG.edf")


def edfann() -> Path:
    return data_path("formats", "edf", "test_edfann.edf")


# -- the real 12-lead recording -------------------------------------------------------------


def test_contec_shape_rate_leads_and_header_metadata() -> None:
    ecg = read_edf(contec())
    assert ecg.signal.shape == (12, 37855)  # 37855 one-sample records of 1.25 ms
    assert ecg.fs == 800.0
    assert ecg.duration == pytest.approx(47.31875)
    assert ecg.leads == STANDARD_12
    meta = ecg.meta
    assert meta.source_format == "edf"
    assert meta.record_id == "contec_0000050.ECG"
    # "Startdate 16-NOV-2020" in the recording field, "16.11.20" / "21.44.39" in the header.
    assert meta.acquired == datetime(2020, 11, 16, 21, 44, 39)
    # The patient field is "  dd-MMM-yyyy": empty code and sex, a placeholder birthdate.
    assert meta.patient_id is None and meta.sex is None and meta.age is None
    assert meta.extra["edf_variant"] == "EDF"
    assert meta.extra["admin_code"] == "0000050"
    assert "annotations" not in meta.extra


def test_contec_values_match_formula_on_raw_samples() -> None:
    ecg = read_edf(contec())
    raw = np.fromfile(contec(), dtype="<i2", offset=CONTEC_HEADER_BYTES).reshape(-1, 12).T
    expected = (raw.astype(np.float64) + 32768) * CONTEC_LSB_MV - 1000.0
    np.testing.assert_allclose(ecg.signal, expected, atol=2e-5)
    # Lead I starts at digital -20, -30, -33.
    np.testing.assert_allclose(ecg.lead("I")[:3], [-0.595102, -0.900282, -0.991836], atol=1e-5)
    # The device stores V1-V6 as digital 0 throughout (limb leads only): half a step above 0 mV.
    assert np.all(ecg.signal[6:] == pytest.approx(CONTEC_LSB_MV / 2, abs=1e-6))


def test_contec_matches_wfdb_edf_reader() -> None:
    wfdb_edf = pytest.importorskip("wfdb.io.convert.edf")
    ecg = read_edf(contec())
    ref = wfdb_edf.read_edf(str(contec()))
    assert ref.fs == ecg.fs
    assert list(ref.sig_name) == list(ecg.leads)
    assert ref.p_signal.shape == (ecg.n_samples, ecg.n_leads)
    # wfdb rounds the digital offset of (-32768..32767 -> -1000..1000) to 0, so it is half a
    # step (0.0153 mV) below the exact EDF value everywhere; the shape of the data is identical.
    diff = ecg.signal.astype(np.float64) - ref.p_signal.T
    assert np.abs(diff - CONTEC_LSB_MV / 2).max() < 1e-5


def test_contec_limb_leads_obey_einthoven() -> None:
    ecg = read_edf(contec())
    np.testing.assert_allclose(ecg.lead("III"), ecg.lead("II") - ecg.lead("I") + CONTEC_LSB_MV / 2, atol=1e-5)
    assert 4.0 < ecg.lead("I").max() < 8.0  # R waves of 4-7 mV at this device's scale


def test_contec_through_the_registry() -> None:
    ecg = read(contec())
    assert ecg.meta.source_format == "edf"
    assert ecg.fs == 800.0


# -- the real annotation-only EDF+ ----------------------------------------------------------


def test_edfann_has_no_ecg_signal() -> None:
    with pytest.raises(ReadError, match="no ECG signals; only annotations"):
        read_edf(edfann())


def test_edfann_annotations() -> None:
    path = edfann()
    header = read_edf_header(path)
    assert header.variant == "EDF+C"
    assert header.n_records == 1 and header.record_duration == 0.0
    assert header.start == datetime(2001, 1, 1, 23, 59, 30)  # "01.01.01": 2001 (00-84 -> 20xx)
    annotations = read_edf_annotations(path)
    raw = path.read_bytes()
    assert len(annotations) == raw.count(b"Sleep stage") + raw.count(b"Lights ") == 856
    assert annotations[0] == (0.0, 30.0, "Sleep stage W")
    assert annotations[2] == (33.43, 0.0, "Lights off@@EEG F4-A1")
    assert annotations[-1] == (25618.74, 0.0, "Lights on@@EEG Fpz-Cz")
    assert sum(text == "Sleep stage N3" for _, _, text in annotations) == raw.count(b"Sleep stage N3")
    assert [a[0] for a in annotations] == sorted(a[0] for a in annotations)


# -- constructed files ----------------------------------------------------------------------


def _field(value: Any, width: int) -> bytes:
    text = value if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
    return text.encode("latin-1")[:width].ljust(width)


def _tal_block(tals: bytes, spr: int) -> np.ndarray:
    assert len(tals) <= 2 * spr
    return np.frombuffer(tals.ljust(2 * spr, b"\x00"), dtype="<i2")


def write_edf(
    path: Path,
    signals: list[dict[str, Any]],
    n_records: int,
    duration: float | str = 1.0,
    *,
    patient: str = "X X X X",
    recording: str = "Startdate X X X X",
    start_date: str = "05.06.21",
    start_time: str = "10.20.30",
    reserved: str = "",
    header: dict[str, str] | None = None,
    cut: int = 0,
) -> Path:
    """Write an EDF file. Each signal: label, dim, pmin, pmax, dmin, dmax, spr and either
    ``samples`` (int16 ``[n_records * spr]``) or ``tals`` (bytes per record). ``header``
    overrides fixed fields by name; ``cut`` drops that many bytes from the end."""
    ns = len(signals)
    fixed = {
        "version": "0", "patient": patient, "recording": recording, "start date": start_date,
        "start time": start_time, "header bytes": str(256 * (ns + 1)), "reserved": reserved,
        "number of data records": str(n_records), "data record duration": duration if isinstance(duration, str) else f"{duration:g}",
        "number of signals": str(ns), **(header or {}),
    }
    widths = {"version": 8, "patient": 80, "recording": 80, "start date": 8, "start time": 8, "header bytes": 8, "reserved": 44, "number of data records": 8, "data record duration": 8, "number of signals": 4}
    out = b"".join(_field(fixed[k], w) for k, w in widths.items())
    for key, width in (("label", 16), ("transducer", 80), ("dim", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8), ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32)):
        out += b"".join(_field(s.get(key, ""), width) for s in signals)
    for r in range(n_records):
        for s in signals:
            spr = int(s["spr"])
            if "tals" in s:
                out += _tal_block(s["tals"][r], spr).tobytes()
            else:
                out += np.asarray(s["samples"][r * spr : (r + 1) * spr], dtype="<i2").tobytes()
    path.write_bytes(out[: len(out) - cut] if cut else out)
    return path


def lead(label: str, samples: np.ndarray, spr: int, dim: str = "uV", **extra: Any) -> dict[str, Any]:
    return {"label": label, "dim": dim, "pmin": -3276.8, "pmax": 3276.7, "dmin": -32768, "dmax": 32767, "spr": spr, "samples": samples, **extra}


def annotations(tals: list[bytes]) -> dict[str, Any]:
    return {"label": "EDF Annotations", "pmin": -1, "pmax": 1, "dmin": -32768, "dmax": 32767, "spr": 30, "tals": tals}


def test_edf_plus_leads_units_annotations_and_other_channels(tmp_path: Path) -> None:
    n, spr = 3, 250
    ramp = np.arange(n * spr, dtype=np.int16) - 300  # 0.1 uV per unit
    eeg = np.zeros(n * 100, dtype=np.int16)
    tals = [
        b"+0\x14\x14\x00+0.5\x150.2\x14Beat\x14\x00",
        b"+1\x14\x14\x00+1.75\x14Artifact\x14Noise\x14\x00",
        b"+2\x14\x14\x00",
    ]
    path = write_edf(
        tmp_path / "plus.edf",
        [
            lead("ECG I", ramp, spr),
            lead("EKG II", ramp * 2, spr),
            lead("ECG V1", ramp, spr, dim="mV", pmin=-32.768, pmax=32.767, prefilter="HP:0.05Hz LP:150Hz"),
            {"label": "EEG Fpz-Cz", "dim": "uV", "pmin": -100, "pmax": 100, "dmin": -2048, "dmax": 2047, "spr": 100, "samples": eeg},
            annotations(tals),
        ],
        n,
        patient="MCH-0234567 F 02-MAY-1951 Haagse_Harry",
        recording="Startdate 02-MAR-2002 PSG-1234/2002 NN Telemetry03",
        start_date="02.03.02",
        start_time="22.45.00",
        reserved="EDF+C",
    )
    ecg = read_edf(path)
    assert ecg.leads == ("I", "II", "V1")
    assert ecg.fs == 250.0 and ecg.n_samples == 750
    np.testing.assert_allclose(ecg.lead("I")[:3], [-0.03, -0.0299, -0.0298], atol=1e-7)  # uV -> mV
    np.testing.assert_allclose(ecg.lead("II"), 2 * ecg.lead("I"), atol=1e-6)
    np.testing.assert_allclose(ecg.lead("V1")[:2], [-0.3, -0.299], atol=1e-6)  # already mV
    meta = ecg.meta
    assert meta.extra["annotations"] == [(0.5, 0.2, "Beat"), (1.75, None, "Artifact"), (1.75, None, "Noise")]
    assert meta.extra["dropped_channels"] == ["EEG Fpz-Cz (not an ECG lead)"]
    assert meta.extra["prefiltering"] == {"V1": "HP:0.05Hz LP:150Hz"}
    assert meta.extra["edf_variant"] == "EDF+C"
    assert meta.patient_id == "MCH-0234567" and meta.sex == "F"
    assert meta.age == pytest.approx(50.83, abs=0.01)  # born 1951-05-02, recorded 2002-03-02
    assert meta.acquired == datetime(2002, 3, 2, 22, 45, 0)
    assert meta.device == "Telemetry03"
    assert meta.extra["admin_code"] == "PSG-1234/2002"


@pytest.mark.parametrize(("yy", "year"), [("99", 1999), ("85", 1985), ("84", 2084), ("00", 2000)])
def test_two_digit_year(tmp_path: Path, yy: str, year: int) -> None:
    path = write_edf(tmp_path / "y.edf", [lead("II", np.zeros(100, np.int16), 100)], 1, start_date=f"31.12.{yy}", patient="Jane")
    ecg = read_edf(path)
    assert ecg.meta.acquired == datetime(year, 12, 31, 10, 20, 30)
    assert ecg.meta.patient_id == "Jane"  # plain EDF: the whole field


def test_discontinuous_records_become_masked_gaps(tmp_path: Path) -> None:
    spr = 100
    samples = np.arange(3 * spr, dtype=np.int16)
    tals = [b"+0\x14\x14\x00", b"+1\x14\x14\x00", b"+3.5\x14\x14\x00+3.6\x14Resume\x14\x00"]
    path = write_edf(tmp_path / "d.edf", [lead("ECG II", samples, spr), annotations(tals)], 3, reserved="EDF+D")
    ecg = read_edf(path)
    assert ecg.n_samples == 450  # records at 0 s, 1 s and 3.5 s, 1 s each
    assert ecg.mask is not None
    observed = ecg.mask[0]
    assert observed[:200].all() and not observed[200:350].any() and observed[350:].all()
    np.testing.assert_allclose(ecg.signal[0, 350:353], [0.02, 0.0201, 0.0202], atol=1e-7)
    assert ecg.meta.extra["gaps_masked_samples"] == 150
    assert ecg.meta.extra["annotations"] == [(3.6, None, "Resume")]


def test_discontinuous_overlapping_records(tmp_path: Path) -> None:
    tals = [b"+0\x14\x14\x00", b"+0.5\x14\x14\x00"]
    path = write_edf(tmp_path / "o.edf", [lead("II", np.zeros(200, np.int16), 100), annotations(tals)], 2, reserved="EDF+D")
    with pytest.raises(ReadError, match="before the previous record ends"):
        read_edf(path)


def test_leads_at_different_rates(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "r.edf", [lead("I", np.zeros(500, np.int16), 500), lead("II", np.zeros(250, np.int16), 250)], 1)
    with pytest.raises(ReadError, match="different rates.*I: 500, II: 250"):
        read_edf(path)


def test_rate_snapped_from_eight_character_duration(tmp_path: Path) -> None:
    # 1 sample per record of 1/512 s, written "0.001953": 512.03 Hz unless snapped.
    path = write_edf(tmp_path / "s.edf", [lead("V2", np.zeros(1024, np.int16), 1)], 1024, "0.001953")
    assert read_edf(path).fs == 512.0


def test_unknown_record_count_resolved_from_size(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "u.edf", [lead("I", np.ones(300, np.int16), 100)], 3, header={"number of data records": "-1"})
    assert read_edf(path).n_samples == 300


def test_lead_names_option_and_unnamed_ecg(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "psg.edf", [lead("ECG", np.zeros(100, np.int16), 100)], 1)
    with pytest.raises(ReadError, match="names no known lead; pass lead_names"):
        read_edf(path)
    assert read_edf(path, lead_names={"ECG": "II"}).leads == ("II",)


# -- bad headers ----------------------------------------------------------------------------


def _good(tmp_path: Path, **kwargs: Any) -> Path:
    signal = {**lead("ECG I", np.zeros(1000, np.int16), 100), **kwargs.pop("sig", {})}
    return write_edf(tmp_path / "bad.edf", [signal], 10, **kwargs)


def test_truncated_data_records(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match=r"declares 10 records of 200 bytes.*9 complete records\): truncated"):
        read_edf(_good(tmp_path, cut=50))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"number of signals": "0"}, "'number of signals' is 0"),
        ({"number of signals": "abc"}, "'number of signals' is 'abc', not an integer"),
        ({"number of signals": "9999"}, "9999, which needs 2560000 header bytes"),
        ({"number of data records": "ten"}, "'number of data records' is 'ten"),
        ({"data record duration": "1s"}, "'data record duration' is '1s"),
        ({"data record duration": "0"}, "'data record duration' is 0 s"),
        ({"header bytes": "768"}, "'header bytes' is 768"),
        ({"version": "1"}, "'version'"),
    ],
)
def test_bad_fixed_header_fields(tmp_path: Path, header: dict[str, str], message: str) -> None:
    with pytest.raises(ReadError, match=message):
        read_edf(_good(tmp_path, header=header))


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        ({"dmin": 0, "dmax": 0}, r"'digital minimum' \(0\) and 'digital maximum' \(0\) of signal 1 \('ECG I'\)"),
        ({"pmin": "-3.2mV"}, r"'physical minimum' of signal 1 \('ECG I'\) is '-3.2mV"),
        ({"pmin": 5, "pmax": 5}, "'physical minimum' and 'physical maximum'"),
        ({"dmax": 99999}, "outside the 16-bit range"),
        ({"dim": "degC"}, "'physical dimension' of signal 'ECG I' is 'degC'"),
        ({"spr": "0"}, "'samples per data record' of signal 1"),
    ],
)
def test_bad_signal_header_fields(tmp_path: Path, sig: dict[str, Any], message: str) -> None:
    with pytest.raises(ReadError, match=message):
        read_edf(_good(tmp_path, sig=sig))


def test_short_header_and_bdf(tmp_path: Path) -> None:
    short = tmp_path / "short.edf"
    short.write_bytes(b"0       " + b" " * 100)
    with pytest.raises(ReadError, match="truncated EDF header: 108 of 256"):
        read_edf(short)
    bdf = tmp_path / "x.bdf"
    bdf.write_bytes(b"\xffBIOSEMI" + b" " * 600)
    with pytest.raises(ReadError, match="BDF"):
        read_edf(bdf)


def test_malformed_annotation(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "m.edf", [lead("I", np.zeros(100, np.int16), 100), annotations([b"0.5\x14x\x14\x00"])], 1, reserved="EDF+C")
    with pytest.raises(ReadError, match="malformed TAL"):
        read_edf(path)


def test_only_non_ecg_signals(tmp_path: Path) -> None:
    eeg = {"label": "EEG Fpz-Cz", "dim": "uV", "pmin": -100, "pmax": 100, "dmin": -2048, "dmax": 2047, "spr": 100, "samples": np.zeros(100, np.int16)}
    resp = {**eeg, "label": "Resp oro-nasal", "dim": ""}
    path = write_edf(tmp_path / "psg.edf", [eeg, resp], 1)
    with pytest.raises(ReadError, match=r"no ECG signals \(signals: EEG Fpz-Cz, Resp oro-nasal\)"):
        read_edf(path)


def test_exact_short_duration_is_not_snapped(tmp_path: Path) -> None:
    # "3" s per record is exact: 1000 samples make 333.33 Hz, not a rounded 333 Hz.
    path = write_edf(tmp_path / "x.edf", [lead("I", np.zeros(1000, np.int16), 1000)], 1, "3")
    assert read_edf(path).fs == pytest.approx(1000 / 3)
