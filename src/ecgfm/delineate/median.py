"""``median_beat(ecg) -> MedianBeat``: each lead's representative beat and its delineation.

Twelve-lead interpretation programs measure a record on its representative complexes: per lead,
the sample-by-sample median of the beats of the dominant morphology, aligned on the QRS. Noise
and the odd ectopic beat fall out of the median, and the delineator runs once per lead instead
of once per beat and lead, which makes it the fast path of :func:`ecgfm.delineate.measure` (a
few milliseconds for a 10 s 12-lead record instead of ~100).

Steps: the record is conditioned and its beats found exactly as :func:`delineate` does; each
beat is aligned on the peak of the multi-lead slope envelope, then shifted by up to
``median_shift_ms`` to best match the first median's QRS; the dominant morphology is the beats
whose QRS correlates with the medoid beat (the beat most others resemble) by at least
``median_min_corr``; the median of those is delineated with the same wave finders, leads agreeing
on P and T waves as they do beat by beat. Without a P wave in most beats (atrial fibrillation)
the median's atrial activity averages out; a P wave is only kept where it stands out of the
beat-to-beat variation of its segment by ``median_p_snr``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgfm.delineate import _waves
from ecgfm.delineate._dsp import FS, smooth
from ecgfm.delineate._waves import KEYS, ms
from ecgfm.delineate.config import DelineatorConfig
from ecgfm.delineate.delineation import condition
from ecgfm.errors import ValidationError
from ecgfm.record import ECG


@dataclass(frozen=True, eq=False)
class MedianBeat:
    """A record's representative beat per lead, and where its waves begin, peak and end.

    Attributes:
        leads: the record's lead names, in its order.
        signal: float64 ``[leads, samples]`` at :data:`fs` (500 Hz), the median beat of each
            lead (band-limited 0.5-40 Hz, mV); NaN rows for skipped leads.
        r_index: the alignment point in ``signal`` (the QRS slope-envelope peak).
        waves: global fiducials, ``{key: float}`` in samples of ``signal`` (keys as
            :data:`ecgfm.delineate.KEYS`), NaN where absent; the QRS bounds are the multi-lead
            ones (earliest onset, latest offset), the others medians over the leads.
        per_lead: ``{lead: {key: float}}``, the same lead by lead (NaN for skipped leads).
        beats: int64 ``[beats]``, every beat found, as sample indices at the record's rate.
        used: bool ``[beats]``, the beats of the dominant morphology that make the median.
        rr_ms: median RR interval over all beats (NaN with one beat).
        skipped: ``{lead: reason}`` for leads that were not delineated.
        record: the record's name, for messages.
    """

    leads: tuple[str, ...]
    signal: np.ndarray
    r_index: int
    waves: dict[str, float]
    per_lead: dict[str, dict[str, float]]
    beats: np.ndarray
    used: np.ndarray
    rr_ms: float
    skipped: dict[str, str] = field(default_factory=dict)
    record: str = "record"
    fs: float = FS

    @property
    def n_beats(self) -> int:
        return int(self.beats.size)

    def interval_ms(self, start: str, end: str) -> float:
        """Milliseconds from global fiducial ``start`` to ``end`` (NaN where either is absent)."""
        return (self.waves[end] - self.waves[start]) * 1000.0 / self.fs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: fiducials in ms from the alignment point, NaN -> None."""

        def rel(v: float) -> float | None:
            return None if not math.isfinite(v) else round((v - self.r_index) * 1000.0 / self.fs, 1)

        return {
            "leads": list(self.leads), "n_beats": self.n_beats, "n_used": int(self.used.sum()),
            "rr_ms": None if not math.isfinite(self.rr_ms) else round(self.rr_ms, 1),
            "waves_ms": {k: rel(v) for k, v in self.waves.items()},
            "per_lead_ms": {lead: {k: rel(v) for k, v in d.items()} for lead, d in self.per_lead.items()},
            "skipped": dict(self.skipped),
        }


def median_beat(ecg: ECG, config: DelineatorConfig | None = None) -> MedianBeat:
    """The representative beat of each lead of ``ecg`` and its P, QRS and T fiducials.

    Args:
        ecg: any record, any rate (50 Hz - 20 kHz), one lead or many, at least 1 s long.
        config: the delineator's settings; the LUDB-tuned defaults when ``None``.

    Returns:
        A :class:`MedianBeat`; its fiducials are samples of ``MedianBeat.signal`` at 500 Hz.

    Raises:
        ValidationError: naming the record, as :func:`ecgfm.delineate.delineate` does (too
            short, no usable lead, no QRS complex standing out from noise), or when no beat
            lies far enough from the record's ends to make a median of.

    >>> mb = median_beat(ecgfm.read("../shared/data/ludb/data/2.hea"))  # doctest: +SKIP
    >>> mb.interval_ms("QRS_on", "QRS_off")  # QRS duration  # doctest: +SKIP
    78.0
    """
    cfg = config or DelineatorConfig()
    c = condition(ecg, cfg)
    x, valid, beats = c.x[c.rows], c.valid[c.rows], c.beats
    n = x.shape[1]
    rr = float(np.median(np.diff(beats))) if beats.size > 1 else float(ms(1000))
    pre = int(min(ms(cfg.median_pre_ms), 0.7 * rr))
    post = int(min(ms(cfg.median_post_ms), rr - ms(60)))
    post = max(post, ms(300))
    shift = ms(cfg.median_shift_ms)

    # Align every beat on the peak of the multi-lead slope envelope.
    dq = smooth(x, cfg.qrs_sigma_ms, 1)
    velocity = np.sqrt((dq**2 * valid).sum(axis=0) / np.maximum(valid.sum(axis=0), 1))
    half = ms(25)
    near = np.clip(beats[:, None] + np.arange(-half, half + 1), 0, n - 1)
    anchor = near[np.arange(beats.size), np.argmax(velocity[near], axis=1)]
    inside = (anchor - pre - shift >= 0) & (anchor + post + shift < n)
    if not inside.any():
        raise ValidationError(f"{ecg.name}: no beat lies far enough from the record's ends for a median beat")
    chosen = np.flatnonzero(inside)
    if chosen.size > cfg.median_max_beats:
        chosen = chosen[np.linspace(0, chosen.size - 1, cfg.median_max_beats).round().astype(np.int64)]
    anchor = anchor[chosen]

    # Windows with room for the alignment shift: [leads, beats, width + 2 shift].
    idx = anchor[:, None] + np.arange(-pre - shift, post + shift)
    wide = x[:, idx] if valid.all() else np.where(valid[:, idx], x[:, idx], np.nan)
    width = pre + post
    qrs = slice(shift + pre - ms(60), shift + pre + ms(60))
    first = _median(wide[:, :, qrs])  # the first median's QRS
    offsets = _best_shifts(wide, first, qrs, shift)
    aligned = np.stack([wide[:, b, o:o + width] for b, o in enumerate(offsets)], axis=1)
    core = aligned[:, :, pre - ms(60):pre + ms(100)]
    keep = _dominant(core, cfg.median_min_corr)
    template = _median(aligned[:, keep])

    leads = np.asarray(ecg.leads)[c.rows]
    skipped = dict(c.skipped)
    ok = np.isfinite(template).all(axis=1)
    for lead in leads[~ok]:
        skipped[str(lead)] = "masked"
    if not ok.any():
        raise ValidationError(f"{ecg.name}: every lead has gaps in every beat; no median beat can be formed")
    waves, per_lead_rows = _delineate_template(template[ok], pre, rr, cfg)
    _check_p(waves, per_lead_rows, aligned[ok][:, keep], template[ok], cfg)

    signal = np.full((len(ecg.leads), width), np.nan)
    signal[c.rows[ok]] = template[ok]
    nan = {k: math.nan for k in KEYS}
    per_lead = {lead: dict(nan) for lead in ecg.leads}
    for lead, d in zip(leads[ok], per_lead_rows):
        per_lead[str(lead)] = {k: float(d[k][0]) for k in KEYS}
    used = np.zeros(beats.size, bool)
    used[chosen[keep]] = True
    scale = ecg.fs / FS
    rr_ms = rr * 1000.0 / FS if beats.size > 1 else math.nan
    return MedianBeat(
        leads=ecg.leads, signal=signal, r_index=pre, waves={k: float(waves[k][0]) for k in KEYS},
        per_lead=per_lead, beats=np.minimum(np.round(beats * scale).astype(np.int64), ecg.n_samples - 1),
        used=used, rr_ms=rr_ms, skipped=skipped, record=ecg.name,
    )


def _median(beats: np.ndarray) -> np.ndarray:
    """Median over the beats (axis 1) ignoring NaN; the plain median, much faster, without any."""
    if np.isfinite(beats).all():
        return np.median(beats, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(beats, axis=1)


def _best_shifts(wide: np.ndarray, reference: np.ndarray, qrs: slice, shift: int) -> np.ndarray:
    """Per beat, where its window starts in ``wide`` (``0 .. 2 shift``; ``shift`` is no shift)
    so that its QRS best matches ``reference``'s (least squares over the leads), ``int64 [beats]``."""
    ref = np.nan_to_num(reference)
    errors = []
    for s in range(-shift, shift + 1):
        seg = wide[:, :, qrs.start + s:qrs.stop + s]
        errors.append(np.nansum((seg - ref[:, None, :]) ** 2, axis=(0, 2)))
    return np.argmin(np.stack(errors, axis=1), axis=1).astype(np.int64)


def _dominant(core: np.ndarray, min_corr: float) -> np.ndarray:
    """The beats of the dominant morphology, bool ``[beats]``: those whose QRS region
    ``core`` ``[leads, beats, samples]`` correlates with the medoid's by ``min_corr``."""
    nb = core.shape[1]
    flat = np.nan_to_num(np.transpose(core, (1, 0, 2)).reshape(nb, -1))
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1)
    corr = (flat @ flat.T) / np.maximum(np.outer(norm, norm), 1e-12)
    medoid = int(np.argmax((corr >= min_corr).sum(axis=1) + corr.mean(axis=1) * 1e-3))
    keep = corr[medoid] >= min_corr
    keep[medoid] = True
    return keep


def _delineate_template(template: np.ndarray, r: int, rr: float, cfg: DelineatorConfig) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Fiducials of one median beat ``[leads, samples]`` aligned at ``r``: global and per lead,
    each ``{key: float64 [1]}``, with the same passes as the beat-by-beat delineator."""
    beat = np.array([r], np.int64)
    views = _waves.lead_views(template, cfg)
    dq = np.stack([v.dq for v in views])
    velocity = np.sqrt((dq**2).mean(axis=0))
    g_on, g_off = _waves.global_qrs(velocity, beat, cfg)
    rr_arr = np.array([rr])
    per_lead = [_waves.delineate_lead(v, beat, g_on, g_off, rr_arr, cfg) for v in views]
    hints = {"P_peak": _waves.consensus(per_lead, "P_peak", cfg.p_consensus),
             "T_peak": _waves.consensus(per_lead, "T_peak", cfg.t_consensus)}
    for view, d in zip(views, per_lead):
        second = (_waves.delineate_lead(view, beat, g_on, g_off, rr_arr, cfg, hints)
                  if _waves.second_pass_needed(d, hints, cfg) else None)
        _waves.merge_second_pass(d, second, hints, cfg)
    fused = _waves.fuse(per_lead, g_on, g_off)
    _waves.shrink(per_lead, fused, cfg)
    return fused, per_lead


def _check_p(waves: dict[str, np.ndarray], per_lead: list[dict[str, np.ndarray]], beats: np.ndarray,
             template: np.ndarray, cfg: DelineatorConfig) -> None:
    """Drop the median's P wave unless it stands out of its segment's beat-to-beat variation
    (edits in place): the median of unrelated atrial waves (fibrillation) is a small bump that
    no single beat repeats. ``beats`` ``[leads, beats, samples]`` are the aligned beats."""
    on, off = waves["P_on"][0], waves["P_off"][0]
    if not (math.isfinite(on) and math.isfinite(off)) or off - on < 2 or beats.shape[1] < 3:
        return
    a, b = int(on), int(off) + 1
    seg = beats[:, :, a:b] - beats[:, :, a:a + 1]
    ref = template[:, a:b] - template[:, a:a + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wave = np.sqrt(np.nanmean(ref**2))
        spread = np.sqrt(np.nanmean((seg - ref[:, None, :]) ** 2))
    if not wave > cfg.median_p_snr * spread:
        for d in [waves, *per_lead]:
            for k in ("P_on", "P_peak", "P_off"):
                d[k][:] = np.nan
