"""Validate label files and write one training file (rule finetune_check)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import storage
from kappaflow.steps.finetune import run_finetune_check

labels = snakemake.input.labels
summary = run_finetune_check(
    [labels] if isinstance(labels, str) else list(labels),
    snakemake.input.exported if snakemake.params.match_export else None,
    snakemake.output.data,
)
storage.write_json(snakemake.output.summary, summary)
