"""A MACE with random weights, built with mace's own API, saved as a ``.model`` file.

    python benchmarks/random_mace.py --size medium --elements Ga N --out /tmp/medium.model

``medium`` has the architecture of MACE-MP-0 medium (r_max 6 Å, 128x0e+128x1o, L_max 3,
correlation 3, 2 interactions); with ``--elements all`` (Z = 1-89, as MACE-MP-0) it has the
same 4.7 M parameters. ``small`` is a tiny test model.
The MACE-MP-0 weights are downloaded from GitHub at first use, which is not possible
offline, and the force-evaluation cost depends on the architecture, not on the weights.
"""

from __future__ import annotations

import argparse

SIZES = {
    "small": dict(
        r_max=4.5,
        num_bessel=4,
        max_ell=1,
        num_interactions=1,
        hidden="4x0e+4x1o",
        mlp="4x0e",
        correlation=2,
        avg_num_neighbors=10.0,
    ),
    "medium": dict(
        r_max=6.0,
        num_bessel=10,
        max_ell=3,
        num_interactions=2,
        hidden="128x0e+128x1o",
        mlp="16x0e",
        correlation=3,
        avg_num_neighbors=30.0,
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--elements", nargs="+", required=True, help="chemical symbols, or all")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from ase.data import atomic_numbers

    torch.serialization.add_safe_globals([slice])  # e3nn's constants.pt under torch >= 2.6
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(args.seed)
    cfg = SIZES[args.size]
    if args.elements == ["all"]:
        zs = list(range(1, 90))  # MACE-MP-0's 89 elements
    else:
        zs = sorted(atomic_numbers[e] for e in args.elements)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=cfg["r_max"],
        num_bessel=cfg["num_bessel"],
        num_polynomial_cutoff=5,
        max_ell=cfg["max_ell"],
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=cfg["num_interactions"],
        num_elements=len(zs),
        hidden_irreps=o3.Irreps(cfg["hidden"]),
        MLP_irreps=o3.Irreps(cfg["mlp"]),
        atomic_energies=-np.arange(1.0, len(zs) + 1.0),
        avg_num_neighbors=cfg["avg_num_neighbors"],
        atomic_numbers=zs,
        correlation=cfg["correlation"],
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    torch.save(model, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: MACE {args.size}, elements {zs}, {n} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
