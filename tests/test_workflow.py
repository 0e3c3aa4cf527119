"""The Snakemake workflow: lint, dry runs of the default config, config errors, and a
real end-to-end run of the tiny ``.test/`` workflow (EMT, two metals, two temperatures)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import storage
from kappaflow.gates import OK

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
N_MATERIALS = 103
MODELS = ["mace-mp-0-medium", "chgnet-0.3.0", "sevennet-0"]
PER_MATERIAL_RULES = ["relax", "fc2", "fc3", "kappa", "gruneisen", "gruneisen_fc3_check"]
TEST_MATERIALS = ["Cu-fcc", "Ag-fcc"]
TEST_TEMPERATURES = [300.0, 600.0]
AGGREGATION_RULES = {"gather", "metrics", "summary", "kappa_vs_temperature", "leaderboard", "all"}
# rule -> (log, benchmark) of the .test run, as declared in rules/*.smk
PER_MATERIAL_LOGS = {
    rule: (f"logs/{rule}/emt/{{m}}.log", f"logs/benchmark/{rule}/emt/{{m}}.tsv")
    for rule in PER_MATERIAL_RULES
}
AGGREGATION_LOGS = {
    "gather": ("logs/gather/emt.log", "logs/benchmark/gather/emt.tsv"),
    "metrics": ("logs/metrics/emt.log", "logs/benchmark/metrics/emt.tsv"),
    "summary": ("logs/summary/summary.log", "logs/benchmark/summary/summary.tsv"),
    "kappa_vs_temperature": ("logs/kappa_vs_t/emt.log", "logs/benchmark/kappa_vs_t/emt.tsv"),
    "leaderboard": (
        "logs/leaderboard/leaderboard.log",
        "logs/benchmark/leaderboard/leaderboard.tsv",
    ),
    **{
        rule: (f"logs/{rule}/emt.log", f"logs/benchmark/{rule}/emt.tsv")
        for rule in ("gruneisen_metrics", "gamma_parity_plot", "alpha_plot")
    },
}


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str]


def snakemake(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS``; stdout and stderr merged into ``.stdout``."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"snakemake exited {proc.returncode}:\n{proc.stdout[-20000:]}"


def job_stats(output: str) -> dict[str, int]:
    """The first 'Job stats:' table of a snakemake run ({} when there is nothing to do)."""
    lines = output.splitlines()
    try:
        start = lines.index("Job stats:")
    except ValueError:
        return {}
    counts: dict[str, int] = {}
    for line in lines[start + 3 :]:  # skip the "job count" header and the dashes
        name, _, count = line.rpartition(" ")
        counts[name.strip()] = int(count)
        if name.strip() == "total":
            break
    return counts


def planned_jobs(output: str) -> list[Job]:
    """Every 'rule X:' / 'localrule X:' block of a (dry) run, with its wildcards."""
    jobs = []
    for block in re.split(r"\n\s*\n", output):
        m = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.MULTILINE)
        if not m:
            continue
        w = re.search(r"^\s+wildcards: (.*)$", block, flags=re.MULTILINE)
        wildcards = dict(kv.split("=", 1) for kv in w[1].split(", ")) if w else {}
        jobs.append(Job(m[1], wildcards))
    return jobs


def files_under(*dirs: Path) -> set[Path]:
    return {p for d in dirs if d.exists() for p in d.rglob("*")}


@pytest.fixture(scope="module")
def env(reference_dir) -> dict[str, str]:
    return {**os.environ, "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)}


@pytest.fixture(scope="module")
def dry_run(env):
    """Dry run of the DEFAULT config in the repository root; must not write results/ or logs/."""

    def run(*args: str) -> tuple[dict[str, int], list[Job], str]:
        before = files_under(REPO / "results", REPO / "logs")
        proc = snakemake("--snakefile", "Snakefile", "-n", *args, cwd=REPO, env=env)
        check_ok(proc)
        assert files_under(REPO / "results", REPO / "logs") == before, "a dry run wrote files"
        stats, jobs = job_stats(proc.stdout), planned_jobs(proc.stdout)
        assert stats, f"no job stats in:\n{proc.stdout[-5000:]}"
        assert stats["total"] == len(jobs), "job stats and planned jobs disagree"
        return stats, jobs, proc.stdout

    return run


def kappa_jobs_per_model(jobs: list[Job]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for job in jobs:
        if job.rule == "kappa":
            out.setdefault(job.wildcards["model"], set()).add(job.wildcards["material"])
    return out


# ------------------------------------------------------------------ lint, dry runs


def test_lint(env):
    proc = snakemake("--lint", cwd=REPO, env=env)
    check_ok(proc)


def test_dry_run_default_config(dry_run):
    stats, jobs, _ = dry_run()
    n_jobs = N_MATERIALS * len(MODELS)
    for rule in PER_MATERIAL_RULES:
        assert stats[rule] == n_jobs, f"{rule}: {stats}"
    for rule in ("gather", "metrics", "gruneisen_metrics", "gamma_parity_plot", "alpha_plot"):
        assert stats[rule] == len(MODELS)
    assert stats["summary"] == 1
    assert stats["all"] == 1
    assert "kappa_vs_temperature" not in stats  # one temperature: no κ(T) plot
    per_model = kappa_jobs_per_model(jobs)
    assert sorted(per_model) == sorted(MODELS)
    assert all(len(m) == N_MATERIALS for m in per_model.values())


def test_dry_run_gruneisen_switched_off(dry_run):
    stats, _, _ = dry_run("--config", "gruneisen={enabled: false}")
    assert stats["kappa"] == N_MATERIALS * len(MODELS)
    assert not {r for r in stats if "gruneisen" in r or r in ("alpha_plot", "gamma_parity_plot")}


def test_dry_run_subset_of_materials(dry_run):
    stats, jobs, _ = dry_run("--config", "materials=[mp-22862,wz]")
    per_model = kappa_jobs_per_model(jobs)
    assert sorted(per_model) == sorted(MODELS)
    for materials in per_model.values():
        assert len(materials) == 34  # mp-22862 (rock salt) + the 33 wurtzites
        assert "mp-22862" in materials
    assert stats["kappa"] == 34 * len(MODELS)
    for rule in PER_MATERIAL_RULES:
        assert stats[rule] == stats["kappa"]


def _one_kappa_job_per_material(stats, jobs):
    assert stats["kappa"] == N_MATERIALS * len(MODELS)
    per_model = kappa_jobs_per_model(jobs)
    assert all(len(m) == N_MATERIALS for m in per_model.values())
    assert stats["kappa_vs_temperature"] == len(MODELS)


def test_dry_run_two_temperatures_from_a_configfile(dry_run, tmp_path):
    (tmp_path / "temps.yaml").write_text("temperatures: [300, 600]\n")
    stats, jobs, _ = dry_run("--configfile", tmp_path / "temps.yaml")
    _one_kappa_job_per_material(stats, jobs)


def test_dry_run_two_temperatures_from_the_command_line(env):
    # `--config` parses nested values with YAML's BaseLoader: [300,600] -> ['300', '600']
    proc = snakemake(
        "--snakefile", "Snakefile", "-n", "--config", "temperatures=[300,600]", cwd=REPO, env=env
    )
    check_ok(proc)
    _one_kappa_job_per_material(job_stats(proc.stdout), planned_jobs(proc.stdout))


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (["--config", "foo=1"], None, ["foo"]),
        (["--config", "phono3py={backend: Fortran}"], None, ["backend", "Fortran"]),
        ([], {"phono3py": {"backend": "Fortran"}}, ["backend", "Fortran"]),
        ([], {"relax": {"optimzer": "FIRE"}}, ["optimzer"]),
        ([], {"temperatures": [-5]}, ["temperatures", "-5"]),
        ([], {"model_definitions": {"bad-model": {"family": "gpaw"}}}, ["family", "gpaw"]),
        (["--config", "models=[no-such-model]"], None, ["no-such-model"]),
        ([], {"finetune": {"ft": {"base": "chgnet-0.3.0", "labels": ["x"]}}}, ["ft.base"]),
        ([], {"finetune": {"ft": {"base": "mace-mp-0-medium"}}}, ["finetune.ft", "labels"]),
        ([], {"finetune": {"emt": {"base": "mace-mp-0-medium", "labels": ["x"]}}}, ["emt"]),
        (
            [],
            {"finetune": {"ft": {"base": "mace-mp-0-medium", "labels": ["x"], "train": {"lr": 0}}}},
            ["lr"],
        ),
        (["--config", "reference={kappa: model:no-such-model}"], None, ["no-such-model"]),
    ],
    ids=[
        "unknown-key",
        "bad-value",
        "configfile-bad-value",
        "configfile-typo",
        "negative-T",
        "bad-family",
        "unknown-model",
        "finetune-base-not-mace",
        "finetune-no-labels",
        "finetune-key-taken",
        "finetune-bad-lr",
        "reference-unknown-model",
    ],
)
def test_bad_config_fails_at_start(env, tmp_path, args, config, expected):
    if config is not None:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
        args = [*args, "--configfile", str(tmp_path / "bad.yaml")]
    before = files_under(REPO / "results", REPO / "logs")
    proc = snakemake("--snakefile", "Snakefile", "-n", *args, cwd=REPO, env=env)
    assert proc.returncode != 0, proc.stdout[-5000:]
    assert "Job stats:" not in proc.stdout  # refused before planning any job
    assert "ValidationError" in proc.stdout or "Error" in proc.stdout
    for word in expected:
        assert word in proc.stdout, f"{word!r} not named in:\n{proc.stdout[-5000:]}"
    assert files_under(REPO / "results", REPO / "logs") == before


def test_dry_run_finetune_recipe_adds_its_chain_and_model_keys(dry_run, tmp_path):
    """A recipe trains once, benchmarks base + fine-tuned key, compares them; the model
    file is an input of every force rule of the fine-tuned key."""
    recipe = {
        "models": ["chgnet-0.3.0"],
        "materials": ["mp-22862", "mp-23193"],
        "finetune": {
            "mp0-ft": {
                "base": "mace-mp-0-medium",
                "train_materials": ["mp-22862"],
                "label_with": "sevennet-0",
            }
        },
        "reference": {"dir": None, "kappa": "model:sevennet-0"},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(recipe))
    stats, jobs, output = dry_run("--configfile", tmp_path / "ft.yaml")
    for rule in ("finetune_export", "finetune_label", "finetune_check", "finetune_train"):
        assert stats[rule] == 1
    assert stats["finetune_compare"] == 1
    per_model = kappa_jobs_per_model(jobs)
    assert sorted(per_model) == sorted(["chgnet-0.3.0", "mace-mp-0-medium", "mp0-ft", "sevennet-0"])
    assert "results/finetune/mp0-ft/mp0-ft.model" in output
    assert "results/sevennet-0/kappa.json.gz" in output  # the reference model's table


# --------------------------------------------------------------- .test end to end


@dataclass
class Run:
    workdir: Path
    output: str
    stats: dict[str, int]


def run_dot_test(workdir: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return snakemake(
        "-s",
        REPO / "Snakefile",
        "--directory",
        workdir,
        "--cores",
        "2",
        *extra,
        cwd=workdir,
        env=env,
    )


@pytest.fixture(scope="module")
def dot_test_run(tmp_path_factory, env) -> Run:
    """The .test workflow run once for real, in a temporary directory."""
    workdir = tmp_path_factory.mktemp("dot-test")
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, workdir / name)
    proc = run_dot_test(workdir, env)
    check_ok(proc)
    return Run(workdir, proc.stdout, job_stats(proc.stdout))


def test_dot_test_uses_the_default_profile(dot_test_run):
    profile = REPO / "profiles" / "default"
    assert f"Using workflow specific profile {profile}" in dot_test_run.output


def test_dot_test_outputs(dot_test_run):
    results = dot_test_run.workdir / "results"
    for rel in ("metrics.csv", "metrics.md", "emt/kappa.json.gz", "plots/kappa-vs-T-emt.svg"):
        assert (results / rel).is_file(), f"results/{rel} missing"
    assert dot_test_run.stats["kappa"] == len(TEST_MATERIALS)
    assert dot_test_run.stats["kappa_vs_temperature"] == 1
    for rel in ("emt/gruneisen-metrics.csv", "plots/alpha-V-emt.svg", "plots/gamma-parity-emt.svg"):
        assert (results / rel).is_file(), f"results/{rel} missing"
    summary = storage.read_csv(results / "metrics.csv").iloc[0]
    assert summary["gamma_n_materials"] == 0  # EMT metals have no DFT γ: computed, not scored
    gamma = storage.read_csv(results / "emt" / "gruneisen-metrics.csv").set_index("mp_id")
    for material in TEST_MATERIALS:
        record = storage.read_json(results / "emt" / material / "gruneisen.json")
        assert record["status"] == OK
        assert 1.5 < record["gamma"] < 3.5, material  # Cu ≈ 2.0, Ag ≈ 2.4 (experiment)
        assert gamma.loc[material, "gamma"] == pytest.approx(record["gamma"])
        assert gamma.loc[material, "note"].startswith("no DFT γ")
        check = storage.read_json(results / "emt" / material / "gruneisen_fc3_check.json")
        assert check["status"] == OK
        curve = storage.read_csv(results / "emt" / material / "thermal_expansion.csv")
        assert curve["alpha_V"].gt(0).all()


def test_dot_test_logs_and_benchmarks(dot_test_run):
    expected = [
        p.format(m=m) for pair in PER_MATERIAL_LOGS.values() for p in pair for m in TEST_MATERIALS
    ]
    expected += [p for pair in AGGREGATION_LOGS.values() for p in pair]
    missing = [p for p in expected if not (dot_test_run.workdir / p).is_file()]
    assert not missing, f"missing logs/benchmarks: {missing}"
    ran = set(dot_test_run.stats) - {"all", "total"}
    assert ran == set(PER_MATERIAL_LOGS) | set(AGGREGATION_LOGS), "a rule ran without a log check"
    for rule in ran:
        for m in TEST_MATERIALS if rule in PER_MATERIAL_LOGS else [""]:
            rel = (PER_MATERIAL_LOGS.get(rule) or AGGREGATION_LOGS[rule])[1].format(m=m)
            header = (dot_test_run.workdir / rel).read_text().splitlines()[0]
            assert header.startswith("s\t"), f"{rel} is not a snakemake benchmark TSV"


def test_dot_test_kappa_at_both_temperatures_from_one_job(dot_test_run):
    results = dot_test_run.workdir / "results" / "emt"
    table = storage.read_kappa_table(results / "kappa.json.gz")
    assert sorted(table.index) == sorted(TEST_MATERIALS)
    for material in TEST_MATERIALS:
        record = storage.read_json(results / material / "kappa.json")
        assert record["status"] == OK
        assert record["temperatures"] == TEST_TEMPERATURES
        kappa = record["kappa_TOT_ave"]
        assert len(kappa) == len(TEST_TEMPERATURES)
        assert all(math.isfinite(k) and k > 0 for k in kappa), f"{material}: {kappa}"
        assert list(table.loc[material, "temperatures"]) == TEST_TEMPERATURES
        assert list(table.loc[material, "kappa_TOT_ave"]) == pytest.approx(kappa, rel=1e-9)


def test_dot_test_score_cli_on_own_output(dot_test_run, tmp_path):
    table = dot_test_run.workdir / "results" / "emt" / "kappa.json.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kappaflow.cli",
            "score",
            "--predictions",
            str(table),
            "--reference",
            str(table),
            "--out",
            "m.csv",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()[-4:]
    values = dict(line.split("=", 1) for line in lines)
    assert list(values) == ["n_materials", "mean_SRME", "mean_SRE", "n_failed"]
    assert int(values["n_materials"]) == len(TEST_MATERIALS)
    assert float(values["mean_SRME"]) == 0
    assert float(values["mean_SRE"]) == 0
    assert int(values["n_failed"]) == 0


def test_dot_test_rerun_has_nothing_to_do(dot_test_run, env):
    workdir = dot_test_run.workdir
    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    assert "Nothing to be done" in dry.stdout
    assert job_stats(dry.stdout) == {}
    before = {p: p.stat().st_mtime_ns for p in files_under(workdir / "results") if p.is_file()}
    proc = run_dot_test(workdir, env)
    check_ok(proc)
    assert "Nothing to be done" in proc.stdout
    after = {p: p.stat().st_mtime_ns for p in files_under(workdir / "results") if p.is_file()}
    assert after == before


def test_dot_test_deleted_kappa_reruns_only_that_material(dot_test_run, env, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(dot_test_run.workdir, workdir, symlinks=True)  # keeps mtimes
    target = workdir / "results" / "emt" / "Cu-fcc" / "kappa.hdf5"
    target.unlink()
    untouched = {
        p: p.stat().st_mtime_ns for p in (workdir / "results" / "emt" / "Ag-fcc").iterdir()
    }

    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    expected = {
        "kappa": 1,
        **{rule: 1 for rule in AGGREGATION_RULES},
        "total": 1 + len(AGGREGATION_RULES),
    }
    assert job_stats(dry.stdout) == expected
    kappa = [job for job in planned_jobs(dry.stdout) if job.rule == "kappa"]
    assert [job.wildcards for job in kappa] == [{"model": "emt", "material": "Cu-fcc"}]

    proc = run_dot_test(workdir, env)
    check_ok(proc)
    assert job_stats(proc.stdout) == expected
    assert target.is_file()
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched


def test_dot_test_threads_and_report(dot_test_run, env):
    """κ jobs ran with OMP/Rayon threads equal to the job's threads; the report builds."""
    for material in TEST_MATERIALS:
        record = json.loads(
            (dot_test_run.workdir / "results" / "emt" / material / "kappa.json").read_text()
        )
        threads = record["provenance"]["threads"]
        # the rule's default (1 per κ job, measured faster than 2-thread jobs on 2 cores),
        # the same in the job's first log line and in phono3py's OMP/Rayon variables
        log = (dot_test_run.workdir / "logs" / "kappa" / "emt" / f"{material}.log").read_text()
        assert log.splitlines()[0].startswith("[kappaflow] job start: threads=1 ")
        assert threads["OMP_NUM_THREADS"] == threads["RAYON_NUM_THREADS"] == "1"
        assert record["provenance"]["backend"] == "C"
        assert "Cu" in material or record["material"]["defaults_used"] == ["symm.no"]
    proc = run_dot_test(dot_test_run.workdir, env, "--report", "report.html")
    check_ok(proc)
    html = (dot_test_run.workdir / "report.html").read_text(errors="replace")
    assert "kappa-vs-T-emt.svg" in html and "metrics.csv" in html


def test_dot_test_report_in_a_browser(dot_test_run, env):
    """The report of the .test run in headless Chromium (tests/browser.py): every registered
    figure displayed and not blank, no console error, captions, the metrics table."""
    from browser import Browser, BrowserUnavailable, assert_report_ok

    report = dot_test_run.workdir / "report-browser.html"
    check_ok(run_dot_test(dot_test_run.workdir, env, "--report", report))
    try:
        with Browser(height=1600) as browser:
            results = assert_report_ok(
                report, browser, REPO / "logs" / "report_browser" / "dot-test"
            )
    except BrowserUnavailable as exc:
        pytest.skip(f"headless Chromium unavailable: {exc}")
    assert {"results/plots/alpha-V-emt.png", "results/plots/gamma-parity-emt.png"} <= set(results)


# ------------------------------------------------------------------ runtime limits


def _runtimes(output: str) -> dict[tuple[str, str], int]:
    """(rule, material) -> runtime of every planned job that has one."""
    out = {}
    for block in re.split(r"\n\s*\n", output):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.MULTILINE)
        material = re.search(r"material=([\w.+-]+)", block)
        runtime = re.search(r"runtime=(\d+)", block)
        if rule and material and runtime:
            out[(rule[1], material[1])] = int(runtime[1])
    return out


def test_runtime_doubles_after_a_slurm_time_limit_kill(env, tmp_path):
    """Base runtime per rule (kappaflow.runtime), `runtime_base` from set-resources, and
    x2 for every SLURM log of the same rule and material that says DUE TO TIME LIMIT
    (the plugin's layout: .snakemake/slurm_logs/rule_<rule>/<model>_<material>/<id>.log)."""
    from kappaflow.runtime import DEFAULT_RUNTIME_MINUTES

    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    logs = tmp_path / ".snakemake" / "slurm_logs"
    (logs / "rule_kappa" / "emt_Cu-fcc").mkdir(parents=True)
    (logs / "rule_kappa" / "emt_Cu-fcc" / "17.log").write_text(
        "slurmstepd: error: *** JOB 17 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***\n"
    )
    (logs / "rule_kappa" / "emt_Cu-fcc" / "18.log").write_text("finished, no kill\n")
    (logs / "rule_fc3" / "emt_Ag-fcc").mkdir(parents=True)
    for job in (20, 21):
        (logs / "rule_fc3" / "emt_Ag-fcc" / f"{job}.log").write_text("... DUE TO TIME LIMIT ***\n")
    proc = run_dot_test(tmp_path, env, "-n", "--set-resources", "relax:runtime_base=7")
    check_ok(proc)
    runtimes = _runtimes(proc.stdout)
    assert runtimes[("kappa", "Cu-fcc")] == 2 * DEFAULT_RUNTIME_MINUTES["kappa"]
    assert runtimes[("kappa", "Ag-fcc")] == DEFAULT_RUNTIME_MINUTES["kappa"]
    assert runtimes[("fc3", "Ag-fcc")] == 4 * DEFAULT_RUNTIME_MINUTES["fc3"]
    assert runtimes[("fc3", "Cu-fcc")] == DEFAULT_RUNTIME_MINUTES["fc3"]
    assert runtimes[("relax", "Cu-fcc")] == runtimes[("relax", "Ag-fcc")] == 7
    assert runtimes[("gruneisen", "Cu-fcc")] == DEFAULT_RUNTIME_MINUTES["gruneisen"]


def test_bad_runtime_base_fails_at_start_naming_it(env, tmp_path):
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    proc = run_dot_test(tmp_path, env, "-n", "--set-resources", "kappa:runtime_base=0")
    assert proc.returncode != 0
    assert "kappa:runtime_base=0" in proc.stdout and "Job stats:" not in proc.stdout


def _planned_resources(output: str) -> dict[str, dict[str, str]]:
    """rule -> {resource: value} from a dry run's job blocks."""
    resources = {}
    for block in re.split(r"\n\s*\n", output):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.MULTILINE)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        if rule and res:
            resources[rule[1]] = dict(kv.split("=", 1) for kv in res[1].split(", "))
    return resources


def test_slurm_profile_dry_run(env, tmp_path):
    """profiles/slurm parses with the pinned snakemake + plugin: force rules ask for a
    GPU, the conductivity for none, runtimes are kappaflow's (no SLURM needed)."""
    from kappaflow.runtime import DEFAULT_RUNTIME_MINUTES

    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    # a fine-tuning recipe, so the training chain is planned too (the dry run never loads
    # the placeholder base checkpoint)
    (tmp_path / "base.model").write_bytes(b"placeholder")
    recipe = {
        "model_definitions": {"tiny": {"family": "mace", "path": str(tmp_path / "base.model")}},
        "finetune": {
            "tiny-ft": {"base": "tiny", "train_materials": ["Cu-fcc"], "label_with": "emt"}
        },
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_dot_test(
        tmp_path, env, "-n", "--workflow-profile", REPO / "profiles" / "slurm",
        "--configfile", tmp_path / "ft.yaml",
    )  # fmt: skip
    check_ok(proc)
    assert f"Using workflow specific profile {REPO / 'profiles' / 'slurm'}" in proc.stdout
    resources = _planned_resources(proc.stdout)
    for rule in ("relax", "fc2", "fc3", "gruneisen", "finetune_label", "finetune_train"):
        assert resources[rule].get("gpu") == "1", (rule, resources[rule])
    for rule in ("kappa", "gruneisen_fc3_check", "gather", "metrics"):
        assert resources[rule].get("gpu", "0") == "0", (rule, resources[rule])
    for rule, minutes in DEFAULT_RUNTIME_MINUTES.items():
        assert resources[rule]["runtime"] == str(minutes), rule
    assert int(resources["kappa"]["mem_mb"]) >= 16000


def test_gpu_profile_dry_run(env, tmp_path):
    """profiles/gpu parses: force rules hold the one `gpu` unit, so one force job at a time
    uses the GPU, while the CPU-only conductivity jobs run beside it."""
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    proc = run_dot_test(tmp_path, env, "-n", "--workflow-profile", REPO / "profiles" / "gpu")
    check_ok(proc)
    assert f"Using workflow specific profile {REPO / 'profiles' / 'gpu'}" in proc.stdout
    resources = _planned_resources(proc.stdout)
    for rule in ("relax", "fc2", "fc3", "gruneisen"):
        assert resources[rule].get("gpu") == "1", (rule, resources[rule])
    assert resources["kappa"].get("gpu", "0") == "0"  # phono3py's engine: CPU only


def test_batched_path_for_a_model_without_one_fails_at_start(env, tmp_path):
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, tmp_path / name)
    proc = run_dot_test(tmp_path, env, "-n", "--config", "forces={path: batched}")
    assert proc.returncode != 0
    assert "forces.path=batched, but model(s) emt have no batched call" in proc.stdout
    assert "Job stats:" not in proc.stdout


def _with_phono3py(workdir: Path, **keys) -> None:
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["phono3py"].update(keys)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def test_kappa_only_settings_rerun_kappa_jobs_only(dot_test_run, env, tmp_path):
    """phono3py.phph_engine: kappaflow (or kappa_convention) changes the κ rule's params only:
    the κ jobs and what aggregates them re-run, no force job; the κ job gets a GPU unless
    the profile keeps it on the CPU; the engine's κ equals phono3py's to 1e-8, its log has
    progress lines, its hdf5 names the engine."""
    workdir = tmp_path / "copy"
    shutil.copytree(dot_test_run.workdir, workdir, symlinks=True)
    force_files = {  # every per-material output but κ's (relax, fc2, fc3, Grüneisen)
        p: p.stat().st_mtime_ns
        for m in TEST_MATERIALS
        for p in (workdir / "results" / "emt" / m).iterdir()
        if p.name not in ("kappa.hdf5", "kappa.json")
    }
    assert any(p.name == "fc3.hdf5" for p in force_files)
    _with_phono3py(workdir, kappa_convention="phono3py4")
    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    assert {j.rule for j in planned_jobs(dry.stdout)} <= {"kappa"} | AGGREGATION_RULES
    assert job_stats(dry.stdout)["kappa"] == len(TEST_MATERIALS)

    _with_phono3py(workdir, kappa_convention="reference", phph_engine="kappaflow")
    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    assert {j.rule for j in planned_jobs(dry.stdout)} <= {"kappa"} | AGGREGATION_RULES
    assert _planned_resources(dry.stdout)["kappa"]["gpu"] == "1"
    on_cpu = run_dot_test(workdir, env, "-n", "--set-resources", "kappa:device=cpu")
    check_ok(on_cpu)
    assert _planned_resources(on_cpu.stdout)["kappa"].get("gpu", "0") == "0"

    proc = run_dot_test(workdir, env, "--set-resources", "kappa:device=cpu")
    check_ok(proc)
    assert job_stats(proc.stdout)["kappa"] == len(TEST_MATERIALS)
    assert {p: p.stat().st_mtime_ns for p in force_files} == force_files
    for material in TEST_MATERIALS:
        old = dot_test_run.workdir / "results" / "emt" / material / "kappa.hdf5"
        new = workdir / "results" / "emt" / material / "kappa.hdf5"
        (a, _), (b, attrs) = storage.read_hdf5(old), storage.read_hdf5(new)
        assert attrs["phph_engine"] == "kappaflow" and attrs["phph_device"] == "cpu"
        assert attrs["kappa_convention"] == "reference"
        for key in ("kappa_TOT_RTA", "kappa_P_RTA", "kappa_C", "mode_kappa_TOT", "gamma"):
            scale = np.abs(a[key]).max()
            assert np.abs(b[key] - a[key]).max() <= 1e-8 * scale, (material, key)
        log = (workdir / "logs" / "kappa" / "emt" / f"{material}.log").read_text()
        assert "ph-ph engine kappaflow on cpu" in log
        assert re.search(r"κ: \d+/\d+ grid points \(100 %\)", log), log[-2000:]


def test_dot_test_matches_the_golden_values(dot_test_run):
    """Every number of the .test run equals the commit before the redesign (issue 14), after
    the two allowed unifications (one status field, one transport_type string)."""
    from golden.make_golden import collect, diff, load_golden, unify

    golden = load_golden()
    mismatches = diff(
        unify(golden["values"]["dot-test"]), collect(dot_test_run.workdir), rtol=1e-10
    )
    assert not mismatches, f"differs from {golden['commit'][:10]}:\n" + "\n".join(mismatches[:30])


def test_cli_and_workflow_agree(dot_test_run, env, tmp_path):
    """`kappaflow kappa --config .test/config.yaml` writes the workflow's numbers."""
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", "emt", "--material", "Cu-fcc",
         "--structures", str(dot_test_run.workdir / "structures.extxyz"), "--config",
         str(dot_test_run.workdir / "config.yaml"), "--out", str(out), "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    wf = dot_test_run.workdir / "results" / "emt" / "Cu-fcc"
    cli_rec, wf_rec = storage.read_json(out / "kappa.json"), storage.read_json(wf / "kappa.json")
    assert cli_rec["temperatures"] == wf_rec["temperatures"] == TEST_TEMPERATURES
    np.testing.assert_allclose(cli_rec["kappa_TOT_RTA"], wf_rec["kappa_TOT_RTA"], rtol=1e-10)
    cli_h5, _ = storage.read_hdf5(out / "kappa.hdf5")
    wf_h5, _ = storage.read_hdf5(wf / "kappa.hdf5")
    for name in ("mode_kappa_TOT_ave", "frequency", "gamma"):
        np.testing.assert_allclose(cli_h5[name], wf_h5[name], rtol=1e-10, atol=1e-14)
    for t, k in zip(TEST_TEMPERATURES, cli_rec["kappa_TOT_ave"], strict=True):
        assert f"kappa_TOT_ave_{t:g}K={k:.10g}" in proc.stdout


# ------------------------------------------------- issue 13: per-material structures, config

NI_FRAME = (
    "1\n"
    'Lattice="0.0 {h} {h} {h} 0.0 {h} {h} {h} 0.0" Properties=species:S:1:pos:R:3 '
    'material_id=Ni-fcc fc2_supercell="2 2 2" fc3_supercell="2 2 2" q_mesh="4 4 4" '
    'pbc="T T T"\n'
    "Ni 0.0 0.0 0.0\n"
)


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _per_material_jobs(output: str) -> dict[str, set[str]]:
    """rule -> materials of the planned per-material jobs."""
    out: dict[str, set[str]] = {}
    for job in planned_jobs(output):
        if "material" in job.wildcards:
            out.setdefault(job.rule, set()).add(job.wildcards["material"])
    return out


def test_appended_and_edited_frames_rerun_only_their_material(dot_test_run, env, tmp_path):
    """The relax job depends on its material's frame (a content-hash param), not on the
    structures file: appending a frame runs only the new material (plus aggregation), and
    editing a frame re-runs only that material."""
    workdir = tmp_path / "copy"
    shutil.copytree(dot_test_run.workdir, workdir, symlinks=True)  # keeps mtimes
    structures = workdir / "structures.extxyz"
    untouched = {m: _mtimes(workdir / "results" / "emt" / m) for m in TEST_MATERIALS}

    structures.write_text(structures.read_text() + NI_FRAME.format(h=1.76))
    proc = run_dot_test(workdir, env)
    check_ok(proc)
    jobs = _per_material_jobs(proc.stdout)
    assert jobs and all(materials == {"Ni-fcc"} for materials in jobs.values()), jobs
    assert set(jobs) == set(PER_MATERIAL_RULES)
    assert {r for r in job_stats(proc.stdout) if r not in jobs} <= AGGREGATION_RULES | {
        "total", "gruneisen_metrics", "gamma_parity_plot", "alpha_plot",
    }  # fmt: skip
    for m in TEST_MATERIALS:
        assert _mtimes(workdir / "results" / "emt" / m) == untouched[m], m
    assert storage.read_json(workdir / "results" / "emt" / "Ni-fcc" / "kappa.json")

    ni = _mtimes(workdir / "results" / "emt" / "Ni-fcc")
    structures.write_text(structures.read_text().replace("1.76", "1.77"))
    proc = run_dot_test(workdir, env)
    check_ok(proc)
    jobs = _per_material_jobs(proc.stdout)
    assert set(jobs) == set(PER_MATERIAL_RULES)
    assert all(materials == {"Ni-fcc"} for materials in jobs.values()), jobs
    assert "Params have changed since last execution" in proc.stdout
    for m in TEST_MATERIALS:
        assert _mtimes(workdir / "results" / "emt" / m) == untouched[m], m
    assert _mtimes(workdir / "results" / "emt" / "Ni-fcc").keys() == ni.keys()
    assert all(p.stat().st_mtime_ns > t for p, t in ni.items() if "results" in p.parts)

    # an edit of Ag's frame plans Ag's jobs only (dry run)
    structures.write_text(structures.read_text().replace("2.025", "2.03"))
    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    jobs = _per_material_jobs(dry.stdout)
    assert all(materials == {"Ag-fcc"} for materials in jobs.values()), jobs
    assert set(jobs) == set(PER_MATERIAL_RULES)

    # touching the file without changing any frame plans nothing
    structures.write_text(structures.read_text().replace("2.03", "2.025"))
    dry = run_dot_test(workdir, env, "-n")
    check_ok(dry)
    assert "Nothing to be done" in dry.stdout, dry.stdout[-3000:]


def test_misspelled_config_key_refused_by_cli_and_workflow_alike(env, tmp_path):
    """`temperaturs: [600]` (issue 13): the CLI used to compute at 300 K; both entry points
    refuse it with the same message, before any work."""
    (tmp_path / "typo.yaml").write_text("temperaturs: [600]\n")
    expected = "config: Additional properties are not allowed ('temperaturs' was unexpected)"
    dry = snakemake("--snakefile", "Snakefile", "-n", "--configfile", tmp_path / "typo.yaml",
                    cwd=REPO, env=env)  # fmt: skip
    assert dry.returncode != 0
    assert expected in dry.stdout and "Job stats:" not in dry.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", "kappa", "--model", "emt", "--material",
         "Cu-fcc", "--structures", str(REPO / ".test" / "structures.extxyz"), "--config",
         str(tmp_path / "typo.yaml"), "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"kappaflow kappa: error: {expected}"
    assert not (tmp_path / "out").exists()
