# Validation, the materials table (the workflow's sample sheet), input functions and
# wildcard constraints. No rules here.
import re
import sys
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a checkout works uninstalled

from kappaflow import io as kio
from kappaflow.calculators import BUILTIN_MODELS, model_spec
from kappaflow.forces import ForceSettings, check_families
from kappaflow.finetune import FinetuneRecipe, auto_train_materials, holdout_by_composition
from kappaflow.reference import FILES, KAPPA_KEYS, resolve_reference_dir
from kappaflow.runtime import DEFAULT_RUNTIME_MINUTES, raised_runtime
from kappaflow.settings import (
    GruneisenSettings,
    Phono3pySettings,
    RelaxSettings,
    StructureDefaults,
)
from kappaflow.structures import frame_for, materials_table, reduced_formula, select_materials


def _retyped(value):
    """--config parses nested values with YAML's BaseLoader (every scalar a string):
    read such strings again as YAML scalars ('300' -> 300, 'true' -> True)."""
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
    return value


# sections whose leaves are numbers/booleans/enums only (never model names or material ids)
for _key in (
    "temperatures",
    "relax",
    "phono3py",
    "structure_defaults",
    "material_overrides",
    "forces",
):
    if _key in config:
        config[_key] = _retyped(config[_key])
# gruneisen holds file names too: retype all but those
if "gruneisen" in config:
    config["gruneisen"] = {
        k: (v if k in ("reference", "mode_reference") else _retyped(v))
        for k, v in config["gruneisen"].items()
    }

# finetune recipes: numbers inside export/train (not paths, names or mace arguments)
for _recipe in (config.get("finetune") or {}).values():
    if isinstance(_recipe, dict):
        for _key in ("train_fraction", "match_export"):
            if _key in _recipe:
                _recipe[_key] = _retyped(_recipe[_key])
        if isinstance(_recipe.get("export"), dict):
            _recipe["export"] = _retyped(_recipe["export"])
        if isinstance(_recipe.get("train"), dict):
            _recipe["train"] = {
                k: (v if k in ("replay_file", "extra_args", "device") else _retyped(v))
                for k, v in _recipe["train"].items()
            }

validate(config, schema="../schemas/config.schema.yaml")
# physics checks beyond the schema's shape checks (raise naming the key)
RelaxSettings.from_mapping(config["relax"])
Phono3pySettings.from_mapping(config["phono3py"])
ForceSettings.from_mapping(config["forces"])
DEFAULTS = StructureDefaults.from_mapping(config["structure_defaults"])
GRUNEISEN_SETTINGS = GruneisenSettings.from_mapping(config["gruneisen"])
GRUNEISEN = bool(config["gruneisen"]["enabled"])

REFERENCE = resolve_reference_dir(config_dir=config["reference"]["dir"])
STRUCTURES = config["structures"] or str(kio.reference_file(REFERENCE, "structures"))

_frames = kio.read_structures(STRUCTURES)
_table = materials_table(_frames, DEFAULTS, config["material_overrides"])
MATERIALS = select_materials(_table, config["materials"])
MATERIALS_TABLE = pd.DataFrame([_table[m].as_dict() for m in MATERIALS])
for _, _row in MATERIALS_TABLE.iterrows():
    validate(_row.drop("defaults_used").to_dict(), schema="../schemas/materials.schema.yaml")
FORMULAS = {m: reduced_formula(frame_for(_frames, m)) for m in _table}

# ---------------------------------------------------------------- fine-tuning
# Each finetune key is a model key: its model file is made by rule finetune_train and
# its base (the "before") is benchmarked with it (rules/finetune.smk).
MODEL_DEFINITIONS = dict(config["model_definitions"])
FINETUNE = {}
for _key, _recipe in (config.get("finetune") or {}).items():
    if _key in BUILTIN_MODELS or _key in MODEL_DEFINITIONS or _key == "finetune":
        raise ValueError(f"config finetune.{_key}: the key is already a model; choose a new name")
    FINETUNE[_key] = FinetuneRecipe.from_mapping(_key, _recipe)
    MODEL_DEFINITIONS[_key] = {"family": "mace", "path": f"results/finetune/{_key}/{_key}.model"}
FT_TRAIN, FT_SPLIT = {}, {}
for _key, _r in FINETUNE.items():
    if model_spec(_r.base, MODEL_DEFINITIONS).family != "mace":
        raise ValueError(f"config finetune.{_key}.base: {_r.base!r} is not a mace model")
    if _r.label_with:
        model_spec(_r.label_with, MODEL_DEFINITIONS)
    FT_TRAIN[_key] = (
        auto_train_materials({m: FORMULAS[m] for m in MATERIALS}, _r.train_fraction, _r.train.seed)
        if _r.train_materials == "auto"
        else select_materials(_table, list(_r.train_materials))
    )
    FT_SPLIT[_key] = holdout_by_composition(  # sorted: params must not change between runs
        FT_TRAIN[_key], {m: FORMULAS[m] for m in sorted({*MATERIALS, *FT_TRAIN[_key]})}
    )

# the DFT reference, or (reference.kappa: model:KEY) another model's gathered κ, e.g. the
# model that labelled the fine-tuning data when no DFT is at hand
_ref_kappa = config["reference"]["kappa"]
REFERENCE_MODEL = _ref_kappa.split(":", 1)[1] if _ref_kappa.startswith("model:") else None
_extra_models = [k for _r in FINETUNE.values() for k in (_r.base, _r.key)]
_extra_models += [REFERENCE_MODEL] if REFERENCE_MODEL else []
MODELS = list(dict.fromkeys([*config["models"], *_extra_models]))
check_families(
    ForceSettings.from_mapping(config["forces"]),
    {m: model_spec(m, MODEL_DEFINITIONS).family for m in MODELS},
)
for _m in MODELS:
    model_spec(_m, MODEL_DEFINITIONS)  # fails at start naming an unknown model
TEMPS = [float(t) for t in config["temperatures"]]
if REFERENCE_MODEL:
    REFERENCE_KAPPA = f"results/{REFERENCE_MODEL}/kappa.json.gz"
    REFERENCE_IDS = set(MATERIALS)
else:
    REFERENCE_KAPPA = str(kio.reference_file(REFERENCE, KAPPA_KEYS[_ref_kappa]))
    REFERENCE_IDS = set(kio.read_kappa_table(REFERENCE_KAPPA).index)
# parity plots only where the reference has data (300 K); κ(T) curves otherwise
PARITY_TEMPS = [t for t in TEMPS if abs(t - 300.0) < 1e-6]
SCORED = [m for m in MATERIALS if m in REFERENCE_IDS]


def _gamma_reference(name):
    """The pinned DFT γ file of the reference dir, or a user path."""
    if name == FILES["gruneisen_dft_gamma"].filename:
        return str(kio.reference_file(REFERENCE, "gruneisen_dft_gamma"))
    if not Path(name).exists():
        raise FileNotFoundError(f"config gruneisen.reference: {name!r} does not exist")
    return name


GAMMA_REFERENCE = _gamma_reference(config["gruneisen"]["reference"]) if GRUNEISEN else []
if GRUNEISEN and config["gruneisen"].get("mode_reference"):
    if not Path(config["gruneisen"]["mode_reference"]).exists():
        raise FileNotFoundError(
            f"config gruneisen.mode_reference: {config['gruneisen']['mode_reference']!r} "
            "does not exist"
        )
MELTING_TABLE = kio.read_melting_points(Path(workflow.basedir) / "resources/melting_points.csv")


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    ftmodel="|".join(map(re.escape, FINETUNE)) or "(?!x)x",
    material="|".join(map(re.escape, MATERIALS)),
    temperature=r"\d+",


# ----------------------------------------------------------------- runtime
# Wall-time limit (minutes) of each compute job: the rule's base (kappaflow.runtime
# defaults, or `set-resources: RULE: runtime_base: N` in a profile) doubled for every
# earlier SLURM job of the same rule and wildcards that SLURM killed at its time limit
# (read from the SLURM plugin's kept logs). So a timed-out job comes back on the next
# invocation, or on a retry, with a longer limit. `set-resources: RULE: runtime: N`
# pins the value instead (no raise).


def _slurm_logdir():
    settings = getattr(workflow, "executor_settings", None)
    logdir = getattr(settings, "logdir", None)
    if logdir and Path(logdir).is_absolute():
        return Path(logdir)
    if logdir:
        return Path(getattr(workflow, "workdir_init", ".")) / logdir
    return Path(".snakemake/slurm_logs")


def _runtime_base(rule):
    overrides = workflow.resource_settings.overwrite_resources.get(rule) or {}
    if "runtime_base" not in overrides:
        return DEFAULT_RUNTIME_MINUTES[rule]
    base = overrides["runtime_base"]
    raw = str(getattr(base, "raw", base)).strip("'\" ")
    try:
        minutes = int(raw)
    except ValueError:
        raise ValueError(
            f"set-resources {rule}:runtime_base={raw!r}: give whole minutes, e.g. 120"
        ) from None
    if minutes < 1:
        raise ValueError(f"set-resources {rule}:runtime_base={minutes}: must be >= 1 minute")
    return minutes


def runtime_for(rule):
    base = _runtime_base(rule)

    def runtime(wildcards):
        kills = kio.slurm_time_limit_kills(_slurm_logdir(), rule, wildcards)
        return raised_runtime(base, kills)

    return runtime


def model_dict(key):
    spec = model_spec(key, MODEL_DEFINITIONS)
    return {"key": spec.key, "family": spec.family, "options": spec.options}


def get_model(wildcards):
    return model_dict(wildcards.model)


def get_model_file(wildcards):
    """A model's local checkpoint as an input: a fine-tuned model is built first, and a
    changed file re-runs what used it."""
    return model_dict(wildcards.model)["options"].get("path", [])


def env_for(key):
    family = model_spec(key, MODEL_DEFINITIONS).family
    return (
        f"../envs/{family}.yaml"
        if family in ("mace", "chgnet", "sevennet")
        else "../envs/analysis.yaml"
    )


def get_model_env(wildcards):
    return env_for(wildcards.model)


def get_records(wildcards):
    return expand(
        "results/{model}/{material}/kappa.json", model=wildcards.model, material=MATERIALS
    )


def get_kappa_files(wildcards):
    return expand(
        "results/{model}/{material}/kappa.hdf5", model=wildcards.model, material=MATERIALS
    )


def get_melting_point(wildcards):
    from kappaflow.steps import melting_point_for

    name = _table[wildcards.material].name
    return melting_point_for(name, MELTING_TABLE, config["gruneisen"].get("melting_points"))


def _per_material(name):
    def files(wildcards):
        return expand(
            "results/{model}/{material}/{name}",
            model=wildcards.model,
            material=MATERIALS,
            name=name,
        )

    return files


get_gruneisen_records = _per_material("gruneisen.json")
get_gruneisen_hdf5 = _per_material("gruneisen.hdf5")
get_alpha_curves = _per_material("thermal_expansion.csv")


def get_gruneisen_checks(wildcards):
    if not config["gruneisen"]["fc3_check"]:
        return []
    return _per_material("gruneisen_fc3_check.json")(wildcards)


def get_gamma_summaries(wildcards):
    return expand("results/{model}/gruneisen-summary.json", model=MODELS) if GRUNEISEN else []


def get_final_output():
    out = ["results/metrics.csv", "results/metrics.md"]
    out += expand("results/{model}/kappa.json.gz", model=MODELS)
    # per-material results are deliverables: a deleted one is recomputed (alone)
    out += expand(
        "results/{model}/{material}/{name}",
        model=MODELS,
        material=MATERIALS,
        name=["kappa.hdf5", "kappa.json"],
    )
    if SCORED and PARITY_TEMPS:
        out += expand(
            "results/plots/parity-{model}-T{temperature}K.svg",
            model=MODELS,
            temperature=[int(t) for t in PARITY_TEMPS],
        )
        out += expand("results/plots/cumulative-{model}", model=MODELS)
    if len(TEMPS) > 1:
        out += expand("results/plots/kappa-vs-T-{model}.svg", model=MODELS)
    if GRUNEISEN:
        out += expand(
            "results/{model}/{material}/{name}",
            model=MODELS,
            material=MATERIALS,
            name=["gruneisen.hdf5", "gruneisen.json", "thermal_expansion.csv"],
        )
        out += expand("results/{model}/gruneisen-metrics.csv", model=MODELS)
        out += expand("results/plots/alpha-V-{model}.svg", model=MODELS)
        out += expand("results/plots/gamma-parity-{model}.svg", model=MODELS)
    for key in FINETUNE:
        out += [f"results/finetune/{key}/training.json", f"results/plots/finetune-{key}.svg"]
        out += [f"results/finetune/{key}/before-after.{ext}" for ext in ("csv", "md")]
    return out


def get_ft_labels(wildcards):
    recipe = FINETUNE[wildcards.ftmodel]
    if recipe.label_with:
        return f"results/finetune/{wildcards.ftmodel}/labels.extxyz"
    for path in recipe.labels:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"config finetune.{wildcards.ftmodel}.labels: {path!r} not found"
            )
    return list(recipe.labels)


def get_ft_base_file(wildcards):
    return model_dict(FINETUNE[wildcards.ftmodel].base)["options"].get("path", [])
