"""Wigner transport equation in the RTA (populations + coherences), PROTOCOL §5-§6.

phono3py 4.x: ``transport_type="SMM19"``; the calculator exposes the band-pair mode
κ matrix ``mode_kappa_matrix`` (sigma, T, q, s, s', 6) whose diagonal is the
intra-branch (population, κ_P) part and whose off-diagonal is the coherence (κ_C)
part, plus ``mode_heat_capacities`` (T, q, s) in eV/K.

κ_P and κ_C are reported in the phono3py 3.x convention of the DFT reference (degenerate
band pairs are populations), not phono3py 4's intra/inter split, which is kept in the
kappa HDF5 as ``kappa_intra``/``kappa_inter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from phono3py import Phono3py

from kappaflow.settings import Phono3pySettings

TRANSPORT_TYPE = "SMM19"


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
) -> KappaResult:
    """Wigner RTA κ at all ``temperatures`` in one run (ph-ph strength computed once)."""
    ph3.fc2 = fc2
    ph3.fc3 = fc3
    ph3.init_phph_interaction(symmetrize_fc3q=False)
    ph3.run_thermal_conductivity(
        temperatures=list(temperatures),
        is_isotope=settings.is_isotope,
        boundary_mfp=settings.boundary_mfp,
        transport_type=TRANSPORT_TYPE,
        write_kappa=False,
        log_level=0,
    )
    tc = ph3.thermal_conductivity
    matrix = np.asarray(tc.mode_kappa_matrix)[0]  # (T, q, s, s', 6)
    cv = np.asarray(tc.mode_heat_capacities)
    freqs = np.asarray(tc.frequencies)
    mode_p, mode_c = split_mode_kappa(matrix, freqs, cv)
    n_mesh = float(np.prod(tc.mesh_numbers))
    kappa_tot = np.asarray(tc.kappa)[0]
    kappa_p = mode_p.sum(axis=(1, 2)) / n_mesh
    gamma_iso = tc.gamma_isotope
    return KappaResult(
        temperatures=np.asarray(tc.temperatures, dtype=float),
        mesh=np.asarray(tc.mesh_numbers),
        qpoints=np.asarray(tc.qpoints),
        weights=np.asarray(tc.grid_weights),
        frequencies=np.asarray(tc.frequencies),
        heat_capacity=cv,
        kappa_TOT_RTA=kappa_tot,
        kappa_P_RTA=kappa_p,
        kappa_C=mode_c.sum(axis=(1, 2)) / n_mesh,
        mode_kappa_P_RTA=mode_p,
        mode_kappa_C=mode_c,
        gamma=np.asarray(tc.gamma)[0],
        gamma_isotope=None if gamma_iso is None else np.asarray(gamma_iso)[0],
        group_velocities=np.asarray(tc.group_velocities),
        grid_points=np.asarray(tc.grid_points),
        extra={"mode_kappa_matrix": matrix, "kappa_intra": np.asarray(tc.kappa_intra)[0]},
    )
