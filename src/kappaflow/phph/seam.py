"""The seam between phono3py 4.10's RTA conductivity and kappaflow's engine, and the
per-grid-point progress hook that serves both engines.

One entry point, :func:`install`, a context manager around ``Phono3py.
run_thermal_conductivity``::

    with phph.install(ph3, engine="kappaflow", device="cuda", threads=16,
                      memory_mb=3072, progress=report) as record:
        ph3.run_thermal_conductivity(temperatures=[300.0], is_isotope=True,
                                     boundary_mfp=1e6, transport_type="SMM19")
    record.as_dict()  # provenance: engine, device, versions, batches, timings

What it touches, only inside the ``with`` block:

* ``phono3py.conductivity.rta_init.conductivity_calculator`` (the factory the RTA driver
  calls) is wrapped: the ``RTACalculator`` it builds gets, for ``engine="kappaflow"``, an
  :class:`EngineScatteringSolver` in place of phono3py's ``RTAScatteringSolver`` (phono3py's
  ``ScatteringSolver`` protocol: ``compute(grid_point) -> ScatteringResult``), and, when
  ``progress`` is given, its ``run`` composes phono3py's own ``on_grid_point`` hook with
  ``progress(done, total)``;
* ``ph3.run_thermal_conductivity`` (this instance only) refuses the options the engine does
  not support, with a clear error, before phono3py starts.

The engine's scattering solver replaces phono3py's low-memory ``pp_collision`` per grid point:
phono3py's triplets and weights (``Interaction.set_grid_point``), phono3py's tetrahedron
integration weights from the same backend as the default path (C: ``phono3c.
triplets_integration_weights``; Rust: ``phonors``), the engine's |Φ|² and imaginary
self-energy sum (torch, on the device), then phono3py's unit conversions and
``average_by_degeneracy``. Heat capacities, velocities (the SMM19 velocity operator),
isotope and boundary scattering, and the κ assembly stay phono3py's, untouched.

``engine="phono3py"`` without ``progress`` installs nothing at all; with ``progress`` only
the progress hook (κ is bitwise the same with and without it: the hook reads nothing).
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kappaflow.phph.version import (
    SUPPORTED_PHONO3PY,
    check_phono3py_version,
    is_supported,
    phono3py_version,
)
from kappaflow.settings import PHPH_ENGINES

ENGINES = PHPH_ENGINES

Progress = Callable[[int, int], None]

#: keyword arguments of ``run_thermal_conductivity`` the engine runs with (any value)
_ALLOWED_KWARGS = {
    "temperatures",
    "is_isotope",
    "mass_variances",
    "boundary_mfp",
    "is_kappa_star",
    "gv_delta_q",
    "transport_type",
    "write_kappa",
    "compression",
    "log_level",
    "grid_points",
}
#: options that must stay at their default (falsy) value with the engine
_REFUSED_KWARGS = {
    "is_LBTE": "the direct solution (LBTE)",
    "use_ave_pp": "use_ave_pp (averaged ph-ph interaction)",
    "is_full_pp": "is_full_pp (phono3py's full interaction path)",
    "write_gamma": "write_gamma (per-grid-point gamma files)",
    "read_gamma": "read_gamma (gamma read from files)",
    "is_N_U": "is_N_U (normal/umklapp split)",
    "write_gamma_detail": "write_gamma_detail",
    "write_pp": "write_pp",
    "read_pp": "read_pp",
    "read_elph": "read_elph",
    "solve_collective_phonon": "solve_collective_phonon (LBTE only)",
    "is_reducible_collision_matrix": "is_reducible_collision_matrix (LBTE only)",
    "write_collision": "write_collision (LBTE only)",
    "read_collision": "read_collision (LBTE only)",
    "write_LBTE_solution": "write_LBTE_solution (LBTE only)",
    "input_filename": "input_filename",
    "output_filename": "output_filename",
}


class PhphOptionError(ValueError):
    """A phono3py option the kappaflow engine (or the progress hook) does not support."""


@dataclass
class PhphRecord:
    """Provenance of one κ run through :func:`install` (``as_dict()`` is JSON-able)."""

    engine: str
    device: str | None = None
    threads: int | None = None
    memory_mb: float | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    weights_backend: str | None = None
    memory_plan: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    grid_points_total: int | None = None
    grid_points_done: int = 0
    seconds: float | None = None
    progress: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _versions(with_torch: bool) -> dict[str, str | None]:
    import phono3py
    import phonopy

    out: dict[str, str | None] = {
        "phono3py": str(phono3py.__version__),
        "phonopy": str(phonopy.__version__),
        "python": platform.python_version(),
    }
    if with_torch:
        import torch

        out["torch"] = str(torch.__version__)
        out["cuda"] = None if torch.version.cuda is None else str(torch.version.cuda)
    return out


def check_options(ph3: Any, engine: str) -> None:
    """Refuse what the kappaflow engine does not compute like phono3py (clear errors)."""
    if engine != "kappaflow":
        return
    pp = ph3.phph_interaction
    if pp is None:
        raise PhphOptionError("call Phono3py.init_phph_interaction() before installing the engine")
    sigmas = list(ph3.sigmas)
    if sigmas != [None]:
        raise PhphOptionError(
            f"the kappaflow ph-ph engine supports the tetrahedron method only (sigmas=[None]); "
            f"this Phono3py object has sigmas={sigmas} (smearing)"
        )
    problems = []
    if pp.symmetrize_fc3q:
        problems.append("symmetrize_fc3q=True")
    num_band = 3 * len(pp.primitive)
    if not np.array_equal(np.asarray(pp.band_indices), np.arange(num_band)):
        problems.append("a band subset (band_indices)")
    if pp.constant_averaged_interaction is not None:
        problems.append("constant_averaged_interaction")
    if pp.symmetrize_tetrahedra:
        problems.append("symmetrize_tetrahedra=True")
    if pp.average_degenerate_weights:
        problems.append("average_degenerate_weights=True")
    if pp.nac_params is not None:
        problems.append("non-analytic correction (NAC parameters)")
    if not pp.is_mesh_symmetry:
        problems.append("is_mesh_symmetry=False")
    if ph3.lang not in ("C", "Rust"):
        problems.append(f"lang={ph3.lang!r} (C or Rust)")
    if problems:
        raise PhphOptionError(
            "the kappaflow ph-ph engine does not support " + ", ".join(problems) + "; use "
            "phono3py.phph_engine: phono3py for this calculation"
        )


def _check_kwargs(kwargs: dict[str, Any], engine: str) -> None:
    if kwargs.get("is_LBTE"):
        raise PhphOptionError(
            "kappaflow's ph-ph seam (engine and progress hook) covers the RTA only, "
            "not is_LBTE=True"
        )
    if engine != "kappaflow":
        return
    for key, value in kwargs.items():
        if key in _REFUSED_KWARGS:
            if value:
                raise PhphOptionError(
                    f"the kappaflow ph-ph engine does not support {_REFUSED_KWARGS[key]}"
                )
        elif key not in _ALLOWED_KWARGS:
            raise PhphOptionError(f"run_thermal_conductivity({key}=...) is not supported here")


class EngineScatteringSolver:
    """phono3py's ``ScatteringSolver`` protocol on the kappaflow engine (tetrahedron RTA).

    Per grid point: phono3py's triplets and tetrahedron weights, the engine's |Φ|² and
    imaginary self-energy sum, phono3py's unit conversions and degeneracy averaging: the
    same steps as phono3py's low-memory ``RTAScatteringSolver`` path.
    """

    is_full_pp = False
    supports_rust_batching = False
    gamma_N = None
    gamma_U = None
    gamma_detail_at_q = None

    def __init__(self, interaction: Any, engine: Any, temperatures: Any, lang: str) -> None:
        from phono3py.phonon3.imag_self_energy import ImagSelfEnergy
        from phonopy.physical_units import get_physical_units

        self._pp = interaction
        self.engine = engine
        self._lang = lang
        units = get_physical_units()
        self._temperatures = np.asarray(temperatures, dtype="double")
        self._temperatures_thz = np.array(
            self._temperatures * units.KB / units.THzToEv, dtype="double"
        )
        self._unit = ImagSelfEnergy(interaction, lang=lang).unit_conversion_factor
        self.seconds = {"weights": 0.0, "engine": 0.0}

    def compute(self, grid_point: int) -> Any:
        from phono3py.conductivity.grid_point_data import ScatteringResult
        from phono3py.phonon3.imag_self_energy import average_by_degeneracy
        from phono3py.phonon3.triplets import get_triplets_integration_weights

        pp = self._pp
        pp.set_grid_point(grid_point)
        triplets, weights = pp.get_triplets_at_q()[:2]
        band_indices = pp.band_indices
        f0 = np.array(pp.phonons.frequencies[grid_point][band_indices], dtype="double")
        t0 = time.perf_counter()
        g, _g_zero = get_triplets_integration_weights(pp, f0, None, lang=self._lang)
        t1 = time.perf_counter()
        col = self.engine.collisions(triplets, weights, g, self._temperatures_thz)
        self.seconds["weights"] += t1 - t0
        self.seconds["engine"] += time.perf_counter() - t1
        unit_conv = self._unit * pp.unit_conversion_factor
        gamma = np.zeros((1, len(self._temperatures), len(band_indices)), dtype="double")
        gamma[0] = average_by_degeneracy(
            col * unit_conv, band_indices, pp.phonons.degenerate_ids[grid_point]
        )
        return ScatteringResult(gamma=gamma, averaged_pp_interaction=None)

    def compute_batched(self, grid_points: Any) -> list[dict]:  # protocol completeness
        return [
            {"result": self.compute(int(gp)), "gamma_N": None, "gamma_U": None}
            for gp in grid_points
        ]


@contextlib.contextmanager
def install(
    ph3: Any,
    engine: str = "kappaflow",
    device: str | None = "cpu",
    threads: int | None = None,
    memory_mb: float | None = None,
    progress: Progress | None = None,
) -> Iterator[PhphRecord]:
    """Run ``ph3.run_thermal_conductivity`` inside this block with ``engine`` and ``progress``.

    Parameters
    ----------
    ph3 : phono3py.Phono3py after ``init_phph_interaction`` (kappaflow's
        ``conductivity.compute_kappa`` order: fc2, fc3, ``init_phph_interaction``, install,
        run).
    engine : "phono3py" (phono3py's own default path) or "kappaflow".
    device, threads, memory_mb : the engine's torch device, intra-op threads (the job's
        threads) and memory budget in MB (engine only; see :class:`~kappaflow.phph.engine.
        PhphEngine`).
    progress : ``progress(done, total)`` after every irreducible grid point of the κ loop,
        with either engine; it must not modify anything.

    Yields a :class:`PhphRecord`, completed when the block exits.
    """
    if engine not in ENGINES:
        raise ValueError(f"phph_engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    record = PhphRecord(engine=engine, progress=progress is not None)
    if engine == "phono3py" and progress is not None and not is_supported(phono3py_version()):
        # the progress hook needs the tested phono3py internals; phono3py itself does not
        print(
            f"[kappaflow] phono3py {phono3py_version()}: no progress lines (the hook is tested "
            f"with phono3py {', '.join(SUPPORTED_PHONO3PY)}.x)",
            file=sys.stderr,
        )
        progress = None
        record.progress = False
    if engine == "phono3py" and progress is None:
        record.versions = _versions(with_torch=False)
        record.weights_backend = None
        yield record
        return
    check_phono3py_version()
    check_options(ph3, engine)
    from phono3py.conductivity import rta_init
    from phono3py.conductivity.calculators import RTACalculator

    record.versions = _versions(with_torch=engine == "kappaflow")
    if engine == "kappaflow":
        from kappaflow.phph.engine import require_torch, resolve_device

        torch = require_torch()
        record.device = str(resolve_device(device, torch))
        record.threads = None if threads is None else int(threads)
        record.memory_mb = None if memory_mb is None else float(memory_mb)
        record.weights_backend = str(ph3.lang)
    state: dict[str, Any] = {}
    original_factory = rta_init.conductivity_calculator

    def factory(*args: Any, **kwargs: Any) -> Any:
        calc = original_factory(*args, **kwargs)
        if not isinstance(calc, RTACalculator):
            raise PhphOptionError("kappaflow's ph-ph seam covers phono3py's RTACalculator only")
        if engine == "kappaflow":
            from kappaflow.phph.engine import PhphEngine

            interaction = ph3.phph_interaction
            eng = PhphEngine(
                interaction,
                device=device,
                threads=threads,
                memory_mb=memory_mb,
                n_temps=len(calc.temperatures),
            )
            solver = EngineScatteringSolver(interaction, eng, calc.temperatures, ph3.lang)
            calc._scattering_solver = solver  # phono3py 4.10 RTACalculator attribute
            state["solver"] = solver
            record.memory_plan = eng.plan.as_dict()
            record.threads = eng.threads
        record.grid_points_total = len(calc.grid_points)
        original_run = calc.run

        def run(on_grid_point: Callable[[int], None] | None = None) -> None:
            total = len(calc.grid_points)

            def hook(i_gp: int) -> None:
                if on_grid_point is not None:
                    on_grid_point(i_gp)
                record.grid_points_done += 1
                if progress is not None:
                    progress(record.grid_points_done, total)

            original_run(on_grid_point=hook)

        calc.run = run
        state["calc"] = calc
        return calc

    original_method = ph3.run_thermal_conductivity

    def run_thermal_conductivity(*args: Any, **kwargs: Any) -> None:
        if args:
            raise PhphOptionError("pass run_thermal_conductivity options by keyword")
        _check_kwargs(kwargs, engine)
        original_method(**kwargs)

    t0 = time.perf_counter()
    rta_init.conductivity_calculator = factory
    ph3.run_thermal_conductivity = run_thermal_conductivity
    try:
        yield record
    finally:
        rta_init.conductivity_calculator = original_factory
        del ph3.run_thermal_conductivity  # the class method again
        record.seconds = time.perf_counter() - t0
        solver = state.get("solver")
        if solver is not None:
            stats = solver.engine.stats.as_dict()
            stats["seconds"].update({k: round(v, 6) for k, v in solver.seconds.items()})
            record.stats = stats
            solver.engine.release()
