"""Thread settings of one job. Imports nothing heavy, so it can run first.

phono3py's C backend reads ``OMP_NUM_THREADS`` and its Rust backend (phonors)
``RAYON_NUM_THREADS`` when their pools start, i.e. at first use after import; both
must equal the job's Snakemake ``threads``. torch is told directly when imported.
"""

from __future__ import annotations

import os
import sys
import warnings

THREAD_VARS = ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def configure_threads(threads: int) -> dict[str, int]:
    """Set every thread-count variable to ``threads`` (>= 1) and return what was set."""
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if "phonors" in sys.modules or "phono3py._phono3py" in sys.modules:
        current = {v: os.environ.get(v) for v in THREAD_VARS[:2]}
        if any(c != str(threads) for c in current.values()):
            warnings.warn(
                "phono3py was imported before configure_threads(); its thread pools may "
                f"ignore the new setting ({current})",
                RuntimeWarning,
                stacklevel=2,
            )
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return {var: threads for var in THREAD_VARS}


def current_threads() -> dict[str, str | None]:
    return {var: os.environ.get(var) for var in THREAD_VARS}
