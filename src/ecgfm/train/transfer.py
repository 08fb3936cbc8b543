"""Reduced-lead students of a 12-lead teacher: ``ecgfm transfer --teacher MODEL --leads I``.

A *student* reads only a subset of the teacher's leads (``I``; ``II``; ``I,II``; the six limb
leads; ``V1-V6``; any other) and predicts the teacher's labels. It is

1. **initialised from the teacher** (:func:`student_from_teacher`): the same architecture and
   weights, except that the layer that consumes the lead axis (the first convolution of the
   CNN families; the lead embedding of ``vit1d``) is *sliced* to the subset. For the families
   whose lead mask zeroes absent leads and rescales the present ones by ``L / n_present``
   (:func:`ecgfm.models.base.rescale_present_leads`) the sliced weights are multiplied by
   ``L / k``, so the untrained student computes exactly what the teacher computes when given
   the subset with the other leads masked (checked numerically when the student is made);
2. **trained on the same store's ECGs restricted to its leads** (:func:`transfer`), with

   ``loss = supervised + lambda_align * align(student features, teacher features)
   + lambda_distill * distill(student logits, teacher logits)``

   where *supervised* is the run's loss on the labels (BCE for a multi-label head), *align*
   an MMD or CORAL distance (:mod:`ecgfm.objectives.alignment`) between the student's pooled
   features on its subset and the frozen teacher's pooled features on all its leads, for the
   same batch, and *distill* the divergence from the teacher's probabilities at temperature
   ``T``. The teacher stays in eval mode and receives no gradient.

Why a sliced first layer rather than a 12-lead student with rows masked: the exported model's
contract then lists only the subset's leads, so a one-lead file (a CinC 2017 AliveCor record at
300 Hz, for a lead-I student) satisfies it, and the first layer does ``k/12`` of the work.

The run reuses the training engine (:mod:`ecgfm.train.run`): the same YAML configuration and
``section.key=value`` overrides, loaders, exact resume (``resume=auto``), checkpoints, logs and
export to a portable model. The teacher's own training configuration (recorded in its model
folder or checkpoint) is the default recipe. Transfer settings live in a ``transfer:`` section
of the YAML file (``transfer.lambda_align=0.5`` on the command line); see
:class:`TransferConfig`. Beside the engine's outputs, ``out_dir/transfer.yaml`` records the
teacher, the leads and the transfer settings.

>>> import ecgfm
>>> from ecgfm.train.transfer import transfer
>>> result = transfer("src/ecgfm/models/default", "I", overrides=["data.store=corpora/ptbxl100"])  # doctest: +SKIP
>>> ecgfm.load_model(result["model_dir"]).predict("cinc2017/A00001.hea")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ecgfm.errors import ReadError, ValidationError
from ecgfm.train.module import SupervisedModule

__all__ = [
    "TeacherInfo", "TransferConfig", "TransferModule", "describe_teacher", "load_transfer_config",
    "parse_leads", "student_from_teacher", "transfer",
]

TRANSFER_FILE = "transfer.yaml"
INITS = ("teacher", "random")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransferConfig:
    """The ``transfer:`` section of a run: how the student is initialised and what it learns from."""

    alignment: str = "mmd"  # feature-distribution alignment of pooled features: mmd, coral or none
    lambda_align: float = 1.0  # weight of the alignment term (0: off)
    lambda_distill: float = 1.0  # weight of the distillation of the teacher's outputs (0: off)
    temperature: float = 2.0  # distillation temperature T (logits / T; the term is scaled by T^2)
    mmd_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # MMD kernel widths, multiples of the batch's mean squared feature distance
    init: str = "teacher"  # the student's starting weights: teacher (first layer sliced to the leads) or random

    def __post_init__(self) -> None:
        from ecgfm.objectives.alignment import ALIGNMENTS

        if self.alignment not in ALIGNMENTS:
            raise ValidationError(f"transfer.alignment: expected one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")
        if self.init not in INITS:
            raise ValidationError(f"transfer.init: expected one of {', '.join(INITS)}, got {self.init!r}")
        for key in ("lambda_align", "lambda_distill"):
            if not getattr(self, key) >= 0:
                raise ValidationError(f"transfer.{key}: expected a number >= 0, got {getattr(self, key)!r}")
        if not self.temperature > 0:
            raise ValidationError(f"transfer.temperature: expected a number > 0, got {self.temperature!r}")
        if not self.mmd_multipliers or min(self.mmd_multipliers) <= 0:
            raise ValidationError(f"transfer.mmd_multipliers: expected positive numbers, got {self.mmd_multipliers!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), as saved in ``transfer.yaml``."""
        out = dataclasses.asdict(self)
        out["mmd_multipliers"] = list(self.mmd_multipliers)
        return out


def parse_leads(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A lead subset from the command line or code: ``"I"``, ``"I,II"``, ``"I+II"``, ``"V1-V6"``,
    ``"limb"``, ``"I,II,III,aVR,aVL,aVF"``, or a list of names; canonical names, in order.

    >>> parse_leads("I+II"), parse_leads("V1-V3")
    (('I', 'II'), ('V1', 'V2', 'V3'))
    """
    from ecgfm.leads import canonical_leads, parse_lead_list

    if isinstance(spec, str):
        leads = parse_lead_list(spec.replace("+", ","))
    else:
        leads = canonical_leads([str(s) for s in spec], source="leads")
    if not leads:
        raise ValidationError(f"leads: no lead in {spec!r}")
    if len(set(leads)) != len(leads):
        raise ValidationError(f"leads: {list(leads)} names a lead twice")
    return leads


def load_transfer_config(
    path: str | os.PathLike[str] | None, overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> tuple[Any, TransferConfig]:
    """``(TrainConfig, TransferConfig)`` from a YAML file (or ``base``, a config dict such as the
    teacher's recorded training configuration, when ``path`` is None) plus overrides.

    The file is an ``ecgfm train`` configuration with an optional ``transfer:`` section;
    overrides ``transfer.key=value`` set that section, every other one goes to
    :func:`ecgfm.train.config.apply_overrides`.

    Raises:
        ReadError: the file is missing or not YAML.
        ValidationError: unknown keys or wrong types (naming the file or the override).
    """
    import yaml

    from ecgfm.train.config import _section, apply_overrides, config_from_dict, read_yaml_sections

    where = "config"
    data: Any = {}
    if path is not None:
        p = Path(path)
        where = str(p)
        data = dict(read_yaml_sections(p))
    elif base is not None:
        where = "the teacher's training configuration"
        data = json.loads(json.dumps(dict(base)))
        data.pop("resume", None)  # the teacher's own resume setting is not this run's
    data = dict(data)
    section = dict(data.pop("transfer", None) or {})
    engine: list[str] = []
    for item in overrides:
        key, eq, text = str(item).partition("=")
        if key.strip().startswith("transfer."):
            name = key.strip()[len("transfer."):]
            try:
                section[name] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as exc:
                raise ValidationError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        else:
            engine.append(str(item))
    cfg = config_from_dict(data, where)
    if engine:
        cfg = apply_overrides(cfg, engine)
    tcfg = _section(TransferConfig, section, f"{where}: transfer")
    return cfg, tcfg


# ---------------------------------------------------------------------------------------------
# the teacher
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher is, read from its model folder or checkpoint without loading its weights."""

    source: str  # the model folder or .ckpt
    kind: str  # "portable" or "checkpoint"
    encoder: str  # registry name of its encoder
    leads: tuple[str, ...]  # its input leads, in order
    labels: tuple[str, ...]  # its output ids
    head_type: str  # multilabel, multiclass, binary (regression heads cannot be distilled)
    config: dict[str, Any] | None  # the training configuration it was trained with, if recorded
    name: str  # a display name (its card's name)
    store_pipeline_hash: str | None  # hash of the preprocessing of the store it was trained on


def describe_teacher(path: str | os.PathLike[str]) -> TeacherInfo:
    """:class:`TeacherInfo` of a portable model folder (``config.json``) or an ``ecgfm train``
    checkpoint (its ``"ecgfm"`` section)."""
    p = Path(path)
    if p.is_file() and p.name == "config.json":
        p = p.parent
    if p.is_dir():
        config_path = p / "config.json"
        if not config_path.is_file():
            raise ValidationError(f"{p}: not a model folder (no config.json) and not a checkpoint file")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ReadError(config_path, f"cannot read the model config ({error})") from None
        if config.get("head") is None:
            raise ValidationError(f"{p}: the teacher has no head (an embedding model); transfer needs its outputs")
        training = config.get("training") or {}
        return TeacherInfo(
            source=str(p), kind="portable", encoder=str(config["encoder"]),
            leads=tuple(config["input"]["leads"]), labels=tuple(config.get("labels") or ()),
            head_type=str(config["head"]["type"]), config=training.get("config"),
            name=str((config.get("card") or {}).get("name") or p.name),
            store_pipeline_hash=training.get("store_pipeline_hash"),
        )
    if not p.is_file():
        raise ValidationError(f"{p}: the teacher is neither a portable model folder nor a checkpoint file")

    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    meta = ckpt.get("ecgfm") if isinstance(ckpt, dict) else None
    if not meta or "encoder" not in meta or not meta.get("head"):
        raise ValidationError(f"{p}: not a checkpoint written by ecgfm train (no 'ecgfm' section with a head)")
    return TeacherInfo(
        source=str(p), kind="checkpoint", encoder=str(meta["encoder"]), leads=tuple(meta["leads"]),
        labels=tuple(meta.get("label_ids") or ()), head_type=str(meta["head"]["type"]),
        config=meta.get("config"), name=f"{meta['encoder']} checkpoint {p.name}",
        store_pipeline_hash=meta.get("pipeline_hash"),
    )


def student_from_teacher(teacher: Any, rows: Sequence[int], *, check: bool = True) -> Any:
    """A ``len(rows)``-lead copy of a registry encoder, initialised from ``teacher``.

    Every weight is copied; a weight with the lead axis (the input layer) keeps the rows
    ``rows`` of it, multiplied by ``L / k`` for encoders that rescale present leads (see the
    module docstring), so that ``student(x[:, rows])`` equals ``teacher(x, mask)`` where
    ``mask`` keeps only ``rows``.

    Args:
        teacher: an encoder of :mod:`ecgfm.models.registry` (``encoder_name`` set) taking ``L``
            leads.
        rows: indices into the teacher's lead axis, ``k < L`` of them, in the student's order.
        check: run both on a random input (eval mode) and warn if they disagree, which would
            mean the family keeps lead-dependent weights this rule does not know.

    Returns:
        The student encoder (same device and dtype as the teacher, in the teacher's mode).
    """

    from ecgfm.models.base import Encoder
    from ecgfm.models.registry import create_encoder

    name = getattr(teacher, "encoder_name", None)
    if not name:
        raise ValidationError(f"{type(teacher).__name__}: the teacher is not a registry encoder (no encoder_name)")
    n_leads, rows = int(teacher.in_leads), [int(r) for r in rows]
    k = len(rows)
    if not rows or len(set(rows)) != k or min(rows) < 0 or max(rows) >= n_leads:
        raise ValidationError(f"rows must be distinct lead indices in [0, {n_leads}), got {rows}")
    if k >= n_leads:
        raise ValidationError(f"the student's {k} leads are all of the teacher's {n_leads}: nothing to reduce")
    values = dataclasses.asdict(teacher.config)
    values["in_leads"] = k
    student = create_encoder(name, **values)
    ref = next(teacher.parameters())
    student.to(device=ref.device, dtype=ref.dtype)
    rescales = type(teacher).forward_features is Encoder.forward_features
    index = torch.as_tensor(rows, device=ref.device)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    state = {}
    for key, target in s_state.items():
        value = t_state[key]
        if value.shape == target.shape:
            state[key] = value.detach().clone()
            continue
        axes = [a for a in range(value.ndim) if value.shape[a] == n_leads and target.shape[a] == k
                and all(value.shape[b] == target.shape[b] for b in range(value.ndim) if b != a)]
        if len(axes) != 1:
            raise ValidationError(f"{name}: cannot slice weight {key} {tuple(value.shape)} to "
                                  f"{tuple(target.shape)} (no single lead axis)")
        value = value.detach().index_select(axes[0], index)
        state[key] = value * (n_leads / k) if rescales and value.is_floating_point() else value
    student.load_state_dict(state, strict=True)
    if check:
        _check_equivalent(teacher, student, rows)
    student.train(teacher.training)
    return student


def _check_equivalent(teacher: Any, student: Any, rows: list[int]) -> None:
    ref = next(teacher.parameters())
    length = max(int(teacher.min_samples), 256)
    if teacher.max_samples is not None:
        length = min(length, int(teacher.max_samples))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, int(teacher.in_leads), length, generator=g).to(ref.device, ref.dtype)
    mask = torch.zeros(2, int(teacher.in_leads), dtype=torch.bool, device=ref.device)
    mask[:, rows] = True
    modes = teacher.training, student.training
    teacher.eval()
    student.eval()
    try:
        with torch.no_grad():
            a = teacher(x, mask)
            b = student(x[:, rows])
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-4):
        warnings.warn(f"{teacher.encoder_name}: the sliced student does not reproduce the teacher's masked "
                      f"output (max difference {float((a - b).abs().max()):.3g}); it starts from a nearby point",
                      stacklevel=3)


# ---------------------------------------------------------------------------------------------
# the LightningModule
# ---------------------------------------------------------------------------------------------
class TransferModule(SupervisedModule):
    """A student encoder trained against a frozen teacher (a :class:`~ecgfm.train.module.SupervisedModule`).

    Batches hold the teacher's leads (``signal`` ``[B, L, T]``, ``mask`` ``[B, L]``); the
    student sees rows ``rows`` of them (``[B, k, T]``). :meth:`forward` does that slicing,
    so validation, sliding-window evaluation and export are the engine's own; a record
    with none of the student's leads present is passed as zeros with its mask all True (so
    the encoder's "at least one present lead" rule holds; with every lead of PTB-XL present
    that does not occur).

    Args:
        student: the ``k``-lead encoder being trained (``self.encoder``).
        teacher: the frozen ``L``-lead encoder (``self.teacher``; eval mode, no gradient).
        rows: the student's leads as indices into the batch's (the teacher's) lead axis.
        head, loss, optim, freeze, meta: as :class:`~ecgfm.train.module.SupervisedModule`.
        alignment: a loss of :mod:`ecgfm.objectives.alignment` on ``(student pooled
            features [B, D], teacher pooled features [B, D])``, or None.
        distillation: a :class:`~ecgfm.objectives.alignment.Distillation`, or None.
        lambda_align, lambda_distill: the weights of the two terms.

    Logged per step: ``train/loss`` (the total), ``train/supervised``, ``train/align``,
    ``train/distill``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, rows: Sequence[int], head: Any,
                 loss: nn.Module, *, alignment: nn.Module | None = None,
                 distillation: nn.Module | None = None, lambda_align: float = 1.0,
                 lambda_distill: float = 1.0, optim: Any = None, freeze: str = "none",
                 meta: Mapping[str, Any] | None = None) -> None:
        super().__init__(student, head, loss, optim, freeze, meta)
        if int(getattr(teacher, "num_outputs", 0)) != head.num_outputs:
            raise ValidationError(f"the teacher has {getattr(teacher, 'num_outputs', 0)} outputs, the "
                                  f"student's head {head.num_outputs}")
        if int(student.num_features) != int(teacher.num_features) and alignment is not None:
            raise ValidationError(f"feature alignment needs equal widths: student {student.num_features}, "
                                  f"teacher {teacher.num_features}")
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("rows", torch.as_tensor(list(rows), dtype=torch.long), persistent=False)
        self.teacher_leads = int(teacher.in_leads)
        self.teacher_uses_mask = bool(getattr(teacher, "supports_lead_mask", False))
        self.align_fn = alignment
        self.distill_fn = distillation
        self.lambda_align = float(lambda_align)
        self.lambda_distill = float(lambda_distill)

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        teacher = getattr(self, "teacher", None)
        if teacher is not None:
            teacher.eval()  # the teacher's batch-norm statistics and dropout stay fixed
        return self

    @staticmethod
    def _some_present(mask: Tensor | None) -> Tensor | None:
        if mask is None:
            return None
        mask = mask.bool()
        return mask | ~mask.any(dim=1, keepdim=True)

    def student_input(self, signal: Tensor, lead_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``[B, L, T]`` teacher-lead batch -> ``[B, k, T]`` (and ``[B, k]`` mask); a batch
        already in the student's leads passes unchanged."""
        if signal.shape[1] == self.teacher_leads:
            signal = signal.index_select(1, self.rows)
            if lead_mask is not None:
                lead_mask = lead_mask.index_select(1, self.rows)
        return signal, self._some_present(lead_mask)

    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Student logits ``[B, C]`` from a teacher-lead (or student-lead) batch."""
        x, m = self.student_input(signal, lead_mask)
        return super().forward(x, m)

    def teacher_outputs(self, signal: Tensor, lead_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The teacher's ``(pooled features [B, D], logits [B, C])`` on all its leads."""
        t = self.teacher
        mask = self._some_present(lead_mask) if self.teacher_uses_mask else None
        with torch.no_grad():
            pooled = t.forward_head(t.forward_features(signal, mask), pre_logits=True)
            return pooled, t.head(t.head_drop(pooled))

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        signal, mask = batch["signal"], batch.get("mask")
        x, m = self.student_input(signal, mask)
        enc = self.encoder
        # one pooling pass gives both outputs (a concat-pool's batch norm must see it once)
        pooled = enc.forward_head(enc.forward_features(x, m if self.uses_mask else None), pre_logits=True)
        logits = enc.head(enc.head_drop(pooled))  # [B, C]
        out = dict(self.loss_fn(logits, self._targets(batch)))
        total = out["loss"]
        logged = {"supervised": out["loss"].detach()}
        use_align = self.align_fn is not None and self.lambda_align > 0
        use_distill = self.distill_fn is not None and self.lambda_distill > 0
        if use_align or use_distill:
            t_pooled, t_logits = self.teacher_outputs(signal, mask)
            if use_align:
                a = self.align_fn(pooled.float(), t_pooled.float())
                total = total + self.lambda_align * a["loss"]
                logged["align"] = a["loss"].detach()
            if use_distill:
                d = self.distill_fn(logits.float(), t_logits.float())
                total = total + self.lambda_distill * d["loss"]
                logged["distill"] = d["loss"].detach()
        out["loss"] = total
        size = signal.shape[0]
        self.log("train/loss", total.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        for key, value in logged.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=size)
        return out


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _slug(leads: Sequence[str]) -> str:
    return "_".join(leads)


def _label_columns(labels: Sequence[str]) -> tuple[str, ...]:
    """Manifest columns the teacher's ids come from: ``labels`` for plain ids, ``<column>`` for
    ids written ``<column>:<id>`` (as :func:`ecgfm.train.run.resolve_labels` prefixes them)."""
    prefixed = sorted({label.split(":", 1)[0] for label in labels if ":" in label})
    plain = any(":" not in label for label in labels)
    return (("labels",) if plain else ()) + tuple(prefixed)


def _student_card(base: Mapping[str, str], info: TeacherInfo, leads: Sequence[str], tcfg: TransferConfig,
                  loss: str) -> dict[str, str]:
    subset = ", ".join(leads)
    terms = [loss]
    if tcfg.alignment != "none" and tcfg.lambda_align > 0:
        terms.append(f"{tcfg.lambda_align:g} x {tcfg.alignment.upper()} alignment of its pooled features to the "
                     f"teacher's on all {len(info.leads)} leads")
    if tcfg.lambda_distill > 0:
        terms.append(f"{tcfg.lambda_distill:g} x distillation of the teacher's outputs (T = {tcfg.temperature:g})")
    start = ("initialised from the teacher (its input layer sliced to these leads)" if tcfg.init == "teacher"
             else "initialised at random")
    card = {k: v for k, v in base.items() if k in ("license", "citation", "authors", "training_data")}
    card.update({
        "name": f"{info.name}: {len(leads)}-lead student ({subset})",
        "summary": (f"Reads only lead(s) {subset} and predicts the {len(info.labels)} outputs of its {len(info.leads)}-lead teacher "
                    f"{info.name} ({info.source}). A {info.encoder} {start}, trained with ecgfm transfer on the "
                    f"teacher's training ECGs restricted to these leads; loss = " + " + ".join(terms) + "."),
        "intended_use": ("Research on reduced-lead and single-lead ECG analysis (wearables, Holter, patches); "
                         "not a medical device; not for diagnosis or treatment decisions."),
        "limitations": (f"Validated lead subset: {subset} only. The validation and test metrics below were "
                        f"computed with exactly these leads; other subsets were not validated (use a student "
                        f"for that subset, or the teacher with all its leads). It inherits the population, "
                        f"devices and label limits of its teacher's training data (see the teacher's card). "
                        f"Statements that need leads it does not see (e.g. localised infarction from one limb "
                        f"lead) are predicted with much less skill than by the teacher."),
    })
    return card


def _warn_pipeline(corpus: Any, info: TeacherInfo) -> None:
    trained_on = info.store_pipeline_hash
    if corpus.pipeline is not None and trained_on and corpus.pipeline.hash != trained_on:
        warnings.warn(f"{corpus.root}: the store's preprocessing differs from the one the teacher {info.source} "
                      "was trained on; its features and outputs are not what it learnt", stacklevel=3)


def transfer(teacher: str | os.PathLike[str], leads: str | Sequence[str],
             config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), *,
             callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a student of ``teacher`` that reads only ``leads``; export it as a portable model.

    Args:
        teacher: a portable model folder or an ``ecgfm train`` checkpoint with a head.
        leads: the student's leads (:func:`parse_leads`: ``"I"``, ``"I,II"``, ``"V1-V6"`` ...),
            a strict subset of the teacher's.
        config: a YAML run configuration (``ecgfm train``'s, plus an optional ``transfer:``
            section); None: the teacher's recorded training configuration (then give at least
            ``data.store=`` when that path is not valid here).
        overrides: ``section.key=value`` items; ``transfer.key=value`` for :class:`TransferConfig`.
        callbacks: extra Lightning callbacks.

    What is fixed from the teacher, whatever the configuration says: the label set (its
    outputs, from the store's label columns they came from), the head type, the encoder and
    ``model.init`` (the teacher); the data's leads (the teacher's: the batch carries them all,
    the student takes its rows). ``out_dir`` defaults to ``runs/transfer_<leads>`` when the
    configuration's is the teacher's own or the engine's default.

    Returns:
        :func:`ecgfm.train.run.train`'s result (``out_dir``, ``model_dir``, ``val``, ``test``,
        ``global_step`` ...) plus ``leads`` and ``teacher``. The exported model's contract lists
        the student's leads.
    """
    t0 = time.perf_counter()
    from ecgfm.train.config import TrainConfig

    info = describe_teacher(teacher)
    subset = parse_leads(leads)
    unknown = [lead for lead in subset if lead not in info.leads]
    if unknown:
        raise ValidationError(f"{info.source}: the teacher does not read lead(s) {', '.join(unknown)} "
                              f"(its leads: {', '.join(info.leads)})")
    if len(subset) >= len(info.leads):
        raise ValidationError(f"leads {', '.join(subset)}: a student must read fewer leads than its teacher "
                              f"({len(info.leads)})")
    if info.head_type in ("regression", "cox", "discrete_hazard"):
        raise ValidationError(f"{info.source}: a {info.head_type} head cannot be distilled; transfer needs a "
                              "multilabel, binary or multiclass teacher")
    cfg, tcfg = load_transfer_config(config, overrides, base=info.config if config is None else None)
    given = {str(o).partition("=")[0].strip() for o in overrides}
    out_dir = cfg.out_dir
    teacher_out = (info.config or {}).get("out_dir")
    if "out_dir" not in given and out_dir in (TrainConfig().out_dir, teacher_out):
        out_dir = f"runs/transfer_{_slug(subset)}"
    loss_name = cfg.model.loss or {"multiclass": "cross-entropy"}.get(info.head_type, "BCE")
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, leads=info.leads, labels=info.labels,
                                 label_columns=_label_columns(info.labels)),
        model=dataclasses.replace(cfg.model, encoder=info.encoder, head=info.head_type, init=str(teacher)),
        out_dir=out_dir,
        card=_student_card(cfg.card, info, subset, tcfg, f"supervised {loss_name} on the labels"),
    )
    return _run(cfg, tcfg, info, subset, callbacks, t0)


def _run(cfg: Any, tcfg: TransferConfig, info: TeacherInfo, subset: tuple[str, ...], callbacks: Sequence[Any],
         t0: float) -> dict[str, Any]:

    from ecgfm.models.registry import create_encoder
    from ecgfm.objectives.alignment import Distillation, create_alignment
    from ecgfm.train.run import _resume_path, build

    out = Path(cfg.out_dir)
    ckpt_path = _resume_path(cfg, out)
    parts = build(cfg)
    cfg = parts.config
    _warn_pipeline(parts.corpus, info)
    teacher = parts.module.encoder
    rows = [tuple(parts.leads).index(lead) for lead in subset]
    if tcfg.init == "teacher":
        student = student_from_teacher(teacher, rows)
    else:
        values = dataclasses.asdict(teacher.config)
        values["in_leads"] = len(rows)
        student = create_encoder(info.encoder, **values)
    alignment = (None if tcfg.alignment == "none" else
                 create_alignment(tcfg.alignment, **({"multipliers": tcfg.mmd_multipliers}
                                                     if tcfg.alignment == "mmd" else {})))
    head = parts.module.head_spec
    distillation = Distillation("kl" if head.type == "multiclass" else "bce", tcfg.temperature)
    settings = {"teacher": info.source, "teacher_leads": list(info.leads), "leads": list(subset),
                "rows": rows, **tcfg.to_dict()}
    meta = {**parts.module.meta, "encoder": info.encoder, "leads": list(subset), "transfer": settings,
            "encoder_config": json.loads(json.dumps(dataclasses.asdict(student.config), default=list))}
    module = TransferModule(
        student, teacher, rows, head, parts.module.loss_fn, alignment=alignment, distillation=distillation,
        lambda_align=tcfg.lambda_align, lambda_distill=tcfg.lambda_distill, optim=cfg.optim,
        freeze=cfg.model.freeze, meta=meta)
    module.eval_windows = parts.module.eval_windows
    module.schedule_steps = parts.module.schedule_steps
    parts = dataclasses.replace(parts, module=module, leads=subset)
    torch.manual_seed(int(cfg.seed))  # the same global stream whichever init ran
    return _fit(parts, cfg, out, ckpt_path, settings, callbacks, t0)


def _fit(parts: Any, cfg: Any, out: Path, ckpt_path: str | None, settings: Mapping[str, Any],
         callbacks: Sequence[Any], t0: float) -> dict[str, Any]:
    """:func:`ecgfm.train.run.fit` with the transfer settings saved beside ``config.yaml`` and
    compared on resume."""
    import yaml

    from ecgfm.train.run import _changed_keys, fit

    plain = json.loads(json.dumps(settings))
    changes: list[str] = []
    saved = out / TRANSFER_FILE
    if ckpt_path is not None and saved.is_file():
        before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        changes = [f"transfer.{k}" for k in _changed_keys(before, plain)]

    def save_settings() -> None:
        text = "# ecgfm transfer: the teacher, the student's leads and the transfer settings\n"
        saved.write_text(text + yaml.safe_dump(plain, sort_keys=False), encoding="utf-8")

    result = fit(parts, out, ckpt_path, callbacks, t0, extra_changes=changes, on_start=save_settings,
                 eval_mode_parts=True)  # the frozen teacher
    return {**result, "teacher": settings["teacher"]}
