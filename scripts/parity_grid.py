"""κ parity of every model, one panel each (rule parity_grid)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.evaluate import run_parity_grid

run_parity_grid(
    snakemake.input.metrics, snakemake.params.models, snakemake.output.png, snakemake.output.svg
)
