"""Grüneisen parameters, bulk modulus and thermal expansion (PROTOCOL §7, gamma_SRME).

Pure physics on ASE/phonopy objects; no file I/O. The pieces:

* :func:`scale_volume`: isotropic scaling of cell and atoms to V0(1 + strain).
* :func:`harmonic_phonopy`: fc2 by finite displacements on the dataset's fc2 supercell.
* :func:`mode_gruneisen`: phonopy's ``PhonopyGruneisen`` (central difference of the
  dynamical matrix between V0(1 ± strain)) on the dataset's q-mesh, exactly as gamma_SRME
  calls it (irreducible mesh, phonopy defaults).
* :func:`mode_heat_capacity` and :func:`weighted_gamma`: c_qs(T) in J/(K·mol) and the
  heat-capacity-weighted average γ(T); the three Γ acoustic modes and modes below the
  cutoff (1e-3 THz) get zero weight.
* :func:`fit_eos`: K_T from E(V) (phonopy's EOS functions), with the fit quality.
* :func:`thermal_expansion`: α_V(T) = Σ c_qs(T) γ_qs / (K_T V_m), V_m = V_prim N_A.
* :func:`fc3_mode_gruneisen`: the same mode γ from third-order force constants
  (phono3py's ``Gruneisen``), used as a cross-check.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from phonopy import Phonopy
from phonopy.physical_units import get_physical_units

from kappaflow.phonons import compute_forces, to_phonopy_atoms
from kappaflow.structures import MaterialSpec

warnings.filterwarnings("ignore", message=r"(?s).*primitive_matrix defaulted")

#: gamma_SRME FREQ_CUTOFF (THz): modes below get zero heat capacity
FREQ_CUTOFF = 1e-3
AVOGADRO = 6.02214076e23
EV_PER_A3_IN_PA = 1.602176634e-19 / 1e-30
#: cubic space groups (195-230): linear α = α_V / 3
CUBIC_SPACEGROUPS = range(195, 231)


def scale_volume(atoms: Atoms, strain: float) -> Atoms:
    """A copy with cell and atoms scaled isotropically to V0 (1 + strain)."""
    out = atoms.copy()
    out.calc = None
    out.set_constraint()
    out.set_cell(np.asarray(atoms.cell[:]) * (1.0 + strain) ** (1.0 / 3.0), scale_atoms=True)
    return out


def phonopy_for(atoms: Atoms, material: MaterialSpec, symprec: float) -> Phonopy:
    """Phonopy on the dataset's fc2 supercell, primitive 'auto' (gamma_SRME ``init_phonopy``)."""
    return Phonopy(
        to_phonopy_atoms(atoms),
        supercell_matrix=list(material.fc2_supercell),
        primitive_matrix="auto",
        symprec=symprec,
    )


def harmonic_phonopy(
    atoms: Atoms,
    material: MaterialSpec,
    calc: Calculator,
    displacement: float = 0.03,
    symprec: float = 1e-5,
) -> tuple[Phonopy, np.ndarray]:
    """(phonopy with symmetrised fc2, forces) by finite displacements of ``displacement`` Å."""
    phonon = phonopy_for(atoms, material, symprec)
    phonon.generate_displacements(distance=displacement)
    forces = compute_forces(phonon.supercells_with_displacements, calc)
    phonon.forces = forces
    phonon.produce_force_constants(show_drift=False)
    phonon.symmetrize_force_constants(show_drift=False)
    return phonon, forces


def phonopy_with_fc2(
    atoms: Atoms, material: MaterialSpec, fc2: np.ndarray, symprec: float = 1e-5
) -> Phonopy:
    """Phonopy on the fc2 supercell with given (compact or full) force constants."""
    phonon = phonopy_for(atoms, material, symprec)
    phonon.force_constants = fc2
    return phonon


@dataclass
class GruneisenMesh:
    """Mode Grüneisen parameters on the irreducible q-mesh (gamma_SRME's ``grun_dict``)."""

    mesh: tuple[int, int, int]
    qpoints: np.ndarray  # (nq, 3) reduced
    weights: np.ndarray  # (nq,) multiplicities
    frequencies: np.ndarray  # (nq, nb) THz, origin
    gamma: np.ndarray  # (nq, nb) mode γ
    frequencies_plus: np.ndarray
    frequencies_minus: np.ndarray

    @property
    def gamma_mask(self) -> np.ndarray:
        """True for the Γ acoustic modes (three lowest bands at q = Γ)."""
        mask = np.zeros(self.frequencies.shape, dtype=bool)
        at_gamma = np.all(np.abs(self.qpoints - np.rint(self.qpoints)) < 1e-8, axis=1)
        mask[at_gamma, :3] = True
        return mask


def _mesh_frequencies(phonon: Phonopy, mesh: Sequence[int]) -> np.ndarray:
    phonon.run_mesh(list(mesh), with_eigenvectors=False)
    return np.asarray(phonon.mesh.frequencies)


def mode_gruneisen(
    origin: Phonopy, plus: Phonopy, minus: Phonopy, mesh: Sequence[int]
) -> GruneisenMesh:
    """phonopy's ``PhonopyGruneisen`` on ``mesh`` (defaults as gamma_SRME: irreducible points).

    δ strain is phonopy's default, (V_plus − V_minus)/V_origin.
    """
    from phonopy.api_gruneisen import PhonopyGruneisen

    gr = PhonopyGruneisen(origin, plus, minus)
    gr.set_mesh(list(mesh))
    result = gr.get_mesh()
    if result is None:  # phonopy returns None when a dynamical matrix is missing
        raise RuntimeError("phonopy's Grüneisen mesh was not computed (dynamical matrix missing)")
    qpoints, weights, frequencies, _eigvecs, gamma = result
    return GruneisenMesh(
        mesh=tuple(int(m) for m in mesh),
        qpoints=np.asarray(qpoints, dtype=float),
        weights=np.asarray(weights, dtype=float),
        frequencies=np.asarray(frequencies, dtype=float),
        gamma=np.asarray(gamma, dtype=float),
        frequencies_plus=_mesh_frequencies(plus, mesh),
        frequencies_minus=_mesh_frequencies(minus, mesh),
    )


def mode_heat_capacity(
    frequencies: np.ndarray,
    weights: np.ndarray,
    temperatures: Sequence[float],
    exclude: np.ndarray | None = None,
    cutoff: float = FREQ_CUTOFF,
) -> np.ndarray:
    """c_qs(T) = C_mode(ω_qs, T) w_q / Σ w_q in J/(K·mol) (per mole of primitive cells).

    Shape (nT, nq, nb). Modes with ω < ``cutoff`` THz (imaginary ones included) and the
    ``exclude`` mask (the Γ acoustic modes) get c = 0, as gamma_SRME ``calculate_mode_cv``.
    """
    units = get_physical_units()
    freqs = np.asarray(frequencies, dtype=float)
    w = np.asarray(weights, dtype=float)
    temps = np.asarray(temperatures, dtype=float)
    keep = freqs >= cutoff
    if exclude is not None:
        keep &= ~np.asarray(exclude, dtype=bool)
    energy = np.where(keep, freqs, 1.0) * units.THzToEv  # eV, placeholder 1 THz where dropped
    x = energy[None] / (units.KB * temps[:, None, None])
    with np.errstate(over="ignore"):
        em = np.exp(-x)
        cv = units.KB * x**2 * em / (1.0 - em) ** 2  # eV/K per mode
    cv = cv * units.EvTokJmol * 1000.0 * (w / w.sum())[None, :, None]
    return np.where(keep[None], cv, 0.0)


def weighted_gamma(cv: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mode_gamma (nT, nq, nb), γ(T) (nT,)): mode_gamma = c_qs γ_qs / Σ c_qs, γ = Σ mode_gamma.

    Modes with c = 0 (Γ acoustic, ω < cutoff) contribute exactly zero, whatever their γ
    (phonopy gives NaN/inf at Γ acoustic).
    """
    cv = np.asarray(cv, dtype=float)
    g = np.asarray(gamma, dtype=float)[None]
    total = cv.sum(axis=(1, 2), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mode = np.where(cv > 0, cv * np.where(np.isfinite(g), g, 0.0), 0.0) / total
    mode = np.where(np.isfinite(mode), mode, np.nan)
    return mode, mode.sum(axis=(1, 2))


def heat_capacity_total(cv: np.ndarray) -> np.ndarray:
    """Σ_qs c_qs(T) in J/(K·mol) (primitive cell; Γ acoustic excluded)."""
    return np.asarray(cv).sum(axis=(1, 2))


@dataclass
class EOSFit:
    """E(V) fit (per simulation cell): K_T = B0 at V0, and how well the points fit."""

    eos: str
    volumes: list[float]  # Å^3
    energies: list[float]  # eV
    n_atoms: int
    E0: float
    B0_eV_per_A3: float
    B0_prime: float
    V0: float
    bulk_modulus_GPa: float
    rms_residual_meV_per_atom: float
    max_residual_meV_per_atom: float

    def record(self) -> dict[str, Any]:
        return asdict(self)


def fit_eos(
    volumes: Sequence[float], energies: Sequence[float], n_atoms: int, eos: str = "vinet"
) -> EOSFit:
    """Fit E(V) with phonopy's ``eos`` (vinet, birch_murnaghan, murnaghan)."""
    from phonopy.qha.eos import fit_to_eos, get_eos

    name = {"birchmurnaghan": "birch_murnaghan"}.get(eos, eos)
    v = np.asarray(volumes, dtype=float)
    e = np.asarray(energies, dtype=float)
    if len(v) < 4 or not (np.all(np.isfinite(v)) and np.all(np.isfinite(e))):
        raise ValueError(f"EOS fit needs >= 4 finite (V, E) points, got {len(v)}")
    func = get_eos(name)
    params = np.asarray(fit_to_eos(v, e, func), dtype=float)
    if params is None or not np.all(np.isfinite(params)):
        raise RuntimeError(f"{eos} EOS fit did not converge")
    E0, B0, Bp, V0 = (float(p) for p in params)
    resid = (e - func(v, params)) / n_atoms * 1000.0
    return EOSFit(
        eos=eos,
        volumes=v.tolist(),
        energies=e.tolist(),
        n_atoms=int(n_atoms),
        E0=E0,
        B0_eV_per_A3=B0,
        B0_prime=Bp,
        V0=V0,
        bulk_modulus_GPa=B0 * EV_PER_A3_IN_PA / 1e9,
        rms_residual_meV_per_atom=float(np.sqrt(np.mean(resid**2))),
        max_residual_meV_per_atom=float(np.max(np.abs(resid))),
    )


def thermal_expansion(
    cv: np.ndarray, gamma: np.ndarray, bulk_modulus_pa: float, v_prim_A3: float
) -> np.ndarray:
    """α_V(T) in 1/K: Σ_qs c_qs(T) γ_qs / (K_T V_m), V_m = V_prim N_A (PROTOCOL §7).

    ``cv`` in J/(K·mol) per mole of PRIMITIVE cells (the mesh of the primitive cell),
    ``v_prim_A3`` the primitive-cell volume in Å^3 (the rs/zb frames are conventional
    cells of 4 primitive cells), ``bulk_modulus_pa`` in Pa.
    """
    cv = np.asarray(cv, dtype=float)
    g = np.asarray(gamma, dtype=float)[None]
    num = np.where(cv > 0, cv * np.where(np.isfinite(g), g, 0.0), 0.0).sum(axis=(1, 2))
    v_m = v_prim_A3 * 1e-30 * AVOGADRO
    return num / (bulk_modulus_pa * v_m)


def is_cubic(spacegroup: int | None) -> bool:
    return spacegroup is not None and int(spacegroup) in CUBIC_SPACEGROUPS


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
