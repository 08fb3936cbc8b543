"""Multi-lead QRS detection: one envelope from every usable lead, adaptive thresholds.

Each lead is band-passed to the QRS band and the magnitude of its derivative smoothed; each
lead's envelope is scaled by its own high percentile so that no lead dominates. A first pass
finds beats on the plain average over the observed leads; each lead is then weighted by its
signal-to-noise ratio (envelope at the beats over envelope between them) so that a noisy lead
cannot add beats, and a second pass detects on the weighted average. A beat is a peak of the
envelope that stands above the local noise level by a fraction of the local beat height (both
estimated in the surrounding seconds, so a record's amplitude may change), with a refractory
rule against tall T waves and a search back for beats missed in long gaps (Pan & Tompkins 1985
in spirit, on a multi-lead envelope).
"""

from __future__ import annotations

import bisect

import numpy as np

from ecgfm.delineate._dsp import FS, moving_average, zero_phase
from ecgfm.delineate.config import DelineatorConfig


def lead_envelopes(x: np.ndarray, valid: np.ndarray, band: tuple[float, float], window_ms: float) -> np.ndarray:
    """Per-lead QRS envelopes ``[leads, samples]``, each ~1 at its typical beat, 0 where unobserved.

    Args:
        x: float64 ``[leads, samples]`` at :data:`FS`, gaps filled.
        valid: bool ``[leads, samples]``, observed samples (gaps dilated).
        band: QRS pass band in Hz.
        window_ms: smoothing window.
    """
    bp = zero_phase(x, "bandpass", band, 2)
    env = moving_average(np.abs(np.gradient(bp, axis=-1)), int(round(window_ms * FS / 1000)))
    env[~valid] = 0.0
    if valid.all():
        scales = np.percentile(env, 99.0, axis=1)
    else:
        scales = np.array([np.percentile(e[v], 99.0) if v.any() else 0.0 for e, v in zip(env, valid)])
    env = env / np.where(scales > 0, scales, np.inf)[:, None]
    # Clip each lead so that one artefact cannot make a beat on its own.
    return np.minimum(env, 3.0)


def combine(env: np.ndarray, valid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of the lead envelopes over the leads observed at each sample."""
    w = weights[:, None] * valid
    return (env * w).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)


def lead_snr(env: np.ndarray, valid: np.ndarray, beats: np.ndarray, guard: int) -> np.ndarray:
    """Per lead, median envelope at the beats over median envelope away from them (``[leads]``)."""
    n = env.shape[1]
    near = np.zeros(n, bool)
    for b in beats:
        near[max(0, b - guard):b + guard + 1] = True
    if valid.all() and beats.size and not near.all():
        return np.median(env[:, beats], axis=1) / np.maximum(np.median(env[:, ~near], axis=1), 1e-6)
    out = np.zeros(env.shape[0])
    for i in range(env.shape[0]):
        at = env[i, beats][valid[i, beats]]
        away = env[i][~near & valid[i]]
        if at.size and away.size:
            out[i] = np.median(at) / max(np.median(away), 1e-6)
    return out


def detect_beats(
    envelope: np.ndarray,
    *,
    threshold: float,
    refractory_ms: float,
    t_wave_ms: float,
    searchback: float,
    context_s: float = 4.0,
) -> np.ndarray:
    """Beat positions (int64 sample indices at :data:`FS`) from a QRS envelope ``[samples]``.

    Args:
        envelope: ``[samples]`` from :func:`combine`.
        threshold: a peak is a beat when it exceeds the local noise level by this fraction of
            the distance between the local beat height and noise level.
        refractory_ms: no two beats closer than this.
        t_wave_ms: a peak this close after a beat must be at least half its height (else it is
            taken for a T wave).
        searchback: a gap longer than this many median RR intervals is searched again at half
            the threshold.
        context_s: half-width of the window over which the local levels are estimated.
    """
    from scipy.signal import find_peaks

    n = envelope.size
    refractory = max(1, int(refractory_ms * FS / 1000))
    cand, _ = find_peaks(envelope, distance=refractory)
    if cand.size == 0:
        return cand.astype(np.int64)
    heights = envelope[cand]
    half = int(context_s * FS)
    lo = np.searchsorted(cand, cand - half)
    hi = np.searchsorted(cand, cand + half, side="right")
    level = np.empty(cand.size)
    noise = np.empty(cand.size)
    hl = heights.tolist()
    for i in range(cand.size):
        # Python lists: a few dozen peaks per window, where numpy's call overhead dominates.
        h = sorted(hl[lo[i]:hi[i]])
        span_s = (min(n, cand[i] + half) - max(0, cand[i] - half)) / FS
        # Beats in the window: at least one per 2 s (the slowest rhythm we expect to resolve).
        k = int(min(len(h), max(1, round(span_s / 2.0))))
        level[i] = _sorted_median(h[len(h) - k:])
        # Noise: the typical peak that would not pass as a beat even on the plain threshold.
        low = h[:bisect.bisect_left(h, threshold * level[i])]
        noise[i] = _sorted_median(low) if low else 0.0
    limit = noise + threshold * (level - noise)
    accept = heights > limit
    beats: list[int] = []
    t_gap = int(t_wave_ms * FS / 1000)
    first = cand[accept]
    if first.size >= 3:
        # The T-wave rule only applies to peaks premature for the rhythm (flutter at 150/min
        # has every beat within 360 ms of the last).
        t_gap = int(min(t_gap, 0.7 * np.median(np.diff(first))))
    for i in np.flatnonzero(accept):
        c = int(cand[i])
        if beats and c - beats[-1] < t_gap and heights[i] < 0.5 * envelope[beats[-1]]:
            continue
        beats.append(c)
    out = np.asarray(beats, dtype=np.int64)
    if out.size >= 3 and searchback > 0:
        rr = np.median(np.diff(out))
        added = []
        for a, b in zip(out[:-1], out[1:]):
            if b - a <= searchback * rr:
                continue
            inside = np.flatnonzero((cand > a + t_gap) & (cand < b - refractory))
            if inside.size == 0:
                continue
            j = inside[np.argmax(heights[inside])]
            if heights[j] > noise[j] + 0.5 * threshold * (level[j] - noise[j]):
                added.append(int(cand[j]))
        if added:
            out = np.unique(np.concatenate([out, np.asarray(added, np.int64)]))
    return out


def _sorted_median(h: list[float]) -> float:
    """Median of an ascending list (the mean of the two middle values for an even length)."""
    m = len(h)
    return 0.5 * (h[(m - 1) // 2] + h[m // 2])


def find_beats(x: np.ndarray, valid: np.ndarray, cfg: DelineatorConfig) -> tuple[np.ndarray, float]:
    """Beats (int64 sample indices at :data:`FS`) in the usable leads ``x`` ``[leads, samples]``,
    and how far they stand out: the envelope's median at the beats over its median overall
    (above 3 in real ECGs, even noisy ones; about 1.5 in noise)."""
    env = lead_envelopes(x, valid, cfg.qrs_band_hz, cfg.envelope_ms)
    kwargs = dict(threshold=cfg.beat_threshold, refractory_ms=cfg.refractory_ms,
                  t_wave_ms=cfg.t_wave_ms, searchback=cfg.searchback)
    combined = combine(env, valid, np.ones(env.shape[0]))
    beats = detect_beats(combined, **kwargs)
    if env.shape[0] > 1 and beats.size >= 3:
        snr = lead_snr(env, valid, beats, int(0.15 * FS))
        weights = np.clip(snr - 1.0, 0.0, None) ** 2
        if weights.sum() > 0:
            combined = combine(env, valid, weights)
            beats = detect_beats(combined, **kwargs)
    if beats.size == 0:
        return beats, 0.0
    return beats, float(np.median(combined[beats]) / max(float(np.median(combined)), 1e-12))
