"""The SLURM profile against a real one-node SLURM (munged + slurmctld + slurmd on
loopback, no accounting; tests/slurm/cluster.py), driven by
snakemake-executor-plugin-slurm with profiles/slurm plus the CI overlay
(tests/slurm/ci-overlay.yaml). Skipped, with the reason, where SLURM cannot start.

Every snakemake head runs under ``timeout -s KILL`` so a hung status loop cannot eat CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import storage
from kappaflow.gates import OK

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
from cluster import LocalSlurm, SlurmUnavailable, deep_merge, merged_profile

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]
USER_PROFILE = REPO / "profiles" / "slurm" / "config.v8+.yaml"
OVERLAY = Path(__file__).parent / "slurm" / "ci-overlay.yaml"
COMPUTE_RULES = ["relax", "fc2", "fc3", "kappa", "gruneisen", "gruneisen_fc3_check"]
MATERIALS = ["Cu-fcc", "Ag-fcc"]
HEAD_TIMEOUT_S = 900  # hard limit of one snakemake head (SIGKILL)


@pytest.fixture
def slurm():
    # short path: munge's unix socket must fit in sun_path (108 bytes)
    root = Path(tempfile.mkdtemp(prefix="kfslurm-", dir="/tmp"))
    cluster = LocalSlurm(root, mem_mb=8000)
    try:
        cluster.start()
    except (SlurmUnavailable, OSError, subprocess.CalledProcessError) as exc:
        cluster.stop()
        log = cluster.logs() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"SLURM cannot start here: {exc}\n{log[-2000:]}")
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def head(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """One snakemake head process, killed hard after HEAD_TIMEOUT_S."""
    return subprocess.run(
        [
            *("timeout", "-s", "KILL", str(HEAD_TIMEOUT_S)),
            *(sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")),
            *("--directory", str(workdir), *args),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def dot_test_dir(parent: Path, name: str, **config_changes) -> Path:
    workdir = parent / name
    workdir.mkdir()
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config.update(config_changes)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(REPO / ".test" / "structures.extxyz", workdir)
    return workdir


def submitted(output: str) -> dict[str, str]:
    """SLURM job id -> plugin log of every submission the head reported."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", output))


def banner_job_id(log: Path) -> str | None:
    m = re.search(r"\[kappaflow\] job start: .*scheduler=slurm job_id=(\d+)", log.read_text())
    return m[1] if m else None


def assert_same_results(a: Path, b: Path) -> None:
    """Every number of two runs' per-material outputs and tables agrees."""
    for material in MATERIALS:
        for name in ("kappa.hdf5", "gruneisen.hdf5"):
            da, _ = storage.read_hdf5(a / "results/emt" / material / name)
            db, _ = storage.read_hdf5(b / "results/emt" / material / name)
            assert set(da) == set(db), (material, name)
            for key in da:
                x, y = np.asarray(da[key]), np.asarray(db[key])
                if x.dtype.kind in "fc":
                    np.testing.assert_allclose(x, y, rtol=1e-10, atol=0, err_msg=f"{name}:{key}")
                else:
                    assert np.array_equal(x, y), f"{material} {name}:{key}"
        ka = storage.read_json(a / "results/emt" / material / "kappa.json")
        kb = storage.read_json(b / "results/emt" / material / "kappa.json")
        assert ka["status"] == kb["status"] == OK
        np.testing.assert_allclose(ka["kappa_TOT_ave"], kb["kappa_TOT_ave"], rtol=1e-10)
        ga = storage.read_json(a / "results/emt" / material / "gruneisen.json")
        gb = storage.read_json(b / "results/emt" / material / "gruneisen.json")
        assert ga["gamma"] == pytest.approx(gb["gamma"], rel=1e-10)
    ta = storage.read_csv(a / "results/emt/gruneisen-metrics.csv")
    tb = storage.read_csv(b / "results/emt/gruneisen-metrics.csv")
    np.testing.assert_allclose(ta["gamma"], tb["gamma"], rtol=1e-10)


def test_dot_test_on_slurm_equals_local_run(slurm, tmp_path, reference_dir):
    env = {**slurm.env(), "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)}
    profile = merged_profile(USER_PROFILE, OVERLAY, tmp_path / "profile")

    on_slurm = dot_test_dir(tmp_path, "slurm")
    proc = head(on_slurm, env, "--profile", str(profile), "--workflow-profile", "none")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-15000:]}\n{slurm.logs()}"
    assert f"Using profile {profile}" in proc.stdout

    # every compute job ran as a SLURM job: its rule log names the id the head submitted
    jobs = submitted(proc.stdout)
    assert len(jobs) == len(COMPUTE_RULES) * len(MATERIALS), sorted(jobs.values())
    seen = set()
    for rule in COMPUTE_RULES:
        for material in MATERIALS:
            job_id = banner_job_id(on_slurm / "logs" / rule / "emt" / f"{material}.log")
            assert job_id in jobs, (rule, material, job_id)
            assert f"/rule_{rule}/emt_{material}/{job_id}.log" in jobs[job_id]
            seen.add(job_id)
    assert seen == set(jobs)
    # aggregation stayed local (no SLURM job, no scheduler in the record)
    for rule in ("gather", "metrics", "summary", "gruneisen_metrics", "alpha_plot"):
        assert re.search(rf"^localrule {rule}:$", proc.stdout, re.MULTILINE), rule
        assert f"rule_{rule}/" not in proc.stdout
    record = storage.read_json(on_slurm / "results/emt/Cu-fcc/kappa.json")
    assert record["provenance"]["scheduler"]["scheduler"] == "slurm"
    assert record["provenance"]["scheduler"]["job_id"] in jobs
    # the merged profile's resources reached SLURM: threads -> CPUs (<= 2), overlay
    # memory, kappaflow's runtime per rule, no GPU anywhere
    expected = {  # rule -> (CPUs, MB, time limit)
        "relax": (1, 2000, "00:30:00"),
        "fc2": (1, 3000, "01:00:00"),
        "fc3": (1, 2000, "06:00:00"),
        "kappa": (2, 2000, "12:00:00"),
        "gruneisen": (1, 3000, "02:00:00"),
        "gruneisen_fc3_check": (1, 2000, "01:00:00"),
    }
    for job_id, log in jobs.items():
        rule = re.search(r"/rule_(\w+)/", log)[1]
        info = slurm.job(job_id)
        cpus, mem, limit = expected[rule]
        assert info["JobState"] == "COMPLETED", (rule, info)
        assert (int(info["NumCPUs"]), info["MinMemoryNode"], info["TimeLimit"]) == (
            cpus,
            f"{mem}M",
            limit,
        ), (rule, info)
        assert "gpu" not in info.get("TRES", "") + info.get("TresPerNode", ""), (rule, info)

    # the same workflow run locally (default profile, 2 cores) gives the same numbers
    local = dot_test_dir(tmp_path, "local")
    proc_local = head(local, env, "--cores", "2")
    assert proc_local.returncode == 0, proc_local.stdout[-15000:]
    assert "submitted with SLURM" not in proc_local.stdout
    assert banner_job_id(local / "logs/kappa/emt/Cu-fcc.log") is None
    assert_same_results(on_slurm, local)


def test_time_limit_kill_is_resubmitted_with_a_raised_runtime(slurm, tmp_path, reference_dir):
    """fc3 of a deliberately slow model (EMT + 0.13 s per atom evaluated: 49 supercells
    x 27 atoms ~ 172 s) against a 1-minute base limit: SLURM kills it (60-90 s after
    the start: slurmctld checks limits every 30 s). The next invocation resubmits only
    fc3, with 2 minutes, and (the model made fast through its environment knob) it
    finishes; relax and fc2, finished in the first invocation, are not recomputed."""
    env = {
        **slurm.env(),
        "KAPPAFLOW_REFERENCE_DIR": str(reference_dir),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent / "slurm"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    overlay = deep_merge(
        yaml.safe_load(OVERLAY.read_text()), {"set-resources": {"fc3": {"runtime_base": 1}}}
    )
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    profile = merged_profile(USER_PROFILE, tmp_path / "overlay.yaml", tmp_path / "profile")
    workdir = dot_test_dir(
        tmp_path,
        "timeout",
        models=["slow-emt"],
        materials=["Cu-fcc"],
        model_definitions={
            "slow-emt": {
                "family": "ase",
                "factory": "slow_calculator:slow_emt",
                "kwargs": {"seconds_per_atom": 0.13},
            }
        },
    )
    target = "results/slow-emt/Cu-fcc/fc3.hdf5"
    args = ("--profile", str(profile), "--workflow-profile", "none", target)

    first = head(workdir, {**env, "SLOW_EMT_SECONDS_PER_ATOM": "0.13"}, *args)
    assert first.returncode != 0, first.stdout[-10000:]
    assert "SLURM status is: 'TIMEOUT'" in first.stdout, first.stdout[-10000:]
    killed = {j: log for j, log in submitted(first.stdout).items() if "/rule_fc3/" in log}
    assert len(killed) == 1
    assert "DUE TO TIME LIMIT" in Path(next(iter(killed.values()))).read_text()
    assert "runtime=1," in Path(next(iter(killed.values()))).read_text()
    assert slurm.job(next(iter(killed)))["JobState"] == "TIMEOUT"
    assert not (workdir / target).exists()
    finished = {
        p: p.stat().st_mtime_ns
        for p in (workdir / "results/slow-emt/Cu-fcc").iterdir()
        if p.name in ("relaxed.extxyz", "fc2.hdf5", "phonons.json", "forces_fc2.hdf5")
    }
    assert len(finished) == 4

    second = head(workdir, {**env, "SLOW_EMT_SECONDS_PER_ATOM": "0.001"}, *args)
    assert second.returncode == 0, second.stdout[-10000:] + slurm.logs()
    again = submitted(second.stdout)
    assert len(again) == 1 and "/rule_fc3/" in next(iter(again.values())), again
    log = Path(next(iter(again.values()))).read_text()
    assert "runtime=2," in log, log[-2000:]
    assert slurm.job(next(iter(again)))["TimeLimit"] == "00:02:00"
    assert "DUE TO TIME LIMIT" not in log
    assert (workdir / target).is_file()
    forces, _ = storage.read_hdf5(workdir / "results/slow-emt/Cu-fcc/forces_fc3.hdf5")
    assert np.asarray(forces["forces"]).shape == (49, 27, 3)
    # nothing that had finished was recomputed
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert not re.search(r"^rule (relax|fc2):$", second.stdout, re.MULTILINE)
