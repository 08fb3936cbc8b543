"""The :class:`Encoder` interface every model family implements, and the pieces they share.

An encoder maps a batch of ECGs ``x`` float32 ``[B, L, T]`` (``L`` leads, ``T`` samples) and an
optional lead mask ``[B, L]`` bool (True = lead present) to

- ``forward_features(x, lead_mask)``: per-time-step features ``[B, D, T']`` (CNNs: the last
  feature map; transformers: the output tokens as ``[B, D, N]``);
- ``pool(features)``: ``[B, num_features]`` (mean over time, or the PTB-XL benchmark's
  concat-pool block);
- ``forward_head(features, pre_logits=False)``: pool -> dropout -> linear, ``[B, num_outputs]``
  (the pooled ``[B, num_features]`` with ``pre_logits=True`` or when ``num_outputs == 0``);
- ``forward(x, lead_mask)``: ``forward_head(forward_features(x, lead_mask))``;
- ``reset_head(num_outputs)``: a new, freshly initialised linear head (0 removes it).

Lead mask semantics. A masked lead's samples never reach the output:

- CNNs and the convolutional feature extractor of ``conv_transformer`` see the input with masked
  leads set to zero and every sample scaled by ``L / n_present`` (the inverted-dropout rule, so
  the expected input energy stays the same) — :func:`rescale_present_leads`.
- ``vit1d`` (one token per lead and patch) drops a masked lead's tokens from attention with a key
  padding mask; see :mod:`ecgfm.models.vit1d`.

Every sample needs at least one present lead. Any ``T >= min_samples`` works (global pooling),
so one set of weights accepts 2.5 s or 10 s; ``max_samples`` is ``None`` unless the family has a
limit (a learned position table).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError


class Encoder(nn.Module):
    """Base class of every registered encoder (see the module docstring for the interface).

    A family's ``__init__(config)`` calls ``super().__init__(config)``, builds its trunk, sets
    ``min_samples`` (and ``max_samples`` where bounded), then calls :meth:`init_head` with the
    pooled width and its pooling module. CNN families implement :meth:`forward_trunk` and inherit
    :meth:`forward_features` (input checks + lead-mask rescaling); token models override
    :meth:`forward_features`.

    Attributes:
        config: the frozen config dataclass the encoder was built from (``num_outputs`` follows
            :meth:`reset_head`).
        encoder_name: the registry name it was created under (``None`` if built directly).
        num_features: D, width of the pooled feature vector.
        num_outputs: C, outputs of the linear head; 0 = no head.
        in_leads: L, the lead-axis size the encoder expects.
        supports_lead_mask: True for every built-in encoder.
        min_samples: the shortest input ``T`` accepted (samples).
        max_samples: the longest input ``T`` accepted, or ``None`` for no limit.
    """

    supports_lead_mask: bool = True

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.encoder_name: str | None = None
        self.in_leads = int(config.in_leads)
        self.num_features = 0
        self.num_outputs = 0
        self.min_samples = 1
        self.max_samples: int | None = None

    # -- the interface ------------------------------------------------------------------

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Per-time-step features ``[B, D, T']`` of ``x`` ``[B, L, T]`` (lead_mask ``[B, L]``)."""
        lead_mask = self.check_input(x, lead_mask)
        if lead_mask is not None:
            x = rescale_present_leads(x, lead_mask)
        return self.forward_trunk(x)

    def forward_trunk(self, x: Tensor) -> Tensor:
        """The family's network on the (masked) input: ``[B, L, T]`` -> ``[B, D, T']``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_trunk")

    def pool(self, features: Tensor) -> Tensor:
        """``[B, D, T']`` -> ``[B, num_features]``."""
        return self.pooler(features)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """pool -> dropout -> linear: ``[B, D, T']`` -> ``[B, num_outputs]``.

        With ``pre_logits=True``, or when the encoder has no head (``num_outputs == 0``), the
        pooled ``[B, num_features]`` is returned.
        """
        pooled = self.pool(features)  # [B, num_features]
        if pre_logits or self.num_outputs == 0:
            return pooled
        return self.head(self.head_drop(pooled))  # [B, num_outputs]

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """``x`` ``[B, L, T]`` -> ``[B, num_outputs]`` (``[B, num_features]`` without a head)."""
        return self.forward_head(self.forward_features(x, lead_mask))

    def reset_head(self, num_outputs: int) -> None:
        """Replace the linear head by a new one with ``num_outputs`` outputs (0 removes it).

        The new layer is initialised the family's way, on the device and dtype of the trunk,
        and ``config.num_outputs`` is updated so the config still describes the weights.
        """
        if (isinstance(num_outputs, bool) or not isinstance(num_outputs, numbers.Integral)
                or num_outputs < 0):
            raise ValidationError(
                f"{type(self).__name__}.reset_head: num_outputs must be an integer >= 0, "
                f"got {num_outputs!r}"
            )
        num_outputs = int(num_outputs)
        if num_outputs == 0:
            self.head: nn.Module = nn.Identity()
        else:
            ref = next(self.parameters(), None)
            self.head = nn.Linear(self.num_features, num_outputs,
                                  device=None if ref is None else ref.device,
                                  dtype=None if ref is None else ref.dtype)
            self.init_head_layer(self.head)
        self.num_outputs = num_outputs
        if self.config.num_outputs != num_outputs:
            self.config = dataclasses.replace(self.config, num_outputs=num_outputs)

    # -- for the families ----------------------------------------------------------------

    def init_head(self, num_features: int, pooler: nn.Module | None = None) -> None:
        """Install pooling (default :class:`MeanPool`), head dropout and the linear head."""
        self.num_features = int(num_features)
        self.pooler = pooler if pooler is not None else MeanPool()
        self.head_drop = nn.Dropout(getattr(self.config, "head_dropout", 0.0))
        self.reset_head(int(self.config.num_outputs))

    def init_head_layer(self, layer: nn.Linear) -> None:
        """Initialise a new head layer (PyTorch's default unless the family overrides)."""

    def check_input(self, x: Tensor, lead_mask: Tensor | None) -> Tensor | None:
        """Check ``x`` ``[B, L, T]`` and ``lead_mask`` ``[B, L]``; returns the mask as bool.

        Raises:
            ValidationError: wrong rank, lead count or length; a mask of the wrong shape; a
                sample with no present lead.
        """
        who = self.encoder_name or type(self).__name__
        if x.ndim != 3:
            raise ValidationError(
                f"{who}: input must be [batch, leads, samples], got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_leads:
            raise ValidationError(
                f"{who}: expected {self.in_leads} leads on axis 1, got {x.shape[1]} "
                f"(shape {tuple(x.shape)}); pass absent leads as zeros with a lead_mask"
            )
        length = x.shape[2]
        if length < self.min_samples or (self.max_samples is not None
                                         and length > self.max_samples):
            top = "" if self.max_samples is None else f" and at most {self.max_samples}"
            raise ValidationError(
                f"{who}: input has {length} samples; this encoder needs at least "
                f"{self.min_samples}{top}"
            )
        if lead_mask is None:
            return None
        if tuple(lead_mask.shape) != tuple(x.shape[:2]):
            raise ValidationError(
                f"{who}: lead_mask must be [batch, leads] = {tuple(x.shape[:2])}, "
                f"got {tuple(lead_mask.shape)}"
            )
        lead_mask = lead_mask.to(device=x.device, dtype=torch.bool)
        # A data-dependent check: skipped while tracing or compiling (ONNX export, compile).
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and not bool(lead_mask.any(dim=1).all()):
            raise ValidationError(f"{who}: every sample needs at least one present lead in "
                                  "lead_mask (a row is all False)")
        return lead_mask


class BenchmarkEncoder(Encoder):
    """An encoder from the PTB-XL benchmark (xresnet1d, inception1d): its head and its init.

    The family calls :meth:`init_benchmark_head` with the trunk's output channels last in
    ``__init__``; the config needs ``concat_pool``, ``head_hidden`` and ``head_dropout``.
    """

    def init_benchmark_head(self, channels: int) -> None:
        """Concat-pool (or mean) pooling and the linear head, then the benchmark's init."""
        config = self.config
        pooler = make_pooler(config.concat_pool, channels, config.head_hidden, config.head_dropout)
        self.init_head(pooler.out_features, pooler)
        init_kaiming(self)

    def init_head_layer(self, layer: nn.Linear) -> None:
        init_kaiming(layer)


# -- lead masks --------------------------------------------------------------------------------


def rescale_present_leads(x: Tensor, lead_mask: Tensor) -> Tensor:
    """Zero masked leads and scale by ``L / n_present`` per sample.

    Args:
        x: ``[B, L, T]`` input.
        lead_mask: ``[B, L]`` bool, True = present (at least one per row).

    Returns:
        ``[B, L, T]``; equal to ``x`` where every lead is present.
    """
    keep = lead_mask.to(x.dtype)  # [B, L]
    scale = x.shape[1] / keep.sum(dim=1, keepdim=True)  # [B, 1]
    return x * (keep * scale).unsqueeze(-1)  # [B, L, T]


# -- pooling -----------------------------------------------------------------------------------


class MeanPool(nn.Module):
    """Global average over time: ``[B, D, T']`` -> ``[B, D]`` (``out_features`` = D)."""

    def __init__(self, channels: int = 0) -> None:
        super().__init__()
        self.out_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-1)


class ConcatPool(nn.Module):
    """The PTB-XL benchmark's head up to its last linear layer (fastai ``create_head1d``).

    ``[B, C, T']`` -> concat(max over time, mean over time) ``[B, 2C]`` -> BatchNorm ->
    then, with ``hidden > 0``: Dropout(``dropout / 2``) -> Linear(2C, hidden) -> ReLU ->
    BatchNorm, giving ``[B, hidden]``; with ``hidden == 0`` the output is ``[B, 2C]``. The
    encoder's head (Dropout(``dropout``) -> Linear) completes the benchmark head.
    """

    def __init__(self, channels: int, hidden: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(2 * channels)]
        if hidden > 0:
            layers += [nn.Dropout(dropout / 2), nn.Linear(2 * channels, hidden),
                       nn.ReLU(inplace=True), nn.BatchNorm1d(hidden)]
        self.layers = nn.Sequential(*layers)
        self.out_features = hidden if hidden > 0 else 2 * channels

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)  # [B, 2C]
        return self.layers(pooled)  # [B, out_features]


def make_pooler(concat: bool, channels: int, hidden: int, dropout: float) -> nn.Module:
    """:class:`ConcatPool` (``concat``) or :class:`MeanPool`; read ``.out_features`` for D."""
    return ConcatPool(channels, hidden, dropout) if concat else MeanPool(channels)


# -- convolution layers ------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = False) -> nn.Sequential:
    """Conv1d (no bias, padding ``(kernel - 1) // 2``) -> BatchNorm -> ReLU if ``relu``."""
    layers: list[nn.Module] = [nn.Conv1d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False),
                               nn.BatchNorm1d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock1d(nn.Module):
    """A residual block in 1-D, torchvision's (ResNet) or fastai's (XResNet).

    ``expansion == 1`` (basic): ``k`` conv (strided) -> BN -> ReLU -> ``k`` conv -> BN.
    ``expansion > 1`` (bottleneck): 1x1 -> BN -> ReLU -> ``k`` conv (strided) -> BN -> ReLU ->
    1x1 to ``expansion * width`` -> BN. Shortcut: the identity when the shape is kept, else a
    strided 1x1 conv + BN (torchvision), or with ``avg_down`` average-pool 2 (ceil mode) then
    1x1 conv + BN (fastai). ReLU after the sum.
    """

    def __init__(self, cin: int, width: int, stride: int, kernel: int, expansion: int = 1,
                 avg_down: bool = False) -> None:
        super().__init__()
        cout = width * expansion
        if expansion == 1:
            convs = [conv_bn(cin, width, kernel, stride, relu=True), conv_bn(width, cout, kernel)]
        else:
            convs = [conv_bn(cin, width, 1, relu=True),
                     conv_bn(width, width, kernel, stride, relu=True), conv_bn(width, cout, 1)]
        self.convs = nn.Sequential(*convs)
        shortcut: list[nn.Module] = []
        if avg_down and stride != 1:
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if cin != cout or (stride != 1 and not avg_down):
            shortcut.append(conv_bn(cin, cout, 1, 1 if avg_down else stride))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))  # [B, cout, ~T / stride]


def resnet_stages(cin: int, layers: tuple[int, ...], widths: tuple[int, ...], kernel: int,
                  expansion: int, avg_down: bool = False) -> tuple[nn.Sequential, int]:
    """ResNet stages of :class:`ResBlock1d` s; every stage after the first halves the time axis.

    Returns:
        The stages as ``nn.Sequential`` of ``nn.Sequential`` s, and their output channels.
    """
    stages = []
    for i, (depth, width) in enumerate(zip(layers, widths)):
        blocks = []
        for j in range(depth):
            blocks.append(ResBlock1d(cin, width, 2 if (i > 0 and j == 0) else 1, kernel,
                                     expansion, avg_down))
            cin = blocks[-1].out_channels
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), cin


def check_resnet_config(config: Any) -> None:
    """Rules shared by the ResNet-style configs (``layers``, ``widths``, ``kernel_size``)."""
    check_positive(config, "layers", "widths", "kernel_size")
    config.require("widths", len(config.widths) == len(config.layers),
                   f"needs one width per stage ({len(config.layers)} stages in layers)")
    config.require("kernel_size", config.kernel_size % 2 == 1, "must be odd (same padding)")


# -- initialisation ----------------------------------------------------------------------------


def init_kaiming(module: nn.Module) -> None:
    """The PTB-XL benchmark's ``weight_init``: Kaiming-normal conv/linear, zero bias, BN 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_transformer(module: nn.Module) -> None:
    """timm's ViT init: truncated-normal (std 0.02) linear weights, zero bias, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -- transformer layers (shared by conv_transformer and vit1d) ---------------------------------


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    ``x`` is ``[B, N, D]``; ``key_mask`` ``[B, N]`` bool (True = may be attended to) removes
    tokens from every query's attention, so their content cannot reach the others.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float,
                 attn_dropout: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(round(width * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x))  # [B, N, 3D]
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, N]
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # [B, H, N, D/H]
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, d)))  # [B, N, D]
        return x + self.drop(self.mlp(self.norm2(x)))  # [B, N, D]


class Transformer(nn.Module):
    """``depth`` :class:`TransformerBlock` s and a final LayerNorm: ``[B, N, D]`` -> same."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float,
                 attn_dropout: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, dropout, attn_dropout, qkv_bias)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)


def check_transformer_config(config: Any) -> None:
    """Rules shared by the transformer configs (``width``, ``depth``, ``heads``, dropouts)."""
    config.require("width", config.width >= 1, "must be at least 1")
    config.require("depth", config.depth >= 0, "must be 0 or more")
    config.require("heads", config.heads >= 1 and config.width % config.heads == 0,
                   f"must be at least 1 and divide width ({config.width})")
    config.require("mlp_ratio", config.mlp_ratio > 0, "must be positive")
    for field in ("dropout", "attn_dropout"):
        config.require(field, 0.0 <= getattr(config, field) < 1.0, "must be in [0, 1)")


def check_positive(config: Any, *fields: str) -> None:
    """Every named field (an int, or a tuple of ints) is at least 1."""
    for field in fields:
        value = getattr(config, field)
        values = value if isinstance(value, tuple) else (value,)
        config.require(field, len(values) > 0 and all(v >= 1 for v in values),
                       "must be at least 1" if not isinstance(value, tuple)
                       else "must be a non-empty list of values >= 1")
