"""Finite displacements, forces, fc2/fc3 and the gates (PROTOCOL §4-§5).

Import note: phono3py's thread pools read ``OMP_NUM_THREADS``/``RAYON_NUM_THREADS``
at first use; call :func:`kappaflow.runtime.configure_threads` before this module
does any work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from phono3py import Phono3py
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from kappaflow.forces import ForceRun, ForceSettings, evaluate_forces
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import MaterialSpec

# We always pass primitive_matrix="auto" explicitly (PROTOCOL §10); phonopy 4 still warns.
warnings.filterwarnings("ignore", message=r"(?s).*primitive_matrix defaulted")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="phono3py")

#: k_SRME FREQUENCY_THRESHOLD (THz) for the 3 acoustic modes at Γ.
FREQUENCY_THRESHOLD = -1e-2
#: eV/Å; a displaced supercell whose forces are all below this feels nothing (a 0.03 Å
#: displacement in a solid gives 1e-2-1 eV/Å)
ZERO_FORCE = 1e-8
#: THz; phonons all below this (besides the Γ acoustic modes) are no phonons
ZERO_FREQUENCY = 1e-3
#: eV/Å³; fc3 all below this is no anharmonicity (nearest-neighbour fc3 of solids: 1-100)
ZERO_FC3 = 1e-6


def to_phonopy_atoms(atoms: Atoms) -> PhonopyAtoms:
    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.asarray(atoms.cell[:]),
        scaled_positions=atoms.get_scaled_positions(wrap=False),
    )


def to_ase_atoms(cell: PhonopyAtoms) -> Atoms:
    return Atoms(
        symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
    )


def init_phono3py(
    atoms: Atoms, material: MaterialSpec, settings: Phono3pySettings, displace: bool = True
) -> Phono3py:
    """Phono3py object on the dataset's supercells, primitive 'auto', with displacements."""
    ph3 = Phono3py(
        to_phonopy_atoms(atoms),
        supercell_matrix=list(material.fc3_supercell),
        phonon_supercell_matrix=list(material.fc2_supercell),
        primitive_matrix="auto",
        symprec=settings.symprec,
        lang=settings.backend,
    )
    if displace:
        if settings.fc3_random_displacements is not None:  # opt-in deviation (symfc fit)
            ph3.generate_displacements(
                distance=settings.displacement,
                number_of_snapshots=settings.fc3_random_displacements,
                random_seed=settings.random_seed,
            )
        else:  # PROTOCOL §4; the pair cutoff is an opt-in deviation (None by default)
            ph3.generate_displacements(
                distance=settings.displacement,
                cutoff_pair_distance=settings.fc3_cutoff_pair_distance,
            )
    ph3.mesh_numbers = list(settings.mesh_for(material))
    return ph3


def force_run(
    supercells: Sequence[PhonopyAtoms | None],
    model: Any,
    settings: ForceSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ForceRun:
    """Forces (n, n_atoms, 3) in eV/Å on phono3py's supercells (None -> zeros, as phono3py)
    and the record of how they were evaluated. ``model`` is a
    :class:`~kappaflow.calculators.LoadedModel` (serial or batched path, chosen by
    :func:`kappaflow.forces.choose_path`) or a bare ASE calculator (serial loop)."""
    structures = [None if sc is None else to_ase_atoms(sc) for sc in supercells]
    if hasattr(model, "calculator") and hasattr(model, "info"):
        return evaluate_forces(
            structures,
            model.calculator,
            getattr(model, "batch_forces", None),
            settings,
            device=str(model.info.get("device", "cpu")),
            family=str(model.info.get("family", "")),
            progress=progress,
        )
    return evaluate_forces(structures, model, None, settings, progress=progress)


def compute_forces(
    supercells: Sequence[PhonopyAtoms | None],
    model: Any,
    settings: ForceSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Forces only, see :func:`force_run`."""
    return force_run(supercells, model, settings, progress).forces


def fc2_from_forces(ph3: Phono3py, forces: np.ndarray) -> np.ndarray:
    """Symmetrised fc2 (compact) on the fc2 supercell."""
    ph3.phonon_forces = np.asarray(forces)
    ph3.produce_fc2()
    ph3.symmetrize_fc2()
    return ph3.fc2


def fc3_from_forces(
    ph3: Phono3py, forces: np.ndarray, settings: Phono3pySettings | None = None
) -> np.ndarray:
    """Symmetrised fc3 (compact) on the fc3 supercell: traditional finite differences
    (PROTOCOL §4), or a symfc fit when ``settings`` asks for random displacements."""
    ph3.forces = np.asarray(forces)
    if settings is not None and settings.fc3_random_displacements is not None:
        # symfc imposes the space-group symmetry and sum rules in the fit itself
        ph3.produce_fc3(fc_calculator="symfc")
        return ph3.fc3
    ph3.produce_fc3()
    ph3.symmetrize_fc3()
    return ph3.fc3


def grid_frequencies(
    atoms: Atoms, material: MaterialSpec, fc2: np.ndarray, settings: Phono3pySettings
) -> np.ndarray:
    """Harmonic frequencies (THz) on the full Γ-centred mesh; row 0 is Γ."""
    phonon = Phonopy(
        to_phonopy_atoms(atoms),
        supercell_matrix=list(material.fc2_supercell),
        primitive_matrix="auto",
        symprec=settings.symprec,
    )
    phonon.force_constants = fc2
    phonon.run_mesh(list(settings.mesh_for(material)), is_gamma_center=True, is_mesh_symmetry=False)
    return np.asarray(phonon.mesh.frequencies)


def has_imaginary_modes(frequencies: np.ndarray, threshold: float = FREQUENCY_THRESHOLD) -> bool:
    """k_SRME ``check_imaginary_freqs``: Γ optical < 0, Γ acoustic < threshold, other q < 0."""
    freqs = np.asarray(frequencies, dtype=float)
    if freqs.size == 0 or np.all(np.isnan(freqs)):
        return True
    if np.any(freqs[0, 3:] < 0) or np.any(freqs[0, :3] < threshold):
        return True
    return bool(np.any(freqs[1:] < 0))


def zero_force_supercells(
    supercells: Sequence[PhonopyAtoms | None], forces: np.ndarray, tol: float = ZERO_FORCE
) -> list[int]:
    """Indices of the displaced supercells (None, skipped by a pair cutoff, excluded)
    whose forces are all zero: the displaced atom feels no restoring force."""
    f = np.abs(np.asarray(forces, dtype=float)).reshape(len(supercells), -1)
    return [i for i, sc in enumerate(supercells) if sc is not None and f[i].max() < tol]


def sum_rule_violation(forces: np.ndarray) -> float:
    """The acoustic sum rule of the finite-difference fc2, from its forces: the largest net
    force Σ_i F_i on a displaced supercell over the largest force (Σ_i Φ_ij = −Σ_i F_i / u;
    zero for a model whose forces conserve momentum). NaN without forces."""
    f = np.asarray(forces, dtype=float)
    scale = float(np.max(np.abs(f))) if f.size else 0.0
    if not np.isfinite(scale) or scale == 0.0:
        return float("nan")
    return float(np.max(np.linalg.norm(f.sum(axis=1), axis=-1)) / scale)


def frequencies_all_zero(frequencies: np.ndarray, tol: float = ZERO_FREQUENCY) -> bool:
    """True when no mode besides the three acoustic modes at Γ (row 0) has |ω| >= ``tol``
    THz: an empty (or Γ-only, one-atom) set of phonons carries no heat."""
    freqs = np.asarray(frequencies, dtype=float)
    if freqs.ndim != 2 or freqs.size == 0:
        return False  # nothing computed: has_imaginary_modes closes the gate
    rest = np.concatenate([freqs[0, 3:], freqs[1:].ravel()])
    return bool(rest.size == 0 or np.nanmax(np.abs(rest)) < tol)


def fc3_vanishes(fc3: np.ndarray, tol: float = ZERO_FC3) -> bool:
    """True when every fc3 element is below ``tol`` eV/Å³ (a harmonic model)."""
    fc3 = np.asarray(fc3, dtype=float)
    return bool(fc3.size == 0 or np.nanmax(np.abs(fc3)) < tol)


def displacement_counts(ph3: Phono3py) -> dict[str, Any]:
    return {
        "n_fc2_supercells": len(ph3.phonon_supercells_with_displacements),
        "n_fc3_supercells": len(ph3.supercells_with_displacements),
        "fc2_supercell_atoms": len(ph3.phonon_supercell),
        "fc3_supercell_atoms": len(ph3.supercell),
    }
