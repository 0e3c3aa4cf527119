"""Two-stage symmetry-constrained relaxation (PROTOCOL §3, k_SRME ``two_stage_relax``).

Stage 1 relaxes positions and the normal strains (FrechetCellFilter, mask
[1,1,1,0,0,0]) with ASE's FixSymmetry attached; stage 2 removes the constraint and
continues with the same filter. If stage 2 changes the space group the stage-1
structure is kept (``redirected_to_symm``). A non-converged relax and a broken
symmetry are recorded, not raised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS

from kappaflow.forces import NonFiniteForcesError
from kappaflow.settings import RelaxSettings
from kappaflow.structures import spacegroup_number

_OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}
SYMPREC_TESTS = (1e-5, 1e-4, 1e-3, 1e-1)


@dataclass
class RelaxResult:
    """The relaxed structure and its record (k_SRME field names)."""

    atoms: Atoms
    initial_space_group_number: int | None
    stage1_space_group_number: int | None
    relaxed_space_group_number: int | None
    broken_symmetry: bool
    redirected_to_symm: bool
    reached_max_steps: bool
    steps: list[int]
    max_stress: float
    max_force: float
    energy: float
    volume_initial: float
    volume_final: float
    symprec_tests: dict[str, int | None] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("atoms")
        return d


def _max_abs(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


class RelaxError(RuntimeError):
    """The relaxation left the structure non-finite (a model returning NaN, say)."""


def _check_finite_model(atoms: Atoms) -> None:
    """Stop at the first non-finite energy or force: an optimizer cannot converge on NaN
    (every comparison is False) and would run all its steps first."""
    forces = atoms.get_forces()  # the calculator's cached result of this step
    if not (np.all(np.isfinite(forces)) and np.isfinite(atoms.get_potential_energy())):
        raise NonFiniteForcesError(
            "the model returned non-finite energy or forces in the relaxation"
        )


def _run_stage(filt: FrechetCellFilter, settings: RelaxSettings) -> int:
    opt = _OPTIMIZERS[settings.optimizer](filt, logfile=None)
    opt.attach(_check_finite_model, interval=1, atoms=filt.atoms)
    opt.run(fmax=settings.fmax, steps=settings.max_steps)
    atoms = filt.atoms
    if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell[:]))):
        raise RelaxError("relaxation produced non-finite positions or cell")
    return int(opt.get_number_of_steps())


def relax_structure(
    atoms: Atoms,
    calc: Calculator,
    settings: RelaxSettings | None = None,
    constant_volume: bool = False,
) -> RelaxResult:
    """Relax ``atoms`` (a copy) with ``calc`` following the two-stage protocol.

    ``constant_volume=True`` relaxes internal coordinates and cell shape at fixed volume
    (FrechetCellFilter ``constant_volume``, both stages), as gamma_SRME does for the ±1 %
    Grüneisen volumes (PROTOCOL §7).
    """
    settings = settings or RelaxSettings()
    atoms = atoms.copy()
    atoms.calc = calc
    volume_initial = float(atoms.get_volume())
    initial = spacegroup_number(atoms, settings.symprec)
    mask = [1, 1, 1, 1, 1, 1] if settings.allow_tilt else [1, 1, 1, 0, 0, 0]

    if settings.enforce_symmetry:
        atoms.set_constraint(FixSymmetry(atoms, symprec=settings.fix_symmetry_symprec))
    filt = FrechetCellFilter(atoms, mask=mask, constant_volume=constant_volume)
    steps = [_run_stage(filt, settings)]
    stage1_spg = spacegroup_number(atoms, settings.symprec)
    stage1 = atoms.copy()
    stage1.constraints = []

    redirected = False
    symprec_tests: dict[str, int | None] = {}
    if settings.two_stage:
        atoms.set_constraint()
        steps.append(_run_stage(filt, settings))
        final_spg = spacegroup_number(atoms, settings.symprec)
        if final_spg != initial:
            symprec_tests = {f"{p:g}": spacegroup_number(atoms, p) for p in SYMPREC_TESTS}
        if settings.enforce_symmetry and final_spg != stage1_spg:
            positions, cell = stage1.get_positions(), stage1.get_cell()
            atoms.set_cell(cell, scale_atoms=False)
            atoms.set_positions(positions)
            redirected = True
    atoms.set_constraint()
    final = spacegroup_number(atoms, settings.symprec)
    stress = atoms.get_stress(voigt=True)
    forces = atoms.get_forces()
    result_atoms = atoms.copy()
    result_atoms.calc = None
    return RelaxResult(
        atoms=result_atoms,
        initial_space_group_number=initial,
        stage1_space_group_number=stage1_spg,
        relaxed_space_group_number=final,
        broken_symmetry=final != initial,
        redirected_to_symm=redirected,
        reached_max_steps=any(s >= settings.max_steps for s in steps),
        steps=steps,
        max_stress=max(_max_abs(stress[:3]), _max_abs(stress[3:])),
        max_force=float(np.linalg.norm(forces, axis=1).max()),
        energy=float(atoms.get_potential_energy()),
        volume_initial=volume_initial,
        volume_final=float(atoms.get_volume()),
        symprec_tests=symprec_tests,
    )


def unrelaxed_record(atoms: Atoms, symprec: float) -> dict[str, Any]:
    """The relax record of a structure whose relaxation raised: its own space group, no
    relaxed one, no steps (the failure itself is the record's status)."""
    return {
        "initial_space_group_number": spacegroup_number(atoms, symprec),
        "relaxed_space_group_number": None,
        "broken_symmetry": False,
        "reached_max_steps": False,
        "steps": [],
    }
