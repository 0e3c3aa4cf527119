"""A material scored against the DFT reference gives the numbers of the commit before the
redesign (issue 14): CHGNet 0.3.0 on NaCl-rs, coarse mesh, through the real Snakefile."""

from __future__ import annotations

import os

import pytest
from golden.make_golden import collect, diff, load_golden, make_scored_workdir, run_workflow

pytestmark = [pytest.mark.realmodel, pytest.mark.workflow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scored_material_matches_the_golden_values(tmp_path, reference_dir):
    pytest.importorskip("chgnet")
    from golden.make_golden import unify

    golden = load_golden()
    workdir = make_scored_workdir(tmp_path / "scored")
    env = {**os.environ, "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)}
    run_workflow(__import__("pathlib").Path(REPO), workdir, env)
    values = collect(workdir)
    # CHGNet runs in float32: allow its last digits to differ between CPUs
    mismatches = diff(unify(golden["values"]["scored"]), values, rtol=1e-6, atol=1e-12)
    assert not mismatches, f"differs from {golden['commit'][:10]}:\n" + "\n".join(mismatches[:30])
    assert values["chgnet-0.3.0/metrics.csv"]["mp_id"] == ["mp-22862"]
    assert values["chgnet-0.3.0/metrics.csv"]["failed"] == [False]
