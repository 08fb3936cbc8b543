"""Active learning for noisy labels on PTB-XL: can the rankings find flipped labels, and does
correcting the records they find win back the test AUROC the noise cost?

Protocol (fixed before any result was seen; docs/active_learning.md repeats it):

* Data: the PTB-XL store ``corpora/ptbxl100`` (100 Hz; folds 1-8 train, 9 validation, 10 test,
  patients never cross folds). Task: the 5 diagnostic superclasses (``superdiagnostic:CD, HYP,
  MI, NORM, STTC``), multi-label.
* Noise: for rate r in {10%, 20%}, ``round(r * N_train)`` training records drawn uniformly
  without replacement (``numpy.random.default_rng([11, round(100 r)])``); each gets one
  superclass, drawn uniformly from the five, flipped (present -> absent or absent -> present).
  Validation and test labels are untouched. The noisy labels are a ``data.overrides`` file.
* Out-of-fold predictions: 4-fold patient-grouped cross-validation over the noisy training split
  (:func:`ecgfm.active.out_of_fold`, fold seed 0), each fold trained with recipe R, plus 8
  Monte-Carlo dropout passes per held-out record.
* Recipe R: ``configs/train/ptbxl_default.yaml`` (ResNet1D-18, 5 s random crops, light
  augmentation, AdamW + cosine) with the 5 superclass labels, 15 epochs, 50 warm-up steps; the
  best epoch by validation macro AUROC (clean fold 9) is exported.
* Rankings: confident learning (the primary ranking, chosen a priori), per-sample BCE loss,
  predictive entropy, BALD over the dropout passes, and random (a seeded draw; the expected
  precision of a random choice is the noise rate). precision@K at K = the number of flipped
  records and K/2; a record counts as found when its label was flipped.
* Correction: the top K of the confident ranking go through the real loop: the queue
  (:func:`ecgfm.active.review_queue`), a simulated annotator who writes each queued record's
  clean labels into ``corrected_labels``, :func:`ecgfm.active.fold_back` into an overrides file;
  the same for K records of the random ranking.
* Retraining with recipe R, seeds 0, 1 and 2: clean labels, noisy labels,
  noisy + top-K corrected, noisy + K random corrected. Test (fold 10) macro AUROC with a patient-bootstrap 95% interval
  (1000 resamples); AUROC lost = clean - noisy, recovered fraction = (top-K - noisy) /
  (clean - noisy), on the means over seeds.
* Targets (issue 11): precision@K at least 3x random; the corrected model recovers at least
  half of the AUROC lost.

Protocol v2 (fixed before the second draw's results; docs/active_learning.md): two more rankings,
confident learning on cross-fitted linear probes over the frozen self-supervised masked-modelling
encoder of bench_ssl.py (``--encoder``) and on the mean of the network's and the probe's
probabilities (the ensemble, now the primary ranking whose top K is corrected: ``--primary``);
the targets are assessed on a second noise draw, ``--noise-seed 12``.

Every training runs in a subprocess with ``OMP_NUM_THREADS=1``, two at a time, logging to
``<cache>/logs/``; every run's outputs are cached under ``<cache>`` (default
``/tmp/ecgfm-bench-cache/active``), so a rerun resumes where it stopped.

    python benchmarks/bench_ssl.py --objectives masked --pretrain-only   # the encoder of the probes, once
    python benchmarks/bench_active_learning.py --noise-seed 12 --name active_learning_v2   # v2, second draw
    python benchmarks/bench_active_learning.py            # the first draw (about 60 min on 2 busy cores)
    python benchmarks/bench_active_learning.py --quick    # a smoke test of the pipeline (tiny runs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import load_note, machine, write_results  # noqa: E402

STORE = ROOT / "corpora" / "ptbxl100"
CONFIG = ROOT / "configs" / "train" / "ptbxl_default.yaml"
ENCODER = ROOT / "runs" / "bench_ssl" / "pretrain_masked" / "model"  # 30 epochs of masked modelling, no labels
CLASSES = ("CD", "HYP", "MI", "NORM", "STTC")
LABELS = tuple(f"superdiagnostic:{c}" for c in CLASSES)
RATES = (10, 20)
NOISE_SEED = 11  # the first draw's seed (the one the protocol was fixed on)
METHODS = ("confident", "probe", "ensemble", "loss", "entropy", "bald", "random")
PRIMARY = "ensemble"  # the ranking whose top K is corrected (protocol v2; v1 used "confident")
CONDITIONS = ("clean", "noisy", "top", "random")
TINY = ["model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1], head_dropout: 0.5}"]


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
def recipe(args: argparse.Namespace) -> list[str]:
    """Overrides of recipe R on top of configs/train/ptbxl_default.yaml."""
    items = [f"data.store={json.dumps(str(args.store))}", f"data.labels={json.dumps(list(LABELS))}",
             "data.label_columns=[superdiagnostic]", "data.test_split=test", "optim.warmup_steps=50",
             "trainer.progress=none", "trainer.loggers=[csv]", "trainer.num_sanity_val_steps=0"]
    if args.quick:
        return items + TINY + ["trainer.max_steps=3", "trainer.max_epochs=1"]
    return items + [f"trainer.max_epochs={args.epochs}"]


def cache_dir(args: argparse.Namespace, noise_free: bool = False) -> Path:
    """Where one noise draw's runs are kept; runs on clean labels are shared by every draw."""
    base = "quick" if args.quick else "full"
    if noise_free or args.noise_seed == NOISE_SEED:
        return Path(args.cache) / base
    return Path(args.cache) / f"{base}-noise{args.noise_seed}"


def train_records(store: Path) -> tuple[list[str], np.ndarray]:
    """Training record ids (manifest order) and their clean labels ``[N, 5]``."""
    from ecgfm.active import given_labels
    from ecgfm.store.format import Corpus

    m = Corpus.open(store).manifest
    ids = m.loc[m["split"] == "train", "record_id"].astype(str).tolist()
    return given_labels(store, LABELS, record_ids=ids)


def make_noise(args: argparse.Namespace, rate: int) -> dict[str, Any]:
    """Write the noisy-label overrides of one rate (and the list of flipped records)."""
    import pandas as pd

    out = cache_dir(args) / f"noise{rate}"
    out.mkdir(parents=True, exist_ok=True)
    ids, clean = train_records(args.store)
    rng = np.random.default_rng([args.noise_seed, rate])
    n = round(rate / 100 * len(ids))
    chosen = np.sort(rng.choice(len(ids), size=n, replace=False))
    classes = rng.integers(0, len(CLASSES), size=n)
    noisy = clean.copy()
    noisy[chosen, classes] = 1 - noisy[chosen, classes]
    flipped = pd.DataFrame({"record_id": [ids[i] for i in chosen], "class": [CLASSES[c] for c in classes],
                            "clean": [";".join(CLASSES[j] for j in np.flatnonzero(clean[i])) for i in chosen],
                            "noisy": [";".join(CLASSES[j] for j in np.flatnonzero(noisy[i])) for i in chosen]})
    flipped.to_csv(out / "flipped.csv", index=False)
    # the overrides: the superdiagnostic column (ids without the prefix) of the flipped records
    pd.DataFrame({"record_id": flipped["record_id"], "superdiagnostic": flipped["noisy"]}).to_csv(
        out / "noisy.csv", index=False)
    return {"dir": out, "ids": ids, "clean": clean, "noisy": noisy, "flipped": np.isin(np.arange(len(ids)), chosen),
            "classes": dict(zip(chosen.tolist(), classes.tolist()))}


# ---------------------------------------------------------------------------------------------
# jobs (each in its own process, one thread)
# ---------------------------------------------------------------------------------------------
def run_dir(args: argparse.Namespace, name: str, seed: int) -> Path:
    return cache_dir(args, noise_free=name == "clean") / "runs" / f"{name}-s{seed}"


def run_name(args: argparse.Namespace, condition: str, rate: int) -> str:
    """The cached run of a condition: the top-K runs carry the ranking that chose their records."""
    if condition == "clean":
        return "clean"
    if condition == "top" and args.primary != "confident":
        return f"top-{args.primary}{rate}"
    return f"{condition}{rate}"


def overrides_of(args: argparse.Namespace, name: str) -> Path | None:
    if name == "clean":
        return None
    condition, rate = name[:-2], name[-2:]
    base = cache_dir(args) / f"noise{rate}"
    return base / ("noisy.csv" if condition == "noisy" else f"corrected_{condition}.csv")


def job_train(args: argparse.Namespace, name: str, seed: int) -> None:
    from ecgfm.train.run import train

    out = run_dir(args, name, seed)
    if (out / "result.json").is_file():
        return
    items = recipe(args) + [f"out_dir={json.dumps(str(out))}", f"seed={seed}", "resume=auto"]
    ov = overrides_of(args, name)
    if ov is not None:
        items.append(f"data.overrides={json.dumps(str(ov))}")
    result = train(CONFIG, items)
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


def job_oof(args: argparse.Namespace, rate: int) -> None:
    from ecgfm.active import out_of_fold

    base = cache_dir(args) / f"noise{rate}"
    if (base / "oof" / "done.json").is_file():
        return
    t0 = time.perf_counter()
    items = recipe(args) + [f"data.overrides={json.dumps(str(base / 'noisy.csv'))}", "seed=0",
                            f"out_dir={json.dumps(str(base / 'oof-runs'))}"]
    oof = out_of_fold(CONFIG, args.folds, base / "oof", items, mc_passes=args.mc_passes, log=print)
    (base / "oof" / "done.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "runs": oof.runs},
                                                        indent=1, default=str) + "\n")


def done(args: argparse.Namespace, job: str) -> bool:
    kind, *rest = job.split(":")
    if kind == "oof":
        return (cache_dir(args) / f"noise{rest[0]}" / "oof" / "done.json").is_file()
    return (run_dir(args, rest[0], int(rest[1])) / "result.json").is_file()


# ---------------------------------------------------------------------------------------------
# rankings and corrections (in the main process)
# ---------------------------------------------------------------------------------------------
def rankings(args: argparse.Namespace, noise: dict[str, Any]) -> dict[str, Any]:
    """precision@K of every ranking, and the corrected-label overrides of the top K and K random."""
    from ecgfm.active import (
        confident_learning,
        fold_back,
        random_ranking,
        read_predictions,
        review_queue,
        sample_loss,
        uncertainty,
    )
    from ecgfm.active import precision_at_k as prec

    base = noise["dir"]
    ids, labels, probs = read_predictions(base / "oof" / "oof.csv", LABELS)
    if ids != noise["ids"]:
        raise RuntimeError(f"{base / 'oof' / 'oof.csv'}: records differ from the training split")
    _, _, mc = read_predictions(base / "oof" / "oof_mc.csv", LABELS)
    given, flipped = noise["noisy"], noise["flipped"]
    n, k = len(ids), int(flipped.sum())
    probe, probe_info = probe_predictions(args, noise, ids)
    both = np.stack([probs[0], probe])  # the network's and the probe's out-of-fold probabilities
    ranks = {
        "confident": confident_learning(given, probs, labels=labels),
        "probe": confident_learning(given, probe, labels=labels),
        "ensemble": confident_learning(given, both, labels=labels),
        "loss": sample_loss(given, probs, labels=labels),
        "entropy": uncertainty(probs, labels=labels, kind="entropy"),
        "bald": uncertainty(mc, labels=labels, kind="bald"),
        "random": random_ranking(n, seed=0),
    }
    rate = k / n
    # a random choice of k records: hypergeometric, mean k * rate; its standard deviation
    sd = {kk: float(np.sqrt(rate * (1 - rate) / kk * (n - kk) / (n - 1))) for kk in (k, k // 2)}
    out: dict[str, Any] = {"n_train": n, "n_flipped": k, "random_expected": rate,
                           "random_sd": {str(kk): v for kk, v in sd.items()}, "precision": {}}
    for name, r in ranks.items():
        out["precision"][name] = {str(kk): prec(r, flipped, kk) for kk in (k, k // 2)}
    # the confident ranking's label-level hit: is the flipped class among the flagged issues?
    cl = ranks["confident"]
    top = cl.top(k)
    hits = [i for i in top if flipped[i]]
    right_class = sum(bool(cl.issues[i, noise["classes"][i]]) for i in hits)
    out["confident_flagged"] = int(cl.issues.any(axis=1).sum())
    out["confident_right_class"] = right_class / max(len(hits), 1)
    out["auroc_oof_noisy"] = _macro_auroc(given, probs[0])
    out["auroc_oof_clean"] = _macro_auroc(noise["clean"], probs[0])
    out["probe"] = {**probe_info, "auroc_oof_noisy": _macro_auroc(given, probe),
                    "auroc_oof_clean": _macro_auroc(noise["clean"], probe)}
    out["ensemble_auroc_oof_clean"] = _macro_auroc(noise["clean"], both.mean(axis=0))
    out["primary"] = args.primary

    # the loop: queue -> simulated annotator (clean labels) -> fold_back -> overrides
    inputs = {"confident": probs, "probe": probe[None], "ensemble": both, "random": probs}
    top_condition = run_name(args, "top", 0)[:-1]
    for condition, method in ((top_condition, args.primary), ("random", "random")):
        queue = review_queue(ids, given, inputs[method], labels, method="random" if method == "random" else "confident",
                             top=k, seed=0)
        where = {r: i for i, r in enumerate(ids)}
        queue["corrected_labels"] = [";".join(labels[j] for j in np.flatnonzero(noise["clean"][where[r]])) or "none"
                                     for r in queue["record_id"]]
        queue.to_csv(base / f"queue_{condition}.csv", index=False)
        summary = fold_back(base / f"queue_{condition}.csv", base / f"corrected_{condition}.csv", store=args.store,
                            overrides=base / "noisy.csv")
        # check: the labels after the fold-back are clean exactly where the queue found a flip
        from ecgfm.active import given_labels

        _, after = given_labels(args.store, LABELS, record_ids=ids, overrides=base / f"corrected_{condition}.csv")
        queued = np.isin(ids, queue["record_id"])
        expected = np.where(queued[:, None], noise["clean"], noise["noisy"])
        if not np.array_equal(after, expected):
            raise RuntimeError(f"fold_back of {condition}: the overrides do not give the expected labels")
        out[f"corrected_{condition.split('-')[0]}"] = {"queued": k, "ranking": method, "flips_fixed": int((queued & flipped).sum()),
                                         "changed": summary["changed"], "confirmed": summary["unchanged"]}
    return out


def probe_predictions(args: argparse.Namespace, noise: dict[str, Any], ids: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold probabilities of linear probes on the frozen self-supervised encoder, on the
    network's folds (the same patients held out together)."""
    import pandas as pd

    from ecgfm.active import probe_out_of_fold

    if not (args.encoder / "config.json").is_file():
        raise SystemExit(f"{args.encoder}: no self-supervised encoder; pretrain it with "
                         "python benchmarks/bench_ssl.py --objectives masked --pretrain-only")
    base = noise["dir"]
    oof = probe_out_of_fold(args.encoder, args.store, LABELS, folds=args.folds, out_dir=base / "probe",
                            overrides=base / "noisy.csv", seed=0, window=10.0)
    network_folds = pd.read_csv(base / "oof" / "folds.csv", dtype={"record_id": str})
    if list(oof.record_ids) != ids or network_folds["fold"].tolist() != oof.folds.tolist():
        raise RuntimeError(f"{base / 'probe'}: the probes' folds are not the network's")
    if not np.array_equal(oof.given, noise["noisy"]):
        raise RuntimeError(f"{base / 'probe'}: the probes were fitted on other labels than the noisy ones")
    return oof.probabilities.astype(np.float64), {"C": oof.runs[0]["C"], "auroc_by_C": oof.runs[0]["auroc"],
                                                   "encoder": str(args.encoder)}


def _macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    from ecgfm.evaluate.metrics import auroc

    return float(np.nanmean(auroc(y, p)))


# ---------------------------------------------------------------------------------------------
# test evaluation
# ---------------------------------------------------------------------------------------------
def test_arrays(args: argparse.Namespace) -> tuple[Any, np.ndarray, np.ndarray]:
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_label_columns

    corpus = with_label_columns(Corpus.open(args.store), ["superdiagnostic"])
    m = corpus.manifest
    rows = np.flatnonzero(m["split"].to_numpy() == "test")
    from ecgfm.active import given_labels

    _, y = given_labels(args.store, LABELS, record_ids=m["record_id"].astype(str).to_numpy()[rows].tolist())
    return corpus, y, m["patient_key"].to_numpy()[rows]


def evaluate_runs(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    from ecgfm.active import predict_split
    from ecgfm.evaluate.bootstrap import bootstrap, paired_bootstrap

    corpus, y, patients = test_arrays(args)
    preds: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"n_test": int(len(y)), "n_patients": int(len(set(patients))), "runs": {}}
    for name in names:
        for seed in args.seeds:
            d = run_dir(args, name, seed)
            if not (d / "result.json").is_file():
                continue
            _, p, _ = predict_split(d / "model", corpus, "test", LABELS)
            preds[f"{name}-s{seed}"] = p
            b = bootstrap(y, p, patients, metrics="auroc", n_resamples=args.resamples, names=list(LABELS))
            logged = json.loads((d / "result.json").read_text())["test"]["auroc"]
            point = [round(float(v), 4) for v in b.macro["auroc"]]
            if abs(point[0] - logged) > 1e-4:
                raise RuntimeError(f"{d}: test macro AUROC {point[0]} differs from the run's own {logged}")
            out["runs"][f"{name}-s{seed}"] = {"auroc": point,
                                              "seconds": json.loads((d / "result.json").read_text())["seconds"]}
    # paired comparisons on seed 0 (same test records and patients)
    pairs = {}
    for rate in RATES:
        for a, b in (("top", "noisy"), ("random", "noisy"), ("top", "random"), ("clean", "noisy")):
            ka, kb = (f"{run_name(args, c, rate)}-s{args.seeds[0]}" for c in (a, b))
            if ka in preds and kb in preds:
                r = paired_bootstrap(y, preds[ka], preds[kb], patients, metrics="auroc", n_resamples=args.resamples)
                d_, lo, hi, pv = r.macro["auroc"]
                pairs[f"{ka} - {kb}"] = [round(float(d_), 4), round(float(lo), 4), round(float(hi), 4),
                                         round(float(pv), 4)]
    out["paired"] = pairs
    return out


def summarise(args: argparse.Namespace, ev: dict[str, Any]) -> dict[str, Any]:
    runs = ev["runs"]

    def values(name: str) -> list[float]:
        return [runs[f"{name}-s{s}"]["auroc"][0] for s in args.seeds if f"{name}-s{s}" in runs]

    out: dict[str, Any] = {}
    for rate in RATES:
        row: dict[str, Any] = {}
        for condition in CONDITIONS:
            v = values(run_name(args, condition, rate))
            row[condition] = {"per_seed": v, "mean": float(np.mean(v)) if v else None,
                              "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}
        if all(row[c]["mean"] is not None for c in CONDITIONS):
            lost = row["clean"]["mean"] - row["noisy"]["mean"]
            row["lost"] = lost
            row["recovered_top"] = (row["top"]["mean"] - row["noisy"]["mean"]) / lost if lost else None
            row["recovered_random"] = (row["random"]["mean"] - row["noisy"]["mean"]) / lost if lost else None
            names = [run_name(args, c, rate) for c in CONDITIONS]
            seeds = [s for s in args.seeds if all(f"{n}-s{s}" in runs for n in names)]
            per_seed = []
            for s in seeds:
                c, n_, t = (runs[f"{x}-s{s}"]["auroc"][0] for x in names[:3])
                per_seed.append((t - n_) / (c - n_) if c != n_ else None)
            row["recovered_top_per_seed"] = per_seed
            # seed-to-seed spread: the pooled sd of one run; the sd of a difference of two means
            sds = [row[c]["sd"] for c in CONDITIONS if row[c]["sd"] is not None]
            if sds:
                pooled = float(np.sqrt(np.mean(np.square(sds))))
                se = pooled * np.sqrt(2 / len(seeds)) if seeds else None
                row["seed_sd"], row["se_difference"] = pooled, se
                row["lost_resolved"] = bool(se is not None and lost > 2 * se)
        out[str(rate)] = row
    return out


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def _f(v: Any, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def page(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Active learning for noisy labels (PTB-XL superclasses)",
        "",
        f"Generated by `python benchmarks/bench_active_learning.py` on {result['machine']['cpu']} "
        f"({result['machine']['cores']} cores; at the end of the run: {result['load']}). "
        f"Protocol: [docs/active_learning.md](../active_learning.md#benchmark). Task: the 5 diagnostic "
        f"superclasses, multi-label; {s['epochs']} epochs of the default recipe per training; "
        f"{s['folds']}-fold patient-grouped out-of-fold predictions with {s['mc_passes']} dropout passes; "
        f"retraining seeds {', '.join(map(str, s['seeds']))}.",
        "",
        "Compute (two trainings at a time, one thread each): out-of-fold predictions "
        + ", ".join(f"{sec / 60:.0f} min at {r}%" for r, sec in result["compute"]["oof_seconds"].items())
        + f" (4 fold trainings + scoring each); {result['compute']['retrain_runs']} retraining runs of "
        f"{result['compute']['retrain_mean_seconds'] / 60:.1f} min on average; "
        f"{result['compute']['cpu_minutes']:.0f} training minutes in all.",
        "",
        "## Finding the flipped labels: precision@K",
        "",
        "K = the number of training records whose label was flipped. Random: the expected precision of "
        "K records drawn at random (the noise rate) with its standard deviation, and one seeded draw.",
        "",
        "Confident learning on three sets of out-of-fold probabilities: the trained network's, linear probes' on "
        "the frozen self-supervised encoder's features, and their mean (ensemble); the others use the network's.",
        "",
        "| noise | K | confident learning (network) | (probe) | (ensemble) | per-sample loss | entropy | "
        f"BALD (dropout) | random draw | random expected | {s['primary']} / random |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in RATES:
        r = result["rankings"].get(str(rate))
        if not r:
            continue
        for kk in (r["n_flipped"], r["n_flipped"] // 2):
            p = {m: r["precision"][m][str(kk)] for m in METHODS}
            sd = r["random_sd"][str(kk)]
            lines.append(f"| {rate}% | {kk} | {_f(p['confident'])} | {_f(p['probe'])} | {_f(p['ensemble'])} | "
                         f"{_f(p['loss'])} | {_f(p['entropy'])} | {_f(p['bald'])} | {_f(p['random'])} | "
                         f"{_f(r['random_expected'])} ± {_f(sd)} | {p[s['primary']] / r['random_expected']:.1f}x |")
    lines += ["", "Confident learning in detail:", "",
              "| noise | records flagged | flips among the top K whose flipped class was flagged | "
              "OOF macro AUROC vs noisy / clean labels |", "|---|---|---|---|"]
    for rate in RATES:
        r = result["rankings"].get(str(rate))
        if r:
            lines.append(f"| {rate}% | {r['confident_flagged']} of {r['n_train']} | {_f(r['confident_right_class'])} | "
                         f"{_f(r['auroc_oof_noisy'])} / {_f(r['auroc_oof_clean'])} |")
    lines += ["", "Out-of-fold macro AUROC against the clean labels: network / probe (C chosen by cross-validated "
              "AUROC against the noisy labels) / ensemble.", "", "| noise | network | probe | C | ensemble |",
              "|---|---|---|---|---|"]
    for rate in RATES:
        r = result["rankings"].get(str(rate))
        if r and "probe" in r:
            lines.append(f"| {rate}% | {_f(r['auroc_oof_clean'])} | {_f(r['probe']['auroc_oof_clean'])} | "
                         f"{r['probe']['C']:g} | {_f(r['ensemble_auroc_oof_clean'])} |")
    lines += ["", "## Retraining after correcting K records", "",
              "Test (fold 10) macro AUROC over the 5 superclasses, mean over seeds (± sd), and per seed with "
              "the patient-bootstrap 95% interval.", "",
              f"Top K: the first K records of the {s['primary']} ranking.", "",
              "| noise | clean | noisy | top-K corrected | K random corrected | lost (clean - noisy) | "
              "recovered by top-K | recovered by random K |", "|---|---|---|---|---|---|---|---|"]
    for rate in RATES:
        row = result["summary"].get(str(rate), {})
        if "lost" not in row:
            continue
        cells = [f"{_f(row[c]['mean'])} ± {_f(row[c]['sd'])}" for c in CONDITIONS]
        lines.append(f"| {rate}% | {' | '.join(cells)} | {_f(row['lost'], 4)} | {_f(row['recovered_top'], 2)} | "
                     f"{_f(row['recovered_random'], 2)} |")
    lines += ["", "Seed-to-seed variation: the pooled sd of one run's test AUROC over the seeds, and the sd of a "
              "difference of two means over the seeds; the AUROC lost counts as resolved when it exceeds twice "
              "the latter.", "", "| noise | sd of one run | sd of a difference of means | lost resolved | "
              "top-K - noisy | random K - noisy | top-K - random K |", "|---|---|---|---|---|---|---|"]
    for rate in RATES:
        row = result["summary"].get(str(rate), {})
        if "seed_sd" not in row:
            continue
        gain = {c: row[c]["mean"] - row["noisy"]["mean"] for c in ("top", "random")}
        lines.append(f"| {rate}% | {row['seed_sd']:.4f} | {row['se_difference']:.4f} | "
                     f"{'yes' if row['lost_resolved'] else 'no'} | {gain['top']:+.4f} | {gain['random']:+.4f} | "
                     f"{gain['top'] - gain['random']:+.4f} |")
    lines += ["", "| run | test macro AUROC [95% CI] | training seconds |", "|---|---|---|"]
    for name, r in result["test"]["runs"].items():
        a = r["auroc"]
        lines.append(f"| {name} | {a[0]:.4f} [{a[1]:.4f}, {a[2]:.4f}] | {r['seconds']:.0f} |")
    lines += ["", "Paired patient bootstrap on seed " f"{s['seeds'][0]} (difference [95% CI], p):", ""]
    for k, (d, lo, hi, p) in result["test"]["paired"].items():
        lines.append(f"- {k}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}], p = {p:.3f}")
    lines += ["", "## Targets", ""]
    for t in result["targets"]:
        lines.append(f"- {t}")
    lines.append("")
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[str]:
    out = []
    for rate in RATES:
        r = result["rankings"].get(str(rate))
        if r:
            k = r["n_flipped"]
            primary = result["settings"]["primary"]
            ratio = r["precision"][primary][str(k)] / r["random_expected"]
            out.append(f"{rate}% noise, precision@K (K = {k}) of the {primary} ranking = "
                       f"{r['precision'][primary][str(k)]:.3f}, {ratio:.1f}x random "
                       f"(target >= 3x): {'met' if ratio >= 3 else 'NOT met'}")
        row = result["summary"].get(str(rate), {})
        if row.get("recovered_top") is not None:
            rec = row["recovered_top"]
            text = (f"{rate}% noise, AUROC recovered by correcting the top K = {rec:.2f} of the "
                    f"{row['lost']:.4f} lost (target >= 0.5): {'met' if rec >= 0.5 else 'NOT met'}")
            if row.get("lost_resolved") is False:
                text = (f"{rate}% noise, AUROC recovered by correcting the top K: not assessable - the AUROC lost "
                        f"to the noise ({row['lost']:+.4f}) is within the seed-to-seed variation (sd of one run "
                        f"{row['seed_sd']:.4f}, of a difference of means {row['se_difference']:.4f}); the "
                        f"recovered fraction {rec:.2f} is not meaningful")
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# the scheduler
# ---------------------------------------------------------------------------------------------
def job_list(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(job, dependencies) in priority order."""
    jobs: list[tuple[str, list[str]]] = [(f"oof:{r}", []) for r in RATES]
    for seed in args.seeds:
        jobs.append((f"train:clean:{seed}", []))
        for r in RATES:
            jobs.append((f"train:noisy{r}:{seed}", []))
        for r in RATES:
            jobs += [(f"train:{run_name(args, 'top', r)}:{seed}", [f"prep:{r}"]),
                     (f"train:random{r}:{seed}", [f"prep:{r}"])]
    return jobs


def schedule(args: argparse.Namespace, noise: dict[int, dict[str, Any]], ranked: dict[str, Any]) -> None:
    logs = cache_dir(args) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    jobs = job_list(args)
    ready: set[str] = {j for j, _ in jobs if done(args, j)}
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    while True:
        for r in RATES:  # the corrections once the out-of-fold predictions exist
            if f"oof:{r}" in ready and f"prep:{r}" not in ready:
                ranked[str(r)] = rankings(args, noise[r])
                ready.add(f"prep:{r}")
        for job, (proc, handle) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del running[job]
            if proc.returncode != 0:
                tail = (logs / f"{job.replace(':', '_')}.log").read_text().splitlines()[-30:]
                raise RuntimeError(f"job {job} failed (exit {proc.returncode}):\n" + "\n".join(tail))
            ready.add(job)
            print(f"[{time.perf_counter() - t0:6.0f} s] done {job}", flush=True)
        todo = [j for j, deps in jobs if j not in ready and j not in running and all(d in ready for d in deps)]
        while todo and len(running) < args.workers:
            job = todo.pop(0)
            handle = open(logs / f"{job.replace(':', '_')}.log", "w")  # noqa: SIM115 (closed when the job ends)
            cmd = [sys.executable, __file__, "--job", job, "--cache", str(args.cache), "--epochs", str(args.epochs),
                   "--folds", str(args.folds), "--mc-passes", str(args.mc_passes), "--store", str(args.store),
                   "--noise-seed", str(args.noise_seed), "--primary", args.primary, "--encoder", str(args.encoder)]
            if args.quick:
                cmd.append("--quick")
            running[job] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT), handle)
            print(f"[{time.perf_counter() - t0:6.0f} s] start {job}", flush=True)
        if not running and all(j in ready for j, _ in jobs):
            return
        if not running and not todo:
            raise RuntimeError("jobs are waiting for dependencies that cannot finish")
        time.sleep(2 if args.quick else 10)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ecgfm-bench-cache/active"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--mc-passes", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2", help="retraining seeds, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="trainings at a time (one thread each)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="tiny runs: check the pipeline, not the figures")
    parser.add_argument("--noise-seed", type=int, default=NOISE_SEED,
                        help="seed of the label-noise draw (default 11, the first draw); other draws are cached apart")
    parser.add_argument("--primary", default=PRIMARY, choices=("confident", "probe", "ensemble"),
                        help="the ranking whose top K is corrected and retrained (v1 of the protocol: confident)")
    parser.add_argument("--encoder", type=Path, default=ENCODER,
                        help="the frozen self-supervised encoder of the probe rankings (from bench_ssl.py)")
    parser.add_argument("--name", default="active_learning", help="results file name (<out>/<name>.json and .md)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    if args.quick:
        args.folds, args.mc_passes, args.seeds, args.resamples = 2, 2, [0], 50
    if not (args.store / "store.json").is_file():
        raise SystemExit(f"{args.store}: no PTB-XL store; build it with ecgfm build-corpus "
                         "/work/shared/data/ptb-xl --out corpora/ptbxl100 --pipeline standard:fs=100")
    if args.job:
        kind, *rest = args.job.split(":")
        if kind == "oof":
            job_oof(args, int(rest[0]))
        else:
            job_train(args, rest[0], int(rest[1]))
        return None
    t0 = time.perf_counter()
    noise = {r: make_noise(args, r) for r in RATES}
    ranked: dict[str, Any] = {}
    schedule(args, noise, ranked)
    names = ["clean"] + [run_name(args, c, r) for r in RATES for c in ("noisy", "top", "random")]
    ev = evaluate_runs(args, names)
    result: dict[str, Any] = {
        "machine": machine(), "load": load_note(),
        "settings": {"epochs": args.epochs, "folds": args.folds, "mc_passes": args.mc_passes, "seeds": args.seeds,
                     "resamples": args.resamples, "quick": args.quick, "labels": list(LABELS), "rates": list(RATES),
                     "store": str(args.store), "noise_seed": args.noise_seed, "primary": args.primary,
                     "encoder": str(args.encoder)},
        "rankings": ranked, "test": ev, "summary": summarise(args, ev),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    oof_seconds = {str(r): json.loads((cache_dir(args) / f"noise{r}" / "oof" / "done.json").read_text())["seconds"]
                   for r in RATES}
    retrain = [r["seconds"] for r in ev["runs"].values()]
    result["compute"] = {"oof_seconds": oof_seconds, "retrain_runs": len(retrain),
                         "retrain_mean_seconds": float(np.mean(retrain)) if retrain else 0.0,
                         "cpu_minutes": (sum(oof_seconds.values()) + sum(retrain)) / 60}
    result["targets"] = targets(result)
    if args.quick:
        print(json.dumps(result["targets"], indent=1))
        print(page(result))
        return result
    write_results(args.out, args.name, result, page(result))
    return result


if __name__ == "__main__":
    main()
