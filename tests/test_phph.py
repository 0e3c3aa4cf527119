"""kappaflow's ph-ph engine (kappaflow.phph) against phono3py 4.10's own C backend.

Force constants: Morse bond springs (a cheap ASE pair calculator defined here) on the real
NaCl-rs (mp-22862), GaAs-zb (mp-2534) and GaN-wz (mp-804) structures of the reference set,
each spring at its reference length (the structure is an equilibrium, the springs are
anharmonic), fc3 by phono3py's standard displacement set on the dataset's fc3 supercells
(64/64/72 atoms), fc2 on the same supercell (cheaper; any fc2 serves the comparison).
Every expected number comes from phono3py itself (C backend), never from the engine.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

torch = pytest.importorskip("torch")

from kappaflow import phph  # noqa: E402
from kappaflow.phph.engine import PhphEngine  # noqa: E402

MATERIALS = {"rs": "mp-22862", "zb": "mp-2534", "wz": "mp-804"}
#: coarse meshes: odd and even (even meshes have BZ-surface points)
MESHES = {
    "rs": {"odd": (5, 5, 5), "even": (4, 4, 4)},
    "zb": {"odd": (5, 5, 5), "even": (4, 4, 4)},
    "wz": {"odd": (5, 5, 3), "even": (4, 4, 2)},
}
TEMPERATURES = [300.0]
CUDA = torch.cuda.is_available()


class BondSprings(Calculator):
    """Morse springs on every pair closer than ``rcut`` in a reference structure, each at
    its reference length r0: E = Σ D (r_nn/r0)^6 [(1 - exp(-α (r - r0)))² - 1].

    The pair list (with periodic images) is fixed by the reference, so the calculator is
    meant for small displacements of that reference (phono3py's supercells)."""

    implemented_properties = ("energy", "forces")

    def __init__(self, reference, rcut: float, depth: float = 1.0, alpha: float = 1.6):
        super().__init__()
        frac = reference.get_scaled_positions(wrap=False)
        cell = np.asarray(reference.cell[:])
        shifts = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
        diff = frac[None, :, None, :] + shifts[None, None] - frac[:, None, None, :]
        dist = np.linalg.norm(diff @ cell, axis=-1)  # (i, j, shift)
        i, j, s = np.nonzero((dist < rcut) & (dist > 1e-8))
        keep = i < j
        self.i, self.j = i[keep], j[keep]
        self.shift = shifts[s[keep]] @ cell
        self.r0 = dist[self.i, self.j, s[keep]]
        self.depth = depth * (self.r0.min() / self.r0) ** 6
        self.alpha = alpha
        self.n_atoms = len(frac)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.get_positions()
        vec = pos[self.j] + self.shift - pos[self.i]
        r = np.linalg.norm(vec, axis=1)
        e = np.exp(-self.alpha * (r - self.r0))
        de_dr = 2.0 * self.depth * self.alpha * (1.0 - e) * e
        pair = (de_dr / r)[:, None] * vec
        forces = np.zeros((self.n_atoms, 3))
        np.add.at(forces, self.i, pair)
        np.add.at(forces, self.j, -pair)
        self.results = {"energy": float((self.depth * ((1.0 - e) ** 2 - 1.0)).sum()),
                        "forces": forces}  # fmt: skip


def _frame(reference_dir, mp_id):
    from ase.io import read

    frames = read(reference_dir / "phononDB-PBE-structures.extxyz", ":")
    index = next(k for k, a in enumerate(frames) if a.info["mp_id"] == mp_id)
    atoms = frames[index]
    atoms.info["fc2_supercell"] = atoms.info["fc3_supercell"]  # fc2 on the fc3 supercell
    return atoms, index


class Case:
    """Force constants of one material; fresh Phono3py objects on any mesh."""

    def __init__(self, reference_dir, kind):
        from kappaflow.phonons import compute_forces, init_phono3py, to_ase_atoms
        from kappaflow.settings import Phono3pySettings
        from kappaflow.structures import material_from_frame

        self.kind = kind
        self.atoms, index = _frame(reference_dir, MATERIALS[kind])
        self.spec = material_from_frame(self.atoms, index)
        ph3 = init_phono3py(self.atoms, self.spec, Phono3pySettings(mesh=MESHES[kind]["odd"]))
        sc = to_ase_atoms(ph3.supercell)
        nn = min(sc.get_distance(0, j, mic=True) for j in range(1, len(sc)))
        springs = BondSprings(sc, 1.75 * nn)  # first and second neighbours
        ph3.phonon_forces = compute_forces(ph3.phonon_supercells_with_displacements, springs)
        ph3.produce_fc2()
        ph3.symmetrize_fc2()
        ph3.forces = compute_forces(ph3.supercells_with_displacements, springs)
        ph3.produce_fc3()
        ph3.symmetrize_fc3()
        self.fc2, self.fc3 = ph3.fc2, ph3.fc3
        self.n_displacements = len(ph3.supercells_with_displacements)

    def phono3py(self, mesh, backend="C", fc3=None):
        from kappaflow.phonons import init_phono3py
        from kappaflow.settings import Phono3pySettings

        ph3 = init_phono3py(
            self.atoms, self.spec, Phono3pySettings(mesh=mesh, backend=backend), displace=False
        )
        ph3.fc2 = self.fc2
        ph3.fc3 = self.fc3 if fc3 is None else fc3
        ph3.init_phph_interaction(symmetrize_fc3q=False)
        return ph3


@pytest.fixture(scope="module")
def cases(reference_dir):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {kind: Case(reference_dir, kind) for kind in MATERIALS}


def _ir_grid_points(pp):
    from phonopy.phonon.grid import get_ir_grid_points

    ir, _weights, _map = get_ir_grid_points(pp.bz_grid)
    return np.asarray(pp.bz_grid.grg2bzg[ir], dtype="int64")


def _phono3py_c_interaction(pp, triplets):
    """phono3py's C ``Interaction`` strength at arbitrary triplets (what ``_run_c`` does)."""
    import phono3py._phono3py as phono3c

    nb = 3 * len(pp.primitive)
    out = np.zeros((len(triplets), len(pp.band_indices), nb, nb), dtype="double")
    svecs, multi = pp.primitive.get_smallest_vectors()
    phono3c.interaction(
        out,
        np.zeros(out.shape, dtype="byte"),
        pp.phonons.frequencies,
        pp.phonons.eigenvectors,
        np.ascontiguousarray(triplets, dtype="int64"),
        pp.bz_grid.addresses,
        pp.bz_grid.D_diag,
        pp.bz_grid.Q,
        pp.fc3,
        pp.fc3_nonzero_indices,
        svecs,
        multi,
        pp.primitive.masses,
        pp.primitive.p2s_map,
        pp.primitive.s2p_map,
        pp.band_indices,
        0,
        int(pp.make_r0_average),
        pp.all_shortest,
        pp.cutoff_frequency,
        1,
    )
    return out * pp.unit_conversion_factor


def _sample(gps, n=4):
    return gps[np.unique(np.linspace(0, len(gps) - 1, n).astype(int))]


def _assert_interaction_equal(pp, engine, gps):
    worst, surface = 0.0, 0
    for gp in gps:
        pp.set_grid_point(int(gp))
        pp.run()  # phono3py C, full interaction strength of every triplet
        expected = pp.interaction_strength.copy()
        triplets = pp.get_triplets_at_q()[0]
        surface += int(len(np.unique(triplets[:, 0])) > 1)
        got = engine.interaction_strength(triplets)
        scale = np.abs(expected).max()
        assert scale > 0
        worst = max(worst, float(np.abs(got - expected).max() / scale))
    assert worst <= 1e-10, worst
    return worst, surface


@pytest.mark.parametrize("parity", ["odd", "even"])
@pytest.mark.parametrize("kind", list(MATERIALS))
def test_interaction_strength_equals_phono3py_c(cases, kind, parity):
    """|Φ|² on every triplet of sampled grid points: max |Δ| <= 1e-10 max |Φ|²."""
    case = cases[kind]
    ph3 = case.phono3py(MESHES[kind][parity])
    pp = ph3.phph_interaction
    pp.run_phonon_solver()
    engine = PhphEngine(pp, device="cpu", threads=1, memory_mb=256)
    gps = _ir_grid_points(pp)
    _assert_interaction_equal(pp, engine, _sample(gps))
    if parity == "even":  # grid points on the BZ surface (several BZ representations)
        surface = [gp for gp in gps if _on_surface(pp, gp)]
        assert surface
        _assert_interaction_equal(pp, engine, surface[:2])


def _on_surface(pp, gp):
    """q0 has translationally equivalent representations on the BZ surface."""
    bzg2grg = np.asarray(pp.bz_grid.bzg2grg)
    return int(np.count_nonzero(bzg2grg == bzg2grg[int(gp)])) > 1


def test_wurtzite_has_multiplicities_and_surface_points(cases):
    """The cases exercise what the conventions are about: shortest vectors with
    multiplicity > 1, all_shortest both 0 and 1, BZ-surface grid points on the even mesh
    and, on the rock salt's, triplets whose q0 is another BZ representation of the grid
    point."""
    ph3 = cases["wz"].phono3py(MESHES["wz"]["even"])
    pp = ph3.phph_interaction
    _svecs, multi = pp.primitive.get_smallest_vectors()
    assert multi[:, :, 0].max() > 1
    assert 0 < pp.all_shortest.mean() < 1
    assert any(_on_surface(pp, gp) for gp in _ir_grid_points(pp))
    pp = cases["rs"].phono3py(MESHES["rs"]["even"]).phph_interaction
    q0_reps = []
    for gp in _ir_grid_points(pp):
        pp.set_grid_point(int(gp))
        q0_reps.append(len(np.unique(pp.get_triplets_at_q()[0][:, 0])))
    assert max(q0_reps) > 1
    assert cases["wz"].n_displacements == 1254  # phono3py's standard set for this cell


def test_small_memory_budget_recomputes_tables_with_the_same_numbers(cases):
    """A budget that keeps only part of the leg-1 tables: the rest is rebuilt per batch,
    the batch is small, and |Φ|² is still phono3py's."""
    ph3 = cases["wz"].phono3py(MESHES["wz"]["odd"])
    pp = ph3.phph_interaction
    pp.run_phonon_solver()
    engine = PhphEngine(pp, device="cpu", threads=1, memory_mb=20)
    assert 0 < engine.plan.table_capacity < engine.plan.table_points
    _assert_interaction_equal(pp, engine, _sample(_ir_grid_points(pp), 3))
    assert engine.stats.tables_recomputed > 0
    assert engine.plan.batch_triplets < 64


def test_zero_fc3_gives_zero_interaction(cases):
    """Known answer: fc3 = 0 -> phono3py's |Φ|² is 0, and so is the engine's."""
    case = cases["zb"]
    ph3 = case.phono3py(MESHES["zb"]["odd"], fc3=np.zeros_like(case.fc3))
    pp = ph3.phph_interaction
    pp.run_phonon_solver()
    gp = int(_ir_grid_points(pp)[3])
    pp.set_grid_point(gp)
    pp.run()
    assert np.all(pp.interaction_strength == 0)
    got = PhphEngine(pp, threads=1, memory_mb=64).interaction_strength(pp.get_triplets_at_q()[0])
    assert np.all(got == 0)


def test_permuted_triplet_equals_phono3py_at_that_triplet(cases):
    """Known answer: at (q1, q0, q2) and (q2, q1, q0) of a triplet — q0 no longer an
    irreducible point — the engine gives phono3py's C value at that triplet."""
    ph3 = cases["wz"].phono3py(MESHES["wz"]["odd"])
    pp = ph3.phph_interaction
    pp.run_phonon_solver()
    gp = int(_ir_grid_points(pp)[2])
    pp.set_grid_point(gp)
    triplets = pp.get_triplets_at_q()[0][:6]
    permuted = np.concatenate([triplets[:, [1, 0, 2]], triplets[:, [2, 1, 0]]])
    expected = _phono3py_c_interaction(pp, permuted)
    got = PhphEngine(pp, threads=1, memory_mb=64).interaction_strength(permuted)
    assert np.abs(got - expected).max() <= 1e-10 * np.abs(expected).max()
    # and not the unpermuted value (the test can tell the triplets apart)
    unpermuted = _phono3py_c_interaction(pp, np.concatenate([triplets, triplets]))
    assert np.abs(unpermuted - expected).max() > 1e-3 * np.abs(expected).max()


# ---------------------------------------------------------------------- κ through the seam


def _run_kappa(ph3, engine="phono3py", progress=None, device="cpu", memory_mb=256):
    with phph.install(
        ph3, engine=engine, device=device, threads=1, memory_mb=memory_mb, progress=progress
    ) as record:
        ph3.run_thermal_conductivity(
            temperatures=TEMPERATURES,
            is_isotope=True,
            boundary_mfp=1e6,
            transport_type="SMM19",
            write_kappa=False,
            log_level=0,
        )
    return ph3.thermal_conductivity, record


def _kappa_arrays(tc):
    from kappaflow.conductivity import split_mode_kappa

    matrix = np.asarray(tc.mode_kappa_matrix)
    mode_p, mode_c = split_mode_kappa(matrix[0], tc.frequencies, tc.mode_heat_capacities)
    n = float(np.prod(tc.mesh_numbers))
    return {
        "kappa": np.asarray(tc.kappa),
        "kappa_intra": np.asarray(tc.kappa_intra),
        "kappa_inter": np.asarray(tc.kappa_inter),
        "kappa_P": mode_p.sum(axis=(1, 2)) / n,
        "kappa_C": mode_c.sum(axis=(1, 2)) / n,
        "mode_kappa_matrix": matrix,
        "mode_kappa_P": mode_p,
        "mode_kappa_C": mode_c,
        "gamma": np.asarray(tc.gamma),
        "gamma_isotope": np.asarray(tc.gamma_isotope),
    }


def _max_rel(a, b):
    """Largest |a - b| relative to the largest |b| of each array (mode arrays: their
    largest element)."""
    return {k: float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b}


KAPPA_MESHES = {"rs": (5, 5, 5), "zb": (4, 4, 4), "wz": (4, 4, 2)}
SMALL = (3, 3, 3)  # rock salt, for the seam's own tests


@pytest.mark.parametrize("kind", list(MATERIALS))
def test_kappa_with_engine_equals_phono3py_default(cases, kind):
    """κ_TOT, κ_P, κ_C (4.10 kappa, kappa_intra/inter and kappaflow's 3.x split), the mode
    κ matrix, mode κ and γ with the engine equal phono3py's default C path to 1e-8."""
    case = cases[kind]
    base, base_record = _run_kappa(case.phono3py(KAPPA_MESHES[kind]), "phono3py")
    eng, record = _run_kappa(case.phono3py(KAPPA_MESHES[kind]), "kappaflow")
    expected, got = _kappa_arrays(base), _kappa_arrays(eng)
    assert np.all(np.isfinite(expected["kappa"])) and expected["kappa"][0, 0, 0] > 0
    rel = _max_rel(got, expected)
    assert max(rel.values()) <= 1e-8, rel
    assert base_record.engine == "phono3py" and base_record.stats is None
    assert record.engine == "kappaflow" and record.device == "cpu"
    assert record.stats["grid_points"] == len(eng.grid_points)
    assert record.stats["triplets"] > 0 and record.weights_backend == "C"
    assert record.versions["phono3py"].startswith("4.10")


def test_kappa_with_engine_on_rust_backend_equals_phono3py_rust(cases):
    """With lang='Rust' the engine takes phono3py's Rust tetrahedron weights, and equals the
    Rust default path (the C-vs-Rust difference is in the weights, not in |Φ|²)."""
    case = cases["rs"]
    base, _ = _run_kappa(case.phono3py(MESHES["rs"]["even"], backend="Rust"), "phono3py")
    eng, record = _run_kappa(case.phono3py(MESHES["rs"]["even"], backend="Rust"), "kappaflow")
    assert record.weights_backend == "Rust"
    rel = _max_rel(_kappa_arrays(eng), _kappa_arrays(base))
    assert max(rel.values()) <= 1e-8, rel


def test_phono3py_full_path_equals_low_memory_path(cases):
    """phono3py's own full-pp path (Interaction.run + ImagSelfEnergy) equals its default
    low-memory path (pp_collision), so the baseline is what users run."""
    case = cases["zb"]
    low, _ = _run_kappa(case.phono3py(KAPPA_MESHES["zb"]), "phono3py")
    ph3 = case.phono3py(KAPPA_MESHES["zb"])
    ph3.run_thermal_conductivity(
        temperatures=TEMPERATURES,
        is_isotope=True,
        boundary_mfp=1e6,
        transport_type="SMM19",
        is_full_pp=True,
        log_level=0,
    )
    rel = _max_rel(_kappa_arrays(ph3.thermal_conductivity), _kappa_arrays(low))
    assert max(rel.values()) <= 1e-8, rel


@pytest.mark.parametrize("engine", ["phono3py", "kappaflow"])
def test_progress_called_once_per_grid_point_kappa_bitwise_equal(cases, engine):
    case = cases["rs"]
    calls = []
    plain, _ = _run_kappa(case.phono3py(SMALL), engine)
    tc, record = _run_kappa(
        case.phono3py(SMALL), engine, progress=lambda d, n: calls.append((d, n))
    )
    total = len(tc.grid_points)
    assert calls == [(i + 1, total) for i in range(total)]
    assert record.grid_points_done == total == record.grid_points_total
    for key, value in _kappa_arrays(plain).items():
        assert np.array_equal(_kappa_arrays(tc)[key], value), key


def test_install_leaves_phono3py_as_it_was(cases):
    from phono3py.conductivity import rta_init

    factory = rta_init.conductivity_calculator
    ph3 = cases["rs"].phono3py(SMALL)
    _run_kappa(ph3, "kappaflow")
    assert rta_init.conductivity_calculator is factory
    assert "run_thermal_conductivity" not in vars(ph3)
    with pytest.raises(RuntimeError):  # nothing raised inside: restored on errors too
        with phph.install(ph3, engine="kappaflow", threads=1):
            raise RuntimeError("inside")
    assert rta_init.conductivity_calculator is factory


# ---------------------------------------------------------------------- clear errors


def test_unsupported_options_raise_clear_errors(cases):
    ph3 = cases["rs"].phono3py(KAPPA_MESHES["rs"])
    ph3.sigmas = [0.1]
    with pytest.raises(phph.PhphOptionError, match="tetrahedron"):
        with phph.install(ph3, engine="kappaflow"):
            pass
    ph3.sigmas = None
    ph3.init_phph_interaction(symmetrize_fc3q=True)
    with pytest.raises(phph.PhphOptionError, match="symmetrize_fc3q"):
        with phph.install(ph3, engine="kappaflow"):
            pass
    ph3.band_indices = [[0, 1]]
    ph3.init_phph_interaction(symmetrize_fc3q=False)
    with pytest.raises(phph.PhphOptionError, match="band subset"):
        with phph.install(ph3, engine="kappaflow"):
            pass
    ph3.band_indices = None
    ph3.init_phph_interaction(symmetrize_fc3q=False)
    for kwargs, match in (
        ({"is_LBTE": True}, "LBTE"),
        ({"is_N_U": True}, "normal/umklapp"),
        ({"is_full_pp": True}, "full interaction"),
        ({"write_gamma": True}, "write_gamma"),
    ):
        with pytest.raises(phph.PhphOptionError, match=match):
            with phph.install(ph3, engine="kappaflow"):
                ph3.run_thermal_conductivity(temperatures=TEMPERATURES, **kwargs)
    with pytest.raises(phph.PhphOptionError, match="RTA only"):  # the progress hook too
        with phph.install(ph3, engine="phono3py", progress=lambda d, n: None):
            ph3.run_thermal_conductivity(temperatures=TEMPERATURES, is_LBTE=True)
    with pytest.raises(ValueError, match="phph_engine must be one of"):
        with phph.install(ph3, engine="gpu"):
            pass


def test_version_pin():
    from kappaflow.phph.version import check_phono3py_version, is_supported

    assert is_supported("4.10.0") and is_supported("4.10.3")
    assert not is_supported("4.11.0") and not is_supported("3.19.4")
    with pytest.raises(phph.PhphVersionError, match=r"tested with phono3py 4\.10\.x"):
        check_phono3py_version("4.11.0")
    assert check_phono3py_version().startswith("4.10")


def test_cuda_requested_without_cuda_is_a_clear_error():
    from kappaflow.phph.engine import resolve_device

    assert resolve_device("auto", torch).type == ("cuda" if CUDA else "cpu")
    with pytest.raises(ValueError, match="cpu or cuda"):
        resolve_device("meta", torch)
    if CUDA:
        pytest.skip("CUDA present")
    with pytest.raises(phph.DeviceUnavailableError, match="no CUDA device"):
        resolve_device("cuda", torch)


def test_missing_torch_is_a_clear_error(monkeypatch):
    from kappaflow.phph.engine import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(phph.EngineUnavailableError, match="needs PyTorch"):
        require_torch()


def test_memory_plan_wurtzite_fits_a_4_gb_job():
    """GaN-wz at 19x19x15 (4 primitive atoms, 72 supercell atoms, ~5600 BZ points, 2800
    canonical): with 3 GB for the engine (a 4 GB job less 1 GB for phono3py and Python)
    every leg-1 table is kept and a batch of hundreds of triplets fits."""
    plan = phph.plan_memory(3072, n_p=4, n_s=72, n_m=4, n_bz=5600, n_table_points=2800)
    assert plan.all_tables_kept
    assert plan.table_mb + plan.workspace_mb <= 3072
    assert plan.batch_triplets >= 256
    small = phph.plan_memory(1024, n_p=4, n_s=72, n_m=4, n_bz=5600, n_table_points=2800)
    assert not small.all_tables_kept and small.table_mb + small.workspace_mb <= 1024
    with pytest.raises(phph.MemoryBudgetError, match="too small"):
        phph.plan_memory(1, n_p=4, n_s=72, n_m=4, n_bz=5600, n_table_points=2800)


# ---------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CUDA not available")
@pytest.mark.parametrize("kind", list(MATERIALS))
def test_gpu_interaction_strength_equals_phono3py_c(cases, kind):
    ph3 = cases[kind].phono3py(MESHES[kind]["even"])
    pp = ph3.phph_interaction
    pp.run_phonon_solver()
    engine = PhphEngine(pp, device="cuda", memory_mb=2048)
    _assert_interaction_equal(pp, engine, _sample(_ir_grid_points(pp)))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CUDA not available")
@pytest.mark.parametrize("kind", list(MATERIALS))
def test_gpu_kappa_with_engine_equals_phono3py_default(cases, kind):
    case = cases[kind]
    base, _ = _run_kappa(case.phono3py(KAPPA_MESHES[kind]), "phono3py")
    calls = []
    eng, record = _run_kappa(
        case.phono3py(KAPPA_MESHES[kind]),
        "kappaflow",
        device="cuda",
        memory_mb=2048,
        progress=lambda d, n: calls.append(d),
    )
    assert record.device.startswith("cuda")
    assert calls == list(range(1, len(eng.grid_points) + 1))
    rel = _max_rel(_kappa_arrays(eng), _kappa_arrays(base))
    assert max(rel.values()) <= 1e-8, rel


# ---------------------------------------------------------------------- production mesh


@pytest.mark.slow
def test_chgnet_nacl_production_mesh_engine_equals_default(tmp_path, reference_dir):
    """NaCl-rs at 19x19x19 with CHGNet 0.3.0 force constants (the full protocol, through
    the CLI in its own process): engine κ and mode arrays equal phono3py's default C path
    to 1e-8."""
    pytest.importorskip("chgnet")
    import subprocess

    from kappaflow import storage as io
    from kappaflow.phonons import init_phono3py
    from kappaflow.settings import Phono3pySettings
    from kappaflow.structures import MaterialSpec

    out = tmp_path / "nacl"
    cmd = [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", "chgnet-0.3.0",
           "--material", "mp-22862", "--out", str(out), "--threads", "2",
           "--reference-dir", str(reference_dir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    atoms, record = io.read_structure(out / "relaxed.extxyz")
    m = dict(record["material"])
    for key in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
        m[key] = tuple(m[key])
    fc2, fc3 = io.read_fc(out / "fc2.hdf5", 2), io.read_fc(out / "fc3.hdf5", 3)

    def fresh():
        ph3 = init_phono3py(atoms, MaterialSpec(**m), Phono3pySettings(), displace=False)
        ph3.fc2, ph3.fc3 = fc2, fc3
        ph3.init_phph_interaction(symmetrize_fc3q=False)
        return ph3

    base, _ = _run_kappa(fresh(), "phono3py")
    eng, record = _run_kappa(fresh(), "kappaflow", memory_mb=2048)
    assert list(base.mesh_numbers) == [19, 19, 19] and len(base.grid_points) == 220
    assert record.stats["triplets"] == 503800
    rel = _max_rel(_kappa_arrays(eng), _kappa_arrays(base))
    assert max(rel.values()) <= 1e-8, rel
