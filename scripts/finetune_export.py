"""Training structures of the fine-tuning materials, for labelling (rule finetune_export)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.config import job_params
from kappaflow.steps.finetune import run_finetune_export

p = job_params(snakemake.params)
run_finetune_export(
    structures=snakemake.input.structures,
    material_ids=p.other["materials"],
    export=p.export,
    phono3py_settings=p.phono3py,
    out_frames=snakemake.output.frames,
    out_manifest=snakemake.output.manifest,
    defaults=p.structure_defaults,
    overrides=p.other["material_overrides"],
)
