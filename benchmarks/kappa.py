"""Overhead of kappaflow's κ step over a bare phono3py script on the same force constants.

Both run as fresh processes (a workflow job is one), alternating ``--repeats`` times:

* ``kappaflow``: ``kappaflow.steps.kappa.run_kappa`` — reads the relaxed structure, gate and fc files,
  runs the Wigner RTA (``transport_type="SMM19"``), splits populations/coherences, writes
  kappa.hdf5 + kappa.json;
* ``bare``: ``phono3py.load`` of the same phono3py_disp.yaml (C backend, as kappaflow's
  default), the same fc2/fc3 and q-mesh,
  ``run_thermal_conductivity(..., transport_type="SMM19", write_kappa=True)``.

The force constants come from ``kappaflow kappa`` (run once into ``--workdir`` if missing).
Prints each run's wall time and peak RSS, the medians, the largest relative difference of
κ_TOT between the two, and as its last line ``overhead_fraction=<(t_kf - t_bare) / t_bare>``.

    KAPPAFLOW_REFERENCE_DIR=../shared/reference/phonondb-pbe \\
        python benchmarks/kappa.py --material mp-22862 [--mesh 11 11 11] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KAPPAFLOW = """
import json, resource, sys
from kappaflow.runtime import configure_threads
configure_threads({threads})
from kappaflow.settings import KappaSettings, Phono3pySettings
from kappaflow.steps.kappa import run_kappa
w, out = {work!r}, {out!r}
mesh = {mesh!r}
rec = run_kappa(relaxed=w + "/relaxed.extxyz", phonons_json=w + "/phonons.json",
                fc2_path=w + "/fc2.hdf5", fc3_path=w + "/fc3.hdf5",
                settings=KappaSettings((300.0,), Phono3pySettings(mesh=mesh)),
                out_hdf5=out + "/kappa.hdf5", out_record=out + "/kappa.json")
print(json.dumps({{"kappa": rec["kappa_TOT_RTA"][0][:3],
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

BARE = """
import json, os, resource
os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "{threads}"
import phono3py
from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5
w = {work!r}
os.chdir({out!r})
ph3 = phono3py.load(w + "/phono3py_disp.yaml", produce_fc=False, lang="C", log_level=0)
ph3.fc2 = read_fc2_from_hdf5(w + "/fc2.hdf5")
ph3.fc3 = read_fc3_from_hdf5(w + "/fc3.hdf5")
ph3.mesh_numbers = {mesh!r}
ph3.init_phph_interaction()
ph3.run_thermal_conductivity(temperatures=[300.0], is_isotope=True, boundary_mfp=1e6,
                             transport_type="SMM19", write_kappa=True, log_level=0)
print(json.dumps({{"kappa": ph3.thermal_conductivity.kappa[0][0][:3].tolist(),
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def timed(code: str, env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", required=True)
    ap.add_argument("--model", default="chgnet-0.3.0", help="model of the force constants")
    ap.add_argument("--reference-dir")
    ap.add_argument("--mesh", nargs=3, type=int, help="q-mesh (default: the material's)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", help="keeps the force constants between runs")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.reference_dir:
        env["KAPPAFLOW_REFERENCE_DIR"] = args.reference_dir
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kf-kappa-bench-")).resolve()
    if not (work / "fc3.hdf5").exists():
        cmd = [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", args.model,
               "--material", args.material, "--out", str(work), "--threads", str(args.threads)]  # fmt: skip
        if args.mesh:
            cmd += ["--mesh", *map(str, args.mesh)]
        print("force constants:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    mesh = args.mesh or json.loads((work / "kappa.json").read_text())["q_mesh"]
    mesh = [int(m) for m in mesh]
    print(f"material={args.material} model={args.model} mesh={mesh} threads={args.threads}")

    times: dict[str, list[float]] = {"kappaflow": [], "bare": []}
    kappas: dict[str, list[float]] = {}
    rss: dict[str, float] = {"kappaflow": 0.0, "bare": 0.0}
    for i in range(args.repeats):
        for name, template in (("kappaflow", KAPPAFLOW), ("bare", BARE)):
            with tempfile.TemporaryDirectory(prefix=f"kf-{name}-") as out:
                code = template.format(threads=args.threads, work=str(work), out=out, mesh=mesh)
                elapsed, res = timed(code, env)
            times[name].append(elapsed)
            kappas[name] = res["kappa"]
            rss[name] = max(rss[name], res["rss_mb"])
            print(
                f"run {i + 1} {name}: {elapsed:.2f} s, peak RSS {res['rss_mb']:.0f} MB", flush=True
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = max(
        abs(a - b) / abs(b) for a, b in zip(kappas["kappaflow"], kappas["bare"], strict=True)
    )
    print(f"median_kappaflow_s={med['kappaflow']:.3f} median_bare_s={med['bare']:.3f}")
    print(f"peak_rss_mb kappaflow={rss['kappaflow']:.0f} bare={rss['bare']:.0f}")
    print(f"kappa_xx_yy_zz kappaflow={kappas['kappaflow']} bare={kappas['bare']}")
    print(f"max_rel_diff_kappa={diff:.3g}")
    print(f"overhead_fraction={(med['kappaflow'] - med['bare']) / med['bare']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
