"""Conditions: one catalogue of ECG-assessable conditions and the mappers into it.

- :mod:`ecgfm.labels.catalogue`: the versioned catalogue (ids, names, categories, hierarchy,
  synonyms, SCP-ECG / SNOMED CT / AHA codes), shipped as ``data/catalogue.csv``;
- :mod:`ecgfm.labels.mappers`: dataset-native labels (PTB-XL ``scp_codes``, CinC ``# Dx``
  SNOMED codes, CinC 2017 classes, MIT-BIH beats and rhythms, LUDB diagnoses, CPSC 2021 AF
  episodes) to catalogue ids, reporting every label it cannot map;
- :mod:`ecgfm.labels.report`: free-text reports to catalogue ids (``label_report`` is
  importable from here; the module loads on first use).

``import ecgfm.labels`` reads no file and imports no pandas: the catalogue is read on first use
with the standard library's ``csv``.

>>> from ecgfm.labels import load_catalogue, map_ptbxl_scp
>>> load_catalogue().get("IMI").parents
('MI',)
>>> map_ptbxl_scp("{'IMI': 100.0, 'SR': 0.0}").ids
['IMI', 'SR']
"""

from __future__ import annotations

from typing import Any

from ecgfm.labels.catalogue import (
    CATALOGUE_VERSION,
    CATEGORIES,
    Catalogue,
    CatalogueError,
    Condition,
    load_catalogue,
)
from ecgfm.labels.mappers import (
    LabelMap,
    UnknownLabelError,
    map_cinc2017,
    map_cinc_dx,
    map_cpsc2021_episodes,
    map_ludb,
    map_mitbih_beats,
    map_ptbxl_scp,
    map_rhythm_notes,
    ptbxl_groups,
)

_LAZY = {"label_report": "ecgfm.labels.report", "default_learned_labeler": "ecgfm.labels.learned"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.labels' has no attribute {name!r}")


__all__ = [
    "CATALOGUE_VERSION", "CATEGORIES", "Catalogue", "CatalogueError", "Condition", "LabelMap",
    "UnknownLabelError", "default_learned_labeler", "label_report", "load_catalogue", "map_cinc2017", "map_cinc_dx",
    "map_cpsc2021_episodes", "map_ludb", "map_mitbih_beats", "map_ptbxl_scp", "map_rhythm_notes",
    "ptbxl_groups",
]
