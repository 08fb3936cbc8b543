"""The clinical plot: true-to-scale paper geometry, layouts, lead derivation, file output.

Geometry is checked through the returned figure (its axes has data units of paper mm) and in the
saved PNG's pixels, never by eye. Records come from wfdb.rdrecord directly so the expected
values are independent of ecgfm's own readers.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import data_path
from ecgfm import ECG, Metadata, ValidationError
from ecgfm.plot import plot_ecg, plot_median_beats

wfdb = pytest.importorskip("wfdb")

DPI = 150
PX_PER_MM = DPI / 25.4
# Paper: 10 mm calibration zone + 250 mm of trace, margins 10 mm left/right, 10 mm bottom,
# 16 mm header; rows 40 mm high.
FIG_W_MM = 10 + 10 + 250 + 10
FIG_H_12_MM = 10 + 4 * 40 + 16


@pytest.fixture(scope="module")
def ptbxl() -> tuple[ECG, np.ndarray]:
    """PTB-XL 00001_hr (12 leads, 500 Hz, 10 s) and wfdb's own [samples, leads] mV array."""
    hea = data_path("ptb-xl", "records500", "00000", "00001_hr.hea")
    rec = wfdb.rdrecord(str(hea.with_suffix("")))
    ecg = ECG(rec.p_signal.T, rec.fs, rec.sig_name,
              Metadata(record_id="00001_hr", age=56, sex="M",
                       interpretation="sinusrhythmus periphere niederspannung"))
    return ecg, rec.p_signal


@pytest.fixture(scope="module")
def cinc() -> tuple[ECG, np.ndarray]:
    """CinC 2017 A00001: one AliveCor lead (lead I), 300 Hz, 30 s."""
    rec = wfdb.rdrecord(str(data_path("cinc2017", "A00001.hea").with_suffix("")))
    return ECG(rec.p_signal.T, rec.fs, ["I"], Metadata(record_id="A00001")), rec.p_signal[:, 0]


def _line(fig, gid):
    lines = [ln for ln in fig.axes[0].lines if ln.get_gid() == gid]
    assert len(lines) == 1, f"expected one trace {gid}, found {len(lines)}"
    return lines[0]


def _collection(fig, gid):
    (found,) = [c for c in fig.axes[0].collections if c.get_gid() == gid]
    return found


def _texts(fig, gid):
    return [t for t in fig.axes[0].texts if t.get_gid() == gid]


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_png_svg_pdf_written_with_magic_bytes(ptbxl, tmp_path):
    ecg, _ = ptbxl
    magic = {"png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml", "pdf": b"%PDF-"}
    for ext, head in magic.items():
        out = tmp_path / f"ecg.{ext}"
        plot_ecg(ecg, out)
        data = out.read_bytes()
        assert data.startswith(head), ext
        assert len(data) > 20_000, (ext, len(data))
    assert b"<svg" in (tmp_path / "ecg.svg").read_bytes()[:2000]
    # Upper-case extensions are the same formats.
    plot_ecg(ecg, tmp_path / "ECG.PNG")
    assert (tmp_path / "ECG.PNG").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("dpi", [150, 100])
def test_png_pixel_size_is_paper_millimetres(ptbxl, tmp_path, dpi):
    ecg, _ = ptbxl
    out = tmp_path / "ecg.png"
    fig = plot_ecg(ecg, out, dpi=dpi)
    width, height = _png_size(out)
    # 280 mm x 186 mm: 1653.5 x 1098.4 px at 150 dpi, 1102.4 x 732.3 px at 100 dpi.
    assert abs(width - FIG_W_MM / 25.4 * dpi) <= 1
    assert abs(height - FIG_H_12_MM / 25.4 * dpi) <= 1
    assert fig.get_size_inches() == pytest.approx([FIG_W_MM / 25.4, FIG_H_12_MM / 25.4])


def test_axes_data_units_are_printed_millimetres(ptbxl):
    ecg, _ = ptbxl
    fig = plot_ecg(ecg)
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 260.0)
    assert ax.get_ylim() == (0.0, 160.0)
    (x0, y0), (x1, y1) = ax.transData.transform([(0, 0), (50, 50)])
    assert x1 - x0 == pytest.approx(50 * PX_PER_MM, rel=1e-6)
    assert y1 - y0 == pytest.approx(50 * PX_PER_MM, rel=1e-6)
    # The grid's corner sits 10 mm from the figure's left and bottom edges.
    assert (x0, y0) == pytest.approx((10 * PX_PER_MM, 10 * PX_PER_MM), rel=1e-6)


def test_grid_has_1mm_minor_and_5mm_major_lines(ptbxl):
    ecg, _ = ptbxl
    fig = plot_ecg(ecg)
    for gid, keep in (("grid-minor", lambda v: v % 5 != 0), ("grid-major", lambda v: v % 5 == 0)):
        segs = [np.asarray(s) for s in _collection(fig, gid).get_segments()]
        vertical = sorted(s[0, 0] for s in segs if s[0, 0] == s[1, 0])
        horizontal = sorted(s[0, 1] for s in segs if s[0, 1] == s[1, 1])
        assert vertical == [float(v) for v in range(261) if keep(v)], gid
        assert horizontal == [float(v) for v in range(161) if keep(v)], gid
    minor = _collection(fig, "grid-minor").get_edgecolor()[0]
    major = _collection(fig, "grid-major").get_edgecolor()[0]
    assert minor[0] > minor[1] and major[0] > major[1]  # red
    assert major[1] < minor[1]  # major lines darker


@pytest.mark.parametrize("gain", [10.0, 5.0])
def test_calibration_pulse_is_one_millivolt_on_the_row_baselines(ptbxl, gain):
    ecg, _ = ptbxl
    fig = plot_ecg(ecg, gain=gain)
    pulses = [np.asarray(p) for p in _collection(fig, "calibration").get_segments()]
    assert len(pulses) == 4  # one per row: 3 lead rows + the rhythm strip
    baselines = sorted((p[0, 1] for p in pulses), reverse=True)
    assert baselines == [140.0, 100.0, 60.0, 20.0]
    for pulse in pulses:
        height = pulse[:, 1].max() - pulse[:, 1].min()
        assert height == pytest.approx(gain)  # 1 mV x gain mm/mV
        assert pulse[:, 0].min() >= 0 and pulse[:, 0].max() <= 10  # inside the cal zone
        top = pulse[pulse[:, 1] == pulse[:, 1].max(), 0]
        assert top.max() - top.min() == pytest.approx(5.0)  # 0.2 s at 25 mm/s
    # Baselines and 1 mV tops fall on major (5 mm) grid lines.
    assert all(b % 5 == 0 and (b + 10) % 5 == 0 for b in baselines)
    # In display pixels the pulse is gain mm tall.
    p = pulses[0]
    (_, ylo), (_, yhi) = fig.axes[0].transData.transform([(0, p[:, 1].min()), (0, p[:, 1].max())])
    assert yhi - ylo == pytest.approx(gain * PX_PER_MM, rel=1e-6)


def test_saved_png_has_the_pulse_where_the_axes_put_it(ptbxl, tmp_path):
    import matplotlib.image

    ecg, _ = ptbxl
    out = tmp_path / "ecg.png"
    fig = plot_ecg(ecg, out)
    img = matplotlib.image.imread(out)[..., :3]
    height = img.shape[0]

    def pixel(x_mm, y_mm):
        x, y = fig.axes[0].transData.transform((x_mm, y_mm))
        return img[int(height - y), int(x)]

    dark = lambda rgb: bool((rgb < 0.3).all())  # noqa: E731
    # Top of the first row's pulse: 1 mV above the 140 mm baseline, between x = 2.5 and 7.5 mm.
    assert dark(pixel(5.0, 150.0))
    assert dark(pixel(5.0, 140.0)) is False  # inside the pulse: paper, not ink
    assert dark(pixel(1.0, 140.0))  # the baseline lead-in
    assert not dark(pixel(5.0, 153.0)) and not dark(pixel(5.0, 147.0))
    # The rising edge spans exactly the 10 mm between baseline and top.
    column = np.array([dark(pixel(2.5, y)) for y in np.arange(140.5, 150.0, 0.5)])
    assert column.all()


def test_traces_sit_at_their_column_time_and_amplitude(ptbxl):
    ecg, raw = ptbxl  # raw: wfdb's [5000, 12] mV, leads I II III aVR aVL aVF V1..V6
    fig = plot_ecg(ecg)
    # V2 is row 2 (baseline 100 mm), column 3: 5-7.5 s drawn from x = 10 + 125 mm.
    v2 = _line(fig, "lead:V2")
    x, y = v2.get_xdata(), v2.get_ydata()
    assert len(x) == 1250
    assert x[0] == pytest.approx(135.0) and np.diff(x) == pytest.approx(0.05)  # 25 mm/s / 500 Hz
    expected = 100.0 + 10.0 * (raw[2500:3750, 7] - np.median(raw[:, 7]))
    assert y == pytest.approx(expected, abs=1e-4)
    # The deep S wave of V2 in this window is -1.388 mV (wfdb): about 14 mm below baseline.
    assert y.min() == pytest.approx(100 + 10 * (-1.388 - np.median(raw[:, 7])), abs=1e-3)
    # aVR: row 1 (baseline 140 mm), 2.5-5 s from x = 72.5 mm.
    avr = _line(fig, "lead:aVR")
    assert avr.get_xdata()[0] == pytest.approx(72.5)
    assert avr.get_ydata() == pytest.approx(140 + 10 * (raw[1250:2500, 3] - np.median(raw[:, 3])),
                                            abs=1e-4)
    # Rhythm strip: all 10 s of II on the bottom row, 250 mm long.
    rhythm = _line(fig, "lead:II:rhythm")
    assert len(rhythm.get_xdata()) == 5000
    assert rhythm.get_xdata()[[0, -1]] == pytest.approx([10.0, 259.95])
    assert rhythm.get_ydata()[0] == pytest.approx(20 + 10 * (raw[0, 1] - np.median(raw[:, 1])),
                                                  abs=1e-4)
    labels = {t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("label:")}
    assert labels == {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}


def test_header_names_record_rate_speed_gain_and_truncates_interpretation(ptbxl):
    ecg, _ = ptbxl
    fig = plot_ecg(ecg)
    header = " | ".join(t.get_text() for t in _texts(fig, "header"))
    for part in ("00001_hr", "56 y", "M", "500 Hz", "25 mm/s", "10 mm/mV", "0-10 s of 10 s"):
        assert part in header
    (interp,) = _texts(fig, "interpretation")
    assert interp.get_text() == "sinusrhythmus periphere niederspannung"

    long = ecg.replace(meta=Metadata(record_id="x", interpretation="SINUS RHYTHM WITH PVCS " * 40))
    fig = plot_ecg(long, title="Patient 7")
    (interp,) = _texts(fig, "interpretation")
    assert interp.get_text().endswith("\u2026") and len(interp.get_text()) < 400
    renderer = fig.canvas.get_renderer()
    width_mm = interp.get_window_extent(renderer).width / PX_PER_MM
    assert 200 < width_mm <= 260  # filled, but inside the grid
    assert "Patient 7" in " ".join(t.get_text() for t in _texts(fig, "header"))


def test_eight_lead_record_gets_derived_limb_leads(ptbxl):
    _, raw = ptbxl
    keep = [0, 1, 6, 7, 8, 9, 10, 11]  # I, II, V1-V6: what GE MUSE and SCP files store
    ecg8 = ECG(raw[:, keep].T, 500, ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    fig = plot_ecg(ecg8)
    # III = II - I is drawn in row 3, column 1; PTB-XL's own stored III agrees to 1 uV rounding.
    iii = _line(fig, "lead:III")
    derived = raw[:, 1] - raw[:, 0]
    assert iii.get_ydata() == pytest.approx(60 + 10 * (derived[:1250] - np.median(derived)),
                                            abs=1e-4)
    assert iii.get_ydata() == pytest.approx(60 + 10 * (raw[:1250, 2] - np.median(derived)),
                                            abs=0.02)
    for lead in ("III", "aVR", "aVL", "aVF"):
        _line(fig, f"lead:{lead}")
        (note,) = _texts(fig, f"note:{lead}")
        assert "derived" in note.get_text()
    assert not _texts(fig, "note:I") and not _texts(fig, "empty:III")


def test_absent_and_masked_leads_are_empty_panels_and_gaps(ptbxl):
    _, raw = ptbxl
    sig = raw.T.copy()
    sig[7, 3000:3100] = np.nan  # 0.2 s gap in V2 inside its 5-7.5 s column
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    keep = [i for i in range(12) if names[i] != "V3"]
    ecg = ECG.with_gaps(sig[keep], 500, [names[i] for i in keep])
    fig = plot_ecg(ecg)
    assert not [ln for ln in fig.axes[0].lines if ln.get_gid() == "lead:V3"]
    assert [t.get_text() for t in _texts(fig, "label:V3")] == ["V3"]
    assert len(_texts(fig, "empty:V3")) == 1
    y = _line(fig, "lead:V2").get_ydata()
    assert np.isnan(y[500:600]).all() and np.isfinite(y[:500]).all() and np.isfinite(y[600:]).all()


def test_single_lead_record_uses_rhythm_strips(cinc):
    ecg, raw = cinc
    fig = plot_ecg(ecg)  # default layout, but one lead cannot fill a 3x4 page
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 120.0)  # three 40 mm rows for 30 s
    assert fig.get_size_inches()[1] == pytest.approx((10 + 120 + 16) / 25.4)
    strips = [ln for ln in ax.lines if ln.get_gid() == "lead:I:rhythm"]
    assert len(strips) == 3 and not _texts(fig, "label:aVR")
    median = np.median(raw[:9000])
    for k, (strip, base) in enumerate(zip(strips, (100.0, 60.0, 20.0), strict=True)):
        x, y = strip.get_xdata(), strip.get_ydata()
        assert len(x) == 3000  # 10 s at 300 Hz
        assert x[0] == pytest.approx(10.0) and np.diff(x) == pytest.approx(25 / 300)
        assert y == pytest.approx(base + 10 * (raw[3000 * k:3000 * (k + 1)] - median), abs=1e-4)
    notes = [t.get_text() for t in _texts(fig, "note:I")]
    assert notes == ["0-10 s", "10-20 s", "20-30 s"]


def test_start_offset_and_partial_last_row(cinc, ptbxl):
    ecg, raw = cinc
    fig = plot_ecg(ecg, start=12.0)
    strips = [ln for ln in fig.axes[0].lines if ln.get_gid() == "lead:I:rhythm"]
    assert [len(s.get_xdata()) for s in strips] == [3000, 2400]  # 12-22 s, 22-30 s
    median = np.median(raw[3600:9000])
    assert strips[0].get_ydata()[0] == pytest.approx(60 + 10 * (raw[3600] - median), abs=1e-4)

    ecg12, _ = ptbxl
    fig = plot_ecg(ecg12, start=2.0)  # 8 s left: V4's 9.5-12 s column holds 0.5 s
    assert len(_line(fig, "lead:V4").get_xdata()) == 250
    assert len(_line(fig, "lead:I").get_xdata()) == 1250


def test_speed_changes_seconds_per_row_not_paper_size(ptbxl):
    ecg, _ = ptbxl
    fig = plot_ecg(ecg, speed=50.0)
    rhythm = _line(fig, "lead:II:rhythm")
    assert len(rhythm.get_xdata()) == 2500  # 250 mm at 50 mm/s = 5 s
    assert np.diff(rhythm.get_xdata()) == pytest.approx(0.1)
    assert fig.get_size_inches()[0] == pytest.approx(FIG_W_MM / 25.4)
    assert _line(fig, "lead:V1").get_xdata()[0] == pytest.approx(135.0)  # 2.5 s in column 3


def test_invalid_options_are_refused(ptbxl, tmp_path):
    ecg, _ = ptbxl
    with pytest.raises(ValidationError, match=r"\.jpg"):
        plot_ecg(ecg, tmp_path / "ecg.jpg")
    with pytest.raises(ValidationError, match="without extension"):
        plot_ecg(ecg, tmp_path / "ecg")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValidationError, match="layout"):
        plot_ecg(ecg, layout="6x2")
    with pytest.raises(ValidationError, match="start"):
        plot_ecg(ecg, start=10.0)
    with pytest.raises(ValidationError, match="speed"):
        plot_ecg(ecg, speed=0)
    with pytest.raises(ValidationError, match="has no lead V4R"):
        plot_ecg(ecg, layout="rhythm", rhythm_lead="V4R")


def test_plotting_leaves_pyplot_and_ecgfm_import_alone():
    code = (
        "import sys, numpy as np\n"
        "import ecgfm\n"
        "assert 'matplotlib' not in sys.modules, 'import ecgfm pulled in matplotlib'\n"
        "fig = ecgfm.plot_ecg(ecgfm.ECG(np.zeros((2, 5000)), 500, ['I', 'II']))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'plotting imported pyplot'\n"
        "assert type(fig.canvas).__name__ == 'FigureCanvasAgg'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_median_beats_sit_at_scale_with_their_markers(ptbxl, tmp_path):
    from ecgfm.delineate import median_beat

    ecg, _ = ptbxl
    beat = median_beat(ecg)
    fig = plot_median_beats(beat, tmp_path / "median.png", dpi=DPI)
    assert (tmp_path / "median.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width = beat.signal.shape[1]
    panel = np.ceil(width / beat.fs * 50 / 5) * 5 + 5  # mm per column at 50 mm/s
    # V2: row 2 (baseline 60 mm of a 120 mm grid), column 3; 50 mm/s at 500 Hz is 0.1 mm per sample.
    v2 = _line(fig, "median:V2")
    x, y = v2.get_xdata(), v2.get_ydata()
    assert x[0] == pytest.approx(2 * panel + 2.5) and np.diff(x) == pytest.approx(0.1)
    on = int(beat.waves["QRS_on"])
    row = beat.signal[ecg.leads.index("V2")]
    assert y == pytest.approx(60.0 + 10.0 * (row - row[on]), abs=1e-6)  # PQ junction on the baseline
    # One dashed marker per global fiducial and panel, at its time.
    for key in ("QRS_on", "QRS_off", "T_off"):
        markers = [c for c in fig.axes[0].collections if c.get_gid() == f"marker:{key}"]
        assert len(markers) == 12
        xs = sorted(seg[0][0] for c in markers for seg in c.get_segments())
        assert xs[0] == pytest.approx(2.5 + beat.waves[key] / beat.fs * 50)
    labels = {t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("label:")}
    assert labels == set(ecg.leads)
    with pytest.raises(ValidationError, match="speed"):
        plot_median_beats(beat, speed=0)

