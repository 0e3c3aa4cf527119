"""Issue 13, class 5: bad files and values are explained, not crashed on.

Every input error names the file, the frame and its line (structures), or the config key
and value, and what would be valid; a config with a non-finite number is refused before
the workflow plans (and so before Snakemake deletes any output)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk

from kappaflow import config as kc
from kappaflow import storage
from kappaflow.cli import main
from kappaflow.structures import MaterialError, materials_table

REPO = Path(__file__).resolve().parents[1]
GOOD = (
    '2\nLattice="0.0 1.8 1.8 1.8 0.0 1.8 1.8 1.8 0.0" Properties=species:S:1:pos:R:3 '
    'material_id=Cu-a pbc="T T T"\nCu 0.0 0.0 0.0\nCu 0.9 0.9 0.9\n'
)


def _frame(mid: str, body: str, natoms: int | None = None, comment: str | None = None) -> str:
    lines = body.strip("\n").splitlines()
    lattice = comment or 'Lattice="3.6 0.0 0.0 0.0 3.6 0.0 0.0 0.0 3.6" pbc="T T T"'
    head = natoms if natoms is not None else len(lines)
    return f"{head}\n{lattice} Properties=species:S:1:pos:R:3 material_id={mid}\n{body.strip()}\n"


CUBE = "Cu 0 0 0\nCu 0 1.8 1.8\nCu 1.8 0 1.8\nCu 1.8 1.8 0"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD + _frame("Cu-nan", CUBE.replace("1.8 1.8 0", "1.8 nan 0")),
         ["frame 1 (line 5)", "Cu-nan", "atom 3 (Cu) has a non-finite position"]),
        (GOOD + _frame("Cu-inf", CUBE, comment='Lattice="3.6 0 0 0 inf 0 0 0 3.6" pbc="T T T"'),
         ["frame 1 (line 5)", "the cell has non-finite entries"]),
        (_frame("Cu-3", CUBE, natoms=5) + GOOD,
         ["frame 0 (line 1) declares 5 atoms", "line 7", "not an atom line"]),
        (GOOD + _frame("Cu-4", CUBE, natoms=3),
         ["line 10: expected the atom count of frame 2", "frame 1 at line 5 declares 3 atoms"]),
        (GOOD + _frame("Cu-5", CUBE, natoms=6),
         ["frame 1 (line 5) declares 6 atoms, but the file ends after 4 atom lines"]),
        (GOOD + _frame("Cu-x", CUBE.replace("Cu 0 1.8 1.8", "Cu 0 one 1.8")),
         ["frame 1 (line 5) cannot be read", "ASE:"]),
        (GOOD + _frame("Qq-1", CUBE.replace("Cu 0 0 0", "Qq 0 0 0")),
         ["frame 1 (line 5) cannot be read", "Qq"]),
        (GOOD + _frame("X-1", CUBE.replace("Cu 0 0 0", "X 0 0 0")),
         ["frame 1 (line 5)", "atom 0 has no element"]),
        (GOOD + "0\nLattice=\"3 0 0 0 3 0 0 0 3\"\n", ["frame 1 (line 5)", "no atoms"]),
        (GOOD + "2\n\nCu 0 0 0\nCu 0 0 2.5\n", ["frame 1 (line 5)", "has no volume", "Lattice="]),
        (GOOD + _frame("Cu-on-Cu", CUBE.replace("Cu 1.8 1.8 0", "Cu 0.1 0 0")),
         ["frame 1 (line 5)", "atoms 0 and 3 are 0.100 Å apart"]),
        (_frame("Cu-tiny", "Cu 0 0 0", comment='Lattice="0.3 0 0 0 3 0 0 0 3" pbc="T T T"'),
         ["frame 0 (line 1)", "its own periodic image", "0.300 Å"]),
        ("", ["holds no frames"]),
        ("\n\n", ["holds no frames"]),
        (GOOD + "\n" + GOOD, ["line 5: a blank line where frame 1 should start"]),
    ],
    ids=[
        "nan-position", "inf-cell", "count-too-large", "count-too-small", "file-ends",
        "text-in-position", "unknown-element", "dummy-element", "zero-atoms", "no-lattice",
        "overlapping-atoms", "self-image", "empty", "blank", "blank-line-between",
    ],
)  # fmt: skip
def test_bad_structure_files_name_file_frame_and_line(tmp_path, text, words):
    path = tmp_path / "s.extxyz"
    path.write_text(text)
    with pytest.raises(storage.StructureFileError) as info:
        storage.read_structures(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    assert isinstance(info.value, MaterialError)  # the CLI and the Snakefile report it


def test_good_files_still_read(tmp_path, reference_dir):
    path = tmp_path / "s.extxyz"
    path.write_text(GOOD + _frame("Cu-b", CUBE))
    assert [len(a) for a in storage.read_structures(path)] == [2, 4]
    assert len(storage.read_structures(reference_dir / "phononDB-PBE-structures.extxyz")) == 103


def _nan_file(tmp_path) -> Path:
    path = tmp_path / "nan.extxyz"
    path.write_text(GOOD + _frame("Cu-nan", CUBE.replace("Cu 0 1.8 1.8", "Cu 0 nan 1.8")))
    return path


def test_nan_coordinate_does_not_segfault_materials(tmp_path):
    """Issue 13's example: `kappaflow materials` exited 139 (spglib on NaN), no message.
    A subprocess, so that a regression cannot take the test session down with it."""
    proc = subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", "materials", "--structures", _nan_file(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "frame 1 (line 5), Cu-nan: atom 1 (Cu) has a non-finite position" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_structures_are_refused_by_the_config_loader(tmp_path):
    cfg = kc.load_config({"structures": str(_nan_file(tmp_path)), "models": ["emt"]})
    with pytest.raises(MaterialError, match=r"nan\.extxyz, frame 1 \(line 5\)"):
        _ = cfg.materials


@pytest.mark.parametrize(
    ("info", "words"),
    [
        ({"fc2_supercell": "abc"}, ["fc2_supercell must be 3 positive integers", "'abc'"]),
        ({"q_mesh": [5, 5, 0]}, ["q_mesh must be 3 positive integers"]),
        ({"fc3_supercell": [2, 2, np.nan]}, ["fc3_supercell must be 3 positive integers"]),
        ({"symm.no": 999}, ["symm.no must be a space-group number 1-230", "999"]),
        ({"symm.no": "cubic"}, ["symm.no must be a space-group number", "cubic"]),
    ],
    ids=["text-supercell", "zero-mesh", "nan-supercell", "space-group-999", "text-space-group"],
)
def test_bad_info_keys_are_material_errors(info, words):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info = {"material_id": "Cu-bad", **info}
    with pytest.raises(MaterialError) as err:
        materials_table([atoms])
    for word in words:
        assert word in str(err.value)


def test_read_structure_keeps_pbc_behind_the_record(tmp_path):
    """ASE read the record's base64 padding '=' as the start of the next key and swallowed
    the pbc into the record: a slab came back periodic."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    for pbc in ([True, True, False], [False, False, False], [True, True, True]):
        atoms.pbc = pbc
        storage.write_structure(tmp_path / "r.extxyz", atoms, {"status": "ok", "n": [1, 2]})
        back, record = storage.read_structure(tmp_path / "r.extxyz")
        assert back.pbc.tolist() == pbc
        assert record == {"status": "ok", "n": [1, 2]}


# ------------------------------------------------------------------ numbers of a config


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"temperatures": [float("nan")]}, "temperatures.0"),
        ({"temperatures": [300, float("inf")]}, "temperatures.1"),
        ({"temperatures": [".nan"]}, "temperatures.0"),  # snakemake --config strings
        ({"temperatures": ["1e400"]}, "temperatures.0"),
        ({"phono3py": {"frequency_threshold": float("nan")}}, "phono3py.frequency_threshold"),
        ({"phono3py": {"boundary_mfp": float("inf")}}, "phono3py.boundary_mfp"),
        ({"relax": {"fmax": float("nan")}}, "relax.fmax"),
        ({"gruneisen": {"eos_strains": [-0.03, -0.02, -0.01, 0, 0.01, 0.02, float("nan")]}},
         "gruneisen.eos_strains.6"),
        ({"gruneisen": {"melting_points": {"Cu": float("nan")}}}, "gruneisen.melting_points.Cu"),
        ({"checks": {"max_kappa": float("inf")}}, "checks.max_kappa"),
        ({"model_definitions": {"m": {"family": "ase", "factory": "a:b",
                                      "kwargs": {"cutoff": float("nan")}}}},
         "model_definitions.m.kwargs.cutoff"),
    ],
    ids=["T-nan", "T-inf", "T-nan-string", "T-overflow", "threshold-nan", "mfp-inf",
         "fmax-nan", "eos-nan", "melting-nan", "checks-inf", "kwargs-nan"],
)  # fmt: skip
def test_every_number_of_a_config_must_be_finite(config, key):
    with pytest.raises(kc.ConfigError) as info:
        kc.load_config({"models": ["emt"], **config})
    message = str(info.value)
    assert f"config key '{key}'" in message and "must be finite" in message, message


def test_cli_config_file_with_nan_is_refused(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("temperatures: [.nan]\n")
    rc = main(
        ["kappa", "--model", "emt", "--material", "x", "--out", str(tmp_path / "o"),
         "--config", str(tmp_path / "c.yaml")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "config key 'temperatures.0': nan" in err, err
    assert not (tmp_path / "o").exists()


def test_checks_section_defaults_agree_everywhere():
    """tests/test_config.py's rule for the new section: schema = dataclass = config.yaml."""
    import dataclasses

    from kappaflow.settings import CheckSettings

    props = storage.read_package_yaml(kc.SCHEMA)["properties"]["checks"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(CheckSettings)}
    assert {k: v["default"] for k, v in props.items()} == fields
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["checks"]
    assert shipped == fields
    assert kc.load_config({}).settings.checks == CheckSettings()
    assert kc.job_params({"checks": {"max_kappa": 5e3}}).checks == CheckSettings(max_kappa=5e3)


@pytest.mark.workflow
def test_workflow_with_nan_temperature_fails_before_deleting_anything(reference_dir, tmp_path):
    """Issue 13: `temperatures: [.nan]` passed the schema, and the κ jobs failed after
    Snakemake had deleted the previous κ outputs. Now the Snakefile's config load refuses
    it before any job is planned; a finished κ stays."""
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    done = tmp_path / "results" / "emt" / "Cu-fcc" / "kappa.json"
    done.parent.mkdir(parents=True)
    done.write_text('{"status": "ok"}')
    for value in (".nan", ".inf"):
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory",
             tmp_path, "--cores", "1", "--config", f"temperatures=[{value}]"],
            cwd=tmp_path, env={**os.environ, "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "config key 'temperatures.0'" in proc.stdout and "must be finite" in proc.stdout
        assert "Job stats:" not in proc.stdout
        assert done.read_text() == '{"status": "ok"}'


@pytest.mark.workflow
def test_nan_structures_fail_the_dry_run_with_a_message(reference_dir, tmp_path):
    """`snakemake -n` exited 139 on a NaN coordinate; now it names the file and frame."""
    for name in ("config.yaml",):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    nan = _nan_file(tmp_path)
    shutil.copy(nan, tmp_path / "structures.extxyz")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", tmp_path,
         "-n"],
        cwd=tmp_path, env={**os.environ, "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode not in (0, -11, 139), proc.stdout[-3000:]
    assert "frame 1 (line 5), Cu-nan: atom 1 (Cu) has a non-finite position" in proc.stdout
