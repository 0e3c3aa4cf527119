"""Figures as matplotlib objects (no file I/O; :func:`kappaflow.io.write_figure` saves)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kappaflow.metrics import temperature_index

TYPE_MARKERS = {"rs": "o", "zb": "s", "wz": "^"}


def parity(metrics: pd.DataFrame, model: str, temperature: float) -> Figure:
    """κ_model vs κ_DFT on log-log axes; failures drawn as red crosses on the x axis."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    df = (
        metrics[metrics["DFT_kappa_TOT_ave"].notna()]
        if "DFT_kappa_TOT_ave" in metrics
        else metrics.iloc[:0]
    )
    failed = df["failed"].astype(bool) if len(df) else pd.Series(dtype=bool)
    ok = df[~failed & (df["kappa_TOT_ave"] > 0)]
    bad = df[failed]
    lo = 0.1
    hi = 3000.0
    if len(df):
        vals = np.concatenate(
            [df["DFT_kappa_TOT_ave"].to_numpy(float), ok["kappa_TOT_ave"].to_numpy(float)]
        )
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            lo, hi = vals.min() / 2, vals.max() * 2
    x = np.array([lo, hi])
    ax.plot(x, x, "k-", lw=0.8, label="parity")
    ax.fill_between(x, x / 2, x * 2, color="0.9", label="factor 2")
    ax.scatter(
        ok["DFT_kappa_TOT_ave"],
        ok["kappa_TOT_ave"],
        s=18,
        c="tab:blue",
        label=f"computed ({len(ok)})",
    )
    if len(bad):
        ax.scatter(
            bad["DFT_kappa_TOT_ave"],
            np.full(len(bad), lo * 1.15),
            marker="x",
            c="tab:red",
            label=f"failed ({len(bad)})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(r"$\kappa_{\mathrm{DFT}}$ (W m$^{-1}$ K$^{-1}$)")
    ax.set_ylabel(r"$\kappa$ " + model.replace("$", "") + r" (W m$^{-1}$ K$^{-1}$)")
    mean_srme = df["SRME"].mean() if len(df) else np.nan
    ax.set_title(f"{model}, {temperature:g} K: mean SRME {mean_srme:.3f}, n={len(df)}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def kappa_vs_temperature(table: pd.DataFrame, model: str) -> Figure:
    """κ_TOT_ave(T) of every computed material (one line each)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for mid, row in table.iterrows():
        k = np.atleast_1d(np.asarray(row["kappa_TOT_ave"], dtype=float))
        t = np.atleast_1d(np.asarray(row["temperatures"], dtype=float))
        if k.shape != t.shape or not np.any(np.isfinite(k)):
            continue
        label = row["desc"] if "desc" in row and isinstance(row["desc"], str) else str(mid)
        ax.plot(t, k, marker="o", ms=3, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("T (K)")
    ax.set_ylabel(r"$\kappa_{\mathrm{TOT}}$ (W m$^{-1}$ K$^{-1}$)")
    ax.set_title(f"{model}: Wigner RTA conductivity")
    if len(ax.lines) <= 20:
        ax.legend(fontsize=7, ncol=2)
    return fig


def cumulative_kappa(
    frequencies: np.ndarray, mode_kappa: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted frequencies, cumulative κ) from irreducible-q mode κ (already × w_q)."""
    f = np.asarray(frequencies, dtype=float).ravel()
    k = np.asarray(mode_kappa, dtype=float).ravel() / np.sum(weights)
    order = np.argsort(f)
    return f[order], np.cumsum(k[order])


def cumulative_plot(pred: pd.Series, ref: pd.Series, model: str, temperature: float) -> Figure:
    """Cumulative κ against frequency, model vs DFT, for one material."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
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
    ax.set_ylabel(r"cumulative $\kappa_{\mathrm{TOT}}$ (W m$^{-1}$ K$^{-1}$)")
    name = ref.get("name", ref.name) if ref is not None else pred.name
    ax.set_title(f"{name} ({ref.name if ref is not None else pred.name}), {temperature:g} K")
    ax.legend(fontsize=8)
    return fig


def gamma_parity(metrics: pd.DataFrame, model: str) -> Figure:
    """Signed γ_model vs γ_DFT at 300 K by structure type; failures as red crosses."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
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
    ax.set_xlabel(r"$\gamma_{\mathrm{DFT}}$ (300 K)")
    ax.set_ylabel(r"$\gamma$ " + model.replace("$", "") + " (300 K)")
    mean_sre = df["SRE"].mean() if len(df) else np.nan
    ax.set_title(f"{model}: mean SRE$_\\gamma$ {mean_sre:.3f}, n={len(df)}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def alpha_curves(data: list[tuple[str, str, str, pd.DataFrame]], model: str) -> Figure:
    """α_V(T) per material, one panel per structure type (rs, zb, wz, other).

    ``data``: (desc, structure type, status, curve) with curve columns temperature,
    alpha_V, above_melting. Failed materials are dashed; above the melting point dotted.
    """
    kinds = [k for k in ("rs", "zb", "wz", "other") if any(d[1] == k for d in data)] or ["rs"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.0), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for desc, k, status, curve in data:
            if k != kind or curve.empty or not np.any(np.isfinite(curve["alpha_V"])):
                continue
            t = curve["temperature"].to_numpy(float)
            a = curve["alpha_V"].to_numpy(float) * 1e6
            above = curve["above_melting"].astype(bool).to_numpy()
            style = "--" if status != "ok" else "-"
            (line,) = ax.plot(t[~above], a[~above], style, lw=1, label=desc)
            if above.any():
                ax.plot(t[above], a[above], ":", lw=1, color=line.get_color())
        ax.set_title(f"{model}: {kind}")
        ax.set_xlabel("T (K)")
        ax.set_ylabel(r"$\alpha_V$ (10$^{-6}$ K$^{-1}$)")
        if 0 < len(ax.lines) <= 24:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle("volumetric thermal expansion (dashed: failed; dotted: above melting)")
    fig.tight_layout()
    return fig


SPLIT_COLORS = {"train": "tab:green", "same_composition": "tab:orange", "held_out": "tab:blue"}


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
        ax.set_xlabel(r"$\kappa_{\mathrm{ref}}$ (W m$^{-1}$ K$^{-1}$)")
        ax.set_title(f"{title}\nmean SRME: " + ", ".join(parts), fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel(r"$\kappa$ (W m$^{-1}$ K$^{-1}$)")
    fig.tight_layout()
    return fig
