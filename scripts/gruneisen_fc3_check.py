"""Mode γ from fc3 (fc2 on the fc3 supercell) against the finite-volume γ."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py and torch are imported
from kappaflow.config import job_params
from kappaflow.steps.gruneisen import run_gruneisen_fc3_check

p = job_params(snakemake.params)
run_gruneisen_fc3_check(
    relaxed=snakemake.input.relaxed,
    forces_fc3=snakemake.input.forces_fc3,
    gruneisen_hdf5=snakemake.input.hdf5,
    gruneisen_json=snakemake.input.record,
    settings=p.gruneisen,
    phono3py_settings=p.phono3py,
    out_json=snakemake.output.check,
)
