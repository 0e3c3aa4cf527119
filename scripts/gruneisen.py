"""Mode γ, γ(T), K_T and α_V(T) of one material (rule gruneisen)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.gruneisen import run_gruneisen

p = job_params(snakemake.params)
out = snakemake.output
run_gruneisen(
    relaxed=snakemake.input.relaxed,
    fc2_path=snakemake.input.fc2,
    model=p.model,
    settings=p.gruneisen,
    relax_settings=p.relax,
    phono3py_settings=p.phono3py,
    out_hdf5=out.hdf5,
    out_json=out.record,
    out_csv=out.curve,
    melting_point=p.other["melting_point"],
    device=getattr(snakemake.resources, "device", "auto"),
)
