"""Supervised losses for the head types of :mod:`ecgfm.models.heads`.

Every loss is an ``nn.Module`` called as ``loss(logits, targets, mask=None)`` that returns a
dict: ``"loss"`` (the scalar to back-propagate) plus detached parts for logging. A loss never
runs the model.

Missing labels: a multi-label, binary or regression target may hold NaN where the label is not
known for that record (a dataset that does not annotate it), and ``mask`` (bool, True =
observed, same shape as the targets) may mark more entries as unknown. Unknown entries take no
part in the loss and the mean is over the observed entries only, so a batch half made of
records from a dataset without label ``k`` trains label ``k`` on the other half exactly as a
batch of only that half would. A batch with no observed entry gives a loss of 0 that still
carries a (zero) gradient.

========  ===================  ========================================================
head      name                 class
========  ===================  ========================================================
multilabel ``bce``             :class:`MultiLabelBCE` (pos_weight, label smoothing)
multilabel ``asl``             :class:`AsymmetricLoss` (Ridnik et al., ICCV 2021)
multiclass ``ce``              :class:`MultiClassCE`
regression ``mse``/``huber``   :class:`RegressionLoss`
binary     ``bce``             :class:`BinaryBCE` (normal/abnormal)
cox        ``cox``             :class:`~ecgfm.objectives.survival.CoxPartialLikelihood`
                               (``ties="efron"``; ``cox_breslow``/``cox_efron`` fix the ties)
discrete_hazard ``discrete_hazard``  :class:`~ecgfm.objectives.survival.DiscreteTimeHazard`
                               (needs ``bin_edges``: the head's ``extra["cuts"]``)
========  ===================  ========================================================

The survival losses take ``targets`` ``[B, 2]`` = (time, event) (:mod:`ecgfm.objectives.survival`).

>>> import torch
>>> loss = create_loss("multilabel", "asl", gamma_neg=4, gamma_pos=0, clip=0.05)
>>> out = loss(torch.zeros(2, 3), torch.tensor([[1.0, 0, float("nan")], [0, 1, 0]]))
>>> sorted(out)
['asl', 'loss', 'observed']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError

__all__ = [
    "LOSSES", "AsymmetricLoss", "BinaryBCE", "MultiClassCE", "MultiLabelBCE", "RegressionLoss",
    "create_loss", "pos_weight_from_labels",
]


def _observed(targets: Tensor, mask: Tensor | None) -> Tensor:
    """Bool tensor shaped like ``targets``: True where the target is known (finite and not masked)."""
    observed = torch.isfinite(targets)
    if mask is not None:
        mask = torch.as_tensor(mask, device=targets.device)
        if mask.shape != targets.shape:
            try:
                mask = mask.expand_as(targets)
            except RuntimeError:
                raise ValidationError(
                    f"loss: mask shape {tuple(mask.shape)} does not match targets {tuple(targets.shape)}"
                ) from None
        observed = observed & mask.bool()
    return observed


def _check_shapes(logits: Tensor, targets: Tensor, what: str) -> None:
    if logits.shape != targets.shape:
        raise ValidationError(
            f"{what}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape"
        )


def _masked_mean(values: Tensor, observed: Tensor) -> Tensor:
    """Mean of ``values`` over observed entries; 0 (with a graph) when none is observed."""
    values = torch.where(observed, values, torch.zeros_like(values))
    n = observed.sum()
    return values.sum() / n.clamp(min=1).to(values.dtype)


def _as_buffer(value: Sequence[float] | np.ndarray | Tensor | None, what: str) -> Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, Tensor) else value,
                             dtype=torch.float32)
    if tensor.ndim != 1 or not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValidationError(f"{what} must be a 1-D list of finite non-negative numbers, got {value!r}")
    return tensor


def pos_weight_from_labels(labels: np.ndarray | Tensor, max_weight: float = 100.0) -> Tensor:
    """``n_negative / n_positive`` per label (``[N, C]`` 0/1 with NaN = missing) -> ``[C]``.

    The usual ``pos_weight`` for :class:`MultiLabelBCE` on imbalanced labels, clipped to
    ``[1 / max_weight, max_weight]`` (a label with no positive gets ``max_weight``).
    """
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if y.ndim != 2:
        raise ValidationError(f"labels must be [N, C], got shape {tuple(y.shape)}")
    seen = torch.isfinite(y)
    pos = torch.where(seen, y, torch.zeros_like(y)).sum(0)
    neg = seen.sum(0) - pos
    weight = neg / pos.clamp(min=1e-12)
    return weight.clamp(1.0 / max_weight, max_weight).to(torch.float32)


class MultiLabelBCE(nn.Module):
    """Binary cross-entropy on logits, one independent sigmoid per label.

    ``loss = mean over observed (b, c) of -[w_c y log s(x) + (1 - y) log(1 - s(x))]``, where
    ``w_c`` is ``pos_weight[c]`` (1 without it) and ``y`` is the target after label smoothing
    ``y (1 - eps) + eps / 2``.

    Args:
        pos_weight: ``[C]`` weight of the positive term per label (see
            :func:`pos_weight_from_labels`), or None.
        label_smoothing: ``eps`` in [0, 1): pulls targets towards 0.5.

    Call with ``logits`` ``[B, C]``, ``targets`` ``[B, C]`` in {0, 1} (or soft, in [0, 1];
    NaN = missing) and an optional bool ``mask`` ``[B, C]`` (True = observed). Returns
    ``{"loss", "bce", "observed"}`` (``observed``: the number of entries that counted).
    """

    part = "bce"

    def __init__(self, pos_weight: Sequence[float] | np.ndarray | Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValidationError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("pos_weight", _as_buffer(pos_weight, "pos_weight"), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        targets = targets.to(logits.dtype)
        _check_shapes(logits, targets, type(self).__name__)
        if self.pos_weight is not None and self.pos_weight.shape[0] != logits.shape[-1]:
            raise ValidationError(
                f"{type(self).__name__}: pos_weight has {self.pos_weight.shape[0]} entries for "
                f"{logits.shape[-1]} labels"
            )
        observed = _observed(targets, mask)
        y = torch.where(observed, targets, torch.zeros_like(targets))
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        values = F.binary_cross_entropy_with_logits(
            logits, y, pos_weight=self.pos_weight, reduction="none"
        )
        loss = _masked_mean(values, observed)
        return {"loss": loss, self.part: loss.detach(), "observed": observed.sum().detach()}


class BinaryBCE(MultiLabelBCE):
    """BCE for a binary head (normal/abnormal): logits and targets ``[B]`` or ``[B, 1]``.

    Same arguments and result as :class:`MultiLabelBCE` (``pos_weight`` is one number or None).
    """

    def __init__(self, pos_weight: float | Sequence[float] | None = None,
                 label_smoothing: float = 0.0) -> None:
        if pos_weight is not None and np.ndim(pos_weight) == 0:
            pos_weight = [float(pos_weight)]  # type: ignore[arg-type]
        super().__init__(pos_weight, label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        if logits.ndim == 2 and logits.shape[-1] != 1:
            raise ValidationError(
                f"BinaryBCE: expected one logit per record, got logits {tuple(logits.shape)}"
            )
        logits = logits.reshape(-1, 1)
        targets = targets.reshape(-1, 1)
        if mask is not None:
            mask = torch.as_tensor(mask).reshape(-1, 1)
        return super().forward(logits, targets, mask)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021).

    With ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        L+ = (1 - p) ** gamma_pos * log(p)            (positive labels)
        L- = p_m ** gamma_neg * log(1 - p_m)           (negative labels)
        loss = -(y L+ + (1 - y) L-)

    ``gamma_neg > gamma_pos`` down-weights the many easy negatives, and the clip discards
    negatives with ``p < clip`` entirely (and so also very likely mislabelled ones). With
    ``gamma_neg = gamma_pos = clip = 0`` it is :class:`MultiLabelBCE`. As in the authors'
    reference implementation (github.com/Alibaba-MIIL/ASL, ``AsymmetricLoss``) the focusing
    weights are treated as constants in the backward pass unless ``focal_grad=True``, and
    probabilities are floored at ``eps`` inside the logarithms.

    Args:
        gamma_neg: focusing exponent of negatives (paper: 4).
        gamma_pos: focusing exponent of positives (paper: 0 or 1).
        clip: probability margin ``m`` of negatives (paper: 0.05).
        eps: floor of the probabilities inside ``log``.
        reduction: ``"mean"`` over observed entries (comparable to BCE), or ``"sum"`` (the
            reference implementation's; scale the learning rate down accordingly).
        focal_grad: back-propagate through the focusing weights too.

    Call like :class:`MultiLabelBCE`; returns ``{"loss", "asl", "observed"}``.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05,
                 eps: float = 1e-8, reduction: str = "mean", focal_grad: bool = False) -> None:
        super().__init__()
        if gamma_neg < 0 or gamma_pos < 0:
            raise ValidationError(f"AsymmetricLoss: gammas must be >= 0, got {gamma_neg}, {gamma_pos}")
        if not 0.0 <= clip < 1.0:
            raise ValidationError(f"AsymmetricLoss: clip must be in [0, 1), got {clip!r}")
        if reduction not in ("mean", "sum"):
            raise ValidationError(f"AsymmetricLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)
        self.eps, self.reduction, self.focal_grad = float(eps), reduction, bool(focal_grad)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        targets = targets.to(logits.dtype)
        _check_shapes(logits, targets, "AsymmetricLoss")
        observed = _observed(targets, mask)
        y = torch.where(observed, targets, torch.zeros_like(targets))
        p = torch.sigmoid(logits)
        p_neg = 1.0 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1.0)  # = 1 - max(p - clip, 0)
        values = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.set_grad_enabled(self.focal_grad and torch.is_grad_enabled()):
                pt = p * y + p_neg * (1 - y)
                weight = torch.pow(1 - pt, self.gamma_pos * y + self.gamma_neg * (1 - y))
            values = values * weight
        values = -values
        if self.reduction == "sum":
            loss = torch.where(observed, values, torch.zeros_like(values)).sum()
        else:
            loss = _masked_mean(values, observed)
        return {"loss": loss, "asl": loss.detach(), "observed": observed.sum().detach()}


class MultiClassCE(nn.Module):
    """Softmax cross-entropy over ``C`` exclusive classes.

    Args:
        weight: ``[C]`` class weights, or None.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.

    Call with ``logits`` ``[B, C]`` and ``targets`` ``[B]`` class indices (int; a negative
    index means "unknown" and is left out), or ``[B, C]`` class probabilities (rows of NaN are
    left out). ``mask`` ``[B]`` (True = observed) leaves out more rows. Returns
    ``{"loss", "ce", "accuracy", "observed"}`` (accuracy over the observed rows).
    """

    def __init__(self, weight: Sequence[float] | np.ndarray | Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValidationError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", _as_buffer(weight, "weight"), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        if logits.ndim != 2:
            raise ValidationError(f"MultiClassCE: logits must be [B, C], got {tuple(logits.shape)}")
        if targets.is_floating_point() and targets.ndim == 2:
            _check_shapes(logits, targets, "MultiClassCE")
            rows = torch.isfinite(targets).all(dim=1)
            labels = targets.argmax(dim=1)
        elif targets.ndim == 1 and not targets.is_floating_point():
            if targets.shape[0] != logits.shape[0]:
                raise ValidationError(
                    f"MultiClassCE: {targets.shape[0]} targets for {logits.shape[0]} rows of logits"
                )
            if (targets >= logits.shape[1]).any():
                raise ValidationError(
                    f"MultiClassCE: class index {int(targets.max())} out of range for "
                    f"{logits.shape[1]} classes"
                )
            rows = targets >= 0
            labels = targets
        else:
            raise ValidationError(
                "MultiClassCE: targets must be [B] class indices (int) or [B, C] probabilities, "
                f"got {tuple(targets.shape)} {targets.dtype}"
            )
        if mask is not None:
            rows = rows & torch.as_tensor(mask, device=rows.device).reshape(-1).bool()
        n = rows.sum()
        if int(n) == 0:
            zero = logits.sum() * 0.0
            return {"loss": zero, "ce": zero.detach(), "accuracy": zero.detach(), "observed": n}
        target = targets[rows] if targets.is_floating_point() else labels[rows]
        loss = F.cross_entropy(logits[rows], target, weight=self.weight,
                               label_smoothing=self.label_smoothing)
        accuracy = (logits[rows].argmax(dim=1) == labels[rows]).float().mean()
        return {"loss": loss, "ce": loss.detach(), "accuracy": accuracy.detach(), "observed": n.detach()}


class RegressionLoss(nn.Module):
    """Mean squared error or Huber loss over observed targets (NaN = missing).

    Args:
        kind: ``"mse"`` or ``"huber"``.
        delta: Huber's switch point, in the targets' unit.
        scale: ``[C]`` divisor per output applied to the residual before the loss (e.g. each
            target's standard deviation, so outputs in ms and in years weigh alike), or None.

    Call with ``predictions`` ``[B, C]`` (or ``[B]``), ``targets`` of the same shape and an
    optional bool ``mask``. Returns ``{"loss", kind, "mae", "observed"}`` (``mae`` in the
    targets' unit, unscaled).
    """

    def __init__(self, kind: str = "mse", delta: float = 1.0,
                 scale: Sequence[float] | np.ndarray | Tensor | None = None) -> None:
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValidationError(f"RegressionLoss: kind must be 'mse' or 'huber', got {kind!r}")
        if not delta > 0:
            raise ValidationError(f"RegressionLoss: delta must be > 0, got {delta!r}")
        self.kind, self.delta = kind, float(delta)
        self.register_buffer("scale", _as_buffer(scale, "scale"), persistent=False)

    def forward(self, predictions: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        targets = targets.to(predictions.dtype)
        _check_shapes(predictions, targets, "RegressionLoss")
        observed = _observed(targets, mask)
        y = torch.where(observed, targets, predictions.detach())
        residual = predictions - y
        scaled = residual / self.scale if self.scale is not None else residual
        if self.kind == "mse":
            values = scaled ** 2
        else:
            values = F.huber_loss(scaled, torch.zeros_like(scaled), delta=self.delta, reduction="none")
        loss = _masked_mean(values, observed)
        mae = _masked_mean(residual.detach().abs(), observed)
        return {"loss": loss, self.kind: loss.detach(), "mae": mae, "observed": observed.sum().detach()}


# (head type, name) -> factory; the first name per head type is its default.
LOSSES: dict[str, dict[str, Any]] = {
    "multilabel": {"bce": MultiLabelBCE, "asl": AsymmetricLoss},
    "multiclass": {"ce": MultiClassCE},
    "regression": {"mse": lambda **kw: RegressionLoss("mse", **kw),
                   "huber": lambda **kw: RegressionLoss("huber", **kw)},
    "binary": {"bce": BinaryBCE},
    "cox": {"cox": lambda **kw: _survival().CoxPartialLikelihood(**kw),
            "cox_efron": lambda **kw: _survival().CoxPartialLikelihood("efron", **kw),
            "cox_breslow": lambda **kw: _survival().CoxPartialLikelihood("breslow", **kw)},
    "discrete_hazard": {"discrete_hazard": lambda **kw: _survival().DiscreteTimeHazard(**kw)},
}
_ALIASES = {"asymmetric": "asl", "bce_with_logits": "bce", "cross_entropy": "ce", "efron": "cox_efron",
            "breslow": "cox_breslow", "hazard": "discrete_hazard"}


def _survival() -> Any:
    from ecgfm.objectives import survival

    return survival


def create_loss(head_type: str, name: str | None = None, **kwargs: Any) -> nn.Module:
    """The loss ``name`` for a head of ``head_type`` (default: the head type's first loss).

    >>> create_loss("multilabel")            # doctest: +ELLIPSIS
    MultiLabelBCE(...)
    >>> create_loss("multilabel", "asl", gamma_neg=4, gamma_pos=0).gamma_neg
    4.0
    >>> create_loss("cox", "breslow").ties
    'breslow'

    Raises:
        ValidationError: unknown head type or loss name (listing the valid ones), or
            arguments the loss does not take.
    """
    if head_type not in LOSSES:
        raise ValidationError(f"loss: head type {head_type!r} is not one of {', '.join(LOSSES)}")
    table = LOSSES[head_type]
    key = _ALIASES.get(name, name) if name is not None else next(iter(table))
    if key not in table:
        raise ValidationError(
            f"loss: {name!r} is not a loss for {head_type} heads (valid: {', '.join(table)})"
        )
    try:
        return table[key](**kwargs)
    except TypeError as error:
        raise ValidationError(f"loss {key!r} for {head_type} heads: {error}") from None
