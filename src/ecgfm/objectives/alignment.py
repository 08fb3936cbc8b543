"""Feature-distribution alignment and output distillation, for teacher-student transfer.

Three losses, each an ``nn.Module`` that takes outputs (never a model) and returns a dict
``{"loss": ..., <part>: ...}`` like the losses of :mod:`ecgfm.objectives.supervised`:

==============  ==================================================================  ========
class           what it measures                                                    part
==============  ==================================================================  ========
:class:`MMD`    squared maximum mean discrepancy between two feature samples,       ``mmd``
                with a mixture of Gaussian kernels (Gretton et al., JMLR 2012;
                the multi-kernel form of Long et al., DAN, ICML 2015)
:class:`CORAL`  distance between the two samples' feature covariances               ``coral``
                (Sun & Saenko, Deep CORAL, ECCV 2016 workshops)
:class:`Distillation`  divergence of the student's outputs from the teacher's       ``distill``
                probabilities at a temperature (Hinton et al., 2015)
==============  ==================================================================  ========

Features are ``[N, D]`` (N records, D features: e.g. an encoder's pooled pre-logits
features); the two samples may differ in N for MMD and CORAL. The alignment losses compare
*distributions*, so the two samples need not be paired; :mod:`ecgfm.train.transfer` passes the
student's features on its lead subset and the teacher's on all 12 leads of the same batch.

Cross-device gathering: none. Under DDP each rank aligns its own batch (an unbiased estimate
of the same quantity), which needs no communication.

>>> import torch
>>> x = torch.randn(64, 8)
>>> float(MMD()(x, x)["loss"]) < 1e-6, float(CORAL()(x, x)["loss"]) < 1e-12
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError

__all__ = ["ALIGNMENTS", "CORAL", "MMD", "Distillation", "create_alignment", "pairwise_sq_dists"]


def _check_features(source: Tensor, target: Tensor, what: str, min_rows: int = 1) -> None:
    for name, x in (("source", source), ("target", target)):
        if x.ndim != 2:
            raise ValidationError(f"{what}: {name} features must be [N, D], got shape {tuple(x.shape)}")
        if x.shape[0] < min_rows:
            raise ValidationError(f"{what}: {name} needs at least {min_rows} rows, got {x.shape[0]}")
    if source.shape[1] != target.shape[1]:
        raise ValidationError(
            f"{what}: source and target differ in feature width ({source.shape[1]} vs {target.shape[1]})"
        )


def pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[N, M]`` between the rows of ``a`` ``[N, D]`` and ``b`` ``[M, D]``.

    Computed as ``|a|^2 + |b|^2 - 2 a.b`` and clamped at 0 (rounding can make it slightly
    negative), which is differentiable everywhere (``torch.cdist`` is not at 0).
    """
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T  # [N, M]
    return sq.clamp(min=0.0)


class MMD(nn.Module):
    """Squared maximum mean discrepancy with a mixture of Gaussian kernels.

    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` for ``x`` from the source and ``y`` from
    the target sample, with ``k = (1/S) sum_s exp(-|a - b|^2 / w_s)``: an average of ``S``
    Gaussian kernels, so ``k(a, a) = 1`` and ``0 <= MMD^2 <= 2`` (biased estimate).

    Kernel widths ``w_s`` (squared-distance units):

    - ``sigmas`` given: fixed, ``w_s = 2 sigma_s^2`` (``sigma`` in feature units);
    - otherwise adaptive (DAN's heuristic): ``w_s = multiplier_s * h``, where ``h`` is the mean
      squared distance between distinct points of the pooled sample ``[x; y]`` (no gradient
      flows through ``h``). The mixture then covers scales around the data's own.

    Args:
        multipliers: the adaptive widths' multiples of ``h``.
        sigmas: fixed kernel bandwidths in feature units (overrides ``multipliers``).
        unbiased: the unbiased U-statistic (diagonal terms left out of ``E k(x, x')`` and
            ``E k(y, y')``); it can be slightly negative. Default: the biased V-statistic,
            which is exactly 0 for identical samples and never negative.

    Call with ``source`` ``[N, D]`` and ``target`` ``[M, D]``; returns ``{"loss", "mmd"}``
    (``mmd``: the detached value).
    """

    part = "mmd"

    def __init__(self, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 sigmas: Sequence[float] | None = None, unbiased: bool = False) -> None:
        super().__init__()
        multipliers = tuple(float(m) for m in multipliers)
        if not multipliers or min(multipliers) <= 0:
            raise ValidationError(f"MMD: multipliers must be positive numbers, got {multipliers!r}")
        if sigmas is not None:
            sigmas = tuple(float(s) for s in sigmas)
            if not sigmas or min(sigmas) <= 0:
                raise ValidationError(f"MMD: sigmas must be positive numbers, got {sigmas!r}")
        self.multipliers = multipliers
        self.sigmas = sigmas
        self.unbiased = bool(unbiased)

    def kernel_widths(self, sq: Tensor) -> Tensor:
        """``[S]`` widths ``w_s`` for the pooled sample's squared distances ``sq`` ``[P, P]``."""
        if self.sigmas is not None:
            return 2.0 * torch.tensor(self.sigmas, dtype=sq.dtype, device=sq.device) ** 2
        p = sq.shape[0]
        h = sq.detach().sum() / max(p * p - p, 1)
        h = h.clamp(min=torch.finfo(sq.dtype).tiny ** 0.5)  # identical points: any width gives 0
        return h * torch.tensor(self.multipliers, dtype=sq.dtype, device=sq.device)

    def forward(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        _check_features(source, target, "MMD", min_rows=2 if self.unbiased else 1)
        n = source.shape[0]
        z = torch.cat([source, target.to(source.dtype)])  # [N + M, D]
        sq = pairwise_sq_dists(z, z)  # [N + M, N + M]
        widths = self.kernel_widths(sq)  # [S]
        k = torch.exp(-sq[None] / widths[:, None, None]).mean(0)  # [N + M, N + M]
        kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
        if self.unbiased:
            m = kyy.shape[0]
            exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        else:
            exx, eyy = kxx.mean(), kyy.mean()
        loss = exx + eyy - 2.0 * kxy.mean()
        return {"loss": loss, self.part: loss.detach()}


class CORAL(nn.Module):
    """Deep CORAL: ``|C_s - C_t|_F^2 / (4 D^2)``.

    ``C_s``, ``C_t`` are the ``[D, D]`` feature covariances of the source ``[N, D]`` and target
    ``[M, D]`` samples (unbiased, divided by ``N - 1``: ``numpy.cov(x, rowvar=False)``). Only
    second-order statistics are matched; the means are not (the original definition).

    Call with ``source`` and ``target`` (each at least 2 rows); returns ``{"loss", "coral"}``.
    """

    part = "coral"

    @staticmethod
    def covariance(x: Tensor) -> Tensor:
        """Unbiased covariance ``[D, D]`` of the rows of ``x`` ``[N, D]``."""
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / (x.shape[0] - 1)

    def forward(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        _check_features(source, target, "CORAL", min_rows=2)
        d = source.shape[1]
        diff = self.covariance(source) - self.covariance(target.to(source.dtype))  # [D, D]
        loss = (diff * diff).sum() / (4.0 * d * d)
        return {"loss": loss, self.part: loss.detach()}


class Distillation(nn.Module):
    """Divergence of the student's outputs from the teacher's, softened by a temperature ``T``.

    ``kind="bce"`` (multi-label and binary heads: one Bernoulli per output):
    ``mean over (b, c) of KL(Bern(p) || Bern(q)) * T^2`` with ``p = sigmoid(t / T)`` the
    teacher's and ``q = sigmoid(s / T)`` the student's probability. That is the binary
    cross-entropy to the soft target ``p`` minus the teacher's own entropy (a constant), so the
    gradient is the BCE's and the value is 0 when the student matches the teacher.

    ``kind="kl"`` (multi-class heads): ``mean over b of KL(softmax(t / T) || softmax(s / T)) *
    T^2``, Hinton et al.'s soft-target loss.

    The ``T^2`` factor keeps the gradient's scale independent of ``T``. The teacher's logits
    get no gradient (they are detached).

    Args:
        kind: ``"bce"`` or ``"kl"``.
        temperature: ``T > 0``.

    Call with ``student`` and ``teacher`` logits of the same shape ``[B, C]``; returns
    ``{"loss", "distill"}``.
    """

    part = "distill"

    def __init__(self, kind: str = "bce", temperature: float = 1.0) -> None:
        super().__init__()
        if kind not in ("bce", "kl"):
            raise ValidationError(f"Distillation: kind must be 'bce' or 'kl', got {kind!r}")
        if not float(temperature) > 0:
            raise ValidationError(f"Distillation: temperature must be > 0, got {temperature!r}")
        self.kind = kind
        self.temperature = float(temperature)

    def forward(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        if student.shape != teacher.shape:
            raise ValidationError(f"Distillation: student logits {tuple(student.shape)} and teacher "
                                  f"logits {tuple(teacher.shape)} differ in shape")
        t = self.temperature
        s, z = student / t, teacher.detach().to(student.dtype) / t
        if self.kind == "bce":
            p = torch.sigmoid(z)
            # BCE(s, p) - H(p) = p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q)), in logits
            values = p * (F.logsigmoid(z) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-z) - F.logsigmoid(-s))
            loss = values.mean()
        else:
            log_p, log_q = F.log_softmax(z, dim=-1), F.log_softmax(s, dim=-1)
            loss = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        loss = loss * (t * t)
        return {"loss": loss, self.part: loss.detach()}


ALIGNMENTS = ("mmd", "coral", "none")


def create_alignment(name: str, **kwargs: Any) -> nn.Module | None:
    """The alignment loss called ``name``: ``"mmd"`` (:class:`MMD`), ``"coral"`` (:class:`CORAL`),
    or ``"none"`` (returns None); ``kwargs`` go to its constructor."""
    if name == "mmd":
        return MMD(**kwargs)
    if name == "coral":
        if kwargs:
            raise ValidationError(f"CORAL takes no options, got {sorted(kwargs)}")
        return CORAL()
    if name == "none":
        return None
    raise ValidationError(f"unknown alignment {name!r} (known: {', '.join(ALIGNMENTS)})")
