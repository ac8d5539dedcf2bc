"""Redis key layout and settings parsing."""

from __future__ import annotations

import pytest

from kernel.errors import ConfigError
from kernel.settings import Settings, parse_bool
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


@pytest.mark.parametrize("name, raw", [
    ("PARLEY_REDIS_NODES", "redis-a"),
    ("PARLEY_REDIS_NODES", "a:7000,b"),
    ("PARLEY_REDIS_NODES", "a:7000,,b:7001"),
    ("PARLEY_KAFKA_BOOTSTRAP", "kafka:90921"),
    ("PARLEY_KAFKA_BOOTSTRAP", "kafka:0"),
    ("PARLEY_GATEWAY_PORT", "-1"),
    ("PARLEY_GATEWAY_PORT", "65536"),
    ("PARLEY_WORKER_WEB_PORT", "0"),
    ("PARLEY_GATEWAY_MAX_IN_FLIGHT", "0"),
    ("PARLEY_CHAT_PARTITIONS", "-1"),  # 0: the partitions streams/topics.toml gives
    ("PARLEY_OUTBOX_SIZE", "-5"),
    ("PARLEY_WORKER_BATCH_SIZE", "0"),
    ("PARLEY_MAX_TEXT_BYTES", "0"),
    ("PARLEY_SESSION_TTL_S", "0"),
    ("PARLEY_FETCH_MAX_WAIT_MS", "-1"),
    ("PARLEY_GATEWAY_LINGER_MS", "nan"),
    ("PARLEY_GATEWAY_BUSY_LINGER_MS", "-1"),
    ("PARLEY_GATEWAY_BUSY_RATE", "0"),
    ("PARLEY_PING_INTERVAL_S", "0"),
    ("PARLEY_PING_TIMEOUT_S", "inf"),
    ("PARLEY_GATEWAY_IN_FLIGHT_EXPIRY_S", "-1"),
])
def test_values_that_cannot_work_fail_at_start_up_with_the_variable_name(
    name: str, raw: str
) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: raw})
    assert error.value.name == name
    assert str(error.value).startswith(f"setting {name}=")


def test_a_bad_value_given_in_code_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="PARLEY_GATEWAY_MAX_IN_FLIGHT"):
        Settings().replace(gateway_max_in_flight=0)


def test_the_edges_that_work_are_accepted() -> None:
    s = Settings.from_env({
        "PARLEY_REDIS_NODES": "redis-a:7000, redis-b:7001,:7002",
        "PARLEY_KAFKA_BOOTSTRAP": "kafka:9093,kafka-2:9094",
        "PARLEY_GATEWAY_PORT": "0",
        "PARLEY_FETCH_MAX_WAIT_MS": "0",
        "PARLEY_GATEWAY_LINGER_MS": "0",
        "PARLEY_GATEWAY_BUSY_LINGER_MS": "0",
        "PARLEY_GATEWAY_BUSY_RATE": "inf",
    })
    assert s.redis_startup_nodes == [("redis-a", 7000), ("redis-b", 7001), ("127.0.0.1", 7002)]
    assert s.kafka_port == 9093  # the first address's: where an embedded broker listens
    assert s.gateway_port == 0


def test_parley_settings_shows_a_path_default_as_a_path() -> None:
    described = {env: default for env, default, _ in Settings.describe()}
    assert described["PARLEY_DATA_DIR"] == ".parley"  # not PosixPath('.parley')
    assert (described["PARLEY_GATEWAY_PORT"], described["PARLEY_LOG_LEVEL"]) == ("8080", "'INFO'")
