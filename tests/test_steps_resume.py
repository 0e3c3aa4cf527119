"""kappaflow.steps.resume on the outputs of a real EMT Cu chain: everything current gives no
step; each change of an input (model, material spec, relax settings, phono3py settings,
temperatures) or a missing file gives the right first step, and every later step after it."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from ase.build import bulk
from ase.io import write
from helpers import fc2_into, fc3_into

from kappaflow import storage
from kappaflow.calculators import model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.common import material_of
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import run_relax
from kappaflow.steps.resume import KAPPA_STEPS, Wanted, first_outdated, steps_to_run
from kappaflow.structures import MaterialSpec

RELAX = RelaxSettings(fmax=1e-3)
KAPPA = KappaSettings((300.0,), Phono3pySettings())
#: which step each output belongs to (written out by hand, not taken from the module)
OWNER = {
    "relaxed": "relax",
    "fc2": "fc2",
    "forces_fc2": "fc2",
    "disp": "fc2",
    "phonons": "fc2",
    "fc3": "fc3",
    "forces_fc3": "fc3",
    "kappa": "kappa",
    "record": "kappa",
}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished one-material run: EMT Cu relax -> fc2 -> fc3 -> κ (2×2×2, 3×3×3 mesh)."""
    root = tmp_path_factory.mktemp("resume")
    write(root / "s.extxyz", _cu(), format="extxyz")
    f = {k: root / "Cu" / v for k, v in MATERIAL_FILES.items()}
    spec = model_spec("emt")
    run_relax(
        structures=root / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=RELAX,
        out_relaxed=f["relaxed"],
    )
    fc2_into(f, spec, KAPPA.phono3py)
    fc3_into(f, spec, KAPPA.phono3py)
    run_kappa(
        relaxed=f["relaxed"],
        phonons_json=f["phonons"],
        fc2_path=f["fc2"],
        fc3_path=f["fc3"],
        settings=KAPPA,
        out_hdf5=f["kappa"],
        out_record=f["record"],
        fc3_forces=f["forces_fc3"],
    )
    _, record = storage.read_structure(f["relaxed"])
    return root / "Cu", material_of(record)


@pytest.fixture
def run(done, tmp_path):
    """A private copy of the finished run (so a test may delete or edit its files)."""
    src, material = done
    shutil.copytree(src, tmp_path / "Cu")
    files = {k: tmp_path / "Cu" / v for k, v in MATERIAL_FILES.items()}
    return files, material


def _cu():
    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {
        "material_id": "Cu",
        "fc2_supercell": [2, 2, 2],
        "fc3_supercell": [2, 2, 2],
        "q_mesh": [3, 3, 3],
    }
    return cu


def _first(files, material, model="emt", relax=RELAX, kappa=KAPPA):
    spec = replace(model_spec("emt"), key=model)
    wanted = Wanted(
        model=spec,
        frame=_cu(),
        material=material,
        relax=relax,
        phono3py=kappa.phono3py,
        temperatures=kappa.temperatures,
    )
    first = first_outdated(files, KAPPA_STEPS, wanted)
    return None if first is None else first.step


def test_finished_run_is_current(run):
    files, material = run
    assert material.material_id == "Cu" and material.q_mesh == (3, 3, 3)
    assert _first(files, material) is None
    assert steps_to_run(None) == ()
    # the Grüneisen files are not part of a κ run: their absence changes nothing
    assert not files["gruneisen"].exists()


def test_steps_to_run_from_each_first_step():
    assert steps_to_run("relax") == ("relax", "fc2", "fc3", "kappa")
    assert steps_to_run("fc2") == ("fc2", "fc3", "kappa")
    assert steps_to_run("fc3") == ("fc3", "kappa")
    assert steps_to_run("kappa") == ("kappa",)


def test_nothing_written_yet_starts_at_relax(tmp_path):
    files = {k: tmp_path / v for k, v in MATERIAL_FILES.items()}
    spec = MaterialSpec("Cu", "Cu", 225, "sg225", (2, 2, 2), (2, 2, 2), (3, 3, 3))
    assert _first(files, spec) == "relax"


@pytest.mark.parametrize("role", sorted(OWNER))
def test_a_missing_file_restarts_its_step(run, role):
    files, material = run
    files[role].unlink()
    first = _first(files, material)
    assert first == OWNER[role]
    assert steps_to_run(first)[0] == OWNER[role] and steps_to_run(first)[-1] == "kappa"


def test_another_model_redoes_everything(run):
    files, material = run
    assert _first(files, material, model="other-model") == "relax"


@pytest.mark.parametrize(
    "change",
    [
        {"q_mesh": (5, 5, 5)},
        {"fc2_supercell": (3, 3, 3)},
        {"fc3_supercell": (3, 3, 3)},
    ],
)
def test_another_material_spec_redoes_the_relax(run, change):
    """The spec is stored with the relaxed structure, so any change of it starts there
    (conservative: a q-mesh change alone would need fc2 onwards only)."""
    files, material = run
    assert _first(files, replace(material, **change)) == "relax"


@pytest.mark.parametrize(
    "change", [{"fmax": 1e-4}, {"max_steps": 100}, {"optimizer": "BFGS"}, {"allow_tilt": True}]
)
def test_other_relax_settings_redo_the_relax(run, change):
    files, material = run
    assert _first(files, material, relax=replace(RELAX, **change)) == "relax"


@pytest.mark.parametrize(
    "change",
    [
        {"displacement": 0.02},
        {"symprec": 1e-4},
        {"is_isotope": False},
        {"backend": "Rust"},
        {"mesh": (5, 5, 5)},
        {"fc3_cutoff_pair_distance": 3.0},
    ],
)
def test_other_phono3py_settings_redo_fc2(run, change):
    files, material = run
    kappa = KappaSettings(KAPPA.temperatures, replace(KAPPA.phono3py, **change))
    assert _first(files, material, kappa=kappa) == "fc2"


@pytest.mark.parametrize("temps", [(300.0, 600.0), (600.0,), (200.0, 300.0)])
def test_other_temperatures_redo_kappa_only(run, temps):
    files, material = run
    first = _first(files, material, kappa=KappaSettings(temps, KAPPA.phono3py))
    assert first == "kappa" and steps_to_run(first) == ("kappa",)


def test_temperatures_compared_as_numbers(run):
    files, material = run
    assert _first(files, material, kappa=KappaSettings((300,), KAPPA.phono3py)) is None


def test_stored_records_decide(run):
    """What the records say they were made from is what is compared: edit the gate's model
    or the κ record's phono3py settings and the step that wrote them is redone."""
    files, material = run
    gate = storage.read_json(files["phonons"])
    made = gate["provenance"]["made_from"]
    made["model"]["key"] = "another"
    storage.write_json(files["phonons"], gate)
    assert _first(files, material) == "fc2"
    made["model"]["key"] = "emt"  # the gate restored (same bytes as before), the κ record edited
    storage.write_json(files["phonons"], gate)
    assert _first(files, material) is None
    record = storage.read_json(files["record"])
    record["provenance"]["made_from"]["settings"]["phono3py"]["displacement"] = 0.05
    storage.write_json(files["record"], record)
    assert _first(files, material) == "kappa"


def test_earliest_change_wins(run):
    files, material = run
    kappa = KappaSettings((300.0, 600.0), replace(KAPPA.phono3py, displacement=0.02))
    assert _first(files, material, relax=replace(RELAX, fmax=1e-4), kappa=kappa) == "relax"
    assert _first(files, material, kappa=kappa) == "fc2"


@pytest.mark.parametrize(
    ("missing", "change", "expected"),
    [
        ("record", {"model": "other-model"}, "relax"),
        ("kappa", {"relax": replace(RELAX, fmax=1e-4)}, "relax"),
        (
            "forces_fc3",
            {"kappa": KappaSettings((300.0,), replace(KAPPA.phono3py, displacement=0.02))},
            "fc2",
        ),
    ],
)
def test_a_missing_later_file_does_not_hide_an_earlier_change(run, missing, change, expected):
    files, material = run
    files[missing].unlink()
    assert _first(files, material, **change) == expected
