"""The health profile: build_profile / profile_many, integrated gradients, HTML/PDF, the CLI.

The model is a tiny, untrained ResNet1D-18 saved as a portable model (100 Hz, 10 s, 12 leads)
with catalogue labels from every category, two benchmark-group labels and one unknown id.
Its operating points are set around its own probabilities on the example record, so each
call (positive, borderline, negative) is known before the profile makes it.
"""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import ecgfm
from conftest import EXAMPLES
from ecgfm.labels import load_catalogue
from ecgfm.models.heads import HeadSpec
from ecgfm.models.portable import Model, load_model, save_model
from ecgfm.models.registry import create_encoder
from ecgfm.preprocess import Pipeline
from ecgfm.preprocess.steps import CropOrPad, Resample
from ecgfm.profile import Profile, build_profile, integrated_gradients, profile_many
from ecgfm.profile.cli import profile_command
from ecgfm.profile.core import GROUP_TITLES, SCHEMA_VERSION
from ecgfm.profile.render import render_html, render_pdf
from ecgfm.profile.saliency import Saliency, model_time_axis, output_function
from ecgfm.record import ECG, Metadata

EXAMPLE = EXAMPLES / "ptbxl" / "00351_hr.hea"
OTHER = EXAMPLES / "ptbxl" / "00003_hr.hea"
LABELS = ("NORM", "SR", "AFIB", "IMI", "LVH", "CLBBB", "LAD", "NDT", "PACE", "DIG", "LPR",
          "superdiagnostic:MI", "subdiagnostic:IMI", "NOT_A_CODE")
TINY = {"layers": (1, 1), "widths": (8, 16), "stem_width": 8}
PER_LABEL = {"AFIB": {"auroc": 0.93, "auroc_ci": [0.9, 0.95], "sensitivity": 0.8, "n_positive": 40}}


def _pipeline() -> Pipeline:
    standard = Pipeline.parse("standard:fs=100")
    return Pipeline((*standard.steps, CropOrPad(seconds=10, mode="center")))


def _encoder() -> torch.nn.Module:
    torch.manual_seed(3)
    encoder = create_encoder("resnet1d18", num_outputs=len(LABELS), **TINY)
    for m in encoder.modules():  # spread the outputs, so probabilities are not all ~0.5
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.2)
            torch.nn.init.normal_(m.bias, std=1.0)
    return encoder.eval()


def _points(probabilities: np.ndarray) -> dict[str, dict[str, float]]:
    """Cut-offs that give label i the call EXPECTED[i % 3] on the example record."""
    points = {}
    for i, (label, p) in enumerate(zip(LABELS, probabilities)):
        p = float(p)
        if i % 3 == 0:  # positive
            points[label] = {"borderline": p / 3, "positive": p * 0.9}
        elif i % 3 == 1:  # borderline
            points[label] = {"borderline": p * 0.9, "positive": min(p + (1 - p) / 2, 0.9999)}
        else:  # negative
            points[label] = {"borderline": min(p + (1 - p) / 3, 0.999), "positive": min(p + (1 - p) / 2, 0.9999)}
    return points


EXPECTED = ("positive", "borderline", "negative")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    encoder = _encoder()
    options = dict(head=HeadSpec("multilabel", len(LABELS), label_ids=LABELS), pipeline=_pipeline(),
                   metrics={"per_label": PER_LABEL})
    first = load_model(save_model(tmp_path_factory.mktemp("m0") / "tiny", encoder, **options))
    probabilities = first.predict(EXAMPLE)[0]
    path = save_model(tmp_path_factory.mktemp("m1") / "tiny", encoder,
                      operating_points=_points(probabilities), **options)
    return load_model(path)


@pytest.fixture(scope="module")
def profile(model) -> Profile:
    return build_profile(EXAMPLE, model, saliency=2)


# -- what a profile holds -----------------------------------------------------------------------


def test_profile_of_a_real_record_describes_it_and_ranks_every_output(model, profile) -> None:
    assert profile.status == "ok" and profile.ok and profile.reasons == ()
    r = profile.record
    assert (r.record_id, r.format, r.fs, r.n_samples, r.duration_s) == ("00351_hr", "wfdb", 500.0, 5000, 10.0)
    assert r.leads == ecgfm.STANDARD_12 and r.source == str(EXAMPLE)
    assert [c.id for c in sorted(profile.conditions, key=lambda c: LABELS.index(c.id))] == list(LABELS)
    # the probabilities are Model.predict's (its own batching code path)
    reference = model.predict(EXAMPLE)[0]
    got = {c.id: c.probability for c in profile.conditions}
    np.testing.assert_allclose([got[label] for label in LABELS], reference, rtol=0, atol=1e-6)
    # ranked: rank 1..C, probabilities non-increasing
    assert [c.rank for c in profile.conditions] == list(range(1, len(LABELS) + 1))
    probabilities = [c.probability for c in profile.conditions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert profile.model["outputs"] == len(LABELS) and profile.model["encoder"] == "resnet1d18"


def test_conditions_are_grouped_by_catalogue_category(profile) -> None:
    catalogue = load_catalogue()
    by_id = {c.id: c for c in profile.conditions}
    assert by_id["AFIB"].group == "rhythm" and by_id["CLBBB"].group == "conduction"
    assert by_id["LAD"].group == "axis" and by_id["PACE"].group == "pacing"
    assert by_id["superdiagnostic:MI"].group == by_id["subdiagnostic:IMI"].group == "summary"
    assert by_id["NOT_A_CODE"].group == "other"
    assert by_id["AFIB"].name == "atrial fibrillation"
    assert by_id["superdiagnostic:MI"].name == "myocardial infarction (superdiagnostic)"
    for c in profile.conditions:
        if ":" not in c.id and c.id in catalogue:
            assert c.group == catalogue[c.id].category
    groups = profile.groups
    order = list(GROUP_TITLES)
    assert [order.index(g) for g, _, _ in groups] == sorted(order.index(g) for g, _, _ in groups)
    assert groups[0][0] == "summary"  # benchmark summaries lead the report
    for _, _, items in groups:
        assert [c.rank for c in items] == sorted(c.rank for c in items)
    assert sum(len(items) for _, _, items in groups) == len(LABELS)


def test_calls_follow_the_operating_points(model, profile) -> None:
    points = model.operating_points()
    by_id = {c.id: c for c in profile.conditions}
    for i, label in enumerate(LABELS):
        c = by_id[label]
        assert (c.borderline_at, c.positive_at) == pytest.approx(points[label])
        assert c.call == EXPECTED[i % 3], (label, c.probability, points[label])
    assert [c.id for c in profile.called("positive")] == [c.id for c in profile.conditions if c.call == "positive"]
    assert by_id["AFIB"].metrics == PER_LABEL["AFIB"] and by_id["NORM"].metrics == {}


def test_saliency_explains_the_top_positive_findings_statements_first(profile) -> None:
    positive = profile.called("positive")
    statements = [c.id for c in positive if c.group != "summary"]
    assert [s.label for s in profile.saliency] == statements[:2]
    for s in profile.saliency:
        assert s.values is not None and s.values.shape == (12, 1000) and s.fs == 100.0
        assert s.t0 == 0.0 and s.leads == ecgfm.STANDARD_12
        assert s.completeness_error <= 1e-3 + 0.02 * abs(s.delta)
        assert sum(s.lead_contribution.values()) == pytest.approx(s.attribution_sum, abs=1e-6)
        assert sum(s.time_contribution) == pytest.approx(s.attribution_sum, abs=1e-6)
        assert len(s.time_contribution) == 100  # 10 s in 0.1 s bins


# -- integrated gradients ---------------------------------------------------------------------


def test_integrated_gradients_of_a_linear_map_is_weight_times_input() -> None:
    """Reference: for f(x) = sum(w * x) and a zero baseline, IG is exactly w * x."""
    torch.manual_seed(0)
    w = torch.randn(2, 3, 50)
    x = torch.randn(3, 50)

    def fn(z: torch.Tensor) -> torch.Tensor:
        return torch.stack([(z * w[0]).sum((1, 2)), (z * w[1]).sum((1, 2))], dim=1)

    attributions, delta = integrated_gradients(fn, x, [1, 0], steps=4)
    torch.testing.assert_close(attributions, torch.stack([w[1] * x, w[0] * x]))
    torch.testing.assert_close(delta, torch.stack([(w[1] * x).sum(), (w[0] * x).sum()]))


def test_integrated_gradients_completeness_on_the_model(model) -> None:
    signal, mask = model.prepare(EXAMPLE)
    fn = output_function(model, mask)
    with torch.no_grad():
        out = fn(torch.stack([signal, torch.zeros_like(signal)]))
    targets = [0, 2, 11]
    attributions, delta = integrated_gradients(fn, signal, targets, steps=32, batch_size=10)
    torch.testing.assert_close(delta, out[0, targets] - out[1, targets])
    sums = attributions.sum(dim=(1, 2))
    assert torch.all((sums - delta).abs() <= 1e-3 + 0.02 * delta.abs()), (sums, delta)
    # few steps still agree with many: the quadrature converges rather than drifts
    coarse, _ = integrated_gradients(fn, signal, targets, steps=8)
    assert torch.all((coarse.sum(dim=(1, 2)) - delta).abs() <= 0.02 + 0.1 * delta.abs())


def test_model_time_axis_follows_resample_and_centre_crop() -> None:
    """Reference: the pipeline itself, run on a record whose samples are their own time."""
    pipeline = Pipeline((Resample(fs=100), CropOrPad(seconds=10, mode="center")))
    for seconds in (20.0, 6.0):
        t = np.arange(int(seconds * 500)) / 500
        ecg = ECG(np.stack([t, t]), 500, ("I", "II"))
        t0, fs, n = model_time_axis(pipeline, ecg)
        out = pipeline(ecg)
        assert (fs, n) == (100.0, out.n_samples) == (100.0, 1000)
        assert t0 == pytest.approx(5.0 if seconds == 20 else -2.0)
        inside = out.mask[0] if out.mask is not None else np.ones(n, bool)
        times = t0 + np.arange(n) / fs
        np.testing.assert_allclose(out.signal[0][inside], times[inside], atol=0.02)


def test_saliency_maps_onto_the_displayed_records_time_axis() -> None:
    values = np.zeros((2, 100), np.float32)
    values[1, 40] = 1.0  # model sample 40 at 100 Hz, t0 = 2 s: record time 2.4 s
    s = Saliency.from_values(values, label="X", name="x", probability=0.9, leads=("I", "II"),
                             fs=100.0, t0=2.0, delta=1.0, steps=8)
    shown = s.on_record(500.0, 4000)
    assert shown.shape == (2, 4000)
    assert shown[1].argmax() == 1200 and shown[1, 1200] == 1.0 and shown[0].max() == 0
    assert shown[1, :1000].max() == 0 and shown[1, 1500:].max() == 0  # outside the window
    assert s.lead_contribution == {"I": 0.0, "II": 1.0}
    assert s.time_contribution[4] == 1.0 and sum(s.time_contribution) == 1.0


# -- refusals ---------------------------------------------------------------------------------


def _example() -> ECG:
    return ecgfm.read(EXAMPLE)


def _refusals() -> dict[str, ECG]:
    ecg = _example()
    meta = Metadata(record_id="bad")
    short = ECG(ecg.signal[:, :1500], ecg.fs, ecg.leads, meta)
    flat = ECG(np.zeros_like(ecg.signal), ecg.fs, ecg.leads, meta)
    gappy = ecg.signal.copy()
    gappy[:3, 1000:1500] = np.nan
    return {"short": short, "flat": flat, "nan": ECG.with_gaps(gappy, ecg.fs, ecg.leads, meta),
            "all_nan": ECG.with_gaps(np.full_like(gappy, np.nan), ecg.fs, ecg.leads, meta)}


@pytest.mark.parametrize("kind, codes", [
    ("short", {"too_short", "contract"}), ("flat", {"flat_lead"}), ("nan", {"contract"}),
    ("all_nan", {"contract"}),
])
def test_records_unfit_to_interpret_are_refused_with_reasons(model, kind, codes) -> None:
    profile = build_profile(_refusals()[kind], model)
    assert profile.status == "refused" and not profile.ok
    assert {r.code for r in profile.reasons} == codes
    assert profile.conditions == () and profile.saliency == () and profile.measurements is None
    data = profile.to_dict()
    assert data["status"] == "refused" and data["conditions"] == [] and data["calls"]["positive"] == []
    contract = [r.message for r in profile.reasons if r.code == "contract"]
    if kind == "short":
        assert "3 s long" in contract[0] and "at least 10 s" in contract[0]
    if kind == "nan":
        assert "unobserved" in contract[0] and not contract[0].startswith("bad:")


# -- measurements -----------------------------------------------------------------------------


def test_measurements_come_from_the_delineator(model) -> None:
    delineate = pytest.importorskip("ecgfm.delineate")
    if not hasattr(delineate, "measure"):
        pytest.skip("ecgfm.delineate has no measure() yet")
    profile = build_profile(EXAMPLE, model, saliency=0)
    expected = json.loads(json.dumps(delineate.measure(_example()).to_dict()))
    assert profile.measurements is not None and set(profile.measurements) == set(expected)
    for key, value in expected.items():
        if value is None:
            assert profile.measurements[key] is None
        else:
            assert profile.measurements[key] == pytest.approx(value, rel=1e-5)
    assert profile.measurements["heart_rate_bpm"] > 100  # atrial fibrillation with rapid response


def test_without_a_delineator_measurements_are_null_with_a_note(model, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ecgfm.delineate", None)  # import now raises ImportError
    profile = build_profile(EXAMPLE, model, saliency=0)
    assert profile.status == "ok" and profile.measurements is None
    assert profile.to_dict()["measurements"] is None
    assert any(n.startswith("measurements: not available") for n in profile.notes)
    assert "Not available: measurements" in render_html(profile)


# -- JSON, HTML, PDF --------------------------------------------------------------------------


def test_json_is_stable_and_round_trips(model, profile) -> None:
    data = profile.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["schema_version"] == SCHEMA_VERSION and data["risk"] == []
    assert list(data) == ["schema_version", "status", "reasons", "record", "model", "quality",
                          "measurements", "conditions", "groups", "calls", "saliency", "risk", "notes"]
    assert Profile.from_dict(json.loads(text)).to_dict() == data
    again = build_profile(EXAMPLE, model, saliency=2).to_dict()
    assert json.dumps(again) == text  # same record, same model: the same bytes
    full = profile.to_dict(saliency_values=True)["saliency"][0]["values"]
    assert np.asarray(full).shape == (12, 1000)
    with pytest.raises(ecgfm.ValidationError, match="schema_version"):
        Profile.from_dict({**data, "schema_version": 99})


def test_html_is_one_self_contained_page(profile) -> None:
    page = render_html(profile)
    sources = re.findall(r'src="([^"]*)"', page)
    # the plot, the median beats, then one overlay per finding
    assert len(sources) == 2 + len(profile.saliency)
    assert 'alt="median beats of' in page
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page
    for c in profile.conditions:
        assert f"<code>{c.id}</code>" in page and c.name in page
    for _, title, _ in profile.groups:
        assert title in page
    assert "Where the model looked" in page and "Not interpreted" not in page


def test_refused_html_shows_the_reasons(model) -> None:
    profile = build_profile(_refusals()["flat"], model)
    page = render_html(profile)
    assert "Not interpreted" in page and "flat_lead" in page and "<h2>Conditions</h2>" not in page


def test_saliency_overlay_sits_on_the_panels_of_its_leads(profile) -> None:
    from ecgfm.plot import plot_ecg
    from ecgfm.profile.render import _panels, _shade

    ecg = profile.ecg
    fig = plot_ecg(ecg)
    ax = fig.axes[0]
    artists = _shade(ax, ecg, profile.saliency[0], 0.0)
    assert len(artists) == 13  # 12 panels and the rhythm strip
    panels, _ = _panels(ecg, 0.0)
    for artist, (lead, _t0, seconds, x0, base) in zip(artists, panels):
        assert artist.get_gid() == f"saliency:{profile.saliency[0].label}:{lead}"
        left, right, bottom, top = artist.get_extent()
        assert left == x0 and right == pytest.approx(x0 + seconds * 25.0) and bottom < base < top
    # the traces of the same leads are where the panels say
    for line in ax.get_lines():
        lead = line.get_gid().split(":")[1]
        xs = line.get_xdata()
        assert any(lead == p[0] and p[3] - 1e-6 <= xs[0] and xs[-1] <= p[3] + p[2] * 25 for p in panels)


def test_pdf_has_plot_conditions_and_saliency_pages(profile, tmp_path) -> None:
    path = render_pdf(profile, tmp_path / "report.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert pages == 1 + 1 + 1 + len(profile.saliency)  # plot + median beats + one conditions page + saliency


# -- batches ----------------------------------------------------------------------------------


def test_profile_many_batches_in_order_and_reports_bad_files(model, tmp_path) -> None:
    bad = tmp_path / "broken.hea"
    bad.write_text("this is not a header\n")
    sources = [EXAMPLE, bad, OTHER, _refusals()["short"], tmp_path / "absent.hea", EXAMPLE]
    errors: list[tuple[str, str]] = []
    batched = list(profile_many(sources, model, batch_size=2, saliency=0,
                                on_error=lambda s, e: errors.append((s, str(e)))))
    assert [p.record.record_id for p in batched] == ["00351_hr", "00003_hr", "bad", "00351_hr"]
    assert [p.status for p in batched] == ["ok", "ok", "refused", "ok"]
    assert [s for s, _ in errors] == [str(bad), str(tmp_path / "absent.hea")]
    single = [build_profile(s, model, saliency=0) for s in (EXAMPLE, OTHER)]
    for one, many in zip(single, batched[:2]):
        np.testing.assert_allclose([c.probability for c in many.conditions],
                                   [c.probability for c in one.conditions], atol=1e-6)
    with pytest.raises(ecgfm.ReadError):  # without a callback the error is raised
        list(profile_many([bad], model))


# -- the command ------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("profile")(profile_command)

    @app.callback()
    def main() -> None:
        """ecgfm (test app with the profile command only)."""

    return app


def test_cli_one_file_prints_json(model) -> None:
    result = CliRunner().invoke(_app(), ["profile", str(EXAMPLE), "--model", str(model.path), "--no-saliency"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["record"]["record_id"] == "00351_hr" and data["saliency"] == []
    assert len(data["conditions"]) == len(LABELS)


def test_cli_writes_reports_and_summary_and_counts_bad_files(model, tmp_path) -> None:
    bad = tmp_path / "in" / "broken.hea"
    bad.parent.mkdir()
    bad.write_text("not a header\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), [
        "profile", str(EXAMPLE), str(OTHER), str(bad), "--model", str(model.path), "--out", str(out),
        "--format", "json,html", "--format", "pdf", "--top", "1", "--batch-size", "2",
    ])
    assert result.exit_code == 1, result.output  # one bad file
    assert "broken.hea" in result.stderr and "1 of 3 files failed" in result.stderr
    assert "wrote 2 profiles (0 refused)" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00003_hr.html", "00003_hr.json", "00003_hr.pdf", "00351_hr.html", "00351_hr.json",
                     "00351_hr.pdf", "profile_run.json", "profiles.jsonl"]
    lines = [json.loads(line) for line in (out / "profiles.jsonl").read_text().splitlines()]
    assert [line["record_id"] for line in lines] == ["00351_hr", "00003_hr"]
    assert lines[0]["files"] == {"json": "00351_hr.json", "html": "00351_hr.html", "pdf": "00351_hr.pdf"}
    saved = json.loads((out / "00351_hr.json").read_text())
    assert len(saved["saliency"]) == min(1, len(saved["calls"]["positive"]))
    assert json.loads((out / "profile_run.json").read_text())["formats"] == ["json", "html", "pdf"]
    assert (out / "00351_hr.pdf").read_bytes().startswith(b"%PDF")


def test_cli_jobs_gives_the_profiles_of_one_process(model, tmp_path) -> None:
    bad = tmp_path / "in" / "broken.hea"
    bad.parent.mkdir()
    bad.write_text("not a header\n")
    files = [str(EXAMPLE), str(bad), str(OTHER), str(EXAMPLE)]
    outputs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        result = CliRunner().invoke(_app(), ["profile", *files, "--model", str(model.path), "--out", str(out),
                                             "--format", "json,html", "--top", "1", "--batch-size", "1",
                                             "--jobs", jobs])
        assert result.exit_code == 1, result.output
        assert "broken.hea" in result.stderr and "1 of 4 files failed" in result.stderr
        outputs[jobs] = out
    names = sorted(p.name for p in outputs["2"].iterdir())
    assert names == sorted(p.name for p in outputs["1"].iterdir())
    assert "00351_hr-2.json" in names and "00351_hr.html" in names  # input order kept, names unique
    summary = [json.loads(line) for line in (outputs["2"] / "profiles.jsonl").read_text().splitlines()]
    assert [line["record_id"] for line in summary] == ["00351_hr", "00003_hr", "00351_hr"]
    for name in ("00351_hr.json", "00003_hr.json"):
        one, two = (json.loads((outputs[j] / name).read_text()) for j in ("1", "2"))
        assert [c["id"] for c in one["conditions"]] == [c["id"] for c in two["conditions"]]
        np.testing.assert_allclose([c["probability"] for c in one["conditions"]],
                                   [c["probability"] for c in two["conditions"]], atol=1e-5)
        assert one["measurements"] == two["measurements"] and one["calls"] == two["calls"]
    assert "<svg" in (outputs["2"] / "00003_hr.html").read_text() or "data:image/png" in (
        outputs["2"] / "00003_hr.html").read_text()


def test_cli_refuses_html_without_an_output_folder(model) -> None:
    result = CliRunner().invoke(_app(), ["profile", str(EXAMPLE), "--model", str(model.path), "--format", "html"])
    assert result.exit_code == 2 and "--out" in result.output
    result = CliRunner().invoke(_app(), ["profile", str(EXAMPLE), "--model", str(model.path), "--format", "docx"])
    assert result.exit_code == 2 and "unknown format" in result.output


def test_importing_the_command_stays_light() -> None:
    """The main CLI imports every command module at start-up: no torch or matplotlib there."""
    import subprocess

    code = ("import sys, ecgfm.profile, ecgfm.profile.cli, ecgfm.profile.core; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_without_a_model_uses_the_default_or_says_there_is_none(monkeypatch, tmp_path) -> None:
    import ecgfm.models

    monkeypatch.setattr(ecgfm.models, "default_model_path", lambda: tmp_path / "default")
    result = CliRunner().invoke(_app(), ["profile", str(EXAMPLE)])
    assert result.exit_code == 1 and "no default model is installed" in result.stderr


# -- risk models (survival heads) ------------------------------------------------------------


@pytest.fixture(scope="module")
def cox_model(tmp_path_factory) -> Model:
    from ecgfm.models.heads import cox_head

    torch.manual_seed(5)
    encoder = create_encoder("resnet1d18", num_outputs=1, **TINY).eval()
    head = cox_head("death", time_unit="years", horizons=[1.0, 5.0], event_column="death", max_time=8.0,
                    baseline_times=[0.5, 2.0, 4.0, 8.0], baseline_cumulative_hazard=[0.01, 0.05, 0.12, 0.3])
    path = save_model(tmp_path_factory.mktemp("cox") / "cox", encoder, head=head, pipeline=_pipeline(),
                      metrics={"val": {"c_index": 0.71}, "test": {"c_index": 0.69, "ibs": 0.12}})
    return load_model(path)


def test_risk_models_add_absolute_risk_at_their_horizons(model, cox_model, tmp_path) -> None:
    profile = build_profile(EXAMPLE, model, saliency=0, risk_models=[cox_model])
    (entry,) = profile.risk
    expected = cox_model.risk(EXAMPLE, [1.0, 5.0])[0]
    assert entry["event"] == "death" and entry["horizons"] == [1.0, 5.0] and entry["time_unit"] == "years"
    np.testing.assert_allclose(entry["risk"], expected, atol=1e-6)
    assert 0 < entry["risk"][0] < entry["risk"][1] < 1
    assert entry["validation"] == {"val_c_index": 0.71, "test_c_index": 0.69, "test_ibs": 0.12}
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))).risk == profile.risk
    page = render_html(profile)
    assert "absolute risk" in page and f"{100 * expected[1]:.1f}% by 5 years" in page
    refused = build_profile(_refusals()["short"], model, saliency=0, risk_models=[cox_model])
    assert refused.status == "refused" and refused.risk == ()


def test_a_risk_model_needs_a_survival_head_and_the_cli_takes_several(model, cox_model, tmp_path) -> None:
    with pytest.raises(ecgfm.ValidationError, match="needs a survival head"):
        profile_many([EXAMPLE], model, risk_models=[model])
    args = ["profile", str(EXAMPLE), "--model", str(model.path), "--no-saliency",
            "--risk-model", str(cox_model.path), "--risk-model", str(cox_model.path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert [r["event"] for r in json.loads(result.stdout)["risk"]] == ["death", "death"]
    result = CliRunner().invoke(_app(), [*args[:5], "--risk-model", str(model.path)])
    assert result.exit_code == 1 and "needs a survival head" in result.output
