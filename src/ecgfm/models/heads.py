"""Heads: what a model's outputs mean and how logits become predictions.

An encoder (:mod:`ecgfm.models.registry`) ends in one linear layer of ``num_outputs`` logits
(``Encoder.reset_head``). A :class:`HeadSpec` says how to read them:

===============  =======  ==========================================  ===================
type             outputs  prediction (:func:`predict_from_logits`)    default loss
===============  =======  ==========================================  ===================
multilabel       C >= 1   sigmoid per output: P(label present)        ``bce`` (or ``asl``)
multiclass       C >= 2   softmax over outputs (sums to 1)            ``ce``
regression       C >= 1   identity (the value, in its unit)           ``mse`` (or ``huber``)
binary           1        sigmoid: P(the one label is present)        ``bce``
cox              1        identity: the log relative hazard           ``cox`` (Efron ties)
discrete_hazard  K        sigmoid per interval: the hazard h_k        ``discrete_hazard``
===============  =======  ==========================================  ===================

Survival (time-to-event) heads, see ``docs/survival.md``:

- ``cox``: one output, the log relative hazard ``r(x)`` of Cox's model (higher = earlier event).
  ``extra`` may hold the Breslow baseline cumulative hazard estimated on the training set
  (``baseline_times``, ``baseline_cumulative_hazard``), so that absolute survival
  ``S(t | x) = exp(-H0(t) e^r(x))`` can be given (:func:`ecgfm.models.survival.survival_from_logits`).
- ``discrete_hazard``: ``K`` outputs, the logit of ``h_k`` = P(event in interval k | event-free
  at its start) over the intervals of ``extra["cuts"]`` (``K + 1`` increasing times >= 0,
  ``I_0 = [c_0, c_1]``, ``I_k = (c_k, c_k+1]``); the prediction is ``h_k``, the survival curve is
  ``prod (1 - h_j)``.

Both keep ``extra["time_unit"]`` (e.g. ``"years"``), the evaluation ``extra["horizons"]`` and the
manifest columns they were trained on (``extra["time_column"]``, ``extra["event_column"]``).

Normal/abnormal is a ``binary`` head whose single label is the catalogue id ``NORM`` ("normal
ECG", PTB-XL's NORM statement): the output is P(normal ECG) and P(abnormal) is
``1 - P(normal)``. Build it with :func:`normal_abnormal_head`. Training targets are 1 for a
record that carries NORM and 0 for every other record; "abnormal" therefore means "not read as
a normal ECG", which includes records whose only statements are non-diagnostic.

This module imports no torch at import time; :func:`predict_from_logits` accepts numpy arrays
and torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError

HEAD_TYPES = ("multilabel", "multiclass", "regression", "binary", "cox", "discrete_hazard")
SURVIVAL_HEADS = ("cox", "discrete_hazard")  # time-to-event heads: targets are (time, event)
# The loss a head type trains with unless told otherwise (names of ecgfm.objectives.create_loss).
DEFAULT_LOSS = {"multilabel": "bce", "multiclass": "ce", "regression": "mse", "binary": "bce",
                "cox": "cox", "discrete_hazard": "discrete_hazard"}
# What predict_from_logits applies, per head type (documentation and the model card).
ACTIVATION = {"multilabel": "sigmoid", "multiclass": "softmax", "regression": "identity",
              "binary": "sigmoid", "cox": "identity", "discrete_hazard": "sigmoid"}
NORMAL_LABEL = "NORM"  # catalogue id of "normal ECG", the positive class of normal/abnormal


@dataclass(frozen=True)
class HeadSpec:
    """The meaning of a model's ``num_outputs`` logits.

    >>> HeadSpec("multilabel", 3, label_ids=("NORM", "MI", "STTC")).activation
    'sigmoid'
    """

    type: str  # "multilabel", "multiclass", "regression", "binary", "cox" or "discrete_hazard"
    num_outputs: int  # C, the number of logits (1 for binary)
    label_ids: tuple[str, ...] = ()  # one id per output (catalogue ids where they exist), or ()
    label_names: tuple[str, ...] = ()  # human-readable name per output, or () (ids are used)
    units: tuple[str, ...] = ()  # regression only: the unit of each output ("ms", "years"), or ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # free-form, JSON-able

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValidationError(
                f"head: type {self.type!r} is not one of {', '.join(HEAD_TYPES)}"
            )
        n = self.num_outputs
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValidationError(f"head: num_outputs must be a positive integer, got {n!r}")
        object.__setattr__(self, "num_outputs", int(n))
        if self.type == "binary" and n != 1:
            raise ValidationError(
                f"head: a binary head has exactly 1 output (P(positive)), got num_outputs={n}; "
                "use 'multiclass' for several exclusive classes or 'multilabel' for several labels"
            )
        if self.type == "multiclass" and n < 2:
            raise ValidationError(f"head: a multiclass head needs at least 2 outputs, got {n}")
        if self.type == "cox" and n != 1:
            raise ValidationError(f"head: a cox head has exactly 1 output (the log relative hazard), got {n}")
        for name in ("label_ids", "label_names", "units"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValidationError(f"head: {name} must be a list of strings, got {value!r}")
            value = tuple(str(v) for v in value)
            if value and len(value) != n:
                raise ValidationError(
                    f"head: {len(value)} {name} for {n} outputs (give one per output, or none)"
                )
            object.__setattr__(self, name, value)
        if len(set(self.label_ids)) != len(self.label_ids):
            dupes = sorted({x for x in self.label_ids if self.label_ids.count(x) > 1})
            raise ValidationError(f"head: label_ids repeat {', '.join(dupes)}")
        if self.units and self.type != "regression":
            raise ValidationError("head: units are for regression heads only")
        object.__setattr__(self, "extra", dict(self.extra))
        if self.type == "discrete_hazard":
            _check_cuts(self.extra.get("cuts"), n)
        if self.type == "cox" and "baseline_times" in self.extra:
            _check_baseline(self.extra)

    @property
    def is_survival(self) -> bool:
        """True for the time-to-event heads (``cox``, ``discrete_hazard``)."""
        return self.type in SURVIVAL_HEADS
    @property
    def activation(self) -> str:
        """``"sigmoid"``, ``"softmax"`` or ``"identity"``."""
        return ACTIVATION[self.type]

    @property
    def default_loss(self) -> str:
        """Name of the loss this head trains with by default (see ``ecgfm.objectives``)."""
        return DEFAULT_LOSS[self.type]

    @property
    def names(self) -> tuple[str, ...]:
        """One display name per output: ``label_names``, else ``label_ids``, else ``out0..``."""
        if self.label_names:
            return self.label_names
        if self.label_ids:
            return self.label_ids
        return tuple(f"out{i}" for i in range(self.num_outputs))

    @property
    def columns(self) -> tuple[str, ...]:
        """One column key per output: ``label_ids``, else ``out0, out1, ...``."""
        return self.label_ids or tuple(f"out{i}" for i in range(self.num_outputs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``"head"`` field of a model's ``config.json``)."""
        out: dict[str, Any] = {"type": self.type, "num_outputs": self.num_outputs,
                               "label_ids": list(self.label_ids),
                               "label_names": list(self.label_names)}
        if self.units:
            out["units"] = list(self.units)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        """Rebuild from :meth:`to_dict`'s output; unknown fields are refused."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"head: expected an object, got {type(data).__name__}")
        known = {"type", "num_outputs", "label_ids", "label_names", "units", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"head: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        missing = [k for k in ("type", "num_outputs") if k not in data]
        if missing:
            raise ValidationError(f"head: missing field(s) {', '.join(missing)}")
        return cls(
            type=data["type"], num_outputs=data["num_outputs"],
            label_ids=tuple(data.get("label_ids") or ()),
            label_names=tuple(data.get("label_names") or ()),
            units=tuple(data.get("units") or ()), extra=data.get("extra") or {},
        )


def normal_abnormal_head(label_id: str = NORMAL_LABEL, label_name: str = "normal ECG") -> HeadSpec:
    """The normal/abnormal head: ``binary``, one output = P(``NORM``), P(abnormal) = 1 - that."""
    return HeadSpec("binary", 1, label_ids=(label_id,), label_names=(label_name,))


def multilabel_head(label_ids: Sequence[str], label_names: Sequence[str] = ()) -> HeadSpec:
    """A multi-label head over ``label_ids`` (one sigmoid output each)."""
    return HeadSpec("multilabel", len(label_ids), tuple(label_ids), tuple(label_names))


def _check_cuts(cuts: Any, n: int) -> None:
    if cuts is None:
        raise ValidationError("head: a discrete_hazard head needs extra={'cuts': [c_0, ..., c_K]} "
                              "(the interval edges, K + 1 times >= 0)")
    try:
        c = np.asarray(cuts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"head: extra.cuts must be numbers, got {cuts!r}") from None
    if c.ndim != 1 or c.shape[0] != n + 1:
        raise ValidationError(f"head: a discrete_hazard head of {n} outputs needs {n + 1} cuts, got {cuts!r}")
    if not np.isfinite(c).all() or c[0] < 0 or (np.diff(c) <= 0).any():
        raise ValidationError(f"head: extra.cuts must be finite, >= 0 and strictly increasing, got {cuts!r}")


def _check_baseline(extra: Mapping[str, Any]) -> None:
    t = np.asarray(extra.get("baseline_times"), dtype=np.float64)
    h = np.asarray(extra.get("baseline_cumulative_hazard"), dtype=np.float64)
    if t.ndim != 1 or h.shape != t.shape or not t.size:
        raise ValidationError("head: extra.baseline_times and extra.baseline_cumulative_hazard must be "
                              "two non-empty lists of the same length")
    if not (np.isfinite(t).all() and np.isfinite(h).all()) or (np.diff(t) <= 0).any() \
            or (np.diff(h) < 0).any() or h[0] < 0:
        raise ValidationError("head: the baseline cumulative hazard must be finite, non-negative and "
                              "non-decreasing over strictly increasing times")


def cox_head(event: str = "event", *, time_unit: str = "", **extra: Any) -> HeadSpec:
    """A Cox head: one output, the log relative hazard of ``event`` (higher = earlier event).

    ``extra`` (JSON-able) may carry ``baseline_times`` / ``baseline_cumulative_hazard`` (the
    Breslow estimate, for absolute risk), ``horizons``, ``time_column``, ``event_column``.
    """
    return HeadSpec("cox", 1, label_ids=(str(event),),
                    label_names=(f"log relative hazard of {event}",),
                    extra={"time_unit": time_unit, **extra})


def discrete_hazard_head(cuts: Sequence[float], event: str = "event", *, time_unit: str = "",
                         **extra: Any) -> HeadSpec:
    """A discrete-time hazard head over the intervals of ``cuts`` (``K + 1`` edges, K outputs).

    Output ``k`` is the logit of P(event in ``(cuts[k], cuts[k+1]]`` | event-free at ``cuts[k]``).
    """
    c = [float(v) for v in np.asarray(cuts, dtype=np.float64).reshape(-1)]
    k = len(c) - 1
    if k < 1:
        raise ValidationError(f"head: a discrete_hazard head needs at least 2 cuts, got {list(cuts)!r}")
    unit = f" {time_unit}" if time_unit else ""
    ids = tuple(f"{event}:h{i}" for i in range(k))
    names = tuple(f"P({event} in {'[' if i == 0 else '('}{c[i]:.6g}, {c[i + 1]:.6g}]{unit} | event-free at "
                  f"{c[i]:.6g})" for i in range(k))
    return HeadSpec("discrete_hazard", k, label_ids=ids, label_names=names,
                    extra={"cuts": c, "time_unit": time_unit, **extra})


def predict_from_logits(logits: Any, head: HeadSpec | str) -> Any:
    """Logits ``[..., C]`` to predictions of the same shape and type (numpy or torch).

    ``multilabel``/``binary``: sigmoid (probabilities in [0, 1], each on its own);
    ``multiclass``: softmax over the last axis (rows sum to 1); ``regression``: unchanged;
    ``cox``: unchanged (the log relative hazard); ``discrete_hazard``: sigmoid (the hazard of
    each interval; survival curves come from :func:`ecgfm.models.survival.survival_from_logits`).

    >>> predict_from_logits(np.array([[0.0, 2.0]]), "multiclass").round(3)
    array([[0.119, 0.881]])
    """
    kind = head.type if isinstance(head, HeadSpec) else head
    if kind not in HEAD_TYPES:
        raise ValidationError(f"head type {kind!r} is not one of {', '.join(HEAD_TYPES)}")
    activation = ACTIVATION[kind]
    if isinstance(logits, np.ndarray) or np.isscalar(logits):
        x = np.asarray(logits)
        if activation == "identity":
            return x
        from scipy.special import expit, softmax

        return expit(x) if activation == "sigmoid" else softmax(x, axis=-1)
    import torch

    if not isinstance(logits, torch.Tensor):
        raise ValidationError(f"logits must be a numpy array or torch tensor, got {type(logits).__name__}")
    if activation == "identity":
        return logits
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)
