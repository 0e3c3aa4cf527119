"""Resume of the one-material CLI (kappaflow.steps.resume): every step records what it was
made from (input sha256, settings, model); a step is current only when that equals the
current files and settings, checked step by step in order. EMT fcc Cu on 2x2x2 supercells."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from ase.build import bulk
from ase.io import write

from kappaflow import storage
from kappaflow.calculators import ModelSpec, model_spec
from kappaflow.layout import material_files
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.anharmonic import run_fc3
from kappaflow.steps.gruneisen import run_gruneisen
from kappaflow.steps.harmonic import run_fc2
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import load_material, run_relax
from kappaflow.steps.resume import (
    GRUNEISEN_STEPS,
    KAPPA_STEPS,
    Wanted,
    first_outdated,
    model_identity,
    recorded_made_from,
)
from kappaflow.structures import frame_sha256

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
EMT = model_spec("emt")
RELAX = RelaxSettings()
PH3 = Phono3pySettings()
GRU = GruneisenSettings(t_step=100)
TEMPS = (300.0,)
LJ_CONFIG = {
    "model_definitions": {
        "lj": {
            "family": "ase",
            "factory": "ase.calculators.lj:LennardJones",
            "kwargs": {"sigma": 2.3, "epsilon": 0.4, "rc": 5.0, "smooth": True},
        }
    }
}


def cu_frame(a: float = 3.61):
    atoms = bulk("Cu", "fcc", a=a)
    atoms.info = {
        "material_id": "Cu-fcc",
        "fc2_supercell": [2, 2, 2],
        "fc3_supercell": [3, 3, 3],  # 2x2x2 of a 1-atom fcc cell has fc3 = 0 (zero_fc3)
        "q_mesh": [4, 4, 4],
    }
    return atoms


def run_steps(structures, folder, relax=RELAX, model=EMT, gruneisen=True, until="kappa"):
    """The CLI's steps in-process (no lock, no resume): relax, fc2 [, fc3, κ, γ]."""
    f = material_files(folder)
    run_relax(
        structures=structures, material_id="Cu-fcc", model=model, settings=relax,
        out_relaxed=f["relaxed"],
    )  # fmt: skip
    run_fc2(relaxed=f["relaxed"], model=model, settings=PH3, out_fc2=f["fc2"],
            out_forces=f["forces_fc2"], out_disp=f["disp"], out_phonons=f["phonons"])  # fmt: skip
    if until == "fc2":
        return f
    run_fc3(relaxed=f["relaxed"], phonons_json=f["phonons"], model=model, settings=PH3,
            out_fc3=f["fc3"], out_forces=f["forces_fc3"])  # fmt: skip
    run_kappa(
        relaxed=f["relaxed"], phonons_json=f["phonons"], fc2_path=f["fc2"], fc3_path=f["fc3"],
        settings=_kappa(),
        out_hdf5=f["kappa"], out_record=f["record"], fc3_forces=f["forces_fc3"],
    )  # fmt: skip
    if gruneisen:
        run_gruneisen(
            relaxed=f["relaxed"], fc2_path=f["fc2"], model=model, settings=GRU,
            relax_settings=relax, phono3py_settings=PH3, out_hdf5=f["gruneisen_hdf5"],
            out_json=f["gruneisen"], out_csv=f["thermal_expansion"],
        )  # fmt: skip
    return f


def _kappa():
    from kappaflow.settings import KappaSettings

    return KappaSettings(TEMPS, PH3)


def wanted(structures, relax=RELAX, model=EMT, temperatures=TEMPS, phono3py=PH3) -> Wanted:
    frame, material = load_material(structures, "Cu-fcc")
    return Wanted(model, frame, material, relax, phono3py, None, temperatures, GRU)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A complete folder (relax, fc2, fc3, κ, γ) and its structures file."""
    root = tmp_path_factory.mktemp("resume")
    write(root / "structures.extxyz", cu_frame(), format="extxyz")
    run_steps(root / "structures.extxyz", root / "out")
    return root


@pytest.fixture
def copy(done, tmp_path):
    shutil.copy(done / "structures.extxyz", tmp_path / "structures.extxyz")
    shutil.copytree(done / "out", tmp_path / "out")
    return tmp_path


def outdated(root, steps=KAPPA_STEPS, **kw):
    return first_outdated(
        material_files(root / "out"), steps, wanted(root / "structures.extxyz", **kw)
    )


# ------------------------------------------------------------------ records


def test_complete_folder_is_current(done):
    assert outdated(done) is None
    assert outdated(done, GRUNEISEN_STEPS) is None


def test_each_record_holds_the_hashes_of_the_files_it_read(done):
    f = material_files(done / "out")
    sha = {role: storage.sha256_file(p) for role, p in f.items() if p.exists()}
    frame, _ = load_material(done / "structures.extxyz", "Cu-fcc")
    assert recorded_made_from("relax", f)["inputs"] == {"structure": frame_sha256(frame)}
    assert recorded_made_from("fc2", f)["inputs"] == {"relaxed": sha["relaxed"]}
    fc3 = recorded_made_from("fc3", f)["inputs"]
    assert fc3 == {"relaxed": sha["relaxed"], "phonons": sha["phonons"]}
    kappa = recorded_made_from("kappa", f)
    assert kappa["inputs"] == {
        r: sha[r] for r in ("relaxed", "phonons", "fc2", "fc3", "forces_fc3")
    }
    assert kappa["settings"]["temperatures"] == list(TEMPS)
    assert recorded_made_from("gruneisen", f)["inputs"] == {r: sha[r] for r in ("relaxed", "fc2")}
    for step in ("relax", "fc2", "fc3", "gruneisen"):
        assert recorded_made_from(step, f)["model"]["key"] == "emt", step
    # the κ record keeps it under provenance (results compared across commits skip that)
    assert "made_from" in storage.read_json(f["record"])["provenance"]


@pytest.mark.parametrize(
    ("change", "step", "reason"),
    [
        ("relax-settings", "relax", "relaxed.extxyz was made with other relax settings"),
        ("model", "relax", "relaxed.extxyz was made with model 'emt', asked for 'lj'"),
        ("frame", "relax", "relaxed.extxyz was made from another structure frame"),
        ("mesh", "fc2", "phonons.json was made with other phono3py settings"),
        ("temperatures", "kappa", "kappa.json was made with other temperatures settings"),
        ("kappa-missing", "kappa", "kappa.hdf5 missing"),
        ("kappa-missing+relax-settings", "relax", "relaxed.extxyz was made with other relax"),
        ("fc2-missing+frame", "relax", "another structure frame"),
        ("forces_fc3-replaced", "kappa", "kappa.json was made from another forces_fc3.hdf5"),
        ("old-fc3-record", "fc3", "fc3.hdf5 was written before kappaflow recorded"),
        ("fc2-planted", "fc2", "fc2.hdf5 is not the file phonons.json was written with"),
        ("kappa-planted", "kappa", "kappa.hdf5 is not the file kappa.json was written with"),
    ],
)
def test_first_outdated_step(copy, change, step, reason):
    f = material_files(copy / "out")
    kw = {}
    if "relax-settings" in change:
        kw["relax"] = RelaxSettings(fmax=0.2, max_steps=3)
    if change == "model":
        kw["model"] = model_spec("lj", LJ_CONFIG["model_definitions"])
    if "frame" in change:
        write(copy / "structures.extxyz", cu_frame(3.62), format="extxyz")
    if change == "mesh":
        kw["phono3py"] = Phono3pySettings(mesh=(3, 3, 3))
    if change == "temperatures":
        kw["temperatures"] = (300.0, 600.0)
    if "kappa-missing" in change:
        f["kappa"].unlink()
    if "fc2-missing" in change:
        f["fc2"].unlink()
    if change == "forces_fc3-replaced":
        with h5py.File(f["forces_fc3"], "a") as h5:
            h5["forces"][0, 0, 0] += 1e-3
    if change == "old-fc3-record":
        with h5py.File(f["fc3"], "a") as h5:
            del h5.attrs["made_from"]
    if change.endswith("-planted"):  # e.g. copied from another run's folder
        with h5py.File(f[change.split("-")[0]], "a") as h5:
            h5.attrs["from"] = "elsewhere"
    got = outdated(copy, **kw)
    assert got is not None and got.step == step, got
    assert reason in got.reason


def test_other_relaxed_structure_makes_fc2_and_gruneisen_stale(copy):
    """A later relax (another command's settings) rewrote relaxed.extxyz: everything made
    from the old one is stale, though its own settings match."""
    sloppy = RelaxSettings(fmax=0.2, max_steps=3)
    run_relax(structures=copy / "structures.extxyz", material_id="Cu-fcc", model=EMT,
              settings=sloppy, out_relaxed=copy / "out" / "relaxed.extxyz")  # fmt: skip
    got = outdated(copy, relax=sloppy)
    assert (got.step, got.reason) == ("fc2", "phonons.json was made from another relaxed.extxyz")
    got = outdated(copy, GRUNEISEN_STEPS, relax=sloppy)
    assert got.step == "fc2"
    files = material_files(copy / "out")
    run_fc2(relaxed=files["relaxed"], model=EMT, settings=PH3, out_fc2=files["fc2"],
            out_forces=files["forces_fc2"], out_disp=files["disp"],
            out_phonons=files["phonons"])  # fmt: skip
    got = outdated(copy, GRUNEISEN_STEPS, relax=sloppy)
    assert (got.step, got.reason) == (
        "gruneisen",
        "gruneisen.json was made from another relaxed.extxyz",
    )
    assert outdated(copy, relax=sloppy).reason == "fc3.hdf5 was made from another relaxed.extxyz"


def test_planted_thermal_expansion_table_makes_gruneisen_stale(copy):
    f = material_files(copy / "out")
    f["thermal_expansion"].write_text(f["thermal_expansion"].read_text() + "\n")
    got = outdated(copy, GRUNEISEN_STEPS)
    assert (got.step, got.reason) == (
        "gruneisen",
        "thermal_expansion.csv is not the file gruneisen.json was written with",
    )


def test_results_without_records_stay_readable_and_count_as_stale(copy):
    """Folders written before made_from existed: the steps read them as before; the CLI
    redoes them (there is nothing to say what they were made from)."""
    f = material_files(copy / "out")
    atoms, record = storage.read_structure(f["relaxed"])
    del record["provenance"]["made_from"]
    storage.write_structure(f["relaxed"], atoms, record)
    for role in ("phonons", "record"):
        data = storage.read_json(f[role])
        del data["provenance"]["made_from"]
        storage.write_json(f[role], data)
    got = outdated(copy)
    assert got.step == "relax" and "written before kappaflow recorded" in got.reason
    before = storage.read_json(f["record"])["kappa_TOT_ave"]
    run_fc3(relaxed=f["relaxed"], phonons_json=f["phonons"], model=EMT, settings=PH3,
            out_fc3=f["fc3"], out_forces=f["forces_fc3"])  # fmt: skip
    record = run_kappa(
        relaxed=f["relaxed"], phonons_json=f["phonons"], fc2_path=f["fc2"], fc3_path=f["fc3"],
        settings=_kappa(), out_hdf5=f["kappa"], out_record=f["record"],
        fc3_forces=f["forces_fc3"],
    )  # fmt: skip
    assert record["kappa_TOT_ave"] == pytest.approx(before, rel=1e-10)


def test_model_identity_hashes_a_local_checkpoint(tmp_path):
    ckpt = tmp_path / "my.model"
    ckpt.write_bytes(b"weights v1")
    spec = ModelSpec("my.model", "mace", {"path": str(ckpt)})
    first = model_identity(spec)
    assert first["checkpoint_sha256"] == storage.sha256_file(ckpt)
    assert model_identity(spec, {"checkpoint_sha256": first["checkpoint_sha256"]}) == first
    ckpt.write_bytes(b"weights v2")
    assert model_identity(spec) != first
    assert "checkpoint_sha256" not in model_identity(EMT)


# ------------------------------------------------------------------ frame hash


def test_frame_hash_is_the_frames_own_content(tmp_path):
    cu, ag = cu_frame(), bulk("Ag", "fcc", a=4.09)
    ag.info = {"material_id": "Ag-fcc"}
    write(tmp_path / "one.extxyz", [cu], format="extxyz")
    write(tmp_path / "two.extxyz", [ag, cu], format="extxyz")
    a = load_material(tmp_path / "one.extxyz", "Cu-fcc")[0]
    b = load_material(tmp_path / "two.extxyz", "Cu-fcc")[0]
    assert frame_sha256(a) == frame_sha256(b)  # its place and neighbours do not matter
    assert re.fullmatch(r"[0-9a-f]{64}", frame_sha256(a))
    moved = a.copy()
    moved.positions[0, 0] += 1e-9
    assert frame_sha256(moved) != frame_sha256(a)
    other_mesh = a.copy()
    other_mesh.info["q_mesh"] = [5, 5, 5]
    assert frame_sha256(other_mesh) != frame_sha256(a)
    masses = a.copy()
    masses.set_masses([65.0])
    assert frame_sha256(masses) != frame_sha256(a)


# ------------------------------------------------------------------ the CLI (issue 13)


def kappaflow(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env or ENV, timeout=900,
    )  # fmt: skip


def cli(command, out, *extra):
    return [command, "--model", "emt", "--material", "Cu-fcc", "--structures",
            "structures.extxyz", "--out", out, "--threads", "1", *extra]  # fmt: skip


def kappa_value(proc) -> float:
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.fullmatch(r"kappa_TOT_ave_300K=(\S+)", proc.stdout.strip())
    assert m, proc.stdout
    return float(m[1])


def test_cli_kappa_after_gruneisen_with_other_relax_settings(tmp_path):
    """Issue 13's reproduction: κ with sloppy relax settings, then γ with the defaults
    in the same --out (redoes relax and fc2), then κ with the defaults: not 'up to date',
    and the κ of a fresh folder."""
    write(tmp_path / "structures.extxyz", cu_frame(), format="extxyz")
    (tmp_path / "sloppy.yaml").write_text("relax: {fmax: 0.2, max_steps: 3}\n")
    sloppy = kappa_value(kappaflow(*cli("kappa", "G", "--config", "sloppy.yaml"), cwd=tmp_path))
    gamma = kappaflow(*cli("gruneisen", "G"), cwd=tmp_path)
    assert gamma.returncode == 0, gamma.stderr[-3000:]
    assert "redoing relax, fc2, gruneisen (relaxed.extxyz was made with other relax" in gamma.stderr
    again = kappaflow(*cli("kappa", "G"), cwd=tmp_path)
    assert "up to date" not in again.stderr
    assert "redoing fc3, kappa (fc3.hdf5 was made from another relaxed.extxyz)" in again.stderr
    fresh = kappa_value(kappaflow(*cli("kappa", "F"), cwd=tmp_path))
    assert kappa_value(again) == fresh
    assert abs(sloppy - fresh) > 1e-3 * fresh  # the stale value was really another one
    # and now it is current, for both commands
    for command in ("kappa", "gruneisen"):
        proc = kappaflow(*cli(command, "G"), cwd=tmp_path)
        assert proc.returncode == 0 and "up to date" in proc.stderr, (command, proc.stderr)


def test_cli_second_model_stopped_after_fc2_does_not_print_the_first_models_kappa(tmp_path):
    """Another model's relax and fc2 written into a finished --out (a run stopped after
    its fc2): the next run of that model redoes fc3 and κ from its own fc2."""
    write(tmp_path / "structures.extxyz", cu_frame(), format="extxyz")
    (tmp_path / "lj.yaml").write_text(json.dumps(LJ_CONFIG))
    emt = kappa_value(kappaflow(*cli("kappa", "G"), cwd=tmp_path))
    lj = model_spec("lj", LJ_CONFIG["model_definitions"])
    run_steps(tmp_path / "structures.extxyz", tmp_path / "G", model=lj, until="fc2")
    args = cli("kappa", "G", "--config", "lj.yaml")
    args[args.index("emt")] = "lj"
    proc = kappaflow(*args, cwd=tmp_path)
    assert "redoing fc3, kappa (fc3.hdf5 was made from another relaxed.extxyz)" in proc.stderr
    args[args.index("G")] = "F"
    fresh = kappa_value(kappaflow(*args, cwd=tmp_path))
    assert kappa_value(proc) == fresh
    assert abs(fresh - emt) > 0.01 * emt


GATED = """
import json, os, time
from ase.calculators.emt import EMT


class GatedEMT(EMT):
    '''EMT that stops (sleeps) in the fc3 step, once its own phonons.json is written.'''

    def calculate(self, *args, **kwargs):
        path = os.environ.get("BLOCK_AFTER")
        while path and os.path.exists(path) and json.load(open(path))["model"]["model"] == KEY:
            time.sleep(0.05)
        super().calculate(*args, **kwargs)


KEY = "gated:make"


def make():
    return GatedEMT()
"""


def test_cli_second_model_killed_after_fc2(tmp_path):
    """The same, with a real kill -9 in the second model's fc3: the first model's fc3 and κ
    are still there (a run removes nothing before it writes), and are not taken for the
    second model's."""
    write(tmp_path / "structures.extxyz", cu_frame(), format="extxyz")
    (tmp_path / "gated.py").write_text(GATED)
    kappa_value(kappaflow(*cli("kappa", "G"), cwd=tmp_path))
    env = {**ENV, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}",
           "BLOCK_AFTER": str(tmp_path / "G" / "phonons.json")}  # fmt: skip
    args = cli("kappa", "G")
    args[args.index("emt")] = "gated:make"
    proc = subprocess.Popen([sys.executable, "-m", "kappaflow.cli", *map(str, args)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 600
        phonons = tmp_path / "G" / "phonons.json"
        while time.time() < deadline and proc.poll() is None:
            try:
                if storage.read_json(phonons)["model"]["model"] == "gated:make":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)  # into the fc3 step, blocked
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert storage.read_json(tmp_path / "G" / "kappa.json")["model"]["model"] == "emt"
    again = kappaflow(*args, cwd=tmp_path, env={**env, "BLOCK_AFTER": ""})
    assert "redoing fc3, kappa (fc3.hdf5 was made from another relaxed.extxyz)" in again.stderr
    kappa_value(again)
    assert storage.read_json(tmp_path / "G" / "kappa.json")["model"]["model"] == "gated:make"


def test_cli_run_that_fails_before_writing_keeps_the_previous_results(tmp_path):
    """A run bound to fail (here: a model whose checkpoint is missing) removes nothing: the
    folder's results stay whole and current for the model that made them."""
    write(tmp_path / "structures.extxyz", cu_frame(), format="extxyz")
    first = kappaflow(*cli("kappa", "G"), cwd=tmp_path)
    kappa_value(first)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "G").iterdir()}
    args = cli("kappa", "G")
    args[args.index("emt")] = "missing.model"
    failed = kappaflow(*args, cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "missing.model" in failed.stderr and "Traceback" not in failed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "G").iterdir()} == before
    again = kappaflow(*cli("kappa", "G"), cwd=tmp_path)
    assert "up to date" in again.stderr
    assert again.stdout == first.stdout


def test_cli_kappa_only_flags_redo_kappa_only(tmp_path):
    """--kappa-convention and --phph-engine on a finished --out redo the κ step only: the
    force steps' records and fc3.hdf5 know nothing of the κ-only keys."""
    write(tmp_path / "structures.extxyz", cu_frame(), format="extxyz")
    first = kappaflow(*cli("kappa", "G"), cwd=tmp_path)
    reference = kappa_value(first)
    fc3 = tmp_path / "G" / "fc3.hdf5"
    attrs = storage.read_attrs(fc3)
    assert "kappa_convention" not in str(attrs.get("made_from"))
    assert "phph_engine" not in str(attrs.get("made_from"))
    assert "kappa_convention" not in str(attrs.get("protocol_deviations"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "G").iterdir() if p.is_file()}
    other = kappaflow(*cli("kappa", "G", "--kappa-convention", "phono3py4"), cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "redoing kappa (kappa.json was made with other phono3py settings)" in other.stderr
    changed = {p.name for p in (tmp_path / "G").iterdir()
               if p.is_file() and p.stat().st_mtime_ns != mtimes.get(p.name)}  # fmt: skip
    assert changed == {"kappa.hdf5", "kappa.json"}
    record = storage.read_json(tmp_path / "G" / "kappa.json")
    assert record["protocol_deviations"] == ["kappa_convention=phono3py4"]
    assert kappa_value(other) != reference
    back = kappaflow(*cli("kappa", "G"), cwd=tmp_path)
    assert "redoing kappa (" in back.stderr and kappa_value(back) == reference
