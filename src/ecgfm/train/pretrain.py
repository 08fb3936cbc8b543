"""Self-supervised pretraining: ``ecgfm pretrain --config FILE`` on a corpus store, labels ignored.

:func:`pretrain` fits a registry encoder with the objectives of :mod:`ecgfm.objectives` (CPC,
wav2vec 2.0-style contrast, masked-lead/span modelling, segment/patient contrast, or a weighted
combination; see ``docs/pretraining.md``) and leaves in ``out_dir``::

    out_dir/config.yaml                     the resolved run configuration (ecgfm train's sections)
    out_dir/pretrain.yaml                   the pretraining settings (objectives, weights, options)
    out_dir/checkpoints/last.ckpt           the latest state (every N steps, each validation, the end)
    out_dir/checkpoints/best-*.ckpt         the lowest validation loss (trainer.monitor = val/loss)
    out_dir/logs/csv/version_K/metrics.csv  per-step loss and every objective's parts, validation losses
    out_dir/model/                          the encoder (no head) as a portable model, with the store's
                                            preprocessing: ecgfm finetune --from / model.init / ecgfm embed

The run reuses the training engine (:mod:`ecgfm.train.run`): the same YAML sections and
``section.key=value`` overrides (``data``, ``model``, ``optim``, ``trainer``, ``out_dir``,
``seed``, ``resume``, ``card``), the same Trainer, callbacks, loggers and exact resume
(``resume=auto``: weights, optimizer, schedule, the loader's place in the epoch, and the random
streams that draw the masks). Pretraining settings live in a ``pretrain:`` section
(:class:`PretrainConfig`; ``pretrain.key=value`` on the command line). What differs from
``ecgfm train``: no labels (``data.labels`` and ``model.head`` are not used), the monitored
metric defaults to ``val/loss`` (minimised), and the export is the encoder alone.

Data: ``data.window`` seconds per example (random crops of the store's records,
``data.train_crop``); an objective that contrasts two time-adjacent segments (``cmsc``) makes the
run crop ``2 x data.window`` and split it. Batches may mix 12-lead and single-lead records: a
store built with ``--pipeline standard:missing=mask`` keeps absent leads as zeros with their lead
mask False, and the encoder sees them as missing.

>>> from ecgfm.train.pretrain import pretrain                                    # doctest: +SKIP
>>> result = pretrain("configs/pretrain/cpc.yaml", ["trainer.max_steps=2000"])  # doctest: +SKIP
>>> result["model_dir"]                                                          # doctest: +SKIP
'runs/pretrain_cpc/model'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from ecgfm.errors import ValidationError
from ecgfm.objectives.ssl import (
    SSLInput,
    SSLObjective,
    create_ssl_objective,
    encoder_dims,
    objective_summary,
    run_views,
)
from ecgfm.store.dataset import CorpusDataset, EpochBatchSampler, collate, distributed_context
from ecgfm.store.format import Corpus
from ecgfm.train.config import OptimConfig, TrainConfig
from ecgfm.train.module import _rng_state, _set_rng_state, adamw_with_schedule
from ecgfm.train.run import (
    CHECKPOINTS,
    LAST,
    ResumableBatchSampler,
    ResumableLoader,
    RunData,
    total_steps,
)

__all__ = [
    "PRETRAIN_FILE", "PatientPairSampler", "PretrainConfig", "PretrainData", "PretrainModule", "Throughput",
    "export_encoder", "load_pretrain_config", "pretrain", "pretrain_splits",
]

PRETRAIN_FILE = "pretrain.yaml"
DEFAULT_OUT = "runs/pretrain"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain:`` section of a run: which objectives, with which weights and options."""

    objectives: tuple[dict[str, Any], ...] = ({"name": "cpc"},)  # [{name: cpc, weight: 1.0, <option>: ...}, ...]; several = a weighted sum (ecgfm.objectives.ssl.create_ssl_objective)
    pair_patients: bool = False  # order each epoch so records of one patient come in adjacent pairs (patient positives of cmsc); needs an even data.batch_size

    def __post_init__(self) -> None:
        from ecgfm.objectives.ssl import SSL_OBJECTIVES

        if not self.objectives:
            raise ValidationError("pretrain.objectives: give at least one objective, e.g. [{name: cpc}]")
        for i, spec in enumerate(self.objectives):
            if not isinstance(spec, Mapping) or spec.get("name") not in SSL_OBJECTIVES:
                raise ValidationError(f"pretrain.objectives[{i}]: expected a mapping with name one of "
                                      f"{', '.join(SSL_OBJECTIVES)}, got {spec!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as saved in ``pretrain.yaml``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def load_pretrain_config(path: str | os.PathLike[str] | None,
                         overrides: Sequence[str] = ()) -> tuple[TrainConfig, PretrainConfig]:
    """``(TrainConfig, PretrainConfig)`` from a YAML file and ``key=value`` overrides.

    The file is an ``ecgfm train`` configuration plus a ``pretrain:`` section; overrides
    ``pretrain.key=value`` set that section (values in YAML: ``pretrain.objectives=[{name:
    masked, lead_prob: 0.5}]``), every other one goes to
    :func:`ecgfm.train.config.apply_overrides`. Pretraining defaults differ from training's in
    two keys, used unless the file or an override sets them: ``trainer.monitor: val/loss``
    with ``trainer.monitor_mode: min``, and ``out_dir: runs/pretrain``.

    Raises:
        ReadError: the file is missing or not YAML.
        ValidationError: unknown keys or wrong types (naming the file or the override).
    """
    import yaml

    from ecgfm.train.config import _section, apply_overrides, config_from_dict, read_yaml_sections

    where = "config"
    data: dict[str, Any] = {}
    if path is not None:
        where = str(path)
        data = dict(read_yaml_sections(Path(path)))
    section = dict(data.pop("pretrain", None) or {})
    trainer = dict(data.get("trainer") or {})
    trainer.setdefault("monitor", "val/loss")
    trainer.setdefault("monitor_mode", "min")
    data["trainer"] = trainer
    data.setdefault("out_dir", DEFAULT_OUT)
    engine: list[str] = []
    for item in overrides:
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if key.startswith("pretrain."):
            if not eq:
                raise ValidationError(f"override {item!r}: expected key=value, e.g. pretrain.pair_patients=true")
            try:
                section[key[len("pretrain."):]] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as exc:
                raise ValidationError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        else:
            engine.append(str(item))
    cfg = config_from_dict(data, where)
    if engine:
        cfg = apply_overrides(cfg, engine)
    if "objectives" in section and isinstance(section["objectives"], Mapping):
        section["objectives"] = [section["objectives"]]
    pcfg = _section(PretrainConfig, section, f"{where}: pretrain")
    return cfg, pcfg


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class PatientPairSampler(Sampler[int]):
    """Training order in which the records of one patient come in adjacent pairs.

    Each epoch (order drawn from ``(seed, epoch)``): the records are shuffled, each patient's
    records are cut into pairs, records left alone are paired with each other, the pairs are
    shuffled and laid end to end. The list is padded (wrapping around) to an even number of
    items per rank and rank ``r`` takes the ``r``-th contiguous share, so with an even batch size
    both records of a pair land in the same batch (and a patient's records become positives of
    :class:`~ecgfm.objectives.contrastive.SegmentContrast` with ``patients=True``).

    Args:
        groups: ``[N]`` patient code of each dataset item.
        seed: seed of the order.
        rank, world_size: DDP placement (default: torch.distributed's, else 0 of 1).
    """

    def __init__(self, groups: np.ndarray, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.groups = np.asarray(groups)
        self.seed = int(seed)
        self.rank, self.world_size = distributed_context(rank, world_size)
        self.epoch = 0
        n = len(self.groups)
        self.num_samples = 2 * math.ceil(n / (2 * self.world_size))
        self.total_size = self.num_samples * self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def order(self) -> np.ndarray:
        """Every rank's items of this epoch, pairs adjacent (``[total_size]``)."""
        n = len(self.groups)
        rng = np.random.default_rng([self.seed, self.epoch])
        shuffled = rng.permutation(n)
        by_group: dict[Any, list[int]] = {}
        for i in shuffled.tolist():
            by_group.setdefault(self.groups[i], []).append(i)
        pairs: list[tuple[int, int]] = []
        singles: list[int] = []
        for items in by_group.values():
            pairs.extend((items[j], items[j + 1]) for j in range(0, len(items) - 1, 2))
            if len(items) % 2:
                singles.append(items[-1])
        pairs.extend((singles[j], singles[j + 1]) for j in range(0, len(singles) - 1, 2))
        if len(singles) % 2:
            pairs.append((singles[-1], int(shuffled[0])))
        flat = np.asarray(pairs, np.int64)[rng.permutation(len(pairs))].reshape(-1)
        if len(flat) < self.total_size:
            flat = np.resize(flat, self.total_size)  # wraps around
        return flat[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        share = self.order()[self.rank * self.num_samples:(self.rank + 1) * self.num_samples]
        return iter(share.tolist())


class PretrainData(RunData):
    """The run's loaders (:class:`~ecgfm.train.run.RunData`), with the patient-pair order for
    training when ``groups`` (patient code per training item) is given."""

    def __init__(self, train_set: CorpusDataset, val_set: CorpusDataset, batch_size: int, eval_batch_size: int,
                 num_workers: int, seed: int, pin_memory: bool, groups: np.ndarray | None = None) -> None:
        super().__init__(train_set, val_set, None, batch_size, eval_batch_size, num_workers, seed, pin_memory)
        self.groups = groups

    def train_dataloader(self) -> DataLoader:
        if self.groups is None:
            return super().train_dataloader()
        sampler = PatientPairSampler(self.groups, seed=int(self.kw["seed"]))
        batches = EpochBatchSampler(sampler, self.batch_size, drop_last=True)
        generator = torch.Generator().manual_seed(int(self.kw["seed"]))
        workers = int(self.kw["num_workers"])
        return ResumableLoader(self.train_set, batch_sampler=ResumableBatchSampler(batches), num_workers=workers,
                               collate_fn=collate, pin_memory=bool(self.kw["pin_memory"]),
                               persistent_workers=workers > 0, generator=generator)

    def batches_per_epoch(self, world_size: int) -> int:
        if self.groups is None:
            return super().batches_per_epoch(world_size)
        return 2 * math.ceil(len(self.train_set) / (2 * max(world_size, 1))) // self.batch_size


def pretrain_splits(corpus: Corpus | str | os.PathLike[str], *, exclude: Sequence[str] = (),
                    val_fraction: float = 0.05, seed: int = 0) -> Any:
    """A ``data.overrides`` table that puts every record of a store into pretraining.

    Every record goes to ``train``, except the records ``exclude`` (record ids: e.g. the
    validation and test folds of a downstream benchmark), which leave every split (``none``),
    and a ``val_fraction`` of the patients (``patient_key``, else ``patient_id``, else the
    record), drawn with ``seed``, which go to ``val`` to monitor the self-supervised loss.

    Returns:
        A pandas DataFrame with columns ``record_id`` and ``split``; write it with
        ``to_csv(path, index=False)`` and pass ``data.overrides=path``.
    """
    import pandas as pd

    corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
    m = corpus.manifest
    ids = m["record_id"].astype(str)
    unknown = sorted(set(map(str, exclude)) - set(ids))
    if unknown:
        raise ValidationError(f"{corpus.root}: {len(unknown)} excluded record id(s) are not in the store, "
                              f"e.g. {unknown[:5]}")
    if not 0 <= val_fraction < 1:
        raise ValidationError(f"val_fraction must be in [0, 1), got {val_fraction}")
    patients = _patients(m)
    excluded = ids.isin(set(map(str, exclude))).to_numpy()
    codes, uniques = pd.factorize(pd.Series(patients))
    rng = np.random.default_rng(int(seed))
    kept = np.unique(codes[~excluded])
    n_val = round(val_fraction * len(kept))
    val_patients = set(rng.permutation(kept)[:n_val].tolist())
    split = np.where(excluded, "none", np.where(np.isin(codes, list(val_patients)), "val", "train"))
    return pd.DataFrame({"record_id": ids.to_numpy(), "split": split})


def _patients(manifest: Any) -> np.ndarray:
    """Patient key per manifest row: ``patient_key``, else ``patient_id``, else the record id."""
    ids = manifest["record_id"].astype(str).to_numpy()
    for column in ("patient_key", "patient_id"):
        if column in manifest.columns:
            values = manifest[column].astype(object).to_numpy()
            return np.array([ids[i] if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                             for i, v in enumerate(values)], dtype=object)
    return ids.astype(object)


# ---------------------------------------------------------------------------------------------
# the LightningModule
# ---------------------------------------------------------------------------------------------
class PretrainModule(L.LightningModule):
    """A registry encoder trained by a self-supervised objective on corpus batches.

    Args:
        encoder: a registry encoder without a head (``num_outputs == 0``).
        objective: an :class:`~ecgfm.objectives.ssl.SSLObjective` (or a Combined one).
        optim: learning rate, weight decay and schedule (AdamW; no decay on 1-D parameters).
        window: samples per example ``T``; the batches hold ``2 T`` when the objective
            ``needs_pair`` (split into the window and its time-adjacent neighbour, in random
            order per record).
        groups: ``[N_records]`` patient code per manifest row (looked up by each batch's
            ``record``), or None.
        meta: JSON-able description stored in every checkpoint under ``"ecgfm"`` (the encoder's
            name and config, so ``model.init`` / ``ecgfm finetune --from`` read a checkpoint).
        seed: seeds the masks of validation batches (the same masks every validation).

    Logged: ``train/loss`` and every scalar part (``train/cpc/accuracy`` ...) per step;
    ``val/loss`` and the parts' means after each validation.
    """

    def __init__(self, encoder: nn.Module, objective: SSLObjective, optim: OptimConfig | None = None, *,
                 window: int, groups: np.ndarray | None = None, meta: Mapping[str, Any] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if int(getattr(encoder, "num_outputs", 0)) != 0:
            raise ValidationError("PretrainModule: the encoder must have no head (reset_head(0))")
        self.encoder = encoder
        self.objective = objective
        self.optim = optim or OptimConfig()
        self.window = int(window)
        self.pair = bool(objective.needs_pair)
        self.meta = dict(meta or {})
        self.seed = int(seed)
        if groups is not None:
            self.register_buffer("record_groups", torch.as_tensor(np.asarray(groups, np.int64)), persistent=False)
        else:
            self.record_groups: Tensor | None = None
        self.schedule_steps: Any = None  # world size -> optimizer steps of the run
        self.eval_prefix = "val"
        self.val_metrics: dict[str, float] = {}
        self._val_sums: dict[str, Tensor] = {}
        self._rng_to_restore: dict[str, Any] | None = None
        if not objective.uses_pooled:
            # the pooling block (a concat-pool's batch norm) gets no gradient: keep DDP from waiting for it
            for p in getattr(encoder, "pooler", nn.Identity()).parameters():
                p.requires_grad_(False)

    # -- batches -------------------------------------------------------------------------------
    def ssl_input(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> SSLInput:
        """The :class:`~ecgfm.objectives.ssl.SSLInput` of a store batch."""
        from ecgfm.objectives.ssl import random_uniform
        from ecgfm.store.dataset import to_float

        batch = to_float(batch)
        x = batch["signal"].float()
        mask = batch["mask"].bool()
        mask = mask | ~mask.any(dim=1, keepdim=True)  # a record without a present lead: all "present" zeros
        b, t = x.shape[0], self.window
        length = batch.get("length")
        length = torch.full((b,), x.shape[2], device=x.device) if length is None else length.to(x.device)
        groups = None
        if self.record_groups is not None and "record" in batch:
            groups = self.record_groups[batch["record"].to(self.record_groups.device)].to(x.device)
        if not self.pair:
            return SSLInput(x[..., :t], mask, length.clamp(max=t), groups=groups, generator=generator)
        if x.shape[2] < 2 * t:
            raise ValidationError(f"a pair objective needs batches of {2 * t} samples, got {x.shape[2]}")
        a, bb = x[..., :t], x[..., t:2 * t]
        la, lb = length.clamp(max=t), (length - t).clamp(min=0, max=t)
        swap = random_uniform((b,), generator, x.device) < 0.5
        s = swap[:, None, None]
        return SSLInput(torch.where(s, bb, a), mask, torch.where(swap, lb, la), pair=torch.where(s, a, bb),
                        pair_length=torch.where(swap, la, lb), groups=groups, generator=generator)

    def compute(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The objective's loss dict on a store batch."""
        views, state = self.objective.views(self.ssl_input(batch, generator))
        return self.objective(run_views(self.encoder, views), state)

    # -- steps ---------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.train()  # an encoder loaded with load_model() (model.init) arrives in eval mode

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        self.objective.set_step(int(self.global_step))
        out = self.compute(batch)
        size = int(batch["signal"].shape[0])
        self.log("train/loss", out["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        for key, value in out.items():
            if key != "loss" and torch.is_tensor(value) and value.ndim == 0:
                self.log(f"train/{key}", value.detach().float(), on_step=True, on_epoch=False, batch_size=size)
        return out

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(batch_idx))
        out = self.compute(batch, generator)
        n = float(batch["signal"].shape[0])
        for key, value in out.items():
            if torch.is_tensor(value) and value.ndim == 0:
                prior = self._val_sums.get(key)
                term = value.detach().float() * n
                self._val_sums[key] = term if prior is None else prior + term
        count = self._val_sums.get("_n")
        one = torch.tensor(n, device=out["loss"].device)
        self._val_sums["_n"] = one if count is None else count + one

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        if not self._val_sums:
            return
        keys = sorted(self._val_sums)
        sums = torch.stack([self._val_sums[k] for k in keys])
        self._val_sums = {}
        if self.trainer is not None and self.trainer.world_size > 1:
            sums = self.all_gather(sums).reshape(-1, len(keys)).sum(dim=0)
        n = float(sums[keys.index("_n")])
        metrics = {k: float(sums[i]) / max(n, 1.0) for i, k in enumerate(keys) if k != "_n"}
        metrics["n"] = n
        self.val_metrics = metrics
        for key, value in metrics.items():
            self.log(f"{self.eval_prefix}/{key}", value, prog_bar=key == "loss", sync_dist=True)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.optim
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        return adamw_with_schedule(self, groups, o)

    # -- checkpoints and exact resume ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ecgfm"] = {**self.meta, "val_metrics": dict(self.val_metrics), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = (checkpoint.get("ecgfm") or {}).get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None


class Throughput(L.Callback):
    """Training examples per second: the wall time of the training epochs (data loading,
    forward, backward and optimizer steps) without the validation runs inside them."""

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._start: float | None = None
        self._val_start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.examples += int(batch["signal"].shape[0]) * int(trainer.world_size)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    @property
    def per_second(self) -> float | None:
        """Examples (ECG windows; pairs count once) per second over all ranks."""
        return self.examples / self.seconds if self.seconds > 0 else None


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def export_encoder(encoder: nn.Module, directory: str | os.PathLike[str], *, corpus: Corpus, leads: Sequence[str],
                   window: float | None = None, eval_crop: str = "center", metrics: Mapping[str, Any] | None = None,
                   training: Mapping[str, Any] | None = None, card: Mapping[str, Any] | None = None) -> Path:
    """Write a pretrained encoder (no head) as a portable model with the store's preprocessing.

    Args:
        encoder: the registry encoder (``num_outputs == 0``).
        directory: the model folder (replaced if it holds a model).
        corpus: the store it was pretrained on (its pipeline becomes the model's).
        leads: the input leads, in order.
        window: seconds the exported model takes (a crop appended to the store's pipeline);
            None: the store's record length.
        eval_crop: where that crop is cut (``center`` or ``start``).
        metrics, training, card: for ``config.json`` and the card.

    The contract allows as many absent leads as the store's records lacked (a store built with
    ``missing=mask`` from single-lead sources: all but one).
    """
    from ecgfm.models.portable import save_model
    from ecgfm.train.run import export_pipeline

    pipeline = export_pipeline(corpus.pipeline, window=window, leads=tuple(leads), store_leads=corpus.leads,
                               eval_crop=eval_crop)
    present = np.asarray([np.asarray(v, bool).sum() for v in corpus.manifest["lead_mask"]]) if len(corpus) else None
    missing = 0 if present is None else int(len(leads) - present.min())
    contract: dict[str, Any] = {"lead_mask": bool(getattr(encoder, "supports_lead_mask", False))}
    if missing and contract["lead_mask"]:
        contract["max_missing_leads"] = min(missing, len(leads) - 1)
    was_training = encoder.training
    encoder.eval()
    try:
        return save_model(directory, encoder, head=None, pipeline=pipeline, input=contract, card=dict(card or {}),
                          metrics=dict(metrics or {}), training=dict(training or {}),
                          encoder_name=getattr(encoder, "encoder_name", None), overwrite=True)
    finally:
        encoder.train(was_training)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _build(cfg: TrainConfig, pcfg: PretrainConfig) -> tuple[Corpus, PretrainData, PretrainModule, tuple[str, ...], int]:
    from ecgfm.train.run import _augmentation, _load_init, with_overrides

    d, m = cfg.data, cfg.model
    if not d.store:
        raise ValidationError("data.store: give the corpus store folder (data.store=PATH)")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    corpus = with_overrides(Corpus.open(d.store), d.overrides)
    if corpus.fs is None:
        raise ValidationError(f"{d.store}: pretraining needs a store of one sampling rate (build it with a resample step)")
    if d.window is None:
        raise ValidationError("data.window: pretraining crops windows; give their length in seconds")
    leads = tuple(d.leads) if d.leads is not None else corpus.leads
    window = round(d.window * corpus.fs)
    if m.init:
        encoder, _, init_info = _load_init(m.init)
        encoder.reset_head(0)
        if int(encoder.in_leads) != len(leads):
            raise ValidationError(f"{m.init}: the model takes {encoder.in_leads} leads, the data gives {len(leads)}")
        encoder_name = str(init_info["encoder"])
    else:
        from ecgfm.models.registry import create_encoder

        encoder = create_encoder(m.encoder, **{"in_leads": len(leads), "num_outputs": 0, **m.encoder_args})
        if int(encoder.num_outputs) != 0 or int(encoder.in_leads) != len(leads):
            raise ValidationError("model.encoder_args: in_leads/num_outputs are set by the run (the data's leads, "
                                  "no head); leave them out")
        encoder_name, init_info = m.encoder, None
    dims = encoder_dims(encoder, corpus.fs, window)
    objective = create_ssl_objective(list(pcfg.objectives), dims)
    crop_seconds = d.window * (2 if objective.needs_pair else 1)
    common = dict(leads=leads, label_ids=(), seed=cfg.seed)
    train_set = CorpusDataset(corpus, split=d.train_split, crop=d.train_crop, window=crop_seconds,
                              augment=_augmentation(d.augment, leads), **common)
    val_set = CorpusDataset(corpus, split=d.val_split, crop=d.eval_crop, window=crop_seconds, **common)
    if len(train_set) < d.batch_size:
        raise ValidationError(f"{d.store}: split {d.train_split!r} has {len(train_set)} windows, fewer than one "
                              f"batch ({d.batch_size}); lower data.batch_size")
    if objective.needs_pair:
        short = int((corpus.lengths[train_set.rows] < 2 * window).sum())
        if short:
            warnings.warn(f"{d.store}: {short} of {len(train_set)} training records are shorter than the "
                          f"{2 * d.window:g} s a segment pair needs; their second segment is partly zero padding",
                          stacklevel=3)
    codes = None
    if objective.needs_pair or pcfg.pair_patients or any(
            s.get("name") == "cmsc" for s in pcfg.objectives):
        import pandas as pd

        codes = pd.factorize(pd.Series(_patients(corpus.manifest)))[0].astype(np.int64)
    item_groups = None
    if pcfg.pair_patients:
        if codes is None:  # pragma: no cover - set above
            raise ValidationError("pretrain.pair_patients needs patient codes")
        if d.batch_size % 2:
            raise ValidationError(f"pretrain.pair_patients needs an even data.batch_size, got {d.batch_size}")
        item_groups = codes[train_set.rows]
    data = PretrainData(train_set, val_set, d.batch_size, d.eval_batch_size or d.batch_size, d.num_workers,
                        cfg.seed, d.pin_memory, item_groups)
    pipeline = corpus.pipeline
    meta = {
        "config": cfg.to_dict(), "pretrain": pcfg.to_dict(), "encoder": encoder_name,
        "encoder_config": json.loads(json.dumps(dataclasses.asdict(encoder.config), default=list)),
        "leads": list(leads), "store": str(d.store), "pipeline_hash": None if pipeline is None else pipeline.hash,
        "init": init_info, "objective": objective_summary(objective),
    }
    module = PretrainModule(encoder, objective, cfg.optim, window=window, groups=codes, meta=meta, seed=cfg.seed)
    module.schedule_steps = lambda world_size: total_steps(cfg, data.batches_per_epoch(world_size))
    return corpus, data, module, leads, window


def pretrain(config: TrainConfig | str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), *,
             pretrain_config: PretrainConfig | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Pretrain an encoder self-supervised on a store; write checkpoints, logs and the model.

    Args:
        config: a YAML file (``ecgfm train`` sections plus ``pretrain:``), a
            :class:`~ecgfm.train.config.TrainConfig` (then ``pretrain_config`` gives the
            objectives), or None (defaults + ``overrides``).
        overrides: ``section.key=value`` items; ``pretrain.key=value`` for :class:`PretrainConfig`.
        pretrain_config: the objectives when ``config`` is a TrainConfig.
        callbacks: extra Lightning callbacks.

    Returns:
        ``{"out_dir", "config_path", "last_checkpoint", "best_checkpoint", "model_dir",
        "global_step", "epoch", "val": {"loss", <parts>...}, "n_train", "n_val", "seconds",
        "train_seconds", "ecgs_per_second", "objectives", "global_rank"}``.
    """
    t0 = time.perf_counter()
    if isinstance(config, TrainConfig):
        cfg = config
        if overrides:
            from ecgfm.train.config import apply_overrides

            cfg = apply_overrides(cfg, overrides)
        pcfg = pretrain_config or PretrainConfig()
    else:
        cfg, pcfg = load_pretrain_config(config, overrides)
        if pretrain_config is not None:
            pcfg = pretrain_config
    from ecgfm.train.config import load_config, save_config
    from ecgfm.train.run import _changed_keys, _resume_path, _trainer

    out = Path(cfg.out_dir)
    ckpt_path = _resume_path(cfg, out)
    corpus, data, module, leads, window = _build(cfg, pcfg)
    settings = pcfg.to_dict()
    if ckpt_path is not None and (out / "config.yaml").is_file():
        import yaml

        changed = [k for k in _changed_keys(load_config(out / "config.yaml").to_dict(), cfg.to_dict())
                   if k not in ("resume", "out_dir")]
        saved = out / PRETRAIN_FILE
        if saved.is_file():
            before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            changed += [f"pretrain.{k}" for k in _changed_keys(before, settings)]
        if changed:
            warnings.warn(f"{out}: resuming with a configuration that differs from the saved one in "
                          f"{', '.join(changed)}; the rest of the run will not match an uninterrupted one",
                          stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)
    speed = Throughput()
    trainer, best_cb = _trainer(cfg, out, [speed, *callbacks])
    if trainer.is_global_zero:
        import yaml

        save_config(cfg, out / "config.yaml")
        text = "# ecgfm pretrain: the self-supervised objectives, their weights and options\n"
        (out / PRETRAIN_FILE).write_text(text + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    with warnings.catch_warnings():
        if ckpt_path is not None:
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    best_path = best_cb.best_model_path or None
    val_metrics = dict(module.val_metrics)
    if best_path:
        ckpt = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
        val_metrics = dict((ckpt.get("ecgfm") or {}).get("val_metrics") or val_metrics)
    if not val_metrics:  # a run too short for a validation
        module.eval_prefix = "best_val"
        trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False, weights_only=True)
        module.eval_prefix = "val"
        val_metrics = dict(module.val_metrics)
    seconds = time.perf_counter() - t0
    model_dir = None
    if cfg.trainer.export and trainer.is_global_zero:
        names = [s["name"] for s in pcfg.objectives]
        manifest = corpus.manifest
        train_rows = data.train_set.rows
        sources = (sorted({str(s) for s in manifest["dataset"].to_numpy()[train_rows] if s is not None})
                   if "dataset" in manifest.columns else [])
        training = {
            "config": cfg.to_dict(), "pretrain": settings, "objective": module.meta.get("objective"),
            "store": str(cfg.data.store), "store_pipeline_hash": None if corpus.pipeline is None else corpus.pipeline.hash,
            "datasets": sources, "records": {"train": len(data.train_set), "val": len(data.val_set)},
            "global_step": int(trainer.global_step), "epochs": int(trainer.current_epoch),
            "init": module.meta.get("init"), "wall_seconds": round(seconds, 1),
            "ecgs_per_second": None if speed.per_second is None else round(speed.per_second, 1),
            "devices": f"{trainer.world_size} x {type(trainer.accelerator).__name__.removesuffix('Accelerator')}",
        }
        encoder_name = module.meta.get("encoder")
        card = {
            "name": f"{encoder_name} pretrained with {' + '.join(names)} on {', '.join(sources) or Path(cfg.data.store).name}",
            "summary": (f"A {encoder_name} encoder without a head, pretrained self-supervised ({', '.join(names)}; "
                        f"labels not used) for {trainer.global_step} optimizer steps with ecgfm pretrain. Use its "
                        f"embeddings (ecgfm embed) or fine-tune it (ecgfm finetune --from)."),
            "training_data": (f"{len(data.train_set)} records of the store {cfg.data.store} "
                              f"({', '.join(sources) or 'unknown sources'}), split {cfg.data.train_split!r}, "
                              f"random {cfg.data.window:g} s crops; labels ignored."),
            "intended_use": ("Initialisation and feature extraction for ECG models trained on labelled data; "
                             "research only, not a medical device."),
            "limitations": ("Not a classifier: it has no outputs until fine-tuned or probed. Its features reflect the "
                            "pretraining population, devices and preprocessing."),
            **cfg.card,
        }
        model_dir = export_encoder(module.encoder.cpu(), out / "model", corpus=corpus, leads=leads,
                                   window=cfg.data.eval_window, eval_crop=cfg.data.eval_crop,
                                   metrics={"val": {k: v for k, v in val_metrics.items() if isinstance(v, (int, float))}},
                                   training=training, card=card)
    trainer.strategy.barrier("export")
    return {
        "out_dir": str(out), "config_path": str(out / "config.yaml"),
        "last_checkpoint": str(out / CHECKPOINTS / LAST), "best_checkpoint": best_path,
        "model_dir": None if model_dir is None else str(model_dir),
        "global_step": int(trainer.global_step), "epoch": int(trainer.current_epoch), "val": val_metrics,
        "n_train": len(data.train_set), "n_val": len(data.val_set), "seconds": time.perf_counter() - t0,
        "train_seconds": speed.seconds, "ecgs_per_second": speed.per_second,
        "objectives": [s["name"] for s in pcfg.objectives], "leads": list(leads),
        "global_rank": int(trainer.global_rank),
    }
