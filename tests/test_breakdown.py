"""Metrics people quote: spectrum W1 (Matbench Discovery's definition), rates, bias, groups;
hand-computed answers and invariants on the DFT reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kappaflow import breakdown, storage
from kappaflow.metrics import score_table


@pytest.fixture(scope="module")
def ref(reference_dir):
    return storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz")


def _table(rows: dict[str, tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"mp_id": m, "frequencies": f, "weights": w} for m, (f, w) in rows.items()]
    ).set_index("mp_id")


def test_spectrum_w1_two_materials_by_hand():
    """A: the top band of the q-point of weight 3 shifts 4 -> 5 THz: 3/8 of the mass moves
    by 1 THz, W1 = 0.375. B: an imaginary mode (−1 THz, negative as phono3py writes it)
    against 0: half the mass moves by 1, and the other band 2 -> 3 moves the other half by
    1, W1 = 1. C failed (no frequencies): left out. Mean = (0.375 + 1) / 2."""
    reference = _table(
        {
            "A": (np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([1, 3])),
            "B": (np.array([[0.0, 3.0]]), np.array([1])),
            "C": (np.array([[1.0, 2.0]]), np.array([1])),
        }
    )
    model = _table(
        {
            "A": (np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 3])),
            "B": (np.array([[-1.0, 2.0]]), np.array([1])),
            "C": (None, None),
        }
    )
    per = breakdown.spectrum_w1(model, reference)
    assert per["A"] == 0.375 and per["B"] == 1.0 and np.isnan(per["C"])
    assert breakdown.mean_spectrum_w1(per) == (0.6875, 2)
    # the failed material enters with its gate frequencies (uniform weights), as in MBD
    per = breakdown.spectrum_w1(model, reference, gate_frequencies={"C": np.array([[1.0, 4.0]])})
    assert per["C"] == 1.0  # 2 -> 4 for half the mass


def test_spectrum_w1_compares_different_meshes_through_the_weights():
    """Weighted irreducible q vs the uniformly weighted full mesh of the same spectrum: 0."""
    irreducible = (np.array([[1.0], [3.0]]), np.array([2, 1]))
    full_mesh = (np.array([[1.0], [1.0], [3.0]]), None)
    assert breakdown.spectrum_w1_material(*full_mesh, *irreducible) == 0.0
    # weights of the wrong length are ignored (uniform), as MBD's mode_weights_for_freqs
    assert breakdown.spectrum_w1_material(
        irreducible[0], np.array([2, 1, 1]), *irreducible
    ) == pytest.approx(1 / 3)  # uniform 1/2,1/2 vs 2/3,1/3: |1/2-2/3| * 2 THz
    assert breakdown.spectrum_w1_material(np.array([[np.nan, 1.0]]), None, *irreducible) is None


def test_wasserstein_1_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=40), rng.normal(0.3, 2.0, size=25)
    uw, vw = rng.integers(1, 9, size=40), rng.random(25)
    assert breakdown.wasserstein_1(u, v, uw, vw) == pytest.approx(
        stats.wasserstein_distance(u, v, uw, vw), rel=1e-12
    )


def test_spectrum_w1_of_dft_against_itself_is_zero(ref):
    per = breakdown.spectrum_w1(ref, ref)
    assert len(per) == 103 and per.notna().all()
    assert per.max() == 0.0
    assert breakdown.mean_spectrum_w1(per) == (0.0, 103)


def test_spectrum_w1_of_a_shifted_spectrum(ref):
    """Every frequency of one material scaled by 1.1: W1 = 0.1 × the weighted mean |ω|."""
    row = ref.loc["mp-22862"]  # NaCl-rs
    f, w = row["frequencies"], row["weights"]
    mean_abs = np.sum(np.abs(f) * w[:, None]) / (w.sum() * f.shape[1])
    assert breakdown.spectrum_w1_material(1.1 * f, w, f, w) == pytest.approx(
        0.1 * mean_abs, rel=1e-9
    )


def _per_material(ref, factors: dict[str, float], fail: tuple[str, ...] = ()):
    pred = ref.loc[list(factors)].copy()
    for m, x in factors.items():
        pred.at[m, "kappa_TOT_ave"] = pred.loc[m, "kappa_TOT_ave"] * x
        pred.at[m, "mode_kappa_TOT_ave"] = pred.loc[m, "mode_kappa_TOT_ave"] * x
    pred["imaginary_freqs"] = [m in fail for m in pred.index]
    return score_table(pred, ref, materials=list(factors)).reset_index(), pred


def test_rates_bias_and_groups(ref):
    """Five materials, κ scaled by 0.5, 0.5, 2, 0.25 and one with imaginary modes:
    failure and imaginary rates 1/5, median log10 ratio over the 4 successes = log10(0.5),
    SRE of a factor x = 2|x-1|/(x+1) (= SRME, the modes scale alike)."""
    factors = {
        "mp-2472": 0.5,  # SrO-rs
        "mp-22862": 0.5,  # NaCl-rs
        "mp-804": 2.0,  # GaN-wz
        "mp-10695": 0.25,  # ZnS-zb
        "mp-2542": 1.0,  # BeO-wz, imaginary modes
    }
    per, pred = _per_material(ref, factors, fail=("mp-2542",))
    assert breakdown.failure_rate(per) == 0.2
    assert breakdown.imaginary_mode_rate(per) == 0.2
    assert breakdown.imaginary_mode_rate(per, pred) == 0.2
    bias = breakdown.signed_bias(per)
    assert bias["log10_bias_median"] == pytest.approx(np.log10(0.5), abs=1e-12)
    assert bias["bias_factor"] == pytest.approx(0.5) and bias["n_bias"] == 4
    assert bias["frac_under"] == 0.75
    sre = {x: 2 * abs(x - 1) / (x + 1) for x in (0.5, 2.0, 0.25)}
    types = breakdown.structure_types(ref)
    groups = breakdown.by_structure_type(per, types).set_index("group")
    assert groups.loc["rs", "mean_SRE"] == pytest.approx(sre[0.5])
    assert groups.loc["zb", "mean_SRME"] == pytest.approx(sre[0.25])
    assert groups.loc["wz", "mean_SRME"] == pytest.approx((sre[2.0] + 2.0) / 2)
    assert groups.loc["wz", "n_failed"] == 1 and list(groups.index) == ["rs", "zb", "wz"]
    decades = breakdown.by_kappa_decade(per).set_index("group")
    # DFT noNAC κ: SrO 9.92, NaCl 7.21, ZnS 27.9, GaN 180, BeO 293
    assert list(decades.index) == ["1-10", "10-100", "100-1000"]
    assert decades["n_materials"].tolist() == [2, 1, 2]
    q = breakdown.quoted_metrics(per, types, pred, breakdown.spectrum_w1(pred, ref, list(factors)))
    assert q["SRME_rs"] == pytest.approx(sre[0.5]) and q["n_wz"] == 2
    assert q["failure_rate"] == 0.2 and q["n_spectrum_w1"] == 5
    assert q["spectrum_w1"] == 0.0  # κ scaled, frequencies untouched


def test_structure_types_of_the_reference(ref, published_dir):
    """From the space group: the same types as the published tables' desc suffixes."""
    types = breakdown.structure_types(ref)
    assert types.value_counts().to_dict() == {"rs": 37, "zb": 33, "wz": 33}
    desc = pd.read_csv(published_dir / "kappa" / "CHGNet.csv").set_index("mp_id")["desc"]
    assert all(types[m] == d.rsplit("-", 1)[1] for m, d in desc.items())
    odd = pd.DataFrame({"symm.no": [229]}, index=["x"])
    assert breakdown.structure_types(odd).to_dict() == {"x": "other"}
    assert breakdown.kappa_decade(0.437) == "0.1-1" and breakdown.kappa_decade(10.0) == "10-100"


def test_skipped_rows_do_not_count(ref):
    per, _ = _per_material(ref, {"mp-2472": 0.5})
    skipped = pd.DataFrame([{"mp_id": "Cu-fcc", "note": "no DFT reference"}])
    per = pd.concat([per, skipped], ignore_index=True)
    assert breakdown.failure_rate(per) == 0.0
    assert breakdown.signed_bias(per)["n_bias"] == 1


def test_rates_of_published_tables_match_matbench_discovery(published_dir):
    """The failure and imaginary-mode rates of the k_SRME per-material tables equal the
    rates Matbench Discovery publishes for the same 12 checkpoints (to its 4 decimals), incl.
    MACE-M, whose 3 failures are missing rows, not imaginary modes."""
    from kappaflow import peers

    repo = Path(__file__).resolve().parents[1]
    mbd = peers.read_mbd_table(
        (repo / "src" / "kappaflow" / "data" / "matbench_discovery.csv").read_text()
    ).set_index("model")
    published = storage.read_published_tables(published_dir)
    for ksrme, name in peers.KSRME_TO_MBD.items():
        table = published[ksrme].reset_index()
        rate = breakdown.failure_rate(table)
        assert rate == pytest.approx(mbd.loc[name, "failure_rate"], abs=0.51e-4), ksrme
        imaginary = breakdown.imaginary_mode_rate(table)
        assert imaginary == pytest.approx(mbd.loc[name, "imaginary_mode_rate"], abs=0.51e-4)
    assert breakdown.failure_rate(published["MACE-M"].reset_index()) == pytest.approx(3 / 103)
    assert breakdown.imaginary_mode_rate(published["MACE-M"].reset_index()) == 0.0
    # foundation models under-predict κ: CHGNet by a factor 21 (median), MACE-MPA-0 by 10 %
    assert breakdown.signed_bias(published["CHGNet"].reset_index())["bias_factor"] < 0.05
    mpa = breakdown.signed_bias(published["MACE-MPA-0"].reset_index())
    assert 0.85 < mpa["bias_factor"] < 0.95 and mpa["n_bias"] == 103
