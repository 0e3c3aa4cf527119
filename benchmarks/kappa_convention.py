"""κ of one results folder in both conventions, and phono3py 3.19.4 on the same files (issue 17).

    KAPPAFLOW_REFERENCE_DIR=../shared/reference/phonondb-pbe \\
        python benchmarks/kappa_convention.py results/chgnet-0.3.0/mp-2534 [--no-oracle]

Reads relaxed.extxyz, fc2.hdf5 and fc3.hdf5 of a kappaflow results folder (workflow or
``kappaflow kappa``), runs the κ step once at 300 K (phono3py 4.10, the material's mesh) and
prints one JSON object: κ_TOT/κ_P/κ_C (Voigt average) in the reference convention (``ref_``)
and phono3py 4.10's own SMM19 (``p4_``: kappaflow before issue 17), their SRE/SRME against
the noNAC DFT reference and the published CHGNet value where they exist, the time of the
reference assembly (``t_velocity_operator_s``), and, unless ``--no-oracle``, phono3py 3.19.4
(``conductivity_type="wigner"`` in its own venv, ``KAPPAFLOW_PHONO3PY3_VENV``, made by
tests/test_wigner_oracle.py) with its own linewidths (``p3_``) and with kappaflow's
(``given_max_rel_dev``). Written also to ``<folder>/convention_measure.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the oracle helpers of test_wigner_oracle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--no-oracle", action="store_true")
    args = parser.parse_args()
    import test_wigner_oracle as oracle

    from kappaflow import storage
    from kappaflow.conductivity import (
        compute_kappa,
        kappa_ave,
        reference_velocity_products,
        split_mode_kappa,
    )
    from kappaflow.metrics import srd, srme
    from kappaflow.phonons import init_phono3py
    from kappaflow.settings import Phono3pySettings
    from kappaflow.steps.common import material_of

    out = args.folder
    atoms, record = storage.read_structure(out / "relaxed.extxyz")
    material = material_of(record)
    settings = Phono3pySettings()
    ph3 = init_phono3py(atoms, material, settings, displace=False)
    fc2, fc3 = storage.read_fc(out / "fc2.hdf5", 2), storage.read_fc(out / "fc3.hdf5", 3)
    t0 = time.perf_counter()
    ref = compute_kappa(ph3, fc2, fc3, [300.0], settings)
    row = {"mp_id": material.material_id, "desc": material.desc,
           "mesh": [int(x) for x in ph3.mesh_numbers],
           "t_kappa_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    tc = ph3.thermal_conductivity
    p4_p, p4_c = split_mode_kappa(np.asarray(tc.mode_kappa_matrix)[0], ref.frequencies,
                                  ref.heat_capacity)  # fmt: skip
    n = float(np.prod(tc.mesh_numbers))
    for name, value in (("ref_TOT", ref.kappa_TOT_RTA), ("ref_P", ref.kappa_P_RTA),
                        ("ref_C", ref.kappa_C), ("p4_TOT", np.asarray(tc.kappa)[0]),
                        ("p4_P", p4_p.sum(axis=(1, 2)) / n), ("p4_C", p4_c.sum(axis=(1, 2)) / n)):  # fmt: skip
        row[name] = float(kappa_ave(value)[0])
    t0 = time.perf_counter()
    reference_velocity_products(ph3.phph_interaction, ref.grid_points)
    row["t_velocity_operator_s"] = round(time.perf_counter() - t0, 2)
    ref_dir = Path(
        os.environ.get("KAPPAFLOW_REFERENCE_DIR", REPO.parent / "shared/reference/phonondb-pbe")
    )
    dft = pd.read_json(ref_dir / "kappas_phononDB_PBE_noNAC.json.gz").set_index("mp_id")
    if material.material_id in dft.index:
        d = dft.loc[material.material_id]
        k_dft = float(np.asarray(d["kappa_TOT_ave"])[0])
        mode_dft, w = np.asarray(d["mode_kappa_TOT_ave"])[0], np.asarray(d["weights"])
        for name, mode in (("ref", ref.mode_kappa_TOT_ave[0]), ("p4", kappa_ave(p4_p + p4_c)[0])):
            k = row[name + "_TOT"]
            row[name + "_SRE"] = abs(srd(k, k_dft))
            row[name + "_SRME"] = srme(mode, mode_dft, w, k, k_dft)
        row["DFT_noNAC"] = k_dft
    published = REPO.parent / "shared/reference/published/kappa/CHGNet.csv"
    if published.exists():
        pub = pd.read_csv(published).set_index("mp_id")
        if material.material_id in pub.index:
            row["published_CHGNet"] = float(pub.loc[material.material_id, "kappa_TOT_ave"])
    if not args.no_oracle:
        work = out / "oracle"
        work.mkdir(exist_ok=True)
        inp = oracle.oracle_input(ph3, out / "fc2.hdf5", out / "fc3.hdf5", ph3.mesh_numbers,
                                  [300.0], settings.boundary_mfp,
                                  oracle.write_linewidths(ref, work / "linewidths.npz"))  # fmt: skip
        t0 = time.perf_counter()
        o = oracle.run_oracle(oracle._venv_python(oracle._venv_dir()), inp, work)
        row["t_oracle_s"] = round(time.perf_counter() - t0, 1)
        for name in ("TOT", "P", "C"):
            key = {"TOT": "kappa_TOT_RTA", "P": "kappa_P_RTA", "C": "kappa_C"}[name]
            row["p3_" + name] = float(kappa_ave(o["own_" + key])[0])
        dev = {k: float(np.max(np.abs(getattr(ref, k) - o["given_" + k]))
                        / np.max(np.abs(o["given_" + k])))
               for k in ("kappa_TOT_RTA", "kappa_P_RTA", "kappa_C")}  # fmt: skip
        row["given_max_rel_dev"] = dev
    text = json.dumps(row, indent=1)
    print(text)
    (out / "convention_measure.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
