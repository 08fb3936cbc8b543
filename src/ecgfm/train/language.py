"""Signal-language pretraining on ECG-report pairs: ``ecgfm pretrain --objective clip|caption|multitask``.

Three objectives on a corpus store whose manifest has a ``report`` column (PTB-XL's stores do):

``clip``
    contrastive alignment of ECG and report embeddings (:class:`~ecgfm.language.clip_loss.ClipLoss`,
    identical reports as soft positives), optionally plus an ECG-ECG contrast between two
    augmented views of each record (MERL's uni-modal alignment; ``ecg_contrast_weight``);
``caption``
    report generation only: a transformer decoder attends to the encoder's feature map and is
    trained by teacher forcing (:class:`~ecgfm.language.caption_loss.CaptionLoss`);
``multitask`` (ECGFM's recipe)
    ``clip_weight * contrastive + caption_weight * generation + abnormal_weight *
    normal/abnormal BCE`` (the encoder's own one-output head, label ``NORM``) ``+ cpc_weight *
    CPC`` (contrastive predictive coding over the encoder's latents, the self-supervised
    objective of :mod:`ecgfm.objectives.cpc`; :func:`cpc_objective`).

The run is the training engine's (:mod:`ecgfm.train.run`): the same YAML file and
``section.key=value`` overrides (``data.store``, ``data.window``, ``model.encoder``,
``model.init`` to start from a pretrained encoder, ``model.freeze=encoder`` for a locked ECG
encoder as LiT, ``optim.*``, ``trainer.*``), the same loaders, checkpoints, logs, exact resume
(``resume=auto``), with a ``language:`` section for :class:`LanguageConfig`
(``language.caption_weight=0.5`` on the command line). What differs from ``ecgfm train``:

- the reports are tokenised once per run: a tokenizer is trained on the training split's
  reports (plus ``language.extra_texts``, e.g. PTB-XL's report-only rows of the training folds)
  and saved as ``out_dir/tokenizer.json``; a resumed run reuses it;
- ``data.labels`` is ``[NORM]`` (the target of the normal/abnormal head) whatever the file says;
- validation logs ``val/loss`` (the weighted total, the default ``trainer.monitor``),
  ``val/clip``, ``val/caption``, ``val/abnormal``, retrieval recall ``val/e2t_r1`` ...
  ``val/t2e_r10`` (identical reports count as hits) and their mean ``val/recall_mean``, and
  ``val/auroc`` of the normal/abnormal head. A contrastive run should monitor
  ``val/recall_mean`` (``monitor_mode: max``): its validation loss rises as the learnt
  temperature sharpens the softmax while the ranking still improves;
- the export (``out_dir/model``) is a signal-language model folder
  (:mod:`ecgfm.language.portable`): the ECG encoder as a portable model that ``ecgfm.load_model``
  and ``ecgfm finetune --from`` read, plus the text encoder, decoder and tokenizer.
  ``out_dir/language.yaml`` records the language settings beside ``config.yaml``.

>>> from ecgfm.train.language import pretrain_language
>>> result = pretrain_language("multitask", "configs/language/ptbxl_multitask.yaml")  # doctest: +SKIP
>>> from ecgfm.language import load_language_model
>>> load_language_model(result["model_dir"]).generate(["00001_lr.hea"], beam=4)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.language.text import BOS, CLS, PAD, PTBXL_BOILERPLATE, ReportTokenizer
from ecgfm.train.config import OptimConfig

__all__ = [
    "LANGUAGE_FILE", "OBJECTIVES", "LanguageConfig", "LanguageModule", "cpc_objective", "load_language_config",
    "pretrain_language",
]

OBJECTIVES = ("clip", "caption", "multitask")
LANGUAGE_FILE = "language.yaml"
TOKENIZER_FILE = "tokenizer.json"
_NORMAL = "NORM"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LanguageConfig:
    """The ``language:`` section of a run: text side, objectives and their weights."""

    objective: str = "clip"  # clip, caption or multitask (ecgfm pretrain --objective sets it)
    report_column: str = "report"  # manifest column of the report text
    tokenizer: str | None = None  # an existing tokenizer.json (None: train one on the training reports)
    tokenizer_kind: str = "bpe"  # bpe or wordpiece
    vocab_size: int = 2000  # tokens, special tokens and alphabet included
    lowercase: bool = True  # lower-case reports before tokenising
    strip_patterns: tuple[str, ...] = PTBXL_BOILERPLATE  # regular expressions deleted from every report (PTB-XL boilerplate by default)
    extra_texts: tuple[str, ...] = ()  # CSV files with a report column whose text also trains the tokenizer (reports without signals)
    extra_text_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)  # of extra_texts with a strat_fold column, the folds used (PTB-XL's training folds)
    max_text_tokens: int = 96  # tokens per report, start and end tokens included (longer reports are cut)
    text_encoder: dict[str, Any] = field(default_factory=dict)  # TextEncoderConfig overrides: width, depth, heads, mlp_ratio, dropout, pooling ...
    hf_text_model: str | None = None  # a local Hugging Face model folder used as the text encoder instead (needs transformers)
    decoder: dict[str, Any] = field(default_factory=dict)  # DecoderConfig overrides: width, depth, heads, mlp_ratio, dropout ...
    embed_dim: int = 256  # width of the joint ECG-report embedding
    projection: str = "linear"  # projection heads: linear (CLIP) or mlp
    init_temperature: float = 0.07  # initial softmax temperature of the contrastive loss (CLIP: 0.07)
    learn_temperature: bool = True  # learn the temperature (clamped so 1/T <= max_logit_scale)
    max_logit_scale: float = 100.0  # upper bound of 1/temperature (CLIP: 100)
    duplicates: str = "soft"  # identical reports in a batch: soft (positives of each other), mask (out of each other's softmax) or none (one-hot)
    clip_weight: float = 1.0  # weight of the ECG-report contrastive loss (clip, multitask)
    caption_weight: float = 1.0  # weight of report generation (caption, multitask)
    abnormal_weight: float = 0.5  # weight of the normal/abnormal BCE (multitask)
    ecg_contrast_weight: float = 0.0  # weight of the ECG-ECG contrast of two augmented views (clip, multitask; 0: off)
    ecg_contrast_temperature: float = 0.1  # its fixed temperature
    cpc_weight: float = 0.0  # weight of contrastive predictive coding (multitask; ecgfm.objectives.cpc)
    cpc_args: dict[str, Any] = field(default_factory=dict)  # options of the CPC objective: latents, patch_seconds, steps, context ...
    label_smoothing: float = 0.1  # label smoothing of the generation loss
    beam: int = 4  # default beam width of the exported model's report generation
    length_penalty: float = 1.0  # its length penalty (score / length ** penalty)
    zero_shot_method: str = "normal"  # default zero-shot score of the exported model: normal, negation or similarity
    zero_shot_expand: str = "descendants"  # score a condition by itself and its catalogue descendants, or none

    def __post_init__(self) -> None:
        from ecgfm.language.model import PROJECTIONS
        from ecgfm.language.text import KINDS
        from ecgfm.language.zero_shot import EXPANSIONS, METHODS

        choices = {"objective": OBJECTIVES, "tokenizer_kind": KINDS, "projection": PROJECTIONS,
                   "duplicates": ("soft", "mask", "none"), "zero_shot_method": METHODS, "zero_shot_expand": EXPANSIONS}
        for key, options in choices.items():
            if getattr(self, key) not in options:
                raise ValidationError(f"language.{key}: expected one of {', '.join(options)}, got {getattr(self, key)!r}")
        for key in ("clip_weight", "caption_weight", "abnormal_weight", "ecg_contrast_weight", "cpc_weight"):
            if not getattr(self, key) >= 0:
                raise ValidationError(f"language.{key}: expected a number >= 0, got {getattr(self, key)!r}")
        if not 0 < self.init_temperature <= 1 or not self.ecg_contrast_temperature > 0:
            raise ValidationError("language.init_temperature must be in (0, 1] and ecg_contrast_temperature > 0")
        if self.max_logit_scale < 1:
            raise ValidationError(f"language.max_logit_scale: expected >= 1, got {self.max_logit_scale}")
        if self.max_text_tokens < 4:
            raise ValidationError(f"language.max_text_tokens: expected >= 4, got {self.max_text_tokens}")
        if self.embed_dim < 1 or self.beam < 1:
            raise ValidationError("language.embed_dim and language.beam must be >= 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValidationError(f"language.label_smoothing: expected a number in [0, 1), got {self.label_smoothing}")

    @property
    def uses(self) -> dict[str, bool]:
        """Which terms this objective trains (a term also needs a weight above 0)."""
        o = self.objective
        return {"clip": o in ("clip", "multitask") and self.clip_weight > 0,
                "caption": o in ("caption", "multitask") and self.caption_weight > 0,
                "abnormal": o == "multitask" and self.abnormal_weight > 0,
                "ecg_contrast": o in ("clip", "multitask") and self.ecg_contrast_weight > 0,
                "cpc": o == "multitask" and self.cpc_weight > 0}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), as saved in ``language.yaml``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def load_language_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = (),
                         objective: str | None = None) -> tuple[Any, LanguageConfig]:
    """``(TrainConfig, LanguageConfig)`` from a YAML file (None: defaults) plus overrides.

    The file is an ``ecgfm train`` configuration with a ``language:`` section; overrides
    ``language.key=value`` set that section, every other one goes to
    :func:`ecgfm.train.config.apply_overrides`; ``objective`` (the command line's
    ``--objective``) wins over the file's ``language.objective``.

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
        data = dict(read_yaml_sections(path))
    section = dict(data.pop("language", None) or {})
    engine: list[str] = []
    for item in overrides:
        key, _, text = str(item).partition("=")
        if key.strip().startswith("language."):
            name = key.strip()[len("language."):]
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as exc:
                raise ValidationError(f"override {item!r}: the value is not valid YAML ({exc})") from None
            if "." in name:  # language.decoder.depth=2
                head, _, rest = name.partition(".")
                inner = dict(section.get(head) or {})
                inner[rest] = value
                section[head] = inner
            else:
                section[name] = value
        else:
            engine.append(str(item))
    if objective is not None:
        section["objective"] = objective
    cfg = config_from_dict(data, where)
    if engine:
        cfg = apply_overrides(cfg, engine)
    lcfg = _section(LanguageConfig, section, f"{where}: language")
    return cfg, lcfg


# ---------------------------------------------------------------------------------------------
# the CPC hook
# ---------------------------------------------------------------------------------------------
def cpc_objective(encoder: nn.Module, fs: float, window: int, **kwargs: Any) -> nn.Module:
    """The contrastive-predictive-coding term of multi-task pretraining: ECGFM's CPC objective from
    the self-supervised objectives (:class:`ecgfm.objectives.cpc.CPC`, built by
    :func:`ecgfm.objectives.ssl.create_ssl_objective` with ``language.cpc_args`` as its options:
    ``latents``, ``patch_seconds``, ``steps``, ``context`` ...). Its context network and
    predictors train with the run and are not exported.

    Args:
        encoder: the ECG encoder.
        fs: sampling rate of the windows, Hz.
        window: samples per training window.

    Raises:
        ValidationError: the objective is not installed, or an option is not one of its own.
    """
    try:
        from ecgfm.objectives.ssl import create_ssl_objective, encoder_dims
    except ImportError:
        raise ValidationError("language.cpc_weight > 0 needs the self-supervised objectives "
                              "(ecgfm.objectives.ssl), which this ecgfm does not have; set language.cpc_weight=0") from None
    return create_ssl_objective("cpc", encoder_dims(encoder, fs=fs, window=window), **kwargs)


# ---------------------------------------------------------------------------------------------
# the LightningModule
# ---------------------------------------------------------------------------------------------
def _augment(x: Tensor) -> Tensor:
    """A second view of a batch ``[B, L, T]`` for the ECG-ECG contrast: per-lead amplitude scaling
    (x N(1, 0.1)), Gaussian noise (0.05 of the z-scored signal) and one zeroed stretch of 10 % of
    the window. Draws from torch's global generator (restored on resume)."""
    b, leads, t = x.shape
    scale = 1.0 + 0.1 * torch.randn(b, leads, 1, device=x.device, dtype=x.dtype)
    y = x * scale + 0.05 * torch.randn_like(x)
    width = max(1, t // 10)
    start = torch.randint(0, max(t - width, 1), (b,), device=x.device)
    pos = torch.arange(t, device=x.device)[None, :]
    keep = ~((pos >= start[:, None]) & (pos < start[:, None] + width))  # [B, T]
    return y * keep[:, None, :].to(x.dtype)


class LanguageModule(L.LightningModule):
    """The signal-language network trained on corpus batches (see the module docstring).

    Args:
        net: the :class:`~ecgfm.language.model.ECGTextModel`.
        settings: the :class:`LanguageConfig`.
        tables: per manifest row: ``enc_ids``/``enc_mask`` ``[R, N]`` (text-encoder input),
            ``dec_ids`` ``[R, N]`` (``<bos>`` report ``<eos>``), ``groups`` ``[R]`` (equal for
            identical normalised text), ``has_text`` ``[R]`` bool.
        optim: AdamW and schedule; ``encoder_lr_ratio`` scales the ECG encoder's rate.
        freeze: ``none``, ``encoder`` (the ECG encoder is locked: LiT) or ``partial:N``.
        meta: stored in every checkpoint under ``"ecgfm"``.
        cpc: the CPC objective (:func:`cpc_objective`), or None.
        head_spec: the ECG encoder head's :class:`~ecgfm.models.heads.HeadSpec` (default: the
            normal/abnormal head); the engine's ``fit`` reads it.

    Attributes:
        val_metrics: the last validation's metrics.
    """

    def __init__(self, net: nn.Module, settings: LanguageConfig, tables: Mapping[str, np.ndarray], *,
                 optim: OptimConfig | None = None, freeze: str = "none", meta: Mapping[str, Any] | None = None,
                 cpc: nn.Module | None = None, head_spec: Any = None) -> None:
        super().__init__()
        from ecgfm.language.caption_loss import CaptionLoss
        from ecgfm.language.clip_loss import ClipLoss
        from ecgfm.objectives.supervised import BinaryBCE
        from ecgfm.train.config import parse_freeze

        self.net = net
        self.settings = settings
        self.uses = settings.uses
        if not any(self.uses.values()):
            raise ValidationError(f"objective {settings.objective!r}: every term has weight 0; nothing to train")
        self.optim = optim or OptimConfig()
        self.freeze_mode, self.freeze_n = parse_freeze(freeze)
        self.freeze = freeze
        self.meta = dict(meta or {})
        self.clip_loss = ClipLoss(settings.duplicates)
        self.view_loss = ClipLoss("none")
        self.caption_loss = CaptionLoss(settings.label_smoothing)
        self.abnormal_loss = BinaryBCE()
        self.cpc = cpc
        for name in ("enc_ids", "enc_mask", "dec_ids", "groups", "has_text"):
            self.register_buffer(name, torch.as_tensor(np.asarray(tables[name])), persistent=False)
        if head_spec is None:
            from ecgfm.models.heads import normal_abnormal_head

            head_spec = normal_abnormal_head()
        self.head_spec = head_spec
        self.val_metrics: dict[str, Any] = {}
        self.eval_prefix = "val"
        self.last_eval: Any = None  # the engine's fit() reads it (per-label figures of supervised heads)
        self.schedule_steps: Any = None
        self.eval_windows = None
        self._val: list[dict[str, Tensor]] = []
        self._rng_to_restore: dict[str, Any] | None = None
        self._frozen: list[nn.Module] = []
        self.apply_freeze()
        self.train()

    # -- freezing --------------------------------------------------------------------------------
    def apply_freeze(self) -> None:
        """Lock the ECG encoder (``encoder``) or all but its last N stages (``partial:N``); its
        head (the normal/abnormal classifier) always trains; frozen parts stay in eval mode."""
        from ecgfm.train.module import encoder_head, encoder_stages

        enc = self.net.ecg_encoder
        for p in enc.parameters():
            p.requires_grad_(True)
        self._frozen = []
        if self.freeze_mode == "none":
            return
        head = encoder_head(enc)
        trainable = set() if head is None else {id(p) for p in head.parameters()}
        if self.freeze_mode == "partial":
            stages = encoder_stages(enc)
            if self.freeze_n > len(stages):
                raise ValidationError(f"freeze={self.freeze!r}: the encoder has only {len(stages)} stages")
            for stage in stages[len(stages) - self.freeze_n:]:
                trainable |= {id(p) for p in stage.parameters()}
        for p in enc.parameters():
            if id(p) not in trainable:
                p.requires_grad_(False)
        self._frozen = [m for m in enc.modules()
                        if m is not enc and any(True for _ in m.parameters(recurse=False))
                        and not any(p.requires_grad for p in m.parameters(recurse=False))]

    def on_fit_start(self) -> None:
        self.train()

    def train(self, mode: bool = True) -> LanguageModule:
        super().train(mode)
        if mode:
            for m in self._frozen:
                m.eval()
        return self

    # -- the losses ------------------------------------------------------------------------------
    def _text(self, rec: Tensor) -> tuple[Tensor, Tensor]:
        ids, mask = self.enc_ids[rec], self.enc_mask[rec]
        n = int(mask.sum(dim=1).max().clamp(min=1))  # trim the batch to its longest text
        return ids[:, :n], mask[:, :n]

    def losses(self, batch: Mapping[str, Tensor], *, augment: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(terms, outputs)``: each used term's loss dict, and the embeddings/logits for metrics."""
        net, s = self.net, self.settings
        signal, mask = batch["signal"], batch.get("mask")
        rec = batch["record"].to(self.has_text.device).long()
        valid = self.has_text[rec]
        feats = net.ecg_features(signal, mask)  # [B, D, T']
        pooled = net.ecg_pooled(feats)  # [B, D]
        terms: dict[str, dict[str, Tensor]] = {}
        outputs: dict[str, Tensor] = {"valid": valid, "groups": self.groups[rec]}
        if self.uses["clip"] or self.uses["ecg_contrast"]:
            e = net.ecg_embedding(pooled)
            outputs["ecg"] = e
        if self.uses["clip"]:
            ids, m = self._text(rec)
            t = net.text_embedding(ids, m)
            outputs["text"] = t
            terms["clip"] = self.clip_loss(e, t, net.scale(), self.groups[rec], valid)
        if self.uses["ecg_contrast"] and augment:
            e2 = net.ecg_embedding(net.ecg_pooled(net.ecg_features(_augment(signal), mask)))
            terms["ecg_contrast"] = self.view_loss(e, e2, 1.0 / s.ecg_contrast_temperature)
        if self.uses["caption"]:
            dec = self.dec_ids[rec]
            n = int((dec != PAD).sum(dim=1).max().clamp(min=2))
            dec = dec[:, :n]
            logits = net.decoder(dec[:, :-1], net.decoder.memory(feats))  # [B, n-1, V]
            terms["caption"] = self.caption_loss(logits, dec[:, 1:], valid)
        if self.uses["abnormal"]:
            logit = net.abnormal_logit(pooled)  # [B, 1]
            terms["abnormal"] = self.abnormal_loss(logit, batch["labels"][:, :1])
            outputs["normal_prob"] = torch.sigmoid(logit.detach().float()).reshape(-1)  # the head gives P(NORM)
            outputs["normal_label"] = batch["labels"][:, 0].float()
        if self.uses["cpc"] and self.cpc is not None:
            terms["cpc"] = self._cpc(signal, mask, feats, batch.get("length"))
        return terms, outputs

    def _cpc(self, signal: Tensor, mask: Tensor | None, feats: Tensor, length: Tensor | None) -> dict[str, Tensor]:
        """The CPC term: its views run through the encoder, reusing this batch's feature map
        where a view is the plain window's sequence."""
        from ecgfm.objectives.ssl import SSLInput, run_views

        lead_mask = mask.bool() if mask is not None else torch.ones(signal.shape[:2], dtype=torch.bool,
                                                                      device=signal.device)
        views, state = self.cpc.views(SSLInput(signal, lead_mask, length=length))  # type: ignore[union-attr]
        outputs = {n: feats for n, v in views.items() if v.output == "sequence" and v.signal is signal}
        rest = {n: v for n, v in views.items() if n not in outputs}
        if rest:
            outputs.update(run_views(self.net.ecg_encoder, rest))
        return self.cpc(outputs, state)  # type: ignore[misc]

    def _weights(self) -> dict[str, float]:
        s = self.settings
        return {"clip": s.clip_weight, "caption": s.caption_weight, "abnormal": s.abnormal_weight,
                "ecg_contrast": s.ecg_contrast_weight, "cpc": s.cpc_weight}

    def _total(self, terms: Mapping[str, Mapping[str, Tensor]]) -> Tensor:
        w = self._weights()
        total = None
        for name, out in terms.items():
            part = w[name] * out["loss"]
            total = part if total is None else total + part
        assert total is not None
        return total

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        terms, _ = self.losses(batch, augment=True)
        total = self._total(terms)
        size = batch["signal"].shape[0]
        self.log("train/loss", total.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        for name, out in terms.items():
            self.log(f"train/{name}", out["loss"].detach(), on_step=True, on_epoch=False, batch_size=size)
        if "clip" in terms:
            self.log("train/clip_accuracy", terms["clip"]["accuracy"], on_step=True, on_epoch=False, batch_size=size)
            self.log("train/scale", self.net.scale().detach(), on_step=True, on_epoch=False, batch_size=size)
        if "caption" in terms:
            self.log("train/token_accuracy", terms["caption"]["token_accuracy"], on_step=True, on_epoch=False,
                     batch_size=size)
        return {"loss": total}

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        terms, outputs = self.losses(batch, augment=False)
        n = float(batch["signal"].shape[0])
        row = {f"loss_{k}": v["loss"].detach().float() * n for k, v in terms.items()}
        row["loss"] = self._total(terms).detach().float() * n
        row["n"] = torch.tensor(n, device=row["loss"].device)
        row.update({k: v.detach() for k, v in outputs.items()})
        self._val.append(row)

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        rows, self._val = self._val, []
        sums = {k: torch.stack([r[k] for r in rows]).sum() for k in rows[0] if k.startswith("loss") or k == "n"}
        cat = {k: self._gather(torch.cat([r[k] for r in rows])) for k in rows[0]
               if not (k.startswith("loss") or k == "n")}
        if self.trainer is not None and self.trainer.world_size > 1:
            sums = {k: self.all_gather(v).sum() for k, v in sums.items()}
        n = float(sums.pop("n").clamp(min=1))
        metrics: dict[str, Any] = {"loss": float(sums.pop("loss")) / n}
        for k, v in sums.items():
            metrics[k[len("loss_"):]] = float(v) / n
        valid = cat["valid"].bool().cpu().numpy()
        if "ecg" in cat and "text" in cat and valid.sum() > 1:
            from ecgfm.language.retrieval import retrieval_recall

            r = retrieval_recall(cat["ecg"].float().cpu().numpy()[valid], cat["text"].float().cpu().numpy()[valid],
                                 groups=cat["groups"].cpu().numpy()[valid])
            for k in (1, 5, 10):
                metrics[f"e2t_r{k}"] = r[f"ecg_to_report@{k}"]
                metrics[f"t2e_r{k}"] = r[f"report_to_ecg@{k}"]
            metrics["recall_mean"] = sum(metrics[f"{d}_r{k}"] for d in ("e2t", "t2e") for k in (1, 5, 10)) / 6
        if "normal_prob" in cat:
            from ecgfm.evaluate.metrics import auroc

            y = cat["normal_label"].cpu().numpy()
            p = cat["normal_prob"].cpu().numpy()
            metrics["auroc"] = float(auroc(y, p)) if 0 < y.sum() < len(y) else float("nan")
        self.val_metrics = metrics
        for key, value in metrics.items():
            self.log(f"{self.eval_prefix}/{key}", value, prog_bar=key in ("loss", "e2t_r1"), sync_dist=True)

    def _gather(self, x: Tensor) -> Tensor:
        """Concatenate ``x`` ``[n_rank, ...]`` over DDP ranks (ranks may differ in n by one)."""
        if self.trainer is None or self.trainer.world_size <= 1:
            return x
        sizes = self.all_gather(torch.tensor([x.shape[0]], device=x.device)).reshape(-1)
        m = int(sizes.max())
        padded = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
        gathered = self.all_gather(padded)
        return torch.cat([gathered[i, :int(sizes[i])] for i in range(len(sizes))])

    # -- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        from ecgfm.train.module import adamw_with_schedule

        o = self.optim
        enc_ids = {id(p) for p in self.net.ecg_encoder.parameters()}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            # no decay on biases, norms, the temperature, embeddings and position tables
            decay = p.ndim > 1 and "embed" not in name
            groups.setdefault((id(p) in enc_ids, decay), []).append(p)
        params = [{"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
                   "lr": o.lr * (o.encoder_lr_ratio if in_enc else 1.0)}
                  for (in_enc, decay), ps in sorted(groups.items())]
        if not params:
            raise ValidationError("nothing to train: every parameter is frozen")
        return adamw_with_schedule(self, params, o)

    # -- exact resume ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from ecgfm.train.module import _rng_state

        checkpoint["ecgfm"] = {**self.meta, "freeze": self.freeze, "val_metrics": dict(self.val_metrics),
                               "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = (checkpoint.get("ecgfm") or {}).get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            from ecgfm.train.module import _set_rng_state

            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _report_texts(corpus: Any, column: str) -> list[str | None]:
    m = corpus.manifest
    if column not in m.columns:
        raise ValidationError(f"{corpus.root}: the manifest has no {column!r} column of report text "
                              f"(columns: {', '.join(map(str, m.columns))}); set language.report_column")
    out: list[str | None] = []
    for v in m[column].tolist():
        out.append(None if v is None or (isinstance(v, float) and v != v) or not str(v).strip() else str(v))
    return out


def _tokenizer(lcfg: LanguageConfig, texts: Sequence[str | None], train_rows: np.ndarray, out: Path,
               resuming: bool) -> ReportTokenizer:
    from ecgfm.language.text import read_report_texts

    saved = out / TOKENIZER_FILE
    if lcfg.tokenizer:
        return ReportTokenizer.load(lcfg.tokenizer)
    if resuming and saved.is_file():
        return ReportTokenizer.load(saved)
    corpus = [texts[i] for i in train_rows if texts[i]]
    for path in lcfg.extra_texts:
        corpus += read_report_texts(path, folds=lcfg.extra_text_folds or None)
    if not corpus:
        raise ValidationError("no report text in the training split to train a tokenizer on")
    tok = ReportTokenizer.train(corpus, vocab_size=lcfg.vocab_size, kind=lcfg.tokenizer_kind,
                                lowercase=lcfg.lowercase, strip_patterns=lcfg.strip_patterns)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(saved)
    return tok


def _tables(texts: Sequence[str | None], tok: ReportTokenizer, lcfg: LanguageConfig,
            hf: Any = None) -> dict[str, np.ndarray]:
    """Per manifest row: text-encoder ids and mask, decoder ids, groups of identical text, has-text."""
    from ecgfm.language.retrieval import text_groups

    normalised = [None if t is None else tok.normalize(t) for t in texts]
    normalised = [t if t else None for t in normalised]
    if hf is not None:
        enc_ids, enc_mask = hf.tokenize(normalised, lcfg.max_text_tokens)
    else:
        enc_ids, _ = tok.batch(normalised, lcfg.max_text_tokens, start=CLS)
        enc_mask = enc_ids != PAD
    dec_ids, _ = tok.batch(normalised, lcfg.max_text_tokens, start=BOS)
    return {"enc_ids": enc_ids, "enc_mask": enc_mask, "dec_ids": dec_ids,
            "groups": text_groups(normalised), "has_text": np.array([t is not None for t in normalised])}


def _network(encoder: nn.Module, lcfg: LanguageConfig, vocab: int) -> Any:
    from ecgfm.language.decoder import ReportDecoder, decoder_config
    from ecgfm.language.model import ECGTextModel, feature_channels
    from ecgfm.language.text_encoder import HFTextEncoder, TextEncoder, text_encoder_config

    uses = lcfg.uses
    text = None
    if uses["clip"]:
        if lcfg.hf_text_model:
            text = HFTextEncoder(lcfg.hf_text_model, pooling=str(lcfg.text_encoder.get("pooling", "mean")))
        else:
            text = TextEncoder(text_encoder_config(lcfg.text_encoder, vocab_size=vocab,
                                                   max_length=lcfg.max_text_tokens))
    decoder = None
    if uses["caption"]:
        decoder = ReportDecoder(decoder_config(lcfg.decoder, vocab_size=vocab, max_length=lcfg.max_text_tokens,
                                               memory_dim=feature_channels(encoder)))
    return ECGTextModel(encoder, text, decoder, embed_dim=lcfg.embed_dim, projection=lcfg.projection,
                        init_temperature=lcfg.init_temperature, learn_temperature=lcfg.learn_temperature,
                        max_logit_scale=lcfg.max_logit_scale)


def pretrain_language(objective: str | None = None, config: Any = None, overrides: Sequence[str] = (), *,
                      callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a signal-language model on ECG-report pairs and export it (module docstring).

    Args:
        objective: ``"clip"``, ``"caption"`` or ``"multitask"`` (None: the config's
            ``language.objective``).
        config: a YAML file, a ``(TrainConfig, LanguageConfig)`` pair, or None (defaults; then
            give ``data.store=`` in ``overrides``).
        overrides: ``section.key=value`` items; ``language.key=value`` for :class:`LanguageConfig`.
        callbacks: extra Lightning callbacks.

    Returns:
        :func:`ecgfm.train.run.fit`'s result (``out_dir``, ``val``, ``test``, ``global_step`` ...)
        with ``model_dir`` (the exported signal-language model), ``objective`` and ``tokenizer``.
    """
    t0 = time.perf_counter()
    from ecgfm.models.heads import normal_abnormal_head
    from ecgfm.train.config import TrainConfig
    from ecgfm.train.run import _changed_keys, _resume_path, build, export_pipeline, fit

    if isinstance(config, tuple):
        cfg, lcfg = config
        if overrides:
            cfg, lcfg = _apply_pair(cfg, lcfg, overrides)
        if objective is not None:
            lcfg = dataclasses.replace(lcfg, objective=objective)
    else:
        cfg, lcfg = load_language_config(config, overrides, objective)
    if cfg.data.eval_window is not None and cfg.data.eval_aggregate != "none":
        raise ValidationError("data.eval_window: signal-language pretraining scores one window per record; set "
                              "data.eval_aggregate=none (the encoder reads the whole evaluation window at once)")
    given = {str(o).partition("=")[0].strip() for o in overrides}
    out_dir = cfg.out_dir
    if "out_dir" not in given and out_dir == TrainConfig().out_dir:
        out_dir = f"runs/language_{lcfg.objective}"
    trainer_cfg = cfg.trainer
    if trainer_cfg.monitor == "val/auroc" and "trainer.monitor" not in given:
        trainer_cfg = dataclasses.replace(trainer_cfg, monitor="val/loss", monitor_mode="min")
    export = trainer_cfg.export
    cfg = dataclasses.replace(
        cfg, out_dir=out_dir, trainer=dataclasses.replace(trainer_cfg, export=False),
        data=dataclasses.replace(cfg.data, labels=(_NORMAL,), label_columns=("labels",)),
        model=dataclasses.replace(cfg.model, head="binary", loss=None, loss_args={}),
    )
    out = Path(cfg.out_dir)
    ckpt_path = _resume_path(cfg, out)
    with warnings.catch_warnings():
        if lcfg.objective != "multitask":  # NORM is only the target of the multitask head
            warnings.filterwarnings("ignore", message=r".*occur in no record of the store")
        parts = build(cfg)
    cfg = parts.config
    corpus = parts.corpus
    if lcfg.uses["abnormal"]:
        y = corpus.manifest["labels"].iloc[parts.train_set.rows]
        if not any(_NORMAL in list(v) for v in y if v is not None):
            raise ValidationError(f"{cfg.data.store}: the multitask normal/abnormal head needs {_NORMAL} labels "
                                  "in the training split; set language.abnormal_weight=0")
    texts = _report_texts(corpus, lcfg.report_column)
    train_rows = np.asarray(parts.train_set.rows)
    if not any(texts[i] for i in train_rows):
        raise ValidationError(f"{cfg.data.store}: no record of split {cfg.data.train_split!r} has a report "
                              f"(column {lcfg.report_column!r})")
    tok = _tokenizer(lcfg, texts, train_rows, out, resuming=ckpt_path is not None)
    encoder = parts.module.encoder
    head = normal_abnormal_head() if lcfg.uses["abnormal"] else None
    if head is None:
        encoder.reset_head(0)
    net = _network(encoder, lcfg, tok.vocab_size)
    hf = net.text_encoder if lcfg.hf_text_model else None
    tables = _tables(texts, tok, lcfg, hf)
    cpc = None
    if lcfg.uses["cpc"]:
        if corpus.fs is None or cfg.data.window is None:
            raise ValidationError("language.cpc_weight > 0 needs a store of one sampling rate and data.window")
        cpc = cpc_objective(encoder, float(corpus.fs), round(cfg.data.window * float(corpus.fs)), **lcfg.cpc_args)
    meta = {**parts.module.meta, "language": lcfg.to_dict(), "objective": lcfg.objective}
    torch.manual_seed(int(cfg.seed))  # the text side's initial weights follow the seed
    module = LanguageModule(net, lcfg, tables, optim=cfg.optim, freeze=cfg.model.freeze, meta=meta, cpc=cpc,
                            head_spec=parts.module.head_spec)
    module.schedule_steps = parts.module.schedule_steps
    parts = dataclasses.replace(parts, module=module)

    import yaml

    settings = lcfg.to_dict()
    changes: list[str] = []
    saved = out / LANGUAGE_FILE
    if ckpt_path is not None and saved.is_file():
        before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        changes = [f"language.{k}" for k in _changed_keys(before, settings)]

    def save_settings() -> None:
        text = "# ecgfm signal-language pretraining: the language settings of this run\n"
        saved.write_text(text + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")

    result = fit(parts, out, ckpt_path, callbacks, t0, extra_changes=changes, on_start=save_settings)
    model_dir = None
    if export and result.get("global_rank", 0) == 0:
        pipeline = export_pipeline(corpus.pipeline, window=cfg.data.eval_window or cfg.data.window, leads=parts.leads,
                                   store_leads=corpus.leads, eval_crop=cfg.data.eval_crop)
        model_dir = _export(module.cpu(), tok, lcfg, cfg, parts, pipeline, head, result, time.perf_counter() - t0)
    return {**result, "model_dir": None if model_dir is None else str(model_dir), "objective": lcfg.objective,
            "tokenizer": str(out / TOKENIZER_FILE) if not lcfg.tokenizer else lcfg.tokenizer}


def _apply_pair(cfg: Any, lcfg: LanguageConfig, overrides: Sequence[str]) -> tuple[Any, LanguageConfig]:
    import yaml

    from ecgfm.train.config import _section, apply_overrides

    data = lcfg.to_dict()
    engine = []
    for item in overrides:
        key, _, text = str(item).partition("=")
        if key.strip().startswith("language."):
            data[key.strip()[len("language."):]] = yaml.safe_load(text) if text.strip() else None
        else:
            engine.append(str(item))
    return (apply_overrides(cfg, engine) if engine else cfg), _section(LanguageConfig, data, "language")


def _scalars(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}


def _export(module: LanguageModule, tok: ReportTokenizer, lcfg: LanguageConfig, cfg: Any, parts: Any,
            pipeline: Any, head: Any, result: Mapping[str, Any], seconds: float) -> Path:
    from ecgfm.language.portable import save_language_model

    corpus = parts.corpus
    manifest = corpus.manifest
    sources = sorted({str(s) for s in manifest["dataset"].dropna()}) if "dataset" in manifest.columns else []
    where = ", ".join(sources) or Path(cfg.data.store).name
    enc_name = module.meta.get("encoder")
    terms = [k for k, used in lcfg.uses.items() if used]
    metrics: dict[str, Any] = {"val": _scalars(result.get("val"))}
    if result.get("test"):
        metrics["test"] = _scalars(result.get("test"))
    training = {
        "config": cfg.to_dict(), "language": lcfg.to_dict(), "store": str(cfg.data.store),
        "store_pipeline_hash": None if corpus.pipeline is None else corpus.pipeline.hash, "datasets": sources,
        "records": {"train": len(parts.train_set), "val": len(parts.val_set)},
        "global_step": int(result.get("global_step", 0)), "epochs": int(result.get("epoch", 0)),
        "init": module.meta.get("init"), "wall_seconds": round(seconds, 1),
    }
    card = {
        "name": f"{enc_name} signal-language model ({lcfg.objective}) on {where}",
        "summary": (f"An ECG encoder ({enc_name}) pretrained on ECG-report pairs with ecgfm pretrain "
                    f"--objective {lcfg.objective} ({' + '.join(terms)}), with its text encoder, projections"
                    + (", report decoder" if module.net.decoder is not None else "") + " and tokenizer. "
                    "The ECG side loads with ecgfm.load_model and fine-tunes with ecgfm finetune --from; the "
                    "whole model with ecgfm.language.load_language_model (zero-shot scoring of catalogue "
                    "conditions, report retrieval, draft reports)."),
        "training_data": (f"{len(parts.train_set)} training ECG-report pairs ({cfg.data.train_split}), "
                          f"{len(parts.val_set)} validation ({cfg.data.val_split}) from {cfg.data.store} ({where})."),
        "intended_use": ("Research on ECG representation learning, zero-shot diagnosis and report drafting. Generated "
                         "reports are drafts for a qualified reader to check; not a medical device; not for "
                         "diagnosis or treatment decisions."),
        "limitations": ("Reports and zero-shot scores inherit the language, vocabulary, population and devices of the "
                        "training reports; conditions rarely or never named in them score poorly. Generated text can "
                        "state findings that are not in the recording."),
        **cfg.card,
    }
    return save_language_model(
        Path(cfg.out_dir) / "model", module.net, tok, pipeline=pipeline, head=head, objective=lcfg.objective,
        max_text_tokens=lcfg.max_text_tokens,
        generation={"beam": lcfg.beam, "length_penalty": lcfg.length_penalty, "max_length": lcfg.max_text_tokens},
        zero_shot={"method": lcfg.zero_shot_method, "expand": lcfg.zero_shot_expand},
        card=card, metrics=metrics, training=training)
