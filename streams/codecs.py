"""Avro codecs for the values on Parley's topics.

Two wire formats, chosen by configuration:

* **Avro single-object encoding** (default, no registry): ``C3 01`` + the
  8-byte CRC-64-AVRO fingerprint of the writer schema + the Avro body. The
  writer schema is looked up by fingerprint among the current and historical
  schemas in ``schemas/``, so any producer's data that was ever valid decodes.
* **Confluent framing** (when ``PARLEY_SCHEMA_REGISTRY_URL`` is set): ``00`` +
  4-byte big-endian schema id + the Avro body; ids come from the registry.

Decoding always resolves the writer schema against the reader's current
schema (Avro schema resolution), which is what makes backward-compatible
evolution work.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from kernel.errors import DecodeError, SchemaError
from schemas import Schema, current, history
from streams.avro_compiled import Unsupported, compile_schema

__all__ = [
    "AvroCodec",
    "ConfluentFraming",
    "Framing",
    "SingleObjectFraming",
    "codec_for",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class Framing(Protocol):
    """How a writer schema is named in front of the Avro body."""

    def header(self, schema: Schema) -> bytes: ...

    def split(self, data: bytes) -> tuple[Schema, int]:
        """Return the writer schema and the offset where the body starts."""
        ...


class SingleObjectFraming:
    """Avro single-object encoding: writer schema identified by fingerprint."""

    def __init__(self, known: list[Schema]) -> None:
        self._by_fingerprint = {s.fingerprint: s for s in known}

    def header(self, schema: Schema) -> bytes:
        return SINGLE_OBJECT_MAGIC + schema.fingerprint

    def split(self, data: bytes) -> tuple[Schema, int]:
        if data[:2] != SINGLE_OBJECT_MAGIC or len(data) < 10:
            raise DecodeError("not Avro single-object encoding (bad magic)", size=len(data))
        schema = self._by_fingerprint.get(data[2:10])
        if schema is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}", size=len(data))
        return schema, 10


class ConfluentFraming:
    """Confluent wire format: writer schema identified by a registry id."""

    def __init__(self, registry_url: str, subject: str, known: list[Schema]) -> None:
        from confluent_kafka.schema_registry import Schema as RegistrySchema
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": registry_url})
        self._registry_schema = RegistrySchema
        self._subject = subject
        self._ids: dict[bytes, int] = {}
        self._by_id: dict[int, Schema] = {}
        self._by_canonical = {s.canonical: s for s in known}

    def header(self, schema: Schema) -> bytes:
        schema_id = self._ids.get(schema.fingerprint)
        if schema_id is None:
            schema_id = self._client.register_schema(
                self._subject, self._registry_schema(json.dumps(schema.raw), "AVRO")
            )
            self._ids[schema.fingerprint] = schema_id
            self._by_id[schema_id] = schema
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id)

    def split(self, data: bytes) -> tuple[Schema, int]:
        if data[:1] != CONFLUENT_MAGIC or len(data) < 5:
            raise DecodeError("not Confluent-framed Avro (bad magic)", size=len(data))
        (schema_id,) = struct.unpack(">I", data[1:5])
        schema = self._by_id.get(schema_id)
        if schema is None:
            try:
                fetched = self._client.get_schema(schema_id)
            except Exception as exc:  # the registry client raises several unrelated types
                raise DecodeError(f"schema id {schema_id} not found in registry: {exc}") from exc
            writer = Schema(json.loads(fetched.schema_str or "null"))
            schema = self._by_canonical.get(writer.canonical, writer)
            self._by_id[schema_id] = schema
        return schema, 5


class AvroCodec:
    """Encode and decode one record type (``chat_message``, ``bot_reply``, ...).

    Bodies in the current schema go through functions compiled for it
    (:mod:`streams.avro_compiled`, the same bytes as fastavro's in a fraction of
    the time); data written with an older schema is resolved by fastavro.
    """

    def __init__(self, name: str, framing: Framing | None = None) -> None:
        self.name = name
        self.schema = current(name)
        self.known = [self.schema, *history(name)]
        self.framing: Framing = framing or SingleObjectFraming(self.known)
        try:
            self._write, self._read = compile_schema(self.schema.parsed)
        except Unsupported:
            self._write, self._read = self._fastavro_write, self._fastavro_read

    def encode(self, record: dict[str, Any]) -> bytes:
        out = bytearray(self.framing.header(self.schema))
        try:
            self._write(out, record)
        except KeyError as exc:
            raise SchemaError(f"record does not match {self.schema.full_name}: "
                              f"no value for field {exc}") from exc
        except (ValueError, TypeError, AttributeError, struct.error) as exc:
            raise SchemaError(f"record does not match {self.schema.full_name}: {exc}") from exc
        return bytes(out)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if not data:
            raise DecodeError("empty value", size=0)
        writer, offset = self.framing.split(data)
        record: Any
        try:
            if writer is self.schema:
                record, _ = self._read(data, offset)
            else:
                record = schemaless_reader(io.BytesIO(data[offset:]), writer.parsed,
                                           self.schema.parsed)
        except Exception as exc:  # corrupt bodies raise assorted errors
            raise DecodeError(f"corrupt {writer.full_name} body: {exc!r}", size=len(data)) from exc
        if not isinstance(record, dict):
            raise DecodeError(f"expected a record, got {type(record).__name__}", size=len(data))
        return record

    def _fastavro_write(self, out: bytearray, record: dict[str, Any]) -> None:
        buf = io.BytesIO()
        schemaless_writer(buf, self.schema.parsed, record)
        out += buf.getvalue()

    def _fastavro_read(self, data: bytes, pos: int) -> tuple[Any, int]:
        buf = io.BytesIO(data)
        buf.seek(pos)
        return schemaless_reader(buf, self.schema.parsed, None), buf.tell()


def codec_for(name: str, registry_url: str = "", topic: str = "") -> AvroCodec:
    """The codec for schema ``name`` under the configured wire format."""
    codec = AvroCodec(name)
    if registry_url:
        codec.framing = ConfluentFraming(registry_url, f"{topic or name}-value", codec.known)
    return codec

