"""Step 4, κ: the Wigner transport equation in the RTA at every temperature (PROTOCOL §5)
-> kappa.hdf5 (phono3py's dataset names plus k_SRME's) and the small kappa.json record.

A κ that is not finite (``nonfinite_kappa``), or not positive above 0 K
(``nonpositive_kappa``), is a recorded failure with status-only placeholders; the values
computed are kept in the record (``kappa_TOT_ave_computed``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from kappaflow import storage
from kappaflow.conductivity import TRANSPORT_TYPE, KappaResult, kappa_ave
from kappaflow.gates import NONFINITE_KAPPA, NONPOSITIVE_KAPPA, OK, error_fields, step_error
from kappaflow.phph import ENGINE_ERRORS
from kappaflow.progress import Progress
from kappaflow.runtime import log, package_versions, provenance
from kappaflow.settings import KappaSettings, Phono3pySettings
from kappaflow.steps.common import material_of, write_placeholders
from kappaflow.steps.resume import add_outputs, kappa_settings, made_from


def kappa_datasets(result: KappaResult) -> dict[str, Any]:
    """KappaResult -> HDF5 datasets with phono3py's names plus k_SRME's."""
    intra = result.extra.get("kappa_intra")
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
        "kappa_intra": intra,
        "kappa_inter": None if intra is None else result.kappa_TOT_RTA - intra,
        "kappa_TOT_RTA": result.kappa_TOT_RTA,
        "kappa_P_RTA": result.kappa_P_RTA,
        "kappa_C": result.kappa_C,
        "mode_kappa_P_RTA": result.mode_kappa_P_RTA,
        "mode_kappa_C": result.mode_kappa_C,
        "mode_kappa_TOT": result.mode_kappa_TOT,
        "kappa_TOT_ave": result.kappa_TOT_ave,
        "mode_kappa_TOT_ave": kappa_ave(result.mode_kappa_TOT),
        "mode_kappa_matrix": result.extra.get("mode_kappa_matrix"),
        # phono3py 4.10's own SMM19 κ (Voigt), for comparison (docs/protocol.md §14)
        "kappa_phono3py4": result.extra.get("kappa_phono3py4"),
    }


def kappa_problem(
    temperatures: Any, kappa_tot: Any, mode_kappa_tot: Any = None
) -> tuple[str, str] | None:
    """(status, reason) of a κ that cannot mean anything, else None: a NaN or infinite κ
    (Voigt tensor, or a mode κ) at any temperature, or, above 0 K, a trace average or a
    diagonal component (xx, yy, zz) that is not positive. At 0 K κ is 0."""
    temps = np.atleast_1d(np.asarray(temperatures, dtype=float))
    k = np.asarray(kappa_tot, dtype=float).reshape(len(temps), -1)
    mode_ok = mode_kappa_tot is None or bool(np.all(np.isfinite(mode_kappa_tot)))
    bad = [t for t, row in zip(temps, k, strict=True) if not np.all(np.isfinite(row))]
    if bad or not mode_ok:
        where = f"at {', '.join(f'{t:g}' for t in bad)} K" if bad else "in the mode κ"
        return NONFINITE_KAPPA, f"κ is NaN or infinite {where}"
    diag = k[:, :3]
    ave = diag.mean(axis=1)
    low = [(t, a, d) for t, a, d in zip(temps, ave, diag, strict=True) if t > 0 and np.min(d) <= 0]
    if low:
        t, a, d = low[0]
        return NONPOSITIVE_KAPPA, (
            f"κ at {t:g} K is not positive: κ_TOT_ave {a:.6g}, (xx, yy, zz) "
            f"({', '.join(f'{x:.6g}' for x in d)}) W/mK"
        )
    return None


def protocol_deviations(settings: Phono3pySettings, model_info: dict[str, Any]) -> list[str]:
    """Every opt-in deviation from the protocol behind one result: the fc3 approximations
    and a non-reference ``kappa_convention`` of ``settings``, and a non-default model
    dtype. Empty for the published protocol."""
    return [*model_info.get("protocol_deviations", []), *settings.kappa_deviations()]


def _job_error(exc: BaseException) -> bool:
    """An error of the job, not of the material: the ph-ph engine's set-up (torch, device,
    version, options, memory budget) or memory exhausted (host or GPU); raised so that
    Snakemake reports it and re-runs the job, never recorded as a κ failure."""
    return isinstance(exc, (*ENGINE_ERRORS, MemoryError)) or type(exc).__name__ == (
        "OutOfMemoryError"  # torch.OutOfMemoryError (CUDA), without importing torch
    )


def engine_device(
    settings: Phono3pySettings, device: str, job_mem_mb: float | None
) -> tuple[str, float | None]:
    """The ph-ph engine's torch device and memory budget (device unchanged and no budget
    for phono3py's own engine). Raises a clear error where torch or the device is missing."""
    if settings.phph_engine != "kappaflow":
        return device, None
    from kappaflow.phph.engine import require_torch, resolve_device
    from kappaflow.phph.memory import job_budget_mb

    dev = resolve_device(device, require_torch())
    return str(dev), job_budget_mb(job_mem_mb, dev.type)


def _record(relax_record: dict[str, Any], the_gate: dict[str, Any], settings: KappaSettings):
    """kappa.json before the conductivity: material, gate, relax, settings, timings."""
    material = material_of(relax_record)
    relax = relax_record["relax"]
    record: dict[str, Any] = {
        "mp_id": material.material_id,
        "name": material.name,
        "desc": material.desc,
        "material": material.as_dict(),
        "status": the_gate["status"],
        "imaginary_freqs": the_gate["imaginary_freqs"],
        "broken_symmetry": the_gate["broken_symmetry"],
        "initial_space_group_number": relax["initial_space_group_number"],
        "relaxed_space_group_number": relax["relaxed_space_group_number"],
        "relax": relax,
        "displacements": the_gate["displacements"],
        "temperatures": list(settings.temperatures),
        "q_mesh": list(settings.phono3py.mesh_for(material)),
        "model": the_gate["model"],
        "settings": {
            "relax": relax_record["relax_settings"],
            "phono3py": settings.phono3py.as_dict(),
            "transport_type": TRANSPORT_TYPE,
            "rta": True,
        },
        "timing_s": {**relax_record.get("timing_s", {}), **the_gate.get("timing_s", {})},
        "errors": list(the_gate.get("errors", [])),
        "checks": dict(the_gate.get("checks", {})),
        "protocol_deviations": protocol_deviations(settings.phono3py, the_gate["model"]),
    }
    if the_gate.get("force_evaluation"):
        record["force_evaluation"] = {"fc2": the_gate["force_evaluation"]}
    return record


def _add_fc3_forces(record: dict[str, Any], fc3_forces: str | Path) -> None:
    """Timing, force-evaluation record and error of the fc3 force step."""
    meta = storage.read_attrs(fc3_forces)
    if "timing_s" in meta:
        record["timing_s"]["fc3_forces"] = float(meta["timing_s"])
    if "force_evaluation" in meta:
        record.setdefault("force_evaluation", {})["fc3"] = json.loads(str(meta["force_evaluation"]))
    if "error" in meta:
        record["errors"].append(str(meta["error"]))


def run_kappa(
    *,
    relaxed: str | Path,
    phonons_json: str | Path,
    fc2_path: str | Path,
    fc3_path: str | Path,
    settings: KappaSettings,
    out_hdf5: str | Path,
    out_record: str | Path,
    fc3_forces: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    job_mem_mb: float | None = None,
) -> dict[str, Any]:
    """Wigner RTA κ at all temperatures; writes kappa.hdf5 and the small kappa.json record.

    ``device``, ``threads`` and ``job_mem_mb`` are for kappaflow's ph-ph engine
    (``phono3py.phph_engine: kappaflow``): where it runs (auto: CUDA when present), its
    intra-op threads, and the job's memory, of which the engine takes all but 1 GB on a
    CPU (:func:`kappaflow.phph.memory.job_budget_mb`). A missing torch or CUDA device is an
    error of the job, not a recorded failure of the material. Progress lines (every 10 s /
    5 % of the irreducible grid points) go to the log with either engine."""
    inputs = {
        "relaxed": relaxed,
        "phonons": phonons_json,
        "fc2": fc2_path,
        "fc3": fc3_path,
        "forces_fc3": fc3_forces,
    }
    made = made_from(inputs, kappa_settings(settings.phono3py, settings.temperatures))
    atoms, relax_record = storage.read_structure(relaxed)
    material = material_of(relax_record)
    record = _record(relax_record, storage.read_json(phonons_json), settings)
    if fc3_forces is not None:
        _add_fc3_forces(record, fc3_forces)
    fc3_status = storage.fc_status(fc3_path)
    if record["status"] == OK and fc3_status != OK:
        record["status"] = fc3_status
    result = None
    backend = settings.phono3py.backend
    if record["status"] == OK:
        from kappaflow import phonons
        from kappaflow.conductivity import compute_kappa

        fc2 = storage.read_fc(fc2_path, 2)
        fc3 = storage.read_fc(fc3_path, 3)
        ph3 = phonons.init_phono3py(atoms, material, settings.phono3py, displace=False)
        p3 = settings.phono3py
        device, memory_mb = engine_device(p3, device, job_mem_mb)
        engine = p3.phph_engine + (f" on {device}" if p3.phph_engine == "kappaflow" else "")
        log(
            f"Wigner RTA κ of {material.material_id} on mesh {[int(m) for m in ph3.mesh_numbers]} "
            f"at {list(settings.temperatures)} K, backend {backend}, ph-ph engine {engine}, "
            f"convention {p3.kappa_convention}"
        )
        t0 = time.perf_counter()
        try:
            result = compute_kappa(
                ph3,
                fc2,
                fc3,
                settings.temperatures,
                p3,
                device=device,
                threads=threads,
                memory_mb=memory_mb,
                progress=Progress("κ", "grid points"),
            )
        except Exception as exc:  # recorded as data (k_SRME ConductivityError)
            if _job_error(exc):
                raise
            fields = error_fields(exc)
            record["status"] = step_error("kappa")
            record["errors"] += fields["errors"]
            record["error_traceback"] = fields["error_traceback"]
            log(f"κ failed: {fields['errors'][0]}")
        record["timing_s"]["kappa"] = time.perf_counter() - t0
        problem = (
            None
            if result is None
            else kappa_problem(result.temperatures, result.kappa_TOT_RTA, result.mode_kappa_TOT)
        )
        if problem is not None:
            record["status"] = problem[0]
            record["errors"].append(f"{problem[0]}: {problem[1]}")
            record["kappa_TOT_ave_computed"] = np.asarray(result.kappa_TOT_ave).tolist()
            log(f"κ failed: {record['errors'][-1]}")
            result = None
    labels = {"protocol_deviations": json.dumps(record["protocol_deviations"])}
    if result is None:
        record["kappa_TOT_ave"] = [None] * len(settings.temperatures)
        record["provenance"] = provenance(backend=backend, made_from=made)
        temps = {"temperature": np.asarray(settings.temperatures)}
        return write_placeholders(
            record, what="κ", json_path=out_record, hdf5=((out_hdf5, temps),), attrs=labels
        )
    record["kappa_TOT_ave"] = result.kappa_TOT_ave.tolist()
    record["kappa_TOT_RTA"] = result.kappa_TOT_RTA.tolist()
    record["kappa_P_RTA"] = result.kappa_P_RTA.tolist()
    record["kappa_C"] = result.kappa_C.tolist()
    record["sum_rule_error"] = result.sum_rule_error()
    record["provenance"] = provenance(backend=backend, made_from=made)
    phph_record = result.extra.get("phph") or {}
    record["provenance"]["phph"] = phph_record
    attrs = {
        "kappaflow_status": OK,
        "mp_id": material.material_id,
        "backend": backend,
        "transport_type": TRANSPORT_TYPE,
        "kappa_convention": result.convention,
        "phph_engine": str(phph_record["engine"]),
        "phph_device": str(phph_record.get("device") or ""),
        "version": package_versions()["phono3py"] or "",
        **labels,
    }
    storage.write_hdf5(out_hdf5, kappa_datasets(result), attrs)
    storage.write_json(out_record, add_outputs(record, out_hdf5))
    log(f"κ_TOT_ave = {record['kappa_TOT_ave']} W/mK in {record['timing_s']['kappa']:.1f} s")
    return record
