"""One function per workflow step: read inputs, call the physics, write outputs.

The Snakemake scripts and the CLI call exactly these functions, so a CLI run of one
material writes the same files as the workflow. Files are touched only through
:mod:`kappaflow.io`. Physics failures (imaginary modes, broken symmetry) become a
status in the outputs; the DAG stays static and downstream steps write placeholders.
"""

from __future__ import annotations

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
from kappaflow.runtime import current_threads
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
            forces = phonons.compute_forces(
                ph3.phonon_supercells_with_displacements, loaded.calculator
            )
            t_forces = time.perf_counter() - t0
            fc2 = phonons.fc2_from_forces(ph3, forces)
            freqs = phonons.grid_frequencies(atoms, material, fc2, settings)
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
) -> dict[str, Any]:
    """fc3 forces -> fc3.hdf5, or status-only placeholders when the gate is closed."""
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
    t0 = time.perf_counter()
    log(f"fc3: {len(ph3.supercells_with_displacements)} supercells of {len(ph3.supercell)} atoms")
    try:
        forces = phonons.compute_forces(ph3.supercells_with_displacements, loaded.calculator)
        t_forces = time.perf_counter() - t0
        fc3 = phonons.fc3_from_forces(ph3, forces)
    except Exception as exc:  # recorded as data (k_SRME ForceConstantError)
        status = failure_status(exc, "fc3")
        fields = _error_fields(exc)
        log(f"fc3 failed: {fields['errors'][0]}")
        io.write_forces(out_forces, None, status=status, model=model.key, error=fields["errors"][0])
        io.write_fc(out_fc3, 3, None, None, status=status)
        return {"status": status, **fields}
    io.write_forces(
        out_forces,
        forces,
        model=model.key,
        timing_s=t_forces,
        checkpoint_sha256=str(loaded.info.get("checkpoint_sha256", "")),
    )
    io.write_fc(out_fc3, 3, fc3, ph3.primitive.p2s_map)
    return {
        "status": io.STATUS_OK,
        "timing_s": {"fc3_forces": t_forces, "fc3_total": time.perf_counter() - t0},
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
    if fc3_forces is not None:
        fc3_meta = io.read_attrs(fc3_forces)
        if "timing_s" in fc3_meta:
            record["timing_s"]["fc3_forces"] = float(fc3_meta["timing_s"])
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
            {"kappaflow_status": record["status"]},
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
    }
    io.write_kappa_hdf5(out_hdf5, kappa_datasets(result), attrs)
    io.write_json(out_record, record)
    log(f"κ_TOT_ave = {record['kappa_TOT_ave']} W/mK in {record['timing_s']['kappa']:.1f} s")
    return record


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
) -> dict[str, Any]:
    """Workflow metrics of one model at ``temperature`` (the reference's 300 K).

    Materials without a DFT reference are skipped with a note; if ``temperature`` was not
    computed at all (e.g. ``temperatures: [600, 900]``), every material is skipped with a
    note instead of being scored as failed.
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
            "no DFT reference: kappa computed, metrics skipped"
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
    io.write_csv(out_csv, per_material.reset_index())
    return summary


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
) -> pd.DataFrame:
    """One row per model (results/metrics.csv) and the same as a Markdown table."""
    rows = [{"model": m, **io.read_json(p)} for m, p in zip(models, summaries, strict=True)]
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
    ]
    cols = [c for c in cols if c in df.columns]
    lines = [
        f"# kappaflow metrics (300 K, DFT reference: {reference_name})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, r in df.iterrows():
        cells = [_cell(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
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
