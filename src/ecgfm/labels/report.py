"""The report labeler: free-text ECG reports to condition ids, with negation, uncertainty and
the evidence span of every label.

It reads rules from data files (``ecgfm/labels/rules/*.tsv``, described in the README there), so
a clinician adds a phrase, a language or a negation cue without touching code:

- ``conditions*.tsv``: text that states a condition (``vorhofflimmern`` -> ``AFIB``);
- ``negation.tsv`` and ``uncertainty.tsv``: cues (``kein hinweis auf``, ``cannot be excluded``)
  with a direction and a window in words;
- ``clauses.tsv``: what ends a clause (a cue never reaches across it) and which words join a
  list (``oder``, ``and``), so a cue reaches every item of ``kein infarkt oder block``.

How a report is labelled:

1. normalise (lower case, umlauts folded, whitespace collapsed), keeping a map to the original;
2. find condition phrases, cues and clause boundaries, each with one combined regex, leftmost
   first, the longer pattern first at one position; cue or boundary text inside a condition
   phrase is part of that phrase (``no definite pathology`` is a phrase, not ``no`` + ...);
3. each cue reaches the nearest condition phrase in its direction within its window and the same
   clause, and then every phrase joined to that one by a conjunction (``oder``, ``,``);
4. a phrase reached by a negation cue is ``negated``, else by an uncertainty cue ``uncertain``,
   else ``present`` (a condition rule may fix its own status, or mark an id it only suggests,
   ``LAFB?``, as uncertain); a ``-`` phrase (no condition) can be reached too, and then ends the
   cue's reach like any other phrase;
5. ``combinations.tsv`` merges findings that together are one condition (inferior + lateral
   infarction -> ``ILMI``) and ``exclusions.tsv`` drops findings that another finding makes
   meaningless (``linkshypertrophie moeglich`` beside a left bundle branch block).

The ids are catalogue ids: for PTB-XL statements the SCP code (``AFIB``, ``IMI``, ``LAO/LAE``).

>>> [(f.id, f.status, f.evidence) for f in label_report("Sinusrhythmus. Kein Hinweis auf Infarkt.")]
[('SR', 'present', 'Sinusrhythmus'), ('MI', 'negated', 'Infarkt')]
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

from ecgfm.errors import ValidationError
from ecgfm.labels._rules import ConditionRule, CueRule, RuleSet, Scanner, alternation, load_rules
from ecgfm.labels._text import normalize

Status = Literal["present", "negated", "uncertain"]
_WORD = re.compile(r"\w+")
# Status precedence when one id has several findings in a report.
_RANK = {"present": 2, "uncertain": 1, "negated": 0}


@dataclass(frozen=True)
class Finding:
    """One condition stated (or denied) in a report.

    Attributes:
        id: the catalogue id, e.g. ``"AFIB"``.
        status: ``"present"``, ``"negated"`` or ``"uncertain"``.
        span: ``(start, end)`` character offsets into the original text, ``text[start:end]``.
        evidence: ``text[start:end]``, the words that state the condition.
        rule: the rule that matched, ``"<file stem>:<line>"`` (e.g. ``"conditions_de:12"``).
        cue: the negation or uncertainty cue that set the status (its rule and its text), or
            ``None`` when none did.
    """

    id: str
    status: Status
    span: tuple[int, int]
    evidence: str
    rule: str
    cue: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, object]:
        """The finding as JSON-ready values (``span`` as a two-item list)."""
        return {"id": self.id, "status": self.status, "span": list(self.span), "evidence": self.evidence,
                "rule": self.rule, "cue_rule": self.cue[0] if self.cue else None, "cue": self.cue[1] if self.cue else None}


@dataclass(frozen=True)
class _Compiled:
    conditions: Scanner
    condition_of: dict[str, ConditionRule]  # rule name -> rule
    cues: Scanner
    cue_of: dict[str, CueRule]
    boundaries: re.Pattern[str] | None
    conjunction_gap: re.Pattern[str]


class ReportLabeler:
    """Labels free-text ECG reports using the rules in a folder; rules are read and compiled once.

    Args:
        rules: a rules folder (default: the rules shipped with ecgfm), or a loaded ``RuleSet``.

    >>> labeler = ReportLabeler()
    >>> [f.id for f in labeler.label("inkompletter Rechtsschenkelblock")]
    ['IRBBB']
    """

    def __init__(self, rules: str | Path | RuleSet | None = None) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else load_rules(rules)
        self._by_lang: dict[str | None, _Compiled] = {}

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the rules cover (``en``, ``de``, ``sv``)."""
        return self.rules.languages

    def _compiled(self, language: str | None) -> _Compiled:
        compiled = self._by_lang.get(language)
        if compiled is not None:
            return compiled
        if language is not None and language not in self.languages:
            raise ValidationError(
                f"language {language!r} has no rules in {self.rules.folder} "
                f"(known: {', '.join(self.languages)}; None uses all)"
            )

        def wanted(lang: str) -> bool:
            return language is None or lang in (language, "any")

        conditions = {r.name: r for r in self.rules.conditions if wanted(r.lang)}
        cues = {r.name: r for r in self.rules.cues if wanted(r.lang)}
        bounds = [(r.name, r.regex) for r in self.rules.clauses if r.role == "boundary" and wanted(r.lang)]
        conj = [r.regex for r in self.rules.clauses if r.role == "conjunction" and wanted(r.lang)]
        # A gap between two phrases "joins" them when it holds conjunctions (at least one: two
        # device statements side by side, "linksschenkelblock linkshypertrophie", are no list).
        conj_body = "|".join(f"(?:{c})" for c in sorted(conj, key=len, reverse=True)) or "(?!)"
        compiled = _Compiled(
            conditions=Scanner([(k, r.regex) for k, r in conditions.items()]),
            condition_of=conditions,
            cues=Scanner([(k, r.regex) for k, r in cues.items()]),
            cue_of=cues,
            boundaries=alternation(bounds),
            conjunction_gap=re.compile(rf"\s*(?:(?:{conj_body})\s*)+"),
        )
        self._by_lang[language] = compiled
        return compiled

    def label(self, text: str, *, language: str | None = None) -> list[Finding]:
        """Label one report.

        Args:
            text: the report, any case, any whitespace.
            language: ``"en"``, ``"de"`` or ``"sv"`` to use only that language's rules (and the
                ``any`` rules); ``None`` (default) uses all, which is safe because the phrases of
                one language do not occur in another's reports.

        Returns:
            The findings in text order; one id may appear several times (each statement of it).
        """
        if not text:
            return []
        comp = self._compiled(language)
        norm, origin = normalize(text)
        if not norm:
            return []
        phrases = comp.conditions.finditer(norm)
        if not phrases:
            return []
        occupied = [(s, e) for s, e, _ in phrases]
        cues = [(s, e, k) for s, e, k in comp.cues.finditer(norm) if not _overlaps(s, e, occupied)]
        cuts = []
        if comp.boundaries is not None:
            blocked = sorted(occupied + [(s, e) for s, e, _ in cues])
            cuts = [m.start() for m in comp.boundaries.finditer(norm) if not _overlaps(m.start(), m.end(), blocked)]
        starts = [s for s, _, _ in phrases]
        status: list[str] = [""] * len(phrases)
        cue_of: list[tuple[str, str] | None] = [None] * len(phrases)
        for cs, ce, group in cues:
            rule = comp.cue_of[group]
            if rule.direction == "pseudo":
                continue
            clause = bisect.bisect_right(cuts, cs)
            reached: list[int] = []
            if rule.direction in ("forward", "both"):
                reached += self._reach(norm, phrases, starts, cuts, clause, ce, rule.window, comp, forward=True)
            if rule.direction in ("backward", "both"):
                reached += self._reach(norm, phrases, starts, cuts, clause, cs, rule.window, comp, forward=False)
            for k in reached:
                # Negation outranks uncertainty ("kein sicherer Hinweis auf ...").
                if status[k] != "negated":
                    status[k] = rule.effect
                    cue_of[k] = (rule.name, text[origin[cs]:origin[ce - 1] + 1])
        findings = []
        for k, (s, e, group) in enumerate(phrases):
            rule = comp.condition_of[group]
            start, end = origin[s], origin[e - 1] + 1
            for cid in rule.ids:
                if rule.status:
                    st, cue = rule.status, None
                elif status[k]:
                    st, cue = status[k], cue_of[k]
                else:
                    st, cue = ("uncertain" if cid in rule.hedged else "present"), None
                findings.append(Finding(cid, cast(Status, st), (start, end), text[start:end], rule.name, cue))
        if self.rules.combinations or self.rules.exclusions:
            findings = self._context(findings)
        return findings

    def _context(self, findings: list[Finding]) -> list[Finding]:
        """Apply ``combinations.tsv`` then ``exclusions.tsv`` to one report's findings."""
        for comb in self.rules.combinations:
            positive = {f.id for f in findings if f.status != "negated"}
            if all(i in positive for i in comb.ids):
                findings = [
                    replace(f, id=comb.into, rule=f"{f.rule}+{comb.name}") if f.id in comb.ids and f.status != "negated" else f
                    for f in findings
                ]
        for excl in self.rules.exclusions:
            positive = {f.id for f in findings if f.status != "negated"}
            if any(w in positive for w in excl.when):
                findings = [f for f in findings if not (f.id == excl.id and excl.status in ("any", f.status))]
        return findings

    @staticmethod
    def _reach(
        norm: str,
        phrases: list[tuple[int, int, str]],
        starts: list[int],
        cuts: list[int],
        clause: int,
        at: int,
        window: int,
        comp: _Compiled,
        *,
        forward: bool,
    ) -> list[int]:
        """Indices of the phrases a cue at ``at`` reaches in one direction."""
        if forward:
            k = bisect.bisect_left(starts, at)
            step = 1
        else:
            k = bisect.bisect_left(starts, at) - 1
            step = -1
        out: list[int] = []
        prev = None
        while 0 <= k < len(phrases):
            s, e, _ = phrases[k]
            if bisect.bisect_right(cuts, s) != clause:
                break
            if prev is None:
                gap = norm[at:s] if forward else norm[e:at]
                if len(_WORD.findall(gap)) > window:
                    break
            else:
                ps, pe, _ = phrases[prev]
                gap = norm[pe:s] if forward else norm[e:ps]
                if not comp.conjunction_gap.fullmatch(gap):
                    break
            out.append(k)
            prev = k
            k += step
        return out

    def label_many(self, texts: Iterable[str], *, language: str | None = None) -> list[list[Finding]]:
        """Label many reports; the same as ``[self.label(t) for t in texts]``."""
        return [self.label(t, language=language) for t in texts]


def _overlaps(s: int, e: int, spans: list[tuple[int, int]]) -> bool:
    """Whether ``[s, e)`` overlaps any of the sorted, non-overlapping ``spans``."""
    k = bisect.bisect_right(spans, (s, float("inf")))
    if k > 0 and spans[k - 1][1] > s:
        return True
    return k < len(spans) and spans[k][0] < e


@lru_cache(maxsize=1)
def default_labeler() -> ReportLabeler:
    """The labeler with ecgfm's shipped rules, built on first use and then shared."""
    return ReportLabeler()


def label_report(text: str, *, language: str | None = None) -> list[Finding]:
    """Label one report with the shipped rules.

    Args:
        text: the report (German, English or Swedish; any case and whitespace).
        language: ``"en"``, ``"de"``, ``"sv"`` or ``None`` for all rules.

    Returns:
        The findings in text order, each with ``id``, ``status``, ``span`` into ``text``,
        ``evidence`` and ``rule``.

    >>> [(f.id, f.status) for f in label_report("V.a. Linksherzhypertrophie")]
    [('LVH', 'uncertain')]
    """
    return default_labeler().label(text, language=language)


def resolve(findings: Iterable[Finding]) -> dict[str, Status]:
    """One status per id: ``present`` if any finding says so, else ``uncertain``, else ``negated``."""
    out: dict[str, Status] = {}
    for f in findings:
        if f.id not in out or _RANK[f.status] > _RANK[out[f.id]]:
            out[f.id] = f.status
    return out


def positive_ids(findings: Iterable[Finding], *, uncertain: bool = True) -> set[str]:
    """The ids a report states, for use as labels.

    Args:
        findings: the findings of one report.
        uncertain: count ``uncertain`` findings as positive (default). PTB-XL does: its
            ``scp_codes`` keep hedged statements (``linkshypertrophie moeglich``, ``possible old
            inferior infarct``) with a likelihood below 100 rather than dropping them, and its
            benchmark convention counts every statement whatever its likelihood.

    Returns:
        The set of ids that are present (or uncertain, if counted); negated ids never are.
    """
    keep = ("present", "uncertain") if uncertain else ("present",)
    return {cid for cid, st in resolve(findings).items() if st in keep}
