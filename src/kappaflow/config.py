"""The configuration, loaded once, the same way for the Snakefile and the CLI.

:func:`load_config` takes the config mapping (``config`` of the Snakefile, or a YAML file
plus command-line flags for the CLI) and

1. retypes the strings of ``snakemake --config`` (YAML's BaseLoader reads every nested
   scalar as a string: ``'300'`` -> 300),
2. validates it against ``kappaflow/schemas/config.schema.yaml`` and fills the schema's
   defaults in place (the algorithm of ``snakemake.utils.validate``, so the validated
   mapping -- the rules' params -- is what it always was),
3. builds the typed settings of every stage (the dataclasses check the physics),
4. resolves the reference directory, the structures and the materials table, and the model
   registry (built-in keys, ``model_definitions``, fine-tuned keys), and
5. answers the questions the DAG asks (which models, which materials are scored, which
   reference table), lazily, so the CLI never reads what it does not need.

Both entry points therefore refuse the same mistake with the same :class:`ConfigError`.
Rules keep passing the validated sections as params (Snakemake compares params by their
``repr`` to decide re-runs, and ignores objects that are not builtins); a job script turns
them into typed settings with :func:`job_params`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from ase import Atoms

from kappaflow import storage
from kappaflow.calculators import BUILTIN_MODELS, ModelSpec, model_spec
from kappaflow.finetune import (
    ExportSettings,
    FinetuneRecipe,
    TrainSettings,
    auto_train_materials,
    holdout_by_composition,
)
from kappaflow.forces import ForceSettings, check_families
from kappaflow.grid import REFERENCE_TEMPERATURE, has_temperature
from kappaflow.reference import (
    FILES,
    KAPPA_KEYS,
    ResolvedDir,
    resolve_published_dir,
    resolve_reference_dir,
)
from kappaflow.settings import (
    KAPPA_ONLY_KEYS,
    CheckSettings,
    GruneisenSettings,
    KappaSettings,
    Phono3pySettings,
    RelaxSettings,
    StructureDefaults,
)
from kappaflow.structures import (
    MaterialSpec,
    frame_for,
    materials_table,
    reduced_formula,
    select_materials,
)

SCHEMA = "config.schema.yaml"
MATERIALS_SCHEMA = "materials.schema.yaml"

#: sections whose leaves are numbers/booleans/enums only (never model names or material ids)
_RETYPED = (
    "temperatures",
    "relax",
    "phono3py",
    "structure_defaults",
    "material_overrides",
    "forces",
    "checks",
)
#: gruneisen keys that hold file names (not retyped)
_GRUNEISEN_PATHS = ("reference", "mode_reference")
#: finetune train keys that hold paths, names or verbatim arguments (not retyped)
_TRAIN_VERBATIM = ("replay_file", "extra_args", "device")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """The config is not valid; the message names the key and what would be valid."""


# ------------------------------------------------------------------ 1. retyping


def _retyped(value: Any) -> Any:
    """Read strings again as YAML scalars ('300' -> 300, 'true' -> True); others unchanged."""
    if isinstance(value, dict):
        return {k: _retyped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_retyped(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if parsed is None or isinstance(parsed, (bool, int, float)):
            return parsed
        if _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            return float(value)
    return value


def retype_command_line(config: dict[str, Any]) -> None:
    """Undo ``--config``'s all-strings parsing, in place, where a value cannot be a name."""
    for key in _RETYPED:
        if key in config:
            config[key] = _retyped(config[key])
    if isinstance(config.get("gruneisen"), dict):
        config["gruneisen"] = {
            k: (v if k in _GRUNEISEN_PATHS else _retyped(v)) for k, v in config["gruneisen"].items()
        }
    for recipe in (config.get("finetune") or {}).values():
        if not isinstance(recipe, dict):
            continue
        for key in ("train_fraction", "match_export"):
            if key in recipe:
                recipe[key] = _retyped(recipe[key])
        if isinstance(recipe.get("export"), dict):
            recipe["export"] = _retyped(recipe["export"])
        if isinstance(recipe.get("train"), dict):
            recipe["train"] = {
                k: (v if k in _TRAIN_VERBATIM else _retyped(v)) for k, v in recipe["train"].items()
            }


# ------------------------------------------------------------------ 2. schema


def _default_filling_validator(schema: dict[str, Any]):
    """jsonschema's Draft 2020-12 validator that sets each property's ``default`` where it
    is missing (python-jsonschema FAQ; what ``snakemake.utils.validate`` does)."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from base(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def _message(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"config key '{where}': {error.message}" if where else f"config: {error.message}"


def nonfinite_numbers(value: Any, where: str = "") -> list[tuple[str, float]]:
    """(key path, value) of every NaN or infinite number in a config mapping, e.g.
    ``("temperatures.0", nan)``."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_numbers(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nonfinite_numbers(v, f"{where}.{i}")]
    if isinstance(value, float) and not math.isfinite(value):
        return [(where.lstrip("."), value)]
    return []


def validate(config: dict[str, Any], schema: str = SCHEMA) -> dict[str, Any]:
    """Validate ``config`` against a package schema, filling defaults in place.

    Every number must be finite: JSON schema's bounds let NaN through (``nan < 0`` is
    false), so NaN and ±inf anywhere in the mapping are refused here, first, naming each key.
    """
    bad = nonfinite_numbers(config)
    if bad:
        raise ConfigError(
            "config: numbers must be finite (NaN and infinity mean nothing to a setting); "
            + "; ".join(f"config key '{key}': {value!r}" for key, value in bad[:5])
        )
    validator = _default_filling_validator(storage.read_package_yaml(schema))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_message(e) for e in errors[:5]))
    return config


# ------------------------------------------------------------------ 3. typed settings


@dataclass(frozen=True)
class Settings:
    """The typed settings of every stage, from one validated config."""

    relax: RelaxSettings
    phono3py: Phono3pySettings
    forces: ForceSettings
    structure_defaults: StructureDefaults
    gruneisen: GruneisenSettings
    temperatures: tuple[float, ...]
    material_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: CheckSettings = field(default_factory=CheckSettings)

    @property
    def kappa(self) -> KappaSettings:
        return KappaSettings(self.temperatures, self.phono3py)


def settings_from(config: Mapping[str, Any]) -> Settings:
    """Typed settings from a VALIDATED config (schema defaults present)."""
    return Settings(
        relax=RelaxSettings.from_mapping(config["relax"]),
        phono3py=Phono3pySettings.from_mapping(config["phono3py"]),
        forces=ForceSettings.from_mapping(config["forces"]),
        structure_defaults=StructureDefaults.from_mapping(config["structure_defaults"]),
        gruneisen=GruneisenSettings.from_mapping(config["gruneisen"]),
        temperatures=KappaSettings(tuple(config["temperatures"])).temperatures,
        material_overrides=dict(config["material_overrides"]),
        checks=CheckSettings.from_mapping(config["checks"]),
    )


@dataclass(frozen=True)
class JobParams:
    """A job's params (the validated config sections of its rule) as typed settings."""

    model: ModelSpec | None = None
    relax: RelaxSettings | None = None
    phono3py: Phono3pySettings | None = None
    forces: ForceSettings | None = None
    structure_defaults: StructureDefaults | None = None
    gruneisen: GruneisenSettings | None = None
    temperatures: tuple[float, ...] | None = None
    export: ExportSettings | None = None
    train: TrainSettings | None = None
    checks: CheckSettings | None = None
    #: params that are already plain values (material ids, names, paths, numbers)
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def kappa(self) -> KappaSettings:
        if self.temperatures is None or self.phono3py is None:
            raise ConfigError("a κ job needs the params 'temperatures' and 'phono3py'")
        return KappaSettings(self.temperatures, self.phono3py)


def _model_from_params(value: Mapping[str, Any]) -> ModelSpec:
    return ModelSpec(key=value["key"], family=value["family"], options=dict(value["options"]))


_PARAM_TYPES = {
    "model": _model_from_params,
    "relax": RelaxSettings.from_mapping,
    "phono3py": Phono3pySettings.from_mapping,
    "forces": ForceSettings.from_mapping,
    "structure_defaults": StructureDefaults.from_mapping,
    "gruneisen": GruneisenSettings.from_mapping,
    "temperatures": lambda t: KappaSettings(tuple(t)).temperatures,
    "export": ExportSettings.from_mapping,
    "train": TrainSettings.from_mapping,
    "checks": CheckSettings.from_mapping,
}


def job_params(params: Mapping[str, Any]) -> JobParams:
    """``snakemake.params`` (names -> validated config sections) -> :class:`JobParams`."""
    items = dict(params.items())
    typed = {k: _PARAM_TYPES[k](v) for k, v in items.items() if k in _PARAM_TYPES}
    other = {k: v for k, v in items.items() if k not in _PARAM_TYPES}
    return JobParams(**typed, other=other)


def model_params(spec: ModelSpec) -> dict[str, Any]:
    """A model as a rule param (plain values: the re-run trigger)."""
    return {"key": spec.key, "family": spec.family, "options": spec.options}


# ------------------------------------------------------------------ 4.-5. the config


@dataclass
class Config:
    """A validated config with its typed settings, registry, reference and materials."""

    raw: dict[str, Any]
    settings: Settings
    reference: ResolvedDir
    model_definitions: dict[str, dict[str, Any]]
    finetune: dict[str, FinetuneRecipe]
    models: list[str]
    reference_model: str | None

    # ---------------------------------------------------------------- models
    def model(self, key: str) -> ModelSpec:
        return model_spec(key, self.model_definitions)

    @property
    def force_phono3py(self) -> dict[str, Any]:
        """The ``phono3py`` section without its κ-only keys: the param of every rule that
        computes forces or force constants, so a κ-only setting (kappa_convention,
        phph_engine) re-runs κ jobs only."""
        return {k: v for k, v in self.raw["phono3py"].items() if k not in KAPPA_ONLY_KEYS}

    @property
    def kappa_env(self) -> str:
        """The κ rule's conda env: torch only where kappaflow's ph-ph engine runs."""
        engine = self.settings.phono3py.phph_engine
        return "../envs/phph.yaml" if engine == "kappaflow" else "../envs/analysis.yaml"

    def kappa_gpus(self, device: Any = None) -> int:
        """GPUs of a κ job: 1 with kappaflow's ph-ph engine unless the κ rule's ``device``
        resource (a profile's ``set-resources: kappa: device: cpu``, or
        ``--set-resources kappa:device=cpu``; a snakemake ``Resource`` or text) keeps it on
        the CPU; 0 with phono3py's engine (CPU only)."""
        if self.settings.phono3py.phph_engine != "kappaflow":
            return 0
        text = str(getattr(device, "raw", device) or "auto").strip().strip("'\"")
        return 0 if text == "cpu" else 1

    def model_params(self, key: str) -> dict[str, Any]:
        return model_params(self.model(key))

    def model_files(self, key: str) -> list[str]:
        """A model's local files (checkpoint, training record): inputs of the jobs using it,
        so a fine-tuned model is built first and a changed file re-runs what used it."""
        opts = self.model(key).options
        return [opts[k] for k in ("path", "sha256_from") if k in opts]

    # ---------------------------------------------------------------- materials
    @cached_property
    def structures(self) -> Path:
        """The structures file: the config's own, else the reference set (sha256-checked)."""
        if self.raw["structures"]:
            return Path(self.raw["structures"])
        return storage.reference_file(self.reference, "structures")

    @cached_property
    def frames(self) -> list[Atoms]:
        return storage.read_structures(self.structures)

    @cached_property
    def table(self) -> dict[str, MaterialSpec]:
        table = materials_table(
            self.frames, self.settings.structure_defaults, self.settings.material_overrides
        )
        for spec in table.values():
            row = spec.as_dict()
            row.pop("defaults_used")
            validate(row, MATERIALS_SCHEMA)
        return table

    @cached_property
    def materials(self) -> list[str]:
        """The selected material ids, in file order. With your own structures, a selected
        id that is also a reference id must be the same material (composition and space
        group), else it would be scored against another material's DFT κ."""
        selected = select_materials(self.table, self.raw["materials"])
        if self.raw["structures"] and not self.reference_model:
            self._check_reference_identity(selected)
        return selected

    def _check_reference_identity(self, selected: list[str]) -> None:
        from ase.formula import Formula

        from kappaflow.structures import spacegroup_number

        known = storage.read_kappa_table_identity(self.reference_kappa)
        problems = []
        for mid in selected:
            if mid not in known:
                continue
            ref_name, ref_sg = known[mid]
            atoms = frame_for(self.frames, mid)
            ours = reduced_formula(atoms)
            sg = spacegroup_number(atoms) or self.table[mid].spacegroup
            same = Formula(ours).reduce()[0].count() == Formula(ref_name).reduce()[0].count()
            if not same or (ref_sg is not None and sg != ref_sg):
                problems.append(
                    f"'{mid}' is {ours} (space group {sg}) in {self.structures}, but the "
                    f"reference's '{mid}' is {ref_name} (space group {ref_sg})"
                )
        if problems:
            raise ConfigError(
                "material id(s) of your structures collide with reference ids of another "
                "material, which would be scored against that material's DFT κ: "
                + "; ".join(problems)
                + ". Give your structure another id (info key mp_id or material_id)."
            )

    def material(self, material_id: str) -> tuple[Atoms, MaterialSpec]:
        """(Atoms, MaterialSpec) of one material of the structures file."""
        from kappaflow.structures import MaterialError

        if material_id not in self.table:
            raise MaterialError(f"material {material_id!r} is not in {self.structures}")
        return frame_for(self.frames, material_id), self.table[material_id]

    @cached_property
    def formulas(self) -> dict[str, str]:
        return {m: reduced_formula(frame_for(self.frames, m)) for m in self.table}

    # ---------------------------------------------------------------- fine-tuning
    @cached_property
    def finetune_train(self) -> dict[str, list[str]]:
        """Training materials of each fine-tuned key."""
        out = {}
        for key, r in self.finetune.items():
            if r.train_materials == "auto":
                picks = {m: self.formulas[m] for m in self.materials}
                out[key] = auto_train_materials(picks, r.train_fraction, r.train.seed)
            else:
                out[key] = select_materials(self.table, list(r.train_materials))
        return out

    @cached_property
    def finetune_split(self) -> dict[str, dict[str, str]]:
        """material -> train / same_composition / held_out, per fine-tuned key (sorted:
        it is a rule param, which must not change between runs)."""
        out = {}
        for key, train in self.finetune_train.items():
            ids = sorted({*self.materials, *train})
            out[key] = holdout_by_composition(train, {m: self.formulas[m] for m in ids})
        return out

    # ---------------------------------------------------------------- scoring
    @property
    def temperatures(self) -> tuple[float, ...]:
        return self.settings.temperatures

    @cached_property
    def reference_kappa(self) -> str:
        """The κ table the metrics score against: DFT (noNAC/NAC) or a model's gathered κ."""
        if self.reference_model:
            return f"results/{self.reference_model}/kappa.json.gz"
        key = KAPPA_KEYS[self.raw["reference"]["kappa"]]
        return str(storage.reference_file(self.reference, key))

    @cached_property
    def reference_ids(self) -> set[str]:
        if self.reference_model:
            return set(self.materials)
        return set(storage.read_kappa_table_ids(self.reference_kappa))

    @property
    def scored(self) -> list[str]:
        """Selected materials that have a reference κ."""
        return [m for m in self.materials if m in self.reference_ids]

    @property
    def parity_temperatures(self) -> list[float]:
        """Parity plots only where the reference has data (300 K); κ(T) curves otherwise."""
        return [REFERENCE_TEMPERATURE] if has_temperature(self.temperatures, 300.0) else []

    @cached_property
    def published(self) -> ResolvedDir:
        """Where the published peers' per-material tables are (the leaderboard)."""
        return resolve_published_dir(self.raw["reference"].get("published"))

    # ---------------------------------------------------------------- Grüneisen
    @property
    def gruneisen_enabled(self) -> bool:
        return bool(self.raw["gruneisen"]["enabled"])

    @cached_property
    def gamma_reference(self) -> str:
        """The DFT γ table: the pinned file of the reference dir, or a user path."""
        name = self.raw["gruneisen"]["reference"]
        if name == FILES["gruneisen_dft_gamma"].filename:
            return str(storage.reference_file(self.reference, "gruneisen_dft_gamma"))
        if not Path(name).exists():
            raise ConfigError(f"config key 'gruneisen.reference': {name!r} does not exist")
        return name

    @property
    def mode_reference(self) -> str | None:
        path = self.raw["gruneisen"].get("mode_reference")
        if path and not Path(path).exists():
            raise ConfigError(f"config key 'gruneisen.mode_reference': {path!r} does not exist")
        return path or None

    @cached_property
    def _melting_table(self):
        return storage.read_melting_points()

    def melting_point(self, material_id: str) -> float | None:
        """Melting point (K) of a material's compound: config overrides, then the table."""
        from kappaflow.gruneisen import melting_point_for

        name = self.table[material_id].name
        return melting_point_for(
            name, self._melting_table, self.raw["gruneisen"].get("melting_points")
        )


def _registry(config: Mapping[str, Any]) -> tuple[dict, dict[str, FinetuneRecipe]]:
    """model_definitions plus one mace key per fine-tuning recipe (its trained file)."""
    definitions = dict(config["model_definitions"])
    recipes: dict[str, FinetuneRecipe] = {}
    for key, recipe in (config.get("finetune") or {}).items():
        if key in BUILTIN_MODELS or key in definitions or key == "finetune":
            raise ConfigError(
                f"config key 'finetune.{key}': the key is already a model; choose a new name"
            )
        try:
            recipes[key] = FinetuneRecipe.from_mapping(key, recipe)
        except ValueError as exc:
            raise ConfigError(f"config key {exc}") from None
        definitions[key] = {
            "family": "mace",
            "path": f"results/finetune/{key}/{key}.model",
            # the training step records the model file's sha256: it is loaded only with it
            "sha256_from": f"results/finetune/{key}/training.json",
        }
    for key, r in recipes.items():
        if model_spec(r.base, definitions).family != "mace":
            raise ConfigError(f"config key 'finetune.{key}.base': {r.base!r} is not a mace model")
        if r.label_with:
            model_spec(r.label_with, definitions)
    return definitions, recipes


def load_config(config: dict[str, Any], *, cli_reference_dir: str | Path | None = None) -> Config:
    """Validate ``config`` in place (defaults filled) and build the :class:`Config`.

    Raises :class:`ConfigError` (schema), :class:`~kappaflow.settings.SettingsError`
    (physics), :class:`~kappaflow.calculators.ModelError` (unknown model) or
    :class:`~kappaflow.forces.ForceError`, each naming the key.
    """
    retype_command_line(config)
    validate(config)
    settings = settings_from(config)
    definitions, recipes = _registry(config)
    ref_kappa = config["reference"]["kappa"]
    reference_model = ref_kappa.split(":", 1)[1] if ref_kappa.startswith("model:") else None
    extra = [k for r in recipes.values() for k in (r.base, r.key)]
    extra += [reference_model] if reference_model else []
    models = list(dict.fromkeys([*config["models"], *extra]))
    specs = {m: model_spec(m, definitions) for m in models}  # an unknown key fails here
    check_families(settings.forces, {m: s.family for m, s in specs.items()})
    return Config(
        raw=config,
        settings=settings,
        reference=resolve_reference_dir(
            cli_dir=cli_reference_dir, config_dir=config["reference"]["dir"]
        ),
        model_definitions=definitions,
        finetune=recipes,
        models=models,
        reference_model=reference_model,
    )


def load_config_file(
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    cli_reference_dir: str | Path | None = None,
) -> Config:
    """The CLI's config: a YAML file (or nothing: the defaults), with command-line
    ``overrides`` merged section by section before validation."""
    config: dict[str, Any] = storage.read_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            config[key] = {**(config.get(key) or {}), **value}
        else:
            config[key] = value
    return load_config(config, cli_reference_dir=cli_reference_dir)
