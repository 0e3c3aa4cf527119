"""One function per workflow step: read inputs, call the physics, write outputs.

The Snakemake scripts and the CLI call exactly these functions, so a CLI run of one
material writes the same files as the workflow. Files are touched only through
:mod:`kappaflow.io`. Physics failures (imaginary modes, broken symmetry) become a
status in the outputs; the DAG stays static and downstream steps write placeholders.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kappaflow import io
from kappaflow.calculators import LoadedModel, ModelSpec, load_calculator
from kappaflow.forces import ForceError, ForceSettings
from kappaflow.runtime import current_threads, scheduler_context
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings, StructureDefaults
from kappaflow.structures import MaterialSpec, frame_for, materials_table


def log(message: str) -> None:
    """One progress line on stderr (the rule's log file in the workflow)."""
    print(f"[kappaflow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def provenance(**extra: Any) -> dict[str, Any]:
    return {
        "versions": io.package_versions(),
        "host": platform.node(),
        "python": platform.python_version(),
        "threads": current_threads(),
        "scheduler": scheduler_context(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def load_material(
    structures: str | Path,
    material_id: str,
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
):
    """(Atoms, MaterialSpec) of one material of a structures file."""
    frames = io.read_structures(structures)
    table = materials_table(frames, defaults, overrides)
    if material_id not in table:
        from kappaflow.structures import MaterialError

        raise MaterialError(f"material {material_id!r} is not in {structures}")
    return frame_for(frames, material_id), table[material_id]


# ----------------------------------------------------------------------------- relax


def failure_status(exc: BaseException, step: str) -> str:
    """Status recorded for an exception in a step's physics (k_SRME: any exception -> 2)."""
    from kappaflow.phonons import NonFiniteForcesError

    return "nonfinite_forces" if isinstance(exc, NonFiniteForcesError) else f"{step}_error"


def _error_fields(exc: BaseException) -> dict[str, Any]:
    return {"errors": [f"{type(exc).__name__}: {exc}"], "error_traceback": traceback.format_exc()}


def run_relax(
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
    from kappaflow.relax import relax_structure
    from kappaflow.structures import spacegroup_number

    atoms, material = load_material(structures, material_id, defaults, overrides)
    loaded = loaded or load_calculator(model, device, model_dir)
    log(f"relax {material_id} ({material.desc}) with {model.key} on {loaded.info['device']}")
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "material": material.as_dict(),
        "relax_settings": settings.as_dict(),
        "model": loaded.info,
        "status": io.STATUS_OK,
    }
    try:
        result = relax_structure(atoms, loaded.calculator, settings)
    except Exception as exc:  # recorded as data, as k_SRME's RelaxError
        spg = spacegroup_number(atoms, settings.symprec)
        record.update(status=failure_status(exc, "relax"), **_error_fields(exc))
        record["relax"] = {
            "initial_space_group_number": spg,
            "relaxed_space_group_number": None,
            "broken_symmetry": False,
            "reached_max_steps": False,
            "steps": [],
        }
        log(f"relax failed: {record['errors'][0]}")
        out_atoms = atoms
    else:
        log(
            f"relaxed in {result.steps} steps, space group {result.initial_space_group_number} -> "
            f"{result.relaxed_space_group_number}, max force {result.max_force:.2e} eV/Å"
        )
        record["relax"] = result.record()
        out_atoms = result.atoms
    record["timing_s"] = {"relax": time.perf_counter() - t0}
    record["provenance"] = provenance()
    io.write_structure(out_relaxed, out_atoms, record)
    return record


def _force_log(info: dict[str, Any]) -> str:
    rate = info.get("structures_per_s") or 0.0
    return (
        f"forces: {info['structures']} supercells, path {info['path']} ({info['reason']}), "
        f"{info['model_calls']} model calls, {info['seconds']:.1f} s ({rate:.2f}/s)"
    )


def _material(record: dict[str, Any]) -> MaterialSpec:
    m = dict(record["material"])
    for key in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
        m[key] = tuple(m[key])
    return MaterialSpec(**m)


# ----------------------------------------------------------------------------- fc2


def run_fc2(
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

    atoms, record = io.read_structure(relaxed)
    material = _material(record)
    ph3 = phonons.init_phono3py(atoms, material, settings)
    io.write_phono3py_yaml(out_disp, ph3)
    out: dict[str, Any] = {
        "broken_symmetry": record["relax"]["broken_symmetry"],
        "imaginary_freqs": False,
        "displacements": phonons.displacement_counts(ph3),
        "settings": settings.as_dict(),
        "model": record["model"],
        "errors": list(record.get("errors", [])),
    }
    t0 = time.perf_counter()
    failure = None if record.get("status", io.STATUS_OK) == io.STATUS_OK else record["status"]
    if failure is None:
        loaded = loaded or load_calculator(model, device, model_dir)
        out["model"] = loaded.info
        n_sc = len(ph3.phonon_supercells_with_displacements)
        log(f"fc2: {n_sc} supercells of {len(ph3.phonon_supercell)} atoms")
        try:
            run = phonons.force_run(
                ph3.phonon_supercells_with_displacements, loaded, force_settings
            )
            forces = run.forces
            out["force_evaluation"] = run.info
            log(_force_log(run.info))
            t_forces = time.perf_counter() - t0
            fc2 = phonons.fc2_from_forces(ph3, forces)
            freqs = phonons.grid_frequencies(atoms, material, fc2, settings)
        except ForceError:  # bad forces settings: an input error, not physics
            raise
        except Exception as exc:  # recorded as data (k_SRME ForceConstantError)
            failure = failure_status(exc, "fc2")
            fields = _error_fields(exc)
            out["errors"] += fields["errors"]
            out["error_traceback"] = fields["error_traceback"]
    if failure is not None:
        log(f"fc2: no force constants ({failure})")
        io.write_forces(out_forces, None, status=failure, model=model.key)
        io.write_fc(out_fc2, 2, None, None, status=failure)
        out.update(
            status=failure,
            timing_s={"fc2_total": time.perf_counter() - t0},
            provenance=provenance(backend=settings.backend),
        )
        io.write_json(out_phonons, out)
        return out
    imaginary = phonons.has_imaginary_modes(freqs, settings.frequency_threshold)
    gate = phonons.conductivity_gate(
        imaginary, record["relax"]["broken_symmetry"], settings.conductivity_broken_symmetry
    )
    io.write_forces(out_forces, forces, model=model.key)
    io.write_fc(out_fc2, 2, fc2, ph3.phonon_primitive.p2s_map)
    out.update(
        status=gate.status,
        imaginary_freqs=gate.imaginary_freqs,
        broken_symmetry=gate.broken_symmetry,
        min_frequency_THz=float(np.nanmin(freqs)),
        gamma_frequencies_THz=freqs[0].tolist(),
        timing_s={"fc2_forces": t_forces, "fc2_total": time.perf_counter() - t0},
        provenance=provenance(backend=settings.backend),
    )
    io.write_json(out_phonons, out)
    log(f"fc2 done: gate {gate.status}, lowest frequency {out['min_frequency_THz']:.4f} THz")
    return out


# ----------------------------------------------------------------------------- fc3


def run_fc3(
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

    gate = io.read_json(phonons_json)
    if gate["status"] != io.STATUS_OK:
        log(f"fc3 skipped: {gate['status']}")
        io.write_forces(out_forces, None, status=gate["status"], model=model.key)
        io.write_fc(out_fc3, 3, None, None, status=gate["status"])
        return {"status": gate["status"]}
    atoms, record = io.read_structure(relaxed)
    material = _material(record)
    ph3 = phonons.init_phono3py(atoms, material, settings)
    loaded = loaded or load_calculator(model, device, model_dir)
    deviations = settings.protocol_deviations()
    labels = {"protocol_deviations": json.dumps(deviations)}
    t0 = time.perf_counter()
    n_sc = len(ph3.supercells_with_displacements)
    log(f"fc3: {n_sc} supercells of {len(ph3.supercell)} atoms")
    if deviations:
        log(f"fc3: PROTOCOL DEVIATION(S): {', '.join(deviations)}")
    try:
        run = phonons.force_run(ph3.supercells_with_displacements, loaded, force_settings)
        forces = run.forces
        log(_force_log(run.info))
        t_forces = time.perf_counter() - t0
        t1 = time.perf_counter()
        fc3 = phonons.fc3_from_forces(ph3, forces, settings)
        t_fit = time.perf_counter() - t1
    except ForceError:  # bad forces settings: an input error, not physics
        raise
    except Exception as exc:  # recorded as data (k_SRME ForceConstantError)
        status = failure_status(exc, "fc3")
        fields = _error_fields(exc)
        log(f"fc3 failed: {fields['errors'][0]}")
        io.write_forces(
            out_forces, None, status=status, model=model.key, error=fields["errors"][0], **labels
        )
        io.write_fc(out_fc3, 3, None, None, status=status, attrs=labels)
        return {"status": status, **fields}
    io.write_forces(
        out_forces,
        forces,
        model=model.key,
        timing_s=t_forces,
        fc3_fit_s=t_fit,
        checkpoint_sha256=str(loaded.info.get("checkpoint_sha256", "")),
        force_evaluation=json.dumps(run.info),
        **labels,
    )
    io.write_fc(out_fc3, 3, fc3, ph3.primitive.p2s_map, attrs=labels)
    return {
        "status": io.STATUS_OK,
        "force_evaluation": run.info,
        "protocol_deviations": deviations,
        "timing_s": {
            "fc3_forces": t_forces,
            "fc3_fit": t_fit,
            "fc3_total": time.perf_counter() - t0,
        },
    }


# ----------------------------------------------------------------------------- kappa


def kappa_datasets(result: Any) -> dict[str, Any]:
    """KappaResult -> HDF5 datasets with phono3py's names plus k_SRME's."""
    from kappaflow.conductivity import kappa_ave

    return {
        "temperature": result.temperatures,
        "mesh": result.mesh,
        "qpoint": result.qpoints,
        "weight": result.weights,
        "grid_point": result.grid_points,
        "frequency": result.frequencies,
        "heat_capacity": result.heat_capacity,
        "group_velocity": result.group_velocities,
        "gamma": result.gamma,
        "gamma_isotope": result.gamma_isotope,
        "kappa": result.kappa_TOT_RTA,
        "mode_kappa": result.mode_kappa_TOT,
        "kappa_intra": result.extra.get("kappa_intra"),
        "kappa_inter": None
        if result.extra.get("kappa_intra") is None
        else result.kappa_TOT_RTA - result.extra["kappa_intra"],
        "kappa_TOT_RTA": result.kappa_TOT_RTA,
        "kappa_P_RTA": result.kappa_P_RTA,
        "kappa_C": result.kappa_C,
        "mode_kappa_P_RTA": result.mode_kappa_P_RTA,
        "mode_kappa_C": result.mode_kappa_C,
        "mode_kappa_TOT": result.mode_kappa_TOT,
        "kappa_TOT_ave": result.kappa_TOT_ave,
        "mode_kappa_TOT_ave": kappa_ave(result.mode_kappa_TOT),
        "mode_kappa_matrix": result.extra.get("mode_kappa_matrix"),
    }


def run_kappa(
    relaxed: str | Path,
    phonons_json: str | Path,
    fc2_path: str | Path,
    fc3_path: str | Path,
    settings: KappaSettings,
    out_hdf5: str | Path,
    out_record: str | Path,
    fc3_forces: str | Path | None = None,
) -> dict[str, Any]:
    """Wigner RTA κ at all temperatures; writes kappa.hdf5 and the small kappa.json record."""
    atoms, relax_record = io.read_structure(relaxed)
    material = _material(relax_record)
    gate = io.read_json(phonons_json)
    fc3_meta: dict[str, Any] = {}
    record: dict[str, Any] = {
        "mp_id": material.material_id,
        "name": material.name,
        "desc": material.desc,
        "material": material.as_dict(),
        "status": gate["status"],
        "failure": "" if gate["status"] == io.STATUS_OK else gate["status"],
        "imaginary_freqs": gate["imaginary_freqs"],
        "broken_symmetry": gate["broken_symmetry"],
        "initial_space_group_number": relax_record["relax"]["initial_space_group_number"],
        "relaxed_space_group_number": relax_record["relax"]["relaxed_space_group_number"],
        "relax": relax_record["relax"],
        "displacements": gate["displacements"],
        "temperatures": list(settings.temperatures),
        "q_mesh": list(settings.phono3py.mesh or material.q_mesh),
        "model": gate["model"],
        "settings": {
            "relax": relax_record["relax_settings"],
            "phono3py": settings.phono3py.as_dict(),
            "transport_type": "SMM19",
            "rta": True,
        },
        "timing_s": {**relax_record.get("timing_s", {}), **gate.get("timing_s", {})},
    }
    record["errors"] = list(gate.get("errors", []))
    record["protocol_deviations"] = protocol_deviations(settings.phono3py, gate["model"])
    if gate.get("force_evaluation"):
        record["force_evaluation"] = {"fc2": gate["force_evaluation"]}
    if fc3_forces is not None:
        fc3_meta = io.read_attrs(fc3_forces)
        if "timing_s" in fc3_meta:
            record["timing_s"]["fc3_forces"] = float(fc3_meta["timing_s"])
        if "force_evaluation" in fc3_meta:
            record.setdefault("force_evaluation", {})["fc3"] = json.loads(
                str(fc3_meta["force_evaluation"])
            )
        if "error" in fc3_meta:
            record["errors"].append(str(fc3_meta["error"]))
    fc3_status = io.fc_status(fc3_path)
    if gate["status"] == io.STATUS_OK and fc3_status != io.STATUS_OK:
        record["status"] = record["failure"] = fc3_status
    result = None
    if record["status"] == io.STATUS_OK:
        from kappaflow import phonons
        from kappaflow.conductivity import compute_kappa

        fc2 = io.read_fc(fc2_path, 2)
        fc3 = io.read_fc(fc3_path, 3)
        ph3 = phonons.init_phono3py(atoms, material, settings.phono3py, displace=False)
        log(
            f"Wigner RTA κ of {material.material_id} on mesh {[int(m) for m in ph3.mesh_numbers]} "
            f"at {list(settings.temperatures)} K, backend {settings.phono3py.backend}"
        )
        t0 = time.perf_counter()
        try:
            result = compute_kappa(ph3, fc2, fc3, settings.temperatures, settings.phono3py)
        except Exception as exc:  # recorded as data (k_SRME ConductivityError)
            fields = _error_fields(exc)
            record["status"] = record["failure"] = "kappa_error"
            record["errors"] += fields["errors"]
            record["error_traceback"] = fields["error_traceback"]
            log(f"κ failed: {fields['errors'][0]}")
        record["timing_s"]["kappa"] = time.perf_counter() - t0
    if result is None:
        record.update(kappa_TOT_ave=[None] * len(settings.temperatures))
        record["provenance"] = provenance(backend=settings.phono3py.backend)
        io.write_kappa_hdf5(
            out_hdf5,
            {"temperature": np.asarray(settings.temperatures)},
            {
                "kappaflow_status": record["status"],
                "protocol_deviations": json.dumps(record["protocol_deviations"]),
            },
        )
        io.write_json(out_record, record)
        return record
    record["kappa_TOT_ave"] = result.kappa_TOT_ave.tolist()
    record["kappa_TOT_RTA"] = result.kappa_TOT_RTA.tolist()
    record["kappa_P_RTA"] = result.kappa_P_RTA.tolist()
    record["kappa_C"] = result.kappa_C.tolist()
    record["sum_rule_error"] = result.sum_rule_error()
    record["provenance"] = provenance(backend=settings.phono3py.backend)
    attrs = {
        "kappaflow_status": io.STATUS_OK,
        "mp_id": material.material_id,
        "backend": settings.phono3py.backend,
        "transport_type": "SMM19-rta",
        "version": io.package_versions()["phono3py"] or "",
        "protocol_deviations": json.dumps(record["protocol_deviations"]),
    }
    io.write_kappa_hdf5(out_hdf5, kappa_datasets(result), attrs)
    io.write_json(out_record, record)
    log(f"κ_TOT_ave = {record['kappa_TOT_ave']} W/mK in {record['timing_s']['kappa']:.1f} s")
    return record


def protocol_deviations(settings: Phono3pySettings, model_info: dict[str, Any]) -> list[str]:
    """Every opt-in deviation from PROTOCOL.md behind one result: the fc3 approximations
    of ``settings`` and a non-default model dtype. Empty for the published protocol."""
    return [*model_info.get("protocol_deviations", []), *settings.protocol_deviations()]


# ---------------------------------------------------------------------------- gather


def gather_row(record: dict[str, Any], kappa_hdf5: str | Path) -> dict[str, Any]:
    """One row of the gathered table (reference column names) from a kappa job's outputs."""
    row: dict[str, Any] = {
        "mp_id": record["mp_id"],
        "name": record["name"],
        "desc": record["desc"],
        "symm.no": record["material"]["spacegroup"],
        "q_mesh": record["q_mesh"],
        "temperatures": record["temperatures"],
        "status": record["status"],
        "failure": record["failure"],
        "imaginary_freqs": record["imaginary_freqs"],
        "broken_symmetry": record["broken_symmetry"],
        "initial_space_group_number": record["initial_space_group_number"],
        "relaxed_space_group_number": record["relaxed_space_group_number"],
        "reached_max_steps": record["relax"]["reached_max_steps"],
        "errors": record.get("errors", []),
        "protocol_deviations": ";".join(record.get("protocol_deviations", [])),
    }
    nan_t = [np.nan] * len(record["temperatures"])
    if record["status"] != io.STATUS_OK:
        row.update(
            kappa_TOT_ave=nan_t,
            qpoints=None,
            weights=None,
            frequencies=None,
            heat_capacity=None,
            mode_kappa_TOT_ave=None,
            kappa_TOT_RTA=None,
            kappa_P_RTA=None,
            kappa_C=None,
        )
        return row
    data, _ = io.read_kappa_hdf5(kappa_hdf5)
    row.update(
        qpoints=data["qpoint"],
        weights=data["weight"],
        frequencies=data["frequency"],
        heat_capacity=data["heat_capacity"],
        kappa_TOT_ave=data["kappa_TOT_ave"],
        mode_kappa_TOT_ave=data["mode_kappa_TOT_ave"],
        kappa_TOT_RTA=data["kappa_TOT_RTA"],
        kappa_P_RTA=data["kappa_P_RTA"],
        kappa_C=data["kappa_C"],
    )
    return row


def run_gather(
    records: Sequence[str | Path], kappa_files: Sequence[str | Path], out_table: str | Path
) -> pd.DataFrame:
    rows = [gather_row(io.read_json(r), h) for r, h in zip(records, kappa_files, strict=True)]
    df = pd.DataFrame(rows)
    io.write_kappa_table(out_table, df)
    return df


# --------------------------------------------------------------------------- metrics


def run_score(
    predictions: str | Path,
    reference: str | Path,
    out_csv: str | Path,
    materials: Sequence[str] | None = None,
    temperature: float = 300.0,
) -> dict[str, Any]:
    """Score a kappa table against a reference table; writes the per-material CSV."""
    from kappaflow.metrics import score_table, summarize

    pred = io.read_kappa_table(predictions)
    ref = io.read_kappa_table(reference)
    per_material = score_table(pred, ref, temperature, materials)
    io.write_csv(out_csv, per_material.reset_index())
    return summarize(per_material)


def run_model_metrics(
    table: str | Path,
    reference: str | Path | None,
    out_csv: str | Path,
    materials: Sequence[str],
    temperature: float = 300.0,
    computed_temperatures: Sequence[float] | None = None,
    reference_model: str | None = None,
) -> dict[str, Any]:
    """Workflow metrics of one model at ``temperature`` (the reference's 300 K).

    Materials without a DFT reference are skipped with a note; if ``temperature`` was not
    computed at all (e.g. ``temperatures: [600, 900]``), every material is skipped with a
    note instead of being scored as failed. With another model's gathered table as the
    reference (``reference_model``), materials where that model failed are skipped too.
    """
    from kappaflow.metrics import score_table, summarize

    pred = io.read_kappa_table(table)
    ref = (
        io.read_kappa_table(reference)
        if reference is not None
        else pd.DataFrame(columns=["kappa_TOT_ave"])
    )
    computed = computed_temperatures is None or any(
        abs(t - temperature) < 1e-6 for t in computed_temperatures
    )
    if reference_model is not None:
        ref = ref[[_reference_ok(row, temperature) for _, row in ref.iterrows()]]
    scored = [m for m in materials if m in ref.index] if computed else []
    skipped = [m for m in materials if m not in scored]
    if scored:
        per_material = score_table(pred, ref, temperature, scored)
        summary = summarize(per_material)
    else:
        per_material = pd.DataFrame(
            columns=["name", "SRD", "SRE", "SRME", "failed", "failure", "note"]
        )
        per_material.index.name = "mp_id"
        summary = {"n_materials": 0, "n_failed": 0, "mean_SRME": np.nan, "mean_SRE": np.nan}
    if skipped:
        note = (
            (
                f"reference model {reference_model} failed or has no kappa: metrics skipped"
                if reference_model
                else "no DFT reference: kappa computed, metrics skipped"
            )
            if computed
            else f"{temperature:g} K not among the computed temperatures: metrics skipped"
        )
        extra = pd.DataFrame({"mp_id": skipped, "note": note}).set_index("mp_id")
        for mid in skipped:
            if mid in pred.index:
                temps = np.atleast_1d(np.asarray(pred.loc[mid, "temperatures"], dtype=float))
                kappas = np.atleast_1d(np.asarray(pred.loc[mid, "kappa_TOT_ave"], dtype=float))
                hit = np.flatnonzero(np.abs(temps - temperature) < 1e-6)
                extra.loc[mid, "kappa_TOT_ave"] = (
                    float(kappas[hit[0]]) if hit.size and kappas.size == temps.size else np.nan
                )
        per_material = pd.concat([per_material, extra])
    summary["n_skipped"] = len(skipped)
    summary["temperature"] = temperature
    deviations = _table_deviations(pred)
    if deviations:  # opt-in approximations: labelled on every row and in the summary
        per_material["protocol_deviations"] = [
            pred.loc[m, "protocol_deviations"] if m in pred.index else ""
            for m in per_material.index
        ]
        summary["protocol_deviations"] = ";".join(deviations)
    io.write_csv(out_csv, per_material.reset_index())
    return summary


def _table_deviations(table: pd.DataFrame) -> list[str]:
    """Distinct protocol-deviation labels in a gathered table (none for older tables)."""
    if "protocol_deviations" not in table.columns:
        return []
    labels = set()
    for value in table["protocol_deviations"].fillna(""):
        labels.update(x for x in str(value).split(";") if x)
    return sorted(labels)


def _reference_ok(row: pd.Series, temperature: float) -> bool:
    """A row of a model's gathered table usable as a reference: status ok, no imaginary
    modes, a finite κ at ``temperature``."""
    from kappaflow.metrics import temperature_index

    status = row.get("status", "ok")
    if isinstance(status, str) and status not in ("", "ok"):
        return False
    if bool(row.get("imaginary_freqs", False) is True):
        return False
    temps = np.atleast_1d(np.asarray(row.get("temperatures", []), dtype=float))
    kappas = np.atleast_1d(np.asarray(row.get("kappa_TOT_ave", np.nan), dtype=float))
    i = temperature_index(temps, temperature)
    return i is not None and kappas.size == temps.size and bool(np.isfinite(kappas[i]))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_summary(
    summaries: Sequence[str | Path],
    models: Sequence[str],
    reference_name: str,
    out_csv: str | Path,
    out_md: str | Path,
    gamma_summaries: Sequence[str | Path] | None = None,
) -> pd.DataFrame:
    """One row per model (results/metrics.csv) and the same as a Markdown table.

    With ``gamma_summaries`` (one per model) the γ columns (gamma_mean_SRE, ...) are added.
    """
    rows = [{"model": m, **io.read_json(p)} for m, p in zip(models, summaries, strict=True)]
    if gamma_summaries:
        for row, path in zip(rows, gamma_summaries, strict=True):
            row.update(io.read_json(path))
    df = pd.DataFrame(rows)
    io.write_csv(out_csv, df)
    cols = [
        "model",
        "n_materials",
        "mean_SRME",
        "mean_SRE",
        "n_failed",
        "mean_SRME_success",
        "frac_within_factor_2",
        "n_skipped",
        "gamma_mean_SRE",
        "gamma_mean_SRME",
        "gamma_n_failed",
        "gamma_n_sign_mismatch",
        "protocol_deviations",
    ]
    cols = [c for c in cols if c in df.columns]
    lines = [
        "# kappaflow metrics (300 K, "
        + (
            f"reference: κ of {reference_name.split(':', 1)[1]})"
            if reference_name.startswith("model:")
            else f"DFT reference: {reference_name})"
        ),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, r in df.iterrows():
        cells = [_cell(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if "protocol_deviations" in df.columns and df["protocol_deviations"].fillna("").ne("").any():
        lines += [
            "",
            "PROTOCOL DEVIATION: rows with protocol_deviations used opt-in approximations "
            "(README, 'Protocol deviations'); they are not comparable to published numbers.",
        ]
    if df.get("n_materials", pd.Series([1])).fillna(0).eq(0).all():
        lines += [
            "",
            "No selected material was scored (no DFT reference, or 300 K not computed): "
            "κ was computed, metrics were skipped; see results/<model>/metrics.csv.",
        ]
    io.write_text(out_md, "\n".join(lines) + "\n")
    return df


def run_parity(
    metrics_csv: str | Path, model: str, temperature: float, out_svg: str | Path
) -> None:
    from kappaflow.plots import parity

    io.write_figure(out_svg, parity(io.read_csv(metrics_csv), model, temperature))


def run_kappa_vs_temperature(table: str | Path, model: str, out_svg: str | Path) -> None:
    from kappaflow.plots import kappa_vs_temperature

    io.write_figure(out_svg, kappa_vs_temperature(io.read_kappa_table(table), model))


def run_cumulative(
    table: str | Path,
    reference: str | Path,
    materials: Sequence[str],
    model: str,
    temperature: float,
    out_dir: str | Path,
) -> None:
    """One cumulative-κ figure per material with a reference (model vs DFT)."""
    from kappaflow.plots import cumulative_plot

    pred = io.read_kappa_table(table)
    ref = io.read_kappa_table(reference)
    io.ensure_dir(out_dir)
    for mid in materials:
        if mid not in ref.index:
            continue
        row = pred.loc[mid] if mid in pred.index else None
        io.write_figure(
            Path(out_dir) / f"{mid}.svg", cumulative_plot(row, ref.loc[mid], model, temperature)
        )


STEP_ORDER = ("relax", "fc2", "fc3", "kappa")
STEP_OUTPUTS = {
    "relax": ("relaxed",),
    "fc2": ("fc2", "forces_fc2", "disp", "phonons"),
    "fc3": ("fc3", "forces_fc3"),
    "kappa": ("kappa", "record"),
}


def first_outdated_step(
    files: dict[str, Path],
    model_key: str,
    material: MaterialSpec,
    relax: RelaxSettings,
    kappa: KappaSettings,
) -> str | None:
    """The first step whose outputs are missing or were made with other inputs (None: all current).

    Compares what the stored records say (model, material spec, relax and phono3py
    settings, temperatures) with what is asked for; a later step is redone whenever an
    earlier one is. The workflow leaves this to Snakemake; the CLI uses it to resume.
    """
    for step in STEP_ORDER:
        if not all(Path(files[k]).exists() for k in STEP_OUTPUTS[step]):
            return step
    _, relaxed = io.read_structure(files["relaxed"])
    if (
        relaxed.get("model", {}).get("model") != model_key
        or relaxed.get("material") != material.as_dict()
        or relaxed.get("relax_settings") != relax.as_dict()
    ):
        return "relax"
    gate = io.read_json(files["phonons"])
    if (
        gate.get("settings") != kappa.phono3py.as_dict()
        or gate.get("model", {}).get("model") != model_key
    ):
        return "fc2"
    record = io.read_json(files["record"])
    if (
        record.get("temperatures") != list(kappa.temperatures)
        or record.get("settings", {}).get("phono3py") != kappa.phono3py.as_dict()
    ):
        return "kappa"
    return None


# ------------------------------------------------------------------------- Grüneisen


def _strain_key(strain: float) -> str:
    return f"{strain:+.4f}"


def melting_point_for(
    name: str, table: pd.DataFrame | None, overrides: dict[str, float] | None = None
) -> float | None:
    """Known melting point (K) of a compound by formula: config overrides, then the table."""
    if overrides and name in overrides and overrides[name] is not None:
        return float(overrides[name])
    if table is None or "formula" not in table.columns:
        return None
    hit = table.loc[table["formula"] == name, "T_melt_K"]
    return float(hit.iloc[0]) if len(hit) and np.isfinite(hit.iloc[0]) else None


def _gruneisen_placeholder(
    record: dict[str, Any], out_hdf5: str | Path, out_json: str | Path, out_csv: str | Path
) -> dict[str, Any]:
    record["provenance"] = provenance()
    io.write_hdf5(out_hdf5, {}, {"kappaflow_status": record["status"]})
    io.write_csv(
        out_csv,
        pd.DataFrame(
            columns=[
                "temperature",
                "gamma",
                "heat_capacity",
                "alpha_V",
                "alpha_linear",
                "above_melting",
            ]
        ),
    )
    io.write_json(out_json, record)
    log(f"Grüneisen: no result ({record['status']})")
    return record


def run_gruneisen(
    relaxed: str | Path,
    fc2_path: str | Path,
    model: ModelSpec,
    settings: Any,
    relax_settings: RelaxSettings,
    phono3py_settings: Phono3pySettings,
    out_hdf5: str | Path,
    out_json: str | Path,
    out_csv: str | Path,
    melting_point: float | None = None,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    loaded: LoadedModel | None = None,
) -> dict[str, Any]:
    """Mode γ, γ(T), K_T from E(V) and α_V(T) of one material (PROTOCOL §7).

    The origin is the κ workflow's relaxed structure and fc2 (same relax, supercell,
    displacement and symmetrisation as gamma_SRME). V0(1 ± strain) are scaled
    isotropically and relaxed at constant volume (two-stage, as the origin); their fc2
    come from the same displacement protocol. Failures are recorded, never raised:
    imaginary modes at the origin and broken symmetry (``settings.symmetry_check``) are
    flagged while γ is still computed (gamma_SRME prints γ and SRE for them and scores
    SRME 2); a failed relax/fc2 or an exception gives placeholders.
    """
    from kappaflow import gruneisen as gr
    from kappaflow.phonons import has_imaginary_modes
    from kappaflow.relax import relax_structure

    t_start = time.perf_counter()
    atoms, relax_record = io.read_structure(relaxed)
    material = _material(relax_record)
    temps = list(settings.temperatures)
    record: dict[str, Any] = {
        "mp_id": material.material_id,
        "name": material.name,
        "desc": material.desc,
        "material": material.as_dict(),
        "status": io.STATUS_OK,
        "failure": "",
        "score_temperature": settings.score_temperature,
        "temperatures": temps,
        "melting_point_K": melting_point,
        "settings": {
            "gruneisen": settings.as_dict(),
            "relax": relax_settings.as_dict(),
            "displacement": phono3py_settings.displacement,
            "symprec": phono3py_settings.symprec,
        },
        "model": relax_record.get("model", {}),
        "errors": list(relax_record.get("errors", [])),
        "timing_s": {},
    }
    upstream = relax_record.get("status", io.STATUS_OK)
    if upstream == io.STATUS_OK and io.fc_status(fc2_path) != io.STATUS_OK:
        upstream = io.fc_status(fc2_path)
    if upstream != io.STATUS_OK:
        record["status"] = record["failure"] = upstream
        return _gruneisen_placeholder(record, out_hdf5, out_json, out_csv)

    loaded = loaded or load_calculator(model, device, model_dir)
    record["model"] = loaded.info
    calc = loaded.calculator
    symprec = phono3py_settings.symprec
    strain = settings.volume_strain
    initial_spg = relax_record["relax"]["initial_space_group_number"]
    volumes: dict[str, dict[str, Any]] = {}
    try:
        origin_ph = gr.phonopy_with_fc2(atoms, material, io.read_fc(fc2_path, 2), symprec)
        atoms.calc = calc
        volumes[_strain_key(0.0)] = {
            "strain": 0.0,
            "volume": float(atoms.get_volume()),
            "energy": float(atoms.get_potential_energy()),
            "relaxed_space_group_number": relax_record["relax"]["relaxed_space_group_number"],
            "broken_symmetry": bool(relax_record["relax"]["broken_symmetry"]),
        }
        atoms.calc = None
        structures: dict[float, Any] = {}
        t0 = time.perf_counter()
        for s in sorted(set(settings.eos_strains) | {strain, -strain}):
            if s == 0.0:
                continue
            res = relax_structure(gr.scale_volume(atoms, s), calc, relax_settings, True)
            structures[s] = res.atoms
            volumes[_strain_key(s)] = {
                "strain": s,
                "volume": float(res.atoms.get_volume()),
                "energy": res.energy,
                "relaxed_space_group_number": res.relaxed_space_group_number,
                "broken_symmetry": res.relaxed_space_group_number != initial_spg,
                "reached_max_steps": res.reached_max_steps,
                "steps": res.steps,
                "max_force": res.max_force,
            }
        record["timing_s"]["constant_volume_relax"] = time.perf_counter() - t0
        log(
            f"Grüneisen {material.material_id}: {len(structures)} constant-volume relaxes in "
            f"{record['timing_s']['constant_volume_relax']:.1f} s"
        )
        t0 = time.perf_counter()
        plus_ph, _ = gr.harmonic_phonopy(
            structures[strain], material, calc, phono3py_settings.displacement, symprec
        )
        minus_ph, _ = gr.harmonic_phonopy(
            structures[-strain], material, calc, phono3py_settings.displacement, symprec
        )
        record["timing_s"]["fc2_plus_minus"] = time.perf_counter() - t0
        mesh = list(phono3py_settings.mesh or material.q_mesh)
        gm = gr.mode_gruneisen(origin_ph, plus_ph, minus_ph, mesh)
    except Exception as exc:  # recorded as data
        record["status"] = record["failure"] = failure_status(exc, "gruneisen")
        fields = _error_fields(exc)
        record["errors"] += fields["errors"]
        record["error_traceback"] = fields["error_traceback"]
        record["volumes"] = volumes
        log(f"Grüneisen failed: {fields['errors'][0]}")
        return _gruneisen_placeholder(record, out_hdf5, out_json, out_csv)

    # gates (PROTOCOL §7): imaginary modes on the origin; symmetry per settings
    imaginary = {
        "origin": has_imaginary_modes(gm.frequencies, phono3py_settings.frequency_threshold),
        "plus": has_imaginary_modes(gm.frequencies_plus, phono3py_settings.frequency_threshold),
        "minus": has_imaginary_modes(gm.frequencies_minus, phono3py_settings.frequency_threshold),
    }
    broken = {
        "origin": volumes[_strain_key(0.0)]["broken_symmetry"],
        "plus": volumes[_strain_key(strain)]["broken_symmetry"],
        "minus": volumes[_strain_key(-strain)]["broken_symmetry"],
    }
    broken_symmetry = (
        broken["minus"] if settings.symmetry_check == "minus" else any(broken.values())
    )
    record.update(
        imaginary_freqs=imaginary["origin"],
        imaginary_freqs_volumes=imaginary,
        broken_symmetry=bool(broken_symmetry),
        broken_symmetry_volumes=broken,
        symmetry_check=settings.symmetry_check,
        relaxed_space_group_number=volumes[_strain_key(-strain)]["relaxed_space_group_number"]
        if settings.symmetry_check == "minus"
        else volumes[_strain_key(0.0)]["relaxed_space_group_number"],
        initial_space_group_number=initial_spg,
    )
    if imaginary["origin"]:
        record["status"] = record["failure"] = "imaginary_modes"
    elif broken_symmetry:
        record["status"] = record["failure"] = "broken_symmetry"

    cv = gr.mode_heat_capacity(
        gm.frequencies, gm.weights, temps, gm.gamma_mask, settings.frequency_cutoff
    )
    mode_gamma, gamma_t = gr.weighted_gamma(cv, gm.gamma)
    c_total = gr.heat_capacity_total(cv)
    i_score = temps.index(float(settings.score_temperature))
    record["gamma"] = float(gamma_t[i_score])
    record["gamma_T"] = gamma_t.tolist()

    # bulk modulus from E(V), thermal expansion
    v_prim = float(origin_ph.primitive.volume)
    record["volume_primitive_A3"] = v_prim
    record["volumes"] = volumes
    alpha_v = np.full(len(temps), np.nan)
    try:
        pts = sorted(volumes.values(), key=lambda d: d["strain"])
        fit = gr.fit_eos(
            [p["volume"] for p in pts], [p["energy"] for p in pts], len(atoms), settings.eos
        )
        record["eos"] = fit.record()
        record["bulk_modulus_GPa"] = fit.bulk_modulus_GPa
        alpha_v = gr.thermal_expansion(cv, gm.gamma, fit.bulk_modulus_GPa * 1e9, v_prim)
    except Exception as exc:  # γ stays valid; K_T and α are NaN
        fields = _error_fields(exc)
        record["errors"] += fields["errors"]
        record["eos_error"] = fields["errors"][0]
        record["bulk_modulus_GPa"] = None
        log(f"EOS fit failed: {fields['errors'][0]}")
    cubic = gr.is_cubic(material.spacegroup)
    alpha_lin = alpha_v / 3.0 if cubic else np.full(len(temps), np.nan)
    above = [melting_point is not None and t > melting_point for t in temps]
    record["alpha_V"] = alpha_v.tolist()
    record["alpha_V_score_T"] = float(alpha_v[i_score])
    record["cubic"] = cubic
    record["timing_s"]["gruneisen_total"] = time.perf_counter() - t_start
    record["provenance"] = provenance()
    io.write_hdf5(
        out_hdf5,
        {
            "mesh": np.asarray(gm.mesh),
            "qpoint": gm.qpoints,
            "weight": gm.weights,
            "frequency": gm.frequencies,
            "frequency_plus": gm.frequencies_plus,
            "frequency_minus": gm.frequencies_minus,
            "gruneisen": gm.gamma,
            "temperature": np.asarray(temps),
            "heat_capacity": cv,
            "mode_gamma": mode_gamma,
            "gamma": gamma_t,
            "heat_capacity_total": c_total,
            "alpha_V": alpha_v,
            "alpha_linear": alpha_lin,
        },
        {
            "kappaflow_status": record["status"],
            "mp_id": material.material_id,
            "units": "frequency THz; heat_capacity J/(K mol) per primitive cell; alpha 1/K",
            "volume_primitive_A3": v_prim,
            "bulk_modulus_GPa": record["bulk_modulus_GPa"]
            if record["bulk_modulus_GPa"] is not None
            else np.nan,
        },
    )
    io.write_csv(
        out_csv,
        pd.DataFrame(
            {
                "temperature": temps,
                "gamma": gamma_t,
                "heat_capacity": c_total,
                "alpha_V": alpha_v,
                "alpha_linear": alpha_lin,
                "above_melting": above,
            }
        ),
    )
    io.write_json(out_json, record)
    log(
        f"γ({settings.score_temperature:g} K) = {record['gamma']:.6g}, K_T = "
        f"{record['bulk_modulus_GPa']} GPa, status {record['status']}, "
        f"{record['timing_s']['gruneisen_total']:.1f} s"
    )
    return record


def run_gruneisen_fc3_check(
    relaxed: str | Path,
    forces_fc3: str | Path,
    gruneisen_hdf5: str | Path,
    gruneisen_json: str | Path,
    settings: Any,
    phono3py_settings: Phono3pySettings,
    out_json: str | Path,
) -> dict[str, Any]:
    """γ(T_score) from fc3 (fc2 on the fc3 supercell) vs the finite-volume γ.

    The fc3 supercell (e.g. 2×2×2 for rs) is smaller than the fc2 one, so differences of
    several percent are expected; the record gives both and their relative difference.
    """
    from kappaflow import gruneisen as gr

    grun = io.read_json(gruneisen_json)
    out: dict[str, Any] = {"mp_id": grun["mp_id"], "status": io.STATUS_OK}
    if grun.get("gamma") is None or not np.isfinite(grun.get("gamma", np.nan)):
        out["status"] = f"no finite-volume γ ({grun['status']})"
        io.write_json(out_json, out)
        return out
    if io.read_attrs(forces_fc3).get("kappaflow_status", io.STATUS_OK) != io.STATUS_OK:
        out["status"] = f"no fc3 forces ({io.read_attrs(forces_fc3)['kappaflow_status']})"
        io.write_json(out_json, out)
        return out
    deviations = phono3py_settings.protocol_deviations()
    if deviations:  # the check rebuilds the systematic displacement set
        out["status"] = "skipped: fc3 forces from protocol deviation(s) " + ", ".join(deviations)
        out["protocol_deviations"] = deviations
        io.write_json(out_json, out)
        return out
    atoms, record = io.read_structure(relaxed)
    material = _material(record)
    mesh = list(phono3py_settings.mesh or material.q_mesh)
    t0 = time.perf_counter()
    try:
        res = gr.fc3_mode_gruneisen(
            atoms,
            material,
            io.read_forces(forces_fc3),
            mesh,
            phono3py_settings.displacement,
            phono3py_settings.symprec,
        )
        at_gamma = np.all(np.abs(res["qpoints"] - np.rint(res["qpoints"])) < 1e-8, axis=1)
        exclude = np.zeros(res["frequencies"].shape, dtype=bool)
        exclude[at_gamma, :3] = True
        cv = gr.mode_heat_capacity(
            res["frequencies"],
            res["weights"],
            [settings.score_temperature],
            exclude,
            settings.frequency_cutoff,
        )
        _, g = gr.weighted_gamma(cv, res["gamma"])
    except Exception as exc:  # recorded as data
        out["status"] = "fc3_check_error"
        out.update(_error_fields(exc))
        io.write_json(out_json, out)
        return out
    g_fd = float(grun["gamma"])
    g3 = float(g[0])
    data, _ = io.read_hdf5(gruneisen_hdf5)
    out.update(
        temperature=settings.score_temperature,
        gamma_finite_volume=g_fd,
        gamma_fc3=g3,
        relative_difference=(g3 - g_fd) / abs(g_fd) if g_fd != 0 else np.nan,
        fc3_supercell=list(material.fc3_supercell),
        fc2_supercell=list(material.fc2_supercell),
        n_qpoints=len(res["qpoints"]),
        n_qpoints_finite_volume=len(data.get("qpoint", [])),
        timing_s=time.perf_counter() - t0,
    )
    io.write_json(out_json, out)
    log(f"γ from fc3 {g3:.5f} vs finite volumes {g_fd:.5f} ({out['relative_difference']:+.2%})")
    return out


def structure_type(desc: str, spacegroup: int | None) -> str:
    """rs / zb / wz from the dataset's desc suffix or space group; else 'other'."""
    suffix = str(desc).rsplit("-", 1)[-1]
    if suffix in ("rs", "zb", "wz"):
        return suffix
    return {225: "rs", 216: "zb", 186: "wz"}.get(spacegroup or 0, "other")


def _reference_mode_gamma(ref_row: pd.Series, temperature: float, cutoff: float) -> np.ndarray:
    from kappaflow import gruneisen as gr

    freqs = np.asarray(ref_row["frequencies"], dtype=float)
    exclude = np.zeros(freqs.shape, dtype=bool)
    exclude[0, :3] = True  # gamma_SRME: first q-point is Γ
    cv = gr.mode_heat_capacity(freqs, ref_row["weights"], [temperature], exclude, cutoff)
    mode, _ = gr.weighted_gamma(cv, ref_row["gruneisen"])
    return mode[0]


def run_gruneisen_metrics(
    records: Sequence[str | Path],
    hdf5_files: Sequence[str | Path],
    reference: str | Path,
    out_csv: str | Path,
    fc3_checks: Sequence[str | Path] | None = None,
    mode_reference: str | Path | None = None,
) -> dict[str, Any]:
    """Per-material γ scores of one model (gamma_SRME on |γ|, plus signed γ) and the means.

    SRME_γ needs a mode-resolved reference (``mode_reference``); without one it is NaN.
    """
    from kappaflow.metrics import score_gamma, summarize_gamma

    ref = io.read_gamma_reference(reference)
    mode_ref = io.read_mode_gamma_reference(mode_reference) if mode_reference else None
    checks = {}
    for path in fc3_checks or []:
        c = io.read_json(path)
        checks[c["mp_id"]] = c
    rows = []
    for rec_path, h5_path in zip(records, hdf5_files, strict=True):
        rec = io.read_json(rec_path)
        mid = rec["mp_id"]
        g_ref = float(ref.loc[mid, "gamma_DFT_300K"]) if mid in ref.index else None
        mode_pred = mode_dft = None
        if mode_ref is not None and mid in mode_ref.index and rec.get("gamma") is not None:
            data, _ = io.read_hdf5(h5_path)
            i = int(np.argmin(np.abs(data["temperature"] - rec["score_temperature"])))
            mode_pred = data["mode_gamma"][i]
            mode_dft = _reference_mode_gamma(
                mode_ref.loc[mid],
                rec["score_temperature"],
                rec["settings"]["gruneisen"]["frequency_cutoff"],
            )
        scores = score_gamma(rec.get("gamma"), g_ref, rec.get("failure", ""), mode_pred, mode_dft)
        check = checks.get(mid, {})
        rows.append(
            {
                "mp_id": mid,
                "desc": rec["desc"],
                "structure_type": structure_type(rec["desc"], rec["material"]["spacegroup"]),
                "status": rec["status"],
                **scores,
                "imaginary_freqs": rec.get("imaginary_freqs", False),
                "broken_symmetry": rec.get("broken_symmetry", False),
                "bulk_modulus_GPa": rec.get("bulk_modulus_GPa"),
                "alpha_V_300K": rec.get("alpha_V_score_T"),
                "eos_rms_meV_per_atom": rec.get("eos", {}).get("rms_residual_meV_per_atom"),
                "melting_point_K": rec.get("melting_point_K"),
                "gamma_fc3": check.get("gamma_fc3"),
                "fc3_relative_difference": check.get("relative_difference"),
                "note": "" if g_ref is not None else "no DFT γ: computed, not scored",
            }
        )
    df = pd.DataFrame(rows)
    io.write_csv(out_csv, df)
    summary = summarize_gamma(df) if len(df) else summarize_gamma(pd.DataFrame())
    summary["gamma_mode_reference"] = str(mode_reference) if mode_reference else None
    return summary


def run_gamma_parity(metrics_csv: str | Path, model: str, out_svg: str | Path) -> None:
    from kappaflow.plots import gamma_parity

    io.write_figure(out_svg, gamma_parity(io.read_csv(metrics_csv), model))


def run_alpha_plot(
    curves: Sequence[str | Path], records: Sequence[str | Path], model: str, out_svg: str | Path
) -> None:
    """α_V(T) of every material of one model, one panel per structure type."""
    from kappaflow.plots import alpha_curves

    data = []
    for csv_path, rec_path in zip(curves, records, strict=True):
        rec = io.read_json(rec_path)
        data.append(
            (
                rec["desc"],
                structure_type(rec["desc"], rec["material"]["spacegroup"]),
                rec["status"],
                io.read_csv(csv_path),
            )
        )
    io.write_figure(out_svg, alpha_curves(data, model))


# ------------------------------------------------------------------ fine-tuning


def run_finetune_export(
    structures: str | Path,
    material_ids: list[str],
    export: Any,
    phono3py_settings: Phono3pySettings,
    out_frames: str | Path,
    out_manifest: str | Path,
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Training structures for labelling (on the reference geometry) + their manifest."""
    from kappaflow import finetune
    from kappaflow.phonons import init_phono3py

    frames_in = io.read_structures(structures)
    table = materials_table(frames_in, defaults, overrides)
    out: list = []
    for mid in material_ids:
        if mid not in table:
            from kappaflow.structures import MaterialError

            raise MaterialError(f"material {mid!r} is not in {structures}")
        ph3 = init_phono3py(frame_for(frames_in, mid), table[mid], phono3py_settings)
        out += finetune.export_material(ph3, mid, export)
    man = finetune.manifest(out, export, str(structures))
    man["phono3py"] = phono3py_settings.as_dict()
    io.write_frames(out_frames, out)
    man["sha256"] = io.sha256_file(out_frames)
    io.write_json(out_manifest, man)
    log(f"exported {len(out)} structures of {len(material_ids)} material(s) to {out_frames}")
    return man


def run_finetune_label(
    exported: str | Path,
    model: ModelSpec,
    out: str | Path,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    with_stress: bool = False,
) -> int:
    """Label exported structures with a registry model (a stand-in for DFT, or a teacher)."""
    from kappaflow import finetune

    frames = io.read_frames(exported)
    loaded = load_calculator(model, device, model_dir)
    io.write_frames(out, finetune.label_frames(frames, loaded.calculator, with_stress))
    log(f"labelled {len(frames)} structures with {model.key} -> {out}")
    return len(frames)


def run_finetune_check(
    labels: list[str | Path], exported: str | Path | None, out: str | Path
) -> dict[str, Any]:
    """Validate label files (extxyz, or phono3py yaml with forces) and write one clean
    training extxyz; raise finetune.LabelError naming file and frame on bad labels."""
    import phono3py

    from kappaflow import finetune

    reference = io.read_frames(exported) if exported else None
    clean: list = []
    for path in labels:
        path = Path(path)
        if path.suffix in (".yaml", ".yml", ".xz", ".gz", ".lzma"):
            ph3 = phono3py.load(str(path), produce_fc=False, log_level=0)
            frames = finetune.frames_from_phono3py(ph3, str(path))
            clean += finetune.validate_labels(frames, None, str(path))
        else:
            clean += finetune.validate_labels(io.read_frames(path), reference, str(path))
    io.write_frames(out, clean)
    summary = {
        "n_frames": len(clean),
        "n_with_energy": sum(finetune.ENERGY_KEY in a.info for a in clean),
        "files": [str(p) for p in labels],
        "sha256": io.sha256_file(out),
    }
    log(f"{summary['n_frames']} labelled frames ok ({summary['n_with_energy']} with energies)")
    return summary


class FinetuneError(RuntimeError):
    """mace's training run failed; the message carries the tail of its log."""


def _stream_subprocess(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` with its output going to this process's stdout (the rule log)."""
    import subprocess

    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        return subprocess.run(argv, env=env, stdout=fd, stderr=subprocess.STDOUT).returncode
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    return proc.returncode


def run_finetune_train(
    train_data: str | Path,
    base: ModelSpec,
    settings: Any,
    key: str,
    workroot: str | Path,
    out_model: str | Path,
    out_record: str | Path,
    device: str = "auto",
    threads: int | None = None,
    model_dir: str | Path = "resources/models",
) -> dict[str, Any]:
    """Fine-tune the mace model ``base`` on checked labels with ``mace.cli.run_train``.

    The run lives in ``workroot/run-<tag>`` (tag: hash of data, base checkpoint and
    settings), so a killed run resumes from mace's latest checkpoint and a changed input
    starts afresh. Writes the model file and a record: sha256 of model, base and data,
    mace's arguments, the split, the error table (train/valid RMSE) and timings."""
    import os
    import time

    from kappaflow import finetune
    from kappaflow.calculators import mace_checkpoint, resolve_device

    base_path, base_ck = mace_checkpoint(base, model_dir)
    frames = io.read_frames(train_data)
    data_sha = io.sha256_file(train_data)
    tag = finetune.training_tag(data_sha, base_ck["checkpoint_sha256"], settings)
    workdir = Path(workroot) / f"run-{tag}"
    train, valid = finetune.split_train_valid(frames, settings.valid_fraction, settings.seed)
    train_file, valid_file = workdir / "train.extxyz", workdir / "valid.extxyz"
    io.write_frames(train_file, train)
    io.write_frames(valid_file, valid)
    dev = resolve_device(device if device != "auto" else settings.device)
    argv = finetune.mace_train_argv(
        settings, str(base_path), str(train_file), str(valid_file), str(workdir), key, dev
    )
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log(
        f"fine-tuning {base.key} -> {key}: {len(train)} train / {len(valid)} valid frames, "
        f"{settings.epochs} epochs on {dev}; work dir {workdir}"
    )
    t0 = time.perf_counter()
    rc = _stream_subprocess([sys.executable, "-m", "mace.cli.run_train", *argv], env)
    elapsed = time.perf_counter() - t0
    mace_log = workdir / "logs" / f"{key}_run-{settings.seed}.log"
    log_text = io.read_text(mace_log) if mace_log.exists() else ""
    model_file = workdir / f"{key}.model"
    if rc != 0 or not model_file.exists():
        tail = "\n".join(log_text.splitlines()[-25:])
        raise FinetuneError(
            f"mace run_train for {key!r} exited {rc}"
            + ("" if model_file.exists() else f" without writing {model_file}")
            + f"; log {mace_log}:\n{tail}"
        )
    io.copy_file(model_file, out_model)
    record = {
        "model": key,
        "model_file": str(out_model),
        "sha256": io.sha256_file(out_model),
        "base": base.key,
        "base_checkpoint": base_ck,
        "train_data": str(train_data),
        "train_data_sha256": data_sha,
        "n_train": len(train),
        "n_valid": len(valid),
        "n_atoms_train": int(sum(len(a) for a in train)),
        "n_with_energy": sum(finetune.ENERGY_KEY in a.info for a in frames),
        "materials": sorted({str(a.info.get(finetune.MATERIAL_KEY, "?")) for a in frames}),
        "mode": "multihead" if settings.replay_file else "naive",
        "settings": settings.as_dict(),
        "device": dev,
        "threads": threads,
        "mace_argv": argv,
        "work_dir": str(workdir),
        "training_log": str(mace_log),
        "errors": finetune.parse_error_table(log_text),
        "train_seconds": round(elapsed, 1),
        "provenance": provenance(),
    }
    io.write_json(out_record, record)
    log(f"fine-tuned model {out_model} sha256 {record['sha256'][:12]} in {elapsed:.0f} s")
    return record


def run_finetune_compare(
    before_csv: str | Path,
    after_csv: str | Path,
    split: dict[str, str],
    base: str,
    key: str,
    out_csv: str | Path,
    out_summary: str | Path,
    out_md: str | Path,
    out_svg: str | Path,
) -> pd.DataFrame:
    """Before/after table per material and per split (train / same composition /
    held out) from the two models' metrics, plus side-by-side parity plots."""
    from kappaflow import finetune
    from kappaflow.plots import before_after_parity

    before, after = io.read_csv(before_csv), io.read_csv(after_csv)
    scored = [
        df[df["SRME"].notna()] if "SRME" in df.columns else df.iloc[:0] for df in (before, after)
    ]
    per, summary = finetune.before_after(scored[0], scored[1], split)
    io.write_csv(out_csv, per)
    io.write_csv(out_summary, summary)
    cols = [
        "split", "n", "mSRME_before", "mSRME_after", "mSRE_before", "mSRE_after",
        "failed_before", "failed_after", "n_ok_both", "mSRME_before_ok", "mSRME_after_ok",
    ]  # fmt: skip
    lines = [
        f"# Fine-tuning: {base} -> {key}",
        "",
        "Splits: train = materials whose structures were in the training data; "
        "same_composition = not trained on, but a training material has their composition; "
        "held_out = no training material shares their composition. "
        "*_ok: materials that failed in neither run.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, row in summary.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    lines += ["", "| mp_id | split | SRME before | SRME after | failed before | failed after |"]
    lines.append("|---|---|---|---|---|---|")
    for _, row in per.iterrows():
        lines.append(
            f"| {row['mp_id']} | {row['split']} | {_cell(row['SRME_before'])} | "
            f"{_cell(row['SRME_after'])} | {row['failed_before']} | {row['failed_after']} |"
        )
    io.write_text(out_md, "\n".join(lines) + "\n")
    io.write_figure(out_svg, before_after_parity(scored[0], scored[1], split, base, key))
    return summary
