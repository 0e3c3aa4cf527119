"""Batched forces equal the serial ASE loop on every displaced supercell of a real material
(NaCl-rs, mp-22862: 146 fc3 supercells of 64 atoms, 2 fc2 supercells of 512 atoms), for
every model family that runs offline here, each in its own process.

Tolerances (issue 6): max |ΔF| <= 1e-6 eV/Å for float64 models, <= 1e-4 eV/Å for float32.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realmodel

REPO = Path(__file__).resolve().parents[1]

_CODE = """
import json, sys
from kappaflow.runtime import configure_threads
configure_threads(1)
import numpy as np
from kappaflow import phonons
from kappaflow.steps.relax import load_material
from kappaflow.calculators import load_calculator, model_spec
from kappaflow.forces import ForceSettings
from kappaflow.settings import Phono3pySettings

model, structures, mp_id = sys.argv[1:4]
sha256 = sys.argv[4] if len(sys.argv) > 4 else None  # a local checkpoint needs its hash
atoms, mat = load_material(structures, mp_id)
ph3 = phonons.init_phono3py(atoms, mat, Phono3pySettings())
entry = {model: {"family": "mace", "path": model, "sha256": sha256}} if sha256 else None
loaded = load_calculator(model_spec(model, entry), device="cpu")
out = {"dtype": loaded.info["dtype"], "family": loaded.info["family"]}
for name, cells in (("fc3", ph3.supercells_with_displacements),
                    ("fc2", ph3.phonon_supercells_with_displacements)):
    serial = phonons.force_run(cells, loaded, ForceSettings(path="serial"))
    # 8 fc3 supercells per call; each 512-atom fc2 supercell in its own call
    batched = phonons.force_run(cells, loaded, ForceSettings(path="batched", max_atoms_per_batch=512))
    auto = phonons.force_run(cells[:3], loaded)
    out[name] = {
        "n": len(cells),
        "atoms": len(cells[0]),
        "serial_path": serial.info["path"],
        "batched_path": batched.info["path"],
        "auto_path": auto.info["path"],
        "calls": batched.info["model_calls"],
        "max_dF": float(np.abs(serial.forces - batched.forces).max()),
        "max_F": float(np.abs(serial.forces).max()),
    }
print("RESULT " + json.dumps(out))
"""


def _equality(model: str, reference_dir: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CODE,
            model,
            str(reference_dir / "phononDB-PBE-structures.extxyz"),
            "mp-22862",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def _check(out: dict, dtype: str, tol: float, auto_path: str) -> None:
    assert out["dtype"] == dtype
    fc3, fc2 = out["fc3"], out["fc2"]
    assert (fc3["n"], fc3["atoms"], fc2["n"], fc2["atoms"]) == (146, 64, 2, 512)
    assert fc3["calls"] == 19 and fc2["calls"] == 2  # ceil(146 / 8); one per fc2 supercell
    for s in (fc3, fc2):
        assert (s["serial_path"], s["batched_path"], s["auto_path"]) == (
            "serial",
            "batched",
            auto_path,  # CPU choice per family (kappaflow.forces.AUTO_CPU)
        )
        assert s["max_F"] > 1e-3  # real displaced supercells carry forces
        assert s["max_dF"] <= tol, s


def test_chgnet_batched_forces_equal_serial(reference_dir):
    pytest.importorskip("chgnet")
    _check(_equality("chgnet-0.3.0", reference_dir), "float32", 1e-4, "batched")


def test_sevennet0_batched_forces_equal_serial(reference_dir):
    pytest.importorskip("sevenn")
    _check(_equality("sevennet-0", reference_dir), "float32", 1e-4, "serial")


def test_mace_batched_forces_equal_serial(tmp_path, reference_dir):
    pytest.importorskip("mace")
    model = tmp_path / "small.model"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "random_mace.py"),
            "--size",
            "small",
            "--elements",
            "Na",
            "Cl",
            "--out",
            str(model),
        ],
        check=True,
        capture_output=True,
    )
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    _check(_equality(str(model), reference_dir, sha), "float64", 1e-6, "batched")
