"""Frozen settings of the protocol (PROTOCOL.md §3-§5), checked for physical sense.

The JSON schema (``schemas/config.schema.yaml``) checks the *shape* of the config;
these dataclasses check the *physics* (positive distances, known backends, ...),
so the package can be used and tested without Snakemake.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kappaflow.structures import MaterialSpec

#: phono3py backends. The DFT reference was produced with phono3py 3.x, C backend;
#: phono3py 4.10 defaults to its (experimental) Rust backend "phonors".
BACKENDS = ("C", "Rust")
#: κ conventions (kappaflow.conductivity): "reference" = phono3py 3.x Wigner (the protocol's
#: and the default), "phono3py4" = phono3py 4.10's SMM19 (a protocol deviation)
KAPPA_CONVENTIONS = ("reference", "phono3py4")
#: engines of the three-phonon interaction strength (kappaflow.phph)
PHPH_ENGINES = ("phono3py", "kappaflow")
#: phono3py settings that only the κ step reads: they stay out of the force steps' params
#: and records, so toggling one re-runs κ jobs only (PROTOCOL §5, §14)
KAPPA_ONLY_KEYS = ("kappa_convention", "phph_engine")


class SettingsError(ValueError):
    """A setting has an unphysical or unknown value (message names the key)."""


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise SettingsError(f"{name} must be a positive finite number, got {value!r}")


def _from_mapping(cls, mapping: dict[str, Any] | None, section: str):
    mapping = dict(mapping or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise SettingsError(
            f"unknown key(s) in '{section}': {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(known))})"
        )
    return cls(**mapping)


@dataclass(frozen=True)
class RelaxSettings:
    """Two-stage symmetry-constrained relaxation (PROTOCOL §3, k_SRME defaults)."""

    fmax: float = 1e-4
    max_steps: int = 300
    optimizer: str = "FIRE"
    two_stage: bool = True
    symprec: float = 1e-5
    #: symprec of ASE's FixSymmetry in stage 1; k_SRME calls FixSymmetry(atoms), i.e. 0.01
    fix_symmetry_symprec: float = 0.01
    enforce_symmetry: bool = True
    allow_tilt: bool = False

    def __post_init__(self) -> None:
        _check_positive("relax.fmax", self.fmax)
        _check_positive("relax.symprec", self.symprec)
        _check_positive("relax.fix_symmetry_symprec", self.fix_symmetry_symprec)
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise SettingsError(f"relax.max_steps must be an integer >= 1, got {self.max_steps!r}")
        if self.optimizer not in ("FIRE", "BFGS", "LBFGS"):
            raise SettingsError(
                f"relax.optimizer must be one of FIRE, BFGS, LBFGS, got {self.optimizer!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> RelaxSettings:
        return _from_mapping(cls, mapping, "relax")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Phono3pySettings:
    """Finite displacements, gates and Wigner-RTA settings (PROTOCOL §4-§5)."""

    displacement: float = 0.03
    symprec: float = 1e-5
    is_isotope: bool = True
    boundary_mfp: float = 1e6
    backend: str = "C"
    frequency_threshold: float = -1e-2
    conductivity_broken_symmetry: bool = False
    #: override of the dataset's q-mesh for every material (coarse test meshes)
    mesh: tuple[int, int, int] | None = None
    #: Opt-in protocol deviations, off by default (docs/benchmarks.md "Protocol deviations"):
    #: phono3py's fc3 pair cutoff (Å): displacement pairs farther apart are not computed
    #: and their fc3 elements are zero;
    fc3_cutoff_pair_distance: float | None = None
    #: N supercells with every atom displaced by ``displacement`` in a random direction,
    #: fc3 fitted by symfc, instead of the systematic pair displacements (fc2 stays
    #: systematic on its own supercell).
    fc3_random_displacements: int | None = None
    random_seed: int = 0
    #: κ only (KAPPA_ONLY_KEYS): the Wigner convention, "phono3py4" a protocol deviation;
    kappa_convention: str = "reference"
    #: who computes the three-phonon interaction strength (equal to 1e-8 in κ)
    phph_engine: str = "phono3py"

    def __post_init__(self) -> None:
        _check_positive("phono3py.displacement", self.displacement)
        for key, allowed in (
            ("kappa_convention", KAPPA_CONVENTIONS),
            ("phph_engine", PHPH_ENGINES),
        ):
            if getattr(self, key) not in allowed:
                raise SettingsError(
                    f"phono3py.{key} must be one of {', '.join(allowed)}, "
                    f"got {getattr(self, key)!r}"
                )
        if self.fc3_cutoff_pair_distance is not None:
            _check_positive("phono3py.fc3_cutoff_pair_distance", self.fc3_cutoff_pair_distance)
        n = self.fc3_random_displacements
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise SettingsError(
                f"phono3py.fc3_random_displacements must be an integer >= 1, got {n!r}"
            )
        if n is not None and self.fc3_cutoff_pair_distance is not None:
            raise SettingsError(
                "phono3py.fc3_cutoff_pair_distance and phono3py.fc3_random_displacements "
                "cannot be combined (the cutoff applies to systematic pair displacements)"
            )
        _check_positive("phono3py.symprec", self.symprec)
        _check_positive("phono3py.boundary_mfp", self.boundary_mfp)
        if self.backend not in BACKENDS:
            raise SettingsError(
                f"phono3py.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.mesh is not None:
            mesh = tuple(int(m) for m in self.mesh)
            if len(mesh) != 3 or min(mesh) < 1:
                raise SettingsError(f"phono3py.mesh must be three integers >= 1, got {self.mesh!r}")
            object.__setattr__(self, "mesh", mesh)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> Phono3pySettings:
        return _from_mapping(cls, mapping, "phono3py")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mesh"] = list(self.mesh) if self.mesh is not None else None
        return d

    def forces_dict(self) -> dict[str, Any]:
        """:meth:`as_dict` without the κ-only keys: what displacements, forces and force
        constants depend on (the force steps' records and resume checks)."""
        d = self.as_dict()
        for key in KAPPA_ONLY_KEYS:
            del d[key]
        return d

    def mesh_for(self, material: MaterialSpec) -> tuple[int, int, int]:
        """The q-mesh of ``material``: the ``mesh`` override, else the dataset's own."""
        return tuple(self.mesh or material.q_mesh)  # type: ignore[return-value]

    def protocol_deviations(self) -> list[str]:
        """Labels of the opt-in deviations from PROTOCOL §4 in force (empty by default);
        recorded in fc3.hdf5, forces_fc3.hdf5, kappa.json/.hdf5 and the gathered tables."""
        out = []
        if self.fc3_cutoff_pair_distance is not None:
            out.append(f"fc3_cutoff_pair_distance={self.fc3_cutoff_pair_distance:g}")
        if self.fc3_random_displacements is not None:
            out.append(
                f"fc3_random_displacements={self.fc3_random_displacements}"
                f"(symfc,seed={self.random_seed})"
            )
        return out

    def kappa_deviations(self) -> list[str]:
        """:meth:`protocol_deviations` plus the κ-only ones (kappa.json/.hdf5, tables)."""
        out = self.protocol_deviations()
        if self.kappa_convention != "reference":
            out.append(f"kappa_convention={self.kappa_convention}")
        return out


@dataclass(frozen=True)
class StructureDefaults:
    """Defaults for user structures that lack the dataset's info keys (issue 2, §4).

    Supercells are the smallest diagonal multiples n_i with n_i·|a_i| >= the given
    length; the q-mesh is ``max(1, round(q_mesh_length * |b_i|))`` with
    ``b_i`` the reciprocal vectors (no 2π) of the primitive cell. The defaults are
    of the dataset's size: GaN-wz gets its 5×5×3 / 3×3×2 (mesh 22×22×12; dataset
    19×19×15), NaCl-rs (8-atom cell) 3×3×3 / 2×2×2 (dataset 4×4×4 / 2×2×2) and an
    18×18×18 mesh (dataset 19×19×19).
    Every default used is recorded with the material and can be overridden.
    """

    fc2_min_length: float = 15.0
    fc3_min_length: float = 9.0
    q_mesh_length: float = 60.0

    def __post_init__(self) -> None:
        _check_positive("structure_defaults.fc2_min_length", self.fc2_min_length)
        _check_positive("structure_defaults.fc3_min_length", self.fc3_min_length)
        _check_positive("structure_defaults.q_mesh_length", self.q_mesh_length)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> StructureDefaults:
        return _from_mapping(cls, mapping, "structure_defaults")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KappaSettings:
    """Everything a kappa job needs besides the structure and the model."""

    temperatures: tuple[float, ...] = (300.0,)
    phono3py: Phono3pySettings = field(default_factory=Phono3pySettings)

    def __post_init__(self) -> None:
        temps = tuple(float(t) for t in self.temperatures)
        if not temps or any((not math.isfinite(t)) or t < 0 for t in temps):
            raise SettingsError(
                f"temperatures must be a non-empty list of numbers >= 0, got {self.temperatures!r}"
            )
        object.__setattr__(self, "temperatures", temps)


#: gamma_SRME's (and phonopy's) equation-of-state names accepted for the K_T fit
EOS_NAMES = ("vinet", "birchmurnaghan", "murnaghan")
SYMMETRY_CHECKS = ("minus", "all")


@dataclass(frozen=True)
class GruneisenSettings:
    """Grüneisen parameters, bulk modulus and thermal expansion (PROTOCOL §7).

    ``symmetry_check``: which relaxations decide the broken-symmetry failure. ``minus``
    (default) reproduces gamma_SRME, whose relax records of the ±1 % volumes overwrite
    the origin's, so only the minus-volume relax is checked; ``all`` fails a material
    when any of origin, plus or minus changed space group. All three are recorded.
    """

    enabled: bool = True
    volume_strain: float = 0.01
    t_min: float = 50.0
    t_max: float = 800.0
    t_step: float = 10.0
    score_temperature: float = 300.0
    #: modes below this frequency (THz) get zero heat capacity (gamma_SRME FREQ_CUTOFF)
    frequency_cutoff: float = 1e-3
    symmetry_check: str = "minus"
    eos: str = "vinet"
    #: fractional volume changes of the E(V) points (each relaxed at constant volume)
    eos_strains: tuple[float, ...] = (-0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03)
    #: cross-check of the mode γ against phono3py's fc3 Grüneisen (needs the fc3 forces)
    fc3_check: bool = True

    def __post_init__(self) -> None:
        _check_positive("gruneisen.volume_strain", self.volume_strain)
        if self.volume_strain >= 0.2:
            raise SettingsError(
                f"gruneisen.volume_strain must be a small fraction (< 0.2), got {self.volume_strain!r}"
            )
        _check_positive("gruneisen.t_step", self.t_step)
        _check_positive("gruneisen.t_max", self.t_max)
        _check_positive("gruneisen.score_temperature", self.score_temperature)
        _check_positive("gruneisen.frequency_cutoff", self.frequency_cutoff)
        if not (isinstance(self.t_min, (int, float)) and 0 < self.t_min <= self.t_max):
            raise SettingsError(
                f"gruneisen.t_min must be > 0 and <= gruneisen.t_max, got {self.t_min!r}"
            )
        if self.symmetry_check not in SYMMETRY_CHECKS:
            raise SettingsError(
                f"gruneisen.symmetry_check must be one of {', '.join(SYMMETRY_CHECKS)}, "
                f"got {self.symmetry_check!r}"
            )
        if self.eos not in EOS_NAMES:
            raise SettingsError(
                f"gruneisen.eos must be one of {', '.join(EOS_NAMES)}, got {self.eos!r}"
            )
        strains = tuple(sorted({round(float(s), 10) for s in self.eos_strains}))
        if len(strains) < 7 or any(abs(s) >= 0.2 for s in strains) or 0.0 not in strains:
            raise SettingsError(
                "gruneisen.eos_strains needs >= 7 distinct volume changes within ±20 % "
                f"including 0 (PROTOCOL §7), got {list(self.eos_strains)!r}"
            )
        object.__setattr__(self, "eos_strains", strains)

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperature grid (K), always including the scoring temperature."""
        n = math.floor((self.t_max - self.t_min) / self.t_step + 1e-9) + 1
        grid = {round(self.t_min + i * self.t_step, 6) for i in range(n)}
        grid.add(float(self.score_temperature))
        return tuple(sorted(grid))

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> GruneisenSettings:
        mapping = dict(mapping or {})
        # workflow-only keys of the config section (not physics settings)
        for key in ("reference", "mode_reference", "melting_points"):
            mapping.pop(key, None)
        if "eos_strains" in mapping:
            mapping["eos_strains"] = tuple(mapping["eos_strains"])
        return _from_mapping(cls, mapping, "gruneisen")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_strains"] = list(self.eos_strains)
        return d


@dataclass(frozen=True)
class CheckSettings:
    """Bounds of the recorded flags (PROTOCOL §5): values that are merely suspicious. A
    flagged result is scored like any other (published models' κ of 10³-10⁶ W/mK are
    results, not failures); :func:`kappaflow.gates.flags` applies the bounds."""

    #: largest net force on a displaced fc2 supercell over the largest force (a model
    #: that conserves momentum gives ~1e-15 in float64, ~1e-6 in float32)
    sum_rule_tolerance: float = 1e-3
    #: |V_relaxed / V_input - 1|
    max_volume_change: float = 0.1
    #: W/mK at 300 K, scaled as 300 K / T at other temperatures (the DFT set spans 0.44-1258)
    max_kappa: float = 1e4
    #: W/mK at 300 K, scaled as 300 K / T
    min_kappa: float = 1e-2

    def __post_init__(self) -> None:
        _check_positive("checks.sum_rule_tolerance", self.sum_rule_tolerance)
        _check_positive("checks.max_volume_change", self.max_volume_change)
        _check_positive("checks.max_kappa", self.max_kappa)
        _check_positive("checks.min_kappa", self.min_kappa)
        if self.min_kappa >= self.max_kappa:
            raise SettingsError(
                f"checks.min_kappa ({self.min_kappa!r}) must be below checks.max_kappa "
                f"({self.max_kappa!r})"
            )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> CheckSettings:
        return _from_mapping(cls, mapping, "checks")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
