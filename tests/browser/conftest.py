"""Browser tests drive the web chat page in headless Chromium (Debian's package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module. Playwright's sync API runs its own event loop in this
    thread while it is open, so it must close before any asyncio test runs."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `apt-get install chromium` (CI does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


# The browser tests run against the same pipeline as the end-to-end tests.
from tests.e2e.conftest import demo_index, demo_model, docker_infra, pipeline  # noqa: E402

__all__ = ["browser", "demo_index", "demo_model", "docker_infra", "pipeline"]
