"""wav2vec 2.0-style contrast: mask spans of the latent sequence, contextualise, pick the true
(quantised) latent among distractors.

Reference: Baevski, Zhou, Mohamed & Auli, "wav2vec 2.0: a framework for self-supervised learning
of speech representations", NeurIPS 2020; for ECG, Oh et al., "Lead-agnostic self-supervised
learning for local and global representations of electrocardiogram", CHIL 2022 and DeepECG-SSL,
which pretrain wav2vec 2.0-style on 12-lead ECGs (fairseq-signals).

With the latent sequence ``z_1 .. z_n`` of the encoder (``[B, D, n]``; by default each step is
its own non-overlapping patch, see :mod:`ecgfm.objectives.ssl`):

1. **Masking**: spans of ``mask_length`` steps start at ``round(mask_prob * n / mask_length)``
   random positions per record (spans may overlap, as in fairseq; at least one step is
   masked); masked steps of the LayerNorm-ed, projected latents are replaced by one learned
   embedding.
2. **Context network**: a transformer (with learned position embeddings) over the masked
   sequence gives ``c_t``, projected to ``final_dim``.
3. **Targets**: ``q_t``, the unmasked latent quantised by a Gumbel-softmax product quantiser
   (``G`` codebooks of ``V`` entries; straight-through hard Gumbel while training, the argmax
   otherwise; temperature annealed from ``gumbel_temperature[0]`` by a factor
   ``gumbel_temperature[2]`` per optimizer step down to ``gumbel_temperature[1]``) and
   projected to ``final_dim``; with ``quantize=False`` the projected continuous latent.
4. **Contrast**: for each masked step, InfoNCE (cosine, temperature ``kappa``) of ``c_t``
   against the targets of the masked steps: the positive is ``q_t``, the distractors are the
   other masked steps of the same record (``negatives="record"``, the paper's choice) or of
   the whole batch on every DDP rank (``negatives="batch"``, the default: with 10 latent steps
   per window a record has only a few masked steps).
5. **Diversity**: ``L_d = (G V - sum_g exp(H(p_g))) / (G V)`` with ``p_g`` the batch-averaged
   softmax over codebook ``g``'s entries (no Gumbel noise), which pushes the codebooks to be
   used evenly. ``loss = L_contrast + diversity_weight * L_d``.

After pretraining the context network, quantiser and projections are dropped; the encoder (the
"feature encoder" of wav2vec 2.0) is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.models.base import Transformer
from ecgfm.objectives.contrastive import gather_no_grad, gather_with_grad, info_nce
from ecgfm.objectives.ssl import EncoderDims, SSLInput, SSLObjective, View, random_uniform

__all__ = ["GumbelQuantizer", "Wav2Vec2", "expected_masked", "span_mask"]


def span_mask(batch: int, steps: int, mask_prob: float, mask_length: int, generator: torch.Generator | None,
              device: torch.device | str = "cpu", min_masks: int = 1) -> Tensor:
    """bool ``[batch, steps]``: spans of ``mask_length`` starting at ``max(min_masks,
    round(mask_prob * steps / mask_length))`` distinct random positions per row (spans may
    overlap; a span never runs past the end)."""
    if not 0 < mask_prob <= 1 or mask_length < 1:
        raise ValidationError(f"span_mask: mask_prob must be in (0, 1] and mask_length >= 1, got {mask_prob}, {mask_length}")
    length = min(mask_length, steps)
    starts_possible = steps - length + 1
    n_spans = min(max(min_masks, round(mask_prob * steps / length)), starts_possible)
    # n_spans distinct starts per row: the first n_spans of a random permutation (argsort of noise)
    noise = random_uniform((batch, starts_possible), generator, "cpu")
    starts = noise.argsort(dim=1)[:, :n_spans]  # [B, S]
    positions = (starts[:, :, None] + torch.arange(length)[None, None, :]).reshape(batch, -1)  # [B, S*len]
    mask = torch.zeros(batch, steps, dtype=torch.bool)
    mask.scatter_(1, positions, True)
    return mask.to(device)


class GumbelQuantizer(nn.Module):
    """Product quantiser with Gumbel-softmax selection (wav2vec 2.0's ``GumbelVectorQuantizer``).

    ``[N, D]`` -> ``[N, code_dim]``: ``G`` codebooks of ``V`` learned entries of ``code_dim / G``
    each; a linear layer gives ``G x V`` logits, one entry is picked per codebook (hard Gumbel
    with straight-through gradients while training, the argmax in eval mode) and the picked
    entries are concatenated.

    Attributes:
        temperature: the current Gumbel temperature (set by the owner's schedule).
    """

    def __init__(self, in_dim: int, groups: int = 2, entries: int = 64, code_dim: int = 128) -> None:
        super().__init__()
        if groups < 1 or entries < 2 or code_dim % groups:
            raise ValidationError(f"GumbelQuantizer: groups >= 1, entries >= 2 and code_dim divisible by groups "
                                  f"needed, got {groups}, {entries}, {code_dim}")
        self.groups, self.entries = int(groups), int(entries)
        self.logits = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.logits.weight, 0.0, 1.0)
        nn.init.zeros_(self.logits.bias)
        self.codebook = nn.Parameter(torch.empty(groups, entries, code_dim // groups).uniform_())
        self.temperature = 2.0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes [N, code_dim], soft probabilities [N, G, V] without noise)``."""
        n = x.shape[0]
        logits = self.logits(x).float().reshape(n, self.groups, self.entries)  # [N, G, V]
        probs = logits.softmax(dim=-1)
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
        else:
            onehot = F.one_hot(logits.argmax(dim=-1), self.entries).to(logits.dtype)
        codes = torch.einsum("ngv,gvd->ngd", onehot.to(self.codebook.dtype), self.codebook)  # [N, G, d]
        return codes.reshape(n, -1), probs


class Wav2Vec2(SSLObjective):
    """wav2vec 2.0-style masked contrast with a quantised (or continuous) target.

    Args:
        dims: the encoder's widths, rate and window.
        latents: ``"patches"`` or ``"features"`` (see :mod:`ecgfm.objectives.ssl`).
        patch_seconds: patch length for ``latents="patches"``.
        mask_prob, mask_length: span masking (about ``mask_prob`` of the steps are masked).
        context_dim, context_depth, context_heads: the transformer context network.
        final_dim: width in which context and targets are compared.
        quantize: Gumbel product quantisation of the targets (else continuous targets).
        groups, entries, code_dim: the quantiser.
        gumbel_temperature: ``(start, floor, decay per step)``.
        temperature: ``kappa`` of the contrast.
        negatives: ``"batch"`` or ``"record"``.
        diversity_weight: ``alpha`` of the diversity loss.
        gather: distractors from every DDP rank (``negatives="batch"``).

    Parts: ``loss``, ``contrastive``, ``diversity``, ``accuracy``, ``perplexity`` (mean over
    codebooks of the codebook usage perplexity, at most ``V``), ``masked`` (share of masked steps).
    """

    name = "wav2vec2"

    def __init__(self, dims: EncoderDims, *, latents: str = "patches", patch_seconds: float = 0.5,
                 mask_prob: float = 0.5, mask_length: int = 2, context_dim: int = 256, context_depth: int = 4,
                 context_heads: int = 4, final_dim: int = 128, quantize: bool = True, groups: int = 2,
                 entries: int = 64, code_dim: int = 128, gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995),
                 temperature: float = 0.1, negatives: str = "batch", diversity_weight: float = 0.1,
                 gather: bool = True) -> None:
        super().__init__()
        if latents not in ("patches", "features"):
            raise ValidationError(f"wav2vec2: latents must be 'patches' or 'features', got {latents!r}")
        if negatives not in ("batch", "record"):
            raise ValidationError(f"wav2vec2: negatives must be 'batch' or 'record', got {negatives!r}")
        if not 0 < mask_prob <= 1 or mask_length < 1:
            raise ValidationError("wav2vec2: mask_prob must be in (0, 1] and mask_length >= 1")
        tau = tuple(float(v) for v in gumbel_temperature)
        if len(tau) != 3 or not (tau[0] >= tau[1] > 0 and 0 < tau[2] <= 1):
            raise ValidationError(f"wav2vec2: gumbel_temperature must be (start >= floor > 0, decay in (0, 1]), got {gumbel_temperature!r}")
        self.patch = round(patch_seconds * dims.fs) if latents == "patches" else 0
        if latents == "patches" and self.patch < dims.min_samples:
            raise ValidationError(f"wav2vec2: patches of {patch_seconds} s are {self.patch} samples; the encoder "
                                  f"needs at least {dims.min_samples}")
        self.options = {"latents": latents, "patch_seconds": float(patch_seconds), "mask_prob": float(mask_prob),
                        "mask_length": int(mask_length), "context_dim": int(context_dim),
                        "context_depth": int(context_depth), "context_heads": int(context_heads),
                        "final_dim": int(final_dim), "quantize": bool(quantize), "groups": int(groups),
                        "entries": int(entries), "code_dim": int(code_dim), "gumbel_temperature": list(tau),
                        "temperature": float(temperature), "negatives": negatives,
                        "diversity_weight": float(diversity_weight), "gather": bool(gather)}
        self.latents, self.mask_prob, self.mask_length = latents, float(mask_prob), int(mask_length)
        self.quantize, self.tau = bool(quantize), tau
        self.temperature, self.negatives = float(temperature), negatives
        self.diversity_weight, self.gather = float(diversity_weight), bool(gather)
        self.uses_pooled = latents == "patches"
        width = dims.pooled if latents == "patches" else dims.sequence
        self.feature_norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, context_dim)
        self.mask_embed = nn.Parameter(torch.empty(context_dim).uniform_())
        self.pos = nn.Parameter(torch.zeros(512, context_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.context = Transformer(context_dim, context_depth, context_heads, 4.0, 0.0, 0.0)
        self.final_proj = nn.Linear(context_dim, final_dim)
        if self.quantize:
            self.quantizer: GumbelQuantizer | None = GumbelQuantizer(width, groups, entries, code_dim)
            self.project_q = nn.Linear(code_dim, final_dim)
        else:
            self.quantizer = None
            self.project_q = nn.Linear(width, final_dim)
        self.set_step(0)

    def set_step(self, step: int) -> None:
        start, floor, decay = self.tau
        if self.quantizer is not None:
            self.quantizer.temperature = max(start * decay ** int(step), floor)

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:
        output = "patches" if self.latents == "patches" else "sequence"
        return {"z": View(inp.signal, inp.lead_mask, output, self.patch)}, {"generator": inp.generator}

    def forward(self, outputs: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
        z = self.feature_norm(outputs["z"].transpose(1, 2))  # [B, n, D]
        b, n, d = z.shape
        if n < 2:
            raise ValidationError(f"wav2vec2: {n} latent step(s); masking needs at least 2")
        if n > self.pos.shape[0]:
            raise ValidationError(f"wav2vec2: {n} latent steps, at most {self.pos.shape[0]}")
        mask = span_mask(b, n, self.mask_prob, self.mask_length, state.get("generator"), z.device)  # [B, n]
        x = self.project(z)  # [B, n, C]
        x = torch.where(mask[:, :, None], self.mask_embed.to(x.dtype).expand_as(x), x)
        c = self.final_proj(self.context(x + self.pos[:n]))  # [B, n, final]
        flat = z.reshape(b * n, d)
        out: dict[str, Tensor] = {}
        if self.quantizer is not None:
            codes, probs = self.quantizer(flat)  # [B*n, code], [B*n, G, V]
            targets = self.project_q(codes)  # [B*n, final]
            p_mean = probs.mean(dim=0)  # [G, V]
            perplexity = torch.exp(-(p_mean * torch.log(p_mean + 1e-7)).sum(dim=-1))  # [G]
            total = self.quantizer.groups * self.quantizer.entries
            diversity = (total - perplexity.sum()) / total
            out["perplexity"] = perplexity.mean().detach()
        else:
            targets = self.project_q(flat)
            diversity = z.new_zeros(())
        where = mask.reshape(-1)
        query = c.reshape(b * n, -1)[where]  # [Q, final]
        keys = targets[where]  # [Q, final] the masked steps' targets
        record = torch.arange(b, device=z.device).repeat_interleave(n)[where]  # [Q]
        offset = 0
        if self.negatives == "batch" and self.gather:
            # ranks mask different numbers of steps: gather the targets of every step, then keep
            # the masked ones (gathered masks), so every rank passes the same shape
            all_targets, offset_rows = gather_with_grad(targets)
            keep = gather_no_grad(where)
            keys = all_targets[keep]
            offset = int(keep[:offset_rows].sum())
        positive = torch.arange(query.shape[0], device=z.device) + offset
        exclude = None
        if self.negatives == "record":
            exclude = record[:, None] != record[None, :]  # [Q, Q]
        r = info_nce(query, keys, positive, temperature=self.temperature, similarity="cosine", exclude=exclude)
        loss = r["loss"] + self.diversity_weight * diversity
        out.update(loss=loss, contrastive=r["loss"].detach(), diversity=diversity.detach(),
                   accuracy=r["accuracy"], masked=mask.float().mean().detach())
        return out


def expected_masked(steps: int, mask_prob: float, mask_length: int) -> float:
    """Expected share of masked steps of :func:`span_mask` (spans placed uniformly, overlaps
    counted once); for choosing ``mask_prob``."""
    length = min(mask_length, steps)
    starts = steps - length + 1
    n_spans = min(max(1, round(mask_prob * steps / length)), starts)
    covered = 0.0
    for t in range(steps):
        # starts that cover step t: max(0, t - length + 1) .. min(t, starts - 1)
        k = min(t, starts - 1) - max(0, t - length + 1) + 1
        covered += 1.0 - math.comb(starts - k, n_spans) / math.comb(starts, n_spans)
    return covered / steps
