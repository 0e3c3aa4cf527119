"""Published peers: the metrics.txt parser against the parsed published tables, the pinned
file table, the Matbench Discovery data, and the fair ranking on the user's materials."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kappaflow import peers, storage
from kappaflow.metrics import score_table

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
MBD_CSV = REPO / "src" / "kappaflow" / "data" / "matbench_discovery.csv"


@pytest.fixture(scope="module")
def ref_tables(reference_dir):
    return {
        name: storage.read_kappa_table(reference_dir / f"kappas_phononDB_PBE_{name}.json.gz")
        for name in ("noNAC", "NAC")
    }


@pytest.fixture(scope="module")
def ref_kappa(ref_tables):
    """NAC/noNAC κ_DFT at 300 K by mp_id."""
    return {
        k: t["kappa_TOT_ave"].map(lambda a: float(np.ravel(a)[0])) for k, t in ref_tables.items()
    }


@pytest.fixture(scope="module")
def published(published_dir):
    return storage.read_published_tables(published_dir, "kappa")


@pytest.fixture(scope="module")
def mbd():
    return peers.read_mbd_table(MBD_CSV.read_text())


@pytest.mark.parametrize("model", ["MACE-M", "ORBv2"])
def test_parser_reproduces_the_published_tables(model, published_dir, ref_kappa):
    """The truncated raw metrics.txt parses to the rows of published/kappa/<model>.csv
    (values, failure flags, missing rows, the NAC reference) and to its header means."""
    text = (DATA / f"ksrme_{model}_metrics_head.txt").read_text()
    header, _ = peers.parse_metrics_text(text)
    parsed = peers.published_table_from_text(text, ref_kappa)
    csv = peers.normalize_published(pd.read_csv(published_dir / "kappa" / f"{model}.csv"))
    expected = csv.loc[parsed.index]
    assert len(parsed) == {"MACE-M": 10, "ORBv2": 5}[model]
    for col in ("SRME", "SRE", "kappa_TOT_ave", "DFT_kappa_TOT_ave"):
        np.testing.assert_array_equal(parsed[col].to_numpy(), expected[col].to_numpy(), col)
    assert parsed["SRME_failed"].tolist() == expected["SRME_failed"].tolist()
    assert parsed["desc"].isna().tolist() == expected["desc"].isna().tolist()
    assert set(parsed["dft_ref_used"]) == {"NAC"} == set(expected["dft_ref_used"])
    summary = pd.read_csv(published_dir / "kappa" / "_summary.csv").set_index("model")
    assert header["mean_SRME"] == summary.loc[model, "mean_SRME"]
    assert header["mean_SRE"] == summary.loc[model, "mean_SRE"]
    if model == "MACE-M":  # GaAs-wz is absent from MACE-M's output: None/NaN row, a failure
        row = parsed.loc["mp-8883"]
        assert row["SRME"] == 2.0 and row["SRME_failed"] and np.isnan(row["kappa_TOT_ave"])
    else:  # an absurd κ printed in scientific notation is a number, not a failure
        assert parsed.loc["mp-2472", "kappa_TOT_ave"] == 3.879807e04
        assert not parsed.loc["mp-2472", "SRME_failed"]


def test_gamma_parser_reproduces_the_published_table(published_dir):
    header, table = peers.parse_metrics_text(
        (DATA / "gamma_srme_CHGNet_metrics_gamma_head.txt").read_text()
    )
    expected = pd.read_csv(published_dir / "gruneisen" / "CHGNet.csv").set_index("mp_id")
    table = table.set_index("mp_id")
    assert header == {"model": "CHGNet", "mean_SRME": 1.3452177023026095,
                      "mean_SRE": 0.9766687076903208}  # fmt: skip
    for col in ("SRME", "SRE", "gamma", "DFT_gamma", "imaginary_freqs"):
        assert table[col].tolist() == expected.loc[table.index, col].tolist(), col


def test_parser_rejects_other_text():
    with pytest.raises(peers.PublishedFormatError, match="MODEL"):
        peers.parse_metrics_text("mp_id,desc\nmp-1,X\n")
    text = (DATA / "ksrme_ORBv2_metrics_head.txt").read_text().splitlines()
    text[6] = text[6] + " 1.0"  # one field too many in a row
    with pytest.raises(peers.PublishedFormatError, match="line 7"):
        peers.parse_metrics_text("\n".join(text))


def test_dft_reference_of_every_published_table(published, ref_kappa):
    """The NAC/noNAC decision from the printed DFT column alone agrees with the provenance
    of the parsed tables: the 10 Nov-2024 tables are NAC, the 6 later ones noNAC."""
    found = {}
    for model, df in published.items():
        found[model] = peers.dft_reference_used(df["DFT_kappa_TOT_ave"], ref_kappa, df.index)
        assert found[model] == df["dft_ref_used"].iloc[0], model
    assert sorted(m for m, r in found.items() if r == "noNAC") == [
        "GRACE-1L-OAM", "GRACE-2L-OAM", "GRACE-2L-r6-11Nov2024", "MACE-MPA-0",
        "MatterSim-V1-1M", "MatterSim-V1-5M",
    ]  # fmt: skip
    with pytest.raises(peers.PublishedFormatError, match="none"):
        peers.dft_reference_used(ref_kappa["noNAC"] * 1.01, ref_kappa, ref_kappa["noNAC"].index)


def test_pinned_file_table(published_dir):
    """One pinned entry per parsed table, named like published/<kind>/<model>.csv."""
    for kind in ("kappa", "gruneisen"):
        stems = {p.stem for p in (published_dir / kind).glob("*.csv")} - {"_summary"}
        assert {e.model for e in peers.PUBLISHED_FILES if e.kind == kind} == stems
    for e in peers.PUBLISHED_FILES:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert e.commit in e.url and e.url.endswith(e.path)
    assert len({e.sha256 for e in peers.PUBLISHED_FILES}) == len(peers.PUBLISHED_FILES)
    entry = peers.published_file("MatterSim-V1-1M")
    assert entry.url == (
        "https://raw.githubusercontent.com/MPA2suite/k_SRME/"
        "0269a946a1e4c53552b060a92b98df94e039fd80/models/MatterSim-V1/metrics-MatterSim-1M.txt"
    )
    with pytest.raises(KeyError, match="known: CHGNet"):
        peers.published_file("nope")


def test_matbench_discovery_table(mbd):
    assert len(mbd) == 52
    tece = mbd.set_index("model").loc["TECE-OAM-RRA-1.0"]
    assert tece["kappa_SRME"] == 0.0927 and tece["kappa_SRE"] == 0.0447
    assert tece["protocol"] == "phonondb-v1" and tece["date"] == "2026-07-05"
    assert tece["source_path"] == "models/tace/tece-oam-rra-1.0.yml"
    assert set(mbd["source_commit"]) == {peers.MBD_COMMIT}
    assert set(mbd["protocol"]) == {"phonondb-v1", "unspecified"}
    assert mbd["kappa_SRE"].le(mbd["kappa_SRME"] + 1e-4).all()  # SRE <= SRME (PROTOCOL §6)
    with pytest.raises(peers.PublishedFormatError, match="duplicate"):
        peers.read_mbd_table(MBD_CSV.read_text() + MBD_CSV.read_text().splitlines()[1] + "\n")


@pytest.fixture(scope="module")
def dft_as_user(ref_tables):
    """The noNAC DFT reference itself as a 'user model' on all 103 materials."""
    ref = ref_tables["noNAC"]
    return {"DFT-itself": score_table(ref, ref).reset_index()}


def test_leaderboard_on_all_materials_matches_published_means(dft_as_user, published, mbd):
    """On all 103 materials the peers' κ_SRME are the published header means, their SRE
    re-scored vs noNAC equals Matbench Discovery's (which scores vs noNAC) for the same
    checkpoints, and the MBD rows are ranked, flagged with their protocol."""
    board = peers.leaderboard(dft_as_user, published, mbd).set_index(["origin", "model"])
    assert (
        board.loc[("yours", "DFT-itself"), "rank"] == 1
        and board.loc[("yours", "DFT-itself"), "kappa_SRME"] == 0
    )
    assert board.loc[("yours", "DFT-itself"), "yours"] and board["yours"].sum() == 1
    assert board["rank"].notna().all() and sorted(board["rank"]) == list(range(1, 70))
    summary = published["CHGNet"]  # header mean 1.7169909, rows rounded to 4 decimals
    assert board.loc[("k_SRME", "CHGNet"), "kappa_SRME"] == pytest.approx(
        summary["SRME"].mean(), abs=1e-12
    )
    assert board.loc[("k_SRME", "CHGNet"), "kappa_SRME"] == pytest.approx(1.7169909, abs=1e-5)
    mbd_by = mbd.set_index("model")
    for ksrme, mbd_name in peers.KSRME_TO_MBD.items():
        assert board.loc[("k_SRME", ksrme), "kappa_SRE"] == pytest.approx(
            mbd_by.loc[mbd_name, "kappa_SRE"], abs=0.51e-4
        ), ksrme
        if board.loc[("k_SRME", ksrme), "dft_reference"] == "noNAC":  # same reference: same SRME
            assert board.loc[("k_SRME", ksrme), "kappa_SRME"] == pytest.approx(
                mbd_by.loc[mbd_name, "kappa_SRME"], abs=0.51e-4
            ), ksrme
    # CHGNet: scored vs NAC in k_SRME (1.7170); MBD's noNAC value of the same model is quoted
    assert "SRME scored vs NAC" in board.loc[("k_SRME", "CHGNet"), "flags"]
    assert "Matbench Discovery, CHGNet): 1.7167" in board.loc[("k_SRME", "CHGNet"), "flags"]
    assert board.loc[("matbench-discovery", "TECE-OAM-RRA-1.0"), "protocol"] == "phonondb-v1"
    assert "not k_SRME" in board.loc[("matbench-discovery", "TECE-OAM-RRA-1.0"), "flags"]
    assert (
        board.loc[("matbench-discovery", "TECE-OAM-RRA-1.0"), "rank"] == 2
    )  # 0.0927: the best published
    assert board.loc[("k_SRME", "GRACE-2L-OAM"), "flags"] == ""


def test_leaderboard_on_a_subset_ranks_on_the_same_materials(ref_tables, published, mbd):
    """Three materials: the peers' SRME is the mean of their published SRME on those three,
    their SRE is re-scored from their κ against the user's DFT κ (noNAC), MBD aggregates are
    listed but not ranked."""
    ref = ref_tables["noNAC"]
    subset = ["mp-2472", "mp-2542", "mp-8884"]  # SrO-rs, BeO-wz, ZnTe-wz
    pred = ref.loc[subset].copy()
    pred.at["mp-8884", "kappa_TOT_ave"] = np.array([np.nan])  # the user's model fails ZnTe
    user = score_table(pred, ref, materials=subset).reset_index()
    board = peers.leaderboard({"mine": user}, published, mbd).set_index(["origin", "model"])
    # CHGNet (k_SRME, vs NAC): SRME 0.7929, 1.8207, 2 (imaginary); κ 4.5195, 13.8003, NaN
    chg = board.loc[("k_SRME", "CHGNet")]
    assert chg["kappa_SRME"] == pytest.approx((0.7929 + 1.8207 + 2.0) / 3, abs=1e-12)
    sre_sro = 2 * (9.9150521822 - 4.5195) / (9.9150521822 + 4.5195)  # noNAC DFT κ of SrO, BeO
    sre_beo = 2 * (292.8382777372 - 13.8003) / (292.8382777372 + 13.8003)
    assert chg["kappa_SRE"] == pytest.approx((sre_sro + sre_beo + 2.0) / 3, abs=1e-6)
    assert chg["n_materials"] == 3 and chg["n_failed"] == 1
    assert chg["dft_reference"] == "NAC" and chg["sre_reference"] == "noNAC"
    mine = board.loc[("yours", "mine")]
    assert mine["yours"] and mine["n_failed"] == 1
    assert mine["kappa_SRME"] == pytest.approx(2.0 / 3, abs=1e-12)  # 0, 0, 2
    assert board.loc[("matbench-discovery", "TECE-OAM-RRA-1.0"), "rank"] is pd.NA
    assert "not ranked" in board.loc[("matbench-discovery", "TECE-OAM-RRA-1.0"), "flags"]
    ranked = board[board["rank"].notna()]
    assert len(ranked) == 17 and ranked["kappa_SRME"].is_monotonic_increasing
    # unranked aggregates come after every ranked row
    order = list(peers.leaderboard({"mine": user}, published, mbd)["rank"].isna())
    assert order == sorted(order)


def test_leaderboard_markdown(ref_tables, published):
    ref = ref_tables["noNAC"]
    user = score_table(ref, ref, materials=["mp-2472"]).reset_index()
    board = peers.leaderboard({"mine": user}, published)
    md = peers.leaderboard_markdown(board)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(board)  # header + one line per model
    assert "| 1 | **mine** (yours) | **0.0000** |" in md
    assert "dft_reference" in rows[0] and "B. Póta, P. Ahlawat, G. Csányi, M. Simoncelli" in md


def test_leaderboard_when_nothing_was_scored(published, mbd):
    """A run of materials outside the reference (the .test metals): metrics has only
    skipped rows; the leaderboard still lists the user's model, flagged, and ranks nothing."""
    user = pd.DataFrame({"mp_id": ["Cu-fcc", "Ag-fcc"], "note": "no DFT reference"})
    board = peers.leaderboard({"emt": user}, published, mbd)
    assert board["rank"].isna().all() and len(board) == 1 + 16 + 52
    mine = board[board["yours"]].iloc[0]
    assert mine["n_materials"] == 0 and "no material scored" in mine["flags"]
    assert "| – | **emt** (yours) |" in peers.leaderboard_markdown(board)
