"""Objectives: losses that take a model's outputs and targets and return ``{"loss": ..., parts}``.

- :mod:`ecgfm.objectives.supervised`: multi-label BCE and asymmetric loss, multi-class
  cross-entropy, regression MSE/Huber and normal/abnormal BCE, and :func:`create_loss`.

``import ecgfm.objectives`` imports no torch; the names below load their module on first use.

>>> from ecgfm.objectives import create_loss          # doctest: +SKIP
>>> loss = create_loss("multilabel", "asl")           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    name: "ecgfm.objectives.supervised"
    for name in ("AsymmetricLoss", "BinaryBCE", "LOSSES", "MultiClassCE", "MultiLabelBCE",
                 "RegressionLoss", "create_loss", "pos_weight_from_labels")
}
_LAZY.update({name: "ecgfm.objectives.alignment" for name in ("CORAL", "MMD", "Distillation", "create_alignment")})
_LAZY.update({name: "ecgfm.objectives.survival"
              for name in ("CoxPartialLikelihood", "DiscreteTimeHazard", "hazards_to_survival", "risk_at")})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.objectives' has no attribute {name!r}")


__all__ = sorted(_LAZY)
