"""The health profile of one ECG: conditions, measurements, quality, saliency, and a report.

>>> import ecgfm
>>> from ecgfm.profile import build_profile, render_html
>>> profile = build_profile("examples/ptbxl/00351_hr.hea")          # doctest: +SKIP
>>> profile.to_dict()["calls"]["positive"]                           # doctest: +SKIP
['AFIB', ...]
>>> open("00351_hr.html", "w").write(render_html(profile))           # doctest: +SKIP

- :func:`build_profile` / :func:`profile_many` build :class:`Profile` s (batched inference);
- :meth:`Profile.to_dict` is the JSON form, described field by field in ``docs/profile.md``;
- :func:`render_html` writes one self-contained page, :func:`render_pdf` a PDF report.

``import ecgfm.profile`` imports neither torch nor matplotlib; they load when a profile is
built or rendered (the ``ecgfm profile`` command is registered from :mod:`ecgfm.profile.cli`).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "SCHEMA_VERSION": "ecgfm.profile.core",
    "ConditionResult": "ecgfm.profile.core",
    "Profile": "ecgfm.profile.core",
    "Reason": "ecgfm.profile.core",
    "RecordInfo": "ecgfm.profile.core",
    "build_profile": "ecgfm.profile.core",
    "measure_record": "ecgfm.profile.core",
    "profile_many": "ecgfm.profile.core",
    "Saliency": "ecgfm.profile.saliency",
    "integrated_gradients": "ecgfm.profile.saliency",
    "render_html": "ecgfm.profile.render",
    "render_pdf": "ecgfm.profile.render",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.profile' has no attribute {name!r}")


__all__ = sorted(_LAZY)
