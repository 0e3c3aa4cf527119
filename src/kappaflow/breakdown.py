"""Metrics people quote beside κ_SRME: spectrum W1, imaginary-mode and failure rates,
SRE/SRME per structure type and per decade of κ_DFT, the signed bias. Pure functions.

``spectrum_w1`` follows Matbench Discovery's ``phonon_spectrum_w1`` in
``matbench_discovery/metrics/phonons.py`` of janosh/matbench-discovery at commit
2c7f9fc42d018711dc2f5df573d225ea6d2d17b2 (2026-07-16; functions ``phonon_spectrum_data``,
``mode_weights_for_freqs``, ``phonon_spectrum_w1``, ``evaluate_kappa_predictions``):

* Per material, the Wasserstein-1 distance (THz) between two 1-D distributions: every
  phonon frequency of the model (``ph_freqs``) and every frequency of the DFT reference
  (the reference file's ``frequencies``, irreducible q-points of the 19×19×19/19×19×15 mesh).
  Each frequency is weighted by the multiplicity of its q-point (``weights`` repeated over the
  bands) when a weight vector of the q-axis length is given, else uniformly (a full mesh).
  W1 = ∫ |F_model(ω) − F_DFT(ω)| dω over the two weighted cumulative distributions
  (``scipy.stats.wasserstein_distance``), so different meshes compare directly.
* Which model frequencies: for a material whose κ was computed, the frequencies of the
  conductivity run (``kappa.frequencies``: irreducible q-points of the κ mesh, with
  ``grid_weights``). For a material stopped at the harmonic gate (imaginary modes or broken
  symmetry; no κ), MBD keeps the fc2-step frequencies on phono3py's full BZ grid
  (``get_phonon_data``), uniformly weighted: such materials DO enter W1.
* Imaginary modes enter as phono3py writes them, as negative frequencies; nothing is
  clipped or dropped.
* A material whose frequencies are missing or contain a non-finite value gives no distance
  (``None``) and is left out of the mean: failures are not scored 2 here.
* Aggregate: each per-material distance rounded to 4 decimals, then the plain mean over the
  materials that have one.

Here (kappaflow): the model frequencies are the gathered table's ``frequencies``/``weights``
(from the κ job, irreducible q of the configured mesh). kappaflow's gathered table has no
frequencies for materials that failed the gate, so those are left out unless their full-mesh
gate frequencies are passed as ``gate_frequencies`` (uniform weights, as in MBD; kappaflow's
full Γ-centred mesh has no BZ-surface duplicates, MBD's BZ grid has). ``n_spectrum_w1`` says
how many materials entered.

``imaginary_mode_rate`` and ``failure_rate`` are fractions of the SELECTED (scored) materials,
as in MBD over the 103: imaginary = the harmonic gate's flag (missing flag = False); failure =
the PROTOCOL §6 failure rules (SRME set to 2: imaginary modes, broken symmetry, missing or NaN
κ, error) — a printed SRME of 2.0000 from an absurd κ is not a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kappaflow.structures import STRUCTURE_TYPES as DATASET_TYPES

STRUCTURE_TYPES = tuple(DATASET_TYPES.values())
W1_DECIMALS = 4
TRUE = ("true", "1", "1.0")


# ------------------------------------------------------------------ spectrum W1


def wasserstein_1(
    u: np.ndarray,
    v: np.ndarray,
    u_weights: np.ndarray | None = None,
    v_weights: np.ndarray | None = None,
) -> float:
    """W1 between two weighted 1-D samples: ∫ |F_u − F_v| dx (scipy's definition)."""
    u = np.asarray(u, dtype=float).ravel()
    v = np.asarray(v, dtype=float).ravel()
    uw = np.ones_like(u) if u_weights is None else np.asarray(u_weights, dtype=float).ravel()
    vw = np.ones_like(v) if v_weights is None else np.asarray(v_weights, dtype=float).ravel()
    if u.size == 0 or v.size == 0 or uw.shape != u.shape or vw.shape != v.shape:
        raise ValueError("W1 needs two non-empty samples with weights of the same shape")
    if np.any(uw < 0) or np.any(vw < 0) or uw.sum() <= 0 or vw.sum() <= 0:
        raise ValueError("W1 weights must be non-negative with a positive sum")
    xs = np.sort(np.concatenate([u, v]))
    dx = np.diff(xs)
    iu, iv = np.argsort(u), np.argsort(v)
    cu = np.concatenate([[0.0], np.cumsum(uw[iu])])[np.searchsorted(u[iu], xs[:-1], "right")]
    cv = np.concatenate([[0.0], np.cumsum(vw[iv])])[np.searchsorted(v[iv], xs[:-1], "right")]
    return float(np.sum(np.abs(cu / uw.sum() - cv / vw.sum()) * dx))


def spectrum_data(
    frequencies: Any, weights: Any = None
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(frequencies (n_q, n_band), per-frequency weights or None) as MBD's
    ``phonon_spectrum_data`` + ``mode_weights_for_freqs``; None if missing or non-finite."""
    if frequencies is None:
        return None
    try:
        f = np.asarray(frequencies, dtype=float)
    except (TypeError, ValueError):
        return None
    if f.ndim != 2 or f.size == 0 or not np.all(np.isfinite(f)):
        return None
    w = None
    if weights is not None:
        try:
            q = np.asarray(weights, dtype=float).ravel()
        except (TypeError, ValueError):
            q = None
        if (
            q is not None
            and q.size
            and np.all(np.isfinite(q))
            and np.all(q >= 0)
            and q.sum() > 0
            and q.shape == (f.shape[0],)
        ):
            w = np.repeat(q, f.shape[1])
    return f, w


def spectrum_w1_material(
    frequencies: Any, weights: Any, ref_frequencies: Any, ref_weights: Any
) -> float | None:
    """W1 (THz) between a model's and the reference's phonon spectrum of one material;
    None when either spectrum is missing or non-finite."""
    pred = spectrum_data(frequencies, weights)
    ref = spectrum_data(ref_frequencies, ref_weights)
    if pred is None or ref is None:
        return None
    return wasserstein_1(pred[0], ref[0], pred[1], ref[1])


def _cell(row: pd.Series | None, key: str) -> Any:
    if row is None or key not in row.index:
        return None
    value = row[key]
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    return value


def spectrum_w1(
    table: pd.DataFrame,
    reference: pd.DataFrame,
    materials: list[str] | None = None,
    gate_frequencies: Mapping[str, np.ndarray] | None = None,
) -> pd.Series:
    """Per-material W1 (rounded to 4 decimals; NaN where no distance) over ``materials``
    (default: every reference material). ``table``: the gathered kappa table (columns
    ``frequencies``, ``weights``); ``reference``: the DFT table; ``gate_frequencies``:
    full-mesh frequencies of materials that failed the harmonic gate (uniform weights)."""
    materials = list(reference.index) if materials is None else list(materials)
    out = {}
    for mid in materials:
        ref = reference.loc[mid] if mid in reference.index else None
        row = table.loc[mid] if mid in table.index else None
        freqs, weights = _cell(row, "frequencies"), _cell(row, "weights")
        if freqs is None and gate_frequencies and mid in gate_frequencies:
            freqs, weights = gate_frequencies[mid], None
        d = spectrum_w1_material(freqs, weights, _cell(ref, "frequencies"), _cell(ref, "weights"))
        out[mid] = np.nan if d is None else round(d, W1_DECIMALS)
    return pd.Series(out, name="spectrum_w1", dtype=float)


def mean_spectrum_w1(per_material: pd.Series) -> tuple[float, int]:
    """(mean over materials with a distance, how many): MBD's aggregate."""
    values = per_material.dropna()
    return (float(values.mean()) if len(values) else np.nan), len(values)


# ------------------------------------------------------------------ rates and bias


def _failed(per_material: pd.DataFrame) -> pd.Series:
    col = "failed" if "failed" in per_material.columns else "SRME_failed"  # published tables
    return per_material[col].map(lambda v: str(v).strip().lower() in TRUE)


def _scored(per_material: pd.DataFrame) -> pd.DataFrame:
    """Rows that were scored (a DFT κ exists); skipped rows (notes only) are not."""
    df = per_material.set_index("mp_id") if "mp_id" in per_material.columns else per_material
    if "DFT_kappa_TOT_ave" not in df.columns:  # nothing scored (no DFT reference)
        cols = ["DFT_kappa_TOT_ave", "kappa_TOT_ave", "SRE", "SRME", "failed", "failure"]
        return pd.DataFrame(columns=cols, index=pd.Index([], name="mp_id"))
    return df[pd.to_numeric(df["DFT_kappa_TOT_ave"], errors="coerce").notna()]


def failure_rate(per_material: pd.DataFrame) -> float:
    """Fraction of the scored materials that failed (PROTOCOL §6 rules: SRME set to 2)."""
    df = _scored(per_material)
    return float(_failed(df).mean()) if len(df) else np.nan


def imaginary_mode_rate(per_material: pd.DataFrame, table: pd.DataFrame | None = None) -> float:
    """Fraction of the scored materials with imaginary harmonic modes: the gathered table's
    ``imaginary_freqs`` flag where given (missing = False, as MBD), else the recorded
    failure reason ``imaginary_modes``."""
    df = _scored(per_material)
    if not len(df):
        return np.nan

    def flag(frame: pd.DataFrame, m: str) -> bool:
        return m in frame.index and str(frame.loc[m, "imaginary_freqs"]).lower() in TRUE

    if table is not None and "imaginary_freqs" in table.columns:
        return float(np.mean([flag(table, m) for m in df.index]))
    if "imaginary_freqs" in df.columns:  # e.g. a published per-material table
        return float(np.mean([flag(df, m) for m in df.index]))
    if "failure" in df.columns:
        return float(df["failure"].fillna("").eq("imaginary_modes").mean())
    raise ValueError("no imaginary_freqs flag and no failure reason to count imaginary modes")


def signed_bias(per_material: pd.DataFrame) -> dict[str, float]:
    """Median of log10(κ_model / κ_DFT) over successful materials (failed = False, κ > 0):
    negative = under-prediction; ``bias_factor`` = 10**median; ``frac_under`` = share of
    those materials with κ_model < κ_DFT."""
    df = _scored(per_material)
    k = pd.to_numeric(df["kappa_TOT_ave"], errors="coerce")
    d = pd.to_numeric(df["DFT_kappa_TOT_ave"], errors="coerce")
    ok = ~_failed(df) & (k > 0) & (d > 0)
    r = np.log10((k[ok] / d[ok]).to_numpy(float))
    if not r.size:
        return {"log10_bias_median": np.nan, "bias_factor": np.nan, "frac_under": np.nan,
                "n_bias": 0}  # fmt: skip
    med = float(np.median(r))
    return {
        "log10_bias_median": med,
        "bias_factor": float(10.0**med),
        "frac_under": float(np.mean(r < 0)),
        "n_bias": int(r.size),
    }


# ------------------------------------------------------------------ per group


def structure_types(reference: pd.DataFrame) -> pd.Series:
    """mp_id -> structure type of the reference materials: the dataset's types by space
    group (``symm.no``; :data:`kappaflow.structures.STRUCTURE_TYPES`), else 'other'."""
    groups = reference["symm.no"] if "symm.no" in reference.columns else None
    return pd.Series(
        {
            m: "other" if groups is None else DATASET_TYPES.get(int(groups.loc[m]), "other")
            for m in reference.index
        },
        name="structure_type",
        dtype=object,
    )


def _group_means(df: pd.DataFrame, key: pd.Series, order: list[str]) -> pd.DataFrame:
    rows = []
    for group in order:
        sub = df[key == group]
        if not len(sub):
            continue
        rows.append(
            {
                "group": group,
                "n_materials": len(sub),
                "n_failed": int(_failed(sub).sum()),
                "mean_SRME": float(pd.to_numeric(sub["SRME"], errors="coerce").mean(skipna=False)),
                "mean_SRE": float(pd.to_numeric(sub["SRE"], errors="coerce").mean()),
            }
        )
    return pd.DataFrame(rows, columns=["group", "n_materials", "n_failed", "mean_SRME", "mean_SRE"])


def by_structure_type(per_material: pd.DataFrame, types: pd.Series) -> pd.DataFrame:
    """n, failures, mean SRME and SRE per structure type (rs, zb, wz, other), failures as 2."""
    df = _scored(per_material)
    key = pd.Series([types.get(m, "other") for m in df.index], index=df.index)
    return _group_means(df, key, [*STRUCTURE_TYPES, "other"])


def kappa_decade(kappa: float) -> str:
    """'0.1-1', '1-10', ... W/mK: the decade of κ_DFT (lower edge included)."""
    e = int(np.floor(np.log10(kappa)))
    lo, hi = 10.0**e, 10.0 ** (e + 1)
    return f"{lo:g}-{hi:g}"


def by_kappa_decade(per_material: pd.DataFrame) -> pd.DataFrame:
    """n, failures, mean SRME and SRE per decade of κ_DFT, ascending."""
    df = _scored(per_material)
    d = pd.to_numeric(df["DFT_kappa_TOT_ave"], errors="coerce")
    df = df[d > 0]
    key = pd.Series([kappa_decade(v) for v in d[d > 0]], index=df.index)
    order = sorted(set(key), key=lambda s: float(s.split("-")[0]))
    return _group_means(df, key, order)


def quoted_metrics(
    per_material: pd.DataFrame,
    types: pd.Series,
    table: pd.DataFrame | None = None,
    w1: pd.Series | None = None,
) -> dict[str, Any]:
    """The columns for results/metrics.csv: spectrum_w1 (+ n_spectrum_w1),
    imaginary_mode_rate, failure_rate, SRME_/SRE_/n_ per structure type, the signed bias."""
    out: dict[str, Any] = {}
    if w1 is not None:
        out["spectrum_w1"], out["n_spectrum_w1"] = mean_spectrum_w1(w1)
    out["imaginary_mode_rate"] = imaginary_mode_rate(per_material, table)
    out["failure_rate"] = failure_rate(per_material)
    groups = by_structure_type(per_material, types).set_index("group")
    for kind in STRUCTURE_TYPES:
        present = kind in groups.index
        out[f"SRME_{kind}"] = float(groups.loc[kind, "mean_SRME"]) if present else np.nan
        out[f"SRE_{kind}"] = float(groups.loc[kind, "mean_SRE"]) if present else np.nan
        out[f"n_{kind}"] = int(groups.loc[kind, "n_materials"]) if present else 0
    out.update(signed_bias(per_material))
    return out
