"""Language understanding: intents, entities and out-of-scope detection.

The runtime API (:class:`NLUModel`, :class:`Understanding`, :class:`EntityMatch`)
needs only onnxruntime, numpy and ``tokenizers``; training (``parley nlu train``)
needs the ``train`` extra. See ``docs/nlu.md``.
"""

from agents.nlu.model import EntityMatch, ManifestError, NLUModel, Understanding

__all__ = ["EntityMatch", "ManifestError", "NLUModel", "Understanding"]
