"""Mode γ, γ(T), K_T and α_V(T) of one material (rule gruneisen)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings

out = snakemake.output
steps.run_gruneisen(
    snakemake.input.relaxed,
    snakemake.input.fc2,
    ModelSpec(**snakemake.params.model),
    GruneisenSettings.from_mapping(snakemake.params.settings),
    RelaxSettings.from_mapping(snakemake.params.relax),
    Phono3pySettings.from_mapping(snakemake.params.phono3py),
    out.hdf5,
    out.record,
    out.curve,
    melting_point=snakemake.params.melting_point,
    device=getattr(snakemake.resources, "device", "auto"),
)
