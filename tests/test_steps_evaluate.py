"""kappaflow.steps.evaluate on a real EMT chain (Cu computed, Ag failed at fc2) and on tiny
hand-made tables: the gathered table, scores with hand-computed answers, the figures, the
reference filter and the cross-model summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write
from helpers import NaNForces, fc2_into, fc3_into, svg_comments

from kappaflow import storage
from kappaflow.calculators import LoadedModel, model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.metrics import InvalidReferenceError
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.evaluate import (
    run_gather,
    run_kappa_vs_temperature,
    run_parity,
    run_score,
    run_summary,
    table_deviations,
    usable_as_reference,
)
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import run_relax

TEMPS = (300.0, 600.0)
#: gathered column -> kappa.hdf5 dataset (written out here, not imported from the module)
DATASETS = {
    "qpoints": "qpoint",
    "weights": "weight",
    "frequencies": "frequency",
    "heat_capacity": "heat_capacity",
    "kappa_TOT_ave": "kappa_TOT_ave",
    "mode_kappa_TOT_ave": "mode_kappa_TOT_ave",
    "kappa_TOT_RTA": "kappa_TOT_RTA",
    "kappa_P_RTA": "kappa_P_RTA",
    "kappa_C": "kappa_C",
}
RED = "#d62728"  # matplotlib tab:red, the colour of failures in the parity plot


def _frame(symbol: str, a: float):
    at = bulk(symbol, "fcc", a=a)
    at.info = {
        "material_id": symbol,
        "fc2_supercell": [2, 2, 2],
        "fc3_supercell": [3, 3, 3],
        "q_mesh": [3, 3, 3],
    }
    return at


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """EMT Cu through relax -> fc2 -> fc3 -> κ at 300 and 600 K; Ag relaxed with EMT, then
    a model with NaN forces at fc2 (status nonfinite_forces, placeholders after)."""
    root = tmp_path_factory.mktemp("evaluate")
    write(root / "s.extxyz", [_frame("Cu", 3.59), _frame("Ag", 4.06)], format="extxyz")
    spec = model_spec("emt")
    ps = Phono3pySettings()
    nan = LoadedModel(NaNForces(), {"model": "nan", "family": "ase", "device": "cpu"})
    files = {}
    for mid, loaded in (("Cu", None), ("Ag", nan)):
        f = {k: root / mid / v for k, v in MATERIAL_FILES.items()}
        run_relax(
            structures=root / "s.extxyz",
            material_id=mid,
            model=spec,
            settings=RelaxSettings(fmax=1e-3),
            out_relaxed=f["relaxed"],
        )
        fc2_into(f, spec, ps, loaded=loaded)
        fc3_into(f, spec, ps, loaded=loaded)
        run_kappa(
            relaxed=f["relaxed"],
            phonons_json=f["phonons"],
            fc2_path=f["fc2"],
            fc3_path=f["fc3"],
            settings=KappaSettings(TEMPS, ps),
            out_hdf5=f["kappa"],
            out_record=f["record"],
            fc3_forces=f["forces_fc3"],
        )
        files[mid] = f
    table_path = root / "kappa_table.json.gz"
    df = run_gather(
        records=[files[m]["record"] for m in ("Cu", "Ag")],
        kappa_files=[files[m]["kappa"] for m in ("Cu", "Ag")],
        out_table=table_path,
    )
    return {"root": root, "files": files, "df": df, "table": table_path}


# ---------------------------------------------------------------------------- gather


def test_gather_ok_row_is_the_hdf5_and_failed_row_is_nan(chain):
    df = chain["df"].set_index("mp_id")
    assert list(df.index) == ["Cu", "Ag"]
    data, attrs = storage.read_hdf5(chain["files"]["Cu"]["kappa"])
    assert attrs["kappaflow_status"] == "ok"
    cu = df.loc["Cu"]
    assert cu["status"] == "ok"
    for col, name in DATASETS.items():
        np.testing.assert_array_equal(cu[col], data[name], err_msg=col)
    np.testing.assert_array_equal(data["temperature"], TEMPS)
    assert cu["temperatures"] == list(TEMPS)
    assert np.all(np.isfinite(cu["kappa_TOT_ave"])) and np.all(cu["kappa_TOT_ave"] > 0)
    # the record's columns: a user fcc structure is space group 225, type "sg225"
    assert (cu["symm.no"], cu["structure_type"], cu["desc"]) == (225, "sg225", "Cu-sg225")
    assert cu["q_mesh"] == [3, 3, 3]
    assert cu["initial_space_group_number"] == cu["relaxed_space_group_number"] == 225
    assert not cu["imaginary_freqs"] and not cu["broken_symmetry"]
    assert cu["protocol_deviations"] == "" and cu["errors"] == []

    ag = df.loc["Ag"]
    assert ag["status"] == "nonfinite_forces"
    assert len(ag["kappa_TOT_ave"]) == len(TEMPS) and np.all(np.isnan(ag["kappa_TOT_ave"]))
    for col in set(DATASETS) - {"kappa_TOT_ave"}:
        assert ag[col] is None, col
    assert any("non-finite forces" in e for e in ag["errors"])
    # the placeholder kappa.hdf5 of Ag holds the temperatures only
    ag_data, ag_attrs = storage.read_hdf5(chain["files"]["Ag"]["kappa"])
    assert set(ag_data) == {"temperature"}
    assert ag_attrs["kappaflow_status"] == "nonfinite_forces"


def test_gathered_table_reads_back(chain):
    """The written table in the reference layout: arrays back as arrays (to_json keeps 10
    decimals, so absolute 5e-11), the failed row's arrays as NaN."""
    back = storage.read_kappa_table(chain["table"])
    assert list(back.index) == ["Cu", "Ag"]
    data, _ = storage.read_hdf5(chain["files"]["Cu"]["kappa"])
    for col, name in DATASETS.items():
        np.testing.assert_allclose(back.loc["Cu", col], data[name], rtol=1e-12, atol=1e-10)
    assert np.all(np.isnan(back.loc["Ag", "kappa_TOT_ave"]))
    assert back.loc["Ag", "kappa_TOT_ave"].shape == (2,)
    for col in set(DATASETS) - {"kappa_TOT_ave"}:
        assert np.isscalar(back.loc["Ag", col]) and np.isnan(back.loc["Ag", col]), col
    assert storage.read_kappa_table_ids(chain["table"]) == ["Cu", "Ag"]


# ----------------------------------------------------------------------------- score


def test_score_table_against_itself_is_zero(chain, tmp_path):
    for t in TEMPS:
        s = run_score(
            predictions=chain["table"],
            reference=chain["table"],
            out_csv=tmp_path / "m.csv",
            materials=["Cu"],
            temperature=t,
        )
        assert s["n_materials"] == 1 and s["n_failed"] == 0
        assert s["mean_SRME"] == 0.0 and s["mean_SRE"] == 0.0 and s["mean_SRD"] == 0.0
        assert s["frac_within_factor_2"] == 1.0
        row = storage.read_csv(tmp_path / "m.csv").set_index("mp_id").loc["Cu"]
        assert row["SRME"] == 0.0 and not row["failed"] and row["temperature"] == t
    # the failed material cannot serve as a reference: an input error naming it
    with pytest.raises(InvalidReferenceError, match="for Ag"):
        run_score(predictions=chain["table"], reference=chain["table"], out_csv=tmp_path / "x.csv")


def _perturbed_reference(chain, path: Path) -> pd.DataFrame:
    """Cu's 600-K κ and mode κ times 1.5 (300 K untouched); Ag given κ = [5, 3] W/mK."""
    ref = storage.read_kappa_table(chain["table"])
    k = ref.loc["Cu", "kappa_TOT_ave"].copy()
    mode = ref.loc["Cu", "mode_kappa_TOT_ave"].copy()
    k[1] *= 1.5
    mode[1] *= 1.5
    ref.at["Cu", "kappa_TOT_ave"] = k
    ref.at["Cu", "mode_kappa_TOT_ave"] = mode
    for col in ("weights", "mode_kappa_TOT_ave", "temperatures"):
        ref.at["Ag", col] = ref.loc["Cu", col]
    ref.at["Ag", "kappa_TOT_ave"] = np.array([5.0, 3.0])
    storage.write_kappa_table(path, ref)
    return ref


def test_score_against_a_perturbed_copy_hand_computed(chain, tmp_path):
    """κ_ref = 1.5 κ at 600 K: SRD = 2(1 - 1.5)/(1 + 1.5) = -0.4; every mode scaled alike and
    Σ mode_κ / Σ w = κ, so SRME = 2 (0.5 κ) / (2.5 κ) = 0.4. At 300 K nothing changed."""
    ref = _perturbed_reference(chain, tmp_path / "ref.json.gz")
    cu = chain["df"].set_index("mp_id").loc["Cu"]
    # the invariant the hand value uses, on the computed arrays
    np.testing.assert_allclose(
        cu["mode_kappa_TOT_ave"].sum(axis=(1, 2)) / cu["weights"].sum(),
        cu["kappa_TOT_ave"],
        rtol=1e-10,
    )
    common = dict(predictions=chain["table"], reference=tmp_path / "ref.json.gz")
    s300 = run_score(**common, out_csv=tmp_path / "m300.csv", materials=["Cu"], temperature=300)
    assert s300["mean_SRD"] == 0.0 and s300["mean_SRME"] == 0.0
    s600 = run_score(
        **common, out_csv=tmp_path / "m600.csv", materials=["Cu", "Ag"], temperature=600
    )
    per = storage.read_csv(tmp_path / "m600.csv").set_index("mp_id")
    assert per.loc["Cu", "SRD"] == pytest.approx(-0.4, rel=1e-9)
    assert per.loc["Cu", "SRE"] == pytest.approx(0.4, rel=1e-9)
    assert per.loc["Cu", "SRME"] == pytest.approx(0.4, rel=1e-9)
    assert per.loc["Cu", "DFT_kappa_TOT_ave"] == pytest.approx(ref.loc["Cu", "kappa_TOT_ave"][1])
    # Ag failed upstream: scored 2 with its recorded status, against the reference's 3 W/mK
    assert bool(per.loc["Ag", "failed"]) and per.loc["Ag", "failure"] == "nonfinite_forces"
    assert (per.loc["Ag", "SRD"], per.loc["Ag", "SRE"], per.loc["Ag", "SRME"]) == (-2, 2, 2)
    assert per.loc["Ag", "DFT_kappa_TOT_ave"] == 3.0
    assert s600["n_materials"] == 2 and s600["n_failed"] == 1
    assert s600["mean_SRME"] == pytest.approx((0.4 + 2.0) / 2)
    assert s600["mean_SRE"] == pytest.approx((0.4 + 2.0) / 2)
    assert s600["mean_SRME_success"] == pytest.approx(0.4)
    assert s600["frac_within_factor_2"] == 0.5  # Cu: ratio 1/1.5; Ag: no κ
    assert s600["n_underestimated"] == 1
    # the other way round the sign of SRD flips, SRE and SRME stay
    storage.write_kappa_table(tmp_path / "pred.json.gz", ref.loc[["Cu"]])
    run_score(
        predictions=tmp_path / "pred.json.gz",
        reference=chain["table"],
        out_csv=tmp_path / "rev.csv",
        materials=["Cu"],
        temperature=600,
    )
    rev = storage.read_csv(tmp_path / "rev.csv").set_index("mp_id").loc["Cu"]
    assert rev["SRD"] == pytest.approx(0.4, rel=1e-9)
    assert rev["SRME"] == pytest.approx(0.4, rel=1e-9)


def test_score_hand_made_tables(tmp_path):
    """Two q-points (weights 1 and 3), one band: κ 10 vs 30, modes [[4], [36]] vs [[12], [108]].
    SRD = 2(10 - 30)/40 = -1; SRME = 2 (|4-12| + |36-108|)/4 / 40 = 2·20/40 = 1."""
    row = {"temperatures": [300.0], "weights": [1, 3], "status": "ok"}
    pred = pd.DataFrame(
        [{"mp_id": "X", **row, "kappa_TOT_ave": [10.0], "mode_kappa_TOT_ave": [[[4.0], [36.0]]]}]
    )
    ref = pd.DataFrame(
        [
            {
                "mp_id": "X",
                "name": "X",
                **row,
                "kappa_TOT_ave": [30.0],
                "mode_kappa_TOT_ave": [[[12.0], [108.0]]],
            }
        ]
    )
    storage.write_kappa_table(tmp_path / "p.json.gz", pred)
    storage.write_kappa_table(tmp_path / "r.json.gz", ref)
    s = run_score(
        predictions=tmp_path / "p.json.gz",
        reference=tmp_path / "r.json.gz",
        out_csv=tmp_path / "m.csv",
    )
    per = storage.read_csv(tmp_path / "m.csv").set_index("mp_id").loc["X"]
    assert per["SRD"] == pytest.approx(-1.0) and per["SRE"] == pytest.approx(1.0)
    assert per["SRME"] == pytest.approx(1.0)
    assert per["name"] == "X" and not per["failed"]
    assert s["frac_within_factor_2"] == 0.0  # 10/30 < 1/2


# --------------------------------------------------------------------------- figures


def test_parity_file_and_failures_drawn(chain, tmp_path, figures):
    _perturbed_reference(chain, tmp_path / "ref.json.gz")
    run_score(
        predictions=chain["table"],
        reference=tmp_path / "ref.json.gz",
        out_csv=tmp_path / "m.csv",
        materials=["Cu", "Ag"],
        temperature=600,
    )
    out = tmp_path / "parity.svg"
    run_parity(metrics_csv=tmp_path / "m.csv", model="emt", temperature=600.0, out_svg=out)
    texts = svg_comments(out)
    assert "computed (1)" in texts and "failed (1)" in texts
    assert "emt, 600 K: mean SRME 1.200, n=2" in texts
    assert RED in out.read_text()
    ax = figures["parity.svg"].axes[0]
    assert ax.get_title() == "emt, 600 K: mean SRME 1.200, n=2"
    by_label = {c.get_label(): c.get_offsets() for c in ax.collections}
    k = chain["df"].set_index("mp_id").loc["Cu", "kappa_TOT_ave"][1]
    np.testing.assert_allclose(by_label["computed (1)"], [[1.5 * k, k]])
    lo = ax.get_xlim()[0]
    assert lo == pytest.approx(1.0)  # the decade below the smallest κ (Ag's DFT 3 W/mK) / 1.5
    np.testing.assert_allclose(by_label["failed (1)"], [[3.0, lo * 1.25]])


def test_kappa_vs_temperature_draws_computed_materials_only(chain, tmp_path, figures):
    out = tmp_path / "kT.svg"
    run_kappa_vs_temperature(table=chain["table"], model="emt", out_svg=out)
    texts = svg_comments(out)
    assert "Cu-sg225" in texts and "Ag-sg225" not in texts
    assert "emt: Wigner RTA conductivity (1 material)" in texts
    ax = figures["kT.svg"].axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["Cu-sg225"]
    cu = chain["df"].set_index("mp_id").loc["Cu"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), TEMPS)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), cu["kappa_TOT_ave"], rtol=1e-12)
    assert ax.get_yscale() == "log"


# ---------------------------------------------------------------- deviations, reference


def test_table_deviations_distinct_sorted():
    assert table_deviations(pd.DataFrame({"kappa_TOT_ave": [1.0]})) == []  # older tables
    df = pd.DataFrame(
        {"protocol_deviations": ["b=1;a=2", "", np.nan, "b=1", "c=3(symfc,seed=0);a=2"]}
    )
    assert table_deviations(df) == ["a=2", "b=1", "c=3(symfc,seed=0)"]
    assert table_deviations(pd.DataFrame({"protocol_deviations": ["", np.nan]})) == []


def _row(**kw) -> pd.Series:
    base = {
        "status": "ok",
        "imaginary_freqs": False,
        "temperatures": np.array([300.0, 600.0]),
        "kappa_TOT_ave": np.array([20.0, 10.0]),
    }
    base.update(kw)
    return pd.Series(base, dtype=object)


@pytest.mark.parametrize(
    ("row", "temperature", "usable"),
    [
        (_row(), 300.0, True),
        (_row(), 600.0, True),
        (_row(), 300.0 + 1e-9, True),  # matched by value
        (_row(), 900.0, False),  # not computed
        (_row(status="imaginary_modes"), 300.0, False),
        (_row(status="nonfinite_forces"), 300.0, False),
        (_row(status=""), 300.0, True),  # tables written without a status
        (_row(status=np.nan), 300.0, True),
        (_row(imaginary_freqs=True), 300.0, False),
        (_row(kappa_TOT_ave=np.array([np.nan, 10.0])), 300.0, False),
        (_row(kappa_TOT_ave=np.array([np.nan, 10.0])), 600.0, True),
        (_row(kappa_TOT_ave=np.array([np.inf, 10.0])), 300.0, False),
        (_row(kappa_TOT_ave=np.array([20.0])), 300.0, False),  # κ and T of other lengths
        (_row(kappa_TOT_ave=np.nan), 300.0, False),  # a gathered failure's NaN
        (_row(temperatures=300.0, kappa_TOT_ave=7.0), 300.0, True),  # scalars
        (pd.Series({"temperatures": [300.0], "kappa_TOT_ave": [1.0]}), 300.0, True),
    ],
)
def test_usable_as_reference(row, temperature, usable):
    assert usable_as_reference(row, temperature) is usable


def test_usable_as_reference_numpy_true_imaginary():
    assert usable_as_reference(_row(imaginary_freqs=np.True_), 300.0) is False


def test_gathered_rows_as_reference(chain):
    """A model's own gathered table as a reference: Cu (ok, finite κ) yes, Ag (failed) no."""
    back = storage.read_kappa_table(chain["table"])
    usable = {mid: usable_as_reference(row, 300.0) for mid, row in back.iterrows()}
    assert usable == {"Cu": True, "Ag": False}


# --------------------------------------------------------------------------- summary


def _summary(**kw):
    base = {
        "n_materials": 2,
        "n_failed": 1,
        "mean_SRME": 1.25,
        "mean_SRE": 0.75,
        "mean_SRD": -0.5,
        "mean_SRME_success": 0.5,
        "frac_within_factor_2": 0.5,
        "n_skipped": 0,
        "temperature": 300.0,
    }
    base.update(kw)
    return base


def test_summary_markdown_columns_and_deviation_line(tmp_path):
    storage.write_json(tmp_path / "a.json", _summary(protocol_deviations="fc3_cutoff=4"))
    storage.write_json(tmp_path / "b.json", _summary(n_failed=0, mean_SRME=0.125))
    storage.write_json(tmp_path / "ga.json", {"gamma_mean_SRE": 0.2, "gamma_n_failed": 0})
    storage.write_json(tmp_path / "gb.json", {"gamma_mean_SRE": 0.4, "gamma_n_failed": 1})
    df = run_summary(
        summaries=[tmp_path / "a.json", tmp_path / "b.json"],
        models=["model-a", "model-b"],
        reference_name="phonondb-pbe",
        out_csv=tmp_path / "m.csv",
        out_md=tmp_path / "m.md",
        gamma_summaries=[tmp_path / "ga.json", tmp_path / "gb.json"],
    )
    assert list(df["model"]) == ["model-a", "model-b"]
    csv = storage.read_csv(tmp_path / "m.csv")
    assert list(csv["model"]) == ["model-a", "model-b"]
    assert list(csv["mean_SRME"]) == [1.25, 0.125] and list(csv["gamma_n_failed"]) == [0, 1]
    lines = (tmp_path / "m.md").read_text().splitlines()
    assert lines[0] == "# kappaflow metrics (300 K, DFT reference: phonondb-pbe)"
    assert lines[1] == ""
    columns = (
        "model n_materials mean_SRME mean_SRE n_failed mean_SRME_success "
        "frac_within_factor_2 n_skipped gamma_mean_SRE gamma_n_failed protocol_deviations"
    ).split()
    assert lines[2] == "| " + " | ".join(columns) + " |"
    assert lines[3] == "|" + "---|" * len(columns)
    assert lines[4] == (
        "| model-a | 2 | 1.2500 | 0.7500 | 1 | 0.5000 | 0.5000 | 0 | 0.2000 | 0 | fc3_cutoff=4 |"
    )
    assert lines[5] == (
        "| model-b | 2 | 0.1250 | 0.7500 | 0 | 0.5000 | 0.5000 | 0 | 0.4000 | 1 | n/a |"
    )
    assert lines[6] == ""
    assert lines[7].startswith("PROTOCOL DEVIATION: rows with protocol_deviations")
    assert len(lines) == 8


def test_summary_without_deviations_and_nothing_scored(tmp_path):
    storage.write_json(tmp_path / "a.json", _summary())
    run_summary(
        summaries=[tmp_path / "a.json"],
        models=["a"],
        reference_name="model:mace-mp",
        out_csv=tmp_path / "m.csv",
        out_md=tmp_path / "m.md",
    )
    text = (tmp_path / "m.md").read_text()
    assert text.splitlines()[0] == "# kappaflow metrics (300 K, reference: κ of mace-mp)"
    assert "protocol_deviations" not in text and "PROTOCOL DEVIATION" not in text
    assert "No selected material was scored" not in text
    # a deviation column that is empty everywhere gives no deviation line either
    storage.write_json(tmp_path / "e.json", _summary(protocol_deviations=""))
    storage.write_json(
        tmp_path / "z.json", {"n_materials": 0, "n_failed": 0, "mean_SRME": None, "n_skipped": 3}
    )
    run_summary(
        summaries=[tmp_path / "e.json", tmp_path / "z.json"],
        models=["e", "z"],
        reference_name="noNAC",
        out_csv=tmp_path / "m2.csv",
        out_md=tmp_path / "m2.md",
    )
    text = (tmp_path / "m2.md").read_text()
    assert "PROTOCOL DEVIATION" not in text and "No selected material was scored" not in text
    # every model with zero scored materials: the note says so
    run_summary(
        summaries=[tmp_path / "z.json"],
        models=["z"],
        reference_name="noNAC",
        out_csv=tmp_path / "m3.csv",
        out_md=tmp_path / "m3.md",
    )
    lines = (tmp_path / "m3.md").read_text().splitlines()
    assert lines[4] == "| z | 0 | n/a | 0 | 3 |"
    assert lines[-1].startswith("No selected material was scored")
