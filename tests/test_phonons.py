"""Displacements, fc2 symmetry and the gates (PROTOCOL §4-§5)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT

from kappaflow import storage
from kappaflow.gates import gate
from kappaflow.phonons import (
    compute_forces,
    displacement_counts,
    fc2_from_forces,
    grid_frequencies,
    has_imaginary_modes,
    init_phono3py,
)
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import material_from_frame, materials_table


@pytest.mark.parametrize(
    ("mp_id", "counts"),
    [
        ("mp-22862", (2, 146, 512, 64)),  # NaCl-rs
        ("mp-2534", (2, 222, 512, 64)),  # GaAs-zb
        ("mp-804", (6, 1254, 300, 72)),  # GaN-wz
    ],
)
def test_displacement_counts_match_dataset(reference_dir, mp_id, counts):
    frames = storage.read_structures(reference_dir / "phononDB-PBE-structures.extxyz")
    table = materials_table(frames)
    atoms = next(a for a in frames if a.info["mp_id"] == mp_id)
    ph3 = init_phono3py(atoms, table[mp_id], Phono3pySettings())
    c = displacement_counts(ph3)
    assert (
        c["n_fc2_supercells"],
        c["n_fc3_supercells"],
        c["fc2_supercell_atoms"],
        c["fc3_supercell_atoms"],
    ) == counts
    # displacement distance 0.03 Å
    disp = ph3.dataset["first_atoms"][0]["displacement"]
    assert np.linalg.norm(disp) == pytest.approx(0.03)


def test_emt_cu_fc2_symmetric_and_stable(cu_fcc):
    spec = material_from_frame(cu_fcc, 0)
    ph3 = init_phono3py(cu_fcc, spec, Phono3pySettings())
    assert len(ph3.phonon_supercells_with_displacements) == 1  # fcc: one fc2 displacement
    forces = compute_forces(ph3.phonon_supercells_with_displacements, EMT())
    assert forces.shape == (1, 64, 3)
    assert np.all(np.isfinite(forces))
    # Newton's third law on the displaced supercell
    assert np.abs(forces.sum(axis=1)).max() < 1e-10
    fc2 = fc2_from_forces(ph3, forces)
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    full = compact_fc_to_full_fc(ph3.phonon_primitive, fc2)
    # Φ_ij^ab = Φ_ji^ba and the acoustic sum rule
    np.testing.assert_allclose(full, full.transpose(1, 0, 3, 2), atol=1e-10)
    np.testing.assert_allclose(full.sum(axis=1), 0, atol=1e-10)
    freqs = grid_frequencies(cu_fcc, spec, fc2, Phono3pySettings())
    assert freqs.shape == (125, 3)
    np.testing.assert_allclose(freqs[0], 0, atol=1e-3)  # Γ acoustic
    assert not has_imaginary_modes(freqs)
    assert 6 < freqs.max() < 9  # Cu: ~7 THz maximum


def test_imaginary_mode_rules():
    ok = np.array([[-0.005, 0.0, 0.001, 5.0], [0.5, 0.6, 0.7, 5.0]])
    assert not has_imaginary_modes(ok)
    gamma_acoustic = ok.copy()
    gamma_acoustic[0, 0] = -0.02  # below -0.01 THz
    assert has_imaginary_modes(gamma_acoustic)
    gamma_optical = ok.copy()
    gamma_optical[0, 3] = -1e-6  # optical at Γ: strictly < 0
    assert has_imaginary_modes(gamma_optical)
    elsewhere = ok.copy()
    elsewhere[1, 0] = -1e-6  # any mode at q != Γ: strictly < 0
    assert has_imaginary_modes(elsewhere)
    assert has_imaginary_modes(np.full((2, 4), np.nan))


def test_gate_order():
    assert gate(False, False).status == "ok"
    assert gate(True, True).status == "imaginary_modes"
    assert gate(False, True).status == "broken_symmetry"
    assert gate(False, True, allow_broken_symmetry=True).open
