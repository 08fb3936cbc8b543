"""Report text: normalisation and a subword tokenizer trained offline on the user's own reports.

A :class:`ReportTokenizer` wraps a Hugging Face ``tokenizers.Tokenizer`` (the Rust library; no
``transformers``) and is saved as ``tokenizer.json`` beside the model, so the exact
normalisation travels with the weights. The pipeline a report goes through:

1. **normalise** (inside the tokenizer, so it is saved with it): Unicode NFC (``ä`` stays one
   character: no accent stripping, German umlauts and ``ß`` are kept), lower case (optional),
   the ``strip_patterns`` regular expressions deleted (by default PTB-XL's boilerplate:
   the report program's version and "unbestätigter bericht", and the "consensus label derived
   from: {...}" suffix that spells out the SCP codes), runs of whitespace to one space, trimmed;
2. **pre-tokenise**: spaces become the marker ``▁`` in front of each word (SentencePiece's
   *Metaspace*), punctuation is split off, digits are single tokens;
3. **subwords**: BPE (default) or WordPiece, trained by :meth:`ReportTokenizer.train` on the
   training reports; the initial alphabet holds the Latin letters, German and Scandinavian
   letters, digits and punctuation, so every character of a German, English or Swedish report
   has a token (no ``<unk>`` for them).

Decoding joins the pieces and turns ``▁`` back into spaces, so ``decode(encode(text))`` equals
``normalize(text)`` exactly (BPE; WordPiece too, its ``##`` prefix is dropped on decoding).

Special tokens (fixed ids): ``<pad>`` 0, ``<unk>`` 1, ``<cls>`` 2 (first token seen by the text
encoder), ``<bos>`` 3 (first token fed to the report decoder), ``<eos>`` 4 (ends a report).

>>> tok = ReportTokenizer.train(["Sinusrhythmus. Überdrehter Linkstyp", "sinus rhythm. normal ecg."],
...                             vocab_size=120)
>>> tok.decode(tok.encode("Sinusrhythmus, Linkstyp")[0])
'sinusrhythmus, linkstyp'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError

__all__ = [
    "BOS", "CLS", "EOS", "PAD", "PTBXL_BOILERPLATE", "SPECIAL_TOKENS", "UNK", "ReportTokenizer",
    "read_report_texts",
]

PAD, UNK, CLS, BOS, EOS = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("<pad>", "<unk>", "<cls>", "<bos>", "<eos>")
KINDS = ("bpe", "wordpiece")
_SPACE = "\u2581"  # SentencePiece's word marker

#: Regular expressions (applied after lower-casing) that PTB-XL reports carry but that say
#: nothing about the ECG: the version of the program that wrote the automatic report followed by
#: "unbestätigter bericht" (unconfirmed report), a bare "(un)bestätigter bericht", and the
#: "consensus label derived from: {...}" suffix of some Swedish reports, which spells out the SCP
#: codes (a label leak into the text). Give ``strip_patterns=()`` to keep the text as written.
PTBXL_BOILERPLATE = (
    r"\d+\.\d+\s+(?:un)?best(?:ä|ae|a)tigter\s+bericht",
    r"(?:un)?best(?:ä|ae|a)tigter\s+bericht",
    r"consensus label derived from:.*$",
)

# Every character a German, English or Swedish report is made of gets a token of its own.
_ALPHABET = list("abcdefghijklmnopqrstuvwxyzäöüßåéèàç0123456789.,;:!?()[]{}-+/&%'\"<>=*#@_")
_FILE = "tokenizer.json"
_META_KEY = "ecgfm"  # our settings, kept in the tokenizer's JSON beside the Rust library's fields


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValidationError("the report tokenizer needs the 'tokenizers' package "
                              "(pip install 'ecgfm[language]')") from None
    return tokenizers


def _check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    out = []
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValidationError(f"strip_patterns: {p!r} is not a valid regular expression ({exc})") from None
        out.append(str(p))
    return tuple(out)


class ReportTokenizer:
    """A trained subword tokenizer for reports (see the module docstring for the pipeline).

    Build one with :meth:`train` or :meth:`load`; :meth:`save` writes ``tokenizer.json``.

    Attributes:
        kind: ``"bpe"`` or ``"wordpiece"``.
        lowercase: whether text is lower-cased before tokenising.
        strip_patterns: the regular expressions deleted from every report.
        vocab_size: number of tokens, special ones included.
    """

    def __init__(self, tokenizer: Any, *, kind: str, lowercase: bool, strip_patterns: Sequence[str]) -> None:
        self._tok = tokenizer
        self.kind = kind
        self.lowercase = bool(lowercase)
        self.strip_patterns = tuple(strip_patterns)
        for i, name in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(name) != i:
                raise ValidationError(f"tokenizer: special token {name!r} must have id {i}, "
                                      f"has {tokenizer.token_to_id(name)!r}")

    def __repr__(self) -> str:
        return (f"ReportTokenizer({self.kind}, vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
                f"{len(self.strip_patterns)} strip patterns)")

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _pipeline(kind: str, lowercase: bool, strip_patterns: Sequence[str]) -> Any:
        tk = _import_tokenizers()
        from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

        if kind not in KINDS:
            raise ValidationError(f"tokenizer kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "bpe":
            tok = tk.Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK]))
            tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always")
        else:
            tok = tk.Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS[UNK], continuing_subword_prefix="##",
                                                max_input_chars_per_word=100))
            tok.decoder = decoders.Sequence([decoders.Replace("##", ""),
                                             decoders.Metaspace(replacement=_SPACE, prepend_scheme="always")])
        steps = [normalizers.NFC()]
        if lowercase:
            steps.append(normalizers.Lowercase())
        steps += [normalizers.Replace(Regex(p), " ") for p in strip_patterns]
        steps += [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always"),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ])
        return tok

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 2000, kind: str = "bpe", lowercase: bool = True,
              strip_patterns: Sequence[str] = PTBXL_BOILERPLATE, min_frequency: int = 2) -> ReportTokenizer:
        """Train a tokenizer on ``texts`` (the training reports; never validation or test text).

        Args:
            texts: reports (any case; empty and missing ones are skipped).
            vocab_size: the target vocabulary, special tokens and alphabet included.
            kind: ``"bpe"`` or ``"wordpiece"``.
            lowercase: lower-case text first (PTB-XL reports are lower case already).
            strip_patterns: regular expressions deleted from every report (see
                :data:`PTBXL_BOILERPLATE`).
            min_frequency: a merge must occur this often to be learnt.

        Raises:
            ValidationError: no text, a bad kind, pattern or size.
        """
        if int(vocab_size) < len(SPECIAL_TOKENS) + len(_ALPHABET):
            raise ValidationError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(_ALPHABET)} "
                                  f"(specials and alphabet), got {vocab_size}")
        patterns = _check_patterns(strip_patterns)
        tok = cls._pipeline(kind, lowercase, patterns)
        from tokenizers import trainers

        corpus = [t for t in (str(x) for x in texts if x is not None and x == x) if t.strip()]
        if not corpus:
            raise ValidationError("tokenizer: no report text to train on")
        common = dict(vocab_size=int(vocab_size), min_frequency=int(min_frequency), show_progress=False,
                      special_tokens=list(SPECIAL_TOKENS), initial_alphabet=_ALPHABET)
        trainer = (trainers.BpeTrainer(**common) if kind == "bpe"
                   else trainers.WordPieceTrainer(continuing_subword_prefix="##", **common))
        tok.train_from_iterator(corpus, trainer, length=len(corpus))
        return cls(tok, kind=kind, lowercase=lowercase, strip_patterns=patterns)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReportTokenizer:
        """Read ``tokenizer.json`` (a file, or the folder holding it).

        Raises:
            ReadError: missing or unreadable file, or not a tokenizer saved by :meth:`save`.
        """
        p = Path(path)
        if p.is_dir():
            p = p / _FILE
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReadError(p, "tokenizer file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReadError(p, f"cannot read the tokenizer ({exc})") from None
        meta = data.get(_META_KEY) if isinstance(data, dict) else None
        if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
            raise ReadError(p, f"not a report tokenizer written by ecgfm (no '{_META_KEY}' settings)")
        tk = _import_tokenizers()
        try:
            tok = tk.Tokenizer.from_str(json.dumps({k: v for k, v in data.items() if k != _META_KEY}))
        except Exception as exc:  # the Rust library raises its own exception type
            raise ReadError(p, f"cannot build the tokenizer ({exc})") from None
        try:
            return cls(tok, kind=meta["kind"], lowercase=bool(meta.get("lowercase", True)),
                       strip_patterns=tuple(meta.get("strip_patterns") or ()))
        except ValidationError as exc:
            raise ReadError(p, str(exc)) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` (to ``path``, or into ``path`` when it is a folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / _FILE
        data = json.loads(self._tok.to_str())
        data[_META_KEY] = {"kind": self.kind, "lowercase": self.lowercase,
                           "strip_patterns": list(self.strip_patterns)}
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, p)
        return p

    # -- use --------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def normalize(self, text: str) -> str:
        """``text`` as the tokenizer sees it (lower case, boilerplate removed, spaces collapsed)."""
        return str(self._tok.normalizer.normalize_str(str(text)))

    def tokens(self, text: str) -> list[str]:
        """The subword strings of ``text`` (for inspection)."""
        return list(self._tok.encode(str(text), add_special_tokens=False).tokens)

    def encode(self, texts: str | Sequence[str | None]) -> list[list[int]]:
        """Token ids of each text, without special tokens (a missing text gives ``[]``)."""
        if isinstance(texts, str):
            texts = [texts]
        items = ["" if t is None or t != t else str(t) for t in texts]
        return [list(e.ids) for e in self._tok.encode_batch(items, add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of token ids; special tokens are dropped and decoding stops at ``<eos>``."""
        out = []
        for i in (int(x) for x in ids):
            if i == EOS:
                break
            if i >= len(SPECIAL_TOKENS):
                out.append(i)
        return str(self._tok.decode(out, skip_special_tokens=True))

    def batch(self, texts: Sequence[str | None], max_length: int, *, start: int = CLS,
              end: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids ``[N, max_length]`` int64 and lengths ``[N]``: ``start`` token, the report's
        tokens (truncated to fit), ``<eos>`` when ``end``, then ``<pad>``."""
        if max_length < 2 + int(end):
            raise ValidationError(f"max_length must be at least {2 + int(end)}, got {max_length}")
        ids = np.full((len(texts), max_length), PAD, np.int64)
        lengths = np.zeros(len(texts), np.int64)
        room = max_length - 1 - int(end)
        for n, row in enumerate(self.encode(list(texts))):
            row = [start, *row[:room]] + ([EOS] if end else [])
            ids[n, :len(row)] = row
            lengths[n] = len(row)
        return ids, lengths


def read_report_texts(path: str | os.PathLike[str], *, column: str = "report",
                      folds: Sequence[int] | None = None, splits: Sequence[str] | None = None) -> list[str]:
    """Reports from a CSV table (e.g. PTB-XL's ``ptbxl_reports_only.csv``: reports whose signals
    are not available), to train the tokenizer on more text.

    Args:
        path: the CSV file.
        column: the report column.
        folds: keep rows whose ``strat_fold`` is one of these (when the table has that column),
            e.g. PTB-XL's training folds 1-8, so no validation or test patient's text is seen.
        splits: keep rows whose ``split`` is one of these (when the table has that column).

    Raises:
        ReadError: the file is missing, unreadable or has no such column.
    """
    import csv

    p = Path(path)
    try:
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or ()):
                raise ReadError(p, f"no column {column!r} (columns: {', '.join(reader.fieldnames or ())})")
            out = []
            for row in reader:
                if folds is not None and row.get("strat_fold") not in (None, ""):
                    if int(float(row["strat_fold"])) not in set(folds):
                        continue
                if splits is not None and row.get("split") not in (None, "") and row["split"] not in set(splits):
                    continue
                text = (row.get(column) or "").strip()
                if text:
                    out.append(text)
    except FileNotFoundError:
        raise ReadError(p, "report table not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReadError(p, f"cannot read the report table ({exc})") from None
    return out
