"""A learned report labeler: free-text ECG reports to PTB-XL statement ids by logistic regression.

The rule labeler (:mod:`ecgfm.labels.report`) states what the text says; PTB-XL's ``scp_codes``
follow coding conventions the text states only loosely (an anterior infarction is ``ASMI``, "st
senkung" is sometimes ``NDT``, sometimes ``ISC_``). This model learns those conventions from
reports that carry codes. It is a plain, inspectable estimator:

- features of one report (:meth:`LearnedLabeler.features`): on the text the rules see (normalised
  by :func:`ecgfm.labels._text.normalize`, PTB-XL's ``Edit:`` annotator notes cut off), word
  uni- and bigrams (scaled to unit length), optionally character n-grams inside words, and the
  rule labeler's findings as ``id x status`` (the rules' negation and uncertainty handling, which
  n-grams see only crudely). Character n-grams are off by default: on PTB-XL's development folds
  they added nothing over words (diagnostic micro-F1 0.664 with 3-5-grams and without, fitted on
  folds 1-6, scored on folds 7-8) and more than tripled the model and the fitting time;
- a vocabulary of the features seen in at least ``min_df`` training reports;
- one-vs-rest logistic regression with an L2 penalty, all statements fitted at once by L-BFGS
  (:func:`_lbfgs`, plain numpy) from zero weights, so the fit is deterministic;
- one decision threshold per statement, chosen on out-of-fold probabilities of a
  cross-validation inside the training data: the statement's own F1-best threshold, shrunk
  towards the one threshold best for all statements pooled in proportion to how few positives
  the statement has (see :func:`_tune_thresholds`).

A fitted model is saved as two plain files, no pickle: ``<name>.npz`` (the weights, intercepts
and thresholds as float32 arrays, read with ``allow_pickle=False``) and ``<name>.json`` (the
classes, the vocabulary, the settings and how it was trained). The shipped model
(:func:`default_learned_labeler`) was trained on PTB-XL folds 1-8 by
``benchmarks/bench_learned_labeler.py --train``; folds 9-10 were never seen by it.

>>> model = default_learned_labeler()
>>> sorted(model.predict(["Vorhofflimmern. Linksschenkelblock."])[0])
['AFIB', 'CLBBB']
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.labels._text import normalize

FORMAT = "ecgfm-learned-labeler"
FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).with_name("models")
DEFAULT_MODEL = MODELS_DIR / "learned_ptbxl.npz"

_WORD = re.compile(r"\w+")
# PTB-XL annotators appended their own codes after "Edit:" ("Edit: NORM 100, (NORM 100)"); they
# are labels, not report text, and a hospital report has none. The rule labeler skips them too.
_EDIT = re.compile(r"\bedit:.*", re.DOTALL)
_ARRAYS = ("coef", "intercept", "thresholds")
_MIN_POSITIVES_TO_TUNE = 5  # fewer out-of-fold positives than this: the pooled threshold
_SHRINK_POSITIVES = 50  # a statement's own threshold counts as much as the pooled one at 50 positives
_THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def ptbxl_statements() -> tuple[str, ...]:
    """The 71 PTB-XL statement ids (diagnostic, form and rhythm) in catalogue order."""
    from ecgfm.labels import load_catalogue

    groups = ("diagnostic", "form", "rhythm")
    return tuple(c.id for c in load_catalogue() if any(c.in_ptbxl(g) for g in groups))


def rules_fingerprint() -> str:
    """SHA-256 over the shipped rule files (names and bytes): which rules made the rule features."""
    from ecgfm.labels._rules import RULES_DIR

    h = hashlib.sha256()
    for path in sorted(RULES_DIR.glob("*.tsv")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _vocabulary_sha256(vocabulary: Sequence[str], classes: Sequence[str]) -> str:
    """Ties the weights file to its vocabulary file: row ``i`` of ``coef`` is feature ``i``."""
    blob = json.dumps([list(vocabulary), list(classes)], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class LearnedLabeler:
    """Multi-label logistic regression from report text to statement ids (estimator pattern).

    Args:
        classes: the ids it predicts, in column order; ``None`` (default) is the 71 PTB-XL
            statements of the catalogue.
        word_ngrams: the longest word n-gram (1: words only, 2: words and word pairs).
        char_ngrams: ``(shortest, longest)`` character n-grams inside a word (the word padded
            with one space each side); ``None`` (default) for none.
        rule_features: add the rule labeler's findings (``r:<id>:<status>``) as features.
        min_df: a feature enters the vocabulary when at least this many training reports have it.
        l2: the L2 penalty on the weights (per report: the loss is a mean over reports).
        max_iter: L-BFGS iterations of each fit.
        cv_folds: folds of the cross-validation that tunes the per-statement thresholds when
            :meth:`fit` gets no ``folds``; 0 or 1 keeps every threshold at 0.5.
        seed: the seed of the random fold assignment (the fit itself is deterministic).

    Learned state (set by :meth:`fit` or :meth:`load`): ``classes_``, ``vocabulary_`` (feature
    string -> row of ``coef_``), ``coef_`` float32 ``[n_features, n_classes]``, ``intercept_``
    and ``thresholds_`` float32 ``[n_classes]``, ``info_`` (how it was trained). After
    :meth:`fit` with cross-validation, ``oof_proba_`` holds the out-of-fold probabilities of the
    training reports (not saved).
    """

    def __init__(
        self,
        *,
        classes: Sequence[str] | None = None,
        word_ngrams: int = 2,
        char_ngrams: tuple[int, int] | None = None,
        rule_features: bool = True,
        min_df: int = 2,
        l2: float = 1e-4,
        max_iter: int = 300,
        cv_folds: int = 5,
        seed: int = 0,
    ) -> None:
        if word_ngrams < 1:
            raise ValidationError(f"word_ngrams must be >= 1, got {word_ngrams}")
        if char_ngrams is not None and not (1 <= char_ngrams[0] <= char_ngrams[1]):
            raise ValidationError(f"char_ngrams must be (shortest, longest) with 1 <= shortest <= longest, got {char_ngrams}")
        if min_df < 1 or l2 < 0 or max_iter < 1 or cv_folds < 0:
            raise ValidationError(f"need min_df >= 1, l2 >= 0, max_iter >= 1, cv_folds >= 0; got {min_df}, {l2}, {max_iter}, {cv_folds}")
        self.classes = None if classes is None else tuple(classes)
        self.word_ngrams = word_ngrams
        self.char_ngrams = None if char_ngrams is None else (int(char_ngrams[0]), int(char_ngrams[1]))
        self.rule_features = rule_features
        self.min_df = min_df
        self.l2 = l2
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.seed = seed

    # --- settings -----------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return {
            "classes": None if self.classes is None else list(self.classes),
            "word_ngrams": self.word_ngrams,
            "char_ngrams": None if self.char_ngrams is None else list(self.char_ngrams),
            "rule_features": self.rule_features,
            "min_df": self.min_df,
            "l2": self.l2,
            "max_iter": self.max_iter,
            "cv_folds": self.cv_folds,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        params = self.get_params()
        if params["classes"] is not None:
            params["classes"] = f"<{len(params['classes'])} ids>"
        return f"LearnedLabeler({', '.join(f'{k}={v!r}' for k, v in params.items())})"

    # --- features -----------------------------------------------------------------------------

    def features(self, text: str) -> dict[str, float]:
        """The features of one report and their values (each block scaled to unit length).

        Args:
            text: the report as written (any case, whitespace, language).

        Returns:
            Feature string -> value: ``w:<words>`` word n-grams, ``c:<chars>`` character
            n-grams, ``r:<id>:<status>`` rule findings.

        >>> sorted(LearnedLabeler(char_ngrams=None, rule_features=False).features("AV-Block I"))
        ['w:av', 'w:av block', 'w:block', 'w:block i', 'w:i']
        """
        norm = _EDIT.sub("", normalize(text)[0]) if text else ""
        words = _WORD.findall(norm)
        out: dict[str, float] = {}
        grams = {"w:" + " ".join(words[i:i + n]) for n in range(1, self.word_ngrams + 1) for i in range(len(words) - n + 1)}
        _add_block(out, grams)
        if self.char_ngrams is not None:
            lo, hi = self.char_ngrams
            chars: set[str] = set()
            for w in set(words):
                padded = f" {w} "
                for n in range(lo, min(hi, len(padded)) + 1):
                    chars.update("c:" + padded[i:i + n] for i in range(len(padded) - n + 1))
            _add_block(out, chars)
        if self.rule_features and norm:
            from ecgfm.labels.report import default_labeler, resolve

            found = resolve(default_labeler().label(text))
            # Plain 1s, not scaled: a rule finding is strong evidence on its own.
            out.update((f"r:{cid}:{status}", 1.0) for cid, status in found.items())
        return out

    def _matrix(self, feats: Iterable[dict[str, float]]) -> Any:
        """CSR ``[n_reports, n_features]`` over the fitted vocabulary (unknown features dropped)."""
        from scipy.sparse import csr_matrix

        vocab = self.vocabulary_
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for f in feats:
            for name, value in f.items():
                j = vocab.get(name)
                if j is not None:
                    indices.append(j)
                    data.append(value)
            indptr.append(len(indices))
        x = csr_matrix(
            (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), np.asarray(indptr, dtype=np.int64)),
            shape=(len(indptr) - 1, len(vocab)),
        )
        # Features come out of sets, whose order changes with Python's per-process string hash
        # seed; sorted columns fix the order of every floating-point sum, so fits and
        # probabilities are bit-identical from one run to the next.
        x.sort_indices()
        return x

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], label_sets: Sequence[Iterable[str]], *, folds: Sequence[int] | None = None) -> LearnedLabeler:
        """Fit the vocabulary, the weights and the per-statement thresholds.

        Args:
            texts: the reports, ``n`` strings.
            label_sets: the ids of each report (every id must be one of the classes).
            folds: an optional fold number per report for the threshold cross-validation (e.g.
                PTB-XL's ``strat_fold``, so that one patient's reports stay in one fold); default:
                ``cv_folds`` random folds drawn with ``seed``.

        Returns:
            ``self``, fitted.
        """
        from scipy.special import expit

        texts = list(texts)
        label_sets = [set(s) for s in label_sets]
        if len(texts) != len(label_sets):
            raise ValidationError(f"fit: {len(texts)} texts but {len(label_sets)} label sets")
        if not texts:
            raise ValidationError("fit: no training reports")
        classes = self.classes if self.classes is not None else ptbxl_statements()
        column = {c: k for k, c in enumerate(classes)}
        unknown = sorted({c for s in label_sets for c in s} - set(column))
        if unknown:
            raise ValidationError(f"fit: label ids not among the {len(classes)} classes: {', '.join(unknown)}")
        y = np.zeros((len(texts), len(classes)), dtype=np.float64)
        for i, s in enumerate(label_sets):
            y[i, [column[c] for c in s]] = 1.0
        feats = [self.features(t) for t in texts]
        df = Counter(name for f in feats for name in f)
        vocabulary = sorted(name for name, n in df.items() if n >= self.min_df)
        self.classes_ = tuple(classes)
        self.vocabulary_ = {name: j for j, name in enumerate(vocabulary)}
        x = self._matrix(feats)

        fold_of = self._folds(len(texts), folds)
        thresholds = np.full(len(classes), 0.5)
        cv: dict[str, Any] = {"folds": 0}
        self.oof_proba_: np.ndarray | None = None
        if fold_of is not None:
            # Out-of-fold probabilities: each report scored by a model that never saw it. The
            # vocabulary is shared (it uses no labels); the weights are not.
            oof = np.zeros_like(y)
            for k in np.unique(fold_of):
                held = fold_of == k
                w, b = _fit_logreg(x[~held], y[~held], self.l2, self.max_iter)
                oof[held] = expit(x[held] @ w + b)
            thresholds, pooled = _tune_thresholds(oof, y)
            cv = {"folds": int(len(np.unique(fold_of))), "pooled_threshold": pooled,
                  "oof_micro_f1_at_0.5": _micro_f1(oof >= 0.5, y), "oof_micro_f1_tuned": _micro_f1(oof >= thresholds, y)}
            self.oof_proba_ = oof
        w, b = _fit_logreg(x, y, self.l2, self.max_iter)
        # Stored as float32, and used as stored, so a saved and loaded model predicts identically.
        self.coef_ = w.astype(np.float32)
        self.intercept_ = b.astype(np.float32)
        self.thresholds_ = thresholds.astype(np.float32)
        self.info_ = {
            "n_reports": len(texts),
            "positives": {c: int(n) for c, n in zip(classes, y.sum(axis=0)) if n},
            "cross_validation": cv,
            "rules_sha256": rules_fingerprint() if self.rule_features else None,
        }
        return self

    def _folds(self, n: int, folds: Sequence[int] | None) -> np.ndarray | None:
        if folds is not None:
            fold_of = np.asarray(folds)
            if fold_of.shape != (n,):
                raise ValidationError(f"fit: folds has {fold_of.size} entries for {n} reports")
            return fold_of if len(np.unique(fold_of)) >= 2 else None
        if self.cv_folds < 2 or n < self.cv_folds:
            return None
        rng = np.random.default_rng(self.seed)
        return rng.permutation(np.arange(n) % self.cv_folds)

    # --- prediction ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValidationError("LearnedLabeler is not fitted: call fit() or load() first")

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """The probability of each class for each report.

        Args:
            texts: the reports.

        Returns:
            float64 ``[n_reports, n_classes]``, columns in the order of ``classes_``.
        """
        from scipy.special import expit

        w, b = self._weights()
        x = self._matrix(self.features(t) for t in texts)
        return expit(x @ w + b)

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``coef_`` and ``intercept_`` as float64, converted once per fitted or loaded model."""
        self._check_fitted()
        cached = getattr(self, "_weights64", None)
        if cached is None or cached[0] is not self.coef_ or cached[1] is not self.intercept_:
            cached = (self.coef_, self.intercept_, self.coef_.astype(np.float64), self.intercept_.astype(np.float64))
            self._weights64 = cached
        return cached[2], cached[3]

    def predict(self, texts: Iterable[str]) -> list[set[str]]:
        """The ids each report is predicted to carry (probability at or above the class threshold).

        Args:
            texts: the reports.

        Returns:
            One set of ids per report.
        """
        hits = self.predict_proba(texts) >= self.thresholds_.astype(np.float64)
        return [{self.classes_[k] for k in np.flatnonzero(row)} for row in hits]

    def top_features(self, cid: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` features with the largest weights for one class: what the model reads as ``cid``."""
        self._check_fitted()
        if cid not in self.classes_:
            raise ValidationError(f"{cid!r} is not a class of this model (classes: {', '.join(self.classes_)})")
        col = self.coef_[:, self.classes_.index(cid)]
        names = list(self.vocabulary_)
        return [(names[j], float(col[j])) for j in np.argsort(-col, kind="stable")[:k]]

    # --- files --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model as ``<stem>.npz`` (arrays) and ``<stem>.json`` (vocabulary, classes, settings).

        Args:
            path: the ``.npz`` path (the suffix is added if missing); the JSON goes beside it.

        Returns:
            The ``.npz`` path written.
        """
        self._check_fitted()
        npz = Path(path).with_suffix(".npz")
        npz.parent.mkdir(parents=True, exist_ok=True)
        vocabulary = list(self.vocabulary_)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": self.get_params(),
            "classes": list(self.classes_),
            "info": self.info_,
            "vocabulary_sha256": _vocabulary_sha256(vocabulary, self.classes_),
            "vocabulary": vocabulary,
        }
        with npz.open("wb") as f:
            np.savez_compressed(f, coef=self.coef_, intercept=self.intercept_, thresholds=self.thresholds_,
                                vocabulary_sha256=np.frombuffer(meta["vocabulary_sha256"].encode(), dtype=np.uint8))
        npz.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        return npz

    @classmethod
    def load(cls, path: str | Path) -> LearnedLabeler:
        """Read a model written by :meth:`save`.

        Args:
            path: the ``.npz`` file (its ``.json`` must lie beside it).

        Returns:
            The fitted labeler.

        Raises:
            ValidationError: a file is missing or malformed, or the arrays do not fit the
                vocabulary and classes (naming the file and what differs).
        """
        npz = Path(path).with_suffix(".npz")
        meta_path = npz.with_suffix(".json")
        for p in (npz, meta_path):
            if not p.is_file():
                raise ValidationError(f"{p}: learned labeler file not found (a model is a .npz and a .json side by side)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValidationError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValidationError(f"{meta_path}: not an ecgfm learned labeler (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValidationError(f"{meta_path}: format_version {meta.get('format_version')!r}, this ecgfm reads {FORMAT_VERSION}")
        try:
            vocabulary = [str(v) for v in meta["vocabulary"]]
            classes = tuple(str(c) for c in meta["classes"])
            params = dict(meta["params"])
        except (KeyError, TypeError) as e:
            raise ValidationError(f"{meta_path}: missing or malformed field {e}") from None
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in (*_ARRAYS, "vocabulary_sha256")}
        except KeyError as e:
            raise ValidationError(f"{npz}: missing array {e}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValidationError(f"{npz}: not a readable .npz of plain arrays ({e})") from None
        d, k = len(vocabulary), len(classes)
        expected = {"coef": (d, k), "intercept": (k,), "thresholds": (k,)}
        for name, shape in expected.items():
            a = arrays[name]
            if a.shape != shape or a.dtype != np.float32:
                raise ValidationError(
                    f"{npz}: array {name!r} is {a.dtype}{list(a.shape)}, expected float32{list(shape)} "
                    f"for {d} vocabulary features x {k} classes in {meta_path.name}")
        stored = arrays["vocabulary_sha256"].tobytes().decode("ascii", "replace")
        actual = _vocabulary_sha256(vocabulary, classes)
        if stored != actual or meta.get("vocabulary_sha256") != actual:
            raise ValidationError(
                f"{npz}: the weights were fitted on another vocabulary or class list than {meta_path.name} holds "
                f"(vocabulary sha256 {stored[:12]} in the .npz, {actual[:12]} computed from the .json)")
        if len(set(vocabulary)) != d:
            raise ValidationError(f"{meta_path}: the vocabulary repeats a feature")
        params.pop("classes", None)
        char = params.get("char_ngrams")
        model = cls(classes=classes, **{**params, "char_ngrams": None if char is None else tuple(char)})
        model.classes_ = classes
        model.vocabulary_ = {name: j for j, name in enumerate(vocabulary)}
        model.coef_, model.intercept_, model.thresholds_ = arrays["coef"], arrays["intercept"], arrays["thresholds"]
        model.info_ = dict(meta.get("info") or {})
        trained_on = model.info_.get("rules_sha256")
        if model.rule_features and trained_on and trained_on != rules_fingerprint():
            warnings.warn(
                f"{npz}: trained with other rule files than the ones installed (rules sha256 {trained_on[:12]} vs "
                f"{rules_fingerprint()[:12]}); its rule features may mean something else now: retrain it "
                "(python benchmarks/bench_learned_labeler.py --train)", stacklevel=2)
        return model


def _add_block(out: dict[str, float], names: set[str]) -> None:
    """Add a block of binary features scaled to unit L2 length, so long reports weigh no more."""
    if names:
        v = 1.0 / math.sqrt(len(names))
        for name in names:
            out[name] = v


def _fit_logreg(x: Any, y: np.ndarray, l2: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest L2 logistic regression for all columns of ``y`` at once.

    Minimises ``mean_i sum_k BCE(y_ik, x_i . w_k + b_k) + l2/2 |W|^2`` (intercepts unpenalised)
    by L-BFGS (:func:`_lbfgs`) from zero weights and the classes' log-odds as intercepts. The
    columns do not interact, so one joint fit reaches the same optimum as one fit per column.

    Returns:
        ``(W [n_features, n_classes], b [n_classes])``, float64.
    """
    from scipy.special import expit

    n, d = x.shape
    k = y.shape[1]
    xt = x.T.tocsr()
    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * k].reshape(d, k)
        b = theta[d * k:]
        z = x @ w + b
        loss = float((np.logaddexp(0.0, z) - y * z).sum()) / n + 0.5 * l2 * float(w.ravel() @ w.ravel())
        g = (expit(z) - y) / n
        return loss, np.concatenate([(xt @ g + l2 * w).ravel(), g.sum(axis=0)])

    theta = _lbfgs(loss_grad, np.concatenate([np.zeros(d * k), np.log(prior / (1 - prior))]), max_iter)
    return theta[: d * k].reshape(d, k), theta[d * k:]


def _lbfgs(
    loss_grad: Any, x0: np.ndarray, max_iter: int, memory: int = 10, ftol: float = 1e-9, gtol: float = 1e-6
) -> np.ndarray:
    """Minimise a smooth function by L-BFGS with a backtracking (Armijo) line search.

    Written out here because scipy's ``L-BFGS-B`` spends most of its time in its own bound
    handling for a million unbounded weights (24 of 27 s of a fit); this costs a few vector
    operations per iteration and is deterministic.

    Args:
        loss_grad: ``theta -> (loss, gradient)``.
        x0: the starting point.
        max_iter: iterations at most.
        memory: the correction pairs kept.
        ftol: stop when an iteration lowers the loss by less than ``ftol * max(|loss|, 1)``.
        gtol: stop when no gradient entry exceeds this.

    Returns:
        The last point.
    """
    x = x0.copy()
    f, g = loss_grad(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    rho: list[float] = []
    for _ in range(max_iter):
        if float(np.abs(g).max()) <= gtol:
            break
        # Two-loop recursion: d = -H g with H the L-BFGS inverse-Hessian estimate.
        q = g.copy()
        alphas = []
        for s, yv, r in zip(reversed(s_hist), reversed(y_hist), reversed(rho)):
            a = r * float(s @ q)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            q /= max(float(np.linalg.norm(g)), 1e-12)  # first step: unit length
        for s, yv, r, a in zip(s_hist, y_hist, rho, reversed(alphas)):
            q += (a - r * float(yv @ q)) * s
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction (rounding): restart from steepest descent
            s_hist, y_hist, rho = [], [], []
            direction = -g / max(float(np.linalg.norm(g)), 1e-12)
            slope = float(g @ direction)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = loss_grad(x_new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return x
        s, yv = x_new - x, g_new - g
        sy = float(s @ yv)
        if sy > 1e-12:  # keep the estimate positive definite
            s_hist.append(s)
            y_hist.append(yv)
            rho.append(1.0 / sy)
            if len(s_hist) > memory:
                del s_hist[0], y_hist[0], rho[0]
        done = f - f_new <= ftol * max(abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        if done:
            break
    return x


def _tune_thresholds(prob: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-column thresholds from out-of-fold probabilities.

    A column's own F1-best threshold is noisy when it has few positives, and one threshold for
    all pooled (the micro-F1-best) ignores that rare statements need lower ones. So each column
    gets the average of the two weighted by evidence: ``(n * own + m * pooled) / (n + m)`` with
    ``n`` its positives and ``m`` = ``_SHRINK_POSITIVES``; the pooled one alone below
    ``_MIN_POSITIVES_TO_TUNE`` positives. Ties on the grid go to the value nearest the pooled one.

    Returns:
        ``(thresholds [n_columns], pooled)``.
    """
    grid = _THRESHOLD_GRID
    pooled = float(grid[int(np.argmax([_micro_f1(prob >= t, y) for t in grid]))])
    out = np.full(prob.shape[1], pooled)
    near = grid[np.argsort(np.abs(grid - pooled), kind="stable")]
    for k in range(prob.shape[1]):
        pos = y[:, k] > 0
        n = int(pos.sum())
        if n < _MIN_POSITIVES_TO_TUNE:
            continue
        pred = prob[:, k][:, None] >= near[None, :]
        tp = (pred & pos[:, None]).sum(axis=0)
        own = float(near[int(np.argmax(2 * tp / (pred.sum(axis=0) + n)))])
        out[k] = (n * own + _SHRINK_POSITIVES * pooled) / (n + _SHRINK_POSITIVES)
    return out, pooled


def _micro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float((pred & (y > 0)).sum())
    denom = float(pred.sum() + (y > 0).sum())
    return 2 * tp / denom if denom else 0.0


@lru_cache(maxsize=1)
def default_learned_labeler() -> LearnedLabeler:
    """The shipped model (trained on PTB-XL folds 1-8), loaded on first use and then shared.

    Raises:
        ValidationError: the model files are not installed (``labels/models/*.npz`` and
            ``*.json`` must be package data).
    """
    return LearnedLabeler.load(DEFAULT_MODEL)
