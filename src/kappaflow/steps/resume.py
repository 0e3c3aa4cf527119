"""Which steps of a one-material CLI run are current (the workflow leaves this to
Snakemake), decided the way Snakemake decides it.

Every step records what it was made from (``made_from``, in its record: relaxed.extxyz's
info record, phonons.json, fc3.hdf5's attributes, kappa.json, gruneisen.json): the sha256
of every input file it read (for relax: the canonical text of the material's own frame),
its settings, and the model's identity (key, family, options, and the sha256 of a local
checkpoint). A step is current when its outputs exist and its record says it was made from
exactly what the current files and settings are; the steps are checked in order, and the
first one that is not current is redone with every step after it. A record without
``made_from`` (written before kappaflow recorded it) is not current: the step is redone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms

from kappaflow import storage
from kappaflow.calculators import ModelSpec
from kappaflow.forces import ForceSettings
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings
from kappaflow.structures import MaterialSpec, frame_sha256

KAPPA_STEPS = ("relax", "fc2", "fc3", "kappa")
GRUNEISEN_STEPS = ("relax", "fc2", "gruneisen")
#: outputs of each step, by kappaflow.layout.MATERIAL_FILES role; the record (holding
#: made_from) is the step's last write
STEP_OUTPUTS = {
    "relax": ("relaxed",),
    "fc2": ("disp", "fc2", "forces_fc2", "phonons"),
    "fc3": ("forces_fc3", "fc3"),
    "kappa": ("kappa", "record"),
    "gruneisen": ("gruneisen_hdf5", "thermal_expansion", "gruneisen"),
}
RECORD = {
    "relax": "relaxed",
    "fc2": "phonons",
    "fc3": "fc3",
    "kappa": "record",
    "gruneisen": "gruneisen",
}
#: the files each step reads (the inputs of its rule)
STEP_INPUTS = {
    "relax": (),
    "fc2": ("relaxed",),
    "fc3": ("relaxed", "phonons"),
    "kappa": ("relaxed", "phonons", "fc2", "fc3", "forces_fc3"),
    "gruneisen": ("relaxed", "fc2"),
}


# ------------------------------------------------------------------ what steps record


def model_identity(spec: ModelSpec, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A model as a step records it: key, family, options (the rules' ``model`` param) and,
    for a local checkpoint (option ``path``, the rules' ``model_file`` input), its sha256
    (the loaded model's own record of it when given, else the file hashed now)."""
    ident: dict[str, Any] = {"key": spec.key, "family": spec.family, "options": spec.options}
    path = spec.options.get("path")
    if path:
        sha = (info or {}).get("checkpoint_sha256")
        if not sha and Path(path).is_file():
            sha = storage.sha256_file(path)
        ident["checkpoint_sha256"] = sha or None
    return storage.plain(ident)


def made_from(
    inputs: Mapping[str, str | Path | None],
    settings: Mapping[str, Any],
    model: ModelSpec | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a step records: the sha256 of each input file it read, its settings, its model.

    ``inputs`` maps a role (kappaflow.layout) to a path; None entries are left out."""
    return storage.plain(
        {
            "inputs": {
                role: storage.sha256_file(path) for role, path in inputs.items() if path is not None
            },
            "settings": settings,
            "model": None if model is None else model_identity(model, info),
        }
    )


def relax_made_from(
    atoms: Atoms,
    material: MaterialSpec,
    settings: RelaxSettings,
    model: ModelSpec,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The relax step's record: its input is the material's own frame (its content hash),
    not the structures file it came from."""
    return storage.plain(
        {
            "inputs": {"structure": frame_sha256(atoms)},
            "settings": {"relax": settings.as_dict(), "material": material.as_dict()},
            "model": model_identity(model, info),
        }
    )


def force_settings_dict(force_settings: ForceSettings | None) -> dict[str, Any]:
    return (force_settings or ForceSettings()).as_dict()


def fc_settings(settings: Phono3pySettings, force_settings: ForceSettings | None) -> dict:
    """Settings of the fc2 and fc3 steps (the rules' phono3py and forces params)."""
    return {"phono3py": settings.forces_dict(), "forces": force_settings_dict(force_settings)}


def kappa_settings(settings: Phono3pySettings, temperatures: Sequence[float]) -> dict:
    return {"phono3py": settings.as_dict(), "temperatures": [float(t) for t in temperatures]}


def gruneisen_settings(
    settings: GruneisenSettings,
    relax: RelaxSettings,
    phono3py: Phono3pySettings,
    melting_point: float | None,
) -> dict:
    return {
        "gruneisen": settings.as_dict(),
        "relax": relax.as_dict(),
        "phono3py": phono3py.forces_dict(),
        "melting_point_K": melting_point,
    }


def output_hashes(*paths: str | Path | None) -> dict[str, str]:
    """sha256 of a step's other outputs, by file name: its record (written last) vouches
    for them, so a file put there by hand or by another run is noticed."""
    return {Path(p).name: storage.sha256_file(p) for p in paths if p is not None}


def add_outputs(record: dict[str, Any], *paths: str | Path | None) -> dict[str, Any]:
    """Put :func:`output_hashes` into the record's ``provenance.made_from`` (if it has one)."""
    made = (record.get("provenance") or {}).get("made_from")
    if made is not None:
        made["outputs"] = output_hashes(*paths)
    return record


def with_made_from(record: dict[str, Any], made: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``made`` under ``provenance.made_from`` (returned for chaining)."""
    record.setdefault("provenance", {})["made_from"] = made
    return record


def hdf5_made_from(made: dict[str, Any]) -> dict[str, str]:
    """``made`` as an HDF5 attribute (fc3.hdf5, forces_fc3.hdf5)."""
    return {"made_from": json.dumps(made)}


# ------------------------------------------------------------------ what a run asks for


@dataclass(frozen=True)
class Wanted:
    """What a CLI run asks of a folder: model, material (frame and spec), settings."""

    model: ModelSpec
    frame: Atoms
    material: MaterialSpec
    relax: RelaxSettings
    phono3py: Phono3pySettings
    forces: ForceSettings | None = None
    temperatures: tuple[float, ...] = (300.0,)
    gruneisen: GruneisenSettings | None = None
    melting_point: float | None = None

    def made_from(self, step: str, files: Mapping[str, Path]) -> dict[str, Any]:
        """What ``step`` would record now, from the current files of ``files``."""
        if step == "relax":
            return relax_made_from(self.frame, self.material, self.relax, self.model)
        inputs = {role: files[role] for role in STEP_INPUTS[step]}
        if step in ("fc2", "fc3"):
            return made_from(inputs, fc_settings(self.phono3py, self.forces), self.model)
        if step == "kappa":
            return made_from(inputs, kappa_settings(self.phono3py, self.temperatures))
        if step == "gruneisen":
            if self.gruneisen is None:
                raise ValueError("a Grüneisen run needs its settings")
            settings = gruneisen_settings(
                self.gruneisen, self.relax, self.phono3py, self.melting_point
            )
            return made_from(inputs, settings, self.model)
        raise ValueError(f"unknown step {step!r}")


def recorded_made_from(step: str, files: Mapping[str, Path]) -> dict[str, Any] | None:
    """What ``step``'s record says it was made from (None for a record without it)."""
    path = files[RECORD[step]]
    if step == "relax":
        record = storage.read_structure(path)[1]
    elif step == "fc3":
        text = storage.read_attrs(path).get("made_from")
        return None if text is None else json.loads(str(text))
    else:
        record = storage.read_json(path)
    return (record.get("provenance") or {}).get("made_from")


def _difference(recorded: dict[str, Any], wanted: dict[str, Any], files, step: str) -> str:
    """Why a record is not current, in words."""
    name = Path(files[RECORD[step]]).name
    for role, sha in wanted["inputs"].items():
        if recorded.get("inputs", {}).get(role) != sha:
            what = (
                "another structure frame"
                if role == "structure"
                else f"another {Path(files[role]).name}"
            )
            return f"{name} was made from {what}"
    if recorded.get("model") != wanted["model"]:
        old, new = (recorded.get("model") or {}).get("key"), wanted["model"]["key"]
        if old == new:
            return f"{name} was made with another definition or checkpoint of model {new!r}"
        return f"{name} was made with model {old!r}, asked for {new!r}"
    for key, value in wanted["settings"].items():
        if recorded.get("settings", {}).get(key) != value:
            return f"{name} was made with other {key} settings"
    return f"{name} was made from other inputs"


@dataclass(frozen=True)
class Outdated:
    """The first step to redo, and why."""

    step: str
    reason: str


def first_outdated(
    files: Mapping[str, Path], steps: Sequence[str], wanted: Wanted
) -> Outdated | None:
    """The first of ``steps`` (in order) that is not current (None: all current).

    Each step in turn: its outputs exist, its record's ``made_from`` equals what it would
    record now (inputs' sha256 from the current files, settings, model), and its other
    outputs are the files the record was written with (their sha256)."""
    for step in steps:
        missing = [files[r].name for r in STEP_OUTPUTS[step] if not Path(files[r]).exists()]
        if missing:
            return Outdated(step, f"{', '.join(missing)} missing")
        try:
            recorded = recorded_made_from(step, files)
        except Exception as exc:  # an unreadable record is not current
            return Outdated(step, f"{files[RECORD[step]].name} unreadable ({exc})")
        if recorded is None:
            return Outdated(
                step,
                f"{files[RECORD[step]].name} was written before kappaflow recorded what "
                "each step is made from (no input hashes)",
            )
        outputs = recorded.pop("outputs", {})
        expected = wanted.made_from(step, files)
        if recorded != expected:
            return Outdated(step, _difference(recorded, expected, files, step))
        folder = Path(files[RECORD[step]]).parent
        for name, sha in outputs.items():
            if not (folder / name).is_file() or storage.sha256_file(folder / name) != sha:
                record = files[RECORD[step]].name
                return Outdated(step, f"{name} is not the file {record} was written with")
    return None


def steps_to_run(first: str | None, steps: Sequence[str] = KAPPA_STEPS) -> tuple[str, ...]:
    """The steps from ``first`` on (none when everything is current)."""
    return tuple(steps[steps.index(first) :]) if first else ()


def outputs_of(steps: Sequence[str], files: Mapping[str, Path]) -> list[Path]:
    """Every output file of ``steps``."""
    return [Path(files[role]) for step in steps for role in STEP_OUTPUTS[step]]
