"""Redis key layout and settings parsing."""

from __future__ import annotations

import pytest

from parley.errors import ConfigError
from parley.settings import Settings, parse_bool
from streams.keys import ConversationKeys, InvalidIdError


def test_keys_share_one_hash_tag() -> None:
    keys = ConversationKeys("t1", "c42")
    assert keys.session == "parley:{t1:c42}:session"
    assert {k.split("}")[0] for k in keys.all()} == {"parley:{t1:c42"}


@pytest.mark.parametrize("bad", ["", "a}b", "a{b", "white space", "x" * 129, "ünï"])
def test_ids_that_would_break_the_hash_tag_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        ConversationKeys("t1", bad)


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("0", False),
                                        ("false", False), ("off", False)])
def test_booleans_are_parsed_explicitly(raw: str, value: bool) -> None:
    assert parse_bool(raw) is value


def test_settings_read_the_environment() -> None:
    s = Settings.from_env({"PARLEY_CHAT_PARTITIONS": "4", "PARLEY_LOG_JSON": "0"})
    assert s.chat_partitions == 4 and s.log_json is False
    assert s.topic("chat.inbound") == "chat.inbound"


@pytest.mark.parametrize("env", [{"PARLEY_CHAT_PARTITIONS": "twelve"},
                                 {"PARLEY_LOG_JSON": "maybe"}])
def test_malformed_settings_fail_loudly_with_the_variable_name(env: dict[str, str]) -> None:
    name = next(iter(env))
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)
