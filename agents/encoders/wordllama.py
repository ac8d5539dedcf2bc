"""Pretrained token embeddings that ship in the ``wordllama`` wheel.

``wordllama`` (MIT) bundles 256-d token embeddings distilled from LLaMA-2 and
the matching tokenizer. Its loader looks for the tokenizer in the wrong folder
and then tries to download, so the files are read directly here. Training
copies the tokenizer JSON into the model folder and bakes the embedding matrix
into the ONNX graph (lookup + mean pool + L2 norm), so inference needs neither
``wordllama`` nor this module's training helpers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

__all__ = [
    "TokenBatch",
    "TokenEncoder",
    "load_wordllama",
    "mean_pool",
    "wordllama_files",
]

TokenBatch = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""(token ids, row of each id), flattened over a batch."""

_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
_WEIGHTS = "weights/l2_supercat_256.safetensors"


def wordllama_files() -> tuple[Path, Path]:
    """Paths of the bundled tokenizer JSON and safetensors weights."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "training needs the 'wordllama' package (pip install 'parley[train]')"
        )
    root = Path(spec.origin).parent
    tok, weights = root / _TOKENIZER, root / _WEIGHTS
    for path in (tok, weights):
        if not path.is_file():
            raise RuntimeError(f"wordllama is installed but {path} is missing")
    return tok, weights


def load_wordllama() -> tuple[Tokenizer, npt.NDArray[np.float16]]:
    """The bundled tokenizer and the (vocab, 256) float16 embedding matrix."""
    from safetensors.numpy import load_file

    tok_path, weights_path = wordllama_files()
    matrix = load_file(str(weights_path))["embedding.weight"]
    return Tokenizer.from_file(str(tok_path)), np.ascontiguousarray(matrix, dtype=np.float16)


class TokenEncoder:
    """Token ids per whitespace-separated word, memoised.

    LLaMA's SentencePiece pieces never span a word boundary, so encoding word
    by word (each with its leading ``▁``) gives the ids of the whole text while
    a cache makes repeated words free. Training and inference both use this.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, max_entries: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_entries = max_entries
        self._cache: dict[str, list[int]] = {}

    def n_pieces(self, word: str) -> int:
        """How many tokenizer pieces ``word`` takes: 1 for a common word, more for a rare one."""
        return len(self._word(word))

    def _word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = [min(i, self.vocab_size - 1)
                   for i in self.tokenizer.encode(word, add_special_tokens=False).ids]
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        ids: list[int] = []
        counts: list[int] = []
        cache, word = self._cache, self._word
        for text in texts:
            pieces = [i for w in text.split() for i in (cache.get(w) or word(w))]
            ids += pieces
            counts.append(len(pieces))
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        return np.array(ids, dtype=np.int64), rows


def mean_pool(
    matrix: npt.NDArray[np.float16], batch: TokenBatch, n_rows: int
) -> npt.NDArray[np.float32]:
    """L2-normalised mean of token vectors per row (zeros for a row without tokens).

    The ONNX graph computes exactly this; training uses it to build features.
    """
    ids, rows = batch
    dim = matrix.shape[1]
    sums = np.zeros((n_rows, dim), dtype=np.float32)
    np.add.at(sums, rows, matrix[ids].astype(np.float32))
    counts = np.bincount(rows, minlength=n_rows).astype(np.float32)[:, None]
    means = sums / np.maximum(counts, 1.0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return (means / np.maximum(norms, 1e-12)).astype(np.float32)
