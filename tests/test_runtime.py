"""kappaflow.runtime (threads, scheduler context, runtime raise) and the SLURM-log reader
of kappaflow.storage."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kappaflow import storage
from kappaflow.runtime import (
    DEFAULT_RUNTIME_MINUTES,
    THREAD_VARS,
    raised_runtime,
    scheduler_context,
)


@pytest.mark.parametrize(
    ("base", "kills", "expected"),
    [(60, 0, 60), (60, 1, 120), (60, 2, 240), (1, 3, 8), (60, 4, 960), (60, 9, 960)],
)
def test_raised_runtime_doubles_per_kill_up_to_16x(base, kills, expected):
    assert raised_runtime(base, kills) == expected


def test_raised_runtime_rejects_nonsense():
    with pytest.raises(ValueError, match="runtime"):
        raised_runtime(0, 0)
    with pytest.raises(ValueError, match="time_limit_kills"):
        raised_runtime(10, -1)


def test_default_runtimes_cover_every_compute_rule():
    """Every rule whose runtime kappaflow computes (runtime_for) has a default, and no
    default is left without a rule."""
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "rules"
    used = {
        name
        for smk in rules.glob("*.smk")
        for name in re.findall(r'runtime_for\("(\w+)"\)', smk.read_text())
    }
    assert {"relax", "fc2", "fc3", "kappa", "finetune_train"} <= used
    assert set(DEFAULT_RUNTIME_MINUTES) == used
    assert all(isinstance(v, int) and v >= 1 for v in DEFAULT_RUNTIME_MINUTES.values())


def test_scheduler_context_reads_slurm_variables():
    assert scheduler_context({"PATH": "/bin"}) == {}
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_PARTITION": "gpu", "SLURM_GPUS": "1"}
    assert scheduler_context(env) == {
        "scheduler": "slurm",
        "job_id": "4242",
        "partition": "gpu",
        "gpus": "1",
    }


def test_start_job_sets_every_thread_variable_and_prints_the_banner():
    code = (
        "import os; from kappaflow.runtime import start_job, THREAD_VARS; "
        "line = start_job(3); print(line); print([os.environ[v] for v in THREAD_VARS])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "SLURM_JOB_ID": "77"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[kappaflow] job start: threads=3 scheduler=slurm job_id=77" in out.stderr
    assert out.stdout.splitlines()[-1] == str(["3"] * len(THREAD_VARS))
    local = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "threads=3 scheduler=none" in local.stderr


def test_slurm_time_limit_kills_counts_only_that_job(tmp_path):
    folder = storage.slurm_job_logdir(tmp_path, "fc3", ["mace-mp-0-medium", "mp-804"])
    assert folder == tmp_path / "rule_fc3" / "mace-mp-0-medium_mp-804"
    assert storage.slurm_time_limit_kills(tmp_path, "fc3", ["mace-mp-0-medium", "mp-804"]) == 0
    folder.mkdir(parents=True)
    (folder / "101.log").write_text("slurmstepd: error: *** JOB 101 ... DUE TO TIME LIMIT ***\n")
    (folder / "102.log").write_text("slurmstepd: error: *** JOB 102 CANCELLED AT ... ***\n")
    (folder / "103.log").write_text("done\n")
    (folder / "notes.txt").write_text("DUE TO TIME LIMIT\n")  # not a job log
    other = storage.slurm_job_logdir(tmp_path, "fc3", ["mace-mp-0-medium", "mp-22862"])
    other.mkdir(parents=True)
    (other / "104.log").write_text("DUE TO TIME LIMIT\n")
    assert storage.slurm_time_limit_kills(tmp_path, "fc3", ["mace-mp-0-medium", "mp-804"]) == 1
    assert storage.slurm_time_limit_kills(tmp_path, "kappa", ["mace-mp-0-medium", "mp-804"]) == 0
