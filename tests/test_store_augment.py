"""Augmentations of ecgfm.store.augment: shapes, determinism, statistics, p=0 identity."""

from __future__ import annotations

import numpy as np
import pytest

from ecgfm.errors import ValidationError
from ecgfm.leads import STANDARD_12
from ecgfm.store.augment import (
    AmplitudeScale,
    BaselineWander,
    Compose,
    GaussianNoise,
    LeadDropout,
    PowerlineNoise,
    RandomLeadSubset,
    TimeShift,
)

FS = 500.0


def ecg_like(n_leads: int = 12, n: int = 5000, seed: int = 0) -> np.ndarray:
    """Smooth random signals with lead standard deviations from 0.5 to 2."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    x = np.sin(2 * np.pi * 1.2 * t + rng.uniform(0, 6, (n_leads, 1))) + 0.3 * rng.standard_normal((n_leads, n))
    x /= x.std(axis=1, keepdims=True)
    return (x * np.linspace(0.5, 2.0, n_leads)[:, None]).astype(np.float32)


def all_augmentations(p: float) -> list:
    return [
        GaussianNoise(std=0.1, p=p), PowerlineNoise(p=p), BaselineWander(p=p), AmplitudeScale(p=p),
        TimeShift(max_shift=0.3, p=p), TimeShift(max_shift=0.3, mode="zero", p=p),
        LeadDropout(p_lead=0.5, p=p), RandomLeadSubset(RandomLeadSubset.CINC2021, leads=STANDARD_12, p=p),
        Compose([GaussianNoise(p=1.0), LeadDropout(0.3)], p=p),
    ]


@pytest.mark.parametrize("aug", all_augmentations(1.0), ids=lambda a: type(a).__name__)
def test_shapes_dtypes_determinism_and_input_untouched(aug):
    x = ecg_like()
    before = x.copy()
    y1, m1 = aug(x, FS, np.random.default_rng(7))
    y2, m2 = aug(x, FS, np.random.default_rng(7))
    y3, _ = aug(x, FS, np.random.default_rng(8))
    assert y1.shape == x.shape and y1.dtype == np.float32
    assert m1.shape == (12,) and m1.dtype == bool
    np.testing.assert_array_equal(x, before)          # the input is never modified
    np.testing.assert_array_equal(y1, y2)             # same generator state, same output
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(y1, x)                  # p=1 changes the signal
    assert not np.array_equal(y1, y3)                 # another seed, another draw
    batch = np.stack([x, x, x])
    yb, mb = aug(batch, FS, np.random.default_rng(1), np.ones((3, 12), bool))
    assert yb.shape == (3, 12, 5000) and mb.shape == (3, 12)
    assert not (np.array_equal(yb[0], yb[1]) and np.array_equal(yb[1], yb[2]))  # one draw per record


@pytest.mark.parametrize("aug", all_augmentations(0.0), ids=lambda a: type(a).__name__)
def test_p_zero_is_identity(aug):
    x = ecg_like()
    mask = np.ones(12, bool)
    mask[3] = False
    y, m = aug(x, FS, np.random.default_rng(0), mask)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(m, mask)


def test_gaussian_noise_std_absolute_and_relative():
    x = ecg_like(n=20000)
    mask = np.ones(12, bool)
    mask[5] = False
    x[5] = 0.0
    y, _ = GaussianNoise(std=0.3, relative=False, p=1.0)(x, FS, np.random.default_rng(0), mask)
    noise = y - x
    np.testing.assert_allclose(noise[mask].std(axis=1), 0.3, rtol=0.03)
    assert np.all(noise[5] == 0)                       # an absent lead stays exactly zero
    y, _ = GaussianNoise(std=0.05, p=1.0)(x, FS, np.random.default_rng(1), mask)
    rel = (y - x)[mask].std(axis=1) / x[mask].std(axis=1)
    np.testing.assert_allclose(rel, 0.05, rtol=0.03)
    lo_hi = [GaussianNoise(std=(0.1, 0.2), relative=False, p=1.0)(np.zeros((1, 20000), np.float32), FS,
                                                                   np.random.default_rng(s))[0].std() for s in range(20)]
    assert 0.1 * 0.97 < min(lo_hi) and max(lo_hi) < 0.2 * 1.03 and max(lo_hi) - min(lo_hi) > 0.03


def test_powerline_peak_at_mains_frequency():
    x = np.zeros((12, 5000), np.float32)
    y, _ = PowerlineNoise(freq=50.0, amplitude=0.1, relative=False, p=1.0)(x, FS, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(y, axis=1))
    freqs = np.fft.rfftfreq(5000, 1 / FS)
    assert np.all(freqs[spectrum.argmax(axis=1)] == 50.0)
    np.testing.assert_allclose(y.std(axis=1), 0.1 / np.sqrt(2), rtol=1e-3)  # 500 whole periods
    # A tuple of frequencies is a choice per record.
    yb, _ = PowerlineNoise(freq=(50.0, 60.0), amplitude=0.1, relative=False, p=1.0)(
        np.zeros((40, 1, 5000), np.float32), FS, np.random.default_rng(0))
    peaks = freqs[np.abs(np.fft.rfft(yb[:, 0], axis=1)).argmax(axis=1)]
    assert set(peaks) == {50.0, 60.0}


def test_baseline_wander_is_slow_and_bounded():
    x = np.zeros((12, 5000), np.float32)
    y, _ = BaselineWander(amplitude=0.5, freq=(0.1, 0.5), relative=False, p=1.0)(x, FS, np.random.default_rng(3))
    assert np.abs(y).max() <= 0.5 + 1e-6
    assert np.abs(y).max() > 0.05
    power = np.abs(np.fft.rfft(y, axis=1)) ** 2
    freqs = np.fft.rfftfreq(5000, 1 / FS)
    assert power[:, freqs < 1.0].sum() / power.sum() > 0.99


def test_amplitude_scale_range_and_per_lead():
    x = ecg_like()
    y, _ = AmplitudeScale(scale=(0.5, 0.6), p=1.0)(x, FS, np.random.default_rng(0))
    ratio = y / x
    assert np.allclose(ratio, ratio[0, 0], rtol=1e-5) and 0.5 <= ratio[0, 0] <= 0.6
    y, _ = AmplitudeScale(scale=(0.5, 2.0), per_lead=True, p=1.0)(x, FS, np.random.default_rng(0))
    per_lead = (y / x)[:, 0]
    assert per_lead.std() > 0.05 and per_lead.min() >= 0.5 and per_lead.max() <= 2.0


def test_time_shift_is_a_roll_or_zero_fill():
    x = ecg_like()
    y, _ = TimeShift(max_shift=0.2, p=1.0)(x, FS, np.random.default_rng(2))
    shifts = [s for s in range(-100, 101) if np.array_equal(np.roll(x, s, axis=1), y)]
    assert len(shifts) == 1 and shifts[0] != 0
    s = shifts[0]
    z, _ = TimeShift(max_shift=0.2, mode="zero", p=1.0)(x, FS, np.random.default_rng(2))
    if s > 0:
        assert np.all(z[:, :s] == 0) and np.array_equal(z[:, s:], x[:, :-s])
    else:
        assert np.all(z[:, s:] == 0) and np.array_equal(z[:, :s], x[:, -s:])


def test_lead_dropout_updates_mask_and_keeps_one_lead():
    x = ecg_like()
    mask = np.ones(12, bool)
    mask[[0, 1]] = False
    x[[0, 1]] = 0
    y, m = LeadDropout(p_lead=1.0)(x, FS, np.random.default_rng(0), mask)
    assert m.sum() == 1 and not m[[0, 1]].any()        # only a present lead survives
    assert np.all(y[~m] == 0) and np.array_equal(y[m], x[m])
    yb, mb = LeadDropout(p_lead=0.3)(np.repeat(x[None], 200, 0), FS, np.random.default_rng(1),
                                      np.repeat(mask[None], 200, 0))
    dropped = 1 - mb[:, 2:].mean()
    assert 0.25 < dropped < 0.35
    assert np.all(yb[~mb] == 0)


def test_random_lead_subset_masks_to_a_subset():
    x = ecg_like()
    aug = RandomLeadSubset(RandomLeadSubset.CINC2021, leads=STANDARD_12)
    allowed = {tuple(STANDARD_12.index(n) for n in s) for s in RandomLeadSubset.CINC2021}
    seen = set()
    for seed in range(30):
        y, m = aug(x, FS, np.random.default_rng(seed))
        kept = tuple(np.flatnonzero(m))
        assert kept in allowed
        seen.add(kept)
        assert np.all(y[~m] == 0) and np.array_equal(y[m], x[m])
    assert len(seen) == len(allowed)
    with pytest.raises(ValidationError, match="V7"):
        RandomLeadSubset([("I", "V7")], leads=STANDARD_12)
    with pytest.raises(ValidationError, match="leads="):
        RandomLeadSubset([("I", "II")])


def test_compose_applies_in_order_with_one_generator():
    x = ecg_like()
    a, b = GaussianNoise(std=0.1, p=1.0), LeadDropout(p_lead=0.5)
    y, m = Compose([a, b])(x, FS, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    rng.random(1)                                        # Compose's own draw (p)
    y2, m2 = a(x, FS, rng)
    y2, m2 = b(y2, FS, rng, m2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(m, m2)


def test_bad_parameters_are_refused():
    with pytest.raises(ValidationError, match="p must be"):
        GaussianNoise(p=1.5)
    with pytest.raises(ValidationError, match="mode"):
        TimeShift(mode="reflect")
    with pytest.raises(ValidationError, match="std"):
        GaussianNoise(std=(0.3, 0.1))
    with pytest.raises(ValidationError, match="mask shape"):
        GaussianNoise()(ecg_like(), FS, np.random.default_rng(0), np.ones(5, bool))
