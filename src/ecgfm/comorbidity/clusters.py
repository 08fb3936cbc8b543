"""Clusters of conditions that occur together: hierarchical clustering on a co-occurrence distance.

Distances between conditions a and b (from the 2x2 counts, so one matrix product serves both
the pairwise tests and the clustering):

- ``"jaccard"`` (default): ``1 - n11 / (n_a + n_b - n11)``: 0 when the two always occur
  together, 1 when never; rare conditions sit far from everything unless they share records;
- ``"phi"``: ``1 - max(phi, 0)``: 0 for perfect positive association, 1 for independence or
  any negative association (which says nothing about belonging together).

The tree is built by ``scipy.cluster.hierarchy.linkage`` (``average`` linkage by default:
UPGMA, the distance between clusters is the mean pairwise distance) and cut either into
``n_clusters`` clusters (``maxclust``) or at a distance ``threshold`` (default 0.9: the members of
a cluster share, on average, more than 10 % of their records). Cluster numbers run from 1 by
size (largest first); a condition that joins nothing is a cluster of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ecgfm.comorbidity.cooccurrence import CooccurrenceCounts, cooccurrence_counts
from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.labels import Catalogue

__all__ = ["CLUSTER_METRICS", "ConditionClusters", "cluster_conditions", "cooccurrence_distance"]

CLUSTER_METRICS = ("jaccard", "phi")
_LINKAGES = ("average", "complete", "single", "weighted")


def cooccurrence_distance(counts: CooccurrenceCounts, metric: str = "jaccard") -> np.ndarray:
    """``[C, C]`` distance matrix (zero diagonal) from the co-occurrence counts.

    Args:
        counts: from :func:`~ecgfm.comorbidity.cooccurrence.cooccurrence_counts`.
        metric: ``"jaccard"`` or ``"phi"`` (module docstring).
    """
    if metric not in CLUSTER_METRICS:
        raise ValidationError(f"cluster metric must be one of {', '.join(CLUSTER_METRICS)}, got {metric!r}")
    joint = counts.joint
    n = counts.counts
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "jaccard":
            union = n[:, None] + n[None, :] - joint
            sim = np.where(union > 0, joint / union, 0.0)
        else:
            big_n = counts.n_records
            cov = big_n * joint - n[:, None] * n[None, :]
            var = n * (big_n - n)
            sim = cov / np.sqrt(var[:, None] * var[None, :])
            sim = np.where(np.isfinite(sim), np.maximum(sim, 0.0), 0.0)
    dist = np.clip(1.0 - sim, 0.0, 1.0)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    return dist


@dataclass
class ConditionClusters:
    """Hierarchical clusters of conditions.

    Attributes:
        ids: ``[C]`` condition ids, in input order.
        labels: int ``[C]`` cluster number of each condition (1 = largest cluster).
        linkage: the ``[C - 1, 4]`` scipy linkage matrix (for a dendrogram).
        distance: ``[C, C]`` distance matrix used.
        table: one row per condition, by cluster then prevalence: ``cluster``, ``id``,
            ``name``, ``category``, ``n``, ``prevalence``, ``cluster_size``,
            ``mean_distance`` (mean distance to the other members; NaN for a singleton).
        metric, method: distance and linkage used; cut: ``{"n_clusters": k}`` or
            ``{"threshold": t}``.
    """

    ids: list[str]
    labels: np.ndarray
    linkage: np.ndarray
    distance: np.ndarray
    table: pd.DataFrame
    metric: str
    method: str
    cut: dict[str, float]

    def members(self, cluster: int) -> list[str]:
        """Ids of one cluster, most prevalent first."""
        t = self.table
        return t.loc[t["cluster"] == cluster, "id"].tolist()

    def summary(self, min_size: int = 2) -> pd.DataFrame:
        """One row per cluster with at least ``min_size`` members: ``cluster``, ``size``,
        ``members`` (ids joined by ", ", most prevalent first), ``categories``."""
        import pandas as pd

        rows = []
        for cluster, group in self.table.groupby("cluster", sort=True):
            if len(group) < min_size:
                continue
            cats = group["category"].value_counts()
            rows.append({"cluster": int(cluster), "size": len(group), "members": ", ".join(group["id"]),
                         "categories": ", ".join(f"{k} ({v})" for k, v in cats.items()),
                         "mean_distance": float(group["mean_distance"].mean())})
        return pd.DataFrame(rows, columns=["cluster", "size", "members", "categories", "mean_distance"])


def cluster_conditions(
    y: ArrayLike | CooccurrenceCounts,
    ids: Sequence[str] | None = None,
    *,
    metric: str = "jaccard",
    method: str = "average",
    n_clusters: int | None = None,
    threshold: float = 0.9,
    catalogue: Catalogue | None = None,
) -> ConditionClusters:
    """Cluster conditions by how often they occur together.

    Args:
        y: ``[N, C]`` 0/1 condition matrix or its :class:`CooccurrenceCounts`.
        ids: ``[C]`` condition ids (default ``"c0"`` ...).
        metric: ``"jaccard"`` or ``"phi"`` (module docstring).
        method: scipy linkage: ``average`` (default), ``complete``, ``single``, ``weighted``.
        n_clusters: cut into this many clusters; None: cut at ``threshold``.
        threshold: distance at which the tree is cut when ``n_clusters`` is None.
        catalogue: for names and categories.

    Returns:
        :class:`ConditionClusters`.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.random((2000, 2)) < 0.2                      # two hidden causes
    >>> y = np.repeat(z, 3, axis=1) & (rng.random((2000, 6)) < 0.9)
    >>> cluster_conditions(y, list("ABCDEF")).labels.tolist()
    [1, 1, 1, 2, 2, 2]
    """
    import pandas as pd
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from ecgfm.comorbidity.conditions import describe_conditions

    if method not in _LINKAGES:
        raise ValidationError(f"linkage method must be one of {', '.join(_LINKAGES)}, got {method!r}")
    counts = y if isinstance(y, CooccurrenceCounts) else cooccurrence_counts(y)
    c = counts.counts.size
    ids = [f"c{i}" for i in range(c)] if ids is None else [str(i) for i in ids]
    if len(ids) != c:
        raise ValidationError(f"{len(ids)} ids for {c} conditions")
    if n_clusters is not None and int(n_clusters) < 1:
        raise ValidationError(f"n_clusters must be >= 1, got {n_clusters}")
    dist = cooccurrence_distance(counts, metric)
    if c >= 2:
        tree = linkage(squareform(dist, checks=False), method=method)
        if n_clusters is not None:
            raw = fcluster(tree, t=int(n_clusters), criterion="maxclust")
            cut: dict[str, float] = {"n_clusters": int(n_clusters)}
        else:
            raw = fcluster(tree, t=float(threshold), criterion="distance")
            cut = {"threshold": float(threshold)}
    else:
        tree = np.zeros((0, 4))
        raw = np.ones(c, dtype=int)
        cut = {"n_clusters": 1} if n_clusters is not None else {"threshold": float(threshold)}
    prevalence = counts.counts / counts.n_records if counts.n_records else np.zeros(c)
    # renumber: largest cluster first, ties by the most prevalent member
    sizes = {k: int((raw == k).sum()) for k in np.unique(raw)}
    top = {k: float(prevalence[raw == k].max()) for k in sizes}
    order = sorted(sizes, key=lambda k: (-sizes[k], -top[k], int(k)))
    renumber = {k: i + 1 for i, k in enumerate(order)}
    labels = np.array([renumber[k] for k in raw], dtype=int)
    mean_dist = np.full(c, np.nan)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if idx.size > 1:
            sub = dist[np.ix_(idx, idx)]
            mean_dist[idx] = sub.sum(axis=1) / (idx.size - 1)
    info = describe_conditions(ids, catalogue)
    table = pd.DataFrame({
        "cluster": labels, "id": ids, "name": info["name"].to_numpy(), "category": info["category"].to_numpy(),
        "n": counts.counts, "prevalence": prevalence,
        "cluster_size": [int((labels == k).sum()) for k in labels], "mean_distance": mean_dist,
    })
    table = table.sort_values(["cluster", "prevalence"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return ConditionClusters(ids, labels, tree, dist, table, metric, method, cut)
