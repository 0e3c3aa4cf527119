"""Fine-tune a mace model with mace's run_train (rule finetune_train)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.finetune import run_finetune_train

p = job_params(snakemake.params)
run_finetune_train(
    train_data=snakemake.input.data,
    base=p.model,
    settings=p.train,
    key=snakemake.wildcards.ftmodel,
    workroot=p.other["workroot"],
    out_model=snakemake.output.model,
    out_record=snakemake.output.record,
    device=getattr(snakemake.resources, "device", "auto"),
    threads=snakemake.threads,
)
