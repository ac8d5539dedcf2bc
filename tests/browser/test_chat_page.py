"""The web chat page, in a real browser (Debian's Chromium), against the real pipeline.

Each test opens a fresh browser context (its own localStorage and sessionStorage), as a
new visitor would. The page is taken from a gateway of the running stack; the frames it
gets come from the real pipeline, except in the tests that check how the page renders
frames the demo bot does not send today (tenant branding, a custom text limit, sources
with titles and URLs; a turn whose first reply is not its last, replies without
``turn_end``, a person's reply): there Playwright stands in for the gateway's socket.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Pipeline
from tests.tenants import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPLY_WAIT_MS = 30_000


@pytest.fixture
def chat_token() -> str:
    """The token a test puts in the page's URL: a fresh user of the demo tenant per test."""
    return token_for("demo", f"browser-{uuid.uuid4().hex[:8]}")


@dataclass
class Chat:
    """A page with the chat open, and what went over its WebSockets."""

    page: Any
    context: Any
    socket_urls: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def wait_replies(self, count: int) -> None:
        self.page.wait_for_function(
            f"document.querySelectorAll('.msg.bot[data-seq]').length >= {count}",
            timeout=REPLY_WAIT_MS)

    def wait_online(self) -> None:
        self.page.wait_for_selector("#status[data-state=online]", timeout=REPLY_WAIT_MS)

    def replies_to(self, client_msg_id: str) -> list[dict[str, Any]]:
        return [f for f in self.received
                if f.get("type") == "reply" and f.get("in_reply_to") == client_msg_id]

    def messages_sent(self, client_msg_id: str) -> list[dict[str, Any]]:
        return [f for f in self.sent
                if f.get("type") == "message" and f.get("client_msg_id") == client_msg_id]


def page_url(pipeline: Pipeline, index: int = 0) -> str:
    return pipeline.gateway_urls[index].replace("ws://", "http://") + "/"


def watch(chat: Chat) -> None:
    def on_socket(ws: Any) -> None:
        chat.socket_urls.append(ws.url)
        ws.on("framesent", lambda data: chat.sent.append(json.loads(data)))
        ws.on("framereceived", lambda data: chat.received.append(json.loads(data)))
    chat.page.on("websocket", on_socket)


@pytest.fixture
def open_chat(browser: Any, pipeline: Pipeline, chat_token: str) -> Iterator[Any]:
    """Opens the page with a token in its URL, in a new context; closes them afterwards."""
    contexts: list[Any] = []

    def opener(index: int = 0, wait: bool = True) -> Chat:
        context = browser.new_context()
        contexts.append(context)
        chat = Chat(context.new_page(), context)
        watch(chat)
        chat.page.goto(page_url(pipeline, index) + f"?token={chat_token}")
        if wait:
            chat.wait_online()
        return chat

    yield opener
    for context in contexts:
        context.close()


def test_a_new_visitor_is_greeted_and_can_start_from_a_suggestion(
    open_chat: Any, chat_token: str
) -> None:
    chat = open_chat()
    page = chat.page
    greeting = page.locator(".welcome .msg.greeting")
    assert greeting.is_visible()
    assert greeting.inner_text().strip()  # the fallback greeting: the demo tenant has no branding
    suggestion = page.locator(".quick.suggestions button").first
    assert suggestion.is_enabled()
    asked = suggestion.inner_text()
    suggestion.click()
    chat.wait_replies(1)
    assert page.locator(".msg.user .text").all_inner_texts() == [asked]
    assert page.locator(".quick.suggestions button").first.is_disabled()
    # The token came from the URL: the page keeps it for the tab, out of the address bar.
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('parley.token')") == chat_token
    assert parse_qs(urlsplit(chat.socket_urls[0]).query)["token"] == [chat_token]


@dataclass
class Relay:
    """The page's socket to the real gateway, through Playwright, with the gateway's replies
    held back until the test lets them through (the reply can overtake the ack: the worker
    may answer before the broker's delivery report reaches the gateway). ``limit``, when
    set, is the ``max_text_bytes`` the page is told, so that it sends what the gateway
    refuses."""

    limit: int | None = None
    routes: list[Any] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, ws: Any) -> None:
        self.routes.append(ws)
        server = ws.connect_to_server()

        def from_server(data: str | bytes) -> None:
            frame = json.loads(data)
            if frame["type"] == "reply":
                self.held.append(frame)
                return
            if frame["type"] == "welcome" and self.limit is not None:
                frame["max_text_bytes"] = self.limit
            if frame["type"] == "error":
                self.errors.append(frame)
            ws.send(json.dumps(frame))
        server.on_message(from_server)

    def wait_turn_end(self, page: Any) -> None:
        waited = 0
        while not any(f.get("turn_end") is True for f in self.held) and waited < REPLY_WAIT_MS:
            page.wait_for_timeout(100)
            waited += 100
        assert any(f.get("turn_end") is True for f in self.held), "the gateway ended the turn"

    def release(self) -> None:
        for frame in self.held:
            self.routes[-1].send(json.dumps(frame))
        self.held.clear()


@pytest.mark.parametrize("text", [
    "hello",
    "what is an overdraft",  # waits for the knowledge agent
    "where is my order 12345",  # waits for the CRM's answer (an action)
])
def test_the_typing_indicator_shows_until_the_turn_ends(
    browser: Any, pipeline: Pipeline, chat_token: str, text: str
) -> None:
    """From a message's ack until the reply that ends its turn, on the real pipeline."""
    context = browser.new_context()
    page = context.new_page()
    relay = Relay()
    page.route_web_socket("**/ws**", relay)
    try:
        page.goto(page_url(pipeline) + f"?token={chat_token}")
        page.wait_for_selector("#status[data-state=online]")
        typing = page.locator("#typing-text")
        assert typing.is_hidden()
        page.fill("#text", text)
        page.press("#text", "Enter")
        page.wait_for_selector(".msg.user[data-state=acked]", timeout=REPLY_WAIT_MS)
        assert typing.is_visible()
        assert "typing" in typing.inner_text()
        indicator = page.locator("#typing")
        assert indicator.get_attribute("role") == "status"
        assert indicator.get_attribute("aria-live") == "polite"
        relay.wait_turn_end(page)
        assert typing.is_visible()  # the turn is over only once the page has its last reply
        relay.release()
        page.wait_for_selector(".msg.bot[data-seq]")
        page.wait_for_selector("#typing-text", state="hidden")
    finally:
        context.close()


def test_an_error_frame_ends_its_own_message_and_no_other(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    """The gateway refuses an oversized message (the page was told a larger limit, so it
    sends it): that message fails and shows no indicator; the open turn before it keeps
    its indicator until its own answer."""
    limit = pipeline.settings.max_text_bytes
    context = browser.new_context()
    page = context.new_page()
    relay = Relay(limit=limit * 2)
    page.route_web_socket("**/ws**", relay)
    try:
        page.goto(page_url(pipeline) + f"?token={chat_token}")
        page.wait_for_selector("#status[data-state=online]")
        typing = page.locator("#typing-text")
        page.fill("#text", "where is my order 12345")
        page.press("#text", "Enter")
        page.wait_for_selector(".msg.user[data-state=acked]", timeout=REPLY_WAIT_MS)
        assert typing.is_visible()
        page.fill("#text", "x" * (limit + 1))
        page.press("#text", "Enter")
        page.wait_for_selector(".msg.user.failed", timeout=REPLY_WAIT_MS)
        assert [e["code"] for e in relay.errors] == ["too_large"]
        assert "too long for the server" in page.inner_text(".msg.user.failed")
        assert typing.is_visible()  # the order's answer is still to come
        relay.wait_turn_end(page)
        relay.release()
        page.wait_for_selector(".msg.bot[data-seq]")
        page.wait_for_selector("#typing-text", state="hidden")

        page.fill("#text", "y" * (limit + 1))
        page.press("#text", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.user.failed').length === 2",
                               timeout=REPLY_WAIT_MS)
        assert typing.is_hidden()
    finally:
        context.close()


@dataclass
class FakeGateway:
    """Playwright in the gateway's place, for turns the demo bot does not make today (a
    first reply before the answer, a reply without ``turn_end``, a person's reply): it
    welcomes every socket, records the messages, and sends what the test tells it to."""

    routes: list[Any] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def __call__(self, ws: Any) -> None:
        self.routes.append(ws)
        ws.send(json.dumps({"type": "welcome", "tenant_id": "demo", "user_id": "u1",
                            "conversation_id": "c1", "gateway": "test"}))
        ws.on_message(lambda data: self.messages.append(json.loads(data)))

    def wait_message(self, page: Any, count: int) -> str:
        waited = 0
        while len(self.messages) < count and waited < REPLY_WAIT_MS:
            page.wait_for_timeout(50)
            waited += 50
        return str(self.messages[count - 1]["client_msg_id"])

    def ack(self, page: Any, msg_id: str) -> None:
        self.routes[-1].send(json.dumps({"type": "ack", "client_msg_id": msg_id,
                                         "event_id": f"e-{msg_id}", "seq": 1}))
        page.wait_for_selector(f".msg.user[data-id='{msg_id}'][data-state=acked]")

    def reply(self, page: Any, in_reply_to: str, text: str, **extra: Any) -> None:
        self.seq += 1
        self.routes[-1].send(json.dumps({
            "type": "reply", "text": text, "in_reply_to": in_reply_to,
            "event_id": f"r{self.seq}", "seq": self.seq, "sender": "bot", **extra}))
        page.wait_for_selector(f".msg.bot[data-seq='{self.seq}']")


@contextmanager
def stand_in_chat(browser: Any, pipeline: Pipeline, chat_token: str, *,
                  clock: bool = False) -> Iterator[tuple[Any, FakeGateway]]:
    """The chat page online against a stand-in gateway (``clock``: its timers under the
    test's control, installed before the page loads)."""
    context = browser.new_context()
    page = context.new_page()
    if clock:
        page.clock.install()
    gateway = FakeGateway()
    page.route_web_socket("**/ws**", gateway)
    try:
        page.goto(page_url(pipeline) + f"?token={chat_token}")
        page.wait_for_selector("#status[data-state=online]")
        yield page, gateway
    finally:
        context.close()


def send_acked(page: Any, gateway: FakeGateway, text: str, n: int) -> str:
    """Type ``text``, wait for it as the stand-in's ``n``-th message, ack it; its id."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    msg_id = gateway.wait_message(page, n)
    gateway.ack(page, msg_id)
    return msg_id


def test_the_typing_indicator_waits_for_turn_end_not_for_the_first_reply(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    # The page's timers, fast-forwarded past its 30 s timeout below.
    with stand_in_chat(browser, pipeline, chat_token, clock=True) as (page, gateway):
        typing = page.locator("#typing-text")
        first = send_acked(page, gateway, "where is my order 12345", 1)
        assert typing.is_visible()
        gateway.reply(page, first, "Let me check…")
        assert typing.is_visible()  # the answer is still to come
        gateway.reply(page, first, "It was shipped yesterday.", turn_end=True)
        assert typing.is_hidden()

        # An older gateway's replies have no turn_end: the indicator goes 30 s after the ack.
        second = send_acked(page, gateway, "and order 67890?", 2)
        gateway.reply(page, second, "It is on its way.")
        page.clock.fast_forward(20_000)
        assert typing.is_visible()
        page.clock.fast_forward(11_000)
        page.wait_for_selector("#typing-text", state="hidden")
        assert page.locator(".note").count() == 0  # quietly

        # A person took the conversation over: they answer, not the bot.
        send_acked(page, gateway, "can a person help me?", 3)
        assert typing.is_visible()
        gateway.reply(page, "", "Hi, I'm Ann from support.", sender="agent", agent_id="ann")
        assert typing.is_hidden()


def test_replies_replayed_after_a_reconnect_do_not_restart_the_typing_indicator(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    with stand_in_chat(browser, pipeline, chat_token, clock=True) as (page, gateway):
        typing = page.locator("#typing-text")
        msg_id = send_acked(page, gateway, "where is my order 12345", 1)
        assert typing.is_visible()

        # Dropped soon after the ack: the indicator resumes on the next connection, and a
        # replayed first reply does not end the turn.
        gateway.routes[-1].close()
        page.wait_for_selector("#status:not([data-state=online])")
        page.clock.fast_forward(2_000)  # past the reconnect's backoff
        page.wait_for_selector("#status[data-state=online]")
        assert len(gateway.routes) == 2
        assert typing.is_visible()
        gateway.reply(page, msg_id, "Let me check…")
        assert typing.is_visible()

        # Dropped again, and back after the indicator's time ran out: the replayed replies
        # of that turn, final or not, leave it off.
        gateway.routes[-1].close()
        page.wait_for_selector("#status:not([data-state=online])")
        page.clock.fast_forward(40_000)
        page.wait_for_selector("#status[data-state=online]")
        assert len(gateway.routes) == 3
        assert parse_qs(urlsplit(gateway.routes[-1].url).query)["last_seq"] == ["1"]
        assert typing.is_hidden()
        gateway.reply(page, msg_id, "Still looking…")
        assert typing.is_hidden()
        gateway.reply(page, msg_id, "It was shipped yesterday.", turn_end=True)
        assert typing.is_hidden()
        assert page.locator(".msg.bot[data-seq]").count() == 3


def test_a_reload_resumes_an_open_turn_and_not_an_ended_one(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    with stand_in_chat(browser, pipeline, chat_token) as (page, gateway):
        typing = page.locator("#typing-text")
        msg_id = send_acked(page, gateway, "what is an overdraft", 1)
        gateway.reply(page, msg_id, "Let me check…")
        page.reload()
        page.wait_for_selector("#status[data-state=online]")
        assert typing.is_visible()  # the answer is still to come
        gateway.reply(page, msg_id, "An overdraft is…", turn_end=True)
        assert typing.is_hidden()
        page.reload()  # well within the 30 s: an ended turn stays ended
        page.wait_for_selector("#status[data-state=online]")
        page.wait_for_selector(".msg.bot[data-seq='2']")
        page.wait_for_timeout(300)
        assert typing.is_hidden()


def test_only_the_newest_quick_replies_can_be_clicked(open_chat: Any) -> None:
    chat = open_chat()
    page = chat.page
    chat.say("hello")
    chat.wait_replies(1)
    chat.say("hi")
    chat.wait_replies(2)
    rows = page.locator(".quick[data-seq]")
    assert rows.count() == 2
    stale, newest = rows.nth(0), rows.nth(1)
    assert all(b.is_disabled() for b in stale.locator("button").all())
    assert stale.is_hidden()
    assert all(b.is_enabled() for b in newest.locator("button").all())
    stale.locator("button").first.dispatch_event("click")  # a click that reaches it anyway
    page.wait_for_timeout(300)
    assert page.locator(".msg.user").count() == 2

    choice = newest.locator("button").first
    text = choice.inner_text()
    choice.click()
    chat.wait_replies(3)
    assert page.locator(".msg.user .text").last.inner_text() == text
    assert all(b.is_disabled() for b in newest.locator("button").all())


def test_a_knowledge_answer_cites_its_source_readably(open_chat: Any) -> None:
    chat = open_chat()
    page = chat.page
    chat.say("what is an overdraft")
    chat.wait_replies(1)
    reply = page.locator(".msg.bot[data-seq]").first
    # The reply can overtake its ack (acks go as the broker confirms): take the reply.
    frame = next(f for f in reversed(chat.received) if f["type"] == "reply")
    assert frame["sources"] == ["overdraft"]
    text = reply.inner_text()
    assert "[overdraft]" not in text  # the raw id marker is gone
    cite = reply.locator("a.cite")
    assert cite.count() == 1
    target = cite.get_attribute("href")
    assert target is not None and target.startswith("#")
    listed = page.locator(target)
    assert listed.inner_text() == "What is an overdraft?"  # the document's title, not its id
    assert reply.locator(".sources-label").inner_text() == "Source"


def test_frames_decide_branding_limit_and_linked_sources(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    """What the demo bot does not send yet, the page renders all the same."""
    context = browser.new_context()
    page = context.new_page()
    sources = [{"id": "returns", "title": "Returns policy", "url": "https://shop.example/returns"},
               "https://help.example.com/faq/delivery", "faq/reset-password"]
    seen: list[dict[str, Any]] = []

    def gateway(ws: Any) -> None:
        ws.send(json.dumps({
            "type": "welcome", "tenant_id": "acme", "user_id": "u1", "conversation_id": "c1",
            "gateway": "test", "max_text_bytes": 20,
            "branding": {"name": "Acme Help", "color": "#ffd400",
                         "greeting": "Hi, I am Acme's bot.",
                         "suggestions": ["Where is my parcel?", "Returns"]},
        }))

        def on_message(data: str | bytes) -> None:
            frame = json.loads(data)
            seen.append(frame)
            ws.send(json.dumps({"type": "ack", "client_msg_id": frame["client_msg_id"],
                                "event_id": "e1", "seq": 1}))
            ws.send(json.dumps({
                "type": "reply",
                "text": "You have 30 days [returns]. See also [faq/reset-password].",
                "in_reply_to": frame["client_msg_id"], "event_id": "e1.r", "seq": 1,
                "sender": "bot", "sources": sources}))
        ws.on_message(on_message)

    page.route_web_socket("**/ws**", gateway)
    try:
        page.goto(page_url(pipeline) + f"?token={chat_token}")
        page.wait_for_selector("#status[data-state=online]")
        assert page.inner_text("#brand-name") == "Acme Help"
        assert page.title() == "Acme Help"
        assert page.inner_text(".msg.greeting") == "Hi, I am Acme's bot."
        # A light brand colour gets dark text on it, and is not used for text on white.
        assert page.evaluate("getComputedStyle(document.querySelector('header')).color") \
            == "rgb(17, 17, 17)"
        assert page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") \
            == "rgb(255, 212, 0)"
        suggestion = page.locator(".quick.suggestions button").first
        assert suggestion.evaluate("b => getComputedStyle(b).color") == "rgb(17, 17, 17)"
        page.fill("#text", "ééééééééééé")  # 11 characters, 22 bytes: over the 20-byte limit
        assert "2 bytes over" in page.inner_text("#counter")
        page.press("#text", "Enter")
        assert "22 bytes" in page.inner_text("#notice")
        assert seen == []
        page.locator(".quick.suggestions button", has_text="Returns").click()
        page.wait_for_selector(".msg.bot[data-seq='1']")
        assert [f["text"] for f in seen] == ["Returns"]
        links = page.locator(".sources a")
        assert links.nth(0).inner_text() == "Returns policy"
        assert links.nth(0).get_attribute("href") == "https://shop.example/returns"
        assert links.nth(1).get_attribute("href") == "https://help.example.com/faq/delivery"
        assert links.nth(1).inner_text() == "help.example.com/faq/delivery"
        assert page.locator(".sources li").nth(2).inner_text() == "Reset password"
        assert page.locator(".msg.bot[data-seq='1'] a.cite").count() == 2
    finally:
        context.close()


def test_over_limit_input_is_refused_with_a_reason_and_never_cut(
    open_chat: Any, pipeline: Pipeline
) -> None:
    chat = open_chat()
    page = chat.page
    limit = pipeline.settings.max_text_bytes
    over = "é" * (limit // 2 + 1)  # fewer characters than bytes: bytes are what count
    page.fill("#text", over)
    assert f"2 bytes over the {limit:,}-byte limit" in page.inner_text("#counter")
    assert page.get_attribute("#text", "aria-invalid") == "true"
    page.press("#text", "Enter")
    notice = page.locator("#notice")
    assert notice.get_attribute("role") == "alert"
    assert f"{limit + 2:,} bytes" in notice.inner_text()
    assert page.locator(".msg.user").count() == 0
    assert page.input_value("#text") == over  # kept for the user to shorten
    # At the limit exactly, the whole text goes, longer than the old 4,000-character cut.
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    assert f"0 of {limit:,} bytes left" in page.inner_text("#counter")
    page.press("#text", "Enter")
    chat.wait_replies(1)
    assert [f["text"] for f in chat.sent if f.get("type") == "message"] == [over[:-1]]
    assert page.locator(".msg.user .text").inner_text() == over[:-1]
    assert page.locator(".msg.user.failed").count() == 0


def test_a_reload_restores_the_transcript_and_goes_on(open_chat: Any) -> None:
    chat = open_chat()
    page = chat.page
    chat.say("hello")
    chat.wait_replies(1)
    before = page.locator("#log .msg").all_inner_texts()
    page.reload()
    chat.wait_online()
    assert page.locator("#log .msg").all_inner_texts() == before
    query = parse_qs(urlsplit(chat.socket_urls[-1]).query)
    assert query["last_seq"] == ["1"]
    assert query["conversation"] == [chat.received[0]["conversation_id"]]
    chat.say("thanks")
    chat.wait_replies(2)
    page.wait_for_timeout(500)
    seqs = page.locator(".msg.bot[data-seq]").evaluate_all("els => els.map(e => e.dataset.seq)")
    assert seqs == ["1", "2"]  # nothing replayed twice, the conversation went on
    assert page.locator(".msg.user .text").all_inner_texts() == ["hello", "thanks"]


def test_a_message_typed_offline_is_sent_on_reconnect_and_answered_once(open_chat: Any) -> None:
    chat = open_chat()
    page = chat.page
    chat.context.set_offline(True)
    page.wait_for_selector("#status[data-state=offline]")
    chat.say("hello")
    pending = page.locator(".msg.user.pending")
    assert pending.inner_text().endswith("Waiting to send")
    msg_id = pending.get_attribute("data-id")
    assert msg_id
    page.wait_for_timeout(500)
    assert chat.messages_sent(msg_id) == []
    chat.context.set_offline(False)
    chat.wait_replies(1)
    page.wait_for_timeout(2500)  # past the page's resend delay: nothing goes twice
    assert len(chat.messages_sent(msg_id)) == 1
    assert len(chat.replies_to(msg_id)) == 1
    assert page.locator(f".msg.bot[data-in-reply-to='{msg_id}']").count() == 1
    assert page.locator(".msg.user.pending").count() == 0


def test_a_reply_missed_while_the_socket_was_down_arrives_after_reconnecting(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    """The socket dies before its reply reaches the page; the page reconnects with
    ``last_seq`` and the gateway replays the reply, shown once."""
    context = browser.new_context()
    page = context.new_page()
    connections: list[str] = []
    dropped: list[str] = []

    def relay(ws: Any) -> None:
        connections.append(ws.url)
        server = ws.connect_to_server()

        def from_server(data: str | bytes) -> None:
            frame = json.loads(data)
            if frame["type"] == "reply" and len(connections) == 1:
                dropped.append(frame["in_reply_to"])
                ws.close()  # the page's socket dies with the reply undelivered
                return
            ws.send(data)
        server.on_message(from_server)

    page.route_web_socket("**/ws**", relay)
    try:
        page.goto(page_url(pipeline) + f"?token={chat_token}")
        page.wait_for_selector("#status[data-state=online]")
        page.fill("#text", "hello")
        page.press("#text", "Enter")
        page.wait_for_selector(".msg.bot[data-seq]", timeout=REPLY_WAIT_MS)
        page.wait_for_timeout(2500)
        assert len(dropped) == 1 and len(connections) >= 2
        assert parse_qs(urlsplit(connections[-1]).query)["last_seq"] == ["0"]
        assert page.locator(f".msg.bot[data-in-reply-to='{dropped[0]}']").count() == 1
    finally:
        context.close()


def test_the_page_works_from_the_keyboard_alone(open_chat: Any) -> None:
    chat = open_chat()
    page = chat.page
    assert page.evaluate("document.activeElement.id") == "text"
    assert page.get_by_label("Message").count() == 1
    assert page.get_by_role("log", name="Conversation").get_attribute("aria-live") == "polite"
    assert page.get_by_role("button", name="Send").is_visible()
    page.keyboard.type("hello")
    page.keyboard.press("Enter")
    chat.wait_replies(1)
    options = page.locator(".quick[data-seq='1'] button").all_inner_texts()
    assert options
    page.keyboard.press("Shift+Tab")  # from the message box back to the newest quick reply
    assert page.evaluate("document.activeElement.textContent") == options[-1]
    page.keyboard.press("Enter")
    chat.wait_replies(2)
    assert page.locator(".msg.user .text").last.inner_text() == options[-1]
    assert page.evaluate("document.activeElement.id") == "text"  # back to typing
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#text") == "line one\nline two"


def test_without_a_token_or_dev_mode_the_page_asks_to_sign_in(
    browser: Any, pipeline: Pipeline
) -> None:
    context = browser.new_context()
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    # What a gateway outside development mode answers.
    page.route("**/dev/token", lambda route: route.fulfill(status=404, body="not found\n"))
    try:
        page.goto(page_url(pipeline))
        page.wait_for_selector("#status[data-state=signin]")
        assert "Sign-in required" in page.inner_text("#status")
        assert page.locator(".note[role=alert]").is_visible()
        assert page.locator("#text").is_disabled()
        assert sockets == []
    finally:
        context.close()


def test_without_a_token_the_page_uses_a_development_token(
    browser: Any, pipeline: Pipeline, chat_token: str
) -> None:
    """``GET /dev/token`` (development mode) gives the token; what the user types while it is
    on its way is kept and sent once connected."""
    context = browser.new_context()
    page = context.new_page()
    chat = Chat(page, context)
    watch(chat)
    asked: list[Any] = []
    page.route("**/dev/token", lambda route: asked.append(route))  # answered after typing
    try:
        page.goto(page_url(pipeline))
        while not asked:
            page.wait_for_timeout(50)
        chat.say("hello")
        assert page.locator(".msg.user.pending").count() == 1
        asked[0].fulfill(status=200, content_type="application/json",
                         body=json.dumps({"token": chat_token, "tenant": "demo", "user": "u-dev"}))
        chat.wait_online()
        assert parse_qs(urlsplit(chat.socket_urls[0]).query)["token"] == [chat_token]
        chat.wait_replies(1)
        assert [f["text"] for f in chat.sent if f.get("type") == "message"] == ["hello"]
        assert page.evaluate("sessionStorage.getItem('parley.token')") == chat_token
    finally:
        context.close()
