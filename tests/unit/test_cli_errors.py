"""Every ``parley`` subcommand reports a Parley error in one line, without a traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kernel.errors import InfraError
from parley.cli import main


@pytest.mark.parametrize("command", [
    ["gateway"], ["worker"], ["up"], ["bench", "broker"], ["infra", "status"],
])
def test_a_malformed_setting_is_one_line_and_a_non_zero_exit(command: list[str]) -> None:
    result = CliRunner().invoke(main, command, env={"PARLEY_GATEWAY_PORT": "abc"})
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception  # not the ConfigError
    assert result.output.startswith("Error: setting PARLEY_GATEWAY_PORT='abc' is invalid")
    assert len(result.output.splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_parley_error_raised_while_running_is_reported_the_same_way() -> None:
    @main.command("fail-for-test")
    def fail() -> None:
        raise InfraError("the broker did not start")

    try:
        result = CliRunner().invoke(main, ["fail-for-test"])
    finally:
        main.commands.pop("fail-for-test")
    assert (result.exit_code, result.output) == (1, "Error: the broker did not start\n")


def test_other_exceptions_are_not_hidden() -> None:
    @main.command("crash-for-test")
    def crash() -> None:
        raise RuntimeError("a bug")

    try:
        result = CliRunner().invoke(main, ["crash-for-test"])
    finally:
        main.commands.pop("crash-for-test")
    assert isinstance(result.exception, RuntimeError)
    assert not isinstance(result.exception, click.ClickException)
