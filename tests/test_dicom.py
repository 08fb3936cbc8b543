"""DICOM ECG waveform reader: the real 12-lead file and constructed good and bad datasets.

Reference for the real file's values: pydicom's own ``Dataset.waveform_array`` (which applies
sensitivity x correction + baseline, in the file's unit, microvolts here), divided by 1000.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import data_path
from ecgfm.errors import ReadError
from ecgfm.io import read
from ecgfm.io.dicom import read_dicom
from ecgfm.leads import STANDARD_12

GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
HEMODYNAMIC = "1.2.840.10008.5.1.4.1.1.9.2.1"


def real_file() -> Path:
    return data_path("formats", "dicom_waveform", "waveform_ecg.dcm")


# -- the real file --------------------------------------------------------------------------


def test_real_file_rhythm_shape_rate_leads_and_metadata() -> None:
    ecg = read_dicom(real_file())
    assert ecg.signal.shape == (12, 10000)
    assert ecg.fs == 1000.0
    assert ecg.duration == 10.0
    assert ecg.leads == STANDARD_12
    assert ecg.mask is None
    meta = ecg.meta
    assert meta.source_format == "dicom"
    assert meta.patient_id == "642341"
    assert meta.age == 42.0  # PatientAge "042Y"
    assert meta.sex == "F"
    assert meta.acquired == datetime(2013, 1, 25, 10, 59, 19)  # AcquisitionDateTime
    assert meta.device == "Mortara Instrument, Inc. el250"
    assert meta.interpretation == "RITMO SINUSALE\nECG NORMALE"
    assert meta.extra["waveform"] == "rhythm"
    assert meta.extra["multiplex_groups"] == ["RHYTHM", "MEDIAN BEAT"]
    assert meta.extra["measurements"]["QRS Duration"] == (75.0, "ms")
    assert meta.extra["measurements"]["QTc Interval"] == (370.0, "ms")
    assert meta.extra["filters_hz"] == {"low": 0.05, "high": 300.0, "notch": 0.0}


def test_real_file_values_match_pydicom_in_millivolts() -> None:
    path = real_file()
    ecg = read_dicom(path)
    reference = pydicom.dcmread(path).waveform_array(0).T / 1000.0  # uV -> mV
    np.testing.assert_allclose(ecg.signal, reference, atol=1e-6)
    # Stored 80, 65, 50 at 1.25 uV per unit: 0.1, 0.08125, 0.0625 mV.
    np.testing.assert_allclose(ecg.lead("I")[:3], [0.1, 0.08125, 0.0625], atol=1e-7)
    assert ecg.lead("V5").max() == pytest.approx(1.9625)  # 1570 x 1.25 uV
    assert ecg.lead("aVR").min() == pytest.approx(-0.93125)


def test_real_file_limb_leads_obey_einthoven() -> None:
    ecg = read_dicom(real_file())
    i, ii, iii = ecg.lead("I"), ecg.lead("II"), ecg.lead("III")
    np.testing.assert_allclose(iii, ii - i, atol=1e-6)
    # aVR = -(I + II) / 2 holds to one storage step (1.25 uV) after the device's rounding.
    assert np.abs(ecg.lead("aVR") + (i + ii) / 2).max() <= 0.00125 / 2 + 1e-6


def test_real_file_median_beat() -> None:
    ecg = read_dicom(real_file(), waveform="median")
    assert ecg.signal.shape == (12, 1200)
    assert ecg.fs == 1000.0
    assert ecg.meta.extra["waveform"] == "median"
    assert ecg.meta.extra["trigger_sample"] == 500  # TriggerSamplePosition 501, 1-based
    by_index = read_dicom(real_file(), multiplex=1)
    np.testing.assert_array_equal(by_index.signal, ecg.signal)


def test_real_file_through_the_registry() -> None:
    ecg = read(real_file())
    assert ecg.meta.source_format == "dicom"
    assert ecg.n_samples == 10000


def test_bad_options() -> None:
    with pytest.raises(ReadError, match="waveform must be"):
        read_dicom(real_file(), waveform="average")
    with pytest.raises(ReadError, match="multiplex=5 but the file has 2"):
        read_dicom(real_file(), multiplex=5)


# -- truncated and foreign files ------------------------------------------------------------


@pytest.mark.parametrize("keep", [2000, 150_000, -1000])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    data = real_file().read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:keep])
    with pytest.raises(ReadError, match="truncated or corrupt|fewer than"):
        read_dicom(cut)


def test_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(ReadError, match="not a DICOM file"):
        read_dicom(path)


# -- constructed datasets -------------------------------------------------------------------


def _save(path: Path, ds: Dataset) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _channel(source: Dataset, unit: str, sensitivity: float, correction: float, baseline: float) -> Dataset:
    ch = Dataset()
    ch.ChannelSourceSequence = Sequence([source])
    ch.ChannelSensitivity = str(sensitivity)
    ch.ChannelSensitivityUnitsSequence = Sequence([_code(unit, "UCUM", unit)])
    ch.ChannelSensitivityCorrectionFactor = str(correction)
    ch.ChannelBaseline = str(baseline)
    return ch


def _dataset(
    raw: np.ndarray,
    channels: list[Dataset],
    *,
    sop: str = GENERAL_ECG,
    interpretation: str = "SS",
    fs: float = 500.0,
    padding: bytes | None = None,
    data: bytes | None = None,
) -> Dataset:
    """A waveform dataset with one rhythm multiplex; ``raw`` is ``[channels, samples]``."""
    ds = Dataset()
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "P-7"
    ds.PatientSex = "M"
    ds.PatientAge = "006M"
    ds.ContentDate = "20240229"
    ds.ContentTime = "081500.25"
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.MultiplexGroupLabel = "RHYTHM"
    group.NumberOfWaveformChannels = raw.shape[0]
    group.NumberOfWaveformSamples = raw.shape[1]
    group.SamplingFrequency = str(fs)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = raw.dtype.itemsize * 8
    group.WaveformSampleInterpretation = interpretation
    if padding is not None:
        group.add_new(0x5400100A, "OB" if raw.dtype.itemsize == 1 else "OW", padding)
    group.add_new(0x54001010, "OB" if raw.dtype.itemsize == 1 else "OW", raw.T.tobytes() if data is None else data)
    ds.WaveformSequence = Sequence([group])
    note = Dataset()
    note.UnformattedTextValue = "Sinus rhythm"
    ds.WaveformAnnotationSequence = Sequence([note])
    return ds


def test_mdc_codes_units_correction_baseline(tmp_path: Path) -> None:
    raw = np.array([[100, -200, 300, 0], [10, 20, 30, 40], [-5, 0, 5, 10]], dtype="<i2")
    channels = [
        _channel(_code("2:1", "MDC", "Lead I"), "uV", 2.5, 1.0, 0.0),
        _channel(_code("131074", "MDC", "Lead II"), "mV", 0.01, 2.0, 0.5),  # context-free code
        _channel(_code("X", "99LOCAL", "aVF, augmented voltage, foot"), "uV", 1.0, 1.0, -100.0),
    ]
    path = _save(tmp_path / "mdc.dcm", _dataset(raw, channels))
    ecg = read_dicom(path)
    assert ecg.leads == ("I", "II", "aVF")
    assert ecg.fs == 500.0
    # value = stored x sensitivity x correction + baseline, then to mV
    np.testing.assert_allclose(ecg.lead("I"), [0.25, -0.5, 0.75, 0.0], atol=1e-7)
    np.testing.assert_allclose(ecg.lead("II"), [0.7, 0.9, 1.1, 1.3], atol=1e-6)
    np.testing.assert_allclose(ecg.lead("aVF"), [-0.105, -0.1, -0.095, -0.09], atol=1e-7)
    assert ecg.meta.age == pytest.approx(0.5)
    assert ecg.meta.sex == "M"
    assert ecg.meta.acquired == datetime(2024, 2, 29, 8, 15, 0, 250000)
    assert ecg.meta.interpretation == "Sinus rhythm"


def test_signed_bytes_and_padding_mask(tmp_path: Path) -> None:
    raw = np.array([[1, -128, 3, 4, 5], [-1, -2, -128, -4, -5]], dtype="i1")
    channels = [
        _channel(_code("5.6.3-9-3", "SCPECG", "Lead V1"), "uV", 10.0, 1.0, 0.0),
        _channel(_code("5.6.3-9-4", "SCPECG", "Lead V2"), "uV", 10.0, 1.0, 0.0),
    ]
    ds = _dataset(raw, channels, interpretation="SB", padding=b"\x80")
    ecg = read_dicom(_save(tmp_path / "sb.dcm", ds))
    assert ecg.leads == ("V1", "V2")
    assert ecg.mask is not None
    assert ecg.mask.tolist() == [[True, False, True, True, True], [True, True, False, True, True]]
    np.testing.assert_allclose(ecg.lead("V1"), [0.01, 0.0, 0.03, 0.04, 0.05], atol=1e-7)


def _one_lead(tmp_path: Path, **changes: object) -> Path:
    raw = np.array([[1, 2, 3, 4]], dtype="<i2")
    source = changes.pop("source", _code("2:1", "MDC", "Lead I"))
    unit = changes.pop("unit", "uV")
    ds = _dataset(raw, [_channel(source, unit, 1.0, 1.0, 0.0)], **changes)  # type: ignore[arg-type]
    return _save(tmp_path / "one.dcm", ds)


def test_plain_dataset_without_waveform(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "P-1"
    with pytest.raises(ReadError, match="no waveform"):
        read_dicom(_save(tmp_path / "plain.dcm", ds))


def test_non_ecg_waveform_sop_class(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="is not an ECG waveform"):
        read_dicom(_one_lead(tmp_path, sop=HEMODYNAMIC))


def test_waveform_data_shorter_than_declared(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="fewer than the 8 declared"):
        read_dicom(_one_lead(tmp_path, data=b"\x01\x00\x02\x00"))


def test_non_voltage_unit(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="is not a voltage"):
        read_dicom(_one_lead(tmp_path, unit="mm[Hg]"))


def test_unknown_lead_code(tmp_path: Path) -> None:
    # 2:10 is V2R, a real MDC lead that ecgfm has no canonical name for: refused, not guessed.
    with pytest.raises(ReadError, match="lead code MDC/2:10"):
        read_dicom(_one_lead(tmp_path, source=_code("2:10", "MDC", "Lead V2R")))
    with pytest.raises(ReadError, match="'Lead Q7' is not a known lead name"):
        read_dicom(_one_lead(tmp_path, source=_code("Q7", "99X", "Lead Q7")))


def test_unsupported_sample_encoding_and_rate(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="companded"):
        read_dicom(_one_lead(tmp_path, interpretation="MB"))
    with pytest.raises(ReadError, match="sampling rate"):
        read_dicom(_one_lead(tmp_path, fs=0.5))
