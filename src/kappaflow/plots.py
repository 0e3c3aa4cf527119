"""Figures as matplotlib objects (no file I/O; :func:`kappaflow.storage.write_figure` saves).

Legibility rules every figure here follows: axes labelled with units, fonts of at least
9 pt at the saved size (:data:`STYLE`), one panel per model in multi-model figures, figure
height growing with the number of labelled rows (ranking chart) so that labels never
overlap (tested with the renderer's text bounding boxes in ``tests/test_plots.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from kappaflow.metrics import temperature_index

TYPE_MARKERS = {"rs": "o", "zb": "s", "wz": "^"}
KAPPA_UNIT = r"(W m$^{-1}$ K$^{-1}$)"
#: font sizes (pt) used by every figure; the README/report PNGs are saved at 150 dpi.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9,
    "figure.titlesize": 11.5,
    "savefig.dpi": 150,
}
#: colours of the ranking and scatter figures
COLORS = {"yours": "tab:orange", "k_SRME": "tab:blue", "matbench-discovery": "0.62"}
FAIL_COLOR = "tab:red"


def legible(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under :data:`STYLE` (text objects take the sizes at creation)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _materials(n: int) -> str:
    return f"{n} material" if n == 1 else f"{n} materials"


def _kappa_limits(frames: list[pd.DataFrame]) -> tuple[float, float]:
    vals = [
        df[c].to_numpy(float)
        for df in frames
        for c in ("DFT_kappa_TOT_ave", "kappa_TOT_ave")
        if c in df.columns and len(df)
    ]
    v = np.concatenate(vals) if vals else np.array([])
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return 0.1, 3000.0
    return 10 ** math.floor(math.log10(v.min() / 1.5)), 10 ** math.ceil(math.log10(v.max() * 1.5))


def _scored(metrics: pd.DataFrame) -> pd.DataFrame:
    if "DFT_kappa_TOT_ave" not in metrics:  # nothing scored: an empty frame, same columns
        return pd.DataFrame(columns=["DFT_kappa_TOT_ave", "kappa_TOT_ave", "SRME", "failed"])
    return metrics[pd.to_numeric(metrics["DFT_kappa_TOT_ave"], errors="coerce").notna()]


def _failed(df: pd.DataFrame) -> pd.Series:
    if not len(df):
        return pd.Series(dtype=bool)
    col = "failed" if "failed" in df.columns else "SRME_failed"  # a published table
    return df[col].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def _parity_panel(
    ax: Axes, metrics: pd.DataFrame, lo: float, hi: float, legend: bool = True
) -> tuple[int, int, float]:
    """One κ parity panel: parity line, factor-2 band, computed points, failures as red
    crosses just above the lower edge (they have no κ). Returns (n, n_failed, mean SRME)."""
    df = _scored(metrics)
    failed = _failed(df)
    ok = df[~failed & (pd.to_numeric(df.get("kappa_TOT_ave"), errors="coerce") > 0)]
    bad = df[failed]
    x = np.array([lo, hi])
    ax.fill_between(x, x / 2, x * 2, color="0.88", lw=0, label="factor 2", zorder=0)
    ax.plot(x, x, "k-", lw=0.8, label="parity", zorder=1)
    ax.scatter(ok["DFT_kappa_TOT_ave"], ok["kappa_TOT_ave"], s=20, c="tab:blue",
               edgecolors="white", linewidths=0.4, label=f"computed ({len(ok)})", zorder=3)  # fmt: skip
    if len(bad):
        ax.scatter(bad["DFT_kappa_TOT_ave"], np.full(len(bad), lo * 1.25), marker="x", s=28,
                   c=FAIL_COLOR, label=f"failed ({len(bad)})", zorder=4)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    if legend:
        ax.legend(loc="upper left", frameon=False, handletextpad=0.3)
    mean = float(pd.to_numeric(df["SRME"], errors="coerce").mean()) if len(df) else np.nan
    return len(df), len(bad), mean


@legible
def parity(metrics: pd.DataFrame, model: str, temperature: float) -> Figure:
    """κ_model vs κ_DFT on log-log axes; failures drawn as red crosses on the x axis."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    lo, hi = _kappa_limits([_scored(metrics)])
    n, _, mean_srme = _parity_panel(ax, metrics, lo, hi)
    ax.set_xlabel(r"$\kappa_{\mathrm{DFT}}$ " + KAPPA_UNIT)
    ax.set_ylabel(r"$\kappa$ " + model.replace("$", "") + " " + KAPPA_UNIT)
    ax.set_title(f"{model}, {temperature:g} K: mean SRME {mean_srme:.3f}, n={n}")
    return fig


@legible
def parity_grid(
    metrics: Mapping[str, pd.DataFrame], temperature: float = 300.0, ncols: int | None = None
) -> Figure:
    """κ parity, one log-log panel per model on shared axes (the paper's figure): parity
    line, factor-2 band, failures as red crosses on the lower edge; panel titles give the
    mean SRME, the number of materials and of failures."""
    if not metrics:
        raise ValueError("parity_grid needs at least one model")
    n = len(metrics)
    ncols = ncols or min(n, 4)
    nrows = math.ceil(n / ncols)
    lo, hi = _kappa_limits([_scored(df) for df in metrics.values()])
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols + 0.7, 3.25 * nrows + 0.8),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    for i, (model, df) in enumerate(metrics.items()):
        ax = axes.flat[i]
        k, k_failed, mean = _parity_panel(ax, df, lo, hi, legend=False)
        ax.set_title(f"{model}\nSRME {mean:.3f} (n={k}, {k_failed} failed)", fontsize=9.5)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(r"$\kappa_{\mathrm{DFT}}$ " + KAPPA_UNIT)
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\kappa_{\mathrm{model}}$ " + KAPPA_UNIT)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="0.88"),
        plt.Line2D([], [], color="k", lw=0.8),
        plt.Line2D([], [], ls="", marker="o", color="tab:blue", mec="white"),
        plt.Line2D([], [], ls="", marker="x", color=FAIL_COLOR),
    ]
    labels = ["within a factor 2", "parity", "computed", "failed (no κ; SRME = 2)"]
    fig.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(f"κ at {temperature:g} K: model vs DFT (PBE), one panel per model")
    return fig


def _nothing_to_show(title: str, message: str) -> Figure:
    """A small figure that says why it is empty (a report entry must not be blank)."""
    fig, ax = plt.subplots(figsize=(6.0, 2.2))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.3",
            bbox={"facecolor": "white", "edgecolor": "0.8"})  # fmt: skip
    return fig


def _bar_label(row: pd.Series) -> str:
    name = str(row["model"])
    if row.get("origin") == "matbench-discovery":
        name += " [MBD]"
    if row.get("yours", False):
        name += " (yours)"
    if str(row.get("dft_reference", "")) not in ("", str(row.get("sre_reference", ""))):
        name += " *"
    return name


@legible
def ranking_bar(board: pd.DataFrame, ranked_only: bool = True, title: str | None = None) -> Figure:
    """κ_SRME bar chart, best at the top, from a leaderboard (:func:`kappaflow.peers.leaderboard`):
    the user's models in orange with bold labels, k_SRME peers blue, Matbench Discovery grey
    ([MBD]); hatched (*) = SRME scored against another DFT reference than the user's. The
    height grows with the number of bars (0.26 in each) so labels never overlap."""
    # the user's models are always shown (an SRME that could not be computed says so)
    keep = board["rank"].notna() | board["yours"].astype(bool) if "rank" in board else None
    df = board[keep] if ranked_only and keep is not None else board
    df = df.sort_values("kappa_SRME", kind="stable", na_position="last").reset_index(drop=True)
    n = len(df)
    if not n or df["kappa_SRME"].isna().all():
        return _nothing_to_show("κ_SRME ranking", "no material scored: nothing to rank")
    fig, ax = plt.subplots(figsize=(7.4, 1.9 + 0.26 * max(n, 3)), layout="constrained")
    y = np.arange(n)
    colors = [COLORS["yours"] if r["yours"] else COLORS.get(r.get("origin"), "tab:blue")
              for _, r in df.iterrows()]  # fmt: skip
    widths = np.nan_to_num(df["kappa_SRME"].to_numpy(float), nan=0.0)  # n/a: no bar, a note
    bars = ax.barh(y, widths, color=colors, height=0.72)
    for bar, (_, r) in zip(bars, df.iterrows(), strict=True):
        if str(r.get("dft_reference", "")) not in ("", str(r.get("sre_reference", ""))):
            bar.set_hatch("///")
            bar.set_edgecolor("white")
        value = r["kappa_SRME"]
        text = f"{value:.3f}" if np.isfinite(value) else "n/a: SRME not computed (see flags)"
        x = bar.get_width() if np.isfinite(value) else 0.0
        ax.text(x + 0.015, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8.5)
    ax.set_yticks(y, [_bar_label(r) for _, r in df.iterrows()])
    for tick, (_, r) in zip(ax.get_yticklabels(), df.iterrows(), strict=True):
        if r["yours"]:
            tick.set_fontweight("bold")
            tick.set_color("tab:orange")
    ax.invert_yaxis()
    top = float(np.nanmax(df["kappa_SRME"])) if n else 1.0
    ax.set_xlim(0, min(2.0, top * 1.12 + 0.08) if top < 1.85 else 2.12)
    ax.set_xlabel(r"$\kappa_{\mathrm{SRME}}$ (dimensionless; 0 = DFT, 2 = failed; lower is better)")
    ax.margins(y=0.01)
    n_mat = int(df.loc[df["yours"], "n_materials"].max()) if df["yours"].any() else None
    ax.set_title(title or (f"κ_SRME on the same {n_mat} material(s) as your run"
                           if n_mat else "κ_SRME"))  # fmt: skip
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    labels = ["yours", "k_SRME (published)", "Matbench Discovery [MBD]"]
    if any(" *" in _bar_label(r) for _, r in df.iterrows()):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="0.5", hatch="///",
                                     edgecolor="white"))  # fmt: skip
        labels.append("* SRME vs another DFT reference")
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    return fig


def _repel(ax: Axes, texts: list, pad: float = 1.0, max_iter: int = 400) -> None:
    """Shift annotations (``textcoords="offset points"``) vertically until no two text
    boxes overlap: boxes are measured once by the renderer, moved numerically (pixels),
    and the offsets written back in points (so it holds at any saving dpi)."""
    if len(texts) < 2:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ext = [Text.get_window_extent(t, renderer) for t in texts]  # the text, not its arrow
    x0 = np.array([e.x0 for e in ext])
    x1 = np.array([e.x1 for e in ext])
    y0 = np.array([e.y0 for e in ext])
    y1 = np.array([e.y1 for e in ext])
    n = len(texts)
    dy = np.zeros(n)
    overlap_x = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None])
    np.fill_diagonal(overlap_x, False)
    order = np.arange(n)
    for _ in range(max_iter):
        lo, hi = y0 + dy, y1 + dy
        over = overlap_x & (lo[:, None] < hi[None, :] + pad) & (lo[None, :] < hi[:, None] + pad)
        over = np.triu(over)
        if not over.any():
            break
        shift = np.zeros(n)
        centre = (lo + hi) / 2 + order * 1e-6  # ties broken by order
        for i, j in zip(*np.nonzero(over), strict=True):
            below, above = (i, j) if centre[i] < centre[j] else (j, i)
            depth = hi[below] + pad - lo[above]
            shift[below] -= depth / 2 + 0.05
            shift[above] += depth / 2 + 0.05
        dy += 0.6 * shift
    scale = 72.0 / fig.dpi
    for t, d in zip(texts, dy, strict=True):
        ox, oy = t.xyann
        t.xyann = (ox, oy + d * scale)


@legible
def sre_srme_scatter(board: pd.DataFrame, ranked_only: bool = True) -> Figure:
    """κ_SRE vs κ_SRME per model (SRE ≤ SRME always: the line is the bound), the user's
    models in orange; every point labelled, labels pushed apart so none overlap."""
    df = board[board["rank"].notna()] if ranked_only and "rank" in board else board
    missing = [
        str(m) for m in board.loc[board["yours"].astype(bool) & board["kappa_SRME"].isna(), "model"]
    ]
    df = df[df["kappa_SRME"].notna()].reset_index(drop=True)
    if not len(df):
        return _nothing_to_show("κ_SRE vs κ_SRME", "no material scored: nothing to compare")
    fig, ax = plt.subplots(figsize=(7.0, 6.2))
    hi = max(0.3, float(np.nanmax(df[["kappa_SRME", "kappa_SRE"]].to_numpy(float))) * 1.08)
    hi = min(hi, 2.05)
    ax.plot([0, hi], [0, hi], color="0.6", lw=0.8, ls="--", label="SRE = SRME (bound)")
    texts = []
    for _, r in df.iterrows():
        c = COLORS["yours"] if r["yours"] else COLORS.get(r.get("origin"), "tab:blue")
        ax.scatter(r["kappa_SRME"], r["kappa_SRE"], s=44 if r["yours"] else 26, color=c,
                   edgecolors="k" if r["yours"] else "none", zorder=3)  # fmt: skip
        texts.append(ax.annotate(
            _bar_label(r), (r["kappa_SRME"], r["kappa_SRE"]), xytext=(5, 0),
            textcoords="offset points", fontsize=8.5, va="center",
            fontweight="bold" if r["yours"] else "normal",
            arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5, "shrinkA": 0, "shrinkB": 2},
        ))  # fmt: skip
    ax.set_xlim(-0.02 * hi, hi)
    ax.set_ylim(-0.02 * hi, hi)
    ax.set_xlabel(r"$\kappa_{\mathrm{SRME}}$ (mode-resolved error, dimensionless)")
    ax.set_ylabel(r"$\kappa_{\mathrm{SRE}}$ (error of total κ, dimensionless)")
    ax.set_title("error of total κ vs mode-resolved error (lower left is better)")
    if missing:  # the user's models without an SRME (e.g. a mesh other than the reference's)
        ax.text(0.98, 0.02, "not drawn, SRME not computed: " + ", ".join(missing),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5,
                color=COLORS["yours"])  # fmt: skip
    handles = [plt.Line2D([], [], ls="", marker="o", color=c) for c in COLORS.values()]
    ax.legend([*handles, ax.lines[0]],
              ["yours", "k_SRME (published)", "Matbench Discovery [MBD]", "SRE = SRME (bound)"],
              loc="upper left", frameon=False)  # fmt: skip
    fig.tight_layout()
    _repel(ax, texts)
    return fig


@legible
def kappa_vs_temperature(table: pd.DataFrame, model: str) -> Figure:
    """κ_TOT_ave(T) of every computed material (one line each); a legend beside the axes up
    to 24 materials, else the 6 highest and lowest at the last temperature labelled."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for mid, row in table.iterrows():
        k = np.atleast_1d(np.asarray(row["kappa_TOT_ave"], dtype=float))
        t = np.atleast_1d(np.asarray(row["temperatures"], dtype=float))
        if k.shape != t.shape or not np.any(np.isfinite(k)):
            continue
        label = row["desc"] if "desc" in row and isinstance(row["desc"], str) else str(mid)
        ax.plot(t, k, marker="o", ms=3, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("temperature T (K)")
    ax.set_ylabel(r"$\kappa_{\mathrm{TOT}}$ " + KAPPA_UNIT)
    ax.set_title(f"{model}: Wigner RTA conductivity ({_materials(len(ax.lines))})")
    _label_lines(ax, max_legend=24)
    fig.tight_layout()
    return fig


def _label_lines(ax: Axes, max_legend: int) -> None:
    """A legend outside the axes for up to ``max_legend`` lines, else labels at the right
    end of the 3 highest and 3 lowest lines (pushed apart so they do not overlap)."""
    lines = [line for line in ax.lines if not line.get_label().startswith("_")]
    if not lines:
        return
    if len(lines) <= max_legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  ncol=1 if len(lines) <= 12 else 2, fontsize=8.5)  # fmt: skip
        return
    ends = sorted(lines, key=lambda ln: float(np.asarray(ln.get_ydata(), float)[-1]))
    texts = [
        ax.annotate(
            ln.get_label(),
            (ln.get_xdata()[-1], ln.get_ydata()[-1]),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8.5,
            va="center",
            color=ln.get_color(),
            annotation_clip=False,
        )
        for ln in (*ends[:3], *ends[-3:])
    ]
    _repel(ax, texts)


def cumulative_kappa(
    frequencies: np.ndarray, mode_kappa: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted frequencies, cumulative κ) from irreducible-q mode κ (already × w_q)."""
    f = np.asarray(frequencies, dtype=float).ravel()
    k = np.asarray(mode_kappa, dtype=float).ravel() / np.sum(weights)
    order = np.argsort(f)
    return f[order], np.cumsum(k[order])


@legible
def cumulative_plot(pred: pd.Series, ref: pd.Series, model: str, temperature: float) -> Figure:
    """Cumulative κ against frequency, model vs DFT, for one material."""
    fig, ax = plt.subplots(figsize=(5.4, 4.0))
    for row, label, style in ((ref, "DFT (PBE)", "k-"), (pred, model, "C0-")):
        if (
            row is None
            or row.get("mode_kappa_TOT_ave") is None
            or not isinstance(row["mode_kappa_TOT_ave"], np.ndarray)
        ):
            continue
        ti = temperature_index(row["temperatures"], temperature)
        if ti is None:
            continue
        f, c = cumulative_kappa(row["frequencies"], row["mode_kappa_TOT_ave"][ti], row["weights"])
        ax.step(f, c, style, where="post", label=f"{label}: {c[-1]:.4g}")
    ax.set_xlabel("frequency (THz)")
    ax.set_ylabel(r"cumulative $\kappa_{\mathrm{TOT}}$ " + KAPPA_UNIT)
    name = ref.get("name", ref.name) if ref is not None else pred.name
    ax.set_title(f"{name} ({ref.name if ref is not None else pred.name}), {temperature:g} K")
    ax.legend(loc="lower right", title="κ at the end")
    fig.tight_layout()
    return fig


@legible
def gamma_parity(metrics: pd.DataFrame, model: str) -> Figure:
    """Signed γ_model vs γ_DFT at 300 K by structure type; failures as red crosses; values
    outside the frame are drawn on its edge. Without any DFT γ the panel says so."""
    fig, ax = plt.subplots(figsize=(5.4, 5.2))
    df = metrics[metrics["gamma_DFT"].notna()] if "gamma_DFT" in metrics else metrics.iloc[:0]
    failed = df["failed"].astype(bool) if len(df) else pd.Series(dtype=bool)
    vals = df[["gamma", "gamma_DFT"]].to_numpy(float).ravel() if len(df) else np.array([])
    vals = vals[np.isfinite(vals)]
    lo, hi = (min(-0.5, vals.min()), max(3.5, vals.max())) if vals.size else (-0.5, 3.5)
    lo, hi = max(lo, -5.0), min(hi, 8.0)  # outliers (γ ~ ±80) are clipped to the frame
    x = np.array([lo, hi])
    ax.plot(x, x, "k-", lw=0.8, label="parity")
    ax.axhline(0, color="0.7", lw=0.6)
    for kind, marker in (*TYPE_MARKERS.items(), ("other", "D")):
        sub = df[(df.get("structure_type") == kind) & ~failed] if len(df) else df
        if len(sub):
            ax.scatter(
                sub["gamma_DFT"],
                np.clip(sub["gamma"], lo, hi),
                marker=marker,
                s=20,
                label=f"{kind} ({len(sub)})",
            )
    bad = df[failed] if len(df) else df
    if len(bad):
        y = np.clip(bad["gamma"].fillna(lo).to_numpy(float), lo, hi)
        ax.scatter(bad["gamma_DFT"], y, marker="x", c="tab:red", label=f"failed ({len(bad)})")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(r"$\gamma_{\mathrm{DFT}}$ at 300 K (dimensionless)")
    ax.set_ylabel(r"$\gamma$ " + model.replace("$", "") + " at 300 K (dimensionless)")
    if len(df):
        ax.set_title(f"{model}: mean SRE$_\\gamma$ {df['SRE'].mean():.3f}, n={len(df)}")
    else:
        ax.set_title(f"{model}: no material scored")
        ax.text(0.5, 0.5, "no material with a DFT γ:\nγ computed, not scored",
                transform=ax.transAxes, ha="center", va="center", color="0.3",
                bbox={"facecolor": "white", "edgecolor": "0.8"})  # fmt: skip
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


@legible
def alpha_curves(data: list[tuple[str, str, str, pd.DataFrame]], model: str) -> Figure:
    """α_V(T) per material, one panel per structure type (rs, zb, wz, other).

    ``data``: (desc, structure type, status, curve) with curve columns temperature,
    alpha_V, above_melting. Failed materials are dashed; above the melting point dotted.
    """
    kinds = [k for k in ("rs", "zb", "wz", "other") if any(d[1] == k for d in data)] or ["rs"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.8 * len(kinds) + 1.6, 4.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for desc, k, status, curve in data:
            if k != kind or curve.empty or not np.any(np.isfinite(curve["alpha_V"])):
                continue
            t = curve["temperature"].to_numpy(float)
            a = curve["alpha_V"].to_numpy(float) * 1e6
            above = curve["above_melting"].astype(bool).to_numpy()
            style = "--" if status != "ok" else "-"
            (line,) = ax.plot(t[~above], a[~above], style, lw=1.2, label=desc)
            if above.any():
                ax.plot(t[above], a[above], ":", lw=1.2, color=line.get_color(), label="_")
        n_curves = len([ln for ln in ax.lines if not ln.get_label().startswith("_")])
        ax.set_title(f"{model}: {kind} ({_materials(n_curves)})")
        ax.set_xlabel("temperature T (K)")
        ax.set_ylabel(r"$\alpha_V$ (10$^{-6}$ K$^{-1}$)")
        _label_lines(ax, max_legend=12)
    fig.suptitle(
        r"volumetric thermal expansion $\alpha_V(T)$ (dashed: failed; dotted: above melting)"
    )
    fig.tight_layout()
    return fig


SPLIT_COLORS = {"train": "tab:green", "same_composition": "tab:orange", "held_out": "tab:blue"}


@legible
def before_after_parity(
    before: pd.DataFrame, after: pd.DataFrame, split: dict[str, str], base: str, key: str
) -> Figure:
    """Parity plots of a model before and after fine-tuning, side by side on shared
    axes, materials coloured by split (train / same composition / held out); failures
    are crosses on the x axis. Titles give the mean SRME per split."""
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 5.0), sharex=True, sharey=True)
    frames = [df[df["DFT_kappa_TOT_ave"].notna()] for df in (before, after)]
    vals = np.concatenate(
        [df[c].to_numpy(float) for df in frames for c in ("DFT_kappa_TOT_ave", "kappa_TOT_ave")]
    )
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = (vals.min() / 2, vals.max() * 2) if vals.size else (0.1, 3000.0)
    x = np.array([lo, hi])
    for ax, df, title in zip(axes, frames, (f"before: {base}", f"after: {key}"), strict=True):
        ax.plot(x, x, "k-", lw=0.8)
        ax.fill_between(x, x / 2, x * 2, color="0.9")
        parts = []
        for name, color in SPLIT_COLORS.items():
            sub = df[[split.get(m, "held_out") == name for m in df["mp_id"]]]
            if not len(sub):
                continue
            failed = sub["failed"].astype(bool)
            ok = sub[~failed & (sub["kappa_TOT_ave"] > 0)]
            ax.scatter(ok["DFT_kappa_TOT_ave"], ok["kappa_TOT_ave"], s=22, c=color,
                       label=f"{name} ({len(ok)})")  # fmt: skip
            if failed.any():
                ax.scatter(sub[failed]["DFT_kappa_TOT_ave"], np.full(int(failed.sum()), lo * 1.15),
                           marker="x", c=color, label=f"{name} failed ({int(failed.sum())})")  # fmt: skip
            parts.append(f"{name} {sub['SRME'].mean():.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(r"$\kappa_{\mathrm{ref}}$ " + KAPPA_UNIT)
        ax.set_title(f"{title}\nmean SRME: " + ", ".join(parts), fontsize=9.5)
        ax.legend(loc="upper left", frameon=False)
    axes[0].set_ylabel(r"$\kappa$ " + KAPPA_UNIT)
    fig.tight_layout()
    return fig
