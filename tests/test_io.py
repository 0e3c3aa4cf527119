"""Atomic writes and gated placeholders."""

from __future__ import annotations

import numpy as np
import pytest

from kappaflow import io


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), io.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_roundtrip_nan_as_null(tmp_path):
    io.write_json(tmp_path / "a.json.gz", {"k": [1.0, float("nan")], "arr": np.arange(3)})
    assert io.read_json(tmp_path / "a.json.gz") == {"k": [1.0, None], "arr": [0, 1, 2]}


def test_placeholder_fc_is_refused(tmp_path):
    io.write_fc(tmp_path / "fc3.hdf5", 3, None, None, status="imaginary_modes")
    assert io.fc_status(tmp_path / "fc3.hdf5") == "imaginary_modes"
    with pytest.raises(io.GatedOutputError, match="imaginary_modes"):
        io.read_fc(tmp_path / "fc3.hdf5", 3)
    io.write_forces(tmp_path / "f.hdf5", None, status="broken_symmetry")
    with pytest.raises(io.GatedOutputError):
        io.read_forces(tmp_path / "f.hdf5")
