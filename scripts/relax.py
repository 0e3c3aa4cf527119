"""Relax one material (rule relax)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec
from kappaflow.settings import RelaxSettings, StructureDefaults

steps.run_relax(
    snakemake.input.structures,
    snakemake.wildcards.material,
    ModelSpec(**snakemake.params.model),
    RelaxSettings.from_mapping(snakemake.params.settings),
    snakemake.output.relaxed,
    device=getattr(snakemake.resources, "device", "auto"),
    defaults=StructureDefaults.from_mapping(snakemake.params.defaults),
    overrides=snakemake.params.overrides,
)
