"""Inference backends of the service: PyTorch, or ONNX Runtime on an exported graph.

A backend is a callable ``(signal [B, L, T] float32, lead_mask [B, L] bool) -> logits [B, C]
float32``: what :meth:`~ecgfm.models.portable.Model.forward` returns for prepared input, so the
profile code (which applies the head's activation itself) cannot tell the backends apart.
Preprocessing (:meth:`~ecgfm.models.portable.Model.prepare`) stays outside: it is the same for
both.

The ONNX graph is written by :func:`ecgfm.models.export.export_onnx` (the same file
``ecgfm export`` writes) once per model and cached under a key of the model's config (weights
checksum, pipeline hash, labels, contract) and the ecgfm version, so restarts and several
workers reuse one file. A graph with a ``logits`` output is read directly; one with only
``predictions`` (probabilities) is mapped back through the inverse of the head's activation
(logit for sigmoid heads, log for softmax heads), which returns the same probabilities to
float32 rounding (a probability of exactly 0 or 1 becomes an infinite logit, which maps back
to 0 or 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ECGError, ValidationError

if TYPE_CHECKING:
    from ecgfm.models.portable import Input, Model

__all__ = ["BACKENDS", "OnnxBackend", "TorchBackend", "compare_backends", "make_backend",
           "onnx_cache_dir"]

BACKENDS = ("torch", "onnx")


class TorchBackend:
    """Runs :meth:`Model.forward` (PyTorch, inference mode): logits ``[B, C]``."""

    name = "torch"

    def __init__(self, model: Model) -> None:
        if model.head is None:
            raise ValidationError(f"{model.path or 'model'}: has no head (an embedding model); "
                                  "the service needs a model that predicts labels")
        self.model = model

    def __call__(self, signal: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        logits = self.model.forward(torch.from_numpy(signal), torch.from_numpy(mask))  # [B, C]
        return logits.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        import torch

        return {"name": self.name, "torch": torch.__version__.split("+")[0],
                "device": str(self.model.device), "threads": torch.get_num_threads()}


class OnnxBackend:
    """Runs the model's ONNX export in ONNX Runtime (CPU).

    Args:
        model: the loaded model (its config keys the cache, and checks a given file).
        path: an ``.onnx`` file written by ``ecgfm export`` for this model; default: export
            into ``cache_dir`` (or reuse the file exported there before).
        cache_dir: where exports are cached; default :func:`onnx_cache_dir`.
        threads: ONNX Runtime intra-op threads; default: its own choice (all cores).
    """

    name = "onnx"

    def __init__(self, model: Model, *, path: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - the extra is installed in CI
            raise ValidationError("the onnx backend needs onnxruntime and onnx: "
                                  "pip install 'ecgfm[onnx]'") from None
        if model.head is None:
            raise ValidationError(f"{model.path or 'model'}: has no head (an embedding model); "
                                  "the service needs a model that predicts labels")
        self.model = model
        self.path = Path(path) if path is not None else export_cached(model, cache_dir)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        # Idle intra-op threads would otherwise spin for work, taking the cores that the
        # request threads' quality checks and delineation need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValidationError(f"{self.path}: onnxruntime cannot load it ({error})") from None
        self._check_metadata()
        self._inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        self._output = "logits" if "logits" in outputs else "predictions"
        if self._output not in outputs:
            raise ValidationError(f"{self.path}: has neither a 'logits' nor a 'predictions' output; "
                                  "export it with `ecgfm export MODEL_DIR --format onnx`")
        self._ort_version = ort.__version__

    def _check_metadata(self) -> None:
        meta = self.session.get_modelmeta().custom_metadata_map
        pipeline_hash = meta.get("ecgfm_pipeline_hash")
        labels = json.loads(meta.get("ecgfm_labels", "null") or "null")
        if pipeline_hash != self.model.pipeline.hash or labels != list(self.model.labels):
            raise ValidationError(
                f"{self.path}: was not exported from this model (its pipeline hash or labels "
                "differ); export it again with `ecgfm export MODEL_DIR --format onnx`"
            )

    def _feeds(self, signal: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"signal": np.ascontiguousarray(signal, np.float32)}
        if "lead_mask" in self._inputs:
            feeds["lead_mask"] = np.ascontiguousarray(mask, bool)
        return feeds

    def __call__(self, signal: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self._output], self._feeds(signal, mask))  # [B, C]
        if self._output == "logits":
            return out
        return _inverse_activation(out, self.model.head.activation)

    def predictions(self, signal: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The graph's own ``predictions`` output ``[B, C]`` (probabilities), for parity checks."""
        if self._output == "logits":
            from ecgfm.models.heads import predict_from_logits

            return predict_from_logits(self(signal, mask), self.model.head)
        (out,) = self.session.run(["predictions"], self._feeds(signal, mask))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "onnxruntime": self._ort_version, "file": self.path.name,
                "output": self._output}


def _inverse_activation(predictions: np.ndarray, activation: str) -> np.ndarray:
    """Logits whose activation gives ``predictions`` back (float32 ``[B, C]``)."""
    p = predictions.astype(np.float64)
    with np.errstate(divide="ignore"):
        if activation == "sigmoid":
            return (np.log(p) - np.log1p(-p)).astype(np.float32)
        if activation == "softmax":
            return np.log(p).astype(np.float32)
    return predictions


def make_backend(model: Model, name: str = "torch", **options: Any) -> TorchBackend | OnnxBackend:
    """The backend called ``name`` (``"torch"`` or ``"onnx"``) for ``model``."""
    if name == "torch":
        return TorchBackend(model)
    if name == "onnx":
        return OnnxBackend(model, **options)
    raise ValidationError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")


def onnx_cache_dir() -> Path:
    """Where exported graphs are cached: ``$ECGFM_CACHE/onnx``, else ``<tmp>/ecgfm-onnx``."""
    root = os.environ.get("ECGFM_CACHE")
    return Path(root) / "onnx" if root else Path(tempfile.gettempdir()) / "ecgfm-onnx"


def _cache_key(model: Model) -> str:
    import ecgfm

    weights = (model.config.get("weights") or {}).get("sha256")
    if not weights:
        # A model built in memory has no checksum on record: hash its tensors instead.
        digest = hashlib.sha256()
        for key, value in sorted(model.encoder.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        weights = digest.hexdigest()
    blob = json.dumps({"weights": weights, "pipeline": model.pipeline.hash,
                       "labels": list(model.labels), "encoder": model.config.get("encoder_config"),
                       "input": model.input.to_dict(), "ecgfm": ecgfm.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def export_cached(model: Model, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model's ONNX export in the cache, written (atomically) when not there yet."""
    from ecgfm.models.export import export_onnx

    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    path = folder / f"{model.config.get('encoder', 'model')}-{_cache_key(model)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: each writes its own file and renames it into place.
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix=".export-", dir=folder)
    os.close(fd)
    try:
        export_onnx(model, tmp, check=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def compare_backends(model: Model, onnx_path: str | os.PathLike[str],
                     records: Sequence[Input]) -> dict[str, Any]:
    """Parity of an ONNX export with PyTorch on real records.

    Every record goes through :meth:`Model.prepare`, then through both backends as one batch.

    Returns:
        ``{"records": n, "refused": [messages], "max_abs_diff": float, "mean_abs_diff": float,
        "max_abs_diff_per_record": [float]}`` (differences of predictions, probabilities).
    """
    torch_backend = TorchBackend(model)
    onnx_backend = OnnxBackend(model, path=onnx_path)
    signals, masks, refused = [], [], []
    for record in records:
        try:
            x, m = model.prepare(record)
        except ECGError as error:
            refused.append(str(error))
            continue
        signals.append(x.numpy())
        masks.append(m.numpy())
    if not signals:
        raise ValidationError("no record could be prepared for the parity check: " + "; ".join(refused))
    from ecgfm.models.heads import predict_from_logits

    x = np.stack(signals)
    m = np.stack(masks)
    head = model.head
    reference = predict_from_logits(torch_backend(x, m), head).astype(np.float64)
    diff = np.abs(reference - onnx_backend.predictions(x, m).astype(np.float64))
    return {"records": len(signals), "refused": refused, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff_per_record": [float(v) for v in diff.max(axis=1)]}
