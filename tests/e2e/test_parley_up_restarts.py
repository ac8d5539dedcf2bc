"""`parley up` restarts a worker that dies, keeps the rest up, and chat works again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.chat_client import ChatClient, dev_token
from tests.e2e.test_parley_up import parley_up_env, start_parley_up, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: pid -> command line (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def wait_for_line(process: subprocess.Popen[str], pattern: str, seen: list[str],
                  timeout: float = 120) -> re.Match[str]:
    """Read ``process``'s output until a line matches ``pattern``; every line into ``seen``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(seen[-40:]))


async def test_a_killed_worker_is_restarted_and_the_chat_goes_on(tmp_path: Path) -> None:
    env = parley_up_env(str(tmp_path))
    worker = env["PARLEY_WORKER_WEB_PORT"]
    up = start_parley_up(env)
    seen: list[str] = []
    try:
        url = await asyncio.to_thread(wait_for_url, up)
        ws_url = url.replace("http://", "ws://").rstrip("/")
        token = await asyncio.to_thread(dev_token, url)
        async with ChatClient(ws_url, token=token) as chat:
            first = await chat.send("hello")
            assert (await chat.next("reply"))["in_reply_to"] == first

            (pid,) = [p for p, cmd in children_of(up.pid).items()
                      if "parley worker" in cmd]
            infra_before = {p for p, cmd in children_of(up.pid).items() if "parley" not in cmd}
            os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(
                wait_for_line, up,
                rf"worker-{worker} was killed by SIGKILL; restarting in 1s \(restart 1\)", seen)
            await asyncio.to_thread(wait_for_line, up, rf"worker-{worker} is ready again", seen)

            # The same socket, the same gateway: the restarted worker answers.
            again = await chat.send("hello again")
            assert (await chat.next("reply", timeout=60))["in_reply_to"] == again
            (restarted,) = [p for p, cmd in children_of(up.pid).items()
                            if "parley worker" in cmd]
            assert restarted != pid
            # The broker and the Redis nodes were not touched: the same processes run.
            assert infra_before and infra_before <= set(children_of(up.pid))
        assert up.poll() is None, "parley up is still running"
    finally:
        up.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(up.wait, 60)
    assert code == 0, "".join(seen[-40:])
