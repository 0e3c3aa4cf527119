"""kappaflow.layout owns the file names of a results folder; the rules write exactly them."""

from __future__ import annotations

import re
from pathlib import Path

from kappaflow.layout import MATERIAL_FILES, MODEL_FILES, material_files, model_file

REPO = Path(__file__).resolve().parents[1]
PER_MATERIAL = re.compile(r'"results/\{model\}/\{material\}/([^"{}/]+)"')
PER_MODEL = re.compile(r'"results/\{model\}/([^"{}/]+)"')
#: per-model outputs of the fine-tuning rules use the {ftmodel} wildcard
PER_FTMODEL = re.compile(r'"results/\{ftmodel\}/([^"{}/]+)"')


def _outputs(pattern: re.Pattern) -> set[str]:
    """Names in the output: sections of rules/*.smk."""
    names = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.findall(r"\n    output:\n(.*?)\n    \w+:", smk.read_text(), flags=re.S):
            names.update(pattern.findall(block))
    return names


def test_every_per_material_output_is_named_by_the_layout_and_back():
    assert _outputs(PER_MATERIAL) == set(MATERIAL_FILES.values())


def test_every_per_model_output_is_named_by_the_layout_and_back():
    assert _outputs(PER_MODEL) == set(MODEL_FILES.values())


def test_paths(tmp_path):
    files = material_files(tmp_path / "m")
    assert files["record"] == tmp_path / "m" / "kappa.json"
    assert set(files) == set(MATERIAL_FILES)
    assert model_file("chgnet-0.3.0", "gathered") == Path("results/chgnet-0.3.0/kappa.json.gz")
