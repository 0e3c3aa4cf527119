"""Wigner RTA conductivity at all temperatures (rule kappa)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.kappa import run_kappa

i = snakemake.input
run_kappa(
    relaxed=i.relaxed,
    phonons_json=i.phonons,
    fc2_path=i.fc2,
    fc3_path=i.fc3,
    settings=job_params(snakemake.params).kappa,
    out_hdf5=snakemake.output.kappa,
    out_record=snakemake.output.record,
    fc3_forces=i.forces_fc3,
    device=getattr(snakemake.resources, "device", "auto"),
    threads=snakemake.threads,
    job_mem_mb=getattr(snakemake.resources, "mem_mb", None),
)
