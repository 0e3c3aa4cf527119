"""A deliberately slow ASE calculator for the SLURM time-limit test: EMT plus a fixed
sleep per atom evaluated, so a job's duration is set by its number of atom evaluations
(like an MLIP's), not by the machine's speed. ``$SLOW_EMT_SECONDS_PER_ATOM`` overrides
the configured delay, so a test can make a resubmitted job fast without changing the
workflow config (which would re-trigger finished jobs through their params)."""

from __future__ import annotations

import os
import time

from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT


class SlowEMT(EMT):
    def __init__(self, seconds_per_atom: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.seconds_per_atom = float(os.environ.get("SLOW_EMT_SECONDS_PER_ATOM", seconds_per_atom))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        n = len(atoms if atoms is not None else self.atoms)
        time.sleep(self.seconds_per_atom * n)
        super().calculate(atoms, properties, system_changes)


def slow_emt(seconds_per_atom: float = 0.1) -> SlowEMT:
    return SlowEMT(seconds_per_atom)
