"""Avro bodies of one schema, compiled to a pair of plain Python functions.

fastavro walks the schema for every record it writes or reads: per value it
looks the type name up and compares strings, and per record it builds two sets
of field names to look for extras. Parley's events are small (9 or 10 fields, a
payload record, an array or two), so the walk is most of their cost: under
valgrind a ``ChatUnderstood`` of 171 bytes took fastavro 141 k instructions to
encode and 122 k to decode. ``compile_schema`` writes the walk out once per
schema as the source of two functions, with every field's name, order and type
fixed in the code, and compiles them.

The output is the same as fastavro's, byte for byte (``tests/unit/test_avro_compiled.py``
checks it against fastavro on random records of every schema in ``schemas/``),
with fastavro's rules for what a record may leave out: a missing field takes
its default, or ``None`` when its type is a union with ``null``. Timestamps go
through fastavro's own logical-type functions, so a ``timestamp-millis`` is
written from a ``datetime`` or from epoch milliseconds and read as an aware
UTC ``datetime``, exactly as before.

Only what Parley's schemas use is compiled: records, arrays, maps, the
primitives, enums, fixed, ``timestamp-millis`` and unions of ``null`` with one
other type. Anything else raises :class:`Unsupported`, and the codec keeps
fastavro for that schema; so does an array of values written as no bytes
(``null``), where a corrupt count would loop without reading. Reading another
writer's schema (resolution between versions) is always fastavro's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from fastavro.logical_readers import LOGICAL_READERS
from fastavro.logical_writers import LOGICAL_WRITERS

from kernel.errors import SchemaError

__all__ = ["Reader", "Unsupported", "Writer", "compile_schema"]

#: Appends the Avro body of a record to a bytearray.
Writer = Callable[[bytearray, dict[str, Any]], None]
#: Reads one record's Avro body from ``data`` at ``pos``: the record and the end.
Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class Unsupported(SchemaError):
    """The schema uses something this compiler does not: fastavro stays in charge."""


def _write_long(out: bytearray, n: int) -> None:
    """Zig-zag varint of ``n`` (the generated code inlines the one-byte case)."""
    if not -(1 << 63) <= n < 1 << 63:
        raise ValueError(f"{n} is out of the range of an Avro long")
    z = (n << 1) ^ (n >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        pos += 1
        b = data[pos]
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos + 1


_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
_prepare_millis = LOGICAL_WRITERS["long-timestamp-millis"]
_read_millis = LOGICAL_READERS["long-timestamp-millis"]


def _millis(value: Any) -> int:
    return int(_prepare_millis(value, _MILLIS))


def _timestamp(millis: int) -> Any:
    return _read_millis(millis, _MILLIS, _MILLIS)


def _truncated(what: str) -> EOFError:
    return EOFError(f"the body ends inside {what}")


_HELPERS: dict[str, Any] = {
    "_write_long": _write_long, "_read_long": _read_long, "_millis": _millis,
    "_timestamp": _timestamp, "_truncated": _truncated,
    "_pack_f": _FLOAT.pack, "_pack_d": _DOUBLE.pack,
    "_unpack_f": _FLOAT.unpack_from, "_unpack_d": _DOUBLE.unpack_from,
}


class _Compiler:
    """Emits the source of ``write(out, record)`` and ``read(data, pos)``."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, Any]] = {}  # named types, by full name
        self.open: set[str] = set()  # named types being compiled (recursion)
        self.constants: dict[str, Any] = {}
        self._counter = 0

    def var(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    def constant(self, value: Any) -> str:
        name = self.var("_k")
        self.constants[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema in self.open:
                raise Unsupported(f"recursive type {schema}")
            if schema not in self.names:
                raise Unsupported(f"unknown named type {schema}")
            return self.names[schema]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            self.names[schema["name"]] = schema
        return schema

    @staticmethod
    def logical(schema: Any) -> str | None:
        """``long-timestamp-millis`` and the like, for a logical type fastavro converts.

        fastavro ignores a logical type it does not know, and so does this compiler;
        one it converts is compiled when it is ``timestamp-millis`` and refused otherwise.
        """
        if not isinstance(schema, dict) or "logicalType" not in schema:
            return None
        name = f"{schema['type']}-{schema['logicalType']}"
        if name in LOGICAL_WRITERS and name != "long-timestamp-millis":
            raise Unsupported(f"logical type {schema['logicalType']}")
        return name

    def zero_width(self, schema: Any) -> bool:
        """Whether values of ``schema`` are written as no bytes at all."""
        schema = self.resolve(schema)
        if schema == "null":
            return True
        if isinstance(schema, dict) and schema["type"] == "record":
            return all(self.zero_width(f["type"]) for f in schema["fields"])
        if isinstance(schema, dict) and schema["type"] == "fixed":
            return int(schema["size"]) == 0
        return False

    # -- writing ---------------------------------------------------------------------

    def write(self, schema: Any, value: str, ind: str) -> list[str]:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self.write_union(schema, value, ind)
        kind = schema if isinstance(schema, str) else schema["type"]
        if self.logical(schema) == "long-timestamp-millis":
            ms = self.var("ms")
            return [f"{ind}{ms} = {value} if {value}.__class__ is int else _millis({value})",
                    *self.write_long(ms, ind)]
        match kind:
            case "null":
                return []
            case "boolean":
                return [f"{ind}out.append(1 if {value} else 0)"]
            case "int" | "long":
                return self.write_long(value, ind)
            case "float":
                return [f"{ind}out += _pack_f(float({value}))"]
            case "double":
                return [f"{ind}out += _pack_d(float({value}))"]
            case "string":
                raw = self.var("s")
                return [f"{ind}{raw} = {value}.encode()", *self.write_bytes(raw, ind)]
            case "bytes":
                return self.write_bytes(value, ind)
            case "record":
                return self.write_record(schema, value, ind)
            case "array":
                return self.write_block(schema["items"], value, ind, is_map=False)
            case "map":
                return self.write_block(schema["values"], value, ind, is_map=True)
            case "enum":
                index = self.constant({s: i for i, s in enumerate(schema["symbols"])})
                i, refusal = self.var("i"), f"is not a symbol of {schema['name']}"
                return [f"{ind}{i} = {index}.get({value})",
                        f"{ind}if {i} is None:",
                        f"{ind}    raise ValueError(f'{{{value}!r}} {refusal}')",
                        *self.write_long(i, ind, counted=True)]
            case "fixed":
                size = int(schema["size"])
                return [f"{ind}if len({value}) != {size}:",
                        f"{ind}    raise ValueError('{schema['name']} needs {size} bytes')",
                        f"{ind}out += {value}"]
        raise Unsupported(f"type {kind!r}")

    def write_long(self, value: str, ind: str, *, counted: bool = False) -> list[str]:
        """``counted``: ``value`` is a length, never negative."""
        if value.isidentifier():
            n = value
            lines = []
        else:
            n = self.var("n")
            lines = [f"{ind}{n} = {value}"]
        return [*lines,
                f"{ind}if {n} < 64:" if counted else f"{ind}if 0 <= {n} < 64:",
                f"{ind}    out.append({n} << 1)",
                f"{ind}else:",
                f"{ind}    _write_long(out, {n})"]

    def write_bytes(self, raw: str, ind: str) -> list[str]:
        return [*self.write_long(f"len({raw})", ind, counted=True), f"{ind}out += {raw}"]

    def write_record(self, schema: dict[str, Any], value: str, ind: str) -> list[str]:
        name = schema["name"]
        self.open.add(name)
        lines = []
        for field in schema["fields"]:
            key, ftype = field["name"], field["type"]
            item = self.var("v")
            if "default" in field:
                default = self.constant(field["default"])
                lines.append(f"{ind}{item} = {value}.get({key!r}, {default})")
            elif isinstance(ftype, list) and "null" in ftype:
                lines.append(f"{ind}{item} = {value}.get({key!r})")
            else:  # a KeyError names the missing field
                lines.append(f"{ind}{item} = {value}[{key!r}]")
            lines += self.write(ftype, item, ind)
        self.open.discard(name)
        return lines

    def write_block(self, items: Any, value: str, ind: str, *, is_map: bool) -> list[str]:
        count, element = self.var("c"), self.var("e")
        lines = [f"{ind}{count} = len({value})", f"{ind}if {count}:",
                 *self.write_long(count, ind + "    ", counted=True)]
        if is_map:
            key = self.var("key")
            lines.append(f"{ind}    for {key}, {element} in {value}.items():")
            lines += self.write("string", key, ind + "        ")
        else:
            lines.append(f"{ind}    for {element} in {value}:")
        lines += self.write(items, element, ind + "        ") or [f"{ind}        pass"]
        return [*lines, f"{ind}out.append(0)"]

    def write_union(self, branches: list[Any], value: str, ind: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than null and one type")
        null = branches.index("null")
        other = branches[1 - null]
        return [f"{ind}if {value} is None:", f"{ind}    out.append({null << 1})",
                f"{ind}else:", f"{ind}    out.append({(1 - null) << 1})",
                *(self.write(other, value, ind + "    ") or [f"{ind}    pass"])]

    # -- reading ---------------------------------------------------------------------

    def read(self, schema: Any, target: str, ind: str) -> list[str]:
        """Lines that read one value into the variable ``target``."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self.read_union(schema, target, ind)
        kind = schema if isinstance(schema, str) else schema["type"]
        if self.logical(schema) == "long-timestamp-millis":
            return [*self.read_long(target, ind), f"{ind}{target} = _timestamp({target})"]
        match kind:
            case "null":
                return [f"{ind}{target} = None"]
            case "boolean":
                return [f"{ind}{target} = data[pos] != 0", f"{ind}pos += 1"]
            case "int" | "long":
                return self.read_long(target, ind)
            case "float":
                return [f"{ind}{target} = _unpack_f(data, pos)[0]", f"{ind}pos += 4"]
            case "double":
                return [f"{ind}{target} = _unpack_d(data, pos)[0]", f"{ind}pos += 8"]
            case "string":
                return self.read_bytes(target, ind, ".decode()")
            case "bytes":
                return self.read_bytes(target, ind, "")
            case "record":
                return self.read_record(schema, target, ind)
            case "array":
                return self.read_block(schema["items"], target, ind, is_map=False)
            case "map":
                return self.read_block(schema["values"], target, ind, is_map=True)
            case "enum":
                symbols = self.constant(tuple(schema["symbols"]))
                count = len(schema["symbols"])
                return [*self.read_long(target, ind),
                        f"{ind}if not 0 <= {target} < {count}:",
                        f"{ind}    raise ValueError(f'enum index {{{target}}} out of range')",
                        f"{ind}{target} = {symbols}[{target}]"]
            case "fixed":
                width = int(schema["size"])
                return [f"{ind}if pos + {width} > size:",
                        f"{ind}    raise _truncated('a fixed')",
                        f"{ind}{target} = data[pos:pos + {width}]", f"{ind}pos += {width}"]
        raise Unsupported(f"type {kind!r}")

    def read_long(self, target: str, ind: str) -> list[str]:
        return [f"{ind}{target} = data[pos]",
                f"{ind}if {target} < 0x80:",
                f"{ind}    {target} = ({target} >> 1) ^ -({target} & 1)",
                f"{ind}    pos += 1",
                f"{ind}else:",
                f"{ind}    {target}, pos = _read_long(data, pos)"]

    def read_bytes(self, target: str, ind: str, convert: str) -> list[str]:
        length, end = self.var("n"), self.var("end")
        return [*self.read_long(length, ind),
                f"{ind}{end} = pos + {length}",
                f"{ind}if {end} > size or {length} < 0:",
                f"{ind}    raise _truncated('a string or bytes')",
                f"{ind}{target} = data[pos:{end}]{convert}",
                f"{ind}pos = {end}"]

    def read_record(self, schema: dict[str, Any], target: str, ind: str) -> list[str]:
        name = schema["name"]
        self.open.add(name)
        lines, items = [], []
        for field in schema["fields"]:
            item = self.var("v")
            lines += self.read(field["type"], item, ind)
            items.append(f"{field['name']!r}: {item}")
        self.open.discard(name)
        return [*lines, f"{ind}{target} = {{{', '.join(items)}}}"]

    def read_block(self, items: Any, target: str, ind: str, *, is_map: bool) -> list[str]:
        if not is_map and self.zero_width(items):
            # a corrupt count would loop without reading a byte; fastavro copes alike
            raise Unsupported("an array of values written as no bytes")
        count, element, key = self.var("c"), self.var("e"), self.var("key")
        inner = ind + "        "
        lines = [f"{ind}{target} = {{}}" if is_map else f"{ind}{target} = []",
                 f"{ind}while True:", *self.read_long(count, ind + "    "),
                 f"{ind}    if {count} == 0:", f"{ind}        break",
                 f"{ind}    if {count} < 0:",  # a block with its size in bytes
                 f"{ind}        {count} = -{count}",
                 *self.read_long(self.var("nbytes"), ind + "        "),
                 f"{ind}    for _ in range({count}):"]
        if is_map:
            lines += self.read("string", key, inner)
        lines += self.read(items, element, inner)
        store = f"{target}[{key}] = {element}" if is_map else f"{target}.append({element})"
        return [*lines, f"{inner}{store}"]

    def read_union(self, branches: list[Any], target: str, ind: str) -> list[str]:
        index = self.var("u")
        lines = self.read_long(index, ind)
        for i, branch in enumerate(branches):
            lines.append(f"{ind}{'if' if i == 0 else 'elif'} {index} == {i}:")
            lines += self.read(branch, target, ind + "    ")
        return [*lines, f"{ind}else:",
                f"{ind}    raise ValueError(f'union index {{{index}}} out of range')"]


def compile_schema(parsed: Any) -> tuple[Writer, Reader]:
    """The writer and reader of ``parsed`` (a schema from ``fastavro.parse_schema``)
    as compiled functions; :class:`Unsupported` if it uses what is not compiled."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise Unsupported("only record schemas are compiled")
    compiler = _Compiler()
    write_lines = compiler.write(parsed, "record", "    ")
    compiler.names.clear()
    read_lines = compiler.read(parsed, "record", "    ")
    source = "\n".join([
        "def write(out, record):", *(write_lines or ["    pass"]),
        "def read(data, pos):", "    size = len(data)", *read_lines, "    return record, pos", "",
    ])
    namespace: dict[str, Any] = {**_HELPERS, **compiler.constants}
    exec(compile(source, f"<avro {parsed['name']}>", "exec"), namespace)
    return namespace["write"], namespace["read"]
