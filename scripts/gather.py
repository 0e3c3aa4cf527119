"""Gather one model's per-material results into the reference layout (rule gather)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.config import job_params
from kappaflow.steps.evaluate import run_gather

run_gather(
    snakemake.input.records,
    snakemake.input.kappa,
    snakemake.output.table,
    checks=job_params(snakemake.params).checks,
)
