"""Which steps of a one-material CLI run are current (the workflow leaves this to
Snakemake): the first step whose outputs are missing or were made with other inputs."""

from __future__ import annotations

from pathlib import Path

from kappaflow import storage
from kappaflow.settings import KappaSettings, RelaxSettings
from kappaflow.structures import MaterialSpec

STEP_ORDER = ("relax", "fc2", "fc3", "kappa")
#: outputs of each step, by kappaflow.layout.MATERIAL_FILES role
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
    earlier one is.
    """
    for step in STEP_ORDER:
        if not all(Path(files[k]).exists() for k in STEP_OUTPUTS[step]):
            return step
    _, relaxed = storage.read_structure(files["relaxed"])
    if (
        relaxed.get("model", {}).get("model") != model_key
        or relaxed.get("material") != material.as_dict()
        or relaxed.get("relax_settings") != relax.as_dict()
    ):
        return "relax"
    gate = storage.read_json(files["phonons"])
    if (
        gate.get("settings") != kappa.phono3py.as_dict()
        or gate.get("model", {}).get("model") != model_key
    ):
        return "fc2"
    record = storage.read_json(files["record"])
    if (
        record.get("temperatures") != list(kappa.temperatures)
        or record.get("settings", {}).get("phono3py") != kappa.phono3py.as_dict()
    ):
        return "kappa"
    return None


def steps_to_run(first: str | None) -> tuple[str, ...]:
    """The steps from ``first`` on (none when everything is current)."""
    return STEP_ORDER[STEP_ORDER.index(first) :] if first else ()
