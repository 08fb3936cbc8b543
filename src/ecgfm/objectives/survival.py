"""Time-to-event losses: Cox partial likelihood and a discrete-time hazard head.

Both are ``nn.Module`` losses called as ``loss(outputs, targets, mask=None)`` returning a dict
``{"loss", parts...}`` (as :mod:`ecgfm.objectives.supervised`). ``targets`` is ``[B, 2]``
with columns ``(time, event)`` (time in the unit of the bin edges / horizons, event 1 = observed,
0 = censored), or a pair ``(time [B], event [B])``. Records with a NaN time or event, or with
``mask`` False, take no part. A batch without usable records gives a loss of 0 with a graph.

- :class:`CoxPartialLikelihood`: ``outputs`` is the log-hazard ``risk [B]`` (or ``[B, 1]``).
  The risk set of an event is the records *in the batch* with time >= its time, so with
  mini-batches this is the usual stochastic approximation (large batches help); on the whole
  data set it is the partial likelihood of Cox's model, with Breslow's or Efron's handling of
  tied event times, matching lifelines / scikit-survival (``tests/test_survival.py``).
- :class:`DiscreteTimeHazard`: ``outputs`` is ``[B, K]``, one logit per interval of
  ``bin_edges`` (K + 1 edges), the conditional probability ``h_k`` of the event in interval k
  given event-free at its start. Survival curves and risks at any horizons follow from it
  (:func:`hazards_to_survival`, :func:`risk_at`), so one head predicts 1-, 5- and 10-year risk
  at once.

>>> import torch
>>> loss = CoxPartialLikelihood("efron")
>>> out = loss(torch.tensor([0.5, -0.2, 0.1]), torch.tensor([[1.0, 1], [2.0, 0], [3.0, 1]]))
>>> sorted(out)
['events', 'loss', 'nll']
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
    "CoxPartialLikelihood", "DiscreteTimeHazard", "SURVIVAL_LOSSES", "hazards_to_survival",
    "risk_at",
]


def _split_targets(targets: Any, n: int, like: Tensor, mask: Tensor | None,
                   what: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(time [n], event [n] float, usable [n] bool)`` from ``[n, 2]`` or ``(time, event)``."""
    if isinstance(targets, (tuple, list)):
        if len(targets) != 2:
            raise ValidationError(f"{what}: targets must be (time, event), got {len(targets)} items")
        time, event = (torch.as_tensor(x, device=like.device) for x in targets)
    else:
        targets = torch.as_tensor(targets, device=like.device)
        if targets.ndim != 2 or targets.shape[1] != 2:
            raise ValidationError(
                f"{what}: targets must be [B, 2] (time, event) or a pair, got {tuple(targets.shape)}"
            )
        time, event = targets[:, 0], targets[:, 1]
    time = time.reshape(-1).to(like.dtype)
    event = event.reshape(-1).to(like.dtype)
    if time.shape[0] != n or event.shape[0] != n:
        raise ValidationError(
            f"{what}: {time.shape[0]} times and {event.shape[0]} events for {n} predictions"
        )
    usable = torch.isfinite(time) & torch.isfinite(event)
    if mask is not None:
        usable = usable & torch.as_tensor(mask, device=like.device).reshape(-1).bool()
    ev = torch.where(usable, event, torch.zeros_like(event))
    if ((ev != 0) & (ev != 1)).any():
        raise ValidationError(f"{what}: event must be 0 (censored) or 1 (event)")
    return torch.where(usable, time, torch.zeros_like(time)), ev, usable


class CoxPartialLikelihood(nn.Module):
    """Negative log partial likelihood of Cox's proportional-hazards model, per event.

    With ``r_i`` the predicted log-hazard and, for each distinct event time ``t`` with ``d``
    events ``D(t)`` and risk set ``R(t) = {j: time_j >= t}``::

        breslow: nll = -sum_t [ sum_{i in D} r_i - d log sum_{j in R} e^{r_j} ]
        efron:   nll = -sum_t [ sum_{i in D} r_i - sum_{l=0}^{d-1} log( sum_{j in R} e^{r_j}
                                                                     - l/d sum_{i in D} e^{r_i} ) ]

    and ``loss = nll / number of events`` (so its scale does not grow with the batch). Efron's
    is the better approximation with many ties (lifelines' default); without ties both are the
    exact partial likelihood. The risk has no intercept: adding a constant to every ``r`` does
    not change the loss.

    Args:
        ties: ``"breslow"`` or ``"efron"``.

    Call with ``risk`` ``[B]`` or ``[B, 1]``, ``targets`` ``[B, 2]`` (time, event) and an
    optional ``mask`` ``[B]``. Returns ``{"loss", "nll", "events"}``.
    """

    def __init__(self, ties: str = "efron") -> None:
        super().__init__()
        if ties not in ("breslow", "efron"):
            raise ValidationError(f"CoxPartialLikelihood: ties must be 'breslow' or 'efron', got {ties!r}")
        self.ties = ties

    def forward(self, risk: Tensor, targets: Any, mask: Tensor | None = None) -> dict[str, Tensor]:
        if risk.ndim == 2 and risk.shape[1] != 1 or risk.ndim > 2:
            raise ValidationError(
                f"CoxPartialLikelihood: expected one log-hazard per record, got {tuple(risk.shape)}"
            )
        risk = risk.reshape(-1)
        time, event, usable = _split_targets(targets, risk.shape[0], risk, mask, "CoxPartialLikelihood")
        n_events = (event * usable).sum()
        if int(n_events) == 0:
            zero = risk.sum() * 0.0
            return {"loss": zero, "nll": zero.detach(), "events": n_events.detach()}
        r, t, e = risk[usable], time[usable], event[usable]
        # decreasing time: the risk set of a time is a prefix ending at its group's last record
        order = torch.argsort(t, descending=True, stable=True)
        r, t, e = r[order], t[order], e[order]
        _, group, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
        last = torch.cumsum(counts, 0) - 1
        log_risk_set = torch.logcumsumexp(r, 0)[last]  # [G] log sum_{R(t)} e^r
        lse_r = log_risk_set[group]  # [n] for each record, its time's risk set
        d = torch.zeros_like(log_risk_set).index_add(0, group, e)  # events per time  [G]
        if self.ties == "breslow":
            log_denominator = (d * log_risk_set).sum()
        else:
            # position l of each event among its time's events, and e^{r_i} / sum_R e^r per time
            cum_e = torch.cumsum(e, 0)
            start = torch.cat([cum_e.new_zeros(1), cum_e[last][:-1]])
            l_index = (cum_e - start[group] - 1) * e
            ratio = torch.zeros_like(log_risk_set).index_add(0, group, e * torch.exp(r - lse_r))
            frac = l_index / d[group].clamp(min=1)
            terms = lse_r + torch.log1p(-frac * ratio[group])
            log_denominator = (terms * e).sum()
        nll = log_denominator - (r * e).sum()
        loss = nll / n_events
        return {"loss": loss, "nll": loss.detach(), "events": n_events.detach()}


def _edges(bin_edges: Sequence[float] | np.ndarray | Tensor) -> Tensor:
    edges = torch.as_tensor(np.asarray(bin_edges, dtype=np.float64))
    if edges.ndim != 1 or edges.shape[0] < 2 or not torch.isfinite(edges).all():
        raise ValidationError(f"bin_edges must be at least 2 finite numbers, got {bin_edges!r}")
    if (edges[0] < 0) or (torch.diff(edges) <= 0).any():
        raise ValidationError(f"bin_edges must be >= 0 and strictly increasing, got {edges.tolist()}")
    return edges


class DiscreteTimeHazard(nn.Module):
    """Negative log-likelihood of a discrete-time hazard model (one logit per interval).

    ``bin_edges`` ``e_0 < e_1 < ... < e_K`` (e.g. ``[0, 1, 2, 5, 10]`` years) make K intervals
    ``I_0 = [e_0, e_1]``, ``I_k = (e_k, e_{k+1}]``; ``h_k = sigmoid(logit_k)`` is the probability
    of the event in ``I_k`` given event-free at ``e_k``. A record with the event at time in
    ``I_k`` contributes ``log h_k + sum_{j<k} log(1 - h_j)``; a censored record contributes
    ``sum log(1 - h_j)`` over the intervals it was followed through:

    - ``censoring="completed"`` (default): the intervals that ended at or before its time
      (``e_{j+1} <= time``); a record censored mid-interval says nothing about that interval.
    - ``censoring="midpoint"``: also the interval it was censored in if it was followed past
      its midpoint (the convention of Gensheimer & Narasimhan's nnet-survival).

    Records beyond ``e_K`` (event or not) count as event-free through every interval. Events
    before ``e_0`` raise. ``loss`` = the summed negative log-likelihood / number of records.

    Args:
        bin_edges: ``[K + 1]`` increasing times >= 0, in the unit of the targets' time.
        censoring: ``"completed"`` or ``"midpoint"``.

    Call with ``logits`` ``[B, K]``, ``targets`` ``[B, 2]`` (time, event), optional ``mask``
    ``[B]``. Returns ``{"loss", "nll", "events", "observed"}``.
    """

    def __init__(self, bin_edges: Sequence[float] | np.ndarray | Tensor,
                 censoring: str = "completed") -> None:
        super().__init__()
        if censoring not in ("completed", "midpoint"):
            raise ValidationError(
                f"DiscreteTimeHazard: censoring must be 'completed' or 'midpoint', got {censoring!r}"
            )
        self.censoring = censoring
        self.register_buffer("bin_edges", _edges(bin_edges), persistent=False)

    @property
    def num_intervals(self) -> int:
        """K, the number of logits the head must output."""
        return int(self.bin_edges.shape[0] - 1)

    def targets_matrix(self, time: Tensor, event: Tensor) -> tuple[Tensor, Tensor]:
        """``(y [B, K], at_risk [B, K])``: the event indicator and the intervals that count."""
        edges = self.bin_edges.to(time.device, torch.float64)
        t = time.to(torch.float64)
        k_max = self.num_intervals
        if ((event > 0) & (t < edges[0])).any():
            i = int(torch.nonzero((event > 0) & (t < edges[0]))[0])
            raise ValidationError(
                f"DiscreteTimeHazard: record {i} has an event at {float(t[i]):g}, before the first "
                f"bin edge {float(edges[0]):g}"
            )
        # interval of each time: I_0 = [e0, e1], I_k = (e_k, e_k+1]; K = beyond the last edge
        k = (torch.searchsorted(edges, t, right=False) - 1).clamp(min=0)
        beyond = t > edges[-1]
        k = torch.where(beyond, torch.full_like(k, k_max), k)
        j = torch.arange(k_max, device=time.device)[None, :]
        is_event = (event > 0) & ~beyond
        y = (is_event[:, None] & (j == k[:, None])).to(time.dtype)
        completed = edges[1:][None, :] <= t[:, None]
        if self.censoring == "midpoint":
            mid = (edges[:-1] + edges[1:]) / 2
            completed = completed | (mid[None, :] <= t[:, None])
        at_risk = torch.where(is_event[:, None], j <= k[:, None], completed)
        return y, at_risk

    def forward(self, logits: Tensor, targets: Any, mask: Tensor | None = None) -> dict[str, Tensor]:
        if logits.ndim != 2 or logits.shape[1] != self.num_intervals:
            raise ValidationError(
                f"DiscreteTimeHazard: expected logits [B, {self.num_intervals}] (one per interval "
                f"of {self.bin_edges.tolist()}), got {tuple(logits.shape)}"
            )
        time, event, usable = _split_targets(targets, logits.shape[0], logits, mask, "DiscreteTimeHazard")
        y, at_risk = self.targets_matrix(time, event)
        weight = (at_risk & usable[:, None]).to(logits.dtype)
        values = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
        n = usable.sum()
        loss = (values * weight).sum() / n.clamp(min=1).to(logits.dtype)
        return {"loss": loss, "nll": loss.detach(), "events": (event * usable).sum().detach(),
                "observed": n.detach()}


def hazards_to_survival(logits: Tensor) -> Tensor:
    """``[B, K]`` interval logits -> ``[B, K]`` survival ``S(e_{k+1}) = prod_{j<=k} (1 - h_j)``.

    Computed in log space (``log(1 - sigmoid(x)) = logsigmoid(-x)``), so it does not underflow
    to exactly 0 before it must. ``S(e_0) = 1`` is not included.
    """
    return torch.exp(torch.cumsum(F.logsigmoid(-logits), dim=-1))


def risk_at(logits: Tensor, bin_edges: Sequence[float] | np.ndarray | Tensor,
            horizons: Sequence[float] | np.ndarray | Tensor) -> Tensor:
    """P(event by each horizon) ``[B, H]`` from interval logits ``[B, K]``.

    Between edges the hazard rate is taken as constant within the interval (so ``log S`` is
    linear in time there): ``S(t) = S(e_k) (1 - h_k)^((t - e_k) / (e_{k+1} - e_k))``. At an
    edge this is exact. Horizons must lie in ``[e_0, e_K]``.
    """
    edges = _edges(bin_edges).to(logits.device, logits.dtype)
    h = torch.as_tensor(np.asarray(horizons, dtype=np.float64), device=logits.device).to(logits.dtype).reshape(-1)
    if (h < edges[0]).any() or (h > edges[-1]).any():
        raise ValidationError(
            f"risk_at: horizons {h.tolist()} must lie within the bin edges [{float(edges[0]):g}, "
            f"{float(edges[-1]):g}] (the model says nothing beyond its last interval)"
        )
    if logits.shape[-1] != edges.shape[0] - 1:
        raise ValidationError(
            f"risk_at: {logits.shape[-1]} logits per record for {edges.shape[0] - 1} intervals"
        )
    log_s_step = F.logsigmoid(-logits)  # [B, K] log(1 - h_k)
    log_s = torch.cat([torch.zeros_like(log_s_step[..., :1]), torch.cumsum(log_s_step, -1)], -1)
    k = (torch.searchsorted(edges, h, right=True) - 1).clamp(0, edges.shape[0] - 2)
    frac = (h - edges[k]) / (edges[k + 1] - edges[k])
    log_s_h = log_s[..., k] + frac * log_s_step[..., k]
    return -torch.expm1(log_s_h)


# (loss name) -> factory; ecgfm.objectives.create_loss registers them for the "cox" and
# "discrete_hazard" head types of ecgfm.models.heads
SURVIVAL_LOSSES: dict[str, Any] = {
    "cox": CoxPartialLikelihood,
    "cox_breslow": lambda **kw: CoxPartialLikelihood("breslow", **kw),
    "discrete_hazard": DiscreteTimeHazard,
}
