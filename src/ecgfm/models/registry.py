"""The encoder registry: a name maps to an encoder class, its config dataclass and a default.

Registration is explicit: a family module decorates its class once per named variant, and the
registry imports the family modules listed in :data:`FAMILY_MODULES` the first time a name is
looked up. Nothing is guessed from the spelling of a name.

>>> from ecgfm.models import create_encoder, list_encoders    # doctest: +SKIP
>>> list_encoders("resnet*")                                  # doctest: +SKIP
['resnet1d18', 'resnet1d34', 'resnet1d50']
>>> model = create_encoder("resnet1d18", num_outputs=5)       # doctest: +SKIP
>>> model(torch.randn(2, 12, 1000)).shape                     # doctest: +SKIP
torch.Size([2, 5])

Registering your own encoder (see ``docs/models.md``)::

    @register_encoder("mynet", MyNetConfig, MyNetConfig(width=64))
    @register_encoder("mynet_wide", MyNetConfig, {"width": 256})
    class MyNet(Encoder):
        ...

This module imports no torch: the family modules do, when a name is first looked up.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
import numbers
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ecgfm.errors import ReadError, ValidationError

# The modules that register the built-in encoders, imported on the first registry lookup.
FAMILY_MODULES = (
    "ecgfm.models.resnet1d",
    "ecgfm.models.net1d",
    "ecgfm.models.xresnet1d",
    "ecgfm.models.inception1d",
    "ecgfm.models.conv_transformer",
    "ecgfm.models.vit1d",
)
# Named variants kept as JSON field overrides (validated into the family's config dataclass).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class EncoderConfig:
    """Mixin for an encoder's frozen config dataclass: type-checks and normalises every field.

    Subclasses are ``@dataclass(frozen=True)`` with one comment per field and must include
    ``in_leads: int = 12`` and ``num_outputs: int = 0``. On construction each field is checked
    against its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` and
    ``tuple[...]``; JSON/YAML lists become tuples), then :meth:`check` runs the family's own
    rules. Errors name the config class and the field.
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            where = f"{type(self).__name__}.{field.name}"
            value = _coerce(getattr(self, field.name), hints[field.name], where)
            object.__setattr__(self, field.name, value)
        self.require("in_leads", self.in_leads >= 1, "must be at least 1")  # type: ignore[attr-defined]
        self.require("num_outputs", self.num_outputs >= 0, "must be 0 (no head) or more")  # type: ignore[attr-defined]
        dropout = getattr(self, "head_dropout", 0.0)
        self.require("head_dropout", 0.0 <= dropout < 1.0, "must be in [0, 1)")
        self.check()

    def check(self) -> None:
        """The family's own rules (override); raise through :meth:`require`."""

    def require(self, field: str, ok: bool, problem: str) -> None:
        """Raise ``ValidationError("<Config>.<field>: <problem>, got <value>")`` unless ``ok``."""
        if not ok:
            raise ValidationError(
                f"{type(self).__name__}.{field}: {problem}, got {getattr(self, field, None)!r}"
            )


@dataclass(frozen=True)
class _Entry:
    name: str  # registered name
    cls: type  # the Encoder subclass
    config_cls: type  # its frozen config dataclass
    default: Any  # the config instance the name stands for


_REGISTRY: dict[str, _Entry] = {}
_loaded = False

C = TypeVar("C", bound=type)


def register_encoder(
    name: str, config_cls: type, default_config: Any = None
) -> Callable[[C], C]:
    """Class decorator registering an encoder class under ``name``.

    Args:
        name: lower-case identifier, e.g. ``"resnet1d18"``.
        config_cls: the frozen config dataclass the class is built from (``cls(config)``).
        default_config: what the name stands for: a ``config_cls`` instance, a mapping of field
            overrides on ``config_cls()``'s defaults, the file name of a JSON variant in
            ``ecgfm/models/configs/`` (``"vit1d_base.json"``), or ``None`` for the defaults.

    Stack the decorator to register several variants of one class. Registering a name again
    is allowed only for the same class (a module reload).

    Raises:
        ValidationError: a malformed or taken name, or an invalid default config.
        TypeError: ``config_cls`` is not a frozen dataclass.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(f"encoder name {name!r} must be lower-case letters, digits and '_'")
    params = getattr(config_cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"register_encoder({name!r}): {config_cls!r} must be a frozen dataclass")
    if isinstance(default_config, config_cls):
        default = default_config
    elif default_config is None:
        default = config_cls()
    elif isinstance(default_config, Mapping):
        default = build_config(config_cls, default_config, where=f"encoder {name!r}")
    elif isinstance(default_config, (str, os.PathLike)):
        default = load_config_file(config_cls, CONFIG_DIR / default_config)
    else:
        raise ValidationError(
            f"register_encoder({name!r}): default_config must be a {config_cls.__name__}, a "
            f"mapping, a JSON file name or None, got {type(default_config).__name__}"
        )

    def wrap(cls: C) -> C:
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.cls.__module__, existing.cls.__qualname__) != (
            cls.__module__, cls.__qualname__
        ):
            raise ValidationError(
                f"encoder name {name!r} is already registered by "
                f"{existing.cls.__module__}.{existing.cls.__qualname__}"
            )
        _REGISTRY[name] = _Entry(name, cls, config_cls, default)
        return cls

    return wrap


def list_encoders(pattern: str | None = None) -> list[str]:
    """Registered encoder names, sorted; ``pattern`` filters with shell wildcards (``"vit*"``)."""
    names = sorted(_registry())
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def encoder_config(name: str, **overrides: Any) -> Any:
    """The config dataclass instance ``name`` stands for, with ``overrides`` applied.

    Raises:
        ValidationError: unknown name (listing the registered ones), unknown override keys
            (listing the valid fields) or invalid values.
    """
    entry = _entry(name)
    return build_config(entry.config_cls, overrides, base=entry.default, where=f"encoder {name!r}")


def create_encoder(name: str, **overrides: Any) -> Any:
    """Build the registered encoder ``name`` (timm's ``create_model``), freshly initialised.

    Args:
        name: a name from :func:`list_encoders`.
        **overrides: config fields to change, e.g. ``num_outputs=5`` or ``in_leads=1``.

    Returns:
        The :class:`~ecgfm.models.base.Encoder`; ``model.encoder_name`` is ``name`` and
        ``model.config`` the resolved config, so ``create_encoder(model.encoder_name,
        **dataclasses.asdict(model.config))`` rebuilds the same architecture.
    """
    entry = _entry(name)
    config = build_config(entry.config_cls, overrides, base=entry.default, where=f"encoder {name!r}")
    model = entry.cls(config)
    model.encoder_name = name
    return model


def build_config(
    config_cls: type, values: Mapping[str, Any], base: Any = None, where: str | None = None
) -> Any:
    """``config_cls`` from ``base`` (or its defaults) with ``values`` replacing fields.

    Unknown keys raise :class:`ValidationError` listing the valid ones; values are type-checked
    by the config (see :class:`EncoderConfig`).
    """
    where = where or config_cls.__name__
    if not isinstance(values, Mapping):
        raise ValidationError(f"{where}: config must be a mapping, got {type(values).__name__}")
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValidationError(
            f"{where}: unknown option(s) {', '.join(map(str, unknown))} "
            f"(valid: {', '.join(known)})"
        )
    base = config_cls() if base is None else base
    return dataclasses.replace(base, **dict(values))


def load_config_file(config_cls: type, path: str | os.PathLike[str]) -> Any:
    """A named variant from JSON: ``{"description": ..., "reference": ..., "config": {...}}``.

    ``config`` holds field overrides on ``config_cls()``'s defaults; nothing in the file is
    executed. Errors name the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReadError(path, f"cannot read encoder config ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise ReadError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ReadError(path, 'expected an object with a "config" object of field values')
    extra = sorted(set(data) - {"description", "reference", "config"})
    if extra:
        raise ReadError(path, f"unknown key(s) {', '.join(extra)} (known: config, description, "
                              "reference)")
    try:
        return build_config(config_cls, data["config"], where=str(path))
    except ValidationError as exc:
        raise ReadError(path, str(exc)) from exc


# -- internals -------------------------------------------------------------------------------


def _registry() -> dict[str, _Entry]:
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _loaded = True
    return _REGISTRY


def _entry(name: str) -> _Entry:
    entry = _registry().get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValidationError(
            f"unknown encoder {name!r} (registered: {', '.join(sorted(_REGISTRY))})"
        )
    return entry


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the annotation ``hint``; lists become tuples."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValidationError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ValidationError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise ValidationError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValidationError(f"{where}: expected a string, got {value!r}")
    if origin is Literal:
        if value in get_args(hint):
            return value
        options = ", ".join(map(repr, get_args(hint)))
        raise ValidationError(f"{where}: expected one of {options}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValidationError(f"{where}: expected a list, got {value!r}")
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValidationError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in get_args(hint):
            return None
        for arg in get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValidationError:
                continue
        raise ValidationError(f"{where}: {value!r} does not match {hint}")
    return value
