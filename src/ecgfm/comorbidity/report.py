"""The HTML report of a comorbidity analysis: one self-contained file, figures inlined as PNG.

No external resource (no CDN, font or network): figures are matplotlib PNGs in base64 ``data:``
URIs, the style sheet and a small column sorter are inline, and every string from the data
(condition names, file names, notes) is HTML-escaped.

Sections (each an ``<h2 id=...>``): ``summary``, ``positive`` and ``negative`` (the most
significant positive and negative associations, pairs related by construction left out),
``clusters``, ``network``, ``scan-<k>`` (one per score: the Manhattan plot and the fitted
conditions), ``conditions`` (every condition's prevalence, analysed or why not), ``notes``,
``configuration``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ecgfm.comorbidity.run import ComorbidityResult

__all__ = ["render_report"]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not math.isfinite(f):
        return "n/a"
    return f"{f:.{digits}f}"


def _sig(v: Any, digits: int = 3) -> str:
    """Significant-figure format for ratios and p-values (0.000012 -> 1.2e-05)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not math.isfinite(f):
        return "n/a"
    if f == 0:
        return "0"
    return f"{f:.{digits}g}"


def _p(p: Any, log10_p: Any) -> str:
    """A p-value, written from log10 p where the double underflowed."""
    try:
        pf, lf = float(p), float(log10_p)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(pf):
        return "n/a"
    if pf > 0 or not math.isfinite(lf):
        return _sig(pf, 2)
    exp = math.floor(lf)
    return f"{10 ** (lf - exp):.1f}e{exp}"


def _ci(v: Any, lo: Any, hi: Any, fmt: Any = _sig) -> str:
    return f"{fmt(v)} <small>[{fmt(lo)}, {fmt(hi)}]</small>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], sortable: bool = True) -> str:
    attrs = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _img(fig: Figure | bytes, alt: str) -> str:
    data = base64.b64encode(fig if isinstance(fig, bytes) else _png(fig)).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _cond(cid: Any, name: Any) -> str:
    return f"<b>{_e(cid)}</b> <small>{_e(name)}</small>"


def _pair_rows(df: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in df.itertuples(index=False):
        rows.append([
            _cond(r.a, r.name_a), _cond(r.b, r.name_b), str(int(round(r.n11))), _num(r.expected, 1),
            _sig(r.obs_exp), _ci(r.odds_ratio, r.or_low, r.or_high) + (" <small>(H)</small>" if r.haldane else ""),
            _num(r.phi), _p(r.p, r.log10_p), _sig(r.q, 2), _e(r.p_method),
            _e(r.relation or ""),
        ])
    return rows


_PAIR_HEADER = ["condition a", "condition b", "n11", "expected", "obs/exp", "odds ratio [CI]", "phi", "p", "q",
                "test", "relation"]


def _summary(result: ComorbidityResult) -> str:
    s = result.summary()
    pr = s["pairs"]
    items = [
        ("records", f"{s['n_records']:,}"),
        ("conditions from", _e(result.inputs.get("conditions_from", ""))),
        ("conditions analysed", f"{s['conditions']['analysed']} of {s['conditions']['n']} "
                                f"(at least {result.config.min_count} records with and without)"),
        ("pairs tested", f"{pr['tested']:,} ({pr['fisher']:,} by Fisher's exact test, the rest by chi-square)"),
        ("significant pairs", f"{pr['significant_positive']:,} positive and {pr['significant_negative']:,} "
                              f"negative associations at q &lt; {result.config.alpha:g} ({result.config.fdr.upper()})"
                              + (f", not counting {pr['by_construction']:,} pairs of a grouping label and a label "
                                 "it contains" if pr["by_construction"] else "")),
        ("clusters", f"{len(s['clusters'])} with two or more conditions"),
    ]
    if result.inputs.get("thresholds"):
        items.insert(2, ("thresholds", _e(result.inputs["thresholds"])))
    for name, scan in s["scans"].items():
        items.append((f"scan: {_e(name)}", f"{scan['fitted']} conditions fitted, {scan['significant']} significant"
                      + (f"; adjusted for {_e(scan['covariates'])}" if scan["covariates"] else "")))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in items)
    return f'<h2 id="summary">Summary</h2><table class="kv">{body}</table>'


def _pairs_section(result: ComorbidityResult, sign: int) -> str:
    key, word = ("positive", "Positive") if sign > 0 else ("negative", "Negative")
    df = result.top_pairs(sign)
    intro = (f"<p>The {len(df)} most significant {key} associations (q &lt; {result.config.alpha:g}), "
             "pairs that co-occur by construction (a grouping label and a label it contains) left out. "
             "Odds ratio with Woolf's interval; (H): a cell was empty and 0.5 was added to each "
             "(Haldane-Anscombe). obs/exp: n11 over the count expected under independence.</p>")
    if df.empty:
        return f'<h2 id="{key}">{word} associations</h2><p>None at q &lt; {result.config.alpha:g}.</p>'
    return f'<h2 id="{key}">{word} associations</h2>{intro}' + _table(_PAIR_HEADER, _pair_rows(df))


def _clusters_section(result: ComorbidityResult) -> str:
    if result.clusters is None:
        return ""
    cl = result.clusters
    summary = cl.summary()
    cut = ", ".join(f"{k} {v:g}" for k, v in cl.cut.items())
    intro = (f"<p>Hierarchical clustering ({_e(cl.method)} linkage) on the {_e(cl.metric)} distance, "
             f"cut at {_e(cut)}. Clusters with two or more conditions; members most prevalent first. "
             "Every condition's cluster is in clusters.csv.</p>")
    names = cl.table.set_index("id")["name"]
    rows = [[str(r.cluster), str(r.size), ", ".join(f"<b>{_e(m)}</b> <small>{_e(names.get(m, ''))}</small>"
                                                    for m in r.members.split(", ")),
             _e(r.categories), _num(r.mean_distance)] for r in summary.itertuples(index=False)]
    table = _table(["cluster", "size", "members", "categories", "mean distance"], rows) if rows else "<p>No cluster has two or more conditions.</p>"
    return f'<h2 id="clusters">Clusters</h2>{intro}{table}'


def _network_section(result: ComorbidityResult, png: bytes | None) -> str:
    cfg = result.config
    fig = png if png is not None else result.network_figure()
    return ('<h2 id="network">Network</h2><p>Significant pairs (q &lt; '
            f"{cfg.alpha:g}); red solid: positive, blue dashed: negative association, width growing with "
            f"|log OR|; node area: prevalence, colour: category; at most {cfg.max_network_nodes} nodes and "
            f"{cfg.max_network_edges} edges.</p>" + _img(fig, "association network"))


def _scan_sections(result: ComorbidityResult) -> list[tuple[str, str, str]]:
    from ecgfm.comorbidity.plots import plot_manhattan

    out = []
    if result.scan.empty:
        return out
    for k, (name, group) in enumerate(result.scan.groupby("score", sort=False)):
        anchor = f"scan-{k}"
        covs = str(group["covariates"].iloc[0])
        ok = group[group["status"] == "ok"]
        fig = plot_manhattan(group, alpha=result.config.alpha)
        intro = (f"<p>Score <b>{_e(name)}</b> (mean {_sig(group['score_mean'].iloc[0])}, SD "
                 f"{_sig(group['score_sd'].iloc[0])}) against every condition: odds ratio per SD from a "
                 "logistic regression" + (f" adjusted for {_e(covs)}" if covs else "") +
                 ", AUROC of the raw score (DeLong interval) and the standardised mean difference "
                 f"(Cohen's d). {len(ok)} conditions fitted; BH over them.</p>")
        rows = [[_cond(r.condition, r.name), _e(r.category), str(int(r.n_cases)),
                 _ci(r.or_per_sd, r.or_low, r.or_high), _p(r.p, r.log10_p), _sig(r.q, 2),
                 _ci(r.auroc, r.auroc_low, r.auroc_high, _num), _ci(r.smd, r.smd_low, r.smd_high, _num)]
                for r in ok.head(max(result.config.top, int(ok["significant"].sum()))).itertuples(index=False)]
        table = _table(["condition", "category", "cases", "OR per SD [CI]", "p", "q", "AUROC [CI]", "SMD [CI]"], rows)
        skipped = group[group["status"] != "ok"]
        skip = ""
        if not skipped.empty:
            skip = ("<p><small>Not fitted: " + "; ".join(f"{_e(c)} ({_e(r)})" for c, r in
                    zip(skipped["condition"].head(30), skipped["reason"].head(30)))
                    + (" ..." if len(skipped) > 30 else "") + "</small></p>")
        out.append((anchor, f"Scan: {name}",
                    f'<h2 id="{anchor}">Phenome scan: {_e(name)}</h2>{intro}'
                    + _img(fig, f"Manhattan plot of {name}") + table + skip))
    return out


def _conditions_section(result: ComorbidityResult) -> str:
    c = result.cooccurrence.conditions
    rows = [[_cond(r.id, r.name), _e(r.category), str(int(round(r.n))), _num(100 * r.prevalence, 2),
             "yes" if r.kept else f"no: {_e(r.reason)}"] for r in c.itertuples(index=False)]
    return ('<h2 id="conditions">Conditions</h2>'
            + _table(["condition", "category", "records", "prevalence %", "analysed"], rows))


def render_report(result: ComorbidityResult, network_png: bytes | None = None) -> str:
    """The report as one HTML string (sections in the module docstring).

    Args:
        result: the analysis.
        network_png: the network figure already rendered (``save`` draws it once for both the
            PNG file and the report); None: drawn here.
    """
    import ecgfm
    from ecgfm.comorbidity.run import _jsonable

    parts = [_summary(result), _pairs_section(result, 1), _pairs_section(result, -1), _clusters_section(result),
             _network_section(result, network_png)]
    scans = _scan_sections(result)
    parts.extend(body for _, _, body in scans)
    parts.append(_conditions_section(result))
    if result.notes:
        parts.append('<h2 id="notes">Notes</h2><ul>' + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>")
    config = json.dumps(_jsonable({"inputs": result.inputs, "config": result.summary()["config"]}), indent=2)
    parts.append(f'<h2 id="configuration">Configuration</h2><pre>{_e(config)}</pre>')
    sections = [("summary", "Summary"), ("positive", "Positive"), ("negative", "Negative"),
                ("clusters", "Clusters"), ("network", "Network")] + [(a, t) for a, t, _ in scans] + [
                ("conditions", "Conditions"), ("notes", "Notes"), ("configuration", "Configuration")]
    body = "\n".join(p for p in parts if p)
    nav = " ".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in sections if f'id="{k}"' in body)
    sources = "; ".join(f"{k}: {v}" for k, v in (("manifest", result.inputs.get("manifest")),
                                                   ("predictions", result.inputs.get("predictions"))) if v)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>ecgfm comorbidity report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Comorbidity report</h1><p>{_e(sources)}<br>ecgfm {_e(ecgfm.__version__)}</p>"
        f"<nav>{nav}</nav>\n{body}\n<script>{_SCRIPT}</script></body></html>\n"
    )


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4;position:sticky;top:0}
table.kv td{text-align:left;white-space:normal}
table.sortable th{cursor:pointer}small{color:#666}figure{margin:.5em 0}img{max-width:100%}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}nav a{margin-right:1em}
"""

# Sorts a table by the clicked column: numbers by value (the first number in the cell), else text.
_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
 th.addEventListener('click', function(){
  var tb = th.closest('table').tBodies[0], rows = Array.from(tb.rows);
  var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  function key(r){ var t = r.cells[col].textContent.trim(), v = parseFloat(t);
   return isNaN(v) ? (t === 'n/a' ? -Infinity : t.toLowerCase()) : v; }
  rows.sort(function(a, b){ var x = key(a), y = key(b);
   return (typeof x === typeof y ? (x > y) - (x < y) : (typeof x === 'number' ? -1 : 1)) * dir; });
  rows.forEach(function(r){ tb.appendChild(r); });
 });
});
"""
