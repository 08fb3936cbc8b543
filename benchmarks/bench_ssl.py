"""Self-supervised pretraining on every unlabelled ECG of the shared data, and what it buys on PTB-XL.

    python benchmarks/bench_ssl.py --quick        # a few minutes: tiny encoder, a few dozen steps
    python benchmarks/bench_ssl.py                # the full run: hours of CPU (resumable)
    python benchmarks/bench_ssl.py --corpus-only  # build the pretraining corpus and its split files

What it does (every stage is cached under ``--cache``, default ``runs/bench_ssl`` or
``runs/bench_ssl_quick``, so an interrupted run picks up where it stopped):

1. **Corpus** (``corpora/pretrain100``, the recipe of ``docs/pretraining.md``): PTB-XL (every
   record once, 500 Hz where present), LUDB, CinC 2021, CinC 2017 (single lead), MIT-BIH (10 s
   windows), CPSC 2019 (single lead) and CPSC 2021 (2 leads, 10 s windows) through
   ``standard:fs=100,missing=mask`` into one 12-lead store with lead masks. Two split files:
   ``pretrain_splits.csv`` (every record trains, except PTB-XL's validation and test folds and
   the CinC 2021 copies of PTB-XL records whose fold is not known to be a training fold; 5 % of
   the other patients validate the self-supervised loss) and ``ptbxl_splits.csv`` (PTB-XL's
   native folds 1-8 / 9 / 10, every other record out).
2. **Pretraining** of a ResNet1D-18 with each objective of ``configs/pretrain/`` (CPC,
   wav2vec 2.0, masked modelling, CMSC, the combination) with ``ecgfm.train.pretrain``;
   throughput in ECGs/s.
3. **Data-efficiency curves** on PTB-XL (test fold 10) with :mod:`ecgfm.evaluate.efficiency`:
   nested, patient-grouped training subsets of 1 %, 10 % and 100 % of folds 1-8 (every statement
   keeps a positive, so the 1 % subset is the cover set, larger than 1 %), for the random encoder
   and every pretrained one,

   - **linear probe**: L2 logistic regression (:class:`ecgfm.models.probe.LogisticProbe`) on the
     frozen encoder's pooled embeddings of the whole 10 s record, features standardised on the
     subset, C chosen on fold 9 from {0.01, 0.1, 1};
   - **fine-tune**: ``ecgfm train`` with ``model.init`` = the pretrained model (or a random
     init), the default model's recipe (``configs/train/ptbxl_default.yaml``: random 5 s crops
     with augmentation, scored on the whole 10 s record, early stopping on fold 9) with a budget
     per fraction; three runs at 1 % and 10 % (subset r, seed r) and one at 100 %;
     ``--encoder-lr 1,0.1`` also tries a tenth of the learning rate for the encoder and keeps
     the run with the better fold-9 AUROC;

   scored by macro AUROC over the five diagnostic superclasses and over every SCP statement
   (those with a positive in folds 1-8 and both classes in fold 10), averaged over the repeats,
   with the 95 % bootstrap interval of that mean (patients resampled, the same resamples for
   every run), and each pretrained encoder compared with the random one on the same subsets by a
   paired bootstrap of the mean difference (difference, its interval, p-value).

Results go to ``docs/benchmarks/ssl.json`` and ``.md`` (``--out`` and ``--name`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import load_note, machine, write_results  # noqa: E402

DATA = Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data"))
STORE = ROOT / "corpora" / "pretrain100"
PIPELINE = "standard:fs=100,missing=mask"
#: the sources of the pretraining corpus: (folder under the data root, adapter, adapter options)
SOURCES = (
    ("ptb-xl", "ptbxl", {}),
    ("ludb", "ludb", {}),
    ("cinc2021", "cinc", {}),
    ("cinc2017", "cinc2017", {}),
    ("mitdb", "mitbih", {"stride_s": 10}),
    ("cpsc2019", "cpsc2019", {}),
    ("cpsc2021", "cpsc2021", {"mode": "windows"}),
)
OBJECTIVES = ("cpc", "wav2vec2", "masked", "cmsc", "combined")
FRACTIONS = (0.01, 0.1, 1.0)
SUPER = ("NORM", "MI", "STTC", "CD", "HYP")


@dataclass(frozen=True)
class Settings:
    """How big a run is (``--quick`` shrinks everything)."""

    quick: bool
    encoder_args: dict[str, Any] = field(default_factory=dict)  # ResNet1D-18 overrides
    pretrain_epochs: int = 30  # pretraining epochs over the ~3,100 training records
    pretrain_steps: int = -1  # or a step limit (quick)
    pretrain_batch: int = 64
    probe_repeats: int = 3  # subsets drawn per fraction for the linear probe
    probe_cs: tuple[float, ...] = (0.01, 0.1, 1.0)  # L2 strengths tried on fold 9
    # fraction -> fine-tuning runs (each a training run: subset r with seed r; the 100 % subset is
    # the same in every repeat, so one run there)
    finetune_repeats: dict[float, int] = field(default_factory=lambda: {0.01: 3, 0.1: 3, 1.0: 1})
    # encoder learning rate / head learning rate tried per fine-tuning run; the one with the best
    # fold-9 AUROC is kept (for every encoder, the random one included)
    finetune_encoder_lr: tuple[float, ...] = (1.0,)
    # fraction -> (max_epochs, early-stopping patience, batch size); quick: (max_steps, -, batch)
    finetune: dict[float, tuple[int, int, int]] = field(default_factory=lambda: {
        0.01: (150, 30, 16), 0.1: (80, 15, 32), 1.0: (25, 8, 64)})
    n_bootstrap: int = 1000


FULL = Settings(quick=False)
QUICK = Settings(quick=True, encoder_args={"widths": [16, 16, 32, 32], "stem_width": 16, "layers": [1, 1, 1, 1]},
                 pretrain_epochs=1, pretrain_steps=40, pretrain_batch=32, probe_repeats=1, probe_cs=(0.1,),
                 finetune_repeats={0.01: 1, 0.1: 1, 1.0: 1},
                 finetune={0.01: (15, 0, 16), 0.1: (15, 0, 16), 1.0: (15, 0, 32)}, n_bootstrap=200)


# ---------------------------------------------------------------------------------------------
# 1. the corpus
# ---------------------------------------------------------------------------------------------
def build_pretraining_corpus(data: Path = DATA, store: Path = STORE, workers: int | None = None) -> dict[str, Any]:
    """Build (or finish) the pretraining store and write its two split files; returns a summary."""
    from ecgfm.store.adapters import adapter_for
    from ecgfm.store.build import build_corpus
    from ecgfm.store.format import Corpus

    t0 = time.perf_counter()
    built = None
    if not (store / "manifest.parquet").is_file():
        missing = [name for name, _, _ in SOURCES if not (data / name).is_dir()]
        if missing:
            raise SystemExit(f"shared data not found: {', '.join(str(data / m) for m in missing)} "
                             "(set ECGFM_DATA to the data folder)")
        adapters = [adapter_for(data / name, dataset, **options) for name, dataset, options in SOURCES]
        built = build_corpus(adapters, store, PIPELINE, workers=workers or min(2, os.cpu_count() or 1))
    corpus = Corpus.open(store)
    m = corpus.manifest
    excluded = ptbxl_holdout(m, data)
    from ecgfm.train.pretrain import pretrain_splits

    pretrain_splits(corpus, exclude=excluded, val_fraction=0.05, seed=0).to_csv(store / "pretrain_splits.csv", index=False)
    ptbxl = m["dataset"] == "ptbxl"
    downstream = np.where(ptbxl, m["split"].astype(str), "none")
    import pandas as pd

    pd.DataFrame({"record_id": m["record_id"], "split": downstream}).to_csv(store / "ptbxl_splits.csv", index=False)
    from ecgfm.store.build import store_bytes

    return {
        "store": str(store.relative_to(ROOT) if store.is_relative_to(ROOT) else store), "pipeline": PIPELINE,
        "records": int(len(m)), "bytes": int(store_bytes(store)),
        "hours": float(m["duration_s"].sum() / 3600) if "duration_s" in m.columns else None,
        "datasets": {str(k): int(v) for k, v in m["dataset"].value_counts().items()},
        "leads_present": {str(k): int(v) for k, v in
                          pd.Series([int(np.sum(x)) for x in m["lead_mask"]]).value_counts().sort_index().items()},
        "excluded_from_pretraining": len(excluded),
        "pretraining_records": int(len(m) - len(excluded)),
        "build_seconds": None if built is None else round(built.seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def ptbxl_holdout(manifest: Any, data: Path = DATA) -> list[str]:
    """Record ids kept out of pretraining: PTB-XL's validation and test folds (9, 10), and the
    CinC 2021 copies of PTB-XL records (``HR<ecg_id>``) unless their fold is known to be 1-8.

    PTB-XL patients never cross folds, so this keeps every record of a validation or test
    patient out. Self-supervised pretraining sees no labels, but a test ECG seen in pretraining
    is still a test ECG the encoder has fitted; leaving them out keeps the comparison honest.
    """
    m = manifest
    out = m.loc[(m["dataset"] == "ptbxl") & (m["split"] != "train"), "record_id"].astype(str).tolist()
    folds: dict[int, int] = {}
    for name in ("ptbxl_database.csv", "ptbxl_reports_only.csv"):
        path = data / "ptb-xl" / name
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if row.get("strat_fold"):
                        folds[int(float(row["ecg_id"]))] = int(float(row["strat_fold"]))
    copies = m.loc[(m["dataset"] == "cinc") & m["record_id"].astype(str).str.startswith("HR"), "record_id"]
    for rid in copies.astype(str):
        fold = folds.get(int(rid[2:])) if rid[2:].isdigit() else None
        if fold is None or fold >= 9:
            out.append(rid)
    return out


# ---------------------------------------------------------------------------------------------
# 2. pretraining
# ---------------------------------------------------------------------------------------------
def pretrain_objective(name: str, s: Settings, cache: Path) -> dict[str, Any]:
    """Pretrain with ``configs/pretrain/<name>.yaml`` (cached: reruns resume or skip)."""
    from ecgfm.train.pretrain import pretrain

    out = cache / f"pretrain_{name}"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [f"out_dir={out}", f"data.store={STORE}", f"data.overrides={STORE / 'pretrain_splits.csv'}",
                 f"data.batch_size={s.pretrain_batch}", "data.num_workers=0", "trainer.progress=none",
                 "trainer.loggers=[csv]", "trainer.num_sanity_val_steps=0",
                 f"model.encoder_args={json.dumps({**s.encoder_args, 'head_dropout': 0.2})}",
                 f"trainer.max_epochs={s.pretrain_epochs}", f"trainer.max_steps={s.pretrain_steps}",
                 "trainer.checkpoint_every_n_steps=200", "resume=auto"]
    if s.quick:
        overrides += [f"trainer.val_check_interval={s.pretrain_steps}", "optim.warmup_steps=5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pretrain(ROOT / "configs" / "pretrain" / f"{name}.yaml", overrides)
    keep = {k: result[k] for k in ("model_dir", "global_step", "epoch", "n_train", "n_val", "seconds",
                                   "train_seconds", "ecgs_per_second", "objectives")}
    keep["val_loss"] = result["val"].get("loss")
    done.write_text(json.dumps(keep, indent=1, default=float))
    return keep


def pretraining_throughput(objectives: list[str], s: Settings, cache: Path, steps: int = 40,
                           threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """ECGs/s of each objective's training steps (data loading, forward, backward, optimizer;
    no validation) over ``steps`` steps of batch ``s.pretrain_batch`` from a fresh model, with
    1 and 2 threads; cached in ``<cache>/throughput.json`` as ``{"load": the machine's load
    when measured, "ecgs_per_second": {objective: {threads: rate}}}``. Run it on a quiet machine:
    the long pretraining runs share theirs with the other stages."""
    import tempfile

    import torch

    from ecgfm.train.pretrain import pretrain

    path = cache / "throughput.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"load": load_note(), "ecgs_per_second": {}}
    table: dict[str, dict[str, float]] = saved["ecgs_per_second"]
    for name in objectives:
        for n in threads:
            if str(n) in table.get(name, {}):
                continue
            torch.set_num_threads(n)
            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = pretrain(ROOT / "configs" / "pretrain" / f"{name}.yaml", [
                    f"out_dir={tmp}", f"data.store={STORE}", f"data.overrides={STORE / 'pretrain_splits.csv'}",
                    f"data.batch_size={s.pretrain_batch}", "data.num_workers=0", "trainer.progress=none",
                    "trainer.loggers=[csv]", "trainer.num_sanity_val_steps=0", "trainer.export=false",
                    f"model.encoder_args={json.dumps({**s.encoder_args, 'head_dropout': 0.2})}",
                    f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "resume=null"])
            table.setdefault(name, {})[str(n)] = float(result["ecgs_per_second"])
            print(f"throughput {name}, {n} thread(s): {table[name][str(n)]:.1f} ECGs/s", flush=True)
            saved["load"] = load_note()  # over the last minute: the measurement's own load
            path.write_text(json.dumps(saved, indent=1))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return saved


# ---------------------------------------------------------------------------------------------
# 3. downstream data, probes and fine-tuning
# ---------------------------------------------------------------------------------------------
@dataclass
class Downstream:
    """PTB-XL's records of the store: rows, labels and patients per fold."""

    corpus: Any
    rows: dict[str, np.ndarray]  # split -> manifest rows
    y: dict[str, np.ndarray]  # split -> [n, C] 0/1 labels (statements, then the 5 superclasses)
    patients: dict[str, np.ndarray]
    statements: list[str]  # statement ids (columns 0 .. S-1)
    label_ids: list[str]  # every column's id as ecgfm train names it


def downstream_data() -> Downstream:
    from ecgfm.store.format import Corpus

    corpus = Corpus.open(STORE)
    m = corpus.manifest
    rows = {split: np.flatnonzero(((m["dataset"] == "ptbxl") & (m["split"] == split)).to_numpy())
            for split in ("train", "val", "test")}
    statements = sorted({str(i) for r in rows["train"] for i in m["labels"].iloc[r]})
    label_ids = statements + [f"superdiagnostic:{c}" for c in SUPER]
    position = {k: j for j, k in enumerate(label_ids)}
    y, patients = {}, {}
    for split, idx in rows.items():
        mat = np.zeros((len(idx), len(label_ids)), np.float32)
        for n, r in enumerate(idx):
            ids = [str(i) for i in m["labels"].iloc[r]]
            ids += [f"superdiagnostic:{c}" for c in str(m["superdiagnostic"].iloc[r] or "").split(";") if c]
            for i in ids:
                if i in position:
                    mat[n, position[i]] = 1.0
        y[split] = mat
        patients[split] = m["patient_key"].to_numpy()[idx].astype(str)
    return Downstream(corpus, rows, y, patients, statements, label_ids)


def _groups(d: Downstream) -> dict[str, np.ndarray]:
    n_stat = len(d.statements)
    return {"superdiagnostic": np.arange(n_stat, n_stat + len(SUPER)), "all_statements": np.arange(n_stat)}


def _encoder(name: str, s: Settings, pretrained: dict[str, dict[str, Any]]) -> Any:
    from ecgfm.models.portable import load_model
    from ecgfm.models.registry import create_encoder

    if name == "random":
        import torch

        torch.manual_seed(0)
        return create_encoder("resnet1d18", **{**s.encoder_args, "head_dropout": 0.2})
    return load_model(pretrained[name]["model_dir"]).encoder


def _key(idx: np.ndarray) -> str:
    """A name for a training subset (its records' hash)."""
    import hashlib

    return "s" + hashlib.sha1(np.asarray(idx, np.int64).tobytes()).hexdigest()[:16]


def _dataset(d: Downstream, split: str) -> Any:
    from ecgfm.store.dataset import CorpusDataset

    return CorpusDataset(d.corpus, indices=d.rows[split], window=10.0, crop="center", label_ids=())


def probe_curve(name: str, d: Downstream, s: Settings, pretrained: dict[str, dict[str, Any]], cache: Path) -> dict[str, Any]:
    """Test predictions of linear probes at every (fraction, repeat) (cached)."""
    from ecgfm.evaluate.efficiency import data_efficiency, efficiency_subsets
    from ecgfm.evaluate.metrics import auroc
    from ecgfm.models.probe import LogisticProbe, extract_embeddings

    path = cache / f"probe_{name}.npz"
    if path.is_file():
        saved = np.load(path, allow_pickle=False)
        return {"table": json.loads(str(saved["table"])), "preds": {k: saved[k] for k in saved.files if k != "table"}}
    encoder = _encoder(name, s, pretrained)
    t0 = time.perf_counter()
    z = {split: extract_embeddings(encoder, _dataset(d, split), batch_size=64) for split in ("train", "val", "test")}
    embed_seconds = time.perf_counter() - t0
    preds: dict[str, np.ndarray] = {}

    def fit_predict(idx: np.ndarray) -> np.ndarray:
        mean, std = z["train"][idx].mean(0), z["train"][idx].std(0) + 1e-6
        xs = {k: (v - mean) / std for k, v in z.items()}
        y = d.y["train"][idx]
        best, best_score = None, -np.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c in s.probe_cs:
                probe = LogisticProbe(C=c, max_iter=300).fit(xs["train"][idx], y)
                score = float(np.nanmean(auroc(d.y["val"], probe.predict_proba(xs["val"]))))
                if score > best_score:
                    best, best_score = probe, score
        assert best is not None
        p = best.predict_proba(xs["test"]).astype(np.float32)
        preds[_key(idx)] = p
        return p

    def score(y_test: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return {g: float(np.nanmean(auroc(y_test[:, cols], p[:, cols]))) for g, cols in _groups(d).items()}

    # the 100 % subset is the same in every repeat, and the probe is deterministic: fit it once
    table = data_efficiency(fit_predict, d.y["train"], d.patients["train"], d.y["test"], score=score,
                            fractions=FRACTIONS, repeats=s.probe_repeats, seed=0, reuse_identical=True)
    subsets = efficiency_subsets(d.y["train"], d.patients["train"], fractions=FRACTIONS, repeats=s.probe_repeats,
                                 seed=0)
    rows = table.to_dict(orient="records")
    for row in rows:
        row["key"] = _key(subsets[(row["fraction"], int(row["repeat"]))])
        row["embed_seconds"] = embed_seconds
    np.savez(path, table=json.dumps(rows), **preds)
    return {"table": rows, "preds": preds}


def finetune_curve(name: str, d: Downstream, s: Settings, pretrained: dict[str, dict[str, Any]],
                   cache: Path) -> dict[str, Any]:
    """Test predictions of fine-tuned models at every (fraction, repeat) (each run cached); of the
    runs with each encoder learning-rate ratio, the one with the best fold-9 AUROC is kept."""
    from ecgfm.evaluate.efficiency import efficiency_subsets
    from ecgfm.evaluate.metrics import auroc

    subsets = efficiency_subsets(d.y["train"], d.patients["train"], fractions=FRACTIONS,
                                 repeats=max(s.finetune_repeats.values()), seed=0)
    rows_out, preds = [], {}
    for (fraction, repeat), idx in subsets.items():
        if repeat >= s.finetune_repeats[fraction]:
            continue
        runs = [_finetune_run(name, d, s, pretrained, cache, fraction, repeat, idx, ratio)
                for ratio in s.finetune_encoder_lr]
        out = max(runs, key=lambda run: json.loads((run / "result.json").read_text())["val_auroc"])
        pred_path, meta_path = out / "test_predictions.npy", out / "result.json"
        p = np.load(pred_path)
        meta = json.loads(meta_path.read_text())
        key = _key(idx)
        preds[key] = p
        row = {"fraction": fraction, "repeat": repeat, "n_train": int(len(idx)),
               "n_patients": int(len(np.unique(d.patients["train"][idx]))), "key": key, **meta}
        for g, cols in _groups(d).items():
            row[g] = float(np.nanmean(auroc(d.y["test"][:, cols], p[:, cols])))
        rows_out.append(row)
    return {"table": rows_out, "preds": preds}


def _finetune_run(name: str, d: Downstream, s: Settings, pretrained: dict[str, dict[str, Any]], cache: Path,
                  fraction: float, repeat: int, idx: np.ndarray, encoder_lr: float) -> Path:
    """One fine-tuning run (cached): its folder, with ``test_predictions.npy`` and ``result.json``."""
    import pandas as pd

    from ecgfm.models.portable import load_model
    from ecgfm.train.config import load_config
    from ecgfm.train.run import train

    m = d.corpus.manifest
    out = cache / (f"ft_{name}_{fraction:g}_{repeat}" + ("" if encoder_lr == 1.0 else f"_elr{encoder_lr:g}"))
    pred_path = out / "test_predictions.npy"
    meta_path = out / "result.json"
    if not pred_path.is_file():
        split = np.full(len(m), "none", dtype=object)
        split[d.rows["train"][idx]] = "train"
        split[d.rows["val"]] = "val"
        split[d.rows["test"]] = "test"
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"record_id": m["record_id"], "split": split}).to_csv(out / "splits.csv", index=False)
        budget, patience, batch = s.finetune[fraction]
        length = [f"trainer.max_steps={budget}", "trainer.max_epochs=-1",
                  "trainer.early_stopping_patience=null"] if s.quick else [
            f"trainer.max_epochs={budget}", f"trainer.early_stopping_patience={patience}"]
        init = [] if name == "random" else [f"model.init={pretrained[name]['model_dir']}"]
        overrides = [
            f"data.store={STORE}", f"data.overrides={out / 'splits.csv'}", f"out_dir={out / 'run'}",
            f"data.labels={json.dumps(d.label_ids)}", "data.label_columns=[labels, superdiagnostic]",
            "data.test_split=null", f"data.batch_size={min(batch, len(idx))}", "trainer.progress=none",
            f"model.encoder_args={json.dumps({**s.encoder_args, 'head_dropout': 0.2})}",
            "trainer.num_sanity_val_steps=0", "resume=auto", f"optim.warmup_steps={5 if s.quick else 50}",
            f"optim.encoder_lr_ratio={encoder_lr}", f"seed={repeat}", *length, *init,
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            result = train(load_config(ROOT / "configs" / "train" / "ptbxl_default.yaml", overrides))
            seconds = time.perf_counter() - t0
        model = load_model(result["model_dir"])
        ids = list(model.labels)
        probs = _predict(model.encoder, _dataset(d, "test"))
        order = [ids.index(k) for k in d.label_ids]
        np.save(pred_path, probs[:, order].astype(np.float32))
        meta_path.write_text(json.dumps({"global_step": result["global_step"], "seconds": seconds,
                                         "val_auroc": result["val"].get("auroc"), "encoder_lr_ratio": encoder_lr}))
    return out


def _predict(encoder: Any, dataset: Any) -> np.ndarray:
    """Sigmoid outputs ``[N, C]`` of an encoder with its head on a store dataset, in order."""
    import torch

    from ecgfm.store.dataset import corpus_loader

    encoder.eval()
    out = []
    with torch.inference_mode():
        for batch in corpus_loader(dataset, 64, shuffle=False, pad=False):
            out.append(torch.sigmoid(encoder(batch["signal"], batch["mask"])).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def score_curves(curves: dict[str, dict[str, Any]], d: Downstream, s: Settings) -> list[dict[str, Any]]:
    """One row per (encoder, mode, fraction, label group): the macro AUROC averaged over the
    repeats with its 95 % bootstrap interval, and the paired difference from the random encoder
    (repeat r against the random encoder's repeat r, on the same subset).

    Every bootstrap uses the same patient resamples (one seed), so a resample's value of the
    mean over repeats is the mean of the repeats' values on it: the intervals are those of the
    mean over repeats, which averages out part of the run-to-run variation of training.
    """
    from ecgfm.evaluate.bootstrap import bootstrap, paired_bootstrap

    groups = _groups(d)
    kw = {"groups": d.patients["test"], "metrics": "auroc", "n_resamples": s.n_bootstrap, "keep_samples": True}
    out = []
    for (encoder, mode), curve in curves.items():
        base = curves.get(("random", mode))
        for fraction in FRACTIONS:
            rows = sorted((r for r in curve["table"] if r["fraction"] == fraction), key=lambda r: r["repeat"])
            for g, cols in groups.items():
                y = d.y["test"][:, cols]
                boots = [bootstrap(y, curve["preds"][r["key"]][:, cols], **kw) for r in rows]
                point = float(np.mean([np.nanmean(b.point["auroc"]) for b in boots]))
                low, high = _percentiles(np.mean([np.nanmean(b.samples["auroc"], axis=1) for b in boots], axis=0))
                values = [r[g] for r in rows]
                row = {"encoder": encoder, "mode": mode, "fraction": fraction, "labels": g,
                       "n_train": float(np.mean([r["n_train"] for r in rows])), "repeats": len(rows),
                       "auroc": point, "auroc_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                       "ci_low": low, "ci_high": high, "n_conditions": int(np.isfinite(boots[0].point["auroc"]).sum())}
                if base is not None and encoder != "random":
                    brows = {r["repeat"]: r for r in base["table"] if r["fraction"] == fraction}
                    pairs = [paired_bootstrap(y, curve["preds"][r["key"]][:, cols],
                                              base["preds"][brows[r["repeat"]]["key"]][:, cols], **kw)
                             for r in rows if r["repeat"] in brows]
                    diff = float(np.mean([pr.macro["auroc"][0] for pr in pairs]))
                    samples = np.mean([np.nanmean(pr.samples["auroc"], axis=1) for pr in pairs], axis=0)
                    dlow, dhigh = _percentiles(samples)
                    ok = samples[~np.isnan(samples)]
                    pval = float(min(1.0, 2 * min((ok <= 0).sum() + 1, (ok >= 0).sum() + 1) / (len(ok) + 1)))
                    row.update(diff_vs_random=diff, diff_low=dlow, diff_high=dhigh, p_value=pval,
                               paired_repeats=len(pairs), beats_random=bool(dlow > 0))
                out.append(row)
    return out


def _percentiles(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    ok = samples[~np.isnan(samples)]
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _page(result: dict[str, Any]) -> str:
    s = result["settings"]
    c = result["corpus"]
    epochs_flag = ("" if s["quick"] or s["pretrain_epochs"] == FULL.pretrain_epochs
                   else f" --pretrain-epochs {s['pretrain_epochs']}")
    lines = [
        "# Self-supervised pretraining: data efficiency on PTB-XL",
        "",
        f"`python benchmarks/bench_ssl.py{' --quick' if s['quick'] else ''}"
        f"{epochs_flag}` "
        f"({'QUICK MODE: a tiny encoder and a few dozen steps, to show the pipeline works; the figures say nothing about the objectives' if s['quick'] else 'the full protocol' + (', with shorter pretraining' if epochs_flag else '')}). "
        f"{result['load']} when this page was written; timings were taken on a shared 2-core machine and are indicative. "
        f"Wall time of the invocation that wrote it {result['seconds']:.0f} s (stages found in the cache are not rerun).",
        *(["", f"Note: {result['note']}"] if result.get("note") else []),
        "",
        "## Pretraining corpus",
        "",
        f"`{c['store']}` ({c['pipeline']}): {c['records']} records, {c['bytes'] / 1e6:.1f} MB"
        + (f", {c['hours']:.1f} h of source ECG" if c.get("hours") else "") + "; "
        + ", ".join(f"{k} {v}" for k, v in c["datasets"].items()) + ". Leads present per record: "
        + ", ".join(f"{k}: {v}" for k, v in c["leads_present"].items())
        + f". Kept out of pretraining: {c['excluded_from_pretraining']} records (PTB-XL folds 9 and 10, and "
        f"CinC 2021 copies of PTB-XL records not known to be in folds 1-8); {c['pretraining_records']} remain "
        "(95 % train, 5 % of patients validate the loss).",
        "",
        "## Pretraining",
        "",
        "| objective | steps | epochs | val loss | ECGs/s (CPU, 1 thread) |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["pretraining"].items():
        speed = r.get("ecgs_per_second")
        lines.append(f"| {name} | {r['global_step']} | {r['epoch']} | {r['val_loss']:.4f} | "
                     f"{'-' if speed is None else f'{speed:.0f}'} |")
    lines += ["", "ECGs/s of the runs above: the runs shared the machine with the other stages, so these are "
              "lower bounds."]
    if result.get("throughput"):
        rates = result["throughput"]["ecgs_per_second"]
        counts = sorted({n for v in rates.values() for n in v}, key=int)
        lines += ["", "Training throughput on the otherwise quiet machine (`--throughput`: 40 steps of batch "
                  f"{s['pretrain_batch']} from a fresh model, data loading included, no validation; "
                  f"{result['throughput']['load']} at the end of the measurement):", "",
                  "| objective | " + " | ".join(f"ECGs/s, {n} thread{'s' if n != '1' else ''}" for n in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for name, v in rates.items():
            lines.append(f"| {name} | " + " | ".join(f"{v[n]:.0f}" if n in v else "-" for n in counts) + " |")
    lines += ["", "GPU throughput: not measured (this session had no GPU).", "",
              "## Data efficiency: macro AUROC on PTB-XL fold 10", "",
              "Mean over repeats (linear probe: 3 subsets per fraction; fine-tune: "
              + ", ".join(f"{k:g}: {v}" for k, v in sorted((float(k), v) for k, v in s["finetune_repeats"].items()))
              + " runs, subset r with seed r) [95 % bootstrap interval of that mean, resampling patients]; "
              "difference from the random encoder in the same mode, repeat r against repeat r on the same subset "
              "(paired bootstrap of the mean difference).", ""]
    for labels in ("superdiagnostic", "all_statements"):
        lines += [f"### {labels.replace('_', ' ')}", "",
                  "| encoder | mode | fraction | n train | AUROC | 95 % CI | vs random | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["scores"]:
            if r["labels"] != labels:
                continue
            diff = "" if "diff_vs_random" not in r else (
                f"{r['diff_vs_random']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]")
            p = "" if "p_value" not in r else f"{r['p_value']:.3f}"
            lines.append(f"| {r['encoder']} | {r['mode']} | {r['fraction']:g} | {r['n_train']:.0f} | {r['auroc']:.3f} | "
                         f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {diff} | {p} |")
        lines.append("")
    target = [r for r in result["scores"] if r["fraction"] == 0.1 and "beats_random" in r]
    if target:
        wins = sum(r["beats_random"] for r in target)
        lines += [f"At 10 % of the labels, {wins} of {len(target)} (objective, mode, label set) comparisons beat the "
                  "random encoder by more than the interval of the difference.", ""]
    lines += ["Settings: " + json.dumps(s), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder, few steps: shows the pipeline works")
    parser.add_argument("--cache", type=Path, default=None, help="where runs and predictions are kept")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated, of " + ", ".join(OBJECTIVES))
    parser.add_argument("--no-finetune", action="store_true", help="linear probes only")
    parser.add_argument("--corpus-only", action="store_true", help="build the corpus and its split files, then stop")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="pretraining epochs (default 30; 1 with --quick)")
    parser.add_argument("--note", default=None, help="a sentence for the results page (how the run was split, its load)")
    parser.add_argument("--pretrain-only", action="store_true", help="pretrain the objectives (cached), then stop")
    parser.add_argument("--encoders", default=None,
                        help="downstream runs only for these encoders (random and/or objectives), then stop "
                             "without writing results: lets several processes share the work; a last run "
                             "without it collects the cached results")
    parser.add_argument("--encoder-lr", default=None,
                        help="comma-separated encoder/head learning-rate ratios to try per fine-tuning run, the "
                             "best on fold 9 kept (default 1)")
    parser.add_argument("--throughput", action="store_true",
                        help="first time each objective's training steps (1 and 2 threads); needs a quiet machine")
    parser.add_argument("--throughput-only", action="store_true", help="time the training steps, then stop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--name", default="ssl", help="results file name (<out>/<name>.json and .md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    if args.pretrain_epochs is not None:
        s = replace(s, pretrain_epochs=args.pretrain_epochs)
    if args.encoder_lr is not None:
        s = replace(s, finetune_encoder_lr=tuple(float(x) for x in args.encoder_lr.split(",") if x))
    cache = args.cache or ROOT / "runs" / ("bench_ssl_quick" if args.quick else "bench_ssl")
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = build_pretraining_corpus()
    print(f"corpus: {corpus['records']} records, {corpus['pretraining_records']} for pretraining", flush=True)
    if args.corpus_only:
        print(json.dumps(corpus, indent=1))
        return
    objectives = [o for o in args.objectives.split(",") if o]
    unknown = sorted(set(objectives) - set(OBJECTIVES))
    if unknown:
        raise SystemExit(f"unknown objective(s) {unknown} (known: {', '.join(OBJECTIVES)})")
    throughput = None
    if args.throughput or args.throughput_only:
        throughput = pretraining_throughput(objectives, s, cache)
        if args.throughput_only:
            return
    elif (cache / "throughput.json").is_file():
        throughput = json.loads((cache / "throughput.json").read_text())
    pretrained = {}
    for name in objectives:
        pretrained[name] = pretrain_objective(name, s, cache)
        print(f"pretrained {name}: {pretrained[name]['global_step']} steps, "
              f"{pretrained[name]['ecgs_per_second'] or 0:.0f} ECGs/s, val loss {pretrained[name]['val_loss']:.4f}", flush=True)
    if args.pretrain_only:
        return
    d = downstream_data()
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    encoders = ["random", *objectives] if args.encoders is None else [e for e in args.encoders.split(",") if e]
    for name in encoders:
        curves[(name, "linear probe")] = probe_curve(name, d, s, pretrained, cache)
        print(f"probed {name}", flush=True)
        if not args.no_finetune:
            curves[(name, "fine-tune")] = finetune_curve(name, d, s, pretrained, cache)
            print(f"fine-tuned {name}", flush=True)
    if args.encoders is not None:
        return
    scores = score_curves(curves, d, s)
    result = {
        "machine": machine(), "load": load_note(),
        "settings": {**asdict(s), "finetune": {str(k): v for k, v in s.finetune.items()},
                     "finetune_repeats": {str(k): v for k, v in s.finetune_repeats.items()}},
        "corpus": corpus, "pretraining": pretrained, "throughput": throughput,
        "downstream": {"train": len(d.rows["train"]), "val": len(d.rows["val"]), "test": len(d.rows["test"]),
                       "statements": len(d.statements), "superclasses": list(SUPER)},
        "curves": {f"{e} / {m}": c["table"] for (e, m), c in curves.items()},
        "scores": scores, "seconds": round(time.perf_counter() - t0, 1), "note": args.note,
    }
    write_results(args.out, args.name, json.loads(json.dumps(result, default=float)), _page(result))


if __name__ == "__main__":
    main()
