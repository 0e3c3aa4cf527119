"""Materials: reference frames -> MaterialSpec rows (the workflow's sample sheet).

A frame of the PhononDB-PBE extxyz carries ``mp_id``, ``name``, ``symm.no``,
``fc2_supercell``, ``fc3_supercell``, ``q_mesh`` (and ``primitive_matrix`` for rs/zb).
A user frame without these keys gets defaults (:class:`StructureDefaults`); which
defaults were used is recorded in ``MaterialSpec.defaults_used``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import spglib
from ase import Atoms

from kappaflow.settings import StructureDefaults

#: the dataset's structure types by space group (rock salt, zincblende, wurtzite); other
#: structures are labelled ``sg<number>``
STRUCTURE_TYPES = {225: "rs", 216: "zb", 186: "wz"}
MATERIAL_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"
#: Å; two atoms closer than this are the same place (the shortest bond, H2, is 0.74 Å)
MIN_DISTANCE = 0.5
#: Å; a gap of vacuum wider than this along a lattice direction (the planes of atoms
#: projected on its normal) separates the atoms: no bulk solid has one (the widest of the
#: 103 reference solids is 3.8 Å, RbI; bcc Cs 4.3 Å, graphite 3.4 Å), a slab, a wire or
#: isolated atoms do
MAX_VACUUM_GAP = 6.0


class MaterialError(ValueError):
    """Unknown material id or an invalid structure frame (message names it)."""


# ------------------------------------------------------------------ frame checks


def frame_problem(atoms: Atoms) -> str | None:
    """Why a frame cannot be a crystal structure at all (an input error), or None: no
    atoms, an atom without an element, a non-finite cell or position, a cell without
    volume, atoms on top of each other. A cell that is not periodic in all three
    directions is a recorded failure of the material instead (:func:`periodicity_problem`)."""
    if len(atoms) == 0:
        return "it has no atoms"
    numbers = np.asarray(atoms.numbers)
    if np.any(numbers <= 0):
        j = int(np.flatnonzero(numbers <= 0)[0])
        return f"atom {j} has no element (symbol {atoms.get_chemical_symbols()[j]!r})"
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.all(np.isfinite(cell)):
        return f"the cell has non-finite entries {cell.tolist()}"
    pos = np.asarray(atoms.positions, dtype=float)
    if not np.all(np.isfinite(pos)):
        j = int(np.flatnonzero(~np.all(np.isfinite(pos), axis=1))[0])
        return f"atom {j} ({atoms[j].symbol}) has a non-finite position {pos[j].tolist()}"
    volume = abs(float(np.linalg.det(cell)))
    if volume < 1e-6:
        return (
            f"the cell {cell.tolist()} has no volume: a crystal needs three lattice vectors "
            '(Lattice="ax ay az bx by bz cx cy cz" in the comment line)'
        )
    close = closest_pair(atoms, MIN_DISTANCE)
    if close is not None:
        i, j, d = close
        what = f"atom {i} and its own periodic image" if i == j else f"atoms {i} and {j}"
        return f"{what} are {d:.3f} Å apart (closer than {MIN_DISTANCE} Å: the same place)"
    return None


def closest_pair(atoms: Atoms, cutoff: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms (minimum image; an atom and its own image when a lattice
    vector is the shortest) nearer than ``cutoff``, or None."""
    from ase.geometry import get_distances, minkowski_reduce

    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell[:], dtype=float)
    if pbc.any():
        reduced, _ = minkowski_reduce(cell, pbc)
        lengths = np.linalg.norm(reduced[pbc], axis=1)
        if lengths.min() < cutoff:
            return 0, 0, float(lengths.min())
    if len(atoms) < 2:
        return None
    if len(atoms) > 200:  # a cell list is faster than all pairs
        from ase.neighborlist import neighbor_list

        i, j, dist = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
        if len(dist) == 0:
            return None
        k = int(np.argmin(dist))
        return int(min(i[k], j[k])), int(max(i[k], j[k])), float(dist[k])
    _, d = get_distances(atoms.positions, cell=cell, pbc=pbc)
    d[np.diag_indices_from(d)] = np.inf
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return (int(min(i, j)), int(max(i, j)), float(d[i, j])) if d[i, j] < cutoff else None


def periodicity_problem(atoms: Atoms, max_gap: float = MAX_VACUUM_GAP) -> tuple[str, str] | None:
    """(status, reason) of a cell that cannot give a bulk κ, or None: not periodic in
    all three directions (``non_periodic``), or atoms separated by a vacuum gap wider
    than ``max_gap`` Å along a lattice direction (``vacuum_gap``: isolated atoms, a wire,
    a slab)."""
    from kappaflow.gates import NON_PERIODIC, VACUUM_GAP

    pbc = [bool(p) for p in atoms.pbc]
    if not all(pbc):
        return NON_PERIODIC, (
            f"the cell is periodic along {sum(pbc)} of 3 lattice vectors (pbc {pbc}): "
            "κ is the conductivity of a 3-D periodic crystal"
        )
    gaps = vacuum_gaps(atoms)
    worst = int(np.argmax(gaps))
    if gaps[worst] > max_gap:
        wide = [f"a{k + 1}" for k in range(3) if gaps[k] > max_gap]
        return VACUUM_GAP, (
            f"{gaps[worst]:.2f} Å of vacuum separate the atoms along {', '.join(wide)} "
            f"(more than {max_gap:g} Å: isolated atoms, a wire or a slab, not a bulk solid)"
        )
    return None


def vacuum_gaps(atoms: Atoms) -> np.ndarray:
    """The widest empty slab (Å) between planes of atoms along each lattice direction:
    fractional coordinates sorted, largest spacing (periodic) times the interplanar
    distance 1/|b_i|."""
    frac = np.mod(np.asarray(atoms.get_scaled_positions(wrap=False), dtype=float), 1.0)
    recip = np.linalg.inv(np.asarray(atoms.cell[:], dtype=float)).T
    spacing = 1.0 / np.linalg.norm(recip, axis=1)
    gaps = np.empty(3)
    for k in range(3):
        s = np.sort(frac[:, k])
        gaps[k] = np.max(np.diff(np.concatenate([s, [s[0] + 1.0]]))) * spacing[k]
    return gaps


@dataclass(frozen=True)
class MaterialSpec:
    """One material: identifiers and the phonon settings it is computed with."""

    material_id: str
    name: str
    spacegroup: int
    structure_type: str
    fc2_supercell: tuple[int, int, int]
    fc3_supercell: tuple[int, int, int]
    q_mesh: tuple[int, int, int]
    defaults_used: tuple[str, ...] = field(default=())

    @property
    def desc(self) -> str:
        """k_SRME's ``desc`` label, e.g. ``NaCl-rs``."""
        return f"{self.name}-{self.structure_type}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
            d[k] = list(d[k])
        return d


def type_group(structure_type: str) -> str:
    """The panel/group a structure type falls in: rs, zb, wz, or ``other`` (``sg<n>``)."""
    return structure_type if structure_type in STRUCTURE_TYPES.values() else "other"


def spacegroup_number(atoms: Atoms, symprec: float = 1e-5) -> int | None:
    """spglib space-group number (None when spglib finds no symmetry or the cell is not finite)."""
    if not (np.all(np.isfinite(atoms.cell[:])) and np.all(np.isfinite(atoms.positions))):
        return None  # spglib segfaults on NaN
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    return None if dataset is None else int(dataset.number)


def reduced_formula(atoms: Atoms) -> str:
    """Reduced formula, metals first (GaN, NaCl)."""
    return atoms.symbols.formula.reduce()[0].format("metal")


def _diagonal(value: Any, key: str, material: str) -> tuple[int, int, int]:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise MaterialError(
            f"{material}: {key} must be 3 positive integers (or a diagonal 3x3), got {value!r}"
        ) from None
    if arr.shape == (3, 3):
        if np.any(np.abs(arr - np.diag(np.diag(arr))) > 0):
            raise MaterialError(f"{material}: {key} must be diagonal, got {arr.tolist()}")
        arr = np.diag(arr)
    if (
        arr.shape != (3,)
        or not np.all(np.isfinite(arr))
        or np.any(arr < 1)
        or np.any(arr != np.round(arr))
    ):
        raise MaterialError(f"{material}: {key} must be 3 positive integers, got {value!r}")
    return tuple(int(x) for x in arr)  # type: ignore[return-value]


def supercell_for_length(cell: np.ndarray, min_length: float) -> tuple[int, int, int]:
    """Smallest diagonal multiples n_i with n_i·|a_i| >= ``min_length`` (lattice-vector lengths)."""
    lengths = np.linalg.norm(np.asarray(cell, dtype=float), axis=1)
    return tuple(max(1, math.ceil(min_length / a - 1e-9)) for a in lengths)  # type: ignore[return-value]


def primitive_cell(atoms: Atoms, symprec: float = 1e-5) -> np.ndarray:
    """Lattice of the standardised primitive cell (for the q-mesh density)."""
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    prim = spglib.standardize_cell(cell, to_primitive=True, symprec=symprec)
    return np.asarray(atoms.cell[:] if prim is None else prim[0])


def q_mesh_for_length(prim_cell: np.ndarray, length: float) -> tuple[int, int, int]:
    """``max(1, round(length * |b_i|))`` with reciprocal vectors b without 2π."""
    recip = np.linalg.inv(np.asarray(prim_cell, dtype=float)).T
    return tuple(max(1, round(length * np.linalg.norm(b))) for b in recip)  # type: ignore[return-value]


def material_from_frame(
    atoms: Atoms,
    index: int,
    defaults: StructureDefaults | None = None,
    overrides: dict[str, Any] | None = None,
) -> MaterialSpec:
    """Build the MaterialSpec of one frame; dataset keys win, then overrides, then defaults."""
    defaults = defaults or StructureDefaults()
    info = dict(atoms.info)
    info.update(overrides or {})
    formula = reduced_formula(atoms)
    material_id = str(info.get("mp_id") or info.get("material_id") or f"{formula}-{index}")
    if not re.fullmatch(MATERIAL_ID_PATTERN, material_id):
        raise MaterialError(f"frame {index}: material id {material_id!r} is not a valid file name")
    used: list[str] = []
    spg = info.get("symm.no")
    if spg is None:
        spg = spacegroup_number(atoms) or 1
        used.append("symm.no")
    elif not _is_space_group(spg):
        raise MaterialError(
            f"frame {index} ({material_id}): symm.no must be a space-group number 1-230, "
            f"got {spg!r}"
        )
    if "fc2_supercell" in info:
        fc2 = _diagonal(info["fc2_supercell"], "fc2_supercell", material_id)
    else:
        fc2 = supercell_for_length(atoms.cell[:], defaults.fc2_min_length)
        used.append("fc2_supercell")
    if "fc3_supercell" in info:
        fc3 = _diagonal(info["fc3_supercell"], "fc3_supercell", material_id)
    else:
        fc3 = supercell_for_length(atoms.cell[:], defaults.fc3_min_length)
        used.append("fc3_supercell")
    if "q_mesh" in info:
        mesh = _diagonal(info["q_mesh"], "q_mesh", material_id)
    else:
        mesh = q_mesh_for_length(primitive_cell(atoms), defaults.q_mesh_length)
        used.append("q_mesh")
    name = str(info.get("name") or formula)
    return MaterialSpec(
        material_id=material_id,
        name=name,
        spacegroup=int(spg),
        # rs/zb/wz label the dataset's frames; other structures are labelled by space group
        structure_type=(
            STRUCTURE_TYPES.get(int(spg), f"sg{int(spg)}") if "symm.no" in info else f"sg{int(spg)}"
        ),
        fc2_supercell=fc2,
        fc3_supercell=fc3,
        q_mesh=mesh,
        defaults_used=tuple(used),
    )


def _is_space_group(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool) and number.is_integer() and 1 <= number <= 230


def materials_table(
    frames: list[Atoms],
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, MaterialSpec]:
    """All frames as ``{material_id: MaterialSpec}`` in file order; ids must be unique."""
    overrides = overrides or {}
    table: dict[str, MaterialSpec] = {}
    for i, atoms in enumerate(frames):
        mid = str(atoms.info.get("mp_id") or atoms.info.get("material_id") or "")
        spec = material_from_frame(atoms, i, defaults, overrides.get(mid))
        if spec.material_id in table:
            raise MaterialError(f"duplicate material id {spec.material_id!r} (frame {i})")
        table[spec.material_id] = spec
    unknown = sorted(set(overrides) - set(table))
    if unknown:
        raise MaterialError(f"material_overrides name unknown material(s): {', '.join(unknown)}")
    return table


def select_materials(table: dict[str, MaterialSpec], selection: str | list[str]) -> list[str]:
    """Resolve ``"all"`` or a list of material ids and/or structure types (rs, zb, wz).

    Keeps file order; an unknown id or type raises with the offending entries named.
    """
    if selection == "all":
        return list(table)
    if isinstance(selection, str):
        selection = [selection]
    types = {spec.structure_type for spec in table.values()}
    unknown = [s for s in selection if s not in table and s not in types]
    if unknown:
        raise MaterialError(
            f"config key 'materials': unknown material id(s) or structure type(s): "
            f"{', '.join(unknown)} (structure types here: {', '.join(sorted(types))})"
        )
    wanted = set(selection)
    return [m for m, spec in table.items() if m in wanted or spec.structure_type in wanted]


def frame_for(frames: list[Atoms], material_id: str) -> Atoms:
    """The frame of one material (a copy), by mp_id/material_id."""
    for i, atoms in enumerate(frames):
        mid = str(
            atoms.info.get("mp_id")
            or atoms.info.get("material_id")
            or f"{reduced_formula(atoms)}-{i}"
        )
        if mid == material_id:
            return atoms.copy()
    raise MaterialError(f"material {material_id!r} is not in the structures file")


def _canonical(value: Any) -> Any:
    """A frame's value as plain JSON (numpy arrays and scalars as lists and numbers)."""
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def frame_text(atoms: Atoms) -> str:
    """The canonical text of one frame: cell, pbc, every per-atom array (numbers,
    positions, masses where given, ...) and every info key, as sorted JSON with exact
    floats. It does not depend on the frame's place in its file, on the rest of the file,
    or on how ASE formats extxyz."""
    content = {
        "cell": np.asarray(atoms.cell[:], dtype=float),
        "pbc": [bool(x) for x in atoms.pbc],
        "arrays": dict(atoms.arrays),
        "info": dict(atoms.info),
    }
    return json.dumps(_canonical(content), sort_keys=True, separators=(",", ":"))


def frame_sha256(atoms: Atoms) -> str:
    """sha256 of :func:`frame_text`: what the relax job of this material is made from
    (the workflow's re-run trigger, and the CLI's record)."""
    return hashlib.sha256(frame_text(atoms).encode("utf-8")).hexdigest()
