"""ecgfm.delineate: known-answer synthetic beats, LUDB records, measurements, bad input.

The synthetic beats are sums of raised-cosine (Hann) waves, each exactly zero outside its
support, so every onset and offset is known to the sample. The LUDB checks score against the
cardiologists' per-lead annotations (Kalyakulina et al. 2020) with the same matcher as
``benchmarks/bench_delineation_ludb.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import data_path
from ecgfm.delineate import (
    KEYS,
    Delineation,
    Measurements,
    MedianBeat,
    delineate,
    frontal_axis,
    measure,
    median_beat,
    qtc_bazett,
    qtc_fridericia,
)
from ecgfm.delineate._waves import nanmedian0
from ecgfm.delineate.scoring import match_points, reference_points, score_lead
from ecgfm.errors import ValidationError
from ecgfm.record import ECG, Metadata

FS = 500.0
BEATS_S = 0.6 + np.arange(10) * 1.0  # R peaks, 60 beats/min
# Each wave: (onset, offset) relative to the R peak in seconds, and amplitude in mV.
WAVES = {
    "P": [(-0.200, -0.100, 0.15)],
    "QRS": [(-0.040, -0.020, -0.20), (-0.020, 0.020, 1.00), (0.020, 0.045, -0.25)],
    "T": [(0.140, 0.340, 0.30)],
}
TRUE = {"P_on": -0.200, "P_off": -0.100, "P_peak": -0.150, "QRS_on": -0.040, "QRS_off": 0.045,
        "T_on": 0.140, "T_peak": 0.240, "T_off": 0.340}


def _hann(t: np.ndarray, on: float, off: float, amp: float) -> np.ndarray:
    inside = (t >= on) & (t <= off)
    return np.where(inside, amp * 0.5 * (1 - np.cos(2 * np.pi * (t - on) / (off - on))), 0.0)


def synthetic_beat_train(fs: float = FS, duration: float = 10.0, gains=(1.0, 0.7, -0.5), noise: float = 0.003) -> np.ndarray:
    """``[len(gains), samples]``: the Hann-wave beat train scaled per lead, plus a little noise."""
    t = np.arange(int(duration * fs)) / fs
    x = np.zeros_like(t)
    for r in BEATS_S:
        for parts in WAVES.values():
            for on, off, amp in parts:
                x += _hann(t, r + on, r + off, amp)
    rng = np.random.default_rng(0)
    return np.stack([g * x + rng.normal(0, noise, t.size) for g in gains])


def synthetic_ecg(fs: float = FS, leads=("I", "II", "V1"), gains=(1.0, 0.7, -0.5)) -> ECG:
    return ECG(synthetic_beat_train(fs, gains=gains), fs, leads, Metadata(record_id="synthetic"))


# -- known answers --------------------------------------------------------------------------


def test_synthetic_fiducials_within_a_few_ms():
    d = delineate(synthetic_ecg())
    assert d.n_beats == BEATS_S.size
    np.testing.assert_allclose(d.r_peaks / FS, BEATS_S, atol=0.004)
    # Boundaries of smooth waves: a slope threshold places them a little inside the support.
    tolerance_ms = {"QRS_on": 8, "QRS_off": 8, "P_on": 15, "P_peak": 4, "P_off": 15,
                    "T_on": 25, "T_peak": 4, "T_off": 20}
    for key, rel in TRUE.items():
        got = d.waves[key] / FS
        assert np.isfinite(got).all(), key
        err_ms = np.abs(got - (BEATS_S + rel)) * 1000
        assert err_ms.max() <= tolerance_ms[key], (key, err_ms.round(1))


def test_synthetic_measurements():
    m = measure(synthetic_ecg())
    assert m.n_beats == 10
    assert m.heart_rate_bpm == pytest.approx(60.0, abs=0.5)
    assert m.rr_ms == pytest.approx(1000.0, abs=2)
    assert m.pr_ms == pytest.approx(160.0, abs=12)
    assert m.qrs_ms == pytest.approx(85.0, abs=12)
    assert m.qt_ms == pytest.approx(380.0, abs=20)
    # RR = 1 s, so both corrections leave QT unchanged.
    assert m.qtc_bazett_ms == pytest.approx(m.qt_ms, abs=1)
    assert m.qtc_fridericia_ms == pytest.approx(m.qt_ms, abs=1)


def test_rate_invariance_synthetic():
    """Same beats at 500 and 250 Hz: indices at each record's own rate, same intervals."""
    d500 = delineate(synthetic_ecg(500.0))
    d250 = delineate(synthetic_ecg(250.0))
    assert d250.fs == 250.0 and d500.n_beats == d250.n_beats
    np.testing.assert_allclose(d250.r_peaks, d500.r_peaks / 2, atol=2)
    for key in ("QRS_on", "QRS_off", "T_off", "P_on"):
        np.testing.assert_allclose(d250.waves[key] / 250.0, d500.waves[key] / 500.0, atol=0.008, err_msg=key)


def test_one_lead_and_odd_rate():
    ecg = ECG(synthetic_beat_train(360.0, gains=(1.0,)), 360.0, ("II",))
    d = delineate(ecg)
    assert d.leads == ("II",) and d.n_beats == 10
    np.testing.assert_allclose(d.r_peaks / 360.0, BEATS_S, atol=0.006)
    assert measure(ecg, d).qrs_ms == pytest.approx(85.0, abs=12)


# -- measurements by hand ---------------------------------------------------------------------


def test_qtc_formulas():
    assert qtc_bazett(400.0, 1000.0) == pytest.approx(400.0)
    assert qtc_bazett(400.0, 640.0) == pytest.approx(400.0 / 0.8)  # sqrt(0.64) = 0.8
    assert qtc_fridericia(400.0, 729.0) == pytest.approx(400.0 / 0.9)  # 0.729 ** (1/3) = 0.9
    assert math.isnan(qtc_bazett(400.0, 0.0))


EQUAL_I_AVF_DEG = math.degrees(math.atan2(2 / math.sqrt(3), 1))  # 49.1: Novosel et al. 1999


def test_frontal_axis_by_hand():
    # Equal net I and aVF: 45 degrees by the textbook atan2(aVF, I), 49.1 with aVF's
    # sqrt(3)/2 lead gain in Einthoven's triangle (the corrected formula used here).
    assert frontal_axis(1.0, 1.0) == pytest.approx(EQUAL_I_AVF_DEG)
    assert frontal_axis(1.0, 0.0) == pytest.approx(0.0)
    assert frontal_axis(0.0, 2.0) == pytest.approx(90.0)
    assert frontal_axis(-1.0, 0.0) == pytest.approx(180.0)
    assert frontal_axis(1.0, -1.0) == pytest.approx(-EQUAL_I_AVF_DEG)
    # Heart vector at 60 degrees, unit length: I = cos 60, aVF = (sqrt(3)/2) sin 60 = 0.75.
    assert frontal_axis(0.5, 0.75) == pytest.approx(60.0)
    assert math.isnan(frontal_axis(0.0, 0.0))


@pytest.mark.parametrize(("leads", "gains", "axis"), [
    (("I", "aVF"), (1.0, 1.0), EQUAL_I_AVF_DEG),  # equal positive areas in I and aVF
    (("I", "aVF"), (1.0, -1.0), -EQUAL_I_AVF_DEG),
    (("I", "aVF"), (0.0, 1.0), 90.0),
    (("I", "II"), (1.0, 1.5), EQUAL_I_AVF_DEG),  # aVF = II - I/2 = I
    (("II", "III"), (1.0, 0.0), 30.0),  # nothing in III: the vector is perpendicular to III
    (("I", "II", "III", "aVR", "aVL", "aVF"), (0.5, 1.0, 0.5, -0.75, 0.0, 0.75), 60.0),  # all six at 60
])
def test_axes_from_constructed_limb_leads(leads, gains, axis):
    x = synthetic_beat_train(gains=(1.0,), noise=0.0)[0]
    ecg = ECG(np.stack([g * x for g in gains]), FS, leads)
    # Delineate on the unscaled beat so that a zero-gain lead does not matter.
    d = delineate(ECG(x[None], FS, ("II",)))
    d = Delineation(FS, ecg.leads, d.r_peaks, d.waves, {}, {}, "constructed")
    m = measure(ecg, d)
    for value in (m.p_axis_deg, m.qrs_axis_deg, m.t_axis_deg):
        assert value == pytest.approx(axis, abs=1.0)


def test_no_axes_without_two_limb_leads():
    m = measure(synthetic_ecg(leads=("V1", "V2", "V3")))
    assert math.isnan(m.qrs_axis_deg) and math.isnan(m.p_axis_deg)
    assert m.to_dict()["qrs_axis_deg"] is None


# -- the result types -------------------------------------------------------------------------


def test_to_dict_is_json_in_ms():
    ecg = synthetic_ecg()
    d = delineate(ecg)
    out = json.loads(json.dumps(d.to_dict()))
    assert set(out["waves_ms"]) == set(KEYS)
    assert out["r_peaks_ms"][0] == pytest.approx(600.0, abs=4)
    assert set(out["per_lead_ms"]) == set(ecg.leads)
    m = json.loads(json.dumps(measure(ecg, d).to_dict()))
    assert set(m) == {f.name for f in Measurements.__dataclass_fields__.values()}


# -- bad and awkward input --------------------------------------------------------------------


def test_too_short_record_names_it():
    ecg = ECG(synthetic_beat_train()[:, :400], FS, ("I", "II", "V1"), Metadata(record_id="rec-42"))
    with pytest.raises(ValidationError, match="rec-42.*too short"):
        delineate(ecg)


def test_all_flat_names_record_and_leads():
    ecg = ECG(np.zeros((2, 5000)), FS, ("I", "II"), Metadata(record_id="flatline"))
    with pytest.raises(ValidationError, match=r"flatline: no lead can be delineated \(I flat, II flat\)"):
        delineate(ecg)


def test_pure_noise_is_refused():
    rng = np.random.default_rng(1)
    ecg = ECG(rng.normal(0, 0.2, (3, 5000)), FS, ("I", "II", "V1"), Metadata(record_id="noise"))
    with pytest.raises(ValidationError, match="noise: no QRS complex"):
        delineate(ecg)


def test_flat_and_masked_leads_are_skipped():
    x = synthetic_beat_train(gains=(1.0, 0.7, -0.5, 0.8))
    x[2] = 0.0  # flat
    mask = np.ones(x.shape, bool)
    mask[3] = False  # disconnected
    ecg = ECG(x, FS, ("I", "II", "V1", "V2"), mask=mask)
    d = delineate(ecg)
    assert d.skipped == {"V1": "flat", "V2": "masked"}
    assert np.isnan(d.per_lead["V1"]["QRS_on"]).all() and np.isnan(d.per_lead["V2"]["T_off"]).all()
    assert d.n_beats == 10 and np.isfinite(d.per_lead["I"]["QRS_on"]).all()


def test_nan_gap_gets_no_fiducials():
    x = synthetic_beat_train()
    x[:, 2300:2900] = np.nan  # 1.2 s gap in every lead, over the beat at 5.6 s
    d = delineate(ECG.with_gaps(x, FS, ("I", "II", "V1")))
    for lead in d.per_lead.values():
        for v in lead.values():
            v = v[np.isfinite(v)]
            assert not ((v >= 2300) & (v < 2900)).any()
    # Beats away from the gap are all there.
    found = d.r_peaks / FS
    for r in BEATS_S[np.abs(BEATS_S - 5.2) > 1.0]:
        assert np.min(np.abs(found - r)) < 0.01


def test_noisy_record_keeps_beats_and_qrs():
    rng = np.random.default_rng(2)
    x = synthetic_beat_train()
    t = np.arange(x.shape[1]) / FS
    x = x + rng.normal(0, 0.04, x.shape) + 0.4 * np.sin(2 * np.pi * 0.25 * t) + 0.1 * np.sin(2 * np.pi * 50 * t)
    d = delineate(ECG(x, FS, ("I", "II", "V1")))
    assert d.n_beats == 10
    err_ms = np.abs(d.waves["QRS_on"] / FS - (BEATS_S - 0.040)) * 1000
    assert np.nanmedian(err_ms) < 10


# -- scoring ----------------------------------------------------------------------------------


def test_match_points_one_to_one_closest_first():
    ri, di = match_points(np.array([100, 110, 300]), np.array([104.0, np.nan, 500.0, 111.0]), 20)
    assert sorted(zip(ri.tolist(), di.tolist())) == [(0, 0), (1, 3)]


def test_reference_points_and_scores():
    symbols = ["(", "p", ")", "N", ")", "(", "t", ")"]  # QRS without its onset mark
    samples = np.array([10, 20, 30, 50, 60, 100, 120, 140])
    ref = reference_points(symbols, samples)
    assert ref["P_on"].tolist() == [10] and ref["QRS_on"].size == 0 and ref["QRS_off"].tolist() == [60]
    det = {"P_on": np.array([12.0]), "P_peak": np.array([20.0, 200.0]), "T_off": np.array([130.0])}
    s = score_lead(ref, det, fs=1000.0, tolerance_ms=5)
    assert (s["P_on"].tp, s["P_on"].errors_ms) == (1, [2.0])
    assert (s["P_peak"].tp, s["P_peak"].fp) == (1, 0)  # 200 lies outside the annotated span
    assert (s["T_off"].tp, s["T_off"].fn, s["T_off"].fp) == (0, 1, 1)
    assert s["QRS_peak"].fn == 1  # key not detected at all


# -- real records -------------------------------------------------------------------------------


@pytest.mark.parametrize("record", ["2", "50", "118"])
def test_ludb_qrs_detection_and_boundaries(record):
    import ecgfm
    from ecgfm.io.wfdb import read_delineation

    path = data_path("ludb", "data", f"{record}.hea")
    ecg = ecgfm.read(path)
    d = delineate(ecg)
    tp = fn = fp = 0
    errors = {"QRS_on": [], "QRS_off": []}
    for lead, ann in read_delineation(path).items():
        ref = reference_points(ann.symbol, ann.sample)
        s = score_lead(ref, d.per_lead[lead], ecg.fs, span=(int(ann.sample.min()), int(ann.sample.max())))
        tp, fn, fp = tp + s["QRS_peak"].tp, fn + s["QRS_peak"].fn, fp + s["QRS_peak"].fp
        for k in errors:
            errors[k].extend(s[k].errors_ms)
    f1 = 2 * tp / (2 * tp + fn + fp)
    assert f1 >= 0.98, (record, tp, fn, fp)
    for k, e in errors.items():
        assert np.mean(np.abs(e)) < 15.0, (record, k)


def test_ludb_rate_invariance():
    from scipy.signal import resample_poly

    import ecgfm

    ecg = ecgfm.read(data_path("ludb", "data", "2.hea"))
    half = ECG(resample_poly(ecg.signal.astype(np.float64), 1, 2, axis=1), 250.0, ecg.leads)
    m500, m250 = measure(ecg), measure(half)
    for name in ("rr_ms", "pr_ms", "qrs_ms", "qt_ms"):
        assert getattr(m250, name) == pytest.approx(getattr(m500, name), abs=8.0), name
    assert m250.qrs_axis_deg == pytest.approx(m500.qrs_axis_deg, abs=5.0)


# -- the median beat ----------------------------------------------------------------------------


def test_median_beat_known_answers():
    mb = median_beat(synthetic_ecg())
    assert isinstance(mb, MedianBeat) and mb.n_beats == 10 and mb.used.sum() >= 8
    assert mb.rr_ms == pytest.approx(1000.0, abs=2)
    # The median beat's fiducials, relative to its QRS, sit where the synthetic waves are.
    r = mb.waves["QRS_peak"]
    tolerance_ms = {"QRS_on": 8, "QRS_off": 8, "P_on": 15, "P_peak": 4, "P_off": 15,
                    "T_on": 25, "T_peak": 4, "T_off": 20}
    for key, rel in TRUE.items():
        got_ms = (mb.waves[key] - r) * 1000 / mb.fs
        assert abs(got_ms - rel * 1000) <= tolerance_ms[key], (key, got_ms)
    m = measure(synthetic_ecg())  # the median beat is measure's default
    assert m.pr_ms == pytest.approx(160.0, abs=12) and m.qrs_ms == pytest.approx(85.0, abs=12)
    assert m.qt_ms == pytest.approx(380.0, abs=20)
    d = mb.to_dict()
    json.dumps(d)
    # Times from the alignment point (the QRS's steepest multi-lead slope, just before R).
    assert d["waves_ms"]["QRS_peak"] == pytest.approx((r - mb.r_index) * 1000 / mb.fs, abs=0.1)
    assert 0 <= d["waves_ms"]["QRS_peak"] <= 30 and d["n_used"] == int(mb.used.sum())


def test_median_beat_leaves_out_ectopic_beats():
    """Beats 3 and 7 replaced by wide, inverted complexes (PVC-like): not in the median, and
    the QRS duration is that of the dominant beats."""
    fs = FS
    t = np.arange(int(10 * fs)) / fs
    x = np.zeros_like(t)
    for k, r in enumerate(BEATS_S):
        if k in (3, 7):
            x += _hann(t, r - 0.08, r + 0.08, -1.2) + _hann(t, r + 0.12, r + 0.40, 0.4)
            continue
        for parts in WAVES.values():
            for on, off, amp in parts:
                x += _hann(t, r + on, r + off, amp)
    rng = np.random.default_rng(1)
    ecg = ECG(np.stack([g * x + rng.normal(0, 0.003, t.size) for g in (1.0, 0.7, -0.5)]), fs, ("I", "II", "V1"))
    mb = median_beat(ecg)
    assert mb.n_beats == 10
    assert not mb.used[[3, 7]].any() and mb.used.sum() >= 6
    assert mb.interval_ms("QRS_on", "QRS_off") == pytest.approx(85.0, abs=12)


def test_measure_routes_and_bad_method():
    ecg = synthetic_ecg()
    d = delineate(ecg)
    assert measure(ecg, d) == measure(ecg, method="beats")
    with pytest.raises(ValidationError, match="synthetic.*unknown measurement method"):
        measure(ecg, method="fast")
    with pytest.raises(ValidationError, match="synthetic"):
        median_beat(ECG(np.zeros((2, 5000)), FS, ("I", "II"), Metadata(record_id="synthetic")))


def test_median_beat_masked_lead_and_rate():
    ecg = synthetic_ecg()
    mask = np.ones(ecg.signal.shape, bool)
    mask[2] = False
    mb = median_beat(ecg.replace(mask=mask))
    assert mb.skipped == {"V1": "masked"} and np.isnan(mb.signal[2]).all()
    assert all(math.isnan(v) for v in mb.per_lead["V1"].values())
    m500, m250 = measure(ecg), measure(synthetic_ecg(250.0))
    for name in ("rr_ms", "pr_ms", "qrs_ms", "qt_ms"):
        assert getattr(m250, name) == pytest.approx(getattr(m500, name), abs=8.0), name


def test_nanmedian0_matches_numpy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.normal(size=(int(rng.integers(1, 13)), int(rng.integers(1, 30))))
        a[rng.random(a.shape) < 0.4] = np.nan
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) if np.isnan(a).all(axis=0).any() else _nothing():
            expected = np.nanmedian(a, axis=0)
        np.testing.assert_array_equal(nanmedian0(a), expected)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("record", ["2", "50", "118"])
def test_ludb_median_beat_agrees_with_annotations_and_beats(record):
    """The median beat's intervals against the cardiologists' (median over beats, then over
    leads) and against the beat-by-beat route."""
    import ecgfm
    from ecgfm.io.wfdb import read_delineation

    path = data_path("ludb", "data", f"{record}.hea")
    ecg = ecgfm.read(path)
    fast, slow = measure(ecg), measure(ecg, method="beats")
    per_lead = {"qrs_ms": [], "qt_ms": []}
    for ann in read_delineation(path).values():
        ref = reference_points(ann.symbol, ann.sample)
        on, off, t_off = ref["QRS_on"], ref["QRS_off"], ref["T_off"]
        qrs = [off[off > a][0] - a for a in on if (off > a).any()]
        qt = [t_off[t_off > a][0] - a for a in on if (t_off > a).any()]
        per_lead["qrs_ms"].append(np.median(qrs) * 1000 / ecg.fs)
        per_lead["qt_ms"].append(np.median(qt) * 1000 / ecg.fs)
    for name, values in per_lead.items():
        assert getattr(fast, name) == pytest.approx(np.median(values), abs=20.0), (record, name)
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), abs=10.0), (record, name)
    assert fast.rr_ms == pytest.approx(slow.rr_ms, abs=4.0)
    assert fast.qrs_axis_deg == pytest.approx(slow.qrs_axis_deg, abs=15.0)


def test_ludb_atrial_fibrillation_has_no_pr():
    import ecgfm

    for record in ("8", "38", "88", "110"):  # LUDB: atrial fibrillation
        m = measure(ecgfm.read(data_path("ludb", "data", f"{record}.hea")))
        assert math.isnan(m.pr_ms) and math.isfinite(m.qrs_ms), record


def test_measure_command_csv_jsonl_jobs_and_bad_files(tmp_path):
    """``ecgfm measure``: one row per file equal to ``measure``, a bad file reported and counted,
    the same rows with two worker processes."""
    import csv

    from typer.testing import CliRunner

    import ecgfm
    from ecgfm.cli import app

    good = [data_path("ludb", "data", f"{r}.hea") for r in ("2", "8", "50")]
    bad = tmp_path / "broken.xml"
    bad.write_text("<not an ecg")
    runner = CliRunner()
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["measure", *map(str, good), str(bad), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "broken.xml" in result.output and "1 of 4 files failed" in result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["record_id"] for r in rows] == ["2", "8", "50"]
    for row, path in zip(rows, good):
        m = measure(ecgfm.read(path))
        for key in ("heart_rate_bpm", "qrs_ms", "qt_ms", "qtc_bazett_ms", "qrs_axis_deg"):
            assert float(row[key]) == pytest.approx(getattr(m, key), abs=0.051), key
        assert row["pr_ms"] == ("" if math.isnan(m.pr_ms) else f"{round(m.pr_ms, 1)}")
    assert rows[1]["pr_ms"] == ""  # LUDB 8: atrial fibrillation
    jsonl = tmp_path / "m.jsonl"
    result = runner.invoke(app, ["measure", *map(str, good), "--out", str(jsonl), "--jobs", "2", "--method", "beats"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [d["record_id"] for d in lines] == ["2", "8", "50"] and lines[1]["pr_ms"] is None
    assert lines[0]["qrs_ms"] == pytest.approx(measure(ecgfm.read(good[0]), method="beats").qrs_ms, abs=0.051)
    result = runner.invoke(app, ["measure", str(good[0]), "--method", "fast"])
    assert result.exit_code != 0 and "unknown method" in result.output


def test_import_stays_light():
    code = ("import sys, ecgfm; assert 'ecgfm.delineate' not in sys.modules; "
            "import ecgfm.delineate; heavy = {'neurokit2', 'torch', 'sklearn', 'pandas', 'matplotlib'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
