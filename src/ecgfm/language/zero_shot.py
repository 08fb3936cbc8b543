"""Zero-shot diagnosis: score any catalogue condition from text prompts, without training on it.

Prompts come from the catalogue (:mod:`ecgfm.labels.catalogue`), so a condition added there (a
row in your own CSV passed to ``load_catalogue``) is scored by the same model at once:

- **English** prompts put the condition's ``name`` and each ``synonyms_en`` entry into every
  English template (:data:`TEMPLATES` ``["en"]``: ``"{}"``, ``"{}."``, ``"ecg shows {}."``,
  ``"findings consistent with {}."``); **German** prompts put each ``synonyms_de`` entry into the
  German templates (``"{}"``, ``"ekg mit {}"``, ``"befund: {}"``, ``"{} nachweisbar"``).
- **Ensembling** (CLIP, Radford et al. 2021, section 3.1.4): every prompt is embedded and
  L2-normalised, the condition's embedding is the mean of its prompts' embeddings, normalised
  again.
- **Descendants** (``expand="descendants"``, default): a condition with children in the
  catalogue hierarchy (PTB-XL's superclass ``MI`` has ``IMI``, ``ASMI`` ... below it) is scored
  by the best of itself and each descendant (each an ensemble of its own prompts): reports
  name the specific finding ("inferiorer infarkt"), rarely the class. ``expand="none"`` uses
  the condition's own prompts only.

Three scores (``method``):

``"similarity"``
    the cosine similarity of the ECG embedding and the condition embedding (a ranking score
    in [-1, 1], not a probability);
``"normal"`` (default)
    ``P = softmax(s * [cos(e, c), cos(e, normal)])[0]``: the condition against the ``NORM``
    ("normal ECG") prompts, with the model's learnt scale ``s``; ``NORM`` itself is set against
    prompts of an abnormal ECG (:data:`ABNORMAL`). A probability-like score whose calibration
    is shared across conditions;
``"negation"``
    ``P = softmax(s * [cos(e, c), cos(e, not c)])[0]`` with "no {}" / "kein {}" prompts
    (:data:`NEGATION`), the positive-vs-negative prompt scheme of CheXzero (Tiu et al. 2022).

Which is best was measured on PTB-XL (``benchmarks/bench_language.py``, ``docs/language.md``):
AUROC depends only on each condition's ranking, where ``similarity`` and ``normal`` differ by
the subtracted normal similarity.

>>> clf = ZeroShotClassifier(embed_texts, scale=50.0)          # doctest: +SKIP
>>> clf.scores(ecg_embeddings, ["AFIB", "MI"])                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError

__all__ = ["ABNORMAL", "METHODS", "NEGATION", "TEMPLATES", "ZeroShotClassifier", "condition_prompts"]

TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{}", "{}.", "ecg shows {}.", "findings consistent with {}."),
    "de": ("{}", "ekg mit {}", "befund: {}", "{} nachweisbar"),
}
NEGATION: dict[str, tuple[str, ...]] = {
    "en": ("no {}.", "no evidence of {}."),
    "de": ("kein {}", "kein hinweis auf {}"),
}
ABNORMAL: dict[str, tuple[str, ...]] = {
    "en": ("abnormal ecg.", "ecg abnormal."),
    "de": ("pathologisches ekg", "abnormales ekg"),
}
NORMAL_ID = "NORM"
METHODS = ("normal", "negation", "similarity")
EXPANSIONS = ("descendants", "none")


def _names(condition: Any, language: str) -> list[str]:
    if language == "en":
        names = [condition.name, *condition.synonyms_en]
    elif language == "de":
        names = list(condition.synonyms_de)
    else:
        names = []
    return list(dict.fromkeys(n.strip() for n in names if n and n.strip()))


def condition_prompts(condition: Any, templates: Mapping[str, Sequence[str]] = TEMPLATES) -> list[str]:
    """Every prompt of one catalogue condition: each of its names in each template of that
    name's language (English: ``name`` + ``synonyms_en``; German: ``synonyms_de``), de-duplicated.

    >>> from ecgfm.labels import load_catalogue
    >>> condition_prompts(load_catalogue()["AFIB"])[:3]
    ['atrial fibrillation', 'atrial fibrillation.', 'ecg shows atrial fibrillation.']
    """
    prompts: list[str] = []
    for language, forms in templates.items():
        for name in _names(condition, language):
            prompts.extend(form.format(name) for form in forms)
    return list(dict.fromkeys(prompts))


class ZeroShotClassifier:
    """Scores catalogue conditions for ECG embeddings from text prompts (module docstring).

    Args:
        embed_texts: ``list[str] -> float [n, E]`` normalised report embeddings (a trained
            model's text side: :meth:`ecgfm.language.portable.LanguageModel.embed_text`).
        catalogue: the conditions (default: the packaged one; pass an extended copy to score
            conditions of your own).
        scale: the model's ``1 / temperature`` (used by the softmax methods).
        method: ``"normal"``, ``"negation"`` or ``"similarity"``.
        expand: ``"descendants"`` or ``"none"``.
        templates: ``{"en": [...], "de": [...]}`` templates with one ``{}``.

    Prompt embeddings are cached per text, so scoring many batches embeds each prompt once.
    """

    def __init__(self, embed_texts: Callable[[list[str]], np.ndarray], catalogue: Any = None, *,
                 scale: float = 100.0, method: str = "normal", expand: str = "descendants",
                 templates: Mapping[str, Sequence[str]] = TEMPLATES) -> None:
        if method not in METHODS:
            raise ValidationError(f"zero-shot method must be one of {', '.join(METHODS)}, got {method!r}")
        if expand not in EXPANSIONS:
            raise ValidationError(f"zero-shot expand must be one of {', '.join(EXPANSIONS)}, got {expand!r}")
        for language, forms in templates.items():
            for form in forms:
                if form.count("{}") != 1:
                    raise ValidationError(f"template {form!r} ({language}) must hold exactly one '{{}}'")
        if catalogue is None:
            from ecgfm.labels import load_catalogue

            catalogue = load_catalogue()
        self.embed_texts = embed_texts
        self.catalogue = catalogue
        self.scale = float(scale)
        self.method = method
        self.expand = expand
        self.templates = {k: tuple(v) for k, v in templates.items()}
        self._cache: dict[str, np.ndarray] = {}

    # -- prompts and their embeddings -------------------------------------------------------------
    def _condition(self, cid: str) -> Any:
        if cid not in self.catalogue:
            hint = [c.id for c in self.catalogue.search(cid, limit=3)] if str(cid).strip() else []
            raise ValidationError(f"zero-shot: {cid!r} is not a catalogue id"
                                  + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                                  + "; add a row to a catalogue CSV to score a new condition")
        return self.catalogue[cid]

    def members(self, cid: str) -> list[str]:
        """The ids whose prompts score ``cid``: itself, then its descendants (``expand``)."""
        self._condition(cid)
        if self.expand == "none":
            return [cid]
        below = self.catalogue.descendants(cid)
        return [cid] + [c.id for c in self.catalogue if c.id in below]

    def prompts(self, cid: str) -> list[str]:
        """The prompts of ``cid`` itself (not of its descendants)."""
        return condition_prompts(self._condition(cid), self.templates)

    def _embed(self, prompts: Sequence[str]) -> np.ndarray:
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if todo:
            x = np.asarray(self.embed_texts(list(todo)), np.float64)
            if x.ndim != 2 or x.shape[0] != len(todo):
                raise ValidationError(f"embed_texts returned shape {x.shape} for {len(todo)} texts")
            for p, v in zip(todo, x):
                self._cache[p] = v
        return np.stack([self._cache[p] for p in prompts])

    def ensemble(self, prompts: Sequence[str]) -> np.ndarray:
        """Normalised mean of the normalised prompt embeddings ``[E]``."""
        if not prompts:
            raise ValidationError("zero-shot: no prompt (the condition has no name or synonyms)")
        x = self._embed(prompts)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        m = x.mean(axis=0)
        return m / max(float(np.linalg.norm(m)), 1e-12)

    def condition_embeddings(self, cid: str) -> np.ndarray:
        """``[M, E]``: one ensemble embedding per member of ``cid`` (itself first)."""
        members = [m for m in self.members(cid) if self.prompts(m)]
        if not members:
            raise ValidationError(f"zero-shot: condition {cid!r} has no name or synonym to prompt with")
        return np.stack([self.ensemble(self.prompts(m)) for m in members])

    def _contrast(self, cid: str) -> np.ndarray | None:
        """The embedding each member is set against (``normal``/``negation``), per member ``[M, E]``."""
        if self.method == "similarity":
            return None
        members = [m for m in self.members(cid) if self.prompts(m)]
        if self.method == "normal":
            if cid == NORMAL_ID or NORMAL_ID not in self.catalogue:
                forms = ABNORMAL if cid == NORMAL_ID else {}
                prompts = [f for lang in self.templates for f in forms.get(lang, ())]
                if not prompts:
                    raise ValidationError(f"zero-shot method 'normal' needs the catalogue id {NORMAL_ID!r}")
                ref = self.ensemble(prompts)
            else:
                ref = self.ensemble(self.prompts(NORMAL_ID))
            return np.repeat(ref[None], len(members), axis=0)
        rows = []
        for m in members:
            cond = self._condition(m)
            prompts = [form.format(name) for lang, forms in NEGATION.items() if lang in self.templates
                       for name in _names(cond, lang) for form in forms]
            rows.append(self.ensemble(prompts))
        return np.stack(rows)

    # -- scores ------------------------------------------------------------------------------------
    def scores(self, ecg: np.ndarray, conditions: Sequence[str]) -> np.ndarray:
        """Scores ``[N, C]`` of ECG embeddings ``[N, E]`` for the condition ids (probabilities in
        [0, 1] for ``normal``/``negation``, cosine similarities for ``similarity``).

        Raises:
            ValidationError: an id not in the catalogue (naming close matches), a condition
                without names, embeddings of the wrong width.
        """
        e = np.asarray(ecg, np.float64)
        if e.ndim != 2:
            raise ValidationError(f"zero-shot: ECG embeddings must be [N, E], got shape {e.shape}")
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        conditions = [str(c) for c in conditions]
        if not conditions:
            raise ValidationError("zero-shot: no condition to score")
        out = np.empty((e.shape[0], len(conditions)), np.float64)
        for j, cid in enumerate(conditions):
            pos = self.condition_embeddings(cid)  # [M, E]
            if pos.shape[1] != e.shape[1]:
                raise ValidationError(f"zero-shot: ECG embeddings have width {e.shape[1]}, the text side {pos.shape[1]}")
            sim = e @ pos.T  # [N, M]
            ref = self._contrast(cid)
            if ref is None:
                out[:, j] = sim.max(axis=1)
                continue
            diff = self.scale * (sim - e @ ref.T)  # [N, M]: log-odds of the member against its contrast
            out[:, j] = 1.0 / (1.0 + np.exp(-diff.max(axis=1)))
        return out
