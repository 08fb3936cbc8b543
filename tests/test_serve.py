"""The profile service: endpoints, dynamic batching, backends, limits, bad input, `ecgfm export`.

The model is a tiny, untrained ResNet1D-18 saved as a portable model (100 Hz, 10 s, 12 leads,
labels including benchmark groups): its numbers mean nothing clinically, but every profile the
service returns must carry exactly the probabilities ``Model.predict`` gives for the same file,
whatever way the record arrives (WFDB pair, zip, other formats, JSON samples), whichever backend
runs it, and however requests are batched together.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ecgfm
from conftest import EXAMPLES, data_path
from ecgfm.io.write import write
from ecgfm.models.heads import HeadSpec
from ecgfm.models.portable import ModelCard, load_model, save_model
from ecgfm.models.registry import create_encoder
from ecgfm.preprocess import Pipeline
from ecgfm.serve import create_app
from ecgfm.serve.app import ServiceLimits
from ecgfm.serve.backends import OnnxBackend, compare_backends, export_cached
from ecgfm.serve.batching import BatcherBusy, BatcherClosed, DynamicBatcher
from ecgfm.serve.inputs import safe_name

PTBXL = EXAMPLES / "ptbxl"
RECORDS = ("00003_hr", "00257_hr", "00351_hr")
LABELS = ("NORM", "AFIB", "IMI", "LVH", "CRBBB", "superdiagnostic:MI", "subdiagnostic:IMI")
LEADS = list(ecgfm.STANDARD_12)


def save_tiny_model(directory: Path) -> Path:
    """A tiny random ResNet1D-18 as a portable model: 100 Hz, 10 s window, 12 leads."""
    torch.manual_seed(0)
    encoder = create_encoder("resnet1d18", num_outputs=len(LABELS), layers=(1, 1), widths=(8, 16),
                             stem_width=8).eval()
    for m in encoder.modules():  # non-trivial BatchNorm statistics, as a trained model has
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return save_model(directory, encoder, head=HeadSpec("multilabel", len(LABELS), label_ids=LABELS),
                      pipeline=Pipeline.standard(fs=100, seconds=10, notch=None),
                      card=ModelCard(name="tiny serve test model", limitations="untrained"),
                      thresholds={label: 0.5 for label in LABELS},
                      metrics={"per_label": {"AFIB": {"auroc": 0.5}}})


def wfdb_files(record: str = "00351_hr") -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (f"{record}{ext}", (PTBXL / f"{record}{ext}").read_bytes())) for ext in (".hea", ".dat")]


def probabilities(profile: dict) -> dict[str, float]:
    return {c["id"]: c["probability"] for c in profile["conditions"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def expected(model) -> dict[str, dict[str, float]]:
    """Model.predict on each example file: what every profile must report."""
    probs = model.predict([str(PTBXL / f"{r}.hea") for r in RECORDS])
    return {r: dict(zip(model.labels, row.tolist())) for r, row in zip(RECORDS, probs)}


@pytest.fixture(scope="module")
def app(model):
    return create_app(model, max_upload_bytes=2_000_000, timeout_s=20, batch_wait_ms=2)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def assert_close(got: dict[str, float], want: dict[str, float], atol: float = 2e-6) -> None:
    assert got.keys() == want.keys()
    worst = max(abs(got[k] - want[k]) for k in want)
    assert worst <= atol, f"max abs difference {worst:.3g}"


# -- one record, many ways in ------------------------------------------------------------------


def test_wfdb_upload_gives_the_models_probabilities(client, expected) -> None:
    response = client.post("/v1/profile", files=wfdb_files("00351_hr"))
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["status"] == "ok" and profile["reasons"] == []
    assert profile["record"]["source"] == "00351_hr.hea"  # the client's name, not a temp path
    assert profile["record"]["fs"] == 500 and profile["record"]["leads"] == LEADS
    assert_close(probabilities(profile), expected["00351_hr"])
    ranked = [c["probability"] for c in profile["conditions"]]
    assert ranked == sorted(ranked, reverse=True)
    groups = {c["id"]: c["group"] for c in profile["conditions"]}
    assert groups["superdiagnostic:MI"] == "summary" and groups["AFIB"] == "rhythm"
    for c in profile["conditions"]:
        assert c["call"] == ("positive" if c["probability"] >= 0.5 else
                             "borderline" if c["probability"] >= 0.25 else "negative")
    assert set(profile) >= {"record", "status", "reasons", "conditions", "measurements", "quality", "risk", "model"}
    assert profile["model"]["backend"]["name"] == "torch" and "path" not in profile["model"]
    assert profile["quality"]["ok"] is True
    assert "plot" not in profile


def test_plot_option_returns_a_png(client) -> None:
    profile = client.post("/v1/profile?plot=true", files=wfdb_files("00003_hr")).json()
    import base64

    png = base64.b64decode(profile["plot"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_zip_upload_equals_the_pair(client, expected, tmp_path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for ext in (".hea", ".dat"):
            archive.write(PTBXL / f"00257_hr{ext}", f"some/folder/00257_hr{ext}")
    response = client.post("/v1/profile", files={"file": ("record.zip", buffer.getvalue())})
    assert response.status_code == 200, response.text
    assert_close(probabilities(response.json()), expected["00257_hr"])


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_other_formats_are_detected_by_content(client, expected, tmp_path, fmt) -> None:
    ecg = ecgfm.read(PTBXL / "00351_hr.hea")
    path = write(ecg, tmp_path, fmt)
    # A misleading suffix: the format comes from the content.
    response = client.post("/v1/profile", files={"file": ("upload.bin", path.read_bytes())})
    assert response.status_code == 200, response.text
    assert response.json()["record"]["format"] == fmt
    assert_close(probabilities(response.json()), expected["00351_hr"], atol=1e-4 if fmt == "csv" else 2e-6)


@pytest.mark.parametrize("parts", [("formats", "dicom_waveform", "waveform_ecg.dcm"),
                                   ("formats", "hl7_aecg", "ectd_example", "aecg", "subject1_0.xml")])
def test_real_files_of_other_vendors(client, model, parts) -> None:
    path = data_path(*parts)
    response = client.post("/v1/profile", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["record"]["source"] == path.name
    if profile["status"] == "ok":
        want = dict(zip(model.labels, model.predict(str(path))[0].tolist()))
        assert_close(probabilities(profile), want)
    else:  # refused records say why
        assert profile["reasons"] and not profile["conditions"]


def test_json_samples_equal_the_file(client, expected) -> None:
    ecg = ecgfm.read(PTBXL / "00003_hr.hea")
    body = {"samples": (ecg.signal * 1000).round(3).tolist(), "fs": ecg.fs, "leads": list(ecg.leads),
            "units": "uV", "record_id": "00003_hr"}
    response = client.post("/v1/profile", json=body)
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["record"]["record_id"] == "00003_hr" and profile["record"]["format"] == "json"
    assert_close(probabilities(profile), expected["00003_hr"], atol=1e-4)


def test_the_fallback_profile_has_the_same_core(app, expected) -> None:
    """Without ecgfm.profile the service builds the core of the profile itself."""
    from ecgfm.serve.profiler import core_profile

    ecg = ecgfm.read(PTBXL / "00257_hr.hea")
    profile = core_profile(ecg, app.state.service.batched)
    assert profile["status"] == "ok" and profile["record"]["record_id"] == "00257_hr"
    assert_close(probabilities(profile), expected["00257_hr"])
    assert [c["rank"] for c in profile["conditions"]] == list(range(1, len(LABELS) + 1))
    short = core_profile(ecg.replace(signal=ecg.signal[:, :1000]), app.state.service.batched)
    assert short["status"] == "refused" and short["reasons"][0]["code"] in ("too_short", "contract")


def test_a_short_record_is_refused_with_reasons(client) -> None:
    ecg = ecgfm.read(PTBXL / "00003_hr.hea")
    body = {"samples": ecg.signal[:, :1500].tolist(), "fs": ecg.fs, "leads": list(ecg.leads)}
    response = client.post("/v1/profile", json=body)
    assert response.status_code == 200
    profile = response.json()
    assert profile["status"] == "refused" and profile["conditions"] == []
    assert any("10 s" in r["message"] or "shorter" in r["message"] for r in profile["reasons"])


def test_batch_endpoint_profiles_each_record_and_reports_failures(client, expected) -> None:
    files = [f for r in RECORDS for f in wfdb_files(r)] + [("file", ("notes.txt", b"not an ecg at all"))]
    response = client.post("/v1/profile/batch", files=files)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [p["record"]["source"] for p in result["profiles"]] == [f"{r}.hea" for r in RECORDS]
    for record, profile in zip(RECORDS, result["profiles"]):
        assert_close(probabilities(profile), expected[record])
    assert result["errors"] == [{"source": "notes.txt", "status": 415, "error": "unsupported_format",
                                 "detail": "notes.txt: content matches no supported ECG format"}]


# -- dynamic batching ------------------------------------------------------------------------


def test_concurrent_requests_share_forward_passes_and_match_sequential_ones(model, expected) -> None:
    app = create_app(model, max_batch=8, batch_wait_ms=200, warm_up=False)
    batcher = app.state.service.batcher

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
            jobs = [http.post("/v1/profile", files=wfdb_files(RECORDS[i % 3])) for i in range(8)]
            return await asyncio.gather(*jobs)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for i, response in enumerate(responses):
        assert_close(probabilities(response.json()), expected[RECORDS[i % 3]])
    stats = batcher.stats()
    assert stats["records"] == 8 and stats["largest"] > 1 and stats["batches"] < 8, stats
    batcher.close()


def test_batcher_groups_records_scatters_rows_and_reports_errors() -> None:
    seen: list[int] = []

    def run(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x.sum(axis=(1, 2))[:, None] + m.sum(axis=1, keepdims=True)  # [B, 1]

    batcher = DynamicBatcher(run, max_batch=16, wait_ms=100)
    inputs = [np.full((2, 5 if i % 2 else 7), float(i), np.float32) for i in range(12)]
    futures: list = [None] * 12
    threads = [threading.Thread(target=lambda i=i: futures.__setitem__(i, batcher.submit(inputs[i], np.ones(2, bool))))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, future in enumerate(futures):
        assert future.result(5)[0] == inputs[i].sum() + 2
    assert sum(seen) == 12 and len(seen) < 12  # batched, one pass per input length
    assert batcher.stats()["records"] == 12

    def broken(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    failing = DynamicBatcher(broken, max_batch=4, wait_ms=1, max_queue=2)
    with pytest.raises(RuntimeError, match="model exploded"):
        failing.submit(inputs[0], np.ones(2, bool)).result(5)
    failing.run = lambda x, m: time.sleep(0.3) or np.zeros((len(x), 1))  # type: ignore[assignment]
    failing.submit(inputs[0], np.ones(2, bool))  # taken by the thread, which then sleeps
    time.sleep(0.05)
    failing.submit(inputs[0], np.ones(2, bool))
    failing.submit(inputs[0], np.ones(2, bool))
    with pytest.raises(BatcherBusy):
        failing.submit(inputs[0], np.ones(2, bool))
    failing.close()
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(inputs[0], np.ones(2, bool))


# -- backends ----------------------------------------------------------------------------------


def test_onnx_backend_matches_pytorch_on_real_records(model, expected, tmp_path) -> None:
    path = export_cached(model, tmp_path)
    assert export_cached(model, tmp_path) == path  # cached: the second call reuses the file
    report = compare_backends(model, path, [str(PTBXL / f"{r}.hea") for r in RECORDS])
    print(f"ONNX Runtime vs PyTorch on {report['records']} real records: max abs diff "
          f"{report['max_abs_diff']:.3g}")
    assert report["records"] == 3 and report["max_abs_diff"] < 1e-5
    app = create_app(model, backend="onnx", onnx_path=path, warm_up=False)
    with TestClient(app) as onnx_client:
        profile = onnx_client.post("/v1/profile", files=wfdb_files("00257_hr")).json()
        assert profile["model"]["backend"]["name"] == "onnx"
        assert_close(probabilities(profile), expected["00257_hr"], atol=1e-5)
        assert onnx_client.get("/v1/health").json()["backend"] == "onnx"


def test_onnx_backend_refuses_a_file_from_another_model(model, tmp_path) -> None:
    other = load_model(save_tiny_model(tmp_path / "other"))
    other.labels = tuple(reversed(other.labels))  # same architecture, outputs in another order
    path = tmp_path / "other.onnx"
    from ecgfm.models.export import export_onnx

    export_onnx(other, path, check=False)
    with pytest.raises(ecgfm.ValidationError, match="was not exported from this model"):
        OnnxBackend(model, path=path)


def test_export_command_reports_parity_on_real_records(model_dir, tmp_path) -> None:
    from ecgfm.models.cli import app as export_app

    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(export_app, [str(model_dir), "--format", "onnx", "--out", str(out), "--json",
                                             "--check-with", str(PTBXL / "00351_hr.hea"),
                                             "--check-with", str(PTBXL / "00003_hr.hea")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["real_records"]["records"] == 2
    assert report["max_abs_diff"] < 1e-5 and out.is_file()
    bad = CliRunner().invoke(export_app, [str(model_dir), "--format", "tflite", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown format 'tflite'" in bad.output


# -- model card, docs, page -------------------------------------------------------------------


def test_model_card_health_docs_and_page(client) -> None:
    card = client.get("/v1/model").json()
    assert card["name"] == "tiny serve test model" and "# tiny serve test model" in card["card"]
    assert [x["id"] for x in card["labels"]] == list(LABELS)
    assert card["input"]["fs"] == 100 and card["operating_points"]["NORM"] == [0.25, 0.5]
    assert client.get("/v1/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/profile"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert {"/v1/profile/batch", "/v1/health", "/v1/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and 'id="conditions"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: self-contained


def test_importing_the_service_cli_stays_light() -> None:
    code = ("import sys, ecgfm.serve, ecgfm.serve.cli, ecgfm.models.cli; "
            "print(sorted(m for m in ('fastapi', 'torch', 'uvicorn', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_serve_command_builds_the_app_and_runs_uvicorn(model_dir, monkeypatch) -> None:
    import uvicorn

    from ecgfm.serve.cli import serve_command

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    serve_command(model=model_dir, host="127.0.0.1", port=8123, backend="torch", workers=1, max_batch=4,
                  batch_wait_ms=1.0, timeout=5.0, max_upload_mb=1.0, onnx=None)
    app, options = calls[-1]
    assert options == {"host": "127.0.0.1", "port": 8123, "log_level": "info"}
    assert app.state.service.limits.max_batch == 4 and app.state.service.limits.max_upload_bytes == 1 << 20
    monkeypatch.setenv("ECGFM_SERVE_MODEL", "")
    serve_command(model=model_dir, host="127.0.0.1", port=8124, backend="torch", workers=3, max_batch=4,
                  batch_wait_ms=1.0, timeout=5.0, max_upload_mb=1.0, onnx=None)
    target, options = calls[-1]
    assert target == "ecgfm.serve.app:app_from_env" and options["workers"] == 3 and options["factory"]
    import os

    assert os.environ["ECGFM_SERVE_MODEL"] == str(model_dir)


# -- bad input ---------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ecg_json = {"fs": 500, "leads": ["I", "II"], "samples": [[0.0] * 600, [0.0] * 600]}
BAD_REQUESTS = {
    "unknown format": (dict(files={"file": ("x.hea.bin", b"\x00\x01garbage" * 50)}), 415, "matches no supported"),
    "text that is not an ECG": (dict(files={"file": ("a.csv", b"hello, world\nfoo, bar\n")}), 415, "a.csv"),
    "signal file without header": (dict(files={"file": ("00351_hr.dat", (PTBXL / "00351_hr.dat").read_bytes())}), 422, "without its header"),
    "header without signal file": (dict(files={"file": ("00351_hr.hea", (PTBXL / "00351_hr.hea").read_bytes())}), 422, "00351_hr"),
    "truncated signal file": (dict(files=[("file", ("00351_hr.hea", (PTBXL / "00351_hr.hea").read_bytes())),
                                          ("file", ("00351_hr.dat", (PTBXL / "00351_hr.dat").read_bytes()[:999]))]), 422, "00351_hr"),
    "header naming a file outside": (dict(files={"file": ("evil.hea", b"evil 1 500 5000\n../../../etc/passwd 16 200 16 0 0 0 0 I\n")}),
                                     422, "outside the upload"),
    "corrupt zip": (dict(files={"file": ("r.zip", b"PK\x03\x04" + b"\x00" * 64)}), 422, "r.zip"),
    "zip of nothing": (dict(files={"file": ("r.zip", _zip({"readme/": b""}))}), 400, "no ECG record"),
    "zip bomb": (dict(files={"file": ("bomb.zip", _zip({"a.csv": b"0" * 20_000_000}))}), 413, "unpacks to more"),
    "two records": (dict(files=wfdb_files("00003_hr") + wfdb_files("00257_hr")), 400, "/v1/profile/batch"),
    "duplicate names": (dict(files=[("file", ("a.hea", b"x")), ("file", ("a.hea", b"y"))]), 400, "two files"),
    "no file field": (dict(content=b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b--\r\n',
                           headers={"content-type": "multipart/form-data; boundary=b"}), 400, "no file"),
    "form instead of upload": (dict(data={"note": "hello"}), 415, "x-www-form-urlencoded"),
    "empty body": (dict(content=b"", headers={"content-type": "application/json"}), 400, "empty"),
    "wrong content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "text/plain"),
    "broken multipart": (dict(content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}), 400, ""),
    "malformed json": (dict(content=b'{"samples": [[1, 2', headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "json not an object": (dict(json=[1, 2, 3]), 422, ""),
    "NaN samples": (dict(content=b'{"fs": 500, "leads": ["I"], "samples": [[1.0, NaN, 2.0]]}',
                         headers={"content-type": "application/json"}), 422, "NaN"),
    "ragged rows": (dict(json={**ecg_json, "samples": [[0.0] * 600, [0.0] * 599]}), 422, "different lengths"),
    "transposed array": (dict(json={**ecg_json, "samples": [[0.0, 0.0]] * 600}), 422, "[leads][samples]"),
    "absurd rate": (dict(json={**ecg_json, "fs": 1e9}), 422, "plausible range"),
    "zero rate": (dict(json={**ecg_json, "fs": 0}), 422, "plausible range"),
    "unknown lead": (dict(json={**ecg_json, "leads": ["I", "V7x"]}), 422, "V7x"),
    "empty samples": (dict(json={**ecg_json, "samples": [], "leads": []}), 422, "empty"),
    "unknown field": (dict(json={**ecg_json, "gain": 3}), 422, "gain"),
    "wrong unit": (dict(json={**ecg_json, "units": "furlongs"}), 422, "units"),
    "absurd values": (dict(json={**ecg_json, "samples": [[1e30] * 600, [0.0] * 600]}), 422, "not an ECG"),
    "bad query": (dict(files=wfdb_files(), params={"saliency": -1}), 422, "saliency"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx(client, case) -> None:
    kwargs, status, words = BAD_REQUESTS[case]
    response = client.post("/v1/profile", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and words in body["detail"]
    assert "/tmp/" not in body["detail"] and "ecgfm-upload" not in body["detail"]


def test_the_service_survives_bad_input(client, expected) -> None:
    for kwargs, _, _ in BAD_REQUESTS.values():
        client.post("/v1/profile", **kwargs)
    assert client.get("/v1/health").json()["status"] == "ok"
    assert_close(probabilities(client.post("/v1/profile", files=wfdb_files()).json()), expected["00351_hr"])


def test_oversize_bodies_get_413_before_and_while_reading(model) -> None:
    app = create_app(model, max_upload_bytes=100_000, warm_up=False)
    with TestClient(app) as small:
        declared = small.post("/v1/profile", files={"file": ("big.csv", b"1,2\n" * 50_000)})
        assert declared.status_code == 413 and "at most 100,000 bytes" in declared.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced on the bytes that arrive
            for _ in range(50):
                yield b"0" * 10_000

        streamed = small.post("/v1/profile", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and "more than" in streamed.json()["detail"]


def test_safe_names_keep_suffixes_and_stay_in_the_folder() -> None:
    assert safe_name("../../etc/passwd", 0) == "passwd"
    assert safe_name("C:\\Users\\x\\00351_hr.hea", 0) == "00351_hr.hea"
    assert safe_name("..", 3) == "upload3" and safe_name(None, 1) == "upload1"
    assert safe_name("a b;rm -rf.xml", 0) == "a_b_rm_-rf.xml"
    assert safe_name("x" * 300 + ".hea", 0).endswith(".hea") and len(safe_name("x" * 300 + ".hea", 0)) <= 120


def test_slow_clients_get_408(model) -> None:
    app = create_app(model, limits=ServiceLimits(timeout_s=0.3), warm_up=False)

    async def run() -> tuple[int, dict]:
        sent: list[dict] = []
        chunks = [b'{"fs": 500, ']

        async def receive() -> dict:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": True}
            await asyncio.sleep(10)  # the client stalls
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/profile", "raw_path": b"/v1/profile", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json"), (b"content-length", b"5000")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        started = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), 5)
        assert time.monotonic() - started < 3
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return status, json.loads(body)

    status, body = asyncio.run(run())
    assert status == 408 and "did not arrive within 0.3 s" in body["detail"]


def test_slow_profiles_get_504_and_overload_gets_503(model) -> None:
    app = create_app(model, limits=ServiceLimits(timeout_s=0.5, max_pending=1), warm_up=False)
    service = app.state.service
    service.batcher.run = lambda x, m: time.sleep(1.5) or np.zeros((len(x), len(LABELS)), np.float32)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            first = asyncio.ensure_future(http.post("/v1/profile", files=wfdb_files()))
            await asyncio.sleep(0.1)
            second = await http.post("/v1/profile", files=wfdb_files())
            return [await first, second]

    slow, busy = sorted(asyncio.run(run()), key=lambda r: -r.status_code)
    assert slow.status_code == 504 and "did not finish within 0.5 s" in slow.json()["detail"]
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    service.close()


# -- fuzzing: no body, however odd, gets a 5xx ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
sample_bodies = st.fixed_dictionaries(
    {"samples": st.lists(st.lists(st.one_of(st.floats(), st.none(), st.integers()), max_size=40), max_size=4),
     "fs": st.one_of(st.floats(), st.integers(), st.text(max_size=4)),
     "leads": st.lists(st.sampled_from(LEADS + ["", "V7", "ii", "MLII", "x" * 30]), max_size=4)},
    optional={"units": st.sampled_from(["mV", "uV", "V", "µV", "kV", ""]), "record_id": st.text(max_size=10),
              "age": st.floats(), "sex": st.sampled_from(["M", "F", "X"])},
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def _assert_4xx_or_ok(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert body["detail"], body


@FUZZ
@given(body=st.one_of(json_values, sample_bodies))
def test_fuzz_json_bodies(client, body) -> None:
    raw = json.dumps(body, allow_nan=True).encode()
    _assert_4xx_or_ok(client.post("/v1/profile", content=raw, headers={"content-type": "application/json"}))


@FUZZ
@given(data=st.binary(max_size=3000), name=st.text(max_size=30),
       prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY", b"<?xml version='1.0'?><AnnotatedECG>",
                               b"0       ", b"x 12 500 5000\n", b"I,II\n1,2\n"]),
       endpoint=st.sampled_from(["/v1/profile", "/v1/profile/batch"]))
def test_fuzz_uploads(client, data, name, prefix, endpoint) -> None:
    _assert_4xx_or_ok(client.post(endpoint, files={"file": (name, prefix + data)}))


@FUZZ
@given(data=st.binary(max_size=500), content_type=st.sampled_from(
    ["multipart/form-data", "multipart/form-data; boundary=abc", "application/json", "text/plain", "",
     "application/x-www-form-urlencoded", "multipart/form-data; boundary="]),
       query=st.dictionaries(st.sampled_from(["plot", "saliency", "x"]), st.text(max_size=5), max_size=2))
def test_fuzz_raw_bodies(client, data, content_type, query) -> None:
    _assert_4xx_or_ok(client.post("/v1/profile", content=data, params=query,
                                  headers={"content-type": content_type} if content_type else {}))
