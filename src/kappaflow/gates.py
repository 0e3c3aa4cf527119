"""The status vocabulary of every result, the one gate of the protocol (PROTOCOL §5-§6) and
the flags of suspicious values.

A result's ``status`` is :data:`OK` or the reason it has no κ (γ): an input that cannot mean
anything (a cell that is not 3-D periodic, atoms separated by vacuum, forces or phonons or
fc3 that vanish, a κ that is not finite and positive), a gate that closed (imaginary modes,
broken symmetry, in k_SRME's order), a non-finite model output, or the exception of a step
(``<step>_error``). :data:`FAILURE_ORDER` is the order in which the steps test them: the
first that applies is the status. Records carry the status once; results written before
this vocabulary was unified also carry ``failure`` (the same word, or ``""`` when ok), which
readers ignore.

A *flag* is not a failure: a value that is merely suspicious (acoustic sum rule violated,
volume changed much in the relaxation, κ beyond a bound) is recorded with the result, which
is scored like any other (:func:`flags`, bounds in the config's ``checks`` section).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kappaflow.settings import CheckSettings

#: the status of a result that has its numbers
OK = "ok"
#: the relaxed cell is not periodic in all three directions (pbc not all True)
NON_PERIODIC = "non_periodic"
#: a gap of vacuum wider than :data:`kappaflow.structures.MAX_VACUUM_GAP` separates the
#: atoms along a lattice direction: isolated atoms, a wire or a slab, not a bulk solid
VACUUM_GAP = "vacuum_gap"
#: the model returned NaN/inf forces on a displaced supercell
NONFINITE_FORCES = "nonfinite_forces"
#: a displaced supercell whose forces are all zero: the displaced atom feels nothing
ZERO_FORCES = "zero_forces"
#: no phonon besides the three acoustic modes at Γ has a frequency (all below
#: :data:`kappaflow.phonons.ZERO_FREQUENCY`): nothing carries heat
ZERO_FREQUENCIES = "zero_frequencies"
#: gates (PROTOCOL §5): k_SRME checks imaginary modes first, then the space group
IMAGINARY_MODES = "imaginary_modes"
BROKEN_SYMMETRY = "broken_symmetry"
#: fc3 vanishes on its supercell (a harmonic model): no phonon-phonon scattering
ZERO_FC3 = "zero_fc3"
#: κ (or a mode κ) is NaN or infinite at some temperature
NONFINITE_KAPPA = "nonfinite_kappa"
#: κ_TOT_ave, or a diagonal component of κ, is <= 0 at a temperature above 0 K
NONPOSITIVE_KAPPA = "nonpositive_kappa"

#: the failures in the order the steps test them (relax: ``relax_error``; fc2: the cell,
#: then the forces, then the gate; fc3: the forces, then fc3; κ: its value). Step
#: exceptions (``<step>_error``) are recorded where they happen.
FAILURE_ORDER = (
    NON_PERIODIC,
    VACUUM_GAP,
    NONFINITE_FORCES,
    ZERO_FORCES,
    ZERO_FREQUENCIES,
    IMAGINARY_MODES,
    BROKEN_SYMMETRY,
    ZERO_FC3,
    NONFINITE_KAPPA,
    NONPOSITIVE_KAPPA,
)

#: flags (recorded, scored like any other result): see :func:`flags`
FLAG_SUM_RULE = "acoustic_sum_rule"
FLAG_VOLUME_CHANGE = "volume_change"
FLAG_KAPPA_HIGH = "kappa_above_bound"
FLAG_KAPPA_LOW = "kappa_below_bound"
FLAGS = (FLAG_SUM_RULE, FLAG_VOLUME_CHANGE, FLAG_KAPPA_HIGH, FLAG_KAPPA_LOW)


def step_error(step: str) -> str:
    """Status of an exception in a step's physics, e.g. ``kappa_error`` (k_SRME: scored 2)."""
    return f"{step}_error"


def is_ok(status: Any) -> bool:
    """``ok`` (and the empty/missing status of tables written without one)."""
    return status is None or status in (OK, "") or (isinstance(status, float) and status != status)


@dataclass(frozen=True)
class Gate:
    """Whether the next steps run, and why not."""

    status: str
    imaginary_freqs: bool
    broken_symmetry: bool

    @property
    def open(self) -> bool:
        return self.status == OK


def gate(
    imaginary: bool,
    broken_symmetry: bool,
    allow_broken_symmetry: bool = False,
    *,
    zero_frequencies: bool = False,
) -> Gate:
    """The protocol's gate, in k_SRME's order: imaginary modes first, then broken symmetry
    (unless allowed); before both, phonons that are all zero (nothing to gate). Used by the
    fc2 step (κ), the Grüneisen step (γ) and the scoring."""
    if zero_frequencies:
        status = ZERO_FREQUENCIES
    elif imaginary:
        status = IMAGINARY_MODES
    elif broken_symmetry and not allow_broken_symmetry:
        status = BROKEN_SYMMETRY
    else:
        status = OK
    return Gate(status, bool(imaginary), bool(broken_symmetry))


def failure_status(exc: BaseException, step: str) -> str:
    """Status recorded for an exception raised in a step's physics."""
    from kappaflow.forces import NonFiniteForcesError

    return NONFINITE_FORCES if isinstance(exc, NonFiniteForcesError) else step_error(step)


def error_fields(exc: BaseException) -> dict[str, Any]:
    """What a record keeps of an exception: one line, and the traceback."""
    return {"errors": [f"{type(exc).__name__}: {exc}"], "error_traceback": traceback.format_exc()}


# ----------------------------------------------------------------------------- flags


def kappa_bounds(temperature: float, checks: CheckSettings) -> tuple[float, float]:
    """(low, high) flag bounds of κ_TOT_ave at ``temperature``: the config's bounds at 300 K
    scaled as 300 K / T (an umklapp-limited κ falls as 1/T)."""
    scale = 300.0 / float(temperature)
    return checks.min_kappa * scale, checks.max_kappa * scale


def flags(
    values: Mapping[str, Any],
    temperatures: Sequence[float],
    kappas: Sequence[float | None],
    checks: CheckSettings,
) -> list[str]:
    """The flags of one result: ``values`` are its recorded measurements
    (``sum_rule_violation``: the largest net force on a displaced fc2 supercell over the
    largest force; ``volume_change``: V_relaxed / V_input − 1), ``kappas`` its κ_TOT_ave
    at ``temperatures`` (checked above 0 K, where finite). Missing values flag nothing."""
    out = []
    asr = values.get("sum_rule_violation")
    if _finite(asr) and asr > checks.sum_rule_tolerance:
        out.append(FLAG_SUM_RULE)
    dv = values.get("volume_change")
    if _finite(dv) and abs(dv) > checks.max_volume_change:
        out.append(FLAG_VOLUME_CHANGE)
    high = low = False
    for t, k in zip(temperatures, kappas, strict=False):
        if not (_finite(k) and _finite(t) and float(t) > 0):
            continue
        lo, hi = kappa_bounds(float(t), checks)
        high |= float(k) > hi
        low |= float(k) < lo
    if high:
        out.append(FLAG_KAPPA_HIGH)
    if low:
        out.append(FLAG_KAPPA_LOW)
    return out


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
