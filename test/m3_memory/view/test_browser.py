"""``m3 view`` in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven
by selenium) on the memory built from the synthetic scan. Skips only when Chromium or its driver
is not installed (``.ci/run`` installs them with apt)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from m3_memory.synth import SynthConfig, SyntheticScene

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
TARGET = re.compile(r"target \[(-?[\d.]+), (-?[\d.]+), (-?[\d.]+)\] m")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def viewer(built_memory, tmp_path):
    """``m3 view`` on the built memory at a free localhost port: (url, save folder)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    log = open(tmp_path / "view.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "m3_memory.cli", "view", str(built_memory[0]), "--port", str(port),
                             "--out", str(tmp_path / "saved")], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        def started():
            assert proc.poll() is None, (tmp_path / "view.log").read_text()
            return re.search(r"m3 view: (http://\S+)", (tmp_path / "view.log").read_text())

        url = wait_for(started, 240, "m3 view to serve").group(1)
        assert url == f"http://127.0.0.1:{port}"  # localhost by default
        yield url, tmp_path / "saved"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=30) == 130  # Ctrl-C: the viewer stops with the interrupted code
        finally:
            proc.kill()
            log.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
def test_query_render_and_save_in_headless_chromium(viewer, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, saved = viewer
    duck = SyntheticScene(SynthConfig(width=160, height=120, n_frames=10)).object("yellow bath duck")  # as `synth`
    centre = np.concatenate([np.asarray(p.mesh.sample_points_uniformly(5000).points) for p in duck.parts]).mean(0)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(url)
        body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
        box = wait_for(lambda: driver.find_elements(By.XPATH, "//label[normalize-space()='query']/following::input[1]"),
                       120, "the query box")[0]
        box.click()
        box.send_keys("yellow bath duck", Keys.ENTER)
        found = wait_for(lambda: TARGET.search(body()) or "nothing relevant" in body(), 180, "the query's report")
        assert found is not True, body()
        target = np.array([float(v) for v in found.groups()])
        assert np.linalg.norm(target - centre) < 0.03, (target, centre)  # the duck is ~6 cm across
        time.sleep(2)  # the splats' new colours reach the canvas
        assert driver.save_screenshot(str(tmp_path / "m3_view_duck.png"))  # the test artefact
        blobs = lambda: [i for i in driver.find_elements(By.TAG_NAME, "img")  # noqa: E731 - the GUI's image panels
                         if (i.get_attribute("src") or "").startswith("blob:")]
        before = len(blobs())  # the trace panel
        assert before >= 1 and "trace of the target" in body()
        buttons = {b.text.strip(): b for b in driver.find_elements(By.TAG_NAME, "button")}
        buttons["render from here"].click()
        wait_for(lambda: len(blobs()) > before and "render from here" in body().split("save", 1)[-1], 120,
                 "the rendered image panel")
        panel = blobs()[-1]
        assert panel.size["width"] > 100 and panel.size["height"] > 30
        buttons["save"].click()
        wait_for(lambda: "saved " in body(), 60, "the save report")
        assert sorted(p.name for p in saved.glob("*.png")) == ["heatmap.png", "render.png", "trace.png"]
        driver.save_screenshot(str(tmp_path / "m3_view_render.png"))
    finally:
        driver.quit()
