"""κ(T) curves of one model (rule kappa_vs_temperature)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.evaluate import run_kappa_vs_temperature

run_kappa_vs_temperature(snakemake.input.table, snakemake.wildcards.model, snakemake.output[0])
