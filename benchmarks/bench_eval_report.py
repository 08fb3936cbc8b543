"""The evaluation harness on real predictions: headline numbers and runtime of ``evaluate_run``.

Predictions come from ``benchmarks/eval_ptbxl_baseline.py`` (one-vs-rest logistic regression on
~100 hand-made features, trained on PTB-XL folds 1-8 of the shared subset; probabilities for
folds 9 = validation and 10 = test, and for the 50 CinC 2021 sample records as external
cohorts). They are regenerated unless ``--predictions-dir`` already holds them.

Everything goes through ``evaluate_run`` as ``ecgfm evaluate`` would run it: Youden thresholds
and per-condition temperatures fitted on the validation rows and carried to every test row,
1,000 patient-bootstrap resamples, fairness by sex and age band, one table per cohort, the
CinC 2021 challenge score, and the HTML report (written to ``--report-dir``).

    python benchmarks/bench_eval_report.py [--predictions-dir /tmp/ecgfm-eval-ptbxl]
        [--resamples 1000] [--report-dir /tmp/ecgfm-eval-report] [--out docs/benchmarks]

Writes ``docs/benchmarks/eval_report.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
FILES = ("predictions.csv", "labels.csv", "external_predictions.csv", "external_labels.csv")


def _ci(pair: list | None) -> list | None:
    return None if pair is None else [round(float(v), 4) if v is not None else None for v in pair]


def _fmt(v: float | None, ci: list | None = None, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    text = f"{v:.{digits}f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--predictions-dir", type=Path, default=Path("/tmp/ecgfm-eval-ptbxl"))
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--report-dir", type=Path, default=Path("/tmp/ecgfm-eval-report"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args(argv)
    if not (DATA / "ptb-xl" / "ptbxl_database.csv").is_file():
        print(f"skipped: PTB-XL not found under {DATA}", file=sys.stderr)
        return {}

    pred_dir = args.predictions_dir
    baseline_s = None
    if not all((pred_dir / f).is_file() for f in FILES):
        import eval_ptbxl_baseline

        t0 = time.perf_counter()
        eval_ptbxl_baseline.main(["--out", str(pred_dir)])
        baseline_s = time.perf_counter() - t0

    from ecgfm.evaluate.run import evaluate_run

    weights = DATA / "challenge2021" / "weights.csv"
    t0 = time.perf_counter()
    result = evaluate_run(
        [pred_dir / "predictions.csv", pred_dir / "external_predictions.csv"],
        [pred_dir / "labels.csv", pred_dir / "external_labels.csv"],
        groups=("sex", "age"), n_resamples=args.resamples, seed=0,
        challenge_weights=str(weights) if weights.is_file() else None,
        progress=lambda m: print(f"  {m}", file=sys.stderr),
    )
    evaluate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = result.save(args.report_dir)
    save_s = time.perf_counter() - t0
    report = args.report_dir / "report.html"

    s = result.summary
    fairness = {}
    for attribute, info in s.get("fairness", {}).items():
        gaps = {
            f"{'tpr' if g['metric'] == 'sensitivity' else g['metric']}_gap": {
                "gap": round(g["gap"], 4), "ci": _ci([g["low"], g["high"]]),
            }
            for g in info["gaps"] if g["comparison"] == "max-min"
        }
        first = next(iter(info["subgroups"].values()), {})
        fairness[attribute] = {
            "subgroups": {k: {"n_records": v["n_records"], "macro_tpr": round(v["macro_tpr"], 4),
                              "macro_fpr": round(v["macro_fpr"], 4), "macro_auroc": round(v["macro_auroc"], 4)}
                          for k, v in info["subgroups"].items()},
            "n_conditions": first.get("n_conditions", 0),
            "macro_conditions": info.get("macro_conditions", []), **gaps,
        }
    res = {
        "machine": machine(),
        "note": "timings on a shared 2-core machine with other jobs running; rerun on a quiet machine",
        "data": {
            "primary": s["primary"], "n_records": s["n_records"], "n_patients": s["n_patients"],
            "n_conditions": int(s["n_conditions"]), "n_evaluable": int(s["n_evaluable"]),
            "n_validation_rows": result.resolved["n_fit_rows"], "predictions": str(pred_dir),
        },
        "resamples": args.resamples,
        "macro_auroc": round(s["macro_auroc"], 4), "macro_auroc_ci": _ci(s.get("macro_auroc_ci")),
        "macro_ap": round(s["macro_ap"], 4), "macro_ap_ci": _ci(s.get("macro_ap_ci")),
        "micro_auroc": round(s["micro_auroc"], 4),
        "macro_sensitivity": round(s["macro_sensitivity"], 4), "macro_specificity": round(s["macro_specificity"], 4),
        "anyecg_counts": {f"auroc_gt_{c}": int(s[f"n_auroc_gt_{c}"]) for c in (0.7, 0.8, 0.9)},
        "cohorts": {k: {"n_records": v["n_records"], "n_evaluable": v["n_evaluable"],
                        "macro_auroc": round(v["macro_auroc"], 4), "macro_auroc_ci": _ci(v["macro_auroc_ci"])}
                    for k, v in s.get("cohorts", {}).items()},
        "fairness": fairness,
        "calibration": {
            "macro_ece": round(s["macro_ece"], 5), "macro_ece_temperature": round(s.get("macro_ece_calibrated", float("nan")), 5),
            "pooled_ece": round(s["pooled_ece"], 5), "pooled_ece_temperature": round(s.get("pooled_ece_calibrated", float("nan")), 5),
            "macro_brier": round(float(result.calibration.at["macro", "brier"]), 5),
            "macro_brier_temperature": round(float(result.calibration.at["macro", "brier_calibrated"]), 5)
            if "brier_calibrated" in result.calibration.columns else None,
        },
        "challenge": None if result.challenge is None else {
            "classes_covered": len(result.challenge["classes_covered"]),
            "n_classes": result.challenge["n_classes"],
            "score": {k: round(v["challenge_score"], 4) for k, v in result.challenge["by_cohort"].items()},
        },
        "warnings": result.warnings,
        "seconds": {"baseline_predictions": None if baseline_s is None else round(baseline_s, 2),
                    "evaluate_run": round(evaluate_s, 2), "save_with_report": round(save_s, 2)},
        "report_bytes": report.stat().st_size, "files": [p.name for p in written],
    }

    cohort_rows = "\n".join(
        f"| {k} | {v['n_records']} | {v['n_evaluable']} | {_fmt(v['macro_auroc'], v['macro_auroc_ci'])} |"
        for k, v in res["cohorts"].items()
    )
    def groups(f: dict) -> str:
        return ", ".join(f"{k} ({v['n_records']})" for k, v in f["subgroups"].items())

    def conds(f: dict) -> str:
        used = f["macro_conditions"]
        return f"{len(used)}" if len(used) > 4 else f"{len(used)} ({', '.join(used)})"

    fair_rows = "\n".join(
        f"| {a} | {groups(f)} | {conds(f)} | "
        f"{_fmt(f['tpr_gap']['gap'], f['tpr_gap']['ci'])} | {_fmt(f['fpr_gap']['gap'], f['fpr_gap']['ci'])} | "
        f"{_fmt(f['auroc_gap']['gap'], f['auroc_gap']['ci'])} |"
        for a, f in fairness.items() if "tpr_gap" in f
    )
    cal = res["calibration"]
    ch = res["challenge"]
    challenge_line = "" if ch is None else (
        f"\nCinC 2021 challenge score ({ch['classes_covered']} of {ch['n_classes']} classes covered; "
        "outputs thresholded at the Youden points): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ch["score"].items()) + ".\n"
    )
    sec = res["seconds"]
    page = f"""# Evaluation harness on real predictions

`python benchmarks/bench_eval_report.py` ({args.resamples} patient-bootstrap resamples; machine:
{res['machine']['cpu']}, {res['machine']['cores']} cores; {load_note()}).

Model: the feature baseline of `benchmarks/eval_ptbxl_baseline.py` (logistic regression on ~100
hand-made features, trained on PTB-XL folds 1-8 of the shared subset). Thresholds (Youden) and
per-condition temperatures were fitted on the {res['data']['n_validation_rows']} validation rows
(fold 9) and carried unchanged to every test row.

## Headline: {s['primary']} test (fold 10), {s['n_records']} records of {s['n_patients']} patients

| | value [95% CI] |
|---|---|
| macro AUROC ({res['data']['n_evaluable']} of {res['data']['n_conditions']} conditions evaluable) | {_fmt(res['macro_auroc'], res['macro_auroc_ci'])} |
| macro AP | {_fmt(res['macro_ap'], res['macro_ap_ci'])} |
| micro AUROC | {_fmt(res['micro_auroc'])} |
| macro sensitivity / specificity at the carried thresholds | {_fmt(res['macro_sensitivity'])} / {_fmt(res['macro_specificity'])} |
| conditions with AUROC > 0.7 / 0.8 / 0.9 | {res['anyecg_counts']['auroc_gt_0.7']} / {res['anyecg_counts']['auroc_gt_0.8']} / {res['anyecg_counts']['auroc_gt_0.9']} |
| macro ECE before / after temperature scaling | {cal['macro_ece']:.4f} / {cal['macro_ece_temperature']:.4f} |
| pooled ECE before / after | {cal['pooled_ece']:.4f} / {cal['pooled_ece_temperature']:.4f} |
| macro Brier before / after | {cal['macro_brier']:.4f} / {cal['macro_brier_temperature'] if cal['macro_brier_temperature'] is not None else float('nan'):.4f} |

## Cohorts (test rows, thresholds carried)

| cohort | records | conditions evaluable | macro AUROC [95% CI] |
|---|---|---|---|
{cohort_rows}

The CinC 2021 cohorts hold 10-20 records each: their intervals are wide and their macro
averages cover only the conditions present. `CinC2021-HR` records are PTB-XL records (the
challenge's copy of PTB-XL), so that cohort may overlap the training folds; it is shown as given.
{challenge_line}
## Fairness on {s['primary']} test (max - min subgroup, macro over conditions with >= 5 positives in every subgroup of >= 20 records)

| attribute | subgroups (records) | conditions | TPR gap [95% CI] | FPR gap [95% CI] | AUROC gap [95% CI] |
|---|---|---|---|---|---|
{fair_rows}

Max-min gaps are biased upwards in small subgroups (their intervals never include 0); the
per-subgroup differences to the reference subgroup, with p-values, are in
`fairness_gaps.csv` and the report.

## Runtime

| step | seconds |
|---|---|
| baseline predictions (features + fit, when regenerated) | {sec['baseline_predictions'] if sec['baseline_predictions'] is not None else 'reused'} |
| `evaluate_run` ({args.resamples} resamples: conditions, 4 cohorts, 2 fairness attributes, challenge) | {sec['evaluate_run']} |
| `save` (CSV, JSON, HTML report with 5 figures, {res['report_bytes'] // 1024} KiB) | {sec['save_with_report']} |
"""
    write_results(args.out, "eval_report", res, page)
    print(f"report: {report}")
    return res


if __name__ == "__main__":
    main()
