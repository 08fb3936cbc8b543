"""Text normalisation for the report labeler, keeping a map back to the original characters.

Rules are written against one normal form: lower case, German umlauts and sharp s folded to
their two-letter spellings (``ä -> ae``, ``ß -> ss``), other accents stripped (``é -> e``,
Swedish ``å -> a``), runs of whitespace collapsed to one space. Punctuation stays, because it
splits sentences and clauses. PTB-XL writes some umlauts in upper case inside lower-case words
(``ischÄmie``, ``unbestÄtigter``); lower-casing first folds those too.
"""

from __future__ import annotations

import re
import unicodedata

# Anything but single spaces between words needs the character loop below.
_IRREGULAR_SPACE = re.compile(r"\s\s|[^\S ]")
_FOLD = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe"}


def _fold_char(ch: str) -> str:
    """The normal form of one character (may be empty or two characters long)."""
    low = ch.lower()
    if low.isascii():
        return low
    out = []
    for c in low:  # lower() can lengthen a character ("İ" -> "i̇")
        folded = _FOLD.get(c)
        if folded is None:
            # Strip combining accents; characters with no Latin base (Greek, CJK) stay as they are.
            base = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
            folded = base or c
        out.append(folded)
    return "".join(out)


def normalize(text: str) -> tuple[str, list[int]]:
    """Normalise a report and map every character of the result back to the original.

    Args:
        text: the report as written.

    Returns:
        ``(norm, origin)``: the normalised text and, for each character of it, the index of the
        original character it came from (``len(origin) == len(norm)``). A match
        ``norm[s:e]`` (``e > s``) covers ``text[origin[s]:origin[e - 1] + 1]``.

    >>> normalize("ischÄmie  da")
    ('ischaemie da', [0, 1, 2, 3, 4, 4, 5, 6, 7, 9, 10, 11])
    """
    if text.isascii() and not _IRREGULAR_SPACE.search(text):
        # The common case (English and most German PTB-XL reports once umlauts are gone) needs
        # no character loop: only leading/trailing spaces can move offsets.
        stripped = text.strip()
        lead = len(text) - len(text.lstrip())
        return stripped.lower(), list(range(lead, lead + len(stripped)))
    out: list[str] = []
    origin: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            pending_space = bool(out)
            continue
        if pending_space:
            out.append(" ")
            origin.append(i - 1)
            pending_space = False
        folded = _fold_char(ch)
        out.append(folded)
        origin.extend([i] * len(folded))
    return "".join(out), origin
