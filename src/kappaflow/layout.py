"""The file layout of a results folder: the one place that names the files.

The rules in ``rules/*.smk`` write these paths literally (Snakemake style);
``tests/test_layout.py`` checks that every per-material and per-model output of the rules
is named here and that every name here is an output of a rule. The CLI writes the same
files into ``--out`` (one material), so a CLI folder and a workflow folder are
interchangeable.
"""

from __future__ import annotations

from pathlib import Path

#: files of results/{model}/{material}/, keyed by role
MATERIAL_FILES = {
    "relaxed": "relaxed.extxyz",
    "disp": "phono3py_disp.yaml",
    "forces_fc2": "forces_fc2.hdf5",
    "fc2": "fc2.hdf5",
    "phonons": "phonons.json",
    "forces_fc3": "forces_fc3.hdf5",
    "fc3": "fc3.hdf5",
    "kappa": "kappa.hdf5",
    "record": "kappa.json",
    "gruneisen_hdf5": "gruneisen.hdf5",
    "gruneisen": "gruneisen.json",
    "thermal_expansion": "thermal_expansion.csv",
    "gruneisen_fc3_check": "gruneisen_fc3_check.json",
}

#: files of results/{model}/, keyed by role
MODEL_FILES = {
    "gathered": "kappa.json.gz",
    "metrics": "metrics.csv",
    "metrics_summary": "metrics-summary.json",
    "gruneisen_metrics": "gruneisen-metrics.csv",
    "gruneisen_summary": "gruneisen-summary.json",
}

RESULTS = Path("results")


def material_files(folder: str | Path) -> dict[str, Path]:
    """Every per-material file of ``folder`` (results/{model}/{material} or a CLI --out)."""
    folder = Path(folder)
    return {role: folder / name for role, name in MATERIAL_FILES.items()}


def material_dir(model: str, material: str, results: str | Path = RESULTS) -> Path:
    return Path(results) / model / material


def model_file(model: str, role: str, results: str | Path = RESULTS) -> Path:
    return Path(results) / model / MODEL_FILES[role]
