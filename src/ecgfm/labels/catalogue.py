"""The conditions catalogue: one vocabulary of ECG-assessable conditions, shipped as a CSV.

Every dataset, label source and model head maps into these ids. The packaged table
(``ecgfm/labels/data/catalogue.csv``) has one condition per row; adding a condition means adding a
row, to the packaged file or to a CSV of your own passed to :func:`load_catalogue`. Columns:

- ``id``: stable upper-case code. PTB-XL statements keep their SCP code (``AFIB``, ``IMI``,
  ``LAO/LAE``); other conditions take the PhysioNet/CinC challenge abbreviation (``BRADY``).
- ``name``: preferred English name. ``category``: one of :data:`CATEGORIES`.
- ``parent``: the id(s) a condition rolls up to (``IMI -> MI``), ``|``-separated when more than one.
- ``synonyms_en``, ``synonyms_de``: ``|``-separated search terms (German as reports write it).
- ``scp``: SCP-ECG statement code(s); ``snomed``: SNOMED CT code(s), each in one row only, so
  codes the PhysioNet/CinC challenge scores as one diagnosis share a row; ``aha``: AHA code.
- ``ptbxl_groups``: PTB-XL membership: ``diagnostic``, ``form``, ``rhythm``, ``class=<superclass>``,
  ``subclass=<subclass>`` (diagnostic statements), and ``superclass`` / ``subclass`` for the rows
  that are themselves a PTB-XL super- or subclass.
- ``description``: free text: provenance and any mapping decision.

Loading validates the whole table and names the offending row: unique ids, known parents, no
cycles, every SCP and SNOMED code in one row only, categories from the allowed set.

>>> cat = load_catalogue()
>>> cat.by_snomed("164889003").id
'AFIB'
>>> sorted(cat.roll_up(["IMI"]))
['IMI', 'MI']
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgfm.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

CATALOGUE_VERSION = "2026.11"  # version of the packaged table (also in its first comment line)

#: The allowed categories, with what each holds (the issue's long names in brackets).
CATEGORIES: dict[str, str] = {
    "rhythm": "rhythms, ectopic beats and their patterns",
    "conduction": "AV, sinoatrial, bundle branch, fascicular and intraventricular conduction, pre-excitation",
    "axis": "frontal QRS axis and horizontal-plane rotation",
    "hypertrophy": "chamber hypertrophy and enlargement, atrial overload (hypertrophy/enlargement)",
    "ischaemia": "ischaemia, injury and infarction, coronary disease (ischaemia/infarction)",
    "repolarisation": "ST segment, T and U wave changes, early repolarisation (repolarisation/ST-T)",
    "morphology": "P, QRS and Q wave shape; overall normal/abnormal statements (NORM, ABQRS)",
    "pacing": "artificial pacemaker rhythms and pacing modes",
    "measurement": "interval and voltage criteria (PR, QT, P duration, QRS voltage) and technical "
    "statements about the recording (noise, lead reversal) (measurement-based)",
    "systemic": "drug and electrolyte effects, non-cardiac and whole-heart diseases (non-cardiac/systemic)",
}

COLUMNS = (
    "id", "name", "category", "parent", "synonyms_en", "synonyms_de", "scp", "snomed", "aha",
    "ptbxl_groups", "description",
)
_REQUIRED = ("id", "name", "category")
_MULTI = ("parent", "synonyms_en", "synonyms_de", "scp", "snomed", "aha", "ptbxl_groups")
_ID = re.compile(r"^[A-Z0-9_/()\-+.]+$")
_VERSION = re.compile(r"version\s+([\w.\-]+)", re.IGNORECASE)


class CatalogueError(ValidationError):
    """A catalogue table is malformed; the message names the file, line and id."""


@dataclass(frozen=True)
class Condition:
    """One catalogue entry (one row of the table).

    Attributes:
        id: stable upper-case id, e.g. ``"AFIB"``.
        name: preferred English name.
        category: one of :data:`CATEGORIES`.
        parents: ids this condition rolls up to (usually one, none for a root).
        synonyms_en: English search terms.
        synonyms_de: German search terms.
        scp: SCP-ECG statement codes (the PTB-XL code for PTB-XL statements).
        snomed: SNOMED CT codes; codes the PhysioNet/CinC challenge scores as one diagnosis
            share an entry.
        aha: AHA statement codes where PTB-XL gives one.
        ptbxl_groups: PTB-XL membership tokens (``diagnostic``, ``form``, ``rhythm``,
            ``class=MI``, ``subclass=IMI``, ``superclass``, ``subclass``).
        description: provenance and mapping notes.
        source: ``"<file>:<line>"`` of the row that defined it.
        extra: columns beyond the standard ones, as written.
    """

    id: str
    name: str
    category: str
    parents: tuple[str, ...] = ()
    synonyms_en: tuple[str, ...] = ()
    synonyms_de: tuple[str, ...] = ()
    scp: tuple[str, ...] = ()
    snomed: tuple[str, ...] = ()
    aha: tuple[str, ...] = ()
    ptbxl_groups: tuple[str, ...] = ()
    description: str = ""
    source: str = field(default="", compare=False)
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def parent(self) -> str | None:
        """The first parent id, or ``None`` for a root."""
        return self.parents[0] if self.parents else None

    @property
    def synonyms(self) -> tuple[str, ...]:
        """All synonyms, English then German."""
        return self.synonyms_en + self.synonyms_de

    @property
    def ptbxl_class(self) -> str | None:
        """PTB-XL diagnostic superclass of a diagnostic statement (``IMI`` -> ``"MI"``)."""
        return self._group_value("class")

    @property
    def ptbxl_subclass(self) -> str | None:
        """PTB-XL diagnostic subclass of a diagnostic statement (``ASMI`` -> ``"AMI"``)."""
        return self._group_value("subclass")

    def in_ptbxl(self, group: str) -> bool:
        """Whether the entry is in a PTB-XL group: ``diagnostic``, ``form``, ``rhythm``,
        ``superclass`` or ``subclass``."""
        return group in self.ptbxl_groups

    def _group_value(self, key: str) -> str | None:
        prefix = key + "="
        return next((g[len(prefix):] for g in self.ptbxl_groups if g.startswith(prefix)), None)

    def to_row(self) -> dict[str, str]:
        """The entry as a CSV row (``|``-joined multi-valued columns, extra columns kept)."""
        row = {
            "id": self.id, "name": self.name, "category": self.category,
            "parent": "|".join(self.parents), "synonyms_en": "|".join(self.synonyms_en),
            "synonyms_de": "|".join(self.synonyms_de), "scp": "|".join(self.scp),
            "snomed": "|".join(self.snomed), "aha": "|".join(self.aha),
            "ptbxl_groups": "|".join(self.ptbxl_groups), "description": self.description,
        }
        row.update(self.extra)
        return row


def fold(text: str) -> str:
    """Search normal form: case, accents and umlaut spellings folded, punctuation to spaces.

    German umlauts equal their two-letter spellings and those equal the bare vowel's English
    counterpart: ``ü = ue = u``, ``ö = oe = o``, ``ä = ae = e`` (so "Verlängerung" matches
    "Verlaengerung", and "ischaemia" matches "ischemia"); ``ß = ss``.

    >>> fold("Vorhofflimmern/-flattern"), fold("ÜBERDREHTER Linkstyp"), fold("ueberdrehter")
    ('vorhofflimmern flattern', 'uberdrehter linkstyp', 'uberdrehter')
    """
    text = text.casefold()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, spelled)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("ae", "e").replace("oe", "o").replace("ue", "u")
    return " ".join(re.sub(r"[^\w]+|_", " ", text).split())


class Catalogue:
    """A validated set of conditions with lookups by id, code and text, and the hierarchy.

    Build one with :func:`load_catalogue` (the packaged table, optionally extended by your own
    CSV files) or :meth:`from_csv`. Iterating yields :class:`Condition` in table order.
    """

    def __init__(self, conditions: Iterable[Condition], *, version: str | None = None) -> None:
        self._by_id: dict[str, Condition] = {}
        for cond in conditions:
            if cond.id in self._by_id:
                raise CatalogueError(
                    f"{_where(cond)}: duplicate id {cond.id!r} (first defined at {_where(self._by_id[cond.id])})"
                )
            self._by_id[cond.id] = cond
        self.version = version
        self._scp: dict[str, str] = {}
        self._snomed: dict[str, str] = {}
        self._children: dict[str, list[str]] = {cid: [] for cid in self._by_id}
        self._validate()
        self._search_index: list[tuple[Condition, str, str, tuple[str, ...], tuple[str, ...]]] | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike[str], *, extends: Catalogue | None = None
    ) -> Catalogue:
        """Read a catalogue table; with ``extends``, its rows add to (or replace, by id) that one's.

        Args:
            path: a CSV with at least the columns ``id``, ``name``, ``category`` (see the module
                docstring). Lines starting with ``#`` before the header are comments; a
                ``version X`` in them sets :attr:`version`.
            extends: a catalogue to start from, e.g. ``load_catalogue()``. A row whose id exists
                there replaces that entry; other rows are added.

        Raises:
            CatalogueError: naming the file, line and id of a malformed row.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CatalogueError(f"{path}: cannot read catalogue ({exc})") from None
        except UnicodeDecodeError as exc:
            raise CatalogueError(f"{path}: catalogue is not UTF-8 text ({exc})") from None
        rows, version = _parse(text, str(path))
        return cls._merged(rows, extends, version)

    @classmethod
    def _merged(cls, rows: list[Condition], base: Catalogue | None, version: str | None) -> Catalogue:
        if base is None:
            return cls(rows, version=version)
        seen: dict[str, Condition] = {}
        for cond in rows:  # duplicates inside the new file are errors, not overrides
            if cond.id in seen:
                raise CatalogueError(
                    f"{_where(cond)}: duplicate id {cond.id!r} (first defined at {_where(seen[cond.id])})"
                )
            seen[cond.id] = cond
        merged = [seen.pop(c.id, c) for c in base]
        merged.extend(seen.values())
        return cls(merged, version=base.version if version is None else f"{base.version}+{version}")

    # -- validation -----------------------------------------------------------------------

    def _validate(self) -> None:
        for cond in self._by_id.values():
            where = _where(cond)
            if not _ID.match(cond.id):
                raise CatalogueError(
                    f"{where}: id {cond.id!r} must be upper case letters, digits and _ / ( ) - + . only"
                )
            if not cond.name.strip():
                raise CatalogueError(f"{where} (id {cond.id!r}): empty name")
            if cond.category not in CATEGORIES:
                raise CatalogueError(
                    f"{where} (id {cond.id!r}): category {cond.category!r} is not one of "
                    f"{', '.join(CATEGORIES)}"
                )
            for parent in cond.parents:
                if parent not in self._by_id:
                    raise CatalogueError(f"{where} (id {cond.id!r}): parent {parent!r} is not a catalogue id")
                if parent == cond.id:
                    raise CatalogueError(f"{where} (id {cond.id!r}): is its own parent")
                self._children[parent].append(cond.id)
            for index, kind in ((self._scp, "SCP"), (self._snomed, "SNOMED CT")):
                for code in cond.scp if kind == "SCP" else cond.snomed:
                    if code in index:
                        other = self._by_id[index[code]]
                        raise CatalogueError(
                            f"{where} (id {cond.id!r}): {kind} code {code} is already in "
                            f"{other.id!r} ({_where(other)}); a code belongs to one entry"
                        )
                    index[code] = cond.id
            for code in cond.snomed:
                if not code.isdigit():
                    raise CatalogueError(f"{where} (id {cond.id!r}): SNOMED CT code {code!r} is not a number")
        self._check_cycles()

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in self._by_id:
            if state.get(start):
                continue
            stack: list[tuple[str, Iterator[str]]] = [(start, iter(self._by_id[start].parents))]
            path = [start]
            state[start] = 1
            while stack:
                node, parents = stack[-1]
                nxt = next(parents, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                    path.pop()
                elif state.get(nxt) == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    cond = self._by_id[nxt]
                    raise CatalogueError(
                        f"{_where(cond)} (id {cond.id!r}): parents form a cycle: {' -> '.join(cycle)}"
                    )
                elif not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(self._by_id[nxt].parents)))

    # -- lookups --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Condition]:
        return iter(self._by_id.values())

    def __contains__(self, cid: object) -> bool:
        return cid in self._by_id

    def __getitem__(self, cid: str) -> Condition:
        return self.get(cid)

    def __repr__(self) -> str:
        return f"Catalogue({len(self)} conditions, version {self.version})"

    @property
    def ids(self) -> tuple[str, ...]:
        """All ids in table order."""
        return tuple(self._by_id)

    def get(self, cid: str) -> Condition:
        """The condition with id ``cid``.

        Raises:
            KeyError: no such id (the message suggests close matches).
        """
        try:
            return self._by_id[cid]
        except KeyError:
            hint = [c.id for c in self.search(cid, limit=3)] if isinstance(cid, str) and cid.strip() else []
            raise KeyError(
                f"{cid!r} is not a catalogue id" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
            ) from None

    def by_scp(self, code: str) -> Condition | None:
        """The condition of an SCP-ECG / PTB-XL statement code (``"NST_"``), or ``None``."""
        code = str(code).strip()
        cid = self._scp.get(code) or self._scp.get(code.upper())
        return None if cid is None else self._by_id[cid]

    def by_snomed(self, code: str | int) -> Condition | None:
        """The condition of a SNOMED CT code, or ``None``.

        Codes the PhysioNet/CinC challenge scores as one diagnosis are one entry, so
        ``by_snomed("59118001")`` and ``by_snomed("713427006")`` both give ``CRBBB``.
        """
        cid = self._snomed.get(str(code).strip())
        return None if cid is None else self._by_id[cid]

    def equivalent_snomed(self, code: str | int) -> tuple[str, ...]:
        """All SNOMED CT codes of the entry holding ``code`` (empty when unknown)."""
        cond = self.by_snomed(code)
        return () if cond is None else cond.snomed

    def by_category(self, category: str) -> list[Condition]:
        """Conditions of one category, in table order."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
        return [c for c in self if c.category == category]

    def search(self, text: str, *, limit: int | None = None, category: str | None = None) -> list[Condition]:
        """Conditions whose id, code, name or synonym matches ``text``, best first.

        Matching ignores case, accents, punctuation and the German umlaut spellings (``ä`` =
        ``ae``). Ranking: exact id or code; exact name or synonym; name or synonym starting
        with the text, or containing it at a word start; containing it anywhere.

        >>> [c.id for c in load_catalogue().search("Linksschenkelblock")]
        ['CLBBB', 'ILBBB']
        """
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
        query = fold(text)
        raw = text.strip().upper()
        if self._search_index is None:
            self._search_index = [
                (c, fold(c.id), fold(c.name), tuple(fold(s) for s in c.synonyms),
                 tuple(fold(x) for x in (c.id, *c.scp, *c.snomed, *c.aha)))
                for c in self
            ]
        ranked: list[tuple[int, int, Condition]] = []
        for order, (cond, _fid, name, syns, codes) in enumerate(self._search_index):
            if category is not None and cond.category != category:
                continue
            if not query:
                rank = 0
            elif raw == cond.id or raw in cond.scp or raw in cond.snomed or query in codes:
                rank = 0
            elif query == name:
                rank = 1
            elif query in syns:
                rank = 2
            elif name.startswith(query) or f" {query}" in name:
                rank = 3
            elif any(t.startswith(query) or f" {query}" in t for t in syns):
                rank = 4
            elif query in name:
                rank = 5
            elif any(query in t for t in syns):
                rank = 6
            elif any(query in t for t in codes):
                rank = 7
            else:
                continue
            ranked.append((rank, order, cond))
        ranked.sort(key=lambda r: (r[0], r[1]))
        out = [c for _, _, c in ranked]
        return out if limit is None else out[:limit]

    # -- hierarchy ------------------------------------------------------------------------

    def parents(self, cid: str) -> tuple[str, ...]:
        """Direct parent ids of ``cid``."""
        return self.get(cid).parents

    def children(self, cid: str) -> tuple[str, ...]:
        """Direct child ids of ``cid``, in table order."""
        self.get(cid)
        return tuple(self._children[cid])

    def ancestors(self, cid: str) -> set[str]:
        """Every id ``cid`` rolls up to (parents, their parents, ...), without ``cid`` itself."""
        out: set[str] = set()
        todo = list(self.get(cid).parents)
        while todo:
            parent = todo.pop()
            if parent not in out:
                out.add(parent)
                todo.extend(self._by_id[parent].parents)
        return out

    def descendants(self, cid: str) -> set[str]:
        """Every id that rolls up to ``cid``, without ``cid`` itself."""
        out: set[str] = set()
        todo = list(self.children(cid))
        while todo:
            child = todo.pop()
            if child not in out:
                out.add(child)
                todo.extend(self._children[child])
        return out

    def roll_up(self, ids: Iterable[str]) -> set[str]:
        """The ids with all their ancestors added (``{"IMI"}`` -> ``{"IMI", "MI"}``).

        Raises:
            KeyError: an id is not in the catalogue.
        """
        out: set[str] = set()
        for cid in ids:
            out.add(self.get(cid).id)
            out |= self.ancestors(cid)
        return out

    # -- export ---------------------------------------------------------------------------

    def columns(self) -> list[str]:
        """The standard columns followed by any extra columns of the rows."""
        extra: dict[str, None] = {}
        for cond in self:
            extra.update(dict.fromkeys(cond.extra))
        return list(COLUMNS) + [k for k in extra if k not in COLUMNS]

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the catalogue as a CSV table that :meth:`from_csv` reads back."""
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            if self.version:
                f.write(f"# ecgfm conditions catalogue, version {self.version}\n")
            writer = csv.DictWriter(f, self.columns(), lineterminator="\n")
            writer.writeheader()
            writer.writerows(c.to_row() for c in self)

    def to_frame(self) -> pd.DataFrame:
        """The catalogue as a pandas DataFrame indexed by id (needs pandas)."""
        import pandas as pd

        frame = pd.DataFrame([c.to_row() for c in self], columns=self.columns())
        return frame.set_index("id", drop=False)


# -- reading tables ---------------------------------------------------------------------------


def _where(cond: Condition) -> str:
    return cond.source or "catalogue"


def _parse(text: str, name: str) -> tuple[list[Condition], str | None]:
    """Rows of a catalogue table and the version from its leading comments."""
    lines = text.splitlines(keepends=True)
    skip = 0
    version = None
    while skip < len(lines) and (lines[skip].lstrip().startswith("#") or not lines[skip].strip()):
        match = _VERSION.search(lines[skip])
        if match and version is None:
            version = match.group(1).rstrip(".")
        skip += 1
    body = lines[skip:]
    physical = [skip]  # physical line number of the last line csv has consumed

    def feed() -> Iterator[str]:
        for i, line in enumerate(body, start=skip + 1):
            physical[0] = i
            yield line

    reader = csv.DictReader(feed())
    header = reader.fieldnames
    if not header:
        raise CatalogueError(f"{name}: no header row")
    header = [h.strip() for h in header]
    reader.fieldnames = header
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise CatalogueError(f"{name}: line {skip + 1}: header lacks column(s) {', '.join(missing)}")
    rows = []
    for record in reader:
        line = physical[0]
        if None in record:
            raise CatalogueError(f"{name}:{line}: more fields than the {len(header)} header columns")
        values = {k: (v or "").strip() for k, v in record.items()}
        if not any(values.values()):
            continue
        rows.append(_condition(values, f"{name}:{line}"))
    return rows, version


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split("|") if v.strip())


def _condition(values: Mapping[str, str], source: str) -> Condition:
    cid = values.get("id", "")
    if not cid:
        raise CatalogueError(f"{source}: empty id")
    multi = {k: _split(values.get(k, "")) for k in _MULTI}
    return Condition(
        id=cid,
        name=values.get("name", ""),
        category=values.get("category", ""),
        parents=multi["parent"],
        synonyms_en=multi["synonyms_en"],
        synonyms_de=multi["synonyms_de"],
        scp=multi["scp"],
        snomed=multi["snomed"],
        aha=multi["aha"],
        ptbxl_groups=multi["ptbxl_groups"],
        description=values.get("description", ""),
        source=source,
        extra={k: v for k, v in values.items() if k not in COLUMNS},
    )


@lru_cache(maxsize=1)
def _packaged() -> Catalogue:
    data = resources.files("ecgfm.labels").joinpath("data", "catalogue.csv")
    text = data.read_text(encoding="utf-8")
    rows, version = _parse(text, "ecgfm/labels/data/catalogue.csv")
    return Catalogue(rows, version=version)


def load_catalogue(*extra: str | os.PathLike[str]) -> Catalogue:
    """The packaged catalogue, extended (in order) by your own CSV tables.

    Args:
        *extra: CSV files with the catalogue's columns (at least ``id``, ``name``,
            ``category``). A row whose id exists replaces that entry; other rows add entries.

    Returns:
        The validated :class:`Catalogue`. Without arguments the packaged one is read once and
        shared.

    >>> load_catalogue("my_conditions.csv").get("MYCOND")  # doctest: +SKIP
    """
    cat = _packaged()
    for path in extra:
        cat = Catalogue.from_csv(path, extends=cat)
    return cat


def read_table(name: str) -> list[dict[str, str]]:
    """Rows of a packaged data table (``ecgfm/labels/data/<name>``), leading ``#`` comments skipped.

    Each row also carries ``"_line"``: ``"<name>:<line>"`` for error messages.
    """
    text = resources.files("ecgfm.labels").joinpath("data", name).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    out = []
    for record in reader:
        row: dict[str, Any] = {k: (v or "").strip() for k, v in record.items() if k is not None}
        row["_line"] = f"{name}:{skip + reader.line_num}"
        out.append(row)
    return out


__all__ = [
    "CATALOGUE_VERSION", "CATEGORIES", "COLUMNS", "Catalogue", "CatalogueError", "Condition",
    "fold", "load_catalogue", "read_table",
]
