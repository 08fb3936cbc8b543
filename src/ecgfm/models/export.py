"""ONNX export of a loaded portable model, checked against onnxruntime.

The ONNX graph holds the encoder and the head's activation; preprocessing stays outside it (run
:meth:`~ecgfm.models.portable.Model.prepare`, or reproduce the pipeline stored in the graph's
metadata). Inputs and outputs:

============  ===================  =============================================
name          shape, dtype         meaning
============  ===================  =============================================
signal        ``[B, L, T]`` float   the prepared input (``Model.prepare``)
lead_mask     ``[B, L]`` bool       True = lead present (only for models with lead masks)
predictions   ``[B, C]`` float      probabilities (or values, for regression heads)
embeddings    ``[B, D]`` float      pooled pre-logits features
============  ===================  =============================================

The batch axis is dynamic; ``T`` is fixed to the contract's window (dynamic when the contract
has none). The whole ``config.json`` travels in the model's metadata under ``ecgfm_config``,
so the pipeline, labels and contract are never separated from the weights.

Uses the TorchScript-based exporter (``dynamo=False``), which needs only ``onnx``; the
torch.export-based one needs ``onnxscript``, which ecgfm does not depend on.

>>> from ecgfm.models.export import export_onnx                             # doctest: +SKIP
>>> export_onnx(ecgfm.load_model("models/default"), "default.onnx")         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.models.heads import predict_from_logits
from ecgfm.models.portable import Model, load_model

__all__ = ["export_onnx", "check_onnx"]

DEFAULT_OPSET = 17


class _Exported(nn.Module):
    """encoder (with the contract's windowing) -> (predictions, embeddings), the form written to ONNX."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.both = model.inference_module("both")
        self.head = model.head

    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits, embeddings = self.both(signal, lead_mask)  # [B, C], [B, D]
        if self.head is None:
            return embeddings, embeddings
        return predict_from_logits(logits, self.head), embeddings


def export_onnx(model: Model | str | os.PathLike[str], path: str | os.PathLike[str], *,
                opset: int = DEFAULT_OPSET, check: bool = True, atol: float = 1e-4) -> Path:
    """Write ``model`` (a :class:`~ecgfm.models.portable.Model` or its directory) as ONNX.

    Args:
        model: the loaded model, or the path of a portable model directory.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        check: run the file in onnxruntime on a random batch (of another batch size than the
            export's, with one lead masked) and compare with PyTorch (:func:`check_onnx`).
        atol: the largest absolute difference ``check`` accepts.

    Returns:
        The path written.
    """
    if not isinstance(model, Model):
        model = load_model(model)
    path = Path(path)
    contract = model.input
    if contract.window_samples is not None and contract.samples is None:
        raise ValidationError(f"{model.path or 'model'}: a windowed contract needs a fixed input length "
                              "(input.samples) to export to ONNX")
    samples = contract.samples or max(int(getattr(model.encoder, "min_samples", 1)), round(contract.fs * 2))
    uses_mask = bool(getattr(model.encoder, "supports_lead_mask", False)) and contract.lead_mask
    wrapper = _Exported(model).eval()
    device = model.device
    signal = torch.zeros(2, len(contract.leads), samples, device=device)
    mask = torch.ones(2, len(contract.leads), dtype=torch.bool, device=device)
    args: tuple[Tensor, ...] = (signal, mask) if uses_mask else (signal,)
    names = ["signal", "lead_mask"] if uses_mask else ["signal"]
    dynamic: dict[str, dict[int, str]] = {"signal": {0: "batch"}, "predictions": {0: "batch"},
                                          "embeddings": {0: "batch"}}
    if contract.samples is None:
        dynamic["signal"][2] = "samples"
    if uses_mask:
        dynamic["lead_mask"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter warns that it is legacy, and the tracer that shape checks in
        # Encoder.check_input become constants (they are: the contract fixes L and T).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, args, str(path), input_names=names,
            output_names=["predictions", "embeddings"], dynamic_axes=dynamic,
            opset_version=opset, dynamo=False,
        )
    wrapper.eval()  # the exporter restores the wrapper's mode; keep the encoder in eval
    _add_metadata(path, model)
    if check:
        check_onnx(path, model, atol=atol)
    return path


def _add_metadata(path: Path, model: Model) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = "ecgfm_config"
    entry.value = json.dumps(model.config)
    for key, value in (("ecgfm_labels", json.dumps(list(model.labels))),
                       ("ecgfm_pipeline_hash", model.pipeline.hash)):
        item = proto.metadata_props.add()
        item.key, item.value = key, value
    onnx.save(proto, str(path))


def check_onnx(path: str | os.PathLike[str], model: Model, *, atol: float = 1e-4,
               batch: int = 3, seed: int = 0) -> float:
    """Run the ONNX file in onnxruntime and compare with ``model`` in PyTorch.

    Returns:
        The largest absolute difference of ``predictions`` and ``embeddings``.

    Raises:
        ValidationError: the difference exceeds ``atol``.
        ImportError: onnxruntime is not installed.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    contract = model.input
    samples = contract.samples or max(int(getattr(model.encoder, "min_samples", 1)), round(contract.fs * 3))
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(batch, len(contract.leads), samples, generator=g)
    mask = torch.ones(batch, len(contract.leads), dtype=torch.bool)
    feeds: dict[str, Any] = {"signal": signal.numpy()}
    if "lead_mask" in names:
        mask[0, -1] = False
        feeds["lead_mask"] = mask.numpy()
    predictions, embeddings = session.run(["predictions", "embeddings"], feeds)
    wrapper = _Exported(model).eval()
    with torch.inference_mode():
        ref_p, ref_e = wrapper(signal.to(model.device),
                               mask.to(model.device) if "lead_mask" in names else None)
    diff = max(float(np.abs(predictions - ref_p.cpu().numpy()).max()),
               float(np.abs(embeddings - ref_e.cpu().numpy()).max()))
    if not diff <= atol:
        raise ValidationError(f"{path}: onnxruntime differs from PyTorch by {diff:.3g} (> {atol:g})")
    return diff
