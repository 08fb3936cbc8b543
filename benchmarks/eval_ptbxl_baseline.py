"""Real predictions to evaluate before any deep model exists: a feature baseline on PTB-XL.

Reads every PTB-XL record in shared data (2357; 100 Hz files where present, else the 500 Hz
files resampled), computes ~100 hand-made features per record (per-lead amplitude, slope and
band-power fractions; heart rate and RR irregularity from a simple QRS detector; age and sex),
fits one-vs-rest L2 logistic regression on folds 1-8 for every PTB-XL statement with at least
10 training positives (plus the 5 superclasses), and writes probabilities for folds 9
(validation) and 10 (test). The same model is applied to the CinC 2021 sample records as an
external cohort (their SNOMED labels mapped to catalogue ids).

Outputs in ``--out`` (default ``/tmp/ecgfm-eval-ptbxl``):
    predictions.csv        record_id + one probability column per condition (PTB-XL val + test)
    labels.csv             record_id, patient_id, age, sex, split, cohort + 0/1 per condition
    external_predictions.csv / external_labels.csv    CinC 2021 samples, same columns

These files feed ``ecgfm evaluate`` and ``benchmarks/bench_eval_report.py``. With
``--efficiency`` it also runs the data-efficiency harness (``ecgfm.evaluate.efficiency``): the
same model refitted on 1%, 10% and 100% of the training patients, 3 repeats each, scored by macro
AUROC on the test fold, written to ``docs/benchmarks/data_efficiency.{json,md}``. Usage::

    python benchmarks/eval_ptbxl_baseline.py [--out DIR] [--efficiency]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FS = 100.0
MIN_TRAIN_POSITIVES = 10


def _pipeline():
    from ecgfm.preprocess import Pipeline
    from ecgfm.preprocess.steps import BandPass, CropOrPad, Resample, SelectLeads

    return Pipeline((SelectLeads(leads=tuple(_leads()), derive=True), Resample(fs=FS),
                     BandPass(low=0.5, high=40.0), CropOrPad(seconds=10.0, mode="start")))


def _leads() -> tuple[str, ...]:
    from ecgfm.leads import STANDARD_12

    return STANDARD_12


def features(signal: np.ndarray, fs: float) -> np.ndarray:
    """~100 features of one preprocessed record ``[12, samples]`` (mV, band-passed)."""
    from scipy.signal import find_peaks, welch

    x = signal.astype(np.float64)
    std = x.std(axis=1)
    p1, p99 = np.percentile(x, [1, 99], axis=1)
    slope = np.abs(np.diff(x, axis=1)).mean(axis=1) * fs
    skew = ((x - x.mean(axis=1, keepdims=True)) ** 3).mean(axis=1) / np.maximum(std, 1e-6) ** 3
    f, pxx = welch(x, fs=fs, nperseg=256, axis=1)
    total = pxx[:, (f >= 0.5) & (f <= 40)].sum(axis=1) + 1e-12
    bands = [pxx[:, (f >= lo) & (f < hi)].sum(axis=1) / total for lo, hi in ((0.5, 3), (3, 8), (8, 15), (15, 40))]
    # QRS detector on the summed absolute slope across leads: peaks at least 250 ms apart.
    energy = np.abs(np.diff(x, axis=1)).sum(axis=0)
    peaks, _ = find_peaks(energy, height=np.percentile(energy, 98) * 0.35, distance=int(0.25 * fs))
    rr = np.diff(peaks) / fs
    if rr.size >= 2:
        hr, rr_cv = 60.0 / np.median(rr), rr.std() / rr.mean()
        rr_diff = np.abs(np.diff(rr)).mean()
    else:
        hr, rr_cv, rr_diff = 0.0, 0.0, 0.0
    per_lead = np.concatenate([std, p99 - p1, p1, p99, slope, skew, *bands])
    return np.concatenate([per_lead, [hr, rr_cv, rr_diff, peaks.size]])


def _fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest L2 logistic regression (L-BFGS), all columns at once."""
    from scipy.optimize import minimize
    from scipy.special import expit

    n, d = x.shape
    k = y.shape[1]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        z = x @ w + b
        loss = float((np.logaddexp(0.0, z) - y * z).sum()) / n + 0.5 * l2 * float((w * w).sum())
        g = (expit(z) - y) / n
        return loss, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])

    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    theta0 = np.concatenate([np.zeros(d * k), np.log(prior / (1 - prior))])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[: d * k].reshape(d, k), res.x[d * k:]


def _ptbxl(pipeline) -> tuple[list[dict], np.ndarray]:
    import pandas as pd

    from ecgfm.io import read
    from ecgfm.labels import ptbxl_groups

    root = DATA / "ptb-xl"
    db = pd.read_csv(root / "ptbxl_database.csv")
    rows, feats = [], []
    for r in db.itertuples():
        name = r.filename_lr if isinstance(r.filename_lr, str) and r.filename_lr else r.filename_hr
        ecg = pipeline(read(root / f"{name}.hea"))
        groups = ptbxl_groups(r.scp_codes)
        fold = int(r.strat_fold)
        rows.append({
            "record_id": f"ptbxl-{int(r.ecg_id):05d}", "patient_id": f"ptbxl-{int(r.patient_id)}",
            "age": float(r.age) if r.age == r.age and r.age <= 120 else np.nan,
            "sex": "M" if int(r.sex) == 0 else "F",  # PTB-XL codes male 0, female 1
            "strat_fold": fold, "split": "train" if fold <= 8 else ("val" if fold == 9 else "test"),
            "cohort": "PTB-XL", "labels": set(groups["all"]) | set(groups["superdiagnostic"]),
        })
        feats.append(features(ecg.signal, ecg.fs))
    return rows, np.array(feats)


def _cinc(pipeline) -> tuple[list[dict], np.ndarray]:
    from ecgfm.io import read
    from ecgfm.labels import load_catalogue, map_cinc_dx

    cat = load_catalogue()
    rows, feats = [], []
    for hea in sorted((DATA / "cinc2021").glob("*.hea")):
        ecg = read(hea)
        ids = set(map_cinc_dx(ecg.meta.extra.get("dx") or []).ids)
        # Roll labels up to the PTB-XL superclasses the catalogue gives them.
        supers = {cat[i].ptbxl_class for i in ids if i in cat and cat[i].ptbxl_class}
        rows.append({
            "record_id": f"cinc-{hea.stem}", "patient_id": f"cinc-{hea.stem}",
            "age": ecg.meta.age if ecg.meta.age is not None else np.nan, "sex": ecg.meta.sex,
            "strat_fold": 0, "split": "test", "cohort": f"CinC2021-{hea.stem[:1] if hea.stem[:1] != 'H' else 'HR'}",
            "labels": ids | supers,
        })
        feats.append(features(pipeline(ecg).signal, FS))
    return rows, np.array(feats)


def _with_demographics(x: np.ndarray, rows: list[dict]) -> np.ndarray:
    age = np.array([r["age"] for r in rows], float)
    sex = np.array([1.0 if r["sex"] == "F" else 0.0 for r in rows])
    return np.column_stack([x, np.nan_to_num(age, nan=60.0), sex])


def _write(out: Path, stem: str, rows: list[dict], prob: np.ndarray, classes: list[str]) -> None:
    import pandas as pd

    meta = pd.DataFrame([{k: v for k, v in r.items() if k != "labels"} for r in rows])
    y = np.array([[c in r["labels"] for c in classes] for r in rows], dtype=int)
    pd.concat([meta, pd.DataFrame(y, columns=classes)], axis=1).to_csv(out / f"{stem}labels.csv", index=False)
    pred = pd.DataFrame(prob, columns=classes)
    pred.insert(0, "record_id", meta["record_id"])
    pred.to_csv(out / f"{stem}predictions.csv", index=False, float_format="%.6g")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ecgfm-eval-ptbxl"))
    parser.add_argument("--efficiency", action="store_true", help="also run the data-efficiency curve")
    args = parser.parse_args(argv)
    if not (DATA / "ptb-xl" / "ptbxl_database.csv").is_file():
        print(f"skipped: PTB-XL not found under {DATA}", file=sys.stderr)
        return 0
    from scipy.special import expit

    pipeline = _pipeline()
    rows, x = _ptbxl(pipeline)
    x = _with_demographics(x, rows)
    train = np.array([r["split"] == "train" for r in rows])
    every = sorted({c for r in rows for c in r["labels"]})
    y_all = np.array([[c in r["labels"] for c in every] for r in rows], float)
    classes = [c for c, n in zip(every, y_all[train].sum(axis=0)) if n >= MIN_TRAIN_POSITIVES]
    y = y_all[:, [every.index(c) for c in classes]]
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-9
    z = (x - mu) / sd
    w, b = _fit(z[train], y[train])
    held = ~train
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out, "", [r for r, h in zip(rows, held) if h], expit(z[held] @ w + b), classes)

    ext_rows, x_ext = _cinc(pipeline)
    z_ext = (_with_demographics(x_ext, ext_rows) - mu) / sd
    _write(args.out, "external_", ext_rows, expit(z_ext @ w + b), classes)
    print(f"{len(classes)} conditions; {int(train.sum())} training records; "
          f"{int(held.sum())} PTB-XL val/test and {len(ext_rows)} CinC 2021 records -> {args.out}")
    if args.efficiency:
        test = np.array([r["split"] == "test" for r in rows])
        efficiency(z[train], y[train], [r["patient_id"] for r, t in zip(rows, train) if t], z[test], y[test])
    return 0


def efficiency(x: np.ndarray, y: np.ndarray, patients: list[str], x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Macro AUROC on the test fold vs the fraction of training patients (nested, 3 repeats)."""
    import time

    from scipy.special import expit

    from ecgfm.evaluate.efficiency import data_efficiency, plot_efficiency, summarise
    from ecgfm.evaluate.metrics import auroc

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import machine, write_results

    def fit_predict(idx: np.ndarray) -> np.ndarray:
        w, b = _fit(x[idx], y[idx])
        return expit(x_test @ w + b)

    def score(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        per = auroc(truth, scores)
        return {"macro_auroc": float(np.nanmean(per)), "conditions_scored": int(np.isfinite(per).sum())}

    t0 = time.perf_counter()
    table = data_efficiency(fit_predict, y, patients, y_test, score=score, fractions=(0.01, 0.1, 1.0),
                            repeats=3, seed=0, reuse_identical=True)
    seconds = time.perf_counter() - t0
    summary = summarise(table)
    out = ROOT / "docs" / "benchmarks"
    ax = plot_efficiency(None, table, metric="macro_auroc")
    ax.figure.savefig(out / "data_efficiency.png", dpi=110, bbox_inches="tight")
    rows = "\n".join(
        f"| {r.fraction:.0%} | {r.n_train:.0f} | {r.macro_auroc_mean:.3f} +- {r.macro_auroc_sd:.3f} |"
        for r in summary.itertuples())
    page = f"""# Data efficiency of the PTB-XL feature baseline

Command: `python benchmarks/eval_ptbxl_baseline.py --efficiency`

The harness `ecgfm.evaluate.efficiency.data_efficiency` on real records: the logistic-regression
feature baseline of `benchmarks/eval_ptbxl_baseline.py` refitted on nested patient-level subsets
of PTB-XL folds 1-8 (1%, 10%, 100% of the training records; 3 repeats with different patients;
every condition keeps at least one positive), scored by macro AUROC over the {y.shape[1]}
conditions on fold 10. {seconds:.1f} s in all.

| fraction of training labels | training records (mean) | macro AUROC, mean +- SD over repeats |
|---|---|---|
{rows}

![macro AUROC vs fraction of training labels](data_efficiency.png)
"""
    result = {"machine": machine(), "command": "python benchmarks/eval_ptbxl_baseline.py --efficiency",
              "seconds": round(seconds, 2), "table": table.to_dict(orient="records"),
              "summary": summary.to_dict(orient="records")}
    write_results(out, "data_efficiency", result, page)


if __name__ == "__main__":
    sys.exit(main())
