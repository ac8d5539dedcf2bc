"""Channel adapters without I/O: real Slack and Twilio payloads in, ``ChatMessage``s out;
``BotReply``s in, what each channel can show out (rich replies degraded to text)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.auth import Principal
from gateway.channels import (
    Card,
    InboundMessage,
    RichReply,
    SlackChannel,
    SmsChannel,
    WebChannel,
    chat_message,
    degrade,
    pick_choice,
    slack,
    sms,
)
from gateway.channels.base import fit_text
from gateway.channels.errors import PayloadError
from gateway.channels.web import WebMessage
from gateway.protocol import MessageFrame
from gateway.server import inbound_event
from streams.codecs import codec_for
from streams.keys import ConversationKeys, validate_id

# An Events API message event as Slack sends it (api.slack.com/events/message, with the
# envelope of api.slack.com/apis/events-api).
SLACK_EVENT: dict[str, Any] = {
    "token": "XXYYZZ",
    "team_id": "T061EG9R6",
    "api_app_id": "A0PNCHHK2",
    "event": {
        "type": "message",
        "channel": "D0PNCRP9N",
        "user": "U061F7AUR",
        "text": "where is my order?",
        "ts": "1525215129.000001",
        "event_ts": "1525215129.000001",
        "channel_type": "im",
        "client_msg_id": "a8744611-0210-4f85-9f15-5faf7fb225c8",
    },
    "type": "event_callback",
    "event_id": "Ev0PV52K21",
    "event_time": 1525215129,
    "authorizations": [{"enterprise_id": None, "team_id": "T061EG9R6", "user_id": "U0PNCHHK2",
                        "is_bot": True, "is_enterprise_install": False}],
    "is_ext_shared_channel": False,
    "event_context": "4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMDYxRUc5UjYifQ",
}

# The form Twilio posts for an incoming SMS (twilio.com/docs/messaging/guides/webhook-request).
TWILIO_FORM = [
    ("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", "SMbe794ce78f6b9fdf853d2acb76c080db"),
    ("NumMedia", "0"), ("ToCity", "SAN BRUNO"), ("FromZip", "94030"),
    ("SmsSid", "SMbe794ce78f6b9fdf853d2acb76c080db"), ("FromState", "CA"),
    ("SmsStatus", "received"), ("FromCity", "SAN BRUNO"), ("Body", "where is my order?"),
    ("FromCountry", "US"), ("To", "+16505558225"), ("ToZip", "94030"), ("NumSegments", "1"),
    ("MessageSid", "SMbe794ce78f6b9fdf853d2acb76c080db"),
    ("AccountSid", "AC00000000000000000000000000000000"), ("From", "+16505551199"),
    ("ApiVersion", "2010-04-01"),
]


def bot_reply(conversation: str, text: str = "Your order ships today.", *,
              quick_replies: tuple[str, ...] = (), sources: tuple[str, ...] = (),
              channel: str = "slack") -> dict[str, Any]:
    return {
        "event_id": "e1.r", "tenant_id": "acme", "conversation_id": conversation,
        "user_id": "u", "channel": channel, "seq": 4, "timestamp": 1, "trace_id": "e1",
        "reply_route": "gw", "payload": {
            "text": text, "in_reply_to": "e1", "client_msg_id": "Ev0PV52K21",
            "quick_replies": list(quick_replies), "sources": list(sources), "sender": "bot",
            "response": "",
        },
    }


# --- Slack in -----------------------------------------------------------------------

def test_a_slack_message_event_becomes_a_chat_message_on_its_conversation() -> None:
    event = slack.parse_event(json.dumps(SLACK_EVENT).encode())
    assert isinstance(event, slack.SlackMessage)
    message = SlackChannel("acme").normalise(event)
    assert message == InboundMessage(
        "slack", ConversationKeys("acme", "slack-T061EG9R6-D0PNCRP9N"),
        "slack-T061EG9R6-U061F7AUR", "where is my order?", "Ev0PV52K21")
    record = chat_message(message, "ev-1", 3, "gw-a", 1_700_000_000_000)
    decoded = codec_for("chat_message").decode(codec_for("chat_message").encode(record))
    assert (decoded["channel"], decoded["tenant_id"], decoded["seq"]) == ("slack", "acme", 3)
    assert decoded["payload"]["client_msg_id"] == "Ev0PV52K21"


def test_slack_escapes_are_undone_in_what_the_bot_reads() -> None:
    payload = {**SLACK_EVENT, "event": {**SLACK_EVENT["event"],
                                        "text": "is 3 &lt; 4 &amp;&amp; 5 &gt; 4? &amp;lt;"}}
    event = slack.parse_event(json.dumps(payload).encode())
    assert isinstance(event, slack.SlackMessage)
    assert SlackChannel("acme").normalise(event).text == "is 3 < 4 && 5 > 4? &lt;"


def test_a_slack_thread_is_its_own_conversation_and_replies_go_into_it() -> None:
    threaded = {**SLACK_EVENT, "event": {**SLACK_EVENT["event"], "channel": "C024BE91L",
                                         "thread_ts": "1525215000.000100"}}
    event = slack.parse_event(json.dumps(threaded).encode())
    assert isinstance(event, slack.SlackMessage)
    keys = SlackChannel("acme").normalise(event).keys
    assert keys.conversation_id == "slack-T061EG9R6-C024BE91L-1525215000.000100"
    body = SlackChannel("acme").render(bot_reply(keys.conversation_id))
    assert (body["channel"], body["thread_ts"]) == ("C024BE91L", "1525215000.000100")


def test_slack_url_verification_is_answered_with_its_challenge() -> None:
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "type": "url_verification",
                       "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    assert slack.parse_event(body.encode()) == slack.UrlVerification(
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")


@pytest.mark.parametrize("change", [
    {"bot_id": "B0PNCHHK2", "subtype": "bot_message"},  # a bot's post
    {"bot_id": "B0PNCHHK2"},  # this app's own chat.postMessage, echoed back
    {"user": "U0PNCHHK2"},  # posted as the app's bot user
    {"subtype": "message_changed"},
    {"subtype": "channel_join"},
    {"type": "reaction_added"},
], ids=["bot-message", "own-post", "own-bot-user", "edit", "join", "other-event"])
def test_slack_events_that_are_not_a_persons_message_are_ignored(change: dict[str, Any]) -> None:
    payload = {**SLACK_EVENT, "event": {**SLACK_EVENT["event"], **change}}
    assert slack.parse_event(json.dumps(payload).encode()) is None


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", json.dumps({"type": "event_callback"}).encode(),
    json.dumps({**SLACK_EVENT, "team_id": "T0/../x"}).encode(),
    json.dumps({**SLACK_EVENT, "event_id": None}).encode(),
    json.dumps({**SLACK_EVENT, "event": {**SLACK_EVENT["event"], "channel": "c 1"}}).encode(),
    json.dumps({**SLACK_EVENT, "event": {**SLACK_EVENT["event"], "text": 5}}).encode(),
    json.dumps({"type": "url_verification"}).encode(),
])
def test_malformed_slack_payloads_are_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(PayloadError) as refused:
        slack.parse_event(body)
    assert refused.value.channel == "slack" and refused.value.reason


# --- SMS in -------------------------------------------------------------------------

def test_a_twilio_sms_becomes_a_chat_message_between_the_two_numbers() -> None:
    form = sms.parse_form(urlencode(TWILIO_FORM).encode())
    assert form == TWILIO_FORM
    message = SmsChannel("acme").normalise(sms.parse_message(form))
    assert message == InboundMessage(
        "sms", ConversationKeys("acme", "sms-16505558225-16505551199"), "sms-16505551199",
        "where is my order?", "SMbe794ce78f6b9fdf853d2acb76c080db")
    assert sms.numbers(message.keys.conversation_id) == ("+16505558225", "+16505551199")


@pytest.mark.parametrize("drop_or_change", [
    {"From": "not a number"}, {"To": ""}, {"MessageSid": "x"}, {"Body": None},
])
def test_malformed_twilio_forms_are_refused(drop_or_change: dict[str, str | None]) -> None:
    changed = [(k, drop_or_change.get(k, v)) for k, v in TWILIO_FORM]
    form = [(k, v) for k, v in changed if v is not None and not (k == "SmsSid" and
                                                                  "MessageSid" in drop_or_change)]
    with pytest.raises(PayloadError):
        sms.parse_message(form)


# --- out: SMS splitting ---------------------------------------------------------------

def test_a_short_reply_is_one_sms_unnumbered() -> None:
    assert sms.split("Your order ships today.") == ["Your order ships today."]
    assert sms.split("x" * 1600) == ["x" * 1600]


@pytest.mark.parametrize("words", [400, 1000, 5000])
def test_long_replies_split_at_word_boundaries_into_numbered_messages(words: int) -> None:
    text = " ".join(f"word{i}" for i in range(words))
    parts = sms.split(text)
    assert len(parts) > 1
    assert all(len(p) <= sms.MAX_SMS_CHARS for p in parts)
    count = len(parts)
    bodies = []
    for i, part in enumerate(parts, 1):
        prefix = f"({i}/{count}) "
        assert part.startswith(prefix)
        bodies.append(part[len(prefix):])
    assert " ".join(bodies) == text  # nothing lost, no word cut
    assert all(len(p) > sms.MAX_SMS_CHARS - 20 for p in parts[:-1])  # messages are full


def test_a_word_longer_than_a_message_is_cut_inside_it() -> None:
    parts = sms.split("a " + "y" * 4000 + " b")
    assert all(len(p) <= sms.MAX_SMS_CHARS for p in parts)
    assert "".join(p.split(") ", 1)[1] for p in parts).replace(" ", "") == "a" + "y" * 4000 + "b"


def test_the_count_in_the_prefix_is_right_when_it_grows_a_digit() -> None:
    limit = 30
    text = " ".join("abcd" for _ in range(120))
    parts = sms.split(text, limit)
    assert len(parts) >= 10
    assert all(len(p) <= limit for p in parts)
    assert parts[0].startswith(f"(1/{len(parts)}) ") and parts[-1].startswith(
        f"({len(parts)}/{len(parts)}) ")


# --- out: degradation -----------------------------------------------------------------

def test_quick_replies_become_a_numbered_list_and_sources_footnotes() -> None:
    reply = RichReply("Which order?", ("The blue lamp", "The chair"),
                      sources=("returns-policy", "https://example.com/faq"))
    text = degrade(reply)
    assert text == ("Which order?\n\n1. The blue lamp\n2. The chair\n(reply with a number)"
                    "\n\n[1] returns-policy\n[2] https://example.com/faq")


def test_cards_become_text_lines_with_their_link() -> None:
    text = degrade(RichReply("Here:", cards=(Card("Blue lamp", "In stock", "https://x.io/l"),
                                             Card("Chair"))))
    assert text == "Here:\n\nBlue lamp\nIn stock\nhttps://x.io/l\n\nChair"


def test_slack_renders_mrkdwn_links_and_escapes_its_control_characters() -> None:
    reply = bot_reply("slack-T1-D2", "Is <b> & c > d?", quick_replies=("Yes",),
                      sources=("https://example.com/a?x=1&y=2",))
    body = SlackChannel("acme").render(reply)
    assert body == {"channel": "D2", "text": "Is &lt;b&gt; &amp; c &gt; d?\n\n1. Yes\n"
                    "(reply with a number)\n\n[1] <https://example.com/a?x=1&amp;y=2|[1]>"}


def test_sms_renders_degraded_text_split_into_messages() -> None:
    long = " ".join(["lorem"] * 400)
    bodies = SmsChannel("acme").render(bot_reply("sms-1555-1666", long, quick_replies=("A",),
                                                 channel="sms"))
    assert len(bodies) == 2 and bodies[-1].endswith("1. A\n(reply with a number)")


def test_a_reply_to_a_conversation_of_another_channel_is_refused() -> None:
    with pytest.raises(PayloadError):
        SlackChannel("acme").render(bot_reply("sms-1555-1666"))
    with pytest.raises(PayloadError):
        sms.numbers("slack-T1-D2")


@pytest.mark.parametrize(("text", "meant"), [
    ("2", "The chair"), (" 1. ", "The blue lamp"), ("2)", "The chair"), ("3", "3"),
    ("0", "0"), ("2 please", "2 please"), ("chair", "chair"),
])
def test_a_number_sent_back_picks_the_choice_it_numbered(text: str, meant: str) -> None:
    assert pick_choice(text, ["The blue lamp", "The chair"]) == meant


def test_overlong_text_is_cut_at_a_character_boundary() -> None:
    assert fit_text("é" * 10, 5) == "éé"
    assert fit_text("short", 5) == "short"


# --- the web channel ------------------------------------------------------------------

def test_the_web_channel_keeps_todays_frames() -> None:
    keys = ConversationKeys("acme", "c42")
    user = Principal("acme", "u1", "default", frozenset())
    message = WebChannel().normalise(WebMessage(keys, user, MessageFrame("hi", "m1")))
    assert message == InboundMessage("ws", keys, "u1", "hi", "m1")
    frame = json.loads(WebChannel().render(bot_reply("c42", quick_replies=("Yes",),
                                                     sources=("doc-1",), channel="ws")))
    assert frame["type"] == "reply" and frame["quick_replies"] == ["Yes"]
    assert frame["sources"] == ["doc-1"] and frame["in_reply_to"] == "Ev0PV52K21"


def test_channel_ids_are_valid_parley_ids() -> None:
    for value in ("slack-T061EG9R6-C024BE91L-1525215000.000100", "sms-16505558225-16505551199"):
        assert validate_id("conversation id", value) == value


def test_the_web_channel_makes_the_same_chat_message_as_the_socket_path() -> None:
    """gateway/server.py's ``inbound_event`` and the adapter agree field for field, so the
    socket path can move onto the adapter without changing a byte on the bus."""
    keys, frame = ConversationKeys("acme", "c42"), MessageFrame("hi", "m1")
    user = Principal("acme", "u1", "premium", frozenset({"vip", "beta"}))
    through_adapter = chat_message(WebChannel().normalise(WebMessage(keys, user, frame)),
                                   "ev1", 7, "gw-a", 1_700_000_000_000)
    assert through_adapter == inbound_event(keys, user, frame, "ev1", 7, "gw-a",
                                            1_700_000_000_000)
