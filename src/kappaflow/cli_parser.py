"""The argument parser of the ``kappaflow`` command line (the commands are in
:mod:`kappaflow.cli`)."""

from __future__ import annotations

import argparse
import os
from types import ModuleType

from kappaflow.settings import KAPPA_CONVENTIONS, PHPH_ENGINES


def build_parser(commands: ModuleType) -> argparse.ArgumentParser:
    """The argument parser; each subcommand runs ``commands.cmd_<name>``."""
    from kappaflow.finetune import TrainSettings

    parser = argparse.ArgumentParser(prog="kappaflow", description=commands.__doc__.split("\n")[0])
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

    def add_trust(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model-sha256",
            metavar="HEX",
            help="sha256 of a local checkpoint: it is loaded only with this hash "
            "(checkpoints are pickles)",
        )
        p.add_argument(
            "--trust-unpinned",
            action="store_true",
            help="load a checkpoint whose sha256 is not known: THIS RUNS CODE FROM THAT FILE",
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
        help="a workflow config.yaml, validated exactly as the workflow validates it; its "
        "relax, phono3py, forces, structure_defaults, material_overrides, temperatures, "
        "model_definitions, reference and structures apply (flags override them)",
    )
    k.add_argument(
        "--mesh", type=int, nargs=3, help="override the material's q-mesh (coarse tests)"
    )
    k.add_argument(
        "--backend", choices=["C", "Rust"], help="phono3py backend (default C; recorded)"
    )
    k.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if present), cpu or cuda: the model's forces and, with "
        "--phph-engine kappaflow, the three-phonon interaction",
    )
    k.add_argument(
        "--phph-engine",
        choices=PHPH_ENGINES,
        help="who computes the three-phonon interaction strength (config "
        "phono3py.phph_engine; default phono3py): kappaflow's batched torch engine gives "
        "the same κ to 1e-8, faster (README 'Speed')",
    )
    k.add_argument(
        "--kappa-convention",
        choices=KAPPA_CONVENTIONS,
        help="Wigner κ convention (config phono3py.kappa_convention; default reference = "
        "phono3py 3.x, as the DFT reference); phono3py4 is a PROTOCOL DEVIATION (labelled)",
    )
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
    add_trust(k)
    k.set_defaults(func=commands.cmd_kappa)

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
        help="a workflow config.yaml, validated exactly as the workflow validates it; its "
        "relax, phono3py, gruneisen, structure_defaults, material_overrides, "
        "model_definitions, reference and structures apply (flags override them)",
    )
    g.add_argument("--mesh", type=int, nargs=3, help="override the material's q-mesh")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    g.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads (default: all cores)"
    )
    g.add_argument("--model-dir", default="resources/models")
    g.add_argument("--force", action="store_true", help="recompute steps whose outputs exist")
    add_reference(g)
    add_trust(g)
    g.set_defaults(func=commands.cmd_gruneisen)

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
    s.set_defaults(func=commands.cmd_score)

    f = sub.add_parser(
        "fetch-reference", help="verify (or download into resources/reference/) the reference files"
    )
    add_reference(f)
    f.set_defaults(func=commands.cmd_fetch_reference)

    m = sub.add_parser("materials", help="list materials with their supercells and q-mesh")
    m.add_argument("--structures")
    m.add_argument("--select", help="comma-separated ids and/or structure types (rs, zb, wz)")
    add_reference(m)
    m.set_defaults(func=commands.cmd_materials)

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
    fe.set_defaults(func=commands.cmd_finetune_export)

    fl = sub.add_parser("finetune-label", help="label exported structures with a model")
    fl.add_argument("--model", required=True)
    fl.add_argument("--exported", required=True, help="structures.extxyz of finetune-export")
    fl.add_argument("--out", required=True, help="labelled extxyz")
    fl.add_argument("--device", default="auto")
    fl.add_argument("--model-dir", default="resources/models")
    fl.add_argument("--with-stress", action="store_true", help="label stress too")
    add_trust(fl)
    fl.set_defaults(func=commands.cmd_finetune_label)

    ftr = sub.add_parser("finetune-train", help="fine-tune a mace model on checked labels")
    ftr.add_argument("--base", required=True, help="mace model key or local .model")
    ftr.add_argument("--data", required=True, help="checked labels (finetune-check --out)")
    ftr.add_argument("--name", required=True, help="name of the fine-tuned model")
    ftr.add_argument("--out", required=True, help="folder: NAME.model, training.json, train/")
    defaults = TrainSettings()
    for flag in commands.TRAIN_FLAGS_INT:
        ftr.add_argument(f"--{flag.replace('_', '-')}", type=int, default=getattr(defaults, flag))
    for flag in commands.TRAIN_FLAGS_FLOAT:
        ftr.add_argument(f"--{flag.replace('_', '-')}", type=float, default=getattr(defaults, flag))
    ftr.add_argument("--replay-file", help="pre-training data: multi-head fine-tuning")
    ftr.add_argument("--device", default="auto")
    ftr.add_argument("--threads", type=int)
    ftr.add_argument("--model-dir", default="resources/models")
    add_trust(ftr)
    ftr.set_defaults(func=commands.cmd_finetune_train)

    fc = sub.add_parser(
        "finetune-check", help="validate labels (extxyz, phono3py yaml) -> one training file"
    )
    fc.add_argument("--labels", nargs="+", required=True)
    fc.add_argument("--exported", help="structures.extxyz the labels must match")
    fc.add_argument("--out", required=True)
    fc.set_defaults(func=commands.cmd_finetune_check)
    return parser
