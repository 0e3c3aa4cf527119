"""Progress lines of long loops (kappaflow.progress) and of a real force job."""

from __future__ import annotations

import io as stdio
import re

from ase.calculators.emt import EMT

from kappaflow.progress import Progress

LINE = re.compile(r"(\d+)/(\d+) supercells \((\d+) %\), [\d.e+-]+ supercells/s, ~(.+) left")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_at_a_steady_pace_with_time_left():
    clock, out = Clock(), stdio.StringIO()
    p = Progress(
        "fc3 forces", "supercells", every_s=10, every_fraction=0.25, stream=out, clock=clock
    )
    for i in range(1, 101):
        clock.t = 2.0 * i  # 0.5 supercells/s
        p(i, 100)
    lines = out.getvalue().splitlines()
    # a line every 25 % (every 50 s > 10 s: the time rule fires first, every 10 s = 5 items)
    assert len(lines) == len(p.lines) == 20
    done = [int(LINE.search(x)[1]) for x in lines]
    assert done == list(range(5, 101, 5))
    first = LINE.search(lines[0])
    assert first[4] == "3.2 min"  # 95 left at 0.5/s = 190 s
    assert LINE.search(lines[-1])[3] == "100"


def test_fast_loops_are_not_spammed():
    clock, out = Clock(), stdio.StringIO()
    p = Progress("fc2 forces", "supercells", stream=out, clock=clock)
    for i in range(1, 1001):
        clock.t = i * 1e-4  # 0.1 s in all: only the last line
        p(i, 1000)
    assert len(out.getvalue().splitlines()) == 1


def test_terminal_redraws_one_line():
    clock, out = Clock(), stdio.StringIO()
    p = Progress("κ", "grid points", stream=out, clock=clock, tty=True, every_s=1)
    for i in range(1, 4):
        clock.t = 5.0 * i
        p(i, 3)
    text = out.getvalue()
    assert text.count("\r\033[K") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_a_force_job_logs_intermediate_progress(capsys, monkeypatch):
    """The serial force loop of a real displacement set reports count, rate and time left."""
    from ase.build import bulk

    from kappaflow import phonons, progress
    from kappaflow.settings import Phono3pySettings
    from kappaflow.structures import material_from_frame

    atoms = bulk("Cu", "fcc", a=3.59)
    atoms.info = {"material_id": "Cu", "fc2_supercell": [2, 2, 2], "fc3_supercell": [3, 3, 3],
                  "q_mesh": [3, 3, 3]}  # fmt: skip
    ph3 = phonons.init_phono3py(atoms, material_from_frame(atoms, 0), Phono3pySettings())
    cells = ph3.supercells_with_displacements
    ticks = iter(range(10**6))
    monkeypatch.setattr(progress.time, "monotonic", lambda: 2.0 * next(ticks))  # 2 s per call
    report = Progress("fc3 forces", "supercells")
    phonons.force_run(cells, EMT(), progress=report)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "fc3 forces:" in x]
    assert len(lines) >= 5 and all(LINE.search(x) for x in lines)
    assert LINE.search(lines[0])[2] == str(len(cells))
    assert LINE.search(lines[-1])[1] == str(len(cells))
    assert 0 < int(LINE.search(lines[1])[1]) < len(cells)  # intermediate, not only start/end
