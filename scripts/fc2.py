"""fc2 forces, fc2 and the harmonic gate (rule fc2)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.harmonic import run_fc2

p = job_params(snakemake.params)
out = snakemake.output
run_fc2(
    relaxed=snakemake.input.relaxed,
    model=p.model,
    settings=p.phono3py,
    out_fc2=out.fc2,
    out_forces=out.forces,
    out_disp=out.disp,
    out_phonons=out.phonons,
    device=getattr(snakemake.resources, "device", "auto"),
    force_settings=p.forces,
)
