"""Wigner RTA κ on EMT fcc Cu, and the partner-heat-capacity split of κ_C (PROTOCOL §6)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kappaflow import storage
from kappaflow.conductivity import kappa_ave, split_coherence, split_mode_kappa
from kappaflow.settings import Phono3pySettings


def test_split_coherence_two_bands_unequal_heat_capacity():
    # one q-point, two bands: C = (1, 3); symmetric pair term κ_C[0,1] = κ_C[1,0] = k (xx only)
    k = 0.8
    pair = np.zeros((1, 2, 2, 6))
    pair[0, 0, 1, 0] = pair[0, 1, 0, 0] = k
    pair[0, 0, 0, 0] = 100.0  # the diagonal (populations) must be ignored
    cv = np.array([[1.0, 3.0]])
    out = split_coherence(pair, cv)
    # band 0 gets 2·k·C_1/(C_1+C_0) = 1.5k; band 1 gets 2·k·C_0/(C_0+C_1) = 0.5k
    assert out[0, 0, 0] == pytest.approx(1.5 * k)
    assert out[0, 1, 0] == pytest.approx(0.5 * k)
    # totals are conserved: Σ_s κ^C_s = Σ_{s≠s'} κ_C[s, s']
    assert out[0, :, 0].sum() == pytest.approx(2 * k)
    # own-heat-capacity weighting would give the opposite split: this test tells them apart
    assert out[0, 0, 0] != pytest.approx(0.5 * k)


def test_degenerate_pairs_are_populations_3x_convention():
    # three bands: 0 and 1 degenerate (5.0 THz), 2 at 7.0 THz; C = (1, 1, 3)
    f = np.array([[5.0, 5.0 + 5e-5, 7.0]])
    cv = np.array([[[1.0, 1.0, 3.0]]])
    m = np.zeros((1, 1, 3, 3, 6))
    m[0, 0, 0, 0, 0], m[0, 0, 1, 1, 0], m[0, 0, 2, 2, 0] = 10.0, 20.0, 30.0  # diagonal
    m[0, 0, 0, 1, 0] = m[0, 0, 1, 0, 0] = 4.0  # degenerate pair -> populations
    m[0, 0, 1, 2, 0] = m[0, 0, 2, 1, 0] = 2.0  # non-degenerate pair -> coherences
    mode_p, mode_c = split_mode_kappa(m, f, cv)
    np.testing.assert_allclose(mode_p[0, 0, :, 0], [10 + 4, 20 + 4, 30])
    # pair (1, 2): band 1 gets 2·2·C_2/(C_1+C_2) = 3, band 2 gets 2·2·C_1/(C_1+C_2) = 1
    np.testing.assert_allclose(mode_c[0, 0, :, 0], [0, 3.0, 1.0])
    # totals: P + C per mode sums to the whole matrix
    assert (mode_p + mode_c)[..., 0].sum() == pytest.approx(m[..., 0].sum())
    # without the degeneracy tolerance the same per-mode total, different P/C split
    p0, c0 = split_mode_kappa(m, f, cv, degeneracy_tol=0.0)
    np.testing.assert_allclose(p0 + c0, mode_p + mode_c)
    assert p0[0, 0, 0, 0] == 10.0 and c0[0, 0, 0, 0] == pytest.approx(4.0)


def test_split_coherence_zero_heat_capacity_gives_zero_not_nan():
    pair = np.zeros((1, 2, 2, 6))
    pair[0, 0, 1, :3] = pair[0, 1, 0, :3] = 1.0
    out = split_coherence(pair, np.array([[0.0, 0.0]]))
    assert np.all(out == 0.0)


def test_kappa_ave_is_trace_over_three():
    assert kappa_ave(np.array([1.0, 2.0, 6.0, 9.0, 9.0, 9.0])) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def cu_result(tmp_path_factory):
    """EMT Cu: relax, fc2, fc3 and κ at two temperatures from one run."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from kappaflow.conductivity import compute_kappa
    from kappaflow.phonons import compute_forces, fc2_from_forces, fc3_from_forces, init_phono3py
    from kappaflow.relax import relax_structure
    from kappaflow.structures import material_from_frame

    atoms = bulk("Cu", "fcc", a=3.59)
    atoms.info = {
        "material_id": "Cu",
        "fc2_supercell": [4, 4, 4],
        "fc3_supercell": [3, 3, 3],
        "q_mesh": [5, 5, 5],
    }
    spec = material_from_frame(atoms, 0)
    relaxed = relax_structure(atoms, EMT()).atoms
    settings = Phono3pySettings()
    ph3 = init_phono3py(relaxed, spec, settings)
    fc2 = fc2_from_forces(ph3, compute_forces(ph3.phonon_supercells_with_displacements, EMT()))
    fc3 = fc3_from_forces(ph3, compute_forces(ph3.supercells_with_displacements, EMT()))
    result = compute_kappa(ph3, fc2, fc3, [300.0, 600.0], settings)
    return relaxed, spec, fc2, fc3, result


def test_two_temperatures_from_one_run(cu_result):
    *_, result = cu_result
    assert result.temperatures.tolist() == [300.0, 600.0]
    k300, k600 = result.kappa_TOT_ave
    assert np.isfinite(k300) and k300 > 0
    # three-phonon scattering ~ T: κ(600) < κ(300)
    assert k600 < k300
    assert result.kappa_TOT_RTA.shape == (2, 6)


def test_sum_of_mode_kappa_equals_kappa(cu_result):
    *_, result = cu_result
    n = result.weights.sum()
    assert n == 125
    assert result.sum_rule_error() < 1e-10
    np.testing.assert_allclose(
        result.mode_kappa_P_RTA.sum(axis=(1, 2)) / n, result.kappa_P_RTA, rtol=1e-10
    )
    np.testing.assert_allclose(
        result.mode_kappa_C.sum(axis=(1, 2)) / n, result.kappa_C, rtol=1e-8, atol=1e-12
    )
    np.testing.assert_allclose(
        result.mode_kappa_TOT_ave.sum(axis=(1, 2)) / n, result.kappa_TOT_ave, rtol=1e-10
    )
    # κ_P + κ_C = κ_TOT with κ_P, κ_C summed independently from the pair matrix
    np.testing.assert_allclose(
        result.kappa_P_RTA + result.kappa_C, result.kappa_TOT_RTA, rtol=1e-10
    )
    # a monatomic crystal has a small coherence term compared with populations
    assert np.all(np.abs(kappa_ave(result.kappa_C)) < 0.05 * kappa_ave(result.kappa_P_RTA))


@pytest.fixture(scope="module")
def rust_result(cu_result):
    from kappaflow.conductivity import compute_kappa
    from kappaflow.phonons import init_phono3py

    relaxed, spec, fc2, fc3, _ = cu_result
    rust = Phono3pySettings(backend="Rust")
    ph3 = init_phono3py(relaxed, spec, rust, displace=False)
    return compute_kappa(ph3, fc2, fc3, [300.0, 600.0], rust)


def test_c_and_rust_backends_share_harmonic_part_and_agree_within_two_percent(
    cu_result, rust_result
):
    """phono3py 4.10: C and Rust (phonors 0.8) give identical phonons, κ within ~1.5 %.

    Measured on this case: κ(300 K) C 20.666, Rust 20.890 (+1.1 %). The two phonon solvers
    choose different bases inside degenerate subspaces and the per-band linewidths depend
    on that basis; given the same phonons C and Rust agree (docs/benchmarks.md, "phono3py
    backends"). kappaflow defaults to C, as the DFT reference.
    """
    c = cu_result[-1]
    r = rust_result
    for name in ("frequencies", "heat_capacity", "group_velocities", "qpoints", "weights"):
        np.testing.assert_allclose(
            getattr(r, name), getattr(c, name), rtol=1e-12, atol=1e-14, err_msg=name
        )
    np.testing.assert_allclose(r.kappa_TOT_ave, c.kappa_TOT_ave, rtol=0.02)


@pytest.mark.xfail(
    strict=True, reason="phono3py 4.10 C and Rust linewidths differ at the 1e-2 level (see above)"
)
def test_c_and_rust_backends_agree_to_1e8(cu_result, rust_result):
    np.testing.assert_allclose(rust_result.kappa_TOT_RTA, cu_result[-1].kappa_TOT_RTA, rtol=1e-8)


_JOB = """
import sys
from kappaflow.runtime import configure_threads
configure_threads(1)
from kappaflow.steps.kappa import run_kappa
from kappaflow.settings import KappaSettings, Phono3pySettings
d = sys.argv[1]
run_kappa(relaxed=d + "/relaxed.extxyz", phonons_json=d + "/phonons.json", fc2_path=d + "/fc2.hdf5",
          fc3_path=d + "/fc3.hdf5", settings=KappaSettings((300.0,), Phono3pySettings(mesh=(7, 7, 7))),
          out_hdf5=d + "/kappa.hdf5", out_record=d + "/kappa.json")
"""


def test_two_kappa_jobs_at_once_write_their_own_hdf5(tmp_path):
    """Two materials' κ jobs started together in the same cwd: each file holds its own κ."""
    from ase.build import bulk
    from ase.io import write

    from kappaflow.calculators import model_spec
    from kappaflow.settings import RelaxSettings
    from kappaflow.steps.anharmonic import run_fc3
    from kappaflow.steps.harmonic import run_fc2
    from kappaflow.steps.kappa import run_kappa
    from kappaflow.steps.relax import run_relax

    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {
        "material_id": "Cu",
        "fc2_supercell": [3, 3, 3],
        "fc3_supercell": [3, 3, 3],  # 2x2x2 of a 1-atom fcc cell: fc3 = 0 (zero_fc3)
        "q_mesh": [7, 7, 7],
    }
    ag = bulk("Ag", "fcc", a=4.06)
    ag.info = {
        "material_id": "Ag",
        "fc2_supercell": [3, 3, 3],
        "fc3_supercell": [3, 3, 3],  # 2x2x2 of a 1-atom fcc cell: fc3 = 0 (zero_fc3)
        "q_mesh": [7, 7, 7],
    }
    write(tmp_path / "s.extxyz", [cu, ag], format="extxyz")
    emt = model_spec("emt")
    ps = Phono3pySettings(mesh=(7, 7, 7))
    for m in ("Cu", "Ag"):
        d = tmp_path / m
        run_relax(
            structures=tmp_path / "s.extxyz",
            material_id=m,
            model=emt,
            settings=RelaxSettings(fmax=1e-3),
            out_relaxed=d / "relaxed.extxyz",
        )
        run_fc2(
            relaxed=d / "relaxed.extxyz",
            model=emt,
            settings=ps,
            out_fc2=d / "fc2.hdf5",
            out_forces=d / "forces_fc2.hdf5",
            out_disp=d / "phono3py_disp.yaml",
            out_phonons=d / "phonons.json",
        )
        run_fc3(
            relaxed=d / "relaxed.extxyz",
            phonons_json=d / "phonons.json",
            model=emt,
            settings=ps,
            out_fc3=d / "fc3.hdf5",
            out_forces=d / "forces_fc3.hdf5",
        )
    procs = [
        subprocess.Popen([sys.executable, "-c", _JOB, str(tmp_path / m)], cwd=tmp_path)
        for m in ("Cu", "Ag")
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert not list(tmp_path.glob("kappa-m*.hdf5")), "phono3py wrote into the cwd"
    values = {}
    for m in ("Cu", "Ag"):
        data, attrs = storage.read_hdf5(tmp_path / m / "kappa.hdf5")
        assert attrs["mp_id"] == m
        record = json.loads((tmp_path / m / "kappa.json").read_text())
        assert data["kappa_TOT_ave"][0] == pytest.approx(record["kappa_TOT_ave"][0], rel=1e-12)
        values[m] = record["kappa_TOT_ave"][0]
    # recompute Ag sequentially: the concurrent file must hold the same numbers
    run_kappa(
        relaxed=tmp_path / "Ag" / "relaxed.extxyz",
        phonons_json=tmp_path / "Ag" / "phonons.json",
        fc2_path=tmp_path / "Ag" / "fc2.hdf5",
        fc3_path=tmp_path / "Ag" / "fc3.hdf5",
        settings=__import__("kappaflow.settings").settings.KappaSettings((300.0,), ps),
        out_hdf5=tmp_path / "again.hdf5",
        out_record=tmp_path / "again.json",
    )
    assert storage.read_hdf5(tmp_path / "again.hdf5")[0]["kappa_TOT_ave"][0] == pytest.approx(
        values["Ag"], rel=1e-10
    )
    assert values["Cu"] != pytest.approx(values["Ag"], rel=1e-3)
