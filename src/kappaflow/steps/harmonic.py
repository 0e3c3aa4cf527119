"""Step 2, harmonic: fc2 forces -> fc2.hdf5, phonons on the mesh and the κ gate
(PROTOCOL §4-§5) -> phonons.json.

Before the gate, inputs that cannot give a κ are recorded failures (in
:data:`kappaflow.gates.FAILURE_ORDER`): a relaxed cell that is not 3-D periodic or whose
atoms are separated by vacuum, displaced supercells without any force, phonons that are all
zero. The measurements behind the flags (acoustic sum rule, volume change) are recorded in
``checks``; the flags themselves are decided when the results are gathered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kappaflow import storage
from kappaflow.calculators import LoadedModel, ModelSpec, load_calculator
from kappaflow.forces import ForceError, ForceSettings
from kappaflow.gates import OK, ZERO_FORCES, ZERO_FREQUENCIES, error_fields, failure_status, gate
from kappaflow.progress import Progress
from kappaflow.runtime import log, provenance
from kappaflow.settings import Phono3pySettings
from kappaflow.steps.common import force_log, material_of, write_fc_placeholders
from kappaflow.steps.resume import add_outputs, fc_settings, made_from, with_made_from
from kappaflow.structures import periodicity_problem


def volume_change(relax: dict[str, Any]) -> float | None:
    """V_relaxed / V_input − 1 of a relax record (None when it has no volumes)."""
    v0, v1 = relax.get("volume_initial"), relax.get("volume_final")
    if not v0 or v1 is None:
        return None
    return float(v1) / float(v0) - 1.0


def run_fc2(
    *,
    relaxed: str | Path,
    model: ModelSpec,
    settings: Phono3pySettings,
    out_fc2: str | Path,
    out_forces: str | Path,
    out_disp: str | Path,
    out_phonons: str | Path,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    loaded: LoadedModel | None = None,
    force_settings: ForceSettings | None = None,
) -> dict[str, Any]:
    """fc2 forces -> fc2.hdf5, harmonic frequencies on the mesh, and the κ gate.

    A failed relaxation, or an exception here, gives status-only placeholders and a
    phonons.json whose status the fc3 and κ steps pass on.
    """
    from kappaflow import phonons

    made = {"inputs": {"relaxed": relaxed}, "settings": fc_settings(settings, force_settings)}
    atoms, record = storage.read_structure(relaxed)
    material = material_of(record)
    ph3 = phonons.init_phono3py(atoms, material, settings)
    storage.write_phono3py_yaml(out_disp, ph3)
    out: dict[str, Any] = {
        "broken_symmetry": record["relax"]["broken_symmetry"],
        "imaginary_freqs": False,
        "displacements": phonons.displacement_counts(ph3),
        "settings": settings.forces_dict(),
        "model": record["model"],
        "errors": list(record.get("errors", [])),
        "checks": {"volume_change": volume_change(record["relax"])},
    }
    t0 = time.perf_counter()
    failure = None if record.get("status", OK) == OK else record["status"]
    cell = periodicity_problem(atoms)
    if cell is not None:  # before a relax failure: the cause, not its consequence
        failure = cell[0]
        if f"{cell[0]}: {cell[1]}" not in out["errors"]:
            out["errors"].append(f"{cell[0]}: {cell[1]}")
    if failure is None:
        loaded = loaded or load_calculator(model, device, model_dir)
        out["model"] = loaded.info
        n_sc = len(ph3.phonon_supercells_with_displacements)
        log(f"fc2: {n_sc} supercells of {len(ph3.phonon_supercell)} atoms")
        try:
            run = phonons.force_run(
                ph3.phonon_supercells_with_displacements,
                loaded,
                force_settings,
                progress=Progress("fc2 forces", "supercells"),
            )
            out["force_evaluation"] = run.info
            log(force_log(run.info))
            t_forces = time.perf_counter() - t0
            out["checks"]["sum_rule_violation"] = phonons.sum_rule_violation(run.forces)
            zero = phonons.zero_force_supercells(
                ph3.phonon_supercells_with_displacements, run.forces
            )
            if zero:
                failure = ZERO_FORCES
                out["errors"].append(
                    f"{ZERO_FORCES}: {len(zero)} of {n_sc} displaced fc2 supercells have no "
                    f"force on any atom (< {phonons.ZERO_FORCE:g} eV/Å; first: {zero[0]}): the "
                    "model sees no interaction"
                )
            else:
                fc2 = phonons.fc2_from_forces(ph3, run.forces)
                freqs = phonons.grid_frequencies(atoms, material, fc2, settings)
        except ForceError:  # bad forces settings: an input error, not physics
            raise
        except Exception as exc:  # recorded as data (k_SRME ForceConstantError)
            failure = failure_status(exc, "fc2")
            fields = error_fields(exc)
            out["errors"] += fields["errors"]
            out["error_traceback"] = fields["error_traceback"]
    if failure is None:
        the_gate = gate(
            phonons.has_imaginary_modes(freqs, settings.frequency_threshold),
            record["relax"]["broken_symmetry"],
            settings.conductivity_broken_symmetry,
            zero_frequencies=phonons.frequencies_all_zero(freqs),
        )
    if failure is None and the_gate.status == ZERO_FREQUENCIES:  # no fc2 worth keeping
        failure = ZERO_FREQUENCIES
        out.update(
            min_frequency_THz=float(np.nanmin(freqs)), max_frequency_THz=float(np.nanmax(freqs))
        )
        out["errors"].append(
            f"{ZERO_FREQUENCIES}: no phonon besides the Γ acoustic modes on the "
            f"{'x'.join(map(str, settings.mesh_for(material)))} mesh reaches "
            f"{phonons.ZERO_FREQUENCY:g} THz (largest |ω| {np.nanmax(np.abs(freqs)):.2e} THz): "
            "nothing carries heat"
        )
    if failure is not None:
        log(f"fc2: no force constants ({failure})")
        write_fc_placeholders(
            failure, fc_path=out_fc2, order=2, forces_path=out_forces, model=model.key
        )
        out.update(
            status=failure,
            timing_s={"fc2_total": time.perf_counter() - t0},
            provenance=provenance(backend=settings.backend),
        )
        with_made_from(out, made_from(**made, model=model))
        storage.write_json(out_phonons, add_outputs(out, out_disp, out_fc2, out_forces))
        return out
    storage.write_forces(out_forces, run.forces, model=model.key)
    storage.write_fc(out_fc2, 2, fc2, ph3.phonon_primitive.p2s_map)
    out.update(
        status=the_gate.status,
        imaginary_freqs=the_gate.imaginary_freqs,
        broken_symmetry=the_gate.broken_symmetry,
        min_frequency_THz=float(np.nanmin(freqs)),
        gamma_frequencies_THz=freqs[0].tolist(),
        timing_s={"fc2_forces": t_forces, "fc2_total": time.perf_counter() - t0},
        provenance=provenance(backend=settings.backend),
    )
    with_made_from(out, made_from(**made, model=model, info=loaded.info))
    storage.write_json(out_phonons, add_outputs(out, out_disp, out_fc2, out_forces))
    log(f"fc2 done: gate {the_gate.status}, lowest frequency {out['min_frequency_THz']:.4f} THz")
    return out
