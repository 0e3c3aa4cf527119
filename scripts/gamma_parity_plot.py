"""γ parity figure of one model (rule gamma_parity_plot)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.gruneisen import run_gamma_parity

run_gamma_parity(
    snakemake.input.metrics, snakemake.wildcards.model, snakemake.output.png, snakemake.output.svg
)
