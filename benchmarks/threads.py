"""One 2-thread job at a time vs two 1-thread jobs side by side, for the force and κ jobs.

    python benchmarks/threads.py --model chgnet-0.3.0 --material mp-22862 --work /tmp/thr \\
        [--mesh 13 13 13] [--repeats 2] [--reference-dir DIR]

Prepares relax/fc2/fc3 once (``kappaflow kappa`` in ``WORK/prep``), then times two kinds of
job, each a fresh process exactly as a workflow job (``runtime.start_job(threads)``):

* ``forces``: the fc3 displaced-supercell forces (kappaflow's chosen path);
* ``kappa``: the Wigner-RTA κ step on the prepared force constants (``--mesh``).

Per kind and repeat: A = two jobs one after the other with 2 threads each, B = two jobs
at once with 1 thread each (what Snakemake does with ``--cores 2`` and ``threads: 1``).
A and B alternate. Prints the medians and, last, ``ratio_two_1thread_over_one_2thread``
per kind (wall A / wall B; > 1 means two 1-thread jobs finish the pair sooner).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

_FORCES = """
import sys, time
sys.path.insert(0, {src!r})
from kappaflow.runtime import start_job
start_job({threads})
from kappaflow import phonons, storage
from kappaflow.calculators import load_calculator, model_spec
from kappaflow.settings import Phono3pySettings
from kappaflow.steps.common import material_of
atoms, record = storage.read_structure({relaxed!r})
ph3 = phonons.init_phono3py(atoms, material_of(record), Phono3pySettings())
loaded = load_calculator(model_spec({model!r}), device="cpu")
run = phonons.force_run(ph3.supercells_with_displacements, loaded)
print("JOB", run.info["seconds"], run.info["path"])
"""

_KAPPA = """
import sys, tempfile
sys.path.insert(0, {src!r})
from kappaflow.runtime import start_job
start_job({threads})
from kappaflow.settings import KappaSettings, Phono3pySettings
from kappaflow.steps.kappa import run_kappa
d = {prep!r}
with tempfile.TemporaryDirectory() as tmp:
    rec = run_kappa(relaxed=d + "/relaxed.extxyz", phonons_json=d + "/phonons.json",
        fc2_path=d + "/fc2.hdf5", fc3_path=d + "/fc3.hdf5",
        settings=KappaSettings((300.0,), Phono3pySettings(mesh={mesh!r})),
        out_hdf5=tmp + "/k.hdf5", out_record=tmp + "/k.json", fc3_forces=d + "/forces_fc3.hdf5")
print("JOB", rec["timing_s"]["kappa"], rec["kappa_TOT_ave"][0])
"""


def _start(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return [x for x in out.splitlines() if x.startswith("JOB")][-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--material", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mesh", type=int, nargs=3, default=[13, 13, 13])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["forces", "kappa"])
    ap.add_argument("--reference-dir")
    args = ap.parse_args(argv)

    prep = Path(args.work) / "prep"
    if not (prep / "fc3.hdf5").exists():
        cmd = [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", args.model]
        cmd += ["--material", args.material, "--out", str(prep), "--threads", "2"]
        cmd += ["--mesh", *map(str, args.mesh)]
        if args.reference_dir:
            cmd += ["--reference-dir", args.reference_dir]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        subprocess.run(cmd, check=True, env=env, capture_output=True)

    def code(kind: str, threads: int) -> str:
        if kind == "forces":
            return _FORCES.format(
                src=str(SRC),
                threads=threads,
                relaxed=str(prep / "relaxed.extxyz"),
                model=args.model,
            )
        return _KAPPA.format(src=str(SRC), threads=threads, prep=str(prep), mesh=tuple(args.mesh))

    print(f"model={args.model} material={args.material} mesh={args.mesh} cpus={os.cpu_count()}")
    ratios = {}
    for kind in args.kinds:
        walls: dict[str, list[float]] = {"A": [], "B": []}
        for rep in range(args.repeats):
            for config in "AB" if rep % 2 == 0 else "BA":
                t0 = time.perf_counter()
                if config == "A":  # one 2-thread job at a time
                    jobs = [_finish(_start(code(kind, 2))) for _ in range(2)]
                else:  # two 1-thread jobs side by side
                    procs = [_start(code(kind, 1)) for _ in range(2)]
                    jobs = [_finish(p) for p in procs]
                wall = time.perf_counter() - t0
                walls[config].append(wall)
                inner = ", ".join(f"{float(j.split()[1]):.1f}" for j in jobs)
                print(f"{kind} repeat {rep + 1} {config}: pair wall {wall:.1f} s (step s: {inner})")
        a, b = statistics.median(walls["A"]), statistics.median(walls["B"])
        ratios[kind] = a / b
        print(f"{kind}: one 2-thread job at a time {a:.1f} s per pair; two 1-thread jobs {b:.1f} s")
    for kind, r in ratios.items():
        print(f"ratio_two_1thread_over_one_2thread[{kind}]={r:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
