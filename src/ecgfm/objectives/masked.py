"""Masked-lead and masked-span modelling: hide leads and time spans of the input, reconstruct them.

References: the masked-autoencoder recipe (He et al., "Masked autoencoders are scalable vision
learners", CVPR 2022) as adapted to ECG by ST-MEM (Na et al., ICLR 2024: masked patches across
leads and time) and by the masked-lead modelling of DeepECG-SSL; for CNN encoders, the masked
input is zeroed (as in SparK-style masked modelling without sparse convolutions).

For a window ``x`` ``[B, L, T]`` with lead mask ``m`` ``[B, L]``:

1. **Lead masking**: each present lead is hidden with probability ``lead_prob`` (one present
   lead always stays visible). Hidden leads are passed to the encoder *as missing*: zeroed and
   marked False in the lead mask, so the encoder's own absent-lead rule applies (the CNNs
   rescale the visible leads by ``L / n_visible``; ``vit1d`` drops their tokens).
2. **Span masking**: the window is cut into chunks of ``span_seconds``; ``round(span_prob x
   chunks)`` of them, chosen at random per record, are zeroed in every lead.
3. **Reconstruction**: a light decoder (1x1 conv to ``decoder_dim`` -> GELU -> linear
   upsampling of the feature map to ``T`` samples -> conv of ``decoder_kernel`` -> GELU -> 1x1
   conv to ``L`` leads) maps the encoder's features ``[B, D, T']`` to ``[B, L, T]``.
4. **Loss**: the mean squared error over the *hidden* samples only: samples of hidden leads and
   samples inside hidden spans, of leads that were present in the record and within its valid
   length. Visible samples never enter the loss (tested), so the objective cannot be solved by
   copying the input.

Parts: ``loss``, ``leads`` (MSE on the hidden leads' samples), ``spans`` (MSE on hidden spans of
visible leads), ``hidden`` (share of the record's samples in the loss). After pretraining the
decoder is dropped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.objectives.ssl import EncoderDims, SSLInput, SSLObjective, View, random_uniform
from ecgfm.objectives.wav2vec2 import span_mask

__all__ = ["MaskedModelling", "SignalDecoder", "hide_leads"]


def hide_leads(lead_mask: Tensor, prob: float, generator: torch.Generator | None) -> Tensor:
    """bool ``[B, L]``: present leads hidden with probability ``prob``; one present lead of each
    record always stays visible (the first present one when the draw hid them all)."""
    hidden = (random_uniform(lead_mask.shape, generator, lead_mask.device) < prob) & lead_mask
    none_left = ~(lead_mask & ~hidden).any(dim=1)
    if bool(none_left.any()):
        first = lead_mask.float().argmax(dim=1)
        rows = torch.nonzero(none_left)[:, 0]
        hidden[rows, first[rows]] = False
    return hidden


class SignalDecoder(nn.Module):
    """Features ``[B, D, T']`` -> signal ``[B, L, T]`` (see step 3 of the module docstring)."""

    def __init__(self, in_dim: int, leads: int, width: int = 128, kernel: int = 5) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValidationError(f"SignalDecoder: kernel must be odd, got {kernel}")
        self.inp = nn.Conv1d(in_dim, width, 1)
        self.refine = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.out = nn.Conv1d(width, leads, 1)

    def forward(self, features: Tensor, length: int) -> Tensor:
        h = F.gelu(self.inp(features))  # [B, W, T']
        h = F.interpolate(h, size=int(length), mode="linear", align_corners=False)  # [B, W, T]
        return self.out(F.gelu(self.refine(h)))  # [B, L, T]


class MaskedModelling(SSLObjective):
    """Masked-lead and masked-span reconstruction (see the module docstring).

    Args:
        dims: the encoder's widths, leads, rate and window.
        lead_prob: probability that a present lead is hidden (0: no lead masking).
        span_prob: share of the window's chunks hidden in every lead (0: no span masking).
        span_seconds: chunk length (0.4 s: about one QRS-T complex's worth at rest).
        decoder_dim, decoder_kernel: the decoder.

    Parts: ``loss``, ``leads``, ``spans``, ``hidden``.
    """

    name = "masked"
    uses_pooled = False

    def __init__(self, dims: EncoderDims, *, lead_prob: float = 0.25, span_prob: float = 0.3,
                 span_seconds: float = 0.4, decoder_dim: int = 128, decoder_kernel: int = 5) -> None:
        super().__init__()
        if not 0 <= lead_prob < 1 or not 0 <= span_prob < 1 or (lead_prob == 0 and span_prob == 0):
            raise ValidationError("masked: lead_prob and span_prob must be in [0, 1), not both 0")
        self.span = max(1, round(span_seconds * dims.fs))
        self.options = {"lead_prob": float(lead_prob), "span_prob": float(span_prob),
                        "span_seconds": float(span_seconds), "decoder_dim": int(decoder_dim),
                        "decoder_kernel": int(decoder_kernel)}
        self.lead_prob, self.span_prob = float(lead_prob), float(span_prob)
        self.decoder = SignalDecoder(dims.sequence, dims.in_leads, decoder_dim, decoder_kernel)

    def masks(self, inp: SSLInput) -> tuple[Tensor, Tensor]:
        """``(hidden leads [B, L] bool, hidden samples [B, T] bool)`` for a batch."""
        x, m = inp.signal, inp.lead_mask.bool()
        b, _, t = x.shape
        leads = hide_leads(m, self.lead_prob, inp.generator) if self.lead_prob > 0 else torch.zeros_like(m)
        if self.span_prob > 0:
            chunks = -(-t // self.span)
            hidden_chunks = span_mask(b, chunks, self.span_prob, 1, inp.generator, x.device)  # [B, chunks]
            time = hidden_chunks.repeat_interleave(self.span, dim=1)[:, :t]  # [B, T]
        else:
            time = torch.zeros(b, t, dtype=torch.bool, device=x.device)
        return leads, time

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:
        x, m = inp.signal, inp.lead_mask.bool()
        hidden_leads, hidden_time = self.masks(inp)
        visible = m & ~hidden_leads  # [B, L]
        keep = visible[:, :, None] & ~hidden_time[:, None, :]  # [B, L, T]
        masked_input = x * keep.to(x.dtype)
        t = x.shape[2]
        valid = torch.ones(x.shape[0], t, dtype=torch.bool, device=x.device)
        if inp.length is not None:
            valid = torch.arange(t, device=x.device)[None, :] < inp.length.to(x.device)[:, None]
        present = m[:, :, None] & valid[:, None, :]  # samples that exist in the record
        lead_part = present & hidden_leads[:, :, None]
        span_part = present & visible[:, :, None] & hidden_time[:, None, :]
        state = {"target": x, "lead_part": lead_part, "span_part": span_part,
                 "present": present}
        return {"z": View(masked_input, visible, "sequence")}, state

    def forward(self, outputs: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
        target = state["target"]
        pred = self.decoder(outputs["z"], target.shape[2]).float()  # [B, L, T]
        err = (pred - target.float()) ** 2
        lead_w, span_w = state["lead_part"].float(), state["span_part"].float()
        weight = lead_w + span_w  # disjoint: a hidden lead is not visible
        n = weight.sum()
        loss = (err * weight).sum() / n.clamp(min=1.0)
        leads = (err * lead_w).sum() / lead_w.sum().clamp(min=1.0)
        spans = (err * span_w).sum() / span_w.sum().clamp(min=1.0)
        hidden = n / state["present"].float().sum().clamp(min=1.0)
        return {"loss": loss, "leads": leads.detach(), "spans": spans.detach(), "hidden": hidden.detach()}
