"""The delineator's settings: one frozen dataclass, one comment per field.

The defaults were tuned on the odd-numbered LUDB records only (see ``docs/delineation.md``);
the even-numbered records are the held-out test set of ``benchmarks/bench_delineation_ludb.py``.
Times are in milliseconds, fractions are of the named reference amplitude or slope.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DelineatorConfig:
    """Settings of :func:`ecgfm.delineate.delineate`. Every record is processed at 500 Hz."""

    # -- conditioning --------------------------------------------------------------------
    highpass_hz: float = 0.5  # baseline-wander removal (zero-phase Butterworth, order 2)
    lowpass_hz: float = 40.0  # removes mains and muscle noise (zero-phase Butterworth, order 4)
    min_lead_amplitude_mv: float = 0.05  # a lead whose 99.5th-percentile |signal| is below this is flat
    min_observed: float = 0.5  # a lead with fewer observed samples than this fraction is skipped
    gap_margin_ms: float = 60.0  # fiducials this close to an unobserved sample are dropped

    # -- beat detection ------------------------------------------------------------------
    qrs_band_hz: tuple[float, float] = (5.0, 25.0)  # pass band of the QRS envelope
    envelope_ms: float = 80.0  # smoothing window of the QRS envelope
    beat_threshold: float = 0.3  # a beat stands above the local noise by this part of the way to the beat height
    refractory_ms: float = 200.0  # minimum distance between two beats
    t_wave_ms: float = 360.0  # a premature peak this soon after a beat must be half its height
    searchback: float = 1.66  # gaps longer than this many median RR are searched again
    min_beat_snr: float = 1.8  # envelope at the beats over its median; below: noise, not an ECG

    # -- QRS boundaries ------------------------------------------------------------------
    qrs_sigma_ms: float = 4.0  # scale of the derivative-of-Gaussian that finds QRS slopes
    qrs_significant: float = 0.12  # a slope counts as part of the QRS above this fraction of the largest
    qrs_gap_ms: float = 30.0  # ... and while the gaps between such slopes stay below this
    global_on_frac: float = 0.06  # multi-lead onset: slope envelope falls below this fraction
    global_off_frac: float = 0.08  # multi-lead offset: same, after the QRS
    qrs_max_half_ms: float = 140.0  # furthest a QRS boundary may lie from the beat
    qrs_on_frac: float = 0.10  # lead onset: |slope| below this fraction of its first maximum
    qrs_off_frac: float = 0.15  # lead offset: |slope| below this fraction of its last maximum
    qrs_margin_ms: float = 30.0  # a lead's QRS is sought this far outside the multi-lead bounds

    # -- T wave --------------------------------------------------------------------------
    t_sigma_ms: float = 16.0  # scale of the T-wave derivative
    t_smooth_ms: float = 8.0  # smoothing of the signal whose amplitude qualifies a T wave
    t_start_ms: float = 40.0  # the T peak is sought from this long after the QRS offset
    t_window_rr: float = 0.6  # ... to this fraction of the RR interval after the beat
    t_window_max_ms: float = 600.0  # ... and at most this long after it
    t_reach_ms: float = 150.0  # a T peak's slopes are sought this far on either side
    t_off_reach_ms: float = 250.0  # the T offset is sought this far past the T peak window
    t_on_frac: float = 0.30  # T onset: |slope| below this fraction of the upslope maximum
    t_off_frac: float = 0.35  # T offset: |slope| below this fraction of the downslope maximum
    t_min_mv: float = 0.03  # a T wave smaller than this is not delineated in that lead

    # -- P wave --------------------------------------------------------------------------
    p_sigma_ms: float = 10.0  # scale of the P-wave derivative
    p_smooth_ms: float = 6.0  # smoothing of the signal whose amplitude qualifies a P wave
    p_window_ms: float = 300.0  # the P peak is sought this far before the QRS onset
    p_gap_ms: float = 40.0  # ... and at least this long before it
    p_reach_ms: float = 80.0  # a P peak's slopes are sought this far on either side
    p_context_gap_ms: float = 15.0  # ... but not within this long of the QRS onset
    p_on_frac: float = 0.30  # P onset: |slope| below this fraction of the upslope maximum
    p_off_frac: float = 0.55  # P offset: |slope| below this fraction of the downslope maximum
    p_min_mv: float = 0.025  # a P wave smaller than this is not delineated in that lead

    # -- multi-lead consensus ---------------------------------------------------------------
    p_consensus: float = 0.4  # fraction of usable leads that must agree on a beat's P wave
    t_consensus: float = 0.3  # fraction of usable leads that must agree on a beat's T wave
    p_hint_ms: float = 40.0  # second pass: P peak sought this close to the leads' consensus
    t_hint_ms: float = 80.0  # second pass: T peak sought this close to the leads' consensus
    hint_min_mv: float = 0.01  # second pass: amplitude threshold of a P/T wave
    pr_spread_ms: float = 15.0  # no P waves when the PR interval varies more than this (scaled MAD)
    qrs_lead_weight: float = 0.25  # weight of a lead's own QRS on/offset against the multi-lead one
    p_lead_weight: float = 0.75  # same for the P on/offset
    t_lead_weight: float = 0.75  # same for the T on/offset

    # -- median beat (``median_beat``, the fast path of ``measure``) -----------------------
    median_pre_ms: float = 450.0  # the median beat starts this long before the QRS (at most 0.7 RR)
    median_post_ms: float = 900.0  # ... and ends this long after it (at most RR - 60 ms)
    median_shift_ms: float = 8.0  # each beat may shift this far to match the median's QRS
    median_min_corr: float = 0.8  # a beat joins the dominant morphology above this QRS correlation
    median_max_beats: int = 120  # longer records: this many beats, evenly spaced
    median_p_snr: float = 1.0  # a median P wave must exceed its segment's beat-to-beat spread (RMS) this much
