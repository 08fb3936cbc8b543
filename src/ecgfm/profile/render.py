"""Reports of a :class:`~ecgfm.profile.Profile`: one self-contained HTML page, or a PDF.

The page needs nothing but itself: styles are inline, figures are PNGs embedded as base64
``data:`` URIs, and there is no script and no link to load. It shows the 12-lead plot
(:func:`ecgfm.plot.plot_ecg`), the same plot once per explained finding with the samples that
raised that finding's probability shaded, the measurements, the ranked conditions grouped by
category with their calls and validation metrics, the quality flags, and a refusal box when the
record was refused.

The PDF (matplotlib's ``PdfPages``, no other dependency) has the plot and the measurements on
page 1, the conditions table on the following pages, then one page per explained finding.

matplotlib is imported inside the functions.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ECGError
from ecgfm.record import ECG

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ecgfm.profile.core import ConditionResult, Profile
    from ecgfm.profile.saliency import Saliency

#: Rows of the measurements table: key of ``Measurements.to_dict()`` -> (label, unit, decimals).
MEASUREMENTS: dict[str, tuple[str, str, int]] = {
    "heart_rate_bpm": ("Heart rate", "bpm", 0),
    "rr_ms": ("RR interval", "ms", 0),
    "pr_ms": ("PR interval", "ms", 0),
    "qrs_ms": ("QRS duration", "ms", 0),
    "qt_ms": ("QT interval", "ms", 0),
    "qtc_bazett_ms": ("QTc (Bazett)", "ms", 0),
    "qtc_fridericia_ms": ("QTc (Fridericia)", "ms", 0),
    "p_axis_deg": ("P axis", "°", 0),
    "qrs_axis_deg": ("QRS axis", "°", 0),
    "t_axis_deg": ("T axis", "°", 0),
    "n_beats": ("Beats measured", "", 0),
}
SALIENCY_RGB = (0.05, 0.35, 0.95)  # blue: stands out against the red grid and black trace
SALIENCY_MAX_ALPHA = 0.6
SALIENCY_SMOOTH_S = 0.04  # moving average before shading: one QRS-scale blob, not sample noise
DISCLAIMER = ("Computer-generated for research. Not a diagnosis: every finding must be reviewed "
              "by a qualified clinician against the tracing.")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _record_of(profile: Profile, ecg: ECG | None) -> ECG | None:
    """The samples to plot: given, kept on the profile, or read again from its source."""
    if ecg is not None:
        return ecg
    if profile.ecg is not None:
        return profile.ecg
    source = profile.record.source
    if source and os.path.exists(source):
        from ecgfm.io import read

        try:
            return read(source)
        except ECGError:
            return None
    return None


def _plot_start(profile: Profile, ecg: ECG, row_s: float = 10.0) -> float:
    """Show the part of a long record that the model saw (its window may be centred)."""
    if ecg.duration <= row_s or not profile.saliency:
        return 0.0
    return float(min(max(profile.saliency[0].t0, 0.0), ecg.duration - row_s))


def _panels(ecg: ECG, start: float, speed: float = 25.0) -> tuple[list[tuple[str, float, float, float, float]], float]:
    """Where :func:`ecgfm.plot.plot_ecg` puts each lead (its default page at ``start``):
    ``(lead, t0 s, seconds, x0 mm, baseline mm)`` per panel, and the grid height in mm."""
    from ecgfm.plot import CAL_ZONE_MM, LAYOUT_3X4, PAPER_MM, RHYTHM_ROW_S_MAX, ROW_MM

    row_s = PAPER_MM / speed
    panels: list[tuple[str, float, float, float, float]] = []
    if ecg.n_leads == 1:
        span = min(RHYTHM_ROW_S_MAX, ecg.duration - start)
        n_rows = max(1, math.ceil(span / row_s - 1e-9))
        grid_h = ROW_MM * n_rows
        for k in range(n_rows):
            base = grid_h - ROW_MM * (k + 0.5)
            panels.append((ecg.leads[0], start + k * row_s, min(row_s, span - k * row_s), CAL_ZONE_MM, base))
        return panels, grid_h
    grid_h = ROW_MM * (len(LAYOUT_3X4) + 1)
    seg = row_s / 4
    for r, row in enumerate(LAYOUT_3X4):
        base = grid_h - ROW_MM * (r + 0.5)
        for c, lead in enumerate(row):
            panels.append((lead, start + c * seg, seg, CAL_ZONE_MM + c * PAPER_MM / 4, base))
    panels.append(("II", start, row_s, CAL_ZONE_MM, grid_h - ROW_MM * (len(LAYOUT_3X4) + 0.5)))
    return panels, grid_h


def _intensity(saliency: Saliency, fs: float, n: int) -> dict[str, np.ndarray]:
    """Per lead, the positive (supporting) attribution smoothed over ~40 ms, on a grid of
    ``n`` samples at ``fs`` from record time 0, scaled to [0, 1] by the largest value."""
    assert saliency.values is not None
    width = max(1, round(SALIENCY_SMOOTH_S * saliency.fs))
    kernel = np.ones(width) / width
    smooth = np.stack([np.convolve(row, kernel, mode="same") for row in saliency.values.astype(np.float64)])
    position = (np.arange(n) / fs - saliency.t0) * saliency.fs
    grid = np.arange(saliency.samples, dtype=np.float64)
    rows = {lead: np.clip(np.interp(position, grid, smooth[i], left=0.0, right=0.0), 0, None)
            for i, lead in enumerate(saliency.leads)}
    top = max((float(v.max()) for v in rows.values()), default=0.0)
    # a gamma below 1 keeps moderate evidence visible beside the single strongest beat
    return {lead: (v / top) ** 0.7 if top > 0 else v for lead, v in rows.items()}


def _shade(ax: Axes, ecg: ECG, saliency: Saliency, start: float) -> list[Any]:
    """Shade each panel where ``saliency`` raised the probability; returns the artists."""
    from ecgfm.plot import ROW_MM

    fs_grid = 50.0  # 0.5 mm per column at 25 mm/s: finer than the eye needs
    n = int(math.ceil(ecg.duration * fs_grid))
    rows = _intensity(saliency, fs_grid, n)
    panels, _ = _panels(ecg, start)
    artists = []
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    for lead, t0, seconds, x0, base in panels:
        if lead not in rows or seconds <= 0:
            continue
        i0, i1 = int(round(t0 * fs_grid)), min(int(round((t0 + seconds) * fs_grid)), n)
        if i1 <= i0:
            continue
        alpha = rows[lead][i0:i1] * SALIENCY_MAX_ALPHA
        rgba = np.zeros((1, i1 - i0, 4))
        rgba[..., :3] = SALIENCY_RGB
        rgba[0, :, 3] = alpha
        x1 = x0 + (i1 - i0) / fs_grid * 25.0
        artists.append(ax.imshow(rgba, extent=(x0, x1, base - ROW_MM / 2 + 0.5, base + ROW_MM / 2 - 0.5),
                                 aspect="auto", interpolation="bilinear", zorder=2,
                                 gid=f"saliency:{saliency.label}:{lead}"))
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return artists


def _draw(profile: Profile, ecg: ECG, dpi: float, emit: Any) -> None:
    """Draw the plot once; ``emit(saliency_or_None, figure)`` plain, then once per finding."""
    from ecgfm.plot import plot_ecg

    start = _plot_start(profile, ecg)
    fig = plot_ecg(ecg, start=start, dpi=dpi)
    emit(None, fig)
    ax = fig.axes[0]
    for saliency in profile.saliency:
        if saliency.values is None:
            continue
        artists = _shade(ax, ecg, saliency, start)
        emit(saliency, fig)
        for artist in artists:
            artist.remove()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d6d9df;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.meta{color:#4a5263;font-size:13px}.card{background:#fff;border:1px solid #dde0e6;border-radius:6px;padding:12px 16px;margin:10px 0}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.row-negative td{color:#7b8292}tr.row-positive td{background:#fff6f5}tr.row-borderline td{background:#fffbef}
table.conditions{table-layout:fixed}table.measurements{width:auto;min-width:420px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.positive{background:#fde2e1;color:#a4161a}.borderline{background:#fff1cc;color:#7a5200}.negative-badge{background:#eceef2;color:#4a5263}
.ok{background:#dff3e4;color:#1b6b33}.refused-badge{background:#a4161a;color:#fff}
.bar{display:inline-block;height:8px;background:#3d6fd6;border-radius:2px;vertical-align:middle}
.barbox{display:inline-block;width:90px;background:#eceef2;border-radius:2px;margin-right:6px}
.refusal{border:2px solid #a4161a;background:#fff5f5;border-radius:6px;padding:10px 16px;margin:14px 0}
.refusal h2{border:none;color:#a4161a;margin:0 0 6px}
img.ecg{width:100%;height:auto;border:1px solid #dde0e6;background:#fff}
.chips span{margin-right:6px}.muted{color:#7b8292}.small{font-size:12px}
code{font-size:12px;background:#eef0f3;padding:0 3px;border-radius:3px}
footer{margin-top:30px;font-size:12px;color:#7b8292}
"""


def render_html(profile: Profile, ecg: ECG | None = None, *, dpi: float = 100) -> str:
    """One self-contained HTML page for a profile (no external assets, no scripts).

    Args:
        profile: from :func:`~ecgfm.profile.build_profile`.
        ecg: the record to plot; default the one the profile kept, else its source file read
            again. Without samples the page has no plot.
        dpi: resolution of the embedded plots (100: 1,100 px wide).

    Returns:
        The page as a string (UTF-8 text; write it with ``encoding="utf-8"``).
    """
    record = _record_of(profile, ecg)
    images: list[tuple[Saliency | None, bytes]] = []
    if record is not None:
        _draw(profile, record, dpi, lambda s, fig: images.append((s, _png(fig))))
    r = profile.record
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>ECG profile {e(r.record_id)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>ECG health profile: {e(r.record_id)} "
        + (f'<span class="badge ok">{e(profile.status)}</span>' if profile.ok
           else '<span class="badge refused-badge">refused</span>') + "</h1>",
        f'<div class="meta">{e(_record_line(profile))}</div>',
        f'<div class="meta">Model: {e(_model_line(profile))}</div>',
    ]
    if not profile.ok:
        parts.append('<div class="refusal"><h2>Not interpreted</h2><p>This record is not fit for '
                     "automated interpretation:</p><ul>"
                     + "".join(f"<li><code>{e(x.code)}</code>{' [' + e(x.lead) + ']' if x.lead else ''}: "
                               f"{e(x.message)}</li>" for x in profile.reasons) + "</ul></div>")
    else:
        parts.append(_calls_html(profile))
    plain = [png for s, png in images if s is None]
    if plain:
        parts += ["<h2>12-lead ECG</h2>",
                  f'<img class="ecg" alt="12-lead ECG of {e(r.record_id)}" src="{_data_uri(plain[0])}">']
    else:
        parts.append('<p class="muted">No plot: the record\'s samples are not available.</p>')
    parts += ["<h2>Measurements</h2>", _measurements_html(profile)]
    median = _median_png(record, dpi) if record is not None and profile.measurements is not None else None
    if median is not None:
        parts += ['<p class="small muted">Each lead\'s median beat, from which the intervals are measured; '
                  "dashed lines: the P onset, QRS onset and offset and T offset across leads.</p>",
                  f'<img class="ecg" alt="median beats of {e(r.record_id)}" src="{_data_uri(median)}">']
    parts += ["<h2>Signal quality</h2>", _quality_html(profile)]
    if profile.ok:
        parts += ["<h2>Conditions</h2>",
                  '<p class="small muted">Every output of the model, most probable first within '
                  "each group. Calls use the model's operating points (borderline / positive "
                  "probability); metrics are the model's validation figures for that "
                  "condition.</p>"]
        for group, title, items in profile.groups:
            parts.append(f'<h3 id="group-{e(group)}">{e(title)}</h3>' + _conditions_html(items))
    overlays = [(s, png) for s, png in images if s is not None]
    if overlays:
        parts += ["<h2>Where the model looked</h2>",
                  '<p class="small muted">Integrated gradients (baseline: flat line, '
                  f"{overlays[0][0].steps} steps): shaded samples raised the finding's probability; "
                  "darker shading, more. Attributions of a finding sum to its probability's rise "
                  "above the flat baseline's.</p>"]
        for s, png in overlays:
            leads = sorted(s.lead_contribution.items(), key=lambda kv: -kv[1])[:3]
            parts += [f"<h3>{e(s.name)} <code>{e(s.label)}</code> "
                      f'<span class="muted small">P = {s.probability:.2f}; leads contributing most: '
                      f"{e(', '.join(f'{lead} {v:+.3f}' for lead, v in leads))}</span></h3>",
                      f'<img class="ecg" alt="saliency for {e(s.label)}" src="{_data_uri(png)}">']
    parts += ["<h2>Risk</h2>", '<p class="muted">This model has no risk (time-to-event) outputs.</p>'
              if not profile.risk else _risk_html(profile.risk)]
    if profile.notes:
        parts += ["<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in profile.notes) + "</ul>"]
    parts.append(f"<footer>{e(DISCLAIMER)} Profile schema version {profile.schema_version}; "
                 f"ecgfm {e(str(profile.model.get('ecgfm', '')))}.</footer></main></body></html>")
    return "\n".join(parts) + "\n"


def _median_figure(ecg: ECG, dpi: float) -> Figure | None:
    """The median beats with their fiducials, or None where the record has none."""
    try:
        from ecgfm.delineate import median_beat
        from ecgfm.plot import plot_median_beats
    except ImportError:
        return None
    try:
        beat = median_beat(ecg)
    except ECGError:
        return None
    return plot_median_beats(beat, dpi=dpi)


def _median_png(ecg: ECG, dpi: float) -> bytes | None:
    fig = _median_figure(ecg, dpi)
    return None if fig is None else _png(fig)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _record_line(profile: Profile) -> str:
    r = profile.record
    bits = [r.source or "", r.format or "", f"{r.fs:g} Hz", f"{len(r.leads)} leads",
            f"{r.duration_s:.4g} s"]
    if r.age is not None:
        bits.append(f"age {r.age:g}")
    if r.sex:
        bits.append(f"sex {r.sex}")
    if r.acquired:
        bits.append(r.acquired)
    return " · ".join(b for b in bits if b)


def _model_line(profile: Profile) -> str:
    m = profile.model
    inp = m.get("input") or {}
    seconds = f" x {inp['seconds']:g} s" if inp.get("seconds") else ""
    return (f"{m.get('name')} ({m.get('encoder')}, {m.get('outputs')} outputs; input "
            f"{inp.get('fs', 0):g} Hz x {len(inp.get('leads') or [])} leads{seconds}; pipeline "
            f"{str(m.get('pipeline_hash') or '')[:12]})")


def _calls_html(profile: Profile) -> str:
    e = html.escape
    rows = []
    for call in ("positive", "borderline"):
        found = profile.called(call)
        chips = "".join(f'<span class="badge {call}" title="{e(c.id)}">{e(c.name)} '
                        f"{c.probability:.2f}</span>" for c in found)
        rows.append(f"<div><b>{call.capitalize()}:</b> "
                    + (f'<span class="chips">{chips}</span>' if found else '<span class="muted">none</span>')
                    + "</div>")
    return '<div class="card">' + "".join(rows) + "</div>"


def _measurements_html(profile: Profile) -> str:
    if profile.measurements is None:
        why = next((n for n in profile.notes if n.startswith(("measurements", "refused"))), "not measured")
        return f'<p class="muted">Not available: {html.escape(why)}</p>'
    rows = "".join(f'<tr><td>{html.escape(label)}</td><td class="num">{html.escape(value)}</td>'
                   f"<td>{html.escape(unit)}</td></tr>"
                   for label, value, unit in measurement_rows(profile.measurements))
    return f'<table class="measurements"><tr><th>Measurement</th><th>Value</th><th>Unit</th></tr>{rows}</table>'


def measurement_rows(measurements: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, value, unit)`` per measurement, known ones first in clinical order; values not
    measurable show as an em dash."""
    rows = []
    keys = [k for k in MEASUREMENTS if k in measurements] + [k for k in measurements if k not in MEASUREMENTS]
    for key in keys:
        label, unit, decimals = MEASUREMENTS.get(key, (key, "", 3))
        value = measurements[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            text = f"{value:.{decimals}f}" if isinstance(value, float) else str(value)
        elif value is None or (isinstance(value, float) and not math.isfinite(value)):
            text = "—"
        else:
            text = str(value)
        rows.append((label, text + "°" if unit == "°" and text != "—" else text, "" if unit == "°" else unit))
    return rows


def _quality_html(profile: Profile) -> str:
    flags = profile.quality.flags
    if not flags:
        return '<p><span class="badge ok">no quality flags</span></p>'
    e = html.escape
    blocking = '<span class="badge positive">blocking</span>'
    rows = "".join(
        f"<tr><td><code>{e(f.code)}</code></td><td>{e(f.lead or 'all')}</td><td>{e(f.reason)}</td>"
        f"<td>{blocking if f.blocking else 'warning'}</td></tr>"
        for f in flags)
    return f"<table><tr><th>Flag</th><th>Lead</th><th>Reason</th><th>Effect</th></tr>{rows}</table>"


def _conditions_html(items: Sequence[ConditionResult]) -> str:
    e = html.escape
    rows = []
    for c in items:
        badge = {"positive": "positive", "borderline": "borderline"}.get(c.call, "negative-badge")
        width = max(0.0, min(1.0, c.probability)) * 90
        rows.append(
            f'<tr class="row-{e(c.call)}"><td class="num">{c.rank}</td>'
            f"<td>{e(c.name)} <code>{e(c.id)}</code></td>"
            f'<td class="num"><span class="barbox"><span class="bar" style="width:{width:.0f}px">'
            f"</span></span>{c.probability:.3f}</td>"
            f'<td><span class="badge {badge}">{e(c.call)}</span></td>'
            f'<td class="num">{c.borderline_at:.3g} / {c.positive_at:.3g}</td>'
            f'<td class="small">{e(format_metrics(c.metrics)) or "<span class=muted>—</span>"}</td></tr>'
        )
    return ('<table class="conditions"><colgroup><col style="width:4%"><col style="width:33%">'
            '<col style="width:17%"><col style="width:10%"><col style="width:12%"><col style="width:24%">'
            "</colgroup><tr><th>#</th><th>Condition</th><th>Probability</th><th>Call</th>"
            "<th>Borderline / positive at</th><th>Validation metrics</th></tr>" + "".join(rows) + "</table>")


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``"auroc 0.97 [0.95, 0.98] · ap 0.81 · n_positive 120"``: each metric with its ``<key>_ci``
    interval beside it, when there is one."""
    parts = []
    for key, value in metrics.items():
        if key.endswith("_ci") and key[:-3] in metrics:
            continue
        text = _fmt(value)
        ci = metrics.get(f"{key}_ci")
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
        parts.append(f"{key} {text}")
    return " · ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else "—"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "—" if value is None else str(value)


def _risk_html(risk: Sequence[Mapping[str, Any]]) -> str:
    """One row per risk model: its event, the absolute risk by each horizon, its validation."""
    e = html.escape
    rows = []
    for item in risk:
        unit = f" {item.get('time_unit')}" if item.get("time_unit") else ""
        if item.get("risk") is None:
            value = f"not given: {e(str(item.get('error', 'unknown reason')))}"
        else:
            value = ", ".join(f"{100 * r:.1f}% by {h:g}{e(unit)}" for h, r in zip(item["horizons"], item["risk"]))
        figures = ", ".join(f"{e(k.replace('_', ' '))} {v:.3f}" for k, v in (item.get("validation") or {}).items())
        rows.append(f"<tr><td>{e(str(item.get('event') or 'event'))}</td><td>{value}</td>"
                    f"<td>{e(str(item.get('model', '')))}</td><td>{figures or '—'}</td></tr>")
    return ("<table><thead><tr><th>event</th><th>absolute risk</th><th>model</th><th>validation</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------
A4_LANDSCAPE_IN = (11.69, 8.27)
ROWS_PER_PAGE = 40


def render_pdf(profile: Profile, path: str | os.PathLike[str], ecg: ECG | None = None, *,
               dpi: float = 150) -> Path:
    """Write a PDF report of a profile (A4 landscape).

    Page 1: the record, the refusal box or the positive and borderline calls, the 12-lead
    plot and the measurements; page 2 the median beats the intervals come from, with their
    onsets and offsets. Then the conditions table (grouped, ranked) over as many pages
    as it needs, then one page per explained finding with its saliency shaded on the plot.

    Args:
        profile: from :func:`~ecgfm.profile.build_profile`.
        path: the ``.pdf`` file to write.
        ecg: the record to plot (default as in :func:`render_html`).
        dpi: resolution of the embedded plots.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    record = _record_of(profile, ecg)
    plots: list[tuple[Saliency | None, np.ndarray]] = []
    if record is not None:
        _draw(profile, record, dpi, lambda s, fig: plots.append((s, _rgba(fig))))
    with PdfPages(path, metadata={"Title": f"ECG health profile {profile.record.record_id}",
                                  "Creator": "ecgfm", "CreationDate": None}) as pdf:
        pdf.savefig(_first_page(profile, next((a for s, a in plots if s is None), None)))
        median = _median_figure(record, dpi) if record is not None and profile.measurements is not None else None
        if median is not None:
            page = _page("Median beats", "Each lead's median beat, from which the intervals are measured; dashed "
                         "lines: the P onset, QRS onset and offset and T offset across leads.")
            _image(page, (0.03, 0.08, 0.94, 0.8), _rgba(median))
            pdf.savefig(page)
        if profile.ok:
            for page in _condition_pages(profile):
                pdf.savefig(page)
        for saliency, image in plots:
            if saliency is not None:
                pdf.savefig(_saliency_page(profile, saliency, image))
    return path


def _rgba(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()  # type: ignore[attr-defined]


def _page(title: str, subtitle: str = "") -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_LANDSCAPE_IN)
    FigureCanvasAgg(fig)
    fig.text(0.03, 0.955, title, fontsize=14, fontweight="bold", va="top")
    if subtitle:
        fig.text(0.03, 0.915, subtitle, fontsize=8.5, va="top", color="0.3")
    fig.text(0.03, 0.02, DISCLAIMER, fontsize=7, color="0.45")
    return fig


def _image(fig: Figure, rect: tuple[float, float, float, float], image: np.ndarray) -> None:
    ax = fig.add_axes(rect)
    ax.imshow(image, interpolation="antialiased")
    ax.set_axis_off()


def _first_page(profile: Profile, image: np.ndarray | None) -> Figure:
    r = profile.record
    fig = _page(f"ECG health profile: {r.record_id}" + ("" if profile.ok else "  (REFUSED)"),
                _record_line(profile) + "\nModel: " + _model_line(profile))
    y = 0.855
    if not profile.ok:
        text = "Not interpreted. " + "; ".join(
            f"{x.code}{' [' + x.lead + ']' if x.lead else ''}: {x.message}" for x in profile.reasons)
        fig.text(0.03, y, _wrap(text, 190), fontsize=9, color="#a4161a", va="top", fontweight="bold",
                 bbox={"facecolor": "#fff5f5", "edgecolor": "#a4161a", "boxstyle": "round,pad=0.4"})
    else:
        for call, color in (("positive", "#a4161a"), ("borderline", "#7a5200")):
            found = profile.called(call)
            text = ", ".join(f"{c.name} ({c.probability:.2f})" for c in found) or "none"
            fig.text(0.03, y, _wrap(f"{call.capitalize()}: {text}", 200), fontsize=9, color=color, va="top")
            y -= 0.03
    if image is not None:
        _image(fig, (0.01, 0.06, 0.75, y - 0.07), image)
    x, y = 0.78, y - 0.04
    fig.text(x, y, "Measurements", fontsize=10, fontweight="bold", va="top")
    y -= 0.035
    rows = measurement_rows(profile.measurements) if profile.measurements is not None else []
    for label, value, unit in rows:
        fig.text(x, y, label, fontsize=8.5, va="top")
        fig.text(0.97, y, value if unit in ("", "°") or value == "—" else f"{value} {unit}",
                 fontsize=8.5, ha="right", va="top")
        y -= 0.025
    if not rows:
        why = next((n for n in profile.notes if n.startswith(("measurements", "refused"))), "not measured")
        fig.text(x, y, _wrap(f"Not available: {why}", 36), fontsize=8, color="0.4", va="top")
        y -= 0.02 * (1 + len(_wrap(why, 36).splitlines()))
    y -= 0.03
    fig.text(x, y, "Signal quality", fontsize=10, fontweight="bold", va="top")
    y -= 0.035
    flags = profile.quality.flags
    lines = ["no flags"] if not flags else [
        f"{f.code}{' [' + f.lead + ']' if f.lead else ''}{' (blocking)' if f.blocking else ''}" for f in flags]
    fig.text(x, y, _wrap("; ".join(lines), 36), fontsize=8, va="top", color="0.25")
    return fig


def _condition_pages(profile: Profile) -> list[Figure]:
    lines: list[tuple[str, Any]] = []
    for _, title, items in profile.groups:
        lines.append(("group", title))
        lines.extend(("row", c) for c in items)
    pages = []
    for start in range(0, len(lines), ROWS_PER_PAGE):
        chunk = lines[start:start + ROWS_PER_PAGE]
        number = start // ROWS_PER_PAGE + 1
        total = math.ceil(len(lines) / ROWS_PER_PAGE)
        fig = _page(f"Conditions ({number}/{total}): {profile.record.record_id}",
                    "Most probable first within each group; calls at the model's operating points "
                    "(borderline / positive probability); validation metrics as saved with the model.")
        y = 0.87
        columns = ((0.03, "#"), (0.06, "Condition"), (0.40, "P"), (0.47, "Call"), (0.56, "Bord./pos."),
                   (0.65, "Validation metrics"))
        for x, head in columns:
            fig.text(x, y, head, fontsize=8, fontweight="bold")
        y -= 0.02
        for kind, value in chunk:
            if kind == "group":
                y -= 0.004
                fig.text(0.03, y, value, fontsize=8.5, fontweight="bold", color="#1d3f8f")
            else:
                c = value
                color = {"positive": "#a4161a", "borderline": "#7a5200"}.get(c.call, "0.35")
                cells = (str(c.rank), _shorten(f"{c.name} ({c.id})", 70), f"{c.probability:.3f}", c.call,
                         f"{c.borderline_at:.3g} / {c.positive_at:.3g}", _shorten(format_metrics(c.metrics), 75))
                for (x, _), cell in zip(columns, cells):
                    fig.text(x, y, cell, fontsize=7.5, color=color)
            y -= 0.019
        pages.append(fig)
    return pages


def _saliency_page(profile: Profile, saliency: Saliency, image: np.ndarray) -> Figure:
    leads = sorted(saliency.lead_contribution.items(), key=lambda kv: -kv[1])[:4]
    fig = _page(f"Where the model looked: {saliency.name} ({saliency.label}), P = {saliency.probability:.2f}",
                "Integrated gradients against a flat baseline; shaded samples raised the probability "
                "(darker: more). Leads contributing most: "
                + ", ".join(f"{lead} {v:+.3f}" for lead, v in leads))
    _image(fig, (0.03, 0.08, 0.94, 0.8), image)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"
