"""Models: the encoder registry and the encoder families (see ``docs/models.md``).

``import ecgfm.models`` imports no torch; the names below load their module on first use.

>>> from ecgfm.models import create_encoder, list_encoders   # doctest: +SKIP
>>> encoder = create_encoder("xresnet1d101", num_outputs=5)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_LAZY = {
    "create_encoder": "ecgfm.models.registry",
    "encoder_config": "ecgfm.models.registry",
    "list_encoders": "ecgfm.models.registry",
    "register_encoder": "ecgfm.models.registry",
    "EncoderConfig": "ecgfm.models.registry",
    "Encoder": "ecgfm.models.base",
}


def default_model_path() -> Path:
    """The folder of the default model shipped inside the package (see ``docs/weights.md``):
    ``ecgfm.load_model()`` with no path loads it."""
    return Path(__file__).resolve().parent / "default"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.models' has no attribute {name!r}")


__all__ = sorted([*_LAZY, "default_model_path"])
