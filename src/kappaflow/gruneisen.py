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
* cross-checks (γ from fc3, phonopy's QHA α_V) are in :mod:`kappaflow.gruneisen_checks`.
* :func:`compute_gruneisen`: all of the above for one material, with the gates, as a
  :class:`GruneisenResult` (the step only reads inputs and writes it).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from phonopy import Phonopy
from phonopy.physical_units import get_physical_units

from kappaflow.gates import gate
from kappaflow.grid import gamma_acoustic_mask, temperature_index
from kappaflow.phonons import compute_forces, has_imaginary_modes, to_phonopy_atoms
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings
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
        return gamma_acoustic_mask(self.qpoints, self.frequencies.shape)


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


def melting_point_for(
    name: str, table: Any, overrides: dict[str, float] | None = None
) -> float | None:
    """Known melting point (K) of a compound by formula: config overrides, then the table
    (a DataFrame with columns formula, T_melt_K)."""
    if overrides and name in overrides and overrides[name] is not None:
        return float(overrides[name])
    if table is None or "formula" not in table.columns:
        return None
    hit = table.loc[table["formula"] == name, "T_melt_K"]
    return float(hit.iloc[0]) if len(hit) and np.isfinite(hit.iloc[0]) else None


def strain_key(strain: float) -> str:
    """Key of one volume in the records: ``+0.0100``."""
    return f"{strain:+.4f}"


@dataclass
class GruneisenResult:
    """γ, K_T and α_V(T) of one material, with the gates (PROTOCOL §7)."""

    status: str
    mesh: GruneisenMesh
    temperatures: list[float]
    volumes: dict[str, dict[str, Any]]
    imaginary_freqs_volumes: dict[str, bool]
    broken_symmetry_volumes: dict[str, bool]
    broken_symmetry: bool
    relaxed_space_group_number: int | None
    heat_capacity: np.ndarray  # (T, q, s) J/(K mol)
    mode_gamma: np.ndarray  # (T, q, s)
    gamma_T: np.ndarray  # (T,)
    heat_capacity_total: np.ndarray  # (T,)
    gamma: float  # at the scoring temperature
    volume_primitive_A3: float
    alpha_V: np.ndarray  # (T,) 1/K
    alpha_linear: np.ndarray  # (T,) alpha_V / 3 for cubic cells, else NaN
    cubic: bool
    eos: EOSFit | None = None
    eos_error: str | None = None
    timing_s: dict[str, float] = field(default_factory=dict)

    @property
    def bulk_modulus_GPa(self) -> float | None:
        return None if self.eos is None else self.eos.bulk_modulus_GPa


def _volume_record(res: Any, strain: float, initial_spg: int | None) -> dict[str, Any]:
    return {
        "strain": strain,
        "volume": float(res.atoms.get_volume()),
        "energy": res.energy,
        "relaxed_space_group_number": res.relaxed_space_group_number,
        "broken_symmetry": res.relaxed_space_group_number != initial_spg,
        "reached_max_steps": res.reached_max_steps,
        "steps": res.steps,
        "max_force": res.max_force,
    }


def compute_gruneisen(
    atoms: Atoms,
    material: MaterialSpec,
    fc2: np.ndarray,
    calc: Calculator,
    *,
    relax: dict[str, Any],
    settings: GruneisenSettings,
    relax_settings: RelaxSettings,
    phono3py_settings: Phono3pySettings,
    volumes: dict[str, dict[str, Any]] | None = None,
) -> GruneisenResult:
    """Mode γ at V0 from V0(1 ± strain), γ(T), K_T from E(V) and α_V(T) (PROTOCOL §7).

    ``atoms`` and ``fc2`` are the κ workflow's relaxed origin (``relax``: its relax record);
    the other volumes are scaled isotropically and relaxed at constant volume (two-stage),
    their fc2 from the same displacement protocol. The gates (imaginary modes at the
    origin; broken symmetry per ``settings.symmetry_check``) set ``status`` while γ is still
    computed (gamma_SRME prints γ for failed materials and scores SRME 2). An EOS fit that
    fails leaves γ valid (K_T and α NaN, ``eos_error``). Relax/fc2 exceptions propagate;
    the volumes relaxed so far are in ``volumes`` (pass a dict to keep them).
    """
    from kappaflow.relax import relax_structure

    volumes = {} if volumes is None else volumes
    timing: dict[str, float] = {}
    symprec = phono3py_settings.symprec
    strain = settings.volume_strain
    initial_spg = relax["initial_space_group_number"]
    temps = list(settings.temperatures)
    origin = phonopy_with_fc2(atoms, material, fc2, symprec)
    origin_atoms = atoms.copy()
    origin_atoms.calc = calc
    volumes[strain_key(0.0)] = {
        "strain": 0.0,
        "volume": float(origin_atoms.get_volume()),
        "energy": float(origin_atoms.get_potential_energy()),
        "relaxed_space_group_number": relax["relaxed_space_group_number"],
        "broken_symmetry": bool(relax["broken_symmetry"]),
    }
    structures: dict[float, Atoms] = {}
    t0 = time.perf_counter()
    for s in sorted(set(settings.eos_strains) | {strain, -strain}):
        if s == 0.0:
            continue
        res = relax_structure(scale_volume(atoms, s), calc, relax_settings, True)
        structures[s] = res.atoms
        volumes[strain_key(s)] = _volume_record(res, s, initial_spg)
    timing["constant_volume_relax"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = phono3py_settings.displacement
    plus, _ = harmonic_phonopy(structures[strain], material, calc, d, symprec)
    minus, _ = harmonic_phonopy(structures[-strain], material, calc, d, symprec)
    timing["fc2_plus_minus"] = time.perf_counter() - t0
    gm = mode_gruneisen(origin, plus, minus, list(phono3py_settings.mesh_for(material)))

    threshold = phono3py_settings.frequency_threshold
    imaginary = {
        "origin": has_imaginary_modes(gm.frequencies, threshold),
        "plus": has_imaginary_modes(gm.frequencies_plus, threshold),
        "minus": has_imaginary_modes(gm.frequencies_minus, threshold),
    }
    keys = {"origin": 0.0, "plus": strain, "minus": -strain}
    broken = {k: bool(volumes[strain_key(v)]["broken_symmetry"]) for k, v in keys.items()}
    checked = "minus" if settings.symmetry_check == "minus" else "origin"
    broken_symmetry = broken["minus"] if checked == "minus" else any(broken.values())

    cv = mode_heat_capacity(
        gm.frequencies, gm.weights, temps, gm.gamma_mask, settings.frequency_cutoff
    )
    mode_gamma, gamma_t = weighted_gamma(cv, gm.gamma)
    i_score = temperature_index(temps, settings.score_temperature)
    v_prim = float(origin.primitive.volume)
    fit, eos_error = None, None
    alpha_v = np.full(len(temps), np.nan)
    try:
        pts = sorted(volumes.values(), key=lambda p: p["strain"])
        fit = fit_eos(
            [p["volume"] for p in pts], [p["energy"] for p in pts], len(atoms), settings.eos
        )
        alpha_v = thermal_expansion(cv, gm.gamma, fit.bulk_modulus_GPa * 1e9, v_prim)
    except Exception as exc:  # γ stays valid; K_T and α are NaN
        eos_error = f"{type(exc).__name__}: {exc}"
    cubic = is_cubic(material.spacegroup)
    return GruneisenResult(
        status=gate(imaginary["origin"], broken_symmetry).status,
        mesh=gm,
        temperatures=temps,
        volumes=volumes,
        imaginary_freqs_volumes=imaginary,
        broken_symmetry_volumes=broken,
        broken_symmetry=bool(broken_symmetry),
        relaxed_space_group_number=volumes[strain_key(keys[checked])]["relaxed_space_group_number"],
        heat_capacity=cv,
        mode_gamma=mode_gamma,
        gamma_T=gamma_t,
        heat_capacity_total=heat_capacity_total(cv),
        gamma=float(gamma_t[i_score]),
        volume_primitive_A3=v_prim,
        alpha_V=alpha_v,
        alpha_linear=alpha_v / 3.0 if cubic else np.full(len(temps), np.nan),
        cubic=cubic,
        eos=fit,
        eos_error=eos_error,
        timing_s=timing,
    )


def reference_mode_gamma(ref_row: Any, temperature: float, cutoff: float) -> np.ndarray:
    """Heat-capacity-weighted mode γ of a mode-resolved DFT reference row (gamma_SRME
    layout: q_points, weights, frequencies, gruneisen)."""
    freqs = np.asarray(ref_row["frequencies"], dtype=float)
    exclude = gamma_acoustic_mask(ref_row["q_points"], freqs.shape)
    cv = mode_heat_capacity(freqs, ref_row["weights"], [temperature], exclude, cutoff)
    mode, _ = weighted_gamma(cv, ref_row["gruneisen"])
    return mode[0]
