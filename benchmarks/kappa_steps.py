"""Wall time and peak memory of each κ step (relax, fc2, fc3 forces, κ) for one material.

Each step runs in its own process (as in the workflow), timed with resource usage of
the child, so peak RSS is per step. Prints one line per step and a summary line.

    KAPPAFLOW_REFERENCE_DIR=../shared/reference/phonondb-pbe \
        python benchmarks/kappa_steps.py --model chgnet-0.3.0 --material mp-22862 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_CODE = {
    "relax": "run_relax(structures=storage.reference_file(resolve_reference_dir(), 'structures'), "
    "material_id={material!r}, model=spec, settings=RelaxSettings(), out_relaxed=f['relaxed'])",
    "fc2": "run_fc2(relaxed=f['relaxed'], model=spec, settings=ps, out_fc2=f['fc2'], "
    "out_forces=f['forces_fc2'], out_disp=f['disp'], out_phonons=f['phonons'])",
    "fc3": "run_fc3(relaxed=f['relaxed'], phonons_json=f['phonons'], model=spec, settings=ps, "
    "out_fc3=f['fc3'], out_forces=f['forces_fc3'])",
    "kappa": "run_kappa(relaxed=f['relaxed'], phonons_json=f['phonons'], fc2_path=f['fc2'], "
    "fc3_path=f['fc3'], settings=KappaSettings((300.0,), ps), out_hdf5=f['kappa'], "
    "out_record=f['record'], fc3_forces=f['forces_fc3'])",
}

PRELUDE = """
from pathlib import Path
from kappaflow.runtime import configure_threads
configure_threads({threads})
from kappaflow import storage
from kappaflow.calculators import model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.reference import resolve_reference_dir
from kappaflow.settings import KappaSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.anharmonic import run_fc3
from kappaflow.steps.harmonic import run_fc2
from kappaflow.steps.kappa import run_kappa
from kappaflow.steps.relax import run_relax
out = Path({out!r})
f = {{k: out / v for k, v in MATERIAL_FILES.items()}}
spec = model_spec({model!r})
ps = Phono3pySettings(backend={backend!r})
"""


def run_step(step: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    code = PRELUDE.format(
        threads=args.threads, out=str(out), model=args.model, backend=args.backend
    )
    code += STEP_CODE[step].format(material=args.material)
    code += "\nimport resource\nprint('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"step {step} failed")
    maxrss = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    return {
        "wall_s": wall,  # includes interpreter start and model loading, as in a workflow job
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": int(maxrss[-1]) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--material", default="mp-22862")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="C", choices=["C", "Rust"])
    parser.add_argument("--out", help="keep outputs here (default: a temporary directory)")
    parser.add_argument(
        "--steps",
        default="relax,fc2,fc3,kappa",
        help="comma-separated subset; later steps reuse earlier outputs in --out",
    )
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kappaflow-bench-"))
    results = {}
    for step in args.steps.split(","):
        results[step] = run_step(step, args, out)
        r = results[step]
        print(
            f"{args.model} {args.material} {step}: wall {r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    if not (out / "kappa.json").exists():
        return
    record = json.loads((out / "kappa.json").read_text())
    print(
        f"kappa_TOT_ave_300K={record['kappa_TOT_ave'][0]!r} status={record['status']} "
        f"threads={args.threads} backend={args.backend} host={os.uname().nodename}"
    )


if __name__ == "__main__":
    main()
