"""Knowledge retrieval against real things: an OpenAI-compatible HTTP server
started here (aiohttp on port 0), the embedded Redis Cluster, the embedded
broker with a ``kb.documents`` topic, and a Faust worker running the agent.

The index uses wordllama (built in under a second from its wheel); the
retrieval quality of the shipped configuration is measured in tests/eval.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from confluent_kafka import Producer
from purgatory.domain import model as purgatory_model
from redis.asyncio.cluster import RedisCluster

from agents.encoders.embedder import Embedder, build_embedder
from agents.knowledge.agent import register_knowledge_agent
from agents.knowledge.breaker import BreakerState, CircuitBreaker
from agents.knowledge.cache import AnswerCache, UsageRecorder
from agents.knowledge.documents import Document
from agents.knowledge.follower import KbDocumentsFollower
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.llm import ChatClient
from agents.knowledge.publisher import KbPublisher
from agents.knowledge.service import KnowledgeService
from agents.knowledge.settings import KnowledgeSettings
from infra.ports import find_free_ports
from kernel.settings import Settings
from streams.app import create_app
from streams.codecs import AvroCodec
from streams.keys import ConversationKeys
from streams.security import bootstrap_config
from streams.topics import KB_DOCUMENTS, KNOWLEDGE_REQUESTS
from streams.usage import UsageCounter, read_usage, usage_key
from tests.unit.knowledge.faq_data import faq_documents

# --- shared fixtures ------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return Embedder(build_embedder("wordllama", tmp_path_factory.mktemp("kb") / "embedder"))


@pytest.fixture
def kb(embedder: Embedder) -> KnowledgeBase:
    knowledge = KnowledgeBase(embedder)
    knowledge.upsert_many(faq_documents())
    return knowledge


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """purgatory's clock (the breaker's states are its), moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr(purgatory_model, "time", SimpleNamespace(time=fake))
    return fake


# --- an OpenAI-compatible server --------------------------------------------------


@dataclass
class LLMServer:
    """``POST /v1/chat/completions``; ``mode`` decides how it answers."""

    url: str = ""
    mode: str = "ok"
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "5xx":
            return web.Response(status=503, text="overloaded")
        if self.mode == "garbage":
            return web.Response(text="<html>gateway</html>", content_type="text/html")
        user = body["messages"][-1]["content"]
        cited = re.findall(r"^\[([^\]]+)\]", user, re.MULTILINE)
        text = {
            "ok": f"Use the reset link in Settings [{cited[0]}].",
            "uncited": "Just click reset, trust me.",
            "foreign": "See the manual [secret-doc].",
            "no_answer": "NO_ANSWER",
        }[self.mode]
        return web.json_response({
            "id": "cmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
        })


@pytest_asyncio.fixture
async def llm_server() -> AsyncIterator[LLMServer]:
    server = LLMServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()


def llm_service(kb: KnowledgeBase, server: LLMServer,
                redis: RedisCluster | None = None) -> KnowledgeService:
    settings = KnowledgeSettings.from_env(
        {}, llm_url=server.url, llm_api_key="sk-test", llm_model_small="small-model",
        llm_model_large="large-model", llm_timeout_s=0.5, breaker_failures=2,
        breaker_reset_s=30.0,
    )
    client = ChatClient(settings.llm_url, api_key=settings.llm_api_key,
                        timeout_s=settings.llm_timeout_s)
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=30.0)
    return KnowledgeService(kb, settings, llm=client, breaker=breaker,
                            usage=UsageRecorder(redis) if redis is not None else None)


# --- LLM path ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_generative_answer_cites_a_retrieved_source(kb: KnowledgeBase,
                                                           llm_server: LLMServer) -> None:
    service = llm_service(kb, llm_server)
    try:
        answer = await service.answer("default", "How do I reset my password?")
        assert answer.mode == "generative" and answer.sources == ["reset-password"]
        assert answer.text == "Use the reset link in Settings [reset-password]."
        assert answer.model == "small-model" and not answer.degraded
        request = llm_server.requests[-1]
        assert request["auth"] == "Bearer sk-test"
        assert request["body"]["model"] == "small-model"
        assert "[reset-password]" in request["body"]["messages"][-1]["content"]

        await service.answer("default", "What is the difference between a refund and a "
                                        "chargeback, and why does it take so long?")
        assert llm_server.requests[-1]["body"]["model"] == "large-model"
    finally:
        await service.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["uncited", "foreign"])
async def test_ungrounded_output_falls_back_without_opening_the_circuit(
        kb: KnowledgeBase, llm_server: LLMServer, mode: str) -> None:
    llm_server.mode = mode
    service = llm_service(kb, llm_server)
    try:
        for _ in range(3):
            answer = await service.answer("default", "How do I reset my password?")
            assert answer.mode == "extractive" and answer.degraded
            assert answer.sources == ["reset-password"]
            assert "excerpt from" in answer.text and "trust me" not in answer.text
        assert service.breaker.state is BreakerState.CLOSED  # the endpoint itself works
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_model_refusal_is_a_refusal(kb: KnowledgeBase, llm_server: LLMServer) -> None:
    llm_server.mode = "no_answer"
    service = llm_service(kb, llm_server)
    try:
        answer = await service.answer("default", "How do I reset my password?")
        assert answer.mode == "refusal" and answer.sources == []
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_low_confidence_refuses_without_calling_the_llm(kb: KnowledgeBase,
                                                               llm_server: LLMServer) -> None:
    service = llm_service(kb, llm_server)
    try:
        answer = await service.answer("default", "zxqv wplk fjrt")
        assert answer.mode == "refusal" and not llm_server.requests
        assert (await service.answer("nobody", "How do I reset my password?")).mode == "refusal"
    finally:
        await service.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "delay_s"), [("ok", 2.0), ("5xx", 0.0), ("garbage", 0.0)],
                         ids=["timeout", "5xx", "malformed"])
async def test_failures_open_the_circuit_fall_back_and_recover(
        kb: KnowledgeBase, llm_server: LLMServer, clock: FakeClock, mode: str,
        delay_s: float) -> None:
    service = llm_service(kb, llm_server)
    question = "How do I reset my password?"
    try:
        llm_server.mode, llm_server.delay_s = mode, delay_s
        for _ in range(2):  # failure_threshold=2
            answer = await service.answer("default", question)
            assert answer.mode == "extractive" and answer.degraded
            assert answer.text.startswith("A generated answer is not available right now. "
                                          'Here is an excerpt from "How do I reset my password?"')
        assert service.breaker.state is BreakerState.OPEN
        calls = len(llm_server.requests)

        began = time.monotonic()
        answer = await service.answer("default", question)  # open: no call at all
        assert time.monotonic() - began < 0.4
        assert answer.degraded and len(llm_server.requests) == calls

        llm_server.mode, llm_server.delay_s = "ok", 0.0  # the endpoint recovers
        clock.now += 30.1  # reset timeout elapses: half-open, one trial call
        assert service.breaker.state is BreakerState.HALF_OPEN
        answer = await service.answer("default", question)
        assert answer.mode == "generative" and not answer.degraded
        assert service.breaker.state is BreakerState.CLOSED
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_failed_trial_keeps_the_circuit_open(kb: KnowledgeBase, llm_server: LLMServer,
                                                   clock: FakeClock) -> None:
    service = llm_service(kb, llm_server)
    try:
        llm_server.mode = "5xx"
        for _ in range(2):
            await service.answer("default", "How do I reset my password?")
        clock.now += 30.1
        answer = await service.answer("default", "How do I reset my password?")
        assert answer.degraded and service.breaker.state is BreakerState.OPEN
    finally:
        await service.aclose()


# --- Redis Cluster: caches and usage --------------------------------------------------


def cached_service(kb: KnowledgeBase, redis: RedisCluster) -> KnowledgeService:
    settings = KnowledgeSettings.from_env({}, semantic_cache_threshold=0.9)
    cache = AnswerCache(redis, ttl_s=60, semantic_threshold=0.9)
    return KnowledgeService(kb, settings, cache=cache)


@pytest.mark.asyncio
async def test_exact_and_semantic_cache_hits(kb: KnowledgeBase,
                                             redis_cluster: RedisCluster) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    kb.upsert_many(faq_documents(tenant))
    service = cached_service(kb, redis_cluster)
    first = await service.answer(tenant, "How do I reset my password?")
    assert not first.cached and first.sources == ["reset-password"]
    again = await service.answer(tenant, "  how do I RESET my password ")
    assert again.cached and again.text == first.text and again.sources == first.sources
    near = await service.answer(tenant, "How do I reset my password please?")
    assert near.cached and near.sources == ["reset-password"]
    other = await service.answer(tenant, "How long does a refund take?")
    assert not other.cached and other.sources == ["refund-time"]
    filtered = await service.answer(tenant, "How do I reset my password?",
                                    filters={"product": "payments"})
    assert not filtered.cached  # filters are part of the key
    keys = [k async for k in redis_cluster.scan_iter(match=f"parley:{{kb:{tenant}}}:*")]
    assert keys and all(k.startswith(f"parley:{{kb:{tenant}}}:") for k in keys)


@pytest.mark.asyncio
async def test_exact_answers_are_looked_up_for_a_whole_batch(
        kb: KnowledgeBase, redis_cluster: RedisCluster) -> None:
    """What the dialogue agent asks before handing questions to the knowledge agent."""
    t1, t2 = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    for tenant in (t1, t2):
        kb.upsert_many(faq_documents(tenant))
    service = cached_service(kb, redis_cluster)
    assert service.cache is not None
    password = await service.answer(t1, "How do I reset my password?")
    refund = await service.answer(t2, "How long does a refund take?")

    found = await service.cache.get_exact_many([
        (t1, "how do I reset my password", None),
        (t2, "How long does a refund take?", None),
        (t2, "How do I reset my password?", None),  # answered for t1 only
        (t1, "How do I reset my password?", {"product": "account"}),  # other filters
    ])
    answers = [answer for _, answer in found]
    assert answers[0] is not None and answers[0].cached and answers[0].text == password.text
    assert answers[1] is not None and answers[1].sources == refund.sources == ["refund-time"]
    assert answers[2:] == [None, None]
    assert await service.cache.get_exact_many([]) == []

    await service.documents_changed(t1)
    (_, retired), (_, kept) = await service.cache.get_exact_many([
        (t1, "How do I reset my password?", None), (t2, "How long does a refund take?", None)])
    assert retired is None and kept is not None


@pytest.mark.asyncio
async def test_a_changed_document_invalidates_cached_answers(
        kb: KnowledgeBase, redis_cluster: RedisCluster) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    kb.upsert_many(faq_documents(tenant))
    service = cached_service(kb, redis_cluster)
    question = "How long does a refund take?"
    assert "five to seven" in (await service.answer(tenant, question)).text
    assert (await service.answer(tenant, question)).cached

    kb.upsert(Document(id="refund-time", title="How long does a refund take?",
                       text="Refunds now arrive within 24 hours.", tenant=tenant))
    await service.documents_changed(tenant)
    fresh = await service.answer(tenant, question)
    assert not fresh.cached and "24 hours" in fresh.text
    assert (await service.answer(tenant, question)).cached


@pytest.mark.asyncio
async def test_degraded_answers_are_not_cached(kb: KnowledgeBase, redis_cluster: RedisCluster,
                                               llm_server: LLMServer) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    kb.upsert_many(faq_documents(tenant))
    service = llm_service(kb, llm_server, redis_cluster)
    service.cache = AnswerCache(redis_cluster, ttl_s=60)
    try:
        llm_server.mode = "5xx"
        assert (await service.answer(tenant, "How do I reset my password?")).degraded
        llm_server.mode = "ok"
        answer = await service.answer(tenant, "How do I reset my password?")
        assert answer.mode == "generative" and not answer.cached
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_answers_raise_their_tenants_usage_and_no_one_elses(
        kb: KnowledgeBase, redis_cluster: RedisCluster, llm_server: LLMServer) -> None:
    a, b = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    for tenant in (a, b):
        kb.upsert_many(faq_documents(tenant))
    counter = UsageCounter(redis_cluster)
    service = llm_service(kb, llm_server, redis_cluster)
    service.counter = counter
    try:
        for _ in range(2):
            await service.answer(a, "How do I reset my password?", conversation_id="c1")
        await service.answer(a, "How long does a refund take?", conversation_id="c2")
        await service.answer(a, "zxqv wplk fjrt")  # refused after retrieval: no LLM call
        assert await read_usage(redis_cluster, a) == {}  # counted in process until a flush
        await counter.flush()
        usage = await read_usage(redis_cluster, a)
        assert usage == {
            "knowledge_requests": 4, "llm_calls": 3, "llm_calls:small-model": 3,
            "llm_prompt_tokens": 360, "llm_prompt_tokens:small-model": 360,
            "llm_completion_tokens": 36, "llm_completion_tokens:small-model": 36}
        assert await read_usage(redis_cluster, b) == {}

        await service.answer(b, "How long does a refund take?")
        await counter.close()
        assert (await read_usage(redis_cluster, b))["llm_prompt_tokens"] == 120
        assert await read_usage(redis_cluster, a) == usage  # A's did not move
        assert await redis_cluster.ttl(usage_key(a)) == -1  # billing counters are kept

        assert service.usage is not None  # and each conversation's own LLM usage
        per_conversation = await service.usage.totals(a, "c1")
        assert per_conversation["prompt_tokens"] == 240 and per_conversation["calls"] == 2
        key = ConversationKeys(a, "c1").llm_usage
        # a conversation's usage goes with the rest of its state
        assert 0 < await redis_cluster.ttl(key) <= service.usage.conversation_ttl_s
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_cache_hits_are_counted_and_cost_no_tokens(
        kb: KnowledgeBase, redis_cluster: RedisCluster, llm_server: LLMServer) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    kb.upsert_many(faq_documents(tenant))
    service = llm_service(kb, llm_server, redis_cluster)
    service.cache = AnswerCache(redis_cluster, ttl_s=60)
    service.counter = UsageCounter(redis_cluster)
    try:
        first = await service.answer(tenant, "How do I reset my password?")
        again = await service.answer(tenant, "How do I reset my password?")
        assert not first.cached and again.cached and len(llm_server.requests) == 1
        await service.counter.close()
        usage = await read_usage(redis_cluster, tenant)
        assert usage["knowledge_requests"] == 2 and usage["llm_calls"] == 1
        assert usage["llm_prompt_tokens"] == 120
    finally:
        await service.aclose()


# --- the broker: kb.documents followed live ---------------------------------------------


def wait_for(predicate: Any, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def follower_kb(embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(embedder)


@pytest.fixture
def follower(follower_kb: KnowledgeBase, settings: Settings) -> Iterator[KbDocumentsFollower]:
    changes: list[set[str]] = []
    follower = KbDocumentsFollower(follower_kb, bootstrap=settings.kafka_bootstrap,
                                   topic=settings.topic(KB_DOCUMENTS),
                                   on_change=changes.append)
    follower.changes = changes  # type: ignore[attr-defined]
    yield follower
    follower.stop()


def test_documents_updates_and_deletes_reach_a_running_follower(
        follower: KbDocumentsFollower, follower_kb: KnowledgeBase, settings: Settings) -> None:
    publisher = KbPublisher(settings.kafka_bootstrap, settings.topic(KB_DOCUMENTS))
    docs = faq_documents("acme")
    for doc in docs[:3]:
        publisher.publish(doc)
    publisher.flush()

    follower.start()
    assert follower.wait_caught_up(20), follower.error
    assert follower_kb.stats() == {"acme": {"documents": 3, "chunks": 3}}
    assert follower_kb.search("acme", "my card was declined")[0].doc_id == "card-declined"

    # Live: a new document, an update, a delete, an unchanged re-publish, a bad record.
    publisher.publish(docs[3])
    publisher.publish(Document(id="card-declined", title="Why was my card declined?",
                               text="Cards are declined when the daily limit is reached.",
                               tenant="acme"))
    publisher.delete("acme", "refund-time")
    publisher.publish(docs[0])
    publisher.flush()
    raw = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    raw.produce(settings.topic(KB_DOCUMENTS), key=b"acme:junk", value=b"not avro")
    raw.flush(10)

    wait_for(lambda: follower.undecodable == 1 and len(follower_kb.tenant("acme") or []) == 3,
             what="the follower to apply the changes")
    index = follower_kb.tenant("acme")
    assert index is not None
    assert sorted(e.document.id for e in index.documents()) == \
        ["card-declined", "delivery-address", "reset-password"]
    assert "daily limit" in follower_kb.search("acme", "card declined")[0].text
    assert follower.unchanged >= 1 and follower.deleted == 1
    assert all(c == {"acme"} for c in follower.changes)  # type: ignore[attr-defined]
    assert follower.error is None


def test_a_record_with_a_bad_tenant_is_skipped_and_the_follower_goes_on(
        follower: KbDocumentsFollower, follower_kb: KnowledgeBase, settings: Settings) -> None:
    publisher = KbPublisher(settings.kafka_bootstrap, settings.topic(KB_DOCUMENTS))
    first, second, *_ = faq_documents("acme")
    publisher.publish(Document(id="x", title="A title", text="Some text.", tenant="not a tenant"))
    publisher.publish(first)
    publisher.flush()

    follower.start()
    assert follower.wait_caught_up(20), follower.error
    assert follower_kb.stats() == {"acme": {"documents": 1, "chunks": 1}}

    publisher.publish(Document(id="y", title="A title", text="Some text.", tenant="bad/tenant"))
    publisher.publish(second)
    publisher.flush()
    # the counters move after the batch is visible: wait on them, then look at the index
    wait_for(lambda: follower.applied == 2 and follower.rejected == 2,
             what="the bad record to be skipped and the one after it applied")
    assert len(follower_kb.tenant("acme") or []) == 2
    assert follower.undecodable == 0
    assert follower.error is None


def test_two_followers_build_the_same_index(settings: Settings, embedder: Embedder) -> None:
    publisher = KbPublisher(settings.kafka_bootstrap, settings.topic(KB_DOCUMENTS))
    for doc in faq_documents("t1") + faq_documents("t2"):
        publisher.publish(doc)
    publisher.delete("t2", "intl-fees")
    publisher.flush()
    kbs = [KnowledgeBase(embedder), KnowledgeBase(embedder)]
    followers = [KbDocumentsFollower(k, bootstrap=settings.kafka_bootstrap,
                                     topic=settings.topic(KB_DOCUMENTS)) for k in kbs]
    try:
        for f in followers:
            f.start()
        for f in followers:
            assert f.wait_caught_up(20), f.error
        assert kbs[0].stats() == kbs[1].stats() == {
            "t1": {"documents": 6, "chunks": 6}, "t2": {"documents": 5, "chunks": 5}}
    finally:
        for f in followers:
            f.stop()


def test_follower_on_a_missing_topic_fails_clearly(settings: Settings,
                                                   embedder: Embedder) -> None:
    from agents.knowledge.errors import KnowledgeError

    follower = KbDocumentsFollower(KnowledgeBase(embedder), bootstrap=settings.kafka_bootstrap,
                                   topic=settings.topic("no.such.topic"))
    with pytest.raises(KnowledgeError, match="does not exist"):
        follower.start()


# --- the Faust agent ------------------------------------------------------------------------


def knowledge_worker(settings: Settings, data_dir: Path, service: KnowledgeService,
                     emit_reply: Any) -> Any:
    """A worker app (not started) with the knowledge agent on ``service``."""
    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0], data_dir=data_dir))
    register_knowledge_agent(ctx.app, settings, service, emit_reply)
    return ctx


def produce_requests(settings: Settings, requests: list[dict[str, Any]],
                     *raw: bytes) -> None:
    """``requests`` (then ``raw`` values, as they are) on knowledge.requests, keyed ``c1``."""
    codec = AvroCodec("knowledge_request")
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    for value in [*(codec.encode(r) for r in requests), *raw]:
        producer.produce(settings.topic(KNOWLEDGE_REQUESTS), key=b"c1", value=value)
    producer.flush(10)


def knowledge_request(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}", "tenant_id": "default", "conversation_id": "c1",
        "user_id": "u1", "channel": "ws", "seq": i, "timestamp": 1_700_000_000_000,
        "trace_id": "tr", "reply_route": "gw-1",
        "payload": {"question": "How do I reset my password?", "client_msg_id": f"m{i}",
                    "filters": {}},
    }


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_agent_answers_requests_concurrently(settings: Settings, kb: KnowledgeBase,
                                                   llm_server: LLMServer,
                                                   tmp_path: Path) -> None:
    llm_server.delay_s = 0.5  # a slow model
    service = llm_service(kb, llm_server)
    service.settings = service.settings.replace(llm_timeout_s=5.0)
    replies: dict[str, tuple[str, list[str]]] = {}
    replied_at: list[float] = []
    done = asyncio.Event()
    total = 8

    async def emit_reply(request: dict[str, Any], text: str, sources: list[str]) -> None:
        replies[request["event_id"]] = (text, sources)
        replied_at.append(time.monotonic())
        if len(replies) >= total:
            done.set()

    ctx = knowledge_worker(settings, tmp_path, service, emit_reply)
    produce_requests(settings, [knowledge_request(i) for i in range(total)], b"garbage")

    await ctx.app.start()
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await ctx.app.stop()
        await service.aclose()
    assert set(replies) == {f"e{i}" for i in range(total)}
    assert all(s == ["reset-password"] for _, s in replies.values())
    assert all("[reset-password]" in t for t, _ in replies.values())
    # One conversation, one partition: one after another, eight 0.5 s model calls
    # would spread the replies over at least 3.5 s; eight actors overlap them.
    assert max(replied_at) - min(replied_at) < 2.0


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_worker_bills_the_tenant_it_answers(settings: Settings, kb: KnowledgeBase,
                                                    llm_server: LLMServer,
                                                    redis_cluster: RedisCluster,
                                                    tmp_path: Path) -> None:
    """The worker's own counter (WorkerContext.usage), flushed by its timer while it runs."""
    a, b = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    for tenant in (a, b):
        kb.upsert_many(faq_documents(tenant))
    service = llm_service(kb, llm_server)
    replies: list[str] = []
    done = asyncio.Event()
    total = 3

    async def emit_reply(request: dict[str, Any], text: str, sources: list[str]) -> None:
        replies.append(request["event_id"])
        if len(replies) >= total:
            done.set()

    ctx = knowledge_worker(settings, tmp_path, service, emit_reply)
    service.counter = ctx.usage
    produce_requests(settings, [{**knowledge_request(i), "tenant_id": a, "event_id": f"{a}-{i}"}
                                for i in range(total)])

    await ctx.app.start()
    try:
        await asyncio.wait_for(done.wait(), 60)
        deadline = time.monotonic() + 10
        while (await read_usage(redis_cluster, a)).get("knowledge_requests", 0) < total:
            assert time.monotonic() < deadline, "the worker never flushed its usage"
            await asyncio.sleep(0.2)
    finally:
        await ctx.app.stop()
        await service.aclose()
    usage = await read_usage(redis_cluster, a)
    assert usage["knowledge_requests"] == total and usage["llm_calls"] == total
    assert usage["llm_prompt_tokens"] == 120 * total
    assert usage["llm_completion_tokens"] == 12 * total
    assert await read_usage(redis_cluster, b) == {}


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_agent_sends_a_reply_again_until_the_broker_takes_it(
        settings: Settings, kb: KnowledgeBase, tmp_path: Path) -> None:
    from aiokafka.errors import KafkaConnectionError

    service = KnowledgeService(kb)
    questions_answered = 0
    answer = service.answer

    async def counted_answer(*args: Any, **kwargs: Any) -> Any:
        nonlocal questions_answered
        questions_answered += 1
        return await answer(*args, **kwargs)

    service.answer = counted_answer  # type: ignore[method-assign]
    attempts: list[str] = []
    delivered = asyncio.Event()

    async def emit_reply(request: dict[str, Any], text: str, sources: list[str]) -> None:
        attempts.append(request["event_id"])
        if len(attempts) <= 2:  # the broker is away for the first two attempts
            raise KafkaConnectionError("broker unavailable")
        assert sources == ["reset-password"]
        delivered.set()

    ctx = knowledge_worker(settings, tmp_path, service, emit_reply)
    produce_requests(settings, [knowledge_request(0)])

    await ctx.app.start()
    try:
        await asyncio.wait_for(delivered.wait(), 60)
    finally:
        await ctx.app.stop()
    assert attempts == ["e0", "e0", "e0"]
    assert questions_answered == 1


def test_ingest_publish_reaches_a_follower(settings: Settings, embedder: Embedder,
                                           tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agents.knowledge.cli import kb as kb_cli

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "reset.md").write_text("# Reset your password\n\nOpen Settings, then Security.\n")
    (corpus / "broken.html").write_bytes(b"<p>\x00\x00</p>")
    env = {"PARLEY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PARLEY_TOPIC_PREFIX": settings.topic_prefix}
    result = CliRunner().invoke(kb_cli, ["ingest", "--corpus", str(corpus), "--index",
                                         str(tmp_path / "index"), "--tenant", "acme",
                                         "--embedder", "wordllama", "--publish",
                                         "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert "rejected: document broken (broken.html) rejected: binary content" in result.output
    assert f"published 1 to {settings.topic(KB_DOCUMENTS)}" in result.output

    knowledge = KnowledgeBase(embedder)
    follower = KbDocumentsFollower(knowledge, bootstrap=settings.kafka_bootstrap,
                                   topic=settings.topic(KB_DOCUMENTS))
    follower.start()
    try:
        assert follower.wait_caught_up(20), follower.error
        assert knowledge.search("acme", "reset password")[0].doc_id == "reset"
        deleted = CliRunner().invoke(kb_cli, ["delete", "--tenant", "acme", "--doc-id", "reset",
                                              "--publish"], env=env)
        assert deleted.exit_code == 0, deleted.output
        wait_for(lambda: knowledge.search("acme", "reset password") == [],
                 what="the tombstone to reach the follower")
    finally:
        follower.stop()


@pytest.mark.asyncio
async def test_a_document_update_on_the_topic_retires_cached_answers(
        settings: Settings, embedder: Embedder, redis_cluster: RedisCluster) -> None:
    from agents.knowledge.agent import start_follower

    tenant = f"t{uuid.uuid4().hex[:8]}"
    publisher = KbPublisher(settings.kafka_bootstrap, settings.topic(KB_DOCUMENTS))
    for doc in faq_documents(tenant):
        publisher.publish(doc)
    publisher.flush()
    service = cached_service(KnowledgeBase(embedder), redis_cluster)
    follower = start_follower(service, settings, asyncio.get_running_loop())
    try:
        assert await asyncio.to_thread(follower.wait_caught_up, 20), follower.error
        question = "How long does a refund take?"
        assert "five to seven" in (await service.answer(tenant, question)).text
        assert (await service.answer(tenant, question)).cached

        publisher.publish(Document(id="refund-time", title="How long does a refund take?",
                                   text="Refunds now arrive within 24 hours.", tenant=tenant))
        publisher.flush()
        deadline = time.monotonic() + 20
        while True:
            answer = await service.answer(tenant, question)
            if "24 hours" in answer.text:
                break
            assert time.monotonic() < deadline, "the update never reached the answers"
            await asyncio.sleep(0.1)
        # The worker's own generation bump retired every answer cached before it.
        assert (await service.answer(tenant, question)).text == answer.text
    finally:
        await asyncio.to_thread(follower.stop)
