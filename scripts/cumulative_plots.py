"""Cumulative κ vs frequency per material, model vs DFT (rule cumulative_plots)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.evaluate import run_cumulative

run_cumulative(
    table=snakemake.input.table,
    reference=snakemake.input.reference,
    materials=snakemake.params.materials,
    model=snakemake.wildcards.model,
    temperature=snakemake.params.temperature,
    out_dir=snakemake.output[0],
)
