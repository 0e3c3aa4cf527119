"""Step 6, Grüneisen: mode γ, γ(T), K_T and α_V(T) of one material (PROTOCOL §7), its
fc3 cross-check, one model's γ scores against the DFT γ, and the γ figures."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kappaflow import storage
from kappaflow.calculators import LoadedModel, ModelSpec, load_calculator
from kappaflow.gates import OK, error_fields, failure_status
from kappaflow.grid import temperature_index
from kappaflow.runtime import log, provenance
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.common import THERMAL_EXPANSION_COLUMNS, material_of, write_placeholders
from kappaflow.steps.resume import add_outputs, gruneisen_settings, made_from
from kappaflow.structures import type_group


def _placeholders(
    record: dict[str, Any], out_hdf5: str | Path, out_json: str | Path, out_csv: str | Path
) -> dict[str, Any]:
    return write_placeholders(
        record, what="Grüneisen", json_path=out_json, hdf5=((out_hdf5, {}),), csv_path=out_csv
    )


def run_gruneisen(
    *,
    relaxed: str | Path,
    fc2_path: str | Path,
    model: ModelSpec,
    settings: GruneisenSettings,
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
    """Mode γ, γ(T), K_T from E(V) and α_V(T) of one material (PROTOCOL §7), from the κ
    workflow's relaxed structure and fc2 (:func:`kappaflow.gruneisen.compute_gruneisen`).

    Failures are recorded, never raised: the gates (imaginary modes at the origin, broken
    symmetry) are flagged while γ is still written; a failed relax/fc2 upstream or an
    exception here gives placeholders.
    """
    from kappaflow.gruneisen import compute_gruneisen

    t_start = time.perf_counter()
    made = made_from(
        {"relaxed": relaxed, "fc2": fc2_path},
        gruneisen_settings(settings, relax_settings, phono3py_settings, melting_point),
        model,
    )
    atoms, relax_record = storage.read_structure(relaxed)
    material = material_of(relax_record)
    temps = list(settings.temperatures)
    record: dict[str, Any] = {
        "mp_id": material.material_id,
        "name": material.name,
        "desc": material.desc,
        "material": material.as_dict(),
        "status": OK,
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
        "provenance": provenance(made_from=made),
    }
    upstream = relax_record.get("status", OK)
    if upstream == OK and storage.fc_status(fc2_path) != OK:
        upstream = storage.fc_status(fc2_path)
    if upstream != OK:
        record["status"] = upstream
        return _placeholders(record, out_hdf5, out_json, out_csv)

    loaded = loaded or load_calculator(model, device, model_dir)
    record["model"] = loaded.info
    volumes: dict[str, dict[str, Any]] = {}
    try:
        res = compute_gruneisen(
            atoms,
            material,
            storage.read_fc(fc2_path, 2),
            loaded.calculator,
            relax=relax_record["relax"],
            settings=settings,
            relax_settings=relax_settings,
            phono3py_settings=phono3py_settings,
            volumes=volumes,
        )
    except Exception as exc:  # recorded as data
        record["status"] = failure_status(exc, "gruneisen")
        fields = error_fields(exc)
        record["errors"] += fields["errors"]
        record["error_traceback"] = fields["error_traceback"]
        record["volumes"] = volumes
        log(f"Grüneisen failed: {fields['errors'][0]}")
        return _placeholders(record, out_hdf5, out_json, out_csv)
    record["timing_s"].update(res.timing_s)
    log(
        f"Grüneisen {material.material_id}: {len(res.volumes) - 1} constant-volume relaxes in "
        f"{res.timing_s['constant_volume_relax']:.1f} s"
    )
    record.update(
        imaginary_freqs=res.imaginary_freqs_volumes["origin"],
        imaginary_freqs_volumes=res.imaginary_freqs_volumes,
        broken_symmetry=res.broken_symmetry,
        broken_symmetry_volumes=res.broken_symmetry_volumes,
        symmetry_check=settings.symmetry_check,
        relaxed_space_group_number=res.relaxed_space_group_number,
        initial_space_group_number=relax_record["relax"]["initial_space_group_number"],
        status=res.status,
        gamma=res.gamma,
        gamma_T=res.gamma_T.tolist(),
        volume_primitive_A3=res.volume_primitive_A3,
        volumes=res.volumes,
    )
    if res.eos is not None:
        record["eos"] = res.eos.record()
    else:
        record["errors"].append(res.eos_error)
        record["eos_error"] = res.eos_error
        log(f"EOS fit failed: {res.eos_error}")
    i_score = temperature_index(temps, settings.score_temperature)
    above = [melting_point is not None and t > melting_point for t in temps]
    record.update(
        bulk_modulus_GPa=res.bulk_modulus_GPa,
        alpha_V=res.alpha_V.tolist(),
        alpha_V_score_T=float(res.alpha_V[i_score]),
        cubic=res.cubic,
    )
    record["timing_s"]["gruneisen_total"] = time.perf_counter() - t_start
    record["provenance"] = provenance(made_from=made)
    gm = res.mesh
    storage.write_hdf5(
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
            "heat_capacity": res.heat_capacity,
            "mode_gamma": res.mode_gamma,
            "gamma": res.gamma_T,
            "heat_capacity_total": res.heat_capacity_total,
            "alpha_V": res.alpha_V,
            "alpha_linear": res.alpha_linear,
        },
        {
            "kappaflow_status": res.status,
            "mp_id": material.material_id,
            "units": "frequency THz; heat_capacity J/(K mol) per primitive cell; alpha 1/K",
            "volume_primitive_A3": res.volume_primitive_A3,
            "bulk_modulus_GPa": np.nan if res.eos is None else res.bulk_modulus_GPa,
        },
    )
    curve = {
        "temperature": temps,
        "gamma": res.gamma_T,
        "heat_capacity": res.heat_capacity_total,
        "alpha_V": res.alpha_V,
        "alpha_linear": res.alpha_linear,
        "above_melting": above,
    }
    storage.write_csv(out_csv, pd.DataFrame({c: curve[c] for c in THERMAL_EXPANSION_COLUMNS}))
    storage.write_json(out_json, add_outputs(record, out_hdf5, out_csv))
    log(
        f"γ({settings.score_temperature:g} K) = {record['gamma']:.6g}, K_T = "
        f"{record['bulk_modulus_GPa']} GPa, status {record['status']}, "
        f"{record['timing_s']['gruneisen_total']:.1f} s"
    )
    return record


def run_gruneisen_fc3_check(
    *,
    relaxed: str | Path,
    forces_fc3: str | Path,
    gruneisen_hdf5: str | Path,
    gruneisen_json: str | Path,
    settings: GruneisenSettings,
    phono3py_settings: Phono3pySettings,
    out_json: str | Path,
) -> dict[str, Any]:
    """γ(T_score) from fc3 (fc2 on the fc3 supercell) vs the finite-volume γ.

    The fc3 supercell (e.g. 2×2×2 for rs) is smaller than the fc2 one, so differences of
    several percent are expected; the record gives both and their relative difference.
    """
    from kappaflow.gruneisen_checks import fc3_check_gamma

    grun = storage.read_json(gruneisen_json)
    out: dict[str, Any] = {"mp_id": grun["mp_id"], "status": OK}
    forces_status = storage.read_attrs(forces_fc3).get("kappaflow_status", OK)
    deviations = phono3py_settings.protocol_deviations()
    if grun.get("gamma") is None or not np.isfinite(grun.get("gamma", np.nan)):
        out["status"] = f"no finite-volume γ ({grun['status']})"
    elif forces_status != OK:
        out["status"] = f"no fc3 forces ({forces_status})"
    elif deviations:  # the check rebuilds the systematic displacement set
        out["status"] = "skipped: fc3 forces from protocol deviation(s) " + ", ".join(deviations)
        out["protocol_deviations"] = deviations
    if out["status"] != OK:
        storage.write_json(out_json, out)
        return out
    atoms, record = storage.read_structure(relaxed)
    material = material_of(record)
    t0 = time.perf_counter()
    try:
        g3, n_q = fc3_check_gamma(
            atoms, material, storage.read_forces(forces_fc3), settings, phono3py_settings
        )
    except Exception as exc:  # recorded as data
        out["status"] = "fc3_check_error"
        out.update(error_fields(exc))
        storage.write_json(out_json, out)
        return out
    g_fd = float(grun["gamma"])
    data, _ = storage.read_hdf5(gruneisen_hdf5)
    out.update(
        temperature=settings.score_temperature,
        gamma_finite_volume=g_fd,
        gamma_fc3=g3,
        relative_difference=(g3 - g_fd) / abs(g_fd) if g_fd != 0 else np.nan,
        fc3_supercell=list(material.fc3_supercell),
        fc2_supercell=list(material.fc2_supercell),
        n_qpoints=n_q,
        n_qpoints_finite_volume=len(data.get("qpoint", [])),
        timing_s=time.perf_counter() - t0,
    )
    storage.write_json(out_json, out)
    log(f"γ from fc3 {g3:.5f} vs finite volumes {g_fd:.5f} ({out['relative_difference']:+.2%})")
    return out


def run_gruneisen_metrics(
    *,
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
    from kappaflow.gruneisen import reference_mode_gamma
    from kappaflow.metrics import score_gamma, summarize_gamma

    ref = storage.read_gamma_reference(reference)
    mode_ref = storage.read_mode_gamma_reference(mode_reference) if mode_reference else None
    checks = {c["mp_id"]: c for c in map(storage.read_json, fc3_checks or [])}
    rows = []
    for rec_path, h5_path in zip(records, hdf5_files, strict=True):
        rec = storage.read_json(rec_path)
        mid = rec["mp_id"]
        g_ref = float(ref.loc[mid, "gamma_DFT_300K"]) if mid in ref.index else None
        mode_pred = mode_dft = None
        if mode_ref is not None and mid in mode_ref.index and rec.get("gamma") is not None:
            data, _ = storage.read_hdf5(h5_path)
            mode_pred = data["mode_gamma"][
                temperature_index(data["temperature"], rec["score_temperature"])
            ]
            mode_dft = reference_mode_gamma(
                mode_ref.loc[mid],
                rec["score_temperature"],
                rec["settings"]["gruneisen"]["frequency_cutoff"],
            )
        failure = "" if rec["status"] == OK else rec["status"]
        scores = score_gamma(rec.get("gamma"), g_ref, failure, mode_pred, mode_dft)
        check = checks.get(mid, {})
        rows.append(
            {
                "mp_id": mid,
                "desc": rec["desc"],
                "structure_type": rec["material"]["structure_type"],
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
    storage.write_csv(out_csv, df)
    summary = summarize_gamma(df) if len(df) else summarize_gamma(pd.DataFrame())
    summary["gamma_mode_reference"] = str(mode_reference) if mode_reference else None
    return summary


def run_gamma_parity(
    metrics_csv: str | Path, model: str, out_png: str | Path, out_svg: str | Path
) -> None:
    from kappaflow.plots import gamma_parity

    metrics = storage.read_csv(metrics_csv)
    if "structure_type" in metrics.columns:  # one panel group per rs/zb/wz, the rest "other"
        metrics["structure_type"] = metrics["structure_type"].astype(str).map(type_group)
    storage.write_figure(out_png, gamma_parity(metrics, model), out_svg)


def run_alpha_plot(
    curves: Sequence[str | Path],
    records: Sequence[str | Path],
    model: str,
    out_png: str | Path,
    out_svg: str | Path,
) -> None:
    """α_V(T) of every material of one model, one panel per structure type."""
    from kappaflow.plots import alpha_curves

    data = []
    for csv_path, rec_path in zip(curves, records, strict=True):
        rec = storage.read_json(rec_path)
        kind = type_group(rec["material"]["structure_type"])
        data.append((rec["desc"], kind, rec["status"], storage.read_csv(csv_path)))
    storage.write_figure(out_png, alpha_curves(data, model), out_svg)
