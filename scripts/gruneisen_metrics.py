"""Per-material γ scores of one model against the DFT γ (rule gruneisen_metrics)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import io, steps

summary = steps.run_gruneisen_metrics(
    snakemake.input.records,
    snakemake.input.hdf5,
    snakemake.input.reference,
    snakemake.output.metrics,
    fc3_checks=snakemake.input.checks,
    mode_reference=snakemake.params.mode_reference,
)
io.write_json(snakemake.output.summary, summary)
