"""From a record to the profile the service returns, with the model run by the batcher.

:class:`BatchedModel` is the loaded model with one change: :meth:`BatchedModel.forward` (and so
:meth:`~BatchedModel.predict`) sends each prepared record to the service's
:class:`~ecgfm.serve.batching.DynamicBatcher`, where it shares a forward pass (PyTorch or ONNX
Runtime) with other requests' records, instead of running the encoder itself. Everything else
(``prepare``, ``labels``, ``operating_points``, ``inference_module`` for saliency ...) is the
model's own.

:func:`profile_record` builds the profile with :func:`ecgfm.profile.build_profile` handing it
the :class:`BatchedModel`; where ``ecgfm.profile`` is not installed it builds the core of the
same JSON itself (:func:`core_profile`: record, status, reasons, quality, measurements,
conditions ranked with their calls, model).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ecgfm.errors import ECGError
from ecgfm.models.heads import predict_from_logits
from ecgfm.models.portable import ContractError, Input, InputFailure, Model, _as_list, _source
from ecgfm.record import ECG
from ecgfm.serve.batching import DynamicBatcher

__all__ = ["BatchedModel", "core_profile", "jsonable", "operating_points", "profile_record",
           "render_plot"]

SUMMARY_GROUP = "summary"  # benchmark groupings like "superdiagnostic:MI"


class BatchedModel(Model):
    """``model`` whose :meth:`forward` runs through ``batcher`` (it shares the model's state).

    Args:
        model: the loaded model.
        batcher: the service's batcher; its backend gives logits ``[B, C]``.
        backend: a short description of the backend, for the profile's ``model`` field.
        timeout_s: how long a call waits for its batch before giving up (TimeoutError).
    """

    def __init__(self, model: Model, batcher: DynamicBatcher, *, backend: Mapping[str, Any] | None = None,
                 timeout_s: float | None = None) -> None:
        self.__dict__.update(model.__dict__)
        self.base = model
        self.batcher = batcher
        self.backend = dict(backend or {})
        self.timeout_s = timeout_s

    def forward(self, signal: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, C]`` for prepared input ``[B, L, T]``, each row batched with others."""
        x = signal.detach().to("cpu", torch.float32).numpy()  # [B, L, T]
        m = (np.ones(x.shape[:2], bool) if lead_mask is None
             else lead_mask.detach().to("cpu", torch.bool).numpy())  # [B, L]
        futures = [self.batcher.submit(x[i], m[i]) for i in range(x.shape[0])]
        rows = [future.result(self.timeout_s) for future in futures]
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, len(self.labels))

    def predict(self, inputs: Input | Sequence[Input], batch_size: int = 64,  # type: ignore[override]
                errors: str = "raise") -> np.ndarray | tuple[np.ndarray, list[InputFailure]]:
        """As :meth:`Model.predict`; ``batch_size`` is ignored (the batcher decides)."""
        items = _as_list(inputs)
        out = np.full((len(items), len(self.labels)), np.nan, np.float32)
        failures: list[InputFailure] = []
        rows, signals, masks = [], [], []
        for i, item in enumerate(items):
            try:
                signal, mask = self.prepare(item)
            except ECGError as error:
                if errors == "raise":
                    raise
                failures.append(InputFailure(i, _source(item), str(error)))
                continue
            rows.append(i)
            signals.append(signal)
            masks.append(mask)
        # One forward call per record: records of other lengths never meet in one stack here.
        for i, signal, mask in zip(rows, signals, masks):
            logits = self.forward(signal[None], mask[None])
            out[i] = predict_from_logits(logits.float(), self.head).numpy()[0]
        return (out, failures) if errors == "skip" else out


# ---------------------------------------------------------------------------------------------
# the profile
# ---------------------------------------------------------------------------------------------
def _external_builder() -> Any:
    """``ecgfm.profile.build_profile`` where that module is installed, else None."""
    try:
        from ecgfm.profile import build_profile
    except ImportError:
        return None
    return build_profile


def profile_record(ecg: ECG, model: BatchedModel, *, saliency: int = 0) -> dict[str, Any]:
    """The JSON-ready profile of one record.

    Args:
        ecg: the record (``meta.source_path`` is the client's file name).
        model: the :class:`BatchedModel` of the service.
        saliency: top positive findings to explain with integrated gradients (PyTorch, not
            batched; only with ``ecgfm.profile``).

    Returns:
        The profile (``ecgfm.profile.Profile.to_dict()``): ``record``, ``status``,
        ``reasons``, ``conditions``, ``measurements``, ``quality``, ``risk``, ``model`` ...;
        ``model`` gains ``backend`` and loses the server's file path.
    """
    build = _external_builder()
    if build is not None:
        profile = build(ecg, model, saliency=saliency).to_dict()
    else:
        profile = core_profile(ecg, model)
    info = dict(profile.get("model") or {})
    info.pop("path", None)  # the server's folders are none of the client's business
    info["backend"] = model.backend
    profile["model"] = info
    return jsonable(profile)


def core_profile(ecg: ECG, model: Model) -> dict[str, Any]:
    """The core of a profile without ``ecgfm.profile``: the same keys, no saliency or groups."""
    from ecgfm.quality import check_quality

    quality = check_quality(ecg)
    profile: dict[str, Any] = {
        "status": "ok", "reasons": [], "record": record_info(ecg), "model": model_info(model),
        "quality": {"ok": quality.ok, "flags": [f.to_dict() for f in quality.flags]},
        "measurements": None, "conditions": [], "risk": [], "notes": [],
    }
    reasons = [{"code": f.code, "lead": f.lead, "message": f.reason} for f in quality.flags if f.blocking]
    if not reasons:
        try:
            probabilities = np.asarray(model.predict([ecg]))[0]
        except ContractError as error:
            message = str(error).removeprefix(f"{ecg.name}: ")
            reasons.append({"code": "contract", "lead": None, "message": message})
    if reasons:
        profile.update(status="refused", reasons=reasons)
        return profile
    profile["measurements"] = _measurements(ecg)
    profile["conditions"] = rank_conditions(model, probabilities)
    return profile


def record_info(ecg: ECG) -> dict[str, Any]:
    """What the record is: id, file, format, rate, leads, length, patient age and sex."""
    meta = ecg.meta
    return {"record_id": meta.record_id or ecg.name, "source": meta.source_path,
            "format": meta.source_format, "fs": ecg.fs, "leads": list(ecg.leads),
            "n_samples": ecg.n_samples, "duration_s": ecg.duration, "age": meta.age,
            "sex": meta.sex, "acquired": meta.acquired.isoformat() if meta.acquired else None}


def model_info(model: Model) -> dict[str, Any]:
    """Which model answered: card name, encoder, head, outputs, pipeline hash, contract."""
    return {"name": model.card.name, "encoder": model.config.get("encoder"),
            "head": None if model.head is None else model.head.type,
            "outputs": len(model.labels), "pipeline_hash": model.pipeline.hash,
            "input": {"fs": model.input.fs, "leads": list(model.input.leads),
                      "seconds": model.input.seconds}}


def operating_points(model: Model) -> dict[str, tuple[float, float]]:
    """``{label: (borderline, positive)}``: :meth:`Model.operating_points`, or, on a model
    without it, ``(threshold / 2, threshold)`` from the saved thresholds (0.5 without one)."""
    own = getattr(model, "operating_points", None)
    if callable(own):
        return {k: (float(a), float(b)) for k, (a, b) in own().items()}
    thresholds = model.thresholds or {}
    return {label: (0.5 * float(thresholds.get(label, 0.5)), float(thresholds.get(label, 0.5)))
            for label in model.labels}


def label_metrics(model: Model) -> dict[str, dict[str, Any]]:
    """Validation metrics per label: :meth:`Model.label_metrics`, else ``metrics["per_label"]``."""
    own = getattr(model, "label_metrics", None)
    if callable(own):
        return dict(own())
    per_label = model.metrics.get("per_label") or {}
    return {k: dict(v) for k, v in per_label.items() if isinstance(v, Mapping)}


@lru_cache(maxsize=1)
def _catalogue() -> Any:
    from ecgfm.labels import load_catalogue

    return load_catalogue()


def rank_conditions(model: Model, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """One entry per output, most probable first: rank, id, name, group (catalogue category,
    or ``summary`` for prefixed benchmark groups), probability, call and the label's metrics."""
    points = operating_points(model)
    metrics = label_metrics(model)
    catalogue = _catalogue()
    out = []
    for rank, i in enumerate(np.argsort(-probabilities, kind="stable"), start=1):
        label = model.labels[i]
        p = float(probabilities[i])
        borderline, positive = points.get(label, (0.25, 0.5))
        call = "positive" if p >= positive else "borderline" if p >= borderline else "negative"
        group = SUMMARY_GROUP if ":" in label else (catalogue[label].category if label in catalogue else "other")
        out.append({"rank": rank, "id": label, "name": model.label_names[i], "group": group,
                    "probability": p, "call": call, "borderline_at": borderline,
                    "positive_at": positive, "metrics": metrics.get(label, {})})
    return out


def _measurements(ecg: ECG) -> dict[str, Any] | None:
    """Intervals and axes from ``ecgfm.delineate`` where it is installed, else None."""
    try:
        from ecgfm.delineate import measure
    except ImportError:
        return None
    try:
        return dict(measure(ecg).to_dict())
    except ECGError:
        return None


def render_plot(ecg: ECG, *, dpi: float = 100) -> str | None:
    """The clinical 12-lead plot of ``ecg`` as base64 PNG (None when it cannot be drawn)."""
    from ecgfm.plot import plot_ecg

    try:
        figure = plot_ecg(ecg, dpi=dpi)
    except ECGError:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def jsonable(value: Any) -> Any:
    """A copy fit for strict JSON: numpy values to Python, NaN and infinities to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
