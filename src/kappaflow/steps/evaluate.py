"""Step 5, evaluate: one model's per-material results gathered into the reference layout,
scored against the reference (PROTOCOL §6), summarised across models, and drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kappaflow import storage
from kappaflow.gates import OK, flags, is_ok
from kappaflow.grid import REFERENCE_TEMPERATURE, has_temperature, temperature_index
from kappaflow.metrics import is_true
from kappaflow.reference import ChecksumError, ReferenceNotFoundError, ResolvedDir
from kappaflow.runtime import log
from kappaflow.settings import CheckSettings
from kappaflow.tables import markdown_table

#: array columns of the gathered table (None for a material without κ)
_KAPPA_COLUMNS = (
    "qpoints",
    "weights",
    "frequencies",
    "heat_capacity",
    "mode_kappa_TOT_ave",
    "kappa_TOT_RTA",
    "kappa_P_RTA",
    "kappa_C",
)
#: gathered column -> kappa.hdf5 dataset
_DATASETS = {
    "qpoints": "qpoint",
    "weights": "weight",
    "frequencies": "frequency",
    "heat_capacity": "heat_capacity",
    "kappa_TOT_ave": "kappa_TOT_ave",
    "mode_kappa_TOT_ave": "mode_kappa_TOT_ave",
    "kappa_TOT_RTA": "kappa_TOT_RTA",
    "kappa_P_RTA": "kappa_P_RTA",
    "kappa_C": "kappa_C",
}


#: recorded measurements (kappa.json ``checks``) copied into the gathered table
CHECK_COLUMNS = ("sum_rule_violation", "volume_change")


def gather_row(
    record: dict[str, Any], kappa_hdf5: str | Path, checks: CheckSettings | None = None
) -> dict[str, Any]:
    """One row of the gathered table (reference column names) from a kappa job's outputs,
    with its flags (``checks``: the bounds, default the config's defaults) and the
    measurements behind them."""
    row: dict[str, Any] = {
        "mp_id": record["mp_id"],
        "name": record["name"],
        "desc": record["desc"],
        "symm.no": record["material"]["spacegroup"],
        "structure_type": record["material"]["structure_type"],
        "q_mesh": record["q_mesh"],
        "temperatures": record["temperatures"],
        "status": record["status"],
        "imaginary_freqs": record["imaginary_freqs"],
        "broken_symmetry": record["broken_symmetry"],
        "initial_space_group_number": record["initial_space_group_number"],
        "relaxed_space_group_number": record["relaxed_space_group_number"],
        "reached_max_steps": record["relax"]["reached_max_steps"],
        "errors": record.get("errors", []),
        "protocol_deviations": ";".join(record.get("protocol_deviations", [])),
    }
    values = record.get("checks", {})
    row.update({k: values.get(k) for k in CHECK_COLUMNS})
    row["flags"] = ";".join(
        flags(
            values,
            record["temperatures"],
            record["kappa_TOT_ave"] if record["status"] == OK else [],
            checks or CheckSettings(),
        )
    )
    if record["status"] != OK:
        row["kappa_TOT_ave"] = [np.nan] * len(record["temperatures"])
        row.update(dict.fromkeys(_KAPPA_COLUMNS))
        return row
    data, _ = storage.read_hdf5(kappa_hdf5)
    row.update({col: data[name] for col, name in _DATASETS.items()})
    return row


def run_gather(
    records: Sequence[str | Path],
    kappa_files: Sequence[str | Path],
    out_table: str | Path,
    checks: CheckSettings | None = None,
) -> pd.DataFrame:
    rows = [
        gather_row(storage.read_json(r), h, checks)
        for r, h in zip(records, kappa_files, strict=True)
    ]
    df = pd.DataFrame(rows)
    storage.write_kappa_table(out_table, df)
    return df


def _read_scoring_table(path: str | Path, what: str) -> pd.DataFrame:
    """A kappa table of the scoring; a file that cannot be read is an input error naming it."""
    from kappaflow.metrics import InvalidPredictionError, InvalidReferenceError

    try:
        return storage.read_kappa_table(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        error = InvalidReferenceError if what == "reference" else InvalidPredictionError
        raise error(f"{what} table {path} could not be read: {exc}") from None


def _scored(pred, ref, predictions, reference, temperature, materials, **kw) -> pd.DataFrame:
    """score_table, its input errors told with the file they are about."""
    from kappaflow.metrics import (
        InvalidPredictionError,
        InvalidReferenceError,
        check_predictions,
        score_table,
    )

    try:
        check_predictions(pred, temperature)
        return score_table(pred, ref, temperature, materials, **kw)
    except InvalidPredictionError as exc:
        raise InvalidPredictionError(f"predictions {predictions}: {exc}") from None
    except InvalidReferenceError as exc:
        raise InvalidReferenceError(f"reference {reference}: {exc}") from None


def run_score(
    *,
    predictions: str | Path,
    reference: str | Path,
    out_csv: str | Path,
    materials: Sequence[str] | None = None,
    temperature: float = REFERENCE_TEMPERATURE,
    checks: CheckSettings | None = None,
) -> dict[str, Any]:
    """Score a kappa table against a reference table; writes the per-material CSV.

    A table that cannot be read, has no rows, duplicate ids, no temperatures or no material
    at ``temperature``, or mode κ that contradict κ or the reference's q-points, is an
    input error naming the file (and the material); a material's missing, NaN, infinite or
    non-positive κ is a failure scored 2.
    """
    from kappaflow.metrics import summarize

    pred = _read_scoring_table(predictions, "predictions")
    ref = _read_scoring_table(reference, "reference")
    per_material = _scored(pred, ref, predictions, reference, temperature, materials, checks=checks)
    storage.write_csv(out_csv, per_material.reset_index())
    return summarize(per_material)


def _skipped_rows(
    pred: pd.DataFrame, skipped: Sequence[str], temperature: float, note: str
) -> pd.DataFrame:
    """Rows of materials that are not scored: their note, and their κ where computed."""
    extra = pd.DataFrame({"mp_id": list(skipped), "note": note}).set_index("mp_id")
    for mid in skipped:
        if mid in pred.index:
            temps = np.atleast_1d(np.asarray(pred.loc[mid, "temperatures"], dtype=float))
            kappas = np.atleast_1d(np.asarray(pred.loc[mid, "kappa_TOT_ave"], dtype=float))
            i = temperature_index(temps, temperature)
            extra.loc[mid, "kappa_TOT_ave"] = (
                float(kappas[i]) if i is not None and kappas.size == temps.size else np.nan
            )
            if "flags" in pred.columns:
                extra.loc[mid, "flags"] = pred.loc[mid, "flags"] or ""
    return extra


def run_model_metrics(
    *,
    table: str | Path,
    reference: str | Path | None,
    out_csv: str | Path,
    materials: Sequence[str],
    temperature: float = REFERENCE_TEMPERATURE,
    computed_temperatures: Sequence[float] | None = None,
    reference_model: str | None = None,
    checks: CheckSettings | None = None,
) -> dict[str, Any]:
    """Workflow metrics of one model at ``temperature`` (the reference's 300 K).

    Materials without a DFT reference are skipped with a note; if ``temperature`` was not
    computed at all (e.g. ``temperatures: [600, 900]``), every material is skipped with a
    note instead of being scored as failed. With another model's gathered table as the
    reference (``reference_model``), materials where that model failed are skipped too.
    """
    from kappaflow.metrics import summarize

    pred = _read_scoring_table(table, "predictions")
    ref = (
        _read_scoring_table(reference, "reference")
        if reference is not None
        else pd.DataFrame(columns=["kappa_TOT_ave"])
    )
    computed = computed_temperatures is None or has_temperature(computed_temperatures, temperature)
    if reference_model is not None:
        ref = ref[[usable_as_reference(row, temperature) for _, row in ref.iterrows()]]
    scored = [m for m in materials if m in ref.index] if computed else []
    skipped = [m for m in materials if m not in scored]
    if scored:  # the workflow's own table: a coarse test mesh leaves SRME NaN with a note
        per_material = _scored(
            pred, ref, table, reference, temperature, scored, grid="note", checks=checks
        )
        summary = summarize(per_material)
        summary.update(_quoted(per_material, pred, ref, scored))
    else:
        per_material = pd.DataFrame(
            columns=["name", "SRD", "SRE", "SRME", "failed", "failure", "note", "flags"]
        )
        per_material.index.name = "mp_id"
        summary = {
            "n_materials": 0,
            "n_failed": 0,
            "mean_SRME": np.nan,
            "mean_SRE": np.nan,
            "n_flagged": 0,
        }
    if skipped:
        if not computed:
            note = f"{temperature:g} K not among the computed temperatures: metrics skipped"
        elif reference_model:
            note = f"reference model {reference_model} failed or has no kappa: metrics skipped"
        else:
            note = "no DFT reference: kappa computed, metrics skipped"
        per_material = pd.concat([per_material, _skipped_rows(pred, skipped, temperature, note)])
    summary["n_skipped"] = len(skipped)
    summary["temperature"] = temperature
    deviations = table_deviations(pred)
    if deviations:  # opt-in approximations: labelled on every row and in the summary
        per_material["protocol_deviations"] = [
            pred.loc[m, "protocol_deviations"] if m in pred.index else ""
            for m in per_material.index
        ]
        summary["protocol_deviations"] = ";".join(deviations)
    storage.write_csv(out_csv, per_material.reset_index())
    return summary


def _quoted(
    per_material: pd.DataFrame, pred: pd.DataFrame, ref: pd.DataFrame, scored: Sequence[str]
) -> dict[str, Any]:
    """The metrics people quote beside κ_SRME (kappaflow.breakdown); adds the per-material
    structure_type and spectrum_w1 columns to ``per_material`` in place."""
    from kappaflow import breakdown

    types = breakdown.structure_types(ref.loc[list(scored)])
    w1 = breakdown.spectrum_w1(pred, ref, list(scored))
    per_material["structure_type"] = [types.get(m, "other") for m in per_material.index]
    per_material["spectrum_w1"] = [w1.get(m, np.nan) for m in per_material.index]
    return breakdown.quoted_metrics(per_material, types, table=pred, w1=w1)


def table_deviations(table: pd.DataFrame) -> list[str]:
    """Distinct protocol-deviation labels in a gathered table (none for older tables)."""
    if "protocol_deviations" not in table.columns:
        return []
    labels = set()
    for value in table["protocol_deviations"].fillna(""):
        labels.update(x for x in str(value).split(";") if x)
    return sorted(labels)


def usable_as_reference(row: pd.Series, temperature: float) -> bool:
    """A row of a model's gathered table usable as a reference: status ok, no imaginary
    modes, a finite κ at ``temperature``."""
    if not is_ok(row.get("status", OK)):
        return False
    if is_true(row.get("imaginary_freqs", False)):
        return False
    temps = np.atleast_1d(np.asarray(row.get("temperatures", []), dtype=float))
    kappas = np.atleast_1d(np.asarray(row.get("kappa_TOT_ave", np.nan), dtype=float))
    i = temperature_index(temps, temperature)
    return i is not None and kappas.size == temps.size and bool(np.isfinite(kappas[i]))


#: columns of results/metrics.md, in this order, where present
SUMMARY_COLUMNS = (
    "model",
    "n_materials",
    "mean_SRME",
    "mean_SRE",
    "n_failed",
    "n_flagged",
    "mean_SRME_success",
    "frac_within_factor_2",
    "failure_rate",
    "imaginary_mode_rate",
    "spectrum_w1",
    "bias_factor",
    "n_skipped",
    "gamma_mean_SRE",
    "gamma_mean_SRME",
    "gamma_n_failed",
    "gamma_n_sign_mismatch",
    "protocol_deviations",
)


def run_summary(
    *,
    summaries: Sequence[str | Path],
    models: Sequence[str],
    reference_name: str,
    out_csv: str | Path,
    out_md: str | Path,
    gamma_summaries: Sequence[str | Path] | None = None,
) -> pd.DataFrame:
    """One row per model (results/metrics.csv) and the same as a Markdown table.

    With ``gamma_summaries`` (one per model) the γ columns (gamma_mean_SRE, ...) are added.
    """
    rows = [{"model": m, **storage.read_json(p)} for m, p in zip(models, summaries, strict=True)]
    if gamma_summaries:
        for row, path in zip(rows, gamma_summaries, strict=True):
            row.update(storage.read_json(path))
    df = pd.DataFrame(rows)
    storage.write_csv(out_csv, df)
    reference = (
        f"reference: κ of {reference_name.split(':', 1)[1]})"
        if reference_name.startswith("model:")
        else f"DFT reference: {reference_name})"
    )
    lines = [f"# kappaflow metrics ({REFERENCE_TEMPERATURE:g} K, {reference}", ""]
    lines += markdown_table(df, [c for c in SUMMARY_COLUMNS if c in df.columns])
    if "protocol_deviations" in df.columns and df["protocol_deviations"].fillna("").ne("").any():
        lines += [
            "",
            "PROTOCOL DEVIATION: rows with protocol_deviations used opt-in approximations "
            "(README, 'Protocol deviations'); they are not comparable to published numbers.",
        ]
    if df.get("n_materials", pd.Series([1])).fillna(0).eq(0).all():
        lines += [
            "",
            "No selected material was scored (no DFT reference, or 300 K not computed): "
            "κ was computed, metrics were skipped; see results/<model>/metrics.csv.",
        ]
    storage.write_text(out_md, "\n".join(lines) + "\n")
    return df


def run_parity(
    metrics_csv: str | Path, model: str, temperature: float, out_svg: str | Path
) -> None:
    from kappaflow.plots import parity

    storage.write_figure(out_svg, parity(storage.read_csv(metrics_csv), model, temperature))


def run_kappa_vs_temperature(table: str | Path, model: str, out_svg: str | Path) -> None:
    from kappaflow.plots import kappa_vs_temperature

    storage.write_figure(out_svg, kappa_vs_temperature(storage.read_kappa_table(table), model))


def run_cumulative(
    *,
    table: str | Path,
    reference: str | Path,
    materials: Sequence[str],
    model: str,
    temperature: float,
    out_dir: str | Path,
) -> None:
    """One cumulative-κ figure per material with a reference (model vs DFT)."""
    from kappaflow.plots import cumulative_plot

    pred = storage.read_kappa_table(table)
    ref = storage.read_kappa_table(reference)
    storage.ensure_dir(out_dir)
    for mid in materials:
        if mid not in ref.index:
            continue
        row = pred.loc[mid] if mid in pred.index else None
        storage.write_figure(
            Path(out_dir) / f"{mid}.svg", cumulative_plot(row, ref.loc[mid], model, temperature)
        )


def _user_metrics(metrics_csvs: Sequence[str | Path], models: Sequence[str]) -> dict:
    return {m: storage.read_csv(p) for m, p in zip(models, metrics_csvs, strict=True)}


def run_parity_grid(
    metrics_csvs: Sequence[str | Path],
    models: Sequence[str],
    out_png: str | Path,
    out_svg: str | Path,
) -> None:
    """κ parity of every model, one panel each (the paper's figure for any set of models)."""
    from kappaflow.plots import parity_grid

    storage.write_figure(out_png, parity_grid(_user_metrics(metrics_csvs, models)), out_svg)


def run_leaderboard(
    *,
    metrics_csvs: Sequence[str | Path],
    models: Sequence[str],
    reference: str | Path,
    reference_name: str,
    published: ResolvedDir,
    out_csv: str | Path,
    out_md: str | Path,
    out_ranking: tuple[str | Path, str | Path],
    out_scatter: tuple[str | Path, str | Path],
) -> pd.DataFrame:
    """The user's models among the published ones (k_SRME per-material tables, ranked on the
    user's materials; Matbench Discovery aggregates), the ranking chart and SRE vs SRME.

    Against another model's κ (``reference_name`` ``model:KEY``) published numbers are not
    comparable: only the user's models are ranked. Published tables that cannot be had
    (offline, no local copy) leave the k_SRME rows out, said in the table's notes."""
    from kappaflow import peers
    from kappaflow.plots import ranking_bar, sre_srme_scatter

    user = _user_metrics(metrics_csvs, models)
    notes = []
    tables: dict[str, pd.DataFrame] = {}
    mbd = None
    if reference_name.startswith("model:"):
        notes.append(f"scored against {reference_name}: published models are not comparable")
    else:
        mbd = peers.read_mbd_table(
            storage.read_text(storage.package_data("matbench_discovery.csv"))
        )
        dft = storage.read_kappa_table(reference)
        refs = {reference_name: dft["kappa_TOT_ave"].map(lambda k: float(np.ravel(k)[0]))}
        try:
            tables = storage.published_tables(published, refs)
        except (ReferenceNotFoundError, ChecksumError) as exc:
            notes.append(f"k_SRME per-material tables not used: {exc}")
            log(f"leaderboard: {notes[-1]}")
    board = peers.leaderboard(user, tables, mbd, reference=reference_name)
    storage.write_csv(out_csv, board)
    storage.write_text(out_md, peers.leaderboard_markdown(board, "; ".join(notes)))
    storage.write_figure(out_ranking[0], ranking_bar(board), out_ranking[1])
    storage.write_figure(out_scatter[0], sre_srme_scatter(board), out_scatter[1])
    return board
