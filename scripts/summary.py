"""Across models: results/metrics.csv and results/metrics.md (rule summary)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import steps

steps.run_summary(
    snakemake.input.summaries,
    snakemake.params.models,
    snakemake.params.reference,
    snakemake.output.csv,
    snakemake.output.markdown,
    gamma_summaries=snakemake.input.gamma or None,
)
