"""Linear survival models of ecgfm against scikit-survival and lifelines on real survival data.

Data: three data sets bundled with scikit-survival, categorical columns one-hot encoded
(``sksurv.column.encode_categorical``):

- WHAS500, the Worcester Heart Attack Study (``load_whas500``): 500 patients, 14 covariates,
  follow-up in days, death;
- GBSG2, the German Breast Cancer Study Group 2 (``load_gbsg2``): 686 patients, 10 covariates,
  recurrence-free survival in days;
- Veterans' Administration lung cancer trial (``load_veterans_lung_cancer``): 137 patients,
  8 covariates, survival in days.

Cox (whole data set): ``ecgfm.models.survival.CoxProbe`` with Breslow and with Efron ties against
``sksurv.linear_model.CoxPHSurvivalAnalysis(ties=...)`` and ``lifelines.CoxPHFitter`` (Efron;
skipped with a note where lifelines is not installed). Compared: the largest absolute coefficient
difference, and Harrell's C, Uno's C and the integrated Brier score of each fitted model on the
same records (all three computed with ``ecgfm.evaluate.survival``, itself checked against
scikit-survival in tests/test_survival.py), with each model's own survival curves for the Brier
score. Models that coincide (same partial likelihood, same ties) must agree to 1e-6.

Discrete-time hazard (``DiscreteHazardProbe``): without covariates and with a cut at every
distinct event time, S at the cuts against the Kaplan-Meier estimate (they coincide); with the
default 10 quantile intervals, against Kaplan-Meier (they do not coincide: the censoring
convention inside an interval; both conventions reported); with covariates, against
scikit-learn's ``LogisticRegression`` without penalty (``C=inf``, Newton-Cholesky, tol 1e-12) on
the person-period expansion of the data (one row per record and interval at risk, one dummy per
interval), which is the same maximum-likelihood problem (tolerance 1e-6).

Held-out: a 70/30 split stratified by event (seed 0); Cox (Efron) and the discrete-time model
(10 default intervals) fitted on the 70 %, Harrell's C, Uno's C (truncated at the 80th percentile
of the test times) and the integrated Brier score (10th to 80th percentile of the test times) on
the 30 %, the test records giving the censoring distribution of the IPC weights.

    python benchmarks/bench_survival.py [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TOL = 1e-6
DATASETS = {
    "whas500": ("load_whas500", "lenfol", "fstat", "Worcester Heart Attack Study (WHAS500)"),
    "gbsg2": ("load_gbsg2", "time", "cens", "German Breast Cancer Study Group 2 (GBSG2)"),
    "veterans": ("load_veterans_lung_cancer", "Survival_in_days", "Status", "Veterans' lung cancer trial"),
}


def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    import sksurv.datasets as ds
    from sksurv.column import encode_categorical

    loader, tcol, ecol, _ = DATASETS[name]
    x, y = getattr(ds, loader)()
    xe = encode_categorical(x)
    return (xe.to_numpy(np.float64), y[tcol].astype(np.float64), y[ecol].astype(bool), list(xe.columns), y)


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def metrics(time_train, event_train, time_test, event_test, risk, survival_fn, grid, tau) -> dict:  # noqa: ANN001
    from ecgfm.evaluate import survival as S

    return {
        "harrell_c": float(S.concordance_index(time_test, event_test, risk).c_index),
        "uno_c": float(S.uno_concordance(time_train, event_train, time_test, event_test, risk, tau=tau).c_index),
        "ibs": float(S.integrated_brier_score(time_train, event_train, time_test, event_test, survival_fn(grid), grid)),
    }


def grid_of(time: np.ndarray, lo: float = 10, hi: float = 80, n: int = 15) -> np.ndarray:
    return np.unique(np.percentile(time, np.linspace(lo, hi, n)))


def cox_comparison(name: str) -> dict:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from ecgfm.models.survival import CoxProbe

    X, t, e, cols, y = load(name)
    grid = grid_of(t)
    tau = float(np.percentile(t, 80))
    out: dict = {"n": int(t.size), "events": int(e.sum()), "features": len(cols),
                 "tied_event_times": int(e.sum() - np.unique(t[e]).size), "models": {}}
    coefs: dict[str, np.ndarray] = {}
    for ties in ("breslow", "efron"):
        ours, s_ours = timed(lambda ties=ties: CoxProbe(ties).fit(X, t, e))
        ref, s_ref = timed(lambda ties=ties: CoxPHSurvivalAnalysis(ties=ties).fit(X, y))
        coefs[f"ecgfm_{ties}"], coefs[f"sksurv_{ties}"] = ours.coef_, ref.coef_

        def sk_surv(times, ref=ref):  # noqa: ANN001, ANN202
            return np.array([[f(v) for v in times] for f in ref.predict_survival_function(X)])

        out["models"][f"ecgfm_{ties}"] = {"fit_s": s_ours, "iterations": ours.n_iter_,
                                          **metrics(t, e, t, e, ours.predict_risk(X),
                                                    lambda g, m=ours: m.predict_survival(X, g), grid, tau)}
        out["models"][f"sksurv_{ties}"] = {"fit_s": s_ref, **metrics(t, e, t, e, ref.predict(X), sk_surv, grid, tau)}
    try:
        import lifelines
        import pandas as pd
    except ImportError:
        out["lifelines"] = "not installed: its comparison is skipped (pip install lifelines)"
    else:
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]).assign(T=t, E=e.astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit, s_ll = timed(lambda: lifelines.CoxPHFitter().fit(frame, "T", "E",
                                                                  fit_options={"precision": 1e-12, "max_steps": 500}))
            coefs["lifelines_efron"] = fit.params_.to_numpy()
            features = frame.drop(columns=["T", "E"])

            base = fit.baseline_cumulative_hazard_
            b_times, b_values = base.index.to_numpy(np.float64), base.iloc[:, 0].to_numpy(np.float64)
            partial = fit.predict_partial_hazard(features).to_numpy()

            def ll_surv(times):  # noqa: ANN001, ANN202
                # lifelines' Breslow baseline as the step function it is (predict_survival_function
                # interpolates the cumulative hazard linearly between event times; reported apart)
                idx = np.searchsorted(b_times, times, side="right") - 1
                h0 = np.where(idx >= 0, b_values[np.clip(idx, 0, None)], 0.0)
                return np.exp(-np.outer(partial, h0))

            from ecgfm.evaluate.survival import integrated_brier_score

            interpolated = fit.predict_survival_function(features, times=grid).to_numpy().T
            out["models"]["lifelines_efron"] = {
                "fit_s": s_ll, **metrics(t, e, t, e, fit.predict_log_partial_hazard(features).to_numpy(), ll_surv,
                                         grid, tau),
                "ibs_interpolated": float(integrated_brier_score(t, e, t, e, interpolated, grid))}
        out["lifelines"] = f"lifelines {lifelines.__version__}, precision 1e-12"
    pairs = [("ecgfm_breslow", "sksurv_breslow", True), ("ecgfm_efron", "sksurv_efron", True),
             ("ecgfm_efron", "lifelines_efron", True), ("sksurv_efron", "lifelines_efron", True),
             ("ecgfm_breslow", "ecgfm_efron", False)]
    out["pairs"] = []
    for a, b, coincide in pairs:
        if a not in coefs or b not in coefs:
            continue
        ma, mb = out["models"][a], out["models"][b]
        row = {"a": a, "b": b, "coincide": coincide, "max_coef_diff": float(np.abs(coefs[a] - coefs[b]).max()),
               **{f"{k}_diff": abs(ma[k] - mb[k]) for k in ("harrell_c", "uno_c", "ibs")}}
        if coincide:
            row["within_tol"] = bool(max(row["max_coef_diff"], row["harrell_c_diff"], row["uno_c_diff"],
                                         row["ibs_diff"]) <= TOL)
        out["pairs"].append(row)
    return out


def discrete_comparison(name: str) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sksurv.nonparametric import kaplan_meier_estimator

    from ecgfm.models.survival import DiscreteHazardProbe
    from ecgfm.objectives.survival import DiscreteTimeHazard

    X, t, e, _, _ = load(name)
    none = np.zeros((t.size, 0))
    t_km, s_km = kaplan_meier_estimator(e, t)

    def km_at(times: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(t_km, times, side="right") - 1
        return np.where(idx >= 0, s_km[np.clip(idx, 0, None)], 1.0)

    out: dict = {}
    cuts = np.unique(np.r_[0.0, t[e]])
    fit, secs = timed(lambda: DiscreteHazardProbe(cuts).fit(none, t, e))
    out["km_every_event_time"] = {"intervals": int(cuts.size - 1), "fit_s": secs, "coincide": True,
                                  "max_abs_diff": float(np.abs(fit.predict_survival(none[:1], cuts[1:])[0]
                                                               - km_at(cuts[1:])).max())}
    out["km_every_event_time"]["within_tol"] = out["km_every_event_time"]["max_abs_diff"] <= TOL
    for censoring in ("completed", "midpoint"):
        fit = DiscreteHazardProbe(n_intervals=10, censoring=censoring).fit(none, t, e)
        out[f"km_10_intervals_{censoring}"] = {
            "intervals": int(fit.cuts_.size - 1), "coincide": False,
            "max_abs_diff": float(np.abs(fit.predict_survival(none[:1], fit.cuts_[1:])[0] - km_at(fit.cuts_[1:])).max())}
    ours, s_ours = timed(lambda: DiscreteHazardProbe(n_intervals=10).fit(X, t, e))
    y, at_risk = DiscreteTimeHazard(ours.cuts_).targets_matrix(torch.from_numpy(t), torch.from_numpy(e * 1.0))
    rows, k = np.nonzero(at_risk.numpy())
    n_int = ours.cuts_.size - 1
    Z = np.concatenate([np.eye(n_int)[k], X[rows]], axis=1)
    ref, s_ref = timed(lambda: LogisticRegression(C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-12,
                                                  max_iter=1000).fit(Z, y.numpy()[rows, k]))
    out["person_period_logistic"] = {
        "intervals": int(n_int), "person_period_rows": int(rows.size), "coincide": True,
        "max_coef_diff": float(np.abs(ref.coef_[0, n_int:] - ours.coef_).max()),
        "max_intercept_diff": float(np.abs(ref.coef_[0, :n_int] - ours.intercept_).max()),
        "fit_s": s_ours, "sklearn_fit_s": s_ref, "iterations": ours.n_iter_}
    p = out["person_period_logistic"]
    p["within_tol"] = max(p["max_coef_diff"], p["max_intercept_diff"]) <= TOL
    return out


def held_out(name: str) -> dict:
    from ecgfm.models.survival import CoxProbe, DiscreteHazardProbe

    X, t, e, _, _ = load(name)
    rng = np.random.default_rng(0)
    test = np.zeros(t.size, bool)
    for flag in (True, False):
        idx = np.flatnonzero(e == flag)
        test[rng.choice(idx, int(round(0.3 * idx.size)), replace=False)] = True
    tr = ~test
    cox, s_cox = timed(lambda: CoxProbe("efron").fit(X[tr], t[tr], e[tr]))
    dh, s_dh = timed(lambda: DiscreteHazardProbe(n_intervals=10).fit(X[tr], t[tr], e[tr]))
    limit = min(dh.cuts_[-1], cox.max_time_, t[tr].max())
    grid = grid_of(t[test])
    grid = grid[grid <= limit]
    tau = float(min(np.percentile(t[test], 80), limit))
    out = {"n_train": int(tr.sum()), "n_test": int(test.sum()), "events_test": int(e[test].sum()),
           "ibs_grid": [float(grid[0]), float(grid[-1])]}
    # the censoring distribution of the IPCW figures: the test records' own (the training records
    # do not cover the longest test follow-up in every data set)
    out["cox_efron"] = {"fit_s": s_cox, **metrics(t[test], e[test], t[test], e[test], cox.predict_risk(X[test]),
                                                  lambda g: cox.predict_survival(X[test], g), grid, tau)}
    out["discrete_hazard"] = {"fit_s": s_dh, "intervals": int(dh.cuts_.size - 1),
                              **metrics(t[test], e[test], t[test], e[test], dh.predict_risk(X[test]),
                                        lambda g: dh.predict_survival(X[test], g), grid, tau)}
    return out


def page(result: dict) -> str:
    lines = ["# Survival models against scikit-survival and lifelines", "",
             f"`python benchmarks/bench_survival.py` on {result['machine']['cpu']} ({result['machine']['cores']} cores); "
             f"{result['load']}. Timings are wall-clock seconds of one fit on a busy shared machine.", "",
             "Models that coincide (the same likelihood with the same ties) must agree to "
             f"{TOL:g} in coefficients, Harrell's C, Uno's C and the integrated Brier score (IBS).", ""]
    for name, r in result["datasets"].items():
        c = r["cox"]
        lines += [f"## {DATASETS[name][3]}", "",
                  f"{c['n']} records, {c['events']} events, {c['features']} features (one-hot), "
                  f"{c['tied_event_times']} tied event times. {c.get('lifelines', '')}", "",
                  "### Cox, whole data set", "",
                  "| model | Harrell's C | Uno's C | IBS | fit (s) |", "|---|---|---|---|---|"]
        for m, v in c["models"].items():
            lines.append(f"| {m} | {v['harrell_c']:.6f} | {v['uno_c']:.6f} | {v['ibs']:.6f} | {v['fit_s']:.3f} |")
        if "lifelines_efron" in c["models"]:
            lines += ["", "lifelines' IBS uses its Breslow baseline (`baseline_cumulative_hazard_`) as a step function; "
                          "its `predict_survival_function(times=...)` interpolates the cumulative hazard linearly "
                          f"between event times and gives IBS {c['models']['lifelines_efron']['ibs_interpolated']:.6f}."]
        lines += ["", "| pair | coincide | max coef diff | C diff | Uno diff | IBS diff | within 1e-6 |",
                  "|---|---|---|---|---|---|---|"]
        for p in c["pairs"]:
            lines.append(f"| {p['a']} vs {p['b']} | {'yes' if p['coincide'] else 'no'} | {p['max_coef_diff']:.2e} | "
                         f"{p['harrell_c_diff']:.2e} | {p['uno_c_diff']:.2e} | {p['ibs_diff']:.2e} | "
                         f"{'yes' if p.get('within_tol') else ('-' if not p['coincide'] else 'NO')} |")
        d = r["discrete"]
        k, q = d["km_every_event_time"], d["person_period_logistic"]
        lines += ["", "### Discrete-time hazard", "",
                  "| check | coincide | max abs diff | within 1e-6 |", "|---|---|---|---|",
                  f"| no covariates, a cut at each of the {k['intervals']} event times, S vs Kaplan-Meier | yes | "
                  f"{k['max_abs_diff']:.2e} | {'yes' if k['within_tol'] else 'NO'} |"]
        for conv in ("completed", "midpoint"):
            v = d[f"km_10_intervals_{conv}"]
            lines.append(f"| no covariates, {v['intervals']} default intervals, censoring={conv}, S vs Kaplan-Meier "
                         f"at the cuts | no | {v['max_abs_diff']:.3f} | - |")
        lines += [f"| covariates, {q['intervals']} intervals, vs person-period logistic regression "
                  f"({q['person_period_rows']} rows): coefficients / intercepts | yes | "
                  f"{q['max_coef_diff']:.2e} / {q['max_intercept_diff']:.2e} | {'yes' if q['within_tol'] else 'NO'} |",
                  "", f"Fit: ecgfm {q['fit_s']:.3f} s ({q['iterations']} L-BFGS iterations), scikit-learn "
                      f"{q['sklearn_fit_s']:.3f} s.", ""]
        h = r["held_out"]
        lines += ["### Held-out 30 % (stratified by event, seed 0)", "",
                  f"{h['n_train']} training / {h['n_test']} test records ({h['events_test']} test events); "
                  f"IBS over [{h['ibs_grid'][0]:g}, {h['ibs_grid'][1]:g}].", "",
                  "| model | Harrell's C | Uno's C | IBS | fit (s) |", "|---|---|---|---|---|"]
        for m in ("cox_efron", "discrete_hazard"):
            v = h[m]
            lines.append(f"| {m} | {v['harrell_c']:.4f} | {v['uno_c']:.4f} | {v['ibs']:.4f} | {v['fit_s']:.3f} |")
        lines.append("")
    lines += ["## Reading", "",
              "- ecgfm's Cox fit with Breslow ties is scikit-survival's `CoxPHSurvivalAnalysis(ties=\"breslow\")`, "
              "with Efron ties scikit-survival's `ties=\"efron\"` and lifelines' `CoxPHFitter`: the same maximum "
              "partial-likelihood estimate, the same Breslow baseline hazard, hence the same survival curves and "
              "figures. Breslow and Efron differ where event times are tied.",
              "- The discrete-time model without covariates reproduces Kaplan-Meier exactly when every event time "
              "is a cut. With coarse intervals it does not: a record censored inside an interval says nothing "
              "about it (`censoring=\"completed\"`, the default) or counts as surviving it when followed past the "
              "midpoint (`\"midpoint\"`); the table shows how far either is from Kaplan-Meier at the cuts.",
              "- With covariates, the discrete-time model is exactly a logistic regression on the person-period "
              "rows with one dummy per interval, and ecgfm's L-BFGS fit finds the same maximum.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result: dict = {"machine": machine(), "load": load_note(), "tolerance": TOL, "datasets": {}}
    for name in DATASETS:
        print(f"{name} ...", flush=True)
        result["datasets"][name] = {"cox": cox_comparison(name), "discrete": discrete_comparison(name),
                                    "held_out": held_out(name)}
    result["load_after"] = load_note()
    checks = [p.get("within_tol") for r in result["datasets"].values() for p in r["cox"]["pairs"] if p["coincide"]]
    checks += [r["discrete"][k]["within_tol"] for r in result["datasets"].values()
               for k in ("km_every_event_time", "person_period_logistic")]
    result["all_coinciding_within_tol"] = bool(all(checks))
    write_results(args.out, "survival", result, page(result))
    print(f"all coinciding models within {TOL:g}: {result['all_coinciding_within_tol']}")
    return result


if __name__ == "__main__":
    main()
