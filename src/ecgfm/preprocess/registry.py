"""The step registry: steps are frozen dataclasses registered explicitly by name.

A step is a value (its parameters are its identity) and a pure function ``ECG -> ECG``. Registering
it by name with :func:`register_step` is what lets a pipeline be written to JSON, read back, and
hashed: the JSON holds only names and parameters, never code.

Example (a new step needs only the decorator to work in JSON, hashes and CLI specs)::

    @register_step("invert")
    @dataclass(frozen=True)
    class Invert(Step):
        def __call__(self, ecg: ECG) -> ECG:
            return ecg.replace(signal=-ecg.signal)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from ecgfm.errors import ValidationError
from ecgfm.record import ECG

STEPS: dict[str, type[Step]] = {}  # registered step classes by name, in registration order
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Step:
    """Base class of every preprocessing step: a frozen dataclass mapping ``ECG -> ECG``.

    Subclasses validate (and normalise, e.g. ``500`` to ``500.0``) their parameters in
    ``__post_init__`` so that two steps that do the same thing compare and hash equal. A step
    returns a new :class:`~ecgfm.ECG` with the input's ``meta`` and a mask aligned with the new
    samples; it never modifies its input.
    """

    name: ClassVar[str] = ""  # the registered name, set by register_step

    def __call__(self, ecg: ECG) -> ECG:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The step's parameters as JSON-ready values (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"name": <registered name>, "params": {...}}``."""
        return {"name": self.name, "params": self.params()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None) -> Step:
        """Build the step from a parameter mapping, refusing unknown or missing parameters."""
        params = dict(params or {})
        fields = [f for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        known = [f.name for f in fields]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValidationError(
                f"step {cls.name!r}: unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(known) or 'none'})"
            )
        missing = [
            f.name for f in fields
            if f.name not in params
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValidationError(
                f"step {cls.name!r}: missing required parameter(s) {', '.join(missing)}"
            )
        return cls(**params)

    def _set(self, field: str, value: Any) -> None:
        # Frozen dataclasses normalise their own fields in __post_init__ this way.
        object.__setattr__(self, field, value)


S = TypeVar("S", bound=type[Step])


def register_step(name: str) -> Callable[[S], S]:
    """Class decorator registering a frozen-dataclass :class:`Step` under ``name``.

    Args:
        name: lower-case identifier used in JSON and CLI specs, e.g. ``"bandpass"``.

    Raises:
        TypeError: the class is not a frozen dataclass subclassing :class:`Step`.
        ValidationError: the name is malformed or already taken by another class.
    """
    if not _NAME.fullmatch(name):
        raise ValidationError(f"step name {name!r} must be lower-case letters, digits and '_'")

    def wrap(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Step)):
            raise TypeError(f"register_step({name!r}) needs a Step subclass, got {cls!r}")
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen or "__dataclass_fields__" not in cls.__dict__:
            raise TypeError(f"register_step({name!r}): {cls.__qualname__} must be a frozen dataclass")
        existing = STEPS.get(name)
        # The same class defined again (a module reload) may take its own name back.
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__, cls.__qualname__
        ):
            raise ValidationError(
                f"step name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        cls.name = name
        STEPS[name] = cls
        return cls

    return wrap


def make_step(name: str, params: Mapping[str, Any] | None = None) -> Step:
    """Build a registered step by name, e.g. ``make_step("notch", {"freq": 50})``.

    Raises:
        ValidationError: the name is not registered (listing the known names) or the
            parameters are unknown, missing or invalid.
    """
    cls = STEPS.get(str(name))
    if cls is None:
        raise ValidationError(
            f"unknown preprocessing step {name!r} (known: {', '.join(sorted(STEPS))})"
        )
    if params is not None and not isinstance(params, Mapping):
        raise ValidationError(f"step {name!r}: params must be a mapping, got {params!r}")
    return cls.from_params(params)


# -- parameter validation shared by the steps ----------------------------------------------


def as_float(
    step: str,
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite float within ``[low, high]`` (``(low, high]`` with ``low_open``), as a float.

    ``-0.0`` becomes ``0.0`` so that equal parameters serialise, and hash, identically.
    """
    number = _number(step, field, value)
    if low is not None and (number < low or (low_open and number == low)):
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        raise ValidationError(f"step {step!r}: {field} must be {bound}, got {value!r}")
    if high is not None and number > high:
        raise ValidationError(f"step {step!r}: {field} must be at most {high:g}, got {value!r}")
    return number + 0.0


def as_int(step: str, field: str, value: Any, *, low: int, high: int) -> int:
    """An integer within ``[low, high]``; integral floats such as ``4.0`` are accepted."""
    number = _number(step, field, value)
    if not number.is_integer() or not (low <= number <= high):
        raise ValidationError(
            f"step {step!r}: {field} must be an integer from {low} to {high}, got {value!r}"
        )
    return int(number)


def as_choice(step: str, field: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices`` (compared case-insensitively, returned as written in ``choices``)."""
    options = tuple(choices)
    if isinstance(value, str):
        for option in options:
            if value.strip().lower() == option.lower():
                return option
    raise ValidationError(
        f"step {step!r}: {field} must be one of {', '.join(map(repr, options))}, got {value!r}"
    )


def as_bool(step: str, field: str, value: Any) -> bool:
    """A bool; the strings ``true/false/yes/no/1/0`` are accepted for CLI specs."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValidationError(f"step {step!r}: {field} must be true or false, got {value!r}")


def _number(step: str, field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValidationError(f"step {step!r}: {field} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"step {step!r}: {field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValidationError(f"step {step!r}: {field} must be finite, got {value!r}")
    return number
