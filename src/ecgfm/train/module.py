"""The LightningModule of supervised training: an encoder, a head spec and a loss.

:class:`SupervisedModule` runs ``encoder(signal, lead_mask) -> logits`` on a corpus batch
(:mod:`ecgfm.store.dataset`: ``signal`` ``[B, L, T]``, ``mask`` ``[B, L]``, ``labels``
``[B, C]``), trains with the loss of :mod:`ecgfm.objectives.supervised` (a dict whose
``"loss"`` is back-propagated; the other parts are logged), and validates with the macro AUROC of
:func:`ecgfm.evaluate.metrics.auroc` over the label columns that have both classes in the
validation set (``val/auroc``; regression heads log ``val/mae``; survival heads ``val/c_index``,
Harrell's C, with Uno's C, time-dependent AUROC at the horizons and the integrated Brier score).

Survival heads (``cox``, ``discrete_hazard``) take ``(time, event)`` targets per record
(:meth:`SupervisedModule.set_record_targets`). A Cox head's loss over a mini-batch is the usual
DeepSurv approximation of the partial likelihood (risk sets within the batch): a batch needs events,
and one without any has loss 0, a zero gradient, and is counted in ``train/eventless_batches``.

Freezing (``freeze``): ``"none"`` trains everything; ``"encoder"`` trains the head only (a
linear probe: the encoder's parameters get no gradient and its normalisation layers stay in eval
mode, so running statistics do not move either); ``"partial:N"`` trains the head and the last
``N`` stages of :func:`encoder_stages`.

Exact resume: the checkpoint carries the global random states (torch, CUDA, numpy, Python) as
they were when it was written; they are put back just before the first training batch after a
resume, so dropout and anything else drawing random numbers continues as if uninterrupted. The
data order is restored by the train loader's own state (:class:`ecgfm.train.run.ResumableLoader`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.models.heads import HeadSpec, predict_from_logits
from ecgfm.train.config import OptimConfig, parse_freeze

__all__ = ["SupervisedModule", "encoder_head", "encoder_stages", "export_model", "lr_lambda"]

# Names under which an encoder may keep its final linear layer (the one reset_head replaces).
HEAD_ATTRS = ("head", "fc", "classifier")


def encoder_head(encoder: nn.Module) -> nn.Module | None:
    """The encoder's output layer (what ``reset_head`` replaces), or None when it has none.

    Relies on the encoder keeping it as an attribute named ``head`` (the registry's encoders;
    ``fc`` and ``classifier`` are accepted too). A ``get_head()`` method, when present, wins.
    """
    getter = getattr(encoder, "get_head", None)
    if callable(getter):
        return getter()
    for name in HEAD_ATTRS:
        module = getattr(encoder, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def encoder_stages(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's body as an ordered list of stages, input side first (for ``partial:N``).

    ``encoder.stage_modules()`` when the encoder class defines that method. Otherwise the
    encoder's direct children without the head, where a child that is an ``nn.Sequential`` or
    ``nn.ModuleList`` (ResNet stages, transformer blocks) is replaced by its items when those are
    blocks (modules with children of their own; a stem of plain layers stays one stage), and a
    child holding such a list (a ``Transformer`` of blocks + norm) by its own children with the
    list expanded; then ordered by when a forward pass of a dummy input calls them. Modules
    without parameters are left out, and so are parameters held by the encoder itself (position
    and lead embeddings: input side, frozen by ``partial``). For the registry's ResNet1d this
    gives ``[stem, stage1, stage2, stage3, stage4]``, for a ViT ``[patch embedding, block 1 ...
    block n, final norm]``, for the PTB-XL benchmark CNNs the concat-pool block comes last;
    ``partial:N`` trains the last N of them and the head.
    """
    method = getattr(type(encoder), "stage_modules", None)
    if callable(method):
        stages = list(encoder.stage_modules())  # type: ignore[operator]
    else:
        head = encoder_head(encoder)
        stages = []
        for child in encoder.children():
            if child is head:
                continue
            if _is_list_of_blocks(child):
                stages.extend(child)
            elif any(_is_list_of_blocks(k) for k in child.children()):
                for k in child.children():
                    stages.extend(k if _is_list_of_blocks(k) else [k])
            else:
                stages.append(child)
        stages = _in_call_order(encoder, stages)
    return [s for s in stages if any(True for _ in s.parameters())]


def _in_call_order(encoder: nn.Module, modules: list[nn.Module]) -> list[nn.Module]:
    """``modules`` sorted by when a forward pass first calls them (registration order is not
    always execution order: a positional convolution may be registered after the blocks it
    feeds). Modules the pass never calls go first (they are treated as input side)."""
    order: dict[int, int] = {}

    def seen(module: nn.Module, args: Any) -> None:  # a pre-hook must return None (else it replaces the input)
        order.setdefault(id(module), len(order))

    hooks = [m.register_forward_pre_hook(seen) for m in modules]
    length = max(int(getattr(encoder, "min_samples", 1) or 1), 256)
    if getattr(encoder, "max_samples", None):
        length = min(length, int(encoder.max_samples))
    ref = next(encoder.parameters(), None)
    x = torch.zeros(1, int(getattr(encoder, "in_leads", 12)), length,
                    device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(x)
    except Exception:  # an encoder that cannot run a dummy input keeps registration order
        return modules
    finally:
        encoder.train(was_training)
        for h in hooks:
            h.remove()
    position = {id(m): i for i, m in enumerate(modules)}
    return sorted(modules, key=lambda m: (order.get(id(m), -1), position[id(m)]))


def _is_list_of_blocks(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0 and \
        any(any(True for _ in m.children()) for m in module)


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``s`` (0-based), for LambdaLR.

    ``cosine``: linear warm-up over ``warmup_steps``, then a half cosine from 1 down to
    ``min_lr_ratio`` at ``total_steps``; ``constant``: warm-up, then 1.
    """
    total = max(int(total_steps), 1)
    warm = max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(max(step - warm, 0) / max(total - warm, 1), 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def adamw_with_schedule(module: L.LightningModule, groups: list[dict[str, Any]], optim: OptimConfig,
                        lr: float | None = None) -> dict[str, Any]:
    """AdamW over parameter ``groups`` (each may set its own ``lr`` and ``weight_decay``) and the
    learning-rate schedule of ``optim``, stepped every optimizer step: what ``configure_optimizers``
    of every ecgfm LightningModule returns.

    The schedule's length comes from ``module.schedule_steps(world_size)`` when the run set it
    (counted before a resume restores the loader), else from Lightning's estimate.
    """
    lr = optim.lr if lr is None else lr
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), eps=optim.eps)
    trainer = module._trainer  # None outside a Trainer (module.trainer would raise)
    steps = getattr(module, "schedule_steps", None)
    if steps is not None:
        total = steps(trainer.world_size if trainer is not None else 1)
    else:
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 1
    if optim.schedule == "onecycle":
        scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g.get("lr", lr) for g in groups], total_steps=max(total, 1),
            pct_start=optim.pct_start)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(optim.schedule, total, optim.warmup_steps, optim.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


class SupervisedModule(L.LightningModule):
    """Encoder + loss, trained on corpus batches.

    Args:
        encoder: a registry encoder (:func:`ecgfm.models.registry.create_encoder`) whose
            ``num_outputs`` equals ``head.num_outputs``.
        head: what the outputs mean (:class:`~ecgfm.models.heads.HeadSpec`).
        loss: a loss module of :mod:`ecgfm.objectives.supervised` returning a dict.
        optim: learning rate, weight decay and schedule.
        freeze: ``"none"``, ``"encoder"`` or ``"partial:N"``.
        meta: JSON-able description stored in every checkpoint under ``"ecgfm"`` (the run's
            config, the encoder's name and config, the label ids); what
            :func:`ecgfm.train.run.finetune` reads to rebuild the model from a ``.ckpt``.

    Attributes:
        val_metrics: the last validation's metrics (``{"auroc": ..., "loss": ...,
            "per_label_auroc": {...}}``).
    """

    def __init__(self, encoder: nn.Module, head: HeadSpec, loss: nn.Module, optim: OptimConfig | None = None,
                 freeze: str = "none", meta: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        n_out = int(getattr(encoder, "num_outputs", 0))
        if n_out != head.num_outputs:
            raise ValidationError(f"encoder has {n_out} outputs but the head describes {head.num_outputs}; "
                                  f"call encoder.reset_head({head.num_outputs})")
        self.encoder = encoder
        self.loss_fn = loss
        self.head_spec = head
        self.optim = optim or OptimConfig()
        self.freeze_mode, self.freeze_n = parse_freeze(freeze)
        self.freeze = freeze
        self.meta = dict(meta or {})
        self.uses_mask = bool(getattr(encoder, "supports_lead_mask", False))
        self.val_metrics: dict[str, Any] = {}
        # world size -> optimizer steps of the whole run (the schedule's length); None: ask Lightning
        self.schedule_steps: Callable[[int], int] | None = None
        self.eval_prefix = "val"  # the logged name of validation metrics ("test" when scoring the test split)
        # (window, stride, aggregate) in samples: validation/test inputs are longer than the
        # training window and scored as sliding windows (data.eval_window); None: as they come
        self.eval_windows: tuple[int, int, str] | None = None
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.last_eval: tuple[np.ndarray, np.ndarray] | None = None  # the last evaluation's (predictions, targets)
        self.last_logits: np.ndarray | None = None  # survival heads: the last evaluation's logits
        self.eventless_batches = 0  # Cox: training batches without an event so far
        self._rng_to_restore: dict[str, Any] | None = None
        self._frozen: list[nn.Module] = []
        self.apply_freeze()
        self.train()

    # -- freezing ------------------------------------------------------------------------------
    def apply_freeze(self) -> None:
        """Set ``requires_grad`` per :attr:`freeze` (called by ``__init__``)."""
        head = encoder_head(self.encoder)
        if self.freeze_mode != "none" and head is None:
            raise ValidationError(f"freeze={self.freeze!r}: cannot find the encoder's head layer "
                                  f"(expected an attribute named {' or '.join(HEAD_ATTRS)})")
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self._frozen = []
        if self.freeze_mode == "none":
            return
        trainable = {id(p) for p in head.parameters()}  # type: ignore[union-attr]
        if self.freeze_mode == "partial":
            stages = encoder_stages(self.encoder)
            if self.freeze_n > len(stages):
                raise ValidationError(f"freeze={self.freeze!r}: the encoder has only {len(stages)} stages")
            for stage in stages[len(stages) - self.freeze_n:]:
                trainable |= {id(p) for p in stage.parameters()}
        for p in self.encoder.parameters():
            if id(p) not in trainable:
                p.requires_grad_(False)
        # Modules with no trainable parameter stay in eval mode (batch-norm statistics frozen).
        self._frozen = [m for m in self.encoder.modules()
                        if m is not self.encoder and any(True for _ in m.parameters(recurse=False))
                        and not any(p.requires_grad for p in m.parameters(recurse=False))]

    def on_fit_start(self) -> None:
        # Lightning does not call train() when fitting starts; an encoder loaded with
        # load_model() arrives in eval mode, and frozen parts must be put in eval mode.
        self.train()

    def train(self, mode: bool = True) -> SupervisedModule:
        super().train(mode)
        if mode:
            for m in self._frozen:
                m.eval()
        return self

    # -- steps ---------------------------------------------------------------------------------
    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Logits ``[B, C]`` for ``signal`` ``[B, L, T]`` (and ``lead_mask`` ``[B, L]``)."""
        if self.uses_mask and lead_mask is not None:
            return self.encoder(signal, lead_mask)
        return self.encoder(signal)

    def set_record_targets(self, values: np.ndarray) -> None:
        """Targets per manifest row, looked up by each batch's ``record``: regression
        ``[N_records, C]`` float (NaN = unknown; a regression head learns manifest columns such
        as ``age``), or survival ``[N_records, 2]`` = (time, event).

        Survival targets are kept in float64 on the CPU, outside the module's buffers, so that a
        half-precision run (``bf16-true``) does not round the follow-up times."""
        if self.head_spec.is_survival:
            table = np.asarray(values, np.float64)
            if table.ndim != 2 or table.shape[1] != 2:
                raise ValidationError(f"survival targets must be [N_records, 2] (time, event), got {table.shape}")
            self.survival_table = torch.from_numpy(table)
            return
        self.register_buffer("record_targets", torch.as_tensor(np.asarray(values, np.float32)), persistent=False)

    def _targets(self, batch: Mapping[str, Tensor]) -> Tensor:
        labels = batch["labels"]
        if self.head_spec.is_survival:
            table = getattr(self, "survival_table", None)
            if table is None:
                raise ValidationError("a survival head needs targets: set_record_targets() (run.build does it "
                                      "from data.time_column and data.event_column)")
            return table[batch["record"].cpu()].to(labels.device, torch.float32)
        if self.head_spec.type == "regression":
            table = getattr(self, "record_targets", None)
            if table is None:
                raise ValidationError("a regression head needs targets: set_record_targets() (run.build does "
                                      "it from the manifest columns named in data.labels)")
            return table[batch["record"].to(table.device)]
        if self.head_spec.type == "multiclass":
            # A multi-hot row becomes a distribution over its classes; a row with none is unknown.
            total = labels.sum(dim=1, keepdim=True)
            return torch.where(total > 0, labels / total.clamp(min=1), torch.full_like(labels, float("nan")))
        if self.head_spec.type == "binary":
            return labels[:, :1]
        return labels

    def _step(self, batch: Mapping[str, Tensor], windows: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        if windows and self.eval_windows is not None:
            from ecgfm.models.portable import run_windows

            window, stride, aggregate = self.eval_windows
            logits = run_windows(self, batch["signal"], batch.get("mask"), window, stride, aggregate)
        else:
            logits = self(batch["signal"], batch.get("mask"))
        if self.head_spec.is_survival:
            logits = logits.float()  # the risk-set sums and interval likelihoods in float32 at least
        out = self.loss_fn(logits, self._targets(batch))
        return out, logits

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out, _ = self._step(batch)
        size = batch["signal"].shape[0]
        if self.head_spec.type == "cox" and float(out["events"]) == 0:
            # The partial likelihood of a batch compares its events with its risk sets: a batch
            # without events has loss 0 and a zero gradient (no NaN), and teaches nothing.
            self.eventless_batches += 1
            if self.eventless_batches == 1:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(f"a training batch of {size} records has no event: its Cox loss is 0 and it does "
                               "not move the weights (the mini-batch partial likelihood needs events; raise "
                               "data.batch_size); counted in train/eventless_batches")
            self.log("train/eventless_batches", float(self.eventless_batches), on_step=True, on_epoch=False,
                     batch_size=size)
        self.log("train/loss", out["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        for key, value in out.items():
            if key not in ("loss", "observed") and torch.is_tensor(value) and value.ndim == 0:
                self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=size)
        return out

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        out, logits = self._step(batch, windows=True)
        if self.head_spec.is_survival:  # metrics and the whole-set loss need the logits
            preds = logits.detach().float()
        else:
            preds = predict_from_logits(logits.detach().float(), self.head_spec)
        n = torch.tensor(float(batch["signal"].shape[0]), device=logits.device)
        self._val_outputs.append((preds, self._targets(batch).float(), out["loss"].detach().float() * n))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        preds = torch.cat([p for p, _, _ in self._val_outputs])
        target = torch.cat([t for _, t, _ in self._val_outputs])
        loss_sum = torch.stack([s for _, _, s in self._val_outputs]).sum()
        self._val_outputs = []
        preds, target = self._gather(preds), self._gather(target)
        n = torch.tensor(float(preds.shape[0]), device=preds.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            loss_sum = self.all_gather(loss_sum).sum()
        if self.head_spec.is_survival:
            metrics = self._survival_metrics(preds, target)
        else:
            self.last_eval = (preds.cpu().numpy(), target.cpu().numpy())
            metrics = compute_metrics(*self.last_eval, self.head_spec)
            metrics["loss"] = float(loss_sum / n.clamp(min=1))
        self.val_metrics = metrics
        for key, value in metrics.items():
            if isinstance(value, float):
                # identical on every rank (computed from the gathered predictions); sync_dist
                # averages equal values and keeps Lightning from warning about epoch-level logs
                self.log(f"{self.eval_prefix}/{key}", value, prog_bar=key in ("auroc", "loss", "mae", "c_index"),
                         sync_dist=True)

    def _survival_metrics(self, logits: Tensor, target: Tensor) -> dict[str, Any]:
        """Whole-set survival metrics and loss of gathered logits ``[N, C]`` and targets ``[N, 2]``.

        ``loss`` is the loss over all the evaluated records at once: for a Cox head the negative
        log partial likelihood of the whole set per event (risk sets over every record, not per
        batch), for a discrete-time head the mean negative log-likelihood. The other figures are
        :func:`ecgfm.models.survival.survival_metrics`. ``last_eval`` is (predictions, targets)."""
        from ecgfm.models.survival import survival_metrics

        z = logits.detach().cpu().double()
        y = target.detach().cpu().double()
        self.last_logits = z.numpy()
        self.last_eval = (predict_from_logits(z, self.head_spec).numpy(), y.numpy())
        known = torch.isfinite(y).all(dim=1)
        metrics: dict[str, Any] = {"n": float(known.sum())}
        with torch.no_grad():
            metrics["loss"] = float(self.loss_fn(z[known], y[known])["loss"]) if known.any() else float("nan")
        if known.any():
            metrics.update(survival_metrics(z[known].numpy(), y[known, 0].numpy(), y[known, 1].numpy() == 1,
                                            self.head_spec))
        return metrics

    def set_baseline(self, logits: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        """Store in the Cox head the Breslow baseline cumulative hazard of these (training) records,
        so that validation, test and the exported model give absolute survival."""
        import dataclasses

        from ecgfm.models.survival import breslow_baseline

        known = np.isfinite(time) & np.isfinite(event)
        times, cumulative = breslow_baseline(np.asarray(logits, np.float64).reshape(len(time), -1)[known, 0],
                                             time[known], event[known] == 1)
        extra = {**self.head_spec.extra, "baseline_times": times.tolist(),
                 "baseline_cumulative_hazard": cumulative.tolist(), "max_time": float(np.max(time[known])),
                 "baseline_records": int(known.sum())}
        self.head_spec = dataclasses.replace(self.head_spec, extra=extra)

    def _gather(self, x: Tensor) -> Tensor:
        """Concatenate ``x`` ``[n_rank, ...]`` over DDP ranks (ranks may differ in n by one)."""
        if self.trainer is None or self.trainer.world_size <= 1:
            return x
        sizes = self.all_gather(torch.tensor([x.shape[0]], device=x.device)).reshape(-1)
        m = int(sizes.max())
        padded = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
        gathered = self.all_gather(padded)  # [world, m, ...]
        return torch.cat([gathered[i, :int(sizes[i])] for i in range(len(sizes))])

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        head = encoder_head(self.encoder)
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        lr, o = self.optim.lr, self.optim
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for p in self.encoder.parameters():
            if not p.requires_grad:
                continue
            in_head = id(p) in head_ids
            decay = p.ndim > 1  # no weight decay on biases, norm scales, embeddings' 1-D params
            groups.setdefault((in_head, decay), []).append(p)
        params = []
        for (in_head, decay), ps in sorted(groups.items()):
            params.append({"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
                           "lr": lr if in_head or head is None else lr * o.encoder_lr_ratio})
        if not params:
            raise ValidationError("nothing to train: every parameter is frozen")
        return adamw_with_schedule(self, params, o, lr)

    # -- exact resume ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ecgfm"] = {**self.meta, "head": self.head_spec.to_dict(), "freeze": self.freeze,
                               "val_metrics": dict(self.val_metrics), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = (checkpoint.get("ecgfm") or {}).get("rng")
        self._rng_to_restore = state

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def compute_metrics(preds: np.ndarray, target: np.ndarray, head: HeadSpec) -> dict[str, Any]:
    """Validation metrics of predictions ``[N, C]`` against targets ``[N, C]``.

    Multi-label and binary heads: ``auroc`` = macro AUROC (:func:`ecgfm.evaluate.metrics.auroc`,
    mean over the columns with both classes present), ``auroc_labels`` = how many columns that
    is, ``per_label_auroc``. Multi-class: the same one-vs-rest on the class indicators, plus
    ``accuracy``. Regression: ``mae`` and ``rmse`` over the known targets. Survival heads
    (predictions = :func:`predict_from_logits`, targets ``[N, 2]`` = time, event):
    :func:`ecgfm.models.survival.survival_metrics` (``c_index``, ``uno_c``, ``auc_<h>``,
    ``auc_mean``, ``ibs``, ``events``).
    """
    from ecgfm.evaluate.metrics import auroc

    out: dict[str, Any] = {"n": float(len(preds))}
    if head.is_survival:
        from scipy.special import logit

        from ecgfm.models.survival import survival_metrics

        known = np.isfinite(target).all(axis=1)
        z = preds if head.type == "cox" else logit(np.clip(preds, 1e-12, 1 - 1e-12))
        out["n"] = float(known.sum())
        if known.any():
            out.update(survival_metrics(z[known], target[known, 0], target[known, 1] == 1, head))
        return out
    if head.type == "regression":
        known = np.isfinite(target)
        err = np.where(known, preds - np.where(known, target, 0.0), 0.0)
        n = max(int(known.sum()), 1)
        out["mae"] = float(np.abs(err).sum() / n)
        out["rmse"] = float(np.sqrt((err ** 2).sum() / n))
        return out
    if head.type == "multiclass":
        rows = np.isfinite(target).all(axis=1)
        preds, target = preds[rows], target[rows]
        out["accuracy"] = float((preds.argmax(1) == target.argmax(1)).mean()) if len(preds) else float("nan")
        target = (target > 0).astype(np.float64)
    if len(preds) == 0:
        out.update(auroc=float("nan"), auroc_labels=0.0)
        return out
    per = np.atleast_1d(auroc(target, preds))
    ok = np.isfinite(per)
    out["auroc"] = float(per[ok].mean()) if ok.any() else float("nan")
    out["auroc_labels"] = float(ok.sum())
    names = head.columns
    out["per_label_auroc"] = {str(names[i]): float(per[i]) for i in np.flatnonzero(ok)}
    return out


def _rng_state() -> dict[str, Any]:
    """Global random states as tensors and plain lists (loadable with ``weights_only=True``)."""
    import random

    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def export_model(
    module: SupervisedModule,
    directory: str | Path,
    *,
    pipeline: Any,
    input: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    operating_points: Mapping[str, Mapping[str, float]] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``module``'s encoder and head as a portable model folder (:func:`ecgfm.models.portable.save_model`).

    Args:
        module: the trained module (its current weights are written).
        directory: the model folder.
        pipeline: the preprocessing that turns a raw record into the model's input: the store's
            pipeline plus the window crop and lead selection of training (see
            :func:`ecgfm.train.run.export_pipeline`).
        input: overrides of the input contract the pipeline implies (rate, leads, window and
            units come from the pipeline; ``lead_mask`` from the encoder).
        metrics: validation/test metrics for ``config.json`` and the card.
        training: JSON-able summary of the run (config, steps, records).
        card: model card fields (``summary``, ``training_data``, ``intended_use``, ...).
        operating_points: ``{label: {"borderline", "positive"}}`` probability cut-offs.
    """
    from ecgfm.models.portable import save_model

    encoder = module.encoder
    was_training = encoder.training
    encoder.eval()
    contract = {"lead_mask": bool(getattr(encoder, "supports_lead_mask", False)), **dict(input or {})}
    try:
        path = save_model(
            directory, encoder, head=module.head_spec, pipeline=pipeline,
            labels=list(module.head_spec.label_ids) or None, input=contract, card=dict(card or {}),
            metrics=dict(metrics or {}), training=dict(training or {}),
            operating_points=operating_points, encoder_name=getattr(encoder, "encoder_name", None),
            overwrite=overwrite,
        )
    finally:
        encoder.train(was_training)
    return path
