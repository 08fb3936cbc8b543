"""Wave boundaries and peaks, lead by lead, anchored on the multi-lead beats.

The approach follows the wavelet delineators (Martinez et al., IEEE TBME 2004) with a
derivative of a Gaussian in place of the dyadic wavelet: a wave's peak is a zero crossing of the
derivative at the wave's scale, its steepest slopes are the derivative's modulus maxima, and an
onset (offset) is where the derivative's modulus falls below a fraction of the first (last)
slope maximum, or reaches a local minimum, whichever comes first. The QRS is first bounded on
the multi-lead slope envelope (the root-mean-square derivative over the leads, the "spatial
velocity" of vectorcardiography), which keeps each lead's search on the right complex; P waves
are kept only where enough leads agree on one at the same place (no P wave in atrial
fibrillation).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ecgfm.delineate._dsp import FS, smooth
from ecgfm.delineate.config import DelineatorConfig

KEYS = ("P_on", "P_peak", "P_off", "QRS_on", "QRS_peak", "QRS_off", "T_on", "T_peak", "T_off")
AGREE_MS = 40.0  # leads agree on a wave whose peaks lie this close to the leads' median


def ms(value: float) -> int:
    """Milliseconds to samples at :data:`FS`."""
    return int(round(value * FS / 1000.0))


@dataclass
class LeadView:
    """One lead's conditioned signal and its derivatives at the wave scales (``[samples]``)."""

    y: np.ndarray  # conditioned signal, mV
    dq: np.ndarray  # derivative at the QRS scale
    ts: np.ndarray  # smoothed, for the T amplitude
    dt: np.ndarray  # derivative at the T scale
    ps: np.ndarray  # smoothed, for the P amplitude
    dp: np.ndarray  # derivative at the P scale


def lead_views(x: np.ndarray, cfg: DelineatorConfig) -> list[LeadView]:
    """Precompute the per-lead arrays for ``x`` ``[leads, samples]``."""
    dq = smooth(x, cfg.qrs_sigma_ms, 1)
    ts = smooth(x, cfg.t_smooth_ms, 0)
    dt = smooth(x, cfg.t_sigma_ms, 1)
    ps = smooth(x, cfg.p_smooth_ms, 0)
    dp = smooth(x, cfg.p_sigma_ms, 1)
    return [LeadView(x[i], dq[i], ts[i], dt[i], ps[i], dp[i]) for i in range(x.shape[0])]


def _walk(mag: np.ndarray, start: int, stop: int, level: float, local_min: bool = True) -> int:
    """First index from ``start`` towards ``stop`` (exclusive) where ``mag`` drops below ``level``
    or reaches a local minimum; ``stop`` -/+ 1 when neither happens."""
    step = 1 if stop > start else -1
    if start == stop:
        return start
    seg = mag[start:stop:step]
    below = np.flatnonzero(seg < level)
    first = below[0] if below.size else seg.size - 1
    if local_min and seg.size > 2:
        mins = np.flatnonzero((seg[1:-1] <= seg[:-2]) & (seg[1:-1] < seg[2:])) + 1
        if mins.size and mins[0] < first:
            first = mins[0]
    return start + step * int(first)


def global_qrs(velocity: np.ndarray, beats: np.ndarray, cfg: DelineatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Multi-lead QRS onset and offset per beat from the slope envelope ``velocity``.

    ``velocity`` ``[samples]`` is the root-mean-square over the leads of the derivative at the
    QRS scale; ``beats`` the beat positions; both bounds stay within ``cfg.qrs_max_half_ms``
    of the beat and on its side of the midpoints to the neighbouring beats. NaN where a beat
    sits too close to the record's edge.
    """
    n = velocity.size
    on = np.full(beats.size, np.nan)
    off = np.full(beats.size, np.nan)
    half = ms(cfg.qrs_max_half_ms)
    for i, r in enumerate(beats):
        a, b = max(0, r - ms(50)), min(n, r + ms(50) + 1)
        if b - a < 3:
            continue
        m = a + int(np.argmax(velocity[a:b]))
        vmax = velocity[m]
        if vmax <= 0:
            continue
        lo = max(0, r - half, (beats[i - 1] + r) // 2 if i else 0)
        hi = min(n - 1, r + half, (beats[i + 1] + r) // 2 if i + 1 < beats.size else n - 1)
        if m - lo < 2 or hi - m < 2:
            continue
        # Start from the outermost significant slope of the complex (a single lead's slope
        # vanishes at every peak inside its QRS), then walk out to the threshold; where the
        # envelope never falls that low (noise, pacing spikes), take its quietest point.
        sig, gap = cfg.qrs_significant * vmax, ms(cfg.qrs_gap_ms)
        f = _outermost(velocity, m, lo, sig, gap)
        j = _walk(velocity, f, lo - 1, cfg.global_on_frac * vmax, local_min=False)
        on[i] = j if j > lo else lo + int(np.argmin(velocity[lo:f + 1]))
        g = _outermost(velocity, m, hi, sig, gap)
        k = _walk(velocity, g, hi + 1, cfg.global_off_frac * vmax, local_min=False)
        off[i] = k if k < hi else g + int(np.argmin(velocity[g:hi + 1]))
    return on, off


def _outermost(mag: np.ndarray, start: int, stop: int, level: float, gap: int) -> int:
    """The last index from ``start`` towards ``stop`` where ``mag >= level`` before a run of
    ``gap`` samples below it."""
    step = 1 if stop > start else -1
    above = np.flatnonzero(mag[start:stop + step:step] >= level) if stop != start else np.zeros(1, np.int64)
    if above.size == 0:
        return start
    # Contiguous while the distance between successive samples above the level stays <= gap.
    breaks = np.flatnonzero(np.diff(above) > gap)
    last = above[breaks[0]] if breaks.size else above[-1]
    return start + step * int(last)


def _humps(d: np.ndarray, a: int, b: int, reach: int, context: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate wave peaks in ``[a, b)``, their strength and polarity.

    A candidate is a zero crossing of the derivative ``d`` (a peak or trough of the signal);
    its strength is the smaller of the steepest rise before it and the steepest fall after it
    (within ``reach`` samples and the window, sign-adjusted for a trough), so a wave needs both
    slopes, while a monotonic drift (an ST segment, the tail of an S wave) scores nothing.
    Polarity is +1 for a peak, -1 for a trough. ``context`` (default ``(a, b)``) bounds the
    slope search when the peak's window is narrower than the wave's.
    """
    ca, cb = context if context is not None else (a, b)
    if b - a < 3:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    seg = d[a:b]
    sb = np.signbit(seg)
    z = a + np.flatnonzero(sb[1:] != sb[:-1]) + 1
    strength = np.zeros(z.size)
    polarity = np.where(d[z - 1] > 0, 1.0, -1.0)
    for j, c in enumerate(z):
        # Slopes outside the window belong to other waves (the QRS before a T wave).
        before = polarity[j] * d[max(ca, c - reach):c]
        after = -polarity[j] * d[c:min(cb, c + reach)]
        if before.size and after.size:
            strength[j] = min(before.max(), after.max())
    return z, np.maximum(strength, 0.0), polarity


def _bound(d: np.ndarray, m: int, stop: int, frac: float) -> int:
    """Onset (``stop < m``) or offset (``stop > m``) of the wave whose steepest slope is at ``m``."""
    step = 1 if stop > m else -1
    return _walk(np.abs(d), m, stop + step, frac * abs(d[m]))


def _wave(
    s: np.ndarray, d: np.ndarray, a: int, b: int, *, reach: int, lo: int, hi: int,
    base: Callable[[int], float], min_amp: float, on_frac: float, off_frac: float,
    context: tuple[int, int] | None = None,
) -> tuple[float, float, float]:
    """``(onset, peak, offset)`` of the strongest wave peaking in ``[a, b)``, NaN where absent.

    ``s`` is the smoothed signal, ``d`` its derivative at the wave's scale; the onset is sought
    back to ``lo``, the offset forward to ``hi``; ``base(t)`` is the isoelectric level.
    """
    nan = float("nan")
    cand, strength, polarity = _humps(d, a, b, reach, context)
    if cand.size == 0 or strength.max() <= 0:
        return nan, nan, nan
    j = int(np.argmax(strength))
    pk, pol = int(cand[j]), polarity[j]
    if abs(s[pk] - base(pk)) < min_amp:
        return nan, nan, nan
    on = off = nan
    # The steepest slopes of this wave lie within ``reach`` of its peak.
    a_on = max(lo, pk - reach)
    if pk - a_on > 1:
        m_on = a_on + int(np.argmax(pol * d[a_on:pk + 1]))
        on = float(_bound(d, m_on, lo, on_frac))
    b_off = min(hi, pk + reach)
    if b_off - pk > 1:
        m_off = pk + int(np.argmax(-pol * d[pk:b_off + 1]))
        off = float(_bound(d, m_off, hi, off_frac))
    return on, float(pk), off


def delineate_lead(
    view: LeadView,
    beats: np.ndarray,
    g_on: np.ndarray,
    g_off: np.ndarray,
    rr: np.ndarray,
    cfg: DelineatorConfig,
    hints: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fiducials of one lead, ``{key: float64 [beats]}`` at :data:`FS`, NaN where absent.

    ``hints`` (``{"P_peak": [beats], "T_peak": [beats]}``, the leads' consensus) narrows the
    P and T searches to that place and lowers their amplitude threshold, for a second pass in
    leads where a wave is small; a NaN hint means no such wave in that beat.
    """
    n = view.y.size
    nb = beats.size
    out = {k: np.full(nb, np.nan) for k in KEYS}
    adq = np.abs(view.dq)
    margin = ms(cfg.qrs_margin_ms)
    for i, r in enumerate(beats):
        gon, goff = g_on[i], g_off[i]
        if np.isnan(gon) or np.isnan(goff):
            continue
        gon, goff = int(gon), int(goff)
        # -- QRS --------------------------------------------------------------------------
        lo, hi = max(1, gon - margin), min(n - 1, goff + margin)
        core = adq[gon:goff + 1]
        if core.size == 0 or core.max() <= 0:
            continue
        seg = adq[lo:hi + 1]
        peaks = np.flatnonzero((seg[1:-1] >= seg[:-2]) & (seg[1:-1] > seg[2:]) & (seg[1:-1] > cfg.qrs_significant * core.max())) + 1
        if peaks.size == 0:
            continue
        f, last = lo + int(peaks[0]), lo + int(peaks[-1])
        on = _walk(adq, f, lo - 1, cfg.qrs_on_frac * adq[f])
        off = _walk(adq, last, hi + 1, cfg.qrs_off_frac * adq[last])
        out["QRS_on"][i], out["QRS_off"][i] = on, off
        if off > on:
            # The R wave: the largest deflection above the onset-offset line, near the beat.
            resid = view.y[on:off + 1] - np.linspace(view.y[on], view.y[off], off - on + 1)
            a, b = max(0, r - ms(80) - on), min(off - on + 1, r + ms(80) - on + 1)
            if b > a:
                pk = a + int(np.argmax(resid[a:b]))
                if resid[pk] < 0.05 and -resid[a:b].min() > 2 * max(resid[pk], 0.0):
                    pk = a + int(np.argmin(resid[a:b]))  # a QS complex: its nadir
                out["QRS_peak"][i] = on + pk
        # Isoelectric level: the signal at the multi-lead QRS onset of this beat and the next.
        nxt = int(g_on[i + 1]) if i + 1 < nb and not np.isnan(g_on[i + 1]) else -1
        base0 = float(view.y[gon])
        base1 = float(view.y[nxt]) if nxt > gon else base0
        span = max(nxt - gon, 1)

        def baseline(t: int, base0: float = base0, base1: float = base1, gon: int = gon, span: int = span) -> float:
            return base0 + (base1 - base0) * (t - gon) / span

        # -- T wave -----------------------------------------------------------------------
        t_a = max(off, goff) + ms(cfg.t_start_ms)
        t_b = min(r + int(min(cfg.t_window_rr * rr[i], ms(cfg.t_window_max_ms))), nxt - ms(150) if nxt > 0 else n - 1, n - 1)
        t_min = cfg.t_min_mv
        t_ctx = (t_a, t_b)
        if hints is not None:
            h = hints["T_peak"][i]
            if np.isnan(h):
                t_b = t_a
            else:
                t_a, t_b, t_min = max(t_a, int(h) - ms(cfg.t_hint_ms)), min(t_b, int(h) + ms(cfg.t_hint_ms)), cfg.hint_min_mv
        if t_b - t_a > ms(10):
            t_hi = min(t_b + ms(cfg.t_off_reach_ms), nxt - ms(60) if nxt > 0 else n - 1, n - 1)
            t = _wave(view.ts, view.dt, t_a, t_b, reach=ms(cfg.t_reach_ms), lo=max(off, goff), hi=t_hi,
                      base=baseline, min_amp=t_min, on_frac=cfg.t_on_frac, off_frac=cfg.t_off_frac,
                      context=t_ctx)
            out["T_on"][i], out["T_peak"][i], out["T_off"][i] = t
        # -- P wave -----------------------------------------------------------------------
        p_b = gon - ms(cfg.p_gap_ms)
        p_a = max(1, gon - ms(cfg.p_window_ms))
        if i > 0:
            p_a = max(p_a, int(beats[i - 1] + 0.3 * (r - beats[i - 1])))
            prev_toff = out["T_off"][i - 1]
            if not np.isnan(prev_toff):
                p_a = max(p_a, int(prev_toff))
        p_min = cfg.p_min_mv
        p_ctx = (p_a, gon - ms(cfg.p_context_gap_ms))
        if hints is not None:
            h = hints["P_peak"][i]
            if np.isnan(h):
                p_b = p_a
            else:
                p_a, p_b, p_min = max(p_a, int(h) - ms(cfg.p_hint_ms)), min(p_b, int(h) + ms(cfg.p_hint_ms)), cfg.hint_min_mv
        if p_b - p_a > ms(10):
            p = _wave(view.ps, view.dp, p_a, p_b, reach=ms(cfg.p_reach_ms), lo=max(0, p_a - ms(40)), hi=gon,
                      base=lambda t, b0=base0: b0, min_amp=p_min, on_frac=cfg.p_on_frac,
                      off_frac=cfg.p_off_frac, context=p_ctx)
            out["P_on"][i], out["P_peak"][i], out["P_off"][i] = p
    return out


def nanmedian0(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` for a small 2-d array (leads x beats), without its overhead;
    NaN where a column has no finite value."""
    a = np.sort(a, axis=0)  # NaN sort last
    count = np.isfinite(a).sum(axis=0)
    cols = np.arange(a.shape[1])
    lo = a[np.maximum((count - 1) // 2, 0), cols]
    hi = a[np.maximum(count // 2, 0), cols]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan)


def consensus(per_lead: list[dict[str, np.ndarray]], key: str, fraction: float) -> np.ndarray:
    """Per beat, the median place of ``key`` over the leads that agree on it (within
    :data:`AGREE_MS` of the median), or NaN where fewer than ``fraction`` of the leads do."""
    peaks = np.stack([d[key] for d in per_lead])  # [leads, beats]
    med = nanmedian0(peaks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        agree = np.abs(peaks - med) <= ms(AGREE_MS)
    hint = nanmedian0(np.where(agree, peaks, np.nan))
    present = agree.sum(axis=0) >= max(1.0, fraction * peaks.shape[0])
    return np.where(present, hint, np.nan)


def merge_second_pass(first: dict[str, np.ndarray], second: dict[str, np.ndarray] | None, hints: dict[str, np.ndarray], cfg: DelineatorConfig) -> None:
    """Keep a lead's first-pass P/T where it agrees with the consensus, else the second pass's
    (``second=None``: every first-pass wave agrees, see :func:`second_pass_needed`)."""
    for wave, ok in _agreement(first, hints, cfg).items():
        hint = hints[f"{wave}_peak"]
        for part in ("on", "peak", "off"):
            k = f"{wave}_{part}"
            kept = first[k] if second is None else np.where(ok, first[k], second[k])
            first[k] = np.where(np.isnan(hint), np.nan, kept)


def second_pass_needed(first: dict[str, np.ndarray], hints: dict[str, np.ndarray], cfg: DelineatorConfig) -> bool:
    """Whether some beat of this lead has a P or T wave the leads agree on that its first pass
    missed or placed elsewhere (otherwise :func:`merge_second_pass` would not use a second pass)."""
    return any((~ok & ~np.isnan(hints[f"{wave}_peak"])).any() for wave, ok in _agreement(first, hints, cfg).items())


def _agreement(first: dict[str, np.ndarray], hints: dict[str, np.ndarray], cfg: DelineatorConfig) -> dict[str, np.ndarray]:
    """``{"P"|"T": bool [beats]}``: the lead's first-pass peak lies near the leads' consensus."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {wave: np.abs(first[f"{wave}_peak"] - hints[f"{wave}_peak"]) <= ms(tol)
                for wave, tol in (("P", cfg.p_hint_ms), ("T", cfg.t_hint_ms))}


def atrial_consistency(per_lead: list[dict[str, np.ndarray]], g_on: np.ndarray, cfg: DelineatorConfig) -> None:
    """Drop P waves that do not lead their QRS by a steady PR interval (edits in place).

    Sinus P waves conduct with a nearly constant PR; what a P search finds in atrial
    fibrillation or flutter does not. When the spread (scaled median absolute deviation) of
    the PR interval over the beats exceeds ``cfg.pr_spread_ms``, no beat keeps a P wave.
    """
    p = nanmedian0(np.stack([d["P_peak"] for d in per_lead]))
    pr = g_on - p
    have = np.isfinite(pr)
    if have.sum() < 3:
        return
    med = np.median(pr[have])
    spread = 1.4826 * np.median(np.abs(pr[have] - med))
    if spread <= ms(cfg.pr_spread_ms):
        return
    for d in per_lead:
        for k in ("P_on", "P_peak", "P_off"):
            d[k][:] = np.nan


def fuse(per_lead: list[dict[str, np.ndarray]], g_on: np.ndarray, g_off: np.ndarray) -> dict[str, np.ndarray]:
    """Global fiducials per beat from the leads' ones: medians, with the multi-lead QRS bounds."""
    out = {k: nanmedian0(np.stack([d[k] for d in per_lead])) for k in KEYS}
    out["QRS_on"] = g_on.copy()
    out["QRS_off"] = g_off.copy()
    return out


def shrink(per_lead: list[dict[str, np.ndarray]], fused: dict[str, np.ndarray], cfg: DelineatorConfig) -> None:
    """Pull each lead's onsets and offsets towards the multi-lead ones (edits in place).

    A lead's own boundary is a noisy estimate of where the wave begins or ends in that lead
    (a slope threshold on one signal); the multi-lead boundary is far less noisy, and on LUDB
    the cardiologists' per-lead marks lie closer to it than to the lead's own estimate. The
    weighted mean ``fused + w * (lead - fused)`` keeps the part ``w`` of the lead's own shift.
    """
    weights = {"QRS": cfg.qrs_lead_weight, "P": cfg.p_lead_weight, "T": cfg.t_lead_weight}
    for d in per_lead:
        for wave, w in weights.items():
            for part in ("on", "off"):
                k = f"{wave}_{part}"
                d[k] = np.where(np.isnan(fused[k]), d[k], fused[k] + w * (d[k] - fused[k]))
