"""Instructions per message of Parley's own computing, counted by valgrind.

This VM's speed drifts by up to 2x from hour to hour, so CPU times measured an
hour apart cannot tell a 5 % regression from the weather. Instruction counts
can. Valgrind's callgrind counts every instruction a thread executes, and the
same code on the same input executes the same count whatever else the machine
is doing. Its virtual CPU also offers the same instruction set on any x86-64
host with AVX2 (no AVX-512), so numpy and onnxruntime pick the same kernels.

Each workload runs in a child process under valgrind twice. Each child does
its set-up, then one warm-up round over ``messages`` messages (memos filled,
first calls paid), then one round or two. The difference between the two
counts is what one round costs: start-up, imports and warm-up cancel out. Both
children run at once, one per core.

Only the main thread is counted, which is where all of a message's work runs
(onnxruntime with one intra-op thread, the tokenizer's thread pool off).
onnxruntime keeps a thread of its own that wakes on a timer: in about one
child in four it ran 140 M instructions, about 9 % of a round of ``events``.
The cyclic garbage collector is off during the rounds (see :func:`_child`).
With both measures, four runs of one ``events`` child agreed to 0.6 M
instructions (0.02 %); the NLU workloads' children vary a little more (see
:data:`DEFAULT_MESSAGES`).

The workloads are the work a message costs wherever no I/O is involved:

* ``nlu-batch``: the NLU model, micro-batches of 64 (a busy worker).
* ``nlu-single``: the NLU model, one message at a time (a quiet worker).
* ``events``: everything else a message's trip costs in Parley's own Python,
  in the pipeline's order:
  - the gateway parses the frame and encodes the ``ChatMessage`` and the ack;
  - the NLU step decodes it and builds and encodes the ``ChatUnderstood``;
  - the dialogue step takes that event as built (the conversation agent runs
    both steps), decides the turn (the demo policy, with knowledge questions
    handed on as ``KnowledgeRequest``) and encodes the ``BotReply``;
  - the gateway decodes the reply and encodes its frame.

Left out: the broker and Redis clients, sockets and event loops (I/O, which
valgrind slows so much that the counts would say nothing). ``parley bench
worker`` measures those, in alternating pairs.

``--write FILE`` stores a run as a baseline. ``--check FILE`` compares a run
with one and fails when a workload costs more than ``tolerance`` above it
(:func:`compare`). The committed baseline is
``benchmarks/instructions_baseline.json``, and ``make bench-check`` runs the
check against it. A change that is meant to cost more rewrites the baseline in
the same commit, which puts the difference in front of the reviewer.

Run ``python -m benchmarks.instructions WORKLOAD ROUNDS MESSAGES MODEL_DIR``
for the child (the parent does this under valgrind).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from examples import DEMO  # data paths only: this module imports no product code at the top

__all__ = ["DEFAULT_MESSAGES", "WORKLOADS", "Verdict", "compare", "count_instructions",
           "environment_changes", "load_baseline", "parse_summary", "run_instructions"]

#: Messages a round. The NLU workloads' set-up varies by a few million instructions
#: from run to run (three runs of one child: 4.7 M apart), 1.2 % a message over 1,024
#: messages and half that over 2,048. Under valgrind a run of all three takes about
#: 12 minutes.
DEFAULT_MESSAGES = 2048
NLU_BATCH = 64
#: Relative dates resolve against a fixed time, so every run finds the same entities.
_REFERENCE = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
_CONVERSATIONS = 100
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)
#: Versions recorded with a run (with the NLU model's folder): a baseline made under
#: others may differ by their doing.
_PACKAGES = ("numpy", "onnxruntime", "tokenizers", "fastavro")


def parse_summary(profile: str) -> int:
    """The instruction total of one thread's callgrind profile (its ``summary:`` line)."""
    match = _SUMMARY.search(profile)
    if match is None:
        raise RuntimeError(f"no instruction total in the callgrind profile: {profile[:300]!r}")
    return int(match.group(1))


def count_instructions(workload: str, messages: int, model_dir: Path) -> dict[str, Any]:
    """Instructions per message of ``workload``: two children under valgrind, one
    round and two rounds of ``messages`` messages after the warm-up."""
    if workload not in _SETUPS:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    if messages < 1:
        raise ValueError("--messages must be at least 1")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="parley-instructions-") as tmp:
        profiles = [Path(tmp) / f"rounds-{rounds}" for rounds in (1, 2)]
        children = [
            subprocess.Popen(
                [valgrind, "--tool=callgrind", "--separate-threads=yes", "--dump-line=no",
                 f"--callgrind-out-file={profile}", f"--log-file={profile}.log",
                 sys.executable, "-m", "benchmarks.instructions",
                 workload, str(rounds), str(messages), str(model_dir)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for rounds, profile in zip((1, 2), profiles, strict=True)
        ]
        errors = [child.communicate()[1] for child in children]
        for child, error in zip(children, errors, strict=True):
            if child.returncode != 0:
                raise RuntimeError(f"the {workload} workload failed under valgrind "
                                   f"(exit {child.returncode}): {error[-1000:]}")
        # callgrind writes one profile a thread, the main thread's with the suffix -01
        totals = [parse_summary(Path(f"{profile}-01").read_text()) for profile in profiles]
    return {
        "messages": messages,
        "instructions_per_message": round((totals[1] - totals[0]) / messages),
        "totals": totals,
    }


def run_instructions(workloads: Sequence[str], messages: int,
                     model_dir: Path) -> dict[str, Any]:
    """Every workload counted, ``messages`` a round."""
    counts = {name: count_instructions(name, messages, model_dir) for name in workloads}
    return {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": _environment(model_dir),
        "workloads": counts,
    }


def _environment(model_dir: Path) -> dict[str, str]:
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    # The demo model's folder is named by the hash of its data, settings and training code.
    env = {"valgrind": version, "python": platform.python_version(),
           "machine": platform.machine(), "nlu_model": model_dir.name}
    for package in _PACKAGES:
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = "absent"
    return env


@dataclass(frozen=True)
class Verdict:
    workload: str
    baseline: int
    now: int
    change: float  # now / baseline - 1
    regressed: bool

    def line(self) -> str:
        mark = "REGRESSION" if self.regressed else "ok"
        return (f"{self.workload:<11} {self.now:>12,} instructions/msg  "
                f"baseline {self.baseline:>12,}  {self.change:+.1%}  {mark}")


def compare(result: Mapping[str, Any], baseline: Mapping[str, Any],
            tolerance: float) -> list[Verdict]:
    """A verdict for every workload in both: regressed when it costs more than
    ``tolerance`` (a fraction) above the baseline."""
    verdicts = []
    for name, count in result["workloads"].items():
        before = baseline["workloads"].get(name)
        if before is None:
            continue
        base, now = int(before["instructions_per_message"]), int(count["instructions_per_message"])
        verdicts.append(Verdict(name, base, now, now / base - 1, now > base * (1 + tolerance)))
    return verdicts


def environment_changes(result: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """What differs between the two runs' environments, as ``name: old -> new``."""
    old, new = baseline.get("environment", {}), result["environment"]
    return [f"{key}: {old.get(key)} -> {new[key]}" for key in new if old.get(key) != new[key]]


# --- the child: one workload, run under valgrind ---------------------------------
# Each workload imports the product code it runs inside its function, not at the top of
# this module: the parent (``parley bench instructions``) loads none of it, and a child
# loads only its own workload's modules, so what valgrind counts is that workload.


def _texts(messages: int) -> list[str]:
    from benchmarks.script import load_script

    script = load_script().all_texts()
    return [script[i % len(script)] for i in range(messages)]


def _nlu_batch(model_dir: Path, texts: Sequence[str]) -> Callable[[], None]:
    from agents.nlu.model import NLUModel

    model = NLUModel.load(model_dir, threads=1)

    def run() -> None:
        for i in range(0, len(texts), NLU_BATCH):
            model.understand_batch(texts[i:i + NLU_BATCH], reference_time=_REFERENCE)

    return run


def _nlu_single(model_dir: Path, texts: Sequence[str]) -> Callable[[], None]:
    from agents.nlu.model import NLUModel

    model = NLUModel.load(model_dir, threads=1)

    def run() -> None:
        for text in texts:
            model.understand(text, reference_time=_REFERENCE)

    return run


def _events(model_dir: Path, texts: Sequence[str]) -> Callable[[], None]:

    from agents.dialogue.loader import load_bot
    from agents.dialogue.manager import DialogueManager
    from agents.dialogue.sessions import Session
    from agents.dialogue.turns import Incoming, Kind, decide_turns
    from agents.nlu.agent import understood_events
    from agents.nlu.model import NLUModel
    from gateway.auth import Principal
    from gateway.protocol import (
        MessageFrame,
        ack_frame,
        encode,
        parse_client_frame,
        reply_frame,
    )
    from gateway.server import inbound_event
    from kernel.settings import Settings
    from streams.codecs import codec_for
    from streams.keys import ConversationKeys

    max_text_bytes = Settings.from_env().max_text_bytes
    inbound, understood = codec_for("chat_message"), codec_for("chat_understood")
    outbound, requests = codec_for("bot_reply"), codec_for("knowledge_request")
    manager = DialogueManager(load_bot(DEMO.folder))
    keys = [ConversationKeys("demo", f"c{c}") for c in range(_CONVERSATIONS)]
    user = Principal("demo", "u1", "default", frozenset())
    sessions = {k: Session(k) for k in keys}
    seqs = dict.fromkeys(keys, 0)
    model = NLUModel.load(model_dir, threads=1)  # its own cost is the nlu workloads'
    results = {text: model.understand(text, reference_time=_REFERENCE) for text in set(texts)}
    rounds = 0

    def run() -> None:
        nonlocal rounds
        rounds += 1
        for i, text in enumerate(texts):
            conversation = keys[i % _CONVERSATIONS]
            seqs[conversation] += 1
            seq, event_id = seqs[conversation], f"{rounds:04x}{i:012x}"
            frame = parse_client_frame(encode({"type": "message", "text": text,
                                               "client_msg_id": f"m{i}"}), max_text_bytes)
            assert isinstance(frame, MessageFrame)
            value = inbound.encode(inbound_event(conversation, user, frame, event_id, seq,
                                                 "gw-1", 1_767_605_400_000 + i))
            ack_frame(frame.client_msg_id, event_id, seq)
            message = inbound.decode(value)
            event = understood_events([message], [results[message["payload"]["text"]]])[0]
            understood.encode(event)
            incoming = Incoming(conversation, event, Kind.MESSAGE)
            turn = decide_turns([incoming], sessions, (), {}, lambda _t, _u, _s: manager)[0]
            sessions[conversation] = turn.session
            if turn.reply is not None:
                reply_frame(outbound.decode(outbound.encode(turn.reply)))
            elif turn.question is not None:
                requests.encode(turn.question)

    return run


_SETUPS: dict[str, Callable[[Path, Sequence[str]], Callable[[], None]]] = {
    "nlu-batch": _nlu_batch, "nlu-single": _nlu_single, "events": _events,
}
WORKLOADS = tuple(_SETUPS)


def _child(argv: Sequence[str]) -> None:
    workload, rounds, messages, model_dir = argv
    run = _SETUPS[workload](Path(model_dir), _texts(int(messages)))
    # The cyclic collector's passes fall at points that vary from run to run: with it
    # on, two runs of the same child differed by 139 M instructions (about 9 % of a
    # round of ``events``), with it off by 1.7 M. Its cost in the pipeline is
    # measured where it is paid (``parley_gc_pause_seconds``, profiles).
    gc.collect()
    gc.disable()
    run()  # the warm-up round, in both children
    for _ in range(int(rounds)):
        run()


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the baseline {path}: {exc}") from exc
    if not isinstance(data.get("workloads"), dict):
        raise ValueError(f"{path} is not a baseline written by --write (no workloads)")
    return data


if __name__ == "__main__":
    _child(sys.argv[1:])
