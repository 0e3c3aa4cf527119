"""Figures: parity with failures, κ(T), cumulative κ (its end point is κ)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kappaflow import plots, storage
from kappaflow.metrics import score_table
from kappaflow.steps.evaluate import run_cumulative


@pytest.fixture(scope="module")
def ref(reference_dir):
    return storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz")


def test_cumulative_kappa_ends_at_kappa(ref):
    for mid in ("mp-22862", "mp-804"):
        row = ref.loc[mid]
        f, c = plots.cumulative_kappa(
            row["frequencies"], row["mode_kappa_TOT_ave"][0], row["weights"]
        )
        assert np.all(np.diff(f) >= 0)
        assert c[-1] == pytest.approx(row["kappa_TOT_ave"][0], rel=1e-9)


def test_parity_marks_failures(ref, tmp_path):
    nac = ref.copy()
    nac.at["mp-22862", "kappa_TOT_ave"] = np.array([np.nan])
    metrics = score_table(nac, ref)
    fig = plots.parity(metrics, "test-model", 300.0)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "failed (1)" in labels and "computed (102)" in labels
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    storage.write_figure(tmp_path / "parity.svg", fig)
    assert (tmp_path / "parity.svg").read_text().lstrip().startswith("<?xml")


def test_kappa_vs_temperature_and_cumulative_files(ref, tmp_path):
    table = pd.DataFrame(
        [
            {
                "mp_id": "A",
                "desc": "A-rs",
                "temperatures": np.array([300.0, 600.0]),
                "kappa_TOT_ave": np.array([2.0, 1.0]),
            }
        ]
    ).set_index("mp_id")
    fig = plots.kappa_vs_temperature(table, "m")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 1.0])
    storage.write_kappa_table(tmp_path / "pred.json.gz", ref.loc[["mp-22862"]])
    run_cumulative(
        table=tmp_path / "pred.json.gz",
        reference=tmp_path / "pred.json.gz",
        materials=["mp-22862", "not-in-reference"],
        model="m",
        temperature=300.0,
        out_dir=tmp_path / "cum",
    )
    assert [p.name for p in (tmp_path / "cum").iterdir()] == ["mp-22862.svg"]
