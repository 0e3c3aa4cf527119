"""Per-material SRD/SRE/SRME of one model (rule metrics)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import storage
from kappaflow.config import job_params
from kappaflow.steps.evaluate import run_model_metrics

p = snakemake.params
summary = run_model_metrics(
    table=snakemake.input.table,
    reference=snakemake.input.reference,
    out_csv=snakemake.output.metrics,
    materials=p.materials,
    temperature=p.temperature,
    computed_temperatures=p.computed_temperatures,
    reference_model=p.reference_model,
    checks=job_params(p).checks,
)
storage.write_json(snakemake.output.summary, summary)
