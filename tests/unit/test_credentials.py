"""Credentials of the infrastructure: generated once, kept private, read by every client."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from infra.redis_cluster import node_auth_config
from kernel.credentials import (
    CREDENTIALS_FILE,
    Credentials,
    ensure_credentials,
    read_credentials,
)
from kernel.errors import ConfigError
from kernel.settings import Settings
from streams.app import faust_credentials
from streams.security import (
    KafkaCredentials,
    RedisCredentials,
    aiokafka_sasl,
    bootstrap_config,
    kafka_client_config,
    kafka_credentials,
    redis_credentials,
)


def test_credentials_are_generated_once_private_and_random(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    path = tmp_path / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_credentials(tmp_path) == first  # read back, not generated again
    other = ensure_credentials(tmp_path / "elsewhere")
    assert other.kafka_password != first.kafka_password
    passwords = {first.kafka_password, first.kafka_broker_password, first.redis_password}
    assert len(passwords) == 3 and all(len(p) >= 40 for p in passwords)
    assert not list(tmp_path.glob(".credentials.json.*")), "nothing left half-written"


def test_passwords_are_never_in_a_repr(tmp_path: Path) -> None:
    credentials = ensure_credentials(tmp_path)
    settings = Settings.from_env({}, data_dir=tmp_path)
    shown = " ".join([repr(credentials), repr(settings), repr(kafka_credentials(settings)),
                      repr(redis_credentials(settings))])
    for secret in (credentials.kafka_password, credentials.kafka_broker_password,
                   credentials.redis_password):
        assert secret not in shown


def test_settings_take_the_data_dirs_credentials_unless_the_environment_gives_some(
    tmp_path: Path,
) -> None:
    kept = ensure_credentials(tmp_path)
    settings = Settings.from_env({"PARLEY_DATA_DIR": str(tmp_path)})
    assert (settings.kafka_username, settings.kafka_password) == (
        kept.kafka_username, kept.kafka_password)
    assert (settings.redis_username, settings.redis_password) == (
        kept.redis_username, kept.redis_password)
    given = Settings.from_env({"PARLEY_DATA_DIR": str(tmp_path),
                               "PARLEY_KAFKA_USERNAME": "app", "PARLEY_KAFKA_PASSWORD": "s3cret"})
    assert (given.kafka_username, given.kafka_password) == ("app", "s3cret")
    assert given.redis_password == kept.redis_password  # only what the environment gives
    assert Settings.from_env({"PARLEY_DATA_DIR": str(tmp_path / "none")}).kafka_username == ""


def test_a_user_without_a_password_is_refused_at_start_up_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PARLEY_REDIS_USERNAME": "app"})
    assert "PARLEY_REDIS_USERNAME / PARLEY_REDIS_PASSWORD" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PARLEY_KAFKA_PASSWORD": "hunter2"})
    assert "hunter2" not in str(caught.value)


def test_an_unreadable_credentials_file_says_how_to_start_over(tmp_path: Path) -> None:
    (tmp_path / CREDENTIALS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="delete the whole data dir"):
        read_credentials(tmp_path)
    (tmp_path / CREDENTIALS_FILE).write_text(json.dumps({"kafka_username": "x"}))
    with pytest.raises(ConfigError):
        read_credentials(tmp_path)


def test_a_credentials_file_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = ensure_credentials(tmp_path)
    (tmp_path / CREDENTIALS_FILE).chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_credentials(tmp_path) == credentials
    assert "readable_by_others" in caplog.text
    assert credentials.kafka_password not in caplog.text


@pytest.mark.parametrize("bad", ["", "has space", 'quote"', "comma,", "semi;", "a=b", "[x]"])
def test_values_that_would_break_a_jaas_line_or_an_acl_rule_are_refused(bad: str) -> None:
    good = Credentials.generate()
    with pytest.raises(ConfigError):
        Credentials(good.kafka_username, bad, good.kafka_broker_username,
                    good.kafka_broker_password, good.redis_username, good.redis_password)


def test_each_kafka_client_library_gets_the_same_scram_user(tmp_path: Path) -> None:
    credentials = KafkaCredentials("app", "pw")
    settings = Settings.from_env({}, data_dir=tmp_path, kafka_username="app",
                                 kafka_password="pw", kafka_bootstrap="127.0.0.1:1")
    confluent = kafka_client_config(settings, **{"group.id": "g"})
    assert confluent == {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app",
                         "sasl.password": "pw", "group.id": "g"}
    assert bootstrap_config("127.0.0.1:1", credentials) == {
        key: value for key, value in confluent.items() if key != "group.id"}
    assert aiokafka_sasl(credentials) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app", "sasl_plain_password": "pw"}
    faust = faust_credentials(credentials)
    assert faust is not None
    assert (faust.username, faust.password, faust.mechanism.value) == ("app", "pw",
                                                                       "SCRAM-SHA-512")
    # No credentials anywhere: a broker without authentication.
    assert aiokafka_sasl(None) == {} and faust_credentials(None) is None
    assert kafka_client_config(settings.replace(kafka_username="", kafka_password="")) == {
        "bootstrap.servers": "127.0.0.1:1"}


def test_a_valkey_node_disables_the_default_user_and_stores_a_hash() -> None:
    credentials = RedisCredentials("parley", "pw-123")
    lines = node_auth_config(credentials).splitlines()
    # Off, without a password; its rights kept: Valkey replays the append-only file's
    # transactions with them (without, every MULTI/EXEC was dropped at a restart).
    assert "user default off resetpass ~* &* +@all" in lines
    (user,) = [line for line in lines if line.startswith("user parley ")]
    assert "pw-123" not in user and " #" in user  # a SHA-256, not the password
    assert "masteruser parley" in lines and "masterauth pw-123" in lines  # replication
