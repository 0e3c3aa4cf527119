"""Training structures of the fine-tuning materials, for labelling (rule finetune_export)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow import steps
from kappaflow.finetune import ExportSettings
from kappaflow.settings import Phono3pySettings, StructureDefaults

steps.run_finetune_export(
    snakemake.input.structures,
    snakemake.params.materials,
    ExportSettings.from_mapping(snakemake.params.export),
    Phono3pySettings.from_mapping(snakemake.params.phono3py),
    snakemake.output.frames,
    snakemake.output.manifest,
    defaults=StructureDefaults.from_mapping(snakemake.params.defaults),
    overrides=snakemake.params.overrides,
)
