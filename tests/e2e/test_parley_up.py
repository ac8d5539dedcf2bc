"""`parley up`, as a new user runs it: one command, a chat URL, a reply, Ctrl-C stops all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.ports import find_free_ports, is_port_free
from tests.e2e.chat_client import ChatClient, dev_token

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]


def free_redis_base() -> int:
    """Six consecutive free ports whose cluster-bus ports (+10000) are free too."""
    for base in range(27100, 30000, 10):
        ports = [*range(base, base + 6), *range(base + 10000, base + 10006)]
        if all(is_port_free("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError("no free port range for a Redis Cluster")


def free_kafka_port() -> int:
    """A free port whose next port (the KRaft controller's) is free too."""
    for port in find_free_ports(20):
        if is_port_free("127.0.0.1", port + 1):
            return port
    raise RuntimeError("no two consecutive free ports for Kafka")


def parley_up_env(data_dir: str) -> dict[str, str]:
    """The environment of a `parley up` of its own: free ports, the demo bot."""
    kafka, (gateway, worker, api, crm) = free_kafka_port(), find_free_ports(4)
    env = {
        **os.environ,
        "PARLEY_DATA_DIR": data_dir,
        "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "PARLEY_REDIS_NODES": f"127.0.0.1:{free_redis_base()}",
        "PARLEY_GATEWAY_PORT": str(gateway),
        "PARLEY_WORKER_WEB_PORT": str(worker),
        "PARLEY_GATEWAY_API_PORT": str(api),
        "PARLEY_CRM_PORT": str(crm),
    }
    # Its own: the models and credentials of this stack (generated into its data dir), not
    # those of the test session's infrastructure.
    for name in ("PARLEY_NLU_MODEL", "PARLEY_KB_INDEX", "PARLEY_KAFKA_USERNAME",
                 "PARLEY_KAFKA_PASSWORD", "PARLEY_REDIS_USERNAME", "PARLEY_REDIS_PASSWORD"):
        env.pop(name, None)
    return env


def start_parley_up(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "parley", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def env_port(env: dict[str, str], name: str) -> int:
    return int(env[name].split(",")[0].rpartition(":")[2])


async def test_parley_up_serves_a_chat_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    # Relative, as the default (".parley") is: nothing may depend on the data dir
    # being absolute.
    env = parley_up_env(os.path.relpath(tmp_path))  # noqa: ASYNC240 (no I/O: getcwd)
    gateway = env_port(env, "PARLEY_GATEWAY_PORT")
    started = time.monotonic()
    up = start_parley_up(env)
    try:
        url = await asyncio.to_thread(wait_for_url, up)
        assert url == f"http://127.0.0.1:{gateway}/"
        # Development mode (on in `parley up`) hands out tokens for new demo users.
        token = await asyncio.to_thread(dev_token, url)
        async with ChatClient(url.replace("http://", "ws://").rstrip("/"), token=token) as chat:
            msg_id = await chat.send("hello")
            reply = await chat.next("reply")
            assert reply["in_reply_to"] == msg_id
            assert time.monotonic() - started < 120, "a new user gets a reply within two minutes"
            await chat.send("where is my order 12345")
            order = await chat.next("reply")  # looked up in the CRM that `parley up` started
        assert "12345 is shipped" in order["text"], order
        # ... and the agent console, with an agent's token of the demo tenant
        console = await asyncio.to_thread(wait_for_url, up, pattern=r"Agent console: (\S+)")
        api = env_port(env, "PARLEY_GATEWAY_API_PORT")
        page, _, fragment = console.partition("#token=")
        assert page == f"http://127.0.0.1:{api}/console" and fragment
        async with httpx.AsyncClient(timeout=20) as http:
            queue = await http.get(f"http://127.0.0.1:{api}/console/api/queue",
                                   headers={"Authorization": f"Bearer {fragment}"})
            assert (await http.get(page)).status_code == 200
        assert queue.status_code == 200, queue.text
        assert queue.json()["tenant"] == "demo"
    finally:
        up.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(up.wait, 60)
    assert code == 0
    for name in ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_GATEWAY_PORT", "PARLEY_WORKER_WEB_PORT",
                 "PARLEY_GATEWAY_API_PORT", "PARLEY_REDIS_NODES", "PARLEY_CRM_PORT"):
        port = env_port(env, name)
        assert is_port_free("127.0.0.1", port), f"port {port} still held after Ctrl-C"


def cli_token(env: dict[str, str], user: str) -> str:
    """``parley token`` for a user of the demo tenant that `parley up` created."""
    done = subprocess.run([sys.executable, "-m", "parley", "token", "--tenant", "demo",
                           "--user", user], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def wait_for_url(process: subprocess.Popen[str], timeout: float = 180,
                 pattern: str = r"Chat at (http://\S+)") -> str:
    """The first match of ``pattern``'s group in what `parley up` prints from now on."""
    deadline = time.monotonic() + timeout
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError(f"parley up printed no {pattern!r}:\n" + "".join(lines[-40:]))


async def test_a_restarted_parley_up_keeps_the_conversation(tmp_path: Path) -> None:
    """Stop `parley up` mid-conversation and start it again: Kafka and Redis kept
    everything on disk, so the conversation resumes (`last_seq`) with its history and
    its sequence numbers go on where they stopped."""
    env = parley_up_env(str(tmp_path))
    conversation = "c-kept-across-restarts"

    async def run_once(text: str, last_seq: int) -> tuple[list[dict[str, object]], dict]:
        """Start `parley up`, resume the conversation after ``last_seq``, say ``text``;
        return the replayed replies and the new reply, then Ctrl-C it."""
        up = start_parley_up(env)
        try:
            url = (await asyncio.to_thread(wait_for_url, up)).replace("http://", "ws://")
            # The conversation is its user's: the same user each time (`parley token`).
            token = await asyncio.to_thread(cli_token, env, "kept")
            async with ChatClient(url.rstrip("/"), token=token,
                                  conversation=conversation, last_seq=last_seq) as chat:
                await asyncio.sleep(1.0)  # replayed replies arrive before anything new
                replayed = [await chat.next("reply") for _ in range(chat.pending("reply"))]
                msg_id = await chat.send(text)
                reply = await chat.next("reply", timeout=60)
                assert reply["in_reply_to"] == msg_id
            return replayed, reply
        finally:
            up.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(up.wait, 60) == 0

    nothing, first = await run_once("hello", last_seq=0)
    assert nothing == [] and first["seq"] == 1
    history, second = await run_once("what is my balance", last_seq=0)
    assert [r["in_reply_to"] for r in history] == [first["in_reply_to"]], "history kept"
    assert history[0]["text"] == first["text"]
    assert second["seq"] == 2, "sequence numbers go on after the restart"
