"""Preprocessing: pure steps ``ECG -> ECG`` composed into a hashable, serialisable Pipeline.

>>> from ecgfm.preprocess import Pipeline
>>> Pipeline.parse("resample:fs=500|bandpass:low=0.5,high=40|notch:freq=50|normalize")
... # doctest: +ELLIPSIS
Pipeline('resample:fs=500.0|bandpass:low=0.5,high=40.0,order=2|notch:freq=50.0,q=30.0|...')

Steps are registered by name with :func:`register_step`; :data:`STEPS` maps names to classes.
scipy is imported when a step first runs, not when this package is imported.
"""

from __future__ import annotations

from ecgfm.preprocess.pipeline import FORMAT_VERSION, Pipeline
from ecgfm.preprocess.registry import STEPS, Step, make_step, register_step
from ecgfm.preprocess.steps import (
    BandPass,
    Clip,
    CropOrPad,
    HighPass,
    LowPass,
    Normalize,
    Notch,
    Resample,
    SelectLeads,
)

__all__ = [
    "FORMAT_VERSION", "STEPS", "BandPass", "Clip", "CropOrPad", "HighPass", "LowPass",
    "Normalize", "Notch", "Pipeline", "Resample", "SelectLeads", "Step", "make_step",
    "register_step",
]
