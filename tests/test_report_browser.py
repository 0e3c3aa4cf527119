"""The HTML report, opened in headless Chromium (tests/browser.py, DevTools over a pipe).

Here: the browser helper on a known page, and the label layouts Snakemake's report cannot
draw. The reports of real runs are checked by :func:`browser.assert_report_ok` where those
runs are made: ``tests/test_workflow.py`` (the .test workflow) and
``tests/test_scored_workflow.py`` (a material scored against the DFT reference, with the
leaderboard).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import (
    Browser,
    BrowserUnavailable,
    check_page,
    pixel_stats,
    report_label_problems,
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
