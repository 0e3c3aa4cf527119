"""Temperature matching and the Γ mask (kappaflow.grid)."""

from __future__ import annotations

import numpy as np

from kappaflow.grid import REFERENCE_TEMPERATURE, gamma_acoustic_mask, temperature_index


def test_temperatures_are_matched_by_value_not_position():
    assert REFERENCE_TEMPERATURE == 300.0
    assert temperature_index([600.0, 300.0], 300) == 1
    assert temperature_index([300.0 + 1e-9], 300.0) == 0
    assert temperature_index([300.1], 300.0) is None
    assert temperature_index(None, 300.0) is None
    assert temperature_index(300.0, 300.0) == 0


def test_gamma_mask_finds_gamma_anywhere():
    q = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [0.2, 0.2, 0.0]])
    mask = gamma_acoustic_mask(q, (4, 6))
    assert mask.sum() == 6  # Γ and its periodic image, three acoustic bands each
    assert mask[1, :3].all() and mask[2, :3].all() and not mask[1, 3:].any()
    assert not mask[0].any() and not mask[3].any()
