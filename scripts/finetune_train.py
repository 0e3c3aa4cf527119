"""Fine-tune a mace model with mace's run_train (rule finetune_train)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec
from kappaflow.finetune import TrainSettings

steps.run_finetune_train(
    snakemake.input.data,
    ModelSpec(**snakemake.params.base),
    TrainSettings.from_mapping(snakemake.params.settings),
    snakemake.wildcards.ftmodel,
    snakemake.params.workroot,
    snakemake.output.model,
    snakemake.output.record,
    device=getattr(snakemake.resources, "device", "auto"),
    threads=snakemake.threads,
)
