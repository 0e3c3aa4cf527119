"""kappaflow.finetune: export, labels in (extxyz and phono3py force sets), validation
errors, mace arguments, hold-out by composition, before/after tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from kappaflow import finetune as ft
from kappaflow import finetune_labels as ftl
from kappaflow import storage
from kappaflow.phonons import init_phono3py
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import material_from_frame


@pytest.fixture(scope="module")
def cu():
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.info.update(
        {"material_id": "Cu-fcc", "fc2_supercell": [3, 3, 3], "fc3_supercell": [2, 2, 2]}
    )
    spec = material_from_frame(atoms, 0)
    return atoms, spec


@pytest.fixture(scope="module")
def ph3(cu):
    atoms, spec = cu
    return init_phono3py(atoms, spec, Phono3pySettings())


def test_export_is_the_benchmark_displacement_sets_plus_seeded_rattles(ph3):
    s = ft.ExportSettings(displaced=("fc2", "fc3"), rattled=3, rattle_amplitude=0.05, seed=1)
    frames = ft.export_material(ph3, "Cu-fcc", s)
    kinds = [f.info[ft.KIND_KEY] for f in frames]
    n2 = len(ph3.phonon_supercells_with_displacements)
    n3 = sum(c is not None for c in ph3.supercells_with_displacements)
    assert kinds.count("fc2_disp") == n2 and kinds.count("fc3_disp") == n3
    assert kinds.count("rattled") == 3
    assert len({f.info[ft.ID_KEY] for f in frames}) == len(frames)
    # displaced frames: exactly the displaced atom moved by the recorded vector
    for f in frames:
        if f.info[ft.KIND_KEY] == "fc2_disp":
            ideal = ph3.phonon_supercell.positions
            moved = np.flatnonzero(np.linalg.norm(f.positions - ideal, axis=1) > 1e-8)
            assert moved.tolist() == [f.info[ft.DISP_ATOM_KEY]]
            np.testing.assert_allclose(
                f.positions[moved[0]] - ideal[moved[0]], f.info[ft.DISP_KEY], atol=1e-12
            )
    rattled = [f for f in frames if f.info[ft.KIND_KEY] == "rattled"]
    delta = np.concatenate([f.positions - ph3.supercell.positions for f in rattled])
    assert 0.03 < delta.std() < 0.07  # amplitude 0.05 Å
    again = ft.export_material(ph3, "Cu-fcc", s)  # seeded: identical
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(frames, again, strict=True))
    sub = ft.export_material(ph3, "Cu-fcc", ft.ExportSettings(displaced=("fc3",), max_displaced=5))
    assert len(sub) == 5
    man = ft.manifest(frames, s, "x.extxyz")
    assert man["n_frames"] == len(frames) and man["counts"]["Cu-fcc"]["rattled"] == 3


def test_export_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="displaced"):
        ft.ExportSettings(displaced=("fc4",))
    with pytest.raises(ValueError, match="nothing to export"):
        ft.ExportSettings(displaced=(), rattled=0)
    with pytest.raises(ValueError, match="epochs"):
        ft.TrainSettings(epochs=0)


@pytest.fixture(scope="module")
def labelled(ph3):
    frames = ft.export_material(ph3, "Cu-fcc", ft.ExportSettings(displaced=("fc2",), rattled=2))
    return frames, ftl.label_frames(frames, EMT())


def test_labels_round_trip_through_extxyz(labelled, tmp_path):
    exported, labels = labelled
    storage.write_frames(tmp_path / "labels.extxyz", labels)
    back = storage.read_frames(tmp_path / "labels.extxyz")
    clean = ftl.validate_labels(back, exported, "labels.extxyz")
    assert len(clean) == len(exported)
    for c, lab in zip(clean, labels, strict=True):
        np.testing.assert_allclose(
            c.arrays[ft.FORCES_KEY], lab.arrays[ft.FORCES_KEY], atol=1e-7
        )  # extxyz: 8 decimals
        assert c.info[ft.ENERGY_KEY] == pytest.approx(lab.info[ft.ENERGY_KEY])


def _broken(labels, i, fn):
    out = [a.copy() for a in labels]
    fn(out[i])
    return out


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda a: a.arrays.pop(ft.FORCES_KEY), "frame 1 .*no forces"),
        (lambda a: a.arrays[ft.FORCES_KEY].__setitem__((0, 0), np.nan), "frame 1 .*NaN"),
        (lambda a: a.arrays[ft.FORCES_KEY].__imul__(1000.0), "frame 1 .*eV/Å"),
        (lambda a: a.info.__setitem__(ft.ENERGY_KEY, a.info[ft.ENERGY_KEY] * 1e6), "frame 1.*eV"),
        (lambda a: a.set_chemical_symbols(["Ag"] * len(a)), "frame 1 .*atoms differ"),
        (lambda a: a.positions.__iadd__(0.01), "frame 1 .*positions differ"),
        (
            lambda a: a.info.__setitem__(ft.ID_KEY, "Cu-fcc/fc3_disp/99"),
            "frame 1: .*not among the exported",
        ),
        (lambda a: a.info.__setitem__(ft.STRESS_KEY, np.eye(3) * 5.0), "frame 1 .*eV/Å\\^3"),
        (lambda a: a.info.__setitem__(ft.STRESS_KEY, np.zeros(4)), "frame 1 .*stress has shape"),
    ],
    ids=[
        "missing-forces",
        "nan",
        "units-forces",
        "units-energy",
        "atoms",
        "positions",
        "id",
        "units-stress",
        "stress-shape",
    ],
)
def test_bad_labels_name_file_and_frame(labelled, fn, message):
    exported, labels = labelled
    with pytest.raises(ftl.LabelError, match=f"labels.extxyz, {message}"):
        ftl.validate_labels(_broken(labels, 1, fn), exported, "labels.extxyz")


def test_sign_flipped_forces_are_refused(labelled):
    exported, labels = labelled
    flipped = [a.copy() for a in labels]
    for a in flipped:
        a.arrays[ft.FORCES_KEY] = -a.arrays[ft.FORCES_KEY]
    with pytest.raises(ftl.LabelError, match="sign error"):
        ftl.validate_labels(flipped, exported, "labels.extxyz")


def test_phono3py_force_sets_train_on_forces_only(cu, tmp_path):
    """phono3py_params.yaml with forces (PhononDB's format): frames with forces, no energy."""
    import phono3py

    atoms, spec = cu
    ph3 = init_phono3py(atoms, spec, Phono3pySettings())
    calc = EMT()
    from kappaflow.phonons import compute_forces

    ph3.forces = compute_forces(ph3.supercells_with_displacements, calc)
    ph3.phonon_forces = compute_forces(ph3.phonon_supercells_with_displacements, calc)
    ph3.save(str(tmp_path / "phono3py_params.yaml"))
    loaded = phono3py.load(str(tmp_path / "phono3py_params.yaml"), produce_fc=False, log_level=0)
    frames = ftl.frames_from_phono3py(loaded, "phono3py_params.yaml", "Cu-fcc")
    n3 = sum(c is not None for c in ph3.supercells_with_displacements)
    assert len(frames) == n3 + len(ph3.phonon_supercells_with_displacements)
    assert all(ft.ENERGY_KEY not in f.info for f in frames)
    clean = ftl.validate_labels(frames, None, "phono3py_params.yaml")
    np.testing.assert_allclose(clean[0].arrays[ft.FORCES_KEY], ph3.forces[0], atol=1e-10)


def test_split_is_seeded_and_never_empty():
    frames = [bulk("Cu") for _ in range(10)]
    tr, va = ft.split_train_valid(frames, 0.2, seed=3)
    assert (len(tr), len(va)) == (8, 2)
    _, va2 = ft.split_train_valid(frames, 0.2, seed=3)
    assert [id(f) for f in va] == [id(f) for f in va2]
    assert len(ft.split_train_valid(frames[:2], 0.01, 0)[1]) == 1
    with pytest.raises(ftl.LabelError, match="at least 2"):
        ft.split_train_valid(frames[:1], 0.1, 0)


def test_mace_arguments_naive_and_multihead():
    s = ft.TrainSettings(epochs=7, lr=2e-3, forces_weight=50.0, seed=4)
    argv = ft.mace_train_argv(s, "base.model", "t.xyz", "v.xyz", "wd", "ft", "cpu")
    assert "--foundation_model=base.model" in argv and "--multiheads_finetuning=False" in argv
    assert "--max_num_epochs=7" in argv and "--lr=0.002" in argv and "--seed=4" in argv
    assert "--E0s=foundation" in argv and f"--forces_key={ft.FORCES_KEY}" in argv
    replay = ft.TrainSettings(replay_file="mp_replay.xyz", num_samples_pt=100)
    argv = ft.mace_train_argv(replay, "medium", "t.xyz", "v.xyz", "wd", "ft", "cuda")
    assert "--multiheads_finetuning=True" in argv and "--pt_train_file=mp_replay.xyz" in argv


def test_parse_error_table():
    log = """2026-11-24 04:00:19.9 INFO: Error-table on TRAIN and VALID:
2026-11-24 04:00:19.9 INFO: 
+---------------+---------------------+------------------+-------------------+
|  config_type  | RMSE E / meV / atom | RMSE F / meV / A | relative F RMSE % |
+---------------+---------------------+------------------+-------------------+
| train_Default |           40.3      |         13.0     |          9.38     |
| valid_Default |           31.7      |         12.5     |          9.47     |
+---------------+---------------------+------------------+-------------------+
2026-11-24 04:00:20.021 INFO: Done
"""
    table = ft.parse_error_table(log)
    assert table["valid_Default"]["RMSE F / meV / A"] == 12.5
    assert table["train_Default"]["RMSE E / meV / atom"] == 40.3
    assert ft.parse_error_table("no table") == {}


def test_holdout_by_composition_and_auto_split():
    formulas = {"a": "NaCl", "b": "NaCl", "c": "KBr", "d": "GaN", "e": "GaN", "f": "MgO"}
    split = ft.holdout_by_composition(["a", "d"], formulas)
    assert split == {
        "a": "train",
        "b": "same_composition",
        "c": "held_out",
        "d": "train",
        "e": "same_composition",
        "f": "held_out",
    }
    train = ft.auto_train_materials(formulas, 0.5, seed=0)
    comps = {formulas[m] for m in train}
    assert len(comps) == 2 and set(train) == {m for m, f in formulas.items() if f in comps}
    held = [m for m, s in ft.holdout_by_composition(train, formulas).items() if s == "held_out"]
    assert not comps & {formulas[m] for m in held}
    with pytest.raises(ValueError, match="not in the materials table"):
        ft.holdout_by_composition(["zz"], formulas)


def test_before_after_summary_hand_computed():
    before = pd.DataFrame(
        {
            "mp_id": ["a", "b", "c"],
            "SRE": [0.5, 0.4, 2.0],
            "SRME": [0.6, 0.8, 2.0],
            "failed": [False, False, True],
        }
    )
    after = before.assign(SRE=[0.1, 0.2, 0.3], SRME=[0.2, 0.4, 0.5], failed=[False, False, False])
    per, summary = ft.before_after(before, after, {"a": "train", "b": "held_out", "c": "held_out"})
    s = summary.set_index("split")
    assert s.loc["train", "mSRME_before"] == pytest.approx(0.6)
    assert s.loc["train", "mSRME_after"] == pytest.approx(0.2)
    assert s.loc["held_out", "mSRME_before"] == pytest.approx(1.4)
    assert s.loc["held_out", "failed_before"] == 1 and s.loc["held_out", "failed_after"] == 0
    assert s.loc["held_out", "n_ok_both"] == 1
    assert s.loc["held_out", "mSRME_after_ok"] == pytest.approx(0.4)
    assert s.loc["all", "n"] == 3
    assert per.set_index("mp_id").loc["b", "dSRME"] == pytest.approx(-0.4)


def test_cli_export_label_check(tmp_path, capsys):
    """The user's path: export -> label (here EMT stands in for DFT) -> check."""
    from kappaflow.cli import main

    structures = str(Path(__file__).resolve().parents[1] / ".test" / "structures.extxyz")
    exp = tmp_path / "exp"
    args = ["--structures", structures, "--out", str(exp), "--rattled", "2", "--max-displaced", "4"]
    assert main(["finetune-export", "--materials", "Cu-fcc", "Ag-fcc", *args]) == 0
    manifest = storage.read_json(exp / "manifest.json")
    assert manifest["counts"]["Cu-fcc"] == {"fc2_disp": 1, "fc3_disp": 4, "rattled": 2}
    assert manifest["sha256"] == storage.sha256_file(exp / "structures.extxyz")
    labels = tmp_path / "labels.extxyz"
    exported = str(exp / "structures.extxyz")
    assert (
        main(["finetune-label", "--model", "emt", "--exported", exported, "--out", str(labels)])
        == 0
    )
    out = tmp_path / "train.extxyz"
    check = ["finetune-check", "--labels", str(labels), "--exported", exported, "--out", str(out)]
    assert main(check) == 0
    assert "n_frames=14 n_with_energy=14" in capsys.readouterr().out
    # a label file with one frame's forces missing: exit 2, file and frame named
    frames = storage.read_frames(labels)
    del frames[3].arrays[ft.FORCES_KEY]
    storage.write_frames(tmp_path / "bad.extxyz", frames)
    bad = ["finetune-check", "--labels", str(tmp_path / "bad.extxyz"), "--exported", exported]
    assert main([*bad, "--out", str(tmp_path / "x.extxyz")]) == 2
    assert "bad.extxyz, frame 3 (" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()


def test_rattled_frames_cycle_over_strains(ph3):
    s = ft.ExportSettings(
        displaced=(), rattled=6, rattle_amplitude=0.01, strains=(-0.02, 0.0, 0.02)
    )
    frames = ft.export_material(ph3, "Cu-fcc", s)
    v0 = ph3.supercell.volume
    strains = [f.info[ft.STRAIN_KEY] for f in frames]
    assert strains == [-0.02, 0.0, 0.02, -0.02, 0.0, 0.02]
    for f, e in zip(frames, strains, strict=True):
        assert f.get_volume() == pytest.approx(v0 * (1 + e) ** 3, rel=1e-12)
    with pytest.raises(ValueError, match="strains"):
        ft.ExportSettings(rattled=1, strains=(0.5,))


def test_recipe_from_config_names_the_key():
    r = ft.FinetuneRecipe.from_mapping(
        "my-ft",
        {
            "base": "mace-mp-0-medium",
            "label_with": "chgnet-0.3.0",
            "train_materials": ["mp-22862"],
            "export": {"rattled": 4, "strains": [-0.01, 0.01]},
            "train": {"epochs": 3, "stress_weight": 1000.0},
        },
    )
    assert r.train_materials == ("mp-22862",) and r.export.strains == (-0.01, 0.01)
    assert r.train.epochs == 3 and r.match_export
    bad = [
        ({"label_with": "chgnet-0.3.0"}, "finetune.x.base"),
        ({"base": "b"}, "exactly one of 'labels'"),
        ({"base": "b", "labels": ["a.xyz"], "label_with": "c"}, "exactly one of 'labels'"),
        ({"base": "x", "labels": ["a.xyz"]}, "its own base"),
        ({"base": "b", "labels": ["a.xyz"], "epochs": 3}, r"unknown key\(s\) \['epochs'\]"),
        ({"base": "b", "labels": ["a.xyz"], "train": {"epochs": 0}}, "finetune.x: .*epochs"),
        ({"base": "b", "labels": ["a.xyz"], "train_materials": "some"}, "train_materials"),
    ]
    for mapping, message in bad:
        with pytest.raises(ValueError, match=message):
            ft.FinetuneRecipe.from_mapping("x", mapping)


def test_training_tag_changes_with_every_input():
    s = ft.TrainSettings()
    tag = ft.training_tag("a" * 64, "b" * 64, s)
    assert tag == ft.training_tag("a" * 64, "b" * 64, ft.TrainSettings())
    assert len(tag) == 12
    others = {
        ft.training_tag("c" * 64, "b" * 64, s),
        ft.training_tag("a" * 64, "c" * 64, s),
        ft.training_tag("a" * 64, "b" * 64, ft.TrainSettings(epochs=51)),
    }
    assert tag not in others and len(others) == 3


def _metrics(rows):
    return pd.DataFrame(
        rows, columns=["mp_id", "DFT_kappa_TOT_ave", "kappa_TOT_ave", "SRE", "SRME", "failed"]
    )


def test_compare_writes_tables_and_side_by_side_plot(tmp_path):
    from kappaflow.steps.finetune import run_finetune_compare

    before = _metrics(
        [
            ("m1", 1.0, 2.0, 0.667, 0.8, False),
            ("m2", 2.0, np.nan, 2.0, 2.0, True),
            ("m3", 3.0, 1.0, 1.0, 1.1, False),
            ("m4", np.nan, 5.0, np.nan, np.nan, False),  # skipped (no reference)
        ]
    )
    after = _metrics(
        [
            ("m1", 1.0, 1.1, 0.095, 0.1, False),
            ("m2", 2.0, 2.5, 0.222, 0.3, False),
            ("m3", 3.0, 2.0, 0.4, 0.5, False),
            ("m4", np.nan, 4.0, np.nan, np.nan, False),
        ]
    )
    storage.write_csv(tmp_path / "b.csv", before)
    storage.write_csv(tmp_path / "a.csv", after)
    split = {"m1": "train", "m2": "held_out", "m3": "held_out", "m4": "held_out"}
    out = {
        "out_csv": tmp_path / "t.csv",
        "out_summary": tmp_path / "s.csv",
        "out_md": tmp_path / "r.md",
        "out_png": tmp_path / "p.png",
        "out_svg": tmp_path / "p.svg",
    }
    summary = run_finetune_compare(
        before_csv=tmp_path / "b.csv",
        after_csv=tmp_path / "a.csv",
        split=split,
        base="base",
        key="ft",
        **out,
    ).set_index("split")
    held = summary.loc["held_out"]
    assert held["n"] == 2  # m4 has no reference
    assert held["mSRME_before"] == pytest.approx((2.0 + 1.1) / 2)
    assert held["mSRME_after"] == pytest.approx((0.3 + 0.5) / 2)
    assert held["failed_before"] == 1 and held["failed_after"] == 0
    assert held["mSRME_before_ok"] == pytest.approx(1.1) and held["mSRME_after_ok"] == 0.5
    per = storage.read_csv(out["out_csv"]).set_index("mp_id")
    assert per.loc["m1", "split"] == "train" and per.loc["m1", "dSRME"] == pytest.approx(-0.7)
    md = out["out_md"].read_text()
    assert "| held_out | 2 | 1.5500 | 0.4000 |" in md
    assert out["out_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = out["out_svg"].read_text()
    assert "before: base" in svg and "after: ft" in svg


def test_metrics_against_a_model_skip_materials_the_reference_model_failed(tmp_path):
    from kappaflow.steps.evaluate import run_model_metrics

    def table(rows):
        df = pd.DataFrame(
            rows, columns=["mp_id", "temperatures", "kappa_TOT_ave", "status", "imaginary_freqs"]
        )
        df["mode_kappa_TOT_ave"] = None
        return df

    ref = table(
        [
            ("m1", [300.0], [2.0], "ok", False),
            ("m2", [300.0], [None], "imaginary_modes", True),
        ]
    )
    pred = table([("m1", [300.0], [1.0], "ok", False), ("m2", [300.0], [3.0], "ok", False)])
    storage.write_kappa_table(tmp_path / "ref.json.gz", ref)
    storage.write_kappa_table(tmp_path / "pred.json.gz", pred)
    summary = run_model_metrics(table=tmp_path / "pred.json.gz", reference=tmp_path / "ref.json.gz", out_csv=tmp_path / "m.csv", materials=["m1", "m2"], reference_model="teacher")  # fmt: skip
    out = storage.read_csv(tmp_path / "m.csv").set_index("mp_id")
    assert summary["n_materials"] == 1 and summary["n_skipped"] == 1
    assert out.loc["m1", "SRE"] == pytest.approx(2 * 1.0 / 3.0)
    assert "reference model teacher failed" in out.loc["m2", "note"]


def test_stress_labels_survive_the_check_as_3x3(labelled):
    exported, frames = labelled
    voigt = np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    frames = [f.copy() for f in frames]
    frames[0].info[ft.STRESS_KEY] = voigt
    clean = ftl.validate_labels(frames, exported, "x.extxyz")
    s = clean[0].info[ft.STRESS_KEY]
    assert s.shape == (3, 3) and np.allclose(s, s.T)
    assert np.allclose(np.diag(s), voigt[:3]) and s[1, 2] == 0.004 and s[0, 1] == 0.006
    assert ft.STRESS_KEY not in clean[1].info
