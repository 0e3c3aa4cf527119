"""Known answers for SRD/SRE/SRME and the failure rules (PROTOCOL §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kappaflow import storage
from kappaflow.metrics import (
    KAPPA_ERROR_MAX,
    InvalidReferenceError,
    score_table,
    srd,
    srme,
    summarize,
)


def _row(mid, k, mode, weights, temps=(300.0,), **extra):
    return {
        "mp_id": mid,
        "temperatures": np.array(temps),
        "kappa_TOT_ave": np.array([k] if np.isscalar(k) else k),
        "mode_kappa_TOT_ave": None if mode is None else np.asarray(mode)[None],
        "weights": np.asarray(weights),
        **extra,
    }


def _table(rows):
    return pd.DataFrame(rows).set_index("mp_id")


def test_srd_known_values():
    assert srd(2.0, 1.0) == pytest.approx(2 / 3)
    assert srd(1.0, 2.0) == pytest.approx(-2 / 3)
    assert srd(3.0, 3.0) == 0.0
    assert srd(np.nan, 5.0) == -2.0
    assert srd(None, 5.0) == -2.0


def test_srme_identical_is_zero_and_bounded():
    rng = np.random.default_rng(0)
    mode = rng.random((4, 6))
    w = np.array([1, 3, 3, 1])
    k = mode.sum() / w.sum()
    assert srme(mode, mode, w, k, k) == 0.0
    other = rng.random((4, 6))
    k2 = other.sum() / w.sum()
    value = srme(other, mode, w, k2, k)
    assert abs(srd(k2, k)) <= value <= 2.0


def test_hand_computed_two_materials():
    # material A: 1 q-point weight 2, 2 bands; mode κ (already × w) pred [3, 1], ref [2, 2]
    # κ = Σ mode / Σ w: pred 2.0, ref 2.0 -> SRD 0; SRME = 2·(|3-2|+|1-2|)/2 / (2+2) = 0.5
    # material B: pred κ 1 (modes [1, 1], w=2 -> 1.0), ref κ 3 (modes [2, 4] -> 3.0)
    # SRD = 2(1-3)/4 = -1, SRE 1; SRME = 2·(1+3)/2/(1+3) = 1.0
    pred = _table([_row("A", 2.0, [[3, 1]], [2]), _row("B", 1.0, [[1, 1]], [2])])
    ref = _table([_row("A", 2.0, [[2, 2]], [2]), _row("B", 3.0, [[2, 4]], [2])])
    df = score_table(pred, ref)
    assert df.loc["A", "SRD"] == 0.0
    assert df.loc["A", "SRME"] == pytest.approx(0.5)
    assert df.loc["B", "SRD"] == pytest.approx(-1.0)
    assert df.loc["B", "SRE"] == pytest.approx(1.0)
    assert df.loc["B", "SRME"] == pytest.approx(1.0)
    s = summarize(df)
    assert s["n_materials"] == 2
    assert s["n_failed"] == 0
    assert s["mean_SRME"] == pytest.approx(0.75)
    assert s["mean_SRE"] == pytest.approx(0.5)
    assert s["frac_within_factor_2"] == pytest.approx(0.5)  # B is off by a factor 3


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"imaginary_freqs": True}, "imaginary_modes"),
        ({"initial_space_group_number": 225, "relaxed_space_group_number": 166}, "broken_symmetry"),
    ],
)
def test_failures_score_two(extra, reason):
    pred = _table([_row("A", 2.0, [[2, 2]], [2], **extra)])
    ref = _table([_row("A", 2.0, [[2, 2]], [2])])
    row = score_table(pred, ref).loc["A"]
    assert row["failed"]
    assert row["failure"] == reason
    assert row["SRME"] == KAPPA_ERROR_MAX
    assert row["SRE"] == KAPPA_ERROR_MAX


def test_missing_and_nan_predictions_are_failures_not_errors():
    pred = _table([_row("B", np.nan, [[np.nan, np.nan]], [2])])
    ref = _table([_row("A", 2.0, [[2, 2]], [2]), _row("B", 3.0, [[2, 4]], [2])])
    df = score_table(pred, ref)
    assert df.loc["A", "failure"] == "missing"
    assert df.loc["B", "failure"] == "nan_kappa"
    assert summarize(df)["mean_SRME"] == 2.0
    assert summarize(df)["n_failed"] == 2


def test_temperatures_matched_by_value_not_position():
    # prediction computed at [600, 300]: the 300 K value is the second one
    pred = _table([_row("A", [1.0, 2.0], [[[0.5, 0.5]], [[3, 1]]][1], [2], temps=(600.0, 300.0))])
    pred.at["A", "mode_kappa_TOT_ave"] = np.array([[[1, 1]], [[3, 1]]], dtype=float)
    ref = _table([_row("A", 2.0, [[2, 2]], [2])])
    row = score_table(pred, ref, temperature=300.0).loc["A"]
    assert row["kappa_TOT_ave"] == 2.0
    assert row["SRME"] == pytest.approx(0.5)
    # a prediction without 300 K is a failure
    pred2 = _table([_row("A", [1.0], [[1, 1]], [2], temps=(600.0,))])
    assert score_table(pred2, ref).loc["A", "failed"]


def test_selection_and_bad_reference():
    ref = _table([_row("A", 2.0, [[2, 2]], [2]), _row("B", 3.0, [[2, 4]], [2])])
    pred = ref.copy()
    assert list(score_table(pred, ref, materials=["B"]).index) == ["B"]
    with pytest.raises(InvalidReferenceError, match="C"):
        score_table(pred, ref, materials=["C"])
    bad = _table([_row("A", np.nan, [[2, 2]], [2])])
    with pytest.raises(InvalidReferenceError, match="A"):
        score_table(pred, bad)


def test_reference_files_score_zero_against_themselves(reference_dir):
    ref = storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz")
    assert len(ref) == 103
    # the reference's own invariant: Σ mode κ / Σ w = κ (PROTOCOL §2)
    for _, row in ref.iterrows():
        total = row["mode_kappa_TOT_ave"][0].sum() / row["weights"].sum()
        assert total == pytest.approx(row["kappa_TOT_ave"][0], rel=1e-9)
    df = score_table(ref, ref)
    s = summarize(df)
    assert s["n_materials"] == 103
    assert s["mean_SRME"] == 0.0
    assert s["mean_SRE"] == 0.0
    assert s["n_failed"] == 0


def test_nac_against_nonac_is_small_but_nonzero(reference_dir):
    ref = storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz")
    nac = storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_NAC.json.gz")
    s = summarize(score_table(nac, ref))
    # NAC/noNAC κ ratio 0.894-1.171 (PROTOCOL §2): |SRD| <= 2·0.171/2.171
    assert 0 < s["mean_SRE"] < 0.16
    assert s["mean_SRME"] >= s["mean_SRE"]
    assert s["n_failed"] == 0


def test_missing_mode_data_makes_mean_srme_nan_not_a_smaller_average():
    pred = _table([_row("A", 2.0, None, [2]), _row("B", 1.0, [[1, 1]], [2])])
    ref = _table([_row("A", 2.0, [[2, 2]], [2]), _row("B", 3.0, [[2, 4]], [2])])
    df = score_table(pred, ref)
    assert not df.loc["A", "failed"] and np.isnan(df.loc["A", "SRME"])
    s = summarize(df)
    assert np.isnan(s["mean_SRME"]) and s["n_srme_missing"] == 1
    assert s["mean_SRE"] == pytest.approx(0.5)  # SRE is defined for both
