"""Before/after tables and side-by-side parity plots (rule finetune_compare)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import steps

steps.run_finetune_compare(
    snakemake.input.before,
    snakemake.input.after,
    snakemake.params.split,
    snakemake.params.base,
    snakemake.wildcards.ftmodel,
    snakemake.output.table,
    snakemake.output.summary,
    snakemake.output.markdown,
    snakemake.output.plot,
)
