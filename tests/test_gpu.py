"""CUDA paths: skipped cleanly without a GPU (CI never has one)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.realmodel]


def _python(code: str, *args: str) -> str:
    """Run ``code`` in its own Python process (one model per process); its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return proc.stdout


_CODE = """
import numpy as np, torch
from ase.io import read
from kappaflow.calculators import load_calculator, model_spec
if not torch.cuda.is_available():
    print("NO_CUDA"); raise SystemExit(0)
nacl = [a for a in read({structures!r}, ":") if a.info["mp_id"] == "mp-22862"][0]
nacl.positions[0, 0] += 0.03
out = {{}}
for device in ("cpu", "cuda"):
    loaded = load_calculator(model_spec("chgnet-0.3.0"), device=device)
    assert loaded.info["device"] == device
    atoms = nacl.copy(); atoms.calc = loaded.calculator
    out[device] = atoms.get_forces()
print("MAXDIFF", float(np.abs(out["cpu"] - out["cuda"]).max()))
"""


def test_chgnet_forces_on_cuda_match_cpu(reference_dir):
    pytest.importorskip("chgnet")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    stdout = _python(_CODE.format(structures=str(reference_dir / "phononDB-PBE-structures.extxyz")))
    line = [x for x in stdout.splitlines() if x.startswith("MAXDIFF")][-1]
    assert float(line.split()[1]) < 1e-4  # float32 model: CPU and GPU agree to float32 noise


def test_device_auto_picks_cuda_when_present():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from kappaflow.calculators import resolve_device

    assert resolve_device("auto") == "cuda"


_BATCHED = """
import json, sys
import numpy as np
from kappaflow import phonons
from kappaflow.steps.relax import load_material
from kappaflow.calculators import load_calculator, model_spec
from kappaflow.forces import ForceSettings
from kappaflow.settings import Phono3pySettings
atoms, mat = load_material(sys.argv[2], "mp-22862")
ph3 = phonons.init_phono3py(atoms, mat, Phono3pySettings())
loaded = load_calculator(model_spec(sys.argv[1]), device="cuda")
cells = ph3.supercells_with_displacements
serial = phonons.force_run(cells, loaded, ForceSettings(path="serial"))
auto = phonons.force_run(cells, loaded)  # the default CUDA budget: the whole set per call
print("RESULT " + json.dumps({"path": auto.info["path"], "calls": auto.info["model_calls"],
      "max_dF": float(np.abs(serial.forces - auto.forces).max())}))
"""


@pytest.mark.parametrize(("model", "tol"), [("chgnet-0.3.0", 1e-4), ("sevennet-0", 1e-4)])
def test_batched_forces_on_cuda_equal_serial(model, tol, reference_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    stdout = _python(_BATCHED, model, str(reference_dir / "phononDB-PBE-structures.extxyz"))
    out = json.loads([x for x in stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    assert out["path"] == "batched" and out["calls"] < 146
    assert out["max_dF"] <= tol
