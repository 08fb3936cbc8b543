"""Phenome-wide scan: one continuous ECG-derived score against every condition.

For a score s (a model probability, the ECG-age gap, QTc, ...) and each condition c, over the
records with a finite score (and covariates):

- **odds ratio per SD**: the logistic regression ``logit P(c) = b0 + b1 z + g' x`` with
  ``z = (s - mean s) / sd s`` and optional covariates x (age, sex, ... standardised inside, which
  leaves b1 unchanged), fitted by Newton-Raphson (IRLS) for all conditions at once
  (:class:`BatchLogisticRegression`). ``OR = exp(b1)`` with the Wald interval
  ``exp(b1 +- z_{1-alpha/2} se)``, ``se`` from the inverse observed information
  ``(X' W X)^-1`` at the estimate, and the Wald p-value ``2 Phi(-|b1| / se)``;
- **AUROC** of the raw score for the condition (ties count half) with DeLong's variance
  ``S10 / n1 + S01 / n0`` (DeLong, DeLong & Clarke-Pearson 1988), computed from the tie groups of
  one sort of the score, so every condition costs one ``reduceat``;
- **standardised mean difference** (Cohen's d with the pooled SD) of the score between records
  with and without the condition, with the large-sample interval
  ``d +- z sqrt((n1 + n0) / (n1 n0) + d^2 / (2 (n1 + n0)))`` (Hedges & Olkin 1985). AUROC and
  d are unadjusted; only the odds ratio uses the covariates.

Conditions with fewer than ``min_cases`` records with (or without) them are skipped with that
reason. A fit that does not converge, or whose score coefficient exceeds 15 (OR per SD > 3e6),
is reported as ``separation`` (the score or a covariate splits cases from non-cases, and the
maximum-likelihood estimate does not exist); a score that separates them completely (AUROC 0 or
1) is caught before fitting. q-values (Benjamini-Hochberg by default) are over the conditions
fitted for that score: each score is its own family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.comorbidity.fdr import fdr_qvalues
from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.labels import Catalogue

__all__ = ["BatchLogisticRegression", "auroc_delong", "phenome_scan", "standardised_mean_difference"]

_MAX_COEF = 15.0  # |b1| beyond this on the per-SD scale means the MLE ran off to infinity
_BLOCK_ELEMENTS = 4_000_000  # records x conditions per block (float64 work arrays)


class BatchLogisticRegression:
    """Unpenalised logistic regressions of many 0/1 outcomes on one design matrix.

    Newton-Raphson (IRLS) on all outcomes together: per iteration one ``X' (y - mu)`` and one
    product for the Hessians of every outcome (the ``p (p + 1) / 2`` column products of X times
    the weights), a batched solve, and step halving where the log-likelihood would fall.

    Args:
        max_iter: Newton steps at most.
        tol: converged when every coefficient moves by less than ``tol * (1 + |coef|)``.

    Attributes (after :meth:`fit`):
        coef_: ``[C, p]`` coefficients (the design's columns, intercept included if X has one).
        cov_: ``[C, p, p]`` inverse observed information (Wald covariance); NaN where singular.
        se_: ``[C, p]`` standard errors.
        converged_: bool ``[C]``. singular_: bool ``[C]`` (X' W X could not be inverted).
        n_iter_: int ``[C]`` Newton steps taken. loglik_: ``[C]`` log-likelihood at the estimate.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=500)
    >>> y = (rng.random((500, 2)) < 1 / (1 + np.exp(-np.c_[x, -x]))).astype(float)
    >>> fit = BatchLogisticRegression().fit(np.c_[np.ones(500), x], y)
    >>> np.sign(fit.coef_[:, 1]).tolist()
    [1.0, -1.0]
    """

    def __init__(self, max_iter: int = 50, tol: float = 1e-8) -> None:
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def fit(self, x: ArrayLike, y: ArrayLike) -> BatchLogisticRegression:
        """Fit every column of ``y`` ``[N, C]`` (0/1) on ``x`` ``[N, p]``. Returns self."""
        xm = np.asarray(x, dtype=np.float64)
        ym = np.asarray(y)
        if ym.ndim == 1:
            ym = ym[:, None]
        if xm.ndim != 2 or ym.ndim != 2 or xm.shape[0] != ym.shape[0]:
            raise ValidationError(f"x [N, p] and y [N, C] must share N; got {xm.shape} and {ym.shape}")
        n, p = xm.shape
        c = ym.shape[1]
        iu = np.triu_indices(p)
        xx = xm[:, iu[0]] * xm[:, iu[1]]  # [N, p(p+1)/2]: one product gives every Hessian
        has_intercept = p > 0 and bool(np.all(xm[:, 0] == 1.0))
        coef = np.zeros((c, p))
        cov = np.full((c, p, p), np.nan)
        converged = np.zeros(c, dtype=bool)
        singular = np.zeros(c, dtype=bool)
        n_iter = np.zeros(c, dtype=int)
        loglik = np.full(c, np.nan)
        step_cols = max(1, _BLOCK_ELEMENTS // max(n, 1))

        def hessians(w: np.ndarray) -> np.ndarray:
            flat = xx.T @ w  # [p(p+1)/2, cb]
            h = np.zeros((w.shape[1], p, p))
            h[:, iu[0], iu[1]] = flat.T
            h[:, iu[1], iu[0]] = flat.T
            return h

        for start in range(0, c, step_cols):
            sl = slice(start, min(c, start + step_cols))
            # y enters the log-likelihood and the gradient only through X'y:
            # sum_n y eta = beta . X'y and X'(y - mu) = X'y - X'mu
            xty = xm.T @ np.asarray(ym[:, sl], dtype=np.float64)  # [p, cb]
            cb = xty.shape[1]
            beta = np.zeros((cb, p))
            if has_intercept:
                prev = np.clip(xty[0] / n, 1e-6, 1 - 1e-6)
                beta[:, 0] = np.log(prev / (1 - prev))
            eta = xm @ beta.T  # [N, cb]
            lae = np.logaddexp(0.0, eta)  # log(1 + e^eta), kept: mu = exp(eta - lae)
            ll = np.einsum("cp,pc->c", beta, xty) - lae.sum(axis=0)
            done = np.zeros(cb, dtype=bool)
            bad = np.zeros(cb, dtype=bool)
            iters = np.zeros(cb, dtype=int)
            for _ in range(self.max_iter):
                act = np.flatnonzero(~done & ~bad)
                if not act.size:
                    break
                cols = slice(None) if act.size == cb else act  # a slice avoids copies
                mu = np.exp(eta[:, cols] - lae[:, cols])
                grad = xty[:, act] - xm.T @ mu  # [p, a]
                h = hessians(mu * (1 - mu))
                step, ok = _solve(h, grad.T)
                bad[act[~ok]] = True
                act, step = act[ok], step[ok]
                if not act.size:
                    break
                scale = np.ones(act.size)
                for _half in range(30):  # step halving: the log-likelihood must not fall
                    trial = beta[act] + scale[:, None] * step
                    t_eta = xm @ trial.T
                    t_lae = np.logaddexp(0.0, t_eta)
                    t_ll = np.einsum("cp,pc->c", trial, xty[:, act]) - t_lae.sum(axis=0)
                    worse = t_ll < ll[act] - 1e-10 * (1 + np.abs(ll[act]))
                    if not worse.any():
                        break
                    scale[worse] /= 2
                moved = scale[:, None] * step
                beta[act] = trial
                cols = slice(None) if act.size == cb else act
                eta[:, cols] = t_eta
                lae[:, cols] = t_lae
                ll[act] = t_ll
                iters[act] += 1
                small = np.all(np.abs(moved) <= self.tol * (1 + np.abs(beta[act])), axis=1)
                done[act[small]] = True
            mu = np.exp(eta - lae)
            h = hessians(mu * (1 - mu))
            inv, ok = _invert(h)
            bad |= ~ok
            coef[sl] = beta
            cov[sl] = inv
            converged[sl] = done & ~bad
            singular[sl] = bad
            n_iter[sl] = iters
            loglik[sl] = ll
        self.coef_ = coef
        self.cov_ = cov
        self.se_ = np.sqrt(np.abs(np.diagonal(cov, axis1=1, axis2=2)))
        self.converged_ = converged
        self.singular_ = singular
        self.n_iter_ = n_iter
        self.loglik_ = loglik
        return self


def _solve(h: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``h^-1 g``; rows whose matrix is singular come back with ok False."""
    ok = np.ones(h.shape[0], dtype=bool)
    try:
        return np.linalg.solve(h, g[..., None])[..., 0], ok
    except np.linalg.LinAlgError:
        out = np.zeros_like(g)
        for i in range(h.shape[0]):
            try:
                out[i] = np.linalg.solve(h[i], g[i])
            except np.linalg.LinAlgError:
                ok[i] = False
        return out, ok


def _invert(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.ones(h.shape[0], dtype=bool)
    try:
        inv = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        inv = np.full_like(h, np.nan)
        for i in range(h.shape[0]):
            try:
                inv[i] = np.linalg.inv(h[i])
            except np.linalg.LinAlgError:
                ok[i] = False
    finite = np.all(np.isfinite(inv), axis=(1, 2))
    ok &= finite
    inv[~ok] = np.nan
    return inv, ok


def auroc_delong(score: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of one score for many conditions, with DeLong's standard error.

    Args:
        score: ``[N]`` finite scores (higher = more likely the condition).
        y: ``[N, C]`` 0/1 labels.

    Returns:
        ``(auroc [C], se [C])``; NaN for a condition without cases or without non-cases (and
        NaN se with a single case or non-case).

    >>> auc, se = auroc_delong([0.1, 0.4, 0.35, 0.8], [[0], [0], [1], [1]])
    >>> float(auc[0])
    0.75
    """
    s = np.asarray(score, dtype=np.float64)
    ym = np.asarray(y)
    if ym.ndim == 1:
        ym = ym[:, None]
    if s.ndim != 1 or ym.shape[0] != s.size:
        raise ValidationError(f"score [N] and y [N, C] must share N; got {s.shape} and {ym.shape}")
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, np.diff(ss) != 0]) if s.size else np.zeros(0, dtype=int)
    sizes = np.diff(np.r_[starts, s.size]).astype(np.float64)
    c = ym.shape[1]
    auc = np.full(c, np.nan)
    se = np.full(c, np.nan)
    step = max(1, _BLOCK_ELEMENTS // max(s.size, 1))
    for start in range(0, c, step):
        sl = slice(start, min(c, start + step))
        yb = np.asarray(ym[order, sl], dtype=np.float64)
        if not s.size:
            continue
        # cases per tie group [G, cb] (every score distinct: the rows themselves)
        pos = yb if starts.size == s.size else np.add.reduceat(yb, starts, axis=0)
        neg = sizes[:, None] - pos
        n1, n0 = pos.sum(axis=0), neg.sum(axis=0)
        # per case in a group: n0 * V10 = negatives below it (ties half) = cumsum(neg) - neg / 2
        below = np.cumsum(neg, axis=0)
        below -= 0.5 * neg
        # per non-case: n1 * V01 = n1 - (cumsum(pos) - pos / 2)
        above = np.cumsum(pos, axis=0)
        above -= 0.5 * pos
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.einsum("gc,gc->c", pos, below) / (n1 * n0)
            s10 = (np.einsum("gc,gc,gc->c", pos, below, below) / n0 ** 2 - n1 * a ** 2) / (n1 - 1)
            sum_u = np.einsum("gc,gc->c", neg, above)
            sum_uu = np.einsum("gc,gc,gc->c", neg, above, above)
            sum_v01 = (n1 * n0 - sum_u) / n1  # sum over non-cases of V01
            sum_v01sq = (n1 ** 2 * n0 - 2 * n1 * sum_u + sum_uu) / n1 ** 2
            s01 = (sum_v01sq - sum_v01 ** 2 / n0) / (n0 - 1)
            var = s10 / n1 + s01 / n0
        valid = (n1 > 0) & (n0 > 0)
        auc[sl] = np.where(valid, a, np.nan)
        se[sl] = np.where(valid & (n1 > 1) & (n0 > 1), np.sqrt(np.maximum(var, 0.0)), np.nan)
    return auc, se


def standardised_mean_difference(score: ArrayLike, y: ArrayLike) -> dict[str, np.ndarray]:
    """Cohen's d of a score between records with and without each condition.

    Args:
        score: ``[N]`` finite scores. y: ``[N, C]`` 0/1 labels.

    Returns:
        ``{"smd", "se", "mean_cases", "mean_controls", "n_cases", "n_controls"}``, each ``[C]``
        (``se`` is the Hedges-Olkin large-sample standard error; NaN with < 2 in a group).
    """
    s = np.asarray(score, dtype=np.float64)
    ym = np.asarray(y)
    if ym.ndim == 1:
        ym = ym[:, None]
    centre = s.mean() if s.size else 0.0
    z = s - centre
    c = ym.shape[1]
    n1, s1, q1 = np.zeros(c), np.zeros(c), np.zeros(c)
    zz = np.c_[np.ones_like(z), z, z ** 2]  # [N, 3]: count, sum and sum of squares in one product
    step = max(1, _BLOCK_ELEMENTS // max(c, 1))
    for start in range(0, s.size, step):
        sums = zz[start:start + step].T @ np.asarray(ym[start:start + step], dtype=np.float64)
        n1 += sums[0]
        s1 += sums[1]
        q1 += sums[2]
    n = float(s.size)
    n0 = n - n1
    s_all, q_all = z.sum(), (z ** 2).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m0 = s1 / n1, (s_all - s1) / n0
        v1 = (q1 - n1 * m1 ** 2) / (n1 - 1)
        v0 = (q_all - q1 - n0 * m0 ** 2) / (n0 - 1)
        pooled = np.sqrt(np.maximum(((n1 - 1) * v1 + (n0 - 1) * v0) / (n - 2), 0.0))
        d = (m1 - m0) / pooled
        se = np.sqrt((n1 + n0) / (n1 * n0) + d ** 2 / (2 * (n1 + n0)))
    valid = (n1 >= 2) & (n0 >= 2)
    return {"smd": np.where(valid, d, np.nan), "se": np.where(valid, se, np.nan),
            "mean_cases": m1 + centre, "mean_controls": m0 + centre, "n_cases": n1, "n_controls": n0}


def phenome_scan(
    score: ArrayLike,
    y: ArrayLike,
    ids: Sequence[str] | None = None,
    *,
    covariates: ArrayLike | None = None,
    covariate_names: Sequence[str] | None = None,
    score_name: str = "score",
    min_cases: int = 10,
    alpha: float = 0.05,
    fdr: str = "bh",
    max_iter: int = 50,
    catalogue: Catalogue | None = None,
) -> pd.DataFrame:
    """Scan one score against every condition (module docstring for what is computed).

    Args:
        score: ``[N]`` score per record; NaN/inf rows are left out.
        y: ``[N, C]`` 0/1 condition matrix.
        ids: ``[C]`` condition ids.
        covariates: optional ``[N, k]`` numeric adjustment variables (encode categories as 0/1
            columns first); rows with a non-finite covariate are left out.
        covariate_names: ``[k]`` names for the output.
        score_name: the ``score`` column of the output.
        min_cases: a condition needs this many records with it and without it.
        alpha: 1 - confidence level of the intervals, and the ``significant`` cut on q.
        fdr: ``"bh"`` or ``"by"``.
        max_iter: Newton steps at most per fit.
        catalogue: for names and categories.

    Returns:
        DataFrame, one row per condition, most significant first: ``score``, ``condition``,
        ``name``, ``category``, ``status`` (``ok`` / ``skipped`` / ``separation`` /
        ``singular``), ``reason``, ``n``, ``n_cases``, ``beta``, ``se``, ``or_per_sd``,
        ``or_low``, ``or_high``, ``p``, ``log10_p``, ``q``, ``significant``, ``auroc``,
        ``auroc_low``, ``auroc_high``, ``smd``, ``smd_low``, ``smd_high``, ``mean_cases``,
        ``mean_controls``, ``covariates``, ``score_mean``, ``score_sd``.

    Raises:
        ValidationError: shapes disagree, or the score or a covariate is constant over the
            rows used.
    """
    import pandas as pd
    from scipy.special import ndtri
    from scipy.stats import norm

    from ecgfm.comorbidity.conditions import describe_conditions

    s = np.asarray(score, dtype=np.float64).ravel()
    ym = np.asarray(y)
    if ym.ndim == 1:
        ym = ym[:, None]
    if ym.shape[0] != s.size:
        raise ValidationError(f"score has {s.size} records, the condition matrix {ym.shape[0]}")
    if ym.dtype != bool and not np.isin(ym, (0, 1)).all():
        raise ValidationError("condition matrix must hold 0/1")
    c = ym.shape[1]
    ids = [f"c{i}" for i in range(c)] if ids is None else [str(i) for i in ids]
    if len(ids) != c:
        raise ValidationError(f"{len(ids)} ids for {c} conditions")
    if not 0 < float(alpha) < 1:
        raise ValidationError(f"alpha must be in (0, 1), got {alpha}")
    rows = np.isfinite(s)
    cov_m = None
    names: list[str] = []
    if covariates is not None:
        cov_m = np.asarray(covariates, dtype=np.float64)
        if cov_m.ndim == 1:
            cov_m = cov_m[:, None]
        if cov_m.shape[0] != s.size:
            raise ValidationError(f"covariates have {cov_m.shape[0]} rows, the score {s.size}")
        names = list(covariate_names) if covariate_names is not None else [f"x{i}" for i in range(cov_m.shape[1])]
        if len(names) != cov_m.shape[1]:
            raise ValidationError(f"{len(names)} covariate names for {cov_m.shape[1]} columns")
        rows &= np.all(np.isfinite(cov_m), axis=1)
    s_used = s[rows]
    y_used = ym[rows]
    n_used = int(rows.sum())
    mean = float(s_used.mean()) if n_used else np.nan
    sd = float(s_used.std(ddof=1)) if n_used > 1 else np.nan
    if not (np.isfinite(sd) and sd > 0):
        raise ValidationError(f"score {score_name!r} is constant (or has < 2 finite values) over the {n_used} records used")
    z = (s_used - mean) / sd
    design = [np.ones(n_used), z]
    if cov_m is not None:
        for j, name in enumerate(names):
            col = cov_m[rows, j]
            csd = col.std(ddof=1) if n_used > 1 else 0.0
            if not csd > 0:
                raise ValidationError(f"covariate {name!r} is constant over the {n_used} records used")
            design.append((col - col.mean()) / csd)
    x = np.column_stack(design)

    n1 = np.asarray(y_used, dtype=np.float32).sum(axis=0, dtype=np.float64)
    n0 = n_used - n1
    auc, auc_se = auroc_delong(z, y_used)
    smd = standardised_mean_difference(s_used, y_used)
    zc = float(ndtri(1 - float(alpha) / 2))
    status = np.full(c, "ok", dtype=object)
    reason = np.full(c, "", dtype=object)
    few_cases = n1 < min_cases
    few_controls = ~few_cases & (n0 < min_cases)
    status[few_cases | few_controls] = "skipped"
    reason[few_cases] = f"fewer than {min_cases} cases"
    reason[few_controls] = f"fewer than {min_cases} records without the condition"
    complete = (status == "ok") & ((auc == 0) | (auc == 1))
    status[complete] = "separation"
    reason[complete] = "the score separates cases from non-cases completely (AUROC 0 or 1): no finite odds ratio"

    beta = np.full(c, np.nan)
    se = np.full(c, np.nan)
    fit_idx = np.flatnonzero(status == "ok")
    if fit_idx.size:
        fit = BatchLogisticRegression(max_iter=max_iter).fit(x, y_used[:, fit_idx])
        beta[fit_idx] = fit.coef_[:, 1]
        se[fit_idx] = fit.se_[:, 1]
        # a coefficient running off means separation, even where the weights then underflowed
        # and made X'WX singular
        runaway = (np.abs(fit.coef_[:, 1:]) > _MAX_COEF).any(axis=1) | (~fit.converged_ & ~fit.singular_)
        sing = fit.singular_ & ~runaway
        status[fit_idx[sing]] = "singular"
        reason[fit_idx[sing]] = "X'WX is singular (a covariate is constant among cases or non-cases)"
        status[fit_idx[runaway]] = "separation"
        reason[fit_idx[runaway]] = (f"no finite estimate: Newton did not converge in {max_iter} steps or a "
                                    f"coefficient exceeded {_MAX_COEF:g} (separation by the score or a covariate)")
    ok = status == "ok"
    beta[~ok] = np.nan
    se[~ok] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        wald = beta / se
    p = np.where(ok, 2 * norm.sf(np.abs(wald)), np.nan)
    log10_p = np.where(ok, (np.log(2.0) + norm.logsf(np.abs(wald))) / np.log(10.0), np.nan)
    q = fdr_qvalues(p, fdr)
    info = describe_conditions(ids, catalogue)
    scanned = status != "skipped"
    out = pd.DataFrame({
        "score": score_name, "condition": ids, "name": info["name"].to_numpy(),
        "category": info["category"].to_numpy(), "status": status.astype(str), "reason": reason.astype(str),
        "n": n_used, "n_cases": n1.astype(np.int64),
        "beta": beta, "se": se, "or_per_sd": np.exp(beta),
        "or_low": np.exp(beta - zc * se), "or_high": np.exp(beta + zc * se),
        "p": p, "log10_p": log10_p, "q": q, "significant": np.where(ok, q < float(alpha), False),
        "auroc": np.where(scanned, auc, np.nan),
        "auroc_low": np.where(scanned, np.clip(auc - zc * auc_se, 0, 1), np.nan),
        "auroc_high": np.where(scanned, np.clip(auc + zc * auc_se, 0, 1), np.nan),
        "smd": np.where(scanned, smd["smd"], np.nan),
        "smd_low": np.where(scanned, smd["smd"] - zc * smd["se"], np.nan),
        "smd_high": np.where(scanned, smd["smd"] + zc * smd["se"], np.nan),
        "mean_cases": smd["mean_cases"], "mean_controls": smd["mean_controls"],
        "covariates": ", ".join(names), "score_mean": mean, "score_sd": sd,
    })
    rank = np.where(ok, log10_p, np.inf)
    order = np.lexsort((-np.abs(np.nan_to_num(beta)), rank))
    return out.iloc[order].reset_index(drop=True)

