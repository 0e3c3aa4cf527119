"""Issue 13, class 4: the scoring refuses invalid predictions (PROTOCOL §6).

A negative, zero, infinite or NaN κ is a failure scored 2, never 0; mode κ that do not sum
to κ, or that sit on other q-points or weights than the reference's, are input errors naming
the material; a table that is unreadable, empty, without ids, temperatures or 300 K, or
with duplicate ids, is an input error naming the file."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from kappaflow import storage
from kappaflow.cli import main
from kappaflow.gates import NONFINITE_KAPPA, NONPOSITIVE_KAPPA
from kappaflow.metrics import (
    KAPPA_ERROR_MAX,
    InvalidPredictionError,
    InvalidReferenceError,
    score_table,
    srd,
    srme,
    summarize,
)
from kappaflow.steps.evaluate import run_model_metrics, run_score

NONAC = "kappas_phononDB_PBE_noNAC.json.gz"
PICK = ["mp-22862", "mp-804", "mp-2472"]  # NaCl-rs, GaN-wz, SrO-rs


@pytest.fixture(scope="module")
def dft(reference_dir) -> pd.DataFrame:
    return storage.read_kappa_table(reference_dir / NONAC).loc[PICK]


def _write(tmp_path, table: pd.DataFrame, name="pred.json.gz"):
    path = tmp_path / name
    storage.write_kappa_table(path, table)
    return path


def _score_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["score", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_negative_kappa_is_a_failure_not_a_perfect_score(dft, reference_dir, tmp_path):
    """Issue 13's example: κ = −κ_DFT scored SRD = SRE = 0 (zero denominator -> 0)."""
    neg = dft.copy()
    neg["kappa_TOT_ave"] = [-k for k in dft["kappa_TOT_ave"]]
    neg["mode_kappa_TOT_ave"] = [-m for m in dft["mode_kappa_TOT_ave"]]
    summary = run_score(
        predictions=_write(tmp_path, neg),
        reference=reference_dir / NONAC,
        out_csv=tmp_path / "m.csv",
        materials=PICK,
    )
    assert summary["mean_SRE"] == summary["mean_SRME"] == KAPPA_ERROR_MAX
    assert summary["n_failed"] == 3
    per = pd.read_csv(tmp_path / "m.csv").set_index("mp_id")
    assert set(per["failure"]) == {NONPOSITIVE_KAPPA}
    assert (per["SRD"] == -KAPPA_ERROR_MAX).all()


@pytest.mark.parametrize(
    ("k", "reason"),
    [
        (0.0, NONPOSITIVE_KAPPA),
        (-1e-9, NONPOSITIVE_KAPPA),
        (np.inf, NONFINITE_KAPPA),
        (-np.inf, NONFINITE_KAPPA),
        (np.nan, "nan_kappa"),
    ],
    ids=["zero", "tiny-negative", "inf", "-inf", "nan"],
)
def test_invalid_kappa_values_fail_with_their_reason(dft, k, reason):
    pred = dft.copy()
    pred["kappa_TOT_ave"] = [np.array([k])] * len(pred)
    pred["mode_kappa_TOT_ave"] = None
    df = score_table(pred, dft)
    assert (df["failure"] == reason).all()
    assert (df["SRE"] == KAPPA_ERROR_MAX).all() and (df["SRME"] == KAPPA_ERROR_MAX).all()


def test_srd_and_srme_never_divide_by_zero():
    assert srd(-5.0, 5.0) == -KAPPA_ERROR_MAX
    assert srd(0.0, 5.0) == -KAPPA_ERROR_MAX
    assert srd(np.inf, 5.0) == -KAPPA_ERROR_MAX
    with pytest.raises(InvalidReferenceError, match="positive"):
        srd(1.0, 0.0)
    mode = np.ones((2, 3))
    assert srme(-mode, mode, np.array([1, 1]), -3.0, 3.0) == KAPPA_ERROR_MAX


def test_mode_kappa_that_do_not_sum_to_kappa_are_an_input_error(dft, reference_dir, tmp_path):
    bad = dft.copy()
    bad.at["mp-804", "mode_kappa_TOT_ave"] = 2 * dft.loc["mp-804", "mode_kappa_TOT_ave"]
    with pytest.raises(InvalidPredictionError, match=r"mp-804.*sum to") as info:
        run_score(
            predictions=_write(tmp_path, bad),
            reference=reference_dir / NONAC,
            out_csv=tmp_path / "m.csv",
            materials=PICK,
        )
    assert "pred.json.gz" in str(info.value) and "relative 1.00e+00" in str(info.value)
    # within 1e-6 relative: accepted (the DFT files hold it to 9e-11)
    ok = dft.copy()
    ok.at["mp-804", "mode_kappa_TOT_ave"] = dft.loc["mp-804", "mode_kappa_TOT_ave"] * (1 + 1e-7)
    assert not score_table(ok, dft)["failed"].any()


def _permuted(dft, mid):
    """The same modes and κ, listed on the q-points in another order."""
    t = dft.copy()
    order = np.roll(np.arange(len(dft.loc[mid, "qpoints"])), 1)
    t.at[mid, "qpoints"] = dft.loc[mid, "qpoints"][order]
    t.at[mid, "weights"] = dft.loc[mid, "weights"][order]
    t.at[mid, "mode_kappa_TOT_ave"] = dft.loc[mid, "mode_kappa_TOT_ave"][:, order]
    return t


def test_mode_kappa_on_other_qpoints_or_weights_are_an_input_error(dft):
    with pytest.raises(InvalidPredictionError, match=r"mp-2472: q-point 0 is"):
        score_table(_permuted(dft, "mp-2472"), dft)
    w = dft.copy()
    weights = dft.loc["mp-804", "weights"].copy()
    weights[[0, 1]] = weights[[1, 0]] + np.array([1, -1])  # same sum, other weights
    w.at["mp-804", "weights"] = weights
    with pytest.raises(InvalidPredictionError, match=r"mp-804.*weights"):
        score_table(w, dft)
    fewer = dft.copy()
    for col in ("qpoints", "weights"):
        fewer.at["mp-22862", col] = None
    fewer.at["mp-22862", "mode_kappa_TOT_ave"] = dft.loc["mp-22862", "mode_kappa_TOT_ave"][:, 1:]
    with pytest.raises(InvalidPredictionError, match=r"mp-22862: mode κ shape"):
        score_table(fewer, dft)


def test_the_workflow_table_on_a_test_mesh_keeps_a_note(dft, reference_dir, tmp_path):
    """run_model_metrics scores kappaflow's own gathered table; a mesh override (coarse
    test meshes) leaves SRME NaN with a note instead of an error."""
    coarse = dft.copy()
    mode = dft.loc["mp-22862", "mode_kappa_TOT_ave"][:, :10]
    coarse.at["mp-22862", "mode_kappa_TOT_ave"] = mode
    coarse.at["mp-22862", "qpoints"] = dft.loc["mp-22862", "qpoints"][:10]
    coarse.at["mp-22862", "weights"] = np.full(10, 1.0)
    coarse.at["mp-22862", "kappa_TOT_ave"] = np.array([mode.sum() / 10])
    run_model_metrics(
        table=_write(tmp_path, coarse),
        reference=reference_dir / NONAC,
        out_csv=tmp_path / "m.csv",
        materials=PICK,
    )
    per = pd.read_csv(tmp_path / "m.csv").set_index("mp_id")
    assert np.isnan(per.loc["mp-22862", "SRME"])
    assert "(different q-mesh?)" in per.loc["mp-22862", "note"]
    assert per.loc["mp-804", "SRME"] == 0.0


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: pd.concat([t, t.iloc[:1]]), ["duplicate mp_id", "mp-22862"]),
        (lambda t: t.iloc[:0], ["no rows"]),
        (lambda t: t.drop(columns=["temperatures"]), ["no 'temperatures' column"]),
        (
            lambda t: t.assign(temperatures=[np.array([600.0])] * len(t)),
            ["no material has a κ at 300 K", "600"],
        ),
        (lambda t: t.assign(kappa_TOT_ave=["fast"] * len(t)), ["'kappa_TOT_ave'", "fast"]),
        (lambda t: t.drop(columns=["kappa_TOT_ave"]), ["no 'kappa_TOT_ave' column"]),
    ],
    ids=["duplicate-ids", "empty", "no-temperatures", "no-300K", "text-kappa", "no-kappa"],
)
def test_bad_tables_are_errors_naming_file_and_problem(
    dft, reference_dir, tmp_path, capsys, edit, words
):
    path = _write(tmp_path, edit(dft.reset_index()).set_index("mp_id"))
    rc, out, err = _score_cli(
        capsys,
        "--predictions",
        path,
        "--reference",
        reference_dir / NONAC,
        "--out",
        tmp_path / "m.csv",
    )
    assert rc == 2, out + err
    assert "Traceback" not in err and str(path) in err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "m.csv").exists()


def test_a_material_without_300k_among_others_is_a_failure(dft):
    pred = dft.copy()
    pred.at["mp-804", "temperatures"] = np.array([600.0])
    df = score_table(pred, dft)
    assert df.loc["mp-804", "failure"] == "no_prediction_at_300K"
    assert not df.loc[["mp-22862", "mp-2472"], "failed"].any()


@pytest.mark.parametrize("which", ["predictions", "reference"])
@pytest.mark.parametrize(
    "content", [b"\x1f\x8b\x08garbage", b"not json at all", b""], ids=["bad-gzip", "text", "empty"]
)
def test_score_names_the_file_it_could_not_read(
    dft, reference_dir, tmp_path, capsys, which, content
):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(content if content[:2] == b"\x1f\x8b" else gzip.compress(content))
    good = reference_dir / NONAC
    pred, ref = (bad, good) if which == "predictions" else (good, bad)
    rc, out, err = _score_cli(
        capsys, "--predictions", pred, "--reference", ref, "--out", tmp_path / "m.csv"
    )
    assert rc == 2, out + err
    assert f"{which} table {bad} could not be read" in err, err
    assert "Traceback" not in err


def test_a_reference_that_contradicts_itself_is_an_error(dft):
    ref = dft.copy()
    ref.at["mp-804", "mode_kappa_TOT_ave"] = 3 * dft.loc["mp-804", "mode_kappa_TOT_ave"]
    with pytest.raises(InvalidReferenceError, match=r"reference mp-804"):
        score_table(dft, ref)
    ref = dft.copy()
    ref.at["mp-804", "kappa_TOT_ave"] = np.array([-1.0])
    with pytest.raises(InvalidReferenceError, match=r"positive.*mp-804"):
        score_table(dft, ref)


def test_valid_predictions_still_score_as_before(dft):
    """The DFT file against itself: 0 everywhere; NaN mode κ: a failure (unchanged)."""
    s = summarize(score_table(dft, dft))
    assert s["mean_SRME"] == s["mean_SRE"] == 0.0 and s["n_failed"] == 0 and s["n_flagged"] == 0
    nan_modes = dft.copy()
    nan_modes.at["mp-804", "mode_kappa_TOT_ave"] = dft.loc["mp-804", "mode_kappa_TOT_ave"] * np.nan
    assert score_table(nan_modes, dft).loc["mp-804", "failure"] == "nan_mode_kappa"


def test_a_table_without_mode_kappa_is_scored_without_srme(dft, reference_dir, tmp_path):
    """null mode κ cells (read back as NaN) mean no mode data: SRME NaN with a note, κ
    scored; a κ of 1e6 is a result with a flag (a regression of this change, caught by the
    case table of docs/reliability.md)."""
    pred = dft.copy()
    pred["kappa_TOT_ave"] = [np.array([2e3]), np.array([5.0]), np.array([1e6])]
    pred["mode_kappa_TOT_ave"] = None
    summary = run_score(
        predictions=_write(tmp_path, pred),
        reference=reference_dir / NONAC,
        out_csv=tmp_path / "m.csv",
        materials=PICK,
    )
    per = pd.read_csv(tmp_path / "m.csv").set_index("mp_id")
    assert not per["failed"].any() and per["SRME"].isna().all()
    assert (per["note"] == "no mode-resolved kappa: SRME not computed").all()
    assert per.loc["mp-2472", "flags"] == "kappa_above_bound"
    assert summary["n_flagged"] == 1 and summary["n_failed"] == 0
