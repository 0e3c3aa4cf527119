"""Wigner RTA conductivity at all temperatures (rule kappa)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)  # before phono3py is imported
from kappaflow import steps
from kappaflow.settings import KappaSettings, Phono3pySettings

i = snakemake.input
steps.run_kappa(
    i.relaxed,
    i.phonons,
    i.fc2,
    i.fc3,
    KappaSettings(
        tuple(snakemake.params.temperatures),
        Phono3pySettings.from_mapping(snakemake.params.settings),
    ),
    snakemake.output.kappa,
    snakemake.output.record,
    i.forces_fc3,
)
