"""vit1d: a patch ViT over every lead, with lead embeddings (the ST-MEM family).

Reference: Na et al., "Guiding masked representation learning to capture spatio-temporal
relationship of electrocardiogram" (ST-MEM), ICLR 2024. ST-MEM's encoder (``ST_MEM_ViT``) cuts
each lead of a 12 x 2250 input (250 Hz, 9 s) into 75-sample patches, embeds every patch with one
shared ``Linear(75, 768)``, adds a learned time-position embedding and a learned embedding of
its lead, frames each lead's patch sequence with a SEP token at both ends, runs a 12-layer ViT-B
over all 12 x 32 tokens and averages the patch tokens. ``vit1d_base`` is that model (86M
parameters); the registered default ``vit1d`` is a small one for CPUs (width 192, depth 8,
3 heads, 50-sample patches, 3.62M parameters; vit1d_base: 85.32M).

Data path (``vit1d`` on 12 x 1000, 100 Hz x 10 s; ``n = T // patch_size`` patches per lead):

1. crop to ``n * patch_size`` samples (the last ``T % patch_size`` are not used) and cut into
   patches ``[B, L, n, P]`` -> Linear -> ``[B, L, n, D]``;
2. + position embedding ``pos[1 .. n]``; SEP tokens (one learned vector) + ``pos[0]`` before and
   ``pos[n + 1]`` after each lead (``sep_tokens``) -> ``[B, L, n + 2, D]``;
3. + the lead's embedding (one learned vector per lead index) -> ``[B, L * (n + 2), D]``;
4. pre-LN transformer with a final LayerNorm (:class:`~ecgfm.models.base.Transformer`);
5. SEP tokens removed -> features ``[B, D, L * n]`` (lead-major); pooling is the mean.

ST-MEM applies its LayerNorm after the mean; here it is applied per token before pooling
(timm's ViT), so per-token features are normalised for downstream use too.

Lead mask: a masked lead's tokens are removed from attention with a key padding mask, so no
present token ever sees them — any subset of leads works natively. In the returned feature map
a masked lead's tokens are replaced by the mean of the sample's present tokens, so that mean
(or any) pooling over the map counts only the present leads; the input of masked leads is
zeroed as well. Inputs need ``patch_size <= T <= max_patches * patch_size`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecgfm.models.base import Encoder, Transformer, check_transformer_config, init_transformer
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class ViT1dConfig(EncoderConfig):
    """Patch ViT with lead embeddings (defaults: the small vit1d; ST-MEM is vit1d_base)."""

    in_leads: int = 12  # L, input leads (size of the lead axis); one lead embedding each
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    patch_size: int = 50  # P, samples per patch (ST-MEM: 75 at 250 Hz)
    width: int = 192  # D, token width
    depth: int = 8  # transformer layers
    heads: int = 3  # attention heads (divides width)
    mlp_ratio: float = 4.0  # FFN hidden width / width
    max_patches: int = 256  # patches per lead the position table covers (T <= this * P)
    sep_tokens: bool = True  # a SEP token before and after each lead's patches (ST-MEM)
    qkv_bias: bool = True  # bias in the attention's q/k/v projection
    dropout: float = 0.0  # dropout on embeddings, attention output and FFN
    attn_dropout: float = 0.0  # dropout on attention weights
    head_dropout: float = 0.0  # dropout before the linear head

    def check(self) -> None:
        check_transformer_config(self)
        for field in ("patch_size", "max_patches"):
            self.require(field, getattr(self, field) >= 1, "must be at least 1")


@register_encoder("vit1d", ViT1dConfig)
@register_encoder("vit1d_base", ViT1dConfig, "vit1d_base.json")
class ViT1d(Encoder):
    """Patch ViT encoder; ``forward_features`` gives the patch tokens ``[B, width, L * n]``."""

    def __init__(self, config: ViT1dConfig) -> None:
        super().__init__(config)
        width = config.width
        self.patch_embed = nn.Linear(config.patch_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(config.max_patches + 2, width))
        self.lead_embed = nn.Parameter(torch.zeros(config.in_leads, width))
        self.sep_embed = nn.Parameter(torch.zeros(width)) if config.sep_tokens else None
        self.drop = nn.Dropout(config.dropout)
        self.transformer = Transformer(width, config.depth, config.heads, config.mlp_ratio,
                                       config.dropout, config.attn_dropout, config.qkv_bias)
        init_transformer(self)
        for embedding in (self.pos_embed, self.lead_embed, self.sep_embed):
            if embedding is not None:
                nn.init.trunc_normal_(embedding, std=0.02)
        self.min_samples = config.patch_size
        self.max_samples = config.max_patches * config.patch_size
        self.init_head(width)

    def init_head_layer(self, layer: nn.Linear) -> None:
        init_transformer(layer)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Patch tokens ``[B, width, L * n]`` of ``x`` ``[B, L, T]`` (``n = T // patch_size``)."""
        lead_mask = self.check_input(x, lead_mask)
        b, leads, length = x.shape
        p = self.config.patch_size
        n = length // p
        if lead_mask is not None:
            x = x * lead_mask.unsqueeze(-1).to(x.dtype)  # masked leads zeroed
        patches = x[..., : n * p].reshape(b, leads, n, p)  # [B, L, n, P]
        tokens = self.patch_embed(patches) + self.pos_embed[1 : n + 1]  # [B, L, n, D]
        if self.sep_embed is not None:
            left = (self.sep_embed + self.pos_embed[0]).expand(b, leads, 1, -1)  # [B, L, 1, D]
            right = (self.sep_embed + self.pos_embed[n + 1]).expand(b, leads, 1, -1)
            tokens = torch.cat([left, tokens, right], dim=2)  # [B, L, n + 2, D]
        tokens = tokens + self.lead_embed[:, None, :]  # [B, L, m, D]
        m = tokens.shape[2]
        key_mask = None if lead_mask is None else lead_mask.repeat_interleave(m, dim=1)  # [B, L*m]
        tokens = self.transformer(self.drop(tokens.reshape(b, leads * m, -1)), key_mask)
        tokens = tokens.reshape(b, leads, m, -1)  # [B, L, m, D]
        if self.sep_embed is not None:
            tokens = tokens[:, :, 1:-1]  # [B, L, n, D]
        if lead_mask is not None:
            keep = lead_mask[:, :, None, None]  # [B, L, 1, 1]
            kept = torch.where(keep, tokens, tokens.new_zeros(()))
            mean = kept.sum(dim=(1, 2)) / (keep.sum(dim=(1, 2)) * n)  # [B, D]
            tokens = torch.where(keep, tokens, mean[:, None, None, :])  # [B, L, n, D]
        return tokens.reshape(b, leads * n, -1).transpose(1, 2)  # [B, D, L * n]
