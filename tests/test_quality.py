"""Signal-quality checks: each flag fires on a constructed defect and stays quiet on clean records."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import data_path
from ecgfm.leads import STANDARD_12, derive_limb_leads
from ecgfm.quality import (
    AMPLITUDE_TOO_HIGH,
    AMPLITUDE_TOO_LOW,
    BASELINE_WANDER,
    CLIPPING,
    CODES,
    FLAT_LEAD,
    GAPS,
    HIGH_FREQUENCY_NOISE,
    LIMB_LEAD_REVERSAL,
    LIMB_LEADS_INCONSISTENT,
    MAINS_INTERFERENCE,
    TOO_SHORT,
    QualityConfig,
    QualityFlag,
    QualityReport,
    check_quality,
)
from ecgfm.record import ECG, Metadata


def wfdb_record(*parts: str) -> ECG:
    """A record read with wfdb directly (physical signal in mV)."""
    import wfdb

    path = data_path(*parts)
    rec = wfdb.rdrecord(str(path.with_suffix("")))
    return ECG(rec.p_signal.T, rec.fs, tuple(rec.sig_name), Metadata(record_id=path.stem))


def clean() -> ECG:
    return wfdb_record("ptb-xl", "records500", "00000", "00002_hr.hea")


def with_lead(ecg: ECG, lead: str, values: np.ndarray) -> ECG:
    signal = ecg.signal.copy()
    signal[ecg.leads.index(lead)] = values
    return ecg.replace(signal=signal)


def flagged(report: QualityReport) -> list[tuple[str, str | None]]:
    return sorted((flag.code, flag.lead or "") for flag in report.flags)


@pytest.mark.parametrize(
    "parts",
    [
        ("ptb-xl", "records500", "00000", "00001_hr.hea"),
        ("ptb-xl", "records500", "00000", "00002_hr.hea"),
        ("ptb-xl", "records500", "00000", "00003_hr.hea"),
        ("ptb-xl", "records500", "01000", "01024_hr.hea"),  # FLAC-stored (format 516)
        ("ptb-xl", "records100", "00000", "00005_lr.hea"),
        ("ludb", "data", "1.hea"),
        ("ludb", "data", "101.hea"),
    ],
)
def test_clean_real_records_raise_no_flag(parts) -> None:
    report = check_quality(wfdb_record(*parts))
    assert report.flags == () and report.ok
    assert report.to_dict() == {"record": parts[-1][:-4], "ok": True, "flags": []}


def test_real_record_with_a_drifting_baseline_raises_only_that_warning() -> None:
    # PTB-XL annotates baseline drift for 00004_hr; its V4 baseline moves about 3.3 mV.
    report = check_quality(wfdb_record("ptb-xl", "records500", "00000", "00004_hr.hea"))
    assert report.codes == {BASELINE_WANDER} and report.ok
    (flag,) = report.flags
    assert flag.lead == "V4" and 3.0 < flag.value < 3.7 and not flag.blocking


def test_real_record_with_dead_leads_is_flagged_flat() -> None:
    # Chapman/Ningbo record JS20004 stores V2, V4 and V6 as all-zero rows.
    ecg = wfdb_record("cinc2021", "JS20004.hea")
    report = check_quality(ecg)
    flats = report.by_code(FLAT_LEAD)
    assert sorted(f.lead for f in flats) == ["V2", "V4", "V6"]
    assert all(f.value == 0.0 and f.blocking for f in flats)
    assert not report.ok
    for lead in ("V2", "V4", "V6"):
        assert not ecg.lead(lead).any()


def test_flat_lead_by_variance_and_by_constant_run() -> None:
    ecg = clean()
    report = check_quality(with_lead(ecg, "V3", np.full(ecg.n_samples, 0.2)))
    assert flagged(report) == [(FLAT_LEAD, "V3")]
    assert report.flags[0].value == 0.0 and not report.ok
    # A disconnected stretch: 2.5 s constant at the level the lead had, mid-record.
    v5 = ecg.lead("V5").copy()
    v5[2000:3250] = v5[2000]
    report = check_quality(with_lead(ecg, "V5", v5))
    assert flagged(report) == [(FLAT_LEAD, "V5")]
    assert report.flags[0].value == pytest.approx(2.5, abs=0.01)
    assert "constant for 2.50 s" in report.flags[0].reason


def test_clipped_lead() -> None:
    ecg = clean()
    ii = ecg.lead("II")
    rail = 0.5 * float(ii.max())
    report = check_quality(with_lead(ecg, "II", np.minimum(ii, rail)))
    assert flagged(report) == [(CLIPPING, "II")]
    expected = float((ii >= rail).mean())
    assert report.flags[0].value == pytest.approx(expected, rel=0.3)
    assert report.ok  # a warning: the waveform is still mostly there


@pytest.mark.parametrize(("factor", "code"), [(1000.0, AMPLITUDE_TOO_HIGH), (0.001, AMPLITUDE_TOO_LOW)])
def test_wrong_units(factor: float, code: str) -> None:
    ecg = clean()
    baseline = check_quality(ecg, QualityConfig(amplitude_max_mv=0.0)).flags[0].value
    report = check_quality(ecg.replace(signal=ecg.signal * factor))
    assert report.codes == {code} and not report.ok
    (flag,) = report.flags
    assert flag.lead is None and flag.value == pytest.approx(baseline * factor, rel=1e-3)
    assert ("µV read as mV" if factor > 1 else "V read as mV") in flag.reason


def test_inverted_lead_i_is_named() -> None:
    ecg = clean()
    report = check_quality(with_lead(ecg, "I", -ecg.lead("I")))
    assert flagged(report) == [(LIMB_LEADS_INCONSISTENT, "I")]
    assert "lead I appears inverted" in report.flags[0].reason
    assert report.flags[0].value < 0


def test_swapped_arm_electrodes_are_detected() -> None:
    # Left/right arm swap: I inverts, II and III swap, aVR and aVL swap, aVF stays.
    ecg = clean()
    get = {lead: ecg.lead(lead) for lead in STANDARD_12}
    swapped = dict(get, I=-get["I"], II=get["III"], III=get["II"], aVR=get["aVL"], aVL=get["aVR"])
    report = check_quality(ecg.replace(signal=np.stack([swapped[lead] for lead in ecg.leads])))
    assert flagged(report) == [(LIMB_LEAD_REVERSAL, "")]
    assert report.flags[0].value >= QualityConfig().reversal_min_score
    # Without V5/V6 the QRS-polarity fallback judges from I and aVR alone.
    limb_only = ecg.replace(signal=np.stack([swapped[lead] for lead in STANDARD_12[:6]]),
                            leads=STANDARD_12[:6])
    assert check_quality(limb_only).codes <= {LIMB_LEAD_REVERSAL}


def test_mislabelled_limb_lead() -> None:
    ecg = clean()
    report = check_quality(with_lead(ecg, "aVF", ecg.lead("V2")))
    assert flagged(report) == [(LIMB_LEADS_INCONSISTENT, "aVF")]
    assert "aVF = " in report.flags[0].reason and "mislabelled" in report.flags[0].reason


def test_mains_noise() -> None:
    ecg = clean()
    t = np.arange(ecg.n_samples) / ecg.fs
    # Mains picked up by the left arm and leg electrodes: 0.3 mV in I, II and V1-V6, and the
    # limb leads derived from them consistently (III gets none), as on a real recording.
    line = 0.3 * np.sin(2 * np.pi * 50 * t + 0.4)
    limb = derive_limb_leads(line, line)
    added = np.stack([limb.get(lead, line) for lead in ecg.leads])
    report = check_quality(ecg.replace(signal=ecg.signal + added))
    mains = report.by_code(MAINS_INTERFERENCE)
    assert len(mains) == 1 and mains[0].value == pytest.approx(0.3, rel=0.05)
    assert re.match(r"50 Hz line of (29\d|30\d) µV amplitude", mains[0].reason)
    noisy_leads = {f.lead for f in report.by_code(HIGH_FREQUENCY_NOISE)}
    # The line dwarfs the power above 40 Hz of most leads (not the large V2), and III has none.
    assert "III" not in noisy_leads and len(noisy_leads) >= 9
    assert report.codes == {MAINS_INTERFERENCE, HIGH_FREQUENCY_NOISE} and report.ok
    faint = check_quality(ecg.replace(signal=ecg.signal + 0.01 * np.sin(2 * np.pi * 60 * t)))
    assert faint.flags == ()  # 10 uV: below mains_min_mv


def test_muscle_noise() -> None:
    ecg = clean()
    rng = np.random.default_rng(7)
    noise = np.zeros_like(ecg.signal)
    noise[ecg.leads.index("V1")] = rng.normal(scale=0.2, size=ecg.n_samples)
    report = check_quality(ecg.replace(signal=ecg.signal + noise))
    assert flagged(report) == [(HIGH_FREQUENCY_NOISE, "V1")]
    # White noise puts (250 - 40) / 250 of its 0.04 mV^2 above 40 Hz; V1's own power above
    # 0.5 Hz is about 0.05 mV^2 with almost none above 40 Hz: 0.034 / 0.09 ~ 0.37.
    assert 0.3 < report.flags[0].value < 0.5


def test_baseline_wander() -> None:
    ecg = clean()
    t = np.arange(ecg.n_samples) / ecg.fs
    report = check_quality(ecg.replace(signal=ecg.signal + 2.0 * np.sin(2 * np.pi * 0.2 * t)))
    assert report.codes == {BASELINE_WANDER} and len(report.flags) == 12
    for flag in report.flags:
        assert 3.5 < flag.value < 4.6  # 4 mV peak-to-peak wander, plus the lead's own


def test_too_short_record() -> None:
    ecg = clean()
    short = ecg.replace(signal=ecg.signal[:, :1500])
    report = check_quality(short)
    assert flagged(report) == [(TOO_SHORT, "")]
    assert report.flags[0].value == 3.0 and report.flags[0].blocking and not report.ok
    assert check_quality(short, QualityConfig(min_seconds=2)).flags == ()


def test_gaps_from_the_mask() -> None:
    ecg = clean()
    signal = ecg.signal.copy()
    signal[ecg.leads.index("V2"), 1000:1500] = np.nan
    signal[ecg.leads.index("V3")] = np.nan
    report = check_quality(ECG.with_gaps(signal, ecg.fs, ecg.leads, ecg.meta))
    assert flagged(report) == [(GAPS, "V2"), (GAPS, "V3")]
    v2, v3 = report.by_code(GAPS)
    assert v2.value == pytest.approx(0.1) and v3.value == 1.0
    assert "lead not recorded" in v3.reason and report.ok


def test_degenerate_records_do_not_crash() -> None:
    zeros = ECG(np.zeros((12, 5000)), 500, STANDARD_12)
    report = check_quality(zeros)
    assert flagged(report) == [(FLAT_LEAD, lead) for lead in sorted(STANDARD_12)]
    tiny = ECG(np.random.default_rng(0).normal(size=(1, 10)), 500, ("II",))
    assert check_quality(tiny).codes == {TOO_SHORT}
    import wfdb

    rec = wfdb.rdrecord(str(data_path("cinc2017", "A00001.hea").with_suffix("")))
    # AliveCor's single lead ("ECG" in the header) is recorded between the hands: lead I.
    single = check_quality(ECG(rec.p_signal.T, rec.fs, ("I",)))
    assert single.ok and single.codes <= {HIGH_FREQUENCY_NOISE, BASELINE_WANDER}


def test_report_serialises_and_config_controls_blocking() -> None:
    ecg = clean()
    report = check_quality(with_lead(ecg, "V3", np.zeros(ecg.n_samples)), QualityConfig(blocking=frozenset()))
    assert report.ok and report.codes == {FLAT_LEAD}
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {
        "record": "00002_hr",
        "ok": True,
        "flags": [{"code": FLAT_LEAD, "lead": "V3", "reason": report.flags[0].reason,
                   "value": 0.0, "blocking": False}],
    }
    assert set(CODES) >= {flag.code for flag in report.flags}
    assert QualityFlag("x", None, "r", float("nan")).to_dict()["value"] is None
