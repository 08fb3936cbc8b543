"""Integrated gradients for a model's findings, mapped back onto the record's own time axis.

Integrated gradients (Sundararajan, Taly & Yan, 2017) attributes an output ``f(x)`` to each
input sample as ``(x - b) * integral_0^1 df/dx(b + a (x - b)) da`` for a baseline ``b``. Here
``f`` is the probability of one finding (after the head's sigmoid or softmax), ``x`` the model's
input ``[L, T]`` (after the pipeline, so z-scored per lead) and ``b`` zeros: a flat line at
each lead's mean. The integral is a Gauss-Legendre quadrature over ``steps`` points (Captum's
default rule), and the attributions satisfy completeness: they sum to
``f(x) - f(b)`` up to the quadrature error, reported as ``completeness_error``.

The input of the model is cropped and resampled; :func:`model_time_axis` walks the pipeline to
find where the model's window sits in the raw record, so an attribution at model sample ``j``
belongs to record time ``t0 + j / fs`` seconds.

torch is imported here; import this module only where attributions are computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ecgfm.errors import ValidationError
from ecgfm.record import ECG

METHOD = "integrated_gradients"
TIME_RESOLUTION_S = 0.1  # width of the bins of the JSON's time_contribution
PATH_BUDGET = 4_000_000  # input values per forward pass of the path (bounds activation memory)


def integrated_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    targets: Sequence[int],
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated-gradients attributions of several outputs of ``fn`` for one input.

    Args:
        fn: differentiable map from a batch ``[B, *x.shape]`` to outputs ``[B, C]``.
        x: one input, e.g. ``[L, T]``.
        targets: output indices to explain (K of them).
        baseline: the reference input (shape of ``x``); zeros when None.
        steps: quadrature points on the straight path from the baseline to ``x``.
        batch_size: path points per forward pass.

    Returns:
        ``(attributions, delta)``: float32 ``[K, *x.shape]``, and ``[K]`` with
        ``fn(x) - fn(baseline)`` per target. By completeness ``attributions[k].sum()`` is
        ``delta[k]`` up to the quadrature error.

    The path points share one forward pass per chunk; each target then costs one backward
    pass over the chunk (``retain_graph``), rather than a forward pass of its own.
    """
    if steps < 1:
        raise ValidationError(f"integrated gradients: steps must be >= 1, got {steps}")
    targets = [int(t) for t in targets]
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    # Callers may sit under inference_mode; tensors made there cannot enter autograd, so the
    # path is built from clones made with it switched off.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().float().clone()
        base = torch.zeros_like(x) if baseline is None else baseline.detach().to(x).clone()
        if base.shape != x.shape:
            raise ValidationError(
                f"integrated gradients: baseline shape {tuple(base.shape)} != input {tuple(x.shape)}"
            )
        alphas = torch.tensor((nodes + 1) / 2, dtype=x.dtype, device=x.device)  # [-1, 1] -> [0, 1]
        scale = torch.tensor(weights / 2, dtype=x.dtype, device=x.device)
        diff = x - base
        total = torch.zeros((len(targets), *x.shape), dtype=x.dtype, device=x.device)
        shape = (-1,) + (1,) * x.dim()
        for start in range(0, steps, batch_size):
            a = alphas[start:start + batch_size].view(shape)
            w = scale[start:start + batch_size].view(shape)
            path = (base + a * diff).requires_grad_(True)  # [S, *x.shape]
            out = fn(path)  # [S, C]
            if not out.requires_grad:
                raise ValidationError("integrated gradients: the model's output does not depend on "
                                      "its input through autograd (is it running under no_grad?)")
            for k, target in enumerate(targets):
                (grad,) = torch.autograd.grad(out[:, target].sum(), path,
                                              retain_graph=k < len(targets) - 1)
                total[k] += (w * grad).sum(dim=0)
        with torch.no_grad():
            ends = fn(torch.stack([x, base]))  # [2, C]
    delta = (ends[0, targets] - ends[1, targets]).float()
    return (total * diff).float(), delta


def model_time_axis(pipeline: Any, ecg: ECG) -> tuple[float, float, int]:
    """Where a model's input window sits in the raw record.

    Walks ``pipeline``'s steps: ``resample`` changes the rate (and the sample count as scipy's
    polyphase resampling does), ``crop`` keeps the start, middle or end (or pads around the
    record). Other steps keep the time axis.

    Returns:
        ``(t0, fs, n)``: model sample ``j`` is at ``t0 + j / fs`` seconds of ``ecg`` (``t0 < 0``
        when the pipeline pads before the record), ``n`` samples in all.
    """
    from ecgfm.preprocess.steps import MAX_RESAMPLE_DENOMINATOR, CropOrPad, Resample

    fs, n, t0 = float(ecg.fs), int(ecg.n_samples), 0.0
    for step in pipeline.steps:
        if isinstance(step, Resample) and step.fs != fs:
            ratio = (Fraction(step.fs) / Fraction(fs)).limit_denominator(MAX_RESAMPLE_DENOMINATOR)
            n = math.ceil(n * ratio.numerator / ratio.denominator)
            fs = float(step.fs)
        elif isinstance(step, CropOrPad):
            target = round(step.seconds * fs)
            if target != n:
                extra = abs(n - target)
                before = {"start": 0, "end": extra, "center": extra // 2}[step.mode]
                t0 += (before if n > target else -before) / fs
                n = target
    return t0, fs, n


@dataclass(frozen=True, eq=False)
class Saliency:
    """Integrated-gradients attribution of one finding of one record.

    Attributes:
        label: the output's id (``"AFIB"``); ``name`` its display name.
        probability: the model's probability of the finding.
        leads: the model's lead axis (rows of ``values``).
        fs: sampling rate of ``values``' time axis, Hz (the model's).
        t0: record time of ``values[:, 0]`` in seconds (negative where the pipeline padded).
        values: float32 ``[L, T]`` attribution per model input sample, in probability units
            (positive: the sample raised the probability above the flat baseline's). None when
            rebuilt from JSON, which keeps only the summaries below.
        delta: ``f(x) - f(baseline)``, the probability's rise from the baseline.
        attribution_sum: the sum of ``values`` (equals ``delta`` up to ``completeness_error``).
        completeness_error: ``|attribution_sum - delta|``, the quadrature's error.
        lead_contribution: signed sum of the attributions per lead (probability units).
        time_contribution: signed sum over leads per :data:`TIME_RESOLUTION_S` bin, from ``t0``.
        steps: quadrature points of the integral.
    """

    label: str
    name: str
    probability: float
    leads: tuple[str, ...]
    fs: float
    t0: float
    samples: int
    delta: float
    attribution_sum: float
    completeness_error: float
    lead_contribution: dict[str, float]
    time_contribution: tuple[float, ...]
    steps: int
    values: np.ndarray | None = field(default=None, repr=False)
    method: str = METHOD
    baseline: str = "zeros"
    target: str = "probability"

    @classmethod
    def from_values(cls, values: np.ndarray, *, label: str, name: str, probability: float,
                    leads: Sequence[str], fs: float, t0: float, delta: float, steps: int) -> Saliency:
        """Build from an attribution array ``[L, T]``, computing the JSON summaries."""
        values = np.asarray(values, np.float32)
        per_lead = values.astype(np.float64).sum(axis=1)
        width = max(1, round(TIME_RESOLUTION_S * fs))
        n_bins = math.ceil(values.shape[1] / width)
        padded = np.zeros((n_bins * width,), np.float64)
        padded[:values.shape[1]] = values.astype(np.float64).sum(axis=0)
        per_bin = padded.reshape(n_bins, width).sum(axis=1)
        return cls(
            label=label, name=name, probability=float(probability), leads=tuple(leads),
            fs=float(fs), t0=float(t0), samples=int(values.shape[1]), delta=float(delta),
            attribution_sum=float(per_lead.sum()),
            completeness_error=abs(float(per_lead.sum()) - float(delta)),
            lead_contribution={lead: float(v) for lead, v in zip(leads, per_lead)},
            time_contribution=tuple(float(v) for v in per_bin), steps=int(steps), values=values,
        )

    def on_record(self, fs: float, n_samples: int) -> np.ndarray:
        """The attributions on a record's own time axis (the one that is plotted).

        Args:
            fs: the displayed record's sampling rate, Hz.
            n_samples: its length in samples.

        Returns:
            float32 ``[L, n_samples]`` (rows in :attr:`leads` order): linear interpolation of
            the per-model-sample attributions at each record sample's time; 0 outside the
            model's window.
        """
        if self.values is None:
            raise ValidationError(f"saliency of {self.label}: no attribution values (rebuilt from JSON)")
        t = np.arange(n_samples) / float(fs)
        position = (t - self.t0) * self.fs  # fractional model sample index
        grid = np.arange(self.samples, dtype=np.float64)
        out = np.stack([np.interp(position, grid, row, left=0.0, right=0.0) for row in self.values])
        return out.astype(np.float32)

    def to_dict(self, *, values: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``values=True`` adds the ``[L, T]`` attributions (large)."""
        out: dict[str, Any] = {
            "label": self.label,
            "name": self.name,
            "probability": _r(self.probability),
            "method": self.method,
            "baseline": self.baseline,
            "target": self.target,
            "steps": self.steps,
            "delta": _r(self.delta),
            "attribution_sum": _r(self.attribution_sum),
            "completeness_error": _r(self.completeness_error),
            "fs": self.fs,
            "t0_s": _r(self.t0),
            "samples": self.samples,
            "lead_contribution": {k: _r(v) for k, v in self.lead_contribution.items()},
            "time_contribution": {"start_s": _r(self.t0), "resolution_s": TIME_RESOLUTION_S,
                                  "values": [_r(v) for v in self.time_contribution]},
        }
        if values and self.values is not None:
            out["values"] = [[_r(float(v)) for v in row] for row in self.values]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Saliency:
        """Rebuild from :meth:`to_dict` (``values`` only when they were written)."""
        values = data.get("values")
        return cls(
            label=data["label"], name=data["name"], probability=float(data["probability"]),
            leads=tuple(data["lead_contribution"]), fs=float(data["fs"]), t0=float(data["t0_s"]),
            samples=int(data["samples"]), delta=float(data["delta"]),
            attribution_sum=float(data["attribution_sum"]),
            completeness_error=float(data["completeness_error"]),
            lead_contribution={k: float(v) for k, v in data["lead_contribution"].items()},
            time_contribution=tuple(float(v) for v in data["time_contribution"]["values"]),
            steps=int(data["steps"]),
            values=None if values is None else np.asarray(values, np.float32),
            method=data.get("method", METHOD), baseline=data.get("baseline", "zeros"),
            target=data.get("target", "probability"),
        )


def _r(value: float) -> float:
    """Round for JSON: 6 significant digits keeps files small and diffs stable."""
    return float(f"{value:.6g}")


def output_function(model: Any, lead_mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[B, L, T] -> probabilities [B, C]`` of a loaded model, differentiable, with one
    record's lead mask ``[L]`` applied to every row. Uses ``model.inference_module()`` (the
    exact computation of ``model.forward``) when the model has it, else its encoder."""
    from ecgfm.models.heads import predict_from_logits

    module = None
    make = getattr(model, "inference_module", None)
    if callable(make):
        module = make()
    encoder = model.encoder
    uses_mask = bool(getattr(encoder, "supports_lead_mask", False))
    mask = lead_mask.to(model.device)

    def fn(z: torch.Tensor) -> torch.Tensor:
        m = mask.expand(z.shape[0], -1)
        if module is not None:
            logits = module(z, m)
        else:
            logits = encoder(z, m) if uses_mask else encoder(z)
        return predict_from_logits(logits.float(), model.head)

    return fn


def explain(model: Any, signal: torch.Tensor, lead_mask: torch.Tensor, targets: Sequence[int],
            *, ecg: ECG, probabilities: Sequence[float], names: Sequence[str],
            steps: int = 32) -> list[Saliency]:
    """Integrated gradients of ``targets`` (output indices) for one prepared record.

    Args:
        model: a loaded :class:`~ecgfm.models.portable.Model`.
        signal: the prepared input ``[L, T]`` (``model.prepare``); ``lead_mask`` its ``[L]`` mask.
        targets: output indices to explain; ``probabilities`` and ``names`` one per target.
        ecg: the raw record the input came from (for the time axis).
        steps: quadrature points.

    Returns:
        One :class:`Saliency` per target, in order.
    """
    if not targets:
        return []
    fn = output_function(model, lead_mask)
    x = signal.to(model.device, torch.float32)
    # Path points per pass: all of them for a 10 s record, fewer for long ones (memory).
    batch = max(1, min(steps, PATH_BUDGET // max(1, x.numel())))
    attributions, delta = integrated_gradients(fn, x, targets, steps=steps, batch_size=batch)
    t0, _, n = model_time_axis(model.pipeline, ecg)
    if n != x.shape[-1]:  # a step that moves time in a way model_time_axis does not know
        t0 = 0.0
    fs = float(model.input.fs)
    out = []
    for k, target in enumerate(targets):
        out.append(Saliency.from_values(
            attributions[k].cpu().numpy(), label=model.labels[target], name=names[k],
            probability=float(probabilities[k]), leads=model.input.leads, fs=fs, t0=t0,
            delta=float(delta[k]), steps=steps,
        ))
    return out
