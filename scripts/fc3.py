"""fc3 forces and fc3, or status-only placeholders when gated (rule fc3)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.anharmonic import run_fc3

p = job_params(snakemake.params)
run_fc3(
    relaxed=snakemake.input.relaxed,
    phonons_json=snakemake.input.phonons,
    model=p.model,
    settings=p.phono3py,
    out_fc3=snakemake.output.fc3,
    out_forces=snakemake.output.forces,
    device=getattr(snakemake.resources, "device", "auto"),
    force_settings=p.forces,
)
