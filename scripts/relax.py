"""Relax one material (rule relax)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.relax import run_relax

p = job_params(snakemake.params)
run_relax(
    structures=snakemake.input.structures,
    material_id=snakemake.wildcards.material,
    model=p.model,
    settings=p.relax,
    out_relaxed=snakemake.output.relaxed,
    device=getattr(snakemake.resources, "device", "auto"),
    defaults=p.structure_defaults,
    overrides=p.other["material_overrides"],
)
