"""What every self-supervised objective shares: its input, the views it asks the encoder for, and
weighted combinations.

A self-supervised objective needs the encoder's outputs on inputs *it* chooses (a masked copy,
two segments, non-overlapping patches), but a loss never runs the model. So each objective is an
``nn.Module`` with two steps:

1. ``views(inp) -> (views, state)``: from an :class:`SSLInput` (a batch of windows, their lead
   masks, a second time-adjacent segment when the objective needs one, patient groups) it returns
   the inputs to encode, by name, as :class:`View` s, and a ``state`` (masks, targets) for step 2;
2. ``forward(outputs, state) -> {"loss": ..., <part>: ...}``: the loss from the encoder's
   outputs on those views (``outputs[name]``) and the state.

:func:`run_views` runs a registry encoder on the views (sharing the work between views that are
the same input), and :meth:`SSLObjective.step` chains the three for notebooks and tests; the
pretraining module (:mod:`ecgfm.train.pretrain`) does the same. A view's ``output`` says what
comes back:

==========  ===================================================================  ===============
output      what the encoder computes                                            shape
==========  ===================================================================  ===============
sequence    ``forward_features(x, lead_mask)``: per-time-step features           ``[B, D, T']``
pooled      ``forward_head(forward_features(x, m), pre_logits=True)``            ``[B, F]``
patches     the window cut into non-overlapping patches of ``patch`` samples,    ``[B, F, n]``
            each encoded on its own and pooled: a latent sequence whose steps
            share no input (``n = T // patch``)
==========  ===================================================================  ===============

Why ``patches``: the CNNs of the registry see far around each output step (ResNet1D-18's
receptive field is about 435 input samples, 4.3 s at 100 Hz), so neighbouring steps of
``sequence`` share most of their input, and predicting a future step (CPC) or a masked step
(wav2vec 2.0) from its neighbours can be solved by copying shared input. wav2vec 2.0's own
feature encoder has a 25 ms receptive field at a 20 ms stride; cutting the window into patches
gives any registry encoder that property.

Objectives are built by name with :func:`create_ssl_objective` from :class:`EncoderDims` (the
encoder's widths, the sampling rate and the window), and combined with weights by
:class:`Combined`.

>>> import torch
>>> from ecgfm.models.registry import create_encoder
>>> encoder = create_encoder("resnet1d18", widths=[8, 8, 16, 16], stem_width=8)  # doctest: +SKIP
>>> dims = encoder_dims(encoder, fs=100.0, window=500)                            # doctest: +SKIP
>>> cpc = create_ssl_objective("cpc", dims)                                       # doctest: +SKIP
>>> out = cpc.step(encoder, SSLInput(torch.randn(8, 12, 500), torch.ones(8, 12, dtype=torch.bool)))  # doctest: +SKIP
>>> sorted(out)                                                                   # doctest: +SKIP
['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError

__all__ = [
    "OUTPUTS", "SSL_OBJECTIVES", "Combined", "EncoderDims", "SSLInput", "SSLObjective", "View",
    "create_ssl_objective", "encoder_dims", "objective_summary", "random_uniform", "run_views",
]

OUTPUTS = ("sequence", "pooled", "patches")


# ---------------------------------------------------------------------------------------------
# inputs, views and dimensions
# ---------------------------------------------------------------------------------------------
@dataclass
class SSLInput:
    """One batch as an objective sees it (the pretraining module makes it from a store batch).

    Attributes:
        signal: ``[B, L, T]`` float, one window per record (store units: z-scores after the
            standard pipeline).
        lead_mask: ``[B, L]`` bool, True where the lead is present (every row has one).
        length: ``[B]`` valid samples of ``signal`` (the rest is zero padding); None: all.
        pair: ``[B, L, T]`` the time-adjacent window of the same record, for objectives with
            ``needs_pair`` (None otherwise).
        pair_length: ``[B]`` valid samples of ``pair``.
        groups: ``[B]`` int64 patient of each record (same number = same patient; -1 unknown),
            or None.
        generator: a CPU ``torch.Generator`` for the random masks (validation passes a seeded
            one so its loss is comparable between epochs); None: the global random stream
            (restored exactly on resume by the pretraining module).
    """

    signal: Tensor
    lead_mask: Tensor
    length: Tensor | None = None
    pair: Tensor | None = None
    pair_length: Tensor | None = None
    groups: Tensor | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.signal.ndim != 3:
            raise ValidationError(f"SSLInput: signal must be [B, L, T], got {tuple(self.signal.shape)}")
        if tuple(self.lead_mask.shape) != tuple(self.signal.shape[:2]):
            raise ValidationError(f"SSLInput: lead_mask must be [B, L] = {tuple(self.signal.shape[:2])}, "
                                  f"got {tuple(self.lead_mask.shape)}")
        if self.pair is not None and self.pair.shape != self.signal.shape:
            raise ValidationError(f"SSLInput: pair {tuple(self.pair.shape)} and signal "
                                  f"{tuple(self.signal.shape)} differ in shape")


@dataclass(frozen=True)
class View:
    """An input for the encoder and what to return (see the module docstring's table)."""

    signal: Tensor  # [B, L, T]
    lead_mask: Tensor | None  # [B, L] bool, or None (all present)
    output: str = "sequence"  # sequence, pooled or patches
    patch: int = 0  # samples per patch (output="patches")

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValidationError(f"View: output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.output == "patches" and self.patch < 1:
            raise ValidationError("View: output='patches' needs patch >= 1 samples")


@dataclass(frozen=True)
class EncoderDims:
    """What an objective needs to know about the encoder and the data to build its layers."""

    sequence: int  # D: channels of forward_features ([B, D, T'])
    pooled: int  # F: width of the pooled features (encoder.num_features)
    in_leads: int  # L: leads of the input
    min_samples: int  # the shortest input the encoder accepts
    fs: float  # sampling rate of the windows, Hz
    window: int  # T: samples per window


def encoder_dims(encoder: nn.Module, fs: float, window: int) -> EncoderDims:
    """:class:`EncoderDims` of a registry encoder (one dummy forward pass finds ``D``)."""
    length = max(int(getattr(encoder, "min_samples", 1)), min(int(window), 256))
    if getattr(encoder, "max_samples", None):
        length = min(length, int(encoder.max_samples))
    ref = next(encoder.parameters())
    x = torch.zeros(2, int(encoder.in_leads), length, device=ref.device, dtype=ref.dtype)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            channels = int(encoder.forward_features(x).shape[1])
    finally:
        encoder.train(was_training)
    return EncoderDims(sequence=channels, pooled=int(encoder.num_features), in_leads=int(encoder.in_leads),
                       min_samples=int(getattr(encoder, "min_samples", 1)), fs=float(fs), window=int(window))


def random_uniform(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """Uniform ``[0, 1)`` of ``shape`` drawn on the CPU from ``generator`` (or the global CPU
    stream), then moved to ``device``: the same numbers whatever the device."""
    return torch.rand(tuple(shape), generator=generator).to(device)


# ---------------------------------------------------------------------------------------------
# running the encoder on views
# ---------------------------------------------------------------------------------------------
def _encode(encoder: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    uses_mask = bool(getattr(encoder, "supports_lead_mask", False))
    return encoder.forward_features(x, mask if uses_mask else None)


def run_views(encoder: nn.Module, views: Mapping[str, View]) -> dict[str, Tensor]:
    """The encoder's outputs on ``views``: ``{name: tensor}`` (shapes in the module docstring).

    Views holding the same tensors share one encoder pass (two objectives of a
    :class:`Combined` asking for the plain window's features cost one pass); a ``sequence`` and a
    ``pooled`` view of one input share the features.
    """
    features: dict[tuple[Any, ...], Tensor] = {}
    out: dict[str, Tensor] = {}
    for name, view in views.items():
        key = (id(view.signal), id(view.lead_mask), view.output == "patches", view.patch)
        if view.output == "patches":
            if key not in features:
                x, m = view.signal, view.lead_mask
                b, leads, t = x.shape
                n = t // view.patch
                if n < 1:
                    raise ValidationError(f"view {name!r}: a window of {t} samples holds no patch of {view.patch}")
                patches = x[..., : n * view.patch].reshape(b, leads, n, view.patch)  # [B, L, n, P]
                patches = patches.permute(0, 2, 1, 3).reshape(b * n, leads, view.patch)  # [B*n, L, P]
                pm = None if m is None else m[:, None, :].expand(b, n, leads).reshape(b * n, leads)
                pooled = encoder.forward_head(_encode(encoder, patches, pm), pre_logits=True)  # [B*n, F]
                features[key] = pooled.reshape(b, n, -1).transpose(1, 2)  # [B, F, n]
            out[name] = features[key]
            continue
        if key not in features:
            features[key] = _encode(encoder, view.signal, view.lead_mask)  # [B, D, T']
        seq = features[key]
        if view.output == "sequence":
            out[name] = seq
        else:
            pooled_key = (*key, "pooled")
            if pooled_key not in features:
                features[pooled_key] = encoder.forward_head(seq, pre_logits=True)  # [B, F]
            out[name] = features[pooled_key]
    return out


# ---------------------------------------------------------------------------------------------
# the base class and combinations
# ---------------------------------------------------------------------------------------------
class SSLObjective(nn.Module):
    """Base class of the self-supervised objectives (see the module docstring).

    Subclasses set ``name``, implement :meth:`views` and :meth:`forward`, and set
    ``needs_pair = True`` when they contrast two time-adjacent segments of a record
    (:attr:`SSLInput.pair`). :attr:`uses_pooled` says whether any view asks for pooled
    outputs (the pretraining module freezes an encoder's pooling parameters otherwise, so DDP
    does not wait for their gradients).
    """

    name: ClassVar[str] = ""
    needs_pair: bool = False
    uses_pooled: bool = True

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:  # pragma: no cover - abstract
        """The inputs to encode, by name, and the state :meth:`forward` needs."""
        raise NotImplementedError

    def set_step(self, step: int) -> None:
        """Told the optimizer step before each training step (schedules such as Gumbel
        temperature annealing); nothing by default."""

    def step(self, encoder: nn.Module, inp: SSLInput) -> dict[str, Tensor]:
        """``views`` -> :func:`run_views` -> ``forward``: the loss dict for one batch."""
        views, state = self.views(inp)
        return self(run_views(encoder, views), state)


class Combined(SSLObjective):
    """A weighted sum of objectives: ``loss = sum_i w_i loss_i``.

    Parts are prefixed with each objective's name (``cpc/loss``, ``cpc/accuracy``,
    ``masked/loss`` ...); every objective draws its own masks, and views that are the same
    input (the plain window's features) are encoded once by :func:`run_views`.

    Args:
        objectives: ``{name: objective}``; the names must differ (``cpc``, ``masked_2`` ...).
        weights: ``{name: weight >= 0}`` (default 1 each).
    """

    name = "combined"

    def __init__(self, objectives: Mapping[str, SSLObjective], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not objectives:
            raise ValidationError("Combined: give at least one objective")
        self.parts = nn.ModuleDict(dict(objectives))
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.parts))
        if unknown:
            raise ValidationError(f"Combined: weights for unknown objective(s) {unknown} (objectives: {list(self.parts)})")
        self.weights = {k: float(weights.get(k, 1.0)) for k in self.parts}
        bad = {k: w for k, w in self.weights.items() if not w >= 0}
        if bad:
            raise ValidationError(f"Combined: weights must be >= 0, got {bad}")
        self.needs_pair = any(o.needs_pair for o in self.parts.values())
        self.uses_pooled = any(o.uses_pooled for o in self.parts.values())

    def views(self, inp: SSLInput) -> tuple[dict[str, View], dict[str, Any]]:
        views: dict[str, View] = {}
        state: dict[str, Any] = {}
        for key, objective in self.parts.items():
            v, s = objective.views(inp)
            views.update({f"{key}.{n}": view for n, view in v.items()})
            state[key] = (list(v), s)
        return views, state

    def forward(self, outputs: Mapping[str, Tensor], state: Mapping[str, Any]) -> dict[str, Tensor]:
        total: Tensor | None = None
        out: dict[str, Tensor] = {}
        for key, objective in self.parts.items():
            names, s = state[key]
            result = objective({n: outputs[f"{key}.{n}"] for n in names}, s)
            weighted = self.weights[key] * result["loss"]
            total = weighted if total is None else total + weighted
            for part, value in result.items():
                out[f"{key}/{part}"] = value.detach() if part == "loss" else value
        assert total is not None
        out["loss"] = total
        return out

    def set_step(self, step: int) -> None:
        for objective in self.parts.values():
            objective.set_step(step)


def _registry() -> dict[str, type[SSLObjective]]:
    from ecgfm.objectives.contrastive import SegmentContrast
    from ecgfm.objectives.cpc import CPC
    from ecgfm.objectives.masked import MaskedModelling
    from ecgfm.objectives.wav2vec2 import Wav2Vec2

    return {"cpc": CPC, "wav2vec2": Wav2Vec2, "masked": MaskedModelling, "cmsc": SegmentContrast}


#: the objective names :func:`create_ssl_objective` knows
SSL_OBJECTIVES = ("cpc", "wav2vec2", "masked", "cmsc")


def create_ssl_objective(spec: str | Mapping[str, Any] | Sequence[Mapping[str, Any]], dims: EncoderDims,
                         **kwargs: Any) -> SSLObjective:
    """An objective by name, or a weighted :class:`Combined` of several.

    Args:
        spec: a name from :data:`SSL_OBJECTIVES`; a mapping ``{name: cpc, weight: 1.0,
            <option>: ...}``; or a list of such mappings (a :class:`Combined`; a name used twice
            needs ``key: other_name``). ``weight`` applies inside a combination only.
        dims: the encoder's and the data's dimensions (:func:`encoder_dims`).
        **kwargs: options of a single named objective.

    Raises:
        ValidationError: an unknown name or option (listing the valid ones).

    >>> create_ssl_objective([{"name": "cpc", "weight": 1.0}, {"name": "masked", "weight": 0.5}], dims)  # doctest: +SKIP
    """
    table = _registry()
    if isinstance(spec, str):
        spec = {"name": spec, **kwargs}
    elif kwargs:
        raise ValidationError("create_ssl_objective: options go inside the mapping when spec is not a name")
    if isinstance(spec, Mapping):
        specs, single = [dict(spec)], True
    else:
        specs, single = [dict(s) for s in spec], False
        if not specs:
            raise ValidationError("pretraining objectives: the list is empty")
    built: dict[str, SSLObjective] = {}
    weights: dict[str, float] = {}
    for i, item in enumerate(specs):
        name = item.pop("name", None)
        where = f"objective {name!r}" if single else f"objectives[{i}] ({name!r})"
        if name not in table:
            raise ValidationError(f"{where}: unknown objective (known: {', '.join(SSL_OBJECTIVES)})")
        key = str(item.pop("key", name))
        weight = item.pop("weight", 1.0)
        if key in built:
            raise ValidationError(f"{where}: a second {key!r}; give it another key (key: {key}_2)")
        try:
            built[key] = table[name](dims, **item)
        except TypeError as error:
            fields = [p for p in _options(table[name]) if p != "dims"]
            raise ValidationError(f"{where}: {error} (options: {', '.join(fields)})") from None
        weights[key] = float(weight)
    if single:
        return next(iter(built.values()))
    return Combined(built, weights)


def _options(cls: type) -> list[str]:
    import inspect

    return [n for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def objective_summary(objective: SSLObjective) -> dict[str, Any]:
    """A JSON-able description (class, options) of an objective, for model cards and logs."""
    if isinstance(objective, Combined):
        return {"combined": {k: {"weight": objective.weights[k], **objective_summary(o)}
                             for k, o in objective.parts.items()}}
    return {"name": objective.name, **dict(getattr(objective, "options", {}))}
