"""Calibration: expected calibration error, reliability curves and temperature scaling.

A classifier is calibrated when, of the records it gives probability 0.8, 80 % are positive.
Discrimination metrics (AUROC) ignore this; a clinician reading "0.8" does not. This module
measures it per condition of a multi-label model and fixes the commonest miscalibration
(over-confidence of deep networks) with temperature scaling fitted on validation data.

Binning follows ``sklearn.calibration.calibration_curve``: ``"uniform"`` bins split [0, 1] into
``n_bins`` equal widths, ``"quantile"`` bins put equal numbers of predictions in each bin
(edges at the percentiles of the predictions); a probability on an inner edge falls in the bin
below it (bins are ``(lo, hi]``, the first is ``[0, hi]``), and empty bins are left out.

- :func:`reliability_curve`: per-bin mean prediction, observed frequency and count for one
  condition.
- :func:`expected_calibration_error`: ``ECE = sum_b (n_b / n) |mean_pred_b - freq_b|`` per
  condition (``[N, C]`` input gives ``[C]``), NaN labels excluded;
  :func:`pooled_calibration_error` pools every (record, condition) pair into one ECE.
- :class:`TemperatureScaling`: ``p = sigmoid(z / T)``, ``T`` per condition or shared, fitted by
  minimising binary cross-entropy (scipy) on validation logits or probabilities.
- :func:`binary_log_loss`: the NaN-aware per-condition mean binary cross-entropy it minimises.
- :func:`plot_reliability`: a reliability diagram on a matplotlib axis.

>>> ts = TemperatureScaling().fit(val_logits, y_val)        # doctest: +SKIP
>>> ts.temperature_                                          # doctest: +SKIP
array([1.8, 2.1, ...])
>>> expected_calibration_error(y_test, ts.transform(test_logits))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STRATEGIES = ("uniform", "quantile")
_EPS = 1e-12  # probabilities are clipped to [_EPS, 1 - _EPS] before taking logits


class ReliabilityCurve(NamedTuple):
    """One condition's reliability curve over its non-empty bins (B of them)."""

    mean_predicted: np.ndarray  # float64 [B]: mean predicted probability in each bin
    observed: np.ndarray  # float64 [B]: fraction of positive labels in each bin
    counts: np.ndarray  # int64 [B]: predictions in each bin
    edges: np.ndarray  # float64 [n_bins + 1]: all bin edges, empty bins included


# -- binning and ECE --------------------------------------------------------------------------


def reliability_curve(
    y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15, strategy: str = "uniform"
) -> ReliabilityCurve:
    """Binned mean prediction against observed frequency for one condition.

    Args:
        y_true: [N] labels in {0, 1}; NaN marks a missing label (that record is left out).
        y_prob: [N] predicted probabilities in [0, 1].
        n_bins: number of bins (>= 1).
        strategy: ``"uniform"`` (equal widths) or ``"quantile"`` (equal counts).

    Returns:
        :class:`ReliabilityCurve`; ``observed`` and ``mean_predicted`` equal
        ``sklearn.calibration.calibration_curve(y, p, n_bins=..., strategy=...)`` (prob_true,
        prob_pred) on the same records.
    """
    y, p = _pair_1d(y_true, y_prob)
    edges, ids = _bin(p, n_bins, strategy)
    counts = np.bincount(ids, minlength=n_bins)
    sums = np.bincount(ids, weights=p, minlength=n_bins)
    hits = np.bincount(ids, weights=y, minlength=n_bins)
    nz = counts > 0
    return ReliabilityCurve(sums[nz] / counts[nz], hits[nz] / counts[nz], counts[nz].astype(np.int64), edges)


def expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15, strategy: str = "uniform"
) -> float | np.ndarray:
    """Expected calibration error, per condition.

    ``ECE = sum_b (n_b / n) * |mean(p in b) - mean(y in b)|`` over the bins of
    :func:`reliability_curve`, i.e. the count-weighted gap between the reliability curve and the
    diagonal (0 is perfect, at most 1).

    Args:
        y_true: [N] or [N, C] labels in {0, 1}, NaN where missing (excluded per condition).
        y_prob: predicted probabilities, same shape.
        n_bins: number of bins per condition.
        strategy: ``"uniform"`` or ``"quantile"`` (bins computed per condition).

    Returns:
        A float for [N] input; float64 [C] for [N, C] input, NaN for a condition with no labels.
    """
    y, p = _pair(y_true, y_prob)
    out = np.array([_ece(y[:, c], p[:, c], n_bins, strategy) for c in range(y.shape[1])])
    return float(out[0]) if np.ndim(y_true) == 1 else out


def pooled_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15, strategy: str = "uniform"
) -> float:
    """One ECE over every labelled (record, condition) pair of [N, C] inputs.

    The pooled ("micro") counterpart of :func:`expected_calibration_error`: all non-NaN
    labels and their probabilities are flattened into one set of bins, so common conditions
    weigh more. Take ``np.nanmean(expected_calibration_error(...))`` for the macro average.
    """
    y, p = _pair(y_true, y_prob)
    return _ece(y.ravel(), p.ravel(), n_bins, strategy)


def binary_log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float | np.ndarray:
    """Mean binary cross-entropy (natural log) per condition, NaN labels excluded.

    Args:
        y_true: [N] or [N, C] labels in {0, 1} or NaN.
        y_prob: probabilities, same shape; clipped to [1e-12, 1 - 1e-12].

    Returns:
        A float for [N] input, float64 [C] for [N, C] (NaN where a condition has no labels).
    """
    y, p = _pair(y_true, y_prob)
    p = np.clip(p, _EPS, 1 - _EPS)
    with np.errstate(invalid="ignore"):
        loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    n = (~np.isnan(y)).sum(axis=0)
    out = np.where(n > 0, np.nansum(loss, axis=0) / np.maximum(n, 1), math.nan)
    return float(out[0]) if np.ndim(y_true) == 1 else out


# -- temperature scaling ----------------------------------------------------------------------


class TemperatureScaling:
    """Temperature scaling of binary (multi-label) outputs: ``p = sigmoid(logit / T)``.

    One scalar per condition (or one shared by all) divides the logits; ``T > 1`` softens
    over-confident predictions, ``T < 1`` sharpens them. Ranking, hence AUROC, is unchanged.
    ``T`` is fitted by minimising the mean binary cross-entropy on held-out validation data
    (never the test set) with ``scipy.optimize.minimize_scalar`` over ``log T`` in
    ``[log t_min, log t_max]``; the loss is convex in ``1 / T``, so the minimum is unique.

    Args:
        per_condition: one temperature per condition (default) or one shared temperature
            fitted on all labelled (record, condition) pairs pooled.
        inputs: ``"logits"`` (default) or ``"probabilities"`` (converted with
            ``logit(clip(p, 1e-12, 1 - 1e-12))``) for :meth:`fit` and :meth:`transform`.
        bounds: ``(t_min, t_max)`` for the search.

    Attributes (after :meth:`fit`):
        temperature_: float64 [C] per condition, or [1] when shared (broadcasts over
            conditions). A condition without labels in the fit data keeps ``T = 1``.
        n_conditions_: C seen in :meth:`fit` (1 for [N] input).
        log_loss_before_, log_loss_: float64 [C] mean binary cross-entropy on the fit data
            before and after scaling (NaN without labels).

    >>> ts = TemperatureScaling().fit(val_logits, y_val)      # doctest: +SKIP
    >>> p_test = ts.transform(test_logits)                    # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        per_condition: bool = True,
        inputs: str = "logits",
        bounds: tuple[float, float] = (0.01, 100.0),
    ) -> None:
        self.per_condition = per_condition
        self.inputs = inputs
        self.bounds = bounds

    def fit(self, x: np.ndarray, y_true: np.ndarray) -> TemperatureScaling:
        """Fit the temperature(s) on validation outputs ``x`` [N, C] (or [N]) and labels
        ``y_true`` of the same shape (0/1, NaN where missing). Returns ``self``."""
        lo, hi = self.bounds
        if not (0 < lo < hi and math.isfinite(hi)):
            raise ValidationError(f"TemperatureScaling bounds must satisfy 0 < t_min < t_max, got {self.bounds}")
        z = self._logits(x)
        y = _labels(y_true)
        if y.shape != z.shape:
            raise ValidationError(f"labels {y.shape} and inputs {z.shape} must have the same shape")
        z2, y = z.reshape(len(z), -1), y.reshape(len(y), -1)
        n_cond = z2.shape[1]
        if self.per_condition:
            temps = np.array([_fit_temperature(z2[:, c], y[:, c], lo, hi) for c in range(n_cond)])
        else:
            temps = np.array([_fit_temperature(z2.ravel(), y.ravel(), lo, hi)])
        self.temperature_ = temps
        self.n_conditions_ = n_cond
        self.log_loss_before_ = np.atleast_1d(binary_log_loss(y, expit(z2)))
        self.log_loss_ = np.atleast_1d(binary_log_loss(y, expit(z2 / temps)))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``sigmoid(logit(x) / T)``, same shape as ``x`` (float64)."""
        z = self.transform_logits(x)
        return expit(z)

    def transform_logits(self, x: np.ndarray) -> np.ndarray:
        """Scaled logits ``logit(x) / T``, same shape as ``x`` (float64)."""
        if not hasattr(self, "temperature_"):
            raise ValidationError("TemperatureScaling is not fitted; call fit(validation_outputs, labels) first")
        z = self._logits(x)
        z2 = z.reshape(len(z), -1)
        if z2.shape[1] != self.n_conditions_:
            raise ValidationError(
                f"inputs have {z2.shape[1]} conditions but the temperatures were fitted on {self.n_conditions_}"
            )
        return (z2 / self.temperature_).reshape(z.shape)

    def fit_transform(self, x: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        """``fit(x, y_true)`` then ``transform(x)``."""
        return self.fit(x, y_true).transform(x)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        return {"per_condition": self.per_condition, "inputs": self.inputs, "bounds": self.bounds}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"TemperatureScaling({args})"

    def _logits(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        if a.ndim not in (1, 2):
            raise ValidationError(f"inputs must be [N] or [N, C], got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValidationError("inputs contain NaN or infinite values")
        if self.inputs == "logits":
            return a
        if self.inputs == "probabilities":
            if a.size and (a.min() < 0 or a.max() > 1):
                raise ValidationError("inputs='probabilities' but some values are outside [0, 1]")
            p = np.clip(a, _EPS, 1 - _EPS)
            return np.log(p) - np.log1p(-p)
        raise ValidationError(f"inputs must be 'logits' or 'probabilities', got {self.inputs!r}")


def _fit_temperature(z: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    keep = ~np.isnan(y)
    z, y = z[keep], y[keep]
    if len(y) == 0 or not np.any(z):
        return 1.0

    def loss(log_t: float) -> float:
        s = z * math.exp(-log_t)
        # softplus(s) - y * s is the binary cross-entropy of sigmoid(s), stable for large |s|
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = minimize_scalar(loss, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": 1e-8})
    return float(math.exp(res.x))


# -- plotting ---------------------------------------------------------------------------------


def plot_reliability(
    ax: Axes | None,
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    label: str | None = None,
    show_counts: bool = True,
    **plot_kwargs: Any,
) -> Axes:
    """Draw a reliability diagram for one condition (call again on the same ``ax`` to overlay
    models, e.g. before and after temperature scaling).

    Draws the diagonal (once per axis), the curve of :func:`reliability_curve` with markers,
    and, with ``show_counts``, the fraction of predictions per bin as faint bars along the
    bottom (scaled to at most 0.2 of the height). The legend label gets the ECE appended.

    Args:
        ax: a matplotlib axis, or ``None`` to create a new figure (a bare
            ``matplotlib.figure.Figure`` with an Agg canvas, not pyplot; ``ax.figure.savefig(...)``).
        y_true, y_prob: [N] labels (NaN excluded) and probabilities.
        label: legend text for the curve.
        plot_kwargs: passed to ``ax.plot`` for the curve (colour, linestyle, ...).

    Returns:
        The axis drawn on.
    """
    if ax is None:
        ax = _new_axes((4, 4))
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    y, p = _pair_1d(y_true, y_prob)
    ece = _ece(y, p, n_bins, strategy)
    if not getattr(ax, "_ecgfm_diagonal", False):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="perfect calibration")
        ax._ecgfm_diagonal = True  # type: ignore[attr-defined]
    text = f"{label} (ECE {ece:.3f})" if label else f"ECE {ece:.3f}"
    (line,) = ax.plot(curve.mean_predicted, curve.observed, marker="o", markersize=3, label=text, **plot_kwargs)
    if show_counts and curve.counts.sum():
        counts = np.bincount(_bin(p, n_bins, strategy)[1], minlength=n_bins)  # empty bins too
        ax.bar(curve.edges[:-1], 0.2 * counts / counts.max(), width=np.diff(curve.edges), align="edge",
               color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend(loc="upper left", fontsize="small")
    return ax


# -- helpers ----------------------------------------------------------------------------------


def _bin(p: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValidationError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        # percentiles as scikit-learn computes them (linspace(0, 1) * 100), so edges match bit for bit
        edges = np.percentile(p, np.linspace(0, 1, n_bins + 1) * 100) if len(p) else np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValidationError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return edges, np.searchsorted(edges[1:-1], p)


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int, strategy: str) -> float:
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return math.nan
    _, ids = _bin(p, n_bins, strategy)
    counts = np.bincount(ids, minlength=n_bins)
    gap = np.abs(np.bincount(ids, weights=p, minlength=n_bins) - np.bincount(ids, weights=y, minlength=n_bins))
    return float(gap.sum() / counts.sum())  # sum_b n_b/n * |sum_p/n_b - sum_y/n_b|


def _labels(y_true: np.ndarray) -> np.ndarray:
    """Labels as float64 [N] or [N, C], each 0, 1 or NaN."""
    y = np.asarray(y_true, dtype=np.float64)
    if y.ndim not in (1, 2):
        raise ValidationError(f"y_true must be [N] or [N, C], got shape {y.shape}")
    bad = ~np.isnan(y) & (y != 0) & (y != 1)
    if bad.any():
        raise ValidationError(f"y_true must hold 0, 1 or NaN; found {y[bad][0]!r}")
    return y


def _pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities as float64 [N, C], validated."""
    y = _labels(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape:
        raise ValidationError(f"y_true {y.shape} and y_prob {p.shape} must have the same shape")
    if not np.isfinite(p).all():
        raise ValidationError("y_prob contains NaN or infinite values")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValidationError("y_prob has values outside [0, 1]; apply a sigmoid to logits first")
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    return y, p


def _pair_1d(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if np.ndim(y_true) != 1:
        raise ValidationError(f"expected one condition ([N] arrays), got shape {np.shape(y_true)}")
    y, p = _pair(y_true, y_prob)
    keep = ~np.isnan(y[:, 0])
    return y[keep, 0], p[keep, 0]


def _new_axes(size: tuple[float, float]) -> Axes:
    """A fresh axis on a pyplot-free figure (no global state; safe in servers and threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig.add_subplot()
