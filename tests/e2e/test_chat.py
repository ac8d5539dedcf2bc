"""Real WebSocket clients through gateway → broker → Faust worker → Redis Cluster → back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agents.knowledge.answer import REFUSAL_TEXT
from streams.codecs import codec_for
from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND, KNOWLEDGE_REQUESTS, dlq_of
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, produce, read_topic
from tests.tenants import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(180)]


async def test_a_greeting_gets_a_reply(pipeline: Pipeline) -> None:
    async with ChatClient(pipeline.url) as chat:
        msg_id = await chat.send("hello there")
        ack = await chat.next("ack")
        reply = await chat.next("reply")
    assert ack["client_msg_id"] == msg_id and ack["seq"] == 1
    assert reply["in_reply_to"] == msg_id and reply["seq"] == 1
    assert reply["text"]


async def test_replies_arrive_in_order_for_one_conversation(pipeline: Pipeline) -> None:
    async with ChatClient(pipeline.url) as chat:
        sent = [await chat.send(f"message number {i}") for i in range(25)]
        acks = await chat.collect("ack", 25)
        replies = await chat.collect("reply", 25)
    assert [a["client_msg_id"] for a in acks] == sent
    assert [a["seq"] for a in acks] == list(range(1, 26))
    assert [r["in_reply_to"] for r in replies] == sent
    assert [r["seq"] for r in replies] == list(range(1, 26))


async def test_fifty_concurrent_conversations_get_exactly_their_own_replies(
    pipeline: Pipeline,
) -> None:
    async def converse(i: int) -> tuple[list[str], list[dict[str, object]], int]:
        url = pipeline.gateway_urls[i % len(pipeline.gateway_urls)]
        async with ChatClient(url) as chat:
            sent = [await chat.send(t) for t in ("hi", f"where is my order {i}", "thanks")]
            replies = await chat.collect("reply", 3)
            await asyncio.sleep(0.5)  # anything extra (someone else's reply) would show now
            return sent, replies, chat.pending("reply")

    results = await asyncio.gather(*(converse(i) for i in range(50)))
    for sent, replies, extra in results:
        assert [r["in_reply_to"] for r in replies] == sent
        assert [r["seq"] for r in replies] == [1, 2, 3]
        assert extra == 0


async def test_a_reply_reaches_the_gateway_holding_the_socket(pipeline: Pipeline) -> None:
    """The message enters through gateway A; the same conversation's socket on B gets the reply."""
    conversation = f"c-{uuid.uuid4().hex[:12]}"
    url_a, url_b = pipeline.gateway_urls
    async with ChatClient(url_b, conversation=conversation) as on_b:
        async with ChatClient(url_a, conversation=conversation) as on_a:
            msg_id = await on_a.send("hello from A")
            await on_a.next("ack")
        reply = await on_b.next("reply")
    assert reply["in_reply_to"] == msg_id


async def test_a_reply_produced_elsewhere_reaches_a_gateway_that_saw_nothing_of_it(
    pipeline: Pipeline,
) -> None:
    """A reply put on chat.outbound by another producer (e.g. a human agent) is delivered."""
    settings = pipeline.settings
    conversation = f"c-{uuid.uuid4().hex[:12]}"
    async with ChatClient(pipeline.gateway_urls[1], conversation=conversation) as chat:
        codec = codec_for("bot_reply")
        value = codec.encode({
            "event_id": "agent-1", "tenant_id": "e2e", "conversation_id": conversation,
            "user_id": "tester", "channel": "ws", "seq": 1, "timestamp": int(time.time() * 1000),
            "trace_id": "agent-1", "reply_route": "",
            "payload": {"text": "A human here.", "in_reply_to": "", "client_msg_id": "",
                        "quick_replies": [], "sources": [], "sender": "agent"},
        })
        produce(settings, CHAT_OUTBOUND, conversation, value)
        reply = await chat.next("reply")
    assert reply["text"] == "A human here." and reply["sender"] == "agent"


async def test_a_reply_with_a_bad_id_does_not_stop_the_rest_of_its_batch(
    pipeline: Pipeline,
) -> None:
    """Another producer's reply naming an invalid conversation id is skipped and counted;
    the good replies read in the same batch are still delivered."""
    import urllib.request

    conversation = f"c-{uuid.uuid4().hex[:12]}"
    codec = codec_for("bot_reply")

    def reply(conversation_id: str, seq: int) -> bytes:
        return codec.encode({
            "event_id": f"agent-{seq}", "tenant_id": "e2e", "conversation_id": conversation_id,
            "user_id": "tester", "channel": "ws", "seq": seq,
            "timestamp": int(time.time() * 1000), "trace_id": f"agent-{seq}", "reply_route": "",
            "payload": {"text": f"Reply {seq}.", "in_reply_to": "", "client_msg_id": "",
                        "quick_replies": [], "sources": [], "sender": "agent"},
        })  # fmt: skip

    def invalid_replies() -> float:
        url = pipeline.url.replace("ws://", "http://") + "/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        name = 'parley_gateway_replies_invalid_total{reason="bad_id"} '
        return sum(float(line.removeprefix(name)) for line in body.splitlines()
                   if line.startswith(name))

    before = await asyncio.to_thread(invalid_replies)
    async with ChatClient(pipeline.url, conversation=conversation) as chat:
        # One key, one request: the gateway's follower reads all three in one batch.
        produce(pipeline.settings, CHAT_OUTBOUND, conversation,
                reply(conversation, 1), reply("not a valid id", 2), reply(conversation, 3))
        replies = await chat.collect("reply", 2)
    assert [r["text"] for r in replies] == ["Reply 1.", "Reply 3."]
    assert await asyncio.to_thread(invalid_replies) == before + 1


async def test_bad_frames_get_an_error_and_the_connection_stays_usable(
    pipeline: Pipeline,
) -> None:
    async with ChatClient(pipeline.url) as chat:
        await chat.send_raw("{not json")
        assert (await chat.next("error"))["code"] == "bad_json"
        await chat.send_raw(json.dumps({"type": "dance"}))
        assert (await chat.next("error"))["code"] == "unknown_type"
        big_id = await chat.send("x" * (pipeline.settings.max_text_bytes + 1))
        error = await chat.next("error")
        assert (error["code"], error["client_msg_id"]) == ("too_large", big_id)

        msg_id = await chat.send("hello again")
        assert (await chat.next("reply"))["in_reply_to"] == msg_id


@pytest.mark.parametrize(("query", "status"), [
    ("conversation=a%20b", 400), ("last_seq=soon", 400),
    ("tenant=e2e&user=tester", 401),  # naming a tenant and user is no credential
    ("token=not-a-jwt", 401),
])  # fmt: skip
async def test_bad_connection_parameters_are_refused_in_the_handshake(
    pipeline: Pipeline, query: str, status: int,
) -> None:

    token = token_for("e2e")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{pipeline.url}/ws?{query}"
                           + ("" if "token=" in query or status == 401 else f"&token={token}")):
            pass
    assert refused.value.response.status_code == status
    assert refused.value.response.body, "the refusal says why"


async def test_resume_replays_missed_replies_on_any_gateway(pipeline: Pipeline) -> None:
    conversation = f"c-{uuid.uuid4().hex[:12]}"
    url_a, url_b = pipeline.gateway_urls
    async with ChatClient(url_a, conversation=conversation) as chat:
        first = await chat.send("hello")
        await chat.next("reply")
        # (not "what is my balance": it waits for the CRM, and "thanks" meanwhile is
        # answered first, with utter_busy)
        missed = [await chat.send(t) for t in ("what are your opening hours", "thanks")]
        await chat.collect("ack", 3)
    await asyncio.sleep(1.5)  # the replies are produced while no socket is open
    async with ChatClient(url_b, conversation=conversation, last_seq=1) as chat:
        replies = await chat.collect("reply", 2)
    assert [r["in_reply_to"] for r in replies] == missed
    assert first not in [r["in_reply_to"] for r in replies]


@pytest.mark.parametrize("question, source, words", [
    ("what is an overdraft", "overdraft", "spend more than your balance"),  # knowledge intent
    ("What warranty do products have?", "warranty", "2-year warranty"),     # out of scope
])
async def test_a_knowledge_question_is_answered_with_its_source(
    pipeline: Pipeline, question: str, source: str, words: str
) -> None:
    """Dialogue hands the question to the knowledge agent; its answer comes back cited."""
    async with ChatClient(pipeline.url, tenant="demo") as chat:
        asked = await chat.send(question)
        greeted = await chat.send("hello")
        replies = await chat.collect("reply", 2)
    by_message = {r["in_reply_to"]: r for r in replies}
    answer = by_message[asked]
    assert answer["sources"] == [source]
    assert words in answer["text"]
    assert greeted in by_message
    assert sorted(r["seq"] for r in replies) == [1, 2]


async def test_a_cached_answer_comes_straight_from_dialogue(pipeline: Pipeline) -> None:
    """A question answered before is answered again from the cache, without a request to
    the knowledge agent, with the same text and sources."""
    question = "What warranty do products have?"
    replies = []
    conversations = []
    for _ in range(2):
        async with ChatClient(pipeline.url, tenant="demo") as chat:
            asked = await chat.send(question)
            reply = await chat.next("reply")
            assert reply["in_reply_to"] == asked
            replies.append(reply)
            conversations.append(chat.conversation)
    first, again = replies
    assert again["text"] == first["text"] and again["sources"] == first["sources"] == ["warranty"]
    requests = await asyncio.to_thread(read_topic, pipeline.settings, KNOWLEDGE_REQUESTS)
    asked_agent = {record.key().decode() for record in requests}
    assert conversations[1] not in asked_agent


async def test_a_question_the_knowledge_base_cannot_answer_gets_an_honest_refusal(
    pipeline: Pipeline,
) -> None:
    async with ChatClient(pipeline.url, tenant="demo") as chat:
        await chat.send("what's the weather on mars")
        reply = await chat.next("reply")
    assert "sources" not in reply
    assert reply["text"] == REFUSAL_TEXT


async def test_an_undecodable_event_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    conversation = f"c-{uuid.uuid4().hex[:12]}"
    produce(settings, CHAT_INBOUND, conversation, b"\x00not avro")

    async with ChatClient(pipeline.url, conversation=conversation) as chat:
        msg_id = await chat.send("hello after the garbage")
        assert (await chat.next("reply"))["in_reply_to"] == msg_id  # same partition, still flowing

    # The reply came after the garbage was dead-lettered (same partition, in order).
    dead_letters = await asyncio.to_thread(read_topic, settings, dlq_of(CHAT_INBOUND))
    found = next((m for m in dead_letters if m.key() == conversation.encode()), None)
    assert found is not None and found.value() == b"\x00not avro"
    headers = dict(found.headers() or [])
    assert b"undecodable" in headers["parley.error"]
    assert headers["parley.source.topic"] == settings.topic(CHAT_INBOUND).encode()


async def test_an_undecodable_knowledge_result_goes_to_its_own_dead_letter_topic(
    pipeline: Pipeline,
) -> None:
    """The dialogue agent reads two topics; a dead letter goes to the DLQ of its own."""
    from streams.topics import KNOWLEDGE_RESULTS, dlq_of

    settings = pipeline.settings
    conversation = f"c-{uuid.uuid4().hex[:12]}"
    produce(settings, KNOWLEDGE_RESULTS, conversation, b"\x00not avro")

    found, deadline = None, time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        dead_letters = await asyncio.to_thread(read_topic, settings, dlq_of(KNOWLEDGE_RESULTS))
        found = next((m for m in dead_letters if m.key() == conversation.encode()), None)
    assert found is not None and found.value() == b"\x00not avro"
    headers = dict(found.headers() or [])
    assert headers["parley.source.topic"] == settings.topic(KNOWLEDGE_RESULTS).encode()


async def test_a_late_event_is_understood_as_of_when_it_was_sent(pipeline: Pipeline) -> None:
    """A replayed or backlogged message's "tomorrow" is the day after the user said it."""
    from datetime import UTC, datetime

    from streams.topics import CHAT_INBOUND, CHAT_UNDERSTOOD

    settings = pipeline.settings
    event_id, conversation = uuid.uuid4().hex, f"c-{uuid.uuid4().hex[:12]}"
    value = codec_for("chat_message").encode({
        "event_id": event_id, "tenant_id": "demo", "conversation_id": conversation,
        "user_id": "u-late", "channel": "ws", "seq": 1,
        "timestamp": datetime(2024, 1, 31, 23, 59, tzinfo=UTC), "trace_id": event_id,
        "reply_route": "", "payload": {"text": "can I pay it tomorrow", "client_msg_id": "m1",
                                       "locale": None},
    })  # fmt: skip
    produce(settings, CHAT_INBOUND, conversation, value)

    codec, understood, deadline = codec_for("chat_understood"), None, time.monotonic() + 30
    while understood is None and time.monotonic() < deadline:
        records = await asyncio.to_thread(read_topic, settings, CHAT_UNDERSTOOD)
        understood = next((u for u in map(codec.decode, (m.value() for m in records))
                           if u["event_id"] == event_id), None)
    assert understood is not None, "the event was understood"
    dates = [e["value"] for e in understood["payload"]["entities"] if e["entity"] == "date"]
    assert dates == ["2024-02-01"]


async def test_probes_and_metrics_answer_over_http(pipeline: Pipeline) -> None:
    import urllib.request

    base = pipeline.url.replace("ws://", "http://")

    def get(path: str, root: str = base) -> tuple[int, str]:
        with urllib.request.urlopen(root + path, timeout=5) as response:
            return response.status, response.read().decode()

    assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
    assert await asyncio.to_thread(get, "/readyz") == (200, "ready\n")
    status, page = await asyncio.to_thread(get, "/")
    assert status == 200 and "<title>Chat</title>" in page
    worker = next(c for c in pipeline.stack.children if c.name.startswith("worker"))
    worker_root = worker.ready_url.removesuffix("/readyz")
    assert await asyncio.to_thread(get, "/healthz", worker_root) == (200, "ok\n")
    async with ChatClient(pipeline.url) as chat:  # something for the counters to count
        await chat.send("hello")
        await chat.next("reply")
        await chat.send(f"what do you know about the planet {uuid.uuid4().hex[:8]}")
        await chat.next("reply")  # a question no cache holds goes to the knowledge agent

    def metrics(root: str) -> dict[str, float]:
        status, body = get("/metrics", root)
        assert status == 200
        return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
                for line in body.splitlines() if line and not line.startswith("#")}

    samples = await asyncio.to_thread(metrics, base)
    assert samples["parley_gateway_messages_accepted_total"] >= 2
    # Exported for every generation; young collections are rare (kernel.runtime), so a
    # short test may see none yet.
    assert {f'parley_gc_pause_seconds_count{{generation="{g}"}}' for g in "012"} <= set(samples)
    samples = await asyncio.to_thread(metrics, worker_root)
    assert 'parley_gc_pause_seconds_count{generation="2"}' in samples
    assert samples['parley_agent_events_total{agent="conversation"}'] >= 1
    assert samples['parley_agent_batch_size_count{agent="conversation"}'] >= 1
    assert samples['parley_agent_event_age_seconds_count{agent="conversation"}'] >= 1
    assert samples['parley_agent_event_age_seconds_sum{agent="conversation"}'] > 0
    assert samples['parley_agent_events_total{agent="knowledge"}'] >= 1
    outbound = pipeline.settings.topic(CHAT_OUTBOUND)
    assert samples[f'parley_events_produced_total{{topic="{outbound}"}}'] >= 1
    assert any(name.endswith("_rebalances") for name in samples), "Faust's own metrics"


async def test_the_worker_port_serves_probes_and_metrics_only(pipeline: Pipeline) -> None:
    """Faust's own views (which worker holds a key, every table's content, a status page,
    debug graphs and statistics) are not served: a worker's port is for probes and
    Prometheus, and answers 404 to anything else."""
    import urllib.error
    import urllib.request

    worker = next(c for c in pipeline.stack.children if c.name.startswith("worker"))
    root = worker.ready_url.removesuffix("/readyz")

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(root + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    for path in ("/healthz", "/readyz", "/metrics"):
        assert await asyncio.to_thread(status, path) == 200, path
    for path in ("/", "/router/", "/router/key/", "/table/", "/graph/", "/stats/",
                 "/performance/", "/assignments/", "/signal/"):
        assert await asyncio.to_thread(status, path) == 404, path
