"""`parley up` restarts a crashed gateway or worker with backoff, and gives up on a crash loop."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from parley.stack import ChildProcess
from parley.supervisor import CrashHistory, RestartPolicy, Supervisor, describe_exit


def test_the_pause_doubles_from_the_first_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay_s=1, max_delay_s=10)
    assert [policy.delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("kwargs", [
    {"first_delay_s": 0}, {"first_delay_s": 5, "max_delay_s": 2}, {"max_crashes": 0},
    {"window_s": 0},
])
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"restart delays|give up after"):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_crash_loop_is_given_up_on_after_max_crashes_within_the_window() -> None:
    history = CrashHistory(RestartPolicy(first_delay_s=1, max_delay_s=30, max_crashes=4,
                                         window_s=60))
    assert [history.crashed(t) for t in (0, 2, 5, 10)] == [1, 2, 4, None]
    assert history.restarts == 3


def test_crashes_older_than_the_window_are_forgotten_and_the_pause_starts_over() -> None:
    history = CrashHistory(RestartPolicy(max_crashes=3, window_s=60))
    assert history.crashed(0) == 1 and history.crashed(30) == 2
    assert history.crashed(100) == 1  # the crashes at 0 and 30 are out of the window
    assert history.crashed(130) == 2
    assert history.crashed(150) is None  # 100, 130, 150: three within 60 s
    assert history.restarts == 4


def test_an_exit_reads_as_a_code_or_a_signal() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(0) == "exited with code 0"


class FakePopen:
    def __init__(self) -> None:
        self.returncode: int | None = None
        self.pid = 4242

    def poll(self) -> int | None:
        return self.returncode


class FakeStack:
    def __init__(self, tmp_path: Path) -> None:
        self.children = [ChildProcess(name, FakePopen(), "http://x/readyz",  # type: ignore[arg-type]
                                      tmp_path / f"{name}.log")
                         for name in ("gateway-8080", "worker-8081")]
        self.respawned: list[str] = []

    def respawn(self, child: ChildProcess) -> None:
        self.respawned.append(child.name)
        child.popen = FakePopen()  # type: ignore[assignment]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def supervised(tmp_path: Path, **policy: Any) -> tuple[FakeStack, Supervisor, Clock, list[str]]:
    stack, clock, said = FakeStack(tmp_path), Clock(), []
    supervisor = Supervisor(stack, RestartPolicy(**policy), say=said.append,  # type: ignore[arg-type]
                            clock=clock)
    return stack, supervisor, clock, said


def test_a_crashed_worker_is_restarted_after_the_pause_and_the_others_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, supervisor, clock, said = supervised(tmp_path)
    gateway, worker = stack.children
    monkeypatch.setattr(ChildProcess, "ready", lambda self: True)
    assert supervisor.check() is None and said == []

    worker.popen.returncode = -signal.SIGKILL  # type: ignore[misc]
    assert supervisor.check() is None
    assert said == ["worker-8081 was killed by SIGKILL; restarting in 1s (restart 1)"]
    clock.now = 0.5
    assert supervisor.check() is None and stack.respawned == []  # still pausing
    clock.now = 1.0
    assert supervisor.check() is None and stack.respawned == ["worker-8081"]
    assert supervisor.check() is None
    assert said[-1] == "worker-8081 is ready again"

    worker.popen.returncode = 1  # type: ignore[misc]
    clock.now = 5.0
    supervisor.check()
    assert said[-1] == "worker-8081 exited with code 1; restarting in 2s (restart 2)"
    assert gateway.alive()


def test_a_process_that_keeps_crashing_makes_it_give_up_naming_it_and_its_log(
        tmp_path: Path) -> None:
    stack, supervisor, clock, _ = supervised(tmp_path, max_crashes=3, window_s=60)
    gateway = stack.children[0]
    for t in (0.0, 3.0):
        clock.now = t
        gateway.popen.returncode = 1  # type: ignore[misc]
        assert supervisor.check() is None
        clock.now = t + 2.0
        assert supervisor.check() is None  # restarted
    assert stack.respawned == ["gateway-8080", "gateway-8080"]
    gateway.popen.returncode = 1  # type: ignore[misc]
    clock.now = 10.0
    gave_up = supervisor.check()
    assert gave_up is not None
    assert gave_up.startswith("gateway-8080 exited with code 1; it crashed 3 times within 60s")
    assert str(gateway.log_path) in gave_up
