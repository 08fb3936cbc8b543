"""InfoNCE with negatives from every DDP rank, and segment / patient contrast (CMSC).

**InfoNCE** (van den Oord et al., "Representation learning with contrastive predictive coding",
2018; the NT-Xent form of SimCLR, Chen et al. 2020): for a query ``q_i`` with positive keys
``P(i)`` among keys ``k_1 .. k_M``, with ``s(q, k) = cos(q, k) / tau`` (``similarity="cosine"``)
or ``q . k / tau`` (``"dot"``)::

    loss_i = -1/|P(i)| sum_{p in P(i)} log( exp s(q_i, k_p) / sum_{m not excluded} exp s(q_i, k_m) )

averaged over the queries that have a positive. With one positive per query this is the
cross-entropy of the softmax over keys; with several it is the "L_out" form of supervised
contrast (Khosla et al. 2020). :func:`info_nce` computes it; :class:`InfoNCE` applies it to
pairs ``(query_i, key_i)`` in both directions with keys from every rank.

**Negatives from every rank.** :func:`gather_with_grad` concatenates a tensor over the DDP
ranks (``torch.distributed.all_gather``) inside an autograd function whose backward all-reduces
(sums) the incoming gradient and returns this rank's rows. Each rank's loss uses its own queries
against everyone's keys; the gradient of rank ``r``'s rows collects the terms of every rank's
loss that involve them, and DDP's average of the parameter gradients then equals the gradient of
the mean loss over all ranks, which is the loss one process would compute on the concatenated
batch (``tests/test_ssl_objectives.py`` checks loss and gradients on a two-process gloo group).
Outside DDP it is the identity. Every rank must pass the same number of rows (the training
sampler pads ranks and drops the last incomplete batch, so they do).

**Gradient accumulation.** The negatives of a loss are those of one micro-batch: with ``K``
micro-batches per optimizer step, each loss contrasts ``B x world`` rows, not ``B x K x world``,
and the accumulated gradient is that of the mean of the ``K`` micro-batch losses. That is a
correct objective (the same InfoNCE at the micro-batch size) but not the loss of the effective
batch: raise ``data.batch_size`` or the number of devices, not accumulation, to get more
negatives. The gather's collectives run on every micro-batch, including those where DDP skips
its gradient all-reduce (``no_sync``), and every rank runs the same micro-batches, so the
collectives always match.

**Segment / patient contrast** (:class:`SegmentContrast`, ``cmsc``): Kiyasseh et al., "CLOCS:
contrastive learning of cardiac signals across space, time, and patients", ICML 2021. Two
time-adjacent segments of one record are a positive pair (CMSC); with ``patients=True`` every
pair of segments of the same patient in the (gathered) batch is positive too. ``views="augment"``
contrasts two augmentations of one window instead (SimCLR-style).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.objectives.ssl import EncoderDims, SSLInput, SSLObjective, View, random_uniform

__all__ = ["GatherWithGrad", "InfoNCE", "SegmentContrast", "gather_with_grad", "gather_no_grad", "info_nce",
           "rank_and_world", "similarity_logits"]

SIMILARITIES = ("cosine", "dot")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GatherWithGrad(torch.autograd.Function):
    """``[n, ...]`` on each rank -> ``[world * n, ...]`` (rank order), with gradients.

    Backward: the incoming gradient (of this rank's loss with respect to every rank's rows) is
    summed over ranks, and this rank's rows of the sum are returned.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        rank, world = rank_and_world()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """``(x of every rank concatenated [world * n, ...], offset of this rank's rows)``;
    ``(x, 0)`` outside DDP. Gradients flow back to every rank (see the module docstring)."""
    rank, world = rank_and_world()
    if world == 1:
        return x, 0
    return GatherWithGrad.apply(x), rank * x.shape[0]


def gather_no_grad(x: Tensor) -> Tensor:
    """``x`` of every rank concatenated, without gradient (labels, groups); ``x`` outside DDP."""
    _, world = rank_and_world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def similarity_logits(query: Tensor, keys: Tensor, similarity: str = "cosine", temperature: float = 0.1) -> Tensor:
    """``[N, M]`` logits ``s(q_n, k_m)`` of queries ``[N, D]`` and keys ``[M, D]``, in float32
    (float64 inputs stay float64; half precision is promoted)."""
    if similarity not in SIMILARITIES:
        raise ValidationError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    dtype = torch.promote_types(torch.promote_types(query.dtype, keys.dtype), torch.float32)
    query, keys = query.to(dtype), keys.to(dtype)
    if similarity == "cosine":
        query, keys = F.normalize(query, dim=-1), F.normalize(keys, dim=-1)
    return query @ keys.T / temperature


def info_nce(query: Tensor, keys: Tensor, positive: Tensor, *, temperature: float = 0.1,
             similarity: str = "cosine", exclude: Tensor | None = None) -> dict[str, Tensor]:
    """InfoNCE of queries ``[N, D]`` against keys ``[M, D]`` (formula in the module docstring).

    Args:
        query: ``[N, D]``.
        keys: ``[M, D]``.
        positive: int64 ``[N]`` (index of each query's one positive key) or bool ``[N, M]``
            (True = positive; several allowed; a query without one is left out).
        temperature: ``tau > 0``.
        similarity: ``"cosine"`` or ``"dot"``.
        exclude: bool ``[N, M]``: keys left out of the query's softmax (e.g. the query itself).

    Returns:
        ``{"loss": scalar, "accuracy": share of queries whose top key is a positive (detached),
        "queries": queries counted (detached)}``.

    >>> q = torch.eye(4)
    >>> round(float(info_nce(q, q, torch.arange(4), temperature=0.5)["loss"]), 4)  # log(1 + 3 e^-2)
    0.3408
    """
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValidationError(f"info_nce: query [N, D] and keys [M, D] expected, got {tuple(query.shape)} "
                              f"and {tuple(keys.shape)}")
    if not temperature > 0:
        raise ValidationError(f"info_nce: temperature must be > 0, got {temperature!r}")
    logits = similarity_logits(query, keys, similarity, temperature)  # [N, M]
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    if positive.dtype == torch.bool:
        if tuple(positive.shape) != tuple(logits.shape):
            raise ValidationError(f"info_nce: positive mask must be [N, M] = {tuple(logits.shape)}, "
                                  f"got {tuple(positive.shape)}")
        pos = positive if exclude is None else positive & ~exclude
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [N, M]
        n_pos = pos.sum(dim=1)
        valid = n_pos > 0
        per_query = -log_prob.masked_fill(~pos, 0.0).sum(dim=1) / n_pos.clamp(min=1)  # [N]
        loss = per_query[valid].mean() if bool(valid.any()) else logits.sum() * 0.0
        top = logits.argmax(dim=1)
        hit = pos.gather(1, top[:, None])[:, 0]
        accuracy = hit[valid].float().mean() if bool(valid.any()) else logits.new_zeros(())
        count = valid.sum()
    else:
        if positive.ndim != 1 or positive.shape[0] != logits.shape[0]:
            raise ValidationError(f"info_nce: positive indices must be [N] = [{logits.shape[0]}], "
                                  f"got {tuple(positive.shape)}")
        loss = F.cross_entropy(logits, positive)
        accuracy = (logits.argmax(dim=1) == positive).float().mean()
        count = torch.tensor(logits.shape[0], device=logits.device)
    return {"loss": loss, "accuracy": accuracy.detach(), "queries": count.detach().float()}


class InfoNCE(nn.Module):
    """InfoNCE of pairs: query ``i``'s positive is key ``i`` (and, with ``groups``, every key of
    the same group), with keys from every DDP rank.

    Args:
        temperature: ``tau > 0``.
        similarity: ``"cosine"`` or ``"dot"``.
        symmetric: average with the loss of keys against (gathered) queries, as CLIP and
            NT-Xent do.
        gather: take keys (and queries, when symmetric) from every rank.

    Call with ``query`` ``[N, D]``, ``key`` ``[N, D]`` and optionally ``groups`` ``[N]`` int64
    (same value = positive; negative values are no group). Returns ``{"loss", "accuracy"}``.
    """

    def __init__(self, temperature: float = 0.1, similarity: str = "cosine", symmetric: bool = True,
                 gather: bool = True) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValidationError(f"InfoNCE: temperature must be > 0, got {temperature!r}")
        if similarity not in SIMILARITIES:
            raise ValidationError(f"InfoNCE: similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        self.temperature, self.similarity = float(temperature), similarity
        self.symmetric, self.gather = bool(symmetric), bool(gather)

    def _one_way(self, query: Tensor, key: Tensor, groups: Tensor | None) -> dict[str, Tensor]:
        keys, offset = gather_with_grad(key) if self.gather else (key, 0)
        n = query.shape[0]
        index = torch.arange(n, device=query.device) + offset
        if groups is None:
            positive: Tensor = index
        else:
            all_groups = gather_no_grad(groups) if self.gather else groups
            positive = (groups[:, None] == all_groups[None, :]) & (groups[:, None] >= 0)  # [N, M]
            positive[torch.arange(n, device=query.device), index] = True
        return info_nce(query, keys, positive, temperature=self.temperature, similarity=self.similarity)

    def forward(self, query: Tensor, key: Tensor, groups: Tensor | None = None) -> dict[str, Tensor]:
        if query.shape != key.shape:
            raise ValidationError(f"InfoNCE: query {tuple(query.shape)} and key {tuple(key.shape)} differ in shape")
        out = self._one_way(query, key, groups)
        if not self.symmetric:
            return {"loss": out["loss"], "accuracy": out["accuracy"]}
        back = self._one_way(key, query, groups)
        return {"loss": (out["loss"] + back["loss"]) / 2, "accuracy": (out["accuracy"] + back["accuracy"]) / 2}


def augment(signal: Tensor, lead_mask: Tensor, generator: torch.Generator | None, *, noise_std: float = 0.1,
            scale: tuple[float, float] = (0.8, 1.2), lead_drop: float = 0.25,
            max_shift: float = 0.1) -> tuple[Tensor, Tensor]:
    """A random augmentation of a batch ``[B, L, T]`` (tensors, on any device): per-record gain in
    ``scale``, white noise of ``noise_std`` (signal units: z-scores after the standard pipeline),
    a circular time shift of up to ``max_shift`` of the window, and each present lead dropped
    (zeroed, mask cleared) with probability ``lead_drop`` (one always stays)."""
    b, leads, t = signal.shape
    device = signal.device
    gain = scale[0] + (scale[1] - scale[0]) * random_uniform((b, 1, 1), generator, device)
    noise = torch.randn((b, leads, t), generator=generator).to(device) * noise_std
    x = signal * gain + noise * lead_mask[:, :, None]
    shift = (random_uniform((b,), generator, device) * max_shift * t).long()  # [B]
    idx = (torch.arange(t, device=device)[None, :] - shift[:, None]) % t  # [B, T]
    x = x.gather(2, idx[:, None, :].expand(b, leads, t))
    drop = (random_uniform((b, leads), generator, device) < lead_drop) & lead_mask
    keep = lead_mask & ~drop
    # a record that would lose every lead keeps its first present one
    first = lead_mask.float().argmax(dim=1)
    none_left = ~keep.any(dim=1)
    keep[none_left, first[none_left]] = True
    return x * keep[:, :, None], keep


class SegmentContrast(SSLObjective):
    """CMSC: contrast of two segments (or two augmentations) of one ECG, and of one patient.

    Each view is encoded and pooled (``[B, F]``), projected by a two-layer MLP (SimCLR's
    projection head: Linear -> ReLU -> Linear to ``projection_dim``; dropped after pretraining),
    and the two views' projections are contrasted with :class:`InfoNCE` (symmetric, cosine
    similarity, negatives from every rank).

    Args:
        dims: the encoder's widths.
        views: ``"segments"``: the window and the time-adjacent window of the same record
            (:attr:`SSLInput.pair`; the pretraining run crops twice the window); ``"augment"``:
            two augmentations (:func:`augment`) of the same window.
        patients: also count as positive every pair of views of the same patient
            (:attr:`SSLInput.groups`; CLOCS's patient-level CMSC).
        projection_dim, hidden_dim: the projection head (hidden default: ``F``).
        temperature: InfoNCE temperature.
        gather: negatives from every DDP rank.
        noise_std, lead_drop: augmentation strengths for ``views="augment"``.

    Parts: ``loss``, ``accuracy`` (share of views whose most similar view is a positive).
    """

    name = "cmsc"

    def __init__(self, dims: EncoderDims, *, views: str = "segments", patients: bool = True,
                 projection_dim: int = 128, hidden_dim: int | None = None, temperature: float = 0.1,
                 gather: bool = True, noise_std: float = 0.1, lead_drop: float = 0.25) -> None:
        super().__init__()
        if views not in ("segments", "augment"):
            raise ValidationError(f"cmsc: views must be 'segments' or 'augment', got {views!r}")
        if projection_dim < 1 or (hidden_dim is not None and hidden_dim < 1):
            raise ValidationError("cmsc: projection_dim and hidden_dim must be >= 1")
        self.options = {"views": views, "patients": bool(patients), "projection_dim": int(projection_dim),
                        "hidden_dim": hidden_dim, "temperature": float(temperature), "gather": bool(gather),
                        "noise_std": float(noise_std), "lead_drop": float(lead_drop)}
        self.mode, self.patients = views, bool(patients)
        self.noise_std, self.lead_drop = float(noise_std), float(lead_drop)
        self.needs_pair = views == "segments"
        hidden = int(hidden_dim or dims.pooled)
        self.projector = nn.Sequential(nn.Linear(dims.pooled, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, int(projection_dim)))
        self.contrast = InfoNCE(temperature, "cosine", symmetric=True, gather=gather)

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:
        if self.mode == "segments":
            if inp.pair is None:
                raise ValidationError("cmsc with views='segments' needs SSLInput.pair (two adjacent windows)")
            a = View(inp.signal, inp.lead_mask, "pooled")
            b = View(inp.pair, inp.lead_mask, "pooled")
        else:
            xa, ma = augment(inp.signal, inp.lead_mask, inp.generator, noise_std=self.noise_std,
                             lead_drop=self.lead_drop)
            xb, mb = augment(inp.signal, inp.lead_mask, inp.generator, noise_std=self.noise_std,
                             lead_drop=self.lead_drop)
            a, b = View(xa, ma, "pooled"), View(xb, mb, "pooled")
        return {"a": a, "b": b}, {"groups": inp.groups if self.patients else None}

    def forward(self, outputs: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
        za = self.projector(outputs["a"])  # [B, projection_dim]
        zb = self.projector(outputs["b"])
        out = self.contrast(za, zb, state.get("groups"))
        return {"loss": out["loss"], "accuracy": out["accuracy"]}
