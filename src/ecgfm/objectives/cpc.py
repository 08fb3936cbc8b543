"""Contrastive predictive coding (CPC): predict future latent steps from an autoregressive context.

Reference: van den Oord, Li & Vinyals, "Representation learning with contrastive predictive
coding", 2018; for ECG, Mehari & Strodthoff, "Self-supervised representation learning from
12-lead ECG data", Computers in Biology and Medicine 2022 (CPC was their best objective on
PTB-XL), and the ECGFM line of work that pretrains with CPC.

The encoder turns a window into a latent sequence ``z_1 .. z_n`` (``[B, D, n]``): by default
(``latents="patches"``) each step is the pooled encoding of its own non-overlapping patch of
``patch_seconds`` (see :mod:`ecgfm.objectives.ssl` for why), or the encoder's feature map
(``latents="features"``). An autoregressive context network summarises the past,
``c_t = g_ar(z_1 .. z_t)`` (a GRU, or a causal transformer), and a linear predictor per step
``k = 1 .. K`` scores the future::

    loss = 1/K sum_k  mean_t  InfoNCE( W_k c_t ,  z_{t+k} ;  negatives )

with InfoNCE as in :mod:`ecgfm.objectives.contrastive`: the positive is ``z_{t+k}`` of the same
record; the negatives are every other latent step of the batch, of the same record (other time
steps) and of the other records, gathered from every DDP rank (``negatives="batch"``), or only
the other time steps of the same record (``negatives="record"``). Similarity: cosine with
temperature 0.1 by default; ``similarity="dot"`` with ``temperature=1`` is the paper's
log-bilinear score ``exp(z^T W_k c_t)``.

After pretraining the context network and the predictors are dropped; the encoder is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.objectives.contrastive import gather_with_grad, info_nce
from ecgfm.objectives.ssl import EncoderDims, SSLInput, SSLObjective, View

__all__ = ["CPC", "CausalTransformer"]


class CausalTransformer(nn.Module):
    """A pre-LN transformer whose step ``t`` attends to steps ``<= t``: ``[B, n, D]`` -> ``[B, n, D]``."""

    def __init__(self, width: int, depth: int = 2, heads: int = 4, max_steps: int = 512) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.pos = nn.Parameter(torch.zeros(max_steps, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n > self.pos.shape[0]:
            raise ValidationError(f"CausalTransformer: {n} steps, at most {self.pos.shape[0]}")
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=x.device, dtype=x.dtype)
        return self.norm(self.blocks(x + self.pos[:n], mask=causal, is_causal=True))  # [B, n, D]


class CPC(SSLObjective):
    """Contrastive predictive coding over a registry encoder's latent sequence.

    Args:
        dims: the encoder's widths, rate and window.
        latents: ``"patches"`` (each step encodes its own patch) or ``"features"`` (the
            encoder's feature map).
        patch_seconds: patch length for ``latents="patches"`` (0.5 s: 10 steps in a 5 s window).
        steps: ``K``, how many steps ahead are predicted.
        context: ``"gru"`` (one layer, as the paper) or ``"transformer"`` (causal).
        context_dim: width of the context ``c_t``.
        context_depth: transformer layers (``context="transformer"``).
        temperature, similarity: InfoNCE scoring (see the module docstring).
        negatives: ``"batch"`` or ``"record"``.
        gather: take negatives from every DDP rank (``negatives="batch"``).

    Parts: ``loss``, ``accuracy`` (share of predictions whose best key is the true future step,
    averaged over ``k``), ``loss_k<k>`` per step ahead.
    """

    name = "cpc"

    def __init__(self, dims: EncoderDims, *, latents: str = "patches", patch_seconds: float = 0.5,
                 steps: int = 4, context: str = "gru", context_dim: int = 256, context_depth: int = 2,
                 temperature: float = 0.1, similarity: str = "cosine", negatives: str = "batch",
                 gather: bool = True) -> None:
        super().__init__()
        if latents not in ("patches", "features"):
            raise ValidationError(f"cpc: latents must be 'patches' or 'features', got {latents!r}")
        if context not in ("gru", "transformer"):
            raise ValidationError(f"cpc: context must be 'gru' or 'transformer', got {context!r}")
        if negatives not in ("batch", "record"):
            raise ValidationError(f"cpc: negatives must be 'batch' or 'record', got {negatives!r}")
        if steps < 1 or context_dim < 1:
            raise ValidationError("cpc: steps and context_dim must be >= 1")
        self.patch = round(patch_seconds * dims.fs) if latents == "patches" else 0
        n_steps = dims.window // self.patch if self.patch else None
        if latents == "patches":
            if self.patch < dims.min_samples:
                raise ValidationError(f"cpc: patches of {patch_seconds} s are {self.patch} samples; the encoder "
                                      f"needs at least {dims.min_samples}")
            if n_steps is not None and n_steps < steps + 1:
                raise ValidationError(f"cpc: a window of {dims.window} samples holds {n_steps} patches of "
                                      f"{self.patch}; predicting {steps} steps ahead needs at least {steps + 1}")
        self.options = {"latents": latents, "patch_seconds": float(patch_seconds), "steps": int(steps),
                        "context": context, "context_dim": int(context_dim), "context_depth": int(context_depth),
                        "temperature": float(temperature), "similarity": similarity, "negatives": negatives,
                        "gather": bool(gather)}
        self.latents, self.steps, self.context_kind = latents, int(steps), context
        self.temperature, self.similarity = float(temperature), similarity
        self.negatives, self.gather = negatives, bool(gather)
        self.uses_pooled = latents == "patches"
        width = dims.pooled if latents == "patches" else dims.sequence
        self.norm = nn.LayerNorm(width)
        if context == "gru":
            self.context: nn.Module = nn.GRU(width, context_dim, batch_first=True)
            self.project_in: nn.Module = nn.Identity()
        else:
            self.project_in = nn.Linear(width, context_dim)
            self.context = CausalTransformer(context_dim, context_depth, heads=max(1, context_dim // 64))
        self.predictors = nn.ModuleList(nn.Linear(context_dim, width) for _ in range(self.steps))

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:
        output = "patches" if self.latents == "patches" else "sequence"
        return {"z": View(inp.signal, inp.lead_mask, output, self.patch)}, {}

    def forward(self, outputs: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
        z = self.norm(outputs["z"].transpose(1, 2))  # [B, n, D]
        b, n, d = z.shape
        if n < self.steps + 1:
            raise ValidationError(f"cpc: {n} latent steps; predicting {self.steps} ahead needs at least "
                                  f"{self.steps + 1} (a longer window, or shorter patches)")
        if self.context_kind == "gru":
            c, _ = self.context(z)  # [B, n, H]
        else:
            c = self.context(self.project_in(z))  # [B, n, H]
        keys = z.reshape(b * n, d)  # [B*n, D]
        offset = 0
        if self.negatives == "batch" and self.gather:
            keys, offset = gather_with_grad(keys)
        record_of_key = torch.arange(keys.shape[0], device=z.device) // n  # [M]
        losses, accuracies = [], []
        out: dict[str, Tensor] = {}
        for k, predictor in enumerate(self.predictors, start=1):
            pred = predictor(c[:, : n - k]).reshape(-1, d)  # [B*(n-k), D]
            rec = torch.arange(b, device=z.device).repeat_interleave(n - k)
            t = torch.arange(n - k, device=z.device).repeat(b)
            positive = offset + rec * n + t + k  # index of z_{t+k} of the same record
            exclude = None
            if self.negatives == "record":
                exclude = record_of_key[None, :] != (rec + offset // n)[:, None]  # [N, M]
            r = info_nce(pred, keys, positive, temperature=self.temperature, similarity=self.similarity,
                         exclude=exclude)
            losses.append(r["loss"])
            accuracies.append(r["accuracy"])
            out[f"loss_k{k}"] = r["loss"].detach()
        out["loss"] = torch.stack(losses).mean()
        out["accuracy"] = torch.stack(accuracies).mean()
        return out
