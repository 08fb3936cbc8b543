"""The profile service: a FastAPI app, its web page, and ``ecgfm serve``.

``import ecgfm.serve`` is light; :func:`create_app` imports FastAPI, torch and the model code
on first use (``pip install 'ecgfm[serve]'``).

>>> from ecgfm.serve import create_app                       # doctest: +SKIP
>>> app = create_app("models/default", backend="onnx")       # doctest: +SKIP

Endpoints, limits and the JSON profile are described in ``docs/serve.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecgfm.serve.app import ServiceLimits, create_app

_LAZY = {"create_app": "ecgfm.serve.app", "ServiceLimits": "ecgfm.serve.app",
         "DynamicBatcher": "ecgfm.serve.batching"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.serve' has no attribute {name!r}")


__all__ = ["DynamicBatcher", "ServiceLimits", "create_app"]
