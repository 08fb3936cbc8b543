"""The report-generation objective: next-token cross-entropy under teacher forcing.

The decoder reads ``<bos> w_1 ... w_{n-1}`` and is scored on predicting ``w_1 ... w_n <eos>``
(each position sees the true previous tokens, never its own predictions)::

    loss = mean over non-pad target positions of CE(logits_t, w_t)

with optional label smoothing ``eps`` (the target distribution puts ``1 - eps`` on the true
token and ``eps / V`` on every token; Szegedy et al. 2016, as ``torch.nn.functional.cross_entropy``).
Padding (id 0) takes no part; the mean is over real tokens of the whole batch, so long reports
weigh more than short ones (as in most captioning work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.language.text import PAD

__all__ = ["CaptionLoss"]


class CaptionLoss(nn.Module):
    """Token cross-entropy ignoring padding.

    Args:
        label_smoothing: ``eps`` in [0, 1).

    Call with ``logits`` ``[B, N, V]`` and ``targets`` ``[B, N]`` int64 (``PAD`` = ignored).
    Returns ``{"loss", "token_accuracy", "tokens"}``; ``loss`` is 0 (with a graph) when there is
    no real token.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValidationError(f"CaptionLoss: label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        if logits.ndim != 3 or targets.shape != logits.shape[:2]:
            raise ValidationError(f"CaptionLoss: logits must be [B, N, V] and targets [B, N], got "
                                  f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        real = targets != PAD  # [B, N]
        if valid is not None:
            real = real & valid.to(real.device).bool()[:, None]
        per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none",
                                    label_smoothing=self.label_smoothing)  # [B, N]
        n = real.sum()
        loss = torch.where(real, per_token, torch.zeros_like(per_token)).sum() / n.clamp(min=1)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == targets) & real
            accuracy = correct.sum().float() / n.clamp(min=1)
        return {"loss": loss, "token_accuracy": accuracy, "tokens": n.detach()}
