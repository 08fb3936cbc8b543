"""The clinical 12-lead printout: millimetre grid, 25 mm/s, 10 mm/mV, true to scale.

Everything is drawn in one axes whose data units are paper millimetres, placed in a figure whose
size is computed from the same millimetres, so 1 mm of grid is 1 mm printed at any dpi. The
page (at the default 25 mm/s) is::

    header: record id, patient, fs / speed / gain / window; interpretation text
    +------+-------------+-------------+-------------+-------------+
    | cal  | I   0-2.5 s | aVR 2.5-5 s | V1  5-7.5 s | V4 7.5-10 s |   3 rows x 4 columns,
    | cal  | II          | aVL         | V2          | V5          |   each column its own
    | cal  | III         | aVF         | V3          | V6          |   2.5 s window
    | cal  | II (rhythm strip, 0-10 s)                             |
    +------+-------------------------------------------------------+

matplotlib is imported here only; nothing touches pyplot or the global backend (the figure gets
its own Agg canvas), so plotting never opens a window and is safe in servers and threads.

Artists carry a ``gid`` so callers and tests can find them: ``"lead:<name>"`` for each trace
(``"lead:<name>:rhythm"`` for rhythm strips), ``"calibration"``, ``"grid-minor"``,
``"grid-major"``, ``"separators"``, ``"label:<name>"`` for lead labels and ``"header"``.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.leads import DERIVABLE_FROM_I_II, STANDARD_12, canonical_lead
from ecgfm.record import ECG

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from ecgfm.delineate import MedianBeat

MM_PER_INCH = 25.4
PAPER_MM = 250.0  # trace width of a row: 10 s at 25 mm/s, as on A4/letter ECG paper
ROW_MM = 40.0  # height of one row: +-2 mV around the baseline at 10 mm/mV
CAL_ZONE_MM = 10.0  # grid before the traces that holds the calibration pulse
CAL_PULSE_MM = 5.0  # width of the 1 mV pulse (0.2 s at 25 mm/s)
MARGIN_LEFT_MM = 10.0
MARGIN_RIGHT_MM = 10.0
MARGIN_BOTTOM_MM = 10.0
MARGIN_TOP_MM = 16.0  # room for the two header lines
RHYTHM_ROW_S_MAX = 60.0  # rhythm layout shows at most this much unless `duration` is given

# The paper layout: rows of columns; each column shows its own quarter of the strip time.
LAYOUT_3X4: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
LAYOUTS = ("3x4+rhythm", "3x4", "rhythm")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

GRID_MINOR_COLOR = (0.97, 0.78, 0.78)  # light red 1 mm lines
GRID_MAJOR_COLOR = (0.89, 0.45, 0.45)  # darker red 5 mm lines
TRACE_COLOR = "black"
TRACE_WIDTH_PT = 0.7
GRID_MINOR_WIDTH_PT = 0.3
GRID_MAJOR_WIDTH_PT = 0.7


def plot_ecg(
    ecg: ECG,
    path: str | Path | None = None,
    *,
    layout: str = "3x4+rhythm",
    rhythm_lead: str = "II",
    speed: float = 25.0,
    gain: float = 10.0,
    start: float = 0.0,
    duration: float | None = None,
    center: bool = True,
    title: str | None = None,
    dpi: float = 150,
) -> Figure:
    """Draw an ECG as a clinical paper printout, true to scale, and optionally save it.

    Args:
        ecg: the record, ``signal`` in mV. Leads are looked up by canonical name; for the 3x4
            layouts III, aVR, aVL and aVF are derived from I and II when absent, and leads the
            record lacks (or that are fully masked) are drawn as empty labelled panels. Masked
            samples are drawn as gaps.
        path: where to save; the format follows the extension (``.png``, ``.svg``, ``.pdf``).
            ``None`` only returns the figure.
        layout: ``"3x4+rhythm"`` (3 rows x 4 columns of 2.5 s segments plus a full-length
            rhythm strip), ``"3x4"`` (without the strip) or ``"rhythm"`` (consecutive 10 s
            rows of ``rhythm_lead``). A single-lead record always uses ``"rhythm"``.
        rhythm_lead: the lead of the rhythm strip(s). A single-lead record uses its own lead.
        speed: paper speed in mm/s. A row is always 250 mm of paper, so it holds
            ``250 / speed`` seconds (10 s at 25 mm/s, 5 s at 50 mm/s).
        gain: mm per mV; the calibration pulse at the start of each row is 1 mV high.
        start: first second of the record to show.
        duration: seconds to show in the ``"rhythm"`` layout (default: the rest of the record,
            at most 60 s). The 3x4 layouts always show one row length.
        center: subtract each lead's median over the shown window, as a monitor's 0.05 Hz
            high-pass would, so a DC offset cannot push a trace off its row.
        title: first header line; default the record id.
        dpi: dots per inch of raster output (and of the returned figure).

    Returns:
        The matplotlib :class:`~matplotlib.figure.Figure` (with an Agg canvas). Its single
        axes has data units of paper millimetres: x from 0 at the grid's left edge, y from 0 at
        its bottom edge.

    Raises:
        ValidationError: unknown layout or file extension, non-positive speed/gain/dpi,
            ``start`` outside the record, or (``"rhythm"`` layout on a multi-lead record) a
            rhythm lead the record lacks.

    >>> fig = plot_ecg(ecg, "ecg.png")  # doctest: +SKIP
    """
    fmt = _format_of(path)
    if layout not in LAYOUTS:
        raise ValidationError(f"unknown plot layout {layout!r} (known: {', '.join(LAYOUTS)})")
    for name, value in (("speed", speed), ("gain", gain), ("dpi", dpi)):
        if not (_is_number(value) and value > 0):
            raise ValidationError(f"plot {name} must be a positive number, got {value!r}")
    if not (_is_number(start) and 0 <= start < ecg.duration):
        raise ValidationError(
            f"{ecg.name}: plot start must be a time in seconds inside the record "
            f"(0 to {ecg.duration:g} s), got {start!r}"
        )
    if duration is not None and not (_is_number(duration) and duration > 0):
        raise ValidationError(f"plot duration must be a positive number of seconds, got {duration!r}")
    rhythm_lead = canonical_lead(rhythm_lead, source=ecg.name)
    if ecg.n_leads == 1:
        # A 3x4 page with eleven empty panels says nothing; print the one lead as strips.
        layout, rhythm_lead = "rhythm", ecg.leads[0]

    row_s = PAPER_MM / speed
    if layout == "rhythm":
        shown = ecg.select([rhythm_lead], missing="error")
        want = duration if duration is not None else RHYTHM_ROW_S_MAX
        span = min(want, ecg.duration - start)
        rows = [
            [(rhythm_lead, start + k * row_s, min(row_s, span - k * row_s), 0.0)]
            for k in range(max(1, math.ceil(span / row_s - 1e-9)))
        ]
        window = (start, start + span)
    else:
        wanted = STANDARD_12 + ((rhythm_lead,) if rhythm_lead not in STANDARD_12 else ())
        shown = ecg.select(wanted, missing="mask")
        seg = row_s / 4
        rows = [
            [(lead, start + c * seg, seg, c * PAPER_MM / 4) for c, lead in enumerate(row)]
            for row in LAYOUT_3X4
        ]
        if layout == "3x4+rhythm":
            rows.append([(rhythm_lead, start, row_s, 0.0)])
        window = (start, min(start + row_s, ecg.duration))

    signals = _display_signals(shown, window, center)
    derived = {lead for lead in DERIVABLE_FROM_I_II if lead not in ecg.leads}
    grid_w = CAL_ZONE_MM + PAPER_MM
    grid_h = ROW_MM * len(rows)
    fig, ax = _paper(grid_w, grid_h, dpi)

    baselines = [grid_h - ROW_MM * (r + 0.5) for r in range(len(rows))]
    for r, (row, base) in enumerate(zip(rows, baselines, strict=True)):
        for lead, t0, seconds, x0 in row:
            x0 += CAL_ZONE_MM
            rhythm = layout == "rhythm" or (layout == "3x4+rhythm" and r == len(rows) - 1)
            drawn = _draw_segment(ax, signals[lead], shown.fs, t0, seconds, x0, base, speed, gain,
                                  gid=f"lead:{lead}" + (":rhythm" if rhythm else ""))
            label = ax.text(x0 + 1.5, base + ROW_MM / 2 - 2.0, lead, ha="left", va="top",
                            fontsize=9, fontweight="bold", zorder=4, gid=f"label:{lead}")
            note = []
            if drawn and lead in derived:
                note.append("derived from I, II")
            if layout == "rhythm" and len(rows) > 1:
                note.append(f"{t0:g}-{t0 + seconds:.4g} s")
            if note:
                ax.annotate("   ".join(note), (1.0, 0.0), xycoords=label, xytext=(4, 0),
                            textcoords="offset points", ha="left", va="bottom", fontsize=7,
                            color="0.35", zorder=4, gid=f"note:{lead}")
            if not drawn:
                ax.text(x0 + PAPER_MM / 8 if not rhythm else x0 + PAPER_MM / 2, base,
                        "no signal", ha="center", va="center", fontsize=7, style="italic",
                        color="0.45", zorder=4, gid=f"empty:{lead}")

    _draw_calibration(ax, baselines, gain)
    if layout != "rhythm":
        _draw_separators(ax, baselines[:3])
    _draw_header(ax, ecg, grid_w, grid_h, title, speed, gain, window)

    if path is not None:
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt or "", {})
        fig.savefig(path, format=fmt, dpi=dpi, facecolor="white", metadata=metadata)
    return fig


MEDIAN_MARKERS = (("P_on", "P on"), ("QRS_on", "QRS on"), ("QRS_off", "QRS off"), ("T_off", "T off"))


def plot_median_beats(beat: MedianBeat, path: str | Path | None = None, *, speed: float = 50.0,
                      gain: float = 10.0, dpi: float = 150) -> Figure:
    """Each lead's median beat on ECG paper (3 rows x 4 columns), with the global P onset, QRS
    onset and offset and T offset that the measurements come from as vertical lines.

    Args:
        beat: from :func:`ecgfm.delineate.median_beat` (its ``signal`` is at 500 Hz).
        path: where to save (``.png``, ``.svg``, ``.pdf``); ``None`` only returns the figure.
        speed: paper speed in mm/s (50: median beats are usually shown stretched).
        gain: mm per mV.
        dpi: resolution of raster output.

    Returns:
        The figure; traces carry ``gid`` ``"median:<lead>"``, markers ``"marker:<key>"``. Leads
        the beat lacks are empty labelled panels.
    """
    from matplotlib.collections import LineCollection

    fmt = _format_of(path)
    if not (_is_number(speed) and speed > 0 and _is_number(gain) and gain > 0):
        raise ValidationError(f"plot_median_beats: speed and gain must be > 0, got {speed!r}, {gain!r}")
    width = beat.signal.shape[1]
    seconds = width / beat.fs
    panel_w = math.ceil(seconds * speed / 5.0) * 5.0 + 5.0
    grid_w, grid_h = 4 * panel_w, 3 * ROW_MM
    fig, ax = _paper(grid_w, grid_h, dpi)
    index = {lead: i for i, lead in enumerate(beat.leads)}
    for r, row in enumerate(LAYOUT_3X4):
        base = grid_h - (r + 0.5) * ROW_MM
        for c, lead in enumerate(row):
            x0 = c * panel_w + 2.5
            i = index.get(lead)
            if i is not None and np.isfinite(beat.signal[i]).any():
                y = beat.signal[i]
                if math.isfinite(beat.waves["QRS_on"]):  # the PQ junction on the baseline
                    y = y - y[int(beat.waves["QRS_on"])]
                ax.plot(x0 + np.arange(width) / beat.fs * speed, base + y * gain, color=TRACE_COLOR,
                        linewidth=TRACE_WIDTH_PT, zorder=3, gid=f"median:{lead}")
            ax.text(x0 + 0.5, base + ROW_MM * 0.5 - 4.0, lead, fontsize=7, va="top", gid=f"label:{lead}")
            for key, _ in MEDIAN_MARKERS:
                t = beat.waves[key]
                if math.isfinite(t):
                    x = x0 + t / beat.fs * speed
                    ax.add_collection(LineCollection([((x, base - ROW_MM * 0.45), (x, base + ROW_MM * 0.45))],
                                                     colors=["#3d6fd6"], linewidths=0.6, linestyles="dashed",
                                                     zorder=2, gid=f"marker:{key}"))
    used = int(beat.used.sum())
    fig.text(0.01, 0.985, f"{Path(beat.record).name}: median beats of {used} of {beat.n_beats} beats, {speed:g} mm/s, "
             f"{gain:g} mm/mV; dashed: " + ", ".join(name for key, name in MEDIAN_MARKERS
                                                     if math.isfinite(beat.waves[key])),
             fontsize=7, va="top", gid="header")
    if path is not None:
        fig.savefig(path, format=fmt, dpi=dpi, facecolor="white")
    return fig


def _is_number(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _format_of(path: str | Path | None) -> str | None:
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValidationError(
            f"{path}: cannot save a plot as {suffix or 'a file without extension'!r} "
            f"(use {', '.join(FORMATS)})"
        )
    return FORMATS[suffix]


def _display_signals(ecg: ECG, window: tuple[float, float], center: bool) -> dict[str, np.ndarray]:
    """Per lead: samples in mV with unobserved samples as NaN (so lines break there)."""
    out: dict[str, np.ndarray] = {}
    i0, i1 = int(round(window[0] * ecg.fs)), int(round(window[1] * ecg.fs))
    for k, lead in enumerate(ecg.leads):
        values = ecg.signal[k].astype(np.float64)
        if ecg.mask is not None:
            values = np.where(ecg.mask[k], values, np.nan)
        if center:
            part = values[i0:i1]
            if np.isfinite(part).any():
                values = values - np.nanmedian(part)
        out[lead] = values
    return out


def _paper(grid_w: float, grid_h: float, dpi: float) -> tuple[Figure, Axes]:
    """A figure sized from millimetres with one axes whose data units are millimetres."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    fig_w = MARGIN_LEFT_MM + grid_w + MARGIN_RIGHT_MM
    fig_h = MARGIN_BOTTOM_MM + grid_h + MARGIN_TOP_MM
    fig = Figure(figsize=(fig_w / MM_PER_INCH, fig_h / MM_PER_INCH), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((MARGIN_LEFT_MM / fig_w, MARGIN_BOTTOM_MM / fig_h, grid_w / fig_w,
                       grid_h / fig_h))
    ax.set_xlim(0, grid_w)
    ax.set_ylim(0, grid_h)
    ax.set_axis_off()

    xs = np.arange(0, int(round(grid_w)) + 1, dtype=float)
    ys = np.arange(0, int(round(grid_h)) + 1, dtype=float)
    major_x, major_y = xs[xs % 5 == 0], ys[ys % 5 == 0]
    minor_x, minor_y = xs[xs % 5 != 0], ys[ys % 5 != 0]
    for gid, gx, gy, color, width, z in (
        ("grid-minor", minor_x, minor_y, GRID_MINOR_COLOR, GRID_MINOR_WIDTH_PT, 0),
        ("grid-major", major_x, major_y, GRID_MAJOR_COLOR, GRID_MAJOR_WIDTH_PT, 1),
    ):
        segments = [((x, 0.0), (x, grid_h)) for x in gx] + [((0.0, y), (grid_w, y)) for y in gy]
        ax.add_collection(LineCollection(segments, colors=[color], linewidths=width, zorder=z,
                                         gid=gid, antialiased=True))
    return fig, ax


def _draw_segment(ax: Axes, values: np.ndarray, fs: float, t0: float, seconds: float, x0: float,
                  base: float, speed: float, gain: float, *, gid: str) -> bool:
    """Draw ``seconds`` of ``values`` from ``t0`` at paper position ``x0``; False if nothing to draw."""
    i0 = int(round(t0 * fs))
    i1 = min(int(round((t0 + seconds) * fs)), values.size)
    part = values[i0:i1]
    if part.size == 0 or not np.isfinite(part).any():
        return False
    x = x0 + (np.arange(i0, i1) / fs - t0) * speed
    ax.plot(x, base + part * gain, color=TRACE_COLOR, linewidth=TRACE_WIDTH_PT, zorder=3,
            solid_joinstyle="round", gid=gid)
    return True


def _draw_calibration(ax: Axes, baselines: list[float], gain: float) -> None:
    """The 1 mV reference pulse at the start of every row, on the same baseline as the row."""
    from matplotlib.collections import LineCollection

    left = (CAL_ZONE_MM - CAL_PULSE_MM) / 2
    right = left + CAL_PULSE_MM
    paths = [
        [(0.5, b), (left, b), (left, b + gain), (right, b + gain), (right, b), (CAL_ZONE_MM - 0.5, b)]
        for b in baselines
    ]
    ax.add_collection(LineCollection(paths, colors=[TRACE_COLOR], linewidths=TRACE_WIDTH_PT * 1.3,
                                     zorder=3, gid="calibration", joinstyle="miter"))


def _draw_separators(ax: Axes, baselines: list[float]) -> None:
    """Short vertical bars where one column's time window ends and the next begins."""
    from matplotlib.collections import LineCollection

    xs = [CAL_ZONE_MM + c * PAPER_MM / 4 for c in (1, 2, 3)]
    segments = [((x, b - 4.0), (x, b + 4.0)) for b in baselines for x in xs]
    ax.add_collection(LineCollection(segments, colors=[TRACE_COLOR], linewidths=TRACE_WIDTH_PT * 1.3,
                                     zorder=3, gid="separators"))


def _draw_header(ax: Axes, ecg: ECG, grid_w: float, grid_h: float, title: str | None,
                 speed: float, gain: float, window: tuple[float, float]) -> None:
    meta = ecg.meta
    first = title or meta.record_id or (Path(meta.source_path).stem if meta.source_path else "ECG")
    patient = [f"{meta.age:g} y" if meta.age is not None else None, meta.sex,
               meta.acquired.strftime("%Y-%m-%d %H:%M") if meta.acquired is not None else None]
    patient_text = "".join(f"   {p}" for p in patient if p)
    right = (f"{ecg.fs:g} Hz   {speed:g} mm/s   {gain:g} mm/mV   "
             f"{window[0]:g}-{window[1]:.4g} s of {ecg.duration:.4g} s")
    top = grid_h + MARGIN_TOP_MM * 0.62
    kw = dict(fontsize=9, va="baseline", clip_on=False, zorder=4, gid="header")
    settings = ax.text(grid_w, top, right, ha="right", **kw)
    heading = ax.text(0, top, str(first), ha="left", fontweight="bold", **kw)
    _fit(heading, grid_w - _width_mm(settings) - 8.0, suffix=patient_text)
    if meta.interpretation:
        interpretation = ax.text(0, grid_h + MARGIN_TOP_MM * 0.2, meta.interpretation, ha="left",
                                 va="baseline", fontsize=8, clip_on=False, zorder=4,
                                 gid="interpretation")
        _fit(interpretation, grid_w)


def _width_mm(text: Text) -> float:
    fig = text.get_figure()
    extent = text.get_window_extent(fig.canvas.get_renderer())
    return extent.width / fig.dpi * MM_PER_INCH


def _fit(text: Text, max_mm: float, suffix: str = "") -> None:
    """Shorten ``text`` (one line, with an ellipsis) until it and ``suffix`` fit in ``max_mm``."""
    original = " ".join(text.get_text().split())
    text.set_text(original + suffix)
    limit = len(original)
    # Glyph widths vary, so measure rather than guess; each pass scales by the overshoot.
    for _ in range(6):
        width = _width_mm(text)
        if width <= max_mm or limit <= 1:
            return
        limit = max(1, min(limit - 1, int(limit * max_mm / width)))
        text.set_text(_shorten(original, limit) + suffix)


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"
