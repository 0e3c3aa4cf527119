"""Conventions of the sampling shared by every stage: temperatures and the Γ point.

* :data:`REFERENCE_TEMPERATURE`: the DFT κ and γ references are at 300 K only (PROTOCOL §5).
* :func:`temperature_index`: the one way temperatures are matched, by value (PROTOCOL §6),
  never by position.
* :func:`gamma_acoustic_mask`: the three acoustic modes at Γ, found from the q-points (not
  by assuming Γ comes first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: K; the temperature of the DFT references (κ and γ)
REFERENCE_TEMPERATURE = 300.0
#: K; two temperatures closer than this are the same temperature
TEMPERATURE_ATOL = 1e-6


def temperature_index(temperatures: Any, temperature: float) -> int | None:
    """Index of ``temperature`` in ``temperatures`` (matched by value), None when absent."""
    if temperatures is None:
        return None
    temps = np.atleast_1d(np.asarray(temperatures, dtype=float))
    hits = np.flatnonzero(np.abs(temps - float(temperature)) <= TEMPERATURE_ATOL)
    return int(hits[0]) if hits.size else None


def has_temperature(temperatures: Any, temperature: float) -> bool:
    return temperature_index(temperatures, temperature) is not None


def gamma_acoustic_mask(qpoints: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Boolean mask of ``shape`` (q, band): True for the three lowest bands at q = Γ
    (reduced q-points with integer coordinates)."""
    q = np.asarray(qpoints, dtype=float).reshape(-1, 3)
    mask = np.zeros(tuple(shape), dtype=bool)
    at_gamma = np.all(np.abs(q - np.rint(q)) < 1e-8, axis=1)
    mask[at_gamma, :3] = True
    return mask
