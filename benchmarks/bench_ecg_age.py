"""ECG-age on PTB-XL: a regression head for age, its error on fold 10, and the age gap.

The model is trained with ``ecgfm train --config configs/train/ptbxl_age.yaml`` (the default
model's recipe with a regression head on the manifest's ``age``; folds 1-8 train, 9 validation,
10 test). This script scores it on fold 10: mean absolute error, RMSE, Pearson correlation and
R^2 with patient-bootstrap 95% intervals, against the baseline that predicts the training
mean; then the age gap (ECG-age minus age) by sex and in normal ECGs vs ECGs with any
diagnostic abnormality (an older-looking ECG is the known risk marker).

    python benchmarks/bench_ecg_age.py --model runs/ptbxl_age/model [--store corpora/ptbxl100]

Writes ``docs/benchmarks/ecg_age.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _machine import load_note, machine, write_results
from bench_default_model import DATA, DEFAULT_STORE, ROOT, ensure_store


def test_predictions(model: Any, store: Path) -> dict[str, np.ndarray]:
    """ECG-age, age, sex, patient and normal/abnormal of every test record (age known)."""
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_label_columns

    corpus = with_label_columns(Corpus.open(store), ["labels", "superdiagnostic"])
    c = model.input
    ds = CorpusDataset(corpus, split="test", window=c.seconds, crop="center", leads=c.leads,
                       label_ids=["superdiagnostic:NORM", "superdiagnostic:MI", "superdiagnostic:STTC",
                                  "superdiagnostic:CD", "superdiagnostic:HYP"])
    batch = ds.__getitems__(list(range(len(ds))))
    pred = np.concatenate([model.forward(batch["signal"][i:i + 64], batch["mask"][i:i + 64]).numpy()[:, 0]
                           for i in range(0, len(ds), 64)])
    rows = batch["record"].numpy()
    manifest = corpus.manifest
    age = manifest["age"].astype(float).to_numpy()[rows]
    labels = batch["labels"].numpy()
    keep = np.isfinite(age)
    return {"pred": pred[keep], "age": age[keep], "sex": manifest["sex"].astype(str).to_numpy()[rows][keep],
            "patient": manifest["patient_key"].to_numpy()[rows][keep],
            "normal": ((labels[:, 0] == 1) & (labels[:, 1:].sum(1) == 0))[keep],
            "abnormal": (labels[:, 1:].sum(1) > 0)[keep]}


def _stats(pred: np.ndarray, age: np.ndarray, train_mean: float) -> dict[str, float]:
    err = pred - age
    r = float(np.corrcoef(pred, age)[0, 1])
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "pearson_r": r,
            "r2": float(1 - (err ** 2).sum() / ((age - age.mean()) ** 2).sum()),
            "baseline_mae": float(np.abs(train_mean - age).mean())}


def bootstrap(pred: np.ndarray, age: np.ndarray, patient: np.ndarray, train_mean: float,
              n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Patient-bootstrap 95% intervals of each statistic."""
    ids, inverse = np.unique(patient, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    samples: dict[str, list[float]] = {}
    for b in range(n):
        draw = np.random.default_rng([seed, b]).integers(0, len(ids), len(ids))
        idx = np.concatenate([members[k] for k in draw])
        for key, value in _stats(pred[idx], age[idx], train_mean).items():
            samples.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def page(result: dict[str, Any]) -> str:
    s, ci = result["test"], result["ci"]
    lines = [
        "# ECG-age on PTB-XL",
        "",
        "Written by `benchmarks/bench_ecg_age.py`. A ResNet1D-18 regression head on age "
        "(`configs/train/ptbxl_age.yaml`: the default model's recipe; folds 1-8 train = "
        f"{result['n_train']} records, 9 validation, 10 test = {result['n_test']} records with a known age). "
        f"Patient-bootstrap 95% intervals, {result['resamples']} resamples.",
        "",
        f"Machine: {result['machine'].get('cpu', '?')}, {result['machine'].get('cores', '?')} cores. {result['load']}",
        "",
        "| metric | ECG-age | predicting the training mean age |",
        "|---|---|---|",
        f"| MAE (years) | {s['mae']:.2f} [{ci['mae'][0]:.2f}, {ci['mae'][1]:.2f}] | "
        f"{s['baseline_mae']:.2f} [{ci['baseline_mae'][0]:.2f}, {ci['baseline_mae'][1]:.2f}] |",
        f"| RMSE (years) | {s['rmse']:.2f} [{ci['rmse'][0]:.2f}, {ci['rmse'][1]:.2f}] | |",
        f"| Pearson r | {s['pearson_r']:.3f} [{ci['pearson_r'][0]:.3f}, {ci['pearson_r'][1]:.3f}] | 0 |",
        f"| R^2 | {s['r2']:.3f} [{ci['r2'][0]:.3f}, {ci['r2'][1]:.3f}] | |",
        "",
        "## The age gap (ECG-age minus age, years; mean +- SD)",
        "",
        "| group | n | age gap |",
        "|---|---:|---|",
    ]
    for name, g in result["gap"].items():
        lines.append(f"| {name} | {g['n']} | {g['mean']:+.2f} +- {g['sd']:.2f} |")
    lines += ["", f"Difference abnormal - normal: {result['gap_difference'][0]:+.2f} years "
              f"[{result['gap_difference'][1]:+.2f}, {result['gap_difference'][2]:+.2f}] (patient bootstrap). "
              "Regression to the mean makes the gap fall with age (young people look older, old people "
              "younger), so the groups are also compared after adjusting the gap for age "
              f"(residual of gap ~ age): {result['gap_difference_adjusted'][0]:+.2f} years "
              f"[{result['gap_difference_adjusted'][1]:+.2f}, {result['gap_difference_adjusted'][2]:+.2f}].", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "ptbxl_age" / "model"))
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args(argv)
    if not (DATA / "ptb-xl" / "ptbxl_database.csv").is_file():
        print(f"skipped: PTB-XL not found under {DATA}", file=sys.stderr)
        return {}
    from ecgfm.models.portable import load_model
    from ecgfm.store.format import Corpus

    model = load_model(args.model)
    store = ensure_store(args.store)
    manifest = Corpus.open(store).manifest
    train_age = manifest.loc[manifest["split"] == "train", "age"].astype(float)
    train_mean = float(train_age.mean())
    d = test_predictions(model, store)
    gap = d["pred"] - d["age"]
    slope, intercept = np.polyfit(d["age"], gap, 1)
    adjusted = gap - (slope * d["age"] + intercept)
    groups = {"all": np.ones(len(gap), bool), "female": d["sex"] == "F", "male": d["sex"] == "M",
              "normal ECG": d["normal"], "any diagnostic abnormality": d["abnormal"]}

    def difference(values: np.ndarray) -> list[float]:
        point = float(values[d["abnormal"]].mean() - values[d["normal"]].mean())
        ids, inverse = np.unique(d["patient"], return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
        draws = []
        for b in range(args.resamples):
            idx = np.concatenate([members[k] for k in np.random.default_rng([1, b]).integers(0, len(ids), len(ids))])
            a, n = d["abnormal"][idx], d["normal"][idx]
            draws.append(values[idx][a].mean() - values[idx][n].mean())
        return [round(point, 3), round(float(np.percentile(draws, 2.5)), 3), round(float(np.percentile(draws, 97.5)), 3)]

    result = {
        "machine": machine(), "load": load_note(), "resamples": args.resamples,
        "n_train": int(len(train_age.dropna())), "n_test": int(len(gap)),
        "test": {k: round(v, 4) for k, v in _stats(d["pred"], d["age"], train_mean).items()},
        "ci": {k: [round(x, 4) for x in v] for k, v in
               bootstrap(d["pred"], d["age"], d["patient"], train_mean, args.resamples).items()},
        "gap": {name: {"n": int(m.sum()), "mean": round(float(gap[m].mean()), 3), "sd": round(float(gap[m].std()), 3)}
                for name, m in groups.items() if m.any()},
        "gap_difference": difference(gap), "gap_difference_adjusted": difference(adjusted),
    }
    write_results(args.out, "ecg_age", result, page(result))
    print(page(result))
    return result


if __name__ == "__main__":
    main()
