"""Workflow steps on EMT Cu: failures become data that flows to the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from ase.build import bulk
from ase.io import write
from helpers import fc2_into, fc3_into, nan_model

from kappaflow import storage
from kappaflow.calculators import model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.metrics import score_table
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.anharmonic import run_fc3
from kappaflow.steps.evaluate import gather_row, run_model_metrics
from kappaflow.steps.harmonic import run_fc2
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import run_relax


def _run_kappa(f, ps):
    """The κ step on the outputs of the earlier steps, at 300 K."""
    return run_kappa(
        relaxed=f["relaxed"],
        phonons_json=f["phonons"],
        fc2_path=f["fc2"],
        fc3_path=f["fc3"],
        settings=KappaSettings((300.0,), ps),
        out_hdf5=f["kappa"],
        out_record=f["record"],
        fc3_forces=f["forces_fc3"],
    )


def _cu_input(tmp_path, fc3_supercell=(2, 2, 2)):
    """EMT Cu written as a user structure; returns (Atoms, output paths, model spec)."""
    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {
        "material_id": "Cu",
        "fc2_supercell": [2, 2, 2],
        "fc3_supercell": list(fc3_supercell),
        "q_mesh": [3, 3, 3],
    }
    write(tmp_path / "s.extxyz", cu, format="extxyz")
    f = {k: tmp_path / "Cu" / v for k, v in MATERIAL_FILES.items()}
    spec = model_spec("emt")
    return cu, f, spec


def _relaxed_cu(tmp_path, fc3_supercell=(2, 2, 2)):
    """EMT Cu written as a user structure and relaxed; returns (output paths, model spec)."""
    _, f, spec = _cu_input(tmp_path, fc3_supercell)
    run_relax(
        structures=tmp_path / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=RelaxSettings(fmax=1e-3),
        out_relaxed=f["relaxed"],
    )
    return f, spec


def test_nonfinite_forces_are_recorded_and_scored_two(tmp_path):
    f, spec = _relaxed_cu(tmp_path)
    bad = nan_model()
    ps = Phono3pySettings()
    gate = fc2_into(f, spec, ps, loaded=bad)
    assert gate["status"] == "nonfinite_forces"
    assert "non-finite forces" in gate["errors"][0]
    fc3_into(f, spec, ps, loaded=bad)
    record = _run_kappa(f, ps)
    assert record["status"] == "nonfinite_forces"
    assert record["kappa_TOT_ave"] == [None]
    row = gather_row(storage.read_json(f["record"]), f["kappa"])
    pred = pd.DataFrame([row]).set_index("mp_id")
    ref = pd.DataFrame(
        [
            {
                "mp_id": "Cu",
                "temperatures": np.array([300.0]),
                "kappa_TOT_ave": np.array([10.0]),
                "mode_kappa_TOT_ave": None,
                "weights": np.array([1]),
            }
        ]
    ).set_index("mp_id")
    scored = score_table(pred, ref).loc["Cu"]
    assert scored["failed"] and scored["SRME"] == 2.0
    assert scored["failure"] == "nonfinite_forces"


def test_fc3_nan_after_ok_fc2_is_recorded(tmp_path):
    f, spec = _relaxed_cu(tmp_path)
    ps = Phono3pySettings()
    run_relax(
        structures=tmp_path / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=RelaxSettings(fmax=1e-3),
        out_relaxed=f["relaxed"],
    )
    assert fc2_into(f, spec, ps)["status"] == "ok"
    bad = nan_model()
    assert fc3_into(f, spec, ps, loaded=bad)["status"] == "nonfinite_forces"
    record = _run_kappa(f, ps)
    assert record["status"] == "nonfinite_forces" and "failure" not in record
    assert any("non-finite" in e for e in record["errors"])


def test_exception_during_relax_is_recorded_and_passed_on(tmp_path):
    """k_SRME: any exception scores 2; here the relax itself fails (NaN forces in FIRE)."""
    cu, f, spec = _cu_input(tmp_path)
    bad = nan_model()
    rec = run_relax(
        structures=tmp_path / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=RelaxSettings(),
        out_relaxed=f["relaxed"],
        loaded=bad,
    )
    assert rec["status"] in ("relax_error", "nonfinite_forces")
    assert rec["errors"] and "Traceback" in rec["error_traceback"]
    atoms, _ = storage.read_structure(f["relaxed"])
    np.testing.assert_allclose(atoms.cell[:], cu.cell[:])  # the input structure is kept
    ps = Phono3pySettings()
    gate = fc2_into(f, spec, ps)
    assert gate["status"] == rec["status"]
    fc3_into(f, spec, ps)
    record = _run_kappa(f, ps)
    assert record["status"] == rec["status"] and record["kappa_TOT_ave"] == [None]
    assert record["errors"] == rec["errors"]
    assert storage.read_hdf5(f["kappa"])[1]["kappaflow_status"] == rec["status"]


def test_model_metrics_skip_when_300k_not_computed(tmp_path, reference_dir):
    ref = storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz").loc[
        ["mp-22862"]
    ]
    pred = ref.copy()
    pred["temperatures"] = [np.array([600.0])]
    storage.write_kappa_table(tmp_path / "pred.json.gz", pred)
    ref_path = reference_dir / "kappas_phononDB_PBE_noNAC.json.gz"
    s = run_model_metrics(
        table=tmp_path / "pred.json.gz",
        reference=ref_path,
        out_csv=tmp_path / "m.csv",
        materials=["mp-22862"],
        temperature=300.0,
        computed_temperatures=[600.0],
    )
    assert s["n_materials"] == 0 and s["n_skipped"] == 1
    note = pd.read_csv(tmp_path / "m.csv").set_index("mp_id").loc["mp-22862", "note"]
    assert note.startswith("300 K not among the computed temperatures")
    # with 300 K computed, the same row is scored (here: the reference against itself)
    storage.write_kappa_table(tmp_path / "self.json.gz", ref)
    s = run_model_metrics(
        table=tmp_path / "self.json.gz",
        reference=ref_path,
        out_csv=tmp_path / "m2.csv",
        materials=["mp-22862"],
        temperature=300.0,
        computed_temperatures=[300.0],
    )
    assert s["n_materials"] == 1 and s["mean_SRME"] == 0.0 and s["n_skipped"] == 0


def _cu_ready_for_kappa(tmp_path):
    """EMT Cu relaxed, fc2 and fc3 (3x3x3: a 2x2x2 fc3 of a one-atom fcc cell is zero)."""
    f, spec = _relaxed_cu(tmp_path, fc3_supercell=(3, 3, 3))
    ps = Phono3pySettings()
    run_fc2(relaxed=f["relaxed"], model=spec, settings=ps, out_fc2=f["fc2"],
            out_forces=f["forces_fc2"], out_disp=f["disp"], out_phonons=f["phonons"])  # fmt: skip
    run_fc3(relaxed=f["relaxed"], phonons_json=f["phonons"], model=spec, settings=ps,
            out_fc3=f["fc3"], out_forces=f["forces_fc3"])  # fmt: skip
    return f


def test_engine_setup_errors_are_raised_not_recorded(tmp_path, monkeypatch):
    """With phph_engine: kappaflow, a missing torch or a refused engine option is an error of
    the job (raised, nothing written); an exception of the physics is recorded as data."""
    import sys

    import pytest

    from kappaflow import conductivity, phph

    f = _cu_ready_for_kappa(tmp_path)
    engine = Phono3pySettings(phph_engine="kappaflow")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "torch", None)
        with pytest.raises(phph.EngineUnavailableError, match="needs PyTorch"):
            _run_kappa(f, engine)
    assert not f["record"].exists() and not f["kappa"].exists()

    def refused(*args, **kwargs):
        raise phph.PhphOptionError("the engine does not support this option")

    monkeypatch.setattr(conductivity, "compute_kappa", refused)
    with pytest.raises(phph.PhphOptionError):
        _run_kappa(f, Phono3pySettings())  # phono3py's engine: no torch needed here
    assert not f["record"].exists()

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no memory left")

    monkeypatch.setattr(conductivity, "compute_kappa", out_of_memory)
    with pytest.raises(MemoryError):
        _run_kappa(f, Phono3pySettings())
    assert not f["record"].exists()

    def broken(*args, **kwargs):
        raise RuntimeError("phonon solver diverged")

    monkeypatch.setattr(conductivity, "compute_kappa", broken)
    record = _run_kappa(f, Phono3pySettings())
    assert record["status"] == "kappa_error"
    assert any("phonon solver diverged" in e for e in record["errors"])


def test_kappa_records_engine_and_convention(tmp_path):
    f = _cu_ready_for_kappa(tmp_path)
    record = _run_kappa(f, Phono3pySettings(kappa_convention="phono3py4"))
    assert record["status"] == "ok"
    assert record["protocol_deviations"] == ["kappa_convention=phono3py4"]
    assert record["provenance"]["phph"]["engine"] == "phono3py"
    data, attrs = storage.read_hdf5(f["kappa"])
    assert attrs["kappa_convention"] == "phono3py4" and attrs["phph_engine"] == "phono3py"
    # phono3py4: the recorded κ is phono3py 4.10's own, also kept as kappa_phono3py4
    np.testing.assert_allclose(data["kappa_TOT_RTA"], data["kappa_phono3py4"], rtol=1e-12)
    # the force steps' records know nothing of the κ-only keys
    gate = storage.read_json(f["phonons"])
    assert "kappa_convention" not in gate["settings"]
    assert "phph_engine" not in gate["provenance"]["made_from"]["settings"]["phono3py"]
