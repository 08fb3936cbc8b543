"""Signal augmentations for training on the corpus store.

Each augmentation is a small frozen dataclass with its parameters and a probability ``p``; calling
it transforms a float32 signal ``[L, T]`` (one record) or a batch ``[B, L, T]``:

    x, mask = augmentation(x, fs, rng, mask)

- ``x``: float32 ``[L, T]`` or ``[B, L, T]``, signal units (mV, or z-scores after the standard
  pipeline's per-lead normalisation). The input array is never modified; a new array is returned.
- ``fs``: sampling rate in Hz (the frequency-domain augmentations need it).
- ``rng``: a :class:`numpy.random.Generator`. All randomness comes from it, in a fixed order, so
  the same generator state gives the same output. :class:`~ecgfm.store.dataset.CorpusDataset`
  hands each item ``np.random.default_rng([seed, epoch, index])``, so an item's augmentation
  depends on nothing else (not on the batch, the worker or the number of workers).
- ``mask``: bool ``[L]`` or ``[B, L]``, True where the lead is present (None: all present).
  Additive noise touches present leads only, so an absent lead stays exactly zero; the lead
  augmentations (:class:`LeadDropout`, :class:`RandomLeadSubset`) zero leads and clear their mask.
  The returned mask is always an array.

On a batch, each record gets its own draw (whether it is augmented, and its parameters).

>>> import numpy as np
>>> from ecgfm.store.augment import Compose, GaussianNoise, BaselineWander, LeadDropout
>>> aug = Compose([BaselineWander(amplitude=0.2, p=0.5), GaussianNoise(std=0.05), LeadDropout(0.2)])
>>> x = np.zeros((12, 5000), np.float32)
>>> y, mask = aug(x, 500.0, np.random.default_rng(0))
>>> y.shape, mask.shape
((12, 5000), (12,))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ecgfm.errors import ValidationError
from ecgfm.leads import canonical_leads

__all__ = [
    "AmplitudeScale", "Augmentation", "BaselineWander", "Compose", "GaussianNoise", "LeadDropout",
    "PowerlineNoise", "RandomLeadSubset", "TimeShift",
]

Range = float | tuple[float, float]


def _check_p(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValidationError(f"{name}: p must be in [0, 1], got {p}")


def _range(value: Range, name: str, what: str, *, low: float = 0.0) -> tuple[float, float]:
    """A scalar ``v`` means exactly ``v``; a pair ``(lo, hi)`` means uniform in that interval."""
    lo, hi = (float(value), float(value)) if np.isscalar(value) else (float(value[0]), float(value[1]))
    if not (low <= lo <= hi):
        raise ValidationError(f"{name}: {what} must satisfy {low} <= low <= high, got {value!r}")
    return lo, hi


def _as_batch(x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``[L, T]`` or ``[B, L, T]`` float32 (a copy) and a ``[B, L]`` bool mask (a copy)."""
    arr = np.array(x, dtype=np.float32, copy=True)
    if arr.ndim not in (2, 3):
        raise ValidationError(f"augmentation input must be [leads, samples] or [batch, leads, samples], got shape {arr.shape}")
    single = arr.ndim == 2
    arr3 = arr[None] if single else arr
    if mask is None:
        m = np.ones(arr3.shape[:2], bool)
    else:
        m = np.array(mask, dtype=bool, copy=True)
        if m.shape != arr.shape[:-1]:
            raise ValidationError(f"augmentation mask shape {m.shape} does not match signal shape {arr.shape}")
        m = m.reshape(arr3.shape[:2])
    return arr3, m, single


def _out(x3: np.ndarray, m: np.ndarray, single: bool) -> tuple[np.ndarray, np.ndarray]:
    return (x3[0], m[0]) if single else (x3, m)


def _lead_std(x3: np.ndarray) -> np.ndarray:
    """Per-record, per-lead standard deviation ``[B, L, 1]`` (float32)."""
    return x3.std(axis=2, keepdims=True, dtype=np.float64).astype(np.float32)


class Augmentation:
    """Base class: subclasses implement :meth:`apply` on a batch ``[B, L, T]``."""

    p: float

    def __call__(
        self, x: np.ndarray, fs: float, rng: np.random.Generator, mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment ``x`` (``[L, T]`` or ``[B, L, T]``); return ``(x, mask)`` as new arrays."""
        x3, m, single = _as_batch(x, mask)
        # Draw who is augmented first, always, so the generator's stream has a fixed layout.
        hit = np.flatnonzero(rng.random(x3.shape[0]) < self.p)
        if hit.size:
            self.apply(x3, m, hit, float(fs), rng)
        return _out(x3, m, single)

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:  # pragma: no cover - abstract
        """Transform records ``hit`` of ``x`` ``[B, L, T]`` and ``mask`` ``[B, L]`` in place."""
        raise NotImplementedError


@dataclass(frozen=True)
class GaussianNoise(Augmentation):
    """Add white Gaussian noise to the present leads.

    Args:
        std: noise standard deviation; a pair ``(lo, hi)`` draws it uniformly per record.
            With ``relative=True`` (default) it is a fraction of each lead's own standard
            deviation (0.05 = 26 dB SNR); otherwise it is in signal units.
        relative: whether ``std`` is relative to each lead's standard deviation.
        p: probability that a record is augmented.
    """

    std: Range = 0.05
    relative: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p, "GaussianNoise")
        _range(self.std, "GaussianNoise", "std")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        lo, hi = _range(self.std, "GaussianNoise", "std")
        std = rng.uniform(lo, hi, hit.size).astype(np.float32)[:, None, None]
        noise = rng.standard_normal((hit.size, *x.shape[1:]), dtype=np.float32)
        scale = std * (_lead_std(x[hit]) if self.relative else 1.0) * mask[hit][:, :, None]
        x[hit] += noise * scale


@dataclass(frozen=True)
class PowerlineNoise(Augmentation):
    """Add mains interference: a sinusoid at 50 or 60 Hz with a random phase per lead.

    Args:
        freq: mains frequency in Hz, or a tuple of choices drawn per record (``(50.0, 60.0)``).
        amplitude: sinusoid amplitude (peak); a pair draws it uniformly per record. Relative to
            each lead's standard deviation with ``relative=True`` (default), else signal units.
        relative: whether ``amplitude`` is relative to each lead's standard deviation.
        p: probability that a record is augmented.
    """

    freq: float | tuple[float, ...] = (50.0, 60.0)
    amplitude: Range = (0.02, 0.1)
    relative: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p, "PowerlineNoise")
        _range(self.amplitude, "PowerlineNoise", "amplitude")
        if not len(np.atleast_1d(self.freq)) or np.any(np.atleast_1d(self.freq) <= 0):
            raise ValidationError(f"PowerlineNoise: freq must be positive Hz, got {self.freq!r}")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        choices = np.atleast_1d(np.asarray(self.freq, np.float64))
        freq = choices[rng.integers(len(choices), size=hit.size)]
        lo, hi = _range(self.amplitude, "PowerlineNoise", "amplitude")
        amp = rng.uniform(lo, hi, hit.size)
        phase = rng.uniform(0.0, 2 * np.pi, (hit.size, x.shape[1]))
        t = np.arange(x.shape[2]) / fs
        wave = np.sin(2 * np.pi * freq[:, None, None] * t + phase[:, :, None]).astype(np.float32)
        scale = amp.astype(np.float32)[:, None, None] * mask[hit][:, :, None]
        if self.relative:
            scale = scale * _lead_std(x[hit])
        x[hit] += wave * scale


@dataclass(frozen=True)
class BaselineWander(Augmentation):
    """Add baseline wander: a sum of slow sinusoids (respiration, electrode motion).

    ``n_components`` sinusoids with frequencies uniform in ``freq`` (Hz) and random phases are
    shared by the leads of a record; each lead weighs each component by a factor uniform in
    [-1, 1], divided by ``n_components``, so the wander's peak never exceeds ``amplitude``.

    Args:
        amplitude: peak amplitude bound; a pair draws it uniformly per record. Relative to each
            lead's standard deviation with ``relative=True`` (default), else signal units.
        freq: ``(low, high)`` frequency range in Hz (default 0.05-0.5 Hz, below the 0.5 Hz
            high-pass of the standard pipeline, i.e. what that filter would have removed).
        n_components: number of sinusoids.
        relative: whether ``amplitude`` is relative to each lead's standard deviation.
        p: probability that a record is augmented.
    """

    amplitude: Range = (0.1, 0.5)
    freq: tuple[float, float] = (0.05, 0.5)
    n_components: int = 3
    relative: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p, "BaselineWander")
        _range(self.amplitude, "BaselineWander", "amplitude")
        lo, hi = _range(self.freq, "BaselineWander", "freq")
        if hi <= 0:
            raise ValidationError(f"BaselineWander: freq must be positive Hz, got {self.freq!r}")
        if self.n_components < 1:
            raise ValidationError(f"BaselineWander: n_components must be >= 1, got {self.n_components}")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        n, k, n_leads = hit.size, self.n_components, x.shape[1]
        lo, hi = _range(self.amplitude, "BaselineWander", "amplitude")
        amp = rng.uniform(lo, hi, n)
        freq = rng.uniform(*_range(self.freq, "BaselineWander", "freq"), (n, k))
        phase = rng.uniform(0.0, 2 * np.pi, (n, k))
        weight = rng.uniform(-1.0, 1.0, (n, k, n_leads)) * (amp / k)[:, None, None]
        t = np.arange(x.shape[2]) / fs
        waves = np.sin(2 * np.pi * freq[:, :, None] * t + phase[:, :, None])        # [n, k, T]
        wander = np.einsum("nkl,nkt->nlt", weight, waves).astype(np.float32)        # [n, L, T]
        wander *= mask[hit][:, :, None]
        if self.relative:
            wander *= _lead_std(x[hit])
        x[hit] += wander


@dataclass(frozen=True)
class AmplitudeScale(Augmentation):
    """Multiply the signal by a random factor (electrode contact, body habitus, gain errors).

    Args:
        scale: ``(low, high)`` range of the factor, drawn uniformly.
        per_lead: one factor per lead instead of one per record.
        p: probability that a record is augmented.
    """

    scale: tuple[float, float] = (0.8, 1.2)
    per_lead: bool = False
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p, "AmplitudeScale")
        _range(self.scale, "AmplitudeScale", "scale")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        shape = (hit.size, x.shape[1] if self.per_lead else 1, 1)
        x[hit] *= rng.uniform(*_range(self.scale, "AmplitudeScale", "scale"), shape).astype(np.float32)


@dataclass(frozen=True)
class TimeShift(Augmentation):
    """Shift the signal in time by a whole number of samples (all leads together).

    Args:
        max_shift: largest shift in seconds; the shift is uniform in ``[-max_shift, max_shift]``
            (rounded to samples).
        mode: ``"circular"`` (samples leaving one end come back at the other) or ``"zero"``
            (the vacated samples are zeros).
        p: probability that a record is augmented.
    """

    max_shift: float = 0.5
    mode: str = "circular"
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p, "TimeShift")
        if self.max_shift < 0:
            raise ValidationError(f"TimeShift: max_shift must be >= 0 seconds, got {self.max_shift}")
        if self.mode not in ("circular", "zero"):
            raise ValidationError(f"TimeShift: mode must be 'circular' or 'zero', got {self.mode!r}")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        n_max = int(round(self.max_shift * fs))
        shifts = rng.integers(-n_max, n_max + 1, size=hit.size)
        n = x.shape[2]
        for b, s in zip(hit, shifts):
            if s == 0:
                continue
            x[b] = np.roll(x[b], s, axis=1)
            if self.mode == "zero" and s > 0:
                x[b, :, :s] = 0.0
            elif self.mode == "zero":
                x[b, :, n + s:] = 0.0


@dataclass(frozen=True)
class LeadDropout(Augmentation):
    """Drop present leads at random: zero them and clear their mask; at least one lead stays.

    Args:
        p_lead: probability that each present lead is dropped.
        p: probability that a record is augmented at all.
    """

    p_lead: float = 0.1
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_p(self.p, "LeadDropout")
        _check_p(self.p_lead, "LeadDropout (p_lead)")

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        drop = rng.random((hit.size, x.shape[1])) < self.p_lead
        keep_pick = rng.random(hit.size)  # which present lead survives when all would go
        for j, b in enumerate(hit):
            present = mask[b]
            gone = drop[j] & present
            if present.any() and not (present & ~gone).any():
                idx = np.flatnonzero(present)
                gone[idx[int(keep_pick[j] * idx.size)]] = False
            x[b, gone] = 0.0
            mask[b, gone] = False


@dataclass(frozen=True)
class RandomLeadSubset(Augmentation):
    """Keep one lead subset drawn uniformly from ``subsets``; zero and mask the other leads.

    For "any-lead" training, where a model must work from 12, 6, 4, 3 or 2 leads
    (:attr:`CINC2021` holds the PhysioNet/CinC 2021 subsets). Where a record has none of the
    drawn subset's leads, it is left unchanged.

    Args:
        subsets: lead subsets, as lead names (then ``leads`` names the signal's rows) or as row
            indices.
        leads: the signal's lead order, needed when ``subsets`` hold names.
        p: probability that a record is augmented.
    """

    subsets: Sequence[Sequence[str | int]]
    leads: Sequence[str] | None = None
    p: float = 1.0
    _rows: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    CINC2021: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
        ("I", "II", "III", "aVR", "aVL", "aVF"),
        ("I", "II", "III", "V2"),
        ("I", "II", "V2"),
        ("I", "II"),
    )

    def __post_init__(self) -> None:
        _check_p(self.p, "RandomLeadSubset")
        if not self.subsets:
            raise ValidationError("RandomLeadSubset: subsets is empty")
        names = None if self.leads is None else canonical_leads(self.leads)
        rows = []
        for subset in self.subsets:
            if all(isinstance(s, (int, np.integer)) for s in subset):
                rows.append(np.asarray(subset, np.int64))
                continue
            if names is None:
                raise ValidationError("RandomLeadSubset: subsets given as lead names need leads= (the signal's lead order)")
            wanted = canonical_leads([str(s) for s in subset])
            missing = [w for w in wanted if w not in names]
            if missing:
                raise ValidationError(f"RandomLeadSubset: lead(s) {missing} of subset {list(subset)} are not among the signal's leads {list(names)}")
            rows.append(np.asarray([names.index(w) for w in wanted], np.int64))
        object.__setattr__(self, "_rows", tuple(rows))

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        pick = rng.integers(len(self._rows), size=hit.size)
        for b, k in zip(hit, pick):
            rows = self._rows[k]
            if rows.size and rows.max() >= x.shape[1]:
                raise ValidationError(f"RandomLeadSubset: subset rows {rows.tolist()} outside the signal's {x.shape[1]} leads")
            keep = np.zeros(x.shape[1], bool)
            keep[rows] = True
            if not (keep & mask[b]).any():
                continue
            x[b, ~keep] = 0.0
            mask[b] &= keep


@dataclass(frozen=True)
class Compose(Augmentation):
    """Apply augmentations in order (each with its own ``p``); the whole chain with probability ``p``."""

    augmentations: Sequence[Augmentation]
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_p(self.p, "Compose")
        bad = [a for a in self.augmentations if not callable(a)]
        if bad:
            raise ValidationError(f"Compose: not callable: {bad[:3]}")
        object.__setattr__(self, "augmentations", tuple(self.augmentations))

    def apply(self, x: np.ndarray, mask: np.ndarray, hit: np.ndarray, fs: float,
              rng: np.random.Generator) -> None:
        y, m = x[hit], mask[hit]
        for aug in self.augmentations:
            y, m = aug(y, fs, rng, m)
        x[hit], mask[hit] = y, m
