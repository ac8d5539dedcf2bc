"""Errors of the knowledge component (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                      (kernel/errors.py)
    └── KnowledgeError
        ├── DocumentRejected         one document cannot be ingested (the rest is)
        ├── IndexFormatError         an index folder is missing, corrupt or from another version
        └── LLMError                 a chat-completions call did not give a usable answer
            ├── LLMTimeout           no answer within the timeout
            ├── LLMUnavailable       connection refused, 5xx, 429
            ├── LLMClientError       another 4xx (a wrong key, an unknown model): the endpoint is up
            ├── LLMMalformedOutput   an answer that is not a valid completion or cites nothing valid
            └── CircuitOpenError     the breaker is open: the call was not even tried

Every ``LLMError`` ends in an extractive answer, labelled as an excerpt; none
reaches the end user. The embedders' errors are in :mod:`agents.encoders.errors`.
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = [
    "CircuitOpenError",
    "DocumentRejected",
    "IndexFormatError",
    "KnowledgeError",
    "LLMClientError",
    "LLMError",
    "LLMMalformedOutput",
    "LLMTimeout",
    "LLMUnavailable",
]


class KnowledgeError(ParleyError):
    """Base class of the knowledge component's errors."""


class DocumentRejected(KnowledgeError):
    """A document that is not ingested, with where it came from and why."""

    def __init__(self, doc_id: str, reason: str, *, source: str = "") -> None:
        super().__init__(doc_id, reason, source)
        self.doc_id, self.reason, self.source = doc_id, reason, source

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"document {self.doc_id or '<no id>'}{where} rejected: {self.reason}"


class IndexFormatError(KnowledgeError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return f"knowledge index {self.path}: {self.problem}"


class LLMError(KnowledgeError):
    """A chat-completions call that gave no usable answer."""

    kind = "error"

    def __init__(self, detail: str, *, model: str = "") -> None:
        super().__init__(detail, model)
        self.detail, self.model = detail, model

    def __str__(self) -> str:
        on = f" ({self.model})" if self.model else ""
        return f"LLM {self.kind}{on}: {self.detail}"


class LLMTimeout(LLMError):
    kind = "timeout"


class LLMUnavailable(LLMError):
    kind = "unavailable"


class LLMClientError(LLMError):
    kind = "request refused"


class LLMMalformedOutput(LLMError):
    kind = "malformed output"


class CircuitOpenError(LLMError):
    kind = "circuit open"
