"""Parity plot of one model at one temperature (rule parity_plot)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.evaluate import run_parity

run_parity(
    snakemake.input.metrics,
    snakemake.wildcards.model,
    float(snakemake.wildcards.temperature),
    snakemake.output[0],
)
