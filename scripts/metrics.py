"""Per-material SRD/SRE/SRME of one model (rule metrics)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import io, steps

summary = steps.run_model_metrics(
    snakemake.input.table,
    snakemake.input.reference,
    snakemake.output.metrics,
    snakemake.params.materials,
    snakemake.params.temperature,
    snakemake.params.computed_temperatures,
    reference_model=snakemake.params.reference_model,
)
io.write_json(snakemake.output.summary, summary)
