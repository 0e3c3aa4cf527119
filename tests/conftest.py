"""Shared fixtures: reference directory, EMT fcc Cu on tiny supercells."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ase.build import bulk

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "phonondb-pbe"
PUBLISHED = REPO.parent / "shared" / "reference" / "published"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = Path(os.environ.get("KAPPAFLOW_REFERENCE_DIR", DEFAULT_REFERENCE))
    if not (path / "phononDB-PBE-structures.extxyz").exists():
        pytest.skip(f"reference data not found at {path} (set KAPPAFLOW_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def published_dir() -> Path:
    if not PUBLISHED.exists():
        pytest.skip(f"published results not found at {PUBLISHED}")
    return PUBLISHED


@pytest.fixture
def figures(monkeypatch):
    """The figures kappaflow's step functions save, by file name (saved as usual, then kept)."""
    from kappaflow import storage

    drawn = {}
    real = storage.write_figure

    def keep(path, fig, *more):
        for target in (path, *more):
            drawn[Path(target).name] = fig
        real(path, fig, *more)

    monkeypatch.setattr(storage, "write_figure", keep)
    return drawn


@pytest.fixture
def cu_fcc():
    """Primitive fcc Cu near EMT's lattice constant (matbench-discovery uses Cu, not Al)."""
    atoms = bulk("Cu", "fcc", a=3.59)
    atoms.info = {
        "material_id": "Cu-fcc",
        "fc2_supercell": [4, 4, 4],
        "fc3_supercell": [3, 3, 3],
        "q_mesh": [5, 5, 5],
    }
    return atoms
