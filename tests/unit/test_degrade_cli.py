"""``parley degrade``: bad input is refused with a one-line error before anything is
changed (the Redis Cluster is never reached: the nodes given here do not exist)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from parley.cli import main
from parley.degrade import describe
from streams.degradation import Forced, Level, Snapshot

NOWHERE = {"PARLEY_REDIS_NODES": "127.0.0.1:1"}


@pytest.mark.parametrize(("args", "says"), [
    (["--tenant", "acme", "--level", "5"], "5 is not in the range 1<=x<=4"),
    (["--tenant", "acme", "--level", "two"], "'two' is not a valid integer"),
    (["--level", "3"], "--level and --auto need --tenant"),
    (["--auto"], "--level and --auto need --tenant"),
    (["--tenant", "acme", "--level", "3", "--auto"], "give --level or --auto, not both"),
    (["--tenant", "acme", "--reason", "why"], "--reason goes with --level"),
    (["--tenant", "no such/tenant", "--level", "4"], "invalid tenant id"),
])
def test_bad_input_is_refused_with_a_clear_error(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["degrade", *args], env=NOWHERE)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_cluster_is_one_line_not_a_traceback() -> None:
    result = CliRunner().invoke(main, ["degrade", "--tenant", "acme", "--level", "4"],
                                env={"PARLEY_REDIS_NODES": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "cannot reach the Redis Cluster" in result.output
    assert "Traceback" not in result.output


def test_the_levels_are_described_with_their_reasons() -> None:
    snapshot = Snapshot({"acme": Forced(Level.MAINTENANCE, "db upgrade")},
                        frozenset({"crm"}))
    lines = describe(snapshot)
    assert lines[0] == "acme: level 4, maintenance (messages kept), forced (db upgrade)"
    assert lines[-1].endswith(": crm")
    assert describe(snapshot, "beta")[0] == "beta: automatic"
    assert "every tenant's level is automatic" in describe(Snapshot())[0]
