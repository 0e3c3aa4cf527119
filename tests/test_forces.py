"""Force-evaluation paths (kappaflow.forces): batch plans, path choice, settings errors,
the serial/batched equality contract on EMT, placeholders for skipped pairs."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from kappaflow.forces import (
    DEFAULT_MAX_ATOMS,
    ForceError,
    ForceSettings,
    NonFiniteForcesError,
    batched_forces,
    choose_path,
    evaluate_forces,
    max_atoms_for,
    plan_batches,
    serial_forces,
)


def _rattled_cu(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        at.positions += rng.normal(scale=0.03, size=at.positions.shape)
        out.append(at)
    return out


def _emt_batch(calls: list[int]):
    """A batched call built on EMT (one structure at a time inside), counting its calls."""

    def run(structures):
        calls.append(len(structures))
        return serial_forces(structures, EMT())

    return run


def test_plan_batches_fills_the_atom_budget_in_order():
    assert plan_batches([64] * 10, 256) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_batches([64] * 3, 64) == [[0], [1], [2]]
    # a structure above the budget goes alone, and the order is kept
    assert plan_batches([64, 512, 64, 64], 200) == [[0], [1], [2, 3]]
    assert plan_batches([], 100) == []
    with pytest.raises(ForceError, match="max_atoms_per_batch"):
        plan_batches([1], 0)


def test_every_index_is_planned_exactly_once():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 600, size=200).tolist()
    groups = plan_batches(sizes, 1000)
    assert [i for g in groups for i in g] == list(range(200))
    assert all(sum(sizes[i] for i in g) <= 1000 or len(g) == 1 for g in groups)


def test_choose_path_per_setting_device_and_family():
    auto = ForceSettings()
    # CPU: the measured table (kappaflow.forces.AUTO_CPU)
    assert choose_path(auto, True, "chgnet", "cpu")[0] == "batched"
    assert choose_path(auto, True, "mace", "cpu")[0] == "batched"
    assert choose_path(auto, True, "sevennet", "cpu")[0] == "serial"
    assert max_atoms_for(auto, "cpu", "chgnet") == 256
    assert max_atoms_for(auto, "cpu", "mace") == 1  # one supercell per call
    # an explicit budget means batched, on any family that has a batched call
    assert choose_path(ForceSettings(max_atoms_per_batch=512), True, "sevennet")[0] == "batched"
    # CUDA: batched for every family with a batched call, the device's budget
    for family in ("chgnet", "mace", "sevennet"):
        assert choose_path(auto, True, family, "cuda:0")[0] == "batched"
        assert max_atoms_for(auto, "cuda", family) == DEFAULT_MAX_ATOMS["cuda"]
    path, reason = choose_path(auto, has_batched=False, family="emt")
    assert path == "serial" and "emt" in reason
    assert choose_path(ForceSettings(path="serial"), True)[0] == "serial"
    with pytest.raises(ForceError, match="family 'ase' has no batched"):
        choose_path(ForceSettings(path="batched"), has_batched=False, family="ase")


def test_force_settings_errors_name_the_key():
    with pytest.raises(ForceError, match=r"forces\.path"):
        ForceSettings(path="fast")
    with pytest.raises(ForceError, match=r"forces\.max_atoms_per_batch"):
        ForceSettings(max_atoms_per_batch=0)
    with pytest.raises(ForceError, match=r"unknown key.*batch_size"):
        ForceSettings.from_mapping({"batch_size": 4})
    assert ForceSettings.from_mapping(None) == ForceSettings()


def test_default_budget_per_device():
    assert max_atoms_for(ForceSettings(), "cpu", "emt") == DEFAULT_MAX_ATOMS["cpu"]
    assert max_atoms_for(ForceSettings(), "cuda:1") == DEFAULT_MAX_ATOMS["cuda"]
    assert max_atoms_for(ForceSettings(max_atoms_per_batch=100), "cuda") == 100


def test_batched_path_equals_serial_and_records_the_run():
    structures = _rattled_cu(7)
    calls: list[int] = []
    serial = evaluate_forces(structures, EMT(), settings=ForceSettings(path="serial"))
    batched = evaluate_forces(
        structures,
        EMT(),
        _emt_batch(calls),
        ForceSettings(max_atoms_per_batch=96),  # 3 x 32 atoms per call
        family="emt-batched",
    )
    assert calls == [3, 3, 1]
    np.testing.assert_allclose(serial.forces, batched.forces, rtol=0, atol=1e-12)
    assert serial.info["path"] == "serial" and serial.info["model_calls"] == 7
    assert batched.info["path"] == "batched" and batched.info["model_calls"] == 3
    assert batched.info["max_atoms_per_batch"] == 96
    assert batched.info["structures"] == 7 and batched.info["skipped_by_cutoff"] == 0
    # the serial reference path really evaluates each structure
    direct = []
    for at in structures:
        at = at.copy()
        at.calc = EMT()
        direct.append(at.get_forces())
    np.testing.assert_allclose(serial.forces, np.array(direct), rtol=0, atol=1e-12)


def test_skipped_pairs_get_zero_forces_and_are_not_evaluated():
    structures = _rattled_cu(4)
    calls: list[int] = []
    run = evaluate_forces(
        [structures[0], None, structures[1], None],
        EMT(),
        _emt_batch(calls),
        ForceSettings(path="batched"),
    )
    assert sum(calls) == 2
    assert np.all(run.forces[[1, 3]] == 0) and np.any(run.forces[0] != 0)
    assert run.info["skipped_by_cutoff"] == 2


def test_non_finite_forces_raise_the_recorded_failure():
    def nan_batch(structures):
        return [np.full((len(s), 3), np.nan) for s in structures]

    with pytest.raises(NonFiniteForcesError, match=r"supercell\(s\) \[0, 1\]"):
        evaluate_forces(_rattled_cu(2), EMT(), nan_batch, ForceSettings(path="batched"))


def test_batched_forces_reports_progress():
    seen = []
    batched_forces(_rattled_cu(5), _emt_batch([]), 64, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_batched_path_on_a_family_without_one_fails_naming_the_models():
    from kappaflow.forces import check_families

    check_families(ForceSettings(), {"emt": "emt"})  # auto: fine
    check_families(ForceSettings(path="batched"), {"chgnet-0.3.0": "chgnet"})
    with pytest.raises(ForceError, match=r"model\(s\) emt, my-calc have no batched call"):
        check_families(
            ForceSettings(path="batched"),
            {"my-calc": "ase", "emt": "emt", "sevennet-0": "sevennet"},
        )


def test_bad_force_settings_in_a_step_raise_instead_of_failing_the_material(tmp_path):
    """A settings error is an input error: it is raised, not recorded as fc2_error."""
    from ase.io import write

    from kappaflow.calculators import model_spec
    from kappaflow.layout import MATERIAL_FILES
    from kappaflow.settings import Phono3pySettings, RelaxSettings
    from kappaflow.steps.harmonic import run_fc2
    from kappaflow.steps.relax import run_relax

    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {"material_id": "Cu", "fc2_supercell": [2] * 3, "fc3_supercell": [2] * 3,
               "q_mesh": [3] * 3}  # fmt: skip
    write(tmp_path / "s.extxyz", cu, format="extxyz")
    f = {k: tmp_path / v for k, v in MATERIAL_FILES.items()}
    spec = model_spec("emt")
    run_relax(
        structures=tmp_path / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=RelaxSettings(fmax=1e-3),
        out_relaxed=f["relaxed"],
    )
    with pytest.raises(ForceError, match="family 'emt' has no batched call"):
        run_fc2(relaxed=f["relaxed"], model=spec, settings=Phono3pySettings(), out_fc2=f["fc2"], out_forces=f["forces_fc2"], out_disp=f["disp"], out_phonons=f["phonons"], force_settings=ForceSettings(path="batched"))  # fmt: skip
    assert not f["phonons"].exists()
