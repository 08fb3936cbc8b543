"""Voltage units as vendors write them, and the factor that turns each into millivolts.

One table for every reader: WFDB headers write ``uV``, DICOM ``uV`` or ``microvolt``, GE MUSE
``MICROVOLTS``, HL7 ``uV``, EDF ``uV`` or ``µV``. Matching ignores case and the micro sign's
spelling (``u``, ``µ`` U+00B5, ``μ`` U+03BC).
"""

from __future__ import annotations

_PREFIX = {"n": 1e-6, "u": 1e-3, "m": 1.0, "": 1e3}
_WORDS = {"nanovolt": "n", "microvolt": "u", "millivolt": "m", "volt": ""}


def mv_per_unit(unit: str | None) -> float | None:
    """Millivolts per one ``unit``, or None when ``unit`` is not a voltage.

    >>> mv_per_unit("uV"), mv_per_unit("MICROVOLTS"), mv_per_unit("mmHg")
    (0.001, 0.001, None)
    """
    if unit is None:
        return None
    key = unit.strip().lower().replace("µ", "u").replace("μ", "u")
    key = key.removesuffix("s") if key.endswith("volts") else key
    if key in _WORDS:
        return _PREFIX[_WORDS[key]]
    if key.endswith("v") and key[:-1] in _PREFIX:
        return _PREFIX[key[:-1]]
    return None
