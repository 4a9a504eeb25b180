"""DNS rebinding: a page served under another name that resolves to 127.0.0.1 shows nothing
of the runs; localhost, 127.0.0.1, ::1 and the configured address are served."""
import shutil

import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, AppServer, require_browser, wait_idle
from pages.common import allowed_host


@pytest.mark.parametrize("host, address, ok", [
    ("localhost:8501", "localhost", True), ("127.0.0.1:8501", "localhost", True),
    ("[::1]:8501", "localhost", True), ("LOCALHOST", "localhost", True),
    ("rebind.example:8501", "localhost", False), ("localhost.rebind.example", "localhost", False),
    ("127.0.0.1.nip.io:8501", "localhost", False), ("", "localhost", False),
    ("lab-box:8501", "lab-box", True), ("other:8501", "lab-box", False),
    ("192.168.1.20:8501", "0.0.0.0", True), (None, "localhost", True),
])
def test_only_this_machines_names_are_served(host, address, ok):
    assert allowed_host(host, address) is ok


@pytest.mark.browser
def test_a_rebound_name_gets_a_refusal_and_localhost_the_app(tiny_runs_master, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs_master[0], runs)
    server = AppServer(runs, tmp_path / "data", tmp_path / "streamlit.log").start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.example 127.0.0.1"])
            page = browser.new_page()
            page.goto(f"http://rebind.example:{server.port}/")
            wait_idle(page)
            body = page.locator('[data-testid="stMain"]').inner_text()
            assert "Refused: this dashboard is served as localhost" in body
            assert "rebind.example" in body and str(runs) not in page.content()
            assert "Runs directory" not in page.content()
            page.goto(f"{server.url}/")
            wait_idle(page)
            page.get_by_role("heading", name="Data", level=1).wait_for()
            assert "Refused" not in page.locator('[data-testid="stMain"]').inner_text()
            browser.close()
    finally:
        server.stop()
