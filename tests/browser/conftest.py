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


# The browser tests run against the same pipeline as the end-to-end tests. Its gateways
# run in development mode (the page may fetch /dev/token) and its `demo` tenant is a
# test tenant (tests/tenants.py) that allows any Origin.
from tests.e2e.conftest import Pipeline, demo_index, demo_model, docker_infra, pipeline  # noqa: E402
from tests.tenants import token_for  # noqa: E402

__all__ = ["browser", "chat_page_url", "demo_index", "demo_model", "docker_infra", "pipeline"]


def chat_page_url(pipeline: Pipeline, index: int = 0, user: str | None = None) -> str:
    """The chat page of gateway ``index``; with ``user``, carrying a token for that user
    of the demo tenant (``?token=``), else the page gets one from /dev/token."""
    url = pipeline.gateway_urls[index].replace("ws://", "http://") + "/"
    return url if user is None else f"{url}?token={token_for('demo', user)}"
