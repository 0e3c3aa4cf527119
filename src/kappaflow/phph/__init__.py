"""kappaflow's batched three-phonon interaction engine (torch) and its seam into phono3py.

* :func:`install` — the one entry point: a context manager around
  ``Phono3py.run_thermal_conductivity`` selecting the engine (``"phono3py"`` or
  ``"kappaflow"``), the device, threads and memory budget, and a per-grid-point
  ``progress(done, total)`` callback (either engine); yields a :class:`PhphRecord`.
* :class:`PhphEngine` — |Φ|² and the imaginary self-energy sum of the triplets of a grid
  point, FP64, cpu or cuda.
* :data:`SUPPORTED_PHONO3PY` — the phono3py versions the seam is tested with.

torch is imported only when the kappaflow engine is used.
"""

from kappaflow.phph.memory import MemoryBudgetError, MemoryPlan, plan_memory
from kappaflow.phph.seam import (
    ENGINES,
    EngineScatteringSolver,
    PhphOptionError,
    PhphRecord,
    check_options,
    install,
)
from kappaflow.phph.version import (
    SUPPORTED_PHONO3PY,
    PhphVersionError,
    check_phono3py_version,
)


def _engine_errors() -> tuple[type[Exception], ...]:
    from kappaflow.phph.engine import (
        DeviceUnavailableError,
        EngineUnavailableError,
        UnknownDeviceError,
    )

    return (
        EngineUnavailableError,
        DeviceUnavailableError,
        UnknownDeviceError,
        PhphOptionError,
        PhphVersionError,
        MemoryBudgetError,
    )


#: the engine's set-up errors (torch or device missing, version, options, memory budget):
#: errors of the job's settings, never a recorded failure of a material
ENGINE_ERRORS = _engine_errors()


def __getattr__(name: str):  # the engine module imports torch lazily, not at package import
    if name in ("PhphEngine", "EngineUnavailableError", "DeviceUnavailableError"):
        from kappaflow.phph import engine

        return getattr(engine, name)
    raise AttributeError(name)


__all__ = [
    "ENGINES",
    "ENGINE_ERRORS",
    "SUPPORTED_PHONO3PY",
    "DeviceUnavailableError",
    "EngineScatteringSolver",
    "EngineUnavailableError",
    "MemoryBudgetError",
    "MemoryPlan",
    "PhphEngine",
    "PhphOptionError",
    "PhphRecord",
    "PhphVersionError",
    "check_options",
    "check_phono3py_version",
    "install",
    "plan_memory",
]
