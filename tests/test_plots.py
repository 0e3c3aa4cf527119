"""Figures: parity with failures, κ(T), cumulative κ (its end point is κ)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.text import Text

from kappaflow import plots, storage
from kappaflow.metrics import score_table
from kappaflow.steps.evaluate import run_cumulative


@pytest.fixture(scope="module")
def ref(reference_dir):
    return storage.read_kappa_table(reference_dir / "kappas_phononDB_PBE_noNAC.json.gz")


def test_cumulative_kappa_ends_at_kappa(ref):
    for mid in ("mp-22862", "mp-804"):
        row = ref.loc[mid]
        f, c = plots.cumulative_kappa(
            row["frequencies"], row["mode_kappa_TOT_ave"][0], row["weights"]
        )
        assert np.all(np.diff(f) >= 0)
        assert c[-1] == pytest.approx(row["kappa_TOT_ave"][0], rel=1e-9)


def test_parity_marks_failures(ref, tmp_path):
    nac = ref.copy()
    nac.at["mp-22862", "kappa_TOT_ave"] = np.array([np.nan])
    metrics = score_table(nac, ref)
    fig = plots.parity(metrics, "test-model", 300.0)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "failed (1)" in labels and "computed (102)" in labels
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    storage.write_figure(tmp_path / "parity.svg", fig)
    assert (tmp_path / "parity.svg").read_text().lstrip().startswith("<?xml")


def test_kappa_vs_temperature_and_cumulative_files(ref, tmp_path):
    table = pd.DataFrame(
        [
            {
                "mp_id": "A",
                "desc": "A-rs",
                "temperatures": np.array([300.0, 600.0]),
                "kappa_TOT_ave": np.array([2.0, 1.0]),
            }
        ]
    ).set_index("mp_id")
    fig = plots.kappa_vs_temperature(table, "m")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 1.0])
    storage.write_kappa_table(tmp_path / "pred.json.gz", ref.loc[["mp-22862"]])
    run_cumulative(
        table=tmp_path / "pred.json.gz",
        reference=tmp_path / "pred.json.gz",
        materials=["mp-22862", "not-in-reference"],
        model="m",
        temperature=300.0,
        out_dir=tmp_path / "cum",
    )
    assert [p.name for p in (tmp_path / "cum").iterdir()] == ["mp-22862.svg"]


# ------------------------------------------------------------- multi-model figures


def _board(n: int, same: bool = False) -> pd.DataFrame:
    """A leaderboard of ``n`` models with long names, close κ_SRME values, two of them the
    user's, a third of them Matbench Discovery rows and some scored vs NAC."""
    rows = []
    for i in range(n):
        srme = 0.5 if same else 0.09 + 0.0123 * i + (0.9 if i > n - 4 else 0)
        rows.append(
            {
                "rank": i + 1,
                "model": f"Model-{i:02d}-with-a-long-checkpoint-name",
                "origin": (
                    "yours" if i in (3, 11) else "matbench-discovery" if i % 3 == 0 else "k_SRME"
                ),
                "kappa_SRME": srme,
                "kappa_SRE": 0.5 * srme if not same else 0.4,
                "n_materials": 103,
                "dft_reference": "NAC" if i % 4 == 1 else "noNAC",
                "sre_reference": "noNAC",
                "yours": i in (3, 11),
            }
        )
    return pd.DataFrame(rows)


def _overlaps(texts) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts whose rendered bounding boxes intersect."""
    texts = [t for t in texts if t.get_visible() and t.get_text()]
    fig = texts[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # text only, not an arrow
    return [
        (texts[i].get_text(), texts[j].get_text())
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if boxes[i].overlaps(boxes[j])
    ]


def _inside_figure(texts) -> bool:
    fig = texts[0].figure
    fig.canvas.draw()
    frame = fig.bbox
    renderer = fig.canvas.get_renderer()
    return all(
        frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1 and frame.y0 - 1 <= b.y0
        and b.y1 <= frame.y1 + 1
        for b in (t.get_window_extent(renderer) for t in texts if t.get_text())
    )  # fmt: skip


def test_ranking_chart_labels_of_20_models_do_not_overlap():
    board = _board(20)
    fig = plots.ranking_bar(board)
    ax = fig.axes[0]
    labels = ax.get_yticklabels()
    assert len(labels) == 20 and len(ax.patches) == 20
    values = [t for t in ax.texts]  # the κ_SRME value at each bar's end
    assert _overlaps(labels) == [] and _overlaps(values) == []
    assert _inside_figure([*labels, *values])
    # the user's models are highlighted, best at the top, hatched where scored vs NAC
    names = [t.get_text() for t in labels]
    assert names[0].startswith("Model-00") and names[3].endswith("(yours)")
    assert labels[3].get_fontweight() == "bold" and names[0].endswith("[MBD]")
    assert names[1].endswith("*") and ax.patches[1].get_hatch() == "///"
    # the check is not vacuous: the same labels squeezed into 2 inches do overlap
    fig.set_size_inches(7.4, 2.0)
    assert _overlaps(ax.get_yticklabels())
    plt.close(fig)


def test_sre_srme_scatter_labels_do_not_overlap_even_when_points_coincide():
    for board in (_board(20), _board(20, same=True)):
        fig = plots.sre_srme_scatter(board)
        ax = fig.axes[0]
        assert len(ax.texts) == 20
        assert _overlaps(ax.texts) == []
        plt.close(fig)


def test_parity_grid_one_panel_per_model(ref):
    nac = ref.copy()
    nac.at["mp-22862", "kappa_TOT_ave"] = np.array([np.nan])
    nac["imaginary_freqs"] = [m == "mp-804" for m in nac.index]
    metrics = {f"m{i}": score_table(nac if i == 0 else ref, ref).reset_index() for i in range(5)}
    fig = plots.parity_grid(metrics)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5 and len(fig.axes) == 8  # 2 rows of 4, 3 hidden
    first = visible[0]
    assert first.get_title() == "m0\nSRME 0.039 (n=103, 2 failed)"
    assert visible[1].get_title() == "m1\nSRME 0.000 (n=103, 0 failed)"
    offsets = [c.get_offsets() for c in first.collections if isinstance(c, PathCollection)]
    assert sorted(len(o) for o in offsets) == [2, 101]  # 2 failure crosses, 101 points
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in visible)
    assert len({ax.get_xlim() for ax in visible}) == 1  # shared axes
    # the published tables (SRME_failed) are drawn as they are
    plt.close(fig)


def test_figures_are_legible(ref):
    """Every figure: axes labelled (κ with its unit), no text under 8.5 pt."""
    metrics = score_table(ref, ref).reset_index()
    figures = [
        plots.parity(metrics, "m", 300.0),
        plots.parity_grid({"a": metrics, "b": metrics}),
        plots.ranking_bar(_board(6)),
        plots.sre_srme_scatter(_board(6)),
    ]
    for fig in figures:
        for ax in [a for a in fig.axes if a.get_visible()]:
            if ax.get_xlabel() or ax is fig.axes[0]:
                assert ax.get_xlabel(), fig
        texts = fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
        sizes = [t.get_fontsize() for t in texts if t.get_text() and t.get_visible()]
        assert min(sizes) >= 8.5, min(sizes)
        plt.close(fig)
    fig = plots.parity(metrics, "m", 300.0)
    assert "W m$^{-1}$ K$^{-1}$" in fig.axes[0].get_xlabel()
    assert "W m$^{-1}$ K$^{-1}$" in fig.axes[0].get_ylabel()
    plt.close(fig)


def test_empty_leaderboard_figures_say_why():
    board = _board(3)
    board["rank"] = pd.NA
    for make in (plots.ranking_bar, plots.sre_srme_scatter):
        fig = make(board)
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert texts and texts[0].startswith("no material scored")
        plt.close(fig)
