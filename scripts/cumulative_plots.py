"""Cumulative κ vs frequency per material, model vs DFT (rule cumulative_plots)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import steps

steps.run_cumulative(
    snakemake.input.table,
    snakemake.input.reference,
    snakemake.params.materials,
    snakemake.wildcards.model,
    snakemake.params.temperature,
    snakemake.output[0],
)
