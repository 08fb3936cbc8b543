"""Filter design and application shared by the preprocessing steps and the quality checks.

Designs are cached (one design per kind, cutoffs, order and rate) and every filter runs on the
whole ``[leads, samples]`` array at once along ``axis=-1`` in float64. That, not a faster filter,
is what makes a pipeline over a 12-lead record cost one call per step instead of twelve.
scipy is imported inside the functions so that ``import ecgfm.preprocess`` stays light.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ecgfm.errors import ValidationError

FILTER_KINDS = ("highpass", "lowpass", "bandpass", "notch")

# Mains detection ("auto" notch): a mains line must stand this many times above the loudest
# few percent of its spectral neighbourhood. The neighbourhood percentile, not its median, is
# the reference so that the sharp heart-rate harmonics of a regular (e.g. paced) rhythm, which
# also fill the neighbourhood, do not read as mains.
MAINS_CANDIDATES_HZ = (50.0, 60.0)
MAINS_MIN_RATIO = 5.0
_MAINS_PEAK_HALF_WIDTH_HZ = 0.5  # mains drifts by up to ~0.2 Hz; the line may fall between bins
_MAINS_NEIGHBOUR_HZ = (1.5, 6.0)  # the reference band, on either side of the candidate
_MAINS_NEIGHBOUR_PERCENTILE = 95.0


@lru_cache(maxsize=256)
def design_sos(kind: str, cutoffs: tuple[float, ...], order: int, fs: float) -> np.ndarray:
    """Second-order sections of a Butterworth (or, for ``"notch"``, an IIR notch) filter.

    Args:
        kind: ``"highpass"``, ``"lowpass"``, ``"bandpass"`` or ``"notch"``.
        cutoffs: the cutoff(s) in Hz: one for high/low-pass, ``(low, high)`` for band-pass,
            ``(frequency, quality_factor)`` for a notch.
        order: Butterworth order (ignored for a notch, which is second order).
        fs: sampling rate in Hz; every frequency must lie strictly below ``fs / 2``.

    Returns:
        A read-only float64 array ``[sections, 6]``, shared between calls (hence read-only).
    """
    from scipy import signal as sps

    nyquist = fs / 2
    if kind == "notch":
        freq, quality = cutoffs
        b, a = sps.iirnotch(freq, quality, fs=fs)
        sos = sps.tf2sos(b, a)
    else:
        edges = cutoffs if kind == "bandpass" else cutoffs[0]
        if any(not (0 < c < nyquist) for c in cutoffs):
            raise ValueError(f"cutoffs {cutoffs} Hz must lie in (0, {nyquist:g}) Hz")
        sos = sps.butter(order, edges, btype=kind, fs=fs, output="sos")
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    sos.flags.writeable = False
    return sos


def padlen(sos: np.ndarray) -> int:
    """The edge padding ``scipy.signal.sosfiltfilt`` uses by default for ``sos``."""
    # Same formula as scipy's sosfiltfilt, so the check below and scipy's agree exactly.
    n_sections = sos.shape[0]
    zeros_b = int((sos[:, 2] == 0).sum())
    zeros_a = int((sos[:, 5] == 0).sum())
    return 3 * (2 * n_sections + 1 - min(zeros_b, zeros_a))


def filtfilt(
    signal: np.ndarray,
    sos: np.ndarray,
    *,
    record: str,
    step: str,
    settle: int = 0,
    tone: tuple[float, float] | None = None,
) -> np.ndarray:
    """Zero-phase filtering of every lead at once.

    Args:
        signal: array ``[leads, samples]`` (any float dtype; filtered in float64).
        sos: second-order sections from :func:`design_sos`.
        record: the record's name, for the error message.
        step: the step's name, for the error message.
        settle: wanted edge padding in samples, used where the record is long enough.
            scipy's default padding (a few samples) leaves a slow filter's start-up transient
            inside the record; padding by the filter's settling time moves it out.
        tone: ``(frequency, fs)`` for a notch: the edges are padded so that a sinusoid at that
            frequency continues without a phase jump (see :func:`_tone_pad`).

    Returns:
        float64 array ``[leads, samples]``.

    Raises:
        ValidationError: the record is too short for the filter's edge padding.
    """
    from scipy import signal as sps

    x = np.asarray(signal, dtype=np.float64)
    n = x.shape[-1]
    need = padlen(sos)
    if n <= need:
        raise ValidationError(
            f"{record}: {n} samples are too few for the {step} filter "
            f"(needs more than {need} samples of edge padding)"
        )
    pad = min(max(need, settle), n - 1)
    # scipy's Cython filter wants a writable buffer; the cached design is read-only.
    sos = sos.copy()
    if tone is None:
        return sps.sosfiltfilt(sos, x, axis=-1, padlen=pad)
    padded = _tone_pad(x, pad, *tone)
    return sps.sosfiltfilt(sos, padded, axis=-1, padtype=None)[..., pad:pad + n]


def _tone_pad(x: np.ndarray, pad: int, freq: float, fs: float) -> np.ndarray:
    """Pad ``pad`` samples at each end: the odd extension of the signal less its ``freq``
    sinusoid, plus that sinusoid continued exactly.

    A notch's state tracks the mains sinusoid; an odd (or even) reflection restarts the sinusoid
    at the record's edge with another phase, and the notch then rings for several of its time
    constants inside the record (residual mains of -20 to -27 dB over a 10 s record). Fitting
    the sinusoid on each edge's ``pad + 1`` samples and continuing it analytically removes the
    phase jump (about -50 dB for a stationary line); the rest of the signal keeps the odd
    reflection's continuity.
    """
    n = x.shape[-1]
    width = pad + 1
    omega = 2 * np.pi * freq / fs

    def fit(segment: np.ndarray, k: np.ndarray) -> np.ndarray:
        # Least squares on [1, k, cos, sin] per lead; only the sinusoid's coefficients are kept.
        design = np.stack([np.ones_like(k), k / width, np.cos(omega * k), np.sin(omega * k)], axis=1)
        coef, *_ = np.linalg.lstsq(design, segment.reshape(-1, segment.shape[-1]).T, rcond=None)
        return coef[2:].T.reshape(*segment.shape[:-1], 2)

    def sinusoid(coef: np.ndarray, k: np.ndarray) -> np.ndarray:
        return coef[..., :1] * np.cos(omega * k) + coef[..., 1:] * np.sin(omega * k)

    inner = np.arange(width, dtype=np.float64)  # sample positions of the head window
    outer = -np.arange(pad, 0, -1, dtype=np.float64)  # positions -pad .. -1
    coef = fit(x[..., :width], inner)
    rest = x[..., :width] - sinusoid(coef, inner)
    head = 2 * rest[..., :1] - rest[..., pad:0:-1] + sinusoid(coef, outer)

    inner = np.arange(n - width, n, dtype=np.float64)
    outer = np.arange(n, n + pad, dtype=np.float64)
    coef = fit(x[..., n - width:], inner - (n - width))
    rest = x[..., n - width:] - sinusoid(coef, inner - (n - width))
    tail = 2 * rest[..., -1:] - rest[..., -2:-pad - 2:-1] + sinusoid(coef, outer - (n - width))
    return np.concatenate([head, x, tail], axis=-1)


def fill_gaps(signal: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Float64 copy of ``signal`` with masked samples linearly interpolated per lead.

    Masked samples hold 0.0; filtering or resampling across a step from the signal's level to
    zero and back would ring into the observed samples beside a gap. Interpolating first keeps
    the gap's edges smooth. Leads with no observed sample stay zero.
    """
    out = np.array(signal, dtype=np.float64)
    if mask is None:
        return out
    positions = np.arange(out.shape[-1])
    for row in np.flatnonzero(~mask.all(axis=1)):
        seen = mask[row]
        if seen.any():
            out[row, ~seen] = np.interp(positions[~seen], positions[seen], out[row, seen])
    return out


def mains_ratios(signal: np.ndarray, fs: float) -> dict[float, float]:
    """How far each mains candidate (50, 60 Hz) stands above its spectral neighbourhood.

    Args:
        signal: array ``[leads, samples]`` in any unit; the power is averaged over leads.
        fs: sampling rate in Hz.

    Returns:
        ``{frequency: ratio}`` for the candidates the rate can resolve (neighbourhood below
        Nyquist); ratio is peak power over the neighbourhood's 95th-percentile power.
    """
    from scipy import signal as sps

    n = signal.shape[-1]
    x = np.asarray(signal, dtype=np.float64)
    # ~0.2 Hz resolution; shorter records use one segment and coarser bins.
    nperseg = int(min(n, round(fs * 5)))
    freqs, power = sps.welch(x, fs=fs, nperseg=nperseg, axis=-1, detrend="constant")
    power = power.reshape(-1, power.shape[-1]).mean(axis=0)
    out: dict[float, float] = {}
    for f0 in MAINS_CANDIDATES_HZ:
        lo, hi = _MAINS_NEIGHBOUR_HZ
        if f0 + hi >= fs / 2:
            continue
        peak = power[np.abs(freqs - f0) <= _MAINS_PEAK_HALF_WIDTH_HZ]
        distance = np.abs(freqs - f0)
        neighbours = power[(distance >= lo) & (distance <= hi)]
        if peak.size == 0 or neighbours.size == 0:
            continue
        reference = float(np.percentile(neighbours, _MAINS_NEIGHBOUR_PERCENTILE))
        peak_power = float(peak.max())
        if reference <= 0:
            out[f0] = float("inf") if peak_power > 0 else 0.0
        else:
            out[f0] = peak_power / reference
    return out


def detect_mains(signal: np.ndarray, fs: float, min_ratio: float = MAINS_MIN_RATIO) -> float | None:
    """The mains frequency (50.0 or 60.0 Hz) visible in ``signal``, or None if neither stands out.

    Deterministic in the data: the candidate with the larger :func:`mains_ratios` ratio wins if
    that ratio is at least ``min_ratio``.
    """
    ratios = mains_ratios(signal, fs)
    if not ratios:
        return None
    best = max(ratios, key=lambda f: ratios[f])
    return best if ratios[best] >= min_ratio else None
