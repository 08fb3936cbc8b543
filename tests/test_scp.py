"""SCP-ECG reader: the real files in formats/scp_ecg, the standard's Huffman example, and
synthetic records built here for what the real files do not exercise (custom Huffman tables,
reference beat subtraction, corruption)."""

from __future__ import annotations

import binascii
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import ecgfm
from conftest import data_path
from ecgfm.errors import ReadError, UnsupportedFormatError
from ecgfm.io import _huffman
from ecgfm.io.scp import _undo_differences, read_scp

LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
PRECORDIAL = ("V1", "V2", "V3", "V4", "V5", "V6")


def scp_file(name: str) -> Path:
    return data_path("formats", "scp_ecg", name)


# -- building synthetic SCP-ECG records -------------------------------------------------------


def section(sid: int, body: bytes, version: int = 20) -> bytes:
    body += b"\x00" * (len(body) % 2)
    head = struct.pack(
        "<HIBB6s", sid, 16 + len(body), version, version, b"SCPECG" if sid == 0 else bytes(6)
    )
    return struct.pack("<H", binascii.crc_hqx(head + body, 0xFFFF)) + head + body


def build_scp(sections: dict[int, bytes], pointer_shift: dict[int, int] | None = None) -> bytes:
    """A complete record: section 0 pointing at ``sections``, CRCs filled in."""
    ids = sorted(set(range(12)) | set(sections))
    encoded = {sid: section(sid, body) for sid, body in sections.items()}
    length0 = 16 + 10 * len(ids)
    pos = 6 + length0
    entries = []
    for sid in ids:
        if sid == 0:
            entries.append(struct.pack("<HII", 0, length0, 7))
        elif sid in encoded:
            shift = (pointer_shift or {}).get(sid, 0)
            entries.append(struct.pack("<HII", sid, len(encoded[sid]), pos + 1 + shift))
            pos += len(encoded[sid])
        else:
            entries.append(struct.pack("<HII", sid, 0, 0))
    body = section(0, b"".join(entries)) + b"".join(encoded[s] for s in ids if s in encoded)
    length = struct.pack("<I", 6 + len(body))
    return struct.pack("<H", binascii.crc_hqx(length + body, 0xFFFF)) + length + body


def tags(*items: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("<BH", t, len(v)) + v for t, v in items) + b"\xff\x00\x00"


def lead_defs(leads: list[tuple[int, int, int]], flags: int = 0x04) -> bytes:
    return bytes([len(leads), flags]) + b"".join(struct.pack("<IIB", *lead) for lead in leads)


def samples(avm: int, interval: int, diff: int, coded: list[bytes], bimodal: int = 0) -> bytes:
    head = struct.pack("<HHBB", avm, interval, diff, bimodal)
    return head + b"".join(struct.pack("<H", len(c)) for c in coded) + b"".join(coded)


def raw16(values: np.ndarray) -> bytes:
    return np.asarray(values, "<i2").tobytes()


def pack_bits(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


def encode_default(values: np.ndarray) -> bytes:
    """Huffman-code integers with the standard's default table (an independent encoder)."""
    out = []
    for v in (int(x) for x in values):
        if v == 0:
            out.append("0")
        elif abs(v) <= 8:
            out.append("1" * abs(v) + "0" + ("1" if v < 0 else "0"))
        elif -128 <= v <= 127:
            out.append("1111111110" + format(v & 0xFF, "08b"))
        else:
            out.append("1111111111" + format(v & 0xFFFF, "016b"))
    return pack_bits("".join(out))


def second_differences(x: np.ndarray) -> np.ndarray:
    d = x.astype(np.int64).copy()
    d[2:] = x[2:] - 2 * x[1:-1] + x[:-2]
    return d


def write(tmp_path: Path, data: bytes, name: str = "synthetic.scp") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- Huffman decoding --------------------------------------------------------------------------


def test_huffman_decodes_the_standards_worked_example() -> None:
    # prEN 1064:2002 worked example (default table, second differences), with the corrections
    # PixelMed's HuffmanDecoder notes: byte 6 is 0xF1 (the text says F5) and a final 0x00.
    coded = bytes(
        [0xFF, 0x83, 0x7F, 0xE0, 0xE6, 0xF1, 0x53, 0x65, 0x59, 0xB6, 0x5B, 0x96, 0x4B, 0x96, 0x00]
    )
    tables = _huffman.compile_tables((_huffman.DEFAULT_TABLE,))
    values = _undo_differences(_huffman.decode(coded, 28, tables), 2)
    # fmt: off
    assert values.tolist() == [
        13, 14, 15, 14, 16, 18, 19, 20, 22, 22, 23, 23, 23, 22,
        22, 20, 17, 15, 12, 8, 6, 3, 1, 0, -2, -2, -3, -3,
    ]
    # fmt: on


def test_default_table_round_trips_every_code_length() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [np.arange(-10, 11), [127, -128, 128, -129, 32767, -32768], rng.integers(-300, 300, 500)]
    )
    tables = _huffman.compile_tables((_huffman.DEFAULT_TABLE,))
    assert _huffman.decode(encode_default(values), len(values), tables).tolist() == values.tolist()


def test_custom_tables_with_reversed_base_codes_and_table_switch() -> None:
    # Table 1: 0 -> "1", 1 -> "01", -1 -> "001", "0001" + 16-bit value, "0000" switches to
    # table 2. Table 2: 5 -> "0", "1" switches back. Base codes are stored bit-reversed.
    def code(prefix: int, total: int, mode: int, value: int, bits: str) -> bytes:
        return struct.pack("<BBBhI", prefix, total, mode, value, int(bits[::-1], 2))

    table1 = [
        code(1, 1, 1, 0, "1"),
        code(2, 2, 1, 1, "01"),
        code(3, 3, 1, -1, "001"),
        code(4, 20, 1, 0, "0001"),
        code(4, 4, 0, 2, "0000"),
    ]
    table2 = [code(1, 1, 1, 5, "0"), code(1, 1, 0, 1, "1")]
    body = (
        struct.pack("<HH", 2, len(table1))
        + b"".join(table1)
        + struct.pack("<H", len(table2))
        + b"".join(table2)
    )
    tables = _huffman.compile_tables(_huffman.parse_tables(body))
    stream = (
        "1"
        + "01"
        + "001"
        + "0001"
        + format(-300 & 0xFFFF, "016b")
        + "0000"
        + "0"
        + "0"
        + "1"
        + "01"
    )
    assert _huffman.decode(pack_bits(stream), 7, tables).tolist() == [0, 1, -1, -300, 5, 5, 1]


def test_huffman_rejects_a_bit_pattern_matching_no_code() -> None:
    tables = _huffman.compile_tables(((_huffman.Code(2, 2, True, 7, 0b11),),))
    with pytest.raises(_huffman.HuffmanError, match="matches no Huffman code"):
        _huffman.decode(b"\xff\x00", 8, tables)
    # Padding in the last byte that forms no code just ends the stream.
    assert _huffman.decode(b"\xf0", 8, tables).tolist() == [7, 7]


# -- the real files ----------------------------------------------------------------------------


def test_example_scp_12_leads_default_huffman_second_differences() -> None:
    ecg = read_scp(scp_file("Example.scp"))
    assert ecg.leads == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF")
    assert (ecg.fs, ecg.n_samples, ecg.mask) == (500.0, 5000, None)
    extra = ecg.meta.extra
    assert extra["huffman"] == "default" and extra["difference_encoding"] == 2
    # The README's "multiply by 2.5 to get mV" would give µV: 2500 nV per unit is 0.0025 mV.
    assert extra["amplitude_multiplier_nv"] == 2500 and extra["sample_interval_us"] == 2000
    assert (
        extra["sections"] == [1, 2, 3, 4, 5, 6, 7] and extra["reference_beat_subtraction"] is False
    )
    np.testing.assert_allclose(ecg.lead("V2")[:3], [0.1375, 0.1325, 0.1275], atol=1e-6)
    p2p = np.ptp(ecg.signal, axis=1)
    assert np.all((p2p > 0.5) & (p2p < 4.0)), dict(zip(ecg.leads, p2p.round(3), strict=True))
    assert ecg.lead("V2").min() == pytest.approx(-1.928, abs=0.001)
    # III is stored, and Einthoven holds to the sample; aVR to within one 2.5 µV unit.
    lead_i, lead_ii = ecg.lead("I"), ecg.lead("II")
    assert np.abs(ecg.lead("III") - (lead_ii - lead_i)).max() < 1e-6
    assert np.abs(ecg.lead("aVR") + (lead_i + lead_ii) / 2).max() <= 0.0025 + 1e-6
    meta = ecg.meta
    assert (meta.patient_id, meta.sex, meta.age, meta.device) == ("SBJ-123", "M", 49.0, "ELI250")
    assert meta.acquired == datetime(2002, 11, 22, 9, 10, 0)
    assert meta.source_format == "scp_ecg" and meta.record_id == "Example"


def test_example_scp_reference_beat_matches_a_rhythm_beat() -> None:
    median = read_scp(scp_file("Example.scp"), waveform="median")
    rhythm = read_scp(scp_file("Example.scp"))
    assert (median.fs, median.n_samples, median.leads) == (500.0, 599, rhythm.leads)
    beat, strip = median.lead("V2"), rhythm.lead("V2")
    windows = np.lib.stride_tricks.sliding_window_view(strip, len(beat))
    corr = [np.corrcoef(w, beat)[0, 1] for w in windows[::2]]
    assert max(corr) > 0.99
    assert np.ptp(beat) == pytest.approx(2.115, abs=0.01)


def test_demo_scp_8_leads_raw_1khz() -> None:
    ecg = read_scp(scp_file("demo.scp"))
    assert ecg.leads == ("I", "II") + PRECORDIAL  # only 8 stored; select() derives the rest
    assert (ecg.fs, ecg.n_samples) == (1000.0, 10000)
    extra = ecg.meta.extra
    assert (extra["huffman"], extra["difference_encoding"], extra["amplitude_multiplier_nv"]) == (
        "none",
        0,
        183,
    )
    assert extra["scp_protocol_version"] == 1.3
    # First stored value of lead I is 254 units of 183 nV.
    assert ecg.lead("I")[0] == pytest.approx(254 * 183e-6)
    p2p = np.ptp(ecg.signal, axis=1)
    assert np.all((p2p > 0.4) & (p2p < 4.0)), dict(zip(ecg.leads, p2p.round(3), strict=True))
    meta = ecg.meta
    assert (meta.patient_id, meta.sex, meta.age) == ("12-678-QW", "M", 47.0)  # age from birth date
    assert meta.acquired == datetime(2004, 6, 24, 16, 52, 16)
    assert meta.device is None and extra["free_text"] == "demo patient"
    assert ecg.select(ecgfm.STANDARD_12).n_leads == 12


def test_contec_scp_keeps_the_samples_it_stores() -> None:
    ecg = read_scp(scp_file("0000050.ECG.scp"))
    assert ecg.leads == LIMB + PRECORDIAL
    # Section 3 declares 37855 samples per lead; the 16-bit byte counts saturate at 65534, so
    # 32767 samples (40.96 s of 47.32 s) are stored.
    assert (ecg.fs, ecg.n_samples, ecg.meta.extra["declared_samples"]) == (800.0, 32767, 37855)
    meta = ecg.meta
    assert (meta.record_id, meta.device, meta.patient_id, meta.sex, meta.age) == (
        "0000050",
        "ECG90",
        None,
        None,
        None,
    )
    assert meta.acquired == datetime(2020, 11, 16, 21, 44, 39)
    assert meta.extra["amplitude_multiplier_nv"] == 5000
    # Chest electrodes were not attached on this device: V1-V6 hold zeros.
    assert not ecg.select(PRECORDIAL).signal.any()
    limb = ecg.select(LIMB).signal
    assert np.all((np.ptp(limb, axis=1) > 1.0) & (np.ptp(limb, axis=1) < 4.0))
    assert np.abs(ecg.lead("III") - (ecg.lead("II") - ecg.lead("I"))).max() < 1e-6
    assert np.abs(ecg.lead("aVR") + (ecg.lead("I") + ecg.lead("II")) / 2).max() <= 0.005 + 1e-6


def read_edf_minimal(path: Path) -> tuple[list[str], float, np.ndarray, np.ndarray]:
    """Labels, rate, digital samples [signals, samples] and mV per digital unit of an EDF file
    with one sample per signal per record (an independent reader for the cross-check)."""
    raw = path.read_bytes()
    ns, n_records, duration = int(raw[252:256]), int(raw[236:244]), float(raw[244:252])
    fields, pos = [], 256
    for width in (16, 80, 8, 8, 8, 8, 8, 80, 8, 32):
        fields.append(
            [raw[pos + i * width : pos + (i + 1) * width].decode().strip() for i in range(ns)]
        )
        pos += width * ns
    labels, pmin, pmax, dmin, dmax, per_record = (
        fields[0],
        *(np.array(f, float) for f in fields[3:7]),
        fields[8],
    )
    assert set(per_record) == {"1"}
    digital = np.frombuffer(raw[pos:], "<i2").reshape(n_records, ns).T
    return labels, 1 / duration, digital, (pmax - pmin) / (dmax - dmin)


def test_contec_scp_matches_the_edf_export_of_the_same_recording() -> None:
    ecg = read_scp(scp_file("0000050.ECG.scp"))
    labels, fs, digital, mv_per_unit = read_edf_minimal(
        data_path("formats", "edf", "contec_0000050.ECG.edf")
    )
    assert fs == pytest.approx(800.0) and digital.shape == (12, 37855)
    n = ecg.n_samples
    for lead in LIMB:
        edf = digital[labels.index(lead), :n]
        scp_units = np.round(ecg.lead(lead) / 0.005).astype(int)
        assert np.array_equal(scp_units, edf), lead  # the same integers, sample for sample
        assert np.corrcoef(ecg.lead(lead), edf)[0, 1] > 0.999999
    # The EDF export declares +-1000 mV over the int16 range (30.5 µV per unit) where the SCP
    # AVM says 5 µV: 6.1x larger, 7 mV R waves in lead I. The SCP scale is the plausible one.
    assert mv_per_unit[0] / 0.005 == pytest.approx(6.1036, abs=1e-3)
    assert np.abs(ecg.lead("I")).max() < 1.5 < np.abs(digital[0] * mv_per_unit[0]).max()


def test_read_detects_scp_and_refuses_raw_contec_dumps() -> None:
    ecg = ecgfm.read(scp_file("Example.scp"))
    assert ecg.meta.source_format == "scp_ecg" and ecg.n_leads == 12
    with pytest.raises(UnsupportedFormatError, match="Contec"):
        ecgfm.read(scp_file("0000037.ECG"))


# -- corruption and truncation of a real file --------------------------------------------------


def section_offset(data: bytes, sid: int) -> int:
    for entry in range((struct.unpack_from("<I", data, 10)[0] - 16) // 10):
        s, _, index = struct.unpack_from("<HII", data, 22 + 10 * entry)
        if s == sid:
            return index - 1
    raise AssertionError(sid)


@pytest.mark.parametrize("sid", [1, 2, 3, 6])
def test_a_flipped_byte_is_reported_against_its_section(tmp_path: Path, sid: int) -> None:
    data = bytearray(scp_file("Example.scp").read_bytes())
    data[section_offset(bytes(data), sid) + 17] ^= 0x10  # a byte of the section body
    with pytest.raises(ReadError, match=rf"section {sid} CRC mismatch"):
        read_scp(write(tmp_path, bytes(data)))


def test_file_crc_and_check_crc_off(tmp_path: Path) -> None:
    data = bytearray(scp_file("Example.scp").read_bytes())
    data[0] ^= 0xFF
    path = write(tmp_path, bytes(data))
    with pytest.raises(ReadError, match="file CRC mismatch"):
        read_scp(path)
    assert read_scp(path, check_crc=False).n_samples == 5000


@pytest.mark.parametrize("keep", [3, 30, 1000, 34143])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    data = scp_file("Example.scp").read_bytes()[:keep]
    with pytest.raises(ReadError, match="too short|truncated"):
        read_scp(write(tmp_path, data))


# -- synthetic records: what the real files do not exercise ------------------------------------


def test_pointer_past_the_end_and_lengths_past_the_section(tmp_path: Path) -> None:
    leads = lead_defs([(1, 4, 1)])
    good = {3: leads, 6: samples(1000, 2000, 0, [raw16([1, 2, 3, 4])])}
    assert read_scp(write(tmp_path, build_scp(good))).signal[0].tolist() == pytest.approx(
        [0.001, 0.002, 0.003, 0.004]
    )
    with pytest.raises(ReadError, match="section 6 .* outside the"):
        read_scp(write(tmp_path, build_scp(good, pointer_shift={6: 40})))
    body6 = struct.pack("<HHBBH", 1000, 2000, 0, 0, 400) + raw16([1, 2, 3, 4])
    with pytest.raises(ReadError, match="lead data lengths add up to 400 bytes"):
        read_scp(write(tmp_path, build_scp({3: leads, 6: body6})))
    with pytest.raises(ReadError, match="hold 4 samples, section 3 declares 9"):
        read_scp(write(tmp_path, build_scp({3: lead_defs([(1, 9, 1)]), 6: good[6]})))
    with pytest.raises(ReadError, match="no section 6"):
        read_scp(write(tmp_path, build_scp({3: leads})))


def test_reference_beat_is_added_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, beat_len, fiducial = 1000, 100, 41  # reference beat: 200 ms at 500 Hz, fiducial sample 41
    beat = np.stack(
        [np.round(400 * np.sin(np.linspace(0, np.pi, beat_len)) ** 3 * s) for s in (1, -1)]
    ).astype(int)
    rhythm = np.cumsum(rng.integers(-3, 4, (2, n)), axis=1)
    zones = []
    for fc in (200, 500, 800):  # 1-based rhythm samples of each fiducial point
        start, end = fc - 30, fc + 50
        zones.append((0, start, fc, end))
        s = np.arange(start, end + 1)
        rhythm[:, s - 1] += beat[:, fiducial + (s - fc) - 1]
    residual = rhythm.copy()
    for _, start, fc, end in zones:
        s = np.arange(start, end + 1)
        residual[:, s - 1] -= beat[:, fiducial + (s - fc) - 1]
    sec4 = struct.pack("<HHH", 200, fiducial, len(zones)) + b"".join(
        struct.pack("<HIII", *z) for z in zones
    )
    record = build_scp(
        {
            2: struct.pack("<H", 19999),
            3: lead_defs([(1, n, 1), (1, n, 2)], flags=0x05),
            4: sec4,
            5: samples(5000, 2000, 2, [encode_default(second_differences(b)) for b in beat]),
            6: samples(5000, 2000, 2, [encode_default(second_differences(r)) for r in residual]),
        }
    )
    path = write(tmp_path, record)
    ecg = read_scp(path)
    assert ecg.meta.extra["reference_beat_subtraction"] is True
    np.testing.assert_allclose(ecg.signal, rhythm * 0.005, atol=1e-5)
    median = read_scp(path, waveform="median")
    np.testing.assert_allclose(median.signal, beat * 0.005, atol=1e-5)


def test_bimodal_compression_is_refused(tmp_path: Path) -> None:
    record = build_scp(
        {
            3: lead_defs([(1, 4, 1)]),
            5: samples(1000, 2000, 0, [raw16([0, 0])]),
            6: samples(1000, 8000, 0, [raw16([1, 2, 3, 4])], bimodal=1),
        }
    )
    with pytest.raises(ReadError, match="bimodal compression"):
        read_scp(write(tmp_path, record))


def test_unknown_lead_code_and_sequential_leads(tmp_path: Path) -> None:
    data = raw16(np.arange(4))
    with pytest.raises(ReadError, match=r"lead code 10 \(V2R\)"):
        read_scp(
            write(
                tmp_path, build_scp({3: lead_defs([(1, 4, 10)]), 6: samples(1000, 2000, 0, [data])})
            )
        )
    # Leads recorded one after the other (flag "simultaneous" off): masked outside their span.
    record = build_scp(
        {3: lead_defs([(1, 4, 1), (5, 8, 2)], flags=0), 6: samples(1000, 2000, 0, [data, data])}
    )
    ecg = read_scp(write(tmp_path, record))
    assert ecg.mask is not None and ecg.mask.tolist() == [
        [True] * 4 + [False] * 4,
        [False] * 4 + [True] * 4,
    ]
    assert ecg.lead("II")[4:].tolist() == pytest.approx([0.0, 0.001, 0.002, 0.003])
    assert ecg.meta.extra["leads_simultaneous"] is False


def test_demographics_and_interpretive_statements(tmp_path: Path) -> None:
    sec1 = tags(
        (2, b"PID-7\x00"),
        (4, struct.pack("<HB", 18, 2)),
        (8, b"\x02"),
        (25, struct.pack("<HBB", 2021, 3, 4)),
        (26, bytes([5, 6, 7])),
        (31, b"REC-1\x00"),
    )

    def statements(*items: bytes) -> bytes:
        head = bytes([1]) + struct.pack("<HBB", 2021, 3, 4) + bytes([5, 6, 7, len(items)])
        return head + b"".join(struct.pack("<BH", i + 1, len(s)) + s for i, s in enumerate(items))

    record = build_scp(
        {
            1: sec1,
            3: lead_defs([(1, 4, 1)]),
            6: samples(1000, 2000, 0, [raw16([0, 1, 2, 3])]),
            8: statements(b"Sinus rhythm\x00", b"Normal ECG\x00"),
            11: statements(b"\x01SR\x00NORM\x00", b"\x03logic\x00"),
        }
    )
    meta = read_scp(write(tmp_path, record)).meta
    assert (meta.patient_id, meta.record_id, meta.sex, meta.age) == ("PID-7", "REC-1", "F", 1.5)
    assert meta.acquired == datetime(2021, 3, 4, 5, 6, 7)
    assert meta.interpretation == "Sinus rhythm\nNormal ECG\nSR; NORM"
    assert meta.extra["interpretation_status"] == "confirmed"


def test_bad_arguments_and_malformed_sections(tmp_path: Path) -> None:
    path = scp_file("Example.scp")
    with pytest.raises(ReadError, match="waveform must be one of"):
        read_scp(path, waveform="average")
    with pytest.raises(ReadError, match="sample interval of 0 µs is not a plausible"):
        read_scp(
            write(
                tmp_path,
                build_scp({3: lead_defs([(1, 1, 1)]), 6: samples(1000, 0, 0, [raw16([0])])}),
            )
        )
    with pytest.raises(ReadError, match="section 1: tag 2 declares 50 bytes"):
        read_scp(
            write(
                tmp_path,
                build_scp(
                    {
                        1: b"\x02\x32\x00ab",
                        3: lead_defs([(1, 1, 1)]),
                        6: samples(1000, 2000, 0, [raw16([0])]),
                    }
                ),
            )
        )
