"""Helpers shared by the step tests (imported as ``helpers``; tests/ is on sys.path)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from kappaflow.calculators import LoadedModel


class NaNForces(Calculator):
    """A model that returns NaN energy and forces (non-finite force tests)."""

    implemented_properties = ("energy", "forces", "stress")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = len(atoms)
        self.results = {"energy": np.nan, "forces": np.full((n, 3), np.nan), "stress": np.zeros(6)}


def nan_model() -> LoadedModel:
    return LoadedModel(
        NaNForces(), {"model": "nan", "family": "ase", "device": "cpu", "dtype": "float64"}
    )


def svg_comments(path: Path) -> list[str]:
    """Parse an SVG (fails on malformed XML); matplotlib writes each text as a comment."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.parse(path, parser).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [el.text.strip() for el in root.iter() if el.tag is ET.Comment]


def fc2_into(f: dict, model, settings, **kw):
    """kappaflow's fc2 step into a results folder given as its MATERIAL_FILES paths."""
    from kappaflow.steps.harmonic import run_fc2

    return run_fc2(relaxed=f["relaxed"], model=model, settings=settings, out_fc2=f["fc2"],
                   out_forces=f["forces_fc2"], out_disp=f["disp"], out_phonons=f["phonons"],
                   **kw)  # fmt: skip


def fc3_into(f: dict, model, settings, **kw):
    """kappaflow's fc3 step into a results folder given as its MATERIAL_FILES paths."""
    from kappaflow.steps.anharmonic import run_fc3

    return run_fc3(relaxed=f["relaxed"], phonons_json=f["phonons"], model=model,
                   settings=settings, out_fc3=f["fc3"], out_forces=f["forces_fc3"], **kw)  # fmt: skip
