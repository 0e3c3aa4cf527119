# What must be Snakemake: the call of kappaflow's config loader (the same one the CLI
# uses), the tables the rules expand over, wildcard constraints and named input functions.
# No rules here. Everything else (validation, settings, registry, reference) is
# kappaflow.config.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a checkout works uninstalled

from kappaflow.config import load_config
from kappaflow.grid import REFERENCE_TEMPERATURE
from kappaflow.runtime import raised_runtime, runtime_base
from kappaflow.storage import slurm_time_limit_kills
from kappaflow.structures import frame_sha256

# validates `config` in place (schema defaults filled): its sections are the rules' params
CONFIG = load_config(config)

MODELS = CONFIG.models
MATERIALS = CONFIG.materials
FINETUNE = CONFIG.finetune
TEMPS = list(CONFIG.temperatures)
GRUNEISEN = CONFIG.gruneisen_enabled
STRUCTURES = str(CONFIG.structures)
REFERENCE_KAPPA = CONFIG.reference_kappa
GAMMA_REFERENCE = CONFIG.gamma_reference if GRUNEISEN else []
# κ jobs with kappaflow's ph-ph engine: torch in their env, and a GPU unless a profile
# sets `set-resources: kappa: device: cpu` (README "Speed")
KAPPA_ENV = CONFIG.kappa_env
KAPPA_GPUS = CONFIG.kappa_gpus(
    workflow.resource_settings.overwrite_resources.get("kappa", {}).get("device")
)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    ftmodel="|".join(map(re.escape, FINETUNE)) or "(?!x)x",
    material="|".join(map(re.escape, MATERIALS)),
    temperature=r"\d+",


# ----------------------------------------------------------------- runtime
# Wall-time limit (minutes) of each compute job: the rule's base (kappaflow.runtime
# defaults, or `set-resources: RULE: runtime_base: N` in a profile) doubled for every
# earlier SLURM job of the same rule and wildcards that SLURM killed at its time limit
# (read from the SLURM plugin's kept logs). `set-resources: RULE: runtime: N` pins it.


def _slurm_logdir():
    settings = getattr(workflow, "executor_settings", None)
    logdir = getattr(settings, "logdir", None)
    if logdir and Path(logdir).is_absolute():
        return Path(logdir)
    if logdir:
        return Path(getattr(workflow, "workdir_init", ".")) / logdir
    return Path(".snakemake/slurm_logs")


def runtime_for(rule):
    base = runtime_base(rule, workflow.resource_settings.overwrite_resources.get(rule))

    def runtime(wildcards):
        return raised_runtime(base, slurm_time_limit_kills(_slurm_logdir(), rule, wildcards))

    return runtime


# ----------------------------------------------------------------- input functions


def get_model(wildcards):
    return CONFIG.model_params(wildcards.model)


def get_structure_sha256(wildcards):
    """The content hash of the material's own frame (kappaflow.structures.frame_sha256):
    the relax job's re-run trigger in place of the whole structures file's mtime."""
    return frame_sha256(CONFIG.material(wildcards.material)[0])


def get_material_overrides(wildcards):
    """The material's own entry of material_overrides (an edit of another's re-runs only it)."""
    own = config["material_overrides"].get(wildcards.material)
    return {} if own is None else {wildcards.material: own}


def get_model_file(wildcards):
    return CONFIG.model_files(wildcards.model)


def env_for(key):
    family = CONFIG.model(key).family
    if family in ("mace", "chgnet", "sevennet"):
        return f"../envs/{family}.yaml"
    return "../envs/analysis.yaml"


def get_model_env(wildcards):
    return env_for(wildcards.model)


def _per_material(name):
    def files(wildcards):
        return expand(
            "results/{model}/{material}/{name}",
            model=wildcards.model,
            material=MATERIALS,
            name=name,
        )

    return files


get_records = _per_material("kappa.json")
get_kappa_files = _per_material("kappa.hdf5")
get_gruneisen_records = _per_material("gruneisen.json")
get_gruneisen_hdf5 = _per_material("gruneisen.hdf5")
get_alpha_curves = _per_material("thermal_expansion.csv")


def get_gruneisen_checks(wildcards):
    if not config["gruneisen"]["fc3_check"]:
        return []
    return _per_material("gruneisen_fc3_check.json")(wildcards)


def get_gamma_summaries(wildcards):
    return expand("results/{model}/gruneisen-summary.json", model=MODELS) if GRUNEISEN else []


def get_published_dir(wildcards):
    return {"path": str(CONFIG.published.path), "source": CONFIG.published.source}


def get_melting_point(wildcards):
    return CONFIG.melting_point(wildcards.material)


def get_final_output():
    out = ["results/metrics.csv", "results/metrics.md"]
    out += ["results/leaderboard.csv", "results/leaderboard.md"]
    out += expand(
        "results/plots/{figure}.{ext}", figure=["ranking", "sre-vs-srme"], ext=["png", "svg"]
    )
    if CONFIG.scored:
        out += expand("results/plots/parity-grid.{ext}", ext=["png", "svg"])
    out += expand("results/{model}/kappa.json.gz", model=MODELS)
    # per-material results are deliverables: a deleted one is recomputed (alone)
    out += expand(
        "results/{model}/{material}/{name}",
        model=MODELS,
        material=MATERIALS,
        name=["kappa.hdf5", "kappa.json"],
    )
    if CONFIG.scored and CONFIG.parity_temperatures:
        out += expand(
            "results/plots/parity-{model}-T{temperature}K.svg",
            model=MODELS,
            temperature=[int(t) for t in CONFIG.parity_temperatures],
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
        out += expand(
            "results/plots/{figure}-{model}.{ext}",
            figure=["alpha-V", "gamma-parity"],
            model=MODELS,
            ext=["png", "svg"],
        )
    for key in FINETUNE:
        out += [f"results/finetune/{key}/training.json"]
        out += [f"results/plots/finetune-{key}.{ext}" for ext in ("png", "svg")]
        out += [f"results/finetune/{key}/before-after.{ext}" for ext in ("csv", "md")]
    return out


# ----------------------------------------------------------------- fine-tuning


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
    return CONFIG.model_files(FINETUNE[wildcards.ftmodel].base)


def get_ft_materials(wildcards):
    return CONFIG.finetune_train[wildcards.ftmodel]


def get_ft_export(wildcards):
    return FINETUNE[wildcards.ftmodel].export.as_dict()


def get_ft_teacher(wildcards):
    return CONFIG.model_params(FINETUNE[wildcards.ftmodel].label_with)


def get_ft_teacher_env(wildcards):
    return env_for(FINETUNE[wildcards.ftmodel].label_with)


def get_ft_with_stress(wildcards):
    return FINETUNE[wildcards.ftmodel].train.stress_weight > 0


def get_ft_match_export(wildcards):
    return FINETUNE[wildcards.ftmodel].match_export


def get_ft_base(wildcards):
    return CONFIG.model_params(FINETUNE[wildcards.ftmodel].base)


def get_ft_train(wildcards):
    return FINETUNE[wildcards.ftmodel].train.as_dict()


def get_ft_workroot(wildcards, output):
    return str(Path(output.model).parent / "train")


def get_ft_split(wildcards):
    return CONFIG.finetune_split[wildcards.ftmodel]


def get_ft_base_key(wildcards):
    return FINETUNE[wildcards.ftmodel].base


def get_ft_before(wildcards):
    return f"results/{FINETUNE[wildcards.ftmodel].base}/metrics.csv"
