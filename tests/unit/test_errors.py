"""One error tree: every exception class of the project derives from ParleyError, and the
tree drawn in kernel/errors.py names each of them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import kernel.errors
from kernel.errors import ParleyError

PACKAGES = ("kernel", "schemas", "streams", "gateway", "agents", "infra", "parley", "benchmarks")


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules = [root.__name__] + [m.name for m in pkgutil.walk_packages(
            root.__path__, prefix=f"{package}.") if not m.name.endswith("__main__")]
        for name in modules:
            module = importlib.import_module(name)
            for obj in vars(module).values():
                if (inspect.isclass(obj) and issubclass(obj, BaseException)
                        and obj.__module__ == name):
                    found[f"{name}.{obj.__name__}"] = obj
    return found


EXCEPTIONS = project_exceptions()


def test_the_project_defines_exceptions() -> None:
    assert len(EXCEPTIONS) > 20


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_exception_derives_from_the_one_base(name: str) -> None:
    assert issubclass(EXCEPTIONS[name], ParleyError), name


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_exception_is_in_the_drawn_tree(name: str) -> None:
    assert EXCEPTIONS[name].__name__ in (kernel.errors.__doc__ or ""), name


def test_exceptions_read_well() -> None:
    from agents.nlu.errors import DataError
    from gateway.bus import DeliveryError
    from streams.errors import TopicNotFoundError
    from streams.keys import InvalidIdError

    assert str(InvalidIdError("tenant id", "a b")).startswith("invalid tenant id 'a b'")
    assert isinstance(InvalidIdError("tenant id", "a b"), ValueError)
    missing = TopicNotFoundError("kb.documents")
    assert missing.topic == "kb.documents" and "does not exist" in str(missing)
    assert str(DeliveryError("refused")) == "the broker did not take the event: refused"
    assert str(DeliveryError("timed out", possibly_written=True)) == (
        "the broker did not confirm the event in time: timed out")
    assert str(DataError(Path("x.jsonl"), 3, "not JSON")) == "x.jsonl:3: not JSON"
