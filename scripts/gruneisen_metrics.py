"""Per-material γ scores of one model against the DFT γ (rule gruneisen_metrics)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import storage
from kappaflow.steps.gruneisen import run_gruneisen_metrics

summary = run_gruneisen_metrics(
    records=snakemake.input.records,
    hdf5_files=snakemake.input.hdf5,
    reference=snakemake.input.reference,
    out_csv=snakemake.output.metrics,
    fc3_checks=snakemake.input.checks,
    mode_reference=snakemake.params.mode_reference,
)
storage.write_json(snakemake.output.summary, summary)
