"""The web chat page, in a real browser, against the real pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def http_url(pipeline: Pipeline, index: int = 0) -> str:
    return pipeline.gateway_urls[index].replace("ws://", "http://") + "/"


def test_a_user_chats_and_gets_replies_after_reconnecting(
    pipeline: Pipeline, browser: Any
) -> None:
    page = browser.new_page()
    page.goto(http_url(pipeline))
    page.wait_for_selector("#status:has-text('connected')")

    page.fill("#text", "hello")
    page.press("#text", "Enter")
    page.wait_for_selector(".msg.bot")
    assert page.locator(".msg.user").first.inner_text() == "hello"
    page.wait_for_selector(".msg.user:not(.pending)")  # acked

    # A reload reconnects with the same conversation and last seen seq:
    # nothing is replayed twice, and the conversation goes on.
    page.reload()
    page.wait_for_selector("#status:has-text('connected')")
    page.fill("#text", "thanks")
    page.press("#text", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.bot').length >= 1")
    page.wait_for_timeout(500)
    bot = page.locator(".msg.bot")
    assert bot.count() == 1  # only the new reply on the fresh page
    assert bot.first.get_attribute("data-seq") == "2"
    page.close()


def test_an_error_frame_is_shown_and_the_page_stays_usable(
    pipeline: Pipeline, browser: Any
) -> None:
    page = browser.new_page()
    page.goto(http_url(pipeline, 1))
    page.wait_for_selector("#status:has-text('connected')")
    page.evaluate("document.getElementById('text').removeAttribute('maxlength')")
    page.fill("#text", "x" * (pipeline.settings.max_text_bytes + 10))
    page.press("#text", "Enter")
    page.wait_for_selector(".msg.error")
    page.fill("#text", "hi")
    page.press("#text", "Enter")
    page.wait_for_selector(".msg.bot")
    page.close()
