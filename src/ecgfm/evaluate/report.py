"""The HTML report of an evaluation: one self-contained file, figures embedded as PNG.

:func:`render_report` turns an :class:`~ecgfm.evaluate.run.EvaluationResult` into one HTML page
with no external resource (no CDN, no font, no network): figures are matplotlib PNGs inlined as
base64 ``data:`` URIs, the style sheet and a ten-line column sorter are inline, and every string
that comes from the data (condition, cohort and subgroup names, file names, warnings) is
HTML-escaped, so a condition called ``<script>`` is shown, never run.

Sections (each an ``<h2 id=...>``): ``summary``, ``roc-pr`` (ROC and precision-recall curves of
the conditions with most positives, or those asked for, plus the macro average),
``auroc-distribution`` (histogram of per-condition AUROC with the 0.7 / 0.8 / 0.9 lines),
``calibration`` (reliability diagrams before/after temperature scaling), ``fairness``
(TPR and FPR per subgroup with intervals), ``cohorts`` (conditions x cohorts),
``challenge``, ``conditions`` (every per-condition number, click a header to sort),
``notes`` and ``configuration``.

>>> from ecgfm.evaluate.report import write_report          # doctest: +SKIP
>>> write_report(result, "out/report.html")                 # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ecgfm.evaluate.run import EvaluationResult

__all__ = ["render_report", "write_report", "selected_conditions"]

_DPI = 100
_MACRO_COLOUR = "black"


def write_report(result: EvaluationResult, path: str | os.PathLike[str]) -> Path:
    """Render the report and write it to ``path`` (UTF-8). Returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(result), encoding="utf-8")
    return out


def selected_conditions(result: EvaluationResult) -> list[str]:
    """Conditions drawn in the curve figures: ``config.report_conditions`` when given, else the
    ``top_k`` conditions with most positives among the primary rows (that have an AUROC)."""
    names = result.names
    if result.config.report_conditions:
        unknown = [c for c in result.config.report_conditions if c not in names]
        if unknown:
            from ecgfm.errors import ValidationError

            raise ValidationError(f"report_conditions: {unknown} are not condition columns")
        return list(result.config.report_conditions)
    t = result.metrics.drop(index="macro", errors="ignore")
    ok = t[np.isfinite(t["auroc"].to_numpy(dtype=float))]
    order = ok.sort_values(["n_pos", "auroc"], ascending=[False, False], kind="stable")
    return [str(c) for c in order.index[: max(0, int(result.config.top_k))]]


# ---------------------------------------------------------------------------------------------
# figures


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mpl(text: str) -> str:
    """Data text for matplotlib: ``$`` would start mathtext."""
    return str(text).replace("$", r"\$")


def _img(fig: Figure, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}"></figure>'


_GRID = np.linspace(0.0, 1.0, 201)


def _scorable(y: np.ndarray) -> list[int]:
    """Columns with at least one positive and one negative label (NaN = missing)."""
    out = []
    for c in range(y.shape[1]):
        yc = y[~np.isnan(y[:, c]), c]
        if (yc == 1).any() and (yc == 0).any():
            out.append(c)
    return out


def _mean_curve(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    if not curves:
        return _GRID, np.full_like(_GRID, np.nan), 0
    return _GRID, np.mean(curves, axis=0), len(curves)


def _macro_roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    from ecgfm.evaluate.metrics import roc_curve

    curves = []
    for c in _scorable(y):
        fpr, tpr, _ = roc_curve(y[:, c], s[:, c])
        curves.append(np.interp(_GRID, fpr, tpr))
    grid, tpr, n = _mean_curve(curves)
    if n:
        tpr[0] = 0.0
    return grid, tpr, n


def _macro_pr(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    from ecgfm.evaluate.metrics import pr_curve

    curves = []
    for c in _scorable(y):
        precision, recall, _ = pr_curve(y[:, c], s[:, c])
        # interpolated precision: the best precision at this recall or above
        best = np.maximum.accumulate(precision)  # recall decreases along the arrays
        curves.append(np.interp(_GRID, recall[::-1], best[::-1]))
    return _mean_curve(curves)


def figure_curves(result: EvaluationResult, conditions: Sequence[str]) -> Figure:
    """ROC (left) and precision-recall (right) curves of ``conditions`` and the macro average."""
    from ecgfm.evaluate.metrics import pr_curve, roc_curve

    y, s = result.data["y"], result.data["scores"]
    t = result.metrics
    fig, axes = _figure(11, 5, ncols=2)
    roc_ax, pr_ax = axes[0]
    for k, name in enumerate(conditions):
        c = result.names.index(name)
        colour = f"C{k % 10}"
        fpr, tpr, _ = roc_curve(y[:, c], s[:, c])
        auc = float(t.at[name, "auroc"])
        roc_ax.plot(fpr, tpr, color=colour, lw=1.2, label=f"{_mpl(name)} ({auc:.3f}, n+={int(t.at[name, 'n_pos'])})")
        precision, recall, _ = pr_curve(y[:, c], s[:, c])
        ap = float(t.at[name, "ap"])
        pr_ax.step(recall, precision, where="post", color=colour, lw=1.2, label=f"{_mpl(name)} ({ap:.3f})")
        prev = float(t.at[name, "prevalence"])
        pr_ax.axhline(prev, color=colour, lw=0.6, ls=":", alpha=0.7)
    grid, tpr, n_roc = _macro_roc(y, s)
    if n_roc:
        macro_auc = float(t.at["macro", "auroc"])
        roc_ax.plot(grid, tpr, color=_MACRO_COLOUR, lw=2.2,
                    label=f"macro, {n_roc} conditions (mean AUROC {macro_auc:.3f})")
    grid, prec, n_pr = _macro_pr(y, s)
    if n_pr:
        pr_ax.plot(grid, prec, color=_MACRO_COLOUR, lw=2.2,
                   label=f"macro, {n_pr} conditions (mean AP {float(t.at['macro', 'ap']):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (1 - specificity)",
               ylabel="true-positive rate (sensitivity)", title="ROC (legend: AUROC, positives)")
    pr_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)",
              title="Precision-recall (legend: AP; dotted: prevalence)")
    roc_ax.legend(loc="lower right", fontsize="small")
    pr_ax.legend(loc="upper right", fontsize="small")
    return fig


def figure_auroc_hist(result: EvaluationResult) -> Figure:
    """Histogram of per-condition AUROC with the 0.7, 0.8 and 0.9 lines and counts above each."""
    from ecgfm.evaluate.metrics import AUROC_CUTS

    a = result.metrics.drop(index="macro", errors="ignore")["auroc"].to_numpy(dtype=float)
    a = a[np.isfinite(a)]
    fig, axes = _figure(7, 3.6)
    ax = axes[0, 0]
    lo = min(0.3, float(a.min()) if a.size else 0.3)
    bins = np.arange(math.floor(lo * 40) / 40, 1.0 + 1e-9, 0.025)
    ax.hist(a, bins=bins, color="C0", edgecolor="white")
    top = ax.get_ylim()[1]
    for cut, style in zip(AUROC_CUTS, (":", "--", "-")):
        ax.axvline(cut, color="C3", ls=style, lw=1.2)
        ax.text(cut + 0.004, top * 0.97, f"> {cut}: {int((a > cut).sum())}", color="C3",
                va="top", fontsize="small")
    ax.set(xlabel="AUROC", ylabel="conditions",
           title=f"AUROC of {a.size} conditions ({_mpl(result.summary.get('primary', ''))})")
    return fig


def figure_calibration(result: EvaluationResult, conditions: Sequence[str]) -> Figure:
    """Reliability diagrams: every labelled (record, condition) pair pooled, before and after
    temperature scaling (left); the first three selected conditions (right)."""
    from ecgfm.evaluate.calibration import plot_reliability

    y, raw, used = result.data["y"], result.data["scores_raw"], result.data["scores"]
    temp = bool(result.resolved.get("temperature"))
    n_bins = int(result.config.n_bins)
    fig, axes = _figure(11, 5, ncols=2)
    left, right = axes[0]
    valid = ~np.isnan(y)
    plot_reliability(left, y[valid], raw[valid], n_bins=n_bins, label="model", color="C0")
    if temp:
        plot_reliability(left, y[valid], used[valid], n_bins=n_bins, label="temperature-scaled", color="C1")
    left.set_title("all conditions pooled")
    for k, name in enumerate(conditions[:3]):
        c = result.names.index(name)
        keep = ~np.isnan(y[:, c])
        plot_reliability(right, y[keep, c], used[keep, c], n_bins=n_bins, label=_mpl(name),
                         color=f"C{k}", show_counts=False)
    right.set_title("per condition" + (" (temperature-scaled)" if temp else ""))
    return fig


def figure_fairness(result: EvaluationResult, attribute: str, conditions: Sequence[str]) -> Figure:
    """TPR and FPR at the carried thresholds per subgroup of ``attribute``, with intervals, for
    ``conditions`` and the macro average of ``summary["fairness"]``."""
    fair = result.fairness
    assert fair is not None
    t = fair[fair["attribute"] == attribute]
    levels = list(dict.fromkeys(t["subgroup"]))
    macro = result.summary.get("fairness", {}).get(attribute, {}).get("subgroups", {})
    cols = [*conditions, "macro"]
    fig, axes = _figure(11, 4, ncols=2)
    width = 0.8 / max(1, len(levels))
    for ax, metric, label in ((axes[0, 0], "sensitivity", "tpr"), (axes[0, 1], "fpr", "fpr")):
        for k, lev in enumerate(levels):
            x, v, lo, hi = [], [], [], []
            for j, name in enumerate(cols):
                if name == "macro":
                    m = macro.get(lev, {})
                    val = m.get(f"macro_{label}")
                    ci = m.get(f"macro_{label}_ci") or [None, None]
                    val, ci = (math.nan if val is None else val), [math.nan if c is None else c for c in ci]
                else:
                    row = t[(t["subgroup"] == lev) & (t["condition"] == name)]
                    if row.empty:
                        continue
                    val = float(row[metric].iloc[0])
                    ci = [float(row[f"{metric}_low"].iloc[0]), float(row[f"{metric}_high"].iloc[0])]
                if not np.isfinite(val):
                    continue
                x.append(j - 0.4 + width * (k + 0.5))
                v.append(val)
                lo.append(val - ci[0] if np.isfinite(ci[0]) else 0.0)
                hi.append(ci[1] - val if np.isfinite(ci[1]) else 0.0)
            n_lev = int(t[(t["subgroup"] == lev)]["n"].max()) if not t.empty else 0
            ax.errorbar(x, v, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o", ms=4, capsize=2,
                        color=f"C{k % 10}", label=f"{_mpl(lev)} (n={n_lev})")
        ax.set_xticks(range(len(cols)), [_mpl(c) for c in cols], rotation=30, ha="right")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("TPR (sensitivity)" if metric == "sensitivity" else "FPR (1 - specificity)")
        ax.grid(axis="y", color="0.9")
    axes[0, 0].legend(fontsize="small", loc="lower left")
    fig.suptitle(f"{_mpl(attribute)}: rates at the operating thresholds (bars: "
                 f"{100 * (1 - result.config.alpha):g}% patient-bootstrap intervals)")
    return fig


# ---------------------------------------------------------------------------------------------
# HTML pieces


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


def _count(v: Any) -> str:
    return _num(v, 0)


def _ci(v: Any, lo: Any, hi: Any, digits: int = 3) -> str:
    s = _num(v, digits)
    if s == "n/a" or lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return s
    return f"{s} <small>[{_num(lo, digits)}, {_num(hi, digits)}]</small>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], sortable: bool = False) -> str:
    """Rows are already-escaped cell HTML; the header is escaped here."""
    attrs = ' class="sortable"' if sortable else ""
    tip = ' title="click to sort"' if sortable else ""
    head = "".join(f"<th{tip}>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _summary_section(result: EvaluationResult) -> str:
    s = result.summary
    pct = f"{100 * (1 - result.config.alpha):g}%"

    def macro(m: str) -> str:
        ci = s.get(f"macro_{m}_ci") or [None, None]
        return _ci(s.get(f"macro_{m}"), *(math.nan if c is None else c for c in ci))

    rows = [
        ["records (patients)", f"{s['n_records']} ({s['n_patients']})"],
        ["conditions (with an AUROC)", f"{_count(s['n_conditions'])} ({_count(s['n_evaluable'])})"],
        ["macro AUROC", macro("auroc")], ["macro AP (PR-AUC)", macro("ap")],
        ["micro AUROC / AP", f"{_num(s['micro_auroc'])} / {_num(s['micro_ap'])}"],
        ["macro sensitivity at the operating point", macro("sensitivity")],
        ["macro specificity at the operating point", macro("specificity")],
        ["macro PPV / NPV / F1", f"{_num(s['macro_ppv'])} / {_num(s['macro_npv'])} / {_num(s['macro_f1'])}"],
        ["macro Fmax", _num(s["macro_fmax"])],
        ["conditions with AUROC > 0.7 / 0.8 / 0.9",
         f"{_count(s['n_auroc_gt_0.7'])} / {_count(s['n_auroc_gt_0.8'])} / {_count(s['n_auroc_gt_0.9'])}"],
        ["macro ECE" + (" (before / after temperature scaling)" if s.get("temperature_scaling") else ""),
         _num(s.get("macro_ece"), 4) + (f" / {_num(s.get('macro_ece_calibrated'), 4)}" if s.get("temperature_scaling") else "")],
        ["macro Brier score", _num(s.get("macro_brier"), 4)],
        ["operating point", _e(f"{s['operating_point']}, fitted on {s['thresholds_fitted_on']}")],
    ]
    flag = ""
    if s.get("thresholds_optimistic"):
        flag = ('<p class="warn">No validation rows: thresholds were tuned on the scored rows, so '
                "sensitivity, specificity, PPV, NPV and F1 are optimistic.</p>")
    return (
        f'<h2 id="summary">Summary: {_e(s.get("primary", ""))}</h2>'
        f"<p>Scored rows: {_e(result.config.split_column or 'split')} = "
        f"{_e(result.config.eval_split)} of the primary cohort. Intervals: {pct} patient-bootstrap "
        f"percentile intervals over {s.get('n_resamples')} resamples.</p>{flag}"
        + _table(["", "value"], [[_e(a), b] for a, b in rows])
    )


def _condition_section(result: EvaluationResult) -> str:
    t = result.metrics
    th = result.thresholds
    cal = result.calibration
    temp = "ece_calibrated" in cal.columns
    header = ["condition", "n", "positives", "AUROC", "AP", "sensitivity", "specificity", "PPV",
              "NPV", "F1", "threshold", "ECE", *(("ECE (scaled)", "T") if temp else ()), "Brier"]
    rows = []
    for name in [*result.names, "macro"]:
        r = t.loc[name]
        row = [
            f"<b>{_e(name)}</b>" if name == "macro" else _e(name), _count(r["n"]), _count(r["n_pos"]),
            _ci(r["auroc"], r.get("auroc_low"), r.get("auroc_high")),
            _ci(r["ap"], r.get("ap_low"), r.get("ap_high")),
            _ci(r["sensitivity"], r.get("sensitivity_low"), r.get("sensitivity_high")),
            _ci(r["specificity"], r.get("specificity_low"), r.get("specificity_high")),
            _num(r["ppv"]), _num(r["npv"]), _num(r["f1"]),
            _num(th.at[name, "threshold"], 4) if name in th.index else "",
            _num(cal.at[name, "ece"], 4),
        ]
        if temp:
            row += [_num(cal.at[name, "ece_calibrated"], 4),
                    _num(cal.at[name, "temperature"], 3) if name in th.index else ""]
        row.append(_num(r["brier"], 4))
        rows.append(row)
    return (
        '<h2 id="conditions">Per-condition metrics</h2>'
        "<p>Click a column header to sort. Threshold metrics use the operating threshold fitted "
        "on the validation rows; n/a where a condition lacks positives or negatives.</p>"
        + _table(header, rows, sortable=True)
    )


def _cohort_section(result: EvaluationResult) -> str:
    if not result.cohorts:
        return ""
    from ecgfm.evaluate.cohorts import cohort_table

    auc = cohort_table(result.cohorts, "auroc", ci=True)
    npos = cohort_table(result.cohorts, "n_pos", ci=False)
    cohorts = list(result.cohorts)
    header = ["condition", *[f"{c} AUROC (positives)" for c in cohorts]]
    rows = []
    for cond in auc.index:
        cells = [f"<b>{_e(cond)}</b>" if cond == "macro" else _e(cond)]
        for c in cohorts:
            text = str(auc.at[cond, c])
            if " [" in text:
                v, rest = text.split(" [", 1)
                text = f"{_e(v)} <small>[{_e(rest)}</small>"
            else:
                text = _e(text)
            k = npos.at[cond, c]
            if cond != "macro" and np.isfinite(k):
                text += f" <small>({int(k)})</small>"
            cells.append(text)
        rows.append(cells)
    n = result.summary.get("cohorts", {})
    sizes = ", ".join(f"{_e(c)}: {n.get(c, {}).get('n_records', '?')} records" for c in cohorts)
    return (
        '<h2 id="cohorts">Cohorts</h2>'
        f"<p>Test rows of each cohort, thresholds carried from the validation rows ({sizes}). "
        "Cohorts are shown as given; an external cohort drawn from the training source is not "
        "external.</p>" + _table(header, rows, sortable=True)
    )


def _challenge_section(result: EvaluationResult) -> str:
    ch = result.challenge
    if not ch:
        return ""
    keys = ["challenge_score", "accuracy", "f_measure", "f_beta", "g_beta"]
    rows = [[_e(c), _count(v.get("n_records")), *[_num(v.get(k)) for k in keys]] for c, v in ch["by_cohort"].items()]
    return (
        '<h2 id="challenge">PhysioNet/CinC challenge metric</h2>'
        f"<p>Weights {_e(ch['weights'])}; {len(ch['classes_covered'])} of {ch['n_classes']} scored "
        f"classes covered by {len(ch['conditions_used'])} conditions "
        f"({_e(', '.join(ch['conditions_used']))}); outputs are the thresholded predictions. "
        f"{_e(ch['note'])}.</p>"
        + _table(["cohort", "records", *keys], rows)
    )


def _fairness_section(result: EvaluationResult, conditions: Sequence[str]) -> str:
    if result.fairness is None:
        return ""
    parts = ['<h2 id="fairness">Fairness</h2>',
             "<p>Rates at the carried thresholds per subgroup of the primary rows. The macro "
             f"average is over the conditions with at least {int(result.config.min_subgroup_positives)}"
             " positives and one negative in every subgroup of at least "
             f"{int(result.config.min_subgroup_size)} records; gaps are largest minus smallest "
             "subgroup (biased upwards in small subgroups) and each subgroup minus the reference "
             "(the largest), with paired patient-bootstrap intervals.</p>"]
    summ = result.summary.get("fairness", {})
    for attribute in dict.fromkeys(result.fairness["attribute"]):
        t = result.fairness[result.fairness["attribute"] == attribute]
        ok = t.groupby("condition")["n_pos"].min()
        shown = [c for c in conditions if c in ok.index and ok[c] > 0][:6]
        parts.append(f"<h3>{_e(attribute)}</h3>")
        parts.append(_img(figure_fairness(result, attribute, shown), f"TPR and FPR by {attribute}"))
        info = summ.get(attribute, {})
        rows = []
        for lev, m in info.get("subgroups", {}).items():
            rows.append([_e(lev), _count(m["n_records"]), _count(m["n_conditions"]),
                         _ci(m["macro_auroc"], *(m.get("macro_auroc_ci") or [math.nan, math.nan])),
                         _ci(m["macro_tpr"], *(m.get("macro_tpr_ci") or [math.nan, math.nan])),
                         _ci(m["macro_fpr"], *(m.get("macro_fpr_ci") or [math.nan, math.nan]))])
        if rows:
            parts.append(_table(["subgroup", "records", "conditions", "macro AUROC", "macro TPR", "macro FPR"], rows))
        gaps = [g for g in info.get("gaps", [])]
        if gaps:
            grows = [[_e("TPR" if g["metric"] == "sensitivity" else g["metric"].upper()), _e(g["comparison"]),
                      _ci(g["gap"], *(math.nan if g[k] is None else g[k] for k in ("low", "high"))),
                      _num(g["p_value"]) if g["p_value"] is not None else ""] for g in gaps]
            parts.append(_table(["macro", "comparison", "gap", "p-value"], grows))
    return "\n".join(parts)


def _config_section(result: EvaluationResult) -> str:
    cfg = json.dumps(result.config_dict(), indent=1, allow_nan=False)
    return f'<h2 id="configuration">Configuration</h2><pre>{_e(cfg)}</pre>'


def _notes_section(result: EvaluationResult) -> str:
    if not result.warnings:
        return '<h2 id="notes">Notes</h2><p>None.</p>'
    items = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
    return f'<h2 id="notes">Notes</h2><ul class="warn">{items}</ul>'


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4;position:sticky;top:0}
table.sortable th{cursor:pointer}small{color:#666}figure{margin:.5em 0}img{max-width:100%}
.warn{color:#8a4b00}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
nav a{margin-right:1em}
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


def render_report(result: EvaluationResult) -> str:
    """The report as one HTML string (sections in the module docstring)."""
    conditions = selected_conditions(result)
    parts = []
    if conditions or len(result.names):
        parts.append('<h2 id="roc-pr">ROC and precision-recall curves</h2>')
        parts.append(f"<p>The {len(conditions)} conditions with most positives"
                     f"{' (as selected)' if result.config.report_conditions else ''}, and the macro "
                     "average (mean curve over every condition with positives and negatives).</p>")
        parts.append(_img(figure_curves(result, conditions), "ROC and precision-recall curves"))
    parts.append('<h2 id="auroc-distribution">AUROC distribution</h2>')
    parts.append(_img(figure_auroc_hist(result), "histogram of per-condition AUROC"))
    parts.append('<h2 id="calibration">Calibration</h2>')
    temp_note = ("Temperatures fitted per condition on the validation rows (T = 1 where the "
                 "validation rows lack a class)." if result.resolved.get("temperature") else
                 "No temperature scaling.")
    parts.append(f"<p>Reliability: mean predicted probability against observed frequency in "
                 f"{result.config.n_bins} equal-width bins; ECE is the count-weighted gap. "
                 f"{_e(temp_note)}</p>")
    parts.append(_img(figure_calibration(result, conditions), "reliability diagrams"))
    parts.append(_fairness_section(result, conditions))
    parts.append(_cohort_section(result))
    parts.append(_challenge_section(result))
    parts.append(_condition_section(result))
    parts.append(_notes_section(result))
    parts.append(_config_section(result))
    sections = [("summary", "Summary"), ("roc-pr", "Curves"), ("calibration", "Calibration"),
                ("fairness", "Fairness"), ("cohorts", "Cohorts"), ("challenge", "Challenge"),
                ("conditions", "Conditions"), ("configuration", "Configuration")]
    body = "\n".join(p for p in parts if p)
    summary = _summary_section(result)
    nav = " ".join(f'<a href="#{k}">{v}</a>' for k, v in sections if f'id="{k}"' in summary + body)
    sources = "; ".join(result.resolved.get("predictions", []))
    import ecgfm

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>ecgfm evaluation: {_e(result.summary.get('primary', ''))}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Evaluation report</h1><p>Predictions: {_e(sources)}<br>Labels: "
        f"{_e('; '.join(result.resolved.get('labels', [])))}<br>ecgfm {_e(ecgfm.__version__)}</p>"
        f"<nav>{nav}</nav>\n{summary}\n{body}\n<script>{_SCRIPT}</script></body></html>\n"
    )
