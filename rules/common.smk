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
from kappaflow.calculators import model_spec
from kappaflow.reference import FILES, KAPPA_KEYS, resolve_reference_dir
from kappaflow.runtime import DEFAULT_RUNTIME_MINUTES, raised_runtime
from kappaflow.settings import (
    GruneisenSettings,
    Phono3pySettings,
    RelaxSettings,
    StructureDefaults,
)
from kappaflow.structures import materials_table, select_materials


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
for _key in ("temperatures", "relax", "phono3py", "structure_defaults", "material_overrides"):
    if _key in config:
        config[_key] = _retyped(config[_key])
# gruneisen holds file names too: retype all but those
if "gruneisen" in config:
    config["gruneisen"] = {
        k: (v if k in ("reference", "mode_reference") else _retyped(v))
        for k, v in config["gruneisen"].items()
    }

validate(config, schema="../schemas/config.schema.yaml")
# physics checks beyond the schema's shape checks (raise naming the key)
RelaxSettings.from_mapping(config["relax"])
Phono3pySettings.from_mapping(config["phono3py"])
DEFAULTS = StructureDefaults.from_mapping(config["structure_defaults"])
GRUNEISEN_SETTINGS = GruneisenSettings.from_mapping(config["gruneisen"])
GRUNEISEN = bool(config["gruneisen"]["enabled"])

REFERENCE = resolve_reference_dir(config_dir=config["reference"]["dir"])
REFERENCE_KAPPA = str(kio.reference_file(REFERENCE, KAPPA_KEYS[config["reference"]["kappa"]]))
STRUCTURES = config["structures"] or str(kio.reference_file(REFERENCE, "structures"))

_table = materials_table(kio.read_structures(STRUCTURES), DEFAULTS, config["material_overrides"])
MATERIALS = select_materials(_table, config["materials"])
MATERIALS_TABLE = pd.DataFrame([_table[m].as_dict() for m in MATERIALS])
for _, _row in MATERIALS_TABLE.iterrows():
    validate(_row.drop("defaults_used").to_dict(), schema="../schemas/materials.schema.yaml")

MODELS = list(dict.fromkeys(config["models"]))
for _m in MODELS:
    model_spec(_m, config["model_definitions"])  # fails at start naming an unknown model
TEMPS = [float(t) for t in config["temperatures"]]
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


def get_model(wildcards):
    spec = model_spec(wildcards.model, config["model_definitions"])
    return {"key": spec.key, "family": spec.family, "options": spec.options}


def get_model_env(wildcards):
    family = model_spec(wildcards.model, config["model_definitions"]).family
    return (
        f"../envs/{family}.yaml"
        if family in ("mace", "chgnet", "sevennet")
        else "../envs/analysis.yaml"
    )


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
    return out
