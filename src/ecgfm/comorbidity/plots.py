"""Figures of a comorbidity analysis: the association network and the Manhattan plot of a scan.

**Network** (:func:`plot_network`): one node per condition, its area proportional to the
prevalence and its colour the catalogue category; one edge per significant pair (``q < alpha``,
pairs associated by construction left out), solid red for positive associations (OR > 1) and
dashed blue for negative ones, width growing with ``|log OR|`` (capped at OR 20 or 1/20). The
layout (:func:`network_layout`) is a force-directed (Fruchterman-Reingold) layout in numpy:
every pair of nodes repels, positive edges attract in proportion to ``log OR`` and a
weak gravity keeps unconnected nodes near the middle; it starts from
the clusters laid out in turn around a circle and is deterministic. When there are more than
``max_nodes`` conditions with an edge, the ones with the largest summed ``|log OR|`` are drawn;
when there are more than ``max_edges`` edges among them, the most significant are drawn
(negative ones taking at most a third of the edges when positive ones would fill them).

**Manhattan** (:func:`plot_manhattan`): ``-log10 p`` of the scan's odds ratio per condition,
conditions grouped by category along x; triangles point up for OR > 1 and down for OR < 1; the
dashed line is the Benjamini-Hochberg cut (the largest p with ``q < alpha``), the dotted line
Bonferroni's ``alpha / m``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["CATEGORY_COLOURS", "network_edges", "network_layout", "plot_manhattan", "plot_network"]

#: One colour per catalogue category (tab10), grey for ids the catalogue lacks.
CATEGORY_COLOURS = {
    "rhythm": "#1f77b4", "conduction": "#ff7f0e", "axis": "#8c564b", "hypertrophy": "#2ca02c",
    "ischaemia": "#d62728", "repolarisation": "#9467bd", "morphology": "#17becf",
    "pacing": "#e377c2", "measurement": "#bcbd22", "systemic": "#7f7f7f", "other": "#c7c7c7",
}
_POSITIVE, _NEGATIVE = "#c0392b", "#2e86c1"
_LOG_OR_CAP = float(np.log(20.0))


def _figure(width: float, height: float) -> tuple[Figure, object]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _mpl(text: str) -> str:
    return str(text).replace("$", r"\$")


def network_edges(pairs: pd.DataFrame, alpha: float = 0.05, max_nodes: int = 60,
                  max_edges: int = 150) -> tuple[list[str], pd.DataFrame]:
    """The nodes and edges drawn: significant pairs not related by construction.

    Nodes: the ``max_nodes`` conditions with the largest summed ``|log OR|``. Edges among them:
    the most significant, negative associations taking at most a third of ``max_edges`` when
    there are more positive ones than fit.

    Returns:
        ``(node ids, edge rows of pairs)`` after the ``max_nodes`` / ``max_edges`` limits.
    """
    import pandas as pd

    sig = pairs[(pairs["q"] < alpha) & (pairs["relation"] != "grouping") & np.isfinite(pairs["log_or"])]
    if sig.empty:
        return [], sig
    strength: dict[str, float] = {}
    for a, b, w in zip(sig["a"], sig["b"], np.abs(sig["log_or"].to_numpy())):
        strength[a] = strength.get(a, 0.0) + float(w)
        strength[b] = strength.get(b, 0.0) + float(w)
    nodes = sorted(strength, key=lambda k: -strength[k])[: max(1, int(max_nodes))]
    keep = set(nodes)
    edges = sig[sig["a"].isin(keep) & sig["b"].isin(keep)]
    edges = edges.sort_values(["log10_p", "log_or"], ascending=[True, False], kind="stable")
    positive, negative = edges[edges["log_or"] > 0], edges[edges["log_or"] < 0]
    n_neg = min(len(negative), max(int(max_edges) - len(positive), int(max_edges) // 3))
    edges = pd.concat([positive.head(int(max_edges) - n_neg), negative.head(n_neg)])
    used = set(edges["a"]) | set(edges["b"])
    return [n for n in nodes if n in used], edges


def network_layout(nodes: Sequence[str], edges: pd.DataFrame, clusters: dict[str, int] | None = None,
                   *, iterations: int = 300, gravity: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Force-directed positions ``{id: [x, y]}`` in [-1, 1]^2 (Fruchterman-Reingold).

    Args:
        nodes: ids to place.
        edges: rows with ``a``, ``b``, ``log_or``; only positive associations attract.
        clusters: ``{id: cluster}``: the start puts each cluster's members next to each other
            around a circle.
        iterations: layout steps (the largest move falls linearly from 0.2 to zero).
        gravity: pull of every node towards the middle (1: an unconnected node settles about one
            unit out).
        seed: the small jitter that breaks ties (the layout is deterministic for a seed).
    """
    n = len(nodes)
    if n == 0:
        return {}
    if n == 1:
        return {nodes[0]: np.zeros(2)}
    order = sorted(range(n), key=lambda i: ((clusters or {}).get(nodes[i], 0), i))
    angle = np.empty(n)
    angle[order] = 2 * np.pi * np.arange(n) / n
    rng = np.random.default_rng(seed)
    pos = np.c_[np.cos(angle), np.sin(angle)] + rng.normal(scale=0.01, size=(n, 2))
    index = {k: i for i, k in enumerate(nodes)}
    w = np.zeros((n, n))
    for a, b, lo in zip(edges["a"], edges["b"], edges["log_or"].to_numpy()):
        if a in index and b in index and lo > 0:
            w[index[a], index[b]] = w[index[b], index[a]] = min(float(lo), _LOG_OR_CAP) / _LOG_OR_CAP
    k = np.sqrt(1.0 / n)  # ideal distance: n nodes share a unit of area
    for it in range(int(iterations)):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = (k * k / dist ** 2)[..., None] * delta  # repulsion k^2 / d between every pair
        force -= (w * dist / k)[..., None] * delta  # attraction w d^2 / k along positive edges
        disp = force.sum(axis=1) - gravity * pos  # gravity keeps loose nodes near the middle
        length = np.maximum(np.linalg.norm(disp, axis=1, keepdims=True), 1e-9)
        pos += disp / length * np.minimum(length, 0.2 * (1 - it / iterations) + 1e-3)
    pos -= pos.mean(axis=0)
    pos /= max(float(np.abs(pos).max()), 1e-9)
    return {key: pos[i] for key, i in index.items()}


def plot_network(pairs: pd.DataFrame, conditions: pd.DataFrame, *, clusters: dict[str, int] | None = None,
                 alpha: float = 0.05, max_nodes: int = 60, max_edges: int = 150,
                 title: str | None = None) -> Figure:
    """The association network (module docstring).

    Args:
        pairs: :attr:`CooccurrenceResult.pairs`.
        conditions: :attr:`CooccurrenceResult.conditions` (``id``, ``category``, ``prevalence``).
        clusters: ``{id: cluster}`` for the starting layout.
        alpha: q cut of an edge.
        max_nodes, max_edges: drawing limits.
        title: figure title.
    """
    from matplotlib.lines import Line2D

    nodes, edges = network_edges(pairs, alpha, max_nodes, max_edges)
    fig, ax = _figure(10, 9)
    ax.set_axis_off()
    if not nodes:
        ax.text(0.5, 0.5, f"no significant pair (q < {alpha:g})", ha="center", va="center", transform=ax.transAxes)
        return fig
    pos = network_layout(nodes, edges, clusters)
    info = conditions.set_index("id")
    for a, b, lo in zip(edges["a"], edges["b"], edges["log_or"].to_numpy()):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        width = 0.5 + 2.5 * min(abs(float(lo)), _LOG_OR_CAP) / _LOG_OR_CAP
        ax.plot([x0, x1], [y0, y1], color=_POSITIVE if lo > 0 else _NEGATIVE,
                linestyle="-" if lo > 0 else "--", linewidth=width, alpha=0.6 if lo > 0 else 0.35,
                zorder=1.5 if lo > 0 else 1)
    prev = np.array([float(info.loc[n, "prevalence"]) for n in nodes])
    sizes = 40 + 1200 * np.sqrt(prev / max(prev.max(), 1e-12))
    cats = [str(info.loc[n, "category"]) for n in nodes]
    xy = np.array([pos[n] for n in nodes])
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=[CATEGORY_COLOURS.get(c, CATEGORY_COLOURS["other"]) for c in cats],
               edgecolors="white", linewidths=0.8, zorder=2)
    from ecgfm.comorbidity.conditions import split_group

    for n, (x, y) in zip(nodes, xy):
        group, base = split_group(n)
        ax.annotate(_mpl(base + ("*" if group else "")), (x, y), xytext=(0, 0), textcoords="offset points",
                    ha="center", va="center", fontsize=7, zorder=3)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, color=CATEGORY_COLOURS.get(c, "#c7c7c7"), label=c)
               for c in sorted(set(cats))]
    handles += [Line2D([], [], color=_POSITIVE, label="positive (OR > 1)"),
                Line2D([], [], color=_NEGATIVE, linestyle="--", label="negative (OR < 1)")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    n_sig = int(((pairs["q"] < alpha) & (pairs["relation"] != "grouping")).sum())
    shown = f"{len(edges)} of {n_sig}" if len(edges) < n_sig else f"{len(edges)}"
    ax.set_title(_mpl(title or f"{len(nodes)} conditions, {shown} significant pairs (q < {alpha:g}); "
                      "node area: prevalence; * grouping label"), fontsize=10)
    pad = 0.12
    ax.set_xlim(-1 - pad, 1 + pad)
    ax.set_ylim(-1 - pad, 1 + pad)
    ax.set_aspect("equal")
    return fig


def plot_manhattan(scan: pd.DataFrame, *, alpha: float = 0.05, label_top: int = 8, title: str | None = None) -> Figure:
    """Manhattan plot of one score's scan (rows of :func:`~ecgfm.comorbidity.scan.phenome_scan`)."""
    from matplotlib.lines import Line2D

    from ecgfm.labels import CATEGORIES

    fig, ax = _figure(11, 4.5)
    ok = scan[scan["status"] == "ok"].copy()
    if ok.empty:
        ax.text(0.5, 0.5, "no condition could be fitted", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    cat_order = {c: i for i, c in enumerate(list(CATEGORIES) + ["other"])}
    ok["_cat"] = ok["category"].map(lambda c: cat_order.get(c, len(cat_order)))
    ok = ok.sort_values(["_cat", "condition"], kind="stable").reset_index(drop=True)
    y = -ok["log10_p"].to_numpy(dtype=float)
    x = np.arange(len(ok))
    colours = [CATEGORY_COLOURS.get(c, CATEGORY_COLOURS["other"]) for c in ok["category"]]
    up = ok["beta"].to_numpy() > 0
    for mask, marker in ((up, "^"), (~up, "v")):
        ax.scatter(x[mask], y[mask], c=[colours[i] for i in np.flatnonzero(mask)], marker=marker, s=30,
                   edgecolors="none")
    m = len(ok)
    sig = ok["q"].to_numpy() < alpha
    if sig.any():
        cut = float(ok.loc[sig, "p"].max())
        ax.axhline(-np.log10(cut), color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(-np.log10(alpha / m), color="grey", linestyle=":", linewidth=0.8)
    top = np.argsort(-y)[: int(label_top)]
    from ecgfm.comorbidity.conditions import split_group

    for i in top:
        if not sig[i]:
            continue
        group, base = split_group(str(ok.loc[i, "condition"]))
        ax.annotate(_mpl(base + ("*" if group else "")), (x[i], y[i]), xytext=(3, 3),
                    textcoords="offset points", fontsize=7)
    centres, names = [], []
    for cat, group in ok.groupby("category", sort=False):
        centres.append(float(group.index.to_numpy().mean()))
        names.append(str(cat))
    ax.set_xticks(centres, [_mpl(n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("-log10 p (odds ratio per SD)")
    ax.set_xlim(-1, m)
    handles = [Line2D([], [], marker="^", linestyle="", color="black", label="OR > 1"),
               Line2D([], [], marker="v", linestyle="", color="black", label="OR < 1"),
               Line2D([], [], color="grey", linestyle="--", label=f"BH q < {alpha:g}"),
               Line2D([], [], color="grey", linestyle=":", label="Bonferroni")]
    ax.legend(handles=handles, fontsize=8, loc="upper right", frameon=False)
    ax.set_title(_mpl(title or f"Phenome scan: {scan['score'].iloc[0]} ({m} conditions)"), fontsize=10)
    return fig
