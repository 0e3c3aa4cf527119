"""kappaflow.steps.common: the placeholders of a step without a result (refused as data by
kappaflow.storage), the log line of a force run, and the material of a record."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import phono3py
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from kappaflow import storage
from kappaflow.forces import ForceSettings, evaluate_forces
from kappaflow.steps.common import (
    THERMAL_EXPANSION_COLUMNS,
    force_log,
    material_of,
    write_fc_placeholders,
    write_placeholders,
)
from kappaflow.storage import GatedOutputError
from kappaflow.structures import MaterialSpec

COLUMNS = ["temperature", "gamma", "heat_capacity", "alpha_V", "alpha_linear", "above_melting"]


def _h5_keys(path) -> list[str]:
    with h5py.File(path, "r") as h5:
        return list(h5)


def test_placeholders_carry_the_status_everywhere(tmp_path, capsys):
    record = {"mp_id": "X", "status": "imaginary_modes", "errors": []}
    temps = np.array([300.0, 600.0])
    out = write_placeholders(
        record,
        what="κ",
        json_path=tmp_path / "kappa.json",
        hdf5=((tmp_path / "a.hdf5", {"temperature": temps}), (tmp_path / "b.hdf5", {})),
        csv_path=tmp_path / "thermal_expansion.csv",
        attrs={"protocol_deviations": json.dumps(["fc3_cutoff_pair_distance=3"])},
    )
    assert out is record  # the record is returned, completed in place
    for name in ("a.hdf5", "b.hdf5"):
        attrs = storage.read_attrs(tmp_path / name)
        assert attrs["kappaflow_status"] == "imaginary_modes", name
        assert json.loads(attrs["protocol_deviations"]) == ["fc3_cutoff_pair_distance=3"]
    data, _ = storage.read_hdf5(tmp_path / "a.hdf5")
    assert list(data) == ["temperature"]
    np.testing.assert_array_equal(data["temperature"], temps)
    assert _h5_keys(tmp_path / "b.hdf5") == []
    # an empty thermal-expansion table with its columns, in order
    assert THERMAL_EXPANSION_COLUMNS == tuple(COLUMNS)
    assert (tmp_path / "thermal_expansion.csv").read_text().strip() == ",".join(COLUMNS)
    curve = storage.read_csv(tmp_path / "thermal_expansion.csv")
    assert curve.empty and list(curve.columns) == COLUMNS
    # the record on disk: status and provenance
    on_disk = storage.read_json(tmp_path / "kappa.json")
    assert on_disk["status"] == "imaginary_modes" and on_disk["mp_id"] == "X"
    prov = on_disk["provenance"]
    assert {"versions", "host", "python", "threads", "time"} <= set(prov)
    assert prov["versions"]["phono3py"] == phono3py.__version__
    assert on_disk == json.loads(json.dumps(record))
    assert "κ: no result (imaginary_modes)" in capsys.readouterr().err


def test_placeholders_keep_a_given_provenance_and_write_only_what_is_asked(tmp_path):
    record = {"status": "relax_error", "provenance": {"backend": "C"}}
    write_placeholders(record, what="Grüneisen", hdf5=((tmp_path / "g.hdf5", {}),))
    assert record["provenance"] == {"backend": "C"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.hdf5"]
    assert storage.read_attrs(tmp_path / "g.hdf5") == {"kappaflow_status": "relax_error"}


@pytest.mark.parametrize("order", [2, 3])
def test_fc_placeholders_are_refused_as_force_constants(tmp_path, order):
    fc, forces = tmp_path / f"fc{order}.hdf5", tmp_path / f"forces_fc{order}.hdf5"
    write_fc_placeholders(
        "broken_symmetry",
        fc_path=fc,
        order=order,
        forces_path=forces,
        model="emt",
        attrs={"protocol_deviations": "[]"},
        error="ValueError: boom",
    )
    assert storage.fc_status(fc) == "broken_symmetry"
    with pytest.raises(GatedOutputError, match=r"placeholder \(status=broken_symmetry\)") as e:
        storage.read_fc(fc, order)
    assert str(fc) in str(e.value)
    with pytest.raises(GatedOutputError, match="no forces"):
        storage.read_forces(forces)
    assert _h5_keys(fc) == [] and _h5_keys(forces) == []
    assert storage.read_attrs(fc) == {
        "kappaflow_status": "broken_symmetry",
        "protocol_deviations": "[]",
    }
    assert storage.read_attrs(forces) == {
        "kappaflow_status": "broken_symmetry",
        "model": "emt",
        "protocol_deviations": "[]",
        "error": "ValueError: boom",
    }


def test_fc_placeholders_without_error_or_attrs(tmp_path):
    write_fc_placeholders(
        "nonfinite_forces",
        fc_path=tmp_path / "fc2.hdf5",
        order=2,
        forces_path=tmp_path / "f.hdf5",
        model="nan",
    )
    assert storage.read_attrs(tmp_path / "f.hdf5") == {
        "kappaflow_status": "nonfinite_forces",
        "model": "nan",
    }
    assert storage.read_attrs(tmp_path / "fc2.hdf5") == {"kappaflow_status": "nonfinite_forces"}
    with pytest.raises(GatedOutputError):
        storage.read_fc(tmp_path / "fc2.hdf5", 2)


def test_force_log_hand_made():
    info = {
        "structures": 15,
        "path": "batched",
        "reason": "auto on CUDA: the family's batched forces-only call",
        "model_calls": 2,
        "seconds": 3.14159,
        "structures_per_s": 4.77464,
    }
    assert force_log(info) == (
        "forces: 15 supercells, path batched (auto on CUDA: the family's batched forces-only "
        "call), 2 model calls, 3.1 s (4.77/s)"
    )
    # a run too fast to time has no rate: 0.00/s, not a crash
    assert force_log({**info, "seconds": 0.0, "structures_per_s": None}).endswith("0.0 s (0.00/s)")


def test_force_log_of_a_real_run():
    """EMT on three rattled 4-atom cells and a skipped pair (None): 3 structures, serial."""
    rng = np.random.default_rng(0)
    cells = []
    for _ in range(3):
        at = bulk("Cu", "fcc", a=3.6, cubic=True)
        at.positions += rng.normal(0, 0.02, at.positions.shape)
        cells.append(at)
    run = evaluate_forces([*cells, None], EMT(), settings=ForceSettings(path="serial"))
    line = force_log(run.info)
    m = re.fullmatch(
        r"forces: (\d+) supercells, path (\w+) \((.*)\), (\d+) model calls, "
        r"([\d.]+) s \(([\d.]+)/s\)",
        line,
    )
    assert m, line
    assert m.group(1, 2, 3, 4) == ("3", "serial", "forces.path=serial", "3")
    assert float(m.group(5)) == pytest.approx(run.info["seconds"], abs=0.05)
    assert run.info["skipped_by_cutoff"] == 1 and np.all(run.forces[3] == 0)


def test_material_of_round_trips_a_spec():
    spec = MaterialSpec("mp-1", "NaCl", 225, "rs", (4, 4, 4), (2, 2, 2), (19, 19, 19), ("q_mesh",))
    record = json.loads(json.dumps({"material": spec.as_dict()}))
    assert record["material"]["q_mesh"] == [19, 19, 19]  # lists on disk
    back = material_of(record)
    assert back == spec and back.desc == "NaCl-rs"
    assert isinstance(back.fc2_supercell, tuple) and isinstance(back.defaults_used, tuple)
