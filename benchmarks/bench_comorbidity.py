"""Comorbidity discovery on PTB-XL, and its speed at scale.

(a) Real data: every PTB-XL row in shared data (``ptbxl_database.csv`` and
``ptbxl_reports_only.csv``, 6868 ECGs), its ``scp_codes`` mapped to catalogue ids with
``map_ptbxl_scp`` (every statement, whatever its likelihood: the benchmark convention):
pairwise co-occurrence (Fisher / chi-square, BH), the strongest positive and negative
associations, a check of associations expected a priori, the clusters, and a phenome scan of
age (adjusted for sex) against every statement. Then the bundled default model on the PTB-XL
test fold (``strat_fold == 10``, 261 records with signals here): scans of P(AFIB) and of
1 - P(NORM) (an abnormality score) against the given labels, and the pairs of the model's own
calls at its operating points next to the labels' pairs on the same records.

(b) Scale: synthetic 0/1 matrices (prevalences log-uniform between 0.1 % and 30 %, with a few
latent causes so pairs are associated), timed end to end: 1,000,000 records x 200 conditions,
100,000 x 1,000 (499,500 pairs) and 1,000,000 x 1,000 (a 1 GB boolean matrix), plus every pair by
Fisher's exact test at 100,000 x 1,000 and a scan of one score against 1,000 conditions.

    python benchmarks/bench_comorbidity.py [--skip-model] [--skip-scale]

Writes ``docs/benchmarks/comorbidity.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
PTBXL = DATA / "ptb-xl"

from _machine import load_note, machine, write_results  # noqa: E402

MARKER = "## Reading the figures"  # the hand-written analysis below this line survives reruns

# Associations a cardiologist expects before looking (sign: +1 positive, -1 negative).
EXPECTED = [
    ("LVH", "LAO/LAE", +1, "left ventricular hypertrophy with left atrial enlargement"),
    ("LVH", "VCLVH", +1, "LVH diagnosis with QRS voltage criteria"),
    ("LVH", "ISC_", +1, "LVH with strain-type (ischaemic-looking) ST-T changes"),
    ("LVH", "STD_", +1, "LVH with ST depression (strain)"),
    ("IMI", "ILMI", +1, "inferior and inferolateral infarction coded together"),
    ("1AVB", "LPR", +1, "first-degree AV block and prolonged PR (the same measurement)"),
    ("CRBBB", "LAFB", +1, "bifascicular block (RBBB with left anterior fascicular block)"),
    ("ASMI", "QWAVE", +1, "anteroseptal infarction with pathological Q waves"),
    ("DIG", "STD_", +1, "digitalis effect with (sagging) ST depression"),
    ("CRBBB", "IRBBB", -1, "complete and incomplete RBBB are mutually exclusive"),
    ("CLBBB", "ILBBB", -1, "complete and incomplete LBBB are mutually exclusive"),
    ("SR", "AFIB", -1, "sinus rhythm and atrial fibrillation are mutually exclusive"),
    ("SR", "STACH", -1, "rhythm statements exclude each other"),
    ("NORM", "LVH", -1, "a normal ECG has no hypertrophy"),
    ("NORM", "IMI", -1, "a normal ECG has no infarction"),
    ("NORM", "CLBBB", -1, "a normal ECG has no bundle branch block"),
]


def ptbxl_cohort() -> Any:
    """Every PTB-XL row here: record_id, patient, age (300 = 90+ -> 90), sex, fold, labels."""
    import pandas as pd

    from ecgfm.labels import load_catalogue, map_ptbxl_scp

    cat = load_catalogue()
    frames = [pd.read_csv(PTBXL / name) for name in ("ptbxl_database.csv", "ptbxl_reports_only.csv")]
    df = pd.concat(frames, ignore_index=True)
    age = df["age"].astype(float)
    out = pd.DataFrame({
        "record_id": df["ecg_id"].astype(int).astype(str), "patient_id": df["patient_id"],
        "age": age.where(age < 300, 90.0), "sex": df["sex"].map({0: "M", 1: "F"}),
        "strat_fold": df["strat_fold"],
        "labels": [map_ptbxl_scp(s, catalogue=cat).ids for s in df["scp_codes"]],
        "filename_lr": df["filename_lr"], "filename_hr": df["filename_hr"],
    })
    return out


def _pair(pairs: Any, a: str, b: str) -> dict[str, Any] | None:
    hit = pairs[((pairs["a"] == a) & (pairs["b"] == b)) | ((pairs["a"] == b) & (pairs["b"] == a))]
    if hit.empty:
        return None
    r = hit.iloc[0]
    return {"a": a, "b": b, "n11": int(r["n11"]), "n_a": int(r["n_a"] if r["a"] == a else r["n_b"]),
            "n_b": int(r["n_b"] if r["a"] == a else r["n_a"]), "expected": float(r["expected"]),
            "odds_ratio": float(r["odds_ratio"]), "or_low": float(r["or_low"]), "or_high": float(r["or_high"]),
            "q": float(r["q"]), "log10_p": float(r["log10_p"]), "haldane": bool(r["haldane"]),
            "relation": str(r["relation"]), "p_method": str(r["p_method"])}


def _top(pairs: Any, sign: int, n: int = 12) -> list[dict[str, Any]]:
    sel = pairs[pairs["significant"] & (pairs["relation"] != "grouping") & (np.sign(pairs["log_or"]) == sign)]
    return [_pair(pairs, str(r.a), str(r.b)) for r in sel.head(n).itertuples(index=False)]  # type: ignore[misc]


def _scan_rows(scan: Any, n: int = 12) -> list[dict[str, Any]]:
    ok = scan[scan["status"] == "ok"].head(n)
    cols = ["condition", "n_cases", "or_per_sd", "or_low", "or_high", "q", "log10_p", "auroc", "auroc_low",
            "auroc_high", "smd"]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in ok[cols].to_dict("records")]


def real_data(out_dir: Path, skip_model: bool) -> dict[str, Any]:
    from ecgfm.comorbidity import run_comorbidity

    cohort = ptbxl_cohort()
    work = out_dir / "ptbxl_comorbidity"
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.parquet"
    cohort.drop(columns=["filename_lr", "filename_hr"]).to_parquet(manifest)
    t0 = time.perf_counter()
    result = run_comorbidity(manifest, None, scores=("age",), covariates=("sex",), min_count=10)
    elapsed = time.perf_counter() - t0
    result.save(work / "labels")
    pairs = result.pairs
    checks = []
    for a, b, sign, why in EXPECTED:
        row = _pair(pairs, a, b)
        if row is None:
            checks.append({"a": a, "b": b, "expected_sign": sign, "why": why, "found": "not analysed (too rare)"})
            continue
        found = "positive" if row["odds_ratio"] > 1 else "negative"
        ok = row["q"] < 0.05 and np.sign(np.log(row["odds_ratio"])) == sign
        checks.append({**row, "expected_sign": sign, "why": why, "found": found, "confirmed": bool(ok)})
    norm = pairs[((pairs["a"] == "NORM") | (pairs["b"] == "NORM"))]
    other = np.where(norm["a"] == "NORM", norm["b"], norm["a"])
    from ecgfm.labels import load_catalogue

    cat = load_catalogue()
    diagnostic = np.array([cat.get(o).in_ptbxl("diagnostic") if o in cat else False for o in other])
    nd = norm[diagnostic]
    norm_summary = {"diagnostic_pairs": int(len(nd)), "significant_negative": int((nd["significant"] & (nd["log_or"] < 0)).sum()),
                    "positive": sorted(np.asarray(other)[diagnostic][(nd["log_or"] > 0).to_numpy()].tolist())}
    s = result.summary()
    out: dict[str, Any] = {
        "records": s["n_records"], "conditions": s["conditions"], "pairs": s["pairs"], "seconds": round(elapsed, 2),
        "top_positive": _top(pairs, 1), "top_negative": _top(pairs, -1), "expected": checks,
        "norm_vs_diagnostic": norm_summary,
        "clusters": s["clusters"],
        "age_scan": {"fitted": s["scans"]["age"]["fitted"], "significant": s["scans"]["age"]["significant"],
                     "covariates": s["scans"]["age"]["covariates"], "top": _scan_rows(result.scan)},
    }
    if not skip_model:
        out["model"] = model_scan(cohort, work)
    return out


def model_scan(cohort: Any, work: Path) -> dict[str, Any]:
    """Default-model probabilities on fold 10 scanned against the given labels."""
    import ecgfm
    from ecgfm.comorbidity import run_comorbidity

    def signal(lr: Any, hr: Any) -> str | None:  # the 100 Hz record where present, else the 500 Hz one
        for name in (lr, hr):
            if isinstance(name, str) and (PTBXL / f"{name}.hea").is_file():
                return str(PTBXL / f"{name}.hea")
        return None

    test = cohort[cohort["strat_fold"] == 10].copy()
    test["path"] = [signal(lr, hr) for lr, hr in zip(test["filename_lr"], test["filename_hr"])]
    test = test[test["path"].notna()]
    paths = test["path"].tolist()
    model = ecgfm.load_model()
    t0 = time.perf_counter()
    frame = model.predict_frame(paths, batch_size=32, errors="skip")
    seconds = time.perf_counter() - t0
    frame["record_id"] = test["record_id"].to_numpy()
    failed = int(frame["error"].notna().sum())
    predictions = work / "test_predictions.csv"
    frame.to_csv(predictions, index=False)
    manifest = work / "manifest.parquet"
    res = run_comorbidity(manifest, predictions, scores=("AFIB", "1-NORM"), covariates=("age", "sex"), min_count=5)
    res.save(work / "model_vs_labels")
    calls = run_comorbidity(manifest, predictions, conditions_from="predictions", thresholds=("model",),
                            scores=(), min_count=5)
    calls.save(work / "model_calls")
    # the labels' and the calls' log odds ratios over the pairs both analyse
    a = res.pairs.set_index(["a", "b"])["log_or"]
    b = calls.pairs.set_index(["a", "b"])["log_or"]
    both = a.index.intersection(b.index)
    r = float(np.corrcoef(a.loc[both], b.loc[both])[0, 1]) if len(both) > 2 else float("nan")
    scans = {}
    for name, group in res.scan.groupby("score", sort=False):
        scans[str(name)] = {"fitted": int((group["status"] == "ok").sum()), "significant": int(group["significant"].sum()),
                            "top": _scan_rows(group, 10)}
    return {"records": int(len(frame) - failed), "failed": failed, "predict_seconds": round(seconds, 1),
            "scans": scans, "covariates": "age, sex",
            "calls_top_positive": _top(calls.pairs, 1, 8), "calls_top_negative": _top(calls.pairs, -1, 5),
            "pairs_in_both": int(len(both)), "log_or_correlation_labels_vs_calls": r,
            "thresholds": calls.inputs.get("thresholds")}


def synthetic(n: int, c: int, seed: int = 0) -> np.ndarray:
    """``[n, c]`` bool: prevalence log-uniform 0.1-30 %, a quarter of the conditions driven by one
    of 10 latent causes (so some pairs are associated)."""
    rng = np.random.default_rng(seed)
    prev = np.exp(rng.uniform(np.log(0.001), np.log(0.3), c)).astype(np.float32)
    y = np.empty((n, c), dtype=bool)
    cause = rng.integers(0, 10, c)
    driven = rng.random(c) < 0.25
    step = 50_000
    for start in range(0, n, step):
        m = min(step, n - start)
        latent = rng.random((m, 10), dtype=np.float32) < 0.2
        u = rng.random((m, c), dtype=np.float32)
        boost = np.where(driven[None, :] & latent[:, cause], 3.0, 1.0).astype(np.float32)
        y[start:start + m] = u < np.minimum(prev[None, :] * boost, 0.95)
    return y


def scale() -> dict[str, Any]:
    import scipy.stats  # noqa: F401  (imported here so the first timing is not the import)

    from ecgfm.comorbidity import (
        cluster_conditions,
        cooccurrence_counts,
        pairwise_cooccurrence,
        phenome_scan,
    )

    out: dict[str, Any] = {}
    for n, c in ((1_000_000, 200), (100_000, 1000), (1_000_000, 1000)):
        y = synthetic(n, c)
        t0 = time.perf_counter()
        counts = cooccurrence_counts(y)
        t_counts = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = pairwise_cooccurrence(counts, min_count=10)
        t_pairs = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster_conditions(res.counts)
        t_clusters = time.perf_counter() - t0
        key = f"{n}x{c}"
        out[key] = {"records": n, "conditions": c, "pairs": int(len(res.pairs)),
                    "fisher_pairs": int((res.pairs["p_method"] == "fisher").sum()),
                    "counts_s": round(t_counts, 2), "statistics_s": round(t_pairs, 2),
                    "clusters_s": round(t_clusters, 2), "total_s": round(t_counts + t_pairs + t_clusters, 2)}
        if (n, c) == (100_000, 1000):
            t0 = time.perf_counter()
            forced = pairwise_cooccurrence(counts, min_count=10, method="fisher")
            out[key]["all_fisher_s"] = round(time.perf_counter() - t0, 2)
            out[key]["all_fisher_pairs"] = int(len(forced.pairs))
            score = np.random.default_rng(1).normal(size=n) + 0.3 * y[:, :50].sum(axis=1)
            t0 = time.perf_counter()
            scan = phenome_scan(score, y, min_cases=10)
            out[key]["scan_s"] = round(time.perf_counter() - t0, 2)
            out[key]["scan_fitted"] = int((scan["status"] == "ok").sum())
        del y
        print(f"{key}: {out[key]}", file=sys.stderr)
    return out


def _fmt_pair(p: dict[str, Any]) -> str:
    h = " (H)" if p["haldane"] else ""
    q = f"{p['q']:.1e}" if p["q"] > 0 else f"<1e-300 (log10 p {p['log10_p']:.0f})"
    return (f"| {p['a']} | {p['b']} | {p['n11']} | {p['expected']:.1f} | {p['odds_ratio']:.3g} "
            f"[{p['or_low']:.3g}, {p['or_high']:.3g}]{h} | {q} |")


def page(result: dict[str, Any]) -> str:
    lines = ["# Comorbidity discovery: PTB-XL and scale", "",
             "Written by `benchmarks/bench_comorbidity.py` (what it computes: `docs/comorbidity.md`).", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; {result['load']}. "
             f"OMP_NUM_THREADS={result.get('omp_num_threads', 'unset')} (BLAS threads of the count products).", ""]
    r = result.get("ptbxl")
    if r:
        pr = r["pairs"]
        lines += [
            "## PTB-XL statements (labels)", "",
            f"{r['records']} ECGs (`ptbxl_database.csv` + `ptbxl_reports_only.csv`), every `scp_codes` statement; "
            f"{r['conditions']['analysed']} of {r['conditions']['n']} statements have at least 10 records with and "
            f"without them. {pr['tested']} pairs ({pr['fisher']} by Fisher's exact test), "
            f"{pr['significant_positive']} positive and {pr['significant_negative']} negative associations at "
            f"BH q < 0.05; {pr['haldane']} pairs had an empty cell (Haldane-Anscombe). {r['seconds']} s for "
            "reading, pairs, clusters and the age scan.", "",
            "### Strongest positive associations", "",
            "| a | b | n11 | expected | OR [95% CI] | q |", "|---|---|---:|---:|---|---|",
            *[_fmt_pair(p) for p in r["top_positive"]], "",
            "### Strongest negative associations", "",
            "(H): a cell was 0 and 0.5 was added to each cell.", "",
            "| a | b | n11 | expected | OR [95% CI] | q |", "|---|---|---:|---:|---|---|",
            *[_fmt_pair(p) for p in r["top_negative"]], "",
            "### Associations expected a priori", "",
            "| a | b | expected | found | n11 / expected count | OR [95% CI] | q | confirmed | why expected |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for ck in r["expected"]:
            if "odds_ratio" not in ck:
                lines.append(f"| {ck['a']} | {ck['b']} | {'+' if ck['expected_sign'] > 0 else '-'} | {ck['found']} | | | | | {ck['why']} |")
                continue
            lines.append(f"| {ck['a']} | {ck['b']} | {'+' if ck['expected_sign'] > 0 else '-'} | {ck['found']} | "
                         f"{ck['n11']} / {ck['expected']:.1f} | {ck['odds_ratio']:.3g} [{ck['or_low']:.3g}, {ck['or_high']:.3g}]{' (H)' if ck['haldane'] else ''} | "
                         f"{ck['q']:.1e} | {'yes' if ck['confirmed'] else '**no**'} | {ck['why']} |")
        nv = r["norm_vs_diagnostic"]
        lines += ["", f"NORM against the other diagnostic statements: {nv['significant_negative']} of "
                  f"{nv['diagnostic_pairs']} pairs significantly negative"
                  + (f"; positive (not significant unless listed above): {', '.join(nv['positive'])}" if nv["positive"] else "") + ".", "",
                  "### Clusters (Jaccard distance, average linkage, cut at 0.9)", "",
                  "| cluster | size | members | categories |", "|---:|---:|---|---|",
                  *[f"| {c['cluster']} | {c['size']} | {c['members']} | {c['categories']} |" for c in r["clusters"]], "",
                  f"### Phenome scan: age (per SD, adjusted for {r['age_scan']['covariates']})", "",
                  f"{r['age_scan']['significant']} of {r['age_scan']['fitted']} statements significant at q < 0.05.", "",
                  "| condition | cases | OR per SD [95% CI] | q | AUROC [95% CI] | SMD |", "|---|---:|---|---|---|---:|",
                  *[_fmt_scan(s) for s in r["age_scan"]["top"]], ""]
        m = r.get("model")
        if m:
            lines += ["## Default model on the test fold (fold 10)", "",
                      f"{m['records']} records ({m['failed']} failed), predicted in {m['predict_seconds']} s. "
                      f"Scans adjusted for {m['covariates']}, against the given labels.", ""]
            for name, sc in m["scans"].items():
                lines += [f"### Score {name}", "", f"{sc['significant']} of {sc['fitted']} statements significant.", "",
                          "| condition | cases | OR per SD [95% CI] | q | AUROC [95% CI] | SMD |", "|---|---:|---|---|---|---:|",
                          *[_fmt_scan(s) for s in sc["top"]], ""]
            lines += [f"Pairs from the model's own calls ({m['thresholds']}) against the labels' pairs on the same "
                      f"records: {m['pairs_in_both']} pairs analysed in both, correlation of log OR "
                      f"{m['log_or_correlation_labels_vs_calls']:.2f}. Strongest positive pairs of the calls:", "",
                      "| a | b | n11 | expected | OR [95% CI] | q |", "|---|---|---:|---:|---|---|",
                      *[_fmt_pair(p) for p in m["calls_top_positive"]], ""]
    s = result.get("scale")
    if s:
        lines += ["## Scale (synthetic 0/1 matrices)", "",
                  "| records x conditions | pairs | Fisher pairs (auto) | counts s | statistics s | clusters s | total s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for v in s.values():
            lines.append(f"| {v['records']:,} x {v['conditions']:,} | {v['pairs']:,} | {v['fisher_pairs']:,} | "
                         f"{v['counts_s']} | {v['statistics_s']} | {v['clusters_s']} | {v['total_s']} |")
        big = s.get("100000x1000", {})
        if "all_fisher_s" in big:
            lines += ["", f"At 100,000 x 1,000: Fisher's exact test for all {big['all_fisher_pairs']:,} pairs "
                      f"(`method=\"fisher\"`) takes {big['all_fisher_s']} s for the statistics; a phenome scan of one "
                      f"score against the 1,000 conditions ({big['scan_fitted']} fitted) {big['scan_s']} s."]
        lines.append("")
    return "\n".join(lines) + "\n"


def _fmt_scan(s: dict[str, Any]) -> str:
    return (f"| {s['condition']} | {s['n_cases']} | {s['or_per_sd']:.3g} [{s['or_low']:.3g}, {s['or_high']:.3g}] | "
            f"{s['q']:.1e} | {s['auroc']:.3f} [{s['auroc_low']:.3f}, {s['auroc_high']:.3f}] | {s['smd']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-model", action="store_true", help="no default-model scan (needs torch)")
    parser.add_argument("--skip-scale", action="store_true", help="no synthetic timing runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ecgfm-bench-cache"), help="scratch folder")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    if (PTBXL / "ptbxl_database.csv").is_file():
        result["ptbxl"] = real_data(args.work, args.skip_model)
    else:
        print(f"shared data not found at {PTBXL}: real-data part skipped", file=sys.stderr)
    if not args.skip_scale:
        result["scale"] = scale()
    result["load"] = load_note()
    write_results(ROOT / "docs" / "benchmarks", "comorbidity", result, page(result), marker=MARKER)


if __name__ == "__main__":
    main()
