"""Survival heads on ECGs and on embeddings: absolute risk from a model's outputs, validation
metrics, and linear time-to-event estimators fitted by full-batch L-BFGS.

What the two survival head types of :mod:`ecgfm.models.heads` output, and how this module turns
it into survival probabilities:

- ``cox``: the log relative hazard ``r(x)``. With the Breslow estimate of the baseline
  cumulative hazard ``H0`` on the training set (:func:`breslow_baseline`, stored in the head's
  ``extra``), ``S(t | x) = exp(-H0(t) e^r(x))``.
- ``discrete_hazard``: one logit per interval of ``cuts``; ``S(c_k+1 | x) = prod_{j<=k} (1 - h_j)``
  and, between cuts, a constant hazard rate within the interval (:func:`interval_survival`, the
  numpy twin of :func:`ecgfm.objectives.survival.risk_at`).

:func:`survival_from_logits` does either for any times; :func:`survival_metrics` scores
predictions with :mod:`ecgfm.evaluate.survival` (Harrell's and Uno's C, time-dependent AUROC at
the horizons, integrated Brier score); training validates with it.

The estimators follow scikit-learn's pattern (``fit`` returns self, learned state ends in ``_``):

- :class:`CoxProbe`: Cox's proportional-hazards model, ``r(x) = x . coef_``, Breslow or Efron
  ties, optional L2 penalty ``alpha / 2 ||coef||^2`` (scikit-survival's
  ``CoxPHSurvivalAnalysis(alpha, ties)`` objective), with the Breslow baseline.
- :class:`DiscreteHazardProbe`: ``logit h_k(x) = intercept_[k] + x . coef_`` (one intercept per
  interval, shared coefficients): the maximum-likelihood fit of a logistic regression on the
  person-period expansion of the data.

Both minimise the negative log-likelihood of :mod:`ecgfm.objectives.survival` (the tested
losses, in float64 through torch autograd) with L-BFGS to convergence, on internally
standardised features (a reparametrisation: the optimum is that of the raw features). They are
the "on ECG embeddings" path: ``ecgfm embed MODEL STORE --out train.parquet``, then fit.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)); time = rng.exponential(np.exp(-X[:, 0])); event = rng.random(200) < 0.7
>>> cox = CoxProbe(ties="efron").fit(X, time, event)
>>> cox.predict_survival(X[:2], [0.5, 1.0]).shape
(2, 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.errors import ValidationError
from ecgfm.models.heads import HeadSpec

__all__ = [
    "CoxProbe", "DiscreteHazardProbe", "breslow_baseline", "check_outcomes", "cumulative_hazard_at",
    "default_cuts", "default_horizons", "interval_survival", "survival_from_logits", "survival_metrics",
]


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def check_outcomes(time: ArrayLike, event: ArrayLike, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(time [N] float64, event [N] bool)`` checked: finite times >= 0, events 0/1 (or bool).

    Raises:
        ValidationError: naming ``what`` (e.g. the estimator), the argument and the first bad record.
    """
    prefix = f"{what}: " if what else ""
    try:
        t = np.asarray(time, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"{prefix}time: values must be numbers") from None
    if t.ndim != 1 or t.size == 0:
        raise ValidationError(f"{prefix}time: expected a non-empty [N] array, got shape {t.shape}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"{prefix}time: values must be finite and >= 0; found {float(t[i])!r} at record {i}")
    e = np.asarray(event)
    if e.shape != t.shape:
        raise ValidationError(f"{prefix}event: {e.shape} does not match time {t.shape}")
    if e.dtype != np.bool_:
        try:
            f = e.astype(np.float64)
        except (TypeError, ValueError):
            raise ValidationError(f"{prefix}event: values must be 0/1 or bool, got dtype {e.dtype}") from None
        bad = ~((f == 0) | (f == 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValidationError(f"{prefix}event: values must be 0 (censored) or 1 (event); found {e.tolist()[i]!r} "
                                  f"at record {i}")
        e = f == 1
    return t, e


def _features(X: Any, what: str, n: int | None = None, d: int | None = None) -> np.ndarray:
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValidationError(f"{what}: X must be [N, D], got shape {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValidationError(f"{what}: X has {x.shape[0]} rows for {n} outcomes")
    if d is not None and x.shape[1] != d:
        raise ValidationError(f"{what}: X has {x.shape[1]} features, the model was fitted on {d}")
    if not np.isfinite(x).all():
        i, j = np.argwhere(~np.isfinite(x))[0]
        raise ValidationError(f"{what}: X holds a non-finite value at row {i}, column {j}")
    return x


def _times(times: ArrayLike, what: str) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1:
        raise ValidationError(f"{what}: times must be a 1-D list, got shape {t.shape}")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValidationError(f"{what}: times must be finite and >= 0, got {t.tolist()}")
    return t


# ---------------------------------------------------------------------------------------------
# cuts, horizons and the Breslow baseline
# ---------------------------------------------------------------------------------------------
def default_horizons(time: ArrayLike, event: ArrayLike) -> tuple[float, ...]:
    """The quartiles (25, 50, 75 %) of the event times, to 4 significant digits (unique, sorted)."""
    t, e = check_outcomes(time, event)
    if not e.any():
        raise ValidationError("no event among the records: give the evaluation horizons explicitly")
    q = np.quantile(t[e], [0.25, 0.5, 0.75])
    return tuple(sorted({float(f"{v:.4g}") for v in q if v > 0}))


def default_cuts(time: ArrayLike, event: ArrayLike, n_intervals: int = 10,
                 horizons: Sequence[float] = ()) -> np.ndarray:
    """Interval edges of a discrete-time hazard model: 0, the ``1/(K+1), .., K/(K+1)`` quantiles
    of the event times (K intervals), and the ``horizons`` (so that risk at a horizon is exact,
    not interpolated); sorted and unique.

    The last quantile edge is not the largest event time: the records followed beyond the last
    edge (later events, later censorings) are what make the last interval's hazard estimable. A
    last interval that ended at the largest time would hold, under the ``"completed"`` censoring
    convention, only its events (hazard 1) whenever that time is an event. A horizon after the
    last quantile adds an edge there.

    Raises:
        ValidationError: no event, ``n_intervals < 1``, or a horizon beyond the largest time.
    """
    t, e = check_outcomes(time, event)
    if isinstance(n_intervals, bool) or int(n_intervals) != n_intervals or n_intervals < 1:
        raise ValidationError(f"n_intervals must be a positive integer, got {n_intervals!r}")
    if not e.any():
        raise ValidationError("no event among the records: cannot place interval edges at event-time quantiles")
    h = _times(horizons, "horizons") if len(horizons) else np.zeros(0)
    if h.size and h.max() > t.max():
        raise ValidationError(f"horizons: {h.max():g} is beyond the largest follow-up time {t.max():g}")
    k = int(n_intervals)
    q = np.quantile(t[e], np.arange(1, k + 1) / (k + 1))
    cuts = np.unique(np.concatenate([[0.0], q, h]))
    if cuts.size < 2:
        raise ValidationError("every event is at time 0: no interval to model")
    return cuts


def breslow_baseline(log_risk: ArrayLike, time: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's estimate of the baseline cumulative hazard of a Cox model.

    ``H0(t) = sum_{event times s <= t} d(s) / sum_{j: time_j >= s} exp(r_j)``, the estimator of
    scikit-survival's ``BreslowEstimator`` and lifelines' ``baseline_cumulative_hazard_`` (for
    Breslow and Efron fits alike).

    Args:
        log_risk: ``[N]`` the model's log relative hazards ``r`` (as output, uncentred).
        time, event: ``[N]`` follow-up and event indicator of the same records.

    Returns:
        ``(times [E], cumulative_hazard [E])`` at the distinct event times, ascending
        (``H0`` is 0 before the first and constant after the last).
    """
    t, e = check_outcomes(time, event, "breslow_baseline")
    r = np.asarray(log_risk, dtype=np.float64).reshape(-1)
    if r.shape != t.shape or not np.isfinite(r).all():
        raise ValidationError(f"breslow_baseline: log_risk must be {t.shape[0]} finite values, got shape {r.shape}")
    if not e.any():
        raise ValidationError("breslow_baseline: no event among the records")
    shift = r.max()  # exp(r - shift) <= 1: no overflow; the shift is undone below
    w = np.exp(r - shift)
    order = np.argsort(-t, kind="stable")
    ts, ws, es = t[order], w[order], e[order]
    uniq, first = np.unique(-ts, return_index=True)  # distinct times, descending; first row of each
    last = np.r_[first[1:], ts.size] - 1
    at_risk = np.cumsum(ws)[last]  # sum of exp(r - shift) over time >= that time
    deaths = np.add.reduceat(es.astype(np.float64), first)
    times = -uniq
    keep = deaths > 0
    times, at_risk, deaths = times[keep][::-1], at_risk[keep][::-1], deaths[keep][::-1]
    cumulative = np.cumsum(deaths / at_risk) * np.exp(-shift)
    return times, cumulative


def cumulative_hazard_at(times: np.ndarray, cumulative: np.ndarray, t: ArrayLike) -> np.ndarray:
    """The step function ``H0`` of :func:`breslow_baseline` at ``t`` (0 before the first time)."""
    idx = np.searchsorted(times, np.asarray(t, dtype=np.float64), side="right") - 1
    return np.where(idx >= 0, cumulative[np.clip(idx, 0, None)], 0.0)


def interval_survival(logits: ArrayLike, cuts: ArrayLike, times: ArrayLike) -> np.ndarray:
    """``S(t)`` ``[N, T]`` of a discrete-time hazard model from interval logits ``[N, K]``.

    Exact at the cuts; between them the hazard rate is constant within the interval (``log S``
    linear in time), as :func:`ecgfm.objectives.survival.risk_at`. ``S = 1`` at and before ``cuts[0]``.

    Raises:
        ValidationError: a time beyond the last cut (the model says nothing there).
    """
    from scipy.special import log_expit

    z = np.asarray(logits, dtype=np.float64)
    c = np.asarray(cuts, dtype=np.float64)
    t = _times(times, "interval_survival")
    if z.ndim != 2 or z.shape[1] != c.size - 1:
        raise ValidationError(f"interval_survival: logits must be [N, {c.size - 1}], got {z.shape}")
    if t.size and t.max() > c[-1] * (1 + 1e-12):
        raise ValidationError(f"times: {t.max():g} is beyond the last interval edge {c[-1]:g} (the model "
                              "says nothing about survival after it)")
    step = log_expit(-z)  # log(1 - h_k)  [N, K]
    log_s = np.concatenate([np.zeros((z.shape[0], 1)), np.cumsum(step, axis=1)], axis=1)
    k = np.clip(np.searchsorted(c, t, side="right") - 1, 0, c.size - 2)
    frac = np.clip((t - c[k]) / (c[k + 1] - c[k]), 0.0, 1.0)
    return np.exp(log_s[:, k] + frac[None, :] * step[:, k])


# ---------------------------------------------------------------------------------------------
# survival from a head's outputs
# ---------------------------------------------------------------------------------------------
def _baseline_of(head: HeadSpec, baseline: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    if baseline is not None:
        return np.asarray(baseline[0], np.float64), np.asarray(baseline[1], np.float64)
    if "baseline_times" not in head.extra:
        raise ValidationError("this cox head carries no baseline hazard (extra.baseline_times): absolute "
                              "survival needs one (ecgfm train estimates it on the training set); its "
                              "output, the log relative hazard, still ranks risk")
    return (np.asarray(head.extra["baseline_times"], np.float64),
            np.asarray(head.extra["baseline_cumulative_hazard"], np.float64))


def survival_from_logits(logits: ArrayLike, head: HeadSpec, times: ArrayLike, *,
                         baseline: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """P(event-free at each time) ``[N, T]`` float64 from a survival head's logits.

    Args:
        logits: ``[N, C]`` the model's raw outputs (``C = 1`` for ``cox``, K for ``discrete_hazard``).
        head: the :class:`~ecgfm.models.heads.HeadSpec` (cuts / baseline in its ``extra``).
        times: ``[T]`` times >= 0 in the head's ``extra["time_unit"]``.
        baseline: ``(times, cumulative_hazard)`` to use instead of the head's (``cox``).

    Returns:
        ``[N, T]`` values in [0, 1], non-increasing along ``times`` sorted ascending.

    Raises:
        ValidationError: not a survival head, a time beyond what the model covers (the largest
            training follow-up for ``cox``, the last cut for ``discrete_hazard``), or a ``cox``
            head without a baseline.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    t = _times(times, "survival")
    if head.type == "discrete_hazard":
        return interval_survival(z, head.extra["cuts"], t)
    if head.type != "cox":
        raise ValidationError(f"survival: a {head.type} head does not predict survival (cox or discrete_hazard do)")
    bt, bh = _baseline_of(head, baseline)
    limit = head.extra.get("max_time")
    if baseline is None and limit is not None and t.size and t.max() > float(limit) * (1 + 1e-12):
        raise ValidationError(f"times: {t.max():g} is beyond the largest training follow-up time {float(limit):g}, "
                              "where the baseline hazard is unknown")
    h0 = cumulative_hazard_at(bt, bh, t)  # [T]
    with np.errstate(divide="ignore", over="ignore"):
        return np.exp(-np.exp(np.log(h0)[None, :] + z[:, :1]))


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def _ibs_grid(time: np.ndarray, limit: float) -> np.ndarray:
    grid = np.unique(np.percentile(time, np.linspace(10, 90, 17)))
    return grid[(grid >= time.min()) & (grid < time.max()) & (grid <= limit)]


def survival_metrics(logits: ArrayLike, time: ArrayLike, event: ArrayLike, head: HeadSpec, *,
                     horizons: Sequence[float] | None = None,
                     baseline: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Discrimination and calibration figures of a survival head on records with known outcomes.

    - ``c_index``: Harrell's C (:func:`ecgfm.evaluate.survival.concordance_index`) of the risk:
      the log relative hazard (``cox``) or P(event by the largest horizon) (``discrete_hazard``).
    - ``uno_c``: Uno's C of the same risk, truncated at the largest horizon that lies within the
      records' follow-up, with the censoring distribution of these records.
    - ``auc_<h>`` per horizon and ``auc_mean``: the cumulative/dynamic AUROC
      (:func:`~ecgfm.evaluate.survival.time_dependent_auc`) of the risk by ``h``; NaN for a
      horizon outside ``[min(time), max(time))``.
    - ``ibs``: the integrated Brier score over the 10th-90th percentiles of the records' times
      (17 points). A ``cox`` head needs a baseline: ``baseline``, else the head's, else one
      estimated on these same records (Breslow), which flatters calibration a little.
    - ``events``: the number of events.

    Undefined figures (no event, no comparable pair, horizons beyond follow-up) are NaN.
    """
    from ecgfm.evaluate import survival as S

    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    t, e = check_outcomes(time, event, "survival_metrics")
    h_all = np.asarray(sorted(set(float(v) for v in (horizons if horizons is not None
                                                        else head.extra.get("horizons") or ()))))
    out: dict[str, float] = {"events": float(e.sum())}
    nan = float("nan")
    usable = h_all[(h_all >= t.min()) & (h_all < t.max())] if h_all.size else h_all
    if head.type == "cox":
        risk = z[:, 0]
        risk_h = np.repeat(z[:, :1], max(usable.size, 1), axis=1)
        limit = np.inf
        if baseline is None and "baseline_times" in head.extra:
            limit = float(head.extra.get("max_time", np.inf))
        elif baseline is None and e.any():
            baseline = breslow_baseline(risk, t, e)  # on these records (see the docstring)
    elif head.type == "discrete_hazard":
        cuts = np.asarray(head.extra["cuts"], np.float64)
        limit = float(cuts[-1])
        usable = usable[usable <= limit]
        last = (h_all[h_all <= limit].max() if (h_all <= limit).any() else limit) if h_all.size else limit
        risk = 1.0 - interval_survival(z, cuts, [last])[:, 0]
        risk_h = 1.0 - interval_survival(z, cuts, usable) if usable.size else risk[:, None]
    else:
        raise ValidationError(f"survival_metrics: a {head.type} head is not a survival head")
    if not e.any():
        out.update(c_index=nan, uno_c=nan, auc_mean=nan, ibs=nan)
        out.update({f"auc_{h:g}": nan for h in h_all})
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["c_index"] = float(S.concordance_index(t, e, risk).c_index)
        try:
            tau = float(usable.max()) if usable.size else None
            out["uno_c"] = float(S.uno_concordance(t, e, t, e, risk, tau=tau).c_index)
        except ValidationError:
            out["uno_c"] = nan
        aucs = dict.fromkeys(h_all.tolist(), nan)
        out["auc_mean"] = nan
        if usable.size:
            try:
                auc, mean = S.time_dependent_auc(t, e, t, e, risk_h[:, :usable.size], usable)
                aucs.update(zip(usable.tolist(), auc.tolist()))
                out["auc_mean"] = float(mean)
            except ValidationError:
                pass
        out.update({f"auc_{h:g}": float(v) for h, v in aucs.items()})
        out["ibs"] = nan
        grid = _ibs_grid(t, limit)
        if grid.size >= 2:
            try:
                surv = survival_from_logits(z, head, grid, baseline=baseline)
                out["ibs"] = S.integrated_brier_score(t, e, t, e, surv, grid)
            except ValidationError:
                pass
    return out


# ---------------------------------------------------------------------------------------------
# linear estimators
# ---------------------------------------------------------------------------------------------
class _LinearSurvival:
    """Shared parts: standardisation, L-BFGS through torch autograd in float64."""

    alpha: float
    max_iter: int
    tol: float

    def _standardise(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mu = X.mean(axis=0) if X.shape[0] else np.zeros(X.shape[1])
        sd = X.std(axis=0) if X.shape[0] else np.ones(X.shape[1])
        sd = np.where(sd > 0, sd, 1.0)
        return (X - mu) / sd, mu, sd

    def _minimize(self, objective: Any, x0: np.ndarray) -> np.ndarray:
        import torch
        from scipy.optimize import minimize

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            p = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
            f = objective(p)
            (g,) = torch.autograd.grad(f, p)
            return float(f.detach()), g.numpy().astype(np.float64)

        result = minimize(fun, x0, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "maxcor": 30, "maxls": 50, "gtol": self.tol,
                                   "ftol": 0.0})
        self.n_iter_ = int(result.nit)
        _, g = fun(result.x)
        self.converged_ = bool(np.abs(g).max() <= max(self.tol, 1e-7))
        if not self.converged_:
            warnings.warn(f"{type(self).__name__}: L-BFGS stopped before converging ({result.message}; "
                          f"largest gradient {np.abs(g).max():.2g}); raise max_iter or alpha", stacklevel=3)
        return result.x

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValidationError(f"{type(self).__name__}: call fit() first")

    def predict_risk(self, X: ArrayLike) -> np.ndarray:
        """The linear predictor ``X . coef_`` ``[N]`` (higher = earlier event; the same ranking at
        every horizon, since the effect is proportional)."""
        self._check_fitted()
        return _features(X, type(self).__name__, d=self.n_features_in_) @ self.coef_

    def score(self, X: ArrayLike, time: ArrayLike, event: ArrayLike) -> float:
        """Harrell's C of :meth:`predict_risk` on ``(X, time, event)``."""
        from ecgfm.evaluate.survival import concordance_index

        t, e = check_outcomes(time, event, type(self).__name__)
        return float(concordance_index(t, e, self.predict_risk(X)).c_index)

    def predict_risk_at(self, X: ArrayLike, horizons: ArrayLike) -> np.ndarray:
        """P(event by each horizon) ``[N, H]`` = ``1 - S(h)``."""
        return 1.0 - self.predict_survival(X, horizons)

    def predict_survival(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class CoxProbe(_LinearSurvival):
    """Cox proportional-hazards regression, ``log h(t | x) = log h0(t) + x . coef_``.

    Minimises ``nll(coef) + alpha / 2 ||coef||^2`` where ``nll`` is the negative log partial
    likelihood with Breslow's or Efron's handling of tied event times
    (:class:`ecgfm.objectives.survival.CoxPartialLikelihood`); with ``alpha = 0`` this is the
    maximum partial-likelihood estimate of scikit-survival's ``CoxPHSurvivalAnalysis(ties=...)``
    (same ``alpha``) and lifelines' ``CoxPHFitter`` (Efron). After fitting, the Breslow baseline
    cumulative hazard on the training records gives survival curves.

    Args:
        ties: ``"efron"`` (default, lifelines') or ``"breslow"`` (scikit-survival's default).
        alpha: L2 penalty on the coefficients (0: none).
        max_iter: L-BFGS iteration limit.
        tol: stop when the largest gradient component of ``objective / N`` is below this.

    Learned attributes: ``coef_`` ``[D]``, ``baseline_times_`` ``[E]`` and
    ``baseline_cumulative_hazard_`` ``[E]`` (Breslow, at the distinct event times),
    ``max_time_`` (largest training time), ``n_features_in_``, ``n_iter_``, ``converged_``.
    """

    def __init__(self, ties: str = "efron", *, alpha: float = 0.0, max_iter: int = 1000,
                 tol: float = 1e-10) -> None:
        if ties not in ("breslow", "efron"):
            raise ValidationError(f"CoxProbe: ties must be 'breslow' or 'efron', got {ties!r}")
        if not alpha >= 0:
            raise ValidationError(f"CoxProbe: alpha must be >= 0, got {alpha!r}")
        self.ties, self.alpha, self.max_iter, self.tol = ties, float(alpha), int(max_iter), float(tol)

    def __repr__(self) -> str:
        return f"CoxProbe(ties={self.ties!r}, alpha={self.alpha:g})"

    def fit(self, X: ArrayLike, time: ArrayLike, event: ArrayLike) -> CoxProbe:
        """Fit on features ``X`` ``[N, D]``, follow-up ``time`` ``[N]`` (>= 0) and ``event`` ``[N]``
        (1/True = event at ``time``, 0/False = censored). Returns self."""
        import torch

        from ecgfm.objectives.survival import CoxPartialLikelihood

        t, e = check_outcomes(time, event, "CoxProbe")
        x = _features(X, "CoxProbe", n=t.size)
        if not e.any():
            raise ValidationError("CoxProbe: no event among the records; the partial likelihood is flat")
        xs, _, sd = self._standardise(x)
        n = t.size
        loss = CoxPartialLikelihood(self.ties)
        xt = torch.from_numpy(xs)
        targets = (torch.from_numpy(t), torch.from_numpy(e.astype(np.float64)))
        inv_sd2 = torch.from_numpy(1.0 / sd**2)
        n_events = float(e.sum())

        def objective(b: Any) -> Any:
            nll = loss(xt @ b, targets)["loss"] * n_events
            return (nll + 0.5 * self.alpha * (b * b * inv_sd2).sum()) / n

        b = self._minimize(objective, np.zeros(x.shape[1]))
        self.n_features_in_ = x.shape[1]
        self.coef_ = b / sd
        self.baseline_times_, self.baseline_cumulative_hazard_ = breslow_baseline(x @ self.coef_, t, e)
        self.max_time_ = float(t.max())
        return self

    def predict_cumulative_hazard(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """``H(t | x) = H0(t) exp(x . coef_)`` ``[N, T]``."""
        r = self.predict_risk(X)
        t = self._check_times(times)
        return cumulative_hazard_at(self.baseline_times_, self.baseline_cumulative_hazard_, t)[None, :] * np.exp(r)[:, None]

    def predict_survival(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """``S(t | x) = exp(-H0(t) exp(x . coef_))`` ``[N, T]`` (as scikit-survival's
        ``predict_survival_function`` with its Breslow baseline)."""
        return np.exp(-self.predict_cumulative_hazard(X, times))

    def _check_times(self, times: ArrayLike) -> np.ndarray:
        t = _times(times, "CoxProbe")
        if t.size and t.max() > self.max_time_:
            raise ValidationError(f"CoxProbe: time {t.max():g} is beyond the largest training time "
                                  f"{self.max_time_:g}, where the baseline hazard is unknown")
        return t

    def head_extra(self) -> dict[str, Any]:
        """The baseline as the ``extra`` of a ``cox`` :class:`~ecgfm.models.heads.HeadSpec`."""
        self._check_fitted()
        return {"baseline_times": self.baseline_times_.tolist(),
                "baseline_cumulative_hazard": self.baseline_cumulative_hazard_.tolist(),
                "max_time": self.max_time_}


class DiscreteHazardProbe(_LinearSurvival):
    """Discrete-time hazard regression: ``logit h_k(x) = intercept_[k] + x . coef_``.

    ``h_k`` is P(event in interval k | event-free at its start) for the intervals of ``cuts``
    (``I_0 = [c_0, c_1]``, ``I_k = (c_k, c_k+1]``). Minimises the negative log-likelihood of
    :class:`ecgfm.objectives.survival.DiscreteTimeHazard` ``+ alpha / 2 ||coef||^2`` (intercepts
    not penalised), which is the logistic regression of the person-period expansion (one row per
    record and interval it was at risk in, the outcome = the event in that interval, one dummy per
    interval) fitted by maximum likelihood. Without features (``X`` ``[N, 0]``) and with a cut at
    every distinct event time, ``S`` at the cuts is the Kaplan-Meier estimate.

    Args:
        cuts: ``[K + 1]`` interval edges (None: :func:`default_cuts` of the training data with
            ``n_intervals`` and the ``horizons`` given to :meth:`fit`).
        n_intervals: K for the default cuts.
        alpha: L2 penalty on ``coef_``.
        censoring: ``"completed"`` (a record censored inside an interval says nothing about it)
            or ``"midpoint"`` (it survived the interval if followed past its midpoint).
        max_iter, tol: as :class:`CoxProbe`.

    Learned attributes: ``cuts_`` ``[K + 1]``, ``intercept_`` ``[K]``, ``coef_`` ``[D]``,
    ``n_features_in_``, ``n_iter_``, ``converged_``.
    """

    def __init__(self, cuts: Sequence[float] | None = None, *, n_intervals: int = 10, alpha: float = 0.0,
                 censoring: str = "completed", max_iter: int = 2000, tol: float = 1e-10) -> None:
        if censoring not in ("completed", "midpoint"):
            raise ValidationError(f"DiscreteHazardProbe: censoring must be 'completed' or 'midpoint', got {censoring!r}")
        if not alpha >= 0:
            raise ValidationError(f"DiscreteHazardProbe: alpha must be >= 0, got {alpha!r}")
        self.cuts = None if cuts is None else [float(c) for c in cuts]
        self.n_intervals, self.alpha, self.censoring = int(n_intervals), float(alpha), censoring
        self.max_iter, self.tol = int(max_iter), float(tol)

    def __repr__(self) -> str:
        return (f"DiscreteHazardProbe(cuts={self.cuts!r}, n_intervals={self.n_intervals}, "
                f"alpha={self.alpha:g}, censoring={self.censoring!r})")

    def fit(self, X: ArrayLike, time: ArrayLike, event: ArrayLike,
            horizons: Sequence[float] = ()) -> DiscreteHazardProbe:
        """Fit on ``X`` ``[N, D]`` (``D`` may be 0), ``time`` ``[N]`` and ``event`` ``[N]``.
        ``horizons`` are added to the default cuts. Returns self."""
        import torch

        from ecgfm.objectives.survival import DiscreteTimeHazard

        t, e = check_outcomes(time, event, "DiscreteHazardProbe")
        x = _features(X, "DiscreteHazardProbe", n=t.size)
        cuts = np.asarray(self.cuts, np.float64) if self.cuts is not None else default_cuts(t, e, self.n_intervals, horizons)
        loss = DiscreteTimeHazard(cuts, censoring=self.censoring)
        tt, et = torch.from_numpy(t), torch.from_numpy(e.astype(np.float64))
        y, at_risk = loss.targets_matrix(tt, et)
        y, at_risk = y.numpy().astype(np.float64), at_risk.numpy()
        k = cuts.size - 1
        events = (y * at_risk).sum(0)
        exposure = at_risk.sum(0)
        empty = np.flatnonzero(events == 0)
        if empty.size:
            warnings.warn(f"DiscreteHazardProbe: no event in interval(s) {empty.tolist()} of cuts {cuts.tolist()}; "
                          "their hazard estimate tends to 0 (merge them with a neighbour)", stacklevel=2)
        xs, mu, sd = self._standardise(x)
        d, n = x.shape[1], t.size
        xt = torch.from_numpy(xs)
        targets = (tt, et)
        inv_sd2 = torch.from_numpy(1.0 / sd**2)
        crude = np.clip(events / np.maximum(exposure, 1), 1e-4, 1 - 1e-4)
        a0 = np.log(crude / (1 - crude))

        def objective(p: Any) -> Any:
            a, b = p[:k], p[k:]
            logits = a[None, :] + (xt @ b)[:, None]
            nll = loss(logits, targets)["loss"]  # mean over records
            return nll + 0.5 * self.alpha * (b * b * inv_sd2).sum() / n

        theta = self._minimize(objective, np.concatenate([a0, np.zeros(d)]))
        self.cuts_ = cuts
        self.n_features_in_ = d
        self.coef_ = theta[k:] / sd
        self.intercept_ = theta[:k] - mu @ self.coef_
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Interval logits ``[N, K]`` (``intercept_ + x . coef_``)."""
        return self.intercept_[None, :] + self.predict_risk(X)[:, None]

    def predict_hazard(self, X: ArrayLike) -> np.ndarray:
        """``h_k(x)`` ``[N, K]``: P(event in interval k | event-free at its start)."""
        from scipy.special import expit

        return expit(self.decision_function(X))

    def predict_survival(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """``S(t | x)`` ``[N, T]`` (exact at the cuts; constant hazard rate within an interval)."""
        return interval_survival(self.decision_function(X), self.cuts_, times)

    def head_extra(self) -> dict[str, Any]:
        """The cuts as the ``extra`` of a ``discrete_hazard`` :class:`~ecgfm.models.heads.HeadSpec`."""
        self._check_fitted()
        return {"cuts": self.cuts_.tolist()}
