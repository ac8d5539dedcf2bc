"""The worker's Faust app: topics declared the way the agents expect them."""

from __future__ import annotations

import faust

from streams.app import raw_topic


def test_raw_topics_keep_keys_and_values_as_bytes() -> None:
    app = faust.App("test-raw-topic", broker="memory://")
    topic = raw_topic(app, "chat.understood", "knowledge.results")
    assert topic.topics == ("chat.understood", "knowledge.results")  # one stream, two topics
    assert (topic.key_type, topic.value_type) == (bytes, bytes)
    assert (topic.key_serializer, topic.value_serializer) == ("raw", "raw")
