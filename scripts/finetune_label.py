"""Label exported structures with a model (finetune.KEY.label_with; rule finetune_label)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.finetune import run_finetune_label

p = job_params(snakemake.params)
run_finetune_label(
    exported=snakemake.input.exported,
    model=p.model,
    out=snakemake.output.labels,
    device=getattr(snakemake.resources, "device", "auto"),
    with_stress=p.other["with_stress"],
)
