"""The training engine (ecgfm.train): config and overrides, a tiny end-to-end run on real LUDB
records with checkpoints, logs, config.yaml and a portable export, exact resume (with and without
gradient accumulation), fine-tuning to a new label set with a frozen encoder, and embeddings.

Every run uses a tiny ResNet1D (a few thousand weights) on 5 s windows at 100 Hz, so a run of a
few optimizer steps takes about a second on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.train.config import TrainConfig, load_config, parse_freeze, save_config

pytest.importorskip("lightning")
import lightning as L  # noqa: E402
import torch  # noqa: E402

TINY = ["model.encoder=resnet1d18",
        "model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1], head_dropout: 0.5}"]
LABELS3 = ["SR", "LVH", "LAH"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(ludb100: Path) -> Path:
    """The shared LUDB store at 100 Hz (conftest: built once per session, read-only)."""
    return ludb100


def _base(store: Path, out: Path, *extra: str) -> list[str]:
    # batch 32 of 158 training records: 4 batches per epoch (the incomplete one is dropped)
    return [f"data.store={store}", f"out_dir={out}", "data.window=5", "data.batch_size=32",
            "data.num_workers=0", "trainer.progress=none", "trainer.loggers=[csv]",
            "trainer.num_sanity_val_steps=0", "trainer.deterministic=true", *TINY, *extra]


class Record(L.Callback):
    """Every training batch's loss and records, in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float, list[int]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.current_epoch, batch_idx, float(outputs["loss"]), batch["record"].tolist()))


class Interrupted(Exception):
    pass


class StopAt(L.Callback):
    """Crash (as a killed job would) when the run is about to start optimizer step ``step + 1``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------
def test_overrides_are_typed_and_unknown_keys_list_the_valid_ones(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.store=/s", "trainer.max_steps=100", "optim.lr=3e-4", "data.leads=[I, II]",
                             "model.encoder_args.width=32", "trainer.precision=bf16-mixed",
                             "trainer.val_check_interval=50", "data.labels=min_positives:10", "resume=auto"])
    assert cfg.trainer.max_steps == 100 and cfg.optim.lr == 3e-4
    assert cfg.data.leads == ("I", "II") and cfg.model.encoder_args == {"width": 32}
    assert cfg.trainer.val_check_interval == 50 and isinstance(cfg.trainer.val_check_interval, int)
    assert cfg.data.labels == "min_positives:10" and cfg.resume == "auto"
    # YAML file + overrides; the saved resolved config reads back to the same object
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  store: /x\n  batch_size: 8\ntrainer:\n  precision: 32\n")
    cfg2 = load_config(path, ["data.batch_size=16"])
    assert cfg2.data.batch_size == 16 and cfg2.trainer.precision == "32"
    save_config(cfg2, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg2
    with pytest.raises(ValidationError, match=r"unknown key 'trainer.max_step'.*did you mean trainer.max_steps.*valid: trainer.max_epochs"):
        load_config(None, ["trainer.max_step=5"])
    with pytest.raises(ValidationError, match=r"c.yaml: data: unknown key\(s\) bach_size \(valid: store"):
        path.write_text("data:\n  bach_size: 8\n")
        load_config(path)
    with pytest.raises(ValidationError, match="data.batch_size=abc.*expected an integer"):
        load_config(None, ["data.batch_size=abc"])
    with pytest.raises(ValidationError, match="trainer.strategy: expected one of"):
        load_config(None, ["trainer.strategy=horovod"])
    with pytest.raises(ValidationError, match="expected key=value"):
        load_config(None, ["trainer.max_steps"])
    assert parse_freeze("partial:3") == ("partial", 3)
    with pytest.raises(ValidationError, match="none, encoder or partial:N"):
        TrainConfig().replace(**{"model.freeze": "half"})
    for file in sorted(Path(__file__).resolve().parents[1].joinpath("configs", "train").glob("*.yaml")):
        load_config(file)  # the shipped example configs are valid
    # the CLI module and the config stay light: no torch, no Lightning until a command runs
    code = "import sys, ecgfm.train.cli; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_label_sets_and_freezing(store: Path) -> None:
    from ecgfm.models.heads import HeadSpec
    from ecgfm.models.registry import create_encoder
    from ecgfm.objectives import create_loss
    from ecgfm.store.format import Corpus
    from ecgfm.train.module import SupervisedModule, encoder_stages
    from ecgfm.train.run import resolve_labels

    corpus = Corpus.open(store)
    m = corpus.manifest
    counts = m.loc[m["split"] == "train", "labels"].explode().value_counts()
    assert resolve_labels(corpus, "min_positives:3") == tuple(sorted(counts[counts >= 3].index))
    assert resolve_labels(corpus, "all") == tuple(sorted(set(m["labels"].explode().dropna())))

    enc = create_encoder("resnet1d18", num_outputs=3, widths=(8, 8, 16, 16), stem_width=8, layers=(1, 1, 1, 1))
    assert len(encoder_stages(enc)) == 5  # stem + 4 stages
    head = HeadSpec("multilabel", 3, label_ids=tuple(LABELS3))

    def trainable(freeze: str) -> set[str]:
        mod = SupervisedModule(enc, head, create_loss("multilabel"), freeze=freeze)
        return {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("stages") else "")
                for n, p in mod.encoder.named_parameters() if p.requires_grad}

    assert trainable("encoder") == {"head"}
    assert trainable("partial:1") == {"head", "stages.3"}
    assert trainable("partial:2") == {"head", "stages.2", "stages.3"}
    assert trainable("none") == {"head", "stem", "stages.0", "stages.1", "stages.2", "stages.3"}
    with pytest.raises(ValidationError, match="only 5 stages"):
        SupervisedModule(enc, head, create_loss("multilabel"), freeze="partial:6")
    # stages follow the forward pass, not registration: conv_transformer registers its positional
    # convolution after the transformer blocks, but runs it before them
    names = [type(s).__name__ for s in encoder_stages(create_encoder("conv_transformer_small"))]
    assert names[-1] == "LayerNorm" and names[-2] == "TransformerBlock"
    assert names.index("ConvPositionalEmbedding") < names.index("TransformerBlock")


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ecgfm.train.run import train

    out = tmp_path_factory.mktemp("run") / "e2e"
    cfg = load_config(None, _base(store, out, f"data.labels={json.dumps(LABELS3)}", "data.test_split=test",
                                  "trainer.max_steps=5", "trainer.loggers=[csv, tensorboard]",
                                  "trainer.log_every_n_steps=1", "optim.lr=0.003"))
    return train(cfg)


def test_train_writes_checkpoints_logs_config_and_a_portable_model(trained: dict, store: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from ecgfm.models.portable import load_model
    from ecgfm.store.dataset import CorpusDataset

    out = Path(trained["out_dir"])
    assert trained["global_step"] == 5 and trained["label_ids"] == LABELS3
    assert (out / "checkpoints" / "last.ckpt").is_file()
    best = Path(trained["best_checkpoint"])
    assert best.is_file() and best.name == "best-epoch000-step000004.ckpt"  # validated after epoch 0
    # config.yaml: the resolved run configuration, the one the checkpoints carry
    saved = load_config(out / "config.yaml")
    assert saved.data.labels == tuple(LABELS3) and saved.trainer.max_steps == 5 and saved.data.store == str(store)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["ecgfm"]["config"] == saved.to_dict()
    assert ckpt["global_step"] == 5
    # logs: one training loss per step; the cosine schedule spans exactly the 5 steps of the run
    import pandas as pd

    log = pd.read_csv(out / "logs" / "csv" / "version_0" / "metrics.csv")
    assert log["train/loss"].notna().sum() == 5 and log["val/auroc"].notna().sum() >= 1
    lr = log.dropna(subset=["lr-AdamW/pg1"]).groupby("step")["lr-AdamW/pg1"].first()
    assert np.allclose(lr.to_numpy(), [0.003 * 0.5 * (1 + math.cos(math.pi * s / 5)) for s in lr.index])
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((out / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    # the portable model: best weights, the store's pipeline + the 5 s centre crop, the labels
    model = load_model(trained["model_dir"])
    assert model.labels == tuple(LABELS3) and model.input.fs == 100 and model.input.samples == 500
    files = [data_path("ludb", "data", "1.hea"), data_path("ludb", "data", "2.hea")]
    probs = model.predict(files)  # raw 500 Hz WFDB records -> the contract -> probabilities
    assert probs.shape == (2, 3) and np.all((probs >= 0) & (probs <= 1))
    # the logged validation AUROC is scikit-learn's macro AUROC of the exported weights
    ds = CorpusDataset(store, split="val", window=5.0, crop="center", label_ids=LABELS3)
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.no_grad():
        p = torch.sigmoid(model.encoder(batch["signal"], batch["mask"])).numpy()
    y = batch["labels"].numpy()
    ok = [j for j in range(3) if 0 < y[:, j].sum() < len(y)]
    assert ok and trained["val"]["auroc_labels"] == len(ok)
    assert trained["val"]["auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in ok]), abs=1e-6)
    assert trained["test"]["n"] == 22
    # per-label figures and operating points chosen on validation, carried to test
    per_label, points = model.label_metrics(), model.operating_points()
    for j in ok:
        label = LABELS3[j]
        assert per_label[label]["val_auroc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
        assert per_label[label]["val_n_positive"] == int(y[:, j].sum())
        low, high = points[label]
        assert 0 <= low <= high <= 1 and "test_auroc" in per_label[label] or y[:, j].sum() == 0


# ---------------------------------------------------------------------------------------------
# exact resume
# ---------------------------------------------------------------------------------------------
def _run(store: Path, out: Path, extra: list[str], callbacks: list) -> dict:
    from ecgfm.train.run import train

    return train(load_config(None, _base(store, out, *extra)), callbacks=callbacks)


@pytest.mark.parametrize(("accumulate", "steps", "stop"), [(1, 7, 3), (2, 4, 1)])
def test_resume_continues_the_loss_curve_exactly(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 accumulate: int, steps: int, stop: int) -> None:
    """Uninterrupted vs interrupted at step ``stop`` + resumed from last.ckpt: the same batches
    and the same per-batch losses after the interruption (across an epoch boundary and its
    validation; with dropout and random augmentations on)."""
    extra = [f"trainer.max_steps={steps}", f"trainer.accumulate_grad_batches={accumulate}",
             f"trainer.checkpoint_every_n_steps={stop}", "data.labels=min_positives:10",
             "data.augment=[{name: GaussianNoise, std: [0.05, 0.2], p: 0.5}]", "trainer.export=false"]
    whole = Record()
    _run(store, tmp_path / "whole", extra, [whole])
    first = Record()
    with pytest.raises(Interrupted):
        _run(store, tmp_path / "cut", extra, [first, StopAt(stop)])
    assert first.rows == whole.rows[:len(first.rows)]
    if accumulate == 1:
        shutil.copytree(tmp_path / "cut", tmp_path / "broken")
    rest = Record()
    result = _run(store, tmp_path / "cut", [*extra, "resume=auto"], [rest])
    assert result["global_step"] == steps
    n = len(rest.rows)
    assert n > 0 and len(first.rows) + n >= len(whole.rows)
    tail = whole.rows[-n:]
    assert [r[:2] for r in rest.rows] == [r[:2] for r in tail]  # (epoch, batch index)
    assert [r[3] for r in rest.rows] == [r[3] for r in tail]  # the same records in the same batches
    assert {r[0] for r in rest.rows} == {0, 1}  # the resumed part crosses an epoch boundary
    np.testing.assert_allclose([r[2] for r in rest.rows], [r[2] for r in tail], rtol=0, atol=1e-6)

    if accumulate == 1:
        # The comparison can fail: a resume that forgets how far into the epoch it was
        # (restarting the epoch's batches) gives another loss curve.
        from ecgfm.train.run import ResumableLoader

        def forget_position(self, state):
            self.batch_sampler.set_epoch(int(state["epoch"]))

        monkeypatch.setattr(ResumableLoader, "load_state_dict", forget_position)
        wrong = Record()
        _run(store, tmp_path / "broken", [*extra, "resume=auto"], [wrong])
        assert [r[3] for r in wrong.rows[:n]] != [r[3] for r in tail]
        assert max(abs(a[2] - b[2]) for a, b in zip(wrong.rows, tail)) > 1e-4


# ---------------------------------------------------------------------------------------------
# fine-tuning and embeddings (through the CLI)
# ---------------------------------------------------------------------------------------------
def test_finetune_linear_probe_to_a_new_label_set_keeps_the_encoder(trained: dict, store: Path,
                                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecgfm.models.portable import load_model
    from ecgfm.train.cli import app

    args = ["finetune", "--from", trained["model_dir"], "--json",
            *_base(store, tmp_path / "probe", "data.labels=min_positives:3", "model.freeze=encoder",
                   "trainer.max_steps=3", "optim.lr=0.05")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert len(info["label_ids"]) == 40  # 3 labels -> the 40 LUDB labels with >= 3 training records
    before = load_model(trained["model_dir"]).encoder.state_dict()
    after = load_model(info["model_dir"]).encoder.state_dict()
    assert after["head.weight"].shape == (40, before["head.weight"].shape[1])
    body = [k for k in before if not k.startswith("head.")]
    changed = [k for k in body if not torch.equal(before[k], after[k])]
    assert body and not changed  # weights and batch-norm statistics alike
    # the head did train: it moved away from the freshly reset head the run started from
    from ecgfm.train.run import build

    start = build(load_config(Path(info["config_path"]))).module.encoder.state_dict()
    assert all(torch.equal(start[k], before[k]) for k in body)
    assert not torch.allclose(start["head.weight"], after["head.weight"], atol=1e-3)

    bad = CliRunner().invoke(app, ["finetune", "--from", trained["model_dir"], f"data.store={store}",
                                   "trainer.max_step=3"])
    assert bad.exit_code == 1 and "did you mean trainer.max_steps" in bad.stderr


def test_embed_store_and_files(trained: dict, store: Path, tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from ecgfm.train.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["embed", trained["model_dir"], str(store), "--split", "val", "--out",
                              str(tmp_path / "val.parquet")])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp_path / "val.parquet")
    assert len(frame) == 20 and list(frame.columns[:3]) == ["record_id", "source", "f0"]
    files = [data_path("ludb", "data", f"{frame['record_id'].iloc[i]}.hea") for i in range(2)]
    (tmp_path / "broken.hea").write_text("not a header\n")
    res = runner.invoke(app, ["embed", trained["model_dir"], *map(str, files), str(tmp_path / "broken.hea"),
                              "--out", str(tmp_path / "files.npy")])
    assert res.exit_code == 1 and "broken.hea" in res.stderr and "1 of 3 files failed" in res.stderr
    x = np.load(tmp_path / "files.npy")
    ids = pd.read_csv(tmp_path / "files.npy.ids.csv", dtype=str)
    assert x.shape == (2, frame.shape[1] - 2) and ids["record_id"].tolist() == frame["record_id"].iloc[:2].tolist()
    # a raw file through the model's pipeline embeds like its preprocessed window in the store
    # (they differ only by the store's int16 quantisation)
    np.testing.assert_allclose(x, frame.iloc[:2, 2:].to_numpy(np.float32), rtol=1e-3, atol=1e-3)


def test_regression_head_learns_a_manifest_column(store: Path, tmp_path: Path) -> None:
    """A regression head trains on a numeric manifest column (age): the logged MAE is the mean
    absolute error of the exported model's predictions against each record's own age."""
    from ecgfm.models.portable import load_model
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import train

    cfg = load_config(None, _base(store, tmp_path / "age", "model.head=regression", "data.labels=[age]",
                                  "trainer.max_steps=4", "trainer.monitor=val/mae", "trainer.monitor_mode=min",
                                  "optim.lr=0.01"))
    result = train(cfg)
    model = load_model(result["model_dir"])
    ds = CorpusDataset(store, split="val", window=5.0, crop="center")
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.no_grad():
        pred = model.encoder(batch["signal"], batch["mask"])[:, 0].numpy()
    age = Corpus.open(store).manifest["age"].to_numpy(float)[batch["record"].numpy()]
    assert result["val"]["mae"] == pytest.approx(np.abs(pred - age).mean(), rel=1e-5)
    # a finished run's folder is not overwritten by a fresh run
    with pytest.raises(ValidationError, match="already holds a run.*resume=auto"):
        train(cfg)


def test_sliding_window_evaluation_is_what_the_exported_model_runs(store: Path, tmp_path: Path) -> None:
    """Train on 2.5 s crops, validate on 10 s records as 2.5 s windows every 1.25 s (max of the
    logits, as the PTB-XL benchmark scores): the logged AUROC is that of the exported model,
    whose contract carries the windows."""
    from sklearn.metrics import roc_auc_score

    from ecgfm.models.portable import load_model
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.train.run import train

    cfg = load_config(None, _base(store, tmp_path / "win", f"data.labels={json.dumps(LABELS3)}",
                                  "data.window=2.5", "data.eval_window=10", "data.eval_stride=1.25",
                                  "trainer.max_steps=4"))
    result = train(cfg)
    model = load_model(result["model_dir"])
    c = model.input
    assert (c.samples, c.window_samples, c.window_stride, c.aggregate) == (1000, 250, 125, "max")
    assert c.min_seconds == 2.5  # one training crop of signal is enough; the rest is padded
    ds = CorpusDataset(store, split="val", window=10.0, crop="center", label_ids=LABELS3)
    batch = ds.__getitems__(list(range(len(ds))))
    x = batch["signal"]
    with torch.no_grad():
        # 7 windows at 0, 125, ..., 750 samples; the encoder on each, then the max per record
        windows = torch.stack([model.encoder(x[..., s:s + 250]) for s in range(0, 751, 125)])
        expected = torch.sigmoid(windows.amax(0)).numpy()
        got = torch.sigmoid(model.forward(x, batch["mask"])).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    y = batch["labels"].numpy()
    ok = [j for j in range(3) if 0 < y[:, j].sum() < len(y)]
    logged = result["val"]["auroc"]
    assert logged == pytest.approx(np.mean([roc_auc_score(y[:, j], expected[:, j]) for j in ok]), abs=1e-6)
    # a raw 500 Hz file goes through the pipeline (10 s at 100 Hz), then the same windows
    probs = model.predict([data_path("ludb", "data", "1.hea")])
    assert probs.shape == (1, 3)
    with pytest.raises(ValidationError, match="eval_window"):
        load_config(None, _base(store, tmp_path / "bad", "data.window=5", "data.eval_window=2"))


def test_lead_subset_augmentations_widen_the_exported_contract() -> None:
    from ecgfm.leads import STANDARD_12
    from ecgfm.train.run import subset_contract

    assert subset_contract([], STANDARD_12) == {}
    assert subset_contract([{"name": "GaussianNoise", "std": 0.1}], STANDARD_12) == {}
    assert subset_contract([{"name": "LeadDropout", "p": 0.2}], STANDARD_12) == {
        "max_missing_leads": 11, "required_leads": []}
    # subsets {I, II} and {I, V1, V2}: two leads may be all there is, and lead I is always there
    rule = subset_contract([{"name": "RandomLeadSubset", "subsets": [["I", "II"], ["I", "V1", "V2"]]}], STANDARD_12)
    assert rule == {"max_missing_leads": 10, "required_leads": ["I"]}
