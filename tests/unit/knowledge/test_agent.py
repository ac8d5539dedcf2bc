"""The knowledge agent's wiring, without a broker (the agent itself: tests/integration)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agents.encoders.embedder import Embedder
from agents.knowledge import agent
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.service import KnowledgeService
from kernel.settings import Settings


class _Follower:
    """Stands in for KbDocumentsFollower: keeps ``on_change``, reads nothing."""

    def __init__(self, kb: KnowledgeBase, *, on_change: Any, **config: Any) -> None:
        self.on_change = on_change

    def start(self) -> None:
        pass


class _CacheDown(KnowledgeService):
    async def documents_changed(self, tenant: str) -> None:
        raise ConnectionError("the cache is unreachable")


@pytest.mark.asyncio
async def test_a_failure_to_retire_cached_answers_is_logged(
        embedder: Embedder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(agent, "KbDocumentsFollower", _Follower)
    follower = agent.start_follower(_CacheDown(KnowledgeBase(embedder)), Settings.from_env({}),
                                    asyncio.get_running_loop())
    with caplog.at_level(logging.ERROR, logger=agent.__name__):
        await asyncio.to_thread(follower.on_change, {"acme"})  # as from the follower's thread
        for _ in range(200):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
    assert "kb.cache.retire_failed tenant=acme" in caplog.text
    assert "the cache is unreachable" in caplog.text
