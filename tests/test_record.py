"""The ECG record type and lead handling: validation, masks, lead selection and derivation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ecgfm import ECG, STANDARD_12, Metadata, ValidationError, canonical_lead
from ecgfm.leads import derive_limb_leads, parse_lead_list


def make(n_leads: int = 2, n: int = 1000, fs: float = 500.0, **kw) -> ECG:
    leads = kw.pop("leads", STANDARD_12[:n_leads])
    return ECG(np.random.default_rng(0).normal(size=(len(leads), n)), fs, leads, **kw)


def test_signal_is_float32_contiguous_in_lead_rows() -> None:
    ecg = ECG(np.arange(10, dtype=np.int16).reshape(2, 5), 500, ["i", "AVR"])
    assert ecg.signal.dtype == np.float32 and ecg.signal.flags.c_contiguous
    assert ecg.leads == ("I", "aVR")
    assert ecg.duration == pytest.approx(0.01)


@pytest.mark.parametrize("fs", [0, -500, 10, 49.9, 20_001, float("nan"), float("inf"), "fast"])
def test_implausible_sampling_rates_are_refused(fs: object) -> None:
    with pytest.raises(ValidationError, match="sampling rate"):
        ECG(np.zeros((1, 100)), fs, ["I"], Metadata(source_path="x.hea"))


def test_errors_name_the_record() -> None:
    with pytest.raises(ValidationError, match=r"^rec42\.xml: lead 'V7x' is not a known lead name \(known: I, II"):
        ECG(np.zeros((1, 100)), 500, ["V7x"], Metadata(source_path="rec42.xml"))


def test_shape_and_name_mismatches_are_refused() -> None:
    with pytest.raises(ValidationError, match="2 lead names for 3 signal rows"):
        ECG(np.zeros((3, 100)), 500, ["I", "II"])
    with pytest.raises(ValidationError, match="must be \\[leads, samples\\]"):
        ECG(np.zeros((3, 100, 2)), 500, ["I", "II", "III"])
    with pytest.raises(ValidationError, match="no samples"):
        ECG(np.zeros((1, 0)), 500, ["I"])
    with pytest.raises(ValidationError, match="appears twice"):
        ECG(np.zeros((2, 10)), 500, ["AVR", "aVR"])


def test_nan_is_refused_unless_masked() -> None:
    x = np.ones((2, 100))
    x[1, 10:20] = np.nan
    with pytest.raises(ValidationError, match="lead II has 10 non-finite samples"):
        ECG(x, 500, ["I", "II"])
    ecg = ECG.with_gaps(x, 500, ["I", "II"])
    assert ecg.mask is not None and int((~ecg.mask).sum()) == 10
    assert np.all(ecg.signal[1, 10:20] == 0) and np.isfinite(ecg.signal).all()
    full = ECG.with_gaps(np.ones((1, 10)), 500, ["I"])
    assert full.mask is None


def test_metadata_is_validated() -> None:
    with pytest.raises(ValidationError, match="sex"):
        Metadata(sex="male")
    with pytest.raises(ValidationError, match="age"):
        Metadata(age=200)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("avr", "aVR"), ("AVL", "aVL"), ("MDC_ECG_LEAD_AVF", "aVF"), ("MDC_ECG_LEAD_V1", "V1"), ("MLII", "II"),
     ("DIII", "III"), ("Lead I", "I"), ("v6", "V6"), ("V4R", "V4R"), ("LEAD_II", "II")],
)
def test_lead_aliases(raw: str, canonical: str) -> None:
    assert canonical_lead(raw) == canonical


def test_inverted_avr_is_not_silently_read_as_avr() -> None:
    with pytest.raises(ValidationError):
        canonical_lead("-aVR")


def test_parse_lead_list() -> None:
    assert parse_lead_list("I,II,V1-V3") == ("I", "II", "V1", "V2", "V3")
    assert parse_lead_list("12") == STANDARD_12
    assert parse_lead_list("limb") == STANDARD_12[:6]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 500), elements=st.floats(-10, 10)),
       arrays(np.float64, st.integers(1, 500), elements=st.floats(-10, 10)))
def test_derived_limb_leads_satisfy_einthoven_and_goldberger(a: np.ndarray, b: np.ndarray) -> None:
    n = min(len(a), len(b))
    lead_i, lead_ii = a[:n], b[:n]
    d = derive_limb_leads(lead_i, lead_ii)
    np.testing.assert_allclose(d["III"], lead_ii - lead_i, atol=1e-12)  # Einthoven
    np.testing.assert_allclose(d["aVR"] + d["aVL"] + d["aVF"], 0.0, atol=1e-12)  # Goldberger sum
    np.testing.assert_allclose(lead_i + d["III"], lead_ii, atol=1e-12)


def test_select_derives_missing_limb_leads_like_ge_muse_files() -> None:
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    ecg = make(leads=eight)
    full = ecg.select(STANDARD_12)
    assert full.leads == STANDARD_12
    i, ii = ecg.lead("I"), ecg.lead("II")
    np.testing.assert_allclose(full.lead("III"), ii - i, atol=1e-6)
    np.testing.assert_allclose(full.lead("aVR"), -(i + ii) / 2, atol=1e-6)
    np.testing.assert_array_equal(full.lead("V4"), ecg.lead("V4"))


def test_select_missing_lead_errors_or_masks() -> None:
    ecg = make(leads=["I"])
    with pytest.raises(ValidationError, match="has no lead V1"):
        ecg.select(["I", "V1"])
    masked = ecg.select(["I", "V1"], missing="mask")
    assert masked.mask is not None and not masked.mask[1].any() and masked.mask[0].all()


def test_select_carries_the_mask_to_derived_leads() -> None:
    x = np.ones((2, 50))
    x[0, :5] = np.nan
    ecg = ECG.with_gaps(x, 500, ["I", "II"]).select(["I", "II", "III"])
    assert ecg.mask is not None and not ecg.mask[2, :5].any() and ecg.mask[2, 5:].all()
