"""Objectives: losses that take a model's outputs and targets and return ``{"loss": ..., parts}``.

- :mod:`ecgfm.objectives.supervised`: multi-label BCE and asymmetric loss, multi-class
  cross-entropy, regression MSE/Huber and normal/abnormal BCE, and :func:`create_loss`.
- :mod:`ecgfm.objectives.survival`: Cox partial likelihood (Breslow/Efron ties) and the
  discrete-time hazard loss.
- :mod:`ecgfm.objectives.alignment`: MMD, CORAL and distillation for reduced-lead transfer.
- Self-supervised (:mod:`~ecgfm.objectives.ssl`, :mod:`~ecgfm.objectives.contrastive`,
  :mod:`~ecgfm.objectives.cpc`, :mod:`~ecgfm.objectives.wav2vec2`,
  :mod:`~ecgfm.objectives.masked`): InfoNCE with a cross-rank gather, contrastive predictive
  coding, wav2vec2-style masked contrast, masked-lead/span reconstruction, multi-segment and
  patient contrast, and weighted combinations (:func:`create_ssl_objective`).

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

_LAZY.update({name: "ecgfm.objectives.ssl"
              for name in ("SSLInput", "SSLObjective", "View", "Combined", "EncoderDims", "SSL_OBJECTIVES",
                           "create_ssl_objective", "encoder_dims", "run_views")})
_LAZY.update({name: "ecgfm.objectives.contrastive"
              for name in ("InfoNCE", "SegmentContrast", "gather_with_grad", "info_nce")})
_LAZY.update({"CPC": "ecgfm.objectives.cpc", "Wav2Vec2": "ecgfm.objectives.wav2vec2",
              "MaskedModelling": "ecgfm.objectives.masked"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.objectives' has no attribute {name!r}")


__all__ = sorted(_LAZY)
