"""False discovery rate: Benjamini-Hochberg and Benjamini-Yekutieli q-values.

For m p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:

- Benjamini-Hochberg (1995), valid under independence or positive dependence:
  ``q_(i) = min_{j >= i} min(1, m p_(j) / j)``;
- Benjamini-Yekutieli (2001), valid under any dependence: the same with ``m`` replaced by
  ``m * c(m)``, ``c(m) = sum_{k=1..m} 1/k``.

Rejecting every hypothesis with ``q <= alpha`` controls the FDR at ``alpha``. These are the
"adjusted p-values" of R's ``p.adjust(p, "BH")`` / ``p.adjust(p, "BY")``.

>>> fdr_qvalues([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
[0.04, 0.053, 0.053, 0.5]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.errors import ValidationError

__all__ = ["FDR_METHODS", "fdr_qvalues"]

FDR_METHODS = ("bh", "by")


def fdr_qvalues(p: ArrayLike, method: str = "bh") -> np.ndarray:
    """q-values (FDR-adjusted p-values) of a family of tests.

    Args:
        p: p-values of any shape, in [0, 1]; NaN entries (tests not done) are left out of the
            family and stay NaN.
        method: ``"bh"`` (Benjamini-Hochberg) or ``"by"`` (Benjamini-Yekutieli).

    Returns:
        float64 array of the same shape.

    Raises:
        ValidationError: unknown method, or a p-value outside [0, 1].
    """
    method = str(method).lower()
    if method not in FDR_METHODS:
        raise ValidationError(f"fdr method must be one of {', '.join(FDR_METHODS)}, got {method!r}")
    arr = np.asarray(p, dtype=np.float64)
    flat = arr.ravel()
    ok = ~np.isnan(flat)
    values = flat[ok]
    if np.any((values < 0) | (values > 1)):
        raise ValidationError("p-values must lie in [0, 1]")
    out = np.full(flat.shape, np.nan)
    m = values.size
    if m:
        order = np.argsort(values, kind="stable")
        scale = float(m)
        if method == "by":
            scale *= float(np.sum(1.0 / np.arange(1, m + 1)))
        ranked = values[order] * scale / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        q = np.empty(m)
        q[order] = np.minimum(ranked, 1.0)
        out[ok] = q
    return out.reshape(arr.shape)
