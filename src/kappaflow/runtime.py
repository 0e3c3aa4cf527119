"""Thread settings, scheduler context, provenance and runtime limits of one job. Imports
nothing heavy, so it can run first.

phono3py's C backend reads ``OMP_NUM_THREADS`` and its Rust backend (phonors)
``RAYON_NUM_THREADS`` when their pools start, i.e. at first use after import; both
must equal the job's Snakemake ``threads``. torch is told directly when imported.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def configure_threads(threads: int) -> dict[str, int]:
    """Set every thread-count variable to ``threads`` (>= 1) and return what was set."""
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if "phonors" in sys.modules or "phono3py._phono3py" in sys.modules:
        current = {v: os.environ.get(v) for v in THREAD_VARS[:2]}
        if any(c != str(threads) for c in current.values()):
            warnings.warn(
                "phono3py was imported before configure_threads(); its thread pools may "
                f"ignore the new setting ({current})",
                RuntimeWarning,
                stacklevel=2,
            )
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return {var: threads for var in THREAD_VARS}


def current_threads() -> dict[str, str | None]:
    return {var: os.environ.get(var) for var in THREAD_VARS}


#: SLURM variables a job records (provenance and the first line of its log).
SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "partition": "SLURM_JOB_PARTITION",
    "node": "SLURMD_NODENAME",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "gpus": "SLURM_GPUS",
}


def scheduler_context(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``{"scheduler": "slurm", "job_id": ..., ...}`` inside a SLURM job, else ``{}``."""
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in env:
        return {}
    out = {"scheduler": "slurm"}
    out.update({k: env[v] for k, v in SLURM_VARS.items() if v in env})
    return out


def start_job(threads: int) -> str:
    """First call of every compute script: set the threads, print one banner line on
    stderr (the rule's log) saying where the job runs, and return that line."""
    configure_threads(threads)
    ctx = scheduler_context()
    where = " ".join(f"{k}={v}" for k, v in ctx.items()) if ctx else "scheduler=none"
    line = f"[kappaflow] job start: threads={int(threads)} {where}"
    print(line, file=sys.stderr, flush=True)
    return line


#: Base wall-time limits (minutes) of the compute rules, before any raise. Generous for
#: one material of the 103 on one GPU (force rules) or a node's cores (kappa); the measured
#: figures are in docs/benchmarks.md. A profile overrides a base with
#: ``set-resources: RULE: runtime_base: N`` (:func:`runtime_base`).
DEFAULT_RUNTIME_MINUTES = {
    "relax": 30,
    "fc2": 60,
    "fc3": 360,
    "kappa": 720,
    "gruneisen": 120,
    "gruneisen_fc3_check": 60,
    "finetune_label": 120,
    "finetune_train": 720,
}


def raised_runtime(
    base_minutes: int, time_limit_kills: int, factor: int = 2, max_raises: int = 4
) -> int:
    """Runtime (minutes) for the next submission of a job SLURM killed
    ``time_limit_kills`` times for its time limit: ``base * factor**kills``, at most
    ``max_raises`` raises (x16 by default), so a job that can never finish stops
    growing its request."""
    if base_minutes < 1:
        raise ValueError(f"runtime must be >= 1 minute, got {base_minutes}")
    if time_limit_kills < 0:
        raise ValueError(f"time_limit_kills must be >= 0, got {time_limit_kills}")
    return int(base_minutes) * int(factor) ** min(int(time_limit_kills), int(max_raises))


def runtime_base(rule: str, overrides: Mapping[str, Any] | None) -> int:
    """The base runtime (minutes) of ``rule``: the profile's ``runtime_base`` resource of
    that rule when set (a whole number of minutes >= 1), else the default above."""
    overrides = overrides or {}
    if "runtime_base" not in overrides:
        return DEFAULT_RUNTIME_MINUTES[rule]
    base = overrides["runtime_base"]
    raw = str(getattr(base, "raw", base)).strip("'\" ")
    try:
        minutes = int(raw)
    except ValueError:
        raise ValueError(
            f"set-resources {rule}:runtime_base={raw!r}: give whole minutes, e.g. 120"
        ) from None
    if minutes < 1:
        raise ValueError(f"set-resources {rule}:runtime_base={minutes}: must be >= 1 minute")
    return minutes


# ------------------------------------------------------------------------ provenance

#: the packages that shape the numbers (their versions go into every result)
PROVENANCE_PACKAGES = (
    "kappaflow",
    "phono3py",
    "phonopy",
    "phonors",
    "spglib",
    "ase",
    "numpy",
    "torch",
    "mace-torch",
    "e3nn",
    "chgnet",
    "sevenn",
)


def package_versions() -> dict[str, str | None]:
    """Versions of :data:`PROVENANCE_PACKAGES` (None when not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """Where and with what a result was made: versions, host, threads, scheduler, time."""
    return {
        "versions": package_versions(),
        "host": platform.node(),
        "python": platform.python_version(),
        "threads": current_threads(),
        "scheduler": scheduler_context(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def log(message: str) -> None:
    """One progress line on stderr (the rule's log file in the workflow)."""
    print(f"[kappaflow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_streaming(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` with its output going to this process's stdout (the rule log)."""
    import subprocess

    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        return subprocess.run(argv, env=env, stdout=fd, stderr=subprocess.STDOUT).returncode
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    return proc.returncode
