"""Golden outputs of the workflow, from public entry points only (snakemake + the output files).

Runs two small workflows with the Snakefile of ``--repo`` (any commit: the script reads the
output files with h5py/json/pandas, never kappaflow's internals):

* ``dot-test``: the ``.test/`` workflow (EMT Cu and Ag, two temperatures, Grüneisen on);
* ``scored``: CHGNet 0.3.0 on NaCl-rs (mp-22862) from the reference set, on a coarse mesh,
  scored against the DFT reference (SRD/SRE; SRME needs the reference's 19³ mesh).

and writes every number of kappa.json, kappa.hdf5, gruneisen.json, thermal_expansion.csv and
results/metrics.csv, timing and provenance fields excluded, to one JSON file. The committed
``golden.json`` was made at the commit it names; ``tests/test_golden.py`` recomputes the same
values with the current code and compares them.

    python tests/golden/make_golden.py --repo . --out tests/golden/golden.json [--only dot-test]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

#: record fields that change from run to run (not results)
VOLATILE = {
    "timing_s",
    "provenance",
    "seconds",
    "structures_per_s",
    "train_seconds",
    "error_traceback",
    "time",
    "host",
    "checkpoint",
    "work_dir",
}

SCORED_CONFIG = {
    "materials": ["mp-22862"],
    "models": ["chgnet-0.3.0"],
    "temperatures": [300],
    "phono3py": {"mesh": [5, 5, 5]},
    "gruneisen": {"enabled": False},
}


def clean(obj):
    """JSON-able copy without volatile keys; numpy arrays as lists."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in sorted(obj.items()) if k not in VOLATILE}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (bytes, np.bytes_)):
        return obj.decode()
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def read_hdf5(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        data = {k: clean(np.asarray(h5[k][()])) for k in sorted(h5)}
        attrs = {
            k: clean(np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v))
            for k, v in sorted(h5.attrs.items())
            if k not in ("version",)
        }
    return {"datasets": data, "attrs": attrs}


def read_csv(path: Path) -> dict:
    df = pd.read_csv(path)
    return {c: clean(df[c].to_numpy()) for c in df.columns}


def collect(workdir: Path) -> dict:
    """Every golden number under ``workdir/results``."""
    out: dict = {}
    results = workdir / "results"
    for model_dir in sorted(p for p in results.iterdir() if p.is_dir() and p.name != "plots"):
        for mat_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            key = f"{model_dir.name}/{mat_dir.name}"
            entry: dict = {}
            for name in ("kappa.json", "gruneisen.json"):
                if (mat_dir / name).exists():
                    entry[name] = clean(json.loads((mat_dir / name).read_text()))
            if (mat_dir / "kappa.hdf5").exists():
                entry["kappa.hdf5"] = read_hdf5(mat_dir / "kappa.hdf5")
            if (mat_dir / "thermal_expansion.csv").exists():
                entry["thermal_expansion.csv"] = read_csv(mat_dir / "thermal_expansion.csv")
            if entry:
                out[key] = entry
        if (model_dir / "metrics.csv").exists():
            out[f"{model_dir.name}/metrics.csv"] = read_csv(model_dir / "metrics.csv")
    if (results / "metrics.csv").exists():
        out["metrics.csv"] = read_csv(results / "metrics.csv")
    return out


def run_workflow(repo: Path, workdir: Path, env: dict) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory",
         str(workdir), "--cores", "2"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed in {workdir}:\n{proc.stdout[-8000:]}")


GOLDEN = Path(__file__).with_name("golden.json")


def load_golden() -> dict:
    """The committed golden values and the commit that made them."""
    return json.loads(GOLDEN.read_text())


def make_scored_workdir(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(SCORED_CONFIG))
    return workdir


def make(repo: Path, which: list[str], keep: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    env.setdefault(
        "KAPPAFLOW_REFERENCE_DIR", str(repo.parent / "shared" / "reference" / "phonondb-pbe")
    )
    values: dict = {}
    with tempfile.TemporaryDirectory(prefix="kappaflow-golden-") as tmp:
        base = keep or Path(tmp)
        for name in which:
            workdir = base / name
            workdir.mkdir(parents=True, exist_ok=True)
            if name == "dot-test":
                for f in ("config.yaml", "structures.extxyz"):
                    shutil.copy(repo / ".test" / f, workdir / f)
            else:
                make_scored_workdir(workdir)
            run_workflow(repo, workdir, env)
            values[name] = collect(workdir)
    return values


#: The unifications issue 14 allowed (one status field, one transport_type string), applied
#: to values made before the redesign so they compare with values made after it.
def unify(values: dict) -> dict:
    """Values of a pre-redesign commit, rewritten into the unified vocabulary."""

    def walk(obj, name=""):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k == "failure" and name in ("kappa.json", "gruneisen.json"):
                    continue  # records keep one status field ("failure" repeated it)
                if k == "transport_type" and v == "SMM19-rta":
                    v = "SMM19"  # kappa.hdf5 attribute, now the same string as kappa.json
                out[k] = walk(v, k if k.endswith((".json", ".hdf5", ".csv")) else name)
            return out
        if isinstance(obj, list):
            return [walk(v, name) for v in obj]
        return obj

    return walk(values)


def diff(expected, actual, rtol: float = 1e-9, atol: float = 1e-12, path: str = "") -> list[str]:
    """Every golden value that is missing or different in ``actual`` (numbers within
    rtol/atol). Values that only ``actual`` has (a column or file added since) are not
    differences: the golden values are a guard on what existed."""
    out: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k in sorted(expected):
            if k not in actual:
                out.append(f"{path}/{k}: missing")
            else:
                out += diff(expected[k], actual[k], rtol, atol, f"{path}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} -> {len(actual)}"]
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            out += diff(a, b, rtol, atol, f"{path}[{i}]")
            if len(out) > 20:
                break
        return out
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
    ):
        if not np.isclose(actual, expected, rtol=rtol, atol=atol):
            out.append(f"{path}: {expected!r} -> {actual!r}")
        return out
    if expected != actual:
        out.append(f"{path}: {expected!r} -> {actual!r}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", default=".", help="checkout whose Snakefile and src/ run")
    p.add_argument("--out", required=True)
    p.add_argument("--only", choices=["dot-test", "scored"], action="append")
    p.add_argument("--keep", help="run in this folder and keep it")
    args = p.parse_args()
    repo = Path(args.repo).resolve()
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    values = make(repo, args.only or ["dot-test", "scored"], Path(args.keep) if args.keep else None)
    Path(args.out).write_text(json.dumps({"commit": commit, "values": values}, indent=0))
    print(f"golden values of {commit} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
