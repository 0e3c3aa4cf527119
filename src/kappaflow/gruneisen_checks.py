"""Cross-checks of the finite-volume Grüneisen parameters (PROTOCOL §7): the same mode γ
from third-order force constants (phono3py's ``Gruneisen``), and phonopy's quasi-harmonic
α_V(T). Neither enters the scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from kappaflow.grid import gamma_acoustic_mask
from kappaflow.gruneisen import (
    FREQ_CUTOFF,
    harmonic_phonopy,
    mode_heat_capacity,
    scale_volume,
    weighted_gamma,
)
from kappaflow.phonons import to_phonopy_atoms
from kappaflow.settings import GruneisenSettings, Phono3pySettings
from kappaflow.structures import MaterialSpec


def fc3_mode_gruneisen(
    atoms: Atoms,
    material: MaterialSpec,
    fc3_forces: np.ndarray,
    mesh: Sequence[int],
    displacement: float = 0.03,
    symprec: float = 1e-5,
) -> dict[str, np.ndarray]:
    """Mode γ from fc3 (phono3py ``Gruneisen``) with fc2 on the SAME (fc3) supercell.

    fc2 and fc3 both come from the fc3 displacement set (phono3py without a separate
    phonon supercell), so they share the supercell as phono3py's Grüneisen requires.
    Returns qpoints, weights, frequencies, gamma (trace/3 of the mode tensor).
    """
    from phono3py import Phono3py
    from phono3py.phonon3.gruneisen import Gruneisen

    ph3 = Phono3py(
        to_phonopy_atoms(atoms),
        supercell_matrix=list(material.fc3_supercell),
        primitive_matrix="auto",
        symprec=symprec,
    )
    ph3.generate_displacements(distance=displacement)
    n_expected = len(ph3.supercells_with_displacements)
    if len(fc3_forces) != n_expected:
        raise ValueError(
            f"fc3 force set has {len(fc3_forces)} supercells, the displacement set "
            f"{n_expected}: not the forces of this structure"
        )
    ph3.forces = np.asarray(fc3_forces)
    ph3.produce_fc3()
    ph3.symmetrize_fc3()
    ph3.symmetrize_fc2()
    gr = Gruneisen(ph3.fc2, ph3.fc3, ph3.supercell, ph3.primitive, symprec=symprec)
    gr.set_sampling_mesh(list(mesh), primitive_symmetry=ph3.primitive_symmetry)
    gr.run()
    tensors = np.asarray(gr.gruneisen_parameters, dtype=float)  # (nq, nb, 3, 3)
    return {
        "qpoints": np.asarray(gr._qpoints, dtype=float),
        "weights": np.asarray(gr._weights, dtype=float),
        "frequencies": np.asarray(gr.frequencies, dtype=float),
        "gamma": np.trace(tensors, axis1=2, axis2=3) / 3.0,
    }


def fc3_check_gamma(
    atoms: Atoms,
    material: MaterialSpec,
    fc3_forces: np.ndarray,
    settings: GruneisenSettings,
    phono3py_settings: Phono3pySettings,
) -> tuple[float, int]:
    """γ at the scoring temperature from fc3 (fc2 on the fc3 supercell), weighted like the
    finite-volume γ; and the number of q-points. A cross-check of :func:`mode_gruneisen`."""
    res = fc3_mode_gruneisen(
        atoms,
        material,
        fc3_forces,
        list(phono3py_settings.mesh_for(material)),
        phono3py_settings.displacement,
        phono3py_settings.symprec,
    )
    exclude = gamma_acoustic_mask(res["qpoints"], res["frequencies"].shape)
    cv = mode_heat_capacity(
        res["frequencies"], res["weights"], [settings.score_temperature], exclude,
        settings.frequency_cutoff,
    )  # fmt: skip
    _, g = weighted_gamma(cv, res["gamma"])
    return float(g[0]), len(res["qpoints"])


def qha_thermal_expansion(
    atoms: Atoms,
    material: MaterialSpec,
    calc: Calculator,
    strains: Sequence[float],
    temperatures: Sequence[float],
    mesh: Sequence[int],
    eos: str = "vinet",
    displacement: float = 0.03,
    symprec: float = 1e-5,
    relax_settings: Any = None,
) -> np.ndarray:
    """α_V(T) (1/K) from phonopy's quasi-harmonic approximation, for cross-checks.

    At each V0(1 + strain) (constant-volume relaxed, as the E(V) points), fc2 and the
    harmonic free energy; phonopy's ``PhonopyQHA`` minimises F(V, T) and differentiates
    V(T). Per primitive cell. Grüneisen-relation α_V and QHA agree at low T and part as
    the volume grows with T (QHA includes it; the Grüneisen relation is at V0).
    """
    from phonopy import PhonopyQHA

    from kappaflow.relax import relax_structure

    grid = np.arange(0.0, max(temperatures) + 60.0, 10.0)
    vols, energies, fe, cv, ent = [], [], [], [], []
    for strain in sorted(strains):
        if strain == 0.0:
            cell = atoms.copy()
        else:
            scaled = scale_volume(atoms, strain)
            cell = relax_structure(scaled, calc, relax_settings, constant_volume=True).atoms
        phonon, _ = harmonic_phonopy(cell, material, calc, displacement, symprec)
        phonon.run_mesh(list(mesh))
        phonon.run_thermal_properties(temperatures=grid, cutoff_frequency=FREQ_CUTOFF)
        tp = phonon.get_thermal_properties_dict()
        ratio = len(phonon.primitive) / len(cell)
        cell.calc = calc
        energies.append(cell.get_potential_energy() * ratio)
        vols.append(phonon.primitive.volume)
        fe.append(tp["free_energy"])
        cv.append(tp["heat_capacity"])
        ent.append(tp["entropy"])
    qha = PhonopyQHA(
        volumes=vols,
        electronic_energies=energies,
        temperatures=grid,
        free_energy=np.array(fe).T,
        cv=np.array(cv).T,
        entropy=np.array(ent).T,
        eos=eos.replace("birchmurnaghan", "birch_murnaghan"),
        t_max=float(max(temperatures)) + 20.0,
    )
    alpha = np.asarray(qha.thermal_expansion)
    return np.interp(np.asarray(temperatures, dtype=float), grid[: len(alpha)], alpha)
