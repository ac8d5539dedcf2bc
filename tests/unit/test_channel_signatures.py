"""Webhook signatures: Slack's v0 HMAC-SHA256 and Twilio's HMAC-SHA1, checked against the
worked examples both vendors publish, and refused when anything about them is off."""

from __future__ import annotations

import pytest

from gateway.channels import slack, sms
from gateway.channels.errors import SignatureError

# Slack's worked example ("Verifying requests from Slack").
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebho"
    b"ok-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3"
    b"97700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887"
    b"a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

# Twilio's worked example (its helper libraries' RequestValidator tests).
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [("Digits", "1234"), ("To", "+18005551212"), ("From", "+14158675309"),
                 ("Caller", "+14158675309"), ("CallSid", "CA1234567890ABCDE")]  # unsorted
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_slack_signature_matches_slacks_worked_example() -> None:
    assert slack.sign(SLACK_SECRET, SLACK_TS, SLACK_BODY) == SLACK_SIGNATURE
    slack.verify(SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, now=int(SLACK_TS) + 60)


@pytest.mark.parametrize(("secret", "timestamp", "signature", "body", "now", "reason"), [
    ("another secret", SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, 1531420618, "bad signature"),
    (SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY.replace(b"foobar", b"foobaz"),
     1531420618, "bad signature"),
    (SLACK_SECRET, "1531420619", SLACK_SIGNATURE, SLACK_BODY, 1531420618, "bad signature"),
    (SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE.upper(), SLACK_BODY, 1531420618, "bad signature"),
    (SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, 1531420618 + 301, "5 minutes"),
    (SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, 1531420618 - 301, "5 minutes"),
    (SLACK_SECRET, None, SLACK_SIGNATURE, SLACK_BODY, 1531420618, "missing"),
    (SLACK_SECRET, SLACK_TS, None, SLACK_BODY, 1531420618, "missing"),
    (SLACK_SECRET, "yesterday", SLACK_SIGNATURE, SLACK_BODY, 1531420618, "malformed"),
], ids=["wrong-secret", "tampered-body", "other-timestamp", "mangled-signature",
        "stale", "from-the-future", "no-timestamp", "no-signature", "bad-timestamp"])
def test_slack_requests_that_are_not_slacks_are_refused(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float,
    reason: str,
) -> None:
    with pytest.raises(SignatureError, match=reason) as refused:
        slack.verify(secret, timestamp, signature, body, now)
    assert SLACK_SECRET not in str(refused.value) and SLACK_SIGNATURE not in str(refused.value)


def test_a_replayed_slack_request_is_refused_once_five_minutes_have_passed() -> None:
    """A captured request verifies while fresh and never again after five minutes, even
    though its signature is genuine."""
    sent = int(SLACK_TS)
    slack.verify(SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, now=sent + 299)
    with pytest.raises(SignatureError):
        slack.verify(SLACK_SECRET, SLACK_TS, SLACK_SIGNATURE, SLACK_BODY, now=sent + 301)


def test_twilio_signature_matches_twilios_worked_example() -> None:
    assert sms.sign(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS) == TWILIO_SIGNATURE
    sms.verify(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE)


def test_twilio_repeated_parameters_are_sorted_by_value_too() -> None:
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                ("Digits", "1234"), ("Digits", "1234")]
    assert sms.sign(TWILIO_TOKEN, TWILIO_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_twilio_signature_of_a_form_body_read_from_the_wire() -> None:
    body = (b"Digits=1234&To=%2B18005551212&From=%2B14158675309&Caller=%2B14158675309"
            b"&CallSid=CA1234567890ABCDE")
    sms.verify(TWILIO_TOKEN, TWILIO_URL, sms.parse_form(body), TWILIO_SIGNATURE)


@pytest.mark.parametrize(("token", "url", "params", "signature", "reason"), [
    ("54321", TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, "bad signature"),
    (TWILIO_TOKEN, TWILIO_URL + "&baz=3", TWILIO_PARAMS, TWILIO_SIGNATURE, "bad signature"),
    (TWILIO_TOKEN, TWILIO_URL, [*TWILIO_PARAMS[:-1], ("CallSid", "CA0")], TWILIO_SIGNATURE,
     "bad signature"),
    (TWILIO_TOKEN, TWILIO_URL, [*TWILIO_PARAMS, ("Body", "")], TWILIO_SIGNATURE,
     "bad signature"),
    (TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, None, "missing"),
    (TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, "", "missing"),
], ids=["wrong-token", "other-url", "tampered-param", "added-param", "no-header", "empty"])
def test_twilio_requests_that_are_not_twilios_are_refused(
    token: str, url: str, params: list[tuple[str, str]], signature: str | None, reason: str,
) -> None:
    with pytest.raises(SignatureError, match=reason):
        sms.verify(token, url, params, signature)
