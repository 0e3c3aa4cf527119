"""kappaflow.steps.finetune on EMT Cu: the exported structures are phono3py's displacement
sets (counted by phono3py itself) plus seeded rattles, with a manifest whose checksum is the
file's; EMT labels are EMT's forces; bad labels are refused naming file and frame."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from phono3py import Phono3py
from phonopy.structure.atoms import PhonopyAtoms

from kappaflow import storage
from kappaflow.calculators import model_spec
from kappaflow.finetune import ExportSettings
from kappaflow.finetune_labels import LabelError
from kappaflow.settings import Phono3pySettings
from kappaflow.steps.finetune import run_finetune_check, run_finetune_export, run_finetune_label
from kappaflow.structures import MaterialError

A = 3.59
EXPORT = ExportSettings(displaced=("fc2", "fc3"), rattled=2, rattle_amplitude=0.05, seed=3)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _phono3py_counts(fc3_cutoff: float | None = None) -> tuple[int, int]:
    """(fc2, fc3) displaced supercells of fcc Cu (fc2 3×3×3, fc3 2×2×2), from phono3py alone."""
    cu = bulk("Cu", "fcc", a=A)
    ph3 = Phono3py(
        PhonopyAtoms(symbols=["Cu"], cell=cu.cell[:], scaled_positions=[[0, 0, 0]]),
        supercell_matrix=[2, 2, 2],
        phonon_supercell_matrix=[3, 3, 3],
        primitive_matrix="auto",
    )
    ph3.generate_displacements(distance=0.03, cutoff_pair_distance=fc3_cutoff)
    n2 = len(ph3.phonon_supercells_with_displacements)
    n3 = sum(c is not None for c in ph3.supercells_with_displacements)
    return n2, n3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    cu = bulk("Cu", "fcc", a=A)
    cu.info = {"material_id": "Cu-fcc", "fc2_supercell": [3, 3, 3], "fc3_supercell": [2, 2, 2]}
    write(root / "s.extxyz", cu, format="extxyz")
    man = run_finetune_export(
        structures=root / "s.extxyz",
        material_ids=["Cu-fcc"],
        export=EXPORT,
        phono3py_settings=Phono3pySettings(),
        out_frames=root / "exp" / "structures.extxyz",
        out_manifest=root / "exp" / "manifest.json",
    )
    return root, man


@pytest.fixture(scope="module")
def labelled(exported):
    root, _ = exported
    n = run_finetune_label(
        exported=root / "exp" / "structures.extxyz",
        model=model_spec("emt"),
        out=root / "labels.extxyz",
        device="cpu",
        with_stress=True,
    )
    return root / "labels.extxyz", n


# ---------------------------------------------------------------------------- export


def test_export_counts_are_phono3py_displacement_counts(exported):
    root, man = exported
    n2, n3 = _phono3py_counts()
    assert n2 == 1  # one atom on an O_h site: one displacement gives the whole fc2
    assert n3 == 15
    assert man["counts"] == {"Cu-fcc": {"fc2_disp": n2, "fc3_disp": n3, "rattled": 2}}
    assert man["n_frames"] == n2 + n3 + 2
    assert man["n_atoms"] == 27 * n2 + 8 * (n3 + 2)
    assert man["materials"] == ["Cu-fcc"]
    assert man["phono3py"] == Phono3pySettings().forces_dict()  # no κ-only keys
    assert man["settings"] == EXPORT.as_dict()
    assert man["source_structures"] == str(root / "s.extxyz")
    # the manifest on disk is the one returned, its checksum that of the frames file
    frames_file = root / "exp" / "structures.extxyz"
    assert storage.read_json(root / "exp" / "manifest.json") == man
    assert man["sha256"] == _sha256(frames_file)
    frames = storage.read_frames(frames_file)
    assert [f.info["kf_id"] for f in frames] == man["ids"]
    assert len(set(man["ids"])) == len(frames)


def test_export_is_on_the_reference_geometry(exported):
    """Unrelaxed input (a = 3.59 Å): the fc2 frames are its 3×3×3, the fc3 ones its 2×2×2;
    each displaced frame moves one atom by 0.03 Å."""
    root, _ = exported
    prim = bulk("Cu", "fcc", a=A).cell[:]
    for f in storage.read_frames(root / "exp" / "structures.extxyz"):
        kind = f.info["kf_kind"]
        n = 3 if kind == "fc2_disp" else 2
        np.testing.assert_allclose(f.cell[:], n * prim, atol=1e-6)
        assert len(f) == n**3 and f.info["kf_material"] == "Cu-fcc"
        if kind != "rattled":
            assert np.linalg.norm(f.info["kf_disp"]) == pytest.approx(0.03, abs=1e-6)


def test_export_with_a_pair_cutoff_skips_the_pairs_phono3py_skips(tmp_path, exported):
    root, _ = exported
    man = run_finetune_export(
        structures=root / "s.extxyz",
        material_ids=["Cu-fcc"],
        export=ExportSettings(displaced=("fc3",)),
        phono3py_settings=Phono3pySettings(fc3_cutoff_pair_distance=2.6),
        out_frames=tmp_path / "x.extxyz",
        out_manifest=tmp_path / "m.json",
    )
    _, n3_cut = _phono3py_counts(fc3_cutoff=2.6)
    assert 0 < n3_cut < _phono3py_counts()[1]
    assert man["counts"] == {"Cu-fcc": {"fc3_disp": n3_cut}}
    assert man["phono3py"]["fc3_cutoff_pair_distance"] == 2.6


def test_export_of_an_unknown_material_names_it(tmp_path, exported):
    root, _ = exported
    with pytest.raises(MaterialError, match=r"'Ag-fcc' is not in .*s\.extxyz"):
        run_finetune_export(
            structures=root / "s.extxyz",
            material_ids=["Ag-fcc"],
            export=EXPORT,
            phono3py_settings=Phono3pySettings(),
            out_frames=tmp_path / "x.extxyz",
            out_manifest=tmp_path / "m.json",
        )
    assert not (tmp_path / "x.extxyz").exists() and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- label


def test_emt_labels_are_emt_forces(exported, labelled):
    root, man = exported
    path, n = labelled
    assert n == man["n_frames"]
    exp = storage.read_frames(root / "exp" / "structures.extxyz")
    labels = storage.read_frames(path)
    assert len(labels) == n
    for e, lab in zip(exp, labels, strict=True):
        assert lab.info["kf_id"] == e.info["kf_id"]
        np.testing.assert_allclose(lab.positions, e.positions, atol=1e-8)
        e.calc = EMT()
        np.testing.assert_allclose(lab.arrays["REF_forces"], e.get_forces(), atol=1e-7)
        assert lab.info["REF_energy"] == pytest.approx(e.get_potential_energy(), abs=1e-7)
        np.testing.assert_allclose(lab.info["REF_stress"], e.get_stress(voigt=False), atol=1e-8)
    # a perfect crystal has no force: the rattled and displaced frames do
    assert all(np.abs(lab.arrays["REF_forces"]).max() > 1e-3 for lab in labels)


# ----------------------------------------------------------------------------- check


def test_check_accepts_emt_labels(exported, labelled, tmp_path):
    root, man = exported
    path, n = labelled
    out = tmp_path / "train.extxyz"
    summary = run_finetune_check(
        labels=[path], exported=root / "exp" / "structures.extxyz", out=out
    )
    assert summary["n_frames"] == n and summary["n_with_energy"] == n
    assert summary["files"] == [str(path)]
    assert summary["sha256"] == _sha256(out)
    clean = storage.read_frames(out)
    labels = storage.read_frames(path)
    assert [c.info["kf_id"] for c in clean] == man["ids"]
    assert [c.info["config_type"] for c in clean] == [c.info["kf_kind"] for c in clean]
    for c, lab in zip(clean, labels, strict=True):
        np.testing.assert_allclose(c.arrays["REF_forces"], lab.arrays["REF_forces"], atol=1e-8)


def _bad_nan(frame):
    frame.arrays["REF_forces"][0, 1] = np.nan
    return "forces contain NaN or inf"


def _bad_units(frame):
    frame.arrays["REF_forces"] *= 51.42 * 1e3  # far beyond MAX_FORCE
    return "forces must be eV/Å"


def _bad_position(frame):
    frame.positions[1] += [0.01, 0.0, 0.0]
    return "positions differ from the exported structure by up to 0.01 Å"


def _bad_shape(frame):
    del frame.arrays["REF_forces"]
    return "no forces"


@pytest.mark.parametrize("spoil", [_bad_nan, _bad_units, _bad_position, _bad_shape])
def test_check_refuses_a_bad_label_naming_file_and_frame(exported, labelled, tmp_path, spoil):
    root, man = exported
    path, _ = labelled
    frames = storage.read_frames(path)
    k = 5
    message = spoil(frames[k])
    bad = tmp_path / "bad.extxyz"
    storage.write_frames(bad, frames)
    out = tmp_path / "train.extxyz"
    where = f"{bad}, frame {k} ({man['ids'][k]})"
    with pytest.raises(LabelError, match=re.escape(where) + ".*" + re.escape(message)):
        run_finetune_check(labels=[bad], exported=root / "exp" / "structures.extxyz", out=out)
    assert not out.exists()


def test_check_refuses_gradients_given_as_forces(exported, labelled, tmp_path):
    root, _ = exported
    path, n = labelled
    frames = storage.read_frames(path)
    for f in frames:
        f.arrays["REF_forces"] *= -1
    bad = tmp_path / "signs.extxyz"
    storage.write_frames(bad, frames)
    n_disp = n - 2  # the rattled frames have no displaced atom
    with pytest.raises(LabelError, match=re.escape(f"{bad}: in {n_disp} of {n_disp} displaced")):
        run_finetune_check(
            labels=[bad], exported=root / "exp" / "structures.extxyz", out=tmp_path / "t.extxyz"
        )


def test_check_without_export_matches_nothing_but_checks_values(labelled, tmp_path):
    """No exported file: frames are not matched to structures, the values are still checked."""
    path, n = labelled
    summary = run_finetune_check(labels=[path], exported=None, out=tmp_path / "t.extxyz")
    assert summary["n_frames"] == n
    frames = storage.read_frames(path)
    frames[2].positions[0] += 0.5  # no longer the exported structure: not noticed here
    frames[3].info["REF_energy"] = np.inf
    storage.write_frames(tmp_path / "e.extxyz", frames)
    with pytest.raises(LabelError, match=re.escape(f"{tmp_path / 'e.extxyz'}, frame 3: energy")):
        run_finetune_check(labels=[tmp_path / "e.extxyz"], exported=None, out=tmp_path / "u.xyz")
