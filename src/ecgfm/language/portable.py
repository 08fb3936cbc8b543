"""A signal-language model folder: the portable ECG model plus the text side, decoder and tokenizer.

::

    MODEL_DIR/config.json, model.safetensors, card.md   the ECG encoder as a portable model
                                                         (ecgfm.load_model, ecgfm finetune --from)
    MODEL_DIR/language.json                              what the text side is: architecture,
                                                         objective, token limits, generation and
                                                         zero-shot defaults, checksums
    MODEL_DIR/language.safetensors                       text encoder, projections, temperature,
                                                         report decoder (tensors only)
    MODEL_DIR/tokenizer.json                             the report tokenizer (normalisation included)

Nothing is pickled. :func:`load_language_model` reads the folder into a :class:`LanguageModel`,
which reads any ECG file ``ecgfm.read`` reads, checks it against the ECG model's input contract,
preprocesses it with the saved pipeline and then embeds it, scores catalogue conditions
zero-shot, retrieves reports or writes a draft report.

A model whose text encoder is a Hugging Face model needs ``transformers`` and that model's
local folder (for its architecture and tokenizer; the weights are in ``language.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgfm.errors import ECGError, ValidationError
from ecgfm.language.model import ECGTextModel
from ecgfm.language.text import CLS, PAD, ReportTokenizer

__all__ = ["LANGUAGE_FILE", "LANGUAGE_FORMAT", "LanguageModel", "load_language_model", "save_language_model"]

LANGUAGE_FORMAT = "ecgfm-language"
LANGUAGE_VERSION = 1
LANGUAGE_FILE = "language.json"
LANGUAGE_WEIGHTS = "language.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_language_model(
    directory: str | os.PathLike[str],
    net: ECGTextModel,
    tokenizer: ReportTokenizer,
    *,
    pipeline: Any,
    head: Any = None,
    input: Mapping[str, Any] | None = None,
    objective: str = "clip",
    max_text_tokens: int = 96,
    generation: Mapping[str, Any] | None = None,
    zero_shot: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``net`` and ``tokenizer`` as a signal-language model folder (module docstring).

    Args:
        directory: the folder.
        net: the trained network (its current weights are written).
        tokenizer: the report tokenizer it was trained with.
        pipeline: the preprocessing of a raw record into the encoder's input (as for
            :func:`ecgfm.models.portable.save_model`).
        head: the ECG encoder head's :class:`~ecgfm.models.heads.HeadSpec` (the normal/abnormal
            head of multi-task pretraining), or None for an embedding-only encoder.
        input: input-contract overrides (see ``save_model``).
        objective: ``"clip"``, ``"caption"`` or ``"multitask"`` (recorded).
        max_text_tokens: tokens per text the text encoder reads, specials included.
        generation: defaults of report generation, ``{"beam", "length_penalty", "max_length"}``.
        zero_shot: defaults of zero-shot scoring, ``{"method", "expand"}``.
        card, metrics, training: as ``save_model`` (they go to ``config.json`` and the card).
        overwrite: replace a model already in the folder.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from ecgfm.models.portable import _jsonable, _tensors_for_safetensors, save_model

    directory = Path(directory)
    encoder = net.ecg_encoder
    was_training = net.training
    net.eval()
    try:
        save_model(directory, encoder, head=head, pipeline=pipeline, input=input,
                   card=dict(card or {}), metrics=dict(metrics or {}), training=dict(training or {}),
                   encoder_name=getattr(encoder, "encoder_name", None), overwrite=overwrite)
        state = {k: v for k, v in net.state_dict().items() if not k.startswith("ecg_encoder.")}
        tensors, aliases = _tensors_for_safetensors(state)
    finally:
        net.train(was_training)
    tmp = directory / (LANGUAGE_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": LANGUAGE_FORMAT})
    os.chmod(tmp, 0o644)
    weights_sha = _sha256(tmp)
    os.replace(tmp, directory / LANGUAGE_WEIGHTS)
    tokenizer.save(directory / TOKENIZER_FILE)
    from ecgfm.language.zero_shot import TEMPLATES

    doc = {
        "format": LANGUAGE_FORMAT, "version": LANGUAGE_VERSION, "objective": objective,
        "architecture": net.architecture(), "max_text_tokens": int(max_text_tokens),
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": _sha256(directory / TOKENIZER_FILE),
                      "kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "weights": {"file": LANGUAGE_WEIGHTS, "sha256": weights_sha, "aliases": aliases},
        "generation": {"beam": 4, "length_penalty": 1.0, **dict(generation or {})},
        "zero_shot": {"method": "normal", "expand": "descendants", "templates": TEMPLATES, **dict(zero_shot or {})},
        "metrics": _jsonable(dict(metrics or {})),
    }
    tmp_doc = directory / (LANGUAGE_FILE + ".tmp")
    tmp_doc.write_text(json.dumps(_jsonable(doc), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_doc, directory / LANGUAGE_FILE)
    return directory


def load_language_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LanguageModel:
    """Load a folder written by :func:`save_language_model` (never unpickles anything).

    Raises:
        ValidationError: not a language model folder (naming what is missing), a checksum that
            does not match, weights that do not fit the architecture (naming the keys).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ecgfm.models.portable import load_model

    root = Path(path)
    if root.is_file():
        root = root.parent
    doc_path = root / LANGUAGE_FILE
    if not doc_path.is_file():
        raise ValidationError(f"{root}: not a signal-language model folder (no {LANGUAGE_FILE}; "
                              "train one with 'ecgfm pretrain --objective clip|caption|multitask')")
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{doc_path}: cannot read ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != LANGUAGE_FORMAT:
        raise ValidationError(f"{doc_path}: field 'format' is {doc.get('format') if isinstance(doc, dict) else None!r}, "
                              f"expected {LANGUAGE_FORMAT!r}")
    if not isinstance(doc.get("version"), int) or not 1 <= doc["version"] <= LANGUAGE_VERSION:
        raise ValidationError(f"{doc_path}: field 'version' is {doc.get('version')!r}; this ecgfm reads 1-{LANGUAGE_VERSION}")
    for key in ("architecture", "tokenizer", "weights", "max_text_tokens"):
        if key not in doc:
            raise ValidationError(f"{doc_path}: missing field {key!r}")
    files = {}
    for key in ("tokenizer", "weights"):
        name = str(doc[key].get("file", ""))
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValidationError(f"{doc_path}: field '{key}.file' must name a file inside the folder, got {name!r}")
        f = root / name
        if not f.is_file():
            raise ValidationError(f"{root}: {key} file {name} is missing")
        expected = doc[key].get("sha256")
        if expected and _sha256(f) != expected:
            raise ValidationError(f"{f}: checksum differs from the one in {LANGUAGE_FILE}; the files come from "
                                  "different saves")
        files[key] = f
    if not files["weights"].name.endswith(".safetensors"):
        raise ValidationError(f"{doc_path}: weights must be a .safetensors file")
    ecg_model = load_model(root, device=device)
    tokenizer = ReportTokenizer.load(files["tokenizer"])
    net = ECGTextModel.from_architecture(ecg_model.encoder, doc["architecture"])
    try:
        state = load_file(str(files["weights"]), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ValidationError(f"{files['weights']}: cannot read the weights ({exc})") from None
    for alias, target in (doc["weights"].get("aliases") or {}).items():
        if target not in state:
            raise ValidationError(f"{files['weights']}: alias {alias!r} points to missing key {target!r}")
        state[alias] = state[target]
    expected_keys = {k for k in net.state_dict() if not k.startswith("ecg_encoder.")}
    missing, unexpected = sorted(expected_keys - set(state)), sorted(set(state) - expected_keys)
    shapes = [k for k in expected_keys & set(state) if tuple(state[k].shape) != tuple(net.state_dict()[k].shape)]
    if missing or unexpected or shapes:
        raise ValidationError(f"{files['weights']}: weights do not match the architecture in {LANGUAGE_FILE} "
                              f"(missing: {missing[:8]}, unexpected: {unexpected[:8]}, shape: {shapes[:8]})")
    net.load_state_dict(state, strict=False)
    net.to(device)
    net.eval()
    return LanguageModel(ecg_model, net, tokenizer, doc, root)


class LanguageModel:
    """A loaded signal-language model (see the module docstring).

    Attributes:
        model: the ECG side as a portable :class:`~ecgfm.models.portable.Model` (contract,
            pipeline, encoder; ``model.predict`` works when it has a head).
        net: the :class:`~ecgfm.language.model.ECGTextModel` (eval mode).
        tokenizer: the :class:`~ecgfm.language.text.ReportTokenizer`.
        config: ``language.json``.
        objective: ``"clip"``, ``"caption"`` or ``"multitask"``.
    """

    def __init__(self, model: Any, net: ECGTextModel, tokenizer: ReportTokenizer, config: Mapping[str, Any],
                 path: Path | None = None) -> None:
        self.model = model
        self.net = net
        self.tokenizer = tokenizer
        self.config = dict(config)
        self.path = path
        self.objective = str(self.config.get("objective", "clip"))
        self.max_text_tokens = int(self.config.get("max_text_tokens", 96))

    def __repr__(self) -> str:
        parts = [p for p, ok in (("text encoder", self.net.text_encoder is not None),
                                 ("decoder", self.net.decoder is not None)) if ok]
        return f"LanguageModel({self.objective!r}, {self.model!r}, {' + '.join(parts)})"

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- the ECG side -----------------------------------------------------------------------------
    def prepared(self, inputs: Any, batch_size: int = 32, errors: str = "raise"
                 ) -> tuple[Iterator[tuple[list[int], torch.Tensor, torch.Tensor]], list[Any]]:
        """Batches ``(indices, signal [b, L, T], lead_mask [b, L])`` of the inputs (files or
        :class:`~ecgfm.ECG` records), read and checked against the contract, and the list that
        collects the inputs that failed (an :class:`~ecgfm.models.portable.InputFailure` each,
        filled while iterating; ``errors="raise"`` raises the first instead)."""
        from ecgfm.models.portable import InputFailure, _as_list, _source

        if errors not in ("raise", "skip"):
            raise ValidationError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(inputs)
        failures: list[Any] = []

        def gen() -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
            for start in range(0, len(items), batch_size):
                groups: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
                for i in range(start, min(start + batch_size, len(items))):
                    try:
                        x, m = self.model.prepare(items[i])
                    except ECGError as error:
                        if errors == "raise":
                            raise
                        failures.append(InputFailure(i, _source(items[i]), str(error)))
                        continue
                    groups.setdefault(x.shape[-1], []).append((i, x, m))
                for group in groups.values():
                    yield ([i for i, _, _ in group], torch.stack([x for _, x, _ in group]),
                           torch.stack([m for _, _, m in group]))

        return gen(), failures

    def _features(self, signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net.ecg_features(signal.to(self.device, torch.float32), mask.to(self.device))

    def embed_ecg(self, inputs: Any, batch_size: int = 32, errors: str = "raise") -> Any:
        """Normalised joint embeddings ``[N, E]`` float32 of ECG files or records (rows of
        failed inputs are NaN; with ``errors="skip"`` returns ``(embeddings, failures)``)."""
        self.net._need_text_side()
        from ecgfm.models.portable import _as_list

        items = _as_list(inputs)
        out = np.full((len(items), self.net.embed_dim), np.nan, np.float32)
        batches, failures = self.prepared(items, batch_size, errors)
        for rows, x, m in batches:
            with torch.inference_mode():
                out[rows] = self.net.ecg_embedding(self.net.ecg_pooled(self._features(x, m))).float().cpu().numpy()
        return (out, failures) if errors == "skip" else out

    def embed_signals(self, signal: torch.Tensor | np.ndarray, lead_mask: Any = None, batch_size: int = 64) -> np.ndarray:
        """Normalised joint embeddings ``[N, E]`` of prepared input ``[N, L, T]`` (already
        preprocessed, e.g. windows of a corpus store)."""
        self.net._need_text_side()
        x = torch.as_tensor(np.asarray(signal, np.float32))
        m = torch.ones(x.shape[:2], dtype=torch.bool) if lead_mask is None else torch.as_tensor(np.asarray(lead_mask, bool))
        out = []
        for s in range(0, len(x), batch_size):
            with torch.inference_mode():
                f = self._features(x[s:s + batch_size], m[s:s + batch_size])
                out.append(self.net.ecg_embedding(self.net.ecg_pooled(f)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.net.embed_dim), np.float32)

    # -- the text side ----------------------------------------------------------------------------
    def text_inputs(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N, max_text_tokens], mask [N, max_text_tokens])`` as the text encoder reads them."""
        from ecgfm.language.text_encoder import HFTextEncoder

        enc = self.net.text_encoder
        if isinstance(enc, HFTextEncoder):
            return enc.tokenize(texts, self.max_text_tokens)
        ids, _ = self.tokenizer.batch(list(texts), self.max_text_tokens, start=CLS)
        return ids, ids != PAD

    def embed_text(self, texts: Sequence[str] | str, batch_size: int = 256) -> np.ndarray:
        """Normalised joint embeddings ``[N, E]`` float32 of report texts (or prompts)."""
        self.net._need_text_side()
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids, mask = self.text_inputs(texts)
        out = []
        for s in range(0, len(texts), batch_size):
            with torch.inference_mode():
                e = self.net.text_embedding(torch.as_tensor(ids[s:s + batch_size], device=self.device),
                                            torch.as_tensor(mask[s:s + batch_size], device=self.device))
            out.append(e.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.net.embed_dim), np.float32)

    @property
    def scale(self) -> float:
        """The learnt ``1 / temperature``."""
        with torch.no_grad():
            return float(self.net.scale())

    # -- zero-shot --------------------------------------------------------------------------------
    def zero_shot_classifier(self, catalogue: Any = None, *, method: str | None = None,
                             expand: str | None = None) -> Any:
        """A :class:`~ecgfm.language.zero_shot.ZeroShotClassifier` on this model's text side
        (``method``/``expand`` default to the ones saved with the model)."""
        from ecgfm.language.zero_shot import TEMPLATES, ZeroShotClassifier

        saved = self.config.get("zero_shot") or {}
        templates = saved.get("templates") or TEMPLATES
        return ZeroShotClassifier(self.embed_text, catalogue, scale=self.scale,
                                  method=method or saved.get("method", "normal"),
                                  expand=expand or saved.get("expand", "descendants"), templates=templates)

    def zero_shot(self, inputs: Any, conditions: Sequence[str], *, catalogue: Any = None,
                  method: str | None = None, expand: str | None = None, batch_size: int = 32,
                  errors: str = "raise") -> Any:
        """Scores ``[N, C]`` of ECG files or records for catalogue condition ids (see
        :mod:`ecgfm.language.zero_shot`); with ``errors="skip"`` ``(scores, failures)``."""
        clf = self.zero_shot_classifier(catalogue, method=method, expand=expand)
        conditions = [str(c) for c in conditions]
        if not conditions:
            raise ValidationError("zero-shot: no condition to score")
        for cid in conditions:  # an unknown id fails before any file is read
            clf.members(cid)
        result = self.embed_ecg(inputs, batch_size, errors)
        emb, failures = result if errors == "skip" else (result, [])
        scores = np.full((emb.shape[0], len(conditions)), np.nan)
        ok = np.isfinite(emb).all(axis=1)
        if ok.any():
            scores[ok] = clf.scores(emb[ok], conditions)
        return (scores, failures) if errors == "skip" else scores

    # -- report generation --------------------------------------------------------------------------
    def _generation(self, beam: int | None, length_penalty: float | None, max_length: int | None) -> dict[str, Any]:
        if self.net.decoder is None:
            raise ValidationError(f"{self.path or 'model'}: has no report decoder (objective {self.objective!r}); "
                                  "train with --objective caption or multitask")
        saved = self.config.get("generation") or {}
        return {"beam": int(beam if beam is not None else saved.get("beam", 4)),
                "length_penalty": float(length_penalty if length_penalty is not None else saved.get("length_penalty", 1.0)),
                "max_length": max_length if max_length is not None else saved.get("max_length")}

    def generate_from_features(self, features: torch.Tensor, *, beam: int | None = None,
                               length_penalty: float | None = None, max_length: int | None = None) -> list[str]:
        """Reports for encoder features ``[B, D, T']``."""
        g = self._generation(beam, length_penalty, max_length)
        ids = self.net.decoder.generate(features.to(self.device), **g)  # type: ignore[union-attr]
        return [self.tokenizer.decode(row) for row in ids]

    def generate(self, inputs: Any, *, beam: int | None = None, length_penalty: float | None = None,
                 max_length: int | None = None, batch_size: int = 16, errors: str = "raise") -> Any:
        """Draft reports (one string per input) of ECG files or records; ``beam=1`` is greedy.
        With ``errors="skip"`` returns ``(reports, failures)`` (``None`` for a failed input)."""
        self._generation(beam, length_penalty, max_length)
        from ecgfm.models.portable import _as_list

        items = _as_list(inputs)
        out: list[str | None] = [None] * len(items)
        batches, failures = self.prepared(items, batch_size, errors)
        for rows, x, m in batches:
            texts = self.generate_from_features(self._features(x, m), beam=beam, length_penalty=length_penalty,
                                                max_length=max_length)
            for i, t in zip(rows, texts):
                out[i] = t
        return (out, failures) if errors == "skip" else out
