"""ResNet1D-18/34/50: torchvision's ResNet with 1-D convolutions, as ECG-text CLIP models use it.

Reference: He et al., "Deep residual learning for image recognition", CVPR 2016; the 1-D port
used as the ECG encoder of ECG-text contrastive models (MERL, Liu et al., "Zero-shot ECG
classification with multimodal learning and test-time clinical knowledge enhancement", ICML
2024, and the ECG-CLIP baselines it compares with): every ``k x k`` conv becomes a length-``k``
1-D conv, widths 64-128-256-512, global average pooling.

Stem: conv ``stem_kernel=7`` stride 2 -> BN -> ReLU -> max-pool 3/2 (torchvision's stem, the
choice of those ECG CLIP encoders; ECG-specific ResNets such as Hannun et al. 2019 use k=15/16
instead, which ``stem_kernel=15`` gives). Blocks use ``kernel_size=3``. Stages after the first
halve the time axis, so the trunk downsamples by 32: 12 x 5000 -> 512 x 157; 12 x 1000 -> 512 x 32.

Parameters without a linear head: resnet1d18 3.85M, resnet1d34 7.22M, resnet1d50 15.96M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ecgfm.models.base import Encoder, check_positive, check_resnet_config, conv_bn, resnet_stages
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class ResNet1dConfig(EncoderConfig):
    """ResNet1D architecture (defaults: ResNet-18)."""

    in_leads: int = 12  # L, input leads (size of the lead axis)
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    block: Literal["basic", "bottleneck"] = "basic"  # basic (18/34) or bottleneck x4 (50)
    layers: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels per stage (x4 after a bottleneck)
    stem_width: int = 64  # channels of the stem conv
    stem_kernel: int = 7  # stem conv kernel in samples (stride 2, then max-pool 3 stride 2)
    kernel_size: int = 3  # kernel of the blocks' temporal convs (odd)
    head_dropout: float = 0.0  # dropout before the linear head

    def check(self) -> None:
        check_resnet_config(self)
        check_positive(self, "stem_width", "stem_kernel")


@register_encoder("resnet1d18", ResNet1dConfig)
@register_encoder("resnet1d34", ResNet1dConfig, {"layers": (3, 4, 6, 3)})
@register_encoder("resnet1d50", ResNet1dConfig, {"layers": (3, 4, 6, 3), "block": "bottleneck"})
class ResNet1d(Encoder):
    """ResNet1D encoder; ``forward_features`` gives the last stage's map ``[B, D, T / 32]``."""

    def __init__(self, config: ResNet1dConfig) -> None:
        super().__init__(config)
        self.stem = nn.Sequential(
            conv_bn(config.in_leads, config.stem_width, config.stem_kernel, 2, relu=True),
            nn.MaxPool1d(3, 2, 1),
        )
        expansion = 4 if config.block == "bottleneck" else 1
        self.stages, cin = resnet_stages(config.stem_width, config.layers, config.widths,
                                         config.kernel_size, expansion)
        self.min_samples = 4 * 2 ** (len(config.layers) - 1)
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.init_head(cin)

    def forward_trunk(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # [B, stem_width, T / 4]
        return self.stages(x)  # [B, D, T / 32]
