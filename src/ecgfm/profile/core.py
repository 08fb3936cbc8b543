"""The health profile of one ECG: what it is, whether it can be read, what the model finds.

:func:`profile_many` is the one code path: read each source, check its quality and the model's
input contract, run the model on the fit records a batch at a time, then per record rank and
call the conditions, measure intervals and axes, and explain the top findings. :func:`build_profile`
is the same for one source.

A record is *refused* (``status == "refused"``, with reasons and no conditions) when a quality
check that blocks interpretation fires (too short, flat lead, amplitude off by a unit) or when
it cannot satisfy the model's input contract (:class:`~ecgfm.models.portable.ContractError`:
too short for the window, missing leads, NaN gaps). A file that cannot be read at all is not a
profile: it goes to ``on_error`` (or raises).

torch is imported when a profile is built, not when this module is imported.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ECGError, ValidationError
from ecgfm.quality import QualityFlag, QualityReport, check_quality
from ecgfm.record import ECG

if TYPE_CHECKING:
    import torch

    from ecgfm.models.portable import Model
    from ecgfm.profile.saliency import Saliency

SCHEMA_VERSION = 1  # bumped when Profile.to_dict()'s layout changes (see docs/profile.md)
CALLS = ("positive", "borderline", "negative")
SUMMARY = "summary"  # group of prefixed benchmark-group outputs ("superdiagnostic:MI")
OTHER = "other"  # group of outputs that are not catalogue ids
#: Display titles of the groups, in report order: benchmark summaries first, then the
#: catalogue's categories, then anything else.
GROUP_TITLES: dict[str, str] = {
    SUMMARY: "Summary (benchmark groups)",
    "rhythm": "Rhythm",
    "conduction": "Conduction",
    "axis": "Axis",
    "hypertrophy": "Hypertrophy / enlargement",
    "ischaemia": "Ischaemia / infarction",
    "repolarisation": "Repolarisation / ST-T",
    "morphology": "Morphology",
    "pacing": "Pacing",
    "measurement": "Measurement-based",
    "systemic": "Systemic / non-cardiac",
    OTHER: "Other outputs",
}

Source = str | os.PathLike[str] | ECG
ErrorCallback = Callable[[str, Exception], None]


# ---------------------------------------------------------------------------------------------
# the parts of a profile
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordInfo:
    """What the profiled record is (no samples)."""

    record_id: str  # the file's record id, else the file name without extension
    source: str | None  # the file it was read from
    format: str | None  # the reader that read it ("wfdb", "dicom", ...)
    fs: float  # sampling rate, Hz
    leads: tuple[str, ...]  # canonical lead names, in the file's order
    n_samples: int  # samples per lead
    duration_s: float  # seconds
    age: float | None = None  # years, when the file says
    sex: str | None = None  # "M" / "F", when the file says
    acquired: str | None = None  # acquisition time (ISO 8601), when the file says

    @classmethod
    def of(cls, ecg: ECG, source: str | None = None) -> RecordInfo:
        meta = ecg.meta
        source = source or meta.source_path
        record_id = meta.record_id or (Path(source).stem if source else "record")
        return cls(record_id=str(record_id), source=source, format=meta.source_format,
                   fs=float(ecg.fs), leads=tuple(ecg.leads), n_samples=int(ecg.n_samples),
                   duration_s=float(ecg.duration), age=meta.age, sex=meta.sex,
                   acquired=meta.acquired.isoformat() if meta.acquired is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "source": self.source, "format": self.format,
                "fs": self.fs, "leads": list(self.leads), "n_samples": self.n_samples,
                "duration_s": self.duration_s, "age": self.age, "sex": self.sex,
                "acquired": self.acquired}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordInfo:
        return cls(**{**data, "leads": tuple(data["leads"])})


@dataclass(frozen=True)
class Reason:
    """Why a record was refused."""

    code: str  # a quality code ("flat_lead", "too_short" ...) or "contract"
    message: str  # a sentence for people
    lead: str | None = None  # the lead concerned, if one

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "lead": self.lead, "message": self.message}


@dataclass(frozen=True)
class ConditionResult:
    """One model output, as the profile reports it."""

    rank: int  # 1 = most probable output of the model
    id: str  # the model's label id ("AFIB", "superdiagnostic:MI")
    name: str  # display name
    group: str  # a key of GROUP_TITLES
    probability: float  # the model's probability, 0-1
    call: str  # "positive", "borderline" or "negative"
    borderline_at: float  # probability from which the call is borderline
    positive_at: float  # probability from which the call is positive
    metrics: Mapping[str, Any] = field(default_factory=dict)  # the label's validation metrics

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "name": self.name, "group": self.group,
                "probability": _round(self.probability), "call": self.call,
                "borderline_at": _round(self.borderline_at), "positive_at": _round(self.positive_at),
                "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionResult:
        return cls(**data)


@dataclass(frozen=True, eq=False)
class Profile:
    """The health profile of one ECG. :meth:`to_dict` is its JSON form (``docs/profile.md``).

    Attributes:
        record: what the record is.
        model: provenance of the model (name, encoder, pipeline hash, input contract).
        status: ``"ok"`` or ``"refused"``.
        reasons: why it was refused (empty when ok).
        quality: the signal-quality report (flags, blocking or not).
        conditions: every model output, most probable first (empty when refused).
        measurements: intervals and axes from :func:`ecgfm.delineate.measure` (a dict, NaN as
            None), or None when not measured (see ``notes``).
        saliency: integrated-gradients attributions of the top positive findings.
        risk: one entry per risk model given (time-to-event heads, :func:`risk_entry`): the
            absolute risk of its event by each horizon, or why it could not be given.
        notes: anything the reader should know (what was left out, and why).
        ecg: the record itself, for rendering; not part of the JSON.
    """

    record: RecordInfo
    model: Mapping[str, Any]
    status: str
    reasons: tuple[Reason, ...]
    quality: QualityReport
    conditions: tuple[ConditionResult, ...] = ()
    measurements: Mapping[str, Any] | None = None
    saliency: tuple[Saliency, ...] = ()
    risk: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    ecg: ECG | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True unless the record was refused."""
        return self.status == "ok"

    def called(self, call: str) -> list[ConditionResult]:
        """The conditions with ``call`` (``"positive"``, ``"borderline"``), most probable first."""
        if call not in CALLS:
            raise ValidationError(f"call must be one of {', '.join(CALLS)}, got {call!r}")
        return [c for c in self.conditions if c.call == call]

    @property
    def groups(self) -> list[tuple[str, str, list[ConditionResult]]]:
        """``(group, title, conditions)`` in report order, conditions most probable first;
        groups without conditions are left out."""
        by_group: dict[str, list[ConditionResult]] = {}
        for condition in self.conditions:
            by_group.setdefault(condition.group, []).append(condition)
        order = list(GROUP_TITLES) + sorted(set(by_group) - set(GROUP_TITLES))
        return [(g, GROUP_TITLES.get(g, g), by_group[g]) for g in order if g in by_group]

    def to_dict(self, *, saliency_values: bool = False) -> dict[str, Any]:
        """The JSON form (stable key order; floats rounded to 6 significant digits).

        Args:
            saliency_values: include the full ``[L, T]`` attribution arrays (large; the
                summaries per lead and per 0.1 s are always there).
        """
        return {
            "schema_version": self.schema_version,
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
            "record": self.record.to_dict(),
            "model": dict(self.model),
            "quality": {"ok": self.quality.ok,
                        "flags": [_flag_dict(f) for f in self.quality.flags]},
            "measurements": None if self.measurements is None else dict(self.measurements),
            "conditions": [c.to_dict() for c in self.conditions],
            "groups": [{"group": g, "title": title, "conditions": [c.id for c in items]}
                       for g, title, items in self.groups],
            "calls": {"positive": [c.id for c in self.called("positive")],
                      "borderline": [c.id for c in self.called("borderline")]},
            "saliency": [s.to_dict(values=saliency_values) for s in self.saliency],
            "risk": [dict(r) for r in self.risk],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild from :meth:`to_dict` (the record's samples are not in it: ``ecg`` is None)."""
        from ecgfm.profile.saliency import Saliency

        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValidationError(
                f"profile: schema_version {version!r}; this ecgfm reads version {SCHEMA_VERSION}"
            )
        record = RecordInfo.from_dict(data["record"])
        flags = tuple(QualityFlag(f["code"], f["lead"], f["reason"],
                                  math.nan if f["value"] is None else float(f["value"]),
                                  bool(f["blocking"])) for f in data["quality"]["flags"])
        return cls(
            record=record, model=dict(data["model"]), status=data["status"],
            reasons=tuple(Reason(r["code"], r["message"], r.get("lead")) for r in data["reasons"]),
            quality=QualityReport(record.source or record.record_id, flags),
            conditions=tuple(ConditionResult.from_dict(c) for c in data["conditions"]),
            measurements=data.get("measurements"),
            saliency=tuple(Saliency.from_dict(s) for s in data["saliency"]),
            risk=tuple(dict(r) for r in data.get("risk", ())),
            notes=tuple(data.get("notes", ())), schema_version=version,
        )


def _flag_dict(flag: QualityFlag) -> dict[str, Any]:
    out = flag.to_dict()
    if out["value"] is not None:
        out["value"] = _round(out["value"])
    return out


def _round(value: float) -> float:
    return float(f"{value:.6g}")


# ---------------------------------------------------------------------------------------------
# building profiles
# ---------------------------------------------------------------------------------------------
def build_profile(source: Source, model: Model | None = None, *, saliency: int = 3,
                  steps: int = 32, risk_models: Sequence[Model] = ()) -> Profile:
    """The health profile of one ECG.

    Args:
        source: a file of any format :func:`ecgfm.read` reads, or an :class:`~ecgfm.ECG`.
        model: a loaded model (:func:`ecgfm.load_model`); None: the bundled default model.
        saliency: explain the top ``saliency`` positive findings with integrated gradients
            (0: none).
        steps: quadrature points of the integrated gradients.
        risk_models: survival models (``cox`` or ``discrete_hazard`` heads, e.g. from
            ``ecgfm finetune --task survival``) whose risk at their horizons joins the profile.

    Returns:
        The :class:`Profile`; ``profile.status == "refused"`` (with ``reasons``) when the
        record is not fit to interpret.

    Raises:
        ReadError: the file cannot be read (names the file).
        ValidationError: the model has no classification head.

    >>> profile = build_profile("examples/ptbxl/00351_hr.hea")   # doctest: +SKIP
    >>> [c.id for c in profile.called("positive")]               # doctest: +SKIP
    ['AFIB', ...]
    """
    return next(profile_many([source], model, batch_size=1, saliency=saliency, steps=steps,
                             risk_models=risk_models))


def profile_many(
    sources: Iterable[Source],
    model: Model | None = None,
    *,
    batch_size: int = 32,
    saliency: int = 3,
    steps: int = 32,
    on_error: ErrorCallback | None = None,
    risk_models: Sequence[Model] = (),
) -> Iterator[Profile]:
    """Profiles of many ECGs, with the model run ``batch_size`` records at a time.

    Each source is read, quality-checked and prepared (``model.prepare``) one by one; the fit
    ones of a batch go through the model together; then each record gets its conditions,
    measurements and saliency.

    Args:
        sources: files or :class:`~ecgfm.ECG` records (any iterable; read lazily, a batch
            at a time).
        model: a loaded model; None: the bundled default model.
        batch_size: records per forward pass.
        saliency: top positive findings to explain per record (0: none).
        steps: quadrature points of the integrated gradients.
        on_error: called as ``on_error(source, error)`` for a source that cannot be profiled
            (unreadable file, or an unexpected failure on that record); the others proceed.
            None: the error is raised.
        risk_models: survival models whose risks join each profile (see :func:`build_profile`).

    Yields:
        One :class:`Profile` per source that could be read, in input order (refused records
        included, with ``status == "refused"``).
    """
    if batch_size < 1:
        raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
    if saliency < 0:
        raise ValidationError(f"saliency must be >= 0 findings, got {saliency}")
    model = model if model is not None else default_model()
    context = _context(model, risk_models)  # refuses unfit models now, not at the first record
    return _profiles(sources, context, batch_size, saliency, steps, on_error)


_CONTEXTS: weakref.WeakKeyDictionary[Any, _Context] = weakref.WeakKeyDictionary()


def _context(model: Model, risk_models: Sequence[Model]) -> _Context:
    """The model's :class:`_Context`, built once per model (a service profiles one record per
    call); with risk models, built afresh."""
    if risk_models:
        return _Context(model, risk_models)
    try:
        return _CONTEXTS[model]
    except KeyError:
        context = _CONTEXTS[model] = _Context(model)
        return context
    except TypeError:  # a model that cannot be weakly referenced
        return _Context(model)


def _profiles(sources: Iterable[Source], context: _Context, batch_size: int, saliency: int, steps: int,
              on_error: ErrorCallback | None) -> Iterator[Profile]:
    batch: list[_Item] = []
    for source in sources:
        item = _guard(source, on_error, lambda s=source: _read(s, context))
        if item is None:
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            yield from _finish(batch, context, saliency, steps, on_error)
            batch = []
    if batch:
        yield from _finish(batch, context, saliency, steps, on_error)


def default_model() -> Model:
    """The model shipped with ecgfm (what ``ecgfm.load_model()`` without a path loads)."""
    from ecgfm.models import default_model_path
    from ecgfm.models.portable import CONFIG_FILE, load_model

    path = default_model_path()
    if not (path / CONFIG_FILE).is_file():
        raise ValidationError(
            f"no default model is installed ({path} holds none); pass a model directory (--model DIR)"
        )
    return load_model(path)


@dataclass
class _Item:
    source: str  # how errors name it
    path: str | None  # the file it was read from
    ecg: ECG
    quality: QualityReport
    reasons: list[Reason]
    signal: torch.Tensor | None = None  # [L, T] prepared input
    mask: torch.Tensor | None = None  # [L]
    probabilities: np.ndarray | None = None  # [C]
    risk: tuple[Mapping[str, Any], ...] = ()


class _Context:
    """What every profile of one model shares, computed once."""

    def __init__(self, model: Model, risk_models: Sequence[Model] = ()) -> None:
        head = getattr(model, "head", None)
        if head is None or head.type == "regression" or head.is_survival:
            kind = "no head" if head is None else f"a {head.type} head"
            raise ValidationError(
                f"{getattr(model, 'path', None) or 'model'}: has {kind}; a profile needs "
                "a classification head (multilabel, multiclass or binary)"
            )
        from ecgfm.labels import load_catalogue

        self.model = model
        self.catalogue = load_catalogue()
        self.labels: tuple[str, ...] = tuple(model.labels)
        self.points = _operating_points(model)
        self.metrics = _label_metrics(model)
        self.groups = [_group_of(label, self.catalogue) for label in self.labels]
        self.names = [_display_name(label, name, self.catalogue)
                      for label, name in zip(self.labels, model.label_names)]
        self.info = _model_info(model)
        self.risk_models = [(m, *_risk_setup(m)) for m in risk_models]


def _guard(source: Source, on_error: ErrorCallback | None, job: Callable[[], Any]) -> Any:
    """Run ``job``; hand a failure to ``on_error`` (returning None), or raise without one."""
    try:
        return job()
    except Exception as error:  # noqa: BLE001 - a bug on one record must not end the batch
        if on_error is None:
            raise
        on_error(_source_name(source), error)
        return None


def _source_name(source: Source) -> str:
    if isinstance(source, ECG):
        return source.name
    return os.fspath(source)


def _read(source: Source, context: _Context) -> _Item:
    from ecgfm.models.portable import ContractError

    if isinstance(source, ECG):
        ecg = source
    elif isinstance(source, (str, os.PathLike)):
        from ecgfm.io import read

        ecg = read(source)
    else:
        raise ValidationError(f"expected a file path or an ecgfm.ECG, got {type(source).__name__}")
    quality = check_quality(ecg)
    reasons = [Reason(f.code, f.reason, f.lead) for f in quality.flags if f.blocking]
    path = ecg.meta.source_path if isinstance(source, ECG) else os.fspath(source)
    item = _Item(_source_name(source), path, ecg, quality, reasons)
    try:
        item.signal, item.mask = context.model.prepare(ecg)
    except ContractError as error:
        reasons.append(Reason("contract", _strip_name(str(error), ecg.name)))
    return item


def _strip_name(message: str, name: str) -> str:
    """Contract messages start with the record's name, which the profile already holds."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _finish(batch: list[_Item], context: _Context, saliency: int, steps: int,
            on_error: ErrorCallback | None) -> Iterator[Profile]:
    _predict([item for item in batch if not item.reasons], context)
    _risks([item for item in batch if not item.reasons], context)
    for item in batch:
        profile = _guard(item.source, on_error, lambda i=item: _profile(i, context, saliency, steps))
        if profile is not None:
            yield profile


def _predict(items: list[_Item], context: _Context) -> None:
    """One forward pass per input length (every record has the same under a fixed window)."""
    import torch

    from ecgfm.models.heads import predict_from_logits

    model = context.model
    by_length: dict[int, list[_Item]] = {}
    for item in items:
        assert item.signal is not None and item.mask is not None
        by_length.setdefault(item.signal.shape[-1], []).append(item)
    for group in by_length.values():
        x = torch.stack([item.signal for item in group])  # type: ignore[misc]  # [B, L, T]
        m = torch.stack([item.mask for item in group])  # type: ignore[misc]  # [B, L]
        probabilities = predict_from_logits(model.forward(x, m).float(), model.head).cpu().numpy()
        for item, row in zip(group, probabilities):
            item.probabilities = row


def _profile(item: _Item, context: _Context, saliency: int, steps: int) -> Profile:
    record = RecordInfo.of(item.ecg, item.path)
    notes: list[str] = []
    if item.reasons:
        notes.append("refused: no conditions, measurements or saliency for a record not fit to interpret")
        return Profile(record=record, model=context.info, status="refused",
                       reasons=tuple(item.reasons), quality=item.quality, notes=tuple(notes),
                       ecg=item.ecg)
    assert item.probabilities is not None
    conditions = _conditions(item.probabilities, context)
    measurements, note = measure_record(item.ecg)
    if note:
        notes.append(note)
    explained: tuple[Saliency, ...] = ()
    if saliency:
        targets = _saliency_targets(conditions, saliency)
        if targets:
            from ecgfm.profile.saliency import explain

            index = {label: i for i, label in enumerate(context.labels)}
            assert item.signal is not None and item.mask is not None
            explained = tuple(explain(
                context.model, item.signal, item.mask, [index[c.id] for c in targets],
                ecg=item.ecg, probabilities=[c.probability for c in targets],
                names=[c.name for c in targets], steps=steps,
            ))
        else:
            notes.append("saliency: no positive finding to explain")
    return Profile(record=record, model=context.info, status="ok", reasons=(),
                   quality=item.quality, conditions=conditions, measurements=measurements,
                   saliency=explained, risk=item.risk, notes=tuple(notes), ecg=item.ecg)


# ---------------------------------------------------------------------------------------------
# risk (survival heads)
# ---------------------------------------------------------------------------------------------
def _risk_setup(model: Model) -> tuple[tuple[float, ...], dict[str, Any]]:
    """The horizons a survival model is asked about and what its profile entry says of it."""
    head = getattr(model, "head", None)
    name = os.fspath(model.path) if getattr(model, "path", None) else "model"
    if head is None or not head.is_survival:
        kind = "no head" if head is None else f"a {head.type} head"
        raise ValidationError(f"{name}: has {kind}; a risk model needs a survival head (cox or "
                              "discrete_hazard: ecgfm finetune --task survival)")
    extra = dict(head.extra)
    horizons = tuple(float(h) for h in extra.get("horizons") or ())
    if not horizons:
        raise ValidationError(f"{name}: the survival head names no horizons to give the risk at")
    metrics = getattr(model, "metrics", None) or {}
    figures = {f"{split}_{k}": (metrics.get(split) or {}).get(k) for split in ("val", "test")
               for k in ("c_index", "uno_c", "ibs")}
    figures = {k: v for k, v in figures.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    info = {"model": model.card.name or name, "path": name, "head": head.type,
            "event": extra.get("event_column") or (head.label_ids[0] if head.type == "cox" else None),
            "time_unit": extra.get("time_unit") or "", "horizons": list(horizons),
            "validation": {k: _round(float(v)) for k, v in figures.items()}}
    return horizons, info


def _risks(items: list[_Item], context: _Context) -> None:
    """Each risk model's absolute risk at its horizons for every fit record of a batch."""
    for model, horizons, info in context.risk_models:
        if not items:
            return
        risk, failures = model.risk([item.ecg for item in items], horizons, errors="skip")
        why = {f.index: f.error for f in failures}
        for i, item in enumerate(items):
            entry = dict(info)
            if i in why:
                entry["risk"], entry["error"] = None, why[i]
            else:
                entry["risk"] = [_round(float(r)) for r in risk[i]]
            item.risk = (*item.risk, entry)


def _conditions(probabilities: np.ndarray, context: _Context) -> tuple[ConditionResult, ...]:
    order = sorted(range(len(context.labels)), key=lambda i: (-float(probabilities[i]), i))
    out = []
    for rank, i in enumerate(order, start=1):
        label = context.labels[i]
        p = float(probabilities[i])
        borderline, positive = context.points[label]
        call = "positive" if p >= positive else "borderline" if p >= borderline else "negative"
        out.append(ConditionResult(rank=rank, id=label, name=context.names[i],
                                   group=context.groups[i], probability=p, call=call,
                                   borderline_at=borderline, positive_at=positive,
                                   metrics=context.metrics.get(label, {})))
    return tuple(out)


def _saliency_targets(conditions: Sequence[ConditionResult], k: int) -> list[ConditionResult]:
    """The top ``k`` positive findings; statement-level outputs before benchmark summaries,
    which mostly repeat them ("superdiagnostic:MI" after "IMI")."""
    positive = [c for c in conditions if c.call == "positive"]
    ordered = [c for c in positive if c.group != SUMMARY] + [c for c in positive if c.group == SUMMARY]
    return ordered[:k]


def measure_record(ecg: ECG) -> tuple[dict[str, Any] | None, str | None]:
    """``ecgfm.delineate.measure(ecg).to_dict()`` and None, or None and a note saying why not.

    The delineator is optional here: without it (or when it cannot measure this record) the
    profile still has everything else.
    """
    try:
        from ecgfm.delineate import measure
    except ImportError as error:
        return None, f"measurements: not available in this installation ({error})"
    try:
        result = measure(ecg)
    except ECGError as error:
        return None, f"measurements: not measurable ({_strip_name(str(error), ecg.name)})"
    except Exception as error:  # noqa: BLE001 - a delineation bug must not cost the profile
        return None, f"measurements: failed with unexpected {type(error).__name__}: {error} (please report this)"
    return _clean(result.to_dict()), None


# ---------------------------------------------------------------------------------------------
# model-level lookups
# ---------------------------------------------------------------------------------------------
def _operating_points(model: Model) -> dict[str, tuple[float, float]]:
    """``{label: (borderline, positive)}``: the model's own, else its threshold (or 0.5) for
    both, i.e. no borderline band."""
    method = getattr(model, "operating_points", None)
    points: Mapping[str, Any] = method() if callable(method) else {}
    thresholds = model.thresholds or {}
    out = {}
    for label in model.labels:
        if label in points:
            borderline, positive = (float(v) for v in points[label])
        else:
            positive = float(thresholds.get(label, 0.5))
            borderline = positive
        out[label] = (min(borderline, positive), positive)
    return out


def _label_metrics(model: Model) -> dict[str, dict[str, Any]]:
    method = getattr(model, "label_metrics", None)
    metrics = method() if callable(method) else (model.metrics.get("per_label") or {})
    return {str(k): _clean(dict(v)) for k, v in (metrics or {}).items() if isinstance(v, Mapping)}


def _group_of(label: str, catalogue: Any) -> str:
    if ":" in label:
        return SUMMARY
    return catalogue[label].category if label in catalogue else OTHER


def _display_name(label: str, name: str, catalogue: Any) -> str:
    if name != label:
        return name
    if ":" in label:
        prefix, _, code = label.partition(":")
        base = catalogue[code].name if code in catalogue else code
        return f"{base} ({prefix})"
    return catalogue[label].name if label in catalogue else label


def _model_info(model: Model) -> dict[str, Any]:
    import ecgfm

    config = model.config
    head = model.head
    return {
        "name": model.card.name,
        "path": None if model.path is None else str(model.path),
        "encoder": config.get("encoder"),
        "head": None if head is None else head.type,
        "outputs": len(model.labels),
        "pipeline_hash": config.get("pipeline_hash"),
        "input": {"fs": model.input.fs, "leads": list(model.input.leads),
                  "seconds": model.input.seconds},
        "ecgfm": ecgfm.__version__,
    }


def _clean(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _round(value) if math.isfinite(value) else None
    return value
