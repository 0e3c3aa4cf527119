"""Issue 13, class 3: physically meaningless inputs are recorded failures with a reason;
suspicious values are recorded flags, scored like any other result (PROTOCOL §5-§6).

EMT Cu on the smallest supercells, and tiny ASE calculators written here (no forces, a
harmonic spring model, a momentum-violating drift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.io import write
from ase.neighborlist import neighbor_list
from helpers import fc2_into, fc3_into

from kappaflow import gates, storage
from kappaflow.calculators import LoadedModel, model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.metrics import KAPPA_ERROR_MAX, score_table
from kappaflow.settings import CheckSettings, KappaSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.evaluate import gather_row
from kappaflow.steps.kappa import kappa_problem, run_kappa
from kappaflow.steps.relax import run_relax
from kappaflow.structures import periodicity_problem, vacuum_gaps

CU_A = 3.59


# ------------------------------------------------------------------ tiny calculators


class _Simple(Calculator):
    implemented_properties = ("energy", "forces", "stress")

    def forces(self, atoms: Atoms) -> np.ndarray:
        raise NotImplementedError

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": self.forces(self.atoms), "stress": np.zeros(6)}


class NoForces(_Simple):
    """A model that sees no interaction at all."""

    def forces(self, atoms):
        return np.zeros((len(atoms), 3))


class NoForcesOnLargeCells(_Simple):
    """EMT on small cells, nothing on cells of more than ``n`` atoms (the fc3 supercells)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.emt = n, EMT()

    def forces(self, atoms):
        if len(atoms) > self.n:
            return np.zeros((len(atoms), 3))
        return self.emt.get_forces(atoms)


class Springs(_Simple):
    """Harmonic central springs between nearest neighbours of fcc Cu: forces exactly
    linear in the displacements (fc3 = 0). Ideal sites are the positions snapped to the
    fcc lattice of the cell's volume per atom (the displacements are 0.03 Å)."""

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.k = k

    def forces(self, atoms):
        a = (4 * atoms.get_volume() / len(atoms)) ** (1 / 3)
        half = a / 2
        ideal = np.rint(atoms.positions / half) * half
        u = atoms.positions - ideal
        i, j, shift = neighbor_list("ijS", atoms, 0.85 * a)
        bond = ideal[j] + shift @ atoms.cell[:] - ideal[i]
        e = bond / np.linalg.norm(bond, axis=1)[:, None]
        stretch = np.einsum("nk,nk->n", u[j] - u[i], e)
        f = np.zeros_like(atoms.positions)
        np.add.at(f, i, self.k * stretch[:, None] * e)
        return f


class Drift(_Simple):
    """EMT plus the same force on every atom: the forces do not conserve momentum."""

    def __init__(self, drift: float) -> None:
        super().__init__()
        self.drift, self.emt = drift, EMT()

    def forces(self, atoms):
        return self.emt.get_forces(atoms) + np.array([self.drift, 0.0, 0.0])


def _loaded(calc) -> LoadedModel:
    name = type(calc).__name__.lower()
    return LoadedModel(calc, {"model": name, "family": "ase", "device": "cpu", "dtype": "float64"})


# ------------------------------------------------------------------ the steps


def _files(tmp_path, mid):
    return {k: tmp_path / mid / v for k, v in MATERIAL_FILES.items()}


def _cu(a=CU_A, fc2=(2, 2, 2), fc3=(3, 3, 3), mesh=(3, 3, 3)) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a)
    atoms.info = {"fc2_supercell": list(fc2), "fc3_supercell": list(fc3), "q_mesh": list(mesh)}
    return atoms


def _run(tmp_path, atoms, mid, loaded=None, relax=True, until="kappa", temps=(300.0,)):
    """relax (EMT) -> fc2 -> fc3 (``loaded``, default EMT) -> κ of one structure; returns
    (record of the last step, files)."""
    atoms = atoms.copy()
    atoms.info["material_id"] = mid
    write(tmp_path / f"{mid}.extxyz", atoms, format="extxyz")
    f = _files(tmp_path, mid)
    spec = model_spec("emt")
    run_relax(
        structures=tmp_path / f"{mid}.extxyz",
        material_id=mid,
        model=spec,
        settings=RelaxSettings(fmax=1e-3, max_steps=100 if relax else 1),
        out_relaxed=f["relaxed"],
    )
    ps = Phono3pySettings()
    out = fc2_into(f, spec, ps, loaded=loaded)
    if until == "fc2":
        return out, f
    out = fc3_into(f, spec, ps, loaded=loaded)
    if until == "fc3":
        return out, f
    record = run_kappa(
        relaxed=f["relaxed"],
        phonons_json=f["phonons"],
        fc2_path=f["fc2"],
        fc3_path=f["fc3"],
        settings=KappaSettings(temps, ps),
        out_hdf5=f["kappa"],
        out_record=f["record"],
        fc3_forces=f["forces_fc3"],
    )
    return record, f


def _scored(f, k_ref=10.0, checks=None):
    """The gathered row of a κ record scored against a DFT-like reference of κ = k_ref."""
    row = gather_row(storage.read_json(f["record"]), f["kappa"], checks)
    pred = pd.DataFrame([row]).set_index("mp_id")
    mid = row["mp_id"]
    ref = pd.DataFrame(
        [
            {
                "mp_id": mid,
                "temperatures": np.array([300.0]),
                "kappa_TOT_ave": np.array([k_ref]),
                "mode_kappa_TOT_ave": None,
                "weights": np.array([1]),
            }
        ]
    ).set_index("mp_id")
    return row, score_table(pred, ref, checks=checks).loc[mid]


def test_isolated_atoms_in_a_box_are_a_failure_not_kappa_zero(tmp_path):
    """Issue 13's example: single atoms 12 Å apart gave κ = 0.0, status ok, gate 'lowest
    frequency 0.0000 THz'."""
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[12, 12, 12], pbc=True)
    atoms.info = {"fc2_supercell": [1, 1, 1], "fc3_supercell": [1, 1, 1], "q_mesh": [3, 3, 3]}
    record, f = _run(tmp_path, atoms, "Cu-box")
    assert record["status"] == gates.VACUUM_GAP
    assert record["kappa_TOT_ave"] == [None]
    assert any("12.00 Å of vacuum" in e and "a1, a2, a3" in e for e in record["errors"])
    assert storage.fc_status(f["fc2"]) == storage.fc_status(f["fc3"]) == gates.VACUUM_GAP
    _, scored = _scored(f)
    assert scored["failed"] and scored["failure"] == gates.VACUUM_GAP
    assert scored["SRE"] == scored["SRME"] == KAPPA_ERROR_MAX


@pytest.mark.parametrize(
    ("pbc", "vacuum_axes", "status", "words"),
    [
        ((True, True, False), (2,), gates.NON_PERIODIC, "periodic along 2 of 3"),
        ((False, False, False), (), gates.NON_PERIODIC, "periodic along 0 of 3"),
        ((True, True, True), (2,), gates.VACUUM_GAP, "along a3"),  # a slab
        ((True, True, True), (0, 1), gates.VACUUM_GAP, "along a1, a2"),  # a wire
    ],
    ids=["slab-pbc-TTF", "molecule-in-box-FFF", "slab-with-vacuum", "wire"],
)
def test_cells_that_are_no_bulk_fail_at_fc2_with_the_reason(
    tmp_path, pbc, vacuum_axes, status, words
):
    atoms = bulk("Cu", "fcc", a=CU_A, cubic=True)
    cell = np.diag([CU_A] * 3)
    for k in vacuum_axes:
        cell[k, k] += 10.0
    atoms.set_cell(cell, scale_atoms=False)
    atoms.pbc = pbc
    atoms.info = {"fc2_supercell": [1, 1, 1], "fc3_supercell": [1, 1, 1], "q_mesh": [2, 2, 2]}
    out, f = _run(tmp_path, atoms, "Cu-cut", relax=False, until="fc2")
    assert out["status"] == status
    assert any(e.startswith(status) and words in e for e in out["errors"]), out["errors"]
    assert storage.fc_status(f["fc2"]) == status
    assert storage.read_json(f["phonons"])["status"] == status


def test_vacuum_gaps_of_bulk_solids_are_far_below_the_bound(reference_dir):
    from ase.io import read

    frames = read(reference_dir / "phononDB-PBE-structures.extxyz", index=":")
    widest = max(vacuum_gaps(a).max() for a in frames)
    assert 3.0 < widest < 4.0  # RbI, 3.76 Å
    assert all(periodicity_problem(a) is None for a in frames)
    assert periodicity_problem(bulk("Cs", "bcc", a=6.14)) is None  # 4.34 Å


def test_forces_that_are_all_zero_fail_at_fc2(tmp_path):
    out, _ = _run(tmp_path, _cu(), "Cu-nothing", loaded=_loaded(NoForces()), until="fc2")
    assert out["status"] == gates.ZERO_FORCES
    assert any("have no force on any atom" in e for e in out["errors"])
    assert np.isnan(out["checks"]["sum_rule_violation"])


def test_forces_that_are_all_zero_on_fc3_supercells_fail_at_fc3(tmp_path):
    out, _ = _run(
        tmp_path,
        _cu(fc2=(2, 2, 2), fc3=(3, 3, 3)),
        "Cu-nofc3",
        loaded=_loaded(NoForcesOnLargeCells(8)),
    )
    assert out["status"] == gates.ZERO_FORCES
    assert any("displaced fc3 supercells have no force" in e for e in out["errors"])


def test_phonons_that_are_all_zero_fail_the_gate(tmp_path):
    """A Γ-only mesh of a one-atom cell has no phonon that carries heat: κ was 0.0, ok."""
    record, f = _run(tmp_path, _cu(mesh=(1, 1, 1)), "Cu-gamma")
    assert record["status"] == gates.ZERO_FREQUENCIES
    assert any("nothing carries heat" in e for e in record["errors"])
    assert storage.fc_status(f["fc2"]) == gates.ZERO_FREQUENCIES  # the Grüneisen step skips
    assert gates.gate(True, True, zero_frequencies=True).status == gates.ZERO_FREQUENCIES


def test_a_harmonic_model_has_no_fc3_and_fails(tmp_path):
    springs = _loaded(Springs())
    record, f = _run(tmp_path, _cu(), "Cu-springs", loaded=springs, relax=False)
    phonons = storage.read_json(f["phonons"])
    assert phonons["status"] == gates.OK and phonons["min_frequency_THz"] > -1e-6
    assert record["status"] == gates.ZERO_FC3
    assert any("harmonic model" in e for e in record["errors"])


def test_kappa_not_finite_or_not_positive_is_a_failure(tmp_path, monkeypatch):
    from kappaflow import conductivity

    real = conductivity.compute_kappa
    sabotage = {}

    def fake(*args, **kwargs):
        result = real(*args, **kwargs)
        result.kappa_TOT_RTA = sabotage["f"](result.kappa_TOT_RTA)
        return result

    monkeypatch.setattr(conductivity, "compute_kappa", fake)
    for name, f_kappa, status in [
        ("neg", lambda k: -k, gates.NONPOSITIVE_KAPPA),
        ("nan", lambda k: k * np.nan, gates.NONFINITE_KAPPA),
    ]:
        sabotage["f"] = f_kappa
        record, f = _run(tmp_path, _cu(), f"Cu-{name}")
        assert record["status"] == status, name
        assert record["kappa_TOT_ave"] == [None]
        assert storage.read_hdf5(f["kappa"])[1]["kappaflow_status"] == status
        _, scored = _scored(f)
        assert scored["failure"] == status and scored["SRE"] == KAPPA_ERROR_MAX


def test_kappa_problem_rules():
    ok = np.array([[10.0, 10.0, 10.0, 0, 0, 0]])
    assert kappa_problem([300.0], ok) is None
    assert kappa_problem([0.0, 300.0], np.vstack([0 * ok, ok])) is None  # κ(0 K) = 0
    bad_axis = np.array([[10.0, 10.0, -1.0, 0, 0, 0]])
    assert kappa_problem([300.0], bad_axis)[0] == gates.NONPOSITIVE_KAPPA
    assert kappa_problem([300.0], np.full((1, 6), np.inf))[0] == gates.NONFINITE_KAPPA
    mode = np.ones((1, 2, 3, 6))
    mode[0, 1, 2, 0] = np.nan
    assert kappa_problem([300.0], ok, mode) == (
        gates.NONFINITE_KAPPA,
        "κ is NaN or infinite in the mode κ",
    )


def test_suspicious_values_are_flags_and_still_scored(tmp_path):
    """Drift forces (acoustic sum rule) and a cell far from the model's (volume change) are
    flagged, and so is κ beyond a bound; the result keeps status ok and is scored."""
    record, f = _run(tmp_path, _cu(a=3.3), "Cu-drift", loaded=_loaded(Drift(1e-3)))
    assert record["status"] == gates.OK
    assert record["checks"]["sum_rule_violation"] > CheckSettings().sum_rule_tolerance
    assert record["checks"]["volume_change"] > 0.2  # (3.59/3.3)^3 - 1 = 0.29
    k = record["kappa_TOT_ave"][0]
    row, scored = _scored(f)
    expected = {gates.FLAG_SUM_RULE, gates.FLAG_VOLUME_CHANGE}
    assert set(row["flags"].split(";")) == set(scored["flags"].split(";")) == expected
    assert not scored["failed"]
    assert scored["SRD"] == pytest.approx(2 * (k - 10.0) / (k + 10.0))
    strict = CheckSettings(max_kappa=k / 2, min_kappa=k / 4)
    row, scored = _scored(f, checks=strict)
    assert gates.FLAG_KAPPA_HIGH in row["flags"] and gates.FLAG_KAPPA_HIGH in scored["flags"]
    assert not scored["failed"]
    lax = CheckSettings(sum_rule_tolerance=1.0, max_volume_change=1.0)
    row, scored = _scored(f, checks=lax)
    assert row["flags"] == "" and scored["flags"] == ""


def test_emt_cu_has_no_flags(tmp_path):
    out, _ = _run(tmp_path, _cu(), "Cu", until="fc2")
    assert out["status"] == gates.OK
    assert out["checks"]["sum_rule_violation"] < 1e-10
    assert abs(out["checks"]["volume_change"]) < 1e-3
    assert gates.flags(out["checks"], [300.0], [50.0], CheckSettings()) == []


def test_flag_bounds_scale_as_one_over_t():
    c = CheckSettings()
    assert gates.kappa_bounds(300.0, c) == (c.min_kappa, c.max_kappa)
    assert gates.kappa_bounds(600.0, c) == (c.min_kappa / 2, c.max_kappa / 2)
    assert gates.flags({}, [0.0, 600.0], [0.0, 6e3], c) == [gates.FLAG_KAPPA_HIGH]
    assert gates.flags({}, [300.0], [5e-3], c) == [gates.FLAG_KAPPA_LOW]
    assert gates.flags({"volume_change": -0.15}, [], [], c) == [gates.FLAG_VOLUME_CHANGE]


def test_published_huge_kappa_is_scored_with_a_flag_not_failed():
    """k_SRME's tables hold κ of 10^3-10^6 W/mK (PROTOCOL §8): results, scored."""
    rows = [
        {"mp_id": m, "temperatures": np.array([300.0]), "kappa_TOT_ave": np.array([k])}
        for m, k in (("A", 1.0e6), ("B", 2.0e3))
    ]
    pred = pd.DataFrame(rows).set_index("mp_id")
    ref = pred.copy()
    ref["kappa_TOT_ave"] = [np.array([10.0]), np.array([100.0])]
    df = score_table(pred, ref)
    assert not df["failed"].any()
    assert df.loc["A", "SRD"] == pytest.approx(2 * (1e6 - 10) / (1e6 + 10))
    assert df.loc["A", "flags"] == gates.FLAG_KAPPA_HIGH
    assert df.loc["B", "flags"] == ""


# ------------------------------------------------------- user ids that are reference ids


def _user_structures(tmp_path, frames) -> str:
    path = tmp_path / "mine.extxyz"
    write(path, frames, format="extxyz")
    return str(path)


@pytest.mark.parametrize(
    ("atoms", "words"),
    [
        (
            bulk("Cu", "fcc", a=CU_A),
            ["'mp-22862' is Cu (space group 225)", "is NaCl (space group 225)"],
        ),
        (
            bulk("NaCl", "zincblende", a=6.0),
            ["'mp-22862' is NaCl (space group 216)", "is NaCl (space group 225)"],
        ),
    ],
    ids=["other-composition", "other-space-group"],
)
def test_a_user_structure_under_a_reference_id_must_be_that_material(tmp_path, atoms, words):
    """It would be scored against another material's DFT κ: refused at config load."""
    from kappaflow.config import ConfigError, load_config

    atoms.info = {"mp_id": "mp-22862"}
    cfg = load_config({"structures": _user_structures(tmp_path, [atoms]), "models": ["emt"]})
    with pytest.raises(ConfigError) as info:
        _ = cfg.materials
    for word in [*words, "mine.extxyz", "another id"]:
        assert word in str(info.value), str(info.value)


def test_the_reference_frame_itself_under_its_id_is_accepted(tmp_path, reference_dir):
    from ase.io import read

    from kappaflow.config import load_config

    frames = read(reference_dir / "phononDB-PBE-structures.extxyz", index=":")
    nacl = next(a for a in frames if a.info["mp_id"] == "mp-22862")
    mine = bulk("Cu", "fcc", a=CU_A)
    mine.info = {"material_id": "my-Cu"}  # not a reference id: no check
    cfg = load_config({"structures": _user_structures(tmp_path, [nacl, mine]), "models": ["emt"]})
    assert cfg.materials == ["mp-22862", "my-Cu"]
    assert cfg.scored == ["mp-22862"]
