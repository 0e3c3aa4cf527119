"""Finite displacements, forces, fc2/fc3 and the gates (PROTOCOL §4-§5).

Import note: phono3py's thread pools read ``OMP_NUM_THREADS``/``RAYON_NUM_THREADS``
at first use; call :func:`kappaflow.runtime.configure_threads` before this module
does any work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from phono3py import Phono3py
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from kappaflow.settings import Phono3pySettings
from kappaflow.structures import MaterialSpec

# We always pass primitive_matrix="auto" explicitly (PROTOCOL §10); phonopy 4 still warns.
warnings.filterwarnings("ignore", message=r"(?s).*primitive_matrix defaulted")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="phono3py")

#: k_SRME FREQUENCY_THRESHOLD (THz) for the 3 acoustic modes at Γ.
FREQUENCY_THRESHOLD = -1e-2


class NonFiniteForcesError(FloatingPointError):
    """The model returned NaN/inf forces: recorded as a failure of the material, not a crash."""


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
        ph3.generate_displacements(distance=settings.displacement)
    ph3.mesh_numbers = list(settings.mesh or material.q_mesh)
    return ph3


def compute_forces(
    supercells: Sequence[PhonopyAtoms | None],
    calc: Calculator,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Forces (n, n_atoms, 3) in eV/Å, one supercell at a time (None -> zeros, as phono3py)."""
    n_atoms = next(len(sc) for sc in supercells if sc is not None)
    out = np.zeros((len(supercells), n_atoms, 3))
    for i, sc in enumerate(supercells):
        if sc is None:
            continue
        at = to_ase_atoms(sc)
        at.calc = calc
        out[i] = at.get_forces()
        if progress is not None:
            progress(i + 1, len(supercells))
    if not np.all(np.isfinite(out)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(out))[:, 0]})
        raise NonFiniteForcesError(
            f"model returned non-finite forces on displaced supercell(s) {bad[:10]}"
        )
    return out


def fc2_from_forces(ph3: Phono3py, forces: np.ndarray) -> np.ndarray:
    """Symmetrised fc2 (compact) on the fc2 supercell."""
    ph3.phonon_forces = np.asarray(forces)
    ph3.produce_fc2()
    ph3.symmetrize_fc2()
    return ph3.fc2


def fc3_from_forces(ph3: Phono3py, forces: np.ndarray) -> np.ndarray:
    """Symmetrised fc3 (compact) on the fc3 supercell (traditional finite differences)."""
    ph3.forces = np.asarray(forces)
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
    phonon.run_mesh(
        list(settings.mesh or material.q_mesh), is_gamma_center=True, is_mesh_symmetry=False
    )
    return np.asarray(phonon.mesh.frequencies)


def has_imaginary_modes(frequencies: np.ndarray, threshold: float = FREQUENCY_THRESHOLD) -> bool:
    """k_SRME ``check_imaginary_freqs``: Γ optical < 0, Γ acoustic < threshold, other q < 0."""
    freqs = np.asarray(frequencies, dtype=float)
    if freqs.size == 0 or np.all(np.isnan(freqs)):
        return True
    if np.any(freqs[0, 3:] < 0) or np.any(freqs[0, :3] < threshold):
        return True
    return bool(np.any(freqs[1:] < 0))


@dataclass(frozen=True)
class Gate:
    """Whether fc3 and κ are computed, and why not."""

    status: str  # "ok", "imaginary_modes", "broken_symmetry"
    imaginary_freqs: bool
    broken_symmetry: bool

    @property
    def open(self) -> bool:
        return self.status == "ok"


def conductivity_gate(
    imaginary: bool, broken_symmetry: bool, allow_broken_symmetry: bool = False
) -> Gate:
    """k_SRME order: imaginary modes first, then broken symmetry (unless allowed)."""
    if imaginary:
        status = "imaginary_modes"
    elif broken_symmetry and not allow_broken_symmetry:
        status = "broken_symmetry"
    else:
        status = "ok"
    return Gate(
        status=status, imaginary_freqs=bool(imaginary), broken_symmetry=bool(broken_symmetry)
    )


def displacement_counts(ph3: Phono3py) -> dict[str, Any]:
    return {
        "n_fc2_supercells": len(ph3.phonon_supercells_with_displacements),
        "n_fc3_supercells": len(ph3.supercells_with_displacements),
        "fc2_supercell_atoms": len(ph3.phonon_supercell),
        "fc3_supercell_atoms": len(ph3.supercell),
    }
