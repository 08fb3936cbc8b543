"""Content-based detection, bare arrays (NPZ/NPY/CSV), headerless MAT files, and writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ecgfm
from conftest import EXAMPLES, data_path
from ecgfm import ReadError, UnsupportedFormatError
from ecgfm.io.write import write

EXAMPLE = EXAMPLES / "ptbxl" / "00003_hr.hea"


def test_detection_ignores_misleading_extensions(tmp_path: Path) -> None:
    scp = data_path("formats/scp_ecg/Example.scp")
    (tmp_path / "looks_like.xml").write_bytes(scp.read_bytes())
    assert ecgfm.detect_format(tmp_path / "looks_like.xml") == "scp_ecg"
    dcm = data_path("formats/dicom_waveform/waveform_ecg.dcm")
    (tmp_path / "scan.edf").write_bytes(dcm.read_bytes())
    assert ecgfm.detect_format(tmp_path / "scan.edf") == "dicom"


@pytest.mark.parametrize(
    ("relative", "fmt"),
    [
        ("formats/hl7_aecg/examples/examples/minimum_aecg.xml", "hl7_aecg"),
        ("formats/philips_sierra_xml/129DYPRG.XML", "philips_xml"),
        ("formats/philips_sierra_xml/2020-5-18_15-48-11.xml", "philips_xml"),  # UTF-16
        ("formats/philips_sierra_xml/ad4d3d80-d165_1-04_converted.xml", "hl7_aecg"),
        ("formats/dicom_waveform/waveform_ecg.dcm", "dicom"),
        ("formats/scp_ecg/demo.scp", "scp_ecg"),
        ("formats/edf/contec_0000050.ECG.edf", "edf"),
        ("cpsc2019/data/data_00014.mat", "mat"),
        ("cinc2021/E07500.mat", "wfdb"),
    ],
)
def test_detects_real_files(relative: str, fmt: str) -> None:
    assert ecgfm.detect_format(data_path(relative)) == fmt


def test_unknown_and_empty_files_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "empty.ecg").write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty\.ecg: file is empty"):
        ecgfm.read(tmp_path / "empty.ecg")
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UnsupportedFormatError, match=r"noise\.bin: content matches no supported ECG format"):
        ecgfm.read(tmp_path / "noise.bin")
    (tmp_path / "page.xml").write_text("<html><body/></html>")
    with pytest.raises(UnsupportedFormatError, match="root element <html> is not an ECG format"):
        ecgfm.read(tmp_path / "page.xml")
    with pytest.raises(ReadError, match="no such file"):
        ecgfm.read(tmp_path / "absent.hea")


def test_contec_raw_dumps_are_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedFormatError, match="raw Contec ECG90A .* export the recording as SCP-ECG"):
        ecgfm.read(data_path("formats/scp_ecg/0000037.ECG"))


@pytest.mark.parametrize("fmt", ["wfdb", "npz", "csv"])
def test_writers_round_trip(tmp_path: Path, fmt: str) -> None:
    ecg = ecgfm.read(EXAMPLE)
    written = write(ecg, tmp_path, fmt)
    back = ecgfm.read(written)
    assert back.leads == ecg.leads and back.fs == ecg.fs
    np.testing.assert_allclose(back.signal, ecg.signal, atol=5e-4)  # 1 uV quantisation


def test_npz_round_trip_keeps_mask_and_metadata(tmp_path: Path) -> None:
    x = np.ones((2, 500))
    x[0, :10] = np.nan
    ecg = ecgfm.ECG.with_gaps(x, 250, ["V1", "V2"], ecgfm.Metadata(record_id="r1", age=61, sex="F", extra={"dx": ["426783006"]}))
    back = ecgfm.read(write(ecg, tmp_path, "npz"))
    assert back.mask is not None and int((~back.mask).sum()) == 10
    assert (back.meta.age, back.meta.sex, back.meta.extra["dx"]) == (61, "F", ["426783006"])


def test_bare_arrays_need_rate_and_leads(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5000, 2), np.float32))
    with pytest.raises(ReadError, match="no sampling rate: pass fs="):
        ecgfm.read(tmp_path / "x.npy")
    ecg = ecgfm.read(tmp_path / "x.npy", fs=500, leads=["I", "II"])
    assert (ecg.n_leads, ecg.n_samples) == (2, 5000)
    (tmp_path / "y.csv").write_text("I,II\n" + "\n".join(f"{i * 1000},{-i * 1000}" for i in range(10)))
    with pytest.raises(ReadError, match="pass fs="):
        ecgfm.read(tmp_path / "y.csv")
    uv = ecgfm.read(tmp_path / "y.csv", fs=100, units="uV")
    assert uv.signal[0, 9] == pytest.approx(9.0) and uv.leads == ("I", "II")


def test_csv_time_column_gives_the_rate(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time_s,II\n" + "\n".join(f"{i / 250},{i}" for i in range(20)))
    assert ecgfm.read(tmp_path / "t.csv").fs == 250
    (tmp_path / "bad.csv").write_text("time_s,II\n0,1\n0.004,1\n0.004,2\n")
    with pytest.raises(ReadError, match="not strictly increasing"):
        ecgfm.read(tmp_path / "bad.csv")


def test_cpsc2019_mat_layout_is_read_with_its_documented_rate() -> None:
    ecg = ecgfm.read(data_path("cpsc2019/data/data_00014.mat"))
    assert (ecg.fs, ecg.n_samples, ecg.leads) == (500.0, 5000, ("I",))
    assert 0.3 < float(np.ptp(ecg.signal)) < 5  # mV


def test_mat_without_header_needs_rate(tmp_path: Path) -> None:
    src = data_path("cinc2017/A00001.mat")
    (tmp_path / "A1.mat").write_bytes(src.read_bytes())
    with pytest.raises(ReadError, match="carries no sampling rate"):
        ecgfm.read(tmp_path / "A1.mat")
    alone = ecgfm.read(tmp_path / "A1.mat", fs=300, leads=["I"], gain=1000)
    np.testing.assert_allclose(alone.signal, ecgfm.read(src).signal, atol=1e-6)


def test_corrupt_mat_is_reported(tmp_path: Path) -> None:
    src = data_path("cpsc2019/data/data_00014.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(src[: len(src) // 3])
    with pytest.raises(ReadError, match=r"cut\.mat: "):
        ecgfm.read(tmp_path / "cut.mat")


def test_import_ecgfm_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ecgfm; heavy = [m for m in ('torch', 'lightning', 'fastapi', 'onnxruntime', 'matplotlib', "
        "'wfdb', 'pandas', 'scipy', 'pydicom', 'typer') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_xml_root_is_found_after_doctype_with_internal_subset(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_bytes(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "x">]><AnnotatedECG/>')
    assert ecgfm.detect_format(tmp_path / "a.xml") == "hl7_aecg"
    (tmp_path / "b.xml").write_bytes(b'<!-- c --><!DOCTYPE RestingECG SYSTEM "restecg.dtd"><RestingECG/>')
    assert ecgfm.detect_format(tmp_path / "b.xml") == "muse_xml"


def test_cpsc2018_struct_layout(tmp_path: Path) -> None:
    """CPSC 2018 stores a struct ECG with sex, age and data [12, samples] in mV at 500 Hz."""
    import scipy.io

    data = np.random.default_rng(1).normal(0, 0.3, (12, 3000))
    scipy.io.savemat(tmp_path / "A0001.mat", {"ECG": {"sex": "Female", "age": 74.0, "data": data}})
    ecg = ecgfm.read(tmp_path / "A0001.mat")
    assert (ecg.fs, ecg.leads, ecg.meta.sex, ecg.meta.age) == (500.0, ecgfm.STANDARD_12, "F", 74.0)
    np.testing.assert_allclose(ecg.signal, data, atol=1e-6)
