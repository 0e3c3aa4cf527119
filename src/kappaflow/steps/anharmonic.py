"""Step 3, anharmonic: fc3 forces -> fc3.hdf5 (PROTOCOL §4), or status-only placeholders
when the harmonic gate is closed, when a displaced supercell has no force at all
(``zero_forces``) or when fc3 vanishes on its supercell (``zero_fc3``: a harmonic model,
whose κ would be limited by isotopes alone)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kappaflow import storage
from kappaflow.calculators import LoadedModel, ModelSpec, load_calculator
from kappaflow.forces import ForceError, ForceSettings
from kappaflow.gates import OK, ZERO_FC3, ZERO_FORCES, error_fields, failure_status
from kappaflow.progress import Progress
from kappaflow.runtime import log
from kappaflow.settings import Phono3pySettings
from kappaflow.steps.common import force_log, material_of, write_fc_placeholders
from kappaflow.steps.resume import fc_settings, hdf5_made_from, made_from


class _Meaningless(Exception):
    """fc3 that cannot mean anything: its status and reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def run_fc3(
    *,
    relaxed: str | Path,
    phonons_json: str | Path,
    model: ModelSpec,
    settings: Phono3pySettings,
    out_fc3: str | Path,
    out_forces: str | Path,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    loaded: LoadedModel | None = None,
    force_settings: ForceSettings | None = None,
) -> dict[str, Any]:
    """fc3 forces -> fc3.hdf5, or status-only placeholders when the gate is closed.

    Opt-in protocol deviations of ``settings`` (fc3 pair cutoff, random displacements
    fitted by symfc) are labelled in both files' ``protocol_deviations`` attribute."""
    from kappaflow import phonons

    inputs = {"relaxed": relaxed, "phonons": phonons_json}
    made = made_from(inputs, fc_settings(settings, force_settings), model)
    the_gate = storage.read_json(phonons_json)
    if the_gate["status"] != OK:
        log(f"fc3 skipped: {the_gate['status']}")
        write_fc_placeholders(
            the_gate["status"],
            fc_path=out_fc3,
            order=3,
            forces_path=out_forces,
            model=model.key,
            attrs=hdf5_made_from(made),
        )
        return {"status": the_gate["status"]}
    atoms, record = storage.read_structure(relaxed)
    material = material_of(record)
    ph3 = phonons.init_phono3py(atoms, material, settings)
    loaded = loaded or load_calculator(model, device, model_dir)
    deviations = settings.protocol_deviations()
    labels = {"protocol_deviations": json.dumps(deviations), **hdf5_made_from(made)}
    t0 = time.perf_counter()
    log(f"fc3: {len(ph3.supercells_with_displacements)} supercells of {len(ph3.supercell)} atoms")
    if deviations:
        log(f"fc3: PROTOCOL DEVIATION(S): {', '.join(deviations)}")
    supercells = ph3.supercells_with_displacements
    try:
        run = phonons.force_run(
            supercells, loaded, force_settings, progress=Progress("fc3 forces", "supercells")
        )
        log(force_log(run.info))
        t_forces = time.perf_counter() - t0
        zero = phonons.zero_force_supercells(supercells, run.forces)
        if zero:
            n = sum(sc is not None for sc in supercells)
            raise _Meaningless(
                ZERO_FORCES,
                f"{len(zero)} of {n} displaced fc3 supercells have no force on any atom "
                f"(< {phonons.ZERO_FORCE:g} eV/Å; first: {zero[0]}): the model sees no "
                "interaction",
            )
        t1 = time.perf_counter()
        fc3 = phonons.fc3_from_forces(ph3, run.forces, settings)
        t_fit = time.perf_counter() - t1
        if phonons.fc3_vanishes(fc3):
            raise _Meaningless(
                ZERO_FC3,
                f"every fc3 element is below {phonons.ZERO_FC3:g} eV/Å³ (largest "
                f"{float(abs(fc3).max()):.2e}): a harmonic model, no phonon-phonon scattering",
            )
    except ForceError:  # bad forces settings: an input error, not physics
        raise
    except Exception as exc:  # recorded as data (k_SRME ForceConstantError)
        if isinstance(exc, _Meaningless):
            status = exc.status
            fields = {"errors": [f"{exc.status}: {exc}"]}
        else:
            status = failure_status(exc, "fc3")
            fields = error_fields(exc)
        log(f"fc3 failed: {fields['errors'][0]}")
        write_fc_placeholders(
            status,
            fc_path=out_fc3,
            order=3,
            forces_path=out_forces,
            model=model.key,
            attrs=labels,
            error=fields["errors"][0],
        )
        return {"status": status, **fields}
    storage.write_forces(
        out_forces,
        run.forces,
        model=model.key,
        timing_s=t_forces,
        fc3_fit_s=t_fit,
        checkpoint_sha256=str(loaded.info.get("checkpoint_sha256", "")),
        force_evaluation=json.dumps(run.info),
        **labels,
    )
    storage.write_fc(out_fc3, 3, fc3, ph3.primitive.p2s_map, attrs=labels)
    return {
        "status": OK,
        "force_evaluation": run.info,
        "protocol_deviations": deviations,
        "timing_s": {
            "fc3_forces": t_forces,
            "fc3_fit": t_fit,
            "fc3_total": time.perf_counter() - t0,
        },
    }
