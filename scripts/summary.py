"""Across models: results/metrics.csv and results/metrics.md (rule summary)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.evaluate import run_summary

run_summary(
    summaries=snakemake.input.summaries,
    models=snakemake.params.models,
    reference_name=snakemake.params.reference,
    out_csv=snakemake.output.csv,
    out_md=snakemake.output.markdown,
    gamma_summaries=snakemake.input.gamma or None,
)
