"""Loading and compiling the report labeler's rule files (``ecgfm/labels/rules/*.tsv``).

The rules are data a clinician edits in a spreadsheet or a text editor: tab-separated, one rule
per row, a header row naming the columns, ``#`` at the start of a row for a comment. Every file
type is described in ``rules/README.md``. This module turns them into a few compiled regular
expressions dispatched on the first character of each word (:class:`Scanner`), so labelling a
report costs a few dozen short regex calls, not one scan per rule.

Patterns are matched against the normalised text (see :mod:`ecgfm.labels._text`): lower case,
umlauts folded (``ae oe ue ss``), whitespace collapsed to single spaces. ``phrase`` patterns are
literal text (lower case, words separated by one space); ``regex`` patterns are Python regular
expressions. Both must start and end at word edges: ``infarkt`` does not match inside
``infarktnarbe`` unless written as the regex ``infarkt\\w*``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgfm.errors import ValidationError

try:  # the standard library's regex parser, used only to find the characters a pattern starts with
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

RULES_DIR = Path(__file__).with_name("rules")
LANGUAGES = ("en", "de", "sv", "any")
STATUSES = ("present", "negated", "uncertain")
DIRECTIONS = ("forward", "backward", "both", "pseudo")
ROLES = ("boundary", "conjunction")
NO_ID = "-"  # a condition row with this id consumes its text and labels nothing

# Files by role; condition rules may be split over several files (``conditions_local.tsv``).
CONDITION_GLOB = "conditions*.tsv"
CUE_FILES = {"negation.tsv": "negated", "uncertainty.tsv": "uncertain"}
CLAUSE_FILE = "clauses.tsv"
COMBINATION_FILE = "combinations.tsv"  # optional
EXCLUSION_FILE = "exclusions.tsv"  # optional

_COLUMNS = {
    "condition": ("id", "lang", "kind", "pattern", "status", "note"),
    "cue": ("lang", "kind", "pattern", "direction", "window", "note"),
    "clause": ("lang", "role", "kind", "pattern", "note"),
    "combination": ("ids", "into", "note"),
    "exclusion": ("id", "status", "when", "note"),
}


@dataclass(frozen=True)
class ConditionRule:
    """One row of a conditions file: text that states one or more conditions.

    Attributes:
        name: ``"<file stem>:<line>"``, the rule identifier reported with each finding.
        ids: the catalogue ids the text states (empty for a ``-`` row, which only blocks).
        hedged: the ids among ``ids`` that the text only suggests (written ``LAFB?`` in the
            file): they are ``uncertain`` unless a cue negates them.
        lang: ``en``, ``de``, ``sv`` or ``any``.
        regex: the pattern as a regular expression over normalised text.
        status: ``""`` to let negation and uncertainty cues decide, or a fixed status.
    """

    name: str
    ids: tuple[str, ...]
    lang: str
    regex: str
    status: str
    hedged: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CueRule:
    """One row of ``negation.tsv`` or ``uncertainty.tsv``.

    Attributes:
        name: ``"<file stem>:<line>"``.
        effect: ``"negated"`` or ``"uncertain"``: the status it gives the findings in its scope.
        lang: ``en``, ``de``, ``sv`` or ``any``.
        regex: the cue as a regular expression over normalised text.
        direction: ``forward`` (the findings after it), ``backward`` (before it), ``both``, or
            ``pseudo``: text that contains a cue word but is no cue (``"wahrscheinlich alt"``,
            ``"not significantly changed"``); it is matched so the shorter cue inside is not.
        window: how many words may separate the cue from the nearest finding it reaches.
    """

    name: str
    effect: str
    lang: str
    regex: str
    direction: str
    window: int


@dataclass(frozen=True)
class ClauseRule:
    """One row of ``clauses.tsv``: a clause boundary or a conjunction that joins a list."""

    name: str
    lang: str
    role: str
    regex: str


@dataclass(frozen=True)
class CombinationRule:
    """One row of ``combinations.tsv``: findings of all ``ids`` in one report are one ``into``.

    ``inferiorer infarkt`` + ``lateraler infarkt`` is an inferolateral infarction (``IMI`` +
    ``LMI`` -> ``ILMI``); the findings keep their spans and take the new id.
    """

    name: str
    ids: tuple[str, ...]
    into: str


@dataclass(frozen=True)
class ExclusionRule:
    """One row of ``exclusions.tsv``: drop findings of ``id`` (of ``status``, or any status for
    ``any``) when the report states one of ``when`` (present or uncertain).

    ``linkshypertrophie moeglich`` beside a left bundle branch block: LVH voltage criteria do not
    apply with LBBB, and PTB-XL does not code it.
    """

    name: str
    id: str
    status: str
    when: tuple[str, ...]


@dataclass(frozen=True)
class RuleSet:
    """All rules read from one rules folder."""

    conditions: tuple[ConditionRule, ...]
    cues: tuple[CueRule, ...]
    clauses: tuple[ClauseRule, ...]
    folder: Path
    combinations: tuple[CombinationRule, ...] = ()
    exclusions: tuple[ExclusionRule, ...] = ()

    @property
    def ids(self) -> set[str]:
        """Every id a rule can produce."""
        out = {i for r in self.conditions for i in r.ids}
        out |= {r.into for r in self.combinations}
        return out

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages that at least one rule is written for, ``any`` excluded."""
        langs = {r.lang for r in (*self.conditions, *self.cues, *self.clauses)}
        return tuple(sorted(langs - {"any"}))


def _phrase_regex(phrase: str) -> str:
    """A literal phrase as a regex; its words are separated by one space, as in normalised text."""
    return re.escape(" ".join(phrase.split()))


def _read_rows(path: Path, kind: str) -> Iterable[tuple[int, dict[str, str]]]:
    """Rows of a rule file as ``(line number, {column: stripped value})``, comments skipped."""
    expected = _COLUMNS[kind]
    with path.open(encoding="utf-8", newline="") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValidationError(f"{path}: empty rule file (expected a header row {', '.join(expected)})")
    header_no, header_line = lines[0]
    header = [h.strip() for h in header_line.rstrip("\r\n").split("\t")]
    missing = [c for c in expected if c not in header]
    if missing:
        raise ValidationError(
            f"{path}:{header_no}: header lacks column(s) {', '.join(missing)} "
            f"(expected tab-separated {', '.join(expected)}; got {header})"
        )
    for n, line in lines[1:]:
        cells = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(cells) > len(header):
            raise ValidationError(f"{path}:{n}: {len(cells)} cells but the header has {len(header)} columns")
        row = dict(zip(header, (c.strip() for c in cells)))
        yield n, {c: row.get(c, "") for c in header}


def _compile_pattern(path: Path, n: int, kind: str, pattern: str) -> str:
    """Validate one pattern cell and return it as a regular expression."""
    where = f"{path}:{n}"
    if not pattern:
        raise ValidationError(f"{where}: empty pattern")
    if kind == "phrase":
        if pattern != pattern.lower():
            raise ValidationError(f"{where}: phrase {pattern!r} must be lower case (text is lower-cased)")
        regex = _phrase_regex(pattern)
    elif kind == "regex":
        regex = pattern
    else:
        raise ValidationError(f"{where}: kind {kind!r} is not 'phrase' or 'regex'")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ValidationError(f"{where}: pattern {pattern!r} is not a valid regular expression ({exc})") from None
    if compiled.groupindex:
        raise ValidationError(f"{where}: pattern {pattern!r} uses a named group; use (...) or (?:...)")
    if compiled.match(""):
        raise ValidationError(f"{where}: pattern {pattern!r} matches the empty string")
    return regex


def _check_lang(where: str, lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValidationError(f"{where}: lang {lang!r} is not one of {', '.join(LANGUAGES)}")
    return lang


def load_rules(folder: str | Path | None = None) -> RuleSet:
    """Read and validate every rule file in a folder.

    Args:
        folder: the rules folder; default, the rules shipped with ecgfm. It holds one or more
            ``conditions*.tsv`` files, ``negation.tsv``, ``uncertainty.tsv`` and ``clauses.tsv``.

    Returns:
        The rules, in file order.

    Raises:
        ValidationError: a file is missing or a row is malformed, naming the file, the line and
            what was expected.
    """
    folder = RULES_DIR if folder is None else Path(folder)
    condition_files = sorted(folder.glob(CONDITION_GLOB))
    if not condition_files:
        raise ValidationError(f"{folder}: no {CONDITION_GLOB} rule file")
    conditions: list[ConditionRule] = []
    for path in condition_files:
        for n, row in _read_rows(path, "condition"):
            where = f"{path}:{n}"
            raw = tuple(i.strip() for i in row["id"].split("|") if i.strip())
            if not raw:
                raise ValidationError(f"{where}: empty id (write '-' for a row that labels nothing)")
            ids = () if raw == (NO_ID,) else tuple(i.rstrip("?") for i in raw)
            hedged = frozenset(i.rstrip("?") for i in raw if i.endswith("?"))
            if row["status"] and row["status"] not in STATUSES:
                raise ValidationError(f"{where}: status {row['status']!r} is not empty or one of {', '.join(STATUSES)}")
            conditions.append(
                ConditionRule(
                    name=f"{path.stem}:{n}",
                    ids=ids,
                    lang=_check_lang(where, row["lang"]),
                    regex=_compile_pattern(path, n, row["kind"], row["pattern"]),
                    status=row["status"],
                    hedged=hedged,
                )
            )
    cues: list[CueRule] = []
    for filename, effect in CUE_FILES.items():
        path = folder / filename
        if not path.exists():
            raise ValidationError(f"{path}: rule file missing")
        for n, row in _read_rows(path, "cue"):
            where = f"{path}:{n}"
            if row["direction"] not in DIRECTIONS:
                raise ValidationError(f"{where}: direction {row['direction']!r} is not one of {', '.join(DIRECTIONS)}")
            try:
                window = int(row["window"] or 0)
            except ValueError:
                raise ValidationError(f"{where}: window {row['window']!r} is not a whole number of words") from None
            cues.append(
                CueRule(
                    name=f"{path.stem}:{n}",
                    effect=effect,
                    lang=_check_lang(where, row["lang"]),
                    regex=_compile_pattern(path, n, row["kind"], row["pattern"]),
                    direction=row["direction"],
                    window=window,
                )
            )
    path = folder / CLAUSE_FILE
    if not path.exists():
        raise ValidationError(f"{path}: rule file missing")
    clauses: list[ClauseRule] = []
    for n, row in _read_rows(path, "clause"):
        where = f"{path}:{n}"
        if row["role"] not in ROLES:
            raise ValidationError(f"{where}: role {row['role']!r} is not one of {', '.join(ROLES)}")
        clauses.append(
            ClauseRule(
                name=f"{path.stem}:{n}",
                lang=_check_lang(where, row["lang"]),
                role=row["role"],
                regex=_compile_pattern(path, n, row["kind"], row["pattern"]),
            )
        )
    combinations: list[CombinationRule] = []
    path = folder / COMBINATION_FILE
    if path.exists():
        for n, row in _read_rows(path, "combination"):
            ids = tuple(i.strip() for i in row["ids"].split("+") if i.strip())
            if len(ids) < 2 or not row["into"]:
                raise ValidationError(f"{path}:{n}: expected two or more ids joined by '+' and an 'into' id")
            combinations.append(CombinationRule(f"{path.stem}:{n}", ids, row["into"]))
    exclusions: list[ExclusionRule] = []
    path = folder / EXCLUSION_FILE
    if path.exists():
        for n, row in _read_rows(path, "exclusion"):
            when = tuple(i.strip() for i in row["when"].split("|") if i.strip())
            if not row["id"] or not when:
                raise ValidationError(f"{path}:{n}: expected an id and one or more 'when' ids joined by '|'")
            if row["status"] not in ("any", *STATUSES):
                raise ValidationError(f"{path}:{n}: status {row['status']!r} is not 'any' or one of {', '.join(STATUSES)}")
            exclusions.append(ExclusionRule(f"{path.stem}:{n}", row["id"], row["status"], when))
    return RuleSet(tuple(conditions), tuple(cues), tuple(clauses), folder, tuple(combinations), tuple(exclusions))


def split_alternatives(regex: str) -> list[str]:
    """Split a regular expression at its top-level ``|`` (not inside groups or classes)."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]" or (i > 0 and regex[i - 1] == "[")
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(regex[start:i])
            start = i + 1
        i += 1
    parts.append(regex[start:])
    return parts


def first_chars(regex: str) -> frozenset[str] | None:
    """The characters a match of ``regex`` can start with, or ``None`` when that is not a small
    known set (a class like ``\\w`` or ``.``, or a pattern that may match the empty string)."""
    try:
        parsed = _sre_parse.parse(regex)
    except Exception:  # re.error, or a parser change in some future Python: no prefilter then
        return None
    chars, nullable = _first(parsed)
    return None if chars is None or nullable else frozenset(chars)


def _first(seq: Any) -> tuple[set[str] | None, bool]:  # seq: a parsed (sub)pattern of sre_parse
    """(first characters, whether the sequence can match the empty string) of a parsed regex."""
    out: set[str] = set()
    for op, av in seq:
        name = getattr(op, "name", str(op))
        chars: set[str] | None
        if name == "LITERAL":
            chars, nullable = {chr(av)}, False
        elif name == "IN":
            chars, nullable = set(), False
            for item_op, item in av:
                item_name = getattr(item_op, "name", str(item_op))
                if item_name == "LITERAL":
                    chars.add(chr(item))
                elif item_name == "RANGE" and item[1] - item[0] <= 256:
                    chars.update(chr(c) for c in range(item[0], item[1] + 1))
                else:  # NEGATE, CATEGORY (\\w, \\d), wide ranges
                    return None, False
        elif name == "SUBPATTERN":
            chars, nullable = _first(av[-1])
        elif name == "BRANCH":
            chars, nullable = set(), False
            for branch in av[1]:
                branch_chars, branch_nullable = _first(branch)
                if branch_chars is None:
                    return None, False
                chars |= branch_chars
                nullable = nullable or branch_nullable
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            chars, nullable = _first(av[2])
            nullable = nullable or av[0] == 0
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            chars, nullable = set(), True  # zero width: look through it (a superset is safe)
        else:
            return None, False
        if chars is None:
            return None, False
        out |= chars
        if not nullable:
            return out, False
    return out, True


class Scanner:
    """Finds, left to right and without overlaps, the first of many patterns that matches at each
    word-initial position, as ``re.finditer`` would with one big alternation, only faster.

    One alternation of a few hundred patterns makes ``re`` try every pattern at every position.
    Here each position is dispatched on its character to the patterns that can start with it
    (computed from the parsed patterns), so a report of 30 words costs about 30 short
    ``match`` calls.

    Args:
        regexes: ``(key, regex)`` pairs. Each regex is split at its top-level ``|`` and all the
            alternatives are sorted longest first, so at one position the more specific text
            wins (``wahrscheinlich alt`` before ``wahrscheinlich``); ``re`` takes the first
            alternative that matches, not the longest. An earlier start wins regardless
            (``inkompletter rechtsschenkelblock`` is found before ``rechtsschenkelblock`` could be).

    Matches must start after a non-word character (or at the start) and end before one.
    """

    _CANDIDATE = re.compile(r"(?<!\w)\S")

    def __init__(self, regexes: list[tuple[str, str]]) -> None:
        alts: list[tuple[str, str, frozenset[str] | None]] = []
        self.key_of: dict[str, str] = {}
        for n, (key, regex) in enumerate(regexes):
            for j, alt in enumerate(split_alternatives(regex)):
                group = f"g{n}_{j}"
                self.key_of[group] = key
                alts.append((group, alt, first_chars(alt)))
        alts.sort(key=lambda a: -len(a[1]))
        self._alts = alts

        def compile_(subset: list[tuple[str, str, frozenset[str] | None]]) -> re.Pattern[str] | None:
            if not subset:
                return None
            return re.compile("(?:" + "|".join(f"(?P<{g}>{r})" for g, r, _ in subset) + r")(?!\w)")

        starts = set().union(*(f for _, _, f in alts if f is not None)) if alts else set()
        self._by_char = {c: compile_([a for a in alts if a[2] is None or c in a[2]]) for c in starts}
        self._other = compile_([a for a in alts if a[2] is None])

    def __bool__(self) -> bool:
        return bool(self._alts)

    def finditer(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, key)`` of every match, left to right, not overlapping."""
        out = []
        end = 0
        by_char, other = self._by_char, self._other
        for cand in self._CANDIDATE.finditer(text):
            pos = cand.start()
            if pos < end:
                continue
            regex = by_char.get(text[pos], other)
            if regex is None:
                continue
            m = regex.match(text, pos)
            if m is not None and m.end() > pos:
                out.append((pos, m.end(), self.key_of[m.lastgroup]))  # type: ignore[index]
                end = m.end()
        return out


def alternation(regexes: list[tuple[str, str]]) -> re.Pattern[str] | None:
    """One regex matching any of ``(key, regex)`` (used for clause boundaries, which are few)."""
    if not regexes:
        return None
    return re.compile("|".join(f"(?:{regex})" for _, regex in regexes))
