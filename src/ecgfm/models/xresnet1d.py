"""xresnet1d50 / xresnet1d101: the strongest baseline of the PTB-XL benchmark.

Reference: Strodthoff, Wagner, Schaeffter and Samek, "Deep learning for ECG analysis:
benchmarks and insights from PTB-XL", IEEE JBHI 2021 (code: ``helme/ecg_ptbxl_benchmarking``,
``code/models/xresnet1d.py``), a 1-D port of fastai's XResNet (He et al., "Bag of tricks for
image classification with CNNs", CVPR 2019). The benchmark builds it as
``xresnet1d101(input_channels=12, kernel_size=5, ps_head=0.5, lin_ftrs_head=[128])``.

What that means, and what is built here:

- stem: three conv(k=5)-BN-ReLU layers 12 -> 32 (stride 2) -> 32 -> 64, then max-pool 3/2;
- four stages of fastai ``ResBlock`` s with expansion 4 (``expansion=1`` gives basic blocks):
  1x1 -> k=5 (stride 2 on a stage's first block, stages 2-4) -> 1x1, each conv followed by BN
  (ReLU on the first two); the shortcut average-pools (2, ceil mode) and then 1x1-conv+BN
  projects when the shape changes; ReLU after the sum. Unlike fastai's image XResNet, the
  benchmark keeps **64 channels in every stage** (``block_szs = [64, 64, 64, 64]``), so the
  trunk ends in 256 channels — that is why xresnet1d101 has 1.8M parameters, not 40M;
- head, kept in the benchmark's style (fastai ``create_head1d``): concat pooling
  ([max, mean] over time) -> BN -> Dropout(0.25) -> Linear(512, 128) -> ReLU -> BN, which is
  :meth:`pool` here (``num_features = 128``), then Dropout(0.5) -> Linear(128, C), the linear
  head. ``head_hidden=0`` gives concat pool -> BN as the pooled vector (``num_features =
  512``);
- initialisation as the benchmark's training code applies it (``weight_init``): Kaiming-normal
  conv and linear weights, zero biases, BatchNorm weight 1 and bias 0.

The trunk downsamples by 32 (12 x 1000 -> 256 x 32 at 100 Hz, the benchmark's rate).
Parameters without the linear head: xresnet1d101 1.87M (1.81M trunk + 0.07M concat-pool block),
xresnet1d50 0.95M.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ecgfm.models.base import (
    BenchmarkEncoder,
    check_positive,
    check_resnet_config,
    conv_bn,
    resnet_stages,
)
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class XResNet1dConfig(EncoderConfig):
    """XResNet1D architecture (defaults: the benchmark's xresnet1d101)."""

    in_leads: int = 12  # L, input leads (size of the lead axis)
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    expansion: int = 4  # 4 = bottleneck blocks (xresnet50/101), 1 = basic blocks (18/34)
    layers: tuple[int, ...] = (3, 4, 23, 3)  # residual blocks per stage
    widths: tuple[int, ...] = (64, 64, 64, 64)  # inner channels per stage (output x expansion)
    stem_widths: tuple[int, ...] = (32, 32, 64)  # channels of the stem convs (first: stride 2)
    stem_kernel: int = 5  # kernel of the stem convs (odd)
    kernel_size: int = 5  # kernel of the blocks' temporal convs (odd)
    concat_pool: bool = True  # [max, mean] pooling + BN (benchmark); False = mean pooling
    head_hidden: int = 128  # hidden linear layer of the concat-pool head (lin_ftrs_head); 0 = none
    head_dropout: float = 0.5  # dropout before the linear head (ps_head; half of it before hidden)

    def check(self) -> None:
        check_resnet_config(self)
        check_positive(self, "expansion", "stem_widths", "stem_kernel")
        self.require("stem_kernel", self.stem_kernel % 2 == 1, "must be odd (same padding)")
        self.require("head_hidden", self.head_hidden >= 0, "must be 0 or more")


@register_encoder("xresnet1d101", XResNet1dConfig)
@register_encoder("xresnet1d50", XResNet1dConfig, {"layers": (3, 4, 6, 3)})
class XResNet1d(BenchmarkEncoder):
    """XResNet1D encoder; ``forward_features`` gives ``[B, widths[-1] * expansion, T / 32]``."""

    def __init__(self, config: XResNet1dConfig) -> None:
        super().__init__(config)
        sizes = (config.in_leads, *config.stem_widths)
        self.stem = nn.Sequential(
            *(conv_bn(sizes[i], sizes[i + 1], config.stem_kernel, 2 if i == 0 else 1, relu=True)
              for i in range(len(config.stem_widths))),
            nn.MaxPool1d(3, 2, 1),
        )
        self.stages, cin = resnet_stages(sizes[-1], config.layers, config.widths,
                                         config.kernel_size, config.expansion, avg_down=True)
        self.min_samples = 4 * 2 ** (len(config.layers) - 1)
        self.init_benchmark_head(cin)

    def forward_trunk(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # [B, stem_widths[-1], T / 4]
        return self.stages(x)  # [B, D, T / 32]
