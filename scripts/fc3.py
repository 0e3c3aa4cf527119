"""fc3 forces and fc3, or status-only placeholders when gated (rule fc3)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec
from kappaflow.forces import ForceSettings
from kappaflow.settings import Phono3pySettings

steps.run_fc3(
    snakemake.input.relaxed,
    snakemake.input.phonons,
    ModelSpec(**snakemake.params.model),
    Phono3pySettings.from_mapping(snakemake.params.settings),
    snakemake.output.fc3,
    snakemake.output.forces,
    device=getattr(snakemake.resources, "device", "auto"),
    force_settings=ForceSettings.from_mapping(snakemake.params.forces),
)
