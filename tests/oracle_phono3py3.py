"""phono3py 3.x Wigner RTA oracle, run by the python of a separate phono3py-3 venv.

Not a test module (it cannot import kappaflow): ``tests/test_wigner_oracle.py`` runs it as

    <venv>/bin/python oracle_phono3py3.py input.json output.npz

``input.json``: ``numbers``, ``lattice`` (Å, rows), ``positions`` (reduced) of the unit cell;
``supercell_matrix``, ``phonon_supercell_matrix``, ``primitive_matrix``, ``symprec``, ``mesh``,
``temperatures``, ``boundary_mfp`` (µm), ``fc2`` and ``fc3`` (phono3py hdf5 files, as
kappaflow writes them) and optionally ``linewidths`` (an npz with ``gamma`` (T, q, s) and
``gamma_isotope`` (q, s), THz, on the irreducible grid points).

It runs the reference's settings (PROTOCOL §5): ``conductivity_type="wigner"`` RTA, isotope
scattering on, ``boundary_mfp``, tetrahedron method, C backend, ``symmetrize_fc3q=False``,
once with phono3py 3.x's own linewidths (prefix ``own_``) and, when ``linewidths`` is given,
once more with those linewidths instead (prefix ``given_``): ph-ph and isotope linewidths
set on the conductivity object, everything else computed by phono3py 3.x.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import phono3py
import phonopy
from phono3py import Phono3py
from phono3py.conductivity.wigner_rta import ConductivityWignerRTA
from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5
from phonopy.structure.atoms import PhonopyAtoms


def _wigner(ph3: Phono3py, inp: dict, linewidths: dict | None) -> dict[str, np.ndarray]:
    """The loop of phono3py 3.x ``get_thermal_conductivity_RTA`` (conductivity_type wigner)."""
    br = ConductivityWignerRTA(
        ph3.phph_interaction,
        temperatures=np.asarray(inp["temperatures"], dtype=float),
        sigmas=[None],
        is_isotope=True,
        boundary_mfp=inp["boundary_mfp"],
        is_kappa_star=True,
    )
    if linewidths is not None:
        br.gamma = np.asarray(linewidths["gamma"], dtype=float)[None].copy()
        br.gamma_isotope = np.asarray(linewidths["gamma_isotope"], dtype=float)[None].copy()
    for _ in br:
        pass
    br.set_kappa_at_sigmas()
    comps = br._conductivity_components
    return {
        "kappa_TOT_RTA": br.kappa_TOT_RTA[0],
        "kappa_P_RTA": br.kappa_P_RTA[0],
        "kappa_C": br.kappa_C[0],
        "mode_kappa_P_RTA": br.mode_kappa_P_RTA[0],
        "mode_kappa_C": br.mode_kappa_C[0],  # (T, q, s, s', 6) pair matrix
        "gamma": br.gamma[0],
        "gamma_isotope": br.gamma_isotope[0],
        "frequencies": br.frequencies,
        "heat_capacity": br.mode_heat_capacities,
        "group_velocities": br.group_velocities,
        "gv_by_gv_operator": comps.gv_by_gv_operator,
        "qpoints": br.qpoints,
        "weights": br.grid_weights,
        "grid_points": br.grid_points,
        "n_sampling": np.asarray(br.number_of_sampling_grid_points),
    }


def main(input_path: str, output_path: str) -> None:
    inp = json.loads(open(input_path).read())
    cell = PhonopyAtoms(
        numbers=inp["numbers"], cell=inp["lattice"], scaled_positions=inp["positions"]
    )
    ph3 = Phono3py(
        cell,
        supercell_matrix=inp["supercell_matrix"],
        phonon_supercell_matrix=inp["phonon_supercell_matrix"],
        primitive_matrix=inp["primitive_matrix"],
        symprec=inp["symprec"],
    )
    ph3.fc2 = read_fc2_from_hdf5(inp["fc2"])
    ph3.fc3 = read_fc3_from_hdf5(inp["fc3"])
    ph3.mesh_numbers = inp["mesh"]
    ph3.init_phph_interaction(symmetrize_fc3q=False)
    out = {f"own_{k}": v for k, v in _wigner(ph3, inp, None).items()}
    if inp.get("linewidths"):
        given = dict(np.load(inp["linewidths"]))
        out.update({f"given_{k}": v for k, v in _wigner(ph3, inp, given).items()})
    out["phono3py_version"] = np.asarray(phono3py.__version__)
    out["phonopy_version"] = np.asarray(phonopy.__version__)
    np.savez(output_path, **{k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
