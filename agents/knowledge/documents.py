"""Knowledge documents: validation and loading from JSON lines or a folder.

A document is ``{"id", "title", "text"}`` with an optional ``"tenant"`` and a
flat ``"metadata"`` object (string values; numbers and booleans are turned into
strings). Loading never stops at a bad document: it yields a
:class:`~agents.knowledge.errors.DocumentRejected` for it, saying which one and
why, and goes on with the rest.

Rejected: no id, no text (after stripping markup), more than ``max_bytes`` of
UTF-8, binary content (NUL bytes, undecodable bytes, mostly control characters),
metadata that is not flat.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from agents.knowledge.errors import DocumentRejected
from streams.keys import InvalidIdError, validate_id

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TENANT",
    "FOLDER_SUFFIXES",
    "Document",
    "html_to_text",
    "load_corpus",
    "markdown_to_text",
    "validate_document",
]

DEFAULT_TENANT = "default"
DEFAULT_MAX_BYTES = 1 << 20  # 1 MiB of UTF-8 per document
MAX_ID_CHARS = 256
FOLDER_SUFFIXES = (".md", ".markdown", ".html", ".htm", ".txt")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    tenant: str = DEFAULT_TENANT
    metadata: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that is indexed changes."""
        payload = json.dumps(
            [self.title, self.text, sorted(self.metadata.items())], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _looks_binary(text: str) -> str | None:
    """Why ``text`` is not human text, or None."""
    if "\x00" in text:
        return "binary content (NUL bytes)"
    sample = text[:20_000]
    bad = len(_CONTROL.findall(sample)) + sample.count("\ufffd")
    if sample and bad / len(sample) > 0.05:
        return (f"binary or non-text content ({bad} control or undecodable characters "
                f"in the first {len(sample)})")
    return None


def _flat_metadata(doc_id: str, raw: Any, source: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DocumentRejected(doc_id, "metadata must be a JSON object", source=source)
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[str(key)] = str(value)
        else:
            raise DocumentRejected(
                doc_id,
                f"metadata value of {key!r} must be a string, number or boolean, "
                f"not {type(value).__name__}",
                source=source,
            )
    return out


def validate_document(
    raw: Any,
    *,
    source: str = "",
    default_tenant: str = DEFAULT_TENANT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Document:
    """A :class:`Document` from a decoded JSON object, or :class:`DocumentRejected`."""
    if not isinstance(raw, Mapping):
        raise DocumentRejected("", f"expected a JSON object, got {type(raw).__name__}",
                               source=source)
    doc_id = raw.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise DocumentRejected("", "missing \"id\" (a non-empty string)", source=source)
    doc_id = doc_id.strip()
    if len(doc_id) > MAX_ID_CHARS or _CONTROL.search(doc_id) or "\n" in doc_id:
        raise DocumentRejected(doc_id[:40], f"id must be at most {MAX_ID_CHARS} printable "
                               "characters", source=source)
    tenant = raw.get("tenant") or default_tenant
    try:
        validate_id("tenant id", str(tenant))
    except InvalidIdError as exc:
        raise DocumentRejected(doc_id, str(exc), source=source) from exc
    title, text = raw.get("title") or "", raw.get("text")
    if not isinstance(title, str):
        raise DocumentRejected(doc_id, "\"title\" must be a string", source=source)
    if not isinstance(text, str):
        raise DocumentRejected(doc_id, "missing \"text\" (a string)", source=source)
    size = len(title.encode("utf-8", "replace")) + len(text.encode("utf-8", "replace"))
    if size > max_bytes:
        raise DocumentRejected(
            doc_id, f"too large: {size} bytes of text, the limit is {max_bytes}", source=source
        )
    for part in (title, text):
        problem = _looks_binary(part)
        if problem:
            raise DocumentRejected(doc_id, problem, source=source)
    if not text.strip():
        raise DocumentRejected(doc_id, "empty text", source=source)
    metadata = _flat_metadata(doc_id, raw.get("metadata"), source)
    return Document(
        id=doc_id,
        title=" ".join(title.split()),
        text=text.strip(),
        tenant=str(tenant),
        metadata=metadata,
        source=source,
    )


# --- markup -----------------------------------------------------------------


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript", "template", "svg"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "pre", "blockquote", "table", "ul", "ol", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.h1 = ""
        self._skip = 0
        self._in_title = self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag == "h1":
            self._in_h1 = True
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag == "h1":
            self._in_h1 = False
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        if self._in_h1:
            self.h1 += data
        self.parts.append(data)


def _tidy(text: str) -> str:
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def html_to_text(markup: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: ``<title>`` (or the first ``<h1>``) and body text."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    title = " ".join((parser.title or parser.h1).split())
    return title, _tidy("".join(parser.parts))


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`+|~~)(?=\S)(.+?)(?<=\S)\1")


def markdown_to_text(markup: str) -> tuple[str, str]:
    """``(title, text)`` of a Markdown file: the first heading, and the text without markup."""
    title = ""
    lines: list[str] = []
    in_front_matter = markup.startswith("---\n")
    for i, line in enumerate(markup.splitlines()):
        if in_front_matter:
            if i > 0 and line.strip() == "---":
                in_front_matter = False
            continue
        if line.strip().startswith("```"):
            lines.append("")
            continue
        heading = _MD_HEADING.match(line)
        if heading:
            if not title:
                title = heading.group(1)
            lines.extend(["", heading.group(1), ""])
            continue
        line = re.sub(r"^\s{0,3}(>\s?|[-*+]\s+|\d+[.)]\s+)", "", line)
        lines.append(line)
    text = "\n".join(lines)
    text = _MD_LINK.sub(r"\1", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    for _ in range(2):
        text = _MD_EMPHASIS.sub(r"\2", text)
    return _MD_EMPHASIS.sub(r"\2", title), _tidy(text)


# --- loading -----------------------------------------------------------------


def _load_jsonl(
    path: Path, default_tenant: str, max_bytes: int
) -> Iterator[Document | DocumentRejected]:
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            source = f"{path.name}:{number}"
            if not raw_line.strip():
                continue
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError:
                yield DocumentRejected("", "line is not UTF-8 text", source=source)
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                yield DocumentRejected("", f"invalid JSON ({exc.msg} at column {exc.colno})",
                                       source=source)
                continue
            try:
                yield validate_document(raw, source=source, default_tenant=default_tenant,
                                        max_bytes=max_bytes)
            except DocumentRejected as rejected:
                yield rejected


def _load_folder(
    root: Path, default_tenant: str, max_bytes: int
) -> Iterator[Document | DocumentRejected]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in FOLDER_SUFFIXES:
            continue
        doc_id = rel.rsplit(".", 1)[0]
        data = path.read_bytes()
        if len(data) > max_bytes * 4:  # markup overhead allowance; text size checked below
            yield DocumentRejected(doc_id, f"too large: {len(data)} bytes on disk", source=rel)
            continue
        if b"\x00" in data:
            yield DocumentRejected(doc_id, "binary content (NUL bytes)", source=rel)
            continue
        try:
            markup = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            yield DocumentRejected(doc_id, f"not UTF-8 text (byte {exc.start})", source=rel)
            continue
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            title, text = html_to_text(markup)
        elif suffix in (".md", ".markdown"):
            title, text = markdown_to_text(markup)
        else:
            title, text = "", _tidy(markup)
        raw = {"id": doc_id, "title": title or path.stem.replace("-", " ").replace("_", " "),
               "text": text, "metadata": {"path": rel}}
        try:
            yield validate_document(raw, source=rel, default_tenant=default_tenant,
                                    max_bytes=max_bytes)
        except DocumentRejected as rejected:
            yield rejected


def load_corpus(
    path: Path, *, default_tenant: str = DEFAULT_TENANT, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[Document | DocumentRejected]:
    """Documents from a ``.jsonl`` file or a folder of Markdown/HTML/text files.

    Yields a :class:`DocumentRejected` (not raised) for every bad document.
    """
    validate_id("tenant id", default_tenant)
    if path.is_dir():
        yield from _load_folder(path, default_tenant, max_bytes)
    elif path.is_file():
        yield from _load_jsonl(path, default_tenant, max_bytes)
    else:
        raise FileNotFoundError(f"corpus {path} is neither a file nor a folder")
