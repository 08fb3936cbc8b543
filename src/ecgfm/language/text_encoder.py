"""Text encoders: a compact transformer trained from scratch, or a local Hugging Face model.

:class:`TextEncoder` is a pre-LN transformer (the blocks of :mod:`ecgfm.models.base`, as
``vit1d`` uses them) over report tokens:

    ids [B, N] -> token embedding + learned position embedding [B, N, W] -> depth x block
    (bidirectional attention, padding masked out of every key) -> LayerNorm -> pool -> [B, W]

Pooling is the ``<cls>`` token's output (``"cls"``, BERT) or the mean over the real tokens
(``"mean"``, Sentence-BERT; the default: with a few thousand short reports it trains faster).

:class:`HFTextEncoder` wraps a pretrained Hugging Face model from a *local* folder (no
download is ever attempted) with its own tokenizer, for users who have, e.g., a clinical BERT
on disk. It needs the optional ``transformers`` package; nothing in ecgfm imports it otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.language.text import PAD

__all__ = ["HFTextEncoder", "TextEncoder", "TextEncoderConfig", "text_encoder_config"]

POOLING = ("cls", "mean")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Architecture of :class:`TextEncoder`."""

    vocab_size: int = 2000  # tokens (the tokenizer's vocab_size)
    width: int = 256  # W, model width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (divide width)
    mlp_ratio: float = 4.0  # MLP hidden width / W
    max_length: int = 128  # longest token sequence (learned position table)
    dropout: float = 0.1  # dropout after embeddings, attention projection and MLP
    attn_dropout: float = 0.0  # dropout on attention weights
    pooling: str = "mean"  # "cls" (first token) or "mean" (over real tokens)

    def __post_init__(self) -> None:
        _check_transformer(self, "text_encoder")
        if self.pooling not in POOLING:
            raise ValidationError(f"text_encoder.pooling: expected one of {', '.join(POOLING)}, got {self.pooling!r}")


def _check_transformer(cfg: Any, where: str) -> None:
    for name in ("vocab_size", "width", "heads", "max_length"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"{where}.{name}: expected a positive integer, got {value!r}")
    if isinstance(cfg.depth, bool) or not isinstance(cfg.depth, int) or cfg.depth < 0:
        raise ValidationError(f"{where}.depth: expected an integer >= 0, got {cfg.depth!r}")
    if cfg.width % cfg.heads:
        raise ValidationError(f"{where}.heads: must divide width ({cfg.width}), got {cfg.heads}")
    if not cfg.mlp_ratio > 0:
        raise ValidationError(f"{where}.mlp_ratio: expected > 0, got {cfg.mlp_ratio!r}")
    for name in ("dropout", "attn_dropout"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValidationError(f"{where}.{name}: expected a number in [0, 1), got {getattr(cfg, name)!r}")


def text_encoder_config(values: Mapping[str, Any] | None = None, **fixed: Any) -> TextEncoderConfig:
    """:class:`TextEncoderConfig` from a mapping of overrides (unknown keys list the valid ones)."""
    return _build(TextEncoderConfig, {**dict(values or {}), **fixed}, "text_encoder")


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValidationError(f"{where}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(known)})")
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    clean = {}
    for k, v in values.items():
        if hints[k] in (float, "float") and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        clean[k] = v
    return cls(**clean)


class TextEncoder(nn.Module):
    """A compact pre-LN transformer over report tokens (see the module docstring).

    Attributes:
        config: the :class:`TextEncoderConfig`.
        num_features: W, width of the pooled output.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        from ecgfm.models.base import Transformer, init_transformer

        self.config = config
        self.num_features = config.width
        self.token_embed = nn.Embedding(config.vocab_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, config.width))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = Transformer(config.width, config.depth, config.heads, config.mlp_ratio, config.dropout,
                                  config.attn_dropout)
        init_transformer(self)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward_tokens(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Token outputs ``[B, N, W]`` of ``ids`` ``[B, N]`` (``mask`` ``[B, N]`` bool, True = real
        token; default ``ids != <pad>``)."""
        b, n = ids.shape
        if n > self.config.max_length:
            raise ValidationError(f"TextEncoder: {n} tokens, at most max_length={self.config.max_length}")
        mask = ids != PAD if mask is None else mask.bool()
        x = self.token_embed(ids) + self.pos_embed[:, :n]  # [B, N, W]
        return self.blocks(self.drop(x), mask)  # [B, N, W]

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pooled ``[B, W]`` of ``ids`` ``[B, N]``."""
        mask = ids != PAD if mask is None else mask.bool()
        tokens = self.forward_tokens(ids, mask)
        if self.config.pooling == "cls":
            return tokens[:, 0]  # [B, W]
        m = mask.to(tokens.dtype)[..., None]  # [B, N, 1]
        return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [B, W]


class HFTextEncoder(nn.Module):
    """A pretrained Hugging Face encoder read from a local folder, pooled like :class:`TextEncoder`.

    Args:
        path: a folder written by ``save_pretrained`` (``config.json``, weights, tokenizer files).
        pooling: ``"cls"`` (first token) or ``"mean"`` over real tokens.
        pretrained: load the folder's weights (False: only its architecture, e.g. when the
            weights come from an ecgfm language model folder afterwards).

    Use :meth:`tokenize` for its inputs: its vocabulary is the model's own, not ecgfm's.

    Raises:
        ValidationError: ``transformers`` is not installed, or the folder is not a model.
    """

    def __init__(self, path: str | os.PathLike[str], pooling: str = "mean", pretrained: bool = True) -> None:
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise ValidationError("a Hugging Face text model needs the optional 'transformers' package "
                                  "(pip install transformers)") from None
        p = Path(path)
        if not (p / "config.json").is_file():
            raise ValidationError(f"{p}: not a local Hugging Face model folder (no config.json)")
        if pooling not in POOLING:
            raise ValidationError(f"pooling: expected one of {', '.join(POOLING)}, got {pooling!r}")
        try:
            if pretrained:
                self.model = transformers.AutoModel.from_pretrained(str(p), local_files_only=True)
            else:
                cfg = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
                self.model = transformers.AutoModel.from_config(cfg)
            self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValidationError(f"{p}: cannot load the Hugging Face model ({exc})") from None
        self.path = str(p)
        self.pooling = pooling
        self.num_features = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str | None], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N, max_length] int64, mask [N, max_length] bool)`` with the model's tokenizer."""
        items = ["" if t is None or t != t else str(t) for t in texts]
        enc = self.hf_tokenizer(items, max_length=max_length, truncation=True, padding="max_length",
                                return_tensors="np")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(bool)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pooled ``[B, W]`` of the model's last hidden states."""
        if mask is None:
            raise ValidationError("HFTextEncoder needs the attention mask from tokenize()")
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, N, W]
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.to(hidden.dtype)[..., None]
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
