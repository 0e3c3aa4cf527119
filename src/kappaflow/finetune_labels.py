"""Fine-tuning labels (PROTOCOL §12): labelling exported frames with a model, and checking
labels from a DFT code (extxyz, or phono3py force sets) frame by frame before training.

Every refusal is a :class:`LabelError` naming the file and the frame."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from kappaflow.finetune import (
    DISP_ATOM_KEY,
    DISP_KEY,
    ENERGY_KEY,
    FORCES_KEY,
    ID_KEY,
    KIND_KEY,
    STRESS_KEY,
    flat_displacements,
    tag_frame,
)

#: |F| above this (eV/Å) is taken as a unit mix-up, |E|/atom above this (eV) likewise
MAX_FORCE = 100.0
MAX_ENERGY_PER_ATOM = 1000.0
MAX_STRESS = 1.0  # eV/Å^3 (160 GPa): larger is GPa/kbar given as eV/Å^3
POSITION_TOL = 1e-4  # Å, labelled vs exported positions


class LabelError(ValueError):
    """Labels that cannot be used; the message names the file and frame."""


def label_frames(frames: Iterable[Atoms], calc, with_stress: bool = False) -> list[Atoms]:
    """Label exported frames with an ASE calculator (a stand-in for DFT in tests, or a
    teacher model): energy and forces (and stress) under mace's REF_ keys."""
    out = []
    for at in frames:
        a = at.copy()
        a.calc = calc
        a.info[ENERGY_KEY] = float(a.get_potential_energy())
        a.arrays[FORCES_KEY] = np.asarray(a.get_forces(), dtype=float)
        if with_stress:
            a.info[STRESS_KEY] = np.asarray(a.get_stress(voigt=False), dtype=float)
        a.calc = None
        out.append(a)
    return out


# ----------------------------------------------------------------------------- labels


def _frame_labels(at: Atoms) -> tuple[float | None, np.ndarray | None]:
    """(energy, forces) from kappaflow's REF_ keys, common info/array keys, or an ASE
    SinglePointCalculator (how ase.io reads energy=/forces= columns)."""
    energy = at.info.get(ENERGY_KEY, at.info.get("energy", at.info.get("dft_energy")))
    forces = None
    for key in (FORCES_KEY, "forces", "dft_forces"):
        if key in at.arrays:
            forces = np.asarray(at.arrays[key], dtype=float)
            break
    if at.calc is not None:
        results = getattr(at.calc, "results", {})
        if forces is None and "forces" in results:
            forces = np.asarray(results["forces"], dtype=float)
        if energy is None and "energy" in results:
            energy = results["energy"]
    return (None if energy is None else float(energy)), forces


def _frame_stress(at: Atoms, where: str) -> np.ndarray | None:
    """Stress as a 3x3 array in eV/Å^3 (REF_stress, stress, or the calculator), checked."""
    raw = at.info.get(STRESS_KEY, at.info.get("stress"))
    if raw is None and at.calc is not None:
        raw = getattr(at.calc, "results", {}).get("stress")
    if raw is None:
        return None
    s = np.asarray(raw, dtype=float)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif s.shape == (9,):
        s = s.reshape(3, 3)
    if s.shape != (3, 3):
        raise LabelError(f"{where}: stress has shape {s.shape}, expected 3x3 or Voigt 6")
    if not np.all(np.isfinite(s)):
        raise LabelError(f"{where}: stress contains NaN or inf")
    if np.abs(s).max() > MAX_STRESS:
        raise LabelError(
            f"{where}: |stress| up to {np.abs(s).max():.3g} — stress must be eV/Å^3 "
            "(GPa / 160.2, kbar / 1602)"
        )
    return s


def validate_labels(
    labelled: Sequence[Atoms], exported: Sequence[Atoms] | None, source: str
) -> list[Atoms]:
    """Check labels frame by frame and return frames with mace's REF_ keys set.

    Matching: by the exported id (``kf_id``) when the frames carry it, else by order;
    species and positions must equal the exported frame (POSITION_TOL Å, modulo the
    lattice). Refused, naming file and frame: missing or mis-shaped forces, NaN/inf,
    |F| > MAX_FORCE eV/Å or |E|/atom > MAX_ENERGY_PER_ATOM eV (units), forces that do not
    restore the displaced atom in most displaced frames (a sign error: gradients instead
    of forces).
    """
    by_id = {a.info[ID_KEY]: a for a in exported} if exported is not None else {}
    out: list[Atoms] = []
    restoring = []
    for i, at in enumerate(labelled):
        where = f"{source}, frame {i}"
        ref = None
        if exported is not None:
            key = at.info.get(ID_KEY)
            if key is not None:
                if key not in by_id:
                    raise LabelError(f"{where}: id {key!r} is not among the exported structures")
                ref = by_id[key]
            elif i < len(exported):
                ref = exported[i]
            else:
                raise LabelError(
                    f"{where}: more labelled frames ({len(labelled)}) than exported "
                    f"({len(exported)}) and no {ID_KEY} to match them"
                )
            where += f" ({ref.info[ID_KEY]})"
            if at.get_chemical_symbols() != ref.get_chemical_symbols():
                raise LabelError(f"{where}: atoms differ from the exported structure")
            if not np.allclose(at.cell[:], ref.cell[:], atol=POSITION_TOL):
                raise LabelError(f"{where}: cell differs from the exported structure")
            d = at.get_scaled_positions(wrap=False) - ref.get_scaled_positions(wrap=False)
            d -= np.round(d)
            if np.abs(d @ ref.cell[:]).max() > POSITION_TOL:
                raise LabelError(
                    f"{where}: positions differ from the exported structure by up to "
                    f"{np.abs(d @ ref.cell[:]).max():.3g} Å"
                )
        energy, forces = _frame_labels(at)
        if forces is None:
            raise LabelError(f"{where}: no forces (looked for {FORCES_KEY}, forces, calculator)")
        if forces.shape != (len(at), 3):
            raise LabelError(f"{where}: forces have shape {forces.shape}, expected ({len(at)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise LabelError(f"{where}: forces contain NaN or inf")
        fmax = float(np.abs(forces).max())
        if fmax > MAX_FORCE:
            raise LabelError(
                f"{where}: |F| up to {fmax:.3g} — forces must be eV/Å (Ha/Bohr x 51.42, "
                "Ry/Bohr x 25.71, kcal/mol/Å / 23.06)"
            )
        if energy is not None:
            if not np.isfinite(energy):
                raise LabelError(f"{where}: energy is NaN or inf")
            if abs(energy) / len(at) > MAX_ENERGY_PER_ATOM:
                raise LabelError(
                    f"{where}: {energy / len(at):.4g} per atom — energies must be eV "
                    "(not meV, kJ/mol)"
                )
        src = ref if ref is not None else at
        if DISP_ATOM_KEY in src.info and DISP_KEY in src.info:
            u = np.asarray(src.info[DISP_KEY], dtype=float)
            restoring.append(float(forces[int(src.info[DISP_ATOM_KEY])] @ u) < 0)
        clean = Atoms(at.get_chemical_symbols(), cell=at.cell[:], positions=at.positions, pbc=True)
        clean.info.update({k: v for k, v in src.info.items() if k.startswith("kf_")})
        clean.info["config_type"] = src.info.get(KIND_KEY, at.info.get("config_type", "Default"))
        if energy is not None:
            clean.info[ENERGY_KEY] = energy
        stress = _frame_stress(at, where)
        if stress is not None:
            clean.info[STRESS_KEY] = stress
        clean.arrays[FORCES_KEY] = forces
        out.append(clean)
    if restoring and np.mean(restoring) < 0.5:
        raise LabelError(
            f"{source}: in {len(restoring) - sum(restoring)} of {len(restoring)} displaced frames "
            "the force on the displaced atom points along the displacement: forces must be "
            "-dE/dx (a sign error, or gradients given as forces)"
        )
    return out


def frames_from_phono3py(ph3, source: str, material_id: str | None = None) -> list[Atoms]:
    """Force-only training frames from a phono3py object loaded with forces
    (phono3py_params.yaml or phono3py_disp.yaml + FORCES_FC3/FORCES_FC2, as PhononDB
    distributes its DFT force sets). Energies: ``supercell_energies`` when present."""
    from kappaflow.phonons import to_ase_atoms

    material_id = material_id or source
    frames: list[Atoms] = []
    sets = [
        ("fc3", ph3.supercells_with_displacements, ph3.dataset),
        ("fc2", ph3.phonon_supercells_with_displacements, ph3.phonon_dataset),
    ]
    for kind, cells, dataset in sets:
        if not dataset or cells is None:
            continue
        forces = _dataset_forces(dataset, kind)
        if forces is None:
            continue
        energies = dataset.get("supercell_energies")
        disps = flat_displacements(dataset, kind)
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            if i >= len(forces):
                raise LabelError(f"{source}: {kind} set has {len(forces)} force sets, {i} needed")
            at = tag_frame(to_ase_atoms(cell), material_id, f"{kind}_disp", i)
            at.arrays[FORCES_KEY] = np.asarray(forces[i], dtype=float)
            at.info[DISP_ATOM_KEY] = int(disps[i][0])
            at.info[DISP_KEY] = disps[i][1]
            if energies is not None:
                at.info[ENERGY_KEY] = float(energies[i])
            frames.append(at)
    if not frames:
        raise LabelError(f"{source}: no displaced supercells with forces")
    return frames


def _dataset_forces(dataset: dict[str, Any], kind: str) -> np.ndarray | None:
    if "forces" in dataset:
        return np.asarray(dataset["forces"])
    firsts = dataset.get("first_atoms", [])
    rows = [d.get("forces") for d in firsts]
    if kind == "fc3":
        rows += [d2.get("forces") for d1 in firsts for d2 in d1.get("second_atoms", [])]
    if not rows or any(r is None for r in rows):
        return None
    return np.asarray(rows)
