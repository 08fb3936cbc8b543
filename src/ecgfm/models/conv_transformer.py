"""conv_transformer: a strided convolutional feature extractor + transformer (wav2vec 2.0 family).

References: Baevski et al., "wav2vec 2.0", NeurIPS 2020; Oh et al., "Lead-agnostic
self-supervised learning for local and global representations of electrocardiogram" (W2V+CMSC,
fairseq-signals); McKeen et al., "ECG-FM: an open electrocardiogram foundation model", 2024,
whose encoder this reproduces by default: fairseq-signals' ``ConvTransformerConfig`` with
``conv_feature_layers="[(256, 2, 2)] * 4"``, 768 wide, 12 layers, 12 heads, FFN 3072,
convolutional positional embedding of 128 taps in 16 groups (about 90M parameters).

Data path (shapes for the default on 12 x 2500, ECG-FM's 500 Hz x 5 s input):

1. feature extractor ``[B, 12, 2500]`` -> ``[B, 256, 156]``: per layer a Conv1d
   (``channels, kernel, stride`` from ``conv_layers``, no padding), a norm and GELU.
   ``extractor_norm="group"`` puts one GroupNorm (a group per channel) on the first layer only
   (fairseq's ``default`` mode); ``"layer"`` a LayerNorm over channels after every layer.
   wav2vec 2.0's audio extractor is ``((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2``
   (stride 320), far too coarse for ECGs at 100-500 Hz; any list of triples can be configured.
2. LayerNorm(256) -> Linear(256, width) -> dropout.
3. relative positional embedding: ``x + GELU(Conv1d(width, width, pos_conv_kernel,
   groups=pos_conv_groups, same padding))`` (wav2vec 2.0; the original's weight norm on this
   conv is left out).
4. a pre-LN transformer (:class:`~ecgfm.models.base.Transformer`, final LayerNorm): fairseq's
   default is post-LN (``layer_norm_first=False``); pre-LN trains stably without warm-up tricks.
5. mean pooling over time.

Lead mask: the first conv mixes all leads, so leads cannot be dropped as tokens; masked leads
are zeroed and the input rescaled by ``L / n_present`` (:func:`~ecgfm.models.base.
rescale_present_leads`), as for the CNNs. Masking/quantisation modules of pre-training are not
part of the encoder.

Parameters without a linear head: conv_transformer 90.37M, conv_transformer_small 5.34M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ecgfm.models.base import Encoder, Transformer, check_transformer_config, init_transformer
from ecgfm.models.registry import EncoderConfig, register_encoder


@dataclass(frozen=True)
class ConvTransformerConfig(EncoderConfig):
    """Conv feature extractor + transformer (defaults: ECG-FM's encoder)."""

    in_leads: int = 12  # L, input leads (size of the lead axis)
    num_outputs: int = 0  # C, outputs of the linear head; 0 = no head (forward gives features)
    conv_layers: tuple[tuple[int, int, int], ...] = ((256, 2, 2),) * 4  # (channels, kernel, stride) per conv
    extractor_norm: Literal["group", "layer"] = "group"  # GroupNorm on conv 1 only, or LayerNorm on all
    conv_bias: bool = False  # bias in the extractor convs
    width: int = 768  # transformer width (encoder_embed_dim)
    depth: int = 12  # transformer layers
    heads: int = 12  # attention heads (divides width)
    mlp_ratio: float = 4.0  # FFN hidden width / width (3072 / 768)
    pos_conv_kernel: int = 128  # taps of the convolutional positional embedding
    pos_conv_groups: int = 16  # groups of that conv (divides width)
    dropout: float = 0.0  # dropout after the projection, attention output and FFN
    attn_dropout: float = 0.0  # dropout on attention weights
    head_dropout: float = 0.0  # dropout before the linear head

    def check(self) -> None:
        check_transformer_config(self)
        self.require("conv_layers", len(self.conv_layers) > 0
                     and all(min(layer) >= 1 for layer in self.conv_layers),
                     "must be a non-empty list of [channels, kernel, stride] with values >= 1")
        self.require("pos_conv_kernel", self.pos_conv_kernel >= 1, "must be at least 1")
        self.require("pos_conv_groups", self.pos_conv_groups >= 1
                     and self.width % self.pos_conv_groups == 0,
                     f"must be at least 1 and divide width ({self.width})")


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``[B, C, T]``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvFeatureExtractor(nn.Module):
    """Strided convs without padding: ``[B, L, T]`` -> ``[B, channels, N]``."""

    def __init__(self, in_leads: int, layers: tuple[tuple[int, int, int], ...], norm: str,
                 bias: bool) -> None:
        super().__init__()
        convs, cin = [], in_leads
        for i, (cout, kernel, stride) in enumerate(layers):
            block: list[nn.Module] = [nn.Conv1d(cin, cout, kernel, stride, bias=bias)]
            if norm == "layer":
                block.append(_ChannelLayerNorm(cout))
            elif i == 0:
                block.append(nn.GroupNorm(cout, cout))
            block.append(nn.GELU())
            convs.append(nn.Sequential(*block))
            cin = cout
        self.convs = nn.Sequential(*convs)
        self.out_channels = cin
        # The shortest input giving one output step: invert N = floor((T - k) / s) + 1.
        need = 1
        for _, kernel, stride in reversed(layers):
            need = (need - 1) * stride + kernel
        self.min_samples = need
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class ConvPositionalEmbedding(nn.Module):
    """wav2vec 2.0's relative positional embedding: ``x + GELU(grouped conv(x))`` on [B, N, D]."""

    def __init__(self, width: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=groups)
        self.trim = 1 if kernel % 2 == 0 else 0  # an even kernel gives one step too many
        self.act = nn.GELU()
        # wav2vec 2.0's init: normal with std sqrt(4 / (kernel * width)), zero bias.
        nn.init.normal_(self.conv.weight, 0.0, (4.0 / (kernel * width)) ** 0.5)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        pos = self.conv(x.transpose(1, 2))  # [B, D, N + trim]
        if self.trim:
            pos = pos[..., :-self.trim]
        return x + self.act(pos).transpose(1, 2)  # [B, N, D]


@register_encoder("conv_transformer", ConvTransformerConfig)
@register_encoder("conv_transformer_small", ConvTransformerConfig, "conv_transformer_small.json")
class ConvTransformer(Encoder):
    """wav2vec 2.0-style encoder; ``forward_features`` gives the tokens ``[B, width, N]``."""

    def __init__(self, config: ConvTransformerConfig) -> None:
        super().__init__(config)
        self.extractor = ConvFeatureExtractor(config.in_leads, config.conv_layers,
                                              config.extractor_norm, config.conv_bias)
        channels = self.extractor.out_channels
        self.feature_norm = nn.LayerNorm(channels)
        self.project = nn.Linear(channels, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.transformer = Transformer(config.width, config.depth, config.heads,
                                       config.mlp_ratio, config.dropout, config.attn_dropout)
        init_transformer(self.feature_norm)
        init_transformer(self.project)
        init_transformer(self.transformer)
        self.pos_embed = ConvPositionalEmbedding(config.width, config.pos_conv_kernel,
                                                 config.pos_conv_groups)
        self.min_samples = self.extractor.min_samples
        self.init_head(config.width)

    def init_head_layer(self, layer: nn.Linear) -> None:
        init_transformer(layer)

    def forward_trunk(self, x: Tensor) -> Tensor:
        x = self.extractor(x).transpose(1, 2)  # [B, N, channels]
        x = self.drop(self.project(self.feature_norm(x)))  # [B, N, width]
        x = self.transformer(self.pos_embed(x))  # [B, N, width]
        return x.transpose(1, 2)  # [B, width, N]
