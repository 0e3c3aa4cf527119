"""The materials table: reference set, selection, defaults for user structures."""

from __future__ import annotations

import pytest
from ase.build import bulk

from kappaflow import storage
from kappaflow.settings import StructureDefaults
from kappaflow.structures import (
    MaterialError,
    material_from_frame,
    materials_table,
    select_materials,
)


@pytest.fixture(scope="module")
def table(reference_dir):
    return materials_table(
        storage.read_structures(reference_dir / "phononDB-PBE-structures.extxyz")
    )


def test_reference_table(table):
    assert len(table) == 103
    types = [m.structure_type for m in table.values()]
    assert (types.count("rs"), types.count("zb"), types.count("wz")) == (37, 33, 33)
    nacl = table["mp-22862"]
    assert (nacl.name, nacl.desc, nacl.fc2_supercell, nacl.fc3_supercell, nacl.q_mesh) == (
        "NaCl",
        "NaCl-rs",
        (4, 4, 4),
        (2, 2, 2),
        (19, 19, 19),
    )
    assert table["mp-804"].q_mesh == (19, 19, 15)
    assert nacl.defaults_used == ()
    assert {"no-mp-1", "no-mp-2", "no-mp-3", "no-mp-4"} <= set(table)


def test_selection_by_id_and_type(table):
    assert len(select_materials(table, "all")) == 103
    sel = select_materials(table, ["mp-22862", "wz"])
    assert len(sel) == 34
    assert "mp-22862" in sel
    with pytest.raises(MaterialError, match="mp-0000"):
        select_materials(table, ["mp-0000"])


def test_user_structure_defaults_are_recorded_and_overridable():
    gan = bulk("GaN", "wurtzite", a=3.19, c=5.19)
    gan.info = {}
    spec = material_from_frame(gan, 0, StructureDefaults())
    assert spec.fc2_supercell == (5, 5, 3)
    assert spec.fc3_supercell == (3, 3, 2)
    assert spec.q_mesh == (22, 22, 12)
    assert spec.name == "GaN" and spec.material_id == "GaN-0"
    assert (
        spec.spacegroup == 186 and spec.structure_type == "sg186"
    )  # rs/zb/wz label dataset frames
    assert set(spec.defaults_used) == {"symm.no", "fc2_supercell", "fc3_supercell", "q_mesh"}
    over = material_from_frame(gan, 0, overrides={"q_mesh": [9, 9, 7]})
    assert over.q_mesh == (9, 9, 7)
    assert "q_mesh" not in over.defaults_used


def test_bad_frames_are_named():
    cu = bulk("Cu", "fcc", a=3.6)
    cu.info = {"material_id": "Cu", "fc2_supercell": [[2, 1, 0], [0, 2, 0], [0, 0, 2]]}
    with pytest.raises(MaterialError, match="Cu: fc2_supercell must be diagonal"):
        material_from_frame(cu, 0)
    with pytest.raises(MaterialError, match="duplicate material id 'Cu'"):
        materials_table(
            [_with_id(bulk("Cu", "fcc", a=3.6), "Cu"), _with_id(bulk("Cu", "fcc", a=3.6), "Cu")]
        )


def _with_id(atoms, mid):
    atoms.info["material_id"] = mid
    return atoms
