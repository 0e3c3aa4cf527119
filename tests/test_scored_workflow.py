"""A material scored against the DFT reference, through the real Snakefile: CHGNet 0.3.0 on
NaCl-rs (mp-22862) on a coarse mesh.

* its numbers equal those of the commit before the redesign (issue 14; tests/golden/);
* the leaderboard puts it among the published models, ranked on the same material;
* its report, opened in headless Chromium, shows every registered figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from golden.make_golden import collect, diff, load_golden, make_scored_workdir, unify

pytestmark = [pytest.mark.realmodel, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, reference_dir, published_dir) -> Path:
    pytest.importorskip("chgnet")
    workdir = make_scored_workdir(tmp_path_factory.mktemp("scored"))
    env = {
        **os.environ,
        "KAPPAFLOW_REFERENCE_DIR": str(reference_dir),
        "KAPPAFLOW_PUBLISHED_DIR": str(published_dir),
    }
    for args in ([], ["--report", "report.html"]):
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
             str(workdir), "--cores", "2", *args],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=3000,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-20000:]
    return workdir


def test_scored_material_matches_the_golden_values(scored):
    golden = load_golden()
    values = collect(scored)
    # CHGNet runs in float32: allow its last digits to differ between CPUs
    mismatches = diff(unify(golden["values"]["scored"]), values, rtol=1e-6, atol=1e-12)
    assert not mismatches, f"differs from {golden['commit'][:10]}:\n" + "\n".join(mismatches[:30])
    assert values["chgnet-0.3.0/metrics.csv"]["mp_id"] == ["mp-22862"]
    assert values["chgnet-0.3.0/metrics.csv"]["failed"] == [False]


def test_quoted_metrics_in_the_summary(scored):
    summary = pd.read_csv(scored / "results" / "metrics.csv").iloc[0]
    per = pd.read_csv(scored / "results" / "chgnet-0.3.0" / "metrics.csv").iloc[0]
    assert summary["failure_rate"] == 0.0 and summary["imaginary_mode_rate"] == 0.0
    assert summary["n_rs"] == 1 and summary["SRE_rs"] == pytest.approx(per["SRE"])
    assert per["structure_type"] == "rs"
    # W1 of CHGNet's NaCl spectrum against DFT (coarse mesh vs 19³: both weighted), in THz
    assert 0.05 < per["spectrum_w1"] < 2.0 and summary["spectrum_w1"] == per["spectrum_w1"]
    ratio = per["kappa_TOT_ave"] / per["DFT_kappa_TOT_ave"]
    assert summary["bias_factor"] == pytest.approx(ratio, rel=1e-9)


def test_leaderboard_ranks_published_models_on_the_same_material(scored, published_dir):
    board = pd.read_csv(scored / "results" / "leaderboard.csv")
    yours = board[board["yours"]]
    assert list(yours["model"]) == ["chgnet-0.3.0"] and yours["n_materials"].iloc[0] == 1
    ksrme = board[board["origin"] == "k_SRME"].set_index("model")
    assert len(ksrme) == 16 and (ksrme["n_materials"] == 1).all()
    # published CHGNet on NaCl alone: its own SRME of mp-22862, re-scored SRE vs noNAC
    chg = pd.read_csv(published_dir / "kappa" / "CHGNet.csv").set_index("mp_id").loc["mp-22862"]
    assert ksrme.loc["CHGNet", "kappa_SRME"] == pytest.approx(chg["SRME"], abs=1e-4)
    assert "NAC" in ksrme.loc["CHGNet", "flags"]  # the Nov-2024 table was scored vs NAC
    mbd = board[board["origin"] == "matbench-discovery"]
    assert len(mbd) > 40 and mbd["rank"].isna().all()  # aggregates over 103: not ranked
    md = (scored / "results" / "leaderboard.md").read_text()
    assert "**chgnet-0.3.0** (yours)" in md
    for name in ("ranking", "sre-vs-srme", "parity-grid"):
        for ext in ("png", "svg"):
            assert (scored / "results" / "plots" / f"{name}.{ext}").stat().st_size > 1000


def test_report_in_a_browser(scored):
    from browser import Browser, BrowserUnavailable, assert_report_ok, report_csv

    try:
        with Browser(height=1600) as browser:
            results = assert_report_ok(
                scored / "report.html", browser, REPO / "logs" / "report_browser" / "scored"
            )
    except BrowserUnavailable as exc:
        pytest.skip(f"headless Chromium unavailable: {exc}")
    for figure in ("ranking.png", "sre-vs-srme.png", "parity-grid.png"):
        assert f"results/plots/{figure}" in results
    board = report_csv(results["results/leaderboard.csv"])
    assert {"rank", "model", "kappa_SRME", "dft_reference", "yours"} <= set(board.columns)
    assert board["yours"].astype(str).str.lower().eq("true").sum() == 1
