"""Wigner transport equation in the RTA (populations + coherences), PROTOCOL §5-§6.

phono3py 4.10 is the engine (``transport_type="SMM19"``): phonons, heat capacities and the
ph-ph/isotope linewidths come from its run. The conductivity is then assembled in one of two
conventions (docs/protocol.md §14):

``"reference"`` (default)
    phono3py 3.x ``conductivity_type="wigner"``, the convention of the DFT reference and of
    every published model table: the velocity operator is the derivative of the square root
    of the dynamical matrix, V = ∂√D/∂q (Simoncelli, Marzari, Mauri), by phono3py 3.x's
    central finite differences, in the gauge of ``numpy.linalg.eigh``; band pairs closer
    than 1e-4 THz are populations (κ_P), the others coherences (κ_C).
``"phono3py4"``
    phono3py 4.10's own SMM19 band-pair matrix ``mode_kappa_matrix``, whose velocity matrix
    is Hardy's V_ss' = <s|∂D/∂q|s'> / (2 √(ω_s ω_s')); same κ_P, κ_C larger by the factor
    (ω_s + ω_s')² / (4 ω_s ω_s') pair by pair. A protocol deviation.

κ_P and κ_C are reported with degenerate band pairs as populations (the 3.x split) in both
conventions; per-mode κ_C is split between the two modes of a pair by the partner's heat
capacity (k_SRME, :func:`split_coherence`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from phono3py import Phono3py

from kappaflow.settings import KAPPA_CONVENTIONS, Phono3pySettings

TRANSPORT_TYPE = "SMM19"

#: κ conventions of :func:`compute_kappa`; "reference" is the protocol's
CONVENTIONS = KAPPA_CONVENTIONS
DEFAULT_CONVENTION = "reference"

#: phono3py 3.x ``VelocityOperator`` default finite-difference step |Δq| (1/Å, no 2π)
VELOCITY_OPERATOR_Q_LENGTH = 5e-6

#: Voigt order of phono3py: xx, yy, zz, yz, xz, xy
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def kappa_ave(tensor: np.ndarray) -> np.ndarray:
    """Directional average (xx+yy+zz)/3 over the last (Voigt) axis."""
    return np.asarray(tensor)[..., :3].mean(axis=-1)


def split_coherence(pair_kappa: np.ndarray, heat_capacity: np.ndarray) -> np.ndarray:
    """Per-mode κ_C from the band-pair matrix, k_SRME/autoWTE convention (PROTOCOL §6).

    κ^C_{q s} = 2 Σ_{s'} κ^C_{q s' s} · C_{q s'} / (C_{q s'} + C_{q s}),  0/0 -> 0:
    mode s receives each pair term weighted by its PARTNER's heat capacity.

    Parameters
    ----------
    pair_kappa : (..., q, s, s', 6) coherence pair terms (the diagonal is ignored).
    heat_capacity : (..., q, s) mode heat capacities.

    Returns
    -------
    (..., q, s, 6)
    """
    pair = np.array(pair_kappa, dtype=float, copy=True)
    n_band = pair.shape[-2]
    idx = np.arange(n_band)
    pair[..., idx, idx, :] = 0.0
    cv = np.asarray(heat_capacity, dtype=float)
    c_first = cv[..., :, None]  # C_{s1} (first band index, summed over)
    c_second = cv[..., None, :]  # C_{s2} (stored index)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = 2.0 * c_first / (c_first + c_second)
    terms = pair * weight[..., None]
    terms[~np.isfinite(terms)] = 0.0
    return terms.sum(axis=-3)


#: phono3py 3.x Wigner: band pairs closer than this (THz) count as degenerate (populations)
DEGENERACY_TOL_THZ = 1e-4


def split_mode_kappa(
    matrix: np.ndarray,
    frequencies: np.ndarray,
    heat_capacity: np.ndarray,
    degeneracy_tol: float = DEGENERACY_TOL_THZ,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode κ_P and κ_C from the band-pair matrix, phono3py 3.x / k_SRME convention.

    Pairs (s, s') with |ν_s − ν_s'| < ``degeneracy_tol`` (the diagonal and degenerate
    pairs) are populations: mode s gets ½(M_ss' + M_s's) of each. The other pairs are
    coherences, split by :func:`split_coherence` (partner heat capacity). Per-mode κ_TOT
    is the same for any degeneracy tolerance when M is symmetric, as in phono3py 4.10.

    Parameters
    ----------
    matrix : (T, q, s, s', 6) band-pair mode κ (phono3py 4 ``mode_kappa_matrix``, one sigma)
    frequencies : (q, s) THz
    heat_capacity : (T, q, s)

    Returns
    -------
    mode_p, mode_c : (T, q, s, 6) each
    """
    m = np.asarray(matrix, dtype=float)
    f = np.asarray(frequencies, dtype=float)
    deg = np.abs(f[:, :, None] - f[:, None, :]) < degeneracy_tol  # (q, s, s')
    deg |= np.eye(f.shape[-1], dtype=bool)[None]  # the diagonal is always populations
    sym = 0.5 * (m + np.swapaxes(m, -3, -2))
    mode_p = (sym * deg[None, :, :, :, None]).sum(axis=-2)
    mode_c = split_coherence(m * (~deg)[None, :, :, :, None], heat_capacity)
    return mode_p, mode_c


def sqrt_dynamical_matrix(dm: np.ndarray, zero_acoustic: bool) -> np.ndarray:
    """√D in Cartesian basis, as phono3py 3.x ``VelocityOperator._sqrt_dynamical_matrix``.

    D = U Λ U† (``numpy.linalg.eigh``); √D = U diag(√Λ) U†, the square root taken on the
    complex diagonal of U† D U (a negative eigenvalue gives an imaginary entry, as in 3.x).
    With ``zero_acoustic`` (a displaced point next to Γ) the three lowest eigenvectors are
    dropped: the acoustic branches ω ∝ |q| are not differentiable at Γ.
    """
    _, u = np.linalg.eigh(dm)
    if zero_acoustic:
        u[:, :3] = 0.0
    omega = np.diag(np.diag(np.sqrt(u.conj().T @ dm @ u)))
    return u @ omega @ u.conj().T


def velocity_operators(
    dynmat: Any,
    qpoints: np.ndarray,
    frequency_factor: float,
    q_length: float = VELOCITY_OPERATOR_Q_LENGTH,
) -> np.ndarray:
    """Velocity operators V^α_ss'(q) = <e_s| ∂√D/∂q_α |e_s'> in THz·Å (phono3py 3.x convention).

    Central finite difference of √D along each Cartesian axis with |Δq| = ``q_length``
    (1/Å), projected on the ``numpy.linalg.eigh`` eigenvectors of D(q) and made Hermitian,
    as phono3py 3.19 ``phono3py/phonon/velocity_operator.py``. ``dynmat`` is a phonopy
    ``DynamicalMatrix`` (phono3py 4.10's ``Interaction.dynamical_matrix``); the 7 matrices
    per q-point are built in one batched call (bitwise equal to ``dynmat.run`` one by one,
    about 60x faster for the C backend).

    Parameters
    ----------
    qpoints : (n_q, 3) reduced coordinates

    Returns
    -------
    (n_q, n_band, n_band, 3) complex
    """
    from phonopy.harmonic.dynamical_matrix import (
        DynamicalMatrixNAC,
        get_dynamical_matrices_at_qpoints,
    )

    if isinstance(dynmat, DynamicalMatrixNAC):
        raise ValueError(
            "the reference velocity operator is implemented without NAC "
            "(kappaflow never applies NAC to model force constants)"
        )
    qpoints = np.atleast_2d(np.asarray(qpoints, dtype=float))
    lattice = np.asarray(dynmat.primitive.cell)  # Cartesian Δq -> reduced: lattice @ Δq
    dq = (lattice @ (np.eye(3) * q_length)).T  # row α: reduced step along Cartesian α
    points = [qpoints]
    for axis in range(3):
        points += [qpoints - dq[axis], qpoints + dq[axis]]
    dms = get_dynamical_matrices_at_qpoints(dynmat, np.concatenate(points), is_nac=False)
    n_q = len(qpoints)
    dms = dms.reshape(7, n_q, *dms.shape[1:])
    out = np.zeros((n_q, *dms.shape[2:], 3), dtype=complex)
    for i, q in enumerate(qpoints):
        _, u = np.linalg.eigh(dms[0, i])
        for axis in range(3):
            near_gamma = bool(np.linalg.norm(q) < np.linalg.norm(dq[axis]))
            lower = sqrt_dynamical_matrix(dms[1 + 2 * axis, i], near_gamma)
            upper = sqrt_dynamical_matrix(dms[2 + 2 * axis, i], near_gamma)
            v = u.conj().T @ ((upper - lower) / q_length / 2) @ u * frequency_factor
            out[i, :, :, axis] = (v.conj().T + v) / 2
    return out


def velocity_operator(
    dynmat: Any,
    q: np.ndarray,
    frequency_factor: float,
    q_length: float = VELOCITY_OPERATOR_Q_LENGTH,
) -> np.ndarray:
    """:func:`velocity_operators` at one q-point: (n_band, n_band, 3) complex."""
    return velocity_operators(dynmat, np.asarray(q, dtype=float)[None], frequency_factor, q_length)[
        0
    ]


def operator_group_velocities(vop: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """Group velocities (n_band, 3) from the velocity operator, phono3py 3.x style.

    The diagonal, except in a degenerate subspace (phonopy ``degenerate_sets``), where each
    Cartesian component is replaced by the ascending eigenvalues of that component's block.
    Used by 3.x for the boundary scattering rate.
    """
    from phonopy.phonon.degeneracy import degenerate_sets

    gv = np.einsum("iij->ij", vop).real
    pos = 0
    for deg in degenerate_sets(frequencies):
        n = len(deg)
        if n > 1:
            for axis in range(3):
                gv[pos : pos + n, axis] = np.linalg.eigvalsh(
                    vop[pos : pos + n, pos : pos + n, axis]
                )
        pos += n
    return gv


def star_outer_product(
    vop: np.ndarray, rotations_cartesian: np.ndarray, multiplicity: int
) -> np.ndarray:
    """Σ_R (R V_ss')_α (R V_ss')*_β / multiplicity over the point group, Voigt order.

    phono3py 3.x ``ConductivityWignerComponents._get_gv_by_gv_operator``: the rotated
    operator of the irreducible q stands for every arm of its star.

    Returns
    -------
    (n_band, n_band, 6) complex
    """
    rotated = np.einsum("rab,stb->rsta", np.asarray(rotations_cartesian, dtype=float), vop)
    out = np.empty((*vop.shape[:2], 6), dtype=complex)
    for c, (a, b) in enumerate(VOIGT_PAIRS):
        out[:, :, c] = (rotated[..., a] * rotated[..., b].conj()).sum(axis=0) / multiplicity
    return out


def boundary_linewidth(group_velocities: np.ndarray, boundary_mfp: float) -> np.ndarray:
    """Boundary half-width (THz) |v| / (4π L), v in THz·Å, L in µm (phono3py convention)."""
    from phonopy.physical_units import get_physical_units

    angstrom = get_physical_units().Angstrom
    speed = np.linalg.norm(group_velocities, axis=-1)
    return speed * angstrom * 1e6 / (4 * np.pi * boundary_mfp)


def wigner_conversion_factor(volume: float) -> float:
    """phono3py 3.x ``get_conversion_factor_WTE``: (THz·Å)² · eV · ħ / V -> W/(m·K)."""
    from phonopy.physical_units import get_physical_units

    u = get_physical_units()
    return (u.THz * u.Angstrom) ** 2 * u.EV * u.Hbar / (volume * u.Angstrom**3)


def wigner_pair_kappa(
    frequencies: np.ndarray,
    gamma: np.ndarray,
    heat_capacity: np.ndarray,
    gv_by_gv: np.ndarray,
    conversion: float,
    cutoff_frequency: float = 1e-4,
) -> np.ndarray:
    """Band-pair Wigner RTA terms of phono3py 3.x ``ConductivityWignerRTA.set_kappa_at_sigmas``.

    term_ss' = Re[G_ss'] · ¼(ħω_s+ħω_s')(C_s/ħω_s + C_s'/ħω_s') · ½(ħΓ_s+ħΓ_s')
               / ((ħω_s−ħω_s')² + ¼(ħΓ_s+ħΓ_s')²) · conversion,

    Γ = 2·``gamma`` (full width), for pairs with both frequencies above ``cutoff_frequency``
    (THz), else 0. The diagonal is κ_P of mode s (with its q-star weight).

    Parameters
    ----------
    frequencies : (q, s) THz
    gamma : (T, q, s) total half-width (ph-ph + isotope + boundary), THz
    heat_capacity : (T, q, s) eV/K
    gv_by_gv : (q, s, s', 6) star-summed velocity-operator outer products, (THz·Å)²

    Returns
    -------
    (T, q, s, s', 6) W/(m·K), not yet divided by the number of q-points
    """
    from phonopy.physical_units import get_physical_units

    thz_to_ev = get_physical_units().THzToEv
    f = np.asarray(frequencies, dtype=float)
    hw = f * thz_to_ev
    hg = 2.0 * np.asarray(gamma, dtype=float) * thz_to_ev
    g_sum = hg[..., :, None] + hg[..., None, :]
    d_w = hw[:, :, None] - hw[:, None, :]
    ok = (f[:, :, None] > cutoff_frequency) & (f[:, None, :] > cutoff_frequency)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only on pairs not `ok`
        lorentzian = 0.5 * g_sum / (d_w**2 + 0.25 * g_sum**2)
        cv_per_w = np.where(f > cutoff_frequency, heat_capacity / np.where(hw > 0, hw, 1.0), 0.0)
    prefactor = (
        0.25 * (hw[:, :, None] + hw[:, None, :]) * (cv_per_w[..., :, None] + cv_per_w[..., None, :])
    )
    weight = np.where(ok, prefactor * lorentzian, 0.0)
    return np.asarray(gv_by_gv).real[None] * weight[..., None] * conversion


def split_pair_kappa(
    pair: np.ndarray, frequencies: np.ndarray, degeneracy_tol: float = DEGENERACY_TOL_THZ
) -> tuple[np.ndarray, np.ndarray]:
    """3.x split of band-pair terms: |ν_s − ν_s'| < tol -> populations (half to each mode),
    else coherences. Returns mode κ_P (T, q, s, 6) and the coherence pair matrix
    (T, q, s, s', 6) (zero on degenerate pairs)."""
    f = np.asarray(frequencies, dtype=float)
    deg = (np.abs(f[:, :, None] - f[:, None, :]) < degeneracy_tol)[None, :, :, :, None]
    populations = np.where(deg, pair, 0.0)
    mode_p = 0.5 * populations.sum(axis=-2) + 0.5 * populations.sum(axis=-3)
    return mode_p, np.where(deg, 0.0, pair)


@dataclass
class VelocityOperatorProducts:
    """phono3py 3.x velocity-operator quantities at the irreducible grid points."""

    velocity_operator: np.ndarray  # (q, s, s', 3) complex, THz·Å
    gv_by_gv: np.ndarray  # (q, s, s', 6) complex, star-summed
    group_velocities: np.ndarray  # (q, s, 3)
    n_sampling: int  # Σ_q |star(q)|, 3.x number_of_sampling_grid_points


def reference_velocity_products(
    interaction: Any, grid_points: np.ndarray
) -> VelocityOperatorProducts:
    """Velocity operator, its star products and group velocities (phono3py 3.x Wigner)
    from a phono3py 4.10 ``Interaction`` (its dynamical matrix, BZ grid and phonons)."""
    from phonopy.phonon.grid import get_grid_points_by_rotations, get_qpoints_from_bz_grid_points

    bz_grid = interaction.bz_grid
    frequencies = interaction.phonons.frequencies
    rotations = bz_grid.rotations_cartesian
    grid_points = np.asarray(grid_points)
    qpoints = np.array([get_qpoints_from_bz_grid_points(int(gp), bz_grid) for gp in grid_points])
    vops = velocity_operators(
        interaction.dynamical_matrix, qpoints, interaction.frequency_factor_to_THz
    )
    products, gvs = [], []
    n_sampling = 0
    for gp, vop in zip(grid_points, vops, strict=True):
        rotation_map = get_grid_points_by_rotations(int(gp), bz_grid)
        n_star = len(np.unique(rotation_map))
        n_sampling += n_star
        products.append(star_outer_product(vop, rotations, len(rotation_map) // n_star))
        gvs.append(operator_group_velocities(vop, frequencies[gp]))
    return VelocityOperatorProducts(
        velocity_operator=vops,
        gv_by_gv=np.array(products),
        group_velocities=np.array(gvs),
        n_sampling=n_sampling,
    )


@dataclass
class KappaResult:
    """Conductivity of one material at every temperature (sigma index 0 = tetrahedron)."""

    temperatures: np.ndarray
    mesh: np.ndarray
    qpoints: np.ndarray
    weights: np.ndarray
    frequencies: np.ndarray
    heat_capacity: np.ndarray
    kappa_TOT_RTA: np.ndarray  # (T, 6) W/mK
    kappa_P_RTA: np.ndarray
    kappa_C: np.ndarray
    mode_kappa_P_RTA: np.ndarray  # (T, q, s, 6), includes w_q
    mode_kappa_C: np.ndarray  # (T, q, s, 6), partner-C split
    gamma: np.ndarray  # (T, q, s) THz
    gamma_isotope: np.ndarray | None
    group_velocities: np.ndarray
    grid_points: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    #: "reference" (phono3py 3.x Wigner) or "phono3py4" (phono3py 4.10 SMM19)
    convention: str = DEFAULT_CONVENTION

    @property
    def mode_kappa_TOT(self) -> np.ndarray:
        return self.mode_kappa_P_RTA + self.mode_kappa_C

    @property
    def kappa_TOT_ave(self) -> np.ndarray:
        return kappa_ave(self.kappa_TOT_RTA)

    @property
    def mode_kappa_TOT_ave(self) -> np.ndarray:
        return kappa_ave(self.mode_kappa_TOT)

    def sum_rule_error(self) -> float:
        """max |Σ mode κ_TOT / Σ w − κ_TOT| / max(|κ_TOT|) over T and components."""
        total = self.mode_kappa_TOT.sum(axis=(1, 2)) / self.weights.sum()
        scale = max(float(np.max(np.abs(self.kappa_TOT_RTA))), 1e-300)
        return float(np.max(np.abs(total - self.kappa_TOT_RTA)) / scale)


def compute_kappa(
    ph3: Phono3py,
    fc2: np.ndarray,
    fc3: np.ndarray,
    temperatures: list[float] | tuple[float, ...],
    settings: Phono3pySettings,
    *,
    convention: str | None = None,
    device: str | None = "auto",
    threads: int | None = None,
    memory_mb: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> KappaResult:
    """Wigner RTA κ at all ``temperatures`` in one run (ph-ph strength computed once).

    ``convention`` (default ``settings.kappa_convention``): ``"reference"`` is phono3py
    3.x Wigner κ (the DFT reference's and the published tables'), assembled from phono3py
    4.10's phonons, heat capacities and linewidths with the 3.x velocity operator;
    ``"phono3py4"`` is phono3py 4.10's own SMM19 κ (``tc.kappa``), a protocol deviation.
    See the module docstring.

    ``settings.phph_engine`` says who computes the three-phonon interaction strength
    (:func:`kappaflow.phph.install`): phono3py, or kappaflow's engine on ``device`` (auto:
    CUDA when present) with ``threads`` and ``memory_mb``. ``progress(done, total)`` is
    called after every irreducible grid point with either engine. The engine's record is
    ``extra["phph"]``.
    """
    from kappaflow import phph

    convention = settings.kappa_convention if convention is None else convention
    if convention not in CONVENTIONS:
        raise ValueError(
            f"kappa convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}"
        )
    ph3.fc2 = fc2
    ph3.fc3 = fc3
    ph3.init_phph_interaction(symmetrize_fc3q=False)
    with phph.install(
        ph3,
        engine=settings.phph_engine,
        device=device,
        threads=threads,
        memory_mb=memory_mb,
        progress=progress,
    ) as phph_record:
        ph3.run_thermal_conductivity(
            temperatures=list(temperatures),
            is_isotope=settings.is_isotope,
            boundary_mfp=settings.boundary_mfp,
            transport_type=TRANSPORT_TYPE,
            write_kappa=False,
            log_level=0,
        )
    tc = ph3.thermal_conductivity
    cv = np.asarray(tc.mode_heat_capacities)
    freqs = np.asarray(tc.frequencies)
    gamma = np.asarray(tc.gamma)[0]
    gamma_iso_all = tc.gamma_isotope
    gamma_iso = None if gamma_iso_all is None else np.asarray(gamma_iso_all)[0]
    kappa_p4 = np.asarray(tc.kappa)[0]
    extra: dict[str, Any] = {"kappa_phono3py4": kappa_p4, "phph": phph_record.as_dict()}
    if convention == "phono3py4":
        matrix = np.asarray(tc.mode_kappa_matrix)[0]  # (T, q, s, s', 6)
        mode_p, mode_c = split_mode_kappa(matrix, freqs, cv)
        n_mesh = float(np.prod(tc.mesh_numbers))
        kappa_tot = kappa_p4
        kappa_p = mode_p.sum(axis=(1, 2)) / n_mesh
        kappa_c = mode_c.sum(axis=(1, 2)) / n_mesh
        group_velocities = np.asarray(tc.group_velocities)
        extra["kappa_intra"] = np.asarray(tc.kappa_intra)[0]
    else:
        pp = ph3.phph_interaction
        grid_points = np.asarray(tc.grid_points)
        vel = reference_velocity_products(pp, grid_points)
        total_gamma = gamma.copy()
        if gamma_iso is not None:
            total_gamma += gamma_iso[None]
        if settings.boundary_mfp is not None:
            total_gamma += boundary_linewidth(vel.group_velocities, settings.boundary_mfp)[None]
        matrix = wigner_pair_kappa(
            freqs,
            total_gamma,
            cv,
            vel.gv_by_gv,
            wigner_conversion_factor(pp.primitive.volume),
            cutoff_frequency=pp.cutoff_frequency,
        )
        mode_p, pair_c = split_pair_kappa(matrix, freqs)
        mode_c = split_coherence(pair_c, cv)
        n = float(vel.n_sampling)
        kappa_p = mode_p.sum(axis=(1, 2)) / n
        kappa_c = pair_c.sum(axis=(1, 2, 3)) / n
        kappa_tot = kappa_p + kappa_c
        group_velocities = vel.group_velocities
        extra["kappa_intra"] = np.einsum("tqssc->tc", matrix) / n
        extra["gv_by_gv_operator"] = vel.gv_by_gv
    extra["mode_kappa_matrix"] = matrix
    return KappaResult(
        temperatures=np.asarray(tc.temperatures, dtype=float),
        mesh=np.asarray(tc.mesh_numbers),
        qpoints=np.asarray(tc.qpoints),
        weights=np.asarray(tc.grid_weights),
        frequencies=freqs,
        heat_capacity=cv,
        kappa_TOT_RTA=kappa_tot,
        kappa_P_RTA=kappa_p,
        kappa_C=kappa_c,
        mode_kappa_P_RTA=mode_p,
        mode_kappa_C=mode_c,
        gamma=gamma,
        gamma_isotope=gamma_iso,
        group_velocities=group_velocities,
        grid_points=np.asarray(tc.grid_points),
        extra=extra,
        convention=convention,
    )
