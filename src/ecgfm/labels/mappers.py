"""Dataset-native labels to catalogue ids, reporting every label that has no mapping.

Each mapper returns the catalogue ids (unique, in first-seen order) together with the labels it
could not map, so nothing is dropped silently; ``strict=True`` raises
:class:`UnknownLabelError` instead. The tables for LUDB, MIT-BIH, CinC 2017 and CPSC 2021 are
CSV files beside the catalogue (``ecgfm/labels/data/map_*.csv``); PTB-XL and CinC 2020/2021
labels are SCP-ECG and SNOMED CT codes, looked up in the catalogue itself.

========================  =======================================  ===========================
source                    native label                             function
========================  =======================================  ===========================
PTB-XL                    ``scp_codes`` ("{'NORM': 100.0, ...}")   :func:`map_ptbxl_scp`,
                                                                   :func:`ptbxl_groups`
CinC 2020/2021            ``# Dx:`` SNOMED CT codes                :func:`map_cinc_dx`
CinC 2017                 ``N``, ``A``, ``O``, ``~``               :func:`map_cinc2017`
MIT-BIH beats             annotation symbols (``N``, ``V``, ...)   :func:`map_mitbih_beats`
                          -> AAMI classes N, S, V, F, Q            :func:`beat_conditions`
MIT-BIH rhythms           ``(AFIB``, ``(VT``, ... aux notes        :func:`map_rhythm_notes`,
                                                                   :func:`map_rhythm_episodes`
LUDB                      header diagnoses ("Rhythm: Sinus ...")   :func:`map_ludb`
CPSC 2021                 ``(AFIB`` / ``(N`` episodes, class       :func:`map_cpsc2021_episodes`,
                                                                   :func:`map_cpsc2021_class`
========================  =======================================  ===========================

AAMI beat classes are a separate five-letter vocabulary (:data:`AAMI_CLASSES`), not catalogue
conditions: they sort beats, while the catalogue names findings about a recording. A beat also
implies conditions (a ``V`` beat shows a PVC); :func:`beat_conditions` gives those.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ecgfm.errors import ValidationError
from ecgfm.labels.catalogue import Catalogue, CatalogueError, load_catalogue, read_table

if TYPE_CHECKING:
    from ecgfm.io.wfdb import Annotations

#: AAMI EC57 beat classes.
AAMI_CLASSES: dict[str, str] = {
    "N": "normal, bundle branch block and escape beats (non-ectopic)",
    "S": "supraventricular ectopic beats",
    "V": "ventricular ectopic beats",
    "F": "fusion of ventricular and normal beats",
    "Q": "paced, paced-fusion and unclassifiable beats",
}

#: The PTB-XL benchmark's label groupings (Strodthoff et al. 2020).
PTBXL_GROUPS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")


class UnknownLabelError(ValidationError):
    """``strict=True`` met labels without a mapping; ``unknown`` lists them."""

    def __init__(self, source: str, unknown: Sequence[str]) -> None:
        self.source = source
        self.unknown = list(unknown)
        super().__init__(f"{source}: no catalogue mapping for {', '.join(map(repr, self.unknown))}")


class LabelMap(NamedTuple):
    """Catalogue ids of one record's labels and the labels that have no mapping."""

    ids: list[str]  # catalogue ids, unique, in first-seen order
    unknown: list[str]  # native labels without a mapping, as given (unique, in order)


class Episode(NamedTuple):
    """One rhythm episode: samples ``start`` (inclusive) to ``stop`` (exclusive)."""

    id: str  # catalogue id
    start: int  # first sample
    stop: int  # one past the last sample
    note: str  # the native rhythm note, e.g. "AFIB"


class EpisodeMap(NamedTuple):
    """Rhythm episodes of a record and the rhythm notes that have no mapping."""

    episodes: list[Episode]
    unknown: list[str]


class BeatMap(NamedTuple):
    """AAMI classes of annotation symbols, aligned with them (``None``: not a beat)."""

    classes: list[str | None]
    unknown: list[str]  # symbols that are neither a known beat nor a known non-beat annotation

    def counts(self) -> dict[str, int]:
        """Beats per AAMI class, every class present (zero where none)."""
        out = dict.fromkeys(AAMI_CLASSES, 0)
        for c in self.classes:
            if c is not None:
                out[c] += 1
        return out


def _finish(source: str, ids: Iterable[str], unknown: Iterable[str], strict: bool) -> LabelMap:
    unknown = list(dict.fromkeys(unknown))
    if strict and unknown:
        raise UnknownLabelError(source, unknown)
    return LabelMap(list(dict.fromkeys(ids)), unknown)


# -- PTB-XL -------------------------------------------------------------------------------------


def parse_scp_codes(scp_codes: str | Mapping[str, float]) -> dict[str, float]:
    """PTB-XL's ``scp_codes`` cell as a dict ``{code: likelihood}``.

    The cell is a Python dict literal (``"{'NORM': 100.0, 'SR': 0.0}"``), read with
    :func:`ast.literal_eval`, which evaluates literals only, never code.

    Raises:
        ValidationError: the text is not a dict of codes to likelihoods (0-100).
    """
    if isinstance(scp_codes, Mapping):
        parsed: object = dict(scp_codes)
    else:
        try:
            parsed = ast.literal_eval(str(scp_codes).strip() or "{}")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValidationError(f"PTB-XL scp_codes {str(scp_codes)[:80]!r} is not a dict literal") from None
    if not isinstance(parsed, dict):
        raise ValidationError(f"PTB-XL scp_codes {str(scp_codes)[:80]!r} is not a dict literal")
    out = {}
    for code, likelihood in parsed.items():
        if not isinstance(code, str) or isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)):
            raise ValidationError(f"PTB-XL scp_codes entry {code!r}: {likelihood!r} is not code: likelihood")
        if not (math.isfinite(likelihood) and 0 <= likelihood <= 100):
            raise ValidationError(f"PTB-XL scp_codes entry {code!r}: likelihood {likelihood!r} is outside 0-100")
        out[code] = float(likelihood)
    return out


def _ptbxl_codes(scp_codes: str | Mapping[str, float] | Iterable[str], min_likelihood: float) -> list[str]:
    if isinstance(scp_codes, (str, Mapping)):
        return [c for c, p in parse_scp_codes(scp_codes).items() if p >= min_likelihood]
    return list(scp_codes)  # bare codes: no likelihoods to threshold


def map_ptbxl_scp(
    scp_codes: str | Mapping[str, float] | Iterable[str],
    *,
    min_likelihood: float = 0.0,
    catalogue: Catalogue | None = None,
    strict: bool = False,
) -> LabelMap:
    """PTB-XL statements to catalogue ids (the id of a PTB-XL statement is its SCP code).

    Args:
        scp_codes: the ``scp_codes`` cell (dict literal text or dict) or bare codes.
        min_likelihood: keep statements with likelihood >= this (0-100). The benchmark
            convention, and the default, is 0: every statement present counts (PTB-XL writes
            0 for "likelihood unknown", e.g. most rhythm statements).
        catalogue: defaults to the packaged one.
        strict: raise :class:`UnknownLabelError` on codes the catalogue lacks.

    >>> map_ptbxl_scp("{'IMI': 100.0, 'LVOLT': 0.0, 'SR': 0.0}")
    LabelMap(ids=['IMI', 'LVOLT', 'SR'], unknown=[])
    >>> map_ptbxl_scp("{'IMI': 15.0, 'SR': 0.0}", min_likelihood=50).ids
    []
    """
    cat = catalogue or load_catalogue()
    ids, unknown = [], []
    for code in _ptbxl_codes(scp_codes, min_likelihood):
        cond = cat.by_scp(code)
        if cond is None:
            unknown.append(code)
        else:
            ids.append(cond.id)
    return _finish("PTB-XL scp_codes", ids, unknown, strict)


def ptbxl_groups(
    scp_codes: str | Mapping[str, float] | Iterable[str],
    *,
    min_likelihood: float = 0.0,
    catalogue: Catalogue | None = None,
    strict: bool = False,
) -> dict[str, list[str]]:
    """The PTB-XL benchmark's label sets of one record (Strodthoff et al. 2020).

    As ``compute_label_aggregations`` of the benchmark derives them from
    ``scp_statements.csv``: ``diagnostic`` are the statements with ``diagnostic == 1``,
    ``subdiagnostic`` / ``superdiagnostic`` their ``diagnostic_subclass`` / ``diagnostic_class``,
    ``form`` and ``rhythm`` the statements with ``form == 1`` / ``rhythm == 1``, and ``all``
    every code of the record. Codes the catalogue lacks stay in ``all`` (and raise with
    ``strict=True``).

    Returns:
        ``{group: sorted codes}`` for each of :data:`PTBXL_GROUPS`.

    >>> ptbxl_groups("{'ASMI': 100.0, 'ABQRS': 0.0, 'SR': 0.0}")["superdiagnostic"]
    ['MI']
    """
    cat = catalogue or load_catalogue()
    codes = list(dict.fromkeys(_ptbxl_codes(scp_codes, min_likelihood)))
    out: dict[str, set[str]] = {g: set() for g in PTBXL_GROUPS}
    unknown = []
    for code in codes:
        out["all"].add(code)
        cond = cat.by_scp(code)
        if cond is None:
            unknown.append(code)
            continue
        if cond.in_ptbxl("diagnostic"):
            out["diagnostic"].add(cond.id)
            if cond.ptbxl_subclass:
                out["subdiagnostic"].add(cond.ptbxl_subclass)
            if cond.ptbxl_class:
                out["superdiagnostic"].add(cond.ptbxl_class)
        for group in ("form", "rhythm"):
            if cond.in_ptbxl(group):
                out[group].add(cond.id)
    if strict and unknown:
        raise UnknownLabelError("PTB-XL scp_codes", unknown)
    return {g: sorted(v) for g, v in out.items()}


# -- CinC 2020/2021 -----------------------------------------------------------------------------


def map_cinc_dx(
    codes: str | Iterable[str | int], *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """PhysioNet/CinC 2020-2021 ``# Dx:`` SNOMED CT codes to catalogue ids.

    Args:
        codes: the codes as ``ecgfm.read(...).meta.extra["dx"]`` gives them, or the header's
            comma-separated text (``"164889003,59118001"``).

    >>> map_cinc_dx(["713427006", "59118001", "164889003"])
    LabelMap(ids=['CRBBB', 'AFIB'], unknown=[])
    """
    cat = catalogue or load_catalogue()
    if isinstance(codes, str):
        codes = codes.split(",")
    ids, unknown = [], []
    for raw in codes:
        code = str(raw).strip()
        if not code:
            continue
        cond = cat.by_snomed(code)
        if cond is None:
            unknown.append(code)
        else:
            ids.append(cond.id)
    return _finish("CinC Dx", ids, unknown, strict)


# -- data tables (LUDB, MIT-BIH, CinC 2017, CPSC 2021) -----------------------------------------


@cache
def _table(name: str, key: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for row in read_table(name):
        k = _ludb_key(row[key]) if name == "map_ludb.csv" else row[key]
        if k in out:
            raise CatalogueError(f"{row['_line']}: {key} {row[key]!r} is listed twice")
        out[k] = tuple(i.strip() for i in row["ids"].split("|") if i.strip())
    return out


def _check_ids(ids: Iterable[str], cat: Catalogue, table: str) -> None:
    for cid in ids:
        if cid not in cat:
            raise CatalogueError(f"ecgfm/labels/data/{table}: id {cid!r} is not in the catalogue")


def _lookup(
    labels: Iterable[str],
    table: str,
    key: str,
    source: str,
    cat: Catalogue | None,
    strict: bool,
    normalise: Callable[[str], str] = str.strip,
) -> LabelMap:
    cat = cat or load_catalogue()
    mapping = _table(table, key)
    ids: list[str] = []
    unknown: list[str] = []
    for label in labels:
        found = mapping.get(normalise(label))
        if found is None:
            unknown.append(label)
        else:
            _check_ids(found, cat, table)
            ids.extend(found)
    return _finish(source, ids, unknown, strict)


def table_labels(table: str) -> dict[str, tuple[str, ...]]:
    """A packaged mapping table as ``{native label: catalogue ids}``.

    ``table`` is one of ``"ludb"``, ``"mitbih_rhythm"``, ``"mitbih_beats"``, ``"cinc2017"``,
    ``"cpsc2021"`` (LUDB keys are in normal form: lower case, no trailing ``.``).
    """
    keys = {"ludb": "statement", "mitbih_rhythm": "note", "mitbih_beats": "symbol",
            "cinc2017": "label", "cpsc2021": "label"}
    if table not in keys:
        raise ValueError(f"unknown table {table!r} (known: {', '.join(keys)})")
    return dict(_table(f"map_{table}.csv", keys[table]))


# -- CinC 2017 -----------------------------------------------------------------------------------


def map_cinc2017(
    labels: str | Iterable[str], *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """PhysioNet/CinC 2017 classes to catalogue ids.

    ``N`` -> ``SR`` (normal sinus rhythm), ``A`` -> ``AFIB``, ``O`` -> ``OTHER_RHYTHM``, ``~`` ->
    ``NOISE`` (a signal-quality statement, category measurement).

    Args:
        labels: one class (``"A"``) or several.
    """
    labels = [labels] if isinstance(labels, str) else list(labels)
    return _lookup([s.strip() for s in labels], "map_cinc2017.csv", "label", "CinC 2017 class", catalogue, strict)


def read_cinc2017_reference(
    path: str | os.PathLike[str], *, catalogue: Catalogue | None = None, strict: bool = False
) -> dict[str, LabelMap]:
    """``REFERENCE.csv`` of CinC 2017 (``record,class`` lines) as ``{record: LabelMap}``."""
    out = {}
    with Path(path).open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValidationError(f"{path}:{line}: expected 'record,class', got {','.join(row)!r}")
            out[row[0].strip()] = map_cinc2017(row[1:], catalogue=catalogue, strict=strict)
    return out


# -- MIT-BIH beats and rhythms -----------------------------------------------------------------


@lru_cache(maxsize=1)
def _beat_classes() -> dict[str, str | None]:
    return {row["symbol"]: row["aami"] or None for row in read_table("map_mitbih_beats.csv")}


def map_mitbih_beats(symbols: Iterable[str], *, strict: bool = False) -> BeatMap:
    """WFDB annotation symbols to AAMI EC57 beat classes, aligned with the symbols.

    The grouping (ANSI/AAMI EC57; de Chazal et al. 2004): N = ``N L R e j`` (+ ``B n``),
    S = ``A a J S``, V = ``V E`` (+ ``r``), F = ``F``, Q = ``/ f Q`` (+ ``?``). Non-beat
    annotations (``+ ~ | x ! [ ] " p t`` ...) give ``None``; symbols outside the WFDB
    vocabulary are reported in ``unknown`` (their class is ``None`` too).

    >>> bm = map_mitbih_beats(["N", "V", "+", "A", "L"])
    >>> bm.classes, bm.counts()["V"]
    (['N', 'V', None, 'S', 'N'], 1)
    """
    table = _beat_classes()
    classes: list[str | None] = []
    unknown = []
    for sym in symbols:
        if sym not in table:
            unknown.append(sym)
        classes.append(table.get(sym))
    unknown = list(dict.fromkeys(unknown))
    if strict and unknown:
        raise UnknownLabelError("WFDB beat symbols", unknown)
    return BeatMap(classes, unknown)


def beat_conditions(
    symbols: Iterable[str], *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """Catalogue conditions the annotated beats show (``V`` -> ``PVC``, ``L`` -> ``CLBBB`` ...).

    Normal beats and annotations that are no finding (``N``, ``+``, ``~`` ...) add nothing.
    """
    return _lookup(list(symbols), "map_mitbih_beats.csv", "symbol", "WFDB beat symbols", catalogue, strict)


def _rhythm_key(note: str) -> str:
    return note.strip().strip("\x00").strip().lstrip("(").strip().upper()


def map_rhythm_notes(
    notes: Iterable[str], *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """WFDB rhythm notes (``"(AFIB"``, ``"(N"``, ``"(VT"`` ...) to catalogue ids.

    Empty notes are skipped (beats carry none); any other note without a mapping is unknown.

    >>> map_rhythm_notes(["(N", "(AFIB", "(B\\x00", ""]).ids
    ['SR', 'AFIB', 'VBIG']
    """
    notes = [n.strip("\x00 ") for n in notes if _rhythm_key(n)]
    return _lookup(notes, "map_mitbih_rhythm.csv", "note", "WFDB rhythm notes", catalogue, strict, _rhythm_key)


def map_rhythm_episodes(
    annotations: Annotations,
    n_samples: int | None = None,
    *,
    catalogue: Catalogue | None = None,
    strict: bool = False,
) -> EpisodeMap:
    """Rhythm episodes of a MIT-BIH-style annotation file, as catalogue ids with sample spans.

    Each ``+`` annotation with a ``(NOTE`` opens an episode that lasts to the next one (or to
    ``n_samples``, or one past the last annotation).

    Args:
        annotations: from :func:`ecgfm.io.wfdb.read_annotations` (``atr``).
        n_samples: the record's length in samples, to close the last episode.
    """
    cat = catalogue or load_catalogue()
    mapping = _table("map_mitbih_rhythm.csv", "note")
    episodes, unknown = [], []
    for label, start, stop in annotations.rhythm_episodes(n_samples):
        key = _rhythm_key(label)
        ids = mapping.get(key)
        if not ids:
            unknown.append(label)
            continue
        _check_ids(ids, cat, "map_mitbih_rhythm.csv")
        episodes.extend(Episode(cid, start, stop, key) for cid in ids)
    unknown = list(dict.fromkeys(unknown))
    if strict and unknown:
        raise UnknownLabelError("WFDB rhythm notes", unknown)
    return EpisodeMap(episodes, unknown)


# -- CPSC 2021 ------------------------------------------------------------------------------------


def map_cpsc2021_class(
    comment: str, *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """A CPSC 2021 record class (its header comment) to catalogue ids.

    ``paroxysmal atrial fibrillation`` -> ``PAF``, ``persistent atrial fibrillation`` ->
    ``PERSAF``, ``non atrial fibrillation`` -> no ids (known, so not unknown).
    """
    return _lookup([comment], "map_cpsc2021.csv", "label", "CPSC 2021 class", catalogue, strict,
                   lambda s: " ".join(s.lower().split()))


def map_cpsc2021_episodes(
    annotations: Annotations,
    n_samples: int,
    *,
    catalogue: Catalogue | None = None,
    strict: bool = False,
) -> EpisodeMap:
    """AF episodes of a CPSC 2021 record, with the stretches between them, as catalogue ids.

    CPSC 2021 marks each AF episode with a ``+`` annotation ``(AFIB`` at its onset and ``(N``
    at its end; everything outside AF episodes is non-AF rhythm, mapped (as ``(N``) to ``SR``.
    Episodes are ``[start, stop)`` and tile the record; an episode closed on the record's last
    sample runs to its end (``stop == n_samples``).

    Args:
        annotations: the record's ``atr`` annotations.
        n_samples: the record's length in samples.

    >>> ann = read_annotations("data_101_6.hea")  # doctest: +SKIP
    >>> map_cpsc2021_episodes(ann, 22355).episodes[:2]  # doctest: +SKIP
    [Episode(id='SR', start=0, stop=3132, note='N'), Episode(id='AFIB', start=3132, stop=5639, note='AFIB')]
    """
    cat = catalogue or load_catalogue()
    mapping = _table("map_cpsc2021.csv", "label")
    marks = [
        (int(s), _rhythm_key(note))
        for s, sym, note in zip(annotations.sample, annotations.symbol, annotations.aux_note)
        if sym == "+" and note.strip("\x00 ").startswith("(")
    ]
    spans: list[tuple[str, int, int]] = []  # (note, start, stop)
    unknown: list[str] = []
    open_note: str | None = None
    open_at = 0
    cursor = 0  # end of the last closed stretch
    for sample, note in marks:
        sample = min(max(sample, 0), n_samples)
        if note == "N":
            if open_note is not None:  # closes the open episode
                stop = n_samples if sample >= n_samples - 1 else sample
                spans.append((open_note, open_at, stop))
                open_note, cursor = None, stop
            continue
        if open_note is not None:  # an episode opened inside another closes that one
            spans.append((open_note, open_at, sample))
        elif sample > cursor:
            spans.append(("N", cursor, sample))
        open_note, open_at = note, sample
    if open_note is not None:
        spans.append((open_note, open_at, n_samples))
    elif cursor < n_samples:
        spans.append(("N", cursor, n_samples))
    episodes = []
    for note, start, stop in spans:
        if stop <= start:
            continue
        ids = mapping.get(note)
        if ids is None:
            unknown.append(f"({note}")
            continue
        _check_ids(ids, cat, "map_cpsc2021.csv")
        episodes.extend(Episode(cid, start, stop, note) for cid in ids)
    unknown = list(dict.fromkeys(unknown))
    if strict and unknown:
        raise UnknownLabelError("CPSC 2021 rhythm notes", unknown)
    return EpisodeMap(episodes, unknown)


# -- LUDB ----------------------------------------------------------------------------------------

# A statement ends at '.' followed by a space, a '#' (header comment) or the end; "supp.NSTEMI"
# keeps its dot.
_LUDB_SPLIT = re.compile(r"\.(?=\s|#|$)|\n|#")


def _ludb_key(statement: str) -> str:
    key = " ".join(statement.lower().split()).rstrip(". ")
    return key.removeprefix("rhythm:").strip()


def split_ludb_diagnoses(diagnoses: str | Iterable[str]) -> list[str]:
    """LUDB diagnosis statements from header text or lines.

    Accepts ``ecgfm.read(...).meta.interpretation`` (the ``#<diagnoses>:`` lines joined with
    spaces), the raw comment lines, or a ``ludb.csv`` cell (one statement per line).

    >>> split_ludb_diagnoses("Rhythm: Sinus rhythm. Undefined ischemia/scar/supp.NSTEMI: apical.")
    ['Rhythm: Sinus rhythm', 'Undefined ischemia/scar/supp.NSTEMI: apical']
    """
    lines = [diagnoses] if isinstance(diagnoses, str) else list(diagnoses)
    out = []
    for line in lines:
        out.extend(s.strip() for s in _LUDB_SPLIT.split(line) if s.strip())
    return out


def map_ludb(
    diagnoses: str | Iterable[str], *, catalogue: Catalogue | None = None, strict: bool = False
) -> LabelMap:
    """LUDB diagnoses (header comments or ``ludb.csv`` cells) to catalogue ids.

    Every distinct statement of LUDB v1.0.1 is in the table ``data/map_ludb.csv``; matching
    ignores case, repeated spaces, a trailing ``.`` and a leading ``Rhythm:``. Where LUDB gives
    an infarct's wall, the location's infarction id is added (``STEMI: septal`` -> ``STEMI``,
    ``ASMI``).

    >>> map_ludb("Rhythm: Sinus bradycardia. Electric axis of the heart: left axis deviation.")
    LabelMap(ids=['SBRAD', 'LAD'], unknown=[])
    """
    statements = split_ludb_diagnoses(diagnoses)
    return _lookup(statements, "map_ludb.csv", "statement", "LUDB diagnoses", catalogue, strict, _ludb_key)


__all__ = [
    "AAMI_CLASSES", "PTBXL_GROUPS", "BeatMap", "Episode", "EpisodeMap", "LabelMap",
    "UnknownLabelError", "beat_conditions", "map_cinc2017", "map_cinc_dx", "map_cpsc2021_class",
    "map_cpsc2021_episodes", "map_ludb", "map_mitbih_beats", "map_ptbxl_scp", "map_rhythm_episodes",
    "map_rhythm_notes", "parse_scp_codes", "ptbxl_groups", "read_cinc2017_reference",
    "split_ludb_diagnoses", "table_labels",
]
