"""The signal-language network: an ECG encoder, a text encoder, projections and a report decoder.

::

    ECG  [B, L, T] --encoder.forward_features--> features [B, D, T'] --pool--> [B, D] --ecg_proj--> e [B, E]
                                                      |                                (normalised)
                                                      +--> ReportDecoder (cross-attention) --> report tokens
    text ids [B, N] --text encoder--> [B, W] --text_proj--> t [B, E] (normalised)

    similarity = exp(logit_scale) * <e, t>      (clamped to at most ``max_logit_scale``)

The ECG encoder is any registry encoder (:mod:`ecgfm.models.registry`); its own linear head, when
it has one, is the normal/abnormal classifier of multi-task pretraining. Either side may be
absent: a captioning model has no text encoder or projections, a CLIP model no decoder.
Projections are a linear layer (CLIP) or a two-layer MLP (``"mlp"``: Linear-GELU-Linear, as
ConVIRT and SimCLR).

:meth:`ECGTextModel.architecture` describes everything but the ECG encoder as a JSON-able dict,
and :meth:`ECGTextModel.from_architecture` rebuilds the same network from it (how a saved
language model is loaded, :mod:`ecgfm.language.portable`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.language.clip_loss import clamp_logit_scale
from ecgfm.language.decoder import ReportDecoder, decoder_config
from ecgfm.language.text_encoder import HFTextEncoder, TextEncoder, text_encoder_config

__all__ = ["ECGTextModel", "PROJECTIONS"]

PROJECTIONS = ("linear", "mlp")


def _projection(cin: int, cout: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(cin, cout)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(cin, cin), nn.GELU(), nn.Linear(cin, cout))
    raise ValidationError(f"projection: expected one of {', '.join(PROJECTIONS)}, got {kind!r}")


class ECGTextModel(nn.Module):
    """ECG encoder + optional text side (encoder, projections, temperature) + optional decoder.

    Args:
        ecg_encoder: a registry encoder (``forward_features``, ``forward_head``, ``num_features``).
        text_encoder: a :class:`~ecgfm.language.text_encoder.TextEncoder` or
            :class:`~ecgfm.language.text_encoder.HFTextEncoder`, or None (no contrastive side).
        decoder: a :class:`~ecgfm.language.decoder.ReportDecoder` whose ``memory_dim`` is the
            encoder's feature channels, or None.
        embed_dim: E, the joint embedding width.
        projection: ``"linear"`` or ``"mlp"``.
        init_temperature: initial softmax temperature (CLIP: 0.07, so the scale starts at 14.3).
        learn_temperature: learn the scale (else it stays at ``1 / init_temperature``).
        max_logit_scale: the clamp on the scale (CLIP: 100).
    """

    def __init__(self, ecg_encoder: nn.Module, text_encoder: nn.Module | None = None,
                 decoder: ReportDecoder | None = None, *, embed_dim: int = 256, projection: str = "linear",
                 init_temperature: float = 0.07, learn_temperature: bool = True,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if text_encoder is None and decoder is None:
            raise ValidationError("ECGTextModel needs a text encoder, a decoder or both")
        if not 0 < float(init_temperature) <= 1:
            raise ValidationError(f"init_temperature must be in (0, 1], got {init_temperature!r}")
        if not float(max_logit_scale) >= 1:
            raise ValidationError(f"max_logit_scale must be >= 1, got {max_logit_scale!r}")
        self.ecg_encoder = ecg_encoder
        self.text_encoder = text_encoder
        self.decoder = decoder
        self.embed_dim = int(embed_dim)
        self.projection = projection
        self.max_logit_scale = float(max_logit_scale)
        self.init_temperature = float(init_temperature)
        self.learn_temperature = bool(learn_temperature)
        if text_encoder is not None:
            self.ecg_proj = _projection(int(ecg_encoder.num_features), self.embed_dim, projection)
            self.text_proj = _projection(int(text_encoder.num_features), self.embed_dim, projection)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(init_temperature))),
                                            requires_grad=self.learn_temperature)
        if decoder is not None:
            channels = _feature_channels(ecg_encoder)
            if channels is not None and decoder.config.memory_dim != channels:
                raise ValidationError(f"decoder.memory_dim ({decoder.config.memory_dim}) must be the encoder's "
                                      f"feature channels ({channels})")

    # -- the ECG side ---------------------------------------------------------------------------
    def ecg_features(self, signal: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Per-time-step features ``[B, D, T']`` of ``signal`` ``[B, L, T]``."""
        enc = self.ecg_encoder
        use_mask = lead_mask is not None and bool(getattr(enc, "supports_lead_mask", False))
        return enc.forward_features(signal, lead_mask if use_mask else None)

    def ecg_pooled(self, features: Tensor) -> Tensor:
        """Pooled ``[B, D]`` (the encoder's pre-logits features) from ``[B, D, T']``."""
        return self.ecg_encoder.forward_head(features, pre_logits=True)

    def ecg_embedding(self, pooled: Tensor) -> Tensor:
        """Normalised joint embedding ``[B, E]`` of pooled ECG features ``[B, D]``."""
        self._need_text_side()
        return F.normalize(self.ecg_proj(pooled), dim=-1)

    def abnormal_logit(self, pooled: Tensor) -> Tensor:
        """The encoder head's logit ``[B, 1]`` (normal/abnormal), from pooled features."""
        enc = self.ecg_encoder
        if int(getattr(enc, "num_outputs", 0)) != 1:
            raise ValidationError("the ECG encoder has no one-output head (normal/abnormal)")
        return enc.head(enc.head_drop(pooled))

    # -- the text side ---------------------------------------------------------------------------
    def text_embedding(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalised joint embedding ``[B, E]`` of token ids ``[B, N]`` (and mask ``[B, N]``)."""
        self._need_text_side()
        return F.normalize(self.text_proj(self.text_encoder(ids, mask)), dim=-1)  # type: ignore[misc]

    def scale(self) -> Tensor:
        """``1 / temperature``: ``exp(logit_scale)`` clamped to ``[1, max_logit_scale]``."""
        self._need_text_side()
        return clamp_logit_scale(self.logit_scale, self.max_logit_scale)

    def _need_text_side(self) -> None:
        if self.text_encoder is None:
            raise ValidationError("this model has no text encoder (a report-generation model); "
                                  "zero-shot scoring and retrieval need one")

    # -- description -----------------------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        """JSON-able description of everything but the ECG encoder (see :meth:`from_architecture`)."""
        import dataclasses

        text: dict[str, Any] | None = None
        if isinstance(self.text_encoder, TextEncoder):
            text = {"kind": "ecgfm", "config": dataclasses.asdict(self.text_encoder.config)}
        elif isinstance(self.text_encoder, HFTextEncoder):
            text = {"kind": "huggingface", "path": self.text_encoder.path, "pooling": self.text_encoder.pooling}
        return {
            "embed_dim": self.embed_dim, "projection": self.projection,
            "init_temperature": self.init_temperature, "learn_temperature": self.learn_temperature,
            "max_logit_scale": self.max_logit_scale, "text_encoder": text,
            "decoder": None if self.decoder is None else dataclasses.asdict(self.decoder.config),
        }

    @classmethod
    def from_architecture(cls, ecg_encoder: nn.Module, arch: Mapping[str, Any], *,
                          hf_pretrained: bool = False) -> ECGTextModel:
        """Rebuild from :meth:`architecture`'s dict (fresh weights; load a state dict after).

        Raises:
            ValidationError: an unknown text encoder kind, or invalid configs (naming the field).
        """
        text_spec = arch.get("text_encoder")
        text: nn.Module | None = None
        if text_spec is not None:
            kind = text_spec.get("kind")
            if kind == "ecgfm":
                text = TextEncoder(text_encoder_config(text_spec["config"]))
            elif kind == "huggingface":
                text = HFTextEncoder(text_spec["path"], text_spec.get("pooling", "mean"), pretrained=hf_pretrained)
            else:
                raise ValidationError(f"text_encoder.kind: expected 'ecgfm' or 'huggingface', got {kind!r}")
        dec = None if arch.get("decoder") is None else ReportDecoder(decoder_config(arch["decoder"]))
        return cls(ecg_encoder, text, dec, embed_dim=int(arch.get("embed_dim", 256)),
                   projection=str(arch.get("projection", "linear")),
                   init_temperature=float(arch.get("init_temperature", 0.07)),
                   learn_temperature=bool(arch.get("learn_temperature", True)),
                   max_logit_scale=float(arch.get("max_logit_scale", 100.0)))


def _feature_channels(encoder: nn.Module) -> int | None:
    """Channels D of ``forward_features`` (from a dummy pass), or None when it cannot run one."""
    length = max(int(getattr(encoder, "min_samples", 1) or 1), 256)
    if getattr(encoder, "max_samples", None):
        length = min(length, int(encoder.max_samples))
    ref = next(encoder.parameters(), None)
    x = torch.zeros(1, int(getattr(encoder, "in_leads", 12)), length,
                    device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
    was = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            return int(encoder.forward_features(x).shape[1])
    except Exception:  # an encoder that cannot run a dummy input: checked at the first batch instead
        return None
    finally:
        encoder.train(was)


def feature_channels(encoder: nn.Module) -> int:
    """Channels D of the encoder's ``forward_features`` output (what the decoder attends to)."""
    d = _feature_channels(encoder)
    if d is None:
        raise ValidationError(f"cannot run {type(encoder).__name__} on a dummy input to find its feature channels")
    return d
