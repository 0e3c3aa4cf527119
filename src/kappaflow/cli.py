"""``kappaflow`` command line: one material at a time, calling the workflow's own steps.

kappaflow kappa --model chgnet-0.3.0 --material mp-22862 --out DIR
kappaflow gruneisen --model sevennet-0 --material mp-1265 --out DIR
kappaflow score --predictions P --reference R --out metrics.csv [--materials ID,ID]
kappaflow fetch-reference [--reference-dir DIR]
kappaflow materials [--select rs,mp-22862]
kappaflow finetune-export / finetune-label / finetune-check / finetune-train ...

``--config`` reads a workflow config.yaml through the same loader (and schema) as the
Snakefile, so a mistake is refused the same way; flags override its keys.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kappaflow.calculators import ModelSpec
    from kappaflow.config import Config


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.10g}"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as config keys (validated with the rest of the config)."""
    out: dict[str, Any] = {}
    phono: dict[str, Any] = {}
    if getattr(args, "mesh", None):
        phono["mesh"] = list(args.mesh)
    if getattr(args, "backend", None):
        phono["backend"] = args.backend
    if getattr(args, "phph_engine", None):
        phono["phph_engine"] = args.phph_engine
    if getattr(args, "kappa_convention", None):
        phono["kappa_convention"] = args.kappa_convention
    for key in ("fc3_cutoff_pair_distance", "fc3_random_displacements"):
        if getattr(args, key, None) is not None:  # opt-in protocol deviations
            phono[key] = getattr(args, key)
    if phono:
        out["phono3py"] = phono
    forces: dict[str, Any] = {}
    if getattr(args, "force_path", None):
        forces["path"] = args.force_path
    if getattr(args, "max_atoms_per_batch", None):
        forces["max_atoms_per_batch"] = args.max_atoms_per_batch
    if forces:
        out["forces"] = forces
    if getattr(args, "temperatures", None):
        out["temperatures"] = list(args.temperatures)
    if getattr(args, "structures", None):
        out["structures"] = args.structures
    return out


def _config(args: argparse.Namespace):
    from kappaflow.config import load_config_file

    return load_config_file(
        getattr(args, "config", None),
        _overrides(args),
        cli_reference_dir=getattr(args, "reference_dir", None),
    )


def _model_spec(args: argparse.Namespace, cfg: Config | None = None) -> ModelSpec:
    """The model of a command: a config key, a built-in, a local file or a factory, with the
    checkpoint trust given on the command line (``--model-sha256``, ``--trust-unpinned``)."""
    from dataclasses import replace

    from kappaflow.calculators import model_spec

    key = getattr(args, "model", None) or args.base
    spec = cfg.model(key) if cfg is not None else model_spec(key)
    options = dict(spec.options)
    if getattr(args, "model_sha256", None):
        options["sha256"] = args.model_sha256
    if getattr(args, "trust_unpinned", False):
        options["trust_unpinned"] = True
    return replace(spec, options=options)


class _Model:
    """The model of a CLI run, loaded once and only when a step needs it."""

    def __init__(self, spec, device: str, model_dir: str) -> None:
        self.spec, self.device, self.model_dir = spec, device, model_dir
        self._loaded = None

    def __call__(self):
        from kappaflow.calculators import load_calculator

        if self._loaded is None:
            self._loaded = load_calculator(self.spec, self.device, self.model_dir)
        return self._loaded


def _relax_and_fc2(todo, args, cfg, files, model: _Model) -> None:
    """The relax and fc2 steps shared by ``kappa`` and ``gruneisen`` (those in ``todo``)."""
    from kappaflow.steps.harmonic import run_fc2
    from kappaflow.steps.relax import run_relax

    s = cfg.settings
    if "relax" in todo:
        run_relax(
            structures=cfg.structures,
            material_id=args.material,
            model=model.spec,
            settings=s.relax,
            out_relaxed=files["relaxed"],
            defaults=s.structure_defaults,
            overrides=s.material_overrides,
            loaded=model(),
        )
    if "fc2" in todo:
        run_fc2(
            relaxed=files["relaxed"],
            model=model.spec,
            settings=s.phono3py,
            out_fc2=files["fc2"],
            out_forces=files["forces_fc2"],
            out_disp=files["disp"],
            out_phonons=files["phonons"],
            loaded=model(),
            force_settings=s.forces,
        )


def _wanted(args, cfg, spec, **extra):
    """What this run asks of --out (kappaflow.steps.resume.Wanted)."""
    from kappaflow.steps.resume import Wanted

    frame, material = cfg.material(args.material)
    s = cfg.settings
    return Wanted(
        model=spec,
        frame=frame,
        material=material,
        relax=s.relax,
        phono3py=s.phono3py,
        forces=s.forces,
        **extra,
    )


def _todo(args, files, wanted, steps: tuple[str, ...]) -> tuple[str, ...]:
    """The steps to (re)do, from the first that is not current. Their old outputs stay
    until overwritten (a run that fails early loses nothing): each step's record, written
    last, holds the sha256 of its inputs and other outputs, so a run killed midway leaves
    a step that the next run sees is not current."""
    from kappaflow.steps.resume import first_outdated, outputs_of, steps_to_run

    done = outputs_of(steps, files)
    if args.force:
        todo = steps
        print(f"[kappaflow] {args.out}: --force, redoing {', '.join(todo)}", file=sys.stderr)
    else:
        first = first_outdated(files, steps, wanted)
        todo = steps_to_run(first and first.step, steps)
        if first is not None and any(p.exists() for p in done):
            print(
                f"[kappaflow] {args.out}: redoing {', '.join(todo)} ({first.reason})",
                file=sys.stderr,
            )
    return todo


@contextlib.contextmanager
def _locked(args):
    """--out as a folder (clear error when it cannot be one), locked for this run, and
    cleared of the temporary files of killed writers."""
    from kappaflow import storage

    folder = storage.output_folder(args.out)
    required = os.environ.get("KAPPAFLOW_NO_LOCK", "") in ("", "0")
    with storage.folder_lock(folder, shlex.join(["kappaflow", *sys.argv[1:]]), required):
        storage.remove_dead_temp_files(folder)
        yield folder


def cmd_kappa(args: argparse.Namespace) -> int:
    from kappaflow import storage
    from kappaflow.gates import OK, flags
    from kappaflow.layout import material_files
    from kappaflow.steps.resume import KAPPA_STEPS

    cfg = _config(args)
    files = material_files(args.out)
    spec = _model_spec(args, cfg)
    wanted = _wanted(args, cfg, spec, temperatures=cfg.settings.kappa.temperatures)
    model = _Model(spec, args.device, args.model_dir)
    with _locked(args):
        todo = _todo(args, files, wanted, KAPPA_STEPS)
        _relax_and_fc2(todo, args, cfg, files, model)
        _fc3_and_kappa(todo, cfg, files, spec, model, args.threads)
        if not todo:
            print(
                f"[kappaflow] {args.out} is up to date; nothing recomputed (--force redoes it)",
                file=sys.stderr,
            )
        record = storage.read_json(files["record"])
    if record["status"] != OK:
        if record.get("errors"):
            print(f"[kappaflow] {args.material}: {record['errors'][-1]}", file=sys.stderr)
        print(f"status={record['status']}")
        return 0
    found = flags(
        record.get("checks", {}),
        record["temperatures"],
        record["kappa_TOT_ave"],
        cfg.settings.checks,
    )
    if found:  # suspicious, not failed: scored, and flagged in the tables
        print(f"flags={','.join(found)}")
    for t, k in zip(record["temperatures"], record["kappa_TOT_ave"], strict=True):
        print(f"kappa_TOT_ave_{t:g}K={_fmt(k)}")
    return 0


def _fc3_and_kappa(todo, cfg, files, spec, model: _Model, threads: int | None) -> None:
    from kappaflow.steps.anharmonic import run_fc3
    from kappaflow.steps.kappa import run_kappa

    if "fc3" in todo:
        run_fc3(
            relaxed=files["relaxed"],
            phonons_json=files["phonons"],
            model=spec,
            settings=cfg.settings.phono3py,
            out_fc3=files["fc3"],
            out_forces=files["forces_fc3"],
            loaded=model(),
            force_settings=cfg.settings.forces,
        )
    if "kappa" in todo:
        run_kappa(
            relaxed=files["relaxed"],
            phonons_json=files["phonons"],
            fc2_path=files["fc2"],
            fc3_path=files["fc3"],
            settings=cfg.settings.kappa,
            out_hdf5=files["kappa"],
            out_record=files["record"],
            fc3_forces=files["forces_fc3"],
            device=model.device,
            threads=threads,
        )


def _gamma_scores(cfg, material_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """γ scores of one material against the DFT γ, or None where there is no reference."""
    from kappaflow import storage
    from kappaflow.gates import OK
    from kappaflow.metrics import score_gamma

    try:
        ref = storage.read_gamma_reference(cfg.gamma_reference)
    except Exception as exc:  # the γ is computed; scoring needs the reference
        print(f"[kappaflow] no DFT γ reference ({exc}); not scored", file=sys.stderr)
        return None
    if material_id not in ref.index:
        return None
    failure = "" if record["status"] == OK else record["status"]
    g_ref = float(ref.loc[material_id, "gamma_DFT_300K"])
    return score_gamma(record.get("gamma"), g_ref, failure)


def cmd_gruneisen(args: argparse.Namespace) -> int:
    """relax + fc2 (shared with ``kappa``, reused when current), then the Grüneisen step."""
    from kappaflow import storage
    from kappaflow.gates import OK
    from kappaflow.layout import material_files
    from kappaflow.steps.gruneisen import run_gruneisen
    from kappaflow.steps.resume import GRUNEISEN_STEPS

    cfg = _config(args)
    files = material_files(args.out)
    spec = _model_spec(args, cfg)
    settings = cfg.settings.gruneisen
    melting_point = cfg.melting_point(args.material)
    wanted = _wanted(args, cfg, spec, gruneisen=settings, melting_point=melting_point)
    model = _Model(spec, args.device, args.model_dir)
    with _locked(args):
        todo = _todo(args, files, wanted, GRUNEISEN_STEPS)
        _relax_and_fc2(todo, args, cfg, files, model)
        if "gruneisen" in todo:
            run_gruneisen(
                relaxed=files["relaxed"],
                fc2_path=files["fc2"],
                model=spec,
                settings=settings,
                relax_settings=cfg.settings.relax,
                phono3py_settings=cfg.settings.phono3py,
                out_hdf5=files["gruneisen_hdf5"],
                out_json=files["gruneisen"],
                out_csv=files["thermal_expansion"],
                melting_point=melting_point,
                loaded=model(),
            )
        else:
            print(
                f"[kappaflow] {files['gruneisen']} is up to date; nothing recomputed "
                "(--force redoes it)",
                file=sys.stderr,
            )
        record = storage.read_json(files["gruneisen"])
    t = settings.score_temperature
    scores = _gamma_scores(cfg, args.material, record)
    if scores is not None:
        print(f"gamma_DFT_{t:g}K={_fmt(scores['gamma_DFT'])}")
        print(f"SRE_gamma={_fmt(scores['SRE'])}")
        print(f"sign_mismatch={scores['sign_mismatch']}")
    if record.get("bulk_modulus_GPa") is not None:
        print(f"bulk_modulus_GPa={_fmt(record['bulk_modulus_GPa'])}")
        print(f"alpha_V_{t:g}K={_fmt(record.get('alpha_V_score_T'))}")
    if record["status"] != OK:
        print(f"status={record['status']}")
        return 0
    print(f"gamma_{t:g}K={_fmt(record['gamma'])}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from kappaflow.steps.evaluate import run_score

    materials = [m for m in args.materials.split(",") if m] if args.materials else None
    summary = run_score(
        predictions=args.predictions,
        reference=args.reference,
        out_csv=args.out,
        materials=materials,
        temperature=args.temperature,
    )
    for key in ("mean_SRD", "mean_SRME_success", "frac_within_factor_2"):
        print(f"{key}={_fmt(summary[key])}")
    print(f"n_materials={summary['n_materials']}")
    print(f"mean_SRME={_fmt(summary['mean_SRME'])}")
    print(f"mean_SRE={_fmt(summary['mean_SRE'])}")
    print(f"n_failed={summary['n_failed']}")
    return 0


def _reference(args: argparse.Namespace):
    from kappaflow.reference import resolve_reference_dir

    return resolve_reference_dir(cli_dir=args.reference_dir)


def cmd_fetch_reference(args: argparse.Namespace) -> int:
    from kappaflow import storage
    from kappaflow.reference import FILES

    resolved = _reference(args)
    for key in FILES:
        print(f"{key}={storage.reference_file(resolved, key)}")
    return 0


def _structures(args: argparse.Namespace) -> Path:
    from kappaflow import storage

    if args.structures:
        return Path(args.structures)
    return storage.reference_file(_reference(args), "structures")


def cmd_materials(args: argparse.Namespace) -> int:
    from kappaflow import storage
    from kappaflow.structures import materials_table, select_materials

    table = materials_table(storage.read_structures(_structures(args)))
    selection = args.select.split(",") if args.select else "all"
    for mid in select_materials(table, selection):
        m = table[mid]
        cells = {k: "x".join(map(str, getattr(m, k))) for k in ("fc2_supercell", "fc3_supercell")}
        print(
            f"{mid}\t{m.desc}\tfc2={cells['fc2_supercell']}\tfc3={cells['fc3_supercell']}"
            f"\tmesh={'x'.join(map(str, m.q_mesh))}"
        )
    return 0


def cmd_finetune_export(args: argparse.Namespace) -> int:
    from kappaflow.finetune import ExportSettings
    from kappaflow.settings import Phono3pySettings
    from kappaflow.steps.finetune import run_finetune_export

    out = Path(args.out)
    man = run_finetune_export(
        structures=_structures(args),
        material_ids=args.materials,
        export=ExportSettings(
            displaced=tuple(args.sets),
            max_displaced=args.max_displaced,
            rattled=args.rattled,
            rattle_amplitude=args.amplitude,
            strains=tuple(args.strains),
            seed=args.seed,
        ),
        phono3py_settings=Phono3pySettings(),
        out_frames=out / "structures.extxyz",
        out_manifest=out / "manifest.json",
    )
    print(f"n_frames={man['n_frames']}")
    return 0


def cmd_finetune_label(args: argparse.Namespace) -> int:
    from kappaflow.steps.finetune import run_finetune_label

    n = run_finetune_label(
        exported=args.exported,
        model=_model_spec(args),
        out=args.out,
        device=args.device,
        model_dir=args.model_dir,
        with_stress=args.with_stress,
    )
    print(f"n_labelled={n}")
    return 0


def cmd_finetune_train(args: argparse.Namespace) -> int:
    from kappaflow.finetune import TrainSettings
    from kappaflow.steps.finetune import run_finetune_train

    settings = TrainSettings(
        **{k: getattr(args, k) for k in TRAIN_FLAGS_INT + TRAIN_FLAGS_FLOAT},
        replay_file=args.replay_file,
    )
    out = Path(args.out)
    record = run_finetune_train(
        train_data=args.data,
        base=_model_spec(args),
        settings=settings,
        key=args.name,
        workroot=out / "train",
        out_model=out / f"{args.name}.model",
        out_record=out / "training.json",
        device=args.device,
        threads=args.threads,
        model_dir=args.model_dir,
    )
    print(f"model={out / (args.name + '.model')} sha256={record['sha256']}")
    return 0


def cmd_finetune_check(args: argparse.Namespace) -> int:
    from kappaflow.finetune_labels import LabelError
    from kappaflow.steps.finetune import run_finetune_check

    try:
        summary = run_finetune_check(args.labels, args.exported, args.out)
    except LabelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"n_frames={summary['n_frames']} n_with_energy={summary['n_with_energy']}")
    return 0


TRAIN_FLAGS_INT = ("epochs", "batch_size", "seed")
TRAIN_FLAGS_FLOAT = ("lr", "energy_weight", "forces_weight", "stress_weight", "valid_fraction")


#: commands whose --out is a folder (the others write one file there)
FOLDER_OUT = ("kappa", "gruneisen", "finetune-export", "finetune-train")


def _check_out(args: argparse.Namespace) -> None:
    """A --out that cannot be written is refused before any work, naming it."""
    from kappaflow import storage

    out = getattr(args, "out", None)
    if out is None:
        return
    if args.command in FOLDER_OUT:
        storage.output_folder(out, create=False)
    else:
        storage.output_file(out)


def main(argv: list[str] | None = None) -> int:
    from kappaflow.cli_parser import build_parser

    args = build_parser(sys.modules[__name__]).parse_args(argv)
    if args.command in ("kappa", "gruneisen"):  # before numpy/OpenBLAS, phono3py, torch load
        from kappaflow.runtime import configure_threads

        configure_threads(args.threads)
    from kappaflow.calculators import ModelError
    from kappaflow.config import ConfigError
    from kappaflow.forces import ForceError
    from kappaflow.metrics import InvalidReferenceError
    from kappaflow.phph import ENGINE_ERRORS
    from kappaflow.reference import ChecksumError, ReferenceNotFoundError
    from kappaflow.settings import SettingsError
    from kappaflow.storage import FolderLockedError, LockingUnsupportedError, OutputFolderError
    from kappaflow.structures import MaterialError

    try:
        _check_out(args)
        return args.func(args)
    except (
        OutputFolderError,
        FolderLockedError,
        LockingUnsupportedError,
        ConfigError,
        ModelError,
        MaterialError,
        SettingsError,
        ForceError,
        ReferenceNotFoundError,
        ChecksumError,
        InvalidReferenceError,
        FileNotFoundError,
        *ENGINE_ERRORS,
    ) as exc:
        print(f"kappaflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
