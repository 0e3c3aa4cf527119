"""Mode γ from fc3 (fc2 on the fc3 supercell) against the finite-volume γ."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.settings import GruneisenSettings, Phono3pySettings

steps.run_gruneisen_fc3_check(
    snakemake.input.relaxed,
    snakemake.input.forces_fc3,
    snakemake.input.hdf5,
    snakemake.input.record,
    GruneisenSettings.from_mapping(snakemake.params.settings),
    Phono3pySettings.from_mapping(snakemake.params.phono3py),
    snakemake.output.check,
)
