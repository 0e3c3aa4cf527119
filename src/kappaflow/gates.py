"""The status vocabulary of every result and the one gate of the protocol (PROTOCOL §5-§6).

A result's ``status`` is :data:`OK` or the reason it has no κ (γ): a gate that closed
(imaginary modes, broken symmetry, in k_SRME's order), a non-finite model output, or the
exception of a step (``<step>_error``). Records carry the status once; results written
before this vocabulary was unified also carry ``failure`` (the same word, or ``""`` when ok),
which readers ignore.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

#: the status of a result that has its numbers
OK = "ok"
#: gates (PROTOCOL §5): k_SRME checks imaginary modes first, then the space group
IMAGINARY_MODES = "imaginary_modes"
BROKEN_SYMMETRY = "broken_symmetry"
#: the model returned NaN/inf forces on a displaced supercell
NONFINITE_FORCES = "nonfinite_forces"


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


def gate(imaginary: bool, broken_symmetry: bool, allow_broken_symmetry: bool = False) -> Gate:
    """The protocol's gate, in k_SRME's order: imaginary modes first, then broken symmetry
    (unless allowed). Used by the fc2 step (κ), the Grüneisen step (γ) and the scoring."""
    if imaginary:
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
