"""Step 1, relax: one material of a structures file -> relaxed.extxyz (PROTOCOL §3)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ase import Atoms

from kappaflow import storage
from kappaflow.calculators import LoadedModel, ModelSpec, load_calculator
from kappaflow.gates import OK, error_fields, failure_status
from kappaflow.runtime import log, provenance
from kappaflow.settings import RelaxSettings, StructureDefaults
from kappaflow.steps.resume import relax_made_from, with_made_from
from kappaflow.structures import (
    MaterialError,
    MaterialSpec,
    frame_for,
    materials_table,
    periodicity_problem,
)


def load_material(
    structures: str | Path,
    material_id: str,
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[Atoms, MaterialSpec]:
    """(Atoms, MaterialSpec) of one material of a structures file."""
    frames = storage.read_structures(structures)
    table = materials_table(frames, defaults, overrides)
    if material_id not in table:
        raise MaterialError(f"material {material_id!r} is not in {structures}")
    return frame_for(frames, material_id), table[material_id]


def run_relax(
    *,
    structures: str | Path,
    material_id: str,
    model: ModelSpec,
    settings: RelaxSettings,
    out_relaxed: str | Path,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    loaded: LoadedModel | None = None,
) -> dict[str, Any]:
    """Relax one material; writes relaxed.extxyz with the relax record in its info.

    An exception during the relaxation is recorded (status ``relax_error``, the input
    structure written) and passed on to the later steps as a failure of the material.
    """
    from kappaflow.relax import relax_structure, unrelaxed_record

    atoms, material = load_material(structures, material_id, defaults, overrides)
    loaded = loaded or load_calculator(model, device, model_dir)
    log(f"relax {material_id} ({material.desc}) with {model.key} on {loaded.info['device']}")
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "material": material.as_dict(),
        "relax_settings": settings.as_dict(),
        "model": loaded.info,
        "status": OK,
    }
    problem = periodicity_problem(atoms)
    if problem is not None:  # not a crystal: nothing to relax (recorded, as the fc2 gate)
        record.update(status=problem[0], errors=[f"{problem[0]}: {problem[1]}"])
        record["relax"] = unrelaxed_record(atoms, settings.symprec)
        log(f"relax skipped: {problem[1]}")
        out_atoms = atoms
    else:
        try:
            result = relax_structure(atoms, loaded.calculator, settings)
        except Exception as exc:  # recorded as data, as k_SRME's RelaxError
            record.update(status=failure_status(exc, "relax"), **error_fields(exc))
            record["relax"] = unrelaxed_record(atoms, settings.symprec)
            log(f"relax failed: {record['errors'][0]}")
            out_atoms = atoms
        else:
            log(
                f"relaxed in {result.steps} steps, space group "
                f"{result.initial_space_group_number} -> {result.relaxed_space_group_number}, "
                f"max force {result.max_force:.2e} eV/Å"
            )
            record["relax"] = result.record()
            out_atoms = result.atoms
    record["timing_s"] = {"relax": time.perf_counter() - t0}
    record["provenance"] = provenance()
    with_made_from(record, relax_made_from(atoms, material, settings, model, loaded.info))
    storage.write_structure(out_relaxed, out_atoms, record)
    return record
