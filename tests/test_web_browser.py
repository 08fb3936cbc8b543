"""The web page in a real browser: Debian's chromium, headless, driven by Playwright.

The service runs under uvicorn on a free loopback port in a thread; the page uploads a bundled
PTB-XL record (its .hea and .dat together, as a user selects them), and the test waits for what
a user would look at: the ECG plot image (decoded by the browser), the ranked conditions table
with the model's probabilities, and the measurements table. A second upload of a file that is
not an ECG must show the service's message, not a broken page.

Skipped only when chromium or the playwright package is absent (CI installs both).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import EXAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'ecgfm[serve]')")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RECORD = EXAMPLES / "ptbxl" / "00351_hr"
LABELS = ("NORM", "AFIB", "IMI", "LVH", "superdiagnostic:MI")


def _tiny_model(directory: Path) -> Path:
    from ecgfm.models.heads import HeadSpec
    from ecgfm.models.portable import ModelCard, save_model
    from ecgfm.models.registry import create_encoder
    from ecgfm.preprocess import Pipeline

    torch.manual_seed(0)
    encoder = create_encoder("resnet1d18", num_outputs=len(LABELS), layers=(1, 1), widths=(8, 16),
                             stem_width=8).eval()
    return save_model(directory, encoder, head=HeadSpec("multilabel", len(LABELS), label_ids=LABELS),
                      pipeline=Pipeline.standard(fs=100, seconds=10, notch=None),
                      card=ModelCard(name="browser test model"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    from ecgfm.models.portable import load_model
    from ecgfm.serve import create_app

    model = load_model(_tiny_model(tmp_path_factory.mktemp("web") / "tiny"))
    app = create_app(model)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", model
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_upload_shows_plot_measurements_and_ranked_conditions(server, page) -> None:
    url, model = server
    page.goto(url + "/")
    page.wait_for_selector("#model-name:has-text('browser test model')")
    page.set_input_files("#file", [str(RECORD.with_suffix(".hea")), str(RECORD.with_suffix(".dat"))])

    page.wait_for_selector("#result:not([hidden])")
    assert "Profile of 00351_hr.hea" in page.inner_text("#banner")
    # The plot: a PNG the browser decoded, at the size the server rendered it.
    page.wait_for_function("document.getElementById('plot').complete && "
                           "document.getElementById('plot').naturalWidth > 500")
    assert page.get_attribute("#plot", "src").startswith("data:image/png;base64,")
    # Conditions, ranked, with the probabilities the model gives for the same file.
    rows = page.locator("#conditions tbody tr")
    names = [rows.nth(i).locator("td").nth(0).inner_text() for i in range(rows.count())]
    shown = [float(rows.nth(i).locator("td").nth(2).inner_text().rstrip("%")) for i in range(rows.count())]
    probs = dict(zip(model.labels, model.predict(str(RECORD.with_suffix(".hea")))[0]))
    catalogue_rows = [(label, p) for label, p in probs.items() if ":" not in label]
    want = sorted(catalogue_rows, key=lambda item: -item[1])
    assert names == [model.label_names[model.labels.index(label)] for label, _ in want]
    assert shown == sorted(shown, reverse=True)
    for (label, p), percent in zip(want, shown):
        assert abs(100 * p - percent) <= 0.51, (label, p, percent)
    assert page.locator("#groups tbody tr").count() == 1  # the "superdiagnostic:MI" summary
    # Measurements from the delineator: the heart rate row is filled in.
    measurements = page.inner_text("#measurements")
    assert "Heart rate" in measurements and "bpm" in measurements


def test_a_file_that_is_not_an_ecg_shows_the_services_message(server, page, tmp_path) -> None:
    url, _ = server
    page.goto(url + "/")
    bad = tmp_path / "notes.txt"
    bad.write_text("shopping list: milk, eggs\n")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    message = page.inner_text("#status")
    assert message.startswith("415") and "notes.txt" in message and "no supported ECG format" in message
    assert page.locator("#result").is_hidden()
