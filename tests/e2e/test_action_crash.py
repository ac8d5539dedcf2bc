"""A worker killed while an action is in flight: the effect happens once, the user hears once.

Issue 33. A user of the demo bot sends money (the ``transfer_money`` flow: amount and
recipient, then "yes" to the confirmation); the ``send_money`` action POSTs the transfer to
the reference CRM with the action request's event id as its ``Idempotency-Key``. The
worker running that call is SIGKILLed and a new one started, in two places:

* **before the CRM did it**: the CRM holds the call before handling it (``latency_ms``),
  the worker dies while it waits;
* **after the CRM did it**: the CRM moved the money and holds its answer
  (``reply_latency_ms``), the worker dies before it learns the outcome.

Either way the killed worker had not acknowledged the request on ``actions.requests``, so
the new worker runs it again with the same key, and the CRM does the transfer once
(replaying its first answer for the repeated key). What is checked, over the CRM's own
HTTP API and the user's WebSocket: one transfer, the balance lowered once, and one answer
to the "yes", the truthful one: "Done: ... reference <the CRM's one transfer>".

The same for ``open_ticket`` killed after the CRM opened the ticket: its body holds a
callback URL with a signed token, which must be the same on the new worker's run (it was
issued at the call's time, so the CRM refused the key's reuse with 422 and the user was
told "I couldn't file the ticket" about a ticket that existed: fixed, the token is issued
at the request's time, ``ActionContext.requested_at_ms``).

Not a crash: a write the CRM did but answered after the deadline is told as unconfirmed
(kind ``unknown``: it may have been done), never "nothing was done".

The demo's CRM allows one attempt 0.25 s (examples/demo/integrations.yml), too short a
window to kill a process in; this test serves a copy of the demo bot whose CRM backend is
given seconds (a CRM that takes seconds is ordinary), with the demo's flows, responses
and NLU model unchanged.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from examples import DEMO
from infra.crm.settings import CrmSettings
from parley.stack import ChildProcess, Stack
from streams.codecs import codec_for
from streams.topics import CHAT_OUTBOUND
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, read_topic, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

TENANT = "demo"  # the demo bot's tenant, whose users are CRM customers (user id = customer)
#: What the CRM holds a call (or its answer) for: longer than a worker's restart would need
#: for the held call to end first, shorter than the patient backend's timeout.
HOLD_MS = 8000


def patient_demo(folder: Path) -> Path:
    """A copy of the demo bot in ``folder`` whose CRM calls may take seconds."""
    bot = Path(shutil.copytree(DEMO.folder, folder))
    path = bot / "integrations.yml"
    config = yaml.safe_load(path.read_text())
    config["backends"]["crm"].update(timeout_s=30, connect_timeout_s=5, deadline_s=60)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return bot


@pytest.fixture
def own_pipeline(infra: Any, tmp_path: Path, demo_model: Path,
                 demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(infra, tmp_path, demo_model)
    settings = settings.replace(bot_dir=str(patient_demo(tmp_path / "bot")))
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


@dataclass
class Crm:
    """The pipeline's CRM over HTTP, as its operator (admin) and as Parley (read)."""

    http: httpx.AsyncClient
    admin: dict[str, str]
    api: dict[str, str]

    async def faults(self, **plan: Any) -> dict[str, Any]:
        response = await self.http.put("/admin/faults", json=plan, headers=self.admin)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def in_flight(self) -> int:
        return int((await self.http.get("/admin/faults", headers=self.admin)).json()[
            "in_flight"])

    async def counts(self) -> dict[str, int]:
        return dict((await self.http.get("/admin/counts", headers=self.admin)).json())

    async def transfers(self, customer: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/customers/{customer}/transfers", headers=self.api)
        assert response.status_code == 200, response.text
        return list(response.json()["transfers"])

    async def balance(self, customer: str) -> float:
        response = await self.http.get(f"/customers/{customer}/accounts", headers=self.api)
        return float(response.json()["accounts"][0]["balance"]["value"])


@asynccontextmanager
async def crm_of(pipeline: Pipeline) -> AsyncIterator[Crm]:
    settings = CrmSettings()

    async def bearer(http: httpx.AsyncClient, client_id: str, secret: str) -> dict[str, str]:
        token = (await http.post("/oauth/token", data={"grant_type": "client_credentials"},
                                 auth=(client_id, secret))).json()["access_token"]
        return {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(base_url=pipeline.stack.crm_env["CRM_URL"],
                                 timeout=15) as http:
        yield Crm(http, await bearer(http, settings.admin_id, settings.admin_secret),
                  await bearer(http, settings.client_id, settings.client_secret))


async def turn(chat: ChatClient, text: str) -> dict[str, Any]:
    await chat.send(text)
    await chat.next("ack", 30)
    return await chat.next("reply", 30)


async def until(condition: Any, within: float, what: str) -> None:
    """Poll the async ``condition`` every 50 ms until it is true; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        await asyncio.sleep(0.05)


def worker_of(stack: Stack) -> ChildProcess:
    return next(c for c in stack.children if c.name.startswith("worker") and c.alive())


async def start_worker(stack: Stack) -> ChildProcess:
    restarted = stack.start_worker(name=f"worker-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(stack.wait_ready, [restarted], 120)
    return restarted


async def confirmed_transfer(chat: ChatClient) -> None:
    """Ask for a transfer up to its confirmation ("Just to confirm: send 50 EUR to Anna?")."""
    asked = await turn(chat, "send 50 euros to Anna")
    assert asked["response"] == "utter_ask_confirm_transfer", asked
    assert "50" in asked["text"] and "Anna" in asked["text"], asked


async def the_only_answer(chat: ChatClient, client_msg_id: str) -> dict[str, Any]:
    """The reply to ``client_msg_id``, checked to be the only one the user gets."""
    reply = await chat.next("reply", 90)
    await asyncio.sleep(3)  # a second answer would come now
    extra = [chat.frames["reply"].get_nowait() for _ in range(chat.pending("reply"))]
    assert not extra, f"one answer only, got also {extra}"
    assert reply["in_reply_to"] == client_msg_id, reply
    return reply


def outbound_answers(pipeline: Pipeline, client_msg_id: str) -> set[tuple[str, int, str]]:
    """The replies to ``client_msg_id`` on ``chat.outbound`` as ``(event id, seq, text)``: a
    record written twice (a worker died between producing and committing) counts once."""
    codec = codec_for("bot_reply")
    found = set()
    for record in read_topic(pipeline.settings, CHAT_OUTBOUND):
        reply = codec.decode(record.value())
        if reply["payload"]["client_msg_id"] == client_msg_id:
            found.add((reply["event_id"], reply["seq"], reply["payload"]["text"]))
    return found


@dataclass
class Killed:
    """What :func:`kill_while_held` saw: the last message's id and its one answer, and the
    killed and the new worker."""

    client_msg_id: str
    answer: dict[str, Any]
    killed: ChildProcess
    restarted: ChildProcess


async def kill_while_held(stack: Stack, crm: Crm, chat: ChatClient, text: str,
                          fault: dict[str, int], table: str, done_at_kill: bool) -> Killed:
    """Send ``text`` (its turn calls a CRM write) with the CRM slowed by ``fault``, SIGKILL
    the worker while the call is held in the CRM (``table`` then holds one more row when
    ``done_at_kill``, else none more), start another, and take the one answer to ``text``."""
    worker, rows = worker_of(stack), (await crm.counts())[table]
    await crm.faults(**fault)
    sent = await chat.send(text)
    await chat.next("ack", 30)

    async def in_the_crm() -> bool:
        return await crm.in_flight() == 1 and \
            (await crm.counts())[table] == rows + int(done_at_kill)

    await until(in_the_crm, 30, "the call held in the CRM")
    worker.kill()  # SIGKILL: nothing is flushed, committed or said goodbye
    await crm.faults()  # calls from now on are answered at once
    assert chat.pending("reply") == 0, "nothing was answered before the kill"
    restarted = await start_worker(stack)
    return Killed(sent, await the_only_answer(chat, sent), worker, restarted)


def ran_again(killed: Killed, action: str) -> None:
    """The action ran to an end on the new worker, and not on the killed one."""
    assert "action.result" not in killed.killed.log_path.read_text()
    assert f"action={action} ok=True" in killed.restarted.log_path.read_text()


async def killed_mid_transfer(pipeline: Pipeline, fault: dict[str, int],
                              effect_done_at_kill: bool) -> list[tuple[str, str]]:
    """Confirm a transfer with the CRM slowed by ``fault``, SIGKILL the worker while its
    call is in the CRM, start another; check one transfer and one truthful answer.
    Returns the writes the CRM logged for the transfer (:func:`crm_writes`)."""
    stack, user = pipeline.stack, f"crash-{uuid.uuid4().hex[:8]}"
    async with crm_of(pipeline) as crm, \
            ChatClient(pipeline.url, tenant=TENANT, user=user) as chat:
        await confirmed_transfer(chat)
        before = await crm.balance(user)
        killed = await kill_while_held(stack, crm, chat, "yes", fault, "transfers",
                                       effect_done_at_kill)
        made = await crm.transfers(user)
        after = await crm.balance(user)

    answer = killed.answer
    assert len(made) == 1, f"one transfer, not {made}"
    assert (made[0]["recipient"], made[0]["amount"]) == ("Anna", {"value": 50.0,
                                                                   "currency": "EUR"})
    assert after == round(before - 50, 2), "the money left the account once"
    assert answer["response"] == "utter_transfer_sent", answer
    assert made[0]["reference"] in answer["text"], "the answer names the CRM's transfer"
    assert len(outbound_answers(pipeline, killed.client_msg_id)) == 1, \
        "one answer on chat.outbound too"
    ran_again(killed, "send_money")
    return crm_writes(stack, f"/customers/{user}/transfers")


def crm_writes(stack: Stack, path: str) -> list[tuple[str, str]]:
    """``(idempotency key, replayed)`` of each write the CRM logged on ``path``."""
    crm = next(c for c in stack.children if c.name == "crm")
    return re.findall(rf"crm\.write client=\S+ path={re.escape(path)} key=(\S+) status=\d+ "
                      r"replayed=(true|false)", crm.log_path.read_text())


async def test_a_worker_killed_before_the_crm_moved_the_money(own_pipeline: Pipeline) -> None:
    writes = await killed_mid_transfer(own_pipeline, {"latency_ms": HOLD_MS},
                                   effect_done_at_kill=False)
    # The reference CRM drops the killed worker's call when its hold ends (its client is
    # gone before the body was read); a CRM that handled it anyway would do it or replay
    # it under the same key: one call did it, any other was replayed.
    assert len({key for key, _ in writes}) == 1, writes
    assert [replayed for _, replayed in writes].count("false") == 1, writes


async def test_a_worker_killed_after_the_crm_moved_the_money(own_pipeline: Pipeline) -> None:
    writes = await killed_mid_transfer(own_pipeline, {"reply_latency_ms": HOLD_MS},
                                   effect_done_at_kill=True)
    # Two calls with one key: the killed worker's did it, the new worker's got its answer.
    assert len(writes) == 2 and writes[0][0] == writes[1][0], writes
    assert [replayed for _, replayed in writes] == ["false", "true"], writes


async def test_a_ticket_opened_before_the_worker_died_is_the_one_the_user_is_told_of(
        own_pipeline: Pipeline) -> None:
    """open_ticket sends a callback URL (a signed token naming the conversation): run again
    under the same key, it must send the same body, or the CRM refuses the key's reuse."""
    stack, user = own_pipeline.stack, f"crash-{uuid.uuid4().hex[:8]}"
    async with crm_of(own_pipeline) as crm, \
            ChatClient(own_pipeline.url, tenant=TENANT, user=user) as chat:
        assert (await turn(chat, "I want to make a complaint"))["response"] == \
            "utter_ask_issue_description"
        assert (await turn(chat, "the app crashes when I open my statements"))["response"] \
            == "utter_ask_email"
        killed = await kill_while_held(stack, crm, chat, "anna@example.com",
                                       {"reply_latency_ms": HOLD_MS}, "tickets", True)
        tickets = (await crm.counts())["tickets"]

    answer = killed.answer
    assert answer["response"] == "utter_ticket_opened", answer
    opened = re.search(r"T-[0-9A-F]{8}", answer["text"])
    assert opened is not None and tickets == 1, (answer, tickets)
    async with crm_of(own_pipeline) as crm:
        ticket = await crm.http.get(f"/tickets/{opened.group()}", headers=crm.api)
    assert ticket.status_code == 200 and ticket.json()["customer_id"] == user, ticket.text
    writes = crm_writes(stack, "/tickets")
    assert [replayed for _, replayed in writes] == ["false", "true"], writes
    ran_again(killed, "open_ticket")


@pytest.fixture
def demo_pipeline(infra: Any, tmp_path: Path, demo_model: Path,
                  demo_index: Path) -> Iterator[Pipeline]:
    """The demo bot as it ships: its CRM calls give up after 0.25 s (0.6 s in all)."""
    settings = make_settings(infra, tmp_path, demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


async def test_a_transfer_the_crm_did_but_answered_too_late_is_not_told_as_not_done(
        demo_pipeline: Pipeline) -> None:
    user = f"late-{uuid.uuid4().hex[:8]}"
    async with crm_of(demo_pipeline) as crm, \
            ChatClient(demo_pipeline.url, tenant=TENANT, user=user) as chat:
        await confirmed_transfer(chat)
        await crm.faults(reply_latency_ms=1000)  # done at once, answered after the deadline
        answer = await turn(chat, "yes")
        await crm.faults()
        made = await crm.transfers(user)
    assert len(made) == 1, made  # the money moved (once: the retry had the same key)
    assert answer["response"] == "utter_transfer_unconfirmed", answer
    assert "nothing was done" not in answer["text"], answer
