"""Serial ASE loop vs batched forces-only call on one material's displaced supercells.

    python benchmarks/forces.py --model chgnet-0.3.0 --material mp-22862 [--device cpu|cuda]
        [--reference-dir DIR] [--set fc3|fc2] [--repeats 3] [--threads N]
        [--max-atoms-per-batch N] [--limit N]

One process, the model loaded once; after one untimed warm-up call of each path the two
paths run alternately ``--repeats`` times (>= 3) on the same supercells. Prints, per path,
the median time and supercells/s, the max |ΔF| between the paths, the path kappaflow
chooses for this model and device (``kappaflow.forces.choose_path``), and as its last line
``ratio_batched_over_serial=<median t_serial / median t_chosen>``.

``--model`` takes any registry key or a MACE ``.model`` file (benchmarks/random_mace.py
builds MACE-MP-0-sized ones with random weights, since the real weights cannot be
downloaded offline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--material", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reference-dir")
    ap.add_argument("--set", default="fc3", choices=["fc3", "fc2"], dest="which")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-atoms-per-batch", type=int)
    ap.add_argument("--limit", type=int, help="only the first N supercells")
    args = ap.parse_args(argv)
    if args.repeats < 3:
        ap.error("--repeats must be >= 3 (alternating paths, medians)")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from kappaflow.runtime import configure_threads

    configure_threads(args.threads)
    import numpy as np

    from kappaflow import forces, phonons, storage
    from kappaflow.calculators import load_calculator, model_spec
    from kappaflow.reference import resolve_reference_dir
    from kappaflow.settings import Phono3pySettings
    from kappaflow.steps.relax import load_material

    ref = resolve_reference_dir(cli_dir=args.reference_dir)
    atoms, material = load_material(storage.reference_file(ref, "structures"), args.material)
    ph3 = phonons.init_phono3py(atoms, material, Phono3pySettings())
    cells = (
        ph3.supercells_with_displacements
        if args.which == "fc3"
        else ph3.phonon_supercells_with_displacements
    )
    structures = [phonons.to_ase_atoms(c) for c in cells if c is not None][: args.limit]
    loaded = load_calculator(model_spec(args.model), device=args.device)
    configure_threads(args.threads)  # torch may have been imported by the loader
    settings = forces.ForceSettings(max_atoms_per_batch=args.max_atoms_per_batch)
    family = loaded.info["family"]
    chosen, reason = forces.choose_path(
        settings, loaded.batch_forces is not None, family, args.device
    )
    # the batched path as kappaflow runs it (the family's budget on this device); where auto
    # picks the serial loop, the batched call is timed with the device's default budget
    max_atoms = forces.max_atoms_for(settings, args.device, family)

    def sync() -> None:
        if args.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def run(path: str) -> tuple[float, list]:
        sync()
        t0 = time.perf_counter()
        if path == "serial":
            out = forces.serial_forces(structures, loaded.calculator)
        else:
            out = forces.batched_forces(structures, loaded.batch_forces, max_atoms)
        sync()
        return time.perf_counter() - t0, out

    groups = forces.plan_batches([len(s) for s in structures], max_atoms)
    n_calls = len(groups)
    print(
        f"model={args.model} family={loaded.info['family']} dtype={loaded.info['dtype']} "
        f"device={args.device} threads={args.threads} material={args.material} set={args.which} "
        f"supercells={len(structures)} atoms={len(structures[0])} "
        f"max_atoms_per_batch={max_atoms} batched_calls={n_calls}",
        flush=True,
    )
    paths = ["serial"] + (["batched"] if loaded.batch_forces is not None else [])
    for path in paths:  # warm-up: lazy initialisation, CUDA context and kernels
        if path == "serial":
            forces.serial_forces(structures[:1], loaded.calculator)
        else:
            loaded.batch_forces([structures[i] for i in groups[0]])
    times: dict[str, list[float]] = {p: [] for p in paths}
    results: dict[str, list] = {}
    for rep in range(args.repeats):
        for path in paths if rep % 2 == 0 else paths[::-1]:
            t, out = run(path)
            times[path].append(t)
            results[path] = out
            print(f"repeat {rep + 1} {path}: {t:.3f} s", flush=True)
    med = {p: statistics.median(v) for p, v in times.items()}
    for p in paths:
        print(f"{p}: median {med[p]:.3f} s, {len(structures) / med[p]:.3f} supercells/s")
    if "batched" in results:
        dmax = max(
            float(np.abs(a - b).max())
            for a, b in zip(results["serial"], results["batched"], strict=True)
        )
        print(f"max_abs_dF_eV_per_A={dmax:.3e}")
        print(f"raw_ratio_serial_over_batched={med['serial'] / med['batched']:.4f}")
    print(f"chosen_path={chosen} ({reason})")
    print(f"ratio_batched_over_serial={med['serial'] / med[chosen]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
