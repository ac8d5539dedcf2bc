"""Parley's exceptions: one tree, rooted at :class:`ParleyError`.

Every exception Parley raises on purpose derives from :class:`ParleyError`, so
``except ParleyError`` catches them all (the ``parley`` command turns one into a
one-line ``Error: ...``). The classes below the kernel's live next to the code
that raises them, and import their base from here::

    ParleyError
    ├── ConfigError                  a setting is missing or malformed (start-up)
    ├── InfraError                   embedded infrastructure cannot start or is unhealthy
    │   ├── PortInUseError           a port Parley needs is taken
    │   └── BinaryNotFoundError      a broker / redis-server binary is missing
    ├── SchemaError                  an Avro schema is invalid or incompatible
    │   └── Unsupported              (streams/avro_compiled.py) a schema the compiled
    │                                codec does not handle: the generic one is used
    ├── DecodeError                  bytes on a topic are not a known Avro event
    ├── MissingExtra                 (kernel/extras.py) a command needs an optional package
    ├── InvalidIdError               (streams/keys.py) a tenant, user or conversation id
    │                                unusable in keys and topics; also a ValueError
    ├── BusError                     (streams/errors.py) the broker did not do what was asked
    │   ├── FollowerError            a topic follower cannot read (streams/follow.py)
    │   │   └── TopicNotFoundError   the followed topic does not exist
    │   └── DeliveryError            (gateway/bus.py) the broker did not take an inbound event
    ├── CallbackRefused              (streams/proactive.py) a backend's callback or business
    │                                event refused; carries the HTTP ``status`` and ``reason``
    ├── FrameError                   (gateway/protocol.py) a client frame the gateway refuses;
    │                                its ``code`` is part of the protocol
    ├── AuthError                    (gateway/auth.py) credentials refused; carries the HTTP
    │                                ``status`` (401, 403, 503) and a ``reason``
    ├── TenantError                  (gateway/tenants.py) a tenant configuration that cannot
    │                                work, or an unknown tenant or API key
    ├── ChannelError                 (gateway/channels/errors.py) Slack or SMS traffic
    │   ├── SignatureError           a webhook request not signed by the channel (403)
    │   ├── PayloadError             a signed request the channel would not send (400)
    │   ├── Overloaded               too many messages wait for replies: retry later (503)
    │   └── SendError                the channel's API did not take a reply
    ├── HandoffRefused               (gateway/handoff_desk.py) an agent console command refused;
    │                                its ``code`` says why (not_waiting, not_holder, ...)
    ├── ConsoleError                 (gateway/console.py) an agent console HTTP request refused;
    │                                carries the HTTP ``status``, a ``code`` and a ``reason``
    ├── DialogueError                (agents/dialogue/domain.py)
    │   ├── BotFolderError           (loader.py) a bot folder with errors; lists every one
    │   └── StateFormatError         (state.py) a stored dialogue state this version can't read
    ├── NluError                     (agents/nlu/errors.py)
    │   ├── DataError                a malformed training or evaluation file; also a ValueError
    │   └── ManifestError            a model folder that cannot be loaded; also a ValueError
    ├── EncoderError                 (agents/encoders/errors.py)
    │   ├── EmbedderUnavailable      the weights (or, to fine-tune, PyTorch) are not installed
    │   └── EmbedderFormatError      an embedder folder is missing or incomplete
    ├── CaseFileError                (agents/dialogue/testcases.py) a conversation test case
    │                                file `parley test` cannot read; also a ValueError
    ├── SgdDataError                 (agents/dialogue/sgd.py) an SGD schema or dialogues file
    │                                that cannot be read; also a ValueError
    ├── KnowledgeError               (agents/knowledge/errors.py)
    │   ├── DocumentRejected         one document cannot be ingested (the rest is)
    │   ├── IndexFormatError         an index folder is missing, corrupt or from another version
    │   └── LLMError                 a chat-completions call gave no usable answer
    │       ├── LLMTimeout
    │       ├── LLMUnavailable
    │       ├── LLMClientError
    │       ├── LLMMalformedOutput
    │       └── CircuitOpenError
    ├── ActionError                  (agents/actions/errors.py)
    │   ├── ActionDefinitionError    an action registered wrongly (name, types, function)
    │   └── ActionFailed             raised by an action: the business call did not succeed
    │       └── ActionUnavailable    the business system could not be reached (down, slow,
    │           │                    5xx, breaker open): kind ``unavailable``
    │           └── ActionOutcomeUnknown  a write was sent and no answer came: it may have
    │                                been done (kind ``unknown``)
    ├── IntegrationConfigError       (agents/integrations/errors.py) an integrations.yml with
    │                                errors, each as file:line; also a ValueError
    ├── CrmError                     (infra/crm/errors.py) the reference CRM
    │   ├── CrmProblem               a request it answers with an HTTP error
    │   └── CallbackNotTaken         Parley did not take its callback (sent again)
    └── BotPublishError              (agents/bots/errors.py) a bot version that cannot be
        │                            packed, published or unpacked
        └── BundleError              a published version that is not whole or not safe to
                                     unpack (bad path, wrong checksum)

Exceptions carry structured fields (``ConfigError.name``, ``FrameError.code``,
``DataError.path`` and ``.line``, ...) and read well with ``str()``. Third-party
errors are translated at the boundary and chained with ``raise ... from exc``. A
test (tests/unit/test_errors.py) checks that every exception class of the project
derives from :class:`ParleyError` and appears in this tree.
"""

from __future__ import annotations

__all__ = [
    "BinaryNotFoundError",
    "ConfigError",
    "DecodeError",
    "InfraError",
    "ParleyError",
    "PortInUseError",
    "SchemaError",
]


class ParleyError(Exception):
    """Base class of every error Parley raises on purpose."""


class ConfigError(ParleyError):
    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(name, value, expected)
        self.name, self.value, self.expected = name, value, expected

    def __str__(self) -> str:
        return f"setting {self.name}={self.value!r} is invalid: expected {self.expected}"


class InfraError(ParleyError):
    """Embedded infrastructure could not start, stop or answer."""


class PortInUseError(InfraError):
    def __init__(self, service: str, port: int) -> None:
        super().__init__(service, port)
        self.service, self.port = service, port

    def __str__(self) -> str:
        return (
            f"port {self.port} needed by {self.service} is already in use; stop what holds it "
            f"(`ss -ltnp 'sport = :{self.port}'` finds it; embedded infrastructure left "
            f"running stops with `parley infra down`)"
        )


class BinaryNotFoundError(InfraError):
    def __init__(self, binary: str, tried: str) -> None:
        super().__init__(binary, tried)
        self.binary, self.tried = binary, tried

    def __str__(self) -> str:
        return f"cannot find the {self.binary} binary; tried {self.tried}"


class SchemaError(ParleyError):
    """An Avro schema is invalid, unknown or incompatible."""


class DecodeError(ParleyError):
    """Bytes that are not a decodable Parley event (goes to the topic's dead-letter queue)."""

    def __init__(self, reason: str, *, size: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.size = reason, size

    def __str__(self) -> str:
        return f"undecodable event ({self.size} bytes): {self.reason}"
