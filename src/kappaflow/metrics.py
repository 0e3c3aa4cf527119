"""κ metrics (PROTOCOL §6, k_SRME ``benchmark.py``): pure numpy/pandas, no paths.

SRD  = 2 (κ_pred − κ_ref) / (κ_pred + κ_ref), NaN prediction -> −2
SRE  = |SRD|
SRME = 2 · [(1/N) Σ_q Σ_s |mode_κ_pred − mode_κ_ref|] / (κ_pred + κ_ref), N = Σ_q w_q

Failures (imaginary modes, broken symmetry, missing or NaN prediction) score
``KAPPA_ERROR_MAX = 2``; means run over the *selected* materials, failures included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from kappaflow.gates import gate, is_ok
from kappaflow.grid import REFERENCE_TEMPERATURE, temperature_index

KAPPA_ERROR_MAX = 2.0


class InvalidReferenceError(ValueError):
    """The reference lacks a material, a temperature or has NaN data (an input error)."""


def srd(k_pred: float, k_ref: float) -> float:
    """Symmetric relative difference; NaN prediction -> −2 (treated as κ_pred = 0)."""
    if k_pred is None or not np.isfinite(k_pred):
        return -KAPPA_ERROR_MAX
    denom = k_pred + k_ref
    if denom == 0:
        return 0.0
    return float(2.0 * (k_pred - k_ref) / denom)


def srme(
    mode_pred: np.ndarray, mode_ref: np.ndarray, weights: np.ndarray, k_pred: float, k_ref: float
) -> float:
    """Symmetric relative mean error of the mode-resolved κ (modes already include w_q)."""
    mode_pred = np.asarray(mode_pred, dtype=float)
    mode_ref = np.asarray(mode_ref, dtype=float)
    if mode_pred.shape != mode_ref.shape:
        raise ValueError(
            f"mode κ shapes differ: prediction {mode_pred.shape}, reference {mode_ref.shape}"
        )
    micro = np.sum(np.abs(mode_pred - mode_ref)) / np.sum(weights)
    return float(2.0 * micro / (k_pred + k_ref))


def _value(row: pd.Series, key: str) -> Any:
    return row[key] if key in row.index else None


def is_true(value: Any) -> bool:
    """A flag of a table cell: True, np.True_, 1 (None and NaN are False)."""
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return bool(value)


def _at_temperature(row: pd.Series, column: str, t_index: int | None) -> Any:
    value = _value(row, column)
    if value is None or t_index is None:
        return None
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return float(arr) if t_index == 0 else None
    return arr[t_index] if t_index < arr.shape[0] else None


def score_material(
    pred: pd.Series | None,
    ref: pd.Series,
    temperature: float = REFERENCE_TEMPERATURE,
    symm_no: int | None = None,
) -> dict[str, Any]:
    """SRD/SRE/SRME of one material, with the failure reason (k_SRME order)."""
    t_ref = temperature_index(_value(ref, "temperatures"), temperature)
    k_ref = _at_temperature(ref, "kappa_TOT_ave", t_ref)
    if k_ref is None or not np.isfinite(k_ref):
        raise InvalidReferenceError(
            f"reference has no finite kappa_TOT_ave at {temperature:g} K for {ref.name}"
        )
    out: dict[str, Any] = {"DFT_kappa_TOT_ave": float(k_ref), "kappa_TOT_ave": np.nan}
    reason = None
    if pred is None:
        reason = "missing"
    else:
        t_pred = temperature_index(_value(pred, "temperatures"), temperature)
        k_pred = _at_temperature(pred, "kappa_TOT_ave", t_pred)
        out["kappa_TOT_ave"] = np.nan if k_pred is None else float(k_pred)
        initial = _value(pred, "initial_space_group_number")
        relaxed = _value(pred, "relaxed_space_group_number")
        if initial is None or (isinstance(initial, float) and np.isnan(initial)):
            initial = symm_no
        broken = (
            relaxed is not None
            and initial is not None
            and not pd.isna(relaxed)
            and int(relaxed) != int(initial)
        )
        status = _value(pred, "status")
        the_gate = gate(is_true(_value(pred, "imaginary_freqs")), broken)
        if not the_gate.open:
            reason = the_gate.status
        elif isinstance(status, str) and not is_ok(status):
            reason = status  # e.g. nonfinite_forces, recorded by the run
        elif t_pred is None:
            reason = f"no_prediction_at_{temperature:g}K"
        elif k_pred is None or not np.isfinite(k_pred):
            reason = "nan_kappa"
    if reason is not None:
        out.update(
            SRD=-KAPPA_ERROR_MAX,
            SRE=KAPPA_ERROR_MAX,
            SRME=KAPPA_ERROR_MAX,
            failed=True,
            failure=reason,
        )
        return out
    k_pred = out["kappa_TOT_ave"]
    out["SRD"] = srd(k_pred, k_ref)
    out["SRE"] = abs(out["SRD"])
    mode_pred = _at_temperature(
        pred, "mode_kappa_TOT_ave", temperature_index(_value(pred, "temperatures"), temperature)
    )
    mode_ref = _at_temperature(ref, "mode_kappa_TOT_ave", t_ref)
    weights = _value(ref, "weights")
    if mode_pred is None or mode_ref is None or weights is None:
        out["SRME"] = np.nan
        out["note"] = "no mode-resolved kappa: SRME not computed"
    elif np.shape(mode_pred) != np.shape(mode_ref):
        out["SRME"] = np.nan
        out["note"] = (
            f"mode kappa shape {np.shape(mode_pred)} differs from reference {np.shape(mode_ref)} (different q-mesh?)"
        )
    elif np.any(~np.isfinite(mode_pred)):
        out.update(
            SRD=-KAPPA_ERROR_MAX,
            SRE=KAPPA_ERROR_MAX,
            SRME=KAPPA_ERROR_MAX,
            failed=True,
            failure="nan_mode_kappa",
        )
        return out
    else:
        out["SRME"] = srme(mode_pred, mode_ref, weights, k_pred, k_ref)
    out["failed"] = False
    out["failure"] = ""
    return out


def score_table(
    predictions: pd.DataFrame,
    reference: pd.DataFrame,
    temperature: float = REFERENCE_TEMPERATURE,
    materials: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Per-material metrics over the selected materials (default: every reference row).

    A selected material missing from ``predictions`` (or NaN there) is a failure scored 2;
    a selected material missing from ``reference`` is an input error.
    """
    selected = list(reference.index) if materials is None else list(materials)
    missing_ref = [m for m in selected if m not in reference.index]
    if missing_ref:
        raise InvalidReferenceError(f"material(s) not in the reference: {', '.join(missing_ref)}")
    rows = []
    for mid in selected:
        ref_row = reference.loc[mid]
        pred_row = predictions.loc[mid] if mid in predictions.index else None
        symm = _value(ref_row, "symm.no")
        row = score_material(pred_row, ref_row, temperature, None if symm is None else int(symm))
        name = _value(ref_row, "name")
        row = {"mp_id": mid, "name": name, "temperature": temperature, **row}
        rows.append(row)
    df = pd.DataFrame(rows).set_index("mp_id")
    if "note" not in df.columns:
        df["note"] = ""
    df["note"] = df["note"].fillna("")
    return df


def summarize(per_material: pd.DataFrame) -> dict[str, Any]:
    """Means over all selected materials (failures = 2) and over successes only.

    A material whose SRME could not be computed (no mode data, different q-mesh) makes
    mean_SRME NaN rather than silently averaging over fewer materials; it is counted in
    ``n_srme_missing``.
    """
    df = per_material
    ok = df[~df["failed"].astype(bool)]
    ratio = df["kappa_TOT_ave"] / df["DFT_kappa_TOT_ave"]
    within2 = ((ratio >= 0.5) & (ratio <= 2.0)).fillna(False)
    return {
        "n_materials": len(df),
        "n_failed": int(df["failed"].astype(bool).sum()),
        "mean_SRME": float(df["SRME"].mean(skipna=False)) if len(df) else np.nan,
        "mean_SRE": float(df["SRE"].mean()) if len(df) else np.nan,
        "mean_SRD": float(df["SRD"].mean()) if len(df) else np.nan,
        "mean_SRME_success": float(ok["SRME"].mean(skipna=False)) if len(ok) else np.nan,
        "n_srme_missing": int(df["SRME"].isna().sum()),
        "mean_SRE_success": float(ok["SRE"].mean()) if len(ok) else np.nan,
        "frac_within_factor_2": float(within2.mean()) if len(df) else np.nan,
        "n_underestimated": int((ratio < 1).sum()),
    }


# ------------------------------------------------------------------ Grüneisen (PROTOCOL §7)


def srd_gamma(g_pred: float | None, g_ref: float) -> float:
    """gamma_SRME's SRD_γ = 2(|γ_pred| − |γ_ref|)/(|γ_pred| + |γ_ref|); NaN -> −2.

    On absolute values, as published: a wrong-sign γ is under-penalised, which is why
    :func:`score_gamma` also reports the signed SRD and the sign mismatch.
    """
    if g_pred is None or not np.isfinite(g_pred):
        return -KAPPA_ERROR_MAX
    denom = abs(g_pred) + abs(g_ref)
    if denom == 0:
        return 0.0
    return float(2.0 * (abs(g_pred) - abs(g_ref)) / denom)


def srd_gamma_signed(g_pred: float | None, g_ref: float) -> float:
    """Signed variant: 2(γ_pred − γ_ref)/(|γ_pred| + |γ_ref|), in [−2, 2]; NaN -> −2."""
    if g_pred is None or not np.isfinite(g_pred):
        return -KAPPA_ERROR_MAX
    denom = abs(g_pred) + abs(g_ref)
    if denom == 0:
        return 0.0
    return float(2.0 * (g_pred - g_ref) / denom)


def srme_gamma(mode_pred: np.ndarray, mode_ref: np.ndarray) -> float:
    """SRME_γ = 2 Σ|mode_γ_pred − mode_γ_ref| / (Σ|mode_γ_pred| + Σ|mode_γ_ref|).

    The mode_γ are the heat-capacity-weighted contributions (they sum to γ) on the same
    q-points and bands.
    """
    a = np.asarray(mode_pred, dtype=float)
    b = np.asarray(mode_ref, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"mode γ shapes differ: prediction {a.shape}, reference {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return KAPPA_ERROR_MAX
    denom = np.abs(a).sum() + np.abs(b).sum()
    return 0.0 if denom == 0 else float(2.0 * np.abs(a - b).sum() / denom)


def score_gamma(
    gamma: float | None,
    gamma_ref: float | None,
    failure: str = "",
    mode_pred: np.ndarray | None = None,
    mode_ref: np.ndarray | None = None,
) -> dict[str, Any]:
    """One material's γ scores: SRD/SRE (on |γ|), signed SRD, sign mismatch, SRME.

    A failure (imaginary modes at the origin, broken symmetry, an error) scores SRME 2;
    its SRD still uses the γ when one was computed (gamma_SRME prints SRE for those).
    SRME is NaN without a mode-resolved reference.
    """
    out: dict[str, Any] = {
        "gamma": np.nan if gamma is None else float(gamma),
        "gamma_DFT": np.nan if gamma_ref is None else float(gamma_ref),
        "failed": bool(failure),
        "failure": failure,
    }
    if gamma_ref is None or not np.isfinite(gamma_ref):
        out.update(SRD=np.nan, SRE=np.nan, SRD_signed=np.nan, sign_mismatch=False, SRME=np.nan)
        return out
    d = srd_gamma(gamma, gamma_ref)
    out.update(
        SRD=d,
        SRE=abs(d),
        SRD_signed=srd_gamma_signed(gamma, gamma_ref),
        sign_mismatch=bool(
            gamma is not None and np.isfinite(gamma) and np.sign(gamma) != np.sign(gamma_ref)
        ),
    )
    if failure or gamma is None or not np.isfinite(gamma):
        out["SRME"] = KAPPA_ERROR_MAX
    elif mode_pred is not None and mode_ref is not None:
        out["SRME"] = srme_gamma(mode_pred, mode_ref)
    else:
        out["SRME"] = np.nan
    return out


def summarize_gamma(per_material: pd.DataFrame) -> dict[str, Any]:
    """Means over the scored materials (failures included, as gamma_SRME)."""
    df = per_material[per_material["gamma_DFT"].notna()] if len(per_material) else per_material
    n = len(df)
    srme_col = df["SRME"] if n else pd.Series(dtype=float)
    return {
        "gamma_n_materials": n,
        "gamma_n_failed": int(df["failed"].sum()) if n else 0,
        "gamma_mean_SRE": float(df["SRE"].mean()) if n else np.nan,
        "gamma_mean_SRME": float(srme_col.mean()) if n and srme_col.notna().all() else np.nan,
        "gamma_n_sign_mismatch": int(df["sign_mismatch"].sum()) if n else 0,
        "gamma_mean_SRE_success": float(df.loc[~df["failed"], "SRE"].mean())
        if n and (~df["failed"]).any()
        else np.nan,
    }
