"""Model registry: model key -> ASE calculator. The only module that imports model packages.

Imports are lazy (inside the per-family loaders), so the package, the metrics and the
workflow's analysis rules run without torch. One model per process: importing mace
switches torch's global default dtype to float64 and sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` process-wide.

Checkpoints are pickles. A checkpoint is loaded only after its sha256 was checked
against a pin (built-in models; ``sha256:`` in the config) or, with no pin, computed
and recorded in the provenance of every result made with it.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from kappaflow import storage

FAMILIES = ("mace", "chgnet", "sevennet", "emt", "ase")

#: Built-in model keys (config entries with the same key override them).
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    # MACE-MP foundation models: names as mace.calculators.foundations_models.mace_mp_urls
    "mace-mp-0-small": {"family": "mace", "foundation": "small"},
    "mace-mp-0-medium": {"family": "mace", "foundation": "medium"},
    "mace-mp-0-large": {"family": "mace", "foundation": "large"},
    "mace-mp-0b3-medium": {"family": "mace", "foundation": "medium-0b3"},
    "mace-mpa-0-medium": {"family": "mace", "foundation": "medium-mpa-0"},
    "mace-omat-0-medium": {"family": "mace", "foundation": "medium-omat-0"},
    "chgnet-0.3.0": {"family": "chgnet", "version": "0.3.0"},
    "sevennet-0": {"family": "sevennet", "name": "7net-0"},
    "emt": {"family": "emt"},
}

#: sha256 of checkpoints shipped inside the model wheels (chgnet 0.4.2, sevenn 0.10.4).
PINNED_SHA256 = {
    "chgnet_0.3.0_e29f68s314m37.pth.tar": "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1",
    "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth": "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36",
}

#: dtype as in the published runs: MACE float64; CHGNet and SevenNet-0 as shipped (float32).
DEFAULT_DTYPE = {
    "mace": "float64",
    "chgnet": "float32",
    "sevennet": "float32",
    "emt": "float64",
    "ase": "native",
}


class ModelError(ValueError):
    """Unknown model key, bad model options, or a checkpoint that fails its hash check."""


@dataclass(frozen=True)
class ModelSpec:
    """A model key and the options that say how to load it."""

    key: str
    family: str
    options: dict[str, Any] = field(default_factory=dict)


#: One model call on many structures -> one (n_atoms, 3) force array (eV/Å) per structure.
BatchForces = Callable[[Sequence[Atoms]], list[np.ndarray]]


@dataclass
class LoadedModel:
    """A ready calculator plus what the provenance must record about it, and (for the
    torch families) the package's own batched forces-only call on the same weights."""

    calculator: Calculator
    info: dict[str, Any]
    batch_forces: BatchForces | None = None


def model_spec(key: str, configured: dict[str, dict[str, Any]] | None = None) -> ModelSpec:
    """Resolve a model key: config entry, built-in, local ``.model`` path, or ``module:factory``."""
    configured = configured or {}
    if key in configured:
        entry = dict(configured[key])
    elif key in BUILTIN_MODELS:
        entry = dict(BUILTIN_MODELS[key])
    elif key.endswith(".model"):
        entry = {"family": "mace", "path": key}
    elif ":" in key and not os.path.exists(key):
        entry = {"family": "ase", "factory": key}
    else:
        known = sorted(set(BUILTIN_MODELS) | set(configured))
        raise ModelError(
            f"unknown model {key!r}: use one of {', '.join(known)}, a local MACE '.model' "
            "file, or an ASE calculator factory 'module:function'"
        )
    family = entry.pop("family", None)
    if family not in FAMILIES:
        raise ModelError(
            f"model {key!r}: family must be one of {', '.join(FAMILIES)}, got {family!r}"
        )
    return ModelSpec(key=key, family=family, options=entry)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device != "auto":
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ModelError(f"device must be auto, cpu or cuda[:N], got {device!r}")
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_checkpoint(path: Path, pin: str | None, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ModelError(f"{what}: checkpoint {path} not found")
    if pin:
        sha = storage.verify_sha256(path, pin, f"{what} checkpoint")
        return {"checkpoint": str(path), "checkpoint_sha256": sha, "sha256_source": "pinned"}
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": storage.sha256_file(path),
        "sha256_source": "recorded",
    }


def _allow_slice_unpickling() -> None:
    """e3nn's constants (and sevenn) need ``slice`` allow-listed under torch>=2.6."""
    import torch

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([slice])


def mace_checkpoint(spec: ModelSpec, model_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Local file of a mace model key (a foundation is downloaded once into ``model_dir``,
    sha256-checked when pinned) and its checksum record. Used to load the calculator and
    as the ``--foundation_model`` of fine-tuning, so mace itself never downloads."""
    if spec.family != "mace":
        raise ModelError(
            f"model {spec.key!r}: fine-tuning needs a mace model (family mace), got {spec.family!r}"
        )
    opts = spec.options
    model_dir = Path(model_dir)
    if "path" in opts:
        path = Path(opts["path"])
    elif "foundation" in opts:
        from mace.calculators.foundations_models import mace_mp_urls

        name = opts["foundation"]
        if name not in mace_mp_urls:
            raise ModelError(
                f"model {spec.key!r}: unknown MACE foundation {name!r} (known: {', '.join(mace_mp_urls)})"
            )
        url = mace_mp_urls[name]
        path = model_dir / Path(url).name
        if not path.exists():
            try:
                storage.download(url, path, opts.get("sha256"))
            except OSError as exc:
                raise ModelError(
                    f"model {spec.key!r}: cannot download {url} ({exc}); place the file at {path} "
                    "or configure a local '.model' path"
                ) from exc
    else:
        raise ModelError(f"model {spec.key!r}: a mace model needs 'foundation' or 'path'")
    return path, _check_checkpoint(path, opts.get("sha256"), f"model {spec.key!r}")


def model_dtype(spec: ModelSpec) -> tuple[str, list[str]]:
    """The dtype a model runs in and the protocol deviations that implies.

    Published runs: MACE float64, CHGNet and SevenNet-0 as shipped (float32). Only MACE
    has a second dtype (``dtype: float32`` in the model entry), an explicit option that is
    labelled ``dtype=float32`` in every result made with it."""
    default = DEFAULT_DTYPE[spec.family]
    dtype = spec.options.get("dtype", default)
    allowed = {"mace": ("float64", "float32")}.get(spec.family, (default,))
    if dtype not in allowed:
        raise ModelError(
            f"model {spec.key!r}: dtype {dtype!r} is not available for family {spec.family!r} "
            f"(allowed: {', '.join(allowed)})"
        )
    return dtype, ([] if dtype == default else [f"dtype={dtype}"])


def _split_by_ptr(forces: np.ndarray, ptr: Sequence[int]) -> list[np.ndarray]:
    ptr = [int(p) for p in ptr]
    return [np.array(forces[a:b], dtype=float) for a, b in itertools.pairwise(ptr)]


def _mace_batch_forces(calc: Any) -> BatchForces:
    """mace's own batching (the graphs of ``mace.data.AtomicData`` collated by mace's
    ``torch_geometric.Batch``, as in ``mace.cli.eval_configs``); forces only, no stress.
    A committee is averaged like ``MACECalculator``."""
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools

    def run(structures: Sequence[Atoms]) -> list[np.ndarray]:
        calc.arrays_keys.update({calc.charges_key: "charges"})
        keyspec = mace_data.KeySpecification(info_keys=calc.info_keys, arrays_keys=calc.arrays_keys)
        with torch_tools.default_dtype(calc.default_dtype):
            graphs = [
                mace_data.AtomicData.from_config(
                    mace_data.config_from_atoms(at, key_specification=keyspec, head_name=calc.head),
                    z_table=calc.z_table,
                    cutoff=calc.r_max,
                    heads=calc.available_heads,
                )
                for at in structures
            ]
        batch = torch_geometric.Batch.from_data_list(graphs).to(calc.device)
        total = None
        for model in calc.models:
            weights_dtype = next(model.parameters()).dtype
            data = batch.clone()
            for key in data.keys:
                value = data[key]
                if hasattr(value, "is_floating_point") and value.is_floating_point():
                    data[key] = value.to(dtype=weights_dtype)
            out = model(data.to_dict(), compute_stress=False, training=False)
            forces = out["forces"].detach()
            total = forces if total is None else total + forces
        scale = calc.energy_units_to_eV / calc.length_units_to_A / len(calc.models)
        return _split_by_ptr((total * scale).cpu().numpy(), batch["ptr"].cpu())

    return run


def _load_mace(spec: ModelSpec, device: str, model_dir: Path) -> LoadedModel:
    _allow_slice_unpickling()
    from mace.calculators import MACECalculator

    dtype, deviations = model_dtype(spec)
    path, ck = mace_checkpoint(spec, model_dir)
    calc = MACECalculator(model_paths=str(path), device=device, default_dtype=dtype)
    info = {"dtype": dtype, **ck}
    if deviations:
        info["protocol_deviations"] = deviations
    return LoadedModel(calc, info, _mace_batch_forces(calc))


def _package_file(package: str, relative: str) -> Path:
    mod = importlib.import_module(package)
    return Path(mod.__file__).parent / relative


def _load_chgnet(spec: ModelSpec, device: str) -> LoadedModel:
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    version = spec.options.get("version", "0.3.0")
    if "path" in spec.options:
        path = Path(spec.options["path"])
        pin = spec.options.get("sha256")
    else:
        files = sorted(_package_file("chgnet", f"pretrained/{version}").glob("*.pth.tar"))
        if not files:
            raise ModelError(
                f"model {spec.key!r}: CHGNet {version} weights not in the installed chgnet wheel"
            )
        path = files[0]
        pin = spec.options.get("sha256", PINNED_SHA256.get(path.name))
    ck = _check_checkpoint(path, pin, f"model {spec.key!r}")
    model = CHGNet.from_file(str(path))
    calc = CHGNetCalculator(model=model, use_device=device)
    return LoadedModel(calc, {"dtype": "float32", **ck}, _chgnet_batch_forces(calc))


def _chgnet_batch_forces(calc: Any) -> BatchForces:
    """CHGNet's own batching (``CHGNet.predict_graph`` on a list of crystal graphs), task
    ``ef``: the ASE calculator always predicts energy, forces, stress and magmoms."""
    from pymatgen.io.ase import AseAtomsAdaptor

    model = calc.model

    def run(structures: Sequence[Atoms]) -> list[np.ndarray]:
        graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(at)) for at in structures]
        preds = model.predict_graph(graphs, task="ef", batch_size=len(graphs))
        preds = [preds] if isinstance(preds, dict) else preds
        return [np.array(p["f"], dtype=float) for p in preds]

    return run


def _load_sevennet(spec: ModelSpec, device: str) -> LoadedModel:
    _allow_slice_unpickling()
    from sevenn.calculator import SevenNetCalculator
    from sevenn.util import pretrained_name_to_path

    if "path" in spec.options:
        path = Path(spec.options["path"])
        pin = spec.options.get("sha256")
    else:
        path = Path(pretrained_name_to_path(spec.options.get("name", "7net-0")))
        pin = spec.options.get("sha256", PINNED_SHA256.get(f"{path.parent.name}/{path.name}"))
    ck = _check_checkpoint(path, pin, f"model {spec.key!r}")
    calc = SevenNetCalculator(model=str(path), device=device)
    return LoadedModel(calc, {"dtype": "float32", **ck}, _sevennet_batch_forces(calc))


def _sevennet_batch_forces(calc: Any) -> BatchForces | None:
    """sevenn's own batching (``AtomGraphData`` collated by ``torch_geometric``, the model
    switched to batch mode as in ``sevenn.scripts.inference``), restored to single-graph
    mode afterwards because the ASE calculator shares the model. None for TorchScript."""
    import sevenn._keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from torch_geometric.data import Batch

    model = calc.model
    if not hasattr(model, "set_is_batch_data"):
        return None

    def run(structures: Sequence[Atoms]) -> list[np.ndarray]:
        graphs = [
            AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(at, calc.cutoff))
            for at in structures
        ]
        batch = Batch.from_data_list(graphs).to(calc.device)
        model.set_is_batch_data(True)
        try:
            out = model(batch)
        finally:
            model.set_is_batch_data(False)
        forces = out[KEY.PRED_FORCE].detach().cpu().numpy()
        return _split_by_ptr(forces, batch.ptr.cpu())

    return run


def _load_ase(spec: ModelSpec) -> LoadedModel:
    target = spec.options.get("factory", "")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model {spec.key!r}: factory must be 'module:function', got {target!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"model {spec.key!r}: cannot import {target!r} ({exc})") from exc
    calc = factory(**spec.options.get("kwargs", {}))
    if not isinstance(calc, Calculator) and not hasattr(calc, "get_forces"):
        raise ModelError(f"model {spec.key!r}: {target} did not return an ASE calculator")
    return LoadedModel(
        calc,
        {
            "dtype": DEFAULT_DTYPE["ase"],
            "factory": target,
            "kwargs": spec.options.get("kwargs", {}),
        },
    )


def load_calculator(
    spec: ModelSpec, device: str = "auto", model_dir: str | os.PathLike = "resources/models"
) -> LoadedModel:
    """Build the ASE calculator of ``spec`` on ``device``; info goes into provenance."""
    model_dtype(spec)  # an unavailable dtype fails here, naming the model
    if spec.family == "emt":
        from ase.calculators.emt import EMT

        loaded = LoadedModel(EMT(), {"dtype": "float64"})
        device = "cpu"
    elif spec.family == "ase":
        loaded = _load_ase(spec)
        device = "cpu"
    else:
        device = resolve_device(device)
        if spec.family == "mace":
            loaded = _load_mace(spec, device, Path(model_dir))
        elif spec.family == "chgnet":
            loaded = _load_chgnet(spec, device)
        else:
            loaded = _load_sevennet(spec, device)
    loaded.info = {"model": spec.key, "family": spec.family, "device": device, **loaded.info}
    return loaded
