"""The CLIP objective: symmetric InfoNCE between ECG and report embeddings.

For a batch of ``N`` pairs (all ranks together) with L2-normalised ECG embeddings ``e_i`` and
report embeddings ``t_j`` and the scale ``s = 1 / temperature``::

    logits_ij = s * <e_i, t_j>
    L_e2t = mean_i  -sum_j y_ij log softmax_j(logits_i.)        (each ECG finds its report)
    L_t2e = mean_j  -sum_i y_ij log softmax_i(logits_.j)        (each report finds its ECG)
    loss  = (L_e2t + L_t2e) / 2

with ``y_ij = 1[i == j]`` in CLIP (Radford et al., ICML 2021, eq. in Fig. 3; ConVIRT, Zhang et
al. 2020). The scale is learnt by the model as ``exp(logit_scale)``, initialised at ``1 / 0.07``
and clamped to at most 100 as in CLIP; this loss takes the scale as an argument (a loss never
owns the model's parameters, the way open_clip's ``ClipLoss`` takes ``logit_scale``).

**Identical reports are not negatives.** Many PTB-XL reports are word-for-word the same
("sinus rhythm. normal ecg." is 8 % of them), so a batch of 64 often holds several pairs whose
reports are identical, and one-hot targets call each other's report a negative. ``groups`` (an
id per item, equal for identical normalised text) says which items share a report, and
``duplicates`` chooses what to do:

- ``"soft"`` (default): the target of row ``i`` is spread uniformly over its group,
  ``y_ij = 1[g_i == g_j] / #{k : g_k == g_i}`` (a soft cross-entropy; SupCon treats same-class
  items the same way). With all-distinct groups it is exactly CLIP's loss.
- ``"mask"``: one-hot targets, and the other members of the group are removed from the softmax
  (neither positive nor negative), so every pair is one positive against the other reports.
- ``"none"``: CLIP's one-hot targets.

What the choice changes, worked out. Identical texts give identical text embeddings when the
text encoder is deterministic (eval mode, or no dropout); their logits are then equal, and
one-hot and soft targets give the same loss and the *same* gradients on the ECG embeddings and
on the text encoder (which receives the sum over the copies of a text): for ECG ``i`` the push
towards its own copy of the report and away from the other copy cancel, and summed over a group
the one-hot report rows are the soft rows. The two differ once
the copies' embeddings differ, which text-encoder dropout makes happen at every training step:
one-hot targets then train the model to tell copies of one text apart by their dropout noise,
soft targets do not. ``"mask"`` changes the weighting as well: under soft (and one-hot)
targets a group of ``k`` identical reports holds ``k`` times the softmax mass, so the ECGs of
the most common report ("normal ECG") are the easiest positives and get the least gradient;
under masking every pair is scored against the other *reports* only, whatever its group size.

**Negatives across ranks.** Under ``torch.distributed`` every rank's embeddings are gathered
with their gradient (:func:`ecgfm.objectives.contrastive.gather_with_grad`, shared with the
self-supervised objectives: its backward sums every rank's gradient for a row and returns this
rank's rows); each rank computes the rows of its own items against all ``N`` columns. Outside
it this is the plain loss.

**Missing reports.** ``valid`` (bool per item) leaves out items without a report: their rows do
not count and their columns are not candidates.

The same loss with a fixed scale and no groups is the ECG-ECG contrast between two augmented
views of each record (MERL's uni-modal alignment, Liu et al., ICML 2024).

>>> import torch
>>> e = torch.eye(4)
>>> round(float(ClipLoss()(e, e, 10.0)["loss"]), 6)  # log(1 + 3 e^-10)
0.000136
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.objectives.contrastive import gather_no_grad, gather_with_grad

__all__ = ["DUPLICATES", "ClipLoss", "clamp_logit_scale"]

DUPLICATES = ("soft", "mask", "none")

MAX_LOGIT_SCALE = math.log(100.0)


def clamp_logit_scale(logit_scale: Tensor, max_scale: float = 100.0) -> Tensor:
    """``exp(logit_scale)`` with the log-scale clamped to ``[0, log(max_scale)]`` (CLIP clips the
    parameter after each step; clamping where it is used has the same effect on the logits and
    gives no gradient past the bound)."""
    return logit_scale.clamp(0.0, math.log(max_scale)).exp()


class ClipLoss(nn.Module):
    """Symmetric InfoNCE (see the module docstring).

    Args:
        duplicates: ``"soft"``, ``"mask"`` or ``"none"``: what items of one group are to each
            other (see the module docstring); without ``groups`` every item is its own group.

    Call with ``ecg`` ``[B, E]``, ``text`` ``[B, E]`` (normalised here), ``scale`` (a float or
    0-d tensor, ``1 / temperature``), optional ``groups`` ``[B]`` int64 (equal = identical
    report) and ``valid`` ``[B]`` bool. Returns ``{"loss", "e2t", "t2e", "accuracy"}``:
    ``accuracy`` is the share of this rank's ECGs whose best-scoring report is a positive.
    """

    def __init__(self, duplicates: str = "soft") -> None:
        super().__init__()
        if duplicates not in DUPLICATES:
            raise ValidationError(f"ClipLoss: duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates!r}")
        self.duplicates = duplicates

    def forward(self, ecg: Tensor, text: Tensor, scale: Tensor | float, groups: Tensor | None = None,
                valid: Tensor | None = None) -> dict[str, Tensor]:
        if ecg.ndim != 2 or ecg.shape != text.shape:
            raise ValidationError(f"ClipLoss: ecg and text embeddings must both be [B, E], got "
                                  f"{tuple(ecg.shape)} and {tuple(text.shape)}")
        b = ecg.shape[0]
        for name, value in (("groups", groups), ("valid", valid)):
            if value is not None and tuple(value.shape) != (b,):
                raise ValidationError(f"ClipLoss: {name} must be [B] = [{b}], got {tuple(value.shape)}")
        e = F.normalize(ecg.float(), dim=-1)
        t = F.normalize(text.float(), dim=-1)
        all_e, offset = gather_with_grad(e)  # [N, E]; this rank's rows start at offset
        all_t, _ = gather_with_grad(t)
        n = all_e.shape[0]
        rows = torch.arange(b, device=e.device) + offset  # this rank's items among the N
        ok = torch.ones(b, dtype=torch.bool, device=e.device) if valid is None else valid.to(e.device).bool()
        all_ok = gather_no_grad(ok)  # [N]
        own = rows[:, None] == torch.arange(n, device=e.device)[None, :]  # [B, N]: the item's own pair
        if groups is not None and self.duplicates != "none":
            g = groups.to(e.device).long()
            same = g[:, None] == gather_no_grad(g)[None, :]  # [B, N]: identical reports
        else:
            same = own
        blocked = ~all_ok[None, :]  # [B, N]: not a candidate
        if self.duplicates == "mask":
            blocked = blocked | (same & ~own)
            positive = own & all_ok[None, :]
        else:
            positive = same & all_ok[None, :]
        target = positive.float() / positive.sum(dim=1, keepdim=True).clamp(min=1)  # [B, N]
        scale_t = torch.as_tensor(scale, dtype=e.dtype, device=e.device)
        logits_e2t = (scale_t * e @ all_t.T).masked_fill(blocked, float("-inf"))  # [B, N]
        logits_t2e = (scale_t * t @ all_e.T).masked_fill(blocked, float("-inf"))  # [B, N]
        e2t = _soft_ce(logits_e2t, target, ok)
        t2e = _soft_ce(logits_t2e, target, ok)
        loss = (e2t + t2e) / 2
        with torch.no_grad():
            best = logits_e2t.argmax(dim=1)
            hit = same.gather(1, best[:, None]).squeeze(1) & ok  # a report identical to its own counts
            accuracy = hit.float().sum() / ok.sum().clamp(min=1)
        return {"loss": loss, "e2t": e2t.detach(), "t2e": t2e.detach(), "accuracy": accuracy}


def _soft_ce(logits: Tensor, target: Tensor, rows: Tensor) -> Tensor:
    """Mean over ``rows`` of ``-sum_j target_ij log_softmax(logits_i)_j`` (0 with a graph when no row)."""
    logp = torch.log_softmax(logits, dim=1)
    logp = torch.where(target > 0, logp, torch.zeros_like(logp))  # -inf * 0 would be NaN
    per_row = -(target * logp).sum(dim=1)  # [B]
    per_row = torch.where(rows, per_row, torch.zeros_like(per_row))
    return per_row.sum() / rows.sum().clamp(min=1)
