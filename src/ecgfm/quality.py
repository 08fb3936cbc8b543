"""Signal-quality checks: what is wrong with a record before a model sees it.

:func:`check_quality` returns a :class:`QualityReport` of :class:`QualityFlag` s, one per problem
found, each naming the lead (or ``None`` for the whole record), a readable reason and the measured
value that crossed its threshold. Thresholds live in :class:`QualityConfig`; which codes make a
record unusable (``report.ok is False``) is part of that config.

>>> import numpy as np
>>> from ecgfm import ECG
>>> report = check_quality(ECG(np.zeros((1, 1500)), fs=500, leads=("II",)))
>>> sorted(flag.code for flag in report.flags)
['flat_lead', 'too_short']
>>> report.ok
False

Checks, by code (all in mV unless said otherwise):

- ``too_short``: duration below ``min_seconds``.
- ``gaps``: masked (unobserved) samples in a lead; value is the masked fraction.
- ``flat_lead``: standard deviation below ``flat_std_mv``, or a constant run of at least
  ``flat_run_s`` seconds that is not at the lead's extreme (value: std or run length).
- ``clipping``: plateaus at the lead's maximum or minimum, the signature of an amplifier or ADC
  at its rail (value: fraction of samples on such plateaus).
- ``high_frequency_noise``: share of the power above ``noise_cutoff_hz`` (muscle noise, mains).
- ``mains_interference``: a 50/60 Hz line standing out of the spectrum with a visible amplitude.
- ``baseline_wander``: peak-to-peak excursion of the below-``wander_cutoff_hz`` component.
- ``amplitude_too_high`` / ``amplitude_too_low``: median peak-to-peak over leads beyond
  ``amplitude_max_mv`` / below ``amplitude_min_mv``: almost always a unit error (µV read as mV,
  V read as mV).
- ``limb_lead_reversal``: lead I inverted relative to V6 and aVR behaving like aVL, the sign of
  swapped arm electrodes (without V5/V6: QRS negative in I and positive in aVR).
- ``limb_leads_inconsistent``: recorded III/aVR/aVL/aVF contradict I and II (Einthoven,
  Goldberger: a flipped sign, or not a combination of them at all): a lead inverted, mislabelled
  or from another recording. When inverting I (or II) explains every contradiction, that lead
  alone is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgfm.leads import derive_limb_leads
from ecgfm.record import ECG

TOO_SHORT = "too_short"
GAPS = "gaps"
FLAT_LEAD = "flat_lead"
CLIPPING = "clipping"
HIGH_FREQUENCY_NOISE = "high_frequency_noise"
MAINS_INTERFERENCE = "mains_interference"
BASELINE_WANDER = "baseline_wander"
AMPLITUDE_TOO_HIGH = "amplitude_too_high"
AMPLITUDE_TOO_LOW = "amplitude_too_low"
LIMB_LEAD_REVERSAL = "limb_lead_reversal"
LIMB_LEADS_INCONSISTENT = "limb_leads_inconsistent"
CODES: tuple[str, ...] = (
    TOO_SHORT, GAPS, FLAT_LEAD, CLIPPING, HIGH_FREQUENCY_NOISE, MAINS_INTERFERENCE,
    BASELINE_WANDER, AMPLITUDE_TOO_HIGH, AMPLITUDE_TOO_LOW, LIMB_LEAD_REVERSAL,
    LIMB_LEADS_INCONSISTENT,
)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of :func:`check_quality`. Defaults were set on real 12-lead records
    (PTB-XL, LUDB, CinC 2021) so that clean records raise no flag."""

    min_seconds: float = 5.0  # records shorter than this are "too_short"
    flat_std_mv: float = 0.01  # a lead whose standard deviation is below this is flat
    flat_run_s: float = 1.0  # a constant run this long (not at an extreme) makes a lead flat
    clip_tolerance: float = 0.001  # a sample within this fraction of peak-to-peak of an extreme is "at" it
    clip_run_s: float = 0.01  # the shortest plateau at an extreme that counts as saturation
    clip_min_runs: int = 3  # this many plateaus at the extremes flag clipping ...
    clip_long_run_s: float = 0.3  # ... as does a single plateau at least this long
    noise_cutoff_hz: float = 40.0  # power above this frequency counts as noise
    noise_max_ratio: float = 0.25  # max share of (above 0.5 Hz) power above noise_cutoff_hz
    mains_min_ratio: float = 5.0  # a 50/60 Hz line this many times its neighbourhood ...
    mains_min_mv: float = 0.02  # ... and at least this amplitude (mV) is mains interference
    wander_cutoff_hz: float = 0.5  # below this frequency is baseline, not ECG
    wander_max_mv: float = 2.5  # max peak-to-peak excursion of the baseline, in mV
    amplitude_max_mv: float = 20.0  # median lead peak-to-peak above this: likely µV read as mV
    amplitude_min_mv: float = 0.05  # median lead peak-to-peak below this: likely V read as mV
    reversal_min_score: float = 0.6  # corr(aVR, V6) - corr(I, V6) at which arms look swapped
    reversal_min_polarity: float = 0.4  # without V5/V6: |QRS polarity| (-1..1) in both I and aVR
    inconsistency_max_residual: float = 0.5  # share of III..aVF's rms that I and II may not explain
    # codes that make a record unusable (report.ok False); the others are warnings
    blocking: frozenset[str] = field(
        default_factory=lambda: frozenset({TOO_SHORT, FLAT_LEAD, AMPLITUDE_TOO_HIGH, AMPLITUDE_TOO_LOW})
    )


@dataclass(frozen=True)
class QualityFlag:
    """One problem found in a record."""

    code: str  # one of CODES, e.g. "flat_lead"
    lead: str | None  # the lead concerned, or None for the whole record
    reason: str  # a sentence for people, with the measured value and its threshold
    value: float  # the measured value that crossed the threshold (unit in the reason)
    blocking: bool = False  # whether the flag makes the record unusable (per QualityConfig)

    def to_dict(self) -> dict[str, Any]:
        value = self.value if math.isfinite(self.value) else None
        return {"code": self.code, "lead": self.lead, "reason": self.reason, "value": value,
                "blocking": self.blocking}


@dataclass(frozen=True)
class QualityReport:
    """The flags raised for one record; ``ok`` when none of them is blocking."""

    record: str  # the record's name (source path or id)
    flags: tuple[QualityFlag, ...] = ()  # in check order: record-level first, then per lead

    @property
    def ok(self) -> bool:
        return not any(flag.blocking for flag in self.flags)

    @property
    def codes(self) -> set[str]:
        """The distinct codes raised."""
        return {flag.code for flag in self.flags}

    def by_code(self, code: str) -> list[QualityFlag]:
        return [flag for flag in self.flags if flag.code == code]

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "ok": self.ok, "flags": [f.to_dict() for f in self.flags]}


def check_quality(ecg: ECG, config: QualityConfig | None = None) -> QualityReport:
    """Run every check on ``ecg`` (signal in mV) and report what is wrong.

    Args:
        ecg: the record, in mV as every reader returns it (not normalised).
        config: thresholds; :class:`QualityConfig` defaults when ``None``.

    Returns:
        A :class:`QualityReport`; ``report.ok`` is False when a blocking flag was raised.
    """
    cfg = config or QualityConfig()
    flags: list[QualityFlag] = []

    def flag(code: str, lead: str | None, reason: str, value: float) -> None:
        flags.append(QualityFlag(code, lead, reason, float(value), code in cfg.blocking))

    if ecg.duration < cfg.min_seconds:
        flag(TOO_SHORT, None, f"{ecg.duration:.2f} s is shorter than {cfg.min_seconds:g} s",
             ecg.duration)

    mask = ecg.mask if ecg.mask is not None else np.ones(ecg.signal.shape, bool)
    observed = mask.any(axis=1)
    for i, lead in enumerate(ecg.leads):
        missing = 1.0 - float(mask[i].mean())
        if missing == 1.0:
            flag(GAPS, lead, "lead not recorded (every sample masked)", 1.0)
        elif missing > 0:
            flag(GAPS, lead, f"{missing:.1%} of samples missing (masked)", missing)

    x = ecg.signal.astype(np.float64)
    if mask.all():
        low, high = np.percentile(x, [0.1, 99.9], axis=1)
        ptp = high - low
    else:
        ptp = np.array([_robust_ptp(x[i][mask[i]]) if observed[i] else 0.0 for i in range(ecg.n_leads)])
    live = observed & (ptp > 0)
    unit_problem = False
    if live.any():
        median_ptp = float(np.median(ptp[live]))
        if median_ptp > cfg.amplitude_max_mv:
            unit_problem = True
            flag(AMPLITUDE_TOO_HIGH, None,
                 f"median peak-to-peak {median_ptp:.3g} mV exceeds {cfg.amplitude_max_mv:g} mV "
                 "(likely µV read as mV)", median_ptp)
        elif median_ptp < cfg.amplitude_min_mv:
            unit_problem = True
            flag(AMPLITUDE_TOO_LOW, None,
                 f"median peak-to-peak {median_ptp:.3g} mV is below {cfg.amplitude_min_mv:g} mV "
                 "(likely V read as mV)", median_ptp)

    flat = np.zeros(ecg.n_leads, bool)
    for i, lead in enumerate(ecg.leads):
        if not observed[i]:
            continue
        xi = x[i][mask[i]]
        std = float(xi.std())
        # A record in the wrong unit is uniformly tiny; its leads are not flat, its unit is off.
        if std < cfg.flat_std_mv and not (unit_problem and ptp[i] > 0):
            flat[i] = True
            flag(FLAT_LEAD, lead, f"standard deviation {std:.3g} mV is below {cfg.flat_std_mv:g} mV", std)
            continue
        clip_fraction = _clipping(xi, ecg.fs, cfg)
        if clip_fraction is not None:
            flag(CLIPPING, lead,
                 f"{clip_fraction:.1%} of samples sit on plateaus at the lead's extremes "
                 "(saturated amplifier or ADC)", clip_fraction)
        run_s = _longest_inner_constant_run(xi, cfg) / ecg.fs
        if run_s >= cfg.flat_run_s:
            flat[i] = True
            flag(FLAT_LEAD, lead, f"constant for {run_s:.2f} s (at least {cfg.flat_run_s:g} s)", run_s)

    # Thresholds in mV (wander, mains amplitude) mean nothing in the wrong unit.
    _spectral_checks(ecg, x, mask, observed & ~flat, cfg, flag, absolute=not unit_problem)
    _limb_lead_checks(ecg, x, mask, cfg, flag)
    return QualityReport(ecg.name, tuple(flags))


# -- helpers ------------------------------------------------------------------------------------


def _robust_ptp(x: np.ndarray) -> float:
    """Peak-to-peak between the 0.1st and 99.9th percentiles: one spike does not count."""
    if x.size == 0:
        return 0.0
    low, high = np.percentile(x, [0.1, 99.9])
    return float(high - low)


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return starts, ends - starts


def _clipping(x: np.ndarray, fs: float, cfg: QualityConfig) -> float | None:
    """Fraction of samples on plateaus at the extremes if they look like saturation, else None.

    A rail flattens the top (or bottom) of many beats at exactly the same level, or holds the
    signal there for long. A natural maximum is a peak, or at most one slow, rounded plateau.
    """
    top, bottom = float(x.max()), float(x.min())
    tol = max(cfg.clip_tolerance * (top - bottom), 1e-9)
    min_run = max(2, round(cfg.clip_run_s * fs))
    plateaus: list[int] = []
    for at_extreme in (x >= top - tol, x <= bottom + tol):
        _, lengths = _runs(at_extreme)
        plateaus.extend(int(n) for n in lengths if n >= min_run)
    if len(plateaus) >= cfg.clip_min_runs or (plateaus and max(plateaus) >= cfg.clip_long_run_s * fs):
        return sum(plateaus) / x.size
    return None


def _longest_inner_constant_run(x: np.ndarray, cfg: QualityConfig) -> int:
    """Longest run of exactly repeated samples whose level is not one of the lead's extremes
    (a run at an extreme is the clipping check's business)."""
    if x.size < 2:
        return x.size
    same = np.diff(x) == 0
    starts, lengths = _runs(same)
    if lengths.size == 0:
        return 1
    top, bottom = float(x.max()), float(x.min())
    tol = max(cfg.clip_tolerance * (top - bottom), 1e-9)
    levels = x[starts]
    inner = (levels < top - tol) & (levels > bottom + tol)
    # A run of k equal differences is k + 1 equal samples.
    return int(lengths[inner].max()) + 1 if inner.any() else 1


def _spectral_checks(ecg: ECG, x: np.ndarray, mask: np.ndarray, usable: np.ndarray,
                     cfg: QualityConfig, flag: Any, *, absolute: bool) -> None:
    """High-frequency noise, mains interference and baseline wander, on leads worth measuring.

    ``absolute=False`` (the record's unit is in doubt) keeps only the relative noise check."""
    from scipy import signal as sps

    from ecgfm.preprocess._filters import design_sos, fill_gaps, filtfilt, mains_ratios

    rows = np.flatnonzero(usable)
    # A few seconds are needed to tell baseline (< 0.5 Hz) from ECG at all.
    if rows.size == 0 or ecg.duration < 2 / cfg.wander_cutoff_hz:
        return
    filled = fill_gaps(x[rows], mask[rows])
    filled -= filled.mean(axis=-1, keepdims=True)
    leads = [ecg.leads[i] for i in rows]
    fs = ecg.fs

    if cfg.noise_cutoff_hz < fs / 2 * 0.9:
        nperseg = int(min(filled.shape[-1], round(fs * 2)))  # 0.5 Hz bins
        freqs, power = sps.welch(filled, fs=fs, nperseg=nperseg, axis=-1)
        band = freqs >= cfg.wander_cutoff_hz
        total = power[:, band].sum(axis=-1)
        high = power[:, freqs >= cfg.noise_cutoff_hz].sum(axis=-1)
        for lead, hi, tot in zip(leads, high, total):
            ratio = float(hi / tot) if tot > 0 else 0.0
            if ratio > cfg.noise_max_ratio:
                flag(HIGH_FREQUENCY_NOISE, lead,
                     f"{ratio:.0%} of the power lies above {cfg.noise_cutoff_hz:g} Hz "
                     f"(at most {cfg.noise_max_ratio:.0%})", ratio)

    if not absolute:
        return
    ratios = mains_ratios(filled, fs)
    if ratios:
        f0 = max(ratios, key=lambda f: ratios[f])
        if ratios[f0] >= cfg.mains_min_ratio:
            amplitude = _line_amplitude(filled, fs, f0)
            if amplitude >= cfg.mains_min_mv:
                flag(MAINS_INTERFERENCE, None,
                     f"{f0:g} Hz line of {amplitude * 1000:.0f} µV amplitude, {ratios[f0]:.0f}x "
                     "its spectral neighbourhood", amplitude)

    sos = design_sos("lowpass", (cfg.wander_cutoff_hz,), 2, fs)
    baseline = filtfilt(filled, sos, record=ecg.name, step="quality",
                        settle=round(fs / cfg.wander_cutoff_hz))
    excursion = baseline.max(axis=-1) - baseline.min(axis=-1)
    for lead, value in zip(leads, excursion):
        if value > cfg.wander_max_mv:
            flag(BASELINE_WANDER, lead,
                 f"baseline (below {cfg.wander_cutoff_hz:g} Hz) moves {value:.2f} mV "
                 f"peak-to-peak (at most {cfg.wander_max_mv:g} mV)", float(value))


def _line_amplitude(x: np.ndarray, fs: float, f0: float) -> float:
    """Amplitude (mV) of the sinusoid at ``f0`` in the loudest lead, by projection."""
    t = np.arange(x.shape[-1]) / fs
    # Least squares on a sine/cosine pair; the mains line may sit up to ~0.5 Hz off nominal,
    # so take the best of a few frequencies around it.
    best = 0.0
    for f in f0 + np.arange(-0.5, 0.51, 0.1):
        c, s = np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)
        a = 2 * (x @ c) / t.size
        b = 2 * (x @ s) / t.size
        best = max(best, float(np.sqrt(a * a + b * b).max()))
    return best


def _polarity(x: np.ndarray) -> float:
    """QRS polarity in [-1, 1]: +1 all upward deflection, -1 all downward.

    Compares the 99.5th and 0.5th percentiles around the median of the filtered lead; the
    QRS complex dominates both, so the sign follows its main deflection.
    """
    centred = x - np.median(x)
    up = float(np.percentile(centred, 99.5))
    down = -float(np.percentile(centred, 0.5))
    return 0.0 if up + down <= 0 else (up - down) / (up + down)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return 0.0 if denominator == 0 else float(a @ b) / denominator


# Limb leads as combinations of I and II: (coefficient of I, coefficient of II), read off
# derive_limb_leads itself by feeding it the unit vectors.
_LIMB_COEFFICIENTS: dict[str, tuple[float, float]] = {
    lead: (float(v[0]), float(v[1]))
    for lead, v in derive_limb_leads(np.array([1.0, 0.0]), np.array([0.0, 1.0])).items()
}


def _limb_lead_checks(ecg: ECG, x: np.ndarray, mask: np.ndarray, cfg: QualityConfig,
                      flag: Any) -> None:
    """Arm-electrode reversal and Einthoven/Goldberger consistency of the limb leads."""
    used = {"I", "II", *_LIMB_COEFFICIENTS, "V5", "V6"}  # the leads the checks below look at
    index = {lead: i for i, lead in enumerate(ecg.leads) if lead in used and mask[i].any()}
    if "I" not in index:
        return
    from ecgfm.preprocess._filters import design_sos, fill_gaps, filtfilt, padlen

    # 1-40 Hz keeps the QRS and T waves that the polarity and correlations are about and drops
    # baseline and muscle noise, which would only dilute them.
    high = min(40.0, 0.4 * ecg.fs)
    sos = design_sos("bandpass", (1.0, high), 2, ecg.fs)
    if ecg.n_samples <= padlen(sos):
        return
    rows = list(index.values())
    filtered = filtfilt(fill_gaps(x[rows], mask[rows]), sos, record=ecg.name, step="quality",
                        settle=round(ecg.fs))
    hp = {lead: filtered[k] for k, lead in enumerate(index)}
    seen = np.logical_and.reduce([mask[i] for i in index.values()])
    if seen.sum() < ecg.fs:  # under a second observed in every lead: too little to judge
        return
    hp = {lead: signal[seen] for lead, signal in hp.items()}
    _reversal(hp, cfg, flag)
    if "II" in hp:
        _consistency(hp, cfg, flag)


def _reversal(hp: dict[str, np.ndarray], cfg: QualityConfig, flag: Any) -> None:
    """Swapped arm electrodes invert lead I and turn aVR into aVL. Lead I and V6 (or V5) both
    look at the heart from the left, so normally correlate, and aVR, looking from the right,
    anti-correlates with them; after the swap both signs flip. Without V5/V6, fall back to
    QRS polarity: negative in I and positive in aVR."""
    if "aVR" in hp:
        avr = hp["aVR"]
    elif "II" in hp:
        avr = -(hp["I"] + hp["II"]) / 2
    else:
        return
    lateral = next((lead for lead in ("V6", "V5") if lead in hp), None)
    if lateral is not None:
        c_i, c_avr = _corr(hp["I"], hp[lateral]), _corr(avr, hp[lateral])
        score = c_avr - c_i
        if score >= cfg.reversal_min_score:
            flag(LIMB_LEAD_REVERSAL, None,
                 f"lead I anti-correlates with {lateral} ({c_i:+.2f}) and aVR correlates with it "
                 f"({c_avr:+.2f}); score {score:.2f} >= {cfg.reversal_min_score:g}: likely left "
                 "and right arm electrodes swapped", score)
        return
    p_i, p_avr = _polarity(hp["I"]), _polarity(avr)
    if p_i <= -cfg.reversal_min_polarity and p_avr >= cfg.reversal_min_polarity:
        flag(LIMB_LEAD_REVERSAL, None,
             f"QRS negative in I (polarity {p_i:+.2f}) and positive in aVR ({p_avr:+.2f}): "
             "likely left and right arm electrodes swapped (or dextrocardia)", p_i)


def _fit_limb(i: np.ndarray, ii: np.ndarray, lead: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients of ``lead`` on (I, II) and the relative rms residual."""
    design = np.stack([i, ii], axis=1)
    coef, *_ = np.linalg.lstsq(design, lead, rcond=None)
    norm = math.sqrt(float(np.mean(lead**2)))
    residual = math.sqrt(float(np.mean((lead - design @ coef) ** 2)))
    return coef, (residual / norm if norm > 0 else 0.0)


def _broken(i: np.ndarray, ii: np.ndarray, lead: np.ndarray, expected: tuple[float, float],
            cfg: QualityConfig) -> tuple[float, float, np.ndarray] | None:
    """(worst coefficient ratio, residual, coefficients) if ``lead`` contradicts I and II.

    Only signs are judged, not gains: some databases (LUDB) calibrate each lead separately and
    their limb leads fit I and II with gains off by up to 5x, but never with a flipped sign.
    """
    coef, residual = _fit_limb(i, ii, lead)
    ratio = float((coef / np.array(expected)).min())
    if ratio < 0 or residual > cfg.inconsistency_max_residual:
        return ratio, residual, coef
    return None


def _consistency(hp: dict[str, np.ndarray], cfg: QualityConfig, flag: Any) -> None:
    present = [lead for lead in _LIMB_COEFFICIENTS if lead in hp]
    if not present:
        return
    broken = {lead: _broken(hp["I"], hp["II"], hp[lead], _LIMB_COEFFICIENTS[lead], cfg)
              for lead in present}
    bad = {lead: result for lead, result in broken.items() if result is not None}
    if not bad:
        return
    # Every derived lead contradicting I and II, and agreeing once one of them is inverted,
    # means that lead is the inverted one: name it rather than the four it throws off.
    if len(bad) == len(present):
        for suspect, (i_sign, ii_sign) in (("I", (-1, 1)), ("II", (1, -1))):
            if all(
                _broken(i_sign * hp["I"], ii_sign * hp["II"], hp[lead], _LIMB_COEFFICIENTS[lead], cfg)
                is None for lead in present
            ):
                ratio = min(result[0] for result in bad.values())
                flag(LIMB_LEADS_INCONSISTENT, suspect,
                     f"lead {suspect} appears inverted: {', '.join(present)} fit I and II only "
                     f"with lead {suspect} negated", ratio)
                return
    for lead, (ratio, residual, coef) in bad.items():
        a, b = _LIMB_COEFFICIENTS[lead]
        if ratio < 0:
            reason = (f"{lead} = {coef[0]:+.2f} I {coef[1]:+.2f} II, expected {a:+.1f} I "
                      f"{b:+.1f} II: a limb lead is inverted or mislabelled")
            value = ratio
        else:
            reason = (f"{lead} is not a combination of I and II ({residual:.0%} of it "
                      f"unexplained, at most {cfg.inconsistency_max_residual:.0%}): mislabelled "
                      "or from another recording")
            value = residual
        flag(LIMB_LEADS_INCONSISTENT, lead, reason, value)
