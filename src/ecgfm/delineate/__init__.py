"""ECG delineation and the measurements of a 12-lead report.

``delineate(ecg)`` places the onset, peak and offset of the P wave, QRS complex and T wave of
every beat, lead by lead and across leads; ``median_beat(ecg)`` forms and delineates each lead's
representative beat; ``measure(ecg)`` turns either into heart rate, RR, PR, QRS, QT, QTc
(Bazett, Fridericia) and the P/QRS/T frontal axes. Any record works: any rate,
one lead or twelve, masked leads and NaN gaps. Validated on LUDB's manual annotations against
neurokit2 (``docs/delineation.md``, ``benchmarks/bench_delineation_ludb.py``).

>>> import ecgfm
>>> from ecgfm.delineate import delineate, measure
>>> ecg = ecgfm.read("../shared/data/ludb/data/1.hea")  # doctest: +SKIP
>>> measure(ecg).qrs_ms  # doctest: +SKIP
"""

from __future__ import annotations

from ecgfm.delineate._waves import KEYS
from ecgfm.delineate.config import DelineatorConfig
from ecgfm.delineate.delineation import Delineation, delineate
from ecgfm.delineate.measure import Measurements, frontal_axis, measure, qtc_bazett, qtc_fridericia
from ecgfm.delineate.median import MedianBeat, median_beat

__all__ = [
    "KEYS", "Delineation", "DelineatorConfig", "Measurements", "MedianBeat", "delineate", "frontal_axis",
    "measure", "median_beat", "qtc_bazett", "qtc_fridericia",
]
