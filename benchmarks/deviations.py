"""κ deviation and time saved by the two opt-in fc3 approximations (protocol deviations).

    python benchmarks/deviations.py --model chgnet-0.3.0 --material mp-22862 --work /tmp/dev \\
        [--cutoff 4.0 5.0] [--random 64 128] [--threads 2] [--reference-dir DIR]

``WORK/base`` holds the full protocol (``kappaflow kappa``; reused when complete). Then, in
one process with the model loaded once, the fc3 step is re-run for the systematic set
(timing only) and for each variant (``phono3py.fc3_cutoff_pair_distance`` = each --cutoff,
``phono3py.fc3_random_displacements`` = each --random, symfc fit), each variant followed by
the κ step on the material's own q-mesh. Prints one line per variant: supercells
evaluated, force and fit seconds, κ(300 K) and its deviation from the systematic κ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--material", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cutoff", type=float, nargs="*", default=[4.0])
    ap.add_argument("--random", type=int, nargs="*", default=[128])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mesh", type=int, nargs=3, help="coarser q-mesh than the material's own")
    ap.add_argument("--reference-dir")
    ap.add_argument(
        "--reuse-kappa",
        action="store_true",
        help="re-time the fc3 steps only; take κ from an earlier run's WORK/<variant>/kappa.json",
    )
    args = ap.parse_args(argv)

    sys.path.insert(0, str(SRC))
    from kappaflow.runtime import configure_threads

    configure_threads(args.threads)
    from kappaflow import storage
    from kappaflow.calculators import load_calculator, model_spec
    from kappaflow.settings import KappaSettings, Phono3pySettings
    from kappaflow.steps.anharmonic import run_fc3
    from kappaflow.steps.kappa import run_kappa

    work = Path(args.work)
    base = work / "base"
    if not (base / "kappa.json").exists():
        cmd = [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", args.model]
        cmd += ["--material", args.material, "--out", str(base), "--threads", str(args.threads)]
        if args.reference_dir:
            cmd += ["--reference-dir", args.reference_dir]
        if args.mesh:
            cmd += ["--mesh", *map(str, args.mesh)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    base_record = storage.read_json(base / "kappa.json")
    k_base = base_record["kappa_TOT_ave"][0]
    spec = model_spec(args.model)
    loaded = load_calculator(spec, device="cpu")
    configure_threads(args.threads)

    variants = [("systematic", {})]
    variants += [(f"cutoff={c:g}", {"fc3_cutoff_pair_distance": c}) for c in args.cutoff]
    variants += [(f"random={n}", {"fc3_random_displacements": n}) for n in args.random]
    print(
        f"model={args.model} material={args.material} ({base_record['name']}) "
        f"q_mesh={base_record['q_mesh']} threads={args.threads} kappa_systematic={k_base:.5f}",
        flush=True,
    )
    rows = []
    for name, extra in variants:
        vdir = work / name.replace("=", "-")
        vdir.mkdir(parents=True, exist_ok=True)
        for f in ("relaxed.extxyz", "phonons.json", "fc2.hdf5"):  # the same fc2 for all
            shutil.copy(base / f, vdir / f)
        settings = Phono3pySettings(mesh=tuple(args.mesh) if args.mesh else None, **extra)
        t0 = time.perf_counter()
        fc3 = run_fc3(
            relaxed=vdir / "relaxed.extxyz",
            phonons_json=vdir / "phonons.json",
            model=spec,
            settings=settings,
            out_fc3=vdir / "fc3.hdf5",
            out_forces=vdir / "forces_fc3.hdf5",
            loaded=loaded,
        )
        t_fc3 = time.perf_counter() - t0
        info = fc3["force_evaluation"]
        if name == "systematic":
            kappa = k_base  # the full protocol's own κ (WORK/base)
            t_kappa = base_record["timing_s"].get("kappa", float("nan"))
        elif args.reuse_kappa and (vdir / "kappa.json").exists():
            rec = storage.read_json(vdir / "kappa.json")
            kappa, t_kappa = rec["kappa_TOT_ave"][0], rec["timing_s"]["kappa"]
        else:
            rec = run_kappa(
                relaxed=vdir / "relaxed.extxyz",
                phonons_json=vdir / "phonons.json",
                fc2_path=vdir / "fc2.hdf5",
                fc3_path=vdir / "fc3.hdf5",
                settings=KappaSettings((300.0,), settings),
                out_hdf5=vdir / "kappa.hdf5",
                out_record=vdir / "kappa.json",
                fc3_forces=vdir / "forces_fc3.hdf5",
            )
            assert rec["protocol_deviations"] == settings.protocol_deviations()
            kappa, t_kappa = rec["kappa_TOT_ave"][0], rec["timing_s"]["kappa"]
        row = {
            "variant": name,
            "supercells": info["structures"],
            "forces_s": fc3["timing_s"]["fc3_forces"],
            "fit_s": fc3["timing_s"]["fc3_fit"],
            "fc3_step_s": t_fc3,
            "kappa_s": t_kappa,
            "kappa": kappa,
            "dev": (kappa - k_base) / k_base if kappa is not None else float("nan"),
        }
        rows.append(row)
        print(
            f"{name:>14}: {row['supercells']:5d} supercells, forces {row['forces_s']:7.1f} s, "
            f"fit {row['fit_s']:6.1f} s, fc3 step {row['fc3_step_s']:7.1f} s, "
            f"κ step {row['kappa_s']:6.1f} s, κ(300 K) {kappa:.5f} W/mK ({row['dev']:+.2%})",
            flush=True,
        )
    ref = rows[0]["fc3_step_s"]
    for row in rows[1:]:
        print(
            f"{row['variant']}: fc3_step_time_saved={1 - row['fc3_step_s'] / ref:+.1%} "
            f"kappa_deviation={row['dev']:+.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
