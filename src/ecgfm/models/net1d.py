"""Net1D: the RegNet-style 1-D CNN of ECGFounder.

Reference: Li et al., "An electrocardiogram foundation model built on over 10 million
recordings with external evaluation across multiple domains" (ECGFounder), NEJM AI 2025; the
architecture is Net1D from Hong et al.'s ``resnet1d`` repository (HOLMES, KDD 2020), configured
in ECGFounder's ``finetune_model.py`` as ``Net1D(base_filters=64, ratio=1,
filter_list=[64,160,160,400,400,1024,1024], m_blocks_list=[2,2,2,3,3,4,4], kernel_size=16,
stride=2, groups_width=16, use_bn=False, use_do=False)`` on 12 x 5000 (500 Hz, 10 s).

Structure: a "same"-padded stem conv (``kernel_size``, stride 2) -> Swish; then stages of
pre-activation bottleneck blocks, each ``[BN] -> Swish -> 1x1 -> [BN] -> Swish -> grouped k
conv (stride on a stage's first block, groups of ``group_width`` channels) -> [BN] -> Swish ->
1x1 -> squeeze-excitation (reduction 2, Swish)``, added to a shortcut that is max-pooled when
strided and zero-padded on the channel axis when the width grows. Global average pooling.

Differences from the original, both invisible in shape and parameter count: the shortcut's
max-pool uses ``ceil_mode`` instead of padding with zeros before pooling (same output length),
and dropout inside blocks is one probability (``block_dropout``; ECGFounder: off) instead of a
fixed 0.5.

Parameters without a linear head: net1d 30.60M (ECGFounder's configuration), net1d_small 1.22M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.models.base import Encoder, check_positive
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class Net1dConfig(EncoderConfig):
    """Net1D architecture (defaults: ECGFounder)."""

    in_leads: int = 12  # L, input leads (size of the lead axis)
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    stem_width: int = 64  # channels of the stem conv (base_filters)
    widths: tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)  # output channels per stage
    depths: tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)  # blocks per stage (m_blocks_list)
    kernel_size: int = 16  # kernel of the stem and of the grouped convs, in samples
    stride: int = 2  # stride of the stem and of each stage's first block
    group_width: int = 16  # channels per group in the grouped conv (groups = width / this)
    ratio: float = 1.0  # bottleneck channels = ratio * stage width
    se_reduction: int = 2  # squeeze-excitation hidden width = channels / this
    use_bn: bool = False  # BatchNorm before each activation (ECGFounder trains without)
    block_dropout: float = 0.0  # dropout before each conv of a block (ECGFounder: off)
    head_dropout: float = 0.0  # dropout before the linear head

    def check(self) -> None:
        check_positive(self, "stem_width", "widths", "depths", "kernel_size", "stride",
                       "group_width", "se_reduction")
        self.require("depths", len(self.depths) == len(self.widths),
                     f"needs one depth per stage ({len(self.widths)} widths)")
        self.require("ratio", self.ratio > 0, "must be positive")
        self.require("block_dropout", 0.0 <= self.block_dropout < 1.0, "must be in [0, 1)")
        for width in self.widths:
            mid = int(width * self.ratio)
            self.require("group_width", mid % self.group_width == 0 and mid >= self.group_width,
                         f"must divide every block's bottleneck width ({mid})")


class SameConv1d(nn.Conv1d):
    """Conv1d with TensorFlow-style "same" padding: output length ``ceil(T / stride)``."""

    def forward(self, x: Tensor) -> Tensor:
        length, stride, kernel = x.shape[-1], self.stride[0], self.kernel_size[0]
        pad = max(0, (math.ceil(length / stride) - 1) * stride + kernel - length)
        return super().forward(F.pad(x, (pad // 2, pad - pad // 2)))


class Swish(nn.Module):
    """``x * sigmoid(x)`` (SiLU)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class Net1dBlock(nn.Module):
    """One pre-activation bottleneck block with squeeze-excitation (see the module docstring)."""

    def __init__(self, cin: int, cout: int, config: Net1dConfig, stride: int, first: bool) -> None:
        super().__init__()
        mid = int(cout * config.ratio)

        def pre(channels: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.BatchNorm1d(channels)] if config.use_bn else []
            layers.append(Swish())
            if config.block_dropout > 0:
                layers.append(nn.Dropout(config.block_dropout))
            return layers

        # The network's first block follows the stem's activation, so it skips its own.
        self.body = nn.Sequential(
            *([] if first else pre(cin)), SameConv1d(cin, mid, 1),
            *pre(mid), SameConv1d(mid, mid, config.kernel_size, stride,
                                  groups=mid // config.group_width),
            *pre(mid), SameConv1d(mid, cout, 1),
        )
        hidden = cout // config.se_reduction
        self.se = nn.Sequential(nn.Linear(cout, hidden), Swish(), nn.Linear(hidden, cout),
                                nn.Sigmoid())
        self.stride = stride
        self.pad_channels = (cout - cin) // 2, cout - cin - (cout - cin) // 2

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)  # [B, cout, ceil(T / stride)]
        out = out * self.se(out.mean(dim=-1)).unsqueeze(-1)  # channel gates in (0, 1)
        if self.stride > 1:
            x = F.max_pool1d(x, self.stride, self.stride, ceil_mode=True)
        if any(self.pad_channels):
            x = F.pad(x.transpose(1, 2), self.pad_channels).transpose(1, 2)  # zero channels
        return out + x


@register_encoder("net1d", Net1dConfig)
@register_encoder("net1d_small", Net1dConfig, "net1d_small.json")
class Net1d(Encoder):
    """Net1D encoder; ``forward_features`` gives ``[B, widths[-1], ceil(T / stride^(1+stages))]``."""

    def __init__(self, config: Net1dConfig) -> None:
        super().__init__(config)
        stem: list[nn.Module] = [SameConv1d(config.in_leads, config.stem_width,
                                            config.kernel_size, config.stride)]
        if config.use_bn:
            stem.append(nn.BatchNorm1d(config.stem_width))
        self.stem = nn.Sequential(*stem, Swish())
        blocks, cin = [], config.stem_width
        for i, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for j in range(depth):
                blocks.append(Net1dBlock(cin, width, config, config.stride if j == 0 else 1,
                                         first=i == 0 and j == 0))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.min_samples = config.stride ** (1 + len(config.widths))
        self.init_head(cin)

    def forward_trunk(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # [B, stem_width, T / stride]
        return self.blocks(x)  # [B, widths[-1], T / stride^(1 + stages)]

