"""``delineate(ecg) -> Delineation``: P, QRS and T onset, peak and offset per lead and per beat."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgfm.delineate import _beats, _dsp, _waves
from ecgfm.delineate._dsp import FS
from ecgfm.delineate._waves import KEYS, ms
from ecgfm.delineate.config import DelineatorConfig
from ecgfm.errors import ValidationError
from ecgfm.record import ECG

MIN_DURATION_S = 1.0  # shorter records cannot hold a beat with its P and T waves


@dataclass(frozen=True, eq=False)
class Delineation:
    """Where the waves of every beat begin, peak and end.

    Attributes:
        fs: sampling rate (Hz) of the record the indices refer to.
        leads: the record's lead names, in its order.
        r_peaks: int64 ``[beats]``, sample index of each beat's R peak (the median over the
            leads of the largest positive QRS deflection, or the multi-lead QRS energy peak
            where no lead has one).
        waves: global fiducials, ``{key: float64 [beats]}`` aligned with ``r_peaks``; keys
            ``P_on P_peak P_off QRS_on QRS_peak QRS_off T_on T_peak T_off``; sample indices at
            ``fs`` (fractional where the record's rate is not the delineator's 500 Hz), NaN where
            the wave is absent or could not be placed. ``QRS_on``/``QRS_off`` are the multi-lead
            boundaries (earliest onset, latest offset on the slope envelope of all leads); the
            others are medians over the leads.
        per_lead: ``{lead: {key: float64 [beats]}}``, the same keys lead by lead; every lead of
            the record is present, all NaN where the lead was skipped.
        skipped: ``{lead: reason}`` for leads that were not delineated (``"flat"``, ``"masked"``).
        record: the record's name, for messages.
    """

    fs: float
    leads: tuple[str, ...]
    r_peaks: np.ndarray
    waves: dict[str, np.ndarray]
    per_lead: dict[str, dict[str, np.ndarray]]
    skipped: dict[str, str] = field(default_factory=dict)
    record: str = "record"

    @property
    def n_beats(self) -> int:
        return int(self.r_peaks.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; every time is in milliseconds from the record's start, NaN -> None."""

        def ms_list(a: np.ndarray) -> list[float | None]:
            return [None if not math.isfinite(v) else round(float(v) * 1000.0 / self.fs, 1) for v in a]

        return {
            "fs": self.fs,
            "leads": list(self.leads),
            "n_beats": self.n_beats,
            "r_peaks_ms": ms_list(self.r_peaks.astype(np.float64)),
            "waves_ms": {k: ms_list(v) for k, v in self.waves.items()},
            "per_lead_ms": {lead: {k: ms_list(v) for k, v in d.items()} for lead, d in self.per_lead.items()},
            "skipped": dict(self.skipped),
        }


def delineate(ecg: ECG, config: DelineatorConfig | None = None) -> Delineation:
    """Delineate P, QRS and T waves in every lead of ``ecg`` and across leads.

    The record is resampled to 500 Hz, baseline-corrected and low-passed; beats are found on a
    multi-lead QRS energy envelope, the QRS is bounded on the multi-lead slope envelope, and
    each lead's waves are placed with derivative-of-Gaussian filters at the wave's scale.
    Unobserved samples (``ecg.mask``) are bridged for filtering and no fiducial is placed near
    them; flat or mostly unobserved leads are skipped (listed in ``Delineation.skipped``).

    Args:
        ecg: any record, any rate (50 Hz - 20 kHz), one lead or many.
        config: the delineator's settings; the LUDB-tuned defaults when ``None``.

    Returns:
        A :class:`Delineation` whose indices are samples at ``ecg.fs``.

    Raises:
        ValidationError: naming the record, when it is shorter than 1 s, when no lead carries a
            signal (all flat or mostly unobserved), or when no QRS complex stands out from noise.

    >>> d = delineate(ecgfm.read("../shared/data/ludb/data/2.hea"))  # doctest: +SKIP
    >>> d.waves["QRS_on"][:3] / d.fs * 1000  # QRS onsets in ms  # doctest: +SKIP
    array([ 208., 1102., 1994.])
    """
    cfg = config or DelineatorConfig()
    name = ecg.name
    c = condition(ecg, cfg)
    x, valid, rows, beats, skipped = c.x, c.valid, c.rows, c.beats, c.skipped

    views = _waves.lead_views(x[rows], cfg)
    dq = np.stack([v.dq for v in views]) * valid[rows]
    velocity = np.sqrt((dq**2).sum(axis=0) / np.maximum(valid[rows].sum(axis=0), 1))
    g_on, g_off = _waves.global_qrs(velocity, beats, cfg)
    rr = _rr_per_beat(beats)

    def observed_only(d: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
        ok = valid[row]
        for v in d.values():
            idx = np.clip(np.where(np.isnan(v), 0, v).astype(np.int64), 0, ok.size - 1)
            v[~ok[idx]] = np.nan
        return d

    per_lead_fs = [observed_only(_waves.delineate_lead(v, beats, g_on, g_off, rr, cfg), row) for row, v in zip(rows, views)]
    # P and T waves: kept where enough leads agree, searched again where a lead missed them.
    hints = {"P_peak": _waves.consensus(per_lead_fs, "P_peak", cfg.p_consensus),
             "T_peak": _waves.consensus(per_lead_fs, "T_peak", cfg.t_consensus)}
    for row, view, d in zip(rows, views, per_lead_fs):
        second = (observed_only(_waves.delineate_lead(view, beats, g_on, g_off, rr, cfg, hints), row)
                  if _waves.second_pass_needed(d, hints, cfg) else None)
        _waves.merge_second_pass(d, second, hints, cfg)
    _waves.atrial_consistency(per_lead_fs, g_on, cfg)
    fused = _waves.fuse(per_lead_fs, g_on, g_off)
    _waves.shrink(per_lead_fs, fused, cfg)

    scale = ecg.fs / FS
    r_fs = np.where(np.isnan(fused["QRS_peak"]), beats, fused["QRS_peak"])
    r_peaks = np.minimum(np.round(r_fs * scale).astype(np.int64), ecg.n_samples - 1)
    waves = {k: fused[k] * scale for k in KEYS}
    nan = np.full(beats.size, np.nan)
    per_lead = {lead: {k: nan.copy() for k in KEYS} for lead in ecg.leads}
    for row, d in zip(rows, per_lead_fs):
        per_lead[ecg.leads[row]] = {k: d[k] * scale for k in KEYS}
    return Delineation(ecg.fs, ecg.leads, r_peaks, waves, per_lead, skipped, name)


@dataclass(frozen=True, eq=False)
class Conditioned:
    """A record ready for delineation: at :data:`FS`, filtered, its usable leads and beats.

    Attributes:
        x: float64 ``[leads, samples]`` at :data:`FS`, gaps bridged, band-limited (mV).
        valid: bool ``[leads, samples]``, observed samples away from any gap.
        rows: int64 ``[usable]``, the leads of ``x`` that can be delineated.
        beats: int64 ``[beats]``, beat positions at :data:`FS` (QRS envelope peaks).
        skipped: ``{lead: reason}`` for the others.
    """

    x: np.ndarray
    valid: np.ndarray
    rows: np.ndarray
    beats: np.ndarray
    skipped: dict[str, str]


def condition(ecg: ECG, cfg: DelineatorConfig) -> Conditioned:
    """Resample ``ecg`` to :data:`FS`, filter it, choose its usable leads and find its beats.

    Raises:
        ValidationError: naming the record, when it is shorter than 1 s, when no lead carries a
            signal, or when no QRS complex stands out from noise.
    """
    name = ecg.name
    if ecg.duration < MIN_DURATION_S:
        raise ValidationError(
            f"{name}: {ecg.duration:.2f} s is too short to delineate (needs at least {MIN_DURATION_S:g} s)"
        )
    observed = np.ones(ecg.signal.shape, bool) if ecg.mask is None else ecg.mask
    x = _dsp.resample(_dsp.fill_gaps(ecg.signal, observed), ecg.fs, FS)
    valid = _dsp.resample_mask(observed, ecg.fs, FS, x.shape[1])
    x = _dsp.zero_phase(x, "highpass", (cfg.highpass_hz,), 2)
    x = _dsp.zero_phase(x, "lowpass", (cfg.lowpass_hz,), 4)

    skipped: dict[str, str] = {}
    usable = np.zeros(len(ecg.leads), bool)
    if valid.all():
        amplitude = np.percentile(np.abs(x), 99.5, axis=1)
    else:
        amplitude = np.array([np.percentile(np.abs(r[v]), 99.5) if v.any() else 0.0 for r, v in zip(x, valid)])
    for i, lead in enumerate(ecg.leads):
        if valid[i].mean() < cfg.min_observed:
            skipped[lead] = "masked"
        elif amplitude[i] < cfg.min_lead_amplitude_mv:
            skipped[lead] = "flat"
        else:
            usable[i] = True
    if not usable.any():
        reasons = ", ".join(f"{lead} {why}" for lead, why in skipped.items())
        raise ValidationError(f"{name}: no lead can be delineated ({reasons})")
    valid = ~_dsp.dilate(~valid, ms(cfg.gap_margin_ms))

    rows = np.flatnonzero(usable)
    beats, snr = _beats.find_beats(x[rows], valid[rows], cfg)
    if beats.size == 0 or snr < cfg.min_beat_snr:
        raise ValidationError(
            f"{name}: no QRS complex stands out from noise in leads {', '.join(np.asarray(ecg.leads)[usable])} "
            f"(QRS envelope at the candidate beats {snr:.1f} times its median, needs {cfg.min_beat_snr:g})"
        )
    return Conditioned(x, valid, rows, beats, skipped)


def _rr_per_beat(beats: np.ndarray) -> np.ndarray:
    """The RR interval (samples at FS) following each beat; the previous or median one at the end."""
    if beats.size < 2:
        return np.full(beats.size, float(ms(1000)))
    d = np.diff(beats).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.append(d, np.median(d))
