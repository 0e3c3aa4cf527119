"""Fine-tuning protocol (PROTOCOL §12): training structures out, labels in, MACE fine-tuned
with mace's own entry point, before/after comparison split by composition.

Label checking is in :mod:`kappaflow.finetune_labels`. The workflow (rules/finetune.smk,
config ``finetune:``) chains export -> (teacher labels)
-> label check -> ``mace run_train`` -> the fine-tuned model as a model key -> before/after
tables and parity plots; the CLI exposes each step for one run at a time.

Pure functions on ASE Atoms, numpy arrays and pandas tables; files are read and written by
kappaflow.storage, mace is run as a subprocess (``python -m mace.cli.run_train``).

Choices made in the open (config ``finetune:``, README "Fine-tuning"):
- exported structures are built on the *reference* (PhononDB/DFT) geometry of each
  material: the displaced fc2/fc3 supercells of the benchmark (0.03 Å, same supercells)
  and/or rattled fc3 supercells (Gaussian, seeded, amplitude in Å);
- labels without energies train on forces only (mace gives such frames energy weight 0;
  isolated-atom energies then come from the foundation model, ``E0s=foundation``);
- naive fine-tuning unless a replay file is given (then mace's multi-head fine-tuning
  with that file as the pre-training head; mace's default replay set is a download).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ase import Atoms

#: info keys of every exported frame (they survive an extxyz round trip)
ID_KEY = "kf_id"
MATERIAL_KEY = "kf_material"
KIND_KEY = "kf_kind"
DISP_ATOM_KEY = "kf_disp_atom"
DISP_KEY = "kf_disp"
STRAIN_KEY = "kf_strain"

#: mace's key names for the labels kappaflow writes (REF_ keeps ASE's calculator apart)
ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
STRESS_KEY = "REF_stress"

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ExportSettings:
    displaced: tuple[str, ...] = ("fc2", "fc3")  # which displacement sets to export
    max_displaced: int | None = None  # per material and set: a seeded subsample
    rattled: int = 0  # rattled fc3 supercells per material
    rattle_amplitude: float = 0.05  # Å, standard deviation per Cartesian component
    strains: tuple[float, ...] = (0.0,)  # isotropic linear strains the rattled cells cycle over
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.displaced) - {"fc2", "fc3"}
        if unknown:
            raise ValueError(f"finetune.export.displaced: unknown set(s) {sorted(unknown)}")
        if self.rattled < 0:
            raise ValueError(f"finetune.export.rattled must be >= 0, got {self.rattled}")
        if self.rattle_amplitude <= 0:
            raise ValueError("finetune.export.rattle_amplitude must be > 0 Å")
        if self.max_displaced is not None and self.max_displaced < 1:
            raise ValueError("finetune.export.max_displaced must be >= 1 or null")
        if not self.strains or any(not -0.2 < e < 0.2 for e in self.strains):
            raise ValueError("finetune.export.strains: a non-empty list of strains in (-0.2, 0.2)")
        if not self.displaced and self.rattled == 0:
            raise ValueError("finetune.export: nothing to export (no displaced sets, rattled: 0)")

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> ExportSettings:
        m = dict(m or {})
        for key in ("displaced", "strains"):
            if key in m:
                m[key] = tuple(m[key])
        return cls(**m)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "displaced": list(self.displaced), "strains": list(self.strains)}


@dataclass(frozen=True)
class TrainSettings:
    """mace run_train settings kappaflow sets; ``extra_args`` passes anything else."""

    epochs: int = 50
    lr: float = 1.0e-3
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    valid_fraction: float = 0.1
    seed: int = 0
    batch_size: int = 4
    default_dtype: str = "float64"
    replay_file: str | None = None  # multi-head fine-tuning with this pre-training set
    num_samples_pt: int | None = None
    device: str = "auto"
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"finetune.train.epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"finetune.train.lr must be > 0, got {self.lr}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError("finetune.train.valid_fraction must be in (0, 1)")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"finetune.train.{name} must be >= 0")
        if self.default_dtype not in ("float32", "float64"):
            raise ValueError("finetune.train.default_dtype must be float32 or float64")
        if self.batch_size < 1:
            raise ValueError("finetune.train.batch_size must be >= 1")

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> TrainSettings:
        m = dict(m or {})
        if "extra_args" in m:
            m["extra_args"] = tuple(str(a) for a in m["extra_args"])
        return cls(**m)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "extra_args": list(self.extra_args)}


@dataclass(frozen=True)
class FinetuneRecipe:
    """One fine-tuned model key (config ``finetune: {KEY: {...}}``)."""

    key: str
    base: str  # a mace model key (foundation name or local .model)
    train_materials: tuple[str, ...] | str = "auto"  # ids / structure types, or "auto"
    train_fraction: float = 0.2  # auto: this fraction of the benchmarked compositions
    labels: tuple[str, ...] = ()  # label files (extxyz, phono3py yaml with forces)
    label_with: str | None = None  # or: label the exported structures with this model
    match_export: bool = True  # extxyz labels must match the exported structures
    export: ExportSettings = field(default_factory=ExportSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self):
        where = f"finetune.{self.key}"
        if bool(self.labels) == bool(self.label_with):
            raise ValueError(
                f"{where}: give exactly one of 'labels' (files from your DFT code) or "
                "'label_with' (a model key that labels the exported structures)"
            )
        if self.key == self.base:
            raise ValueError(f"{where}.base: a fine-tuned key cannot be its own base")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"{where}.train_fraction must be in (0, 1)")
        if isinstance(self.train_materials, str) and self.train_materials != "auto":
            raise ValueError(f"{where}.train_materials: 'auto' or a list of material ids")

    @classmethod
    def from_mapping(cls, key: str, m: dict[str, Any]) -> FinetuneRecipe:
        m = dict(m or {})
        where = f"finetune.{key}"
        if "base" not in m:
            raise ValueError(f"{where}.base: which mace model to fine-tune (a model key)")
        try:
            export = ExportSettings.from_mapping(m.pop("export", None))
            train = TrainSettings.from_mapping(m.pop("train", None))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        tm = m.pop("train_materials", "auto")
        labels = tuple(m.pop("labels", None) or ())
        unknown = set(m) - {"base", "train_fraction", "label_with", "match_export"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        return cls(
            key=key,
            export=export,
            train=train,
            train_materials=tm if isinstance(tm, str) else tuple(tm),
            labels=labels,
            **m,
        )


def training_tag(data_sha256: str, base_sha256: str, settings: TrainSettings) -> str:
    """Short hash of what a training run depends on: its working folder keeps mace's
    checkpoints, so a killed run resumes (``--restart_latest``) only with the same inputs."""
    import hashlib
    import json

    blob = json.dumps([data_sha256, base_sha256, settings.as_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- export


def _subsample(n: int, keep: int | None, rng: np.random.Generator) -> list[int]:
    if keep is None or keep >= n:
        return list(range(n))
    return sorted(int(i) for i in rng.choice(n, size=keep, replace=False))


def tag_frame(at: Atoms, material_id: str, kind: str, index: int) -> Atoms:
    at.info[ID_KEY] = f"{material_id}/{kind}/{index}"
    at.info[MATERIAL_KEY] = material_id
    at.info[KIND_KEY] = kind
    at.info["config_type"] = kind
    return at


def export_material(ph3, material_id: str, settings: ExportSettings) -> list[Atoms]:
    """Training structures of one material from a Phono3py object with displacements
    (kappaflow.phonons.init_phono3py on the reference geometry).

    Displaced supercells sit at the reference volume only, so they say nothing about the
    pressure: a model fine-tuned on them alone relaxes to its own volume, and κ follows
    the volume. Rattled supercells at several ``strains``, labelled with stress, carry the
    equation of state (measured: docs/benchmarks.md, "Fine-tuning")."""
    from kappaflow.phonons import to_ase_atoms

    # a stable per-material stream: the same material gets the same frames whatever else
    # is exported with it
    seed = [settings.seed, *material_id.encode()]
    rng = np.random.default_rng(seed)
    frames: list[Atoms] = []
    sets = {
        "fc2": (ph3.phonon_supercells_with_displacements, ph3.phonon_dataset),
        "fc3": (ph3.supercells_with_displacements, ph3.dataset),
    }
    for kind in settings.displaced:
        cells, dataset = sets[kind]
        disps = flat_displacements(dataset, kind)
        valid = [i for i, c in enumerate(cells) if c is not None]
        for j in _subsample(len(valid), settings.max_displaced, rng):
            i = valid[j]
            at = tag_frame(to_ase_atoms(cells[i]), material_id, f"{kind}_disp", i)
            atom, vec = disps[i]
            at.info[DISP_ATOM_KEY] = int(atom)
            at.info[DISP_KEY] = np.asarray(vec, dtype=float)
            frames.append(at)
    if settings.rattled:
        base = to_ase_atoms(ph3.supercell)
        for i in range(settings.rattled):
            at = base.copy()
            strain = settings.strains[i % len(settings.strains)]
            if strain:
                at.set_cell(at.cell[:] * (1.0 + strain), scale_atoms=True)
            at.positions = at.positions + rng.normal(
                0.0, settings.rattle_amplitude, size=at.positions.shape
            )
            at.info[STRAIN_KEY] = float(strain)
            frames.append(tag_frame(at, material_id, "rattled", i))
    return frames


def flat_displacements(dataset: dict[str, Any], kind: str) -> list[tuple[int, np.ndarray]]:
    """(displaced atom, vector) of each supercell in phono3py's order; for fc3 pairs, the
    second displacement (the one that differs from the first-level supercell)."""
    out: list[tuple[int, np.ndarray]] = []
    if kind == "fc2":
        return [(d["number"], np.asarray(d["displacement"])) for d in dataset["first_atoms"]]
    firsts = dataset["first_atoms"]
    out += [(d["number"], np.asarray(d["displacement"])) for d in firsts]
    for d1 in firsts:
        for d2 in d1.get("second_atoms", []):
            out.append((d2["number"], np.asarray(d2["displacement"])))
    return out


def manifest(frames: Sequence[Atoms], settings: ExportSettings, source: str) -> dict[str, Any]:
    """What was exported: settings, counts per material and kind, atoms in total."""
    counts: dict[str, dict[str, int]] = {}
    for at in frames:
        m, k = at.info[MATERIAL_KEY], at.info[KIND_KEY]
        counts.setdefault(m, {}).setdefault(k, 0)
        counts[m][k] += 1
    return {
        "source_structures": source,
        "settings": settings.as_dict(),
        "n_frames": len(frames),
        "n_atoms": int(sum(len(a) for a in frames)),
        "materials": sorted(counts),
        "counts": counts,
        "ids": [a.info[ID_KEY] for a in frames],
        "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3"},
        "label_keys": {"energy": ENERGY_KEY, "forces": FORCES_KEY, "stress": STRESS_KEY},
    }


def split_train_valid(
    frames: Sequence[Atoms], valid_fraction: float, seed: int
) -> tuple[list[Atoms], list[Atoms]]:
    """Seeded split, at least one frame on each side."""
    n = len(frames)
    if n < 2:
        from kappaflow.finetune_labels import LabelError

        raise LabelError(f"need at least 2 labelled frames to train and validate, got {n}")
    n_valid = min(max(1, round(valid_fraction * n)), n - 1)
    idx = np.random.default_rng(seed).permutation(n)
    valid = set(int(i) for i in idx[:n_valid])
    return [f for i, f in enumerate(frames) if i not in valid], [frames[i] for i in sorted(valid)]


# ------------------------------------------------------------------------------ mace


def mace_train_argv(
    settings: TrainSettings,
    foundation: str,
    train_file: str,
    valid_file: str,
    workdir: str,
    name: str,
    device: str,
) -> list[str]:
    """Arguments of ``python -m mace.cli.run_train`` for fine-tuning ``foundation`` (a
    mace_mp name such as ``medium``, or a local ``.model`` path)."""
    argv = [
        f"--name={name}",
        f"--foundation_model={foundation}",
        f"--train_file={train_file}",
        f"--valid_file={valid_file}",
        f"--work_dir={workdir}",
        f"--model_dir={workdir}",
        f"--log_dir={workdir}/logs",
        f"--checkpoints_dir={workdir}/checkpoints",
        f"--results_dir={workdir}/results",
        f"--energy_key={ENERGY_KEY}",
        f"--forces_key={FORCES_KEY}",
        f"--stress_key={STRESS_KEY}",
        "--E0s=foundation",
        "--loss=weighted" if settings.stress_weight == 0 else "--loss=stress",
        f"--energy_weight={settings.energy_weight}",
        f"--forces_weight={settings.forces_weight}",
        f"--max_num_epochs={settings.epochs}",
        f"--lr={settings.lr}",
        f"--batch_size={settings.batch_size}",
        f"--valid_batch_size={settings.batch_size}",
        f"--seed={settings.seed}",
        f"--default_dtype={settings.default_dtype}",
        f"--device={device}",
        "--eval_interval=1",
        "--error_table=PerAtomRMSE",
        "--save_cpu",
        "--restart_latest",
    ]
    if settings.stress_weight:
        argv.append(f"--stress_weight={settings.stress_weight}")
    if settings.replay_file:
        argv += ["--multiheads_finetuning=True", f"--pt_train_file={settings.replay_file}"]
        if settings.num_samples_pt:
            argv.append(f"--num_samples_pt={settings.num_samples_pt}")
    else:
        argv.append("--multiheads_finetuning=False")
    argv += list(settings.extra_args)
    return argv


_TABLE_ROW = re.compile(r"^\|\s*(train|valid\w*|Default_\w*)\s*\|(.*)\|\s*$", re.IGNORECASE)


def parse_error_table(log_text: str) -> dict[str, dict[str, float]]:
    """The last error table mace logs after training (PerAtomRMSE): set -> metric -> value
    (meV/atom, meV/Å, as mace prints them)."""
    tables = log_text.split("Error-table on TRAIN and VALID")
    if len(tables) < 2:
        return {}
    lines = [ln.split(" - ", 1)[-1].strip() for ln in tables[-1].splitlines()]
    header = None
    out: dict[str, dict[str, float]] = {}
    for ln in lines:
        if ln.startswith("|") and "config_type" in ln:
            header = [h.strip() for h in ln.strip("|").split("|")]
            continue
        if header and ln.startswith("|") and not ln.startswith("+"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if len(cells) != len(header):
                continue
            row = {}
            for h, c in zip(header[1:], cells[1:], strict=True):
                try:
                    row[h] = float(c)
                except ValueError:
                    pass
            out[cells[0]] = row
        elif header and out and not ln.startswith(("|", "+")):
            break
    return out


# ------------------------------------------------------------------- before / after


def holdout_by_composition(
    train_materials: Iterable[str], formulas: dict[str, str]
) -> dict[str, str]:
    """material -> 'train' | 'same_composition' | 'held_out': held-out materials share no
    composition (reduced formula) with any training material."""
    train = set(train_materials)
    unknown = train - set(formulas)
    if unknown:
        raise ValueError(f"training materials not in the materials table: {sorted(unknown)}")
    seen = {formulas[m] for m in train}
    return {
        m: "train" if m in train else "same_composition" if f in seen else "held_out"
        for m, f in formulas.items()
    }


def auto_train_materials(formulas: dict[str, str], fraction: float, seed: int) -> list[str]:
    """Default training set: a seeded ``fraction`` of the compositions (all their
    materials); the rest of the compositions are held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"finetune.train_fraction must be in (0, 1), got {fraction}")
    comps = sorted(set(formulas.values()))
    n = max(1, round(fraction * len(comps)))
    picked = set(np.random.default_rng(seed).choice(comps, size=n, replace=False).tolist())
    return sorted(m for m, f in formulas.items() if f in picked)


def before_after(
    before: pd.DataFrame, after: pd.DataFrame, split: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-material and per-split comparison of two per-material metrics tables
    (kappaflow's results/{model}/metrics.csv: mp_id, SRD, SRE, SRME, failed...).

    Returns (per_material, summary): summary rows per split (train, same_composition,
    held_out, all) with mSRE/mSRME before/after, failures, and the same restricted to
    materials that failed in neither run."""
    cols = ["SRE", "SRME", "failed"]
    b = before.set_index("mp_id")[cols].add_suffix("_before")
    a = after.set_index("mp_id")[cols].add_suffix("_after")
    per = b.join(a, how="inner")
    per["split"] = [split.get(m, "held_out") for m in per.index]
    per["dSRME"] = per["SRME_after"] - per["SRME_before"]
    rows = []
    for name, grp in [*per.groupby("split"), ("all", per)]:
        ok = grp[~grp["failed_before"].astype(bool) & ~grp["failed_after"].astype(bool)]
        rows.append(
            {
                "split": name,
                "n": len(grp),
                "mSRE_before": grp["SRE_before"].mean(),
                "mSRE_after": grp["SRE_after"].mean(),
                "mSRME_before": grp["SRME_before"].mean(),
                "mSRME_after": grp["SRME_after"].mean(),
                "failed_before": int(grp["failed_before"].astype(bool).sum()),
                "failed_after": int(grp["failed_after"].astype(bool).sum()),
                "n_ok_both": len(ok),
                "mSRME_before_ok": ok["SRME_before"].mean() if len(ok) else np.nan,
                "mSRME_after_ok": ok["SRME_after"].mean() if len(ok) else np.nan,
            }
        )
    return per.reset_index(), pd.DataFrame(rows)
