"""α_V(T) figure of one model, one panel per structure type (rule alpha_plot)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.gruneisen import run_alpha_plot

run_alpha_plot(
    snakemake.input.curves,
    snakemake.input.records,
    snakemake.wildcards.model,
    snakemake.output.png,
    snakemake.output.svg,
)
