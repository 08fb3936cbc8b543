"""Pairwise co-occurrence of conditions: 2x2 tables, odds ratios, exact and asymptotic tests.

For conditions *a* and *b* over N records the 2x2 table is::

                 b present   b absent
    a present      n11         n10        n_a = n11 + n10
    a absent       n01         n00
                   n_b                     N

Every table comes from one matrix product: with ``Y`` the ``[N, C]`` 0/1 matrix,
``Y^T Y`` holds n11 for every pair and its diagonal the n_a (computed over row chunks in float32,
exact because a chunk count stays below 2^24, and summed in float64). The statistics are then
array operations over the ``C (C - 1) / 2`` pairs; nothing loops over pairs in Python.

Per pair:

- ``expected = n_a n_b / N`` (n11 expected under independence) and ``obs_exp = n11 / expected``;
- odds ratio ``OR = n11 n00 / (n10 n01)`` with Woolf's interval
  ``exp(log OR +- z sqrt(1/n11 + 1/n10 + 1/n01 + 1/n00))``; when any cell is 0, 0.5 is added to
  all four cells first (Haldane-Anscombe), and ``haldane`` says so;
- ``phi = (n11 n00 - n10 n01) / sqrt(n_a (N - n_a) n_b (N - n_b))`` (``N phi^2`` is Pearson's
  uncorrected chi-square) and ``jaccard = n11 / (n_a + n_b - n11)``;
- ``chi2``: Pearson's chi-square with Yates' continuity correction, as
  ``scipy.stats.chi2_contingency`` computes it for a 2x2 table (the correction never exceeds
  ``|n11 - expected|``);
- ``p``: Fisher's exact two-sided p-value where the smallest expected cell count is below
  ``exact_below`` (default 1000), else the chi-square p-value (``p_method`` says which). Fisher's
  p sums the hypergeometric probabilities of all tables with the observed margins that are no more
  likely than the observed one (relative tolerance 1e-7, as R's ``fisher.test``); it is computed
  for all pairs at once in log space (log-binomials through ``betaln``, the far tail by the
  ratio recursion of consecutive probabilities), so it stays exact for any N and gives ``log10_p``
  below the smallest double. Above the cut every cell has an expected count of at least 1000 and
  the chi-square p-value is close to Fisher's: within 2 % at p ~ 1e-5 and 10 % at 1e-11, drifting
  apart only in the far tail (a factor 4 at 1e-42), where both are beyond any FDR cut.
- ``q``: Benjamini-Hochberg (or -Yekutieli) q-values over every pair tested.

Probabilities can stand in for 0/1 labels as *soft counts* (``soft=True``): cells are sums of
``p_a p_b`` over records, the expected co-occurrence if the model's outputs were independent
within a record. Such cells are not counts, so only the chi-square p-value is given, and it
treats the soft cells as if they were counts: use it to rank, not to test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.comorbidity.fdr import fdr_qvalues
from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.labels import Catalogue

__all__ = [
    "METHODS", "CooccurrenceCounts", "CooccurrenceResult", "cooccurrence_counts",
    "fisher_exact_2x2", "pairwise_cooccurrence", "table_statistics",
]

METHODS = ("auto", "fisher", "chi2")
_CHUNK_ROWS = 1 << 16  # float32 counts in a chunk stay exact (< 2^24)
_TOL = 1e-7  # relative tolerance of "no more likely than the observed table" (R's fisher.test)
_LN10 = float(np.log(10.0))


# ---------------------------------------------------------------------------------------------
# counts


@dataclass(frozen=True)
class CooccurrenceCounts:
    """The sufficient statistics of every 2x2 table of a condition matrix.

    Attributes:
        n_records: N, the number of records (the sum of record weights for soft counts).
        counts: float64 ``[C]``: n_a, records with each condition.
        joint: float64 ``[C, C]``: n11 of each pair (``joint[a, a] == counts[a]``).
        soft: whether the counts are sums of probabilities rather than integers.
    """

    n_records: float
    counts: np.ndarray
    joint: np.ndarray
    soft: bool = False

    def subset(self, keep: np.ndarray) -> CooccurrenceCounts:
        """The counts of the conditions at indices (or mask) ``keep``."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return CooccurrenceCounts(self.n_records, self.counts[idx], self.joint[np.ix_(idx, idx)], self.soft)


def _as_matrix(y: ArrayLike, soft: bool) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2:
        raise ValidationError(f"condition matrix must be 2-D [records, conditions], got shape {arr.shape}")
    if arr.dtype == bool:
        if soft:
            raise ValidationError("soft=True needs probabilities, got a boolean matrix")
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValidationError(f"condition matrix must be boolean or numeric, got dtype {arr.dtype}")
    if soft:
        if not np.all(np.isfinite(arr)) or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise ValidationError("soft counts need probabilities in [0, 1] with no NaN")
        return arr
    if not np.isin(arr, (0, 1)).all():
        raise ValidationError(
            "condition matrix must hold 0/1 (threshold probabilities first, or pass soft=True)"
        )
    return arr


def cooccurrence_counts(y: ArrayLike, *, soft: bool = False, chunk_rows: int = _CHUNK_ROWS) -> CooccurrenceCounts:
    """n_a for every condition and n11 for every pair, from one chunked matrix product.

    Args:
        y: ``[N, C]`` boolean / 0-1 matrix (records x conditions), or probabilities with
            ``soft=True``.
        soft: treat ``y`` as probabilities (soft counts).
        chunk_rows: rows per product (memory is ``chunk_rows x C`` float32). Kept at or below
            2^16 for 0/1 input so float32 partial sums are exact.

    Returns:
        :class:`CooccurrenceCounts`.
    """
    arr = _as_matrix(y, soft)
    n, c = arr.shape
    step = max(1, min(int(chunk_rows), _CHUNK_ROWS) if not soft else int(chunk_rows))
    joint = np.zeros((c, c), dtype=np.float64)
    for start in range(0, n, step):
        block = np.asarray(arr[start:start + step], dtype=np.float32)
        joint += (block.T @ block).astype(np.float64)
    if soft:
        counts = np.asarray(arr, dtype=np.float64).sum(axis=0) if n else np.zeros(c)
    else:
        counts = np.diag(joint).copy()
    return CooccurrenceCounts(float(n), counts, joint, bool(soft))


# ---------------------------------------------------------------------------------------------
# Fisher's exact test, vectorised


def _lbinom(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log C(a, b) for 0 <= b <= a, accurate for large a (betaln, not a gammaln difference)."""
    from scipy.special import betaln

    return -np.log1p(a) - betaln(a - b + 1.0, b + 1.0)


def _logpmf(k: np.ndarray, big_n: np.ndarray, big_k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Hypergeometric log P(X = k): k successes in n draws from N items of which K succeed."""
    return _lbinom(big_k, k) + _lbinom(big_n - big_k, n - k) - _lbinom(big_n, n)


def _log_tail(start: np.ndarray, lp_start: np.ndarray, big_n: np.ndarray, big_k: np.ndarray,
              n: np.ndarray, end: np.ndarray, up: bool) -> np.ndarray:
    """log of sum_{k from start outward to end} P(X = k), for tails away from the mode.

    Summed as ``P(start) * (1 + r_1 + r_1 r_2 + ...)`` with the ratios of consecutive
    probabilities, which fall as the tail goes out (the hypergeometric is log-concave): the sum
    stops once the geometric bound on the rest is below 1e-16 of it.
    """
    k = start.astype(np.float64).copy()
    total = np.ones_like(k)
    term = np.ones_like(k)
    active = np.flatnonzero(k != end)
    while active.size:
        ka, nn, kk, na = k[active], big_n[active], big_k[active], n[active]
        if up:
            ratio = (kk - ka) * (na - ka) / ((ka + 1.0) * (nn - kk - na + ka + 1.0))
            k[active] = ka + 1.0
        else:
            ratio = ka * (nn - kk - na + ka) / ((kk - ka + 1.0) * (na - ka + 1.0))
            k[active] = ka - 1.0
        term[active] *= ratio
        total[active] += term[active]
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = term[active] * ratio / (1.0 - ratio)
        done = (k[active] == end[active]) | (term[active] == 0) | ((ratio < 1) & (rest < 1e-16 * total[active]))
        active = active[~done]
    return lp_start + np.log(total)


def fisher_exact_2x2(n11: ArrayLike, n10: ArrayLike, n01: ArrayLike, n00: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Fisher exact p-values of many 2x2 tables at once.

    Matches ``scipy.stats.fisher_exact(table).pvalue`` (same definition: the probability of all
    tables with the observed margins that are no more likely than the observed one), with R's
    relative tolerance 1e-7 for "no more likely". Works in log space, so tables with N in the
    millions are exact and ``log10_p`` is finite where ``p`` underflows to 0.

    Args:
        n11, n10, n01, n00: the cells (non-negative integers), any broadcastable shape.

    Returns:
        ``(p, log10_p)``, float64 arrays of the broadcast shape; 1 (and 0) where a margin is 0.

    >>> p, _ = fisher_exact_2x2(8, 2, 1, 5)
    >>> round(float(p), 6)   # scipy.stats.fisher_exact([[8, 2], [1, 5]]).pvalue: 0.034965
    0.034965
    """
    cells = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (n11, n10, n01, n00)))
    shape = cells[0].shape
    a, b, c, d = (x.ravel() for x in cells)
    if np.any(np.concatenate([a, b, c, d]) < 0) or np.any(np.isnan(np.concatenate([a, b, c, d]))):
        raise ValidationError("2x2 cells must be non-negative counts")
    if np.any(np.round(a) != a) or np.any(np.round(b) != b) or np.any(np.round(c) != c) or np.any(np.round(d) != d):
        raise ValidationError("Fisher's exact test needs integer cells (soft counts: use the chi-square test)")
    big_n = a + b + c + d
    big_k = a + b  # row margin: a present
    n = a + c  # column margin: b present
    log_p = np.zeros_like(a)
    live = np.flatnonzero((big_k > 0) & (big_k < big_n) & (n > 0) & (n < big_n))
    if live.size:
        x, nn, kk, na = a[live], big_n[live], big_k[live], n[live]
        lo = np.maximum(0.0, na + kk - nn)
        hi = np.minimum(kk, na)
        mode = np.clip(np.floor((na + 1.0) * (kk + 1.0) / (nn + 2.0)), lo, hi)
        lp_x = _logpmf(x, nn, kk, na)
        lp_mode = _logpmf(mode, nn, kk, na)
        thr = lp_x + np.log1p(_TOL)
        out = np.zeros_like(x)  # log p; 0 (p = 1) where the observed table is as likely as the mode
        below = (x < mode) & (lp_x < lp_mode - np.log1p(_TOL) / 2)
        above = (x > mode) & (lp_x < lp_mode - np.log1p(_TOL) / 2)
        for side, up in ((below, False), (above, True)):
            idx = np.flatnonzero(side)
            if not idx.size:
                continue
            xs, ns, ks, ms = x[idx], nn[idx], kk[idx], na[idx]
            own = _log_tail(xs, lp_x[idx], ns, ks, ms, lo[idx] if not up else hi[idx], up)
            # the first value on the other side of the mode that is no more likely than x
            far = hi[idx] if not up else lo[idx]
            has_other = _logpmf(far, ns, ks, ms) <= thr[idx]
            left = mode[idx].copy()
            right = far.copy()
            if up:  # other side is below the mode: search [lo, mode) for the largest k with lp <= thr
                left, right = far.copy(), mode[idx].copy()
            while True:
                open_ = has_other & (right - left > 1)
                if not open_.any():
                    break
                mid = np.floor((left + right) / 2)
                ok = _logpmf(mid, ns, ks, ms) <= thr[idx]
                if up:
                    left = np.where(open_ & ok, mid, left)
                    right = np.where(open_ & ~ok, mid, right)
                else:
                    right = np.where(open_ & ok, mid, right)
                    left = np.where(open_ & ~ok, mid, left)
            boundary = left if up else right
            total = own.copy()
            other_idx = np.flatnonzero(has_other)
            if other_idx.size:
                bo = boundary[other_idx]
                lp_b = _logpmf(bo, ns[other_idx], ks[other_idx], ms[other_idx])
                end = (lo[idx] if up else hi[idx])[other_idx]
                other = _log_tail(bo, lp_b, ns[other_idx], ks[other_idx], ms[other_idx], end, not up)
                total[other_idx] = np.logaddexp(own[other_idx], other)
            out[idx] = np.minimum(total, 0.0)
        log_p[live] = out
    return np.exp(log_p).reshape(shape), (log_p / _LN10).reshape(shape)


# ---------------------------------------------------------------------------------------------
# all statistics of a set of tables


def table_statistics(n11: ArrayLike, n10: ArrayLike, n01: ArrayLike, n00: ArrayLike, *,
                     alpha: float = 0.05, method: str = "auto", exact_below: float = 1000.0) -> dict[str, np.ndarray]:
    """Every per-table statistic of the module docstring, for arrays of 2x2 tables.

    Args:
        n11, n10, n01, n00: the cells, same shape (counts, or soft counts with ``method="chi2"``).
        alpha: 1 - confidence level of the odds-ratio interval.
        method: ``"auto"`` (Fisher where the smallest expected cell < ``exact_below``, else
            chi-square), ``"fisher"`` (always) or ``"chi2"`` (never Fisher).
        exact_below: the expected-count cut of ``"auto"``.

    Returns:
        ``{name: float64 array}`` with ``n_a``, ``n_b``, ``expected``, ``obs_exp``,
        ``odds_ratio``, ``or_low``, ``or_high``, ``log_or``, ``se_log_or``, ``haldane`` (bool),
        ``phi``, ``jaccard``, ``chi2``, ``p_chi2``, ``p``, ``log10_p``, ``exact`` (bool: ``p`` is
        Fisher's).

    >>> s = table_statistics(10, 20, 30, 940)
    >>> round(float(s["odds_ratio"]), 4), round(float(s["expected"]), 1)
    (15.6667, 1.2)
    """
    from scipy.special import ndtri
    from scipy.stats import chi2 as chi2_dist

    if method not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < float(alpha) < 1:
        raise ValidationError(f"alpha must be in (0, 1), got {alpha}")
    cells = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (n11, n10, n01, n00)))
    shape = cells[0].shape
    a, b, c, d = (x.ravel() for x in cells)  # 1-D inside, the input's shape outside
    big_n = a + b + c + d
    n_a, n_b = a + b, a + c
    not_a, not_b = c + d, b + d
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = n_a * n_b / big_n
        obs_exp = a / expected
        haldane = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        h = np.where(haldane, 0.5, 0.0)
        ah, bh, ch, dh = a + h, b + h, c + h, d + h
        log_or = np.log(ah) + np.log(dh) - np.log(bh) - np.log(ch)
        se = np.sqrt(1 / ah + 1 / bh + 1 / ch + 1 / dh)
        z = float(ndtri(1 - float(alpha) / 2))
        margins = n_a * not_a * n_b * not_b
        diff = a * d - b * c
        phi = diff / np.sqrt(margins)
        union = n_a + n_b - a
        jaccard = np.where(union > 0, a / union, np.nan)
        dev = np.abs(a - expected)
        dev = dev - np.minimum(0.5, dev)  # Yates, never past zero (scipy gh-13875)
        chi2 = dev ** 2 * big_n ** 3 / margins
    degenerate = ~(margins > 0)
    chi2 = np.where(degenerate, 0.0, chi2)
    phi = np.where(degenerate, np.nan, phi)
    log_sf = chi2_dist.logsf(chi2, 1)
    p_chi2 = np.exp(log_sf)
    min_expected = np.minimum(np.minimum(expected, n_a - expected), np.minimum(n_b - expected, big_n - n_a - n_b + expected))
    if method == "fisher":
        exact = np.ones(a.shape, dtype=bool)
    elif method == "chi2":
        exact = np.zeros(a.shape, dtype=bool)
    else:
        exact = min_expected < float(exact_below)
    exact &= ~degenerate
    p = p_chi2.copy()
    log10_p = log_sf / _LN10
    if exact.any():
        pf, lf = fisher_exact_2x2(a[exact], b[exact], c[exact], d[exact])
        p[exact], log10_p[exact] = pf, lf
    p = np.where(degenerate, 1.0, p)
    log10_p = np.where(degenerate, 0.0, log10_p)
    out = {
        "n_a": n_a, "n_b": n_b, "expected": expected, "obs_exp": obs_exp,
        "odds_ratio": np.exp(log_or), "or_low": np.exp(log_or - z * se), "or_high": np.exp(log_or + z * se),
        "log_or": log_or, "se_log_or": se, "haldane": haldane, "phi": phi, "jaccard": jaccard,
        "chi2": chi2, "p_chi2": p_chi2, "p": p, "log10_p": log10_p, "exact": exact,
    }
    return {k: np.asarray(v).reshape(shape) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# the pairwise table


@dataclass
class CooccurrenceResult:
    """Pairwise co-occurrence of a condition matrix.

    Attributes:
        pairs: one row per pair of kept conditions (columns: module docstring, plus ``a``,
            ``b``, names, categories, ``relation``, ``n11``..``n00``, ``q``, ``significant``),
            most significant first.
        conditions: one row per input condition: ``id``, ``name``, ``category``, ``n``,
            ``prevalence``, ``kept``, ``reason`` (why a condition was left out).
        counts: the :class:`CooccurrenceCounts` of the kept conditions (same order as
            ``kept_ids``), e.g. for :func:`~ecgfm.comorbidity.clusters.cluster_conditions`.
        kept_ids: the kept condition ids.
        settings: the options used (alpha, fdr, method, exact_below, min_count, soft).
        notes: what the reader should know (Haldane corrections, soft counts ...).
    """

    pairs: pd.DataFrame
    conditions: pd.DataFrame
    counts: CooccurrenceCounts
    kept_ids: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def pairwise_cooccurrence(
    y: ArrayLike | CooccurrenceCounts,
    ids: Sequence[str] | None = None,
    *,
    min_count: int = 10,
    alpha: float = 0.05,
    fdr: str = "bh",
    method: str = "auto",
    exact_below: float = 1000.0,
    soft: bool = False,
    catalogue: Catalogue | None = None,
) -> CooccurrenceResult:
    """Co-occurrence statistics of every pair of conditions.

    Args:
        y: ``[N, C]`` 0/1 (or boolean) matrix of records x conditions; probabilities with
            ``soft=True``; or precomputed :func:`cooccurrence_counts`.
        ids: ``[C]`` condition ids (default ``"c0"``, ``"c1"`` ...).
        min_count: a condition needs at least this many records with it and without it to enter
            (fewer cannot give a useful test; they are listed with the reason).
        alpha: significance level of ``significant`` (``q < alpha``) and 1 - confidence of the
            odds-ratio interval.
        fdr: ``"bh"`` (Benjamini-Hochberg) or ``"by"`` (Benjamini-Yekutieli) over all pairs.
        method: ``"auto"``, ``"fisher"`` or ``"chi2"`` (see :func:`table_statistics`); soft
            counts always use ``"chi2"``.
        exact_below: expected-count cut between Fisher and chi-square in ``"auto"``.
        soft: ``y`` holds probabilities used as soft counts.
        catalogue: for names, categories and relations; defaults to the packaged one.

    Returns:
        :class:`CooccurrenceResult`.

    >>> import numpy as np
    >>> y = np.random.default_rng(0).random((500, 3)) < 0.3
    >>> res = pairwise_cooccurrence(y, ["AFIB", "LVH", "NORM"], min_count=5)
    >>> len(res.pairs), list(res.pairs.columns[:4])
    (3, ['a', 'b', 'name_a', 'name_b'])
    """
    import pandas as pd

    from ecgfm.comorbidity.conditions import describe_conditions, relation_matrix

    counts = y if isinstance(y, CooccurrenceCounts) else cooccurrence_counts(y, soft=soft)
    soft = counts.soft
    n_cond = counts.counts.size
    ids = [f"c{i}" for i in range(n_cond)] if ids is None else [str(i) for i in ids]
    if len(ids) != n_cond:
        raise ValidationError(f"{len(ids)} ids for {n_cond} conditions")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValidationError(f"condition ids must be unique; repeated: {', '.join(dup[:5])}")
    if int(min_count) < 1:
        raise ValidationError(f"min_count must be >= 1, got {min_count}")
    if method not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    big_n = counts.n_records
    info = describe_conditions(ids, catalogue)
    n = counts.counts
    reasons = np.where(n < min_count, f"fewer than {min_count} records with it",
                       np.where(big_n - n < min_count, f"fewer than {min_count} records without it", ""))
    keep = reasons == ""
    conditions = pd.DataFrame({
        "id": ids, "name": info["name"].to_numpy(), "category": info["category"].to_numpy(),
        "n": n, "prevalence": n / big_n if big_n else np.nan, "kept": keep, "reason": reasons,
    })
    kept = counts.subset(keep)
    kept_ids = [i for i, k in zip(ids, keep) if k]
    notes: list[str] = []
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} of {n_cond} conditions left out (fewer than {min_count} "
                     "records with or without them): see conditions")
    used_method = "chi2" if soft else method
    if soft:
        notes.append("soft counts (sums of probability products): p-values treat them as counts; "
                     "rank by them, do not test with them")
    ia, ib = np.triu_indices(len(kept_ids), k=1)
    n11 = kept.joint[ia, ib]
    na, nb = kept.counts[ia], kept.counts[ib]
    n10, n01 = na - n11, nb - n11
    n00 = big_n - na - nb + n11
    if not soft:  # float32 products are exact, but keep the cells integral and non-negative
        n11, n10, n01, n00 = (np.maximum(np.round(v), 0.0) for v in (n11, n10, n01, n00))
    else:
        n10, n01, n00 = (np.maximum(v, 0.0) for v in (n10, n01, n00))
    stats = table_statistics(n11, n10, n01, n00, alpha=alpha, method=used_method, exact_below=exact_below)
    q = fdr_qvalues(stats["p"], fdr)
    relation = relation_matrix(kept_ids, catalogue)[ia, ib] if kept_ids else np.array([], dtype=object)
    kinfo = info.loc[kept_ids] if kept_ids else info.iloc[:0]
    ids_arr = np.asarray(kept_ids, dtype=object)
    pairs = pd.DataFrame({
        "a": ids_arr[ia], "b": ids_arr[ib],
        "name_a": kinfo["name"].to_numpy()[ia], "name_b": kinfo["name"].to_numpy()[ib],
        "category_a": kinfo["category"].to_numpy()[ia], "category_b": kinfo["category"].to_numpy()[ib],
        "relation": relation.astype(str),
        "n_a": na, "n_b": nb, "n11": n11, "n10": n10, "n01": n01, "n00": n00,
        "expected": stats["expected"], "obs_exp": stats["obs_exp"],
        "odds_ratio": stats["odds_ratio"], "or_low": stats["or_low"], "or_high": stats["or_high"],
        "log_or": stats["log_or"], "se_log_or": stats["se_log_or"], "haldane": stats["haldane"],
        "phi": stats["phi"], "jaccard": stats["jaccard"], "chi2": stats["chi2"],
        "p": stats["p"], "log10_p": stats["log10_p"],
        "p_method": np.where(stats["exact"], "fisher", "chi2"),
        "q": q, "significant": q < float(alpha),
    })
    if not soft:
        for col in ("n_a", "n_b", "n11", "n10", "n01", "n00"):
            pairs[col] = pairs[col].astype(np.int64)
    if pairs["haldane"].any():
        notes.append(f"{int(pairs['haldane'].sum())} pairs have an empty cell: their odds ratio and "
                     "interval add 0.5 to every cell (Haldane-Anscombe; column haldane)")
    by_def = int((pairs["relation"] == "grouping").sum())
    if by_def:
        notes.append(f"{by_def} pairs are a grouping label and a label it contains (relation "
                     "'grouping'): associated by construction, left out of the report's tables")
    order = np.lexsort((-np.abs(pairs["log_or"].to_numpy()), pairs["log10_p"].to_numpy()))
    pairs = pairs.iloc[order].reset_index(drop=True)
    settings = {"alpha": float(alpha), "fdr": fdr, "method": used_method, "exact_below": float(exact_below),
                "min_count": int(min_count), "soft": bool(soft), "n_records": big_n,
                "n_conditions": n_cond, "n_kept": len(kept_ids), "n_pairs": int(len(pairs))}
    return CooccurrenceResult(pairs, conditions, kept, kept_ids, settings, notes)
