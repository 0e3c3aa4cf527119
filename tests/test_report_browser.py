"""The HTML report, opened in headless Chromium (tests/browser.py, DevTools over a pipe).

The figures and tables expected come from the report's own registry (the ``results`` and
``categories`` data Snakemake embeds), so the checks follow the workflow as rules are added:
every registered image must be displayed by clicking through the report's menus and be
non-blank, every registered file has a caption, the page logs no console error, and the
metrics table (and the leaderboard, once a rule writes results/leaderboard.csv) is there.
Screenshots go to logs/report_browser/ for a person to look at.
"""

from __future__ import annotations

import base64
import io as stdio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from browser import (
    IMAGE_MIMES,
    Browser,
    BrowserUnavailable,
    check_page,
    pixel_stats,
    report_label_problems,
    report_registry,
    walk_snakemake_report,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SHOTS = REPO / "logs" / "report_browser"


@pytest.fixture
def browser():
    try:
        with Browser(height=1600) as b:
            yield b
    except BrowserUnavailable as exc:
        pytest.skip(f"headless Chromium unavailable: {exc}")


def test_browser_helper_on_a_fixture_page(browser):
    """Known page: 5 figure-sized elements, 2 of them blank (an empty canvas, a broken
    image), a 16 px icon that is not a figure, one table, one console.error and the failed
    load of the broken image."""
    page = browser.new_page()
    page.open(DATA / "browser_page.html")
    shot = SHOTS / "fixture.png"
    check = check_page(
        page, {"metrics": ["model", "mean_SRME", "0.1234"], "leaderboard": ["rank"]}, shot
    )
    assert [(f.kind, f.blank) for f in check.figures] == [
        ("svg", False), ("img", False), ("canvas", False), ("canvas", True), ("img", True),
    ]  # fmt: skip
    assert [(f.width, f.height) for f in check.figures[:2]] == [(240, 140), (160, 100)]
    assert all(f.variance > 0.01 and f.ink > 0.1 for f in check.figures[:3])
    assert check.tables == {"metrics": True, "leaderboard": False}
    assert len(check.console_errors) == 2
    assert any("fixture error 42" in e for e in check.console_errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in check.console_errors)
    variance, ink = pixel_stats(shot.read_bytes())
    assert variance > 0 and ink > 0.01


def _registry(labels: dict[str, dict]) -> dict:
    return {
        "results": {p: {"labels": lab} for p, lab in labels.items()},
        "categories": {"Metrics": {"Other": list(labels)}},
    }


def test_report_label_problems_predicts_the_toggle_crash():
    """Snakemake turns a second label with two values on half the results each into a
    toggle: with one model, the per-material table (table=per material) and the summary
    (model=all, table=summary) make rows that lack a toggle value, which crashes the report
    (seen in Chromium: TypeError reading 'mime_type'). Two models, or complete pairs, are fine."""
    one_model = {
        "results/emt/metrics.csv": {"model": "emt", "table": "per material"},
        "results/metrics.csv": {"model": "all", "table": "summary (csv)"},
    }
    problems = report_label_problems(_registry(one_model))
    assert len(problems) == 2 and "label 'table' becomes a toggle" in problems[0]
    two_models = {**one_model, "results/b/metrics.csv": {"model": "b", "table": "per material"}}
    assert report_label_problems(_registry(two_models)) == []
    pairs = {
        f"results/{m}-{t}.svg": {"model": m, "T": t} for m in ("a", "b") for t in ("300", "600")
    }
    assert report_label_problems(_registry(pairs)) == []  # a working toggle
    single_label = {"results/metrics.csv": {"table": "metrics"}, "results/lb.csv": {"table": "lb"}}
    assert report_label_problems(_registry(single_label)) == []


def _snakemake(workdir: Path, env: dict, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
         "--directory", str(workdir), "--cores", "2", *args],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-20000:]}"


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, reference_dir) -> Path:
    """The .test workflow run in a temporary directory, then ``snakemake --report``."""
    if shutil.which("chromium") is None and not os.environ.get("KAPPAFLOW_CHROMIUM"):
        pytest.skip("headless Chromium unavailable: no chromium on PATH (apt-get install chromium)")
    workdir = tmp_path_factory.mktemp("report")
    for name in ("config.yaml", "structures.extxyz"):
        shutil.copy(REPO / ".test" / name, workdir / name)
    env = {**os.environ, "KAPPAFLOW_REFERENCE_DIR": str(reference_dir)}
    _snakemake(workdir, env)
    _snakemake(workdir, env, "--report", "report.html")
    return workdir / "report.html"


def _registered_outputs(name: str) -> bool:
    """Whether a rule declares ``results/<name>`` as a report() output."""
    rules = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    return any(f'"results/{name}"' in p.read_text() for p in rules)


def _csv(entry: dict) -> pd.DataFrame:
    data = entry["data_uri"].split("base64,", 1)[1]
    return pd.read_csv(stdio.StringIO(base64.b64decode(data).decode()))


@pytest.mark.workflow
def test_report_in_a_browser(report_html, browser):
    page = browser.new_page()
    page.open(report_html)
    registry = report_registry(page)
    results = registry["results"]
    images = {p for p, v in results.items() if v["mime_type"] in IMAGE_MIMES}
    assert images, "the report registers no figure"
    problems = report_label_problems(registry)
    assert problems == [], "report labels Snakemake cannot lay out:\n" + "\n".join(problems)
    shown = {r.path: r for r in walk_snakemake_report(page, SHOTS)}
    check = check_page(page, screenshot=SHOTS / "report-last-view.png")
    assert check.console_errors == [], "the report logged errors:\n" + "\n".join(
        e[:400] for e in check.console_errors
    )
    displayed = {p for p, r in shown.items() if r.shown == "image"}
    assert displayed == images, (
        f"registered figures not displayed by clicking through the report: "
        f"{sorted(images - displayed)}; results reached: {sorted(shown)}"
    )
    for path in sorted(images):
        figure = shown[path].figure
        assert figure is not None, f"{path}: no <img> measured in the content pane"
        assert figure.width >= 200 and figure.height >= 150, (path, figure)
        assert not figure.blank, (path, figure)
        assert (SHOTS / f"{path.replace('/', '_')}.png").is_file()
    # every registered result is reachable and captioned (what it shows, how to read it)
    assert set(shown) == set(results), f"unreachable: {sorted(set(results) - set(shown))}"
    for path, entry in results.items():
        words = len(entry["caption"].replace("<p>", " ").split())
        assert words >= 8, f"{path}: caption too short ({words} words)"
    # the tables a user looks for
    assert "results/metrics.csv" in results
    summary = _csv(results["results/metrics.csv"])
    assert {"model", "n_materials", "mean_SRME", "mean_SRE", "n_failed"} <= set(summary.columns)
    if _registered_outputs("leaderboard.csv"):
        assert "results/leaderboard.csv" in results
        board = _csv(results["results/leaderboard.csv"])
        assert {"rank", "model", "kappa_SRME", "dft_reference", "yours"} <= set(board.columns)
        assert board["yours"].astype(str).str.lower().eq("true").any()
