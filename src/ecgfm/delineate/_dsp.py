"""Signal conditioning for the delineator: resampling, gap filling, zero-phase filters.

Everything here works on float64 arrays ``[leads, samples]`` at the delineator's internal rate
(:data:`FS`). scipy is imported inside the functions so that importing the package stays light.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

FS = 500.0  # Hz; every record is delineated at this rate and the indices mapped back


def resample(x: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """Polyphase resampling of ``x`` ``[leads, samples]`` along the last axis."""
    if fs_from == fs_to:
        return np.asarray(x, dtype=np.float64)
    from scipy import signal as sps

    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    return sps.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)


def resample_mask(valid: np.ndarray, fs_from: float, fs_to: float, n_out: int) -> np.ndarray:
    """Nearest-sample resampling of a bool mask ``[leads, samples]`` to ``n_out`` samples."""
    if fs_from == fs_to and valid.shape[-1] == n_out:
        return valid.copy()
    idx = np.minimum(np.round(np.arange(n_out) * fs_from / fs_to).astype(np.int64), valid.shape[-1] - 1)
    return valid[:, idx]


def fill_gaps(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation across unobserved samples, lead by lead (edges hold the nearest value)."""
    out = np.array(x, dtype=np.float64)
    for lead in range(out.shape[0]):
        ok = valid[lead]
        if ok.all() or not ok.any():
            if not ok.any():
                out[lead] = 0.0
            continue
        t = np.arange(out.shape[1])
        out[lead, ~ok] = np.interp(t[~ok], t[ok], out[lead, ok])
    return out


@lru_cache(maxsize=32)
def _butter(kind: str, cutoffs: tuple[float, ...], order: int, fs: float) -> np.ndarray:
    from scipy import signal as sps

    edges = cutoffs if len(cutoffs) > 1 else cutoffs[0]
    return sps.butter(order, edges, btype=kind, fs=fs, output="sos")


def zero_phase(x: np.ndarray, kind: str, cutoffs: tuple[float, ...], order: int, fs: float = FS) -> np.ndarray:
    """Zero-phase Butterworth filter along the last axis (odd padding, at most the signal)."""
    from scipy import signal as sps

    sos = _butter(kind, cutoffs, order, fs)
    n = x.shape[-1]
    pad = min(n - 1, int(round(fs)))  # one second of padding keeps slow filters' transients out
    return sps.sosfiltfilt(sos, x, axis=-1, padlen=pad)


def smooth(x: np.ndarray, sigma_ms: float, order: int = 0, fs: float = FS) -> np.ndarray:
    """Gaussian smoothing (``order=0``) or derivative-of-Gaussian (``order=1``) along the last axis.

    A derivative of a Gaussian at scale ``sigma`` is the continuous counterpart of the dyadic
    wavelet transforms used by wavelet delineators (Martinez et al. 2004): its zero crossings
    mark the peaks of waves at that scale and its modulus maxima their steepest slopes.
    """
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma_ms * fs / 1000.0, axis=-1, order=order, mode="nearest")


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis (``width`` samples, odd or even)."""
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(x, max(1, int(width)), axis=-1, mode="nearest")


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow True runs of a bool array ``[leads, samples]`` by ``radius`` samples on each side."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(mask.astype(np.uint8), 2 * radius + 1, axis=-1, mode="constant").astype(bool)
