"""The ``kappaflow`` command line (run as ``python -m kappaflow.cli``): score, kappa, errors."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kappaflow import storage
from kappaflow.gates import OK

REPO = Path(__file__).resolve().parents[1]
TEST_STRUCTURES = REPO / ".test" / "structures.extxyz"
NONAC = "kappas_phononDB_PBE_noNAC.json.gz"
NAC = "kappas_phononDB_PBE_NAC.json.gz"
SUMMARY_KEYS = ["n_materials", "mean_SRME", "mean_SRE", "n_failed"]
MATERIAL_FILES = [
    "relaxed.extxyz",
    "phono3py_disp.yaml",
    "fc2.hdf5",
    "fc3.hdf5",
    "kappa.hdf5",
    "kappa.json",
    "forces_fc2.hdf5",
    "forces_fc3.hdf5",
    "phonons.json",
]
TEMPERATURES = [300.0, 600.0]
MESH = [5, 5, 5]


def kappaflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def score(predictions, reference, out: str, *extra: str, cwd: Path):
    return kappaflow(
        "score",
        "--predictions",
        predictions,
        "--reference",
        reference,
        "--out",
        out,
        *extra,
        cwd=cwd,
    )


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def summary(stdout: str) -> dict[str, float]:
    """The score's last four lines, checked for names and order, as numbers."""
    lines = stdout.strip().splitlines()[-4:]
    keys = [line.partition("=")[0] for line in lines]
    assert keys == SUMMARY_KEYS, f"last four lines are {lines}"
    return {k: float(line.partition("=")[2]) for k, line in zip(keys, lines, strict=True)}


def significant_digits(text: str) -> int:
    mantissa = re.split(r"[eE]", text.strip().lstrip("+-"))[0].replace(".", "")
    return len(mantissa.lstrip("0"))


# --------------------------------------------------------------------------- score


def test_score_reference_against_itself(reference_dir, tmp_path):
    ref = reference_dir / NONAC
    proc = score(ref, ref, "tmp.csv", cwd=tmp_path)
    check_ok(proc)
    s = summary(proc.stdout)
    assert s == {"n_materials": 103, "mean_SRME": 0.0, "mean_SRE": 0.0, "n_failed": 0}
    per_material = pd.read_csv(tmp_path / "tmp.csv")
    assert len(per_material) == 103
    assert set(per_material["mp_id"]) == set(storage.read_kappa_table(ref).index)


def test_score_nac_against_nonac(reference_dir, tmp_path):
    proc = score(reference_dir / NAC, reference_dir / NONAC, "nac.csv", cwd=tmp_path)
    check_ok(proc)
    s = summary(proc.stdout)
    print(f"NAC vs noNAC: mean_SRME={s['mean_SRME']} mean_SRE={s['mean_SRE']}")
    assert s["n_materials"] == 103
    assert s["n_failed"] == 0
    assert math.isfinite(s["mean_SRE"])
    assert s["mean_SRE"] > 0
    assert s["mean_SRME"] >= s["mean_SRE"]


def test_score_selected_materials(reference_dir, tmp_path):
    proc = score(
        reference_dir / NAC,
        reference_dir / NONAC,
        "two.csv",
        "--materials",
        "mp-22862,mp-804",
        cwd=tmp_path,
    )
    check_ok(proc)
    assert summary(proc.stdout)["n_materials"] == 2
    assert sorted(pd.read_csv(tmp_path / "two.csv")["mp_id"]) == ["mp-22862", "mp-804"]


def test_score_unknown_material_is_an_error(reference_dir, tmp_path):
    proc = score(
        reference_dir / NAC,
        reference_dir / NONAC,
        "bad.csv",
        "--materials",
        "mp-22862,does-not-exist",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does-not-exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_missing_prediction_counts_as_failed(reference_dir, tmp_path):
    table = storage.read_kappa_table(reference_dir / NONAC)
    storage.write_kappa_table(tmp_path / "pred.json.gz", table.drop(index="mp-22862"))
    proc = score(
        "pred.json.gz",
        reference_dir / NONAC,
        "missing.csv",
        "--materials",
        "mp-22862,mp-804",
        cwd=tmp_path,
    )
    check_ok(proc)
    s = summary(proc.stdout)
    assert s["n_materials"] == 2
    assert s["n_failed"] == 1
    assert s["mean_SRME"] == (2 + 0) / 2  # a missing material scores SRME = 2


# --------------------------------------------------------------------------- kappa


@pytest.fixture(scope="module")
def kappa_run(tmp_path_factory):
    """One EMT Cu κ run (relax, fc2, fc3, Wigner κ at 300 and 600 K) through the CLI."""
    cwd = tmp_path_factory.mktemp("kappa-cli")
    out = cwd / "Cu-fcc"
    args = [
        "kappa",
        "--model",
        "emt",
        "--material",
        "Cu-fcc",
        "--structures",
        TEST_STRUCTURES,
        "--out",
        out,
        "--mesh",
        *MESH,
        "--temperatures",
        *TEMPERATURES,
    ]
    proc = kappaflow(*args, cwd=cwd)
    check_ok(proc)
    return out, args, proc


def kappa_lines(stdout: str) -> dict[float, str]:
    lines = stdout.strip().splitlines()[-2:]
    out = {}
    for line in lines:
        m = re.fullmatch(r"kappa_TOT_ave_(\d+(?:\.\d+)?)K=(\S+)", line)
        assert m, f"unexpected final line {line!r} in\n{stdout}"
        out[float(m[1])] = m[2]
    return out


def test_kappa_prints_both_temperatures(kappa_run):
    _, _, proc = kappa_run
    values = kappa_lines(proc.stdout)
    assert list(values) == TEMPERATURES
    for text in values.values():
        assert significant_digits(text) >= 6, f"{text} has fewer than 6 significant digits"
    k300, k600 = (float(values[t]) for t in TEMPERATURES)
    assert math.isfinite(k300)
    assert math.isfinite(k600)
    assert k300 > k600 > 0


def test_kappa_writes_the_workflow_files(kappa_run):
    out, _, proc = kappa_run
    missing = [name for name in MATERIAL_FILES if not (out / name).is_file()]
    assert not missing, f"missing in {out}: {missing}"
    record = storage.read_json(out / "kappa.json")
    assert record["status"] == OK
    assert record["temperatures"] == TEMPERATURES
    assert record["q_mesh"] == MESH
    printed = kappa_lines(proc.stdout)
    np.testing.assert_allclose(
        record["kappa_TOT_ave"], [float(printed[t]) for t in TEMPERATURES], rtol=1e-9
    )


def test_kappa_rerun_recomputes_nothing(kappa_run):
    out, args, first = kappa_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = kappaflow(*args, cwd=out.parent)
    check_ok(proc)
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after == before
    assert "up to date" in proc.stderr, proc.stderr
    assert "relax " not in proc.stderr and "Wigner" not in proc.stderr  # no step ran
    assert kappa_lines(proc.stdout) == kappa_lines(first.stdout)


def test_kappa_rerun_with_other_temperatures_redoes_only_kappa(kappa_run, tmp_path):
    out, args, first = kappa_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    new_args = [copy if a == out else a for a in args]
    i = new_args.index("--temperatures")
    new_args[i + 1 : i + 1 + len(TEMPERATURES)] = ["300", "900"]
    proc = kappaflow(*new_args, cwd=copy.parent)
    check_ok(proc)
    after = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    changed = sorted(n for n in before if after[n] != before[n])
    assert changed == ["kappa.hdf5", "kappa.json"]
    values = kappa_lines(proc.stdout)
    assert list(values) == [300.0, 900.0]
    assert values[300.0] == kappa_lines(first.stdout)[300.0]


def test_phono3py_reads_the_outputs(kappa_run):
    """phono3py's own loaders accept phono3py_disp.yaml, fc2.hdf5 and fc3.hdf5 as written."""
    import phono3py
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    out, _, _ = kappa_run
    ph3 = phono3py.load(str(out / "phono3py_disp.yaml"), produce_fc=False, log_level=0)
    assert ph3.fc2 is None
    assert ph3.fc3 is None
    n_prim = len(ph3.primitive)
    fc2 = read_fc2_from_hdf5(out / "fc2.hdf5", p2s_map=ph3.phonon_primitive.p2s_map)
    fc3 = read_fc3_from_hdf5(out / "fc3.hdf5", p2s_map=ph3.primitive.p2s_map)
    # compact force constants: first index over the primitive cell's atoms
    assert fc2.shape == (n_prim, len(ph3.phonon_supercell), 3, 3)
    assert fc3.shape == (n_prim, len(ph3.supercell), len(ph3.supercell), 3, 3, 3)
    ph3.fc2 = fc2
    ph3.fc3 = fc3
    assert ph3.fc2.shape == fc2.shape
    assert ph3.fc3.shape == fc3.shape
    # the same files through phono3py.load's own readers
    loaded = phono3py.load(
        str(out / "phono3py_disp.yaml"),
        fc2_filename=str(out / "fc2.hdf5"),
        fc3_filename=str(out / "fc3.hdf5"),
        log_level=0,
    )
    np.testing.assert_array_equal(loaded.fc2, fc2)
    np.testing.assert_array_equal(loaded.fc3, fc3)


def test_phono3py_reproduces_kappa_from_the_outputs(kappa_run):
    """Plain phono3py 4.10 (SMM19) on the written files gives the κ recorded as
    ``kappa_phono3py4``; the recorded κ itself is the reference's 3.x convention, whose
    populations (κ_P) 4.10 shares up to its degenerate-mode diagonal (docs/protocol.md §14)."""
    import phono3py

    out, _, _ = kappa_run
    record = storage.read_json(out / "kappa.json")
    ph3 = phono3py.load(
        str(out / "phono3py_disp.yaml"),
        fc2_filename=str(out / "fc2.hdf5"),
        fc3_filename=str(out / "fc3.hdf5"),
        log_level=0,
        lang=record["settings"]["phono3py"]["backend"],
    )
    ph3.mesh_numbers = MESH
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(
        temperatures=TEMPERATURES,
        is_isotope=True,
        boundary_mfp=1e6,
        transport_type="SMM19",
        write_kappa=False,
        log_level=0,
    )
    kappa = np.asarray(ph3.thermal_conductivity.kappa)[0]  # (T, 6), Voigt order
    data, attrs = storage.read_hdf5(out / "kappa.hdf5")
    assert attrs["kappa_convention"] == "reference"
    np.testing.assert_allclose(kappa, data["kappa_phono3py4"], rtol=1e-10, atol=1e-12)
    reference = np.asarray(record["kappa_TOT_ave"])
    assert np.all(np.abs(kappa[:, :3].mean(axis=1) / reference - 1) < 0.05)


# ----------------------------------------------------------------- reference dir


def test_kappa_missing_reference_names_all_three_settings(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KAPPAFLOW_REFERENCE_DIR"}
    proc = kappaflow(
        "kappa",
        "--model",
        "emt",
        "--material",
        "mp-22862",
        "--out",
        "X",
        "--reference-dir",
        empty,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr
    assert "Traceback" not in message
    assert "--reference-dir" in message
    assert "KAPPAFLOW_REFERENCE_DIR" in message
    assert "reference.dir" in message
