"""serve.py: the API on a loopback port, and the page driven in headless Chromium (Debian's chromium + chromium-driver).

The browser test starts `python serve.py` as a user would, uploads images from data/sample (plus a bad file) through
the page's file input, and checks what a person sees: one card per file, class, top-3, heat-map, uncertain flag,
per-file error, and the CSV the download button writes. Without chromium/chromedriver it skips, except under CI
(.ci/run installs them), where a missing browser is a failure.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE
from tests.test_predict import make_checkpoint

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SHOTS = os.environ.get("BLOODCELL_SCREENSHOTS")  # a folder: keep the page's screenshots there (to look at them)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    """serve.py on a free loopback port with a fast_dev_run small-CNN checkpoint; yields the base URL."""
    base = tmp_path_factory.mktemp("serve")
    ckpt = make_checkpoint(base / "run", cache_dir, 48)
    port = free_port()
    log = open(base / "serve.log", "w")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen([sys.executable, "serve.py", f"ckpt={ckpt}", f"port={port}", "uncertain_below=0.5",
                             f"hydra.run.dir={base / 'hydra'}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"serve.py did not come up: {(base / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def post_files(url: str, files: list[tuple[str, bytes]]) -> dict:
    """multipart/form-data POST with the standard library (no extra client dependency)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def sample_files(n: int) -> list[Path]:
    return sorted(SAMPLE.rglob("*.jpg"))[:: max(1, 240 // n)][:n]


def test_api_predicts_and_reports_bad_files(server):
    good = sample_files(3)
    files = [(p.name, p.read_bytes()) for p in good] + [("empty.png", b""), ("cut.jpg", good[0].read_bytes()[:500]), ("notes.txt", b"x")]
    results = post_files(server + "api/predict", files)["results"]
    info = json.load(urllib.request.urlopen(server + "api/info"))
    assert [r["name"] for r in results] == [n for n, _ in files]
    for r in results[:3]:
        assert r["predicted"] in info["classes"] and len(r["top"]) == 3
        assert r["top"][0]["class"] == r["predicted"] and r["top"][0]["probability"] >= r["top"][1]["probability"]
        assert r["uncertain"] == (r["probability"] < 0.5)
        assert r["overlay"].startswith("data:image/png;base64,") and r["input"].startswith("data:image/png;base64,")
    assert all("error" in r and "predicted" not in r for r in results[3:])
    assert "empty" in results[3]["error"] and "truncated" in results[4]["error"] and "not an image" in results[5]["error"]


def find_browser() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (chrome, driver) if chrome and driver else None


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    found = find_browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium + chromium-driver are missing; .ci/run installs them (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    chrome, driver_path = found
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
                 "--disable-default-apps", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.downloads = downloads
    try:
        yield drv
    finally:
        drv.quit()


def shot(drv, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(Path(SHOTS) / name))


def test_page_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    good = sample_files(10)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(good[0].read_bytes()[:400])
    browser.get(server)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "classes" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in [*good, bad]))
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert len(cards) == len(good) + 1
    ok = [c for c in cards if c.get_attribute("data-status") == "ok"]
    errors = [c for c in cards if c.get_attribute("data-status") == "error"]
    assert len(ok) == len(good) and len(errors) == 1
    assert errors[0].get_attribute("data-name") == "broken.jpg" and "truncated" in errors[0].find_element(By.CLASS_NAME, "errmsg").text
    classes = json.load(urllib.request.urlopen(server + "api/info"))["classes"]
    n_uncertain = 0
    for c in ok:
        pred = c.find_element(By.CLASS_NAME, "pred")
        assert pred.get_attribute("data-class") in classes and pred.text.startswith(pred.get_attribute("data-class").replace("_", " "))
        assert len(c.find_elements(By.CSS_SELECTOR, ".top")) == 3
        img = c.find_element(By.CSS_SELECTOR, "img.overlay")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0  # the heat-map rendered
        n_uncertain += bool(c.find_elements(By.CLASS_NAME, "uncertain-badge"))
    assert n_uncertain == len(browser.find_elements(By.CSS_SELECTOR, ".card.uncertain"))
    shot(browser, "serve_results.png")

    browser.find_element(By.ID, "download-csv").click()
    target = browser.downloads / "bloodcell_predictions.csv"
    WebDriverWait(browser, 30).until(lambda d: target.exists() and target.stat().st_size > 0)
    rows = list(csv.DictReader(target.open(newline="")))
    assert [r["file"] for r in rows] == [p.name for p in good] + ["broken.jpg"]
    assert all(r["predicted_class"] in classes and r["error"] == "" for r in rows[:-1])
    assert rows[-1]["predicted_class"] == "" and "truncated" in rows[-1]["error"]
    assert sum(r["uncertain"] == "true" for r in rows) == n_uncertain
