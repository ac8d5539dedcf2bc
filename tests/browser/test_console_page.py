"""The agent console page, in a real browser (Debian's Chromium), against the real pipeline
(gateways and a worker serving the demo bot): a user asks for a person on the chat page,
the console shows the request, the agent claims it, they talk both ways, the agent
releases it with a slot and the bot answers the user again.

The user's chat page talks to the first gateway and the console is the second gateway's,
so the handoff crosses gateways as it does in production (everything goes through
Kafka and Redis Cluster, nothing through one process's memory).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import chat_page_url
from tests.e2e.conftest import Pipeline
from tests.tenants import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WAIT_MS = 30_000


def console_url(pipeline: Pipeline, index: int = -1) -> str:
    gateways = [c for c in pipeline.stack.children if c.name.startswith("gateway")]
    api_url = gateways[index].api_url
    assert api_url is not None
    return f"{api_url}console"


@pytest.fixture
def pages(browser: Any) -> Iterator[Any]:
    """Opens pages, each in a fresh context (its own sessionStorage); closes them after."""
    contexts: list[Any] = []

    def open_page(url: str) -> Any:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def bot_texts(chat: Any) -> list[str]:
    return [t.strip() for t in chat.locator(".msg.bot[data-seq] .text").all_inner_texts()]


def say(chat: Any, text: str) -> None:
    chat.fill("#text", text)
    chat.press("#text", "Enter")


def test_the_console_refuses_who_is_not_an_agent(pipeline: Pipeline, pages: Any) -> None:
    page = pages(console_url(pipeline))
    page.wait_for_selector("#status[data-state=signin]", timeout=WAIT_MS)
    assert page.locator("#signin").is_visible() and page.locator("#desk").is_hidden()

    user = token_for("demo", "u-not-an-agent")
    page.fill("#token-input", user)
    page.press("#token-input", "Tab")
    page.keyboard.press("Enter")  # the sign-in button, from the keyboard
    page.wait_for_selector("#status[data-state=forbidden]", timeout=WAIT_MS)
    assert "agent" in page.locator("#error").inner_text()
    assert page.locator("#desk").is_hidden()

    stale = token_for("demo", "ann", roles=["agent"], ttl_s=-120)
    expired = pages(f"{console_url(pipeline)}#token={stale}")
    expired.wait_for_selector("#status[data-state=signin]", timeout=WAIT_MS)
    assert "expired" in expired.locator("#error").inner_text()


def test_a_person_takes_over_from_the_bot_and_hands_back(pipeline: Pipeline,
                                                          pages: Any) -> None:
    agent = f"ann-{uuid.uuid4().hex[:4]}"
    console = pages(f"{console_url(pipeline)}?token={token_for('demo', agent, roles=['agent'])}")
    console.wait_for_selector("#status[data-state=live]", timeout=WAIT_MS)
    assert "token" not in console.url  # kept for the tab, out of the address bar
    assert agent in console.locator("#status").inner_text()

    user = f"u-{uuid.uuid4().hex[:8]}"
    chat = pages(chat_page_url(pipeline, 0, user))
    chat.wait_for_selector("#status[data-state=online]", timeout=WAIT_MS)
    say(chat, "I want to talk to a human")
    chat.wait_for_function("document.querySelectorAll('.msg.bot[data-seq]').length >= 1",
                           timeout=WAIT_MS)
    conversation = chat.evaluate("""() => {
        for (const key of Object.keys(localStorage)) {
          const saved = JSON.parse(localStorage.getItem(key) || "null");
          if (saved && saved.conversation) return saved.conversation;
        }
        return null; }""")
    assert conversation

    # the request shows up live in the console's queue, with its reason and wait time
    item = console.locator(f'#queue-waiting li[data-conversation="{conversation}"] button')
    item.wait_for(timeout=WAIT_MS)
    assert "human_handoff" in item.inner_text()
    assert re.search(r"waiting \d+s", item.inner_text())
    item.focus()
    console.keyboard.press("Enter")  # keyboard: select it
    console.wait_for_selector("#transcript li.user", timeout=WAIT_MS)
    assert "I want to talk to a human" in console.locator("#transcript").inner_text()
    assert console.locator("#held-actions").is_hidden()

    # a second agent has it open too, and sees the claim live
    rival = pages(f"{console_url(pipeline, 0)}?token={token_for('demo', 'bob', roles=['agent'])}")
    rival.wait_for_selector("#status[data-state=live]", timeout=WAIT_MS)
    rival.locator(f'#queue-waiting li[data-conversation="{conversation}"] button').click()
    assert rival.locator("#claim").is_visible()

    console.click("#claim")
    console.wait_for_selector("#held-actions:not([hidden])", timeout=WAIT_MS)
    rival.locator(f'#queue-held li[data-conversation="{conversation}"]',
                  has_text=f"held by {agent}").wait_for(timeout=WAIT_MS)
    assert f"held by {agent}" in rival.locator("#meta").inner_text()
    assert rival.locator("#claim").is_hidden() and rival.locator("#held-actions").is_hidden()
    assert console.locator(f'#queue-held li[data-conversation="{conversation}"]').count() == 1
    chat.wait_for_function(
        "[...document.querySelectorAll('.msg.bot[data-seq] .text')]"
        f".some(e => e.textContent.includes({agent!r}))", timeout=WAIT_MS)

    # agent -> user
    console.fill("#message", "Hello, I'm looking into it.")
    console.press("#message", "Enter")
    chat.wait_for_selector(".msg.bot.agent", timeout=WAIT_MS)
    assert "Hello, I'm looking into it." in chat.locator(".msg.bot.agent .text").inner_text()
    assert "Support agent" in chat.locator(".msg.bot.agent .sender").inner_text()

    # user -> agent (the bot stays silent)
    replies_before = len(bot_texts(chat))
    say(chat, "my parcel never arrived")
    # (the console's Content-Security-Policy forbids eval: locators, not wait_for_function)
    console.locator("#transcript li.user", has_text="my parcel never arrived").wait_for(
        timeout=WAIT_MS)

    console.fill("#note", "promised a refund")
    console.press("#note", "Enter")
    console.wait_for_selector("#transcript li.note", timeout=WAIT_MS)
    assert len(bot_texts(chat)) == replies_before  # nothing from the bot meanwhile

    # bad slots: a clear error, nothing sent
    console.fill("#release-slots", "order 12345")
    console.press("#release-slots", "Enter")
    assert "JSON object" in console.locator("#error").inner_text()
    assert console.locator("#held-actions").is_visible()

    console.fill("#release-slots", '{"order_id": "12345"}')
    console.press("#release-slots", "Enter")
    console.locator("#detail-title", has_text="No longer").wait_for(timeout=WAIT_MS)
    assert console.locator(f'li[data-conversation="{conversation}"]').count() == 0

    # the bot answers the user again
    chat.wait_for_function(f"document.querySelectorAll('.msg.bot[data-seq]').length >= "
                           f"{replies_before + 1}", timeout=WAIT_MS)  # utter_handoff_released
    answered = len(bot_texts(chat))
    say(chat, "hello")
    chat.wait_for_function(f"document.querySelectorAll('.msg.bot[data-seq]').length > "
                           f"{answered}", timeout=WAIT_MS)
    last = chat.locator(".msg.bot[data-seq]").last
    assert "agent" not in (last.get_attribute("class") or "")
    assert last.locator(".text").inner_text().strip()
