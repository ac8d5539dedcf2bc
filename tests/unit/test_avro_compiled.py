"""The compiled Avro codec writes and reads exactly what fastavro does."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from kernel.errors import DecodeError, SchemaError
from schemas import current, schema_names
from streams import codecs
from streams.avro_compiled import Unsupported, compile_schema

TEXTS = ["", "x", "héllo 👋", "a" * 63, "b" * 64, "ü" * 40, "\x00\u2028", "日本語" * 30]
LONGS = [0, 1, -1, 63, 64, -64, -65, 127, 128, 2**31 - 1, -(2**31), 2**62, -(2**63)]


def random_value(schema: Any, rng: random.Random, names: dict[str, Any]) -> Any:
    """A random value of ``schema`` (a parsed one), edge cases included."""
    if isinstance(schema, list):
        return random_value(rng.choice(schema), rng, names)
    if isinstance(schema, str) and schema in names:
        return random_value(names[schema], rng, names)
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        millis = rng.choice([0, 1_767_605_400_123, rng.randrange(-10**12, 10**13)])
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
        return moment if rng.random() < 0.5 else millis
    if isinstance(schema, dict) and "name" in schema:
        names[schema["name"]] = schema
    match kind:
        case "null":
            return None
        case "boolean":
            return rng.random() < 0.5
        case "int":
            return rng.choice([v for v in LONGS if -(2**31) <= v < 2**31])
        case "long":
            return rng.choice([*LONGS, rng.randrange(-(2**40), 2**40)])
        case "float":
            return rng.choice([0.0, 0.5, -1.25, 0.999152, 6.5e-05, 1e30])
        case "double":
            return rng.choice([0.0, 0.1, -1e300, 3.141592653589793])
        case "string":
            mixed = "".join(rng.choice("abc é😀") for _ in range(rng.randrange(200)))
            return rng.choice([*TEXTS, mixed])
        case "bytes":
            return rng.randbytes(rng.randrange(100))
        case "record":
            return {f["name"]: random_value(f["type"], rng, names) for f in schema["fields"]}
        case "array":
            count = rng.choice([0, 1, 3, 70])
            return [random_value(schema["items"], rng, names) for _ in range(count)]
        case "map":
            return {rng.choice(TEXTS) + str(i): random_value(schema["values"], rng, names)
                    for i in range(rng.choice([0, 1, 3]))}
        case "enum":
            return rng.choice(schema["symbols"])
        case "fixed":
            return rng.randbytes(schema["size"])
    raise AssertionError(f"no generator for {kind}")


def fastavro_bytes(parsed: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


@pytest.mark.parametrize("name", schema_names())
def test_every_schema_writes_and_reads_as_fastavro_does(name: str) -> None:
    parsed = current(name).parsed
    write, read = compile_schema(parsed)
    rng = random.Random(name)
    for _ in range(300):
        record = random_value(parsed, rng, {})
        expected = fastavro_bytes(parsed, record)
        out = bytearray(b"head")
        write(out, record)
        assert bytes(out[4:]) == expected
        decoded, end = read(bytes(out), 4)
        assert end == len(out)
        assert decoded == schemaless_reader(io.BytesIO(expected), parsed, None)


SCHEMA = parse_schema({
    "type": "record", "name": "T", "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "note", "type": ["null", "string"]},
        {"name": "count", "type": "int", "default": 7},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "again", "type": "Kind"},
        {"name": "tail", "type": ["string", "null"], "default": "t"},
    ],
})


def test_missing_fields_take_defaults_as_fastavro_does() -> None:
    write, read = compile_schema(SCHEMA)
    record = {"id": "x", "kind": "B", "again": "A"}
    out = bytearray()
    write(out, record)
    assert bytes(out) == fastavro_bytes(SCHEMA, record)
    assert read(bytes(out), 0)[0] == {"id": "x", "note": None, "count": 7, "tags": [],
                                      "kind": "B", "again": "A", "tail": "t"}


@pytest.mark.parametrize("record, message", [
    ({"kind": "A", "again": "A"}, "id"),
    ({"id": 5, "kind": "A", "again": "A"}, "encode"),
    ({"id": "x", "count": "many", "kind": "A", "again": "A"}, "str"),
    ({"id": "x", "kind": "C", "again": "A"}, "not a symbol of test.Kind"),
    ({"id": "x", "tags": [1], "kind": "A", "again": "A"}, "encode"),
    ({"id": "x", "count": 2**63, "kind": "A", "again": "A"}, "out of the range"),
])
def test_a_record_that_does_not_fit_raises(record: dict[str, Any], message: str) -> None:
    write, _ = compile_schema(SCHEMA)
    with pytest.raises((KeyError, ValueError, TypeError, AttributeError), match=message):
        write(bytearray(), record)


def test_codec_names_the_missing_field() -> None:
    codec = codecs.AvroCodec("chat_message")
    record = random_value(codec.schema.parsed, random.Random(2), {})
    del record["user_id"]
    with pytest.raises(SchemaError, match="no value for field 'user_id'"):
        codec.encode(record)


def test_every_truncation_of_a_body_is_a_decode_error() -> None:
    codec = codecs.AvroCodec("chat_understood")
    record = random_value(codec.schema.parsed, random.Random(3), {})
    record["payload"]["ranking"] = [{"intent": "greet", "confidence": 0.5}]
    data = codec.encode(record)
    for cut in range(10, len(data)):
        with pytest.raises(DecodeError, match="corrupt"):
            codec.decode(data[:cut])


@pytest.mark.parametrize("name", schema_names())
def test_a_corrupt_body_fails_or_decodes_exactly_as_with_fastavro(name: str) -> None:
    codec = codecs.AvroCodec(name)
    rng = random.Random(name)
    decoded_both = 0
    for _ in range(300):
        data = bytearray(codec.encode(random_value(codec.schema.parsed, rng, {})))
        for _ in range(rng.choice([1, 2, 5])):
            data[rng.randrange(10, len(data))] = rng.randrange(256)
        try:
            expected = schemaless_reader(io.BytesIO(data[10:]), codec.schema.parsed, None)
        except Exception:  # fastavro's assorted errors on a corrupt body
            with pytest.raises(DecodeError):
                codec.decode(bytes(data))
        else:
            assert codec.decode(bytes(data)) == expected
            decoded_both += 1
    assert decoded_both >= 10  # the flips did not all land in text made invalid UTF-8


def test_a_negative_string_length_is_refused() -> None:
    _, read = compile_schema(SCHEMA)
    with pytest.raises(EOFError):
        read(b"\x03abc", 0)  # zig-zag 3 is -2


@pytest.mark.parametrize("index", [b"\x01", b"\x04"])  # zig-zag: -1, 2
def test_an_enum_index_out_of_range_is_refused(index: bytes) -> None:
    _, read = compile_schema(SCHEMA)
    with pytest.raises(ValueError, match="enum index"):
        read(b"\x02x" + b"\x00" + b"\x0e" + b"\x00" + index, 0)


def test_blocks_sized_in_bytes_read_as_fastavro_reads_them() -> None:
    """Other writers (Java's, for one) may give a block's size: a negative count."""
    schema = parse_schema({"type": "record", "name": "A", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "int"}}]})
    # xs: count -2 (zig-zag 3), size 2 bytes, items 1 and -1, end; m: count 1, "k" -> 2, end
    data = b"\x03\x04\x02\x01\x00" + b"\x02\x02k\x04\x00"
    _, read = compile_schema(schema)
    assert read(data, 0) == ({"xs": [1, -1], "m": {"k": 2}}, len(data))
    assert read(data, 0)[0] == schemaless_reader(io.BytesIO(data), schema, None)


@pytest.mark.parametrize("schema", [
    {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]},
    {"type": "record", "name": "Node", "fields": [
        {"name": "next", "type": ["null", "Node"]}]},
    {"type": "record", "name": "Z", "fields": [
        {"name": "z", "type": {"type": "array", "items": "null"}}]},
    {"type": "record", "name": "D", "fields": [
        {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4}}]},
])
def test_what_is_not_compiled_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_schema(parse_schema(schema))


def test_codec_falls_back_to_fastavro_for_a_schema_it_cannot_compile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(parsed: Any) -> Any:
        raise Unsupported("test")

    monkeypatch.setattr(codecs, "compile_schema", refuse)
    slow = codecs.AvroCodec("bot_reply")
    monkeypatch.undo()
    fast = codecs.AvroCodec("bot_reply")
    assert slow._write != fast._write
    record = random_value(slow.schema.parsed, random.Random(1), {})
    assert slow.encode(record) == fast.encode(record)
    assert slow.decode(fast.encode(record)) == fast.decode(slow.encode(record))
