"""κ step with phono3py's default path (C) against kappaflow's ph-ph engine (issue 15).

Force constants: a kappaflow results folder ``{results}/{model}/{material}/`` (relaxed.extxyz,
fc2.hdf5, fc3.hdf5, as the workflow and ``kappaflow kappa`` write them), computed once with
``kappaflow kappa`` when missing. Then the κ step (kappaflow's settings: Wigner RTA SMM19,
isotopes, boundary 1e6 µm, 300 K) runs alternately with

* ``baseline``: phono3py's default low-memory path, C backend;
* ``engine``: the same through ``kappaflow.phph.install(engine="kappaflow")``;

each run a fresh process (fresh objects, no cached tables) with the same OMP / Rayon / torch
threads, ``--repeats`` times each; then once with phono3py's Rust backend for reference.
Prints each run, the per-engine median κ-step time and peak memory, and as its last two lines
``max_rel_diff_kappa=<max over κ_TOT, κ_P, κ_C and mode κ>`` (relative to the largest
element of each array) and ``speedup=<baseline median / engine median>``.

    KAPPAFLOW_REFERENCE_DIR=../shared/reference/phonondb-pbe python benchmarks/phph.py \\
        --model chgnet-0.3.0 --material mp-22862 [--device cpu|cuda] [--threads 2]

``--split N``: instead, the time split of the C default path per grid point on N sampled
irreducible grid points (interaction, tetrahedron weights, self-energy sum, isotope) and the
engine's time on the same points.

``--c-vs-rust``: instead, the minimal reproduction of the C-vs-Rust κ difference of
tests/test_conductivity.py (EMT fcc Cu, fc2 4x4x4, fc3 3x3x3, mesh 5x5x5, no model needed):
|Φ|², tetrahedron weights, isotope γ and degeneracy sets compared separately between C, Rust,
phono3py's Python reference and the engine, then κ with the phonons of one backend in the
other, with random bases of the degenerate subspaces, and with averaged weights.
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

CHILD = r"""
import json, os, resource, sys, time
threads = {threads}
for var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)
t_start = time.perf_counter()
import numpy as np
from kappaflow import phph
from kappaflow import storage as io
from kappaflow.conductivity import split_mode_kappa
from kappaflow.phonons import init_phono3py
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import MaterialSpec
work, out, engine, backend, device = {work!r}, {out!r}, {engine!r}, {backend!r}, {device!r}
atoms, record = io.read_structure(work + "/relaxed.extxyz")
m = dict(record["material"])
for key in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
    m[key] = tuple(m[key])
settings = Phono3pySettings(backend=backend, mesh={mesh!r})
ph3 = init_phono3py(atoms, MaterialSpec(**m), settings, displace=False)
fc2, fc3 = io.read_fc(work + "/fc2.hdf5", 2), io.read_fc(work + "/fc3.hdf5", 3)
if engine == "kappaflow":
    import torch
    torch.set_num_threads(threads)
t0, c0 = time.perf_counter(), os.times()
ph3.fc2, ph3.fc3 = fc2, fc3
ph3.init_phph_interaction(symmetrize_fc3q=False)
with phph.install(ph3, engine=engine, device=device, threads=threads,
                  memory_mb={memory_mb!r}) as rec:
    ph3.run_thermal_conductivity(temperatures=[300.0], is_isotope=settings.is_isotope,
                                 boundary_mfp=settings.boundary_mfp, transport_type="SMM19",
                                 write_kappa=False, log_level=0)
if device.startswith("cuda") and engine == "kappaflow":
    torch.cuda.synchronize()
kappa_s = time.perf_counter() - t0
c1 = os.times()
kappa_cpu_s = (c1.user - c0.user) + (c1.system - c0.system)
tc = ph3.thermal_conductivity
matrix = np.asarray(tc.mode_kappa_matrix)
mode_p, mode_c = split_mode_kappa(matrix[0], tc.frequencies, tc.mode_heat_capacities)
n = float(np.prod(tc.mesh_numbers))
np.savez(out + "/kappa.npz", kappa=np.asarray(tc.kappa)[0], kappa_P=mode_p.sum(axis=(1, 2)) / n,
         kappa_C=mode_c.sum(axis=(1, 2)) / n, mode_kappa_P=mode_p, mode_kappa_C=mode_c,
         mode_kappa=mode_p + mode_c, gamma=np.asarray(tc.gamma)[0])
gpu_mb = None
if device.startswith("cuda") and engine == "kappaflow":
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps({{"kappa_s": kappa_s, "kappa_cpu_s": kappa_cpu_s,
                   "process_s": time.perf_counter() - t_start,
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "gpu_mb": gpu_mb, "kappa_xx": float(np.asarray(tc.kappa)[0, 0, 0]),
                   "record": rec.as_dict()}}))
"""

SPLIT = r"""
import json, os, sys, time
threads = {threads}
for var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)
import numpy as np
import phono3py._phono3py as phono3c
from phonopy.physical_units import get_physical_units
from phono3py.conductivity.calculators import _prepare_isotope_phonons
from phono3py.conductivity.factory import conductivity_calculator
from phono3py.phonon3.triplets import get_triplets_integration_weights
from kappaflow import storage as io
from kappaflow.phonons import init_phono3py
from kappaflow.phph.engine import PhphEngine
from kappaflow.phph.seam import EngineScatteringSolver
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import MaterialSpec
work = {work!r}
atoms, record = io.read_structure(work + "/relaxed.extxyz")
m = dict(record["material"])
for key in ("fc2_supercell", "fc3_supercell", "q_mesh", "defaults_used"):
    m[key] = tuple(m[key])
ph3 = init_phono3py(atoms, MaterialSpec(**m), Phono3pySettings(mesh={mesh!r}), displace=False)
ph3.fc2, ph3.fc3 = io.read_fc(work + "/fc2.hdf5", 2), io.read_fc(work + "/fc3.hdf5", 3)
ph3.init_phph_interaction(symmetrize_fc3q=False)
pp = ph3.phph_interaction
calc = conductivity_calculator(pp, np.array([300.0]), [None], method="SMM19-rta",
                               is_isotope=True, boundary_mfp=1e6, lang="C")
_prepare_isotope_phonons(pp, calc._isotope_solver)
gps = np.asarray(calc.grid_points)
n_triplets = []
for gp in gps:
    pp.set_grid_point(int(gp))
    n_triplets.append(len(pp.get_triplets_at_q()[0]))
engine = PhphEngine(pp, device={device!r}, threads=threads, memory_mb={memory_mb!r})
solver = EngineScatteringSolver(pp, engine, np.array([300.0]), "C")
t_kb = 300.0 * get_physical_units().KB / get_physical_units().THzToEv
rows = []
for i in np.unique(np.linspace(0, len(gps) - 1, {n_split}).astype(int)):
    gp = int(gps[i])
    r = {{"gp": gp, "triplets": n_triplets[i]}}
    t = time.perf_counter(); calc._scattering_solver.compute(gp); r["default"] = time.perf_counter() - t
    pp.set_grid_point(gp)
    f0 = pp.phonons.frequencies[gp][pp.band_indices]
    t = time.perf_counter(); g, gz = get_triplets_integration_weights(pp, f0, None, lang="C")
    r["weights"] = time.perf_counter() - t
    t = time.perf_counter(); pp.run(); r["interaction_full"] = time.perf_counter() - t
    t = time.perf_counter(); pp.run(g_zero=gz); r["interaction_masked"] = time.perf_counter() - t
    ise = np.zeros(len(pp.band_indices))
    t = time.perf_counter()
    tri, wts = pp.get_triplets_at_q()[:2]
    phono3c.imag_self_energy_with_g(ise, pp.interaction_strength, tri, wts, pp.phonons.frequencies,
                                    t_kb, g, gz, pp.cutoff_frequency, -1)
    r["sum"] = time.perf_counter() - t
    t = time.perf_counter(); calc._isotope_solver.compute(gp); r["isotope"] = time.perf_counter() - t
    t = time.perf_counter(); solver.compute(gp); r["engine"] = time.perf_counter() - t
    rows.append(r)
    print(json.dumps(r), flush=True)
print(json.dumps({{"n_gp": len(gps), "n_triplets": int(sum(n_triplets)), "rows": rows}}))
"""


C_VS_RUST = r"""
import os
os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "1"
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from phonopy.phonon.grid import get_ir_grid_points
from phono3py.other.isotope import Isotope
from phono3py.phonon3.real_to_reciprocal import RealToReciprocal
from phono3py.phonon3.reciprocal_to_normal import ReciprocalToNormal
from phono3py.phonon3.triplets import get_triplets_integration_weights
from kappaflow.phonons import compute_forces, fc2_from_forces, fc3_from_forces, init_phono3py
from kappaflow.phph.engine import PhphEngine
from kappaflow.relax import relax_structure
from kappaflow.settings import Phono3pySettings
from kappaflow.structures import material_from_frame

atoms = bulk("Cu", "fcc", a=3.59)
atoms.info = {"material_id": "Cu", "fc2_supercell": [4, 4, 4], "fc3_supercell": [3, 3, 3],
              "q_mesh": [5, 5, 5]}
spec = material_from_frame(atoms, 0)
relaxed = relax_structure(atoms, EMT()).atoms
ph3 = init_phono3py(relaxed, spec, Phono3pySettings())
fc2 = fc2_from_forces(ph3, compute_forces(ph3.phonon_supercells_with_displacements, EMT()))
fc3 = fc3_from_forces(ph3, compute_forces(ph3.supercells_with_displacements, EMT()))

def make(backend, avg=False, phonons=None):
    p = init_phono3py(relaxed, spec, Phono3pySettings(backend=backend), displace=False)
    p.fc2, p.fc3 = fc2, fc3
    p.init_phph_interaction(symmetrize_fc3q=False, average_degenerate_weights=avg)
    pp = p.phph_interaction
    pp.run_phonon_solver()
    if phonons is not None:
        pp.set_phonon_data(phonons[0].copy(), phonons[1].copy(), pp.bz_grid.addresses)
    return p

def kappa(p, iso=True):
    p.run_thermal_conductivity(temperatures=[300.0], is_isotope=iso, boundary_mfp=1e6,
                               transport_type="SMM19", log_level=0)
    return float(p.thermal_conductivity.kappa[0, 0, 0])

c, r = make("C"), make("Rust")
pc, pr = c.phph_interaction.phonons, r.phph_interaction.phonons
ids = pc.degenerate_ids
proj = max(np.abs(pc.eigenvectors[g][:, b] @ pc.eigenvectors[g][:, b].conj().T
                  - pr.eigenvectors[g][:, b] @ pr.eigenvectors[g][:, b].conj().T).max()
           for g in range(len(ids)) for b in [np.nonzero(ids[g] == s)[0] for s in np.unique(ids[g])])
print(f"phonons: max |Δf| {np.abs(pc.frequencies - pr.frequencies).max():.1e} THz; "
      f"degenerate sets equal: {np.array_equal(pc.degenerate_ids, pr.degenerate_ids)}; "
      f"max |Δe| {np.abs(pc.eigenvectors - pr.eigenvectors).max():.2f}; max Δ of the "
      f"projector onto each degenerate set {proj:.1e} (same subspaces, other bases)")
exact = lambda ph: sum(int(np.sum(f[:, None] == f[None, :])) - len(f) for f in ph.frequencies) // 2
print(f"bitwise-equal frequency pairs: C {exact(pc)}, Rust {exact(pr)}")
pp = c.phph_interaction
ppr = make("Rust", phonons=(pc.frequencies, pc.eigenvectors)).phph_interaction
engine = PhphEngine(pp, threads=1, memory_mb=256)
ir = np.asarray(pp.bz_grid.grg2bzg[get_ir_grid_points(pp.bz_grid)[0]])
d = {"Rust": 0.0, "engine": 0.0, "Python": 0.0, "weights": 0.0}
scale = wscale = 0.0
for gp in ir[1:]:
    pp.set_grid_point(int(gp)); pp.run()
    ref = pp.interaction_strength.copy(); tri = pp.get_triplets_at_q()[0]
    ppr.set_grid_point(int(gp)); ppr.run()
    scale = max(scale, np.abs(ref).max())
    d["Rust"] = max(d["Rust"], np.abs(ppr.interaction_strength - ref).max())
    d["engine"] = max(d["engine"], np.abs(engine.interaction_strength(tri) - ref).max())
    r2r = RealToReciprocal(pp.fc3, pp.primitive, pp.mesh_numbers, make_r0_average=True,
                           all_shortest=pp.all_shortest)
    r2n = ReciprocalToNormal(pp.primitive, pp.phonons.frequencies, pp.phonons.eigenvectors,
                             pp.band_indices, cutoff_frequency=pp.cutoff_frequency)
    for i, t in enumerate(tri[:3]):
        r2r.run(pp.bz_grid.addresses[t]); r2n.run(r2r.get_fc3_reciprocal(), t)
        py = np.abs(r2n.get_reciprocal_to_normal()) ** 2 * pp.unit_conversion_factor
        d["Python"] = max(d["Python"], np.abs(py - ref[i]).max())
    f0 = pp.phonons.frequencies[gp]
    g_c, _ = get_triplets_integration_weights(pp, f0, None, lang="C")
    g_r, _ = get_triplets_integration_weights(pp, f0, None, lang="Rust")
    wscale = max(wscale, np.abs(g_c).max()); d["weights"] = max(d["weights"], np.abs(g_c - g_r).max())
print(f"same phonons, {len(ir) - 1} grid points, every triplet: max |Δ|Φ|²| / max |Φ|²: "
      f"Rust {d['Rust'] / scale:.1e}, engine {d['engine'] / scale:.1e}, Python reference "
      f"(3 triplets per point) {d['Python'] / scale:.1e}; tetrahedron weights C vs Rust "
      f"{d['weights'] / wscale:.1e}")

def isotope(ph, lang, avg=False):
    it = Isotope(pp.mesh_numbers, pp.primitive, bz_grid=pp.bz_grid,
                 cutoff_frequency=pp.cutoff_frequency, average_degenerate_weights=avg, lang=lang)
    it.set_phonons(ph, dm=pp.dynamical_matrix)
    out = []
    for gp in ir:
        it.set_grid_point(int(gp)); it.run(); out.append(it.gamma.copy())
    return np.array(out)

import copy
i_c, i_r = isotope(copy.deepcopy(pc), "C"), isotope(copy.deepcopy(pc), "Rust")
i_rr = isotope(copy.deepcopy(pr), "C")
print(f"isotope γ, same phonons: C vs Rust {np.abs(i_c - i_r).max() / np.abs(i_c).max():.1e}; "
      f"C code on Rust's phonons vs C's: {np.abs(i_rr - i_c).max() / np.abs(i_c).max():.1e}")
print("κ_xx(300 K) W/mK with (frequencies, eigenvectors) of one solver in the other code:")
for iso in (True, False):
    for fname, f in (("C", pc.frequencies), ("Rust", pr.frequencies)):
        for ename, e in (("C", pc.eigenvectors), ("Rust", pr.eigenvectors)):
            kc = kappa(make("C", phonons=(f, e)), iso)
            kr = kappa(make("Rust", phonons=(f, e)), iso)
            ka = kappa(make("Rust", avg=True, phonons=(f, e)), iso)
            print(f"  isotope={iso!s:5} f={fname:4} e={ename:4}: C code {kc:.6f}  Rust code "
                  f"{kr:.6f}  Rust average_degenerate_weights {ka:.6f}")
rng = np.random.default_rng(0)
def rotated(e):
    e = e.copy()
    for g in range(len(e)):
        for s in np.unique(ids[g]):
            b = np.nonzero(ids[g] == s)[0]
            if len(b) > 1:
                q, _ = np.linalg.qr(rng.normal(size=(len(b),) * 2) + 1j * rng.normal(size=(len(b),) * 2))
                e[g][:, b] = e[g][:, b] @ q
    return e
vals = [kappa(make("C", phonons=(pc.frequencies, rotated(pc.eigenvectors)))) for _ in range(5)]
avg = [kappa(make("Rust", avg=True, phonons=(pc.frequencies, rotated(pc.eigenvectors)))) for _ in range(2)]
print(f"C code, C frequencies, 5 random bases of the degenerate subspaces: "
      f"{', '.join(f'{v:.4f}' for v in vals)} (spread {100 * (max(vals) - min(vals)) / np.mean(vals):.2f} %)")
print(f"averaged weights, 2 random bases: {', '.join(f'{v:.9f}' for v in avg)}")
"""


def run_child(code: str, env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_force_constants(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    if (work / "fc3.hdf5").exists() and (work / "fc2.hdf5").exists():
        return
    cmd = [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", args.model,
           "--material", args.material, "--out", str(work), "--threads", str(args.threads)]  # fmt: skip
    print("force constants:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, env=env, check=True)


def max_rel_diff(a: dict, b: dict) -> dict[str, float]:
    import numpy as np

    keys = ("kappa", "kappa_P", "kappa_C", "mode_kappa", "mode_kappa_P", "mode_kappa_C")
    return {k: float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in keys}


def split_report(args: argparse.Namespace, work: Path, env: dict[str, str], mesh) -> int:
    code = SPLIT.format(threads=args.threads, work=str(work), mesh=mesh, device=args.device,
                        memory_mb=args.memory_mb, n_split=args.split)  # fmt: skip
    _, res = run_child(code, env)
    rows = res["rows"]
    n_tri = sum(r["triplets"] for r in rows)
    per = {k: sum(r[k] for r in rows) / n_tri for k in rows[0] if k not in ("gp", "triplets")}
    print(f"grid points {res['n_gp']}, triplets {res['n_triplets']}, sampled {len(rows)} "
          f"({n_tri} triplets), threads {args.threads}")  # fmt: skip
    print("| part | µs per triplet | estimated whole material (s) | share of default |")
    print("|---|---|---|---|")
    for key, value in per.items():
        total = value * res["n_triplets"]
        if key == "isotope":  # per grid point, not per triplet
            total = sum(r[key] for r in rows) / len(rows) * res["n_gp"]
        share = total / (per["default"] * res["n_triplets"])
        print(f"| {key} | {value * 1e6:.1f} | {total:.1f} | {share:.3f} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--material")
    ap.add_argument("--device", default="cpu", help="engine device: cpu or cuda")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reference-dir")
    ap.add_argument("--results", default="results", help="kappaflow results root")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mesh", nargs=3, type=int, help="q-mesh (default: the material's)")
    ap.add_argument("--memory-mb", type=float, default=3072.0, help="engine memory budget")
    ap.add_argument("--no-rust", action="store_true", help="skip the Rust reference run")
    ap.add_argument("--split", type=int, default=0, help="time split on N grid points instead")
    ap.add_argument("--c-vs-rust", action="store_true", help="C/Rust reproduction instead")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.c_vs_rust:
        proc = subprocess.run([sys.executable, "-c", C_VS_RUST], env=env, check=False)
        return proc.returncode
    if not (args.model and args.material):
        ap.error("--model and --material are required (except with --c-vs-rust)")
    if args.reference_dir:
        env["KAPPAFLOW_REFERENCE_DIR"] = args.reference_dir
    work = (Path(args.results) / args.model / args.material).resolve()
    ensure_force_constants(args, work, env)
    mesh = tuple(args.mesh) if args.mesh else None
    load = os.getloadavg()
    print(f"material={args.material} model={args.model} mesh={mesh or 'material'} "
          f"threads={args.threads} device={args.device} loadavg={load[0]:.2f},{load[1]:.2f}",
          flush=True)  # fmt: skip
    if args.split:
        return split_report(args, work, env, mesh)

    import numpy as np

    runs: dict[str, list[dict]] = {"baseline": [], "engine": []}
    kappas: dict[str, dict] = {}
    plan = (("baseline", "phono3py", "C"), ("engine", "kappaflow", "C"))
    for i in range(args.repeats):
        for name, engine, backend in plan:
            with tempfile.TemporaryDirectory(prefix=f"kf-phph-{name}-") as out:
                code = CHILD.format(threads=args.threads, work=str(work), out=out, engine=engine,
                                    backend=backend, device=args.device if engine == "kappaflow"
                                    else "cpu", mesh=mesh, memory_mb=args.memory_mb)  # fmt: skip
                _, res = run_child(code, env)
                with np.load(Path(out) / "kappa.npz") as data:
                    kappas[name] = {k: data[k] for k in data.files}
            runs[name].append(res)
            gpu = f", GPU peak {res['gpu_mb']:.0f} MB" if res["gpu_mb"] else ""
            print(f"run {i + 1} {name}: κ step {res['kappa_s']:.2f} s, CPU "
                  f"{res['kappa_cpu_s']:.1f} s (process {res['process_s']:.2f} s), "
                  f"peak RSS {res['rss_mb']:.0f} MB{gpu}, "
                  f"κ_xx {res['kappa_xx']:.7f}", flush=True)  # fmt: skip
    rust = None
    if not args.no_rust:
        with tempfile.TemporaryDirectory(prefix="kf-phph-rust-") as out:
            code = CHILD.format(threads=args.threads, work=str(work), out=out, engine="phono3py",
                                backend="Rust", device="cpu", mesh=mesh,
                                memory_mb=args.memory_mb)  # fmt: skip
            _, rust = run_child(code, env)
        print(f"rust (phonors, reference): κ step {rust['kappa_s']:.2f} s, "
              f"peak RSS {rust['rss_mb']:.0f} MB, κ_xx {rust['kappa_xx']:.7f}")  # fmt: skip
    med = {k: statistics.median(r["kappa_s"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["kappa_cpu_s"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["rss_mb"] for r in v) for k, v in runs.items()}
    record = runs["engine"][-1]["record"]
    print(f"engine record: {json.dumps(record)}")
    for name in runs:
        print(f"median_{name}_s={med[name]:.3f} median_{name}_cpu_s={cpu[name]:.1f} "
              f"peak_rss_{name}_mb={rss[name]:.0f}")  # fmt: skip
    print(f"cpu_time_ratio={cpu['baseline'] / cpu['engine']:.3f}")
    if rust is not None:
        print(f"rust_s={rust['kappa_s']:.3f}")
    load = os.getloadavg()
    print(f"loadavg_end={load[0]:.2f},{load[1]:.2f}")
    diffs = max_rel_diff(kappas["engine"], kappas["baseline"])
    print("rel_diff " + " ".join(f"{k}={v:.3g}" for k, v in diffs.items()))
    print(f"max_rel_diff_kappa={max(diffs.values()):.3g}")
    print(f"speedup={med['baseline'] / med['engine']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
