"""ecgfm: ECG foundation models, from vendor files to a health profile.

``import ecgfm`` is light: numpy and the record type. Readers, preprocessing, plotting and the
CLI import their heavier dependencies when first used.

>>> import ecgfm
>>> ecg = ecgfm.read("examples/ptbxl_00001_hr.hea")  # doctest: +SKIP
>>> clean = ecgfm.Pipeline.standard()(ecg)          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecgfm.errors import ECGError, ReadError, UnsupportedFormatError, ValidationError
from ecgfm.io import READERS, detect_format, read
from ecgfm.leads import STANDARD_12, canonical_lead
from ecgfm.record import ECG, Metadata

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ecgfm.models.portable import load_model
    from ecgfm.preprocess import Pipeline

# ``load_model`` imports torch and safetensors, so it loads on first use only.
_LAZY = {"Pipeline": "ecgfm.preprocess", "check_quality": "ecgfm.quality", "plot_ecg": "ecgfm.plot",
         "load_model": "ecgfm.models.portable"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm' has no attribute {name!r}")


__all__ = [
    "ECG", "ECGError", "Metadata", "Pipeline", "READERS", "ReadError", "STANDARD_12",
    "UnsupportedFormatError", "ValidationError", "__version__", "canonical_lead",
    "check_quality", "detect_format", "load_model", "plot_ecg", "read",
]
