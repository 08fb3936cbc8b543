"""Condition ids as people read them: names, categories, and which pairs are related by definition.

The ids come from label lists or from a model's output columns. Most are catalogue ids
(``AFIB``, ``LAO/LAE``); a model trained on PTB-XL also has *grouping* outputs written
``<group>:<id>`` (``superdiagnostic:MI``, ``subdiagnostic:IMI``): "any diagnostic statement of
that superclass / subclass". A grouping is shown with its catalogue name and the group in
brackets ("myocardial infarction (PTB-XL superclass)") and its catalogue category.

Two labels can co-occur *by construction*: a grouping and a statement it contains
(``superdiagnostic:MI`` and ``IMI``), or two groupings sharing a statement. Such pairs get the
relation ``"grouping"`` and are kept out of the report's top tables and the network (they stay
in ``pairs.csv``). Two plain ids where one is a catalogue ancestor of the other (``IMI`` and
``ILMI``: ILMI rolls up to IMI) get ``"hierarchy"``: related by meaning, but separately coded,
so their co-occurrence is an empirical finding and is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.labels import Catalogue

__all__ = ["GROUP_TITLES", "OTHER_CATEGORY", "describe_conditions", "relation_matrix", "split_group"]

#: How a ``<group>:<id>`` prefix is shown.
GROUP_TITLES = {
    "superdiagnostic": "PTB-XL superclass",
    "subdiagnostic": "PTB-XL subclass",
    "diagnostic": "PTB-XL diagnostic",
    "form": "PTB-XL form",
    "rhythm": "PTB-XL rhythm",
}
#: Category of an id the catalogue does not know.
OTHER_CATEGORY = "other"


def split_group(cid: str) -> tuple[str | None, str]:
    """``"superdiagnostic:MI"`` -> ``("superdiagnostic", "MI")``; ``"AFIB"`` -> ``(None, "AFIB")``."""
    group, sep, base = str(cid).partition(":")
    if sep and group and base:
        return group, base
    return None, str(cid)


def _catalogue(catalogue: Catalogue | None) -> Catalogue:
    if catalogue is not None:
        return catalogue
    from ecgfm.labels import load_catalogue

    return load_catalogue()


def describe_conditions(ids: Sequence[str], catalogue: Catalogue | None = None) -> pd.DataFrame:
    """Display name, category and kind of each id.

    Args:
        ids: ``[C]`` condition ids (catalogue ids, ``<group>:<id>`` groupings, or ids the
            catalogue lacks, which are shown as they are with category ``"other"``).
        catalogue: defaults to the packaged one.

    Returns:
        DataFrame indexed by id with columns ``name``, ``short`` (the id without its group prefix,
        plus ``*`` for a grouping: the plot label), ``category``, ``group`` (the prefix or ""),
        ``in_catalogue``.

    >>> describe_conditions(["AFIB", "superdiagnostic:MI"]).loc["superdiagnostic:MI", "name"]
    'myocardial infarction (PTB-XL superclass)'
    """
    import pandas as pd

    cat = _catalogue(catalogue)
    rows = []
    for cid in ids:
        group, base = split_group(cid)
        known = base in cat
        cond = cat.get(base) if known else None
        name = cond.name if cond is not None else base
        if group is not None:
            name = f"{name} ({GROUP_TITLES.get(group, group + ' group')})"
        rows.append({"id": str(cid), "name": name, "short": base + ("*" if group else ""),
                     "category": cond.category if cond is not None else OTHER_CATEGORY,
                     "group": group or "", "in_catalogue": known})
    frame = pd.DataFrame(rows, columns=["id", "name", "short", "category", "group", "in_catalogue"])
    return frame.set_index("id", drop=True)


def _members(cid: str, cat: Catalogue) -> set[str]:
    """Statements that make a label true: itself for a plain id; for a grouping every catalogue
    statement of that PTB-XL superclass / subclass, or the id and its descendants."""
    group, base = split_group(cid)
    if group is None:
        return {base}
    if group == "superdiagnostic":
        out = {c.id for c in cat if c.ptbxl_class == base}
    elif group == "subdiagnostic":
        out = {c.id for c in cat if c.ptbxl_subclass == base}
    else:
        out = set()
    out.add(base)
    if base in cat:
        out |= cat.descendants(base)
    return out


def relation_matrix(ids: Sequence[str], catalogue: Catalogue | None = None) -> np.ndarray:
    """How each pair of labels is related by definition.

    Returns:
        object array ``[C, C]`` of ``"grouping"`` (a grouping label and a label it contains, or
        two groupings sharing a statement: co-occurrence by construction), ``"hierarchy"`` (one
        plain id is a catalogue ancestor of the other, e.g. ``IMI`` / ``ILMI``), ``"same"`` on
        the diagonal, else ``""``.
    """
    cat = _catalogue(catalogue)
    ids = [str(c) for c in ids]
    n = len(ids)
    members = [_members(c, cat) for c in ids]
    vocab = {m: k for k, m in enumerate(sorted(set().union(*members)))} if members else {}
    incidence = np.zeros((n, len(vocab)), dtype=np.float32)
    for i, ms in enumerate(members):
        incidence[i, [vocab[m] for m in ms]] = 1.0
    overlap = (incidence @ incidence.T) > 0
    is_group = np.array([split_group(c)[0] is not None for c in ids], dtype=bool)
    grouping = overlap & (is_group[:, None] | is_group[None, :])
    index = {c: i for i, c in enumerate(ids)}
    hierarchy = np.zeros((n, n), dtype=bool)
    for i, cid in enumerate(ids):
        if is_group[i] or cid not in cat:
            continue
        for anc in cat.ancestors(cid):
            j = index.get(anc)
            if j is not None:
                hierarchy[i, j] = hierarchy[j, i] = True
    out = np.full((n, n), "", dtype=object)
    out[hierarchy] = "hierarchy"
    out[grouping] = "grouping"
    np.fill_diagonal(out, "same")
    return out
