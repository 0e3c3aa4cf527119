"""κ metrics (PROTOCOL §6, k_SRME ``benchmark.py``): pure numpy/pandas, no paths.

SRD  = 2 (κ_pred − κ_ref) / (κ_pred + κ_ref), NaN prediction -> −2
SRE  = |SRD|
SRME = 2 · [(1/N) Σ_q Σ_s |mode_κ_pred − mode_κ_ref|] / (κ_pred + κ_ref), N = Σ_q w_q

Failures (imaginary modes, broken symmetry, a recorded failure status, a missing, NaN,
infinite or non-positive prediction) score ``KAPPA_ERROR_MAX = 2``; means run over the
*selected* materials, failures included. A prediction that contradicts itself or the
reference (mode κ that do not sum to κ, mode κ on other q-points or weights than the
reference's) is an input error (:class:`InvalidPredictionError`), never a score.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from kappaflow.gates import NONFINITE_KAPPA, NONPOSITIVE_KAPPA, flags, gate, is_ok
from kappaflow.grid import REFERENCE_TEMPERATURE, has_temperature, temperature_index
from kappaflow.settings import CheckSettings

KAPPA_ERROR_MAX = 2.0
#: relative tolerance of Σ mode κ / Σ w = κ (the DFT files satisfy it to 9e-11)
MODE_SUM_RTOL = 1e-6


class InvalidReferenceError(ValueError):
    """An input of the scoring is invalid: the reference lacks a material, a temperature
    or has NaN data (and, as :class:`InvalidPredictionError`, the predictions)."""


class InvalidPredictionError(InvalidReferenceError):
    """The predictions contradict themselves or the reference (message names the material)."""


def srd(k_pred: float, k_ref: float) -> float:
    """Symmetric relative difference; a NaN, infinite or non-positive prediction -> −2 (a
    failure: κ = −κ_ref would otherwise divide by zero). ``k_ref`` must be positive."""
    if k_ref is None or not np.isfinite(k_ref) or k_ref <= 0:
        raise InvalidReferenceError(f"reference κ must be positive and finite, got {k_ref!r}")
    if k_pred is None or not np.isfinite(k_pred) or k_pred <= 0:
        return -KAPPA_ERROR_MAX
    return float(2.0 * (k_pred - k_ref) / (k_pred + k_ref))


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
    if not (np.isfinite(k_pred) and k_pred > 0 and np.isfinite(k_ref) and k_ref > 0):
        return KAPPA_ERROR_MAX
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


def _array(value: Any) -> np.ndarray | None:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    return np.asarray(value, dtype=float)


def _given(value: Any) -> Any:
    """None for a missing mode κ (None, or the NaN of a null cell), else the value."""
    if value is None or (np.ndim(value) == 0 and np.isnan(value)):
        return None
    return value


def other_grid(pred: pd.Series, ref: pd.Series, mode_pred: Any, mode_ref: Any) -> str | None:
    """Why the prediction's mode κ are not on the reference's q-points, bands and weights
    (None when they are): another shape, other irreducible q-points (compared modulo a
    reciprocal lattice vector) or other weights, where both tables give them."""
    if np.shape(mode_pred) != np.shape(mode_ref):
        return (
            f"mode κ shape {np.shape(mode_pred)} differs from the reference's {np.shape(mode_ref)}"
        )
    q_pred, q_ref = _array(_value(pred, "qpoints")), _array(_value(ref, "qpoints"))
    if q_pred is not None and q_ref is not None:
        if q_pred.shape != q_ref.shape:
            return f"{q_pred.shape[0]} q-points, the reference has {q_ref.shape[0]}"
        d = q_pred - q_ref
        if np.max(np.abs(d - np.rint(d)), initial=0.0) > 1e-6:
            i = int(np.argmax(np.max(np.abs(d - np.rint(d)), axis=-1)))
            return f"q-point {i} is {q_pred[i].tolist()}, the reference's {q_ref[i].tolist()}"
    w_pred, w_ref = _array(_value(pred, "weights")), _array(_value(ref, "weights"))
    if (
        w_pred is not None
        and w_ref is not None
        and (w_pred.shape != w_ref.shape or np.any(w_pred != w_ref))
    ):
        return "q-point weights differ from the reference's"
    return None


def mode_sum_error(mode: np.ndarray, weights: Any, kappa: float) -> float | None:
    """|Σ mode κ / Σ w − κ| / |κ| (None when the weights do not fit the modes)."""
    w = _array(weights)
    if w is None or w.shape != np.shape(mode)[:1] or np.sum(w) <= 0:
        return None
    return float(abs(np.sum(mode) / np.sum(w) - kappa) / abs(kappa))


def _check_mode_sum(
    mode: np.ndarray, weights: Any, kappa: float, material: Any, temperature: float, what: str
) -> None:
    error = mode_sum_error(mode, weights, kappa)
    bad = InvalidReferenceError if what == "reference" else InvalidPredictionError
    if error is None:
        raise bad(
            f"{what} {material}: weights {np.shape(_array(weights))} do not fit the mode κ "
            f"{np.shape(mode)} at {temperature:g} K (one positive weight per q-point)"
        )
    if error > MODE_SUM_RTOL:
        raise bad(
            f"{what} {material}: the mode κ at {temperature:g} K sum to "
            f"{np.sum(mode) / np.sum(_array(weights)):.10g} (Σ mode / Σ w), not its "
            f"kappa_TOT_ave {kappa:.10g} (relative {error:.2e} > {MODE_SUM_RTOL:g}): the "
            "mode κ must include the q-point weight and sum to κ"
        )


def row_flags(
    pred: pd.Series, temperature: float, k_pred: float | None, checks: CheckSettings
) -> list[str]:
    """Flags of one prediction row: those recorded with it (``flags``) and those of its
    measured values and κ at ``temperature`` (:func:`kappaflow.gates.flags`)."""
    recorded = _value(pred, "flags")
    out = [f for f in str(recorded).split(";") if f] if isinstance(recorded, str) else []
    values = {k: _value(pred, k) for k in ("sum_rule_violation", "volume_change")}
    out += flags(values, [temperature], [k_pred], checks)
    return list(dict.fromkeys(out))


def score_material(
    pred: pd.Series | None,
    ref: pd.Series,
    temperature: float = REFERENCE_TEMPERATURE,
    symm_no: int | None = None,
    *,
    grid: str = "error",
    checks: CheckSettings | None = None,
) -> dict[str, Any]:
    """SRD/SRE/SRME of one material, with the failure reason (k_SRME order) and flags.

    Mode κ on other q-points than the reference's raise :class:`InvalidPredictionError`
    (``grid="error"``) or leave SRME NaN with a note (``grid="note"``: the workflow's own
    table on a coarse test mesh); mode κ that do not sum to κ always raise.
    """
    t_ref = temperature_index(_value(ref, "temperatures"), temperature)
    k_ref = _at_temperature(ref, "kappa_TOT_ave", t_ref)
    if k_ref is None or not np.isfinite(k_ref) or k_ref <= 0:
        raise InvalidReferenceError(
            f"reference has no finite positive kappa_TOT_ave at {temperature:g} K for "
            f"{ref.name} (got {k_ref!r})"
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
        elif k_pred is None or np.isnan(k_pred):
            reason = "nan_kappa"
        elif not np.isfinite(k_pred):
            reason = NONFINITE_KAPPA
        elif k_pred <= 0:
            reason = NONPOSITIVE_KAPPA
        out["flags"] = ";".join(row_flags(pred, temperature, k_pred, checks or CheckSettings()))
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
    mode_pred, mode_ref = _given(mode_pred), _given(mode_ref)  # a null cell: no mode data
    weights = _value(ref, "weights")
    if mode_pred is None or mode_ref is None or weights is None:
        out["SRME"] = np.nan
        out["note"] = "no mode-resolved kappa: SRME not computed"
        out.update(failed=False, failure="")
        return out
    if np.any(~np.isfinite(mode_pred)):
        out.update(
            SRD=-KAPPA_ERROR_MAX,
            SRE=KAPPA_ERROR_MAX,
            SRME=KAPPA_ERROR_MAX,
            failed=True,
            failure="nan_mode_kappa",
        )
        return out
    _check_mode_sum(np.asarray(mode_ref), weights, k_ref, ref.name, temperature, "reference")
    mismatch = other_grid(pred, ref, mode_pred, mode_ref)
    own = _value(pred, "weights")
    if _array(own) is not None or mismatch is None:  # else: no weights to sum the modes with
        _check_mode_sum(
            np.asarray(mode_pred),
            own if _array(own) is not None else weights,
            k_pred,
            pred.name,
            temperature,
            "prediction",
        )
    if mismatch is not None and grid == "error":
        raise InvalidPredictionError(
            f"prediction {pred.name}: {mismatch}; SRME compares mode κ on the reference's "
            "irreducible q-points, bands and weights (same space group and q-mesh)"
        )
    if mismatch is not None:
        out["SRME"] = np.nan
        out["note"] = (
            f"mode kappa shape {np.shape(mode_pred)} differs from reference "
            f"{np.shape(mode_ref)} (different q-mesh?)"  # the wording of earlier tables
            if np.shape(mode_pred) != np.shape(mode_ref)
            else f"{mismatch} (another q-mesh?): SRME not computed"
        )
    else:
        out["SRME"] = srme(mode_pred, mode_ref, weights, k_pred, k_ref)
    out["failed"] = False
    out["failure"] = ""
    return out


def check_predictions(predictions: pd.DataFrame, temperature: float) -> None:
    """Problems of a whole prediction table (an input error, not a failure per material):
    no ``temperatures`` column, or no material with a κ at ``temperature``."""
    if "temperatures" not in predictions.columns:
        raise InvalidPredictionError(
            "no 'temperatures' column: κ is matched to the reference by temperature "
            f"(columns: {', '.join(map(str, predictions.columns))})"
        )
    cells = list(predictions["temperatures"])
    cells = [a for a in map(_array, cells) if a is not None]
    if any(has_temperature(v, temperature) for v in cells):
        return
    found = sorted({float(t) for v in cells for t in np.atleast_1d(v) if np.isfinite(t)})
    raise InvalidPredictionError(
        f"no material has a κ at {temperature:g} K (temperatures in the table: "
        f"{', '.join(f'{t:g}' for t in found) or 'none'}); the DFT reference is at "
        f"{REFERENCE_TEMPERATURE:g} K only"
    )


def score_table(
    predictions: pd.DataFrame,
    reference: pd.DataFrame,
    temperature: float = REFERENCE_TEMPERATURE,
    materials: Iterable[str] | None = None,
    *,
    grid: str = "error",
    checks: CheckSettings | None = None,
) -> pd.DataFrame:
    """Per-material metrics over the selected materials (default: every reference row).

    A selected material missing from ``predictions`` (or NaN there) is a failure scored 2;
    a selected material missing from ``reference`` is an input error. ``grid`` and
    ``checks``: see :func:`score_material`; the ``flags`` column lists each row's flags.
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
        row = score_material(
            pred_row,
            ref_row,
            temperature,
            None if symm is None else int(symm),
            grid=grid,
            checks=checks,
        )
        name = _value(ref_row, "name")
        row = {"mp_id": mid, "name": name, "temperature": temperature, **row}
        rows.append(row)
    df = pd.DataFrame(rows).set_index("mp_id")
    if "note" not in df.columns:
        df["note"] = ""
    df["note"] = df["note"].fillna("")
    if "flags" not in df.columns:
        df["flags"] = ""
    df["flags"] = df["flags"].fillna("")
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
        "n_flagged": int(df["flags"].fillna("").ne("").sum()) if "flags" in df.columns else 0,
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
