"""The PhysioNet/CinC 2020 and 2021 challenge metric, exactly as the official scorer defines it.

The challenge scores multi-label 12-lead diagnoses (SNOMED CT codes) with a weight matrix that
gives partial credit for clinically close mistakes (predicting atrial flutter for atrial
fibrillation earns 0.5, not 0). This module reproduces ``evaluate_model.py`` of the 2021
challenge (``physionetchallenges/evaluation-2021``), vectorised:

1. **Classes** are the header entries of ``weights.csv``; codes the challenge scores as the same
   diagnosis are joined by ``|`` and form one class (``713427006|59118001`` is complete right
   bundle branch block *or* right bundle branch block). A record is positive for a class when any
   of its codes is in the class; codes in no class are unscored and ignored
   (:meth:`ChallengeWeights.map_codes`).
2. **Modified confusion matrix** ``A`` [K, K] (rows: labels, columns: outputs): each record ``i``
   adds ``1 / n_i`` to ``A[j, k]`` for every labelled class ``j`` and every output class ``k``,
   with ``n_i = max(1, |labels_i ∪ outputs_i|)``, the number of classes positive in the labels
   or the outputs (:func:`modified_confusion_matrix`).
3. **Score** ``s(outputs) = nansum(W * A)``. The reported metric is normalised between the
   *inactive* classifier, which outputs only the normal class (sinus rhythm, SNOMED
   ``426783006``) for every record, and the perfect classifier (outputs = labels)::

       challenge score = (s(outputs) - s(inactive)) / (s(labels) - s(inactive))

   so a perfect classifier scores 1, always answering "sinus rhythm" scores 0, and worse than that
   is negative. Where ``s(labels) == s(inactive)`` the score is 0 (2021 scorer).

The 2020 challenge used the same formula (its final scorer also normalises by
``|labels ∪ outputs|``) with its own 27-class ``weights.csv``, in which equivalent codes are
separate rows with identical weights; pass ``equivalent=EQUIVALENT_2020`` to
:meth:`ChallengeWeights.from_csv` to merge them as that scorer did. Early 2020 scorer versions
normalised by the number of outputs only; they are not reproduced.

The other official summary numbers are here too: recording-wise accuracy
(:func:`challenge_accuracy`), macro F-measure (:func:`challenge_f_measure`), and the 2020
unofficial-phase macro F-beta / G-beta with beta = 2 (:func:`challenge_beta_measures`).
AUROC and AUPRC belong to :mod:`ecgfm.evaluate.metrics`.

>>> w = ChallengeWeights.from_csv("weights.csv")            # doctest: +SKIP
>>> y = w.map_codes([["164889003"], ["59118001", "426177001"]])  # doctest: +SKIP
>>> challenge_score(y, y, w)                                  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ecgfm.errors import ReadError, ValidationError

if TYPE_CHECKING:
    from ecgfm.labels.catalogue import Catalogue

#: SNOMED CT code of sinus rhythm, the challenge's "normal" class: the inactive classifier
#: outputs it, and only it, for every record (2020 and 2021).
NORMAL_CLASS = "426783006"

#: The code groups the 2020 and 2021 challenges score as one diagnosis (CRBBB/RBBB, PAC/SVPB,
#: PVC/VPB). The 2021 ``weights.csv`` joins them with ``|`` already (plus CLBBB/LBBB); the 2020
#: table lists them as separate rows, merged by ``ChallengeWeights.from_csv(equivalent=...)``.
EQUIVALENT_2020: tuple[tuple[str, ...], ...] = (
    ("713427006", "59118001"),
    ("284470004", "63593006"),
    ("427172004", "17338001"),
)


@dataclass(frozen=True, eq=False)
class ChallengeWeights:
    """The scored classes of a challenge weights table and its weight matrix.

    Build it with :meth:`from_csv`. Attributes:
        classes: class keys in table order, as the header writes them (``"164889003"``,
            ``"713427006|59118001"``).
        codes: the SNOMED CT codes of each class (a frozenset per class, same order).
        weights: float64 [K, K]; ``weights[j, k]`` is the credit for outputting class ``k`` on a
            record labelled ``j`` (1 on the diagonal). Empty or ``nan`` cells are NaN and count as
            0 in the score, as the official ``np.nansum`` does.
        names: short names per class (``"AF"``, ``"CRBBB|RBBB"``) when an abbreviation table was
            given, else the class keys.
        source: the file the table was read from.
    """

    classes: tuple[str, ...]
    codes: tuple[frozenset[str], ...]
    weights: np.ndarray
    names: tuple[str, ...] = ()
    source: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        k = len(self.classes)
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (k, k) or len(self.codes) != k:
            raise ValidationError(
                f"{self.source or 'challenge weights'}: {k} classes but a weight matrix of shape "
                f"{w.shape} and {len(self.codes)} code sets"
            )
        w.setflags(write=False)
        object.__setattr__(self, "weights", w)
        if not self.names:
            object.__setattr__(self, "names", tuple(self.classes))
        index: dict[str, int] = {}
        for j, (key, codes) in enumerate(zip(self.classes, self.codes)):
            for code in codes:
                if code in index:
                    raise ValidationError(
                        f"{self.source or 'challenge weights'}: SNOMED code {code} is in two classes "
                        f"({self.classes[index[code]]!r} and {key!r})"
                    )
                index[code] = j
        object.__setattr__(self, "_index", index)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        equivalent: Iterable[Iterable[str]] = (),
        abbreviations: str | os.PathLike[str] | None = None,
    ) -> ChallengeWeights:
        """Read an official challenge ``weights.csv`` (2020 or 2021 layout).

        The table is square: a header row of class keys after an empty corner cell, then one row
        per class, its key first. Keys with ``|`` are one class of equivalent codes (2021).

        Args:
            path: the weights table.
            equivalent: groups of codes to score as one class, for tables that list equivalent
                codes as separate rows (2020: :data:`EQUIVALENT_2020`). The rows of a group must
                have identical weights; the merged class keeps the first row's position and its
                key joins the codes with ``|``.
            abbreviations: optional ``weights_abbreviations.csv`` of the same shape, whose header
                gives :attr:`names`.

        Raises:
            ReadError: the file is missing, not square, has row keys that differ from the header,
                a non-numeric weight, or equivalent rows whose weights differ.
        """
        rows = _read_table(path)
        header = rows[0][1:]
        keys = [r[0] for r in rows[1:]]
        if len(keys) != len(header) or any(len(r) != len(header) + 1 for r in rows[1:]):
            raise ReadError(
                path,
                f"weights table is not square: {len(header)} header classes, {len(keys)} rows, "
                f"row lengths {sorted({len(r) - 1 for r in rows[1:]})}",
            )
        sets = [tuple(c.strip() for c in k.split("|") if c.strip()) for k in header]
        for n, (key, row_key) in enumerate(zip(header, keys), start=2):
            if _split_key(row_key) != _split_key(key):
                raise ReadError(path, f"line {n}: row class {row_key!r} differs from header class {key!r}")
        values = np.empty((len(header), len(header)), dtype=np.float64)
        for i, row in enumerate(rows[1:]):
            for j, cell in enumerate(row[1:]):
                values[i, j] = _weight(path, i + 2, header[j], cell)

        names = tuple(header)
        if abbreviations is not None:
            abbr = _read_table(abbreviations)
            if len(abbr[0]) - 1 != len(header):
                raise ReadError(
                    abbreviations,
                    f"{len(abbr[0]) - 1} abbreviations for the {len(header)} classes of {os.fspath(path)}",
                )
            names = tuple(abbr[0][1:])

        keep, merged_codes, merged_names = _merge_equivalent(path, sets, values, names, equivalent)
        classes = tuple("|".join(codes) for codes in merged_codes)
        return cls(
            classes=classes if equivalent else tuple(header[j] for j in keep),
            codes=tuple(frozenset(c) for c in merged_codes),
            weights=values[np.ix_(keep, keep)],
            names=merged_names,
            source=os.fspath(path),
        )

    # -- lookups ------------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        """Number of scored classes K."""
        return len(self.classes)

    def index(self, code: str | int) -> int:
        """Column of the class holding a SNOMED code or class key (``"59118001"`` and
        ``"713427006|59118001"`` give the same column).

        Raises:
            KeyError: the code is not scored by this table.
        """
        text = str(code).strip()
        if text in self._index:
            return self._index[text]
        if text in self.classes:
            return self.classes.index(text)
        raise KeyError(f"SNOMED code {text!r} is not a scored class of {self.source or 'the weights table'}")

    def is_scored(self, code: str | int) -> bool:
        """Whether a SNOMED code belongs to one of the scored classes."""
        return str(code).strip() in self._index

    def map_codes(self, records: Iterable[str | Iterable[str | int]]) -> np.ndarray:
        """Per-record SNOMED codes to the challenge's binary class matrix.

        Args:
            records: one entry per record: an iterable of codes (``["59118001", 426177001]``,
                e.g. ``ecgfm.read(path).meta.extra["dx"]``) or the header's comma-separated text
                (``"59118001,426177001"``).

        Returns:
            bool [N, K]: ``out[i, j]`` is True when any code of record ``i`` is in class ``j``.
            Equivalent codes set the same column; codes outside every class (unscored) are
            ignored, so a record with only unscored codes is an all-False row.
        """
        rows = [[str(c).strip() for c in (r.split(",") if isinstance(r, str) else r)] for r in records]
        out = np.zeros((len(rows), self.n_classes), dtype=bool)
        for i, codes in enumerate(rows):
            cols = [self._index[c] for c in codes if c in self._index]
            out[i, cols] = True
        return out

    def catalogue_matrix(self, ids: Sequence[str], catalogue: Catalogue | None = None) -> np.ndarray:
        """Which challenge class each catalogue condition scores as.

        A catalogue condition maps to the class of its SNOMED CT codes (``Condition.snomed``);
        conditions without a scored code map to nothing. The hierarchy is not followed: a model
        that outputs ``MI`` does not score as any of the conduction classes below it.

        Args:
            ids: catalogue ids, e.g. a model head's output names.
            catalogue: defaults to ``ecgfm.labels.load_catalogue()``.

        Returns:
            bool [C, K] with at most one True per row.

        Raises:
            ValidationError: an id is not in the catalogue, or a condition's codes fall in two
                challenge classes.
        """
        cat = _catalogue(catalogue)
        out = np.zeros((len(ids), self.n_classes), dtype=bool)
        for r, cid in enumerate(ids):
            try:
                cond = cat.get(cid)
            except KeyError as exc:
                raise ValidationError(str(exc.args[0])) from None
            cols = {self._index[c] for c in cond.snomed if c in self._index}
            if len(cols) > 1:
                raise ValidationError(
                    f"catalogue id {cid!r}: its SNOMED codes {cond.snomed} fall in several challenge "
                    f"classes ({', '.join(self.classes[c] for c in sorted(cols))})"
                )
            out[r, list(cols)] = True
        return out

    def map_catalogue(
        self, records: Iterable[Iterable[str]], catalogue: Catalogue | None = None
    ) -> np.ndarray:
        """Per-record catalogue id sets (e.g. ``map_cinc_dx(...).ids``) to the class matrix.

        Returns:
            bool [N, K], as :meth:`map_codes` for the SNOMED codes of those conditions.

        >>> w.map_catalogue([["AFIB"], ["CRBBB", "SBRAD"], ["MI"]])  # doctest: +SKIP
        """
        rows = [list(r) for r in records]
        ids = list(dict.fromkeys(cid for r in rows for cid in r))
        matrix = self.catalogue_matrix(ids, catalogue)
        col = {cid: np.flatnonzero(matrix[n]) for n, cid in enumerate(ids)}
        out = np.zeros((len(rows), self.n_classes), dtype=bool)
        for i, r in enumerate(rows):
            for cid in r:
                out[i, col[cid]] = True
        return out

    def project_catalogue_scores(
        self,
        scores: np.ndarray,
        ids: Sequence[str],
        catalogue: Catalogue | None = None,
        *,
        reduce: str = "max",
    ) -> np.ndarray:
        """A model's per-catalogue-id outputs [N, C] as challenge-class outputs [N, K].

        Args:
            scores: [N, C] probabilities or 0/1 decisions, columns in the order of ``ids``.
            ids: the catalogue id of each column.
            reduce: how several columns of one class combine: ``"max"`` (for 0/1 decisions it
                is the official "positive if any equivalent class is positive") or ``"mean"``
                (the official rule for scalar outputs of equivalent classes).

        Returns:
            float64 [N, K]; classes no column maps to are 0 (the official scorer's value for a
            class missing from the outputs).
        """
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(ids):
            raise ValidationError(f"scores must be [N, {len(ids)}] (one column per id), got {s.shape}")
        if reduce not in ("max", "mean"):
            raise ValidationError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        m = self.catalogue_matrix(ids, catalogue)
        out = np.zeros((s.shape[0], self.n_classes), dtype=np.float64)
        for k in np.flatnonzero(m.any(axis=0)):
            cols = s[:, m[:, k]]
            out[:, k] = cols.max(axis=1) if reduce == "max" else cols.mean(axis=1)
        return out


# -- the metric -------------------------------------------------------------------------------


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The challenge's multi-label confusion matrix with per-record normalisation.

    Args:
        labels: bool [N, K] true classes.
        outputs: bool [N, K] predicted classes.

    Returns:
        float64 [K, K]; ``A[j, k] = sum_i labels[i, j] * outputs[i, k] / max(1, |labels_i ∪
        outputs_i|)``, so every record contributes at most 1 in total spread over its label and
        output pairs.
    """
    y, o = _check_pair(labels, outputs)
    norm = np.maximum((y | o).sum(axis=1), 1).astype(np.float64)
    return (y / norm[:, None]).T @ o.astype(np.float64)


def challenge_score_details(
    labels: np.ndarray,
    outputs: np.ndarray,
    weights: ChallengeWeights | np.ndarray,
    normal_class: str | int = NORMAL_CLASS,
) -> dict[str, float]:
    """The challenge score with its parts.

    Returns:
        ``{"score", "observed", "correct", "inactive"}``: the normalised score and the three raw
        weighted sums (outputs, perfect outputs, sinus-rhythm-only outputs). See
        :func:`challenge_score` for the arguments.
    """
    y, o = _check_pair(labels, outputs)
    w, normal = _weights_and_normal(weights, normal_class, y.shape[1])
    inactive_out = np.zeros_like(y)
    inactive_out[:, normal] = True
    observed = float(np.nansum(w * modified_confusion_matrix(y, o)))
    correct = float(np.nansum(w * modified_confusion_matrix(y, y)))
    inactive = float(np.nansum(w * modified_confusion_matrix(y, inactive_out)))
    score = (observed - inactive) / (correct - inactive) if correct != inactive else 0.0
    return {"score": float(score), "observed": observed, "correct": correct, "inactive": inactive}


def challenge_score(
    labels: np.ndarray,
    outputs: np.ndarray,
    weights: ChallengeWeights | np.ndarray,
    normal_class: str | int = NORMAL_CLASS,
) -> float:
    """The normalised PhysioNet/CinC 2020/2021 challenge metric.

    Args:
        labels: bool (or 0/1) [N, K] true classes, columns as ``weights.classes``
            (:meth:`ChallengeWeights.map_codes` builds it from SNOMED codes).
        outputs: bool (or 0/1) [N, K] binary predictions. Threshold probabilities first
            (``probs >= 0.5``); non-binary values raise rather than being read as True.
        weights: a :class:`ChallengeWeights`, or a bare [K, K] weight matrix (then
            ``normal_class`` must be a column index).
        normal_class: the class the inactive classifier outputs: a SNOMED code or class key
            (default sinus rhythm ``426783006``) or a column index.

    Returns:
        ``(observed - inactive) / (correct - inactive)``: 1 for perfect outputs, 0 for
        sinus-rhythm-only outputs, negative for worse; 0 when the labels cannot tell the two apart.
    """
    return challenge_score_details(labels, outputs, weights, normal_class)["score"]


def challenge_accuracy(labels: np.ndarray, outputs: np.ndarray) -> float:
    """Official recording-wise accuracy: the fraction of records whose K outputs all equal the labels."""
    y, o = _check_pair(labels, outputs)
    return float(np.mean(np.all(y == o, axis=1))) if len(y) else math.nan


def challenge_f_measure(labels: np.ndarray, outputs: np.ndarray) -> tuple[float, np.ndarray]:
    """Official macro F-measure.

    Returns:
        ``(macro, per_class)``: per class ``2 TP / (2 TP + FP + FN)`` (NaN where the class is in
        neither labels nor outputs) and their NaN-ignoring mean (NaN when all are NaN).
    """
    y, o = _check_pair(labels, outputs)
    tp, fp, fn = _counts(y, o, np.ones(len(y)))
    f = _ratio(2 * tp, 2 * tp + fp + fn)
    return _nanmean(f), f


def challenge_beta_measures(
    labels: np.ndarray, outputs: np.ndarray, beta: float = 2.0
) -> dict[str, float | np.ndarray]:
    """The 2020 challenge's unofficial-phase macro F-beta and G-beta (beta = 2).

    Counts are normalised per record by its number of positive labels (``1 / max(1, sum(labels_i))``),
    then per class ``F = (1 + b^2) TP / ((1 + b^2) TP + FP + b^2 FN)`` and
    ``G = TP / (TP + FP + b FN)``, NaN where undefined, averaged ignoring NaN.

    Returns:
        ``{"f_beta", "g_beta"}`` (macro, floats) and ``{"f_beta_per_class", "g_beta_per_class"}``
        (float64 [K]).
    """
    y, o = _check_pair(labels, outputs)
    tp, fp, fn = _counts(y, o, 1.0 / np.maximum(y.sum(axis=1), 1))
    b2 = beta * beta
    f = _ratio((1 + b2) * tp, (1 + b2) * tp + fp + b2 * fn)
    g = _ratio(tp, tp + fp + beta * fn)
    return {"f_beta": _nanmean(f), "g_beta": _nanmean(g), "f_beta_per_class": f, "g_beta_per_class": g}


def challenge_summary(
    labels: np.ndarray,
    outputs: np.ndarray,
    weights: ChallengeWeights | np.ndarray,
    normal_class: str | int = NORMAL_CLASS,
) -> dict[str, float]:
    """Every official binary-output number in one dict (for reports).

    Returns:
        ``{"challenge_score", "accuracy", "f_measure", "f_beta", "g_beta"}`` (beta = 2).
    """
    beta = challenge_beta_measures(labels, outputs)
    return {
        "challenge_score": challenge_score(labels, outputs, weights, normal_class),
        "accuracy": challenge_accuracy(labels, outputs),
        "f_measure": challenge_f_measure(labels, outputs)[0],
        "f_beta": float(beta["f_beta"]),
        "g_beta": float(beta["g_beta"]),
    }


def read_dx(header: str | os.PathLike[str]) -> list[str]:
    """The SNOMED CT codes of a CinC 2020/2021 WFDB header's ``# Dx:`` line (``[]`` if none).

    A lightweight reader for scoring label folders without loading signals; ``ecgfm.read``
    gives the same codes as ``meta.extra["dx"]``.
    """
    path = Path(header)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReadError(path, f"cannot read header ({exc.strerror or exc})") from None
    for line in text.splitlines():
        body = line.lstrip("#").strip()
        if body.lower().startswith("dx:"):
            return [c.strip() for c in body[3:].split(",") if c.strip()]
    return []


# -- helpers ----------------------------------------------------------------------------------


def _read_table(path: str | os.PathLike[str]) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except OSError as exc:
        raise ReadError(path, f"cannot read weights table ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ReadError(path, f"weights table is not UTF-8 text ({exc})") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ReadError(path, "weights table is empty (expected a header row of classes and one row per class)")
    return rows


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(sorted(c.strip() for c in key.split("|") if c.strip()))


def _weight(path: str | os.PathLike[str], line: int, column: str, cell: str) -> float:
    if cell == "" or cell.lower() == "nan":
        return math.nan  # the official loader reads non-numbers as NaN; nansum counts them as 0
    try:
        return float(cell)
    except ValueError:
        raise ReadError(path, f"line {line}, class {column!r}: weight {cell!r} is not a number") from None


def _merge_equivalent(
    path: str | os.PathLike[str],
    sets: list[tuple[str, ...]],
    values: np.ndarray,
    names: tuple[str, ...],
    equivalent: Iterable[Iterable[str]],
) -> tuple[list[int], list[tuple[str, ...]], tuple[str, ...]]:
    """Rows to keep, the codes and the names of each kept class, after merging equivalent rows."""
    owner = list(range(len(sets)))  # row -> the row it merges into
    for group in equivalent:
        codes = {str(c).strip() for c in group}
        rows = [j for j, s in enumerate(sets) if codes & set(s)]
        for j in rows[1:]:
            first = rows[0]
            if not (
                np.array_equal(values[j], values[first], equal_nan=True)
                and np.array_equal(values[:, j], values[:, first], equal_nan=True)
            ):
                raise ReadError(
                    path,
                    f"equivalent classes {'|'.join(sets[first])} and {'|'.join(sets[j])} have different weights",
                )
            owner[j] = first
    keep = [j for j in range(len(sets)) if owner[j] == j]
    merged = {j: [c for r in range(len(sets)) if owner[r] == j for c in sets[r]] for j in keep}
    merged_names = tuple(
        "|".join(names[r] for r in range(len(sets)) if owner[r] == j) for j in keep
    )
    return keep, [tuple(dict.fromkeys(merged[j])) for j in keep], merged_names


def _check_pair(labels: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = _binary(labels, "labels")
    o = _binary(outputs, "outputs")
    if y.shape != o.shape:
        raise ValidationError(f"labels {y.shape} and outputs {o.shape} must have the same shape [N, K]")
    return y, o


def _binary(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValidationError(f"{what} must be a 2-D [records, classes] array, got shape {a.shape}")
    if a.dtype == bool:
        return a
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValidationError(
            f"{what} must be binary (bool or 0/1); threshold scores first, e.g. probs >= 0.5"
        )
    return a.astype(bool)


def _weights_and_normal(
    weights: ChallengeWeights | np.ndarray, normal_class: str | int, k: int
) -> tuple[np.ndarray, int]:
    if isinstance(weights, ChallengeWeights):
        w = weights.weights
        if isinstance(normal_class, (int, np.integer)):
            normal = int(normal_class)
        else:
            try:
                normal = weights.index(normal_class)
            except KeyError:
                raise ValidationError(
                    f"normal class {normal_class!r} is not a scored class of {weights.source or 'the weights'}"
                ) from None
    else:
        w = np.asarray(weights, dtype=np.float64)
        if not isinstance(normal_class, (int, np.integer)):
            raise ValidationError(
                "with a bare weight matrix, normal_class must be a column index; pass a "
                "ChallengeWeights to name it by SNOMED code"
            )
        normal = int(normal_class)
    if w.shape != (k, k):
        raise ValidationError(f"weights are {w.shape} but labels have {k} classes")
    if not 0 <= normal < k:
        raise ValidationError(f"normal class index {normal} is outside 0..{k - 1}")
    return w, normal


def _counts(y: np.ndarray, o: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    w = np.asarray(weight, dtype=np.float64)[:, None]
    tp = ((y & o) * w).sum(axis=0)
    fp = ((~y & o) * w).sum(axis=0)
    fn = ((y & ~o) * w).sum(axis=0)
    return tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, math.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def _catalogue(catalogue: Catalogue | None) -> Catalogue:
    if catalogue is not None:
        return catalogue
    from ecgfm.labels.catalogue import load_catalogue

    return load_catalogue()
