"""The training configuration: frozen dataclasses, read from YAML, overridden from the command line.

A run is described by one :class:`TrainConfig` with five sections and three top-level fields::

    data:     the corpus store, splits, window, crops, leads, label set, batches, augmentations
    model:    encoder name + overrides, head type, loss, initial weights, what to freeze
    optim:    AdamW and the learning-rate schedule
    trainer:  epochs/steps, precision, accumulation, devices/strategy, checkpoints, early stop, logs
    out_dir, seed, resume

:func:`load_config` reads a YAML file (every key optional but ``data.store``; unknown keys are
errors that list the valid ones) and applies ``section.key=value`` overrides whose values are
parsed with ``yaml.safe_load`` (``trainer.max_steps=200``, ``data.leads=[I,II]``,
``model.encoder_args={width: 32}``) and checked against the field's type. :meth:`TrainConfig.to_dict`
gives the resolved configuration that :func:`ecgfm.train.run.train` saves as ``config.yaml`` beside
the checkpoints; loading that file back gives the same configuration.

Nothing here imports torch or Lightning.

>>> cfg = load_config(None, ["data.store=corpus/", "trainer.max_steps=10"])
>>> cfg.trainer.max_steps, cfg.model.freeze
(10, 'none')
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ecgfm.errors import ReadError, ValidationError

__all__ = [
    "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "TrainerConfig", "apply_overrides",
    "config_from_dict", "load_config", "parse_freeze", "parse_label_set", "save_config",
]

SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("32", "bf16-mixed", "16-mixed", "64", "bf16-true", "16-true")
STRATEGIES = ("auto", "ddp", "fsdp", "ddp_spawn", "ddp_find_unused_parameters_true")
LOGGERS = ("csv", "tensorboard")
PROGRESS = ("auto", "rich", "tqdm", "none")
CROPS = ("random", "start", "center", "windows")
_LABEL_SET = re.compile(r"^(all|min_positives:(\d+))$")
_PARTIAL = re.compile(r"^partial:(\d+)$")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are cut and batched."""

    store: str = ""  # the corpus store folder (ecgfm build-corpus); required
    train_split: str = "train"  # manifest split the model is fitted on
    val_split: str = "val"  # split of validation metrics, early stopping and the best checkpoint
    test_split: str | None = None  # scored once with the best weights after fitting (None: skip)
    window: float | None = 10.0  # window length in seconds (None: whole records, all of one length)
    train_crop: str = "random"  # random, start, center, windows
    eval_crop: str = "center"  # crop of validation and test windows
    eval_window: float | None = None  # seconds fed at validation/test (and by the exported model), scored as sliding windows of `window` (None: one window)
    eval_stride: float | None = None  # seconds between those sliding windows (None: half the window)
    eval_aggregate: str = "max"  # how the sliding windows' logits combine: max or mean; none: one pass over the whole eval_window (a fully convolutional encoder trained on shorter crops)
    leads: tuple[str, ...] | None = None  # input leads in order (None: the store's leads)
    labels: tuple[str, ...] | str = "all"  # label ids, "all" or "min_positives:N" (>= N train records); regression: numeric manifest columns
    label_columns: tuple[str, ...] = ("labels",)  # manifest columns of label ids; ids from a column other than "labels" get the prefix "<column>:"
    batch_size: int = 64  # windows per batch and device (before accumulation)
    eval_batch_size: int | None = None  # validation/test batch size (None: batch_size)
    num_workers: int = 2  # DataLoader worker processes per device
    pin_memory: bool = False  # pin batches (with a GPU)
    augment: tuple[dict[str, Any], ...] = ()  # training augmentations: [{name: GaussianNoise, std: 0.05}, ...] (ecgfm.store.augment)
    overrides: str | None = None  # CSV or Parquet keyed by record_id whose other columns replace the manifest's for those records (cross-validation splits, corrected labels, outcomes; ";" separates ids in a CSV)
    time_column: str | None = None  # survival heads (cox, discrete_hazard): manifest or overrides column of follow-up time (>= 0, in time_unit)
    event_column: str | None = None  # survival heads: column of the event indicator (1 = event at that time, 0 = censored)
    time_unit: str = ""  # unit of time_column, horizons and cuts (e.g. years), recorded in the model
    horizons: tuple[float, ...] = ()  # survival: evaluation horizons in time_unit, e.g. [1, 5, 10] (empty: quartiles of training event times)
    survival_cuts: tuple[float, ...] = ()  # discrete_hazard: interval edges in time_unit, from 0 (empty: 0, survival_bins quantiles of training event times, horizons)
    survival_bins: int = 10  # discrete_hazard: number of event-time quantile intervals of the default cuts


@dataclass(frozen=True)
class ModelConfig:
    """What is trained: the encoder, its head and loss, and where its weights start."""

    encoder: str = "resnet1d18"  # name in the encoder registry (ecgfm.models.registry)
    encoder_args: dict[str, Any] = field(default_factory=dict)  # overrides of the encoder's config dataclass
    head: str = "multilabel"  # multilabel, multiclass, regression, binary, cox, discrete_hazard (survival)
    loss: str | None = None  # loss name for ecgfm.objectives.create_loss (None: the head's default)
    loss_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the loss
    init: str | None = None  # initial weights: a portable model folder or a Lightning .ckpt (fine-tuning)
    freeze: str = "none"  # none, encoder (linear probe), partial:N (train the last N stages + head)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule (stepped every optimizer step)."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not applied to biases and norms)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    schedule: str = "cosine"  # cosine, onecycle, constant
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimizer steps (cosine, constant)
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    pct_start: float = 0.3  # onecycle: fraction of the steps spent increasing the rate
    encoder_lr_ratio: float = 1.0  # encoder learning rate / head learning rate (fine-tuning: < 1)


@dataclass(frozen=True)
class TrainerConfig:
    """The Lightning Trainer: length, numerics, devices, checkpoints, early stopping and logs."""

    max_epochs: int = 10  # stop after this many epochs (-1: no epoch limit)
    max_steps: int = -1  # stop after this many optimizer steps (-1: no step limit); sets the schedule length when given
    precision: str = "32"  # 32, bf16-mixed, 16-mixed (also 64, bf16-true, 16-true)
    accumulate_grad_batches: int = 1  # batches per optimizer step
    accelerator: str = "auto"  # auto, cpu, gpu, cuda, mps
    devices: int | str = "auto"  # devices per node: a number, "auto" or a list string "0,1"
    num_nodes: int = 1  # machines (SLURM/torchrun set the ranks)
    strategy: str = "auto"  # auto, ddp, fsdp (and Lightning's other names)
    gradient_clip_val: float | None = None  # clip the gradient norm to this (None: no clipping)
    deterministic: bool | str = "warn"  # torch deterministic algorithms: true, false or "warn" (use where available)
    val_check_interval: int | float = 1.0  # validate every fraction of an epoch (float) or N batches (int)
    monitor: str = "val/auroc"  # metric of the best checkpoint and of early stopping
    monitor_mode: str = "max"  # max, min
    early_stopping_patience: int | None = None  # validations without improvement before stopping (None: off)
    checkpoint_every_n_steps: int | None = None  # also write last.ckpt every N optimizer steps (it is always written after each validation and at the end)
    save_top_k: int = 1  # best checkpoints kept (by monitor)
    log_every_n_steps: int = 50  # optimizer steps between logged training metrics
    loggers: tuple[str, ...] = ("csv", "tensorboard")  # csv, tensorboard (skipped when not installed)
    progress: str = "auto"  # auto, rich, tqdm, none
    num_sanity_val_steps: int = 2  # validation batches run before training (0: none)
    export: bool = True  # write the best weights as a portable model folder (out_dir/model) after fitting


@dataclass(frozen=True)
class TrainConfig:
    """A whole training or fine-tuning run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out_dir: str = "runs/train"  # checkpoints/, logs/, config.yaml and model/ go here
    seed: int = 0  # seeds weights, crops, augmentations and the data order
    resume: str | None = None  # a .ckpt to resume exactly, or "auto" (out_dir/checkpoints/last.ckpt when present)
    card: dict[str, str] = field(default_factory=dict)  # model card fields of the exported model (name, summary, training_data, intended_use, limitations, license, citation, authors)

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), as saved in ``config.yaml``."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with dotted keys replaced: ``cfg.replace(**{"trainer.max_steps": 5})``."""
        return apply_overrides(self, [f"{k}={_yaml_value(v)}" for k, v in changes.items()])


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
                              "trainer": TrainerConfig}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


# ---------------------------------------------------------------------------------------------
# typed conversion
# ---------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against and converted to the annotation ``tp`` (ints pass as floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        # str last: YAML turns "10" into 10, and "10" for an int | str field should stay 10
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _coerce(value, arg, where)
            except ValidationError:
                continue
        raise ValidationError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValidationError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValidationError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValidationError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValidationError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValidationError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValidationError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. precision: 32 written without quotes
        raise ValidationError(f"{where}: expected a string, got {value!r}")
    raise ValidationError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ValidationError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValidationError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (valid: {', '.join(names)})")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def config_from_dict(data: Mapping[str, Any] | None, where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from a nested mapping (as read from YAML); unknown keys are errors."""
    data = dict(data or {})
    top = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [k for k in data if k not in top]
    if unknown:
        raise ValidationError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (valid: {', '.join(top)})")
    hints = _hints(TrainConfig)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _section(_SECTIONS[key], value, f"{where}: {key}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}: {key}")
    return TrainConfig(**kwargs)


def _valid_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SECTIONS:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(_SECTIONS[f.name])]
        else:
            keys.append(f.name)
    return keys


def _suggest(key: str, valid: Sequence[str]) -> str:
    """`` (did you mean ...?; valid: ...)`` for an unknown key: the close matches, then the
    keys of the same section (or every key)."""
    import difflib

    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    section = key.split(".")[0] + "."
    scope = [k for k in valid if k.startswith(section)] or list(valid)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{hint} (valid: {', '.join(scope)})"


def apply_overrides(config: TrainConfig | Mapping[str, Any], overrides: Sequence[str]) -> TrainConfig:
    """``config`` with ``key=value`` / ``section.key=value`` overrides applied.

    Values are parsed with ``yaml.safe_load`` (``5`` is an int, ``1e-3`` a float, ``[I, II]`` a
    list, ``null`` None, ``{width: 32}`` a mapping), then checked against the field's type.
    A key inside a mapping field can be set on its own: ``model.encoder_args.width=32``.

    Raises:
        ValidationError: malformed item, unknown key (the message lists the valid keys), or a
            value of the wrong type.
    """
    import yaml

    data = config.to_dict() if isinstance(config, TrainConfig) else _plain(dict(config))
    valid = _valid_keys()
    for item in overrides:
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValidationError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=100")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ValidationError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        parts = key.split(".")
        head = ".".join(parts[:2]) if parts[0] in _SECTIONS else parts[0]
        if head not in valid:
            raise ValidationError(f"override {item!r}: unknown key {key!r}{_suggest(head, valid)}")
        if len(parts) <= 2:  # check the type now, so the message names the override
            cls = _SECTIONS[parts[0]] if len(parts) == 2 else TrainConfig
            _coerce(value, _hints(cls)[parts[-1]], f"override {item!r}")
        if parts[0] in _SECTIONS:
            section = data.setdefault(parts[0], {})
            if section is None:
                section = data[parts[0]] = {}
            if len(parts) == 2:
                section[parts[1]] = value
            else:  # into a mapping field: model.encoder_args.width=32
                target = section.get(parts[1])
                if not isinstance(target, Mapping) and target is not None:
                    raise ValidationError(f"override {item!r}: {head} is not a mapping")
                target = dict(target or {})
                inner = target
                for p in parts[2:-1]:
                    inner = inner.setdefault(p, {})
                inner[parts[-1]] = value
                section[parts[1]] = target
        elif len(parts) == 1:
            data[key] = value
        else:
            raise ValidationError(f"override {item!r}: {parts[0]} has no sub-keys")
    return config_from_dict(data, "override")


def read_yaml_sections(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The mapping of sections in a YAML config file (empty for an empty file).

    Raises:
        ReadError: the file is missing, not YAML, or not a mapping.
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ReadError(p, "config file not found") from None
    except yaml.YAMLError as exc:
        raise ReadError(p, f"not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise ReadError(p, f"expected a mapping of sections (data, model, optim, trainer), got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None: the defaults) and apply ``overrides`` (see :func:`apply_overrides`).

    Raises:
        ReadError: the file is missing or not YAML.
        ValidationError: unknown keys, wrong types or inconsistent values (naming the file).
    """
    if path is not None:
        p = Path(path)
        config = config_from_dict(read_yaml_sections(p), str(p))
    else:
        config = TrainConfig()
    return apply_overrides(config, overrides) if overrides else config


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML (the resolved configuration; :func:`load_config` reads it back)."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "# ecgfm training configuration (resolved: defaults, file and overrides merged)\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p


# ---------------------------------------------------------------------------------------------
# value checks
# ---------------------------------------------------------------------------------------------
def parse_freeze(freeze: str) -> tuple[str, int]:
    """``"none"`` -> ``("none", 0)``, ``"encoder"`` -> ``("encoder", 0)``, ``"partial:2"`` -> ``("partial", 2)``."""
    if freeze in ("none", "encoder"):
        return freeze, 0
    m = _PARTIAL.match(freeze)
    if m is None:
        raise ValidationError(f"model.freeze: expected none, encoder or partial:N (N >= 1 stages to train), got {freeze!r}")
    n = int(m.group(1))
    if n < 1:
        raise ValidationError(f"model.freeze: partial:N needs N >= 1, got {freeze!r}")
    return "partial", n


def parse_label_set(labels: tuple[str, ...] | str) -> tuple[str, int] | tuple[str, ...]:
    """A named label set (``("all", 0)``, ``("min_positives", N)``) or the explicit ids."""
    if isinstance(labels, str):
        m = _LABEL_SET.match(labels)
        if m is None:
            raise ValidationError(f"data.labels: expected a list of label ids, 'all' or 'min_positives:N', got {labels!r}")
        return ("all", 0) if m.group(1) == "all" else ("min_positives", int(m.group(2)))
    return labels


def _choice(value: str, choices: Sequence[str], where: str) -> None:
    if value not in choices:
        raise ValidationError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")


SURVIVAL_METRICS = ("c_index", "uno_c", "auc_mean", "ibs", "loss", "events", "n")


def _validate_survival(cfg: TrainConfig, survival: bool) -> None:
    d, t = cfg.data, cfg.trainer
    if not survival:
        given = [k for k in ("time_column", "event_column") if getattr(d, k) is not None]
        if given:
            raise ValidationError(f"data.{given[0]} is for survival heads; set model.head=cox or "
                                  f"model.head=discrete_hazard (got model.head={cfg.model.head})")
        return
    missing = [k for k in ("time_column", "event_column") if not getattr(d, k)]
    if missing:
        raise ValidationError(f"model.head={cfg.model.head} needs data.time_column and data.event_column (manifest "
                              f"columns, or columns added by data.overrides); missing: "
                              f"{', '.join('data.' + k for k in missing)}")
    name = t.monitor.split("/", 1)[-1]
    if not (name in SURVIVAL_METRICS or name.startswith("auc_")):
        raise ValidationError(f"trainer.monitor: a survival head logs val/c_index, val/uno_c, val/auc_<horizon>, "
                              f"val/auc_mean, val/ibs and val/loss, not {t.monitor}; set "
                              "trainer.monitor=val/c_index trainer.monitor_mode=max")
    for key in ("horizons", "survival_cuts"):
        values = getattr(d, key)
        if any(not v >= 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
            raise ValidationError(f"data.{key}: expected increasing times >= 0, got {list(values)}")
    if d.horizons and d.horizons[0] <= 0:
        raise ValidationError(f"data.horizons: expected times > 0, got {list(d.horizons)}")
    if len(d.survival_cuts) == 1:
        raise ValidationError("data.survival_cuts: give at least two edges (or none for the default)")
    if d.survival_bins < 1:
        raise ValidationError(f"data.survival_bins: expected >= 1, got {d.survival_bins}")


CARD_FIELDS = ("name", "summary", "training_data", "intended_use", "limitations", "license", "citation", "authors")


def _validate(cfg: TrainConfig) -> None:
    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.trainer
    unknown = sorted(set(cfg.card) - set(CARD_FIELDS))
    if unknown:
        raise ValidationError(f"card: unknown field(s) {', '.join(unknown)} (valid: {', '.join(CARD_FIELDS)})")
    _choice(d.train_crop, CROPS, "data.train_crop")
    _choice(d.eval_crop, CROPS, "data.eval_crop")
    parse_label_set(d.labels)
    if isinstance(d.labels, tuple) and not d.labels:
        raise ValidationError("data.labels: the list of label ids is empty")
    if not d.label_columns:
        raise ValidationError("data.label_columns: give at least one manifest column (default: labels)")
    if d.window is not None and d.window <= 0:
        raise ValidationError(f"data.window: expected a positive number of seconds, got {d.window}")
    _choice(d.eval_aggregate, ("max", "mean", "none"), "data.eval_aggregate")
    if d.eval_window is not None:
        if d.window is None or d.eval_window < d.window:
            raise ValidationError(f"data.eval_window ({d.eval_window} s) needs data.window and must be at "
                                  f"least as long ({d.window} s)")
        if d.eval_stride is not None and not 0 < d.eval_stride <= d.window:
            raise ValidationError(f"data.eval_stride: expected 0 < stride <= data.window ({d.window} s), "
                                  f"got {d.eval_stride}")
    elif d.eval_stride is not None:
        raise ValidationError("data.eval_stride needs data.eval_window")
    for name in ("batch_size",):
        if getattr(d, name) < 1:
            raise ValidationError(f"data.{name}: expected >= 1, got {getattr(d, name)}")
    if d.eval_batch_size is not None and d.eval_batch_size < 1:
        raise ValidationError(f"data.eval_batch_size: expected >= 1, got {d.eval_batch_size}")
    if d.num_workers < 0:
        raise ValidationError(f"data.num_workers: expected >= 0, got {d.num_workers}")
    for i, aug in enumerate(d.augment):
        if "name" not in aug:
            raise ValidationError(f"data.augment[{i}]: expected a mapping with 'name' (an ecgfm.store.augment class), got {aug!r}")
    from ecgfm.models.heads import HEAD_TYPES, SURVIVAL_HEADS

    _choice(m.head, HEAD_TYPES, "model.head")
    if m.head == "regression" and t.monitor.endswith(("auroc", "accuracy")):
        raise ValidationError(f"trainer.monitor: a regression head logs val/mae, val/rmse and val/loss, not "
                              f"{t.monitor}; set trainer.monitor=val/mae trainer.monitor_mode=min")
    _validate_survival(cfg, m.head in SURVIVAL_HEADS)
    parse_freeze(m.freeze)
    _choice(o.schedule, SCHEDULES, "optim.schedule")
    if o.lr <= 0:
        raise ValidationError(f"optim.lr: expected > 0, got {o.lr}")
    if o.weight_decay < 0 or o.warmup_steps < 0:
        raise ValidationError("optim.weight_decay and optim.warmup_steps must be >= 0")
    if not 0 <= o.min_lr_ratio <= 1 or not 0 < o.pct_start < 1 or o.encoder_lr_ratio < 0:
        raise ValidationError("optim: min_lr_ratio must be in [0, 1], pct_start in (0, 1), encoder_lr_ratio >= 0")
    _choice(str(t.precision), PRECISIONS, "trainer.precision")
    _choice(t.strategy, STRATEGIES, "trainer.strategy")
    _choice(t.monitor_mode, ("max", "min"), "trainer.monitor_mode")
    _choice(t.progress, PROGRESS, "trainer.progress")
    for lg in t.loggers:
        _choice(lg, LOGGERS, "trainer.loggers")
    if isinstance(t.deterministic, str) and t.deterministic != "warn":
        raise ValidationError(f"trainer.deterministic: expected true, false or warn, got {t.deterministic!r}")
    if t.max_epochs == -1 and t.max_steps == -1:
        raise ValidationError("trainer: give max_epochs or max_steps (both are -1)")
    if t.accumulate_grad_batches < 1 or t.num_nodes < 1 or t.log_every_n_steps < 1:
        raise ValidationError("trainer: accumulate_grad_batches, num_nodes and log_every_n_steps must be >= 1")
    if t.checkpoint_every_n_steps is not None and t.checkpoint_every_n_steps < 1:
        raise ValidationError(f"trainer.checkpoint_every_n_steps: expected >= 1 or null, got {t.checkpoint_every_n_steps}")
    if t.early_stopping_patience is not None and t.early_stopping_patience < 1:
        raise ValidationError(f"trainer.early_stopping_patience: expected >= 1 or null, got {t.early_stopping_patience}")
