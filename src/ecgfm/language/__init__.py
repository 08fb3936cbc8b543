"""Signal-language models: ECG-report contrastive pretraining, zero-shot diagnosis, retrieval and
report generation.

- :mod:`ecgfm.language.text`: report normalisation and the subword tokenizer (``tokenizers``);
- :mod:`ecgfm.language.text_encoder`: the compact transformer text encoder, and a local Hugging
  Face model as an alternative;
- :mod:`ecgfm.language.clip_loss`, :mod:`ecgfm.language.caption_loss`: the objectives;
- :mod:`ecgfm.language.decoder`: the report decoder (cross-attention, greedy and beam search);
- :mod:`ecgfm.language.model`: the network that joins them to an ECG encoder;
- :mod:`ecgfm.language.zero_shot`, :mod:`ecgfm.language.retrieval`,
  :mod:`ecgfm.language.metrics`: zero-shot scoring from catalogue prompts, recall@k,
  BLEU/ROUGE-L/clinical label F1;
- :mod:`ecgfm.language.portable`: the saved model folder and :class:`LanguageModel`;
- training: :mod:`ecgfm.train.language` (``ecgfm pretrain --objective clip|caption|multitask``).

``import ecgfm.language`` imports neither torch nor ``tokenizers``; the names below load their
module on first use.

>>> from ecgfm.language import load_language_model              # doctest: +SKIP
>>> lm = load_language_model("runs/language_multitask/model")   # doctest: +SKIP
>>> lm.generate(["00001_lr.hea"], beam=4)                       # doctest: +SKIP
>>> lm.zero_shot(["00001_lr.hea"], ["AFIB", "MI"])              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ReportTokenizer": "ecgfm.language.text",
    "TextEncoder": "ecgfm.language.text_encoder",
    "TextEncoderConfig": "ecgfm.language.text_encoder",
    "HFTextEncoder": "ecgfm.language.text_encoder",
    "ReportDecoder": "ecgfm.language.decoder",
    "DecoderConfig": "ecgfm.language.decoder",
    "ClipLoss": "ecgfm.language.clip_loss",
    "CaptionLoss": "ecgfm.language.caption_loss",
    "ECGTextModel": "ecgfm.language.model",
    "ZeroShotClassifier": "ecgfm.language.zero_shot",
    "condition_prompts": "ecgfm.language.zero_shot",
    "retrieval_recall": "ecgfm.language.retrieval",
    "nearest_neighbour_reports": "ecgfm.language.retrieval",
    "corpus_bleu": "ecgfm.language.metrics",
    "rouge_l": "ecgfm.language.metrics",
    "clinical_label_scores": "ecgfm.language.metrics",
    "LanguageModel": "ecgfm.language.portable",
    "load_language_model": "ecgfm.language.portable",
    "save_language_model": "ecgfm.language.portable",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.language' has no attribute {name!r}")


__all__ = sorted(_LAZY)
