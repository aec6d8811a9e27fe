"""Start the studio in a subprocess on a free port, for browser tests."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from studio.serving import served_studio
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def running_studio(tmp_path: Path, timeout: float = 120.0):
    """Yield the URL of a studio served by ``app.py`` from a fresh process (one torch thread)."""
    return served_studio(tmp_path, timeout, threads="1")


@contextmanager
def browser_page(width: int = 1280, height: int = 900):
    """A Playwright page in Debian's chromium (no downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
