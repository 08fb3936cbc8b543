"""Self-supervised pretraining (ecgfm.train.pretrain, ``ecgfm pretrain``): configuration, an
end-to-end run through the command on a tiny store of real records (12-lead LUDB and 2-lead
MIT-BIH windows, several records per MIT-BIH patient) whose exported encoder ``ecgfm finetune
--from`` and ``ecgfm embed`` accept, exact resume with random masks, the patient-pair sampler and
the pretraining split table.

Every run uses a tiny ResNet1D (a few thousand weights) on 2.5 s windows at 100 Hz.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ValidationError

pytest.importorskip("lightning")
import lightning as L  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.encoder=resnet1d18",
        "model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1]}"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 LUDB records (12 leads, one patient each) and 60 MIT-BIH windows (2 leads: 4 patients
    with 15 windows each) at 100 Hz, absent leads masked."""
    from ecgfm.preprocess import Pipeline
    from ecgfm.store.adapters import adapter_for
    from ecgfm.store.build import build_corpus

    root = tmp_path_factory.mktemp("pretrain")
    ludb = root / "ludb" / "data"
    ludb.mkdir(parents=True)
    for i in range(1, 61):
        for suffix in (".hea", ".dat"):
            (ludb / f"{i}{suffix}").symlink_to(data_path("ludb", "data", f"{i}{suffix}"))
    out = root / "store"
    build_corpus([adapter_for(ludb.parent, "ludb"), adapter_for(data_path("mitdb"), stride_s=120)], out,
                 pipeline=Pipeline.standard(fs=100, missing="mask"), workers=1, progress=False)
    return out


def _args(store: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.store={store}", f"out_dir={out}", "data.window=2.5", "data.batch_size=16",
            "data.num_workers=0", "trainer.progress=none", "trainer.loggers=[csv]",
            "trainer.num_sanity_val_steps=0", "trainer.deterministic=true", "trainer.log_every_n_steps=1",
            *TINY, *extra]


COMBINED = ("pretrain.objectives=[{name: cpc, patch_seconds: 0.5, steps: 2, context_dim: 16}, "
            "{name: masked, weight: 0.5, decoder_dim: 8}, {name: cmsc, projection_dim: 8}]")


class Record(L.Callback):
    """Every training batch's (epoch, batch index, loss, records)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float, list[int]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.current_epoch, batch_idx, float(outputs["loss"]), batch["record"].tolist()))


class Interrupted(Exception):
    pass


class StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted


def test_config_sections_defaults_and_shipped_configs(tmp_path: Path) -> None:
    from ecgfm.train.pretrain import PretrainConfig, load_pretrain_config

    cfg, pcfg = load_pretrain_config(None, ["data.store=/s", "pretrain.objectives={name: masked, lead_prob: 0.5}",
                                            "pretrain.pair_patients=true"])
    assert cfg.trainer.monitor == "val/loss" and cfg.trainer.monitor_mode == "min" and cfg.out_dir == "runs/pretrain"
    assert pcfg.objectives == ({"name": "masked", "lead_prob": 0.5},) and pcfg.pair_patients
    path = tmp_path / "p.yaml"
    path.write_text("data: {store: /x}\ntrainer: {monitor: val/cpc/loss}\npretrain:\n  objective: [cpc]\n")
    with pytest.raises(ValidationError, match=r"p.yaml: pretrain: unknown key\(s\) objective \(valid: objectives, pair_patients\)"):
        load_pretrain_config(path)
    with pytest.raises(ValidationError, match="name one of cpc, wav2vec2, masked, cmsc"):
        PretrainConfig(objectives=({"name": "simclr"},))
    with pytest.raises(ValidationError, match="unknown key 'trainer.max_step'"):
        load_pretrain_config(None, ["trainer.max_step=3"])
    shipped = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"cpc", "wav2vec2", "masked", "cmsc", "combined"}
    for file in shipped:
        cfg, pcfg = load_pretrain_config(file)
        assert cfg.trainer.monitor == "val/loss" and cfg.data.window == 5.0 and cfg.model.encoder == "resnet1d18"
    # the command module stays light: no torch, no Lightning until the command runs
    code = "import sys, ecgfm.train.pretrain_cli; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_pretrain_command_exports_an_encoder_that_finetune_and_embed_accept(store: Path, tmp_path: Path) -> None:
    from ecgfm.train.cli import app as train_app
    from ecgfm.train.pretrain_cli import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "--json", "pretrain.pair_patients=true", COMBINED,
                                      *_args(store, run, "trainer.max_steps=4", "trainer.val_check_interval=2")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["global_step"] == 4 and summary["objectives"] == ["cpc", "masked", "cmsc"]
    assert summary["ecgs_per_second"] > 0 and np.isfinite(summary["val"]["loss"])
    for name in ("config.yaml", "pretrain.yaml", "checkpoints/last.ckpt", "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file()
    metrics = (next((run / "logs" / "csv").glob("version_*")) / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss", "train/cpc/loss", "train/masked/loss", "train/cmsc/loss", "val/loss",
                   "val/cmsc/accuracy"):
        assert column in metrics.split(","), column
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["head"] is None and config["encoder"] == "resnet1d18"
    assert config["input"]["max_missing_leads"] == 10  # MIT-BIH windows carry 2 of the 12 leads
    assert config["training"]["store_pipeline_hash"] and config["training"]["pretrain"]["pair_patients"]

    # ecgfm finetune --from RUN/model: a new multi-label head on the pretrained encoder
    ft = tmp_path / "ft"
    result = CliRunner().invoke(train_app, ["finetune", "--from", str(run / "model"), "--json",
                                            *_args(store, ft, "trainer.max_steps=2", "data.labels=min_positives:5",
                                                   "model.freeze=encoder", "optim.lr=0.01")])
    assert result.exit_code == 0, result.output
    from ecgfm.models.portable import load_model

    pretrained, tuned = load_model(run / "model"), load_model(ft / "model")
    assert tuned.head is not None and tuned.head.num_outputs > 0
    for key, value in pretrained.encoder.state_dict().items():  # a linear probe leaves the encoder as it was
        torch.testing.assert_close(tuned.encoder.state_dict()[key], value)
    # model.init may name the Lightning checkpoint too
    from ecgfm.train.run import _load_init

    encoder, head, info = _load_init(str(run / "checkpoints" / "last.ckpt"))
    assert head is None and info["encoder"] == "resnet1d18" and encoder.num_outputs == 0
    # ecgfm embed on the store
    result = CliRunner().invoke(train_app, ["embed", str(run / "model"), str(store), "--split", "val",
                                            "--out", str(tmp_path / "val.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "val.npy").shape[1] == 16


def test_resume_continues_the_pretraining_loss_curve_exactly(store: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Uninterrupted vs interrupted at step 3 and resumed: the same batches (patient-pair order)
    and the same losses after the interruption, with random span masks and Gumbel noise drawn
    from the restored random streams, across an epoch boundary and its validation."""
    from ecgfm.train.pretrain import pretrain

    objectives = ("pretrain.objectives=[{name: wav2vec2, patch_seconds: 0.5, context_dim: 16, context_depth: 1, "
                  "context_heads: 2, final_dim: 8, entries: 8, code_dim: 8}, {name: cmsc, projection_dim: 8}]")
    extra = ["trainer.max_steps=8", "trainer.checkpoint_every_n_steps=3", "pretrain.pair_patients=true",
             objectives, "trainer.export=false"]
    whole = Record()
    pretrain(None, _args(store, tmp_path / "whole", *extra), callbacks=[whole])
    first = Record()
    with pytest.raises(Interrupted):
        pretrain(None, _args(store, tmp_path / "cut", *extra), callbacks=[first, StopAt(3)])
    shutil.copytree(tmp_path / "cut", tmp_path / "broken")
    rest = Record()
    result = pretrain(None, _args(store, tmp_path / "cut", *extra, "resume=auto"), callbacks=[rest])
    assert result["global_step"] == 8
    tail = whole.rows[-len(rest.rows):]
    assert len(first.rows) == 3 and len(rest.rows) == 5
    assert {r[0] for r in rest.rows} == {0, 1}  # crosses an epoch boundary
    assert [r[3] for r in rest.rows] == [r[3] for r in tail]
    np.testing.assert_allclose([r[2] for r in rest.rows], [r[2] for r in tail], rtol=0, atol=1e-6)

    # the check can fail: a resume that does not restore the random streams draws other masks
    import ecgfm.train.pretrain as module

    monkeypatch.setattr(module, "_set_rng_state", lambda state: torch.manual_seed(12345))
    wrong = Record()
    pretrain(None, _args(store, tmp_path / "broken", *extra, "resume=auto"), callbacks=[wrong])
    assert [r[3] for r in wrong.rows] == [r[3] for r in tail]  # same batches ...
    assert max(abs(a[2] - b[2]) for a, b in zip(wrong.rows, tail)) > 1e-4  # ... other masks


def test_patient_pair_sampler_puts_a_patients_records_side_by_side() -> None:
    from ecgfm.train.pretrain import PatientPairSampler

    groups = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5, 5])
    shares = []
    for rank in range(2):
        sampler = PatientPairSampler(groups, seed=1, rank=rank, world_size=2)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler) == 8  # 13 items -> 2 x 8, padded by wrapping
    order = PatientPairSampler(groups, seed=1, rank=0, world_size=2)
    order.set_epoch(3)
    flat = order.order()
    assert set(flat.tolist()) == set(range(13)) and flat.tolist() == shares[0] + shares[1]
    pairs = flat.reshape(-1, 2)[:7]  # 13 items make 7 pairs (the odd one out pairs with a random item)
    # patients 0, 2, 4 and 5 (2, 3, 2 and 4 records) give 1 + 1 + 1 + 2 same-patient pairs
    assert sum(groups[a] == groups[b] for a, b in pairs) >= 5
    other = PatientPairSampler(groups, seed=1, rank=0, world_size=2)
    other.set_epoch(4)
    assert other.order().tolist() != flat.tolist()


def test_pretrain_splits_keep_excluded_records_out_and_patients_whole(store: Path) -> None:
    from ecgfm.store.format import Corpus
    from ecgfm.train.pretrain import pretrain_splits

    corpus = Corpus.open(store)
    m = corpus.manifest
    excluded = m.loc[m["dataset"] == "ludb", "record_id"].tolist()[:10]
    table = pretrain_splits(corpus, exclude=excluded, val_fraction=0.3, seed=0)
    assert (table.set_index("record_id").loc[excluded, "split"] == "none").all()
    assert set(table["split"]) == {"train", "val", "none"}
    patients = m.set_index("record_id").loc[table["record_id"], "patient_key"].to_numpy()
    for p in set(patients):
        assert table["split"][patients == p].nunique() == 1  # a patient's records stay together
    with pytest.raises(ValidationError, match="not in the store"):
        pretrain_splits(corpus, exclude=["nope"])
