"""fc2 forces, fc2 and the harmonic gate (rule fc2)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.runtime import start_job

start_job(snakemake.threads)
from kappaflow import steps
from kappaflow.calculators import ModelSpec
from kappaflow.forces import ForceSettings
from kappaflow.settings import Phono3pySettings

out = snakemake.output
steps.run_fc2(
    snakemake.input.relaxed,
    ModelSpec(**snakemake.params.model),
    Phono3pySettings.from_mapping(snakemake.params.settings),
    out.fc2,
    out.forces,
    out.disp,
    out.phonons,
    device=getattr(snakemake.resources, "device", "auto"),
    force_settings=ForceSettings.from_mapping(snakemake.params.forces),
)
