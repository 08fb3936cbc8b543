"""WFDB records from shared data, checked sample for sample against the wfdb package."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

import ecgfm
from conftest import data_path
from ecgfm import ReadError
from ecgfm.io.wfdb import read_annotations, read_delineation, read_header

RECORDS = [
    ("ptb-xl/records500/00000/00001_hr", "16", 500, 12, 5000),
    ("ptb-xl/records500/01000/01024_hr", "516", 500, 12, 5000),  # FLAC, two signal files
    ("ptb-xl/records100/00000/00001_lr", "16", 100, 12, 1000),
    ("ludb/data/1", "16", 500, 12, 5000),
    ("mitdb/101", "212", 360, 2, 650000),
    ("cinc2021/E07500", "16", 500, 12, 5000),  # MATLAB v4 signal file with a 24-byte offset
    ("cinc2017/A00001", "16", 300, 1, 9000),
    ("cpsc2021/data_101_6", "16", 200, 2, 22355),
]


@pytest.mark.parametrize(("record", "fmt", "fs", "n_leads", "n_samples"), RECORDS)
def test_matches_wfdb_rdrecord(record: str, fmt: str, fs: int, n_leads: int, n_samples: int) -> None:
    path = data_path(record + ".hea")
    ecg = ecgfm.read(path)
    reference = wfdb.rdrecord(str(path.with_suffix("")))
    assert reference.fmt[0] == fmt
    assert ecg.fs == fs and ecg.n_leads == n_leads and ecg.n_samples == n_samples
    assert ecg.meta.source_format == "wfdb"
    np.testing.assert_allclose(ecg.signal, reference.p_signal.T, atol=1e-6)


def test_record_can_be_named_by_header_name_or_signal_file() -> None:
    hea = data_path("ptb-xl/records500/01000/01024_hr.hea")
    by_name = ecgfm.read(hea.with_suffix(""))
    by_signal_file = ecgfm.read(hea.with_name("01024_hr_2.dat"))
    np.testing.assert_array_equal(by_name.signal, by_signal_file.signal)
    assert ecgfm.detect_format(data_path("cinc2021/E07500.mat")) == "wfdb"


def test_header_comments_fill_metadata() -> None:
    cinc = ecgfm.read(data_path("cinc2021/E07500.hea"))
    assert (cinc.meta.age, cinc.meta.sex, cinc.meta.extra["dx"]) == (78.0, "M", ["67741000119109", "426177001"])
    ludb = ecgfm.read(data_path("ludb/data/1.hea"))
    assert (ludb.meta.age, ludb.meta.sex) == (51.0, "F")
    assert ludb.meta.interpretation.startswith("Rhythm: Sinus bradycardia.")
    mit = ecgfm.read(data_path("mitdb/101.hea"))
    assert (mit.meta.age, mit.meta.sex, mit.leads) == (75.0, "F", ("II", "V1"))
    assert mit.meta.extra["channel_names"] == {"MLII": "II"}
    af = ecgfm.read(data_path("cinc2017/A00001.hea"))
    assert af.leads == ("I",) and "lead I" in af.meta.extra["lead_assumed"]


def test_cinc_record_line_with_file_extension_is_parsed(tmp_path: Path) -> None:
    """CinC headers sometimes write the record name with '.mat' (``E00271.mat 12 500 5000``)."""
    src = data_path("cinc2021/E07500.hea")
    shutil.copy(src.with_suffix(".mat"), tmp_path / "E07500.mat")
    text = src.read_text().replace("E07500 12 500 5000", "E07500.mat 12 500 5000", 1)
    (tmp_path / "E07500.hea").write_text(text)
    with pytest.raises(ValueError, match="invalid syntax in record line"):  # wfdb refuses it
        wfdb.rdheader(str(tmp_path / "E07500"))
    ecg = ecgfm.read(tmp_path / "E07500.hea")
    assert ecg.meta.record_id == "E07500"
    np.testing.assert_array_equal(ecg.signal, ecgfm.read(src).signal)


def test_truncated_signal_file_is_reported(tmp_path: Path) -> None:
    src = data_path("ptb-xl/records500/00000/00001_hr.hea")
    shutil.copy(src, tmp_path / "00001_hr.hea")
    (tmp_path / "00001_hr.dat").write_bytes(src.with_suffix(".dat").read_bytes()[:50_000])
    with pytest.raises(ReadError, match=r"00001_hr\.hea: header declares 5000 samples x 12 signals .* truncated"):
        ecgfm.read(tmp_path / "00001_hr.hea")


def test_missing_signal_file_and_absurd_sizes(tmp_path: Path) -> None:
    (tmp_path / "a.hea").write_text("a 2 500 1000\na.dat 16 200 16 0 0 0 0 I\na.dat 16 200 16 0 0 0 0 II\n")
    with pytest.raises(ReadError, match="signal file a.dat is missing"):
        ecgfm.read(tmp_path / "a.hea")
    (tmp_path / "b.hea").write_text("b 2 500 900000000000\nb.dat 16 200 16 0 0 0 0 I\nb.dat 16 200 16 0 0 0 0 II\n")
    (tmp_path / "b.dat").write_bytes(b"\0" * 8000)
    with pytest.raises(ReadError, match="over the limit"):
        ecgfm.read(tmp_path / "b.hea")
    (tmp_path / "c.hea").write_text("c 1 0 10\nc.dat 16 200 16 0 0 0 0 I\n")
    (tmp_path / "c.dat").write_bytes(b"\0" * 20)
    with pytest.raises(ReadError, match="sampling rate 0.0 Hz is outside"):
        ecgfm.read(tmp_path / "c.hea")
    (tmp_path / "d.hea").write_text("d 1 500 10\nd.dat 16 200 16 0 0 0 0 Q7\n")
    (tmp_path / "d.dat").write_bytes(b"\0" * 20)
    with pytest.raises(ReadError, match="lead 'Q7' is not a known lead name.*pass leads="):
        ecgfm.read(tmp_path / "d.hea")
    assert ecgfm.read(tmp_path / "d.hea", leads=["V1"]).leads == ("V1",)


def test_missing_samples_become_masked_gaps(tmp_path: Path) -> None:
    digital = np.tile(np.arange(100, dtype="<i2"), (2, 1))
    digital[1, 40:50] = -32768  # WFDB's "no sample" value in format 16
    (tmp_path / "g.dat").write_bytes(digital.T.tobytes())
    (tmp_path / "g.hea").write_text("g 2 250 100\ng.dat 16 100/mV 16 0 0 0 0 I\ng.dat 16 100/uV 16 0 0 0 0 II\n")
    ecg = ecgfm.read(tmp_path / "g.hea")
    assert ecg.mask is not None and int((~ecg.mask).sum()) == 10 and not ecg.mask[1, 40:50].any()
    assert ecg.signal[0, 99] == pytest.approx(0.99)
    assert ecg.signal[1, 99] == pytest.approx(0.00099)  # uV converted to mV


def test_non_ecg_channels_are_dropped(tmp_path: Path) -> None:
    digital = np.zeros((100, 2), "<i2")
    (tmp_path / "p.dat").write_bytes(digital.tobytes())
    (tmp_path / "p.hea").write_text("p 2 250 100\np.dat 16 200/mV 16 0 0 0 0 II\np.dat 16 10/mmHg 16 0 0 0 0 ABP\n")
    ecg = ecgfm.read(tmp_path / "p.hea")
    assert ecg.leads == ("II",) and ecg.meta.extra["dropped_channels"] == ["ABP (mmHg)"]


def test_multi_segment_records_go_through_wfdb(tmp_path: Path) -> None:
    src = data_path("ptb-xl/records500/00000/00001_hr.hea")
    full = ecgfm.read(src)
    for name in ("s1", "s2"):
        wfdb.wrsamp(name, fs=500, units=["mV"] * 2, sig_name=["I", "II"], p_signal=full.signal[:2].T.astype(np.float64), fmt=["16"] * 2, adc_gain=[1000.0] * 2, baseline=[0, 0], write_dir=str(tmp_path))
    (tmp_path / "multi.hea").write_text("multi/2 2 500 10000\ns1 5000\ns2 5000\n")
    ecg = ecgfm.read(tmp_path / "multi.hea")
    assert ecg.n_samples == 10000 and ecg.leads == ("I", "II")
    np.testing.assert_allclose(ecg.signal[:, 5000:], full.signal[:2], atol=1e-3)


def test_beat_and_rhythm_annotations() -> None:
    ann = read_annotations(data_path("mitdb/203.hea"), "atr")
    assert len(ann) > 2000 and ann.fs == 360 and "V" in ann.symbol
    episodes = ann.rhythm_episodes()
    assert {label for label, _, _ in episodes} >= {"AFL", "AFIB"}
    af = read_annotations(data_path("cpsc2021/data_101_6.hea"), "atr")
    assert any(label == "AFIB" for label, _, _ in af.rhythm_episodes())


def test_ludb_per_lead_delineation() -> None:
    waves = read_delineation(data_path("ludb/data/1.hea"))
    assert set(waves) == set(ecgfm.STANDARD_12)
    kinds = [w[0] for w in waves["II"].waves()]
    # LUDB annotates the beats away from the record edges: 6 QRS, 5 P and 5 T waves in lead ii.
    assert (kinds.count("QRS"), kinds.count("P"), kinds.count("T")) == (6, 5, 5)
    for _, onset, peak, offset in waves["II"].waves():
        assert onset < peak < offset


def test_header_parser_fields() -> None:
    header = read_header(data_path("mitdb/101.hea"))
    spec = header.signals[0]
    assert (spec.fmt, spec.gain, spec.baseline, spec.units, spec.description) == ("212", 200.0, 1024, "mV", "MLII")
