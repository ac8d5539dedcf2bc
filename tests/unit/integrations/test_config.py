"""integrations.yml: a working file loads with its secrets from the environment; every
problem is reported at once with its file and line; the demo bot's file is valid."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from agents.actions import ActionContext
from agents.dialogue.loader import load_bot
from agents.integrations import IntegrationConfigError, load_integrations, read_integrations
from agents.integrations.config import CONTEXT_FIELDS, validate_integrations

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"

GOOD = """\
backends:
  crm:
    base_url: ${CRM_URL:-http://127.0.0.1:9}
    auth:
      type: oauth2_client_credentials
      token_url: /oauth/token
      client_id: parley
      client_secret: ${SECRET}
      scope: crm.read
    timeout_s: 0.5
    retries: 2
    deadline_s: 2
    breaker: {failures: 3, reset_s: 5}
actions:
  order_status:
    backend: crm
    method: get
    path: /orders/{order_id}
    inputs:
      order_id: {type: string, pattern: '^\\d+$'}
      customer: {type: string, context: user_id}
    outputs:
      status: {type: string, from: order.status}
  pay:
    backend: crm
    method: POST
    path: /pay
    inputs: {amount: amount}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "integrations.yml").write_text(text, encoding="utf-8")
    return tmp_path


def test_a_good_file_loads_with_secrets_from_the_environment(tmp_path: Path) -> None:
    config = load_integrations(write(tmp_path, GOOD), {"SECRET": "s3cret-value"})
    assert config is not None
    crm = config.backends["crm"]
    assert crm.base_url == "http://127.0.0.1:9" and crm.auth is not None
    assert crm.auth.client_secret == "s3cret-value" and "s3cret" not in repr(crm.auth)
    assert (crm.timeout_s, crm.retries, crm.deadline_s, crm.breaker_failures,
            crm.breaker_reset_s) == (0.5, 2, 2.0, 3, 5.0)
    order = config.actions["order_status"]
    assert order.method == "GET" and order.idempotent and not order.writes
    assert [(f.name, f.context) for f in order.inputs] == [("order_id", ""),
                                                           ("customer", "user_id")]
    assert order.outputs[0].source == "order.status"
    pay = config.actions["pay"]
    assert pay.writes and not pay.idempotent  # a POST is retried only when declared


def test_no_file_is_no_integrations(tmp_path: Path) -> None:
    assert load_integrations(tmp_path, {}) is None


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    text = """\
backends:
  crm:
    base_url: ftp://example.com
    auth:
      type: password
      client_id: x
      client_secret: ${MISSING_SECRET}
    retries: 99
    colour: blue
actions:
  Bad Name:
    backend: crm
  lookup:
    backend: nowhere
    method: FETCH
    path: orders/{id}
    inputs:
      order: {type: text, context: password}
    errors: {500: down}
"""
    with pytest.raises(IntegrationConfigError) as caught:
        load_integrations(write(tmp_path, text), {})
    problems = "\n".join(caught.value.problems)
    expected = [
        "integrations.yml:3: backend 'crm': 'base_url' must be an http(s) URL",
        "integrations.yml:4: auth needs 'token_url'",
        "integrations.yml:5: auth 'type' must be oauth2_client_credentials",
        "integrations.yml:7: the environment variable MISSING_SECRET is not set",
        "integrations.yml:8: 'retries' must be 0 to 10",
        "integrations.yml:9: unknown key 'colour' in backend 'crm'",
        "integrations.yml:11: action name 'Bad Name'",
        "integrations.yml:14: action 'lookup': unknown backend 'nowhere'",
        "integrations.yml:15: action 'lookup': method must be one of",
        "integrations.yml:16: action 'lookup': 'path' must start with '/'",
        "integrations.yml:16: action 'lookup': the path names {id}, which is not an input",
        "integrations.yml:18: input 'order': unknown type 'text'",
        "integrations.yml:18: input 'order': unknown context 'password'",
        "integrations.yml:19: 'errors': 500 is not a 4xx status",
    ]
    for line in expected:
        assert line in problems, f"{line!r} not in:\n{problems}"
    assert str(caught.value).startswith(f"{tmp_path / 'integrations.yml'} has ")


def test_yaml_syntax_errors_have_a_line(tmp_path: Path) -> None:
    folder = write(tmp_path, "backends:\n  crm: [unclosed\n")
    _, problems = read_integrations(folder / "integrations.yml", {})
    assert problems and problems[0].line == 3 and "YAML syntax" in problems[0].message


def test_the_demo_bots_integrations_cover_its_actions() -> None:
    config = load_integrations(DEMO, {})
    assert config is not None
    bot = load_bot(DEMO)
    for name, spec in bot.actions.items():
        action = config.actions[name]
        flow_inputs = {f.name for f in action.inputs if not f.context}
        assert set(spec.inputs) <= flow_inputs, name
        assert set(spec.outputs) <= {f.name for f in action.outputs}, name
    assert all(a.idempotent for a in config.actions.values())  # the CRM dedups every write


def test_parley_validate_checks_integrations_against_actions_yml(tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    shutil.copytree(DEMO, folder)
    text = (folder / "integrations.yml").read_text()
    text = text.replace("      order_status: {type: string, from: status}",
                        "      status: {type: string, from: status}")
    text = text.replace("      recipient: string", "      recipient: string\n      memo: string")
    (folder / "integrations.yml").write_text(text)
    problems = [str(p) for p in validate_integrations(folder, load_bot(folder).actions, {})]
    assert any("'order_status': actions.yml declares output 'order_status'" in p
               for p in problems), problems
    assert any("'send_money' needs input 'memo', which actions.yml does not give" in p
               for p in problems), problems
    assert validate_integrations(DEMO, load_bot(DEMO).actions, {}) == []


def test_inputs_may_take_every_field_of_the_action_context() -> None:
    assert set(CONTEXT_FIELDS) == {f.name for f in fields(ActionContext)} - {"idempotency_key"}
