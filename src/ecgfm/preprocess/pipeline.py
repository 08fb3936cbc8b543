"""A preprocessing pipeline: an ordered tuple of steps that is itself a value.

A pipeline compares equal to another with the same steps, serialises to JSON and back, and has a
stable :attr:`Pipeline.hash` (sha256 of its canonical JSON) that model cards and feature caches
record, so "which preprocessing produced this?" always has an exact answer.

Specs accepted by :meth:`Pipeline.parse` (the CLI's ``--preprocess`` option):

- ``"standard"`` -- :meth:`Pipeline.standard` with its defaults; ``"standard:fs=250,notch=60"``
  passes arguments to it, and it may be combined: ``"standard|clip:limit_mv=5"``.
- a compact spec: steps separated by ``|``, each ``name`` or ``name:key=value,key=value``::

      resample:fs=500|bandpass:low=0.5,high=40|notch:freq=50|normalize

  Values are read as JSON literals where they are one (``500``, ``0.5``, ``true``, ``null``) and
  as text otherwise (``auto``, ``center``). Lead lists are written ``leads=I;II;V1-V6``,
  ``leads=12`` or ``leads=I,II,V1`` (a comma-separated item without ``=`` continues the
  previous value).
- a JSON document as written by :meth:`Pipeline.to_json`, or the path of a ``.json`` file
  holding one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgfm.errors import ValidationError
from ecgfm.leads import STANDARD_12
from ecgfm.preprocess.registry import STEPS, Step, make_step
from ecgfm.preprocess.steps import (
    CropOrPad,
    HighPass,
    LowPass,
    Normalize,
    Notch,
    Resample,
    SelectLeads,
)
from ecgfm.record import ECG

FORMAT = "ecgfm.pipeline"  # the "format" field of the JSON form
FORMAT_VERSION = 1  # bumped when the JSON layout (not a step's parameters) changes
STANDARD_HIGHPASS_HZ = 0.5
STANDARD_LOWPASS_HZ = 100.0
# The standard low-pass moves below 100 Hz at low rates, to this fraction of the rate (0.8 of
# Nyquist), where the Butterworth design is still well away from the Nyquist edge.
STANDARD_LOWPASS_MAX_FRACTION_OF_FS = 0.4


@dataclass(frozen=True)
class Pipeline:
    """An ordered, immutable sequence of :class:`~ecgfm.preprocess.registry.Step`.

    ``pipeline(ecg)`` applies the steps in order and returns the new record.

    >>> from ecgfm.preprocess import BandPass, Resample
    >>> p = Pipeline((Resample(fs=250), BandPass(low=0.5, high=40)))
    >>> Pipeline.from_json(p.to_json()) == p
    True
    >>> p.to_spec()
    'resample:fs=250.0|bandpass:low=0.5,high=40.0,order=2'
    """

    steps: tuple[Step, ...] = ()  # applied first to last

    def __post_init__(self) -> None:
        steps = self.steps
        if isinstance(steps, Step) or not isinstance(steps, Iterable):
            raise ValidationError(f"Pipeline steps must be a sequence of steps, got {steps!r}")
        steps = tuple(steps)
        for step in steps:
            if not isinstance(step, Step) or not step.name:
                raise ValidationError(
                    f"Pipeline steps must be registered Step instances, got {step!r}"
                )
        object.__setattr__(self, "steps", steps)

    def __call__(self, ecg: ECG) -> ECG:
        """Apply every step in order; returns the processed record (``meta`` kept)."""
        for step in self.steps:
            ecg = step(ecg)
        return ecg

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __repr__(self) -> str:
        return f"Pipeline({self.to_spec()!r})"

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``{"format": "ecgfm.pipeline", "version": 1, "steps": [{"name", "params"}, ...]}``."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "steps": [step.to_dict() for step in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        """Rebuild a pipeline from :meth:`to_dict`'s output, validating every step.

        Raises:
            ValidationError: wrong format or a newer version, unknown step names or parameters.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(f"pipeline: expected a JSON object, got {type(data).__name__}")
        if data.get("format", FORMAT) != FORMAT:
            raise ValidationError(f"pipeline: format is {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValidationError(f"pipeline: 'version' must be an integer, got {version!r}")
        if version > FORMAT_VERSION or version < 1:
            raise ValidationError(
                f"pipeline: version {version} is not supported (this ecgfm reads up to "
                f"version {FORMAT_VERSION})"
            )
        unknown = sorted(set(data) - {"format", "version", "steps"})
        if unknown:
            raise ValidationError(f"pipeline: unknown field(s) {', '.join(unknown)}")
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, Sequence) or isinstance(raw_steps, (str, bytes)):
            raise ValidationError("pipeline: 'steps' must be a list of {name, params} objects")
        steps = []
        for i, raw in enumerate(raw_steps):
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise ValidationError(f"pipeline: step {i} must be an object with a 'name'")
            extra = sorted(set(raw) - {"name", "params"})
            if extra:
                raise ValidationError(f"pipeline: step {i} has unknown field(s) {', '.join(extra)}")
            steps.append(make_step(raw["name"], raw.get("params")))
        return cls(tuple(steps))

    def to_json(self, indent: int | None = None) -> str:
        """The JSON form. Without ``indent`` it is the canonical form that :attr:`hash` digests:
        sorted keys, no whitespace, floats in shortest round-trip notation."""
        if indent is None:
            return _canonical_json(self.to_dict())
        return json.dumps(_normalise(self.to_dict()), sort_keys=True, indent=indent,
                          allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        """Parse :meth:`to_json`'s output (indented or not)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(f"pipeline: invalid JSON: {error}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """sha256 hex digest of the canonical JSON: equal for equal pipelines, in any process
        and Python version, and different as soon as any step or parameter differs."""
        return hashlib.sha256(self.to_json().encode("ascii")).hexdigest()

    def to_spec(self) -> str:
        """The compact spec (``name:key=value,...|...``) that :meth:`parse` reads back."""
        parts = []
        for step in self.steps:
            params = ",".join(f"{k}={_spec_value(v)}" for k, v in step.params().items())
            parts.append(f"{step.name}:{params}" if params else step.name)
        return "|".join(parts)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def standard(
        cls,
        fs: float = 500.0,
        seconds: float = 10.0,
        notch: float | str | None = 50.0,
        leads: Sequence[str] | str = STANDARD_12,
        missing: str = "error",
    ) -> Pipeline:
        """The project's standard pipeline for foundation-model input.

        select/derive ``leads`` -> resample to ``fs`` -> high-pass 0.5 Hz -> low-pass 100 Hz
        (``0.4 * fs`` when that is lower) -> notch at ``notch`` Hz (left out when ``None`` or not
        below the low-pass cutoff; ``"auto"`` detects 50/60 Hz per record) -> crop or pad to
        ``seconds`` from the start -> per-lead z-score.

        Args:
            fs: output sampling rate in Hz.
            seconds: output length in seconds (``round(seconds * fs)`` samples).
            notch: mains frequency in Hz, ``"auto"`` or ``None``.
            leads: output leads in order (or a lead-list string such as ``"I;II;V1-V6"``);
                III/aVR/aVL/aVF are derived from I and II where the record lacks them.
            missing: what to do with a lead the record lacks: ``"error"`` or ``"mask"``.

        Returns:
            The pipeline; applied to a record it yields float32 ``[len(leads), seconds * fs]``.
        """
        resample = Resample(fs=fs)
        lowpass = min(STANDARD_LOWPASS_HZ, STANDARD_LOWPASS_MAX_FRACTION_OF_FS * resample.fs)
        steps: list[Step] = [
            # A string ("12", "I;II;V1-V6") is a lead list for SelectLeads to parse.
            SelectLeads(leads=leads if isinstance(leads, str) else tuple(leads), derive=True,
                        missing=missing),
            resample,
            HighPass(cutoff=STANDARD_HIGHPASS_HZ),
            LowPass(cutoff=lowpass),
        ]
        if notch is not None:
            step = Notch(freq=notch)
            if step.freq == "auto" or step.freq < lowpass:  # type: ignore[operator]
                steps.append(step)
        steps += [CropOrPad(seconds=seconds, mode="start"), Normalize(method="zscore")]
        return cls(tuple(steps))

    @classmethod
    def parse(cls, spec: str | Path) -> Pipeline:
        """Read a pipeline from ``"standard"``, a compact spec, JSON text or a ``.json`` path.

        See the module docstring for the compact syntax.

        Raises:
            ValidationError: malformed spec, unknown step (listing the known ones), unknown or
                invalid parameter, unreadable file.
        """
        if isinstance(spec, Path):
            return cls._from_file(spec)
        if not isinstance(spec, str):
            raise ValidationError(f"pipeline spec must be a string or path, got {spec!r}")
        text = spec.strip()
        if not text:
            raise ValidationError("pipeline spec is empty (try 'standard')")
        if text.startswith("{"):
            return cls.from_json(text)
        if text.lower().endswith(".json"):
            return cls._from_file(Path(text))
        if not any(c in text for c in "|=:") and text.lower() not in (*STEPS, "standard"):
            if Path(text).is_file():
                return cls._from_file(Path(text))
        return cls(tuple(_parse_compact(text)))

    @classmethod
    def _from_file(cls, path: Path) -> Pipeline:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValidationError(f"{path}: cannot read pipeline file ({error.strerror})") from None
        try:
            return cls.from_json(text)
        except ValidationError as error:
            raise ValidationError(f"{path}: {error}") from None


# -- helpers ----------------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    """JSON-ready value with floats normalised: -0.0 -> 0.0, non-finite refused."""
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"pipeline: parameter value {value!r} is not finite")
        return value + 0.0
    if hasattr(value, "item"):  # numpy scalars
        return _normalise(value.item())
    raise ValidationError(f"pipeline: parameter value {value!r} is not JSON-serialisable")


def _canonical_json(data: Any) -> str:
    # Python's float repr is the shortest string that round-trips (since 3.1, on every IEEE
    # platform), so 0.5, 0.50 and 5e-1 all serialise as "0.5" and the text is stable.
    return json.dumps(
        _normalise(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
        allow_nan=False,
    )


def _spec_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if value is None:
        return "null"
    return str(value) if not isinstance(value, float) else repr(value)


def _literal(text: str) -> Any:
    """A spec value: a JSON number/true/false/null where it is one, else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


def _parse_compact(spec: str) -> list[Step]:
    steps: list[Step] = []
    for i, segment in enumerate(spec.split("|")):
        segment = segment.strip()
        if not segment:
            raise ValidationError(f"pipeline spec {spec!r}: step {i + 1} is empty")
        name, _, rest = segment.partition(":")
        name = name.strip().lower()
        params: dict[str, Any] = {}
        last: str | None = None
        for item in rest.split(",") if rest.strip() else []:
            key, eq, value = item.partition("=")
            if eq:
                last = key.strip()
                if not last:
                    raise ValidationError(f"pipeline spec {spec!r}: empty parameter name in {segment!r}")
                if last in params:
                    raise ValidationError(f"pipeline spec {spec!r}: parameter {last!r} given twice")
                params[last] = value.strip()
            elif last is not None:
                params[last] += "," + item.strip()  # a comma inside a list value
            else:
                raise ValidationError(
                    f"pipeline spec {spec!r}: expected key=value after '{name}:', got {item.strip()!r}"
                )
        values = {k: _literal(v) for k, v in params.items()}
        if name == "standard":
            steps.extend(_standard_from_spec(values).steps)
        elif name not in STEPS:
            raise ValidationError(
                f"pipeline spec {spec!r}: unknown step {name!r} "
                f"(known: {', '.join(sorted([*STEPS, 'standard']))})"
            )
        else:
            steps.append(make_step(name, values))
    return steps


def _standard_from_spec(values: dict[str, Any]) -> Pipeline:
    known = list(inspect.signature(Pipeline.standard).parameters)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValidationError(
            f"step 'standard': unknown parameter(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return Pipeline.standard(**values)
