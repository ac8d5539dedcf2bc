"""``parley token``: the roles a minted token carries (``--role``, repeatable, and the
older ``--roles`` list)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from click.testing import CliRunner

from gateway import cli
from tests.tenants import test_tenant_config


def roles_of(monkeypatch: pytest.MonkeyPatch, *args: str) -> list[str] | None:
    monkeypatch.setattr(cli, "with_store", lambda work: test_tenant_config("t"))
    result = CliRunner().invoke(cli.token, ["--tenant", "t", "--user", "ann", *args])
    assert result.exit_code == 0, result.output
    claims: dict[str, Any] = jwt.decode(result.output.strip(),
                                        options={"verify_signature": False})
    assert claims["sub"] == "ann"
    return claims.get("roles")


def test_role_is_repeatable_and_merges_with_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    assert roles_of(monkeypatch, "--role", "bot_tester") == ["bot_tester"]
    assert roles_of(monkeypatch, "--role", "bot_tester", "--role", "agent",
                    "--roles", "agent, ops") == ["agent", "bot_tester", "ops"]


def test_no_role_means_no_roles_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    assert roles_of(monkeypatch) is None
