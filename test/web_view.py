"""Load a Rerun recording in the web viewer served from the rerun-sdk wheel on localhost, in a
headless Chromium (Debian's chromium + chromium-driver, driven by Selenium), and screenshot it.

    python test/web_view.py demo_out/demo.rrd results/view/demo.png

WebGL runs on Chromium's software rasterizer (SwiftShader): no GPU, no display, no network.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WINDOW = (1500, 1100)


def missing() -> str | None:
    """Why a web-view capture cannot run here (None: it can)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            return f"{exe} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if shutil.which("rerun", path=str(Path(sys.executable).parent)) is None:
        return "the rerun CLI (rerun-sdk) is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grab(driver) -> np.ndarray:
    from io import BytesIO

    import matplotlib.image as mpimg
    return mpimg.imread(BytesIO(driver.get_screenshot_as_png()), format="png")[..., :3]


def chrome():
    """A headless Chromium (software WebGL) driven by Selenium; ``quit()`` it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
              "--ignore-gpu-blocklist", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_window_size(*WINDOW)
    return driver


def capture(rrd: Path, out: Path, settle_s: float = 4.0, timeout_s: float = 120.0) -> np.ndarray:
    """Serve ``rrd`` (``rerun --serve-web``), open it in headless Chromium, wait until the page
    stops changing (the recording is loaded and drawn), save the screenshot; returns it (H, W, 3)."""
    web, grpc = _free_port(), _free_port()
    rerun = str(Path(sys.executable).with_name("rerun"))
    server = subprocess.Popen([rerun, "--serve-web", "--bind", "127.0.0.1", "--port", str(grpc),
                               "--web-viewer-port", str(web), str(rrd)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    driver = None
    try:
        for _ in range(100):  # the viewer's HTTP server is up
            try:
                socket.create_connection(("127.0.0.1", web), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        driver = chrome()
        driver.get(f"http://127.0.0.1:{web}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{grpc}%2Fproxy")
        t0, last, still = time.monotonic(), None, 0.0
        shot = _grab(driver)
        while time.monotonic() - t0 < timeout_s:
            time.sleep(1.0)
            shot = _grab(driver)
            if last is not None and shot.shape == last.shape and np.abs(shot - last).max() < 1e-6:
                still += 1.0
                if still >= settle_s:
                    break
            else:
                still = 0.0
            last = shot
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(driver.get_screenshot_as_png())
        return shot
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    why = missing()
    if why:
        sys.exit(f"web_view: {why}")
    img = capture(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]} ({img.shape[1]}x{img.shape[0]})")
