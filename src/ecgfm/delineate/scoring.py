"""Scoring a delineation against manual annotations (LUDB-style ``( peak )`` triplets per lead).

Each fiducial (P onset, P peak, ... T offset) is scored on its own: a detected point matches
the nearest unmatched reference point of the same kind within a tolerance (one-to-one, closest
pairs first); unmatched reference points are false negatives; unmatched detections are false
positives only inside the annotated span of the lead (annotators of LUDB mark only the central
part of each record), though a detection just outside the span may still match. Matched pairs
give the signed error (detected - reference) in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

SCORED_KEYS = ("P_on", "P_peak", "P_off", "QRS_on", "QRS_peak", "QRS_off", "T_on", "T_peak", "T_off")
_KIND = {"p": "P", "N": "QRS", "t": "T"}


def reference_points(symbols: tuple[str, ...] | list[str], samples: np.ndarray) -> dict[str, np.ndarray]:
    """LUDB-style annotations -> ``{key: int64 [n]}`` sample indices per fiducial.

    A peak symbol (``p``, ``N``, ``t``) gives the peak; a ``(`` right before it the onset, a
    ``)`` right after it the offset (either may be missing, e.g. in paced beats).
    """
    out: dict[str, list[int]] = {k: [] for k in SCORED_KEYS}
    for i, sym in enumerate(symbols):
        kind = _KIND.get(sym)
        if kind is None:
            continue
        out[f"{kind}_peak"].append(int(samples[i]))
        if i > 0 and symbols[i - 1] == "(":
            out[f"{kind}_on"].append(int(samples[i - 1]))
        if i + 1 < len(symbols) and symbols[i + 1] == ")":
            out[f"{kind}_off"].append(int(samples[i + 1]))
    return {k: np.asarray(sorted(v), np.int64) for k, v in out.items()}


def match_points(reference: np.ndarray, detected: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two sets of sample indices, closest pairs first.

    Args:
        reference: ``[n]`` reference positions.
        detected: ``[m]`` detected positions (NaN entries are ignored).
        tolerance: largest distance (same unit as the positions) of a match.

    Returns:
        ``(ref_index, det_index)``: int64 arrays of the matched pairs' indices into the inputs.

    >>> match_points(np.array([10, 50]), np.array([12.0, 90.0]), 5)
    (array([0]), array([0]))
    """
    ref = np.asarray(reference, np.float64)
    det = np.asarray(detected, np.float64)
    det_idx = np.flatnonzero(np.isfinite(det))
    if ref.size == 0 or det_idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = det_idx[np.argsort(det[det_idx], kind="stable")]
    ds = det[order]
    pairs = []
    for i, r in enumerate(ref):
        lo, hi = np.searchsorted(ds, r - tolerance, "left"), np.searchsorted(ds, r + tolerance, "right")
        for j in range(lo, hi):
            pairs.append((abs(ds[j] - r), i, int(order[j])))
    pairs.sort()
    used_r: set[int] = set()
    used_d: set[int] = set()
    ri, di = [], []
    for _, i, j in pairs:
        if i in used_r or j in used_d:
            continue
        used_r.add(i)
        used_d.add(j)
        ri.append(i)
        di.append(j)
    return np.asarray(ri, np.int64), np.asarray(di, np.int64)


@dataclass
class Tally:
    """Running counts and errors of one fiducial over many leads and records."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    errors_ms: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.errors_ms.extend(other.errors_ms)

    def summary(self) -> dict[str, float | int | None]:
        """Sensitivity, PPV, F1, mean/SD/MAE of the error (ms), and the counts."""
        se = self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")
        ppv = self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")
        f1 = 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else float("nan")
        e = np.asarray(self.errors_ms)
        return {
            "tp": self.tp, "fn": self.fn, "fp": self.fp,
            "sensitivity": se, "ppv": ppv, "f1": f1,
            "mean_ms": float(e.mean()) if e.size else float("nan"),
            "sd_ms": float(e.std(ddof=1)) if e.size > 1 else float("nan"),
            "mae_ms": float(np.abs(e).mean()) if e.size else float("nan"),
        }


def score_lead(
    reference: Mapping[str, np.ndarray],
    detected: Mapping[str, np.ndarray],
    fs: float,
    *,
    span: tuple[float, float] | None = None,
    tolerance_ms: float = 150.0,
) -> dict[str, Tally]:
    """Score one lead's detections against its reference points, fiducial by fiducial.

    Args:
        reference: ``{key: [n]}`` reference sample indices (see :func:`reference_points`).
        detected: ``{key: [m]}`` detected sample indices (NaN = absent); a missing key counts
            every reference point of that kind as missed.
        fs: sampling rate of both, Hz.
        span: ``(first, last)`` annotated sample; unmatched detections outside it are ignored.
            Default: the first and last reference point of any kind.
        tolerance_ms: largest error of a match (150 ms, as in the LUDB literature).
    """
    tol = tolerance_ms * fs / 1000.0
    if span is None:
        allp = np.concatenate([np.asarray(v, np.float64) for v in reference.values()]) if reference else np.zeros(0)
        span = (float(allp.min()), float(allp.max())) if allp.size else (0.0, -1.0)
    out: dict[str, Tally] = {}
    for key in SCORED_KEYS:
        ref = np.asarray(reference.get(key, np.zeros(0)), np.float64)
        tally = Tally()
        if key not in detected:
            tally.fn = ref.size
            out[key] = tally
            continue
        det = np.asarray(detected[key], np.float64)
        ri, di = match_points(ref, det, tol)
        tally.tp = ri.size
        tally.fn = ref.size - ri.size
        unmatched = np.ones(det.size, bool)
        unmatched[di] = False
        d = det[unmatched]
        tally.fp = int(((d >= span[0]) & (d <= span[1])).sum())
        tally.errors_ms = ((det[di] - ref[ri]) * 1000.0 / fs).tolist()
        out[key] = tally
    return out
