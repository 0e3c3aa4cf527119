"""``kappaflow`` command line: one material at a time, calling the workflow's own steps.

kappaflow kappa --model chgnet-0.3.0 --material mp-22862 --out DIR
kappaflow gruneisen --model sevennet-0 --material mp-1265 --out DIR
kappaflow score --predictions P --reference R --out metrics.csv [--materials ID,ID]
kappaflow fetch-reference [--reference-dir DIR]
kappaflow materials [--select rs,mp-22862]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# file names inside results/{model}/{material}/ (the workflow uses the same)
MATERIAL_FILES = {
    "relaxed": "relaxed.extxyz",
    "disp": "phono3py_disp.yaml",
    "forces_fc2": "forces_fc2.hdf5",
    "fc2": "fc2.hdf5",
    "phonons": "phonons.json",
    "forces_fc3": "forces_fc3.hdf5",
    "fc3": "fc3.hdf5",
    "kappa": "kappa.hdf5",
    "record": "kappa.json",
    "gruneisen_hdf5": "gruneisen.hdf5",
    "gruneisen": "gruneisen.json",
    "thermal_expansion": "thermal_expansion.csv",
    "gruneisen_fc3_check": "gruneisen_fc3_check.json",
}


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.10g}"


def _reference(args: argparse.Namespace, cfg: dict | None = None):
    from kappaflow.reference import resolve_reference_dir

    config_dir = ((cfg or {}).get("reference") or {}).get("dir")
    return resolve_reference_dir(cli_dir=args.reference_dir, config_dir=config_dir)


def _inputs(args: argparse.Namespace) -> tuple:
    """What ``kappa`` and ``gruneisen`` share: output files, config, structures, model spec
    and the relax/phono3py/structure settings (flags over the config file)."""
    from kappaflow import io
    from kappaflow.calculators import model_spec
    from kappaflow.settings import Phono3pySettings, RelaxSettings, StructureDefaults

    out = Path(args.out)
    files = {k: out / v for k, v in MATERIAL_FILES.items()}
    cfg = io.read_yaml(args.config) if args.config else {}
    structures_cfg = args.structures or cfg.get("structures")
    if structures_cfg:
        structures = Path(structures_cfg)
    else:
        structures = io.reference_file(_reference(args, cfg), "structures")
    spec = model_spec(args.model, cfg.get("model_definitions"))
    phono_cfg = dict(cfg.get("phono3py") or {})
    if args.mesh:
        phono_cfg["mesh"] = tuple(args.mesh)
    if getattr(args, "backend", None):
        phono_cfg["backend"] = args.backend
    for key in ("fc3_cutoff_pair_distance", "fc3_random_displacements"):
        if getattr(args, key, None) is not None:  # opt-in protocol deviations
            phono_cfg[key] = getattr(args, key)
    phono = Phono3pySettings.from_mapping(phono_cfg)
    relax = RelaxSettings.from_mapping(cfg.get("relax"))
    defaults = StructureDefaults.from_mapping(cfg.get("structure_defaults"))
    overrides = cfg.get("material_overrides") or {}
    return out, files, cfg, structures, spec, phono, relax, defaults, overrides


def _force_settings(args: argparse.Namespace, cfg: dict):
    """config ``forces:`` overridden by --force-path / --max-atoms-per-batch."""
    from kappaflow.forces import ForceSettings

    mapping = dict(cfg.get("forces") or {})
    if getattr(args, "force_path", None):
        mapping["path"] = args.force_path
    if getattr(args, "max_atoms_per_batch", None):
        mapping["max_atoms_per_batch"] = args.max_atoms_per_batch
    return ForceSettings.from_mapping(mapping)


def _relax_and_fc2(todo, args, files, structures, spec, relax, phono, defaults, overrides, model):
    """The relax and fc2 steps shared by ``kappa`` and ``gruneisen`` (those in ``todo``)."""
    from kappaflow import io, steps

    if "relax" in todo:
        steps.run_relax(
            structures,
            args.material,
            spec,
            relax,
            files["relaxed"],
            defaults=defaults,
            overrides=overrides,
            loaded=model(),
        )
    if "fc2" in todo:
        steps.run_fc2(
            files["relaxed"],
            spec,
            phono,
            files["fc2"],
            files["forces_fc2"],
            files["disp"],
            files["phonons"],
            loaded=model(),
            force_settings=_force_settings(args, io.read_yaml(args.config) if args.config else {}),
        )


def cmd_kappa(args: argparse.Namespace) -> int:
    from kappaflow.runtime import configure_threads

    configure_threads(args.threads)
    from kappaflow import io, steps
    from kappaflow.calculators import load_calculator
    from kappaflow.settings import (
        KappaSettings,
    )

    out, files, cfg, structures, spec, phono, relax, defaults, overrides = _inputs(args)
    temperatures = args.temperatures or cfg.get("temperatures") or [300.0]
    kappa_settings = KappaSettings(tuple(temperatures), phono)
    loaded = None

    def model():
        nonlocal loaded
        if loaded is None:
            loaded = load_calculator(spec, args.device, args.model_dir)
        return loaded

    _, material = steps.load_material(structures, args.material, defaults, overrides)
    first = (
        "relax"
        if args.force
        else steps.first_outdated_step(files, spec.key, material, relax, kappa_settings)
    )
    todo = steps.STEP_ORDER[steps.STEP_ORDER.index(first) :] if first else ()
    _relax_and_fc2(todo, args, files, structures, spec, relax, phono, defaults, overrides, model)
    if "fc3" in todo:
        steps.run_fc3(
            files["relaxed"],
            files["phonons"],
            spec,
            phono,
            files["fc3"],
            files["forces_fc3"],
            loaded=model(),
            force_settings=_force_settings(args, cfg),
        )
    if "kappa" in todo:
        steps.run_kappa(
            files["relaxed"],
            files["phonons"],
            files["fc2"],
            files["fc3"],
            kappa_settings,
            files["kappa"],
            files["record"],
            files["forces_fc3"],
        )
    if not todo:
        print(
            f"[kappaflow] {out} is up to date; nothing recomputed (--force redoes it)",
            file=sys.stderr,
        )
    record = io.read_json(files["record"])
    if record["status"] != io.STATUS_OK:
        print(f"status={record['status']}")
        return 0
    for t, k in zip(record["temperatures"], record["kappa_TOT_ave"], strict=True):
        print(f"kappa_TOT_ave_{t:g}K={_fmt(k)}")
    return 0


def cmd_gruneisen(args: argparse.Namespace) -> int:
    """relax + fc2 (shared with ``kappa``, reused when current), then the Grüneisen step."""
    from kappaflow import io, steps
    from kappaflow.calculators import load_calculator
    from kappaflow.settings import (
        GruneisenSettings,
        KappaSettings,
    )

    _, files, cfg, structures, spec, phono, relax, defaults, overrides = _inputs(args)
    resolved = _reference(args, cfg)
    gcfg = dict(cfg.get("gruneisen") or {})
    settings = GruneisenSettings.from_mapping(gcfg)
    _, material = steps.load_material(structures, args.material, defaults, overrides)
    loaded = None

    def model():
        nonlocal loaded
        if loaded is None:
            loaded = load_calculator(spec, args.device, args.model_dir)
        return loaded

    first = (
        "relax"
        if args.force
        else steps.first_outdated_step(
            files, spec.key, material, relax, KappaSettings((300.0,), phono)
        )
    )
    todo = steps.STEP_ORDER[steps.STEP_ORDER.index(first) :] if first else ()
    _relax_and_fc2(todo, args, files, structures, spec, relax, phono, defaults, overrides, model)
    current = (
        first not in ("relax", "fc2")
        and files["gruneisen"].exists()
        and io.read_json(files["gruneisen"]).get("settings", {}).get("gruneisen")
        == settings.as_dict()
    )
    if current:
        print(
            f"[kappaflow] {files['gruneisen']} is up to date; nothing recomputed "
            "(--force redoes it)",
            file=sys.stderr,
        )
    else:
        table = io.read_melting_points(Path(__file__).parents[2] / "resources/melting_points.csv")
        steps.run_gruneisen(
            files["relaxed"],
            files["fc2"],
            spec,
            settings,
            relax,
            phono,
            files["gruneisen_hdf5"],
            files["gruneisen"],
            files["thermal_expansion"],
            melting_point=steps.melting_point_for(material.name, table, gcfg.get("melting_points")),
            loaded=model(),
        )
    record = io.read_json(files["gruneisen"])
    ref_name = gcfg.get("reference") or "gruneisen_dft_gamma.csv"
    try:
        ref_path = (
            io.reference_file(resolved, "gruneisen_dft_gamma")
            if ref_name == "gruneisen_dft_gamma.csv"
            else Path(ref_name)
        )
        ref = io.read_gamma_reference(ref_path)
    except Exception as exc:  # the γ is computed; scoring needs the reference
        print(f"[kappaflow] no DFT γ reference ({exc}); not scored", file=sys.stderr)
        ref = None
    t = settings.score_temperature
    if ref is not None and args.material in ref.index:
        from kappaflow.metrics import score_gamma

        sc = score_gamma(
            record.get("gamma"),
            float(ref.loc[args.material, "gamma_DFT_300K"]),
            record.get("failure", ""),
        )
        print(f"gamma_DFT_{t:g}K={_fmt(sc['gamma_DFT'])}")
        print(f"SRE_gamma={_fmt(sc['SRE'])}")
        print(f"sign_mismatch={sc['sign_mismatch']}")
    if record.get("bulk_modulus_GPa") is not None:
        print(f"bulk_modulus_GPa={_fmt(record['bulk_modulus_GPa'])}")
        print(f"alpha_V_{t:g}K={_fmt(record.get('alpha_V_score_T'))}")
    if record["status"] != io.STATUS_OK:
        print(f"status={record['status']}")
        return 0
    print(f"gamma_{t:g}K={_fmt(record['gamma'])}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from kappaflow import steps

    materials = [m for m in args.materials.split(",") if m] if args.materials else None
    summary = steps.run_score(
        args.predictions, args.reference, args.out, materials, args.temperature
    )
    print(f"mean_SRD={_fmt(summary['mean_SRD'])}")
    print(f"mean_SRME_success={_fmt(summary['mean_SRME_success'])}")
    print(f"frac_within_factor_2={_fmt(summary['frac_within_factor_2'])}")
    print(f"n_materials={summary['n_materials']}")
    print(f"mean_SRME={_fmt(summary['mean_SRME'])}")
    print(f"mean_SRE={_fmt(summary['mean_SRE'])}")
    print(f"n_failed={summary['n_failed']}")
    return 0


def cmd_fetch_reference(args: argparse.Namespace) -> int:
    from kappaflow import io
    from kappaflow.reference import FILES

    resolved = _reference(args)
    for key in FILES:
        path = io.reference_file(resolved, key)
        print(f"{key}={path}")
    return 0


def cmd_materials(args: argparse.Namespace) -> int:
    from kappaflow import io
    from kappaflow.structures import materials_table, select_materials

    structures = (
        Path(args.structures)
        if args.structures
        else io.reference_file(_reference(args), "structures")
    )
    table = materials_table(io.read_structures(structures))
    selection = args.select.split(",") if args.select else "all"
    for mid in select_materials(table, selection):
        m = table[mid]
        print(
            f"{mid}\t{m.desc}\tfc2={'x'.join(map(str, m.fc2_supercell))}\tfc3={'x'.join(map(str, m.fc3_supercell))}"
            f"\tmesh={'x'.join(map(str, m.q_mesh))}"
        )
    return 0


def cmd_finetune_export(args: argparse.Namespace) -> int:
    from kappaflow import io, steps
    from kappaflow.finetune import ExportSettings
    from kappaflow.settings import Phono3pySettings

    structures = (
        Path(args.structures)
        if args.structures
        else io.reference_file(_reference(args), "structures")
    )
    out = Path(args.out)
    export = ExportSettings(
        displaced=tuple(args.sets),
        max_displaced=args.max_displaced,
        rattled=args.rattled,
        rattle_amplitude=args.amplitude,
        strains=tuple(args.strains),
        seed=args.seed,
    )
    man = steps.run_finetune_export(
        structures,
        args.materials,
        export,
        Phono3pySettings(),
        out / "structures.extxyz",
        out / "manifest.json",
    )
    print(f"n_frames={man['n_frames']}")
    return 0


def cmd_finetune_label(args: argparse.Namespace) -> int:
    from kappaflow import steps
    from kappaflow.calculators import model_spec

    n = steps.run_finetune_label(
        args.exported,
        model_spec(args.model),
        args.out,
        args.device,
        args.model_dir,
        with_stress=args.with_stress,
    )
    print(f"n_labelled={n}")
    return 0


def cmd_finetune_train(args: argparse.Namespace) -> int:
    from kappaflow import steps
    from kappaflow.calculators import model_spec
    from kappaflow.finetune import TrainSettings

    settings = TrainSettings(
        epochs=args.epochs,
        lr=args.lr,
        energy_weight=args.energy_weight,
        forces_weight=args.forces_weight,
        stress_weight=args.stress_weight,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        replay_file=args.replay_file,
    )
    out = Path(args.out)
    record = steps.run_finetune_train(
        args.data,
        model_spec(args.base),
        settings,
        args.name,
        out / "train",
        out / f"{args.name}.model",
        out / "training.json",
        device=args.device,
        threads=args.threads,
        model_dir=args.model_dir,
    )
    print(f"model={out / (args.name + '.model')} sha256={record['sha256']}")
    return 0


def cmd_finetune_check(args: argparse.Namespace) -> int:
    from kappaflow import steps
    from kappaflow.finetune import LabelError

    try:
        summary = steps.run_finetune_check(args.labels, args.exported, args.out)
    except LabelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"n_frames={summary['n_frames']} n_with_energy={summary['n_with_energy']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kappaflow.finetune import TrainSettings

    parser = argparse.ArgumentParser(prog="kappaflow", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add_force_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--force-path",
            choices=["auto", "serial", "batched"],
            help="force evaluation: auto (batched forces-only call where the model family "
            "has one), serial (ASE loop) or batched (default: config forces.path or auto)",
        )
        p.add_argument(
            "--max-atoms-per-batch",
            type=int,
            help="atoms per batched model call (default: per device, kappaflow.forces)",
        )

    def add_reference(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--reference-dir",
            help="reference data directory (else $KAPPAFLOW_REFERENCE_DIR, "
            "else resources/reference/, downloaded with sha256 checks)",
        )

    k = sub.add_parser("kappa", help="relax, fc2, fc3 and Wigner κ of one material with one model")
    k.add_argument(
        "--model",
        required=True,
        help="model key (chgnet-0.3.0, sevennet-0, mace-mp-0-medium, emt), "
        "a MACE .model file, or module:factory",
    )
    k.add_argument("--material", required=True, help="material id (mp_id) in the structures file")
    k.add_argument(
        "--out", required=True, help="output directory (the workflow's results/{model}/{material})"
    )
    k.add_argument(
        "--structures", help="extxyz of your own structures (default: the reference set)"
    )
    k.add_argument("--temperatures", type=float, nargs="+", help="K (default: config or 300)")
    k.add_argument(
        "--config",
        help="a workflow config.yaml: its relax, phono3py, structure_defaults, "
        "material_overrides, temperatures, model_definitions and structures apply",
    )
    k.add_argument(
        "--mesh", type=int, nargs=3, help="override the material's q-mesh (coarse tests)"
    )
    k.add_argument(
        "--backend", choices=["C", "Rust"], help="phono3py backend (default C; recorded)"
    )
    k.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    add_force_options(k)
    k.add_argument(
        "--fc3-cutoff-pair-distance",
        type=float,
        help="PROTOCOL DEVIATION (labelled): phono3py fc3 pair cutoff in Å",
    )
    k.add_argument(
        "--fc3-random-displacements",
        type=int,
        help="PROTOCOL DEVIATION (labelled): N random-displacement fc3 supercells, symfc fit",
    )
    k.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="OMP/Rayon/torch threads (default: all cores)",
    )
    k.add_argument(
        "--model-dir", default="resources/models", help="where downloaded checkpoints are kept"
    )
    k.add_argument("--force", action="store_true", help="recompute steps whose outputs exist")
    add_reference(k)
    k.set_defaults(func=cmd_kappa)

    g = sub.add_parser(
        "gruneisen",
        help="relax, fc2 at V0 and V0(1±1%%), mode γ, γ(T), K_T and α_V(T) of one material",
    )
    g.add_argument("--model", required=True, help="model key, as for 'kappaflow kappa'")
    g.add_argument("--material", required=True, help="material id (mp_id) in the structures file")
    g.add_argument(
        "--out",
        required=True,
        help="output directory (the workflow's results/{model}/{material}; shared with kappa)",
    )
    g.add_argument("--structures", help="extxyz of your own structures")
    g.add_argument(
        "--config",
        help="a workflow config.yaml: its relax, phono3py, gruneisen, structure_defaults, "
        "material_overrides, model_definitions and structures apply",
    )
    g.add_argument("--mesh", type=int, nargs=3, help="override the material's q-mesh")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    g.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads (default: all cores)"
    )
    g.add_argument("--model-dir", default="resources/models")
    g.add_argument("--force", action="store_true", help="recompute steps whose outputs exist")
    add_reference(g)
    g.set_defaults(func=cmd_gruneisen)

    s = sub.add_parser("score", help="SRD/SRE/SRME of a kappa table against a reference table")
    s.add_argument(
        "--predictions", required=True, help="json.gz in the reference layout (DFT or gathered)"
    )
    s.add_argument(
        "--reference",
        required=True,
        help="reference json.gz (e.g. kappas_phononDB_PBE_noNAC.json.gz)",
    )
    s.add_argument("--out", required=True, help="per-material metrics CSV")
    s.add_argument(
        "--materials", help="comma-separated material ids (default: all in the reference)"
    )
    s.add_argument("--temperature", type=float, default=300.0)
    s.set_defaults(func=cmd_score)

    f = sub.add_parser(
        "fetch-reference", help="verify (or download into resources/reference/) the reference files"
    )
    add_reference(f)
    f.set_defaults(func=cmd_fetch_reference)

    m = sub.add_parser("materials", help="list materials with their supercells and q-mesh")
    m.add_argument("--structures")
    m.add_argument("--select", help="comma-separated ids and/or structure types (rs, zb, wz)")
    add_reference(m)
    m.set_defaults(func=cmd_materials)

    fe = sub.add_parser(
        "finetune-export", help="displaced/rattled supercells of materials, for DFT labelling"
    )
    fe.add_argument("--materials", nargs="+", required=True, help="material ids")
    fe.add_argument("--out", required=True, help="folder: structures.extxyz + manifest.json")
    fe.add_argument("--structures", help="extxyz of your own structures (default: reference set)")
    fe.add_argument("--sets", nargs="*", default=["fc2", "fc3"], help="displacement sets")
    fe.add_argument("--max-displaced", type=int, help="seeded subsample per material and set")
    fe.add_argument("--rattled", type=int, default=0, help="rattled fc3 supercells per material")
    fe.add_argument("--amplitude", type=float, default=0.05, help="rattle σ in Å")
    fe.add_argument(
        "--strains", nargs="+", type=float, default=[0.0], help="strains the rattled cells cycle"
    )
    fe.add_argument("--seed", type=int, default=0)
    add_reference(fe)
    fe.set_defaults(func=cmd_finetune_export)

    fl = sub.add_parser("finetune-label", help="label exported structures with a model")
    fl.add_argument("--model", required=True)
    fl.add_argument("--exported", required=True, help="structures.extxyz of finetune-export")
    fl.add_argument("--out", required=True, help="labelled extxyz")
    fl.add_argument("--device", default="auto")
    fl.add_argument("--model-dir", default="resources/models")
    fl.add_argument("--with-stress", action="store_true", help="label stress too")
    fl.set_defaults(func=cmd_finetune_label)

    ftr = sub.add_parser("finetune-train", help="fine-tune a mace model on checked labels")
    ftr.add_argument("--base", required=True, help="mace model key or local .model")
    ftr.add_argument("--data", required=True, help="checked labels (finetune-check --out)")
    ftr.add_argument("--name", required=True, help="name of the fine-tuned model")
    ftr.add_argument("--out", required=True, help="folder: NAME.model, training.json, train/")
    defaults = TrainSettings()
    for flag in ("epochs", "batch_size", "seed"):
        ftr.add_argument(f"--{flag.replace('_', '-')}", type=int, default=getattr(defaults, flag))
    for flag in ("lr", "energy_weight", "forces_weight", "stress_weight", "valid_fraction"):
        ftr.add_argument(f"--{flag.replace('_', '-')}", type=float, default=getattr(defaults, flag))
    ftr.add_argument("--replay-file", help="pre-training data: multi-head fine-tuning")
    ftr.add_argument("--device", default="auto")
    ftr.add_argument("--threads", type=int)
    ftr.add_argument("--model-dir", default="resources/models")
    ftr.set_defaults(func=cmd_finetune_train)

    fc = sub.add_parser(
        "finetune-check", help="validate labels (extxyz, phono3py yaml) -> one training file"
    )
    fc.add_argument("--labels", nargs="+", required=True)
    fc.add_argument("--exported", help="structures.extxyz the labels must match")
    fc.add_argument("--out", required=True)
    fc.set_defaults(func=cmd_finetune_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in (
        "kappa",
        "gruneisen",
    ):  # before numpy/OpenBLAS, phono3py and torch are loaded
        from kappaflow.runtime import configure_threads

        configure_threads(args.threads)
    from kappaflow.calculators import ModelError
    from kappaflow.metrics import InvalidReferenceError
    from kappaflow.reference import ChecksumError, ReferenceNotFoundError
    from kappaflow.settings import SettingsError
    from kappaflow.structures import MaterialError

    try:
        return args.func(args)
    except (
        ModelError,
        MaterialError,
        SettingsError,
        ReferenceNotFoundError,
        ChecksumError,
        InvalidReferenceError,
        FileNotFoundError,
    ) as exc:
        print(f"kappaflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
