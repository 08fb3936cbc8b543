"""``measure(ecg) -> Measurements``: the interval and axis measurements of a 12-lead report.

Two routes to the same numbers. By default (``method="median"``) the intervals are read off the
record's median beat (:func:`ecgfm.delineate.median.median_beat`), as 12-lead interpretation
programs do; with ``method="beats"`` (or a :class:`Delineation` given) they are medians over
beats of the beat-by-beat global fiducials. Either way: RR is the median interval between
consecutive beats, PR runs from P onset to QRS onset, QRS from QRS onset to offset, QT from QRS
onset to T offset (multi-lead onsets and offsets). QTc uses the median RR: Bazett
``QT / sqrt(RR)`` and Fridericia ``QT / RR^(1/3)`` with RR in seconds. Frontal axes come from
the net area (signed integral above the isoelectric level, the PQ junction) of each wave in
leads I and aVF (:func:`frontal_axis`); leads I and aVF are reconstructed by least squares from
whichever limb leads are present (any two of I, II, III, aVR, aVL, aVF span the frontal plane).
The two routes agree on LUDB to within a few milliseconds (``docs/delineation.md``); the median
beat is several times faster.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ecgfm.delineate.config import DelineatorConfig
from ecgfm.delineate.delineation import Delineation, delineate
from ecgfm.delineate.median import MedianBeat, median_beat
from ecgfm.errors import ValidationError
from ecgfm.record import ECG

# Limb leads as combinations of I and II (Einthoven's law and Goldberger's augmented leads).
_LIMB_IN_I_II = {
    "I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0),
}


@dataclass(frozen=True)
class Measurements:
    """Global ECG measurements; every value is NaN where it cannot be measured.

    Attributes:
        heart_rate_bpm: 60000 / ``rr_ms``.
        rr_ms: median RR interval.
        pr_ms: median P onset to QRS onset (NaN without P waves, e.g. atrial fibrillation).
        qrs_ms: median QRS duration.
        qt_ms: median QRS onset to T offset.
        qtc_bazett_ms: ``qt_ms / sqrt(rr_ms / 1000)``.
        qtc_fridericia_ms: ``qt_ms / (rr_ms / 1000) ** (1/3)``.
        p_axis_deg, qrs_axis_deg, t_axis_deg: frontal-plane axes in degrees, (-180, 180].
        n_beats: number of beats delineated.
    """

    heart_rate_bpm: float
    rr_ms: float
    pr_ms: float
    qrs_ms: float
    qt_ms: float
    qtc_bazett_ms: float
    qtc_fridericia_ms: float
    p_axis_deg: float
    qrs_axis_deg: float
    t_axis_deg: float
    n_beats: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, NaN -> None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def qtc_bazett(qt_ms: float, rr_ms: float) -> float:
    """Bazett's correction: QT / sqrt(RR), RR in seconds (ms in, ms out)."""
    return qt_ms / math.sqrt(rr_ms / 1000.0) if rr_ms > 0 else float("nan")


def qtc_fridericia(qt_ms: float, rr_ms: float) -> float:
    """Fridericia's correction: QT / RR^(1/3), RR in seconds (ms in, ms out)."""
    return qt_ms / (rr_ms / 1000.0) ** (1.0 / 3.0) if rr_ms > 0 else float("nan")


def frontal_axis(lead_i: float, lead_avf: float) -> float:
    """Frontal axis in degrees, (-180, 180], from net amplitudes or areas in leads I and aVF.

    Uses the corrected formula of Novosel et al. (Croat Med J 1999), ``atan2(2 aVF / sqrt(3),
    I)``: in Einthoven's triangle an augmented lead such as aVF = (II + III) / 2 sees the heart
    vector with sqrt(3)/2 the gain of a limb lead such as I, so the textbook ``atan2(aVF, I)``
    is off by up to 4 degrees (it gives 45 where I and aVF are equal; the vector is at 49.1).
    A vector perpendicular to lead III (III = 0) comes out at exactly 30 degrees.

    >>> round(frontal_axis(1.0, 1.0), 1)
    49.1
    """
    if not (math.isfinite(lead_i) and math.isfinite(lead_avf)) or (lead_i == 0 and lead_avf == 0):
        return float("nan")
    return float(np.degrees(np.arctan2(2.0 * lead_avf / math.sqrt(3.0), lead_i)))


def _nanmedian(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _frontal_leads(signal: np.ndarray, leads: tuple[str, ...], usable: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Leads I and aVF ``[samples]`` by least squares over the usable limb leads of ``signal``
    ``[leads, samples]`` (``usable``: bool ``[leads]``), or None."""
    rows, coefs = [], []
    for lead, c in _LIMB_IN_I_II.items():
        if lead in leads:
            i = leads.index(lead)
            if usable[i]:
                rows.append(signal[i].astype(np.float64))
                coefs.append(c)
    if len(rows) < 2:
        return None
    a = np.asarray(coefs)
    if np.linalg.matrix_rank(a) < 2:
        return None
    i_ii, *_ = np.linalg.lstsq(a, np.stack(rows), rcond=None)
    lead_i, lead_ii = i_ii
    return lead_i, lead_ii - 0.5 * lead_i


def _net_areas(x: np.ndarray, fs: float, onsets: np.ndarray, offsets: np.ndarray, base_at: np.ndarray) -> np.ndarray:
    """Per beat, the integral (mV*s) of ``x`` over ``[onset, offset]`` above its level at ``base_at``."""
    out = np.full(onsets.size, np.nan)
    n = x.size
    half = max(1, int(round(0.005 * fs)))
    for b, (a, z, r) in enumerate(zip(onsets, offsets, base_at)):
        if not (np.isfinite(a) and np.isfinite(z) and np.isfinite(r)) or z <= a:
            continue
        a_i, z_i, r_i = int(round(a)), int(round(z)), int(round(r))
        if a_i < 0 or z_i >= n:
            continue
        level = x[max(0, r_i - half):min(n, r_i + half + 1)].mean()
        out[b] = float((x[a_i:z_i + 1] - level).sum() / fs)
    return out


def measure(ecg: ECG, delineation: Delineation | None = None, *, method: Literal["median", "beats"] = "median",
            config: DelineatorConfig | None = None) -> Measurements:
    """Heart rate, RR, PR, QRS, QT, QTc (Bazett, Fridericia) and P/QRS/T frontal axes.

    Args:
        ecg: the record.
        delineation: its beat-by-beat delineation; given, the measurements come from it (the
            ``"beats"`` route) whatever ``method`` says.
        method: ``"median"`` measures the median beat (fast, the default); ``"beats"``
            delineates every beat and takes medians over beats.
        config: the delineator's settings (LUDB-tuned defaults when ``None``).

    Returns:
        :class:`Measurements` (NaN where a value cannot be measured: no P waves, one beat,
        no limb leads for the axes ...).

    Raises:
        ValidationError: when the record cannot be delineated (naming it and the reason), or
            for an unknown ``method``.
    """
    if delineation is None and method == "median":
        return _measure_median(median_beat(ecg, config))
    if delineation is None and method != "beats":
        raise ValidationError(f"{ecg.name}: unknown measurement method {method!r} (median, beats)")
    d = delineation if delineation is not None else delineate(ecg, config)
    fs = d.fs
    w = d.waves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rr = _nanmedian(np.diff(d.r_peaks.astype(np.float64))) * 1000.0 / fs if d.n_beats > 1 else float("nan")
        pr = _nanmedian(w["QRS_on"] - w["P_on"]) * 1000.0 / fs
        qrs = _nanmedian(w["QRS_off"] - w["QRS_on"]) * 1000.0 / fs
        qt = _nanmedian(w["T_off"] - w["QRS_on"]) * 1000.0 / fs
    axes = {"P": float("nan"), "QRS": float("nan"), "T": float("nan")}
    usable = np.ones(len(ecg.leads), bool) if ecg.mask is None else ecg.mask.mean(axis=1) > 0.5
    frontal = _frontal_leads(ecg.signal, ecg.leads, usable)
    if frontal is not None:
        for wave in axes:
            on, off = w[f"{wave}_on"], w[f"{wave}_off"]
            areas = [_nanmedian(_net_areas(x, fs, on, off, w["QRS_on"])) for x in frontal]
            axes[wave] = frontal_axis(*areas)
    return _measurements(rr, pr, qrs, qt, axes, d.n_beats)


def _measure_median(mb: MedianBeat) -> Measurements:
    """Measurements of a record from its median beat."""
    w = mb.waves
    axes = {"P": float("nan"), "QRS": float("nan"), "T": float("nan")}
    frontal = _frontal_leads(mb.signal, mb.leads, np.isfinite(mb.signal).all(axis=1))
    if frontal is not None:
        at = np.array([w["QRS_on"]])
        for wave in axes:
            on, off = np.array([w[f"{wave}_on"]]), np.array([w[f"{wave}_off"]])
            areas = [float(_net_areas(x, mb.fs, on, off, at)[0]) for x in frontal]
            axes[wave] = frontal_axis(*areas)
    return _measurements(mb.rr_ms, mb.interval_ms("P_on", "QRS_on"), mb.interval_ms("QRS_on", "QRS_off"),
                         mb.interval_ms("QRS_on", "T_off"), axes, mb.n_beats)


def _measurements(rr: float, pr: float, qrs: float, qt: float, axes: dict[str, float], n_beats: int) -> Measurements:
    hr = 60000.0 / rr if rr > 0 else float("nan")
    both = math.isfinite(qt) and math.isfinite(rr)
    return Measurements(
        heart_rate_bpm=hr, rr_ms=rr, pr_ms=pr, qrs_ms=qrs, qt_ms=qt,
        qtc_bazett_ms=qtc_bazett(qt, rr) if both else float("nan"),
        qtc_fridericia_ms=qtc_fridericia(qt, rr) if both else float("nan"),
        p_axis_deg=axes["P"], qrs_axis_deg=axes["QRS"], t_axis_deg=axes["T"], n_beats=n_beats,
    )
