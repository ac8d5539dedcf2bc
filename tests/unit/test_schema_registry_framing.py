"""Confluent framing against a local server speaking the Schema Registry REST API.

The server implements the two calls the confluent-kafka client makes
(register a schema under a subject; fetch a schema by id) over real HTTP.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.codecs import CONFLUENT_MAGIC, codec_for
from tests.unit.test_codecs import chat_message


class Registry(BaseHTTPRequestHandler):
    schemas: dict[int, str] = {}
    ids: dict[str, int] = {}
    requests: list[str] = []

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.requests.append(f"POST {self.path}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "/versions" not in self.path:
            self._send(404, {"error_code": 40401, "message": "not found"})
            return
        schema = json.dumps(json.loads(body["schema"]), sort_keys=True)
        schema_id = self.ids.setdefault(schema, len(self.ids) + 1)
        self.schemas[schema_id] = body["schema"]
        self._send(200, {"id": schema_id})

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        if self.path.startswith("/schemas/ids/"):
            schema_id = int(self.path.split("/")[3].split("?")[0])
            if schema_id in self.schemas:
                self._send(200, {"schema": self.schemas[schema_id]})
                return
        self._send(404, {"error_code": 40403, "message": "Schema not found"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry_url() -> Iterator[str]:
    Registry.schemas, Registry.ids, Registry.requests = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_confluent_framing_registers_once_and_round_trips(registry_url: str) -> None:
    codec = codec_for("chat_message", registry_url, "chat.inbound")
    data = codec.encode(chat_message())
    again = codec.encode(chat_message(seq=4))
    assert data[:1] == CONFLUENT_MAGIC and struct.unpack(">I", data[1:5]) == (1,)
    assert again[:5] == data[:5]
    assert sum(r.startswith("POST /subjects/chat.inbound-value/versions") for r in
               Registry.requests) == 1

    # A different process (fresh codec) decodes by fetching the schema by id.
    reader = codec_for("chat_message", registry_url, "chat.inbound")
    assert reader.decode(data) == chat_message()
    assert any(r.startswith("GET /schemas/ids/1") for r in Registry.requests)


def test_unknown_schema_id_is_a_decode_error(registry_url: str) -> None:
    from kernel.errors import DecodeError

    codec = codec_for("chat_message", registry_url, "chat.inbound")
    with pytest.raises(DecodeError, match="schema id 99"):
        codec.decode(CONFLUENT_MAGIC + struct.pack(">I", 99) + b"\x00")
