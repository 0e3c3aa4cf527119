"""The two opt-in fc3 approximations (phono3py pair cutoff, symfc random displacements):
off by default, fewer supercells, κ close to the systematic one on EMT Cu, and labelled as
protocol deviations in every output they touch."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write

from kappaflow import io, steps
from kappaflow.calculators import model_spec
from kappaflow.cli import MATERIAL_FILES
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings, SettingsError


@pytest.fixture(scope="module")
def relaxed_cu(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cu")
    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {
        "material_id": "Cu",
        "fc2_supercell": [3, 3, 3],
        "fc3_supercell": [3, 3, 3],
        "q_mesh": [5, 5, 5],
    }
    write(tmp / "s.extxyz", cu, format="extxyz")
    relaxed = tmp / "relaxed.extxyz"
    steps.run_relax(tmp / "s.extxyz", "Cu", model_spec("emt"), RelaxSettings(fmax=1e-4), relaxed)
    return relaxed


def _pipeline(relaxed, out, settings: Phono3pySettings):
    f = {k: out / v for k, v in MATERIAL_FILES.items()}
    spec = model_spec("emt")
    steps.run_fc2(relaxed, spec, settings, f["fc2"], f["forces_fc2"], f["disp"], f["phonons"])
    fc3 = steps.run_fc3(relaxed, f["phonons"], spec, settings, f["fc3"], f["forces_fc3"])
    rec = steps.run_kappa(
        relaxed,
        f["phonons"],
        f["fc2"],
        f["fc3"],
        KappaSettings((300.0,), settings),
        f["kappa"],
        f["record"],
        f["forces_fc3"],
    )
    return f, fc3, rec


def test_deviations_are_off_by_default_and_checked():
    assert Phono3pySettings().protocol_deviations() == []
    assert Phono3pySettings(fc3_cutoff_pair_distance=4.0).protocol_deviations() == [
        "fc3_cutoff_pair_distance=4"
    ]
    assert Phono3pySettings(fc3_random_displacements=64, random_seed=3).protocol_deviations() == [
        "fc3_random_displacements=64(symfc,seed=3)"
    ]
    with pytest.raises(SettingsError, match="fc3_cutoff_pair_distance"):
        Phono3pySettings(fc3_cutoff_pair_distance=-1.0)
    with pytest.raises(SettingsError, match="fc3_random_displacements"):
        Phono3pySettings(fc3_random_displacements=0)
    with pytest.raises(SettingsError, match="cannot be combined"):
        Phono3pySettings(fc3_cutoff_pair_distance=4.0, fc3_random_displacements=64)


def test_cutoff_and_random_displacements_are_labelled_and_close(relaxed_cu, tmp_path):
    base_f, base_fc3, base = _pipeline(relaxed_cu, tmp_path / "base", Phono3pySettings())
    assert base["status"] == "ok" and base["protocol_deviations"] == []
    assert base_fc3["force_evaluation"]["skipped_by_cutoff"] == 0
    n_sys = base_fc3["force_evaluation"]["structures"]
    k0 = base["kappa_TOT_ave"][0]

    cut = Phono3pySettings(fc3_cutoff_pair_distance=3.0)  # Cu nearest neighbours: 2.54 Å
    f, fc3, rec = _pipeline(relaxed_cu, tmp_path / "cut", cut)
    skipped = fc3["force_evaluation"]["skipped_by_cutoff"]
    assert skipped > 0 and fc3["force_evaluation"]["structures"] + skipped == n_sys
    k_cut = rec["kappa_TOT_ave"][0]

    rnd = Phono3pySettings(fc3_random_displacements=24, random_seed=1)
    f_r, fc3_r, rec_r = _pipeline(relaxed_cu, tmp_path / "rnd", rnd)
    assert fc3_r["force_evaluation"]["structures"] == 24 < n_sys
    k_rnd = rec_r["kappa_TOT_ave"][0]

    # approximations, not different physics: within 10 % of the systematic κ, not equal
    for k in (k_cut, k_rnd):
        assert k != k0 and abs(k - k0) / k0 < 0.10, (k0, k_cut, k_rnd)

    # labelled in every output they touch
    for files, record, settings in ((f, rec, cut), (f_r, rec_r, rnd)):
        labels = settings.protocol_deviations()
        assert record["protocol_deviations"] == labels
        assert io.read_json(files["record"])["protocol_deviations"] == labels
        for h5 in ("fc3", "forces_fc3", "kappa"):
            assert json.loads(io.read_attrs(files[h5])["protocol_deviations"]) == labels
        row = steps.gather_row(record, files["kappa"])
        assert row["protocol_deviations"] == ";".join(labels)
    assert json.loads(io.read_attrs(base_f["fc3"])["protocol_deviations"]) == []

    # ... and in the metrics and the summary table
    rows = [steps.gather_row(r, ff["kappa"]) for r, ff in ((rec, f),)]
    table = tmp_path / "kappa.json.gz"
    io.write_kappa_table(table, pd.DataFrame(rows))
    ref = tmp_path / "ref.json.gz"
    io.write_kappa_table(
        table.with_name("ref.json.gz"), pd.DataFrame([steps.gather_row(base, base_f["kappa"])])
    )
    summary = steps.run_model_metrics(table, ref, tmp_path / "metrics.csv", ["Cu"])
    assert summary["protocol_deviations"] == "fc3_cutoff_pair_distance=3"
    per = pd.read_csv(tmp_path / "metrics.csv")
    assert per.loc[0, "protocol_deviations"] == "fc3_cutoff_pair_distance=3"
    assert per.loc[0, "SRME"] > 0  # scored against the systematic κ
    io.write_json(tmp_path / "s.json", summary)
    steps.run_summary(
        [tmp_path / "s.json"], ["emt"], "noNAC", tmp_path / "m.csv", tmp_path / "m.md"
    )
    assert "PROTOCOL DEVIATION" in (tmp_path / "m.md").read_text()
