"""Portable weights: a model directory that carries its own preprocessing and input contract.

::

    MODEL_DIR/model.safetensors   the encoder's state_dict (tensors only; no pickle anywhere)
    MODEL_DIR/config.json         architecture, head, labels, pipeline (+ hash), input contract,
                                  thresholds, metrics, training summary, card fields
    MODEL_DIR/card.md             the model card rendered from config.json

:func:`save_model` writes it; :func:`load_model` (also ``ecgfm.load_model``) rebuilds the
encoder through the registry (``create_encoder(config["encoder"], **config["encoder_config"])``),
loads the tensors with ``safetensors.torch.load_file`` (strictly: a missing, unexpected or
mis-shaped key is an error that names it) and returns a :class:`Model`, which reads any file
``ecgfm.read`` reads, checks it against the :class:`InputContract`, applies the pipeline and
predicts.

>>> model = load_model("models/default")                                # doctest: +SKIP
>>> model.predict("examples/ptbxl/00351_hr.hea").shape                 # doctest: +SKIP
(1, 71)
>>> model.predict_frame(["a.hea", "b.dcm"]).set_index("record_id")     # doctest: +SKIP

The full format, the refusal rules and the card are described in ``docs/weights.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import numpy as np
import torch

from ecgfm.errors import ECGError, ValidationError
from ecgfm.leads import DERIVABLE_FROM_I_II, canonical_leads
from ecgfm.models.heads import HeadSpec, predict_from_logits
from ecgfm.preprocess.pipeline import Pipeline
from ecgfm.preprocess.steps import CropOrPad, Normalize, Resample, SelectLeads
from ecgfm.record import ECG

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONFIG_FILE", "CARD_FILE", "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "ContractError",
    "InputContract", "InputFailure", "Model", "ModelCard", "load_model", "render_card",
    "save_model",
]

FORMAT = "ecgfm-model"  # the "format" field of config.json
FORMAT_VERSION = 1  # bumped when config.json's layout changes; load_model reads up to this
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "card.md"
UNITS = ("z-score", "minmax", "mV")
AGGREGATES = ("max", "mean")

PathLike = str | os.PathLike[str]
Input = PathLike | ECG


class ContractError(ValidationError):
    """A record cannot satisfy a model's input contract. ``str()`` starts with the record's file."""


class InputFailure(NamedTuple):
    """One input that :meth:`Model.predict` skipped (with ``errors="skip"``)."""

    index: int  # position in the inputs
    source: str  # the file (or record id) it came from
    error: str  # the message of the error that refused it


# ---------------------------------------------------------------------------------------------
# the input contract and the card
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputContract:
    """What a model needs from a record, and what :meth:`Model.prepare` refuses.

    The model sees ``[len(leads), samples]`` float32 at ``fs`` Hz in ``units`` after the
    pipeline. A raw record is refused (:class:`ContractError`) when it is shorter than
    ``min_seconds`` before padding, when more than ``max_missing_leads`` of ``leads`` are absent
    (not in the file and not derivable from I and II, or with no observed sample), when a lead
    of ``required_leads`` is absent, when a present lead has more than ``max_gap_fraction`` of
    its samples unobserved (NaN gaps), or when the pipeline's output is not finite.
    """

    fs: float  # sampling rate the model sees, Hz
    leads: tuple[str, ...]  # the lead axis, in order (canonical names)
    samples: int | None = None  # samples per lead the model sees; None = any length
    units: str = "z-score"  # "z-score" (per-lead standardised), "minmax" or "mV"
    min_seconds: float = 0.0  # shortest raw record accepted, s (shorter ones would be mostly padding)
    lead_mask: bool = True  # the model accepts absent leads as masked (zeroed) rows
    max_missing_leads: int = 0  # how many of `leads` may be absent (0 when lead_mask is False)
    required_leads: tuple[str, ...] = ()  # leads that must be present even with lead masking
    max_gap_fraction: float = 0.0  # share of unobserved (NaN/gap) samples allowed in a present lead
    window_samples: int | None = None  # the encoder sees windows this long, cut from the input (None: the whole input)
    window_stride: int | None = None  # samples between window starts (default window_samples); the last window ends at the input's end
    aggregate: str = "max"  # how window outputs combine: "max" or "mean" of the logits

    def __post_init__(self) -> None:
        fs = float(self.fs)
        if not (math.isfinite(fs) and fs > 0):
            raise ValidationError(f"input contract: fs must be a positive number, got {self.fs!r}")
        object.__setattr__(self, "fs", fs)
        if isinstance(self.leads, str) or not self.leads:
            raise ValidationError(f"input contract: leads must be a non-empty list, got {self.leads!r}")
        object.__setattr__(self, "leads", canonical_leads(self.leads, source="input contract"))
        object.__setattr__(self, "required_leads",
                           canonical_leads(self.required_leads, source="input contract"))
        unknown = [lead for lead in self.required_leads if lead not in self.leads]
        if unknown:
            raise ValidationError(f"input contract: required lead(s) {', '.join(unknown)} are not in leads")
        if self.samples is not None:
            if isinstance(self.samples, bool) or int(self.samples) != self.samples or self.samples < 1:
                raise ValidationError(f"input contract: samples must be a positive integer, got {self.samples!r}")
            object.__setattr__(self, "samples", int(self.samples))
        if self.units not in UNITS:
            raise ValidationError(f"input contract: units must be one of {', '.join(UNITS)}, got {self.units!r}")
        if not (float(self.min_seconds) >= 0):
            raise ValidationError(f"input contract: min_seconds must be >= 0, got {self.min_seconds!r}")
        object.__setattr__(self, "min_seconds", float(self.min_seconds))
        object.__setattr__(self, "lead_mask", bool(self.lead_mask))
        n_missing = int(self.max_missing_leads)
        if n_missing < 0 or n_missing >= len(self.leads):
            raise ValidationError(
                f"input contract: max_missing_leads must be 0-{len(self.leads) - 1}, got {self.max_missing_leads!r}"
            )
        if n_missing and not self.lead_mask:
            raise ValidationError("input contract: max_missing_leads > 0 needs lead_mask support")
        object.__setattr__(self, "max_missing_leads", n_missing)
        if not 0.0 <= float(self.max_gap_fraction) < 1.0:
            raise ValidationError(
                f"input contract: max_gap_fraction must be in [0, 1), got {self.max_gap_fraction!r}"
            )
        object.__setattr__(self, "max_gap_fraction", float(self.max_gap_fraction))
        if self.aggregate not in AGGREGATES:
            raise ValidationError(f"input contract: aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if self.window_samples is None:
            if self.window_stride is not None:
                raise ValidationError("input contract: window_stride needs window_samples")
            return
        for key in ("window_samples", "window_stride"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValidationError(f"input contract: {key} must be a positive integer, got {value!r}")
        window = int(self.window_samples)
        if self.samples is not None and window > self.samples:
            raise ValidationError(f"input contract: window_samples ({window}) exceeds samples ({self.samples})")
        object.__setattr__(self, "window_samples", window)
        object.__setattr__(self, "window_stride", int(self.window_stride or window))

    @property
    def seconds(self) -> float | None:
        """Window length in seconds (``samples / fs``), or None for any length."""
        return None if self.samples is None else self.samples / self.fs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the ``"input"`` field of ``config.json`` (with ``seconds``)."""
        out = dataclasses.asdict(self)
        out["leads"] = list(self.leads)
        out["required_leads"] = list(self.required_leads)
        out["seconds"] = self.seconds
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputContract:
        """Rebuild from :meth:`to_dict`'s output (``seconds`` is derived, and checked)."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"input contract: expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"seconds"})
        if unknown:
            raise ValidationError(f"input contract: unknown field(s) {', '.join(unknown)}")
        missing = sorted({"fs", "leads"} - set(data))
        if missing:
            raise ValidationError(f"input contract: missing field(s) {', '.join(missing)}")
        contract = cls(**{k: v for k, v in data.items() if k in known})
        seconds = data.get("seconds")
        if seconds is not None and contract.seconds is not None and abs(seconds - contract.seconds) > 1e-6:
            raise ValidationError(
                f"input contract: seconds={seconds} disagrees with samples/fs={contract.seconds}"
            )
        return contract

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, **overrides: Any) -> InputContract:
        """The contract a pipeline implies: its last lead selection, rate, crop and normalisation.

        ``min_seconds`` defaults to the crop's length (a record must fill the window), and
        ``max_missing_leads`` to 0. Anything the pipeline does not fix (no ``select`` step: the
        lead order; no ``resample``: the rate) must be passed in ``overrides``.
        """
        leads: tuple[str, ...] | None = None
        fs: float | None = None
        samples: int | None = None
        seconds: float | None = None
        units = "mV"
        for step in pipeline.steps:
            if isinstance(step, SelectLeads):
                leads = step.leads
            elif isinstance(step, Resample):
                fs = step.fs
                samples = None if seconds is None else round(seconds * fs)
            elif isinstance(step, CropOrPad):
                seconds = step.seconds
                samples = None if fs is None else round(seconds * fs)
            elif isinstance(step, Normalize):
                units = {"zscore": "z-score", "minmax": "minmax", "none": units}[step.method]
        values: dict[str, Any] = {"leads": leads, "fs": fs, "samples": samples, "units": units,
                                  "min_seconds": seconds or 0.0}
        if "fs" in overrides and samples is None and seconds is not None:
            values["samples"] = round(seconds * float(overrides["fs"]))
        values.update(overrides)
        for key in ("leads", "fs"):
            if values[key] is None:
                raise ValidationError(
                    f"input contract: the pipeline {pipeline.to_spec()!r} does not fix {key!r}; "
                    f"pass it (input={{'{key}': ...}})"
                )
        return cls(**values)


@dataclass(frozen=True)
class ModelCard:
    """The human part of a model card (``card.md`` adds labels, contract and preprocessing)."""

    name: str = "ecgfm model"  # title of the card
    summary: str = ""  # one paragraph: what the model does
    training_data: str = ""  # datasets, splits, record counts, label sources
    intended_use: str = ""  # who should use it for what
    limitations: str = ""  # known failure modes, populations and devices not covered
    license: str = ""  # licence of the weights
    citation: str = ""  # how to cite (datasets and method)
    authors: str = ""  # who trained it

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelCard:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"model card: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**{k: str(v) for k, v in data.items()})


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def save_model(
    directory: PathLike,
    encoder: torch.nn.Module,
    *,
    head: HeadSpec | None,
    pipeline: Pipeline,
    labels: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    input: InputContract | Mapping[str, Any] | None = None,
    card: ModelCard | Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, float] | Sequence[float] | None = None,
    operating_points: Mapping[str, Mapping[str, float]] | None = None,
    encoder_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``encoder`` with its head, labels, pipeline and contract as a portable directory.

    Args:
        directory: the model directory (created; must not hold a model unless ``overwrite``).
        encoder: a registry encoder (:mod:`ecgfm.models.registry`) with ``num_outputs`` equal to
            ``head.num_outputs`` (0 with ``head=None``: an embedding-only model).
        head: what the outputs mean (:class:`~ecgfm.models.heads.HeadSpec`).
        pipeline: the preprocessing the model was trained with; stored with its hash.
        labels: one id per output (catalogue ids where they exist: ``NORM``, ``AFIB`` ...);
            default ``head.label_ids``. Catalogue ids get their catalogue names in the card.
        label_names: display names; default: catalogue names, else the ids.
        input: the :class:`InputContract` (or a dict of overrides of the contract the pipeline
            implies, e.g. ``{"min_seconds": 5, "max_missing_leads": 6}``). Default: derived
            from the pipeline, with ``lead_mask`` from the encoder's ``supports_lead_mask``.
        card: :class:`ModelCard` or its fields (training data, intended use, limitations ...).
        metrics: evaluation results, e.g. ``{"test": {"macro_auroc": 0.91}, "per_label":
            {"NORM": {"auroc": 0.94}}}``.
        training: a JSON-able summary of the training run (config, epochs, records).
        thresholds: decision threshold per label (dict, or one number per output).
        operating_points: ``{label: {"borderline": p, "positive": p}}`` probability cut-offs
            of the calls a health profile makes (:meth:`Model.operating_points`).
        encoder_name: the registry name; default: the encoder's own ``name`` attribute.
        overwrite: replace an existing model in ``directory``.

    Returns:
        The directory. It holds exactly ``model.safetensors``, ``config.json`` and ``card.md``.
    """
    directory = Path(directory)
    name = _encoder_name(encoder, encoder_name)
    encoder_config = _encoder_config(encoder)
    n_outputs = int(getattr(encoder, "num_outputs", encoder_config.get("num_outputs", 0)))
    if head is None:
        if n_outputs:
            raise ValidationError(
                f"save_model: the encoder has a head of {n_outputs} outputs; describe it with head=HeadSpec(...)"
            )
        if labels:
            raise ValidationError("save_model: labels given for a model without a head")
    else:
        if head.num_outputs != n_outputs:
            raise ValidationError(
                f"save_model: head has {head.num_outputs} outputs but the encoder's head has "
                f"{n_outputs} (use encoder.reset_head({head.num_outputs}))"
            )
        if labels is not None:
            labels = tuple(str(x) for x in labels)
            if head.label_ids and tuple(head.label_ids) != labels:
                raise ValidationError("save_model: labels differ from head.label_ids")
            head = dataclasses.replace(head, label_ids=labels)
        if label_names is not None:
            head = dataclasses.replace(head, label_names=tuple(str(x) for x in label_names))
        if not head.label_names and head.label_ids:
            head = dataclasses.replace(head, label_names=_catalogue_names(head.label_ids))
    if not isinstance(pipeline, Pipeline):
        raise ValidationError(f"save_model: pipeline must be an ecgfm Pipeline, got {type(pipeline).__name__}")
    supports_mask = bool(getattr(encoder, "supports_lead_mask", False))
    if isinstance(input, InputContract):
        contract = input
    else:
        overrides = dict(input or {})
        overrides.setdefault("lead_mask", supports_mask)
        contract = InputContract.from_pipeline(pipeline, **overrides)
    if contract.lead_mask and not supports_mask:
        raise ValidationError(f"save_model: the contract allows masked leads but encoder {name!r} has no lead-mask support")
    in_leads = getattr(encoder, "in_leads", None)
    if in_leads is not None and int(in_leads) != len(contract.leads):
        raise ValidationError(
            f"save_model: encoder {name!r} takes {in_leads} leads but the contract lists "
            f"{len(contract.leads)} ({', '.join(contract.leads)})"
        )
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "encoder": name,
        "encoder_config": encoder_config,
        "head": None if head is None else {k: v for k, v in head.to_dict().items()
                                           if k not in ("label_ids", "label_names")},
        "labels": [] if head is None else list(head.columns),
        "label_names": [] if head is None else list(head.names),
        "pipeline": pipeline.to_dict(),
        "pipeline_hash": pipeline.hash,
        "input": contract.to_dict(),
        "thresholds": _thresholds(thresholds, head),
        "operating_points": _operating_points(operating_points, head),
        "metrics": _jsonable(dict(metrics or {})),
        "training": _jsonable(dict(training or {})),
        "card": (card if isinstance(card, ModelCard) else ModelCard.from_dict(card)).to_dict(),
        "software": _software(),
    }
    tensors, aliases = _tensors_for_safetensors(encoder.state_dict())
    config["weights"] = {"file": WEIGHTS_FILE, "aliases": aliases, "sha256": None}

    directory.mkdir(parents=True, exist_ok=True)
    existing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE) if (directory / f).exists()]
    if existing and not overwrite:
        raise ValidationError(
            f"{directory}: already holds a model ({', '.join(existing)}); pass overwrite=True to replace it"
        )
    from safetensors.torch import save_file

    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "encoder": name})
    config["weights"]["sha256"] = _sha256(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; weights are as readable as the config
    os.replace(tmp, directory / WEIGHTS_FILE)
    _write_text(directory / CONFIG_FILE, json.dumps(config, indent=2, allow_nan=False) + "\n")
    _write_text(directory / CARD_FILE, render_card(config))
    return directory


def _encoder_name(encoder: torch.nn.Module, explicit: str | None) -> str:
    name = explicit or getattr(encoder, "encoder_name", None) or getattr(encoder, "name", None)
    if not name:
        raise ValidationError(
            f"save_model: cannot tell the registry name of {type(encoder).__name__}; pass encoder_name="
        )
    try:
        from ecgfm.models.registry import list_encoders
    except ImportError:  # pragma: no cover - the registry ships with ecgfm.models
        return str(name)
    known = list_encoders()
    if name not in known:
        raise ValidationError(
            f"save_model: {name!r} is not a registered encoder (known: {', '.join(known)})"
        )
    return str(name)


def _encoder_config(encoder: torch.nn.Module) -> dict[str, Any]:
    config = getattr(encoder, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise ValidationError(
            f"save_model: {type(encoder).__name__} has no config dataclass (.config); only registry "
            "encoders can be saved portably"
        )
    return _jsonable(dataclasses.asdict(config))  # type: ignore[arg-type]


def _tensors_for_safetensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies of the state dict; keys that alias an earlier tensor (tied weights)
    are left out and recorded as ``alias -> kept key`` (safetensors refuses shared storage)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in state.items():
        value = value.detach()
        ident = None
        if value.numel():
            ident = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(),
                     tuple(value.shape), value.stride(), value.dtype)
            if ident in seen:
                aliases[key] = seen[ident]
                continue
            seen[ident] = key
        # clone: tensors that only partly overlap another (views) get storage of their own
        tensors[key] = value.to("cpu").contiguous().clone()
    return tensors, aliases


def _thresholds(thresholds: Mapping[str, float] | Sequence[float] | None, head: HeadSpec | None) -> dict[str, float] | None:
    if thresholds is None:
        return None
    if head is None:
        raise ValidationError("save_model: thresholds given for a model without a head")
    columns = head.columns
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(columns))
        if unknown:
            raise ValidationError(f"save_model: thresholds for unknown label(s) {', '.join(unknown)}")
        out = {str(k): float(v) for k, v in thresholds.items()}
    else:
        values = list(thresholds)
        if len(values) != len(columns):
            raise ValidationError(f"save_model: {len(values)} thresholds for {len(columns)} outputs")
        out = {c: float(v) for c, v in zip(columns, values)}
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise ValidationError(f"save_model: thresholds must be finite, got {bad}")
    return out


def _operating_points(points: Mapping[str, Mapping[str, float]] | None,
                      head: HeadSpec | None) -> dict[str, dict[str, float]] | None:
    if points is None:
        return None
    known = set(head.columns) if head is not None else set()
    out: dict[str, dict[str, float]] = {}
    for label, point in points.items():
        if label not in known:
            raise ValidationError(f"save_model: operating point for unknown label {label!r}")
        low, high = float(point["borderline"]), float(point["positive"])
        if not 0.0 <= low <= high <= 1.0:
            raise ValidationError(f"save_model: operating point of {label!r} needs 0 <= borderline "
                                  f"<= positive <= 1, got {low:g}, {high:g}")
        out[str(label)] = {"borderline": low, "positive": high}
    return out


def _catalogue_names(ids: Sequence[str]) -> tuple[str, ...]:
    try:
        from ecgfm.labels import load_catalogue

        catalogue = load_catalogue()
    except ECGError:  # pragma: no cover - the catalogue ships with ecgfm
        return tuple(ids)
    return tuple(catalogue[i].name if i in catalogue else i for i in ids)


def _software() -> dict[str, str]:
    import ecgfm

    return {"ecgfm": ecgfm.__version__, "torch": torch.__version__.split("+")[0]}


def _jsonable(value: Any) -> Any:
    """JSON-ready copy: tuples to lists, numpy/torch scalars to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, (np.generic,)):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValidationError(f"value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------
def render_card(config: Mapping[str, Any]) -> str:
    """The model card (Markdown) for a ``config.json`` dict: the card fields, the labels table
    (with catalogue names, categories and SNOMED CT codes for catalogue ids), thresholds and
    per-label metrics, the metrics, the input contract, the preprocessing pipeline (spec, hash
    and JSON), the architecture and how to load it."""
    card = ModelCard.from_dict(config.get("card"))
    contract = config["input"]
    pipeline = Pipeline.from_dict(config["pipeline"])
    head = config.get("head")
    lines = [f"# {card.name}", ""]
    if card.summary:
        lines += [card.summary.strip(), ""]
    out_kind = "no head (embeddings only)" if head is None else (
        f"{head['type']} head, {head['num_outputs']} output(s)")
    lines += [f"- Architecture: `{config['encoder']}` encoder, {out_kind}",
              f"- Format: `{config['format']}` version {config['version']} (safetensors weights, JSON config; no pickle)"]
    software = config.get("software") or {}
    if software:
        lines.append("- Saved with: " + ", ".join(f"{k} {v}" for k, v in software.items()))
    lines.append("")
    for title, text in (("Intended use", card.intended_use), ("Limitations", card.limitations),
                        ("Training data", card.training_data)):
        lines += [f"## {title}", "", text.strip() or "_Not stated._", ""]
    training = config.get("training") or {}
    if training:
        lines += ["### Training run", "", "```json", json.dumps(training, indent=2), "```", ""]

    if head is not None:
        lines += _labels_table(config)
    metrics = {k: v for k, v in (config.get("metrics") or {}).items() if k != "per_label"}
    lines += ["## Metrics", ""]
    flat = list(_flatten(metrics))
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in flat]
    else:
        lines.append("_No metrics recorded._")
    lines.append("")

    lines += ["## Input contract", "",
              "A record is read with `ecgfm.read` (any supported format), checked against this "
              "contract, then preprocessed by the pipeline below. Records that cannot satisfy it "
              "are refused with an error naming the file.", "",
              "| field | value |", "|---|---|",
              f"| sampling rate | {contract['fs']:g} Hz |",
              f"| window | {_window(contract)} |",
              f"| leads (in order) | {', '.join(contract['leads'])} |",
              f"| units after preprocessing | {contract['units']} |",
              f"| shortest record accepted | {contract['min_seconds']:g} s (before padding) |",
              f"| absent leads | {_absent_rule(contract)} |",
              f"| gaps (NaN) in a present lead | at most {contract['max_gap_fraction']:.0%} of its samples |",
              ""]
    lines += ["## Preprocessing", "",
              "Applied to every record, in this order (the exact JSON is `pipeline` in "
              f"`config.json`; sha256 `{config['pipeline_hash']}`):", "",
              "| # | step | parameters |", "|---|---|---|"]
    for i, step in enumerate(pipeline.steps):
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in step.params().items())
        lines.append(f"| {i + 1} | `{step.name}` | {params} |")
    lines += ["", "As a spec (`ecgfm.Pipeline.parse` reads it back):", "",
              f"    {pipeline.to_spec()}", ""]
    lines += ["## Use", "", "```python", "import ecgfm", "",
              'model = ecgfm.load_model("path/to/this/folder")',
              'probs = model.predict(["record.hea", "ecg.dcm"])      # numpy [N, C]',
              'table = model.predict_frame(["record.hea"])           # one column per label']
    if head is not None and head["type"] in ("cox", "discrete_hazard"):
        extra = head.get("extra") or {}
        horizons = ", ".join(f"{h:g}" for h in extra.get("horizons") or []) or "1, 5"
        unit = f" ({extra['time_unit']})" if extra.get("time_unit") else ""
        lines += [f'surv = model.survival(["record.hea"], [{horizons}])   # S(t), numpy [N, T]{unit}',
                  f'risk = model.risk(["record.hea"], [{horizons}])       # P(event by t) = 1 - S(t)']
    lines += ["```", ""]
    if card.license or card.citation or card.authors:
        lines += ["## License and citation", ""]
        if card.authors:
            lines += [f"Authors: {card.authors}", ""]
        if card.license:
            lines += [f"License: {card.license}", ""]
        if card.citation:
            lines += [card.citation.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _labels_table(config: Mapping[str, Any]) -> list[str]:
    labels = config.get("labels") or []
    names = config.get("label_names") or labels
    thresholds = config.get("thresholds") or {}
    per_label = (config.get("metrics") or {}).get("per_label") or {}
    metric_names = sorted({m for v in per_label.values() if isinstance(v, Mapping) for m in v})
    try:
        from ecgfm.labels import load_catalogue

        catalogue = load_catalogue()
    except ECGError:  # pragma: no cover
        catalogue = None
    head = config["head"]
    lines = ["## Labels", "",
             f"Outputs are {_output_meaning(head['type'])}. Catalogue ids refer to the ecgfm "
             "conditions catalogue (`ecgfm.labels.load_catalogue()`).", ""]
    header = ["#", "id", "name", "catalogue", "SNOMED CT"]
    if thresholds:
        header.append("threshold")
    header += metric_names
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (label, name) in enumerate(zip(labels, names)):
        entry = catalogue[label] if catalogue is not None and label in catalogue else None
        row = [str(i), f"`{label}`", name,
               f"{entry.name} ({entry.category})" if entry else "not a catalogue id",
               ", ".join(entry.snomed) if entry and entry.snomed else ""]
        if thresholds:
            row.append(_fmt(thresholds.get(label)) if label in thresholds else "")
        values = per_label.get(label) or {}
        row += [_fmt(values.get(m)) if m in values else "" for m in metric_names]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _output_meaning(kind: str) -> str:
    return {
        "multilabel": "independent probabilities (sigmoid), one per label",
        "multiclass": "class probabilities (softmax) that sum to 1",
        "regression": "predicted values (identity)",
        "binary": "one probability (sigmoid) of the label; for normal/abnormal (`NORM`) "
                  "P(abnormal) = 1 - P(normal)",
        "cox": "the log relative hazard of a Cox model (identity; higher = earlier event); "
               "`model.survival(files, times)` and `model.risk(files, horizons)` give S(t) and "
               "P(event by t) from the Breslow baseline hazard of the training set",
        "discrete_hazard": "the hazard of each time interval (sigmoid): P(event in the interval | "
                           "event-free at its start); `model.survival(files, times)` and "
                           "`model.risk(files, horizons)` give S(t) and P(event by t)",
    }[kind]


def _window(contract: Mapping[str, Any]) -> str:
    if contract.get("samples") is None:
        return "any length"
    return (f"{contract['samples']} samples ({contract['seconds']:g} s); longer records are "
            "cropped and shorter ones padded by the pipeline")


def _absent_rule(contract: Mapping[str, Any]) -> str:
    if not contract["lead_mask"] or not contract["max_missing_leads"]:
        return "refused: every lead must be present (III, aVR, aVL, aVF may be derived from I and II)"
    text = f"masked, up to {contract['max_missing_leads']} of {len(contract['leads'])}"
    if contract.get("required_leads"):
        text += f"; always required: {', '.join(contract['required_leads'])}"
    return text


def _fmt_param(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_model(path: PathLike | None = None, *, device: str | torch.device = "cpu") -> Model:
    """Load a portable model directory (never unpickles anything).

    Args:
        path: the directory (or its ``config.json`` / ``model.safetensors``); None: the default
            model shipped with ecgfm (:func:`ecgfm.models.default_model_path`).
        device: where the weights go (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

    Returns:
        A :class:`Model` in eval mode.

    Raises:
        ValidationError: unreadable or inconsistent ``config.json`` (naming the field), a weights
            file that does not match its config (checksum) or the encoder (naming the missing,
            unexpected or mis-shaped keys).
    """
    if path is None:
        from ecgfm.models import default_model_path

        path = default_model_path()
    root = Path(path)
    if root.is_file() and root.name in (CONFIG_FILE, WEIGHTS_FILE):
        root = root.parent
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise ValidationError(f"{root}: not a model directory (no {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError(f"{config_path}: cannot read the model config ({error})") from None
    _check_config(config, config_path)
    weights_path = root / config["weights"]["file"]
    if not weights_path.is_file():
        raise ValidationError(f"{root}: weights file {config['weights']['file']} is missing")
    expected = config["weights"].get("sha256")
    if expected and _sha256(weights_path) != expected:
        raise ValidationError(
            f"{weights_path}: checksum differs from the one in {CONFIG_FILE}; the weights and the "
            "config come from different saves"
        )
    where = f"{config_path}"
    try:
        pipeline = Pipeline.from_dict(config["pipeline"])
    except ValidationError as error:
        raise ValidationError(f"{where}: field 'pipeline': {error}") from None
    if pipeline.hash != config["pipeline_hash"]:
        raise ValidationError(
            f"{where}: the pipeline's hash {pipeline.hash[:12]}... differs from pipeline_hash "
            f"{str(config['pipeline_hash'])[:12]}... (the pipeline was edited, or this ecgfm "
            "version builds it differently)"
        )
    try:
        contract = InputContract.from_dict(config["input"])
        head = None if config["head"] is None else HeadSpec.from_dict(
            {**config["head"], "label_ids": config.get("labels") or (),
             "label_names": config.get("label_names") or ()})
        card = ModelCard.from_dict(config.get("card"))
    except ValidationError as error:
        raise ValidationError(f"{where}: {error}") from None

    from ecgfm.models.registry import create_encoder

    encoder_config = dict(config["encoder_config"])
    try:
        encoder = create_encoder(config["encoder"], **encoder_config)
    except ValidationError as error:
        raise ValidationError(f"{where}: field 'encoder_config': {error}") from None
    n_outputs = int(getattr(encoder, "num_outputs", 0))
    if (head.num_outputs if head else 0) != n_outputs:
        raise ValidationError(
            f"{where}: head has {head.num_outputs if head else 0} outputs but encoder_config builds {n_outputs}"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise ValidationError(f"{weights_path}: cannot read the weights ({error})") from None
    for alias, target in (config["weights"].get("aliases") or {}).items():
        if target not in state:
            raise ValidationError(f"{weights_path}: alias {alias!r} points to missing key {target!r}")
        state[alias] = state[target]
    _check_keys(encoder, state, weights_path, config["encoder"])
    encoder.load_state_dict(state, strict=True)
    encoder.to(device)
    encoder.eval()
    return Model(encoder, head=head, pipeline=pipeline, input=contract, card=card, config=config,
                 path=root, device=torch.device(device))


def _check_config(config: Any, where: Path) -> None:
    if not isinstance(config, dict):
        raise ValidationError(f"{where}: expected a JSON object")
    if config.get("format") != FORMAT:
        raise ValidationError(f"{where}: field 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ValidationError(
            f"{where}: field 'version' is {version!r}; this ecgfm reads versions 1-{FORMAT_VERSION}"
        )
    for key in ("encoder", "encoder_config", "head", "pipeline", "pipeline_hash", "input", "weights"):
        if key not in config:
            raise ValidationError(f"{where}: missing field {key!r}")
    if not isinstance(config["encoder_config"], dict):
        raise ValidationError(f"{where}: field 'encoder_config' must be an object")
    weights = config["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("file"), str) \
            or "/" in weights["file"] or "\\" in weights["file"] or weights["file"].startswith("."):
        raise ValidationError(f"{where}: field 'weights' must name a file inside the model directory")
    if not weights["file"].endswith(".safetensors"):
        raise ValidationError(f"{where}: weights must be a .safetensors file, got {weights['file']!r}")
    labels = config.get("labels") or []
    head = config["head"]
    if head is not None and labels and len(labels) != head.get("num_outputs"):
        raise ValidationError(
            f"{where}: {len(labels)} labels for a head of {head.get('num_outputs')} outputs"
        )


def _check_keys(encoder: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path, name: str) -> None:
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
        if shapes:
            parts.append(f"shape mismatch (file != encoder): {'; '.join(shapes[:5])}"
                         + (f" ... ({len(shapes)} tensors in all)" if len(shapes) > 5 else ""))
        raise ValidationError(f"{where}: weights do not match encoder {name!r}: " + "; ".join(parts))


# ---------------------------------------------------------------------------------------------
# the loaded model
# ---------------------------------------------------------------------------------------------
class Model:
    """A loaded portable model: encoder + head + pipeline + input contract + card.

    Attributes:
        encoder: the ``torch.nn.Module`` (eval mode) taking ``[B, L, T]`` and a lead mask.
        head: :class:`~ecgfm.models.heads.HeadSpec`, or None for an embedding-only model.
        pipeline: the :class:`~ecgfm.preprocess.Pipeline` applied to every record.
        input: the :class:`InputContract`.
        labels: one id per output (``head.columns``).
        label_names: one display name per output.
        thresholds: ``{label: threshold}`` or None.
        metrics, training: as saved.
        card: the :class:`ModelCard` fields; ``card_text`` is ``card.md``.
        config: the whole ``config.json``.
    """

    def __init__(self, encoder: torch.nn.Module, *, head: HeadSpec | None, pipeline: Pipeline,
                 input: InputContract, card: ModelCard | None = None,
                 config: Mapping[str, Any] | None = None, path: Path | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.encoder = encoder
        self.head = head
        self.pipeline = pipeline
        self.input = input
        self.card = card or ModelCard()
        self.config = dict(config or {})
        self.path = path
        self.device = torch.device(device)
        self.labels: tuple[str, ...] = head.columns if head is not None else ()
        self.label_names: tuple[str, ...] = head.names if head is not None else ()
        self.thresholds: dict[str, float] | None = self.config.get("thresholds")
        self.metrics: dict[str, Any] = dict(self.config.get("metrics") or {})
        self.training: dict[str, Any] = dict(self.config.get("training") or {})
        self._uses_mask = bool(getattr(encoder, "supports_lead_mask", False))

    def __repr__(self) -> str:
        kind = "embeddings" if self.head is None else f"{self.head.type}, {self.head.num_outputs} outputs"
        return (f"Model({self.config.get('encoder', type(self.encoder).__name__)!r}, {kind}, "
                f"input={self.input.fs:g} Hz x {len(self.input.leads)} leads"
                + (f" x {self.input.seconds:g} s" if self.input.seconds else "") + ")")

    @property
    def card_text(self) -> str:
        """The model card as Markdown (rendered from the config)."""
        return render_card(self.config)

    @property
    def num_features(self) -> int:
        """D, the width of :meth:`embed`'s vectors."""
        return int(self.encoder.num_features)  # type: ignore[arg-type]

    def to(self, device: str | torch.device) -> Model:
        """Move the encoder to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.encoder.to(self.device)
        return self

    # -- one record ---------------------------------------------------------------------------
    def prepare(self, ecg_or_path: Input) -> tuple[torch.Tensor, torch.Tensor]:
        """Read (if a path), check against the contract and preprocess one record.

        Returns:
            ``(signal, lead_mask)``: float32 ``[L, T]`` in the contract's units and bool ``[L]``
            (True = lead present), both on the CPU.

        Raises:
            ReadError: the file cannot be read (names the file).
            ContractError: the record cannot satisfy :attr:`input` (names the file and what
                was expected: the length, the leads, the gaps).
        """
        ecg = _as_ecg(ecg_or_path)
        name = ecg.name
        c = self.input
        need = c.min_seconds * ecg.fs
        if ecg.n_samples + 0.5 < need:
            raise ContractError(
                f"{name}: record is {ecg.duration:.3g} s long ({ecg.n_samples} samples at "
                f"{ecg.fs:g} Hz); this model needs at least {c.min_seconds:g} s "
                f"({math.ceil(need - 0.5)} samples) before padding"
            )
        # The raw record must provide the leads of the pipeline's first lead selection (the
        # contract's leads when the pipeline selects none). Absent ones become masked rows here,
        # so the rules below, not the pipeline's own "missing" setting, decide what is refused.
        first = next((s for s in self.pipeline.steps if isinstance(s, SelectLeads)), None)
        raw_leads = first.leads if first is not None else c.leads
        selected = ecg.select(raw_leads, derive=first.derive if first is not None else True,
                              missing="mask")
        seen = np.ones(len(raw_leads)) if selected.mask is None else selected.mask.mean(axis=1)
        observed = dict(zip(raw_leads, seen))
        absent = [lead for lead in c.leads if observed.get(lead, 0.0) == 0]
        if absent:
            _refuse_absent(name, ecg, c, absent)
        gappy = [(lead, observed[lead]) for lead in c.leads
                 if 0 < observed.get(lead, 0.0) < 1 - c.max_gap_fraction]
        if gappy:
            lead, f = gappy[0]
            raise ContractError(
                f"{name}: lead {lead} has {1 - f:.1%} of its samples unobserved (NaN or gaps)"
                + (f", and {len(gappy) - 1} more lead(s) too" if len(gappy) > 1 else "")
                + f"; this model accepts at most {c.max_gap_fraction:.0%} (interpolate or crop the gaps first)"
            )
        try:
            out = self.pipeline(selected)
        except ValidationError as error:
            message = str(error)
            raise ContractError(message if message.startswith(name) else f"{name}: {message}") from None
        if out.leads != c.leads or abs(out.fs - c.fs) > 1e-6 or (c.samples is not None and out.n_samples != c.samples):
            raise ContractError(
                f"{name}: the model's pipeline gives {out.n_leads} leads x {out.n_samples} samples "
                f"at {out.fs:g} Hz, but its contract says {len(c.leads)} x {c.samples or 'any'} at "
                f"{c.fs:g} Hz (the model's config is inconsistent)"
            )
        signal = out.signal
        if not np.isfinite(signal).all():
            lead = c.leads[int(np.argmin(np.isfinite(signal).all(axis=1)))]
            raise ContractError(f"{name}: preprocessing produced non-finite values in lead {lead}")
        present = np.ones(len(c.leads), bool) if out.mask is None else out.mask.any(axis=1)
        return torch.from_numpy(np.ascontiguousarray(signal)), torch.from_numpy(present)

    # -- operating points and per-label metrics ---------------------------------------------------
    def operating_points(self) -> dict[str, tuple[float, float]]:
        """``{label: (borderline, positive)}`` probability thresholds per output.

        A probability at or above ``positive`` is a positive call, at or above ``borderline`` a
        borderline one. From ``config.json``'s ``operating_points`` (chosen on validation data by
        whoever trained the model), else ``(threshold / 2, threshold)`` from ``thresholds``, else
        ``(0.25, 0.5)``.
        """
        saved = self.config.get("operating_points") or {}
        out: dict[str, tuple[float, float]] = {}
        for label in self.labels:
            if label in saved:
                point = saved[label]
                out[label] = (float(point["borderline"]), float(point["positive"]))
            elif self.thresholds and label in self.thresholds:
                t = float(self.thresholds[label])
                out[label] = (t / 2, t)
            else:
                out[label] = (0.25, 0.5)
        return out

    def label_metrics(self) -> dict[str, dict[str, Any]]:
        """Per-label evaluation figures saved with the model (``metrics.per_label``): e.g.
        ``{"AFIB": {"val_auroc": 0.99, "test_auroc": 0.98, "test_auroc_ci": [0.96, 0.99], ...}}``;
        empty when the model was saved without them."""
        per_label = self.metrics.get("per_label") or {}
        return {label: dict(per_label.get(label) or {}) for label in self.labels}

    # -- batches -------------------------------------------------------------------------------
    def inference_module(self, output: str = "logits") -> InferenceModule:
        """The encoder with the contract's windowing and aggregation, as one ``nn.Module``:
        ``(signal [B, L, T], lead_mask [B, L]) -> logits [B, C]`` (``output="features"``: pooled
        features ``[B, D]``; ``"both"``: the tuple from one pass). What :meth:`forward` runs, in a
        form that exports to ONNX."""
        return InferenceModule(self.encoder, self.input, uses_mask=self._uses_mask, output=output)

    def forward(self, signal: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, C]`` for prepared input ``[B, L, T]`` (and lead mask ``[B, L]``); with
        a windowed contract, the windows' logits combined by ``input.aggregate``."""
        signal = signal.to(self.device, torch.float32)
        mask = None if lead_mask is None else lead_mask.to(self.device)
        with torch.inference_mode():
            return self.inference_module()(signal, mask)

    def _features(self, signal: torch.Tensor, lead_mask: torch.Tensor | None) -> torch.Tensor:
        signal = signal.to(self.device, torch.float32)
        mask = None if lead_mask is None else lead_mask.to(self.device)
        with torch.inference_mode():
            return self.inference_module("features")(signal, mask)

    @overload
    def predict(self, inputs: Input | Sequence[Input], batch_size: int = ...,
                errors: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def predict(self, inputs: Input | Sequence[Input], batch_size: int = ...,
                errors: Literal["skip"] = ...) -> tuple[np.ndarray, list[InputFailure]]: ...

    def predict(self, inputs: Input | Sequence[Input], batch_size: int = 64,
                errors: str = "raise") -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        """Predictions for records or files, batched.

        Args:
            inputs: one path or :class:`~ecgfm.ECG`, or a list of them.
            batch_size: records per forward pass.
            errors: ``"raise"`` (default): the first record that cannot be read or cannot satisfy
                the contract raises its error (which names the file). ``"skip"``: its row is
                NaN and the call returns ``(predictions, failures)`` with one
                :class:`InputFailure` per skipped record.

        Returns:
            float32 ``[N, C]``: probabilities in [0, 1] (sigmoid per label for multilabel and
            binary heads, softmax rows for multiclass), values for regression heads, the log
            relative hazard ``[N, 1]`` for a ``cox`` head, the hazard of each interval for a
            ``discrete_hazard`` head (see :meth:`survival` and :meth:`risk` for absolute risk);
            with ``errors="skip"`` the tuple above.
        """
        if self.head is None:
            raise ValidationError(f"{self.path or 'model'}: has no head (an embedding model); use embed()")
        head = self.head

        def run(x: torch.Tensor, m: torch.Tensor) -> np.ndarray:
            return predict_from_logits(self.forward(x, m).float(), head).cpu().numpy()

        return self._map(inputs, batch_size, errors, head.num_outputs, run)

    def survival(self, inputs: Input | Sequence[Input], times: Sequence[float] | np.ndarray,
                 batch_size: int = 64, errors: str = "raise") -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        """P(event-free at each time) for records or files, from a survival head.

        Args:
            inputs: as :meth:`predict`.
            times: ``[T]`` times >= 0 in the head's unit (``head.extra["time_unit"]``), at most the
                largest training follow-up (``cox``) or the last interval edge (``discrete_hazard``).
            batch_size, errors: as :meth:`predict` (a skipped record's row is NaN).

        Returns:
            float64 ``[N, T]`` in [0, 1], non-increasing along ascending ``times``: for a ``cox``
            head ``exp(-H0(t) exp(r))`` with the Breslow baseline ``H0`` estimated on the training
            set; for a ``discrete_hazard`` head ``prod (1 - h_k)`` (exact at the interval edges,
            constant hazard rate within an interval). With ``errors="skip"`` the tuple
            ``(survival, failures)``.

        Raises:
            ValidationError: the model has no survival head (or a Cox head without baseline), or
                a time outside what the model covers.
        """
        from ecgfm.models.survival import survival_from_logits

        head = self._survival_head("survival")
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if t.ndim != 1 or not np.isfinite(t).all() or (t < 0).any():
            raise ValidationError(f"survival: times must be a 1-D list of finite numbers >= 0, got {times!r}")
        survival_from_logits(np.zeros((1, head.num_outputs)), head, t)  # refuse bad times before any work

        def run(x: torch.Tensor, m: torch.Tensor) -> np.ndarray:
            return survival_from_logits(self.forward(x, m).double().cpu().numpy(), head, t)

        return self._map(inputs, batch_size, errors, t.size, run, dtype=np.float64)

    def risk(self, inputs: Input | Sequence[Input], horizons: Sequence[float] | np.ndarray,
             batch_size: int = 64, errors: str = "raise") -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        """P(event by each horizon) ``[N, H]`` = ``1 - survival(inputs, horizons)`` (absolute risk).

        Same arguments and errors as :meth:`survival`.
        """
        result = self.survival(inputs, horizons, batch_size, errors)
        if errors == "skip":
            surv, failures = result
            return 1.0 - surv, failures
        return 1.0 - result

    def _survival_head(self, what: str) -> HeadSpec:
        if self.head is None or not self.head.is_survival:
            kind = "no head" if self.head is None else f"a {self.head.type} head"
            raise ValidationError(f"{self.path or 'model'}: has {kind}; {what}() needs a survival head "
                                  "(cox or discrete_hazard)")
        return self.head

    def embed(self, inputs: Input | Sequence[Input], batch_size: int = 64,
              errors: str = "raise") -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        """Pooled pre-logits features ``[N, D]`` float32 (what a linear probe is trained on).

        ``errors`` as in :meth:`predict`.
        """
        def run(x: torch.Tensor, m: torch.Tensor) -> np.ndarray:
            return self._features(x, m).float().cpu().numpy()

        return self._map(inputs, batch_size, errors, self.num_features, run)

    def predict_frame(self, inputs: Input | Sequence[Input], batch_size: int = 64,
                      errors: str = "raise") -> pd.DataFrame:
        """:meth:`predict` as a table: ``record_id``, ``source``, one column per label
        (:attr:`labels`), and with ``errors="skip"`` an ``error`` column (None where it worked)."""
        import pandas as pd

        items = _as_list(inputs)
        result = self.predict(items, batch_size, errors)  # type: ignore[call-overload]
        probs, failures = result if errors == "skip" else (result, [])
        frame = pd.DataFrame(probs, columns=list(self.labels))
        frame.insert(0, "source", [_source(x) for x in items])
        frame.insert(0, "record_id", [_record_id(x) for x in items])
        if errors == "skip":
            messages: list[str | None] = [None] * len(items)
            for failure in failures:
                messages[failure.index] = failure.error
            frame["error"] = messages
        return frame

    def _map(self, inputs: Input | Sequence[Input], batch_size: int, errors: str, width: int,
             run: Any, dtype: Any = np.float32) -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        if errors not in ("raise", "skip"):
            raise ValidationError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(inputs)
        out = np.full((len(items), width), np.nan, dtype)
        failures: list[InputFailure] = []
        for start in range(0, len(items), batch_size):
            prepared: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
            for i in range(start, min(start + batch_size, len(items))):
                try:
                    x, m = self.prepare(items[i])
                except ECGError as error:
                    if errors == "raise":
                        raise
                    failures.append(InputFailure(i, _source(items[i]), str(error)))
                    continue
                prepared.setdefault(x.shape[-1], []).append((i, x, m))
            for group in prepared.values():  # one forward pass per window length
                rows = [i for i, _, _ in group]
                x = torch.stack([x for _, x, _ in group])
                m = torch.stack([m for _, _, m in group])
                out[rows] = run(x, m)
        return (out, failures) if errors == "skip" else out


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start samples of windows of ``window`` every ``stride`` samples over ``length``; the last
    window ends at ``length`` (so the tail is covered). One window at 0 when ``length <= window``."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def run_windows(fn: Any, signal: torch.Tensor, lead_mask: torch.Tensor | None, window: int | None,
                stride: int | None, aggregate: str | None = "max") -> torch.Tensor:
    """``fn`` over sliding windows of ``signal``, combined per record.

    Args:
        fn: ``(x [N, L, window], mask [N, L] or None) -> [N, C]``.
        signal: ``[B, L, T]``.
        lead_mask: ``[B, L]`` or None.
        window, stride: in samples (``window=None`` or ``T <= window``: one call on the whole input).
        aggregate: ``"max"`` or ``"mean"`` over the windows, or None for no aggregation.

    Returns:
        ``[B, C]``, or ``[B, W, C]`` with ``aggregate=None`` (``W = 1`` without windowing).
    """
    b, n_leads, t = signal.shape
    if window is None or t <= window:
        out = fn(signal, lead_mask)
        return out if aggregate is not None else out[:, None]
    starts = window_starts(t, window, stride or window)
    w = len(starts)
    x = torch.stack([signal[..., s:s + window] for s in starts], dim=1).reshape(b * w, n_leads, window)
    mask = None if lead_mask is None else lead_mask.repeat_interleave(w, dim=0)
    out = fn(x, mask).reshape(b, w, -1)
    if aggregate is None:
        return out
    return out.amax(dim=1) if aggregate == "max" else out.mean(dim=1)


class InferenceModule(torch.nn.Module):
    """An encoder plus its contract's windowing (see :meth:`Model.inference_module`).

    ``output="logits"``: ``[B, C]`` combined by the contract's ``aggregate``;
    ``"features"``: pooled pre-logits ``[B, D]`` averaged over windows; ``"both"``: the tuple,
    from one encoder pass.
    """

    def __init__(self, encoder: torch.nn.Module, contract: InputContract, *, uses_mask: bool,
                 output: str = "logits") -> None:
        super().__init__()
        if output not in ("logits", "features", "both"):
            raise ValidationError(f"output must be 'logits', 'features' or 'both', got {output!r}")
        self.encoder = encoder
        self.window = contract.window_samples
        self.stride = contract.window_stride
        self.aggregate = contract.aggregate
        self.uses_mask = uses_mask
        self.output = output

    def _one(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask = mask if self.uses_mask else None
        if self.output == "logits":
            return self.encoder(x, mask) if mask is not None else self.encoder(x)
        pooled = self.encoder.forward_head(self.encoder.forward_features(x, mask), pre_logits=True)
        if self.output == "features":
            return pooled
        if int(self.encoder.num_outputs) == 0:
            return torch.cat([pooled, pooled], dim=1)
        logits = self.encoder.head(self.encoder.head_drop(pooled))  # Encoder.forward_head after pooling
        return torch.cat([logits, pooled], dim=1)

    def forward(self, signal: torch.Tensor, lead_mask: torch.Tensor | None = None) -> Any:
        if self.output == "logits":
            return run_windows(self._one, signal, lead_mask, self.window, self.stride, self.aggregate)
        if self.output == "features":
            return run_windows(self._one, signal, lead_mask, self.window, self.stride, "mean")
        out = run_windows(self._one, signal, lead_mask, self.window, self.stride, None)  # [B, W, C + D]
        n = int(self.encoder.num_outputs) or int(self.encoder.num_features)
        logits, features = out[..., :n], out[..., n:]
        logits = logits.amax(dim=1) if self.aggregate == "max" else logits.mean(dim=1)
        return logits, features.mean(dim=1)


def _refuse_absent(name: str, ecg: ECG, c: InputContract, absent: list[str]) -> None:
    has = ", ".join(ecg.leads)
    derivable = [lead for lead in absent if lead in DERIVABLE_FROM_I_II]
    hint = "; III, aVR, aVL, aVF are derived only when I and II are present" if derivable else ""
    if not c.lead_mask:
        raise ContractError(
            f"{name}: lacks lead(s) {', '.join(absent)} (has {has}); this model cannot mask absent "
            f"leads and needs all of {', '.join(c.leads)}{hint}"
        )
    required = [lead for lead in absent if lead in c.required_leads]
    if required:
        raise ContractError(
            f"{name}: lacks required lead(s) {', '.join(required)} (has {has}){hint}"
        )
    if len(absent) > c.max_missing_leads:
        raise ContractError(
            f"{name}: lacks {len(absent)} of the model's {len(c.leads)} leads ({', '.join(absent)}; "
            f"has {has}); this model accepts at most {c.max_missing_leads} absent lead(s){hint}"
        )


def _as_ecg(item: Input) -> ECG:
    if isinstance(item, ECG):
        return item
    if isinstance(item, (str, os.PathLike)):
        import ecgfm

        return ecgfm.read(item)
    raise ValidationError(f"expected a file path or an ecgfm.ECG, got {type(item).__name__}")


def _as_list(inputs: Input | Sequence[Input]) -> list[Input]:
    if isinstance(inputs, (str, os.PathLike, ECG)):
        return [inputs]
    if isinstance(inputs, Iterable):
        return list(inputs)
    raise ValidationError(f"expected a path, an ECG or a list of them, got {type(inputs).__name__}")


def _source(item: Input) -> str:
    if isinstance(item, ECG):
        return item.meta.source_path or item.meta.record_id or ""
    return os.fspath(item)


def _record_id(item: Input) -> str:
    if isinstance(item, ECG):
        return item.meta.record_id or (Path(item.meta.source_path).stem if item.meta.source_path else "")
    return Path(os.fspath(item)).stem
