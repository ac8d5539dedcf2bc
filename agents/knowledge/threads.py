"""Keeping query-time linear algebra on one core.

numpy's OpenBLAS starts one thread per core. On a busy machine a 10k x 384
matrix-vector product then takes ~5 ms at the median and ~30 ms at p99
instead of ~0.4 ms / ~1.5 ms single-threaded (measured here): the threads
wait for each other. A knowledge worker runs many small products next to an
event loop and ONNX Runtime, so it limits BLAS to one thread, process-wide,
with threadpoolctl (present with scikit-learn; without it, nothing changes and
``OPENBLAS_NUM_THREADS=1`` in the environment does the same).
"""

from __future__ import annotations

import logging

__all__ = ["limit_blas_threads"]

logger = logging.getLogger(__name__)

_limiter: object | None = None


def limit_blas_threads(threads: int = 1) -> bool:
    """Limit BLAS thread pools to ``threads``; False if threadpoolctl is missing."""
    global _limiter
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logger.debug("threadpoolctl is not installed; BLAS thread count left as is")
        return False
    _limiter = threadpool_limits(limits=threads, user_api="blas")  # held: stays in force
    return True
