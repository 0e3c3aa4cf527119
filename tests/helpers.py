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
