"""Every module declares its public surface (``__all__``), and every name in it exists."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "schemas", "streams", "gateway", "agents", "infra", "parley", "benchmarks",
            "examples")


def modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            has_code = any(not isinstance(node, ast.Expr) for node in tree.body)
            if path.name == "__init__.py" and not has_code:
                continue  # a package with nothing of its own: a docstring at most
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if path.name == "__init__.py" else parts))
    return found


@pytest.mark.parametrize("name", modules())
def test_every_module_declares_its_public_api(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names {attr}, which it lacks"
