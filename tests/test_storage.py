"""kappaflow.storage: atomic writes, formats, checksums, placeholders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kappaflow import storage
from kappaflow.reference import FILES, ChecksumError, ResolvedDir


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), storage.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_roundtrip_nan_as_null(tmp_path):
    storage.write_json(tmp_path / "a.json.gz", {"k": [1.0, float("nan")], "arr": np.arange(3)})
    assert storage.read_json(tmp_path / "a.json.gz") == {"k": [1.0, None], "arr": [0, 1, 2]}


def test_placeholder_fc_is_refused(tmp_path):
    storage.write_fc(tmp_path / "fc3.hdf5", 3, None, None, status="imaginary_modes")
    assert storage.fc_status(tmp_path / "fc3.hdf5") == "imaginary_modes"
    with pytest.raises(storage.GatedOutputError, match="imaginary_modes"):
        storage.read_fc(tmp_path / "fc3.hdf5", 3)
    storage.write_forces(tmp_path / "f.hdf5", None, status="broken_symmetry")
    with pytest.raises(storage.GatedOutputError):
        storage.read_forces(tmp_path / "f.hdf5")


def test_structure_record_roundtrip_survives_quotes_and_newlines(tmp_path):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6)
    record = {"status": "relax_error", "error_traceback": "Traceback:\n  \"x\" = 'y'\n", "n": 3}
    storage.write_structure(tmp_path / "r.extxyz", atoms, record)
    back, info = storage.read_structure(tmp_path / "r.extxyz")
    assert info == record
    assert back.info == {}
    np.testing.assert_allclose(back.cell[:], atoms.cell[:])


def test_hdf5_roundtrip_skips_none_and_keeps_attributes(tmp_path):
    storage.write_hdf5(
        tmp_path / "k.hdf5",
        {"kappa": np.ones((2, 6)), "gamma_isotope": None, "mesh": np.array([5, 5, 5])},
        {"kappaflow_status": "ok", "protocol_deviations": ["a"], "n": 2},
    )
    data, attrs = storage.read_hdf5(tmp_path / "k.hdf5")
    assert set(data) == {"kappa", "mesh"}
    np.testing.assert_array_equal(data["mesh"], [5, 5, 5])
    assert attrs["kappaflow_status"] == "ok" and attrs["n"] == 2
    assert attrs["protocol_deviations"] == '["a"]'  # lists and dicts stored as JSON


def test_kappa_table_roundtrip_and_ids(tmp_path):
    df = pd.DataFrame(
        {
            "mp_id": ["mp-1", "mp-2"],
            "kappa_TOT_ave": [[1.5], [np.nan]],
            "mode_kappa_TOT_ave": [np.ones((1, 2, 3)), None],
        }
    )
    storage.write_kappa_table(tmp_path / "t.json.gz", df)
    back = storage.read_kappa_table(tmp_path / "t.json.gz")
    assert list(back.index) == ["mp-1", "mp-2"]
    assert back.loc["mp-1", "mode_kappa_TOT_ave"].shape == (1, 2, 3)
    assert np.isnan(back.loc["mp-2", "kappa_TOT_ave"][0])
    assert storage.read_kappa_table_ids(tmp_path / "t.json.gz") == ["mp-1", "mp-2"]


def test_kappa_table_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json\.gz"):
        storage.read_kappa_table(tmp_path / "nope.json.gz")
    storage.write_json(tmp_path / "x.json", {"name": {"0": "a"}, "kappa_TOT_ave": {"0": 1.0}})
    with pytest.raises(ValueError, match=r"x\.json: no 'mp_id' column"):
        storage.read_kappa_table(tmp_path / "x.json")


def test_download_verifies_before_the_rename(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    good = storage.sha256_file(src)
    dest = tmp_path / "cache" / "file.bin"
    with pytest.raises(ChecksumError, match="refusing"):
        storage.download(src.as_uri(), dest, "0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    storage.download(src.as_uri(), dest, good)
    assert dest.read_bytes() == b"payload"


def test_reference_file_refuses_other_bytes(tmp_path):
    ref_dir = ResolvedDir(tmp_path, "cli")
    (tmp_path / FILES["mp_id_map"].filename).write_text("not the pinned file\n")
    with pytest.raises(ChecksumError, match=r"mp_id-phonondb_id\.txt"):
        storage.reference_file(ref_dir, "mp_id_map")


def test_package_data_ship_with_the_package():
    schema = storage.read_package_yaml("config.schema.yaml")
    assert schema["properties"]["temperatures"]["default"] == [300]
    table = storage.read_melting_points()
    assert {"formula", "T_melt_K"} <= set(table.columns) and len(table) > 40


def test_slurm_time_limit_kills_counted_from_the_plugin_logs(tmp_path):
    folder = storage.slurm_job_logdir(tmp_path, "kappa", ["chgnet-0.3.0", "mp-1"])
    assert folder == tmp_path / "rule_kappa" / "chgnet-0.3.0_mp-1"
    folder.mkdir(parents=True)
    (folder / "11.log").write_text("slurmstepd: *** JOB 11 CANCELLED DUE TO TIME LIMIT ***")
    (folder / "12.log").write_text("ok")
    assert storage.slurm_time_limit_kills(tmp_path, "kappa", ["chgnet-0.3.0", "mp-1"]) == 1
    assert storage.slurm_time_limit_kills(tmp_path, "fc3", ["chgnet-0.3.0", "mp-1"]) == 0
