"""Report-generation metrics: corpus BLEU-4, ROUGE-L, and clinical label precision/recall/F1.

Words. Both texts are lower-cased and split into words and punctuation marks
(:func:`words`: runs of letters/digits, each other non-space character on its own), so
"sinus rhythm." is ``["sinus", "rhythm", "."]``.

**BLEU** (Papineni et al., ACL 2002), corpus level: for each order ``n = 1..N`` the clipped
n-gram matches of all hypotheses are summed and divided by the summed hypothesis n-gram counts
(``p_n``); ``BLEU = BP * exp(mean_n log p_n)`` with the brevity penalty ``BP = 1`` if ``c > r``
else ``exp(1 - r / c)`` (``c``: hypothesis words, ``r``: for each hypothesis the length of the
reference closest to it, summed). Smoothing: with ``smoothing="epsilon"`` (default) an order
with no match at all gets ``p_n = 0.1 / (hypothesis n-grams)`` (Chen & Cherry 2014, method 1, as
NLTK's ``SmoothingFunction().method1``) instead of making BLEU 0; ``"none"`` is the unsmoothed
original. On a whole test set no order lacks matches and both agree.

**ROUGE-L** (Lin, 2004, section 3.1): per report, with ``LCS`` the longest common subsequence
of words, ``R = LCS / len(reference)``, ``P = LCS / len(hypothesis)``, ``F = (1 + b^2) R P /
(R + b^2 P)``; ``b = 1`` (the F1 of Google's ``rouge-score``; COCO's caption evaluation uses
``b = 1.2``). The corpus figure is the mean F over reports (two empty texts score 1, one empty
text 0).

**Clinical label scores**: each report (generated and reference) goes through the rule-based
report labeler (:func:`ecgfm.labels.report.label_report`; negated findings are not labels,
uncertain ones are, as PTB-XL counts them) and the label sets are compared: micro precision,
recall and F1 over all (report, label) pairs; macro F1 over the labels present in at least one
reference; and per label. This asks whether the generated text *says the same clinical
things*, which BLEU and ROUGE do not: "no infarction" and "infarction" differ by one word.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ecgfm.errors import ValidationError

__all__ = ["clinical_label_scores", "corpus_bleu", "lcs_length", "report_labels", "rouge_l", "words"]

_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)
SMOOTHING = ("epsilon", "none")


def words(text: str | None) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` (``None`` gives ``[]``)."""
    if text is None or text != text:
        return []
    return _WORDS.findall(str(text).lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _references(references: Sequence[str | Sequence[str]], n_hyp: int) -> list[list[list[str]]]:
    if len(references) != n_hyp:
        raise ValidationError(f"{n_hyp} hypotheses but {len(references)} references")
    out = []
    for ref in references:
        refs = [ref] if isinstance(ref, str) or ref is None else list(ref)
        if not refs:
            raise ValidationError("every hypothesis needs at least one reference")
        out.append([words(r) for r in refs])
    return out


def corpus_bleu(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], *, max_n: int = 4,
                smoothing: str = "epsilon", epsilon: float = 0.1) -> dict[str, Any]:
    """Corpus BLEU (see the module docstring).

    Args:
        references: per hypothesis one reference text, or a list of them.
        hypotheses: the generated texts.
        max_n: the highest n-gram order (4: BLEU-4).
        smoothing: ``"epsilon"`` or ``"none"``.
        epsilon: the numerator given to an order without matches.

    Returns:
        ``{"bleu", "precisions": [p_1 ... p_N], "brevity_penalty", "hypothesis_length",
        "reference_length"}``.

    >>> round(corpus_bleu(["the cat is on the mat"], ["the cat is on the mat"])["bleu"], 6)
    1.0
    """
    if smoothing not in SMOOTHING:
        raise ValidationError(f"smoothing must be one of {', '.join(SMOOTHING)}, got {smoothing!r}")
    if max_n < 1:
        raise ValidationError(f"max_n must be >= 1, got {max_n}")
    hyps = [words(h) for h in hypotheses]
    refs = _references(references, len(hyps))
    matches, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for hyp, rs in zip(hyps, refs):
        c += len(hyp)
        r += min((len(x) for x in rs), key=lambda length: (abs(length - len(hyp)), length))
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            most: Counter[tuple[str, ...]] = Counter()
            for x in rs:
                most |= _ngrams(x, n)  # the maximum count in any one reference
            matches[n - 1] += sum(min(k, most[g]) for g, k in counts.items())
            totals[n - 1] += sum(counts.values())
    precisions = []
    for m, t in zip(matches, totals):
        if t == 0:
            precisions.append(0.0)
        elif m == 0:
            precisions.append(epsilon / t if smoothing == "epsilon" else 0.0)
        else:
            precisions.append(m / t)
    bp = 1.0 if c > r else (math.exp(1 - r / c) if c > 0 else 0.0)
    bleu = bp * math.exp(sum(math.log(p) for p in precisions) / max_n) if min(precisions) > 0 else 0.0
    return {"bleu": bleu, "precisions": precisions, "brevity_penalty": bp, "hypothesis_length": c,
            "reference_length": r}


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (dynamic programming, O(|a||b|))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(references: Sequence[str], hypotheses: Sequence[str], *, beta: float = 1.0) -> dict[str, Any]:
    """ROUGE-L (see the module docstring).

    Returns:
        ``{"rouge_l": mean F, "precision": mean P, "recall": mean R, "per_report": [F, ...]}``.

    >>> rouge_l(["police killed the gunman"], ["police kill the gunman"])["rouge_l"]
    0.75
    """
    if len(references) != len(hypotheses):
        raise ValidationError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if beta <= 0:
        raise ValidationError(f"beta must be > 0, got {beta}")
    fs, ps, rs = [], [], []
    for ref, hyp in zip(references, hypotheses):
        a, b = words(ref), words(hyp)
        if not a and not b:
            f = p = rec = 1.0
        elif not a or not b:
            f = p = rec = 0.0
        else:
            lcs = lcs_length(a, b)
            rec, p = lcs / len(a), lcs / len(b)
            f = 0.0 if lcs == 0 else (1 + beta ** 2) * rec * p / (rec + beta ** 2 * p)
        fs.append(f)
        ps.append(p)
        rs.append(rec)
    n = max(len(fs), 1)
    return {"rouge_l": sum(fs) / n, "precision": sum(ps) / n, "recall": sum(rs) / n, "per_report": fs}


def report_labels(texts: Iterable[str | None], *, uncertain: bool = True,
                  language: str | None = None) -> list[set[str]]:
    """Catalogue ids each report states, by the rule-based labeler (negated findings dropped)."""
    from ecgfm.labels.report import label_report, positive_ids

    out = []
    for text in texts:
        if text is None or text != text or not str(text).strip():
            out.append(set())
        else:
            out.append(positive_ids(label_report(str(text), language=language), uncertain=uncertain))
    return out


def clinical_label_scores(references: Sequence[str | None], hypotheses: Sequence[str | None], *,
                          ids: Iterable[str] | None = None, uncertain: bool = True) -> dict[str, Any]:
    """Label precision/recall/F1 of generated reports against references (module docstring).

    Args:
        references, hypotheses: texts, one pair per record.
        ids: restrict to these catalogue ids (e.g. PTB-XL's 71 statements); None: every id the
            labeler finds.
        uncertain: count uncertain findings as labels (PTB-XL's convention).

    Returns:
        ``{"micro_precision", "micro_recall", "micro_f1", "macro_f1", "n_labels",
        "example_f1", "per_label": {id: {"precision", "recall", "f1", "support"}}}``;
        ``example_f1`` is the mean over records of the F1 of their two label sets (1 when both
        are empty).
    """
    if len(references) != len(hypotheses):
        raise ValidationError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    ref_sets = report_labels(references, uncertain=uncertain)
    hyp_sets = report_labels(hypotheses, uncertain=uncertain)
    return label_set_scores(ref_sets, hyp_sets, ids=ids)


def label_set_scores(ref_sets: Sequence[set[str]], hyp_sets: Sequence[set[str]], *,
                     ids: Iterable[str] | None = None) -> dict[str, Any]:
    """:func:`clinical_label_scores` on label sets already extracted."""
    keep = None if ids is None else set(ids)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    example = []
    for ref, hyp in zip(ref_sets, hyp_sets):
        if keep is not None:
            ref, hyp = ref & keep, hyp & keep
        for i in ref & hyp:
            tp[i] += 1
        for i in hyp - ref:
            fp[i] += 1
        for i in ref - hyp:
            fn[i] += 1
        both = len(ref) + len(hyp)
        example.append(1.0 if both == 0 else 2 * len(ref & hyp) / both)
    t, p_, n_ = sum(tp.values()), sum(fp.values()), sum(fn.values())
    precision = t / (t + p_) if t + p_ else 0.0
    recall = t / (t + n_) if t + n_ else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_label = {}
    for i in sorted(set(tp) | set(fp) | set(fn)):
        pi = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
        ri = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
        fi = 2 * pi * ri / (pi + ri) if pi + ri else 0.0
        per_label[i] = {"precision": pi, "recall": ri, "f1": fi, "support": tp[i] + fn[i]}
    supported = [v["f1"] for v in per_label.values() if v["support"] > 0]
    return {"micro_precision": precision, "micro_recall": recall, "micro_f1": f1,
            "macro_f1": sum(supported) / len(supported) if supported else 0.0, "n_labels": len(supported),
            "example_f1": sum(example) / len(example) if example else 0.0, "per_label": per_label}
