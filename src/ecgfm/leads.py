"""Lead names: canonical spellings, aliases, the standard 12-lead order, limb-lead derivation.

Canonical names are ``I, II, III, aVR, aVL, aVF, V1 ... V6`` plus the extra leads some systems
record (``V7 V8 V9``, right-sided ``V3R ... V6R``, Frank ``X Y Z``). Every reader maps the names a
file uses (``AVR``, ``avr``, ``MDC_ECG_LEAD_AVR``, ``DII``, ``MLII`` ...) onto these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from ecgfm.errors import ValidationError

STANDARD_12: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS: tuple[str, ...] = STANDARD_12[:6]
PRECORDIAL_LEADS: tuple[str, ...] = STANDARD_12[6:]
EXTRA_LEADS: tuple[str, ...] = ("V7", "V8", "V9", "V3R", "V4R", "V5R", "V6R", "X", "Y", "Z")
KNOWN_LEADS: tuple[str, ...] = STANDARD_12 + EXTRA_LEADS

# The four limb leads that follow from I and II (Einthoven's law and Goldberger's augmented
# leads). GE MUSE and many SCP-ECG files store only I, II and V1-V6 for that reason.
DERIVABLE_FROM_I_II: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")

_CANONICAL_BY_KEY = {name.upper(): name for name in KNOWN_LEADS}

# Spellings seen in vendor files, keyed by the upper-cased name with separators removed.
_ALIASES = {
    # Roman numerals written with D (Italian/French/Spanish "derivazione") or as "lead 1".
    "DI": "I", "DII": "II", "DIII": "III", "D1": "I", "D2": "II", "D3": "III",
    "1": "I", "2": "II", "3": "III", "LEAD1": "I", "LEAD2": "II", "LEAD3": "III",
    # Modified limb leads of ambulatory records (MIT-BIH): same electrode axis as the limb lead.
    "MLI": "I", "MLII": "II", "MLIII": "III", "ML2": "II",
    "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
    "VR": "aVR", "VL": "aVL", "VF": "aVF",
    "-AVR": None,  # inverted aVR (Cabrera display) is not aVR: refuse rather than mislabel
}
_STRIP = re.compile(r"^(?:MDC_ECG_LEAD_|LEAD_|LEAD |LEAD)", re.IGNORECASE)


def canonical_lead(name: str, *, source: str | None = None) -> str:
    """Return the canonical spelling of a lead name.

    Args:
        name: a lead name as written in a file, e.g. ``"AVR"``, ``"MDC_ECG_LEAD_V1"``, ``"MLII"``.
        source: the file or record the name came from, used in the error message.

    Raises:
        ValidationError: the name is not a known lead, naming ``source`` and the known names.

    >>> canonical_lead("MDC_ECG_LEAD_AVF")
    'aVF'
    """
    raw = str(name).strip()
    key = raw.upper()
    if key in _CANONICAL_BY_KEY:
        return _CANONICAL_BY_KEY[key]
    if key in _ALIASES and _ALIASES[key] is not None:
        return _ALIASES[key]
    stripped = _STRIP.sub("", raw).strip().upper().replace(" ", "").replace("_", "")
    if stripped in _CANONICAL_BY_KEY:
        return _CANONICAL_BY_KEY[stripped]
    if stripped in _ALIASES and _ALIASES[stripped] is not None:
        return _ALIASES[stripped]
    where = f"{source}: " if source else ""
    raise ValidationError(
        f"{where}lead {raw!r} is not a known lead name (known: {', '.join(KNOWN_LEADS)})"
    )


def canonical_leads(names: Iterable[str], *, source: str | None = None) -> tuple[str, ...]:
    """Canonicalise a sequence of lead names and check that none repeats."""
    originals = list(names)
    leads = tuple(canonical_lead(name, source=source) for name in originals)
    seen: set[str] = set()
    for original, lead in zip(originals, leads):
        if lead in seen:
            where = f"{source}: " if source else ""
            raise ValidationError(f"{where}lead {lead!r} appears twice (as {original!r})")
        seen.add(lead)
    return leads


def parse_lead_list(spec: str) -> tuple[str, ...]:
    """Parse a user's lead list: ``"I,II"``, ``"V1-V6"``, ``"12"`` (standard 12) or ``"limb"``.

    >>> parse_lead_list("I,II,V1-V3")
    ('I', 'II', 'V1', 'V2', 'V3')
    """
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        low = part.lower()
        if low in ("12", "all", "standard"):
            out.extend(STANDARD_12)
        elif low == "limb":
            out.extend(LIMB_LEADS)
        elif low == "precordial":
            out.extend(PRECORDIAL_LEADS)
        elif re.fullmatch(r"v[1-9]-v[1-9]", low):
            lo, hi = int(low[1]), int(low[-1])
            out.extend(f"V{i}" for i in range(lo, hi + 1))
        else:
            out.append(canonical_lead(part))
    return canonical_leads(out)


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """Derive III, aVR, aVL and aVF from leads I and II (any shape, same units).

    Einthoven: III = II - I. Goldberger: aVR = -(I + II) / 2, aVL = I - II / 2,
    aVF = II - I / 2.
    """
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
