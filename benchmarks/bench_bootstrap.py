"""Patient-bootstrap CIs of AUROC and AP: ecgfm's weighted engine against a scikit-learn loop.

Synthetic but realistic predictions: 10,000 records of ~7,000 patients (some patients with
several records), 1,000 conditions with prevalence log-uniform from 0.2% to 30%, scores
``sigmoid(noise + separation * label)`` with separations giving AUROCs from about 0.6 to 0.99,
rounded to 3 decimals for every third condition (ties), and 1,000 patient resamples.

Compared with the straightforward loop (for each resample, for each condition:
``roc_auc_score`` and ``average_precision_score`` on the index-resampled records), timed on a
subset of conditions x resamples and scaled up linearly. Checks: point estimates of all
conditions against scikit-learn (max abs difference) and the resampled values of the subset
against the loop on the same resample indices.

    python benchmarks/bench_bootstrap.py [--conditions 1000] [--records 10000]
        [--resamples 1000] [--loop-conditions 20] [--loop-resamples 20] [--jobs 2]
        [--out docs/benchmarks]

Targets (issue 6): under 60 s for 1,000 x 10,000 x 1,000, at least 20x the loop, point estimates
equal to scikit-learn within 1e-10.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _machine import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TARGET_S, TARGET_SPEEDUP, TARGET_DIFF = 60.0, 20.0, 1e-10


def synthetic(n_records: int, n_conditions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y [N, C] float, scores [N, C] float, patient [N] int)``."""
    rng = np.random.default_rng(seed)
    n_patients = max(1, int(round(0.7 * n_records)))
    # every patient has one record; the rest go to patients drawn with a heavy tail
    extra = n_records - n_patients
    weights = rng.pareto(1.5, n_patients) + 1
    patient = np.concatenate([np.arange(n_patients), rng.choice(n_patients, extra, p=weights / weights.sum())])
    patient = rng.permutation(patient)
    prevalence = np.exp(rng.uniform(np.log(0.002), np.log(0.3), n_conditions))
    y = (rng.random((n_records, n_conditions)) < prevalence).astype(np.float64)
    separation = rng.uniform(0.4, 3.5, n_conditions)
    logit = rng.normal(size=(n_records, n_conditions)) + separation * y - 2.0
    scores = 1.0 / (1.0 + np.exp(-logit))
    scores[:, ::3] = np.round(scores[:, ::3], 3)
    return y, scores, patient


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conditions", type=int, default=1000)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--loop-conditions", type=int, default=20)
    ap.add_argument("--loop-resamples", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    from sklearn.metrics import average_precision_score, roc_auc_score

    from ecgfm.evaluate.bootstrap import bootstrap, resample_indices

    n, c, b = args.records, args.conditions, args.resamples
    y, s, patient = synthetic(n, c, args.seed)
    n_pos = y.sum(0)
    print(f"{n} records, {len(np.unique(patient))} patients, {c} conditions "
          f"(positives {int(n_pos.min())}-{int(n_pos.max())}), {b} resamples, {args.jobs} threads")

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = bootstrap(y, s, groups=patient, metrics=("auroc", "ap"), n_resamples=b, seed=args.seed,
                    keep_samples=True, n_jobs=args.jobs)
    t_fast = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    print(f"ecgfm bootstrap: {t_fast:.2f} s (1-min load average {load_before:.1f} before, {load_after:.1f} after)")

    # point estimates against scikit-learn, every condition
    t0 = time.perf_counter()
    ref_auc = np.array([roc_auc_score(y[:, j], s[:, j]) for j in range(c)])
    ref_ap = np.array([average_precision_score(y[:, j], s[:, j]) for j in range(c)])
    t_point_sk = time.perf_counter() - t0
    d_auc = float(np.max(np.abs(res.point["auroc"] - ref_auc)))
    d_ap = float(np.max(np.abs(res.point["ap"] - ref_ap)))
    print(f"point estimates vs scikit-learn: max |diff| AUROC {d_auc:.2e}, AP {d_ap:.2e}")

    # the straightforward loop on a subset, same resample indices
    lc, lb = min(args.loop_conditions, c), min(args.loop_resamples, b)
    cols = np.linspace(0, c - 1, lc).astype(int)
    loop_auc = np.full((lb, lc), np.nan)
    loop_ap = np.full((lb, lc), np.nan)
    t0 = time.perf_counter()
    for k, idx in enumerate(resample_indices(patient, lb, args.seed)):
        for jj, j in enumerate(cols):
            yy, ss = y[idx, j], s[idx, j]
            if 0 < yy.sum() < yy.size:
                loop_auc[k, jj] = roc_auc_score(yy, ss)
                loop_ap[k, jj] = average_precision_score(yy, ss)
    t_loop = time.perf_counter() - t0
    per_pair = t_loop / (lb * lc)
    t_loop_full = per_pair * b * c
    fast_auc, fast_ap = res.samples["auroc"][:lb, cols], res.samples["ap"][:lb, cols]
    same_nan = bool(np.array_equal(np.isnan(fast_auc), np.isnan(loop_auc)))
    dl_auc = float(np.nanmax(np.abs(fast_auc - loop_auc)))
    dl_ap = float(np.nanmax(np.abs(fast_ap - loop_ap)))
    speedup = t_loop_full / t_fast
    print(f"scikit-learn loop: {lb} resamples x {lc} conditions in {t_loop:.2f} s "
          f"({per_pair * 1e3:.2f} ms per condition-resample) -> {t_loop_full:,.0f} s scaled to {b} x {c}")
    print(f"resampled values vs the loop: max |diff| AUROC {dl_auc:.2e}, AP {dl_ap:.2e}, "
          f"undefined in the same places: {same_nan}")
    print(f"speed-up: {speedup:,.0f}x")

    with np.errstate(all="ignore"):
        bias = {m: float(np.nanmean(np.nanmean(res.samples[m], 0) - res.point[m])) for m in ("auroc", "ap")}
    full = (c, n, b) == (1000, 10000, 1000)
    result = {
        "machine": machine(),
        "setup": {
            "records": n, "patients": int(len(np.unique(patient))), "conditions": c,
            "resamples": b, "threads": args.jobs, "seed": args.seed,
            "positives_min": int(n_pos.min()), "positives_median": float(np.median(n_pos)),
            "positives_max": int(n_pos.max()), "conditions_with_ties": int(len(range(0, c, 3))),
            "metrics": ["auroc", "ap"],
        },
        "ecgfm_seconds": t_fast,
        "load_average_1min": {"before": load_before, "after": load_after},
        "sklearn_loop": {
            "conditions": lc, "resamples": lb, "seconds": t_loop,
            "seconds_per_condition_resample": per_pair, "scaled_seconds": t_loop_full,
        },
        "speedup": speedup,
        "point_max_abs_diff": {"auroc": d_auc, "ap": d_ap},
        "sklearn_point_seconds": t_point_sk,
        "resampled_max_abs_diff": {"auroc": dl_auc, "ap": dl_ap, "undefined_match": same_nan},
        "macro": {m: list(res.macro[m]) for m in ("auroc", "ap")},
        "mean_resampled_minus_point": bias,
        "targets": {
            "seconds": TARGET_S, "speedup": TARGET_SPEEDUP, "point_diff": TARGET_DIFF,
            "full_size": full,
            "met": bool(t_fast < TARGET_S and speedup >= TARGET_SPEEDUP
                        and max(d_auc, d_ap) <= TARGET_DIFF),
        },
    }
    mach = result["machine"]
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    page = f"""# Bootstrap confidence intervals (patient resampling)

Command: `python benchmarks/bench_bootstrap.py{'' if full else f' --conditions {c} --records {n} --resamples {b}'}`  
Machine: {mach['cpu']} ({mach['cores']} CPUs), Python {mach['python']}, numpy {mach['numpy']}, scipy {mach['scipy']}; {args.jobs} threads;
1-minute load average {load_before:.1f} before the timed run and {load_after:.1f} after (above the core count means other jobs shared the CPUs)

Data (synthetic, `synthetic()` in the script): {n:,} records of {result['setup']['patients']:,} patients,
{c:,} conditions (positives per condition {int(n_pos.min())} to {int(n_pos.max())}, median
{np.median(n_pos):.0f}; prevalence log-uniform 0.2% to 30%; every third condition's scores rounded to
3 decimals, so with ties), {b:,} patient resamples, AUROC and average precision with 95% percentile
intervals per condition and for the macro average.

| | time | per condition x resample |
|---|---|---|
| `ecgfm.evaluate.bootstrap.bootstrap` (everything: sort, resample, metrics, intervals) | **{t_fast:.1f} s** | {t_fast / (b * c) * 1e6:.1f} us |
| scikit-learn loop, `roc_auc_score` + `average_precision_score` on `y[idx]`, timed on {lb} resamples x {lc} conditions ({t_loop:.1f} s) and scaled | {t_loop_full:,.0f} s ({t_loop_full / 3600:.1f} h) | {per_pair * 1e6:,.0f} us |

Speed-up: **{speedup:,.0f}x**.

Exactness:
- point estimates of all {c:,} conditions vs scikit-learn: max |difference| AUROC {d_auc:.1e}, AP {d_ap:.1e}
- resampled values of the {lc} x {lb} subset vs the loop on the same resample indices
  (`resample_indices`): max |difference| AUROC {dl_auc:.1e}, AP {dl_ap:.1e}; undefined (no positive drawn)
  in the same places: {same_nan}
- macro AUROC {res.macro['auroc'][0]:.4f} [{res.macro['auroc'][1]:.4f}, {res.macro['auroc'][2]:.4f}],
  macro AP {res.macro['ap'][0]:.4f} [{res.macro['ap'][1]:.4f}, {res.macro['ap'][2]:.4f}] (percentile intervals)
- mean of the resampled values minus the point estimate, averaged over conditions: AUROC
  {bias['auroc']:+.4f}, AP {bias['ap']:+.4f}. Average precision on a bootstrap resample is biased upwards
  (a record drawn twice ties with itself; rare positives lose distinct scores), exactly as scikit-learn
  computes it on the resampled records. One condition's interval is much wider than that shift, but the
  macro interval over {c:,} conditions is narrow enough to show it; `bootstrap(..., interval="basic")`
  gives the bias-aware basic interval.

Targets (issue 6{'' if full else '; this run is not the full size'}): under {TARGET_S:.0f} s: {met(t_fast < TARGET_S)};
at least {TARGET_SPEEDUP:.0f}x the loop: {met(speedup >= TARGET_SPEEDUP)}; point estimates within
{TARGET_DIFF:.0e} of scikit-learn: {met(max(d_auc, d_ap) <= TARGET_DIFF)}.

How: one resample is one weight vector over records (times each record's patient was drawn),
shared by all conditions. Each condition is sorted once and its records put in bins (each distinct
positive score, the negatives between consecutive positive scores, negatives tied with a positive;
negatives below every positive are recovered as the total minus the rest), so the bin weights of
all resamples are one sparse product `Z[bins, N] @ W.T[N, B]` in float32 (exact for integer
counts), and AUROC (ties half), AP (scikit-learn's step-wise sum) and Fmax follow from cumulative
sums over the bins. Threads split the conditions.
"""
    if not args.no_write:
        write_results(args.out, "bootstrap", result, page)
    return result


if __name__ == "__main__":
    main()
