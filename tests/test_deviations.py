"""The two opt-in fc3 approximations (phono3py pair cutoff, symfc random displacements):
off by default, fewer supercells, κ close to the systematic one on EMT Cu, and labelled as
protocol deviations in every output they touch."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write

from kappaflow import storage
from kappaflow.calculators import model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings, SettingsError
from kappaflow.steps.anharmonic import run_fc3
from kappaflow.steps.evaluate import gather_row, run_model_metrics, run_summary
from kappaflow.steps.harmonic import run_fc2
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import run_relax


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
    run_relax(
        structures=tmp / "s.extxyz",
        material_id="Cu",
        model=model_spec("emt"),
        settings=RelaxSettings(fmax=1e-4),
        out_relaxed=relaxed,
    )
    return relaxed


def _pipeline(relaxed, out, settings: Phono3pySettings):
    f = {k: out / v for k, v in MATERIAL_FILES.items()}
    spec = model_spec("emt")
    run_fc2(
        relaxed=relaxed,
        model=spec,
        settings=settings,
        out_fc2=f["fc2"],
        out_forces=f["forces_fc2"],
        out_disp=f["disp"],
        out_phonons=f["phonons"],
    )
    fc3 = run_fc3(
        relaxed=relaxed,
        phonons_json=f["phonons"],
        model=spec,
        settings=settings,
        out_fc3=f["fc3"],
        out_forces=f["forces_fc3"],
    )
    rec = run_kappa(
        relaxed=relaxed,
        phonons_json=f["phonons"],
        fc2_path=f["fc2"],
        fc3_path=f["fc3"],
        settings=KappaSettings((300.0,), settings),
        out_hdf5=f["kappa"],
        out_record=f["record"],
        fc3_forces=f["forces_fc3"],
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
        assert storage.read_json(files["record"])["protocol_deviations"] == labels
        for h5 in ("fc3", "forces_fc3", "kappa"):
            assert json.loads(storage.read_attrs(files[h5])["protocol_deviations"]) == labels
        row = gather_row(record, files["kappa"])
        assert row["protocol_deviations"] == ";".join(labels)
    assert json.loads(storage.read_attrs(base_f["fc3"])["protocol_deviations"]) == []

    # ... and in the metrics and the summary table
    rows = [gather_row(r, ff["kappa"]) for r, ff in ((rec, f),)]
    table = tmp_path / "kappa.json.gz"
    storage.write_kappa_table(table, pd.DataFrame(rows))
    ref = tmp_path / "ref.json.gz"
    storage.write_kappa_table(
        table.with_name("ref.json.gz"), pd.DataFrame([gather_row(base, base_f["kappa"])])
    )
    summary = run_model_metrics(
        table=table, reference=ref, out_csv=tmp_path / "metrics.csv", materials=["Cu"]
    )
    assert summary["protocol_deviations"] == "fc3_cutoff_pair_distance=3"
    per = pd.read_csv(tmp_path / "metrics.csv")
    assert per.loc[0, "protocol_deviations"] == "fc3_cutoff_pair_distance=3"
    assert per.loc[0, "SRME"] > 0  # scored against the systematic κ
    storage.write_json(tmp_path / "s.json", summary)
    run_summary(
        summaries=[tmp_path / "s.json"],
        models=["emt"],
        reference_name="noNAC",
        out_csv=tmp_path / "m.csv",
        out_md=tmp_path / "m.md",
    )
    assert "PROTOCOL DEVIATION" in (tmp_path / "m.md").read_text()
