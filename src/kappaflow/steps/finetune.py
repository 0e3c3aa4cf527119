"""Step 7, fine-tuning (PROTOCOL §12): training structures out, labels in and checked,
mace's own training entry point, and the before/after comparison of base and fine-tuned."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kappaflow import storage
from kappaflow.calculators import ModelSpec, load_calculator
from kappaflow.finetune import ExportSettings, TrainSettings
from kappaflow.runtime import log, provenance, run_streaming
from kappaflow.settings import Phono3pySettings, StructureDefaults
from kappaflow.structures import MaterialError, frame_for, materials_table
from kappaflow.tables import markdown_table


def run_finetune_export(
    *,
    structures: str | Path,
    material_ids: list[str],
    export: ExportSettings,
    phono3py_settings: Phono3pySettings,
    out_frames: str | Path,
    out_manifest: str | Path,
    defaults: StructureDefaults | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Training structures for labelling (on the reference geometry) + their manifest."""
    from kappaflow import finetune
    from kappaflow.phonons import init_phono3py

    frames_in = storage.read_structures(structures)
    table = materials_table(frames_in, defaults, overrides)
    out: list = []
    for mid in material_ids:
        if mid not in table:
            raise MaterialError(f"material {mid!r} is not in {structures}")
        ph3 = init_phono3py(frame_for(frames_in, mid), table[mid], phono3py_settings)
        out += finetune.export_material(ph3, mid, export)
    man = finetune.manifest(out, export, str(structures))
    man["phono3py"] = phono3py_settings.forces_dict()
    storage.write_frames(out_frames, out)
    man["sha256"] = storage.sha256_file(out_frames)
    storage.write_json(out_manifest, man)
    log(f"exported {len(out)} structures of {len(material_ids)} material(s) to {out_frames}")
    return man


def run_finetune_label(
    *,
    exported: str | Path,
    model: ModelSpec,
    out: str | Path,
    device: str = "auto",
    model_dir: str | Path = "resources/models",
    with_stress: bool = False,
) -> int:
    """Label exported structures with a registry model (a stand-in for DFT, or a teacher)."""
    from kappaflow.finetune_labels import label_frames

    frames = storage.read_frames(exported)
    loaded = load_calculator(model, device, model_dir)
    storage.write_frames(out, label_frames(frames, loaded.calculator, with_stress))
    log(f"labelled {len(frames)} structures with {model.key} -> {out}")
    return len(frames)


#: label files read as phono3py force sets (PhononDB's format); the rest as extxyz
PHONO3PY_SUFFIXES = (".yaml", ".yml", ".xz", ".gz", ".lzma")


def run_finetune_check(
    labels: list[str | Path], exported: str | Path | None, out: str | Path
) -> dict[str, Any]:
    """Validate label files (extxyz, or phono3py yaml with forces) and write one clean
    training extxyz; raise LabelError naming file and frame on bad labels."""
    import phono3py

    from kappaflow.finetune import ENERGY_KEY
    from kappaflow.finetune_labels import frames_from_phono3py, validate_labels

    reference = storage.read_frames(exported) if exported else None
    clean: list = []
    for path in map(Path, labels):
        if path.suffix in PHONO3PY_SUFFIXES:
            ph3 = phono3py.load(str(path), produce_fc=False, log_level=0)
            clean += validate_labels(frames_from_phono3py(ph3, str(path)), None, str(path))
        else:
            clean += validate_labels(storage.read_frames(path), reference, str(path))
    storage.write_frames(out, clean)
    summary = {
        "n_frames": len(clean),
        "n_with_energy": sum(ENERGY_KEY in a.info for a in clean),
        "files": [str(p) for p in labels],
        "sha256": storage.sha256_file(out),
    }
    log(f"{summary['n_frames']} labelled frames ok ({summary['n_with_energy']} with energies)")
    return summary


class FinetuneError(RuntimeError):
    """mace's training run failed; the message carries the tail of its log."""


def run_finetune_train(
    *,
    train_data: str | Path,
    base: ModelSpec,
    settings: TrainSettings,
    key: str,
    workroot: str | Path,
    out_model: str | Path,
    out_record: str | Path,
    device: str = "auto",
    threads: int | None = None,
    model_dir: str | Path = "resources/models",
) -> dict[str, Any]:
    """Fine-tune the mace model ``base`` on checked labels with ``mace.cli.run_train``.

    The run lives in ``workroot/run-<tag>`` (tag: hash of data, base checkpoint and
    settings), so a killed run resumes from mace's latest checkpoint and a changed input
    starts afresh. Writes the model file and a record: sha256 of model, base and data,
    mace's arguments, the split, the error table (train/valid RMSE) and timings."""
    from kappaflow import finetune
    from kappaflow.calculators import mace_checkpoint, resolve_device

    base_path, base_ck = mace_checkpoint(base, model_dir)
    frames = storage.read_frames(train_data)
    data_sha = storage.sha256_file(train_data)
    tag = finetune.training_tag(data_sha, base_ck["checkpoint_sha256"], settings)
    workdir = Path(workroot) / f"run-{tag}"
    train, valid = finetune.split_train_valid(frames, settings.valid_fraction, settings.seed)
    train_file, valid_file = workdir / "train.extxyz", workdir / "valid.extxyz"
    storage.write_frames(train_file, train)
    storage.write_frames(valid_file, valid)
    dev = resolve_device(device if device != "auto" else settings.device)
    argv = finetune.mace_train_argv(
        settings, str(base_path), str(train_file), str(valid_file), str(workdir), key, dev
    )
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log(
        f"fine-tuning {base.key} -> {key}: {len(train)} train / {len(valid)} valid frames, "
        f"{settings.epochs} epochs on {dev}; work dir {workdir}"
    )
    t0 = time.perf_counter()
    rc = run_streaming([sys.executable, "-m", "mace.cli.run_train", *argv], env)
    elapsed = time.perf_counter() - t0
    mace_log = workdir / "logs" / f"{key}_run-{settings.seed}.log"
    log_text = storage.read_text(mace_log) if mace_log.exists() else ""
    model_file = workdir / f"{key}.model"
    if rc != 0 or not model_file.exists():
        tail = "\n".join(log_text.splitlines()[-25:])
        raise FinetuneError(
            f"mace run_train for {key!r} exited {rc}"
            + ("" if model_file.exists() else f" without writing {model_file}")
            + f"; log {mace_log}:\n{tail}"
        )
    storage.copy_file(model_file, out_model)
    record = {
        "model": key,
        "model_file": str(out_model),
        "sha256": storage.sha256_file(out_model),
        "base": base.key,
        "base_checkpoint": base_ck,
        "train_data": str(train_data),
        "train_data_sha256": data_sha,
        "n_train": len(train),
        "n_valid": len(valid),
        "n_atoms_train": int(sum(len(a) for a in train)),
        "n_with_energy": sum(finetune.ENERGY_KEY in a.info for a in frames),
        "materials": sorted({str(a.info.get(finetune.MATERIAL_KEY, "?")) for a in frames}),
        "mode": "multihead" if settings.replay_file else "naive",
        "settings": settings.as_dict(),
        "device": dev,
        "threads": threads,
        "mace_argv": argv,
        "work_dir": str(workdir),
        "training_log": str(mace_log),
        "errors": finetune.parse_error_table(log_text),
        "train_seconds": round(elapsed, 1),
        "provenance": provenance(),
    }
    storage.write_json(out_record, record)
    log(f"fine-tuned model {out_model} sha256 {record['sha256'][:12]} in {elapsed:.0f} s")
    return record


#: columns of the per-split table of before-after.md
SPLIT_COLUMNS = (
    "split", "n", "mSRME_before", "mSRME_after", "mSRE_before", "mSRE_after",
    "failed_before", "failed_after", "n_ok_both", "mSRME_before_ok", "mSRME_after_ok",
)  # fmt: skip
MATERIAL_COLUMNS = ("mp_id", "split", "SRME_before", "SRME_after", "failed_before", "failed_after")
MATERIAL_HEADERS = (
    "mp_id", "split", "SRME before", "SRME after", "failed before", "failed after",
)  # fmt: skip


def run_finetune_compare(
    *,
    before_csv: str | Path,
    after_csv: str | Path,
    split: dict[str, str],
    base: str,
    key: str,
    out_csv: str | Path,
    out_summary: str | Path,
    out_md: str | Path,
    out_png: str | Path,
    out_svg: str | Path,
) -> pd.DataFrame:
    """Before/after table per material and per split (train / same composition /
    held out) from the two models' metrics, plus side-by-side parity plots."""
    from kappaflow import finetune
    from kappaflow.plots import before_after_parity

    before, after = storage.read_csv(before_csv), storage.read_csv(after_csv)
    scored = [
        df[df["SRME"].notna()] if "SRME" in df.columns else df.iloc[:0] for df in (before, after)
    ]
    per, summary = finetune.before_after(scored[0], scored[1], split)
    storage.write_csv(out_csv, per)
    storage.write_csv(out_summary, summary)
    lines = [
        f"# Fine-tuning: {base} -> {key}",
        "",
        "Splits: train = materials whose structures were in the training data; "
        "same_composition = not trained on, but a training material has their composition; "
        "held_out = no training material shares their composition. "
        "*_ok: materials that failed in neither run.",
        "",
        *markdown_table(summary, SPLIT_COLUMNS),
        "",
        *markdown_table(per, MATERIAL_COLUMNS, MATERIAL_HEADERS),
    ]
    storage.write_text(out_md, "\n".join(lines) + "\n")
    storage.write_figure(
        out_png, before_after_parity(scored[0], scored[1], split, base, key), out_svg
    )
    return summary
