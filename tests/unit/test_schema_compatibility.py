"""Every schema change stays backward compatible: data written with any earlier
published version decodes with the current reader schema."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from schemas import SCHEMA_DIR, current, history, schema_names
from streams.codecs import SINGLE_OBJECT_MAGIC, AvroCodec
from streams.topics import ENVELOPE_FIELDS


def example_for(schema: Any) -> Any:
    """A value of every field, built from the schema itself."""
    if isinstance(schema, list):  # union: the first branch
        return example_for(schema[0])
    if isinstance(schema, str):
        return {"string": "x", "long": 7, "int": 3, "float": 0.5, "double": 0.25,
                "boolean": True, "null": None, "bytes": b"b"}[schema]
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: example_for(f["type"]) for f in schema["fields"]}
    if kind == "array":
        return [example_for(schema["items"])]
    if kind == "map":
        return {"k": example_for(schema["values"])}
    if kind == "enum":
        return schema["symbols"][0]
    return example_for(kind)


def old_versions() -> list[tuple[str, int]]:
    return [(name, i) for name in schema_names() for i in range(len(history(name)))]


def test_history_exists_for_schemas_that_evolved() -> None:
    assert history("chat_message") and history("bot_reply")


@pytest.mark.parametrize("name, index", old_versions())
def test_old_data_decodes_with_current_reader(name: str, index: int) -> None:
    old = history(name)[index]
    record = example_for(old.raw)
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + old.fingerprint)
    schemaless_writer(buf, old.parsed, record)

    decoded = AvroCodec(name).decode(buf.getvalue())

    new_fields = {f["name"] for f in current(name).raw["fields"]}
    assert set(decoded) == new_fields
    # Timestamps decode as datetimes; the rest as written.
    stamps = {f["name"] for f in old.raw["fields"] if isinstance(f["type"], dict)
              and f["type"].get("logicalType") == "timestamp-millis"}
    for field, value in record.items():
        if field != "payload":
            assert decoded[field] == value or field in stamps or field == "timestamp"
    # New fields take their defaults.
    for f in current(name).raw["fields"]:
        if f["name"] not in record:
            assert decoded[f["name"]] == f["default"]
    new_payload = next((f for f in current(name).raw["fields"] if f["name"] == "payload"), None)
    for f in new_payload["type"]["fields"] if new_payload is not None else ():
        if f["name"] not in record["payload"]:
            assert decoded["payload"][f["name"]] == f["default"]


@pytest.mark.parametrize("name", schema_names())
def test_current_schema_parses_and_documents_itself(name: str) -> None:
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    parse_schema(raw)
    assert raw.get("doc"), f"{name}.avsc should say what the topic carries"


@pytest.mark.parametrize("name", schema_names())
def test_added_fields_have_defaults(name: str) -> None:
    """The rule that makes evolution backward compatible, checked on the files."""
    def fields(schema: Any, path: str = "") -> dict[str, Any]:
        out = {}
        for f in schema.get("fields", []):
            out[path + f["name"]] = f
            if isinstance(f["type"], dict) and f["type"].get("type") == "record":
                out.update(fields(f["type"], path + f["name"] + "."))
        return out

    now = fields(current(name).raw)
    for old in history(name):
        for added in set(now) - set(fields(old.raw)):
            assert "default" in now[added], f"{name}: new field {added} needs a default"


@pytest.mark.parametrize("name", ["chat_message", "chat_understood", "bot_reply",
                                  "knowledge_request", "knowledge_result", "action_request",
                                  "action_result"])
def test_conversation_events_share_the_envelope(name: str) -> None:
    fields = [f["name"] for f in current(name).raw["fields"]]
    assert fields == [*ENVELOPE_FIELDS, "payload"]
