"""The preprocessing steps: each a frozen dataclass and a pure function ``ECG -> ECG``.

Every step keeps the record's ``meta``, keeps its mask aligned with the samples it returns
(resampled, cropped, padded) and raises :class:`~ecgfm.errors.ValidationError` naming the record
when the record cannot be processed (a cutoff above its Nyquist frequency, too few samples for a
filter). Filters are zero-phase Butterworth second-order sections applied to all leads at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.leads import STANDARD_12, canonical_leads, parse_lead_list
from ecgfm.preprocess._filters import design_sos, detect_mains, fill_gaps, filtfilt
from ecgfm.preprocess.registry import (
    Step,
    as_bool,
    as_choice,
    as_float,
    as_int,
    register_step,
)
from ecgfm.record import ECG, MAX_FS, MIN_FS

# Resampling ratios are approximated by fractions with at most this denominator: exact for
# every integer rate pair below it (500/360 -> 25/18, 500/257 -> 500/257) while keeping the
# polyphase filter, whose length grows with max(up, down), small.
MAX_RESAMPLE_DENOMINATOR = 1000
MAX_ORDER = 8  # Butterworth orders above this are numerically fragile and never needed here


def _new(ecg: ECG, signal: np.ndarray, mask: np.ndarray | None = None, fs: float | None = None) -> ECG:
    """The processed record: new samples, same leads and meta, float32."""
    return ECG(
        np.asarray(signal, dtype=np.float32),
        ecg.fs if fs is None else fs,
        ecg.leads,
        ecg.meta,
        ecg.mask if mask is None and fs is None else mask,
    )


def _check_below_nyquist(step: Step, ecg: ECG, field: str, freq: float) -> None:
    if freq >= ecg.fs / 2:
        raise ValidationError(
            f"{ecg.name}: step {step.name!r}: {field}={freq:g} Hz is not below the record's "
            f"Nyquist frequency {ecg.fs / 2:g} Hz (fs={ecg.fs:g} Hz)"
        )


def _filter(step: Step, ecg: ECG, kind: str, cutoffs: tuple[float, ...], order: int,
            settle_s: float = 0.0) -> ECG:
    sos = design_sos(kind, cutoffs, order, ecg.fs)
    tone = (cutoffs[0], ecg.fs) if kind == "notch" else None
    out = filtfilt(fill_gaps(ecg.signal, ecg.mask), sos, record=ecg.name, step=step.name,
                   settle=round(settle_s * ecg.fs), tone=tone)
    return _new(ecg, out)


# -- rate ---------------------------------------------------------------------------------


@register_step("resample")
@dataclass(frozen=True)
class Resample(Step):
    """Polyphase resampling to ``fs`` (``scipy.signal.resample_poly``), all leads at once.

    The rate ratio becomes ``up/down`` through ``Fraction.limit_denominator(1000)``. The output
    has ``ceil(samples * up / down)`` samples, so the duration is kept within one sample. An
    output sample is masked when any input sample under its support was masked. A record
    already at ``fs`` is returned unchanged (the same object).
    """

    fs: float  # target sampling rate in Hz

    def __post_init__(self) -> None:
        self._set("fs", as_float(self.name, "fs", self.fs, low=MIN_FS, high=MAX_FS))

    def __call__(self, ecg: ECG) -> ECG:
        if ecg.fs == self.fs:
            return ecg
        from scipy.signal import resample_poly

        ratio = (Fraction(self.fs) / Fraction(ecg.fs)).limit_denominator(MAX_RESAMPLE_DENOMINATOR)
        up, down = ratio.numerator, ratio.denominator
        # "line" padding extends each lead by its end-to-end trend instead of zeros, so a
        # baseline offset does not sag towards zero at the record's edges.
        out = resample_poly(fill_gaps(ecg.signal, ecg.mask), up, down, axis=-1, padtype="line")
        mask = None if ecg.mask is None else _resample_mask(ecg.mask, up, down, out.shape[-1])
        return _new(ecg, out, mask, fs=self.fs)


def _resample_mask(mask: np.ndarray, up: int, down: int, n_out: int) -> np.ndarray:
    """Output sample j (at input position p = j*down/up) is observed when every input sample
    within half an output period of p (at least the samples either side of p) was observed."""
    n_in = mask.shape[-1]
    j = np.arange(n_out, dtype=np.int64)
    span = max(up, down)  # twice the half-support, in units of 1/(2*up) input samples
    num = 2 * j * down
    # lo = min(floor(p), ceil(p - h)), hi = max(ceil(p), floor(p + h)), h = span / (2 up)
    lo = np.minimum((num // (2 * up)), -((span - num) // (2 * up)))
    hi = np.maximum(-((-num) // (2 * up)), (num + span) // (2 * up))
    lo = np.clip(lo, 0, n_in - 1)
    hi = np.clip(hi, 0, n_in - 1)
    missing = np.concatenate(
        [np.zeros((mask.shape[0], 1), np.int64), np.cumsum(~mask, axis=-1, dtype=np.int64)], axis=-1
    )
    return (missing[:, hi + 1] - missing[:, lo]) == 0


# -- filters --------------------------------------------------------------------------------


@register_step("highpass")
@dataclass(frozen=True)
class HighPass(Step):
    """Baseline-wander removal: zero-phase Butterworth high-pass (``sosfiltfilt``).

    Zero-phase filtering runs the filter forwards and backwards, so the magnitude response is
    squared (-6 dB at ``cutoff``) and no wave is shifted in time. Order 2 (4 after the double
    pass) keeps the step response short, which limits ST-segment distortion.
    """

    cutoff: float = 0.5  # -6 dB frequency in Hz
    order: int = 2  # Butterworth order of one pass

    def __post_init__(self) -> None:
        self._set("cutoff", as_float(self.name, "cutoff", self.cutoff, low=0.0, low_open=True))
        self._set("order", as_int(self.name, "order", self.order, low=1, high=MAX_ORDER))

    def __call__(self, ecg: ECG) -> ECG:
        _check_below_nyquist(self, ecg, "cutoff", self.cutoff)
        # Pad by one period of the cutoff so the filter settles before the first real sample.
        return _filter(self, ecg, "highpass", (self.cutoff,), self.order, settle_s=1 / self.cutoff)


@register_step("lowpass")
@dataclass(frozen=True)
class LowPass(Step):
    """Zero-phase Butterworth low-pass (``sosfiltfilt``), e.g. to remove muscle noise."""

    cutoff: float  # -6 dB frequency in Hz; must be below the record's Nyquist frequency
    order: int = 4  # Butterworth order of one pass

    def __post_init__(self) -> None:
        self._set("cutoff", as_float(self.name, "cutoff", self.cutoff, low=0.0, low_open=True))
        self._set("order", as_int(self.name, "order", self.order, low=1, high=MAX_ORDER))

    def __call__(self, ecg: ECG) -> ECG:
        _check_below_nyquist(self, ecg, "cutoff", self.cutoff)
        return _filter(self, ecg, "lowpass", (self.cutoff,), self.order)


@register_step("bandpass")
@dataclass(frozen=True)
class BandPass(Step):
    """Zero-phase Butterworth band-pass between ``low`` and ``high`` Hz (``sosfiltfilt``)."""

    low: float  # lower -6 dB frequency in Hz
    high: float  # upper -6 dB frequency in Hz; must be below the record's Nyquist frequency
    order: int = 2  # Butterworth order of one pass (the band-pass has twice as many poles)

    def __post_init__(self) -> None:
        self._set("low", as_float(self.name, "low", self.low, low=0.0, low_open=True))
        self._set("high", as_float(self.name, "high", self.high, low=0.0, low_open=True))
        self._set("order", as_int(self.name, "order", self.order, low=1, high=MAX_ORDER))
        if self.low >= self.high:
            raise ValidationError(
                f"step {self.name!r}: low ({self.low:g} Hz) must be below high ({self.high:g} Hz)"
            )

    def __call__(self, ecg: ECG) -> ECG:
        _check_below_nyquist(self, ecg, "high", self.high)
        return _filter(self, ecg, "bandpass", (self.low, self.high), self.order,
                       settle_s=1 / self.low)


@register_step("notch")
@dataclass(frozen=True)
class Notch(Step):
    """Mains (power-line) interference removal: a zero-phase IIR notch at ``freq``.

    ``freq="auto"`` looks for a 50 Hz or 60 Hz line in the record's spectrum (averaged over
    leads) and notches the one that stands out by at least
    :data:`~ecgfm.preprocess._filters.MAINS_MIN_RATIO` times its neighbourhood; if neither
    does, the record is returned unchanged. The detection depends only on the samples, so the
    step stays pure.
    """

    freq: float | str = "auto"  # mains frequency in Hz (usually 50 or 60), or "auto"
    q: float = 30.0  # quality factor: freq / -3 dB bandwidth of one pass (30 -> 1.7 Hz at 50 Hz)

    def __post_init__(self) -> None:
        if isinstance(self.freq, str) and self.freq.strip().lower() == "auto":
            self._set("freq", "auto")
        else:
            self._set("freq", as_float(self.name, "freq", self.freq, low=0.0, low_open=True))
        self._set("q", as_float(self.name, "q", self.q, low=0.0, low_open=True))

    def __call__(self, ecg: ECG) -> ECG:
        freq = self.freq
        if freq == "auto":
            observed = fill_gaps(ecg.signal, ecg.mask)
            freq = detect_mains(observed, ecg.fs)
            if freq is None:
                return ecg
        assert isinstance(freq, float)
        _check_below_nyquist(self, ecg, "freq", freq)
        # The notch's envelope decays with time constant q / (pi * freq); three of them of
        # padding let it settle before the first real sample.
        return _filter(self, ecg, "notch", (freq, self.q), 2, settle_s=3 * self.q / (math.pi * freq))


# -- leads, length, amplitude ------------------------------------------------------------------


@register_step("select")
@dataclass(frozen=True)
class SelectLeads(Step):
    """Reorder to ``leads`` (via :meth:`ECG.select`), deriving III/aVR/aVL/aVF from I and II.

    In specs the lead list is written like ``leads=12``, ``leads=I;II;V1-V6`` or
    ``leads=I,II,V1`` (see :func:`ecgfm.leads.parse_lead_list`).
    """

    leads: tuple[str, ...] = STANDARD_12  # wanted canonical lead names, in order
    derive: bool = True  # derive missing limb leads from I and II
    missing: str = "error"  # "error" refuses a lead the record lacks; "mask" adds it masked

    def __post_init__(self) -> None:
        leads = self.leads
        try:
            if isinstance(leads, str):
                leads = parse_lead_list(leads.replace(";", ","))
            elif isinstance(leads, Sequence):
                leads = canonical_leads([str(lead) for lead in leads])
            else:
                raise ValidationError(f"expected a list of lead names, got {leads!r}")
        except ValidationError as error:
            raise ValidationError(f"step {self.name!r}: leads: {error}") from None
        if not leads:
            raise ValidationError(f"step {self.name!r}: leads must name at least one lead")
        self._set("leads", tuple(leads))
        self._set("derive", as_bool(self.name, "derive", self.derive))
        self._set("missing", as_choice(self.name, "missing", self.missing, ("error", "mask")))

    def __call__(self, ecg: ECG) -> ECG:
        if ecg.leads == self.leads:
            return ecg
        return ecg.select(self.leads, derive=self.derive, missing=self.missing)


@register_step("crop")
@dataclass(frozen=True)
class CropOrPad(Step):
    """Crop or pad to exactly ``round(seconds * fs)`` samples.

    ``mode`` says which part of a longer record is kept and where a shorter one sits:
    ``"start"`` keeps the start (padding at the end), ``"end"`` keeps the end (padding at the
    start), ``"center"`` keeps the middle (padding both sides, the extra sample at the end).
    Padding is zeros marked unobserved in the mask.
    """

    seconds: float  # wanted length in seconds
    mode: str = "start"  # "start", "center" or "end"

    def __post_init__(self) -> None:
        self._set("seconds", as_float(self.name, "seconds", self.seconds, low=0.0, low_open=True))
        self._set("mode", as_choice(self.name, "mode", self.mode, ("start", "center", "end")))

    def __call__(self, ecg: ECG) -> ECG:
        target = round(self.seconds * ecg.fs)
        if target < 1:
            raise ValidationError(
                f"{ecg.name}: step {self.name!r}: {self.seconds:g} s at {ecg.fs:g} Hz is no sample"
            )
        n = ecg.n_samples
        if target == n:
            return ecg
        extra = abs(n - target)
        before = {"start": 0, "end": extra, "center": extra // 2}[self.mode]
        if n > target:
            signal = ecg.signal[:, before:before + target]
            mask = None if ecg.mask is None else ecg.mask[:, before:before + target]
            return ECG(signal.copy(), ecg.fs, ecg.leads, ecg.meta, mask)
        after = extra - before
        signal = np.pad(ecg.signal, ((0, 0), (before, after)))
        observed = np.ones_like(ecg.signal, dtype=bool) if ecg.mask is None else ecg.mask
        mask = np.pad(observed, ((0, 0), (before, after)), constant_values=False)
        return ECG(signal, ecg.fs, ecg.leads, ecg.meta, mask)


@register_step("normalize")
@dataclass(frozen=True)
class Normalize(Step):
    """Amplitude normalisation over the observed samples.

    ``"zscore"``: subtract the mean, divide by ``max(std, eps)``. ``"minmax"``: map
    ``[min, max]`` to ``[0, 1]`` (dividing by ``max(max - min, eps)``). ``"none"``: unchanged.
    Statistics are per lead (``per_lead=True``) or over the whole record; masked samples take
    no part and stay masked. The result is unitless, no longer mV.
    """

    method: str = "zscore"  # "zscore", "minmax" or "none"
    per_lead: bool = True  # statistics per lead rather than over all leads together
    eps: float = 1e-6  # floor of the divisor, so a flat lead maps to zeros, not to inf

    def __post_init__(self) -> None:
        self._set("method", as_choice(self.name, "method", self.method, ("zscore", "minmax", "none")))
        self._set("per_lead", as_bool(self.name, "per_lead", self.per_lead))
        self._set("eps", as_float(self.name, "eps", self.eps, low=0.0, low_open=True))

    def __call__(self, ecg: ECG) -> ECG:
        if self.method == "none":
            return ecg
        x = ecg.signal.astype(np.float64)
        axis = -1 if self.per_lead else None
        if ecg.mask is None:  # every sample observed: plain statistics, computed in place
            if self.method == "zscore":
                # In-place arithmetic: temporaries of a 12 x 5000 record are large enough for
                # the allocator to map and unmap fresh pages each time, which costs more than
                # the arithmetic itself.
                out = x
                out -= out.mean(axis=axis, keepdims=True)
                if self.per_lead:
                    power = np.einsum("ij,ij->i", out, out)[:, None] / out.shape[-1]
                else:
                    power = np.vdot(out, out) / out.size
                out /= np.maximum(np.sqrt(power), self.eps)
            else:
                low = x.min(axis=axis, keepdims=True)
                out = (x - low) / np.maximum(x.max(axis=axis, keepdims=True) - low, self.eps)
            return _new(ecg, out)
        seen = ecg.mask
        count = np.maximum(seen.sum(axis=axis, keepdims=True), 1)
        if self.method == "zscore":
            mean = np.where(seen, x, 0.0).sum(axis=axis, keepdims=True) / count
            var = np.where(seen, (x - mean) ** 2, 0.0).sum(axis=axis, keepdims=True) / count
            out = (x - mean) / np.maximum(np.sqrt(var), self.eps)
        else:
            low = np.where(seen, x, np.inf).min(axis=axis, keepdims=True)
            high = np.where(seen, x, -np.inf).max(axis=axis, keepdims=True)
            low = np.where(np.isfinite(low), low, 0.0)  # a lead with no observed sample
            high = np.where(np.isfinite(high), high, 0.0)
            out = (x - low) / np.maximum(high - low, self.eps)
        return _new(ecg, out)


@register_step("clip")
@dataclass(frozen=True)
class Clip(Step):
    """Clip every sample to ``[-limit_mv, +limit_mv]`` (e.g. to tame pacing spikes)."""

    limit_mv: float  # the largest magnitude kept, in mV (in the signal's unit after Normalize)

    def __post_init__(self) -> None:
        self._set("limit_mv", as_float(self.name, "limit_mv", self.limit_mv, low=0.0, low_open=True))

    def __call__(self, ecg: ECG) -> ECG:
        return _new(ecg, np.clip(ecg.signal, -self.limit_mv, self.limit_mv))
