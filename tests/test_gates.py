"""The status vocabulary and the one gate (kappaflow.gates), PROTOCOL §5-§6."""

from __future__ import annotations

import pytest

from kappaflow import gates
from kappaflow.forces import NonFiniteForcesError


def test_gate_order_is_imaginary_modes_first():
    assert gates.gate(False, False).status == gates.OK
    assert gates.gate(True, True).status == gates.IMAGINARY_MODES
    assert gates.gate(False, True).status == gates.BROKEN_SYMMETRY
    opened = gates.gate(False, True, allow_broken_symmetry=True)
    assert opened.open and opened.broken_symmetry


def test_failure_status_of_exceptions():
    assert gates.failure_status(NonFiniteForcesError("nan"), "fc3") == "nonfinite_forces"
    assert gates.failure_status(RuntimeError("x"), "kappa") == "kappa_error"


def test_error_fields_keep_one_line_and_the_traceback():
    try:
        raise ValueError("bad cell")
    except ValueError as exc:
        fields = gates.error_fields(exc)
    assert fields["errors"] == ["ValueError: bad cell"]
    assert "raise ValueError" in fields["error_traceback"]


@pytest.mark.parametrize(
    ("status", "ok"), [("ok", True), ("", True), (None, True), ("fc3_error", False)]
)
def test_is_ok(status, ok):
    assert gates.is_ok(status) is ok
