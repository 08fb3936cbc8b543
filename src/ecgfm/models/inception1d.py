"""inception1d: the InceptionTime-style CNN of the PTB-XL benchmark.

Reference: Strodthoff et al., "Deep learning for ECG analysis: benchmarks and insights from
PTB-XL", IEEE JBHI 2021 (``helme/ecg_ptbxl_benchmarking``, ``code/models/inception1d.py``),
after Ismail Fawaz et al., "InceptionTime", DMKD 2020. The benchmark builds it as
``inception1d(input_channels=12, use_residual=True, ps_head=0.5, lin_ftrs_head=[128],
kernel_size=40)``, i.e. depth 6, 32 filters per branch, bottleneck 32 and kernel sizes
``[40, 20, 10]`` made odd: **39, 19, 9**.

Block: a 1x1 bottleneck (12 or 128 -> 32 channels) feeds three convs of kernel 39, 19 and 9
(32 filters each); a fourth branch max-pools (3, stride 1) the block input and applies a 1x1
conv (32 filters); the four are concatenated (128 channels) -> BN -> ReLU. Every third block
adds a shortcut from the input of its group of three (1x1 conv + BN), then ReLU. No
downsampling: the feature map keeps the input length. Head in the benchmark's style, as for
xresnet1d: concat pool -> BN -> Dropout(0.25) -> Linear(256, 128) -> ReLU -> BN is
:meth:`pool` (``num_features = 128``), then Dropout(0.5) -> Linear(128, C). Initialisation:
the benchmark's ``weight_init`` (Kaiming normal, BN 1/0).

Parameters without the linear head: 0.51M (0.47M trunk + 0.03M concat-pool block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecgfm.models.base import BenchmarkEncoder, check_positive, conv_bn
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class Inception1dConfig(EncoderConfig):
    """inception1d architecture (defaults: the benchmark's)."""

    in_leads: int = 12  # L, input leads (size of the lead axis)
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    depth: int = 6  # inception blocks (a multiple of 3 when residual)
    filters: int = 32  # filters per branch; a block outputs (len(kernel_sizes) + 1) * filters
    bottleneck: int = 32  # channels of the 1x1 bottleneck before the long convs; 0 = none
    kernel_sizes: tuple[int, ...] = (39, 19, 9)  # long-conv kernels (benchmark kernel_size=40)
    residual: bool = True  # shortcut every third block
    concat_pool: bool = True  # [max, mean] pooling + BN (benchmark); False = mean pooling
    head_hidden: int = 128  # hidden linear layer of the concat-pool head (lin_ftrs_head); 0 = none
    head_dropout: float = 0.5  # dropout before the linear head (ps_head; half of it before hidden)

    def check(self) -> None:
        check_positive(self, "depth", "filters", "kernel_sizes")
        self.require("bottleneck", self.bottleneck >= 0, "must be 0 or more")
        self.require("kernel_sizes", all(k % 2 == 1 for k in self.kernel_sizes),
                     "must all be odd (same padding)")
        self.require("depth", not self.residual or self.depth % 3 == 0,
                     "must be a multiple of 3 with residual=True")
        self.require("head_hidden", self.head_hidden >= 0, "must be 0 or more")


def _conv(cin: int, cout: int, kernel: int) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, kernel, padding=(kernel - 1) // 2, bias=False)


class InceptionBlock1d(nn.Module):
    """Bottleneck -> parallel long convs, plus max-pool -> 1x1; concat -> BN -> ReLU."""

    def __init__(self, cin: int, config: Inception1dConfig) -> None:
        super().__init__()
        width = config.bottleneck or cin
        self.bottleneck = _conv(cin, config.bottleneck, 1) if config.bottleneck else nn.Identity()
        self.convs = nn.ModuleList(_conv(width, config.filters, k) for k in config.kernel_sizes)
        self.pool_conv = nn.Sequential(nn.MaxPool1d(3, 1, padding=1), _conv(cin, config.filters, 1))
        self.out_channels = (len(config.kernel_sizes) + 1) * config.filters
        self.bn_relu = nn.Sequential(nn.BatchNorm1d(self.out_channels), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        bottled = self.bottleneck(x)  # [B, bottleneck, T]
        branches = [conv(bottled) for conv in self.convs] + [self.pool_conv(x)]
        return self.bn_relu(torch.cat(branches, dim=1))  # [B, out_channels, T]


@register_encoder("inception1d", Inception1dConfig)
class Inception1d(BenchmarkEncoder):
    """inception1d encoder; ``forward_features`` gives ``[B, 128, T]`` (no downsampling)."""

    def __init__(self, config: Inception1dConfig) -> None:
        super().__init__(config)
        blocks, shortcuts, cin = [], [], config.in_leads
        for d in range(config.depth):
            blocks.append(InceptionBlock1d(cin, config))
            if config.residual and d % 3 == 0:
                shortcuts.append(conv_bn(cin, blocks[-1].out_channels, 1))
            cin = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.shortcuts = nn.ModuleList(shortcuts)
        self.act = nn.ReLU()
        self.init_benchmark_head(cin)

    def forward_trunk(self, x: Tensor) -> Tensor:
        residual = x  # [B, L, T]
        for d, block in enumerate(self.blocks):
            x = block(x)  # [B, 128, T]
            if self.config.residual and d % 3 == 2:
                x = self.act(x + self.shortcuts[d // 3](residual))
                residual = x
        return x
