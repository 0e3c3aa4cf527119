"""What every step shares: the material of a record, and the placeholder outputs of a
step that has no result (a closed gate or a failure upstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kappaflow import storage
from kappaflow.runtime import log, provenance
from kappaflow.steps.resume import add_outputs
from kappaflow.structures import MaterialSpec

#: columns of thermal_expansion.csv (also written, empty, by a failed Grüneisen step)
THERMAL_EXPANSION_COLUMNS = (
    "temperature",
    "gamma",
    "heat_capacity",
    "alpha_V",
    "alpha_linear",
    "above_melting",
)


def material_of(record: dict[str, Any]) -> MaterialSpec:
    """The MaterialSpec stored in a step's record (relaxed.extxyz info, kappa.json)."""
    m = dict(record["material"])
    for key in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
        m[key] = tuple(m[key])
    return MaterialSpec(**m)


def write_placeholders(
    record: dict[str, Any],
    *,
    what: str,
    json_path: str | Path | None = None,
    hdf5: tuple[tuple[str | Path, dict[str, Any]], ...] = (),
    csv_path: str | Path | None = None,
    attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A step without a result still writes every declared output: status-only HDF5
    placeholders (attribute ``kappaflow_status``, refused as data by
    :mod:`kappaflow.storage`; ``hdf5`` pairs a path with the few datasets it keeps), an
    empty thermal-expansion table, and the record with its status and provenance; then it
    logs the status and returns the record."""
    record.setdefault("provenance", provenance())
    for path, datasets in hdf5:
        storage.write_hdf5(path, datasets, {"kappaflow_status": record["status"], **(attrs or {})})
    if csv_path is not None:
        storage.write_csv(csv_path, pd.DataFrame(columns=list(THERMAL_EXPANSION_COLUMNS)))
    if json_path is not None:
        add_outputs(record, *(path for path, _ in hdf5), csv_path)
        storage.write_json(json_path, record)
    log(f"{what}: no result ({record['status']})")
    return record


def write_fc_placeholders(
    status: str,
    *,
    fc_path: str | Path,
    order: int,
    forces_path: str | Path,
    model: str,
    attrs: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Status-only fc and forces files of a force-constant step that has no result."""
    meta = {"model": model, **(attrs or {})}
    if error is not None:
        meta["error"] = error
    storage.write_forces(forces_path, None, status=status, **meta)
    storage.write_fc(fc_path, order, None, None, status=status, attrs=attrs)


def force_log(info: dict[str, Any]) -> str:
    """One log line of how the forces of a displacement set were evaluated."""
    rate = info.get("structures_per_s") or 0.0
    return (
        f"forces: {info['structures']} supercells, path {info['path']} ({info['reason']}), "
        f"{info['model_calls']} model calls, {info['seconds']:.1f} s ({rate:.2f}/s)"
    )
