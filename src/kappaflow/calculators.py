"""Model registry: model key -> ASE calculator. The only module that imports model packages.

Imports are lazy (inside the per-family loaders), so the package, the metrics and the
workflow's analysis rules run without torch. One model per process: importing mace
switches torch's global default dtype to float64 and sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` process-wide.

Checkpoints are pickles: unpickling one runs code from it. A checkpoint is unpickled only
when its sha256 is known (``verified_checkpoint``): pinned here (``PINNED_SHA256``,
``MACE_FOUNDATIONS``, or the installed wheel's RECORD for a file shipped inside a model
package), given in the model's ``model_definitions`` entry (``sha256:``, or
``sha256_from:`` a training record), or recorded by kappaflow when it downloaded the file
itself (a ``<file>.kappaflow.json`` record beside the cached file). Anything else is
refused unless its entry says ``trust_unpinned: true`` (this runs code from that file).
The bytes that are unpickled are the bytes that were hashed: a checkpoint is read once into
memory, hashed, and loaded from memory (or, for mace's own training command, from a private
copy of those bytes). ``module:factory`` models (family ``ase``) import and run the named
code by design. See docs/security-checkpoints.md.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import importlib
import importlib.util
import itertools
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from kappaflow import storage
from kappaflow.reference import ChecksumError

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

_MP = "https://github.com/ACEsuit/mace-mp/releases/download"

#: MACE foundation name -> (URL, sha256 of the file at that URL, or None where it could not
#: be established). URLs exactly as in mace-torch 0.3.16's
#: ``mace.calculators.foundations_models.mace_mp_urls`` (kappaflow downloads from this table,
#: so a name means the same file whatever mace version is installed; tests compare it with
#: the installed mace). Each hash was published, tied to this URL, by several unrelated
#: public projects that downloaded the file (entries of the code-search index, quoted in
#: docs/security-checkpoints.md, "Pinned foundation files"); none was computed here (no
#: network). medium-omat-0 is not pinned: the one hash found is tied to the mace-foundations
#: URL by a single project whose own benchmark notes give the same hash for another model.
MACE_FOUNDATIONS: dict[str, tuple[str, str | None]] = {
    # 32,581,838 B; computed from the downloaded file (index 68592761154), downloaded by curl
    # from this URL (66113703462), checked after mace_mp(model="small") (71169865093)
    "small": (
        f"{_MP}/mace_mp_0/2023-12-10-mace-128-L0_energy_epoch-249.model",
        "2ddb079cee0e131eaaf6912ba581b394551ead283e95c99cfe78c605d10b5736",
    ),
    # 44,422,970 B (= the GitHub release listing's size, 71424329374); 68592761154,
    # 68931756833 (registry entry with this URL), 70879681522 (curl this URL, expected sha256),
    # 60893537669 (mace's download_mace_mp_checkpoint("medium"))
    "medium": (
        f"{_MP}/mace_mp_0/2023-12-03-mace-128-L1_epoch-199.model",
        "01bfe22100139f424713cf921144e5509cbe353d67aa9fa1be9c6e1e0ed35845",
    ),
    # 133,803,220 B; 68592761154, 68612469892 and 68336343503 (github.com/ACEsuit/mace-mp ->
    # MACE_MPtrj_2022.9.model, same size), 62028680733 (size and hash checked in a run log)
    "large": (
        f"{_MP}/mace_mp_0/MACE_MPtrj_2022.9.model",
        "f80e992b65ab8f88fdf26964511357c022e92704e4d9bcd086652635a8495b32",
    ),
    # 71253300212 (pinned release row with this URL); the same hash recorded for
    # mace-mp-0b3-medium.model by 71121901870 (next to mace 0.3.16's URL for medium-0b3),
    # 71174794145, 68302343803, 54491327968, 69505669485
    "medium-0b3": (
        f"{_MP}/mace_mp_0b3/mace-mp-0b3-medium.model",
        "2f2be696351ac9e94fbe01cdfb6f017679acdbd2db7645209ef55fec9826b012",
    ),
    # 79,462,305 B; 23299925228 (download script: this URL, then verified against the hash),
    # 71253300212 (pinned release row, this URL), 68297725810 (FOUNDATION_SHA256 for
    # medium-mpa-0 with this URL), 68592761154 (the renamed-repo URL, same size)
    "medium-mpa-0": (
        f"{_MP}/mace_mpa_0/mace-mpa-0-medium.model",
        "75428afe3a1d7d8062e19bcaabd5c433623cabf308242ec9fb493e38604fb638",
    ),
    "medium-omat-0": (f"{_MP}/mace_omat_0/mace-omat-0-medium.model", None),
}

#: sha256 of a foundation file, by its exact URL.
FOUNDATION_SHA256 = {url: sha for url, sha in MACE_FOUNDATIONS.values() if sha}

#: every sha256 kappaflow knows -> what it is (a file with one of these bytes is trusted
#: whatever its path).
KNOWN_SHA256 = {
    **{sha: name for name, sha in PINNED_SHA256.items()},
    **{sha: url for url, sha in FOUNDATION_SHA256.items()},
}

#: the record kappaflow writes beside a checkpoint it downloaded: ``<file>`` + this suffix.
DOWNLOAD_RECORD_SUFFIX = ".kappaflow.json"
#: ``sha256_source`` of a checkpoint loaded because its entry says ``trust_unpinned: true``.
UNPINNED = "unpinned (trusted by config)"
_TRUST_KEYS = ("sha256", "sha256_from", "trust_unpinned")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

#: dtype as in the published runs: MACE float64; CHGNet and SevenNet-0 as shipped (float32).
DEFAULT_DTYPE = {
    "mace": "float64",
    "chgnet": "float32",
    "sevennet": "float32",
    "emt": "float64",
    "ase": "native",
}


class ModelError(ValueError):
    """Unknown model key, bad model options, or a checkpoint whose sha256 is not known."""


class CheckpointHashError(ModelError, ChecksumError):
    """A checkpoint's bytes differ from the sha256 that says which file it must be."""


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


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """The bytes of a checkpoint whose sha256 was checked, and the provenance record:
    ``checkpoint`` (file), ``checkpoint_sha256``, ``sha256_source`` (pinned, config,
    training record, package record, download record, or ``UNPINNED``) and, where a record
    file said which hash, ``sha256_record``."""

    data: bytes = field(repr=False)
    info: dict[str, Any]


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
    spec = ModelSpec(key=key, family=family, options=entry)
    _trust_options(spec)  # a malformed sha256 / trust_unpinned fails here, naming the model
    return spec


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


# ------------------------------------------------------------------ checkpoint trust


def _trust_options(spec: ModelSpec) -> tuple[str | None, Path | None, bool]:
    """(``sha256``, ``sha256_from``, ``trust_unpinned``) of a model entry, validated."""
    opts = spec.options
    sha = opts.get("sha256")
    if sha is not None:
        if not isinstance(sha, str) or not _HEX64.match(sha.strip().lower()):
            raise ModelError(
                f"model {spec.key!r}: sha256 must be 64 hexadecimal digits, got {sha!r}"
            )
        sha = sha.strip().lower()
    record = opts.get("sha256_from")
    if record is not None and not isinstance(record, (str, os.PathLike)):
        raise ModelError(
            f"model {spec.key!r}: sha256_from must be the path of a training record "
            f"(training.json), got {record!r}"
        )
    trust = opts.get("trust_unpinned", False)
    if not isinstance(trust, bool):
        raise ModelError(f"model {spec.key!r}: trust_unpinned must be true or false, got {trust!r}")
    return sha, (Path(record) if record is not None else None), trust


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes:
    """The whole file, read once: these bytes are hashed and then loaded, never the path."""
    with open(path, "rb") as fh:
        return fh.read()


def _hex_from_record(value: Any) -> str | None:
    if isinstance(value, str) and _HEX64.match(value.strip().lower()):
        return value.strip().lower()
    return None


def _training_record_sha256(spec: ModelSpec, record: Path, checkpoint: Path) -> str:
    """The model file's sha256 as recorded by the training step (``training.json``)."""
    what = f"model {spec.key!r}"
    if not record.is_file():
        raise ModelError(
            f"{what}: sha256_from {record} not found: the training record that says which "
            f"file {checkpoint} must be is written by the training step; run it first"
        )
    try:
        data = storage.read_json(record)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what}: cannot read the training record {record} ({exc})") from exc
    sha = _hex_from_record(data.get("sha256") if isinstance(data, dict) else None)
    if sha is None:
        raise ModelError(f"{what}: the training record {record} has no valid 'sha256' entry")
    recorded = data.get("model_file")
    if recorded and Path(recorded).name != checkpoint.name:
        raise ModelError(
            f"{what}: the training record {record} describes {recorded}, not {checkpoint}"
        )
    return sha


def _download_record_sha256(record: Path, url: str | None, what: str) -> str:
    try:
        data = storage.read_json(record)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{what}: cannot read kappaflow's download record {record} ({exc}); delete it and "
            "the file beside it to download the checkpoint again"
        ) from exc
    sha = _hex_from_record(data.get("sha256") if isinstance(data, dict) else None)
    if sha is None:
        raise ModelError(f"{what}: the download record {record} has no valid 'sha256' entry")
    if url is not None and data.get("url") != url:
        raise ModelError(
            f"{what}: the download record {record} is of {data.get('url')!r}, not {url}; "
            "delete it and the file beside it to download the checkpoint again"
        )
    return sha


def _package_record_sha256(package: str, path: Path) -> str | None:
    """sha256 of ``path`` in the RECORD of the installed distribution ``package`` (a file
    shipped inside a model wheel, as trusted as the package's own code), or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    target = Path(path).resolve()
    for entry in dist.files or ():
        if entry.name != target.name or entry.hash is None or entry.hash.mode != "sha256":
            continue
        if Path(dist.locate_file(entry)).resolve() == target:
            value = entry.hash.value
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return None


def _how_to_trust(key: str) -> str:
    return (
        f"To trust it explicitly, set in its model_definitions entry ({key}): "
        "'sha256: <hex>' (the hash of a file you made, or checked against its publisher's) "
        "or 'trust_unpinned: true' (this runs code from that file)."
    )


def verified_checkpoint(
    spec: ModelSpec,
    path: str | os.PathLike,
    *,
    pin: str | None = None,
    package: str | None = None,
    download_record: Path | None = None,
    url: str | None = None,
) -> VerifiedCheckpoint:
    """Read ``path`` once, hash the bytes, and return them only when that sha256 is known.

    The hash that decides, first found: the entry's ``sha256:`` and ``sha256_from:`` (all
    given must match), ``pin`` (the registry), ``package``'s wheel RECORD, the
    ``download_record`` kappaflow wrote when it downloaded the file, any sha256 the registry
    knows (``KNOWN_SHA256``). A mismatch is refused (``CheckpointHashError``); a file with no
    known hash is refused (``ModelError``) unless the entry says ``trust_unpinned: true``,
    in which case its hash is recorded as ``UNPINNED``."""
    what = f"model {spec.key!r}"
    sha, record, trust = _trust_options(spec)
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what}: checkpoint {path} not found")
    data = _read_bytes(path)
    actual = _sha256_bytes(data)
    info: dict[str, Any] = {"checkpoint": str(path), "checkpoint_sha256": actual}

    def check(expected: str, said_by: str, hint: str) -> None:
        if actual != expected:
            raise CheckpointHashError(
                f"{what}: {path} has sha256 {actual}, but {said_by} says {expected}; "
                f"refusing to load it (loading a checkpoint runs code from it). {hint}"
            )

    def trusted(source: str, **extra: Any) -> VerifiedCheckpoint:
        return VerifiedCheckpoint(data, {**info, "sha256_source": source, **extra})

    if sha is not None or record is not None:
        sources, extra = [], {}
        if sha is not None:
            check(
                sha,
                f"model_definitions {spec.key}: sha256",
                "If the file was replaced on purpose, check the new file against a source "
                "you trust and update 'sha256:'.",
            )
            sources.append("config")
        if record is not None:
            check(
                _training_record_sha256(spec, record, path),
                f"the training record {record}",
                "The model file changed after the training step recorded it: re-run the "
                "training step, or restore the file it wrote.",
            )
            sources.append("training record")
            extra["sha256_record"] = str(record)
        return trusted(" + ".join(sources), **extra)
    cache_hint = (
        f"Delete {path} and {download_record} to let kappaflow download it again."
        if download_record is not None
        else "Point 'path:' at an unmodified copy."
    )
    if pin is not None:
        check(pin, "kappaflow's pinned sha256", cache_hint)
        return trusted("pinned")
    if package is not None:
        recorded = _package_record_sha256(package, path)
        if recorded is not None:
            check(recorded, f"the installed {package} wheel's RECORD", f"Reinstall {package}.")
            return trusted("package record", sha256_record=f"{package} RECORD")
    if download_record is not None and download_record.is_file():
        check(
            _download_record_sha256(download_record, url, what),
            f"kappaflow's download record {download_record}",
            f"The file changed after kappaflow downloaded it. {cache_hint}",
        )
        return trusted("download record", sha256_record=str(download_record))
    if actual in KNOWN_SHA256:
        return trusted("pinned", pinned_as=KNOWN_SHA256[actual])
    if trust:
        return trusted(UNPINNED)
    if download_record is not None:
        raise ModelError(
            f"{what}: {path} is in the model cache, but kappaflow has no record of "
            f"downloading it ({download_record.name} is missing) and its sha256 is not "
            "pinned, so it is not loaded (loading a checkpoint runs code from it). "
            f"Delete it to let kappaflow download it again. {_how_to_trust(spec.key)}"
        )
    raise ModelError(
        f"{what}: the sha256 of {path} is not known, so it is not loaded (loading a "
        f"checkpoint runs code from it). {_how_to_trust(spec.key)}"
    )


def _foundation_url(spec: ModelSpec) -> str:
    """The download URL of a MACE foundation name (kappaflow's table, else mace's own)."""
    name = spec.options["foundation"]
    if name in MACE_FOUNDATIONS:
        return MACE_FOUNDATIONS[name][0]
    from mace.calculators.foundations_models import mace_mp_urls

    if name not in mace_mp_urls:
        known = sorted(set(MACE_FOUNDATIONS) | set(mace_mp_urls))
        raise ModelError(
            f"model {spec.key!r}: unknown MACE foundation {name!r} (known: {', '.join(known)})"
        )
    return mace_mp_urls[name]


def _download_checkpoint(
    spec: ModelSpec, url: str, path: Path, record: Path, expected: Sequence[str]
) -> VerifiedCheckpoint:
    """Download ``url`` into memory, hash it, check every ``expected`` hash; then write the
    download record and the file (atomic renames, record first). The bytes returned are the
    ones hashed, not re-read from disk."""
    what = f"model {spec.key!r}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{what}: cannot download {url} ({exc}). To run offline: download that file "
            "yourself where there is network, check its sha256 against the publisher's, "
            "and configure it in model_definitions as {family: mace, path: <file>, "
            "sha256: <hex>}. A file put into the model cache by hand is not loaded: only "
            "files kappaflow downloaded (or whose sha256 is pinned) are."
        ) from exc
    actual = _sha256_bytes(data)
    for sha in expected:
        if actual != sha:
            raise CheckpointHashError(
                f"{what}: the download of {url} has sha256 {actual}, expected {sha}; "
                "refusing to use it (nothing was written)"
            )
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    storage.write_json(
        record,
        {"url": url, "file": path.name, "sha256": actual, "size": len(data), "downloaded": now},
    )
    with storage.atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return VerifiedCheckpoint(
        data, {"checkpoint": str(path), "checkpoint_sha256": actual, "downloaded": now}
    )


def _mace_verified(spec: ModelSpec, model_dir: str | os.PathLike) -> VerifiedCheckpoint:
    """The verified bytes of a mace model key: a local ``path:``, or a foundation from the
    model cache ``model_dir`` (downloaded there once, with its download record)."""
    opts = spec.options
    if "path" in opts:
        return verified_checkpoint(spec, opts["path"])
    if "foundation" not in opts:
        raise ModelError(f"model {spec.key!r}: a mace model needs 'foundation' or 'path'")
    url = _foundation_url(spec)
    path = Path(model_dir) / Path(url).name
    record = path.with_name(path.name + DOWNLOAD_RECORD_SUFFIX)
    pin = FOUNDATION_SHA256.get(url)
    if path.exists():
        verified = verified_checkpoint(spec, path, pin=pin, download_record=record, url=url)
    else:
        sha, training, _ = _trust_options(spec)
        given = {"config": sha}
        if training is not None:
            given["training record"] = _training_record_sha256(spec, training, path)
        given = {source: value for source, value in given.items() if value}
        expected = list(given.values()) or ([pin] if pin else [])
        verified = _download_checkpoint(spec, url, path, record, expected)
        if given:
            source, said_by = " + ".join(given), training
        else:
            source, said_by = ("pinned", None) if pin else ("download record", record)
        verified.info["sha256_source"] = source
        if said_by is not None:
            verified.info["sha256_record"] = str(said_by)
    verified.info["foundation_url"] = url
    return verified


_PRIVATE_DIRS: list[str] = []


def _remove_private_copies() -> None:
    while _PRIVATE_DIRS:
        shutil.rmtree(_PRIVATE_DIRS.pop(), ignore_errors=True)


def _private_copy(data: bytes, name: str) -> Path:
    """``data`` in a new file only this user can read (0600, in a fresh 0700 temp dir),
    removed when the process exits: a path for a program that loads the file itself."""
    directory = tempfile.mkdtemp(prefix="kappaflow-checkpoint-")
    if not _PRIVATE_DIRS:
        atexit.register(_remove_private_copies)
    _PRIVATE_DIRS.append(directory)
    path = Path(directory) / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "wb") as fh:
        fh.write(data)
    return path


def _unpickle(data: bytes, map_location: Any) -> Any:
    """``torch.load`` of checkpoint bytes that ``verified_checkpoint`` returned. This runs
    code from them (full unpickling, as the model packages' own loaders do)."""
    import torch

    return torch.load(BytesIO(data), map_location=map_location, weights_only=False)


def _allow_slice_unpickling() -> None:
    """e3nn's constants (and sevenn) need ``slice`` allow-listed under torch>=2.6."""
    import torch

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([slice])


def mace_checkpoint(spec: ModelSpec, model_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A local file with the verified bytes of a mace model key, and their checksum record.

    For mace's own programs (the ``--foundation_model`` of fine-tuning), which load a path:
    the file is a private copy (0600, private temp dir, removed at exit) of the bytes that
    were hashed, so replacing the original after the check changes nothing. The record
    names the original file. A foundation is downloaded once into ``model_dir``, so mace
    itself never downloads."""
    if spec.family != "mace":
        raise ModelError(
            f"model {spec.key!r}: fine-tuning needs a mace model (family mace), got {spec.family!r}"
        )
    verified = _mace_verified(spec, model_dir)
    return _private_copy(verified.data, Path(verified.info["checkpoint"]).name), verified.info


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
    dtype, deviations = model_dtype(spec)
    verified = _mace_verified(spec, model_dir)  # before mace or torch is imported
    _allow_slice_unpickling()
    from mace.calculators import MACECalculator

    model = _unpickle(verified.data, device)
    if not hasattr(model, "r_max") or not hasattr(model, "atomic_numbers"):
        raise ModelError(
            f"model {spec.key!r}: {verified.info['checkpoint']} is not a MACE model "
            f"(unpickled a {type(model).__name__})"
        )
    calc = MACECalculator(models=model, device=device, default_dtype=dtype)
    info = {"dtype": dtype, **verified.info}
    if deviations:
        info["protocol_deviations"] = deviations
    return LoadedModel(calc, info, _mace_batch_forces(calc))


def _package_dir(package: str, what: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{what}: the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_chgnet(spec: ModelSpec, device: str) -> LoadedModel:
    what = f"model {spec.key!r}"
    version = spec.options.get("version", "0.3.0")
    if "path" in spec.options:
        verified = verified_checkpoint(spec, spec.options["path"])
    else:
        files = sorted((_package_dir("chgnet", what) / "pretrained" / version).glob("*.pth.tar"))
        if not files:
            raise ModelError(f"{what}: CHGNet {version} weights not in the installed chgnet wheel")
        path = files[0]
        verified = verified_checkpoint(
            spec, path, pin=PINNED_SHA256.get(path.name), package="chgnet"
        )
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    # as CHGNet.from_file, from the verified bytes
    state = _unpickle(verified.data, "cpu")
    if not isinstance(state, dict) or "model" not in state:
        raise ModelError(f"{what}: {verified.info['checkpoint']} is not a CHGNet checkpoint")
    model = CHGNet.from_dict(state["model"])
    calc = CHGNetCalculator(model=model, use_device=device)
    return LoadedModel(calc, {"dtype": "float32", **verified.info}, _chgnet_batch_forces(calc))


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
    what = f"model {spec.key!r}"
    verified = None
    if "path" in spec.options:
        verified = verified_checkpoint(spec, spec.options["path"])
    _allow_slice_unpickling()
    from sevenn.calculator import SevenNetCalculator
    from sevenn.util import model_from_checkpoint, pretrained_name_to_path

    if verified is None:
        path = Path(pretrained_name_to_path(spec.options.get("name", "7net-0")))
        verified = verified_checkpoint(
            spec,
            path,
            pin=PINNED_SHA256.get(f"{path.parent.name}/{path.name}"),
            package="sevenn",
        )
    # as SevenNetCalculator(model=<checkpoint path>), from the verified bytes
    checkpoint = _unpickle(verified.data, "cpu")
    if not isinstance(checkpoint, dict) or not {"model_state_dict", "config"} <= set(checkpoint):
        raise ModelError(f"{what}: {verified.info['checkpoint']} is not a SevenNet checkpoint")
    model, config = model_from_checkpoint(checkpoint)
    calc = SevenNetCalculator(model=model, device=device, sevennet_config=config)
    return LoadedModel(calc, {"dtype": "float32", **verified.info}, _sevennet_batch_forces(calc))


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
