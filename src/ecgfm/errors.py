"""Exceptions raised by ecgfm.

Every error about an input names the input (a file path or record id) and the problem, so a
batch job can log it and move on: ``ecgfm.io.ReadError: data/00123.xml: lead 'V7x' is not a
known lead name (known: I, II, III, aVR, ...)``.
"""

from __future__ import annotations

import os


class ECGError(Exception):
    """Base class of every ecgfm error."""


class ValidationError(ECGError, ValueError):
    """A record, lead name or parameter does not satisfy ecgfm's contract."""


class ReadError(ECGError, ValueError):
    """A file could not be read into an :class:`~ecgfm.ECG`.

    ``str(error)`` is ``"<path>: <problem>"``; the parts are kept as ``path`` and ``problem``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")


class UnsupportedFormatError(ReadError):
    """The file's content matches no format ecgfm reads."""
