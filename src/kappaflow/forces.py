"""Forces on many displaced supercells: the serial ASE loop or the model package's own
batched, forces-only call, chosen per device (issue 6; docs/benchmarks.md "Force evaluation").

Pure logic: the batched call itself comes from the model registry
(:attr:`kappaflow.calculators.LoadedModel.batch_forces`), so this module imports no model
package. Both paths give the same forces: the realmodel tests assert max |ΔF| <= 1e-6 eV/Å
for float64 models and <= 1e-4 eV/Å for float32 ones on every supercell of a real material
(measured on CPU: 0 for CHGNet and MACE, 2.3e-7 eV/Å for SevenNet-0).

Path choice (``path: auto``) per device type and model family, from the measurements in
docs/benchmarks.md ("Force evaluation", 2-core CPU, NaCl fc3 set):

* CUDA: the batched call for every family that has one, ``DEFAULT_MAX_ATOMS["cuda"]`` atoms
  per call (the GPU lever).
* CPU, CHGNet: batches of 4 fc3 supercells (256 atoms), 1.25x the serial loop: the forces-only
  task skips the stress and magnetic moments the ASE calculator always computes.
* CPU, MACE: one supercell per call, forces only (the ASE calculator also computes the
  stress). Larger batches of a MACE-MP-0-medium-sized model are memory-bound on CPU (4 per
  call: 0.70x), although a tiny MACE gains 1.5x from them.
* CPU, SevenNet: the serial loop; its batched model computes the stress too, and 4 per call
  ran at 0.74x.
* any other calculator: the serial loop.

An explicit ``max_atoms_per_batch`` (or ``path: batched``) overrides the table; batches are
filled with consecutive supercells up to the budget, and a supercell larger than the budget
goes alone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

PATHS = ("auto", "serial", "batched")

#: Atoms per batched call when ``max_atoms_per_batch`` is not set, by device type.
#: CUDA: fills a GPU with 64-72-atom fc3 supercells (~230 per call) and leaves room for a
#: 512-atom fc2 graph; CPU: 4 fc3 supercells.
DEFAULT_MAX_ATOMS = {"cpu": 256, "cuda": 16384}

#: What ``path: auto`` does on CPU, per family: (path, atoms per call or None for the
#: device default). 1 atom = one supercell per call. Measured, see the module docstring.
AUTO_CPU = {
    "chgnet": ("batched", None),
    "mace": ("batched", 1),
    "sevennet": ("serial", None),
}


class ForceError(ValueError):
    """Bad force-evaluation settings (the message names the key)."""


class NonFiniteForcesError(FloatingPointError):
    """The model returned NaN/inf forces: recorded as a failure of the material, not a crash."""


@dataclass(frozen=True)
class ForceSettings:
    """How forces are evaluated (config ``forces:``); never changes results beyond the
    float tolerance above, so it is not a protocol setting."""

    path: str = "auto"
    max_atoms_per_batch: int | None = None

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ForceError(f"forces.path must be one of {', '.join(PATHS)}, got {self.path!r}")
        n = self.max_atoms_per_batch
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ForceError(f"forces.max_atoms_per_batch must be an integer >= 1, got {n!r}")

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> ForceSettings:
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - {"path", "max_atoms_per_batch"})
        if unknown:
            raise ForceError(
                f"unknown key(s) in 'forces': {', '.join(unknown)} "
                "(allowed: max_atoms_per_batch, path)"
            )
        return cls(**mapping)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda``; anything else that is not CUDA counts as ``cpu``."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def max_atoms_for(settings: ForceSettings, device: str, family: str = "") -> int:
    """Atoms per batched call: the setting, else the family's CPU choice, else per device."""
    if settings.max_atoms_per_batch:
        return settings.max_atoms_per_batch
    if device_type(device) == "cpu" and AUTO_CPU.get(family, ("", None))[1]:
        return AUTO_CPU[family][1]
    return DEFAULT_MAX_ATOMS[device_type(device)]


def choose_path(
    settings: ForceSettings, has_batched: bool, family: str = "", device: str = "cpu"
) -> tuple[str, str]:
    """(path, reason). ``batched`` on a family without a batched call is an error."""
    if settings.path == "serial":
        return "serial", "forces.path=serial"
    if settings.path == "batched":
        if not has_batched:
            raise ForceError(
                f"forces.path=batched, but model family {family or '?'!r} has no batched "
                "call (mace, chgnet and sevennet have); use path auto or serial"
            )
        return "batched", "forces.path=batched"
    if not has_batched:
        return "serial", f"family {family or '?'!r} has no batched call: serial ASE loop"
    if device_type(device) == "cuda":
        return "batched", "auto on CUDA: the family's batched forces-only call"
    if settings.max_atoms_per_batch:
        return "batched", "auto with max_atoms_per_batch set: batched"
    path = AUTO_CPU.get(family, ("serial", None))[0]
    return path, f"auto on CPU for {family}: {path} (measured, kappaflow.forces.AUTO_CPU)"


#: Families whose registry entry provides a batched call (kappaflow.calculators).
BATCHED_FAMILIES = ("mace", "chgnet", "sevennet")


def check_families(settings: ForceSettings, families: dict[str, str]) -> None:
    """Fail before any job runs when ``path: batched`` meets a model (key -> family) that
    has no batched call; the message names the models."""
    if settings.path != "batched":
        return
    bad = sorted(k for k, fam in families.items() if fam not in BATCHED_FAMILIES)
    if bad:
        raise ForceError(
            f"forces.path=batched, but model(s) {', '.join(bad)} have no batched call "
            f"(families with one: {', '.join(BATCHED_FAMILIES)}); use path auto or serial"
        )


def plan_batches(sizes: Sequence[int], max_atoms: int) -> list[list[int]]:
    """Consecutive indices grouped so each group holds at most ``max_atoms`` atoms (a
    structure larger than the budget forms a group of its own)."""
    if max_atoms < 1:
        raise ForceError(f"max_atoms_per_batch must be >= 1, got {max_atoms}")
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, n in enumerate(sizes):
        if current and total + n > max_atoms:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        groups.append(current)
    return groups


def serial_forces(
    structures: Sequence[Atoms],
    calc: Calculator,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """The reference path: one ASE ``get_forces`` call per structure."""
    out = []
    for atoms in structures:
        at = atoms.copy()
        at.calc = calc
        out.append(np.array(at.get_forces(), dtype=float))
        if progress is not None:
            progress(len(out), len(structures))
    return out


def batched_forces(
    structures: Sequence[Atoms],
    batch_call: Callable[[Sequence[Atoms]], list[np.ndarray]],
    max_atoms: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for group in plan_batches([len(s) for s in structures], max_atoms):
        out.extend(batch_call([structures[i] for i in group]))
        if progress is not None:
            progress(len(out), len(structures))
    return out


@dataclass
class ForceRun:
    """Forces (n, n_atoms, 3) in eV/Å plus what the provenance records about the run."""

    forces: np.ndarray
    info: dict[str, Any]


def evaluate_forces(
    structures: Sequence[Atoms | None],
    calc: Calculator,
    batch_call: Callable[[Sequence[Atoms]], list[np.ndarray]] | None = None,
    settings: ForceSettings | None = None,
    device: str = "cpu",
    family: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> ForceRun:
    """Forces on every structure (``None`` entries -- pairs phono3py skips beyond a cutoff
    -- get zeros, as phono3py expects). Raises :class:`NonFiniteForcesError` on NaN/inf."""
    settings = settings or ForceSettings()
    present = [i for i, s in enumerate(structures) if s is not None]
    if not present:
        raise ForceError("no structures to evaluate")
    n_atoms = len(structures[present[0]])
    path, reason = choose_path(settings, batch_call is not None, family, device)
    todo = [structures[i] for i in present]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # a model's warning repeated on every call (CHGNet's requires_grad UserWarning)
        # is shown once per job, not once per supercell
        warnings.filterwarnings("once", category=UserWarning)
        if path == "batched":
            max_atoms = max_atoms_for(settings, device, family)
            got = batched_forces(todo, batch_call, max_atoms, progress)
            n_calls = len(plan_batches([len(s) for s in todo], max_atoms))
        else:
            max_atoms, n_calls = None, len(todo)
            got = serial_forces(todo, calc, progress)
    elapsed = time.perf_counter() - t0
    out = np.zeros((len(structures), n_atoms, 3))
    for i, f in zip(present, got, strict=True):
        out[i] = f
    if not np.all(np.isfinite(out)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(out))[:, 0]})
        raise NonFiniteForcesError(
            f"model returned non-finite forces on displaced supercell(s) {bad[:10]}"
        )
    info = {
        "path": path,
        "reason": reason,
        "device": device,
        "max_atoms_per_batch": max_atoms,
        "model_calls": n_calls,
        "structures": len(todo),
        "skipped_by_cutoff": len(structures) - len(todo),
        "seconds": elapsed,
        "structures_per_s": len(todo) / elapsed if elapsed > 0 else None,
    }
    return ForceRun(out, info)
