"""Label exported structures with a model (finetune.KEY.label_with; rule finetune_label)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec

steps.run_finetune_label(
    snakemake.input.exported,
    ModelSpec(**snakemake.params.model),
    snakemake.output.labels,
    device=getattr(snakemake.resources, "device", "auto"),
    with_stress=snakemake.params.with_stress,
)
