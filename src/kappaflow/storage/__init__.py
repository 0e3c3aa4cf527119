"""The only package that reads or writes files: the file formats here, atomic writes in
:mod:`kappaflow.storage.atomic`, output folders and their lock in
:mod:`kappaflow.storage.folders` (all reachable as ``storage.<name>``).

Every write is atomic: data go to a temporary file in the destination folder, which
is renamed onto the declared path only when complete, so a killed job never leaves
a half-written output that looks finished. phono3py's own HDF5 layouts and names
(``fc2.hdf5``, ``fc3.hdf5``, ``phono3py_disp.yaml``, kappa datasets) are kept so
phono3py's tools can read the results folders.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from ase import Atoms
from ase.io import read, write

from kappaflow import reference as ref
from kappaflow.gates import OK
from kappaflow.storage.atomic import (  # noqa: F401 (part of storage's interface)
    STALE_TEMP_SECONDS,
    atomic_path,
    remove_dead_temp_files,
    temp_writer_alive,
    writer_token,
)
from kappaflow.storage.folders import (  # noqa: F401 (part of storage's interface)
    LOCK_NAME,
    FolderLockedError,
    LockingUnsupportedError,
    OutputFolderError,
    describe_holder,
    folder_lock,
    output_file,
    output_folder,
)
from kappaflow.structures import MaterialError, frame_problem


class GatedOutputError(RuntimeError):
    """A placeholder output (status != ok) was asked for its data."""


class StructureFileError(MaterialError):
    """A structures file cannot be read, or a frame of it is not a crystal structure; the
    message names the file, the frame and its line."""


class KappaTableError(ValueError):
    """A kappa table cannot be read or is not a kappa table; the message names the file."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _clean_nan(obj: Any) -> Any:
    """JSON has no NaN: store null (read back as NaN where numbers are expected)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def plain(data: Any) -> Any:
    """``data`` as it reads back from a JSON record (tuples as lists, NaN as None)."""
    return _clean_nan(json.loads(json.dumps(data, default=_default, allow_nan=True)))


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Atomic JSON (gzip when the name ends in .gz); NaN stored as null."""
    text = json.dumps(plain(data), indent=1)
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            with gzip.open(tmp, "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    return data


def read_package_yaml(name: str) -> dict[str, Any]:
    """A YAML file shipped inside the package (``kappaflow/schemas/<name>``)."""
    import yaml

    text = resources.files("kappaflow").joinpath("schemas", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def package_data(name: str) -> Path:
    """Path of a data file shipped inside the package (``kappaflow/data/<name>``)."""
    return Path(str(resources.files("kappaflow").joinpath("data", name)))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


#: PNG resolution of the figures (the report and the README show the PNG)
FIGURE_DPI = 150


def write_figure(path: str | os.PathLike, fig: Any, *more: str | os.PathLike) -> None:
    """Save a matplotlib figure atomically to ``path`` (and ``more`` paths: e.g. the PNG and
    its SVG twin; format from each suffix, PNG at :data:`FIGURE_DPI`), then close it."""
    import matplotlib.pyplot as plt

    for target in (path, *more):
        fmt = Path(target).suffix.lstrip(".") or "svg"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=FIGURE_DPI)
    plt.close(fig)


def write_csv(path: str | os.PathLike, df: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path)


# ------------------------------------------------------------------------ hashing


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy ``src`` to ``dest`` atomically (a killed copy leaves no partial file)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def read_text(path: str | os.PathLike) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, what: str) -> str:
    """Return the file's sha256, raising ChecksumError when it differs from ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ref.ChecksumError(
            f"{what}: {path} has sha256 {actual}, expected {expected}; refusing to use it "
            "(delete it to re-download, or point at an unmodified copy)"
        )
    return actual


def download(url: str, dest: str | os.PathLike, sha256: str | None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` atomically; verify ``sha256`` before the rename."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        if sha256 is not None:
            verify_sha256(tmp, sha256, f"download of {url}")
    return dest


# ---------------------------------------------------------------------- reference


def _download_derived(entry: ref.ReferenceFile, path: Path) -> None:
    """Download the source text, derive the file (reference.<derive>), verify, rename."""
    with urllib.request.urlopen(entry.url, timeout=60) as resp:
        text = resp.read().decode("utf-8")
    derived = getattr(ref, entry.derive)(text)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(derived.encode("utf-8"))
        verify_sha256(tmp, entry.sha256, f"{entry.filename} derived from {entry.url}")


def reference_file(resolved: ref.ResolvedDir, key: str, download_missing: bool = True) -> Path:
    """Path of one pinned reference file, verified by sha256 (downloaded if allowed)."""
    entry = ref.FILES[key]
    path = resolved.path / entry.filename
    if not path.exists():
        if not (resolved.downloadable and download_missing):
            raise ref.ReferenceNotFoundError(
                ref.not_found_message(
                    resolved, entry.filename, "only the default location is filled by download"
                )
            )
        try:
            if entry.derive is None:
                download(entry.url, path, entry.sha256)
            else:
                _download_derived(entry, path)
        except OSError as exc:  # offline, DNS failure, HTTP error
            raise ref.ReferenceNotFoundError(
                ref.not_found_message(resolved, entry.filename, f"download failed ({exc})")
            ) from exc
    verify_sha256(path, entry.sha256, f"reference file {entry.filename}")
    return path


def read_structures(path: str | os.PathLike) -> list[Atoms]:
    """All frames of an extxyz file (the reference set or a user's own), each checked to
    be a crystal structure (:func:`kappaflow.structures.frame_problem`): a bad file or
    frame raises :class:`StructureFileError` naming the file, the frame and its line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structures file not found: {path}")
    frames = _read_extxyz(path, "structures file")
    if not frames:
        raise StructureFileError(f"structures file {path} holds no frames")
    lines = None
    for i, atoms in enumerate(frames):
        problem = frame_problem(atoms)
        if problem is not None:
            lines = lines or extxyz_frame_lines(_lines(path))[0]
            where = f" (line {lines[i]})" if i < len(lines) else ""
            mid = atoms.info.get("mp_id") or atoms.info.get("material_id")
            label = f", {mid}" if mid else ""
            raise StructureFileError(f"structures file {path}, frame {i}{where}{label}: {problem}")
    return frames


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def extxyz_frame_lines(lines: list[str]) -> tuple[list[int], str | None]:
    """The 1-based line of each frame's atom count in an extxyz text, and the first
    problem of its layout (a count that is not an integer, or that does not match the
    atom lines that follow), or None."""
    starts: list[int] = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            if all(not line.strip() for line in lines[i:]):
                break
            return starts, f"line {i + 1}: a blank line where frame {len(starts)} should start"
        head = lines[i].split()
        if len(head) != 1 or not head[0].isdigit():
            prev = (
                f" (frame {len(starts) - 1} at line {starts[-1]} declares "
                f"{lines[starts[-1] - 1].strip()} atoms: is that count right?)"
                if starts
                else ""
            )
            return starts, (
                f"line {i + 1}: expected the atom count of frame {len(starts)}, "
                f"got {lines[i].strip()[:60]!r}{prev}"
            )
        natoms = int(head[0])
        frame, block = len(starts), lines[i + 2 : i + 2 + natoms]
        starts.append(i + 1)
        if i + 1 >= n:
            return starts, f"line {i + 1}: frame {frame} has no comment line"
        width = len(block[0].split()) if block else 0
        for k, line in enumerate(block):
            tokens = line.split()
            if len(tokens) != width or (len(tokens) == 1 and tokens[0].isdigit()):
                return starts, (
                    f"frame {frame} (line {i + 1}) declares {natoms} atoms, but line "
                    f"{i + 3 + k} is not an atom line like the ones before it "
                    f"({line.strip()[:60]!r})"
                )
        if len(block) < natoms:
            return starts, (
                f"frame {frame} (line {i + 1}) declares {natoms} atoms, but the file ends "
                f"after {len(block)} atom lines"
            )
        i += natoms + 2
    return starts, None


def _read_extxyz(path: Path, what: str) -> list[Atoms]:
    """ASE's extxyz reader, its errors told with the file, the frame and the line. The
    layout is checked first: ASE stops silently at a blank line between frames (the
    frames after it were lost) and reports a wrong atom count without a line."""
    if path.is_dir():
        raise StructureFileError(f"{what} {path} is a directory, not an extxyz file")
    starts, problem = extxyz_frame_lines(_lines(path))
    if problem is not None:
        raise StructureFileError(f"{what} {path}: {problem}")
    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many kinds (ValueError, KeyError, IndexError, ...)
        ase_error = f"{type(exc).__name__}: {exc}"
    else:
        if len(frames) != len(starts):
            raise StructureFileError(
                f"{what} {path}: ASE read {len(frames)} frames, the file has {len(starts)} "
                f"(at lines {', '.join(map(str, starts[:10]))})"
            )
        return frames
    problem = "cannot be read as extended XYZ"
    for k, line in enumerate(starts):  # the layout is fine: find the frame ASE cannot read
        try:
            read(path, index=k, format="extxyz")
        except Exception:
            problem = f"frame {k} (line {line}) cannot be read"
            break
    raise StructureFileError(f"{what} {path}: {problem} (ASE: {ase_error})") from None


def write_frames(path: str | os.PathLike, frames: list[Atoms]) -> None:
    """Many frames as one extxyz (training structures, labels), written atomically."""
    clean = []
    for at in frames:
        a = at.copy()
        a.calc = None
        a.constraints = []
        clean.append(a)
    with atomic_path(path) as tmp:
        write(tmp, clean, format="extxyz")


def read_frames(path: str | os.PathLike) -> list[Atoms]:
    """Every frame of an extxyz (labels keep their info/arrays keys and calculator results)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    return _read_extxyz(path, "extxyz file")


_ARRAY_COLUMNS = (
    "q_mesh",
    "temperatures",
    "qpoints",
    "weights",
    "frequencies",
    "heat_capacity",
    "kappa_TOT_ave",
    "mode_kappa_TOT_ave",
    "kappa_TOT_RTA",
    "kappa_P_RTA",
    "kappa_C",
)


def read_kappa_table(path: str | os.PathLike) -> pd.DataFrame:
    """A kappa table in the reference layout (DFT json.gz or a gathered kappaflow table).

    Returns a frame indexed by ``mp_id`` whose list cells are numpy arrays (NaN for null).
    A file that is not such a table raises :class:`KappaTableError` naming the file and the
    problem: unreadable, no rows, no ``mp_id`` or ``kappa_TOT_ave`` column, duplicate ids,
    a cell of a numeric column that is not numbers (the scoring also needs ``temperatures``:
    :func:`kappaflow.metrics.check_predictions`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"kappa table not found: {path}")
    try:
        df = pd.read_json(path)
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise KappaTableError(
            f"{path}: not a pandas-JSON kappa table ({type(exc).__name__}: {exc})"
        ) from None
    columns = ", ".join(map(str, df.columns)) or "none"
    for col in ("mp_id", "kappa_TOT_ave"):
        if col not in df.columns:
            raise KappaTableError(f"{path}: no {col!r} column (columns: {columns})")
    if df.empty:
        raise KappaTableError(f"{path}: the table has no rows")
    ids = df["mp_id"].astype(str)
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise KappaTableError(
            f"{path}: duplicate mp_id(s) {', '.join(dup)}: each material must appear once"
        )
    df = df.set_index("mp_id")
    for col in _ARRAY_COLUMNS:
        if col in df.columns:
            df[col] = [_numeric_cell(v, path, col, mid) for mid, v in df[col].items()]
    return df


def _numeric_cell(value: Any, path: Path, column: str, material: Any) -> Any:
    """A cell of a numeric column: a list -> float array, null -> NaN, a number stays."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, bool) or not isinstance(value, (list, int, float, np.number)):
        raise KappaTableError(
            f"{path}: {column!r} of {material!r} must be a number or a list of numbers, "
            f"got {value!r:.80}"
        )
    if not isinstance(value, list):
        return value
    try:
        return np.asarray(_none_to_nan(value), dtype=float)
    except (TypeError, ValueError) as exc:
        raise KappaTableError(
            f"{path}: {column!r} of {material!r} is not a numeric array ({exc})"
        ) from None


def _none_to_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return np.nan if value is None else value


def read_kappa_table_identity(path: str | os.PathLike) -> dict[str, tuple[str, int | None]]:
    """``{mp_id: (name, space group)}`` of a kappa table (the reference's formulas, to check
    that a user structure with a reference id is that material)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"kappa table not found: {path}")
    data = read_json(path)
    if "mp_id" not in data or "name" not in data:
        raise KappaTableError(f"{path}: no 'mp_id' and 'name' columns")
    groups = data.get("symm.no", {})
    return {
        str(mid): (str(data["name"][k]), None if groups.get(k) is None else int(groups[k]))
        for k, mid in data["mp_id"].items()
    }


def read_kappa_table_ids(path: str | os.PathLike) -> list[str]:
    """The ``mp_id`` column of a kappa table only (the DAG needs the ids, not the arrays)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"kappa table not found: {path}")
    data = read_json(path)
    if "mp_id" not in data:
        raise ValueError(f"{path}: no 'mp_id' column")
    return [str(v) for v in data["mp_id"].values()]


def write_kappa_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write a gathered table in the reference layout (pandas to_json, orient=columns),
    with 15 significant digits (pandas' default of 10 would round κ at 1e-10)."""
    out = df.reset_index() if df.index.name == "mp_id" else df.copy()
    for col in out.columns:
        out[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in out[col]]
    text = out.to_json(double_precision=15)
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            fh.write(text)


def read_published_tables(
    folder: str | os.PathLike, kind: str = "kappa"
) -> dict[str, pd.DataFrame]:
    """The published per-material tables of other models: every ``<folder>/<kind>/*.csv``
    but ``_summary.csv`` (the layout of k_SRME's parsed ``metrics.txt``), keyed by model."""
    from kappaflow.peers import normalize_published

    path = Path(folder) / kind
    if not path.is_dir() or not any(path.glob("*.csv")):
        raise ref.ReferenceNotFoundError(f"no published {kind} tables in {path}")
    out = {}
    for csv in sorted(path.glob("*.csv")):
        if csv.name.startswith("_"):
            continue
        df = pd.read_csv(csv)
        out[csv.stem] = normalize_published(df) if kind == "kappa" else df.set_index("mp_id")
    return out


def published_tables(
    resolved: ref.ResolvedDir, references: dict[str, pd.Series], kind: str = "kappa"
) -> dict[str, pd.DataFrame]:
    """The published tables of ``resolved``; the default location is filled on first use by
    downloading each pinned ``metrics.txt`` (sha256-checked) and parsing it against the DFT
    ``references`` (name -> κ_TOT_ave by mp_id, for the NAC/noNAC flag)."""
    from kappaflow.peers import PUBLISHED_FILES, published_table_from_text

    folder = resolved.path / kind
    if resolved.downloadable and not any(folder.glob("*.csv")):
        for entry in (e for e in PUBLISHED_FILES if e.kind == kind):
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as resp:
                    raw = resp.read()
            except OSError as exc:
                raise ref.ReferenceNotFoundError(
                    f"published {kind} tables: {entry.url} could not be downloaded ({exc}); "
                    "point reference.published (or $KAPPAFLOW_PUBLISHED_DIR) at a folder with "
                    f"{kind}/<model>.csv"
                ) from exc
            if hashlib.sha256(raw).hexdigest() != entry.sha256:
                raise ref.ChecksumError(f"{entry.url}: sha256 differs from the pin {entry.sha256}")
            table = published_table_from_text(raw.decode("utf-8"), references)
            write_csv(folder / f"{entry.model}.csv", table.reset_index())
    return read_published_tables(resolved.path, kind)


# --------------------------------------------------------------------- structures


def write_structure(
    path: str | os.PathLike, atoms: Atoms, info: dict[str, Any] | None = None
) -> None:
    """extxyz with JSON-able info (relaxation record) attached."""
    atoms = atoms.copy()
    atoms.calc = None
    atoms.constraints = []
    atoms.info = {}
    if info:
        # base64: extxyz info strings cannot carry arbitrary quotes/newlines (tracebacks)
        text = json.dumps(_clean_nan(json.loads(json.dumps(info, default=_default))))
        # no "=" padding: ASE reads an info value ending in "=" as key=value and loses the
        # key after it (pbc); the reader restores the padding
        atoms.info["kappaflow_record_b64"] = base64.b64encode(text.encode()).decode().rstrip("=")
    with atomic_path(path) as tmp:
        write(tmp, atoms, format="extxyz")


def read_structure(path: str | os.PathLike) -> tuple[Atoms, dict[str, Any]]:
    """A structure written by :func:`write_structure` and its record.

    The record's base64 ends in ``=`` padding, which ASE's extxyz key=value parser reads
    as the start of the next key: the ``pbc`` that follows it is swallowed into the record
    (and the cell read as periodic). The record is cut at its padding and ``pbc`` is read
    from the comment line itself.
    """
    atoms = read(path, format="extxyz")
    encoded = atoms.info.pop("kappaflow_record_b64", None)
    if encoded:
        encoded = re.match(r"[A-Za-z0-9+/]*", str(encoded)).group(0)
        encoded += "=" * (-len(encoded) % 4)  # written without its padding
    info = json.loads(base64.b64decode(encoded).decode()) if encoded else {}
    pbc = _comment_pbc(path)
    if pbc is not None:
        atoms.pbc = pbc
    atoms.info = {}
    return atoms, info


def _comment_pbc(path: str | os.PathLike) -> list[bool] | None:
    """``pbc="T T F"`` of the first frame's comment line, or None."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.readline()
        comment = fh.readline()
    match = re.search(r'(?:^|\s)pbc="([^"]*)"', comment)
    if match is None:
        return None
    flags = match.group(1).split()
    return [f in ("T", "t") for f in flags] if len(flags) == 3 else None


# ------------------------------------------------------------------- phono3py I/O


def write_phono3py_yaml(path: str | os.PathLike, ph3: Any) -> None:
    """phono3py_disp.yaml (structure, supercell matrices, displacement datasets)."""
    with atomic_path(path) as tmp:
        ph3.save(filename=str(tmp), settings={"force_sets": False})


def write_fc(
    path: str | os.PathLike,
    order: int,
    fc: np.ndarray | None,
    p2s_map: np.ndarray | None,
    status: str = OK,
    attrs: dict[str, Any] | None = None,
) -> None:
    """fc2.hdf5/fc3.hdf5 in phono3py's format; a gated job writes a status-only placeholder.
    ``attrs`` (e.g. ``protocol_deviations``) become HDF5 attributes."""
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    with atomic_path(path) as tmp:
        if status == OK:
            if fc is None:
                raise ValueError(f"{path}: status ok but no force constants")
            if order == 2:
                write_fc2_to_hdf5(fc, filename=str(tmp), p2s_map=p2s_map)
            else:
                write_fc3_to_hdf5(fc, filename=str(tmp), p2s_map=p2s_map)
        else:
            with h5py.File(tmp, "w"):
                pass
        with h5py.File(tmp, "a") as h5:
            h5.attrs["kappaflow_status"] = status
            for key, value in (attrs or {}).items():
                h5.attrs[key] = value


def fc_status(path: str | os.PathLike) -> str:
    with h5py.File(path, "r") as h5:
        return str(h5.attrs.get("kappaflow_status", OK))


def read_fc(path: str | os.PathLike, order: int) -> np.ndarray:
    """Force constants; refuses a placeholder whose status is not ok."""
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    status = fc_status(path)
    if status != OK:
        raise GatedOutputError(f"{path} is a placeholder (status={status}); no force constants")
    return read_fc2_from_hdf5(path) if order == 2 else read_fc3_from_hdf5(path)


def write_forces(
    path: str | os.PathLike, forces: np.ndarray | None, status: str = OK, **meta: Any
) -> None:
    """Displaced-supercell forces (n_disp, n_atoms, 3) in eV/Å, with metadata attributes."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["kappaflow_status"] = status
        if forces is not None:
            h5.create_dataset("forces", data=np.asarray(forces, dtype=float), compression="gzip")
        for key, value in meta.items():
            h5.attrs[key] = value


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """HDF5 file attributes only (status, timing, checksum)."""
    with h5py.File(path, "r") as h5:
        return dict(h5.attrs)


def read_forces(path: str | os.PathLike) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        status = str(h5.attrs.get("kappaflow_status", OK))
        if status != OK:
            raise GatedOutputError(f"{path} is a placeholder (status={status}); no forces")
        return h5["forces"][()]


def write_hdf5(path: str | os.PathLike, datasets: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Datasets (None skipped; arrays >= 2-D gzip-compressed) and attributes, atomically.

    kappa.hdf5 is written this way, with phono3py's dataset names, straight to the declared
    output: phono3py's own writer would put ``kappa-m191919.hdf5`` into the current
    directory, a name shared by all rs/zb materials, which concurrent jobs would overwrite.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in datasets.items():
            if value is None:
                continue
            value = np.asarray(value)
            if value.dtype.kind in "US":
                h5.create_dataset(key, data=np.bytes_(str(value)))
            elif value.ndim >= 2:
                h5.create_dataset(key, data=value, compression="gzip")
            else:
                h5.create_dataset(key, data=value)
        for key, value in attrs.items():
            h5.attrs[key] = (
                value
                if not isinstance(value, (dict, list))
                else json.dumps(value, default=_default)
            )


def read_hdf5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(datasets, attributes) of an HDF5 file written by :func:`write_hdf5`."""
    with h5py.File(path, "r") as h5:
        data = {k: h5[k][()] for k in h5}
        attrs = dict(h5.attrs)
    return data, attrs


# ------------------------------------------------------------------------ folders


def ensure_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------- Grüneisen


def read_gamma_reference(path: str | os.PathLike) -> pd.DataFrame:
    """DFT γ at 300 K (gruneisen_dft_gamma.csv): indexed by mp_id, column gamma_DFT_300K."""
    df = pd.read_csv(path)
    missing = {"mp_id", "gamma_DFT_300K"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a DFT γ table, missing column(s) {sorted(missing)}")
    return df.set_index("mp_id")


def read_mode_gamma_reference(path: str | os.PathLike) -> pd.DataFrame:
    """Mode-resolved γ reference (gamma_SRME's gruneisen_DFT_*.json.gz layout).

    A pandas JSON table with mp_id, weights, frequencies and gruneisen (on the
    irreducible q-mesh of phonopy's Grüneisen), indexed by mp_id.
    """
    df = pd.read_json(path)
    missing = {"mp_id", "weights", "frequencies", "gruneisen"} - set(df.columns)
    if missing:
        raise ValueError(
            f"{path}: not a mode-resolved γ reference, missing column(s) {sorted(missing)}"
        )
    df = df.set_index("mp_id")
    for col in ("weights", "frequencies", "gruneisen", "q_points"):
        if col in df.columns:
            df[col] = df[col].map(lambda x: None if x is None else np.asarray(x, dtype=float))
    return df


def read_melting_points(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The melting-point table (formula, T_melt_K, ...): the package's own
    ``kappaflow/data/melting_points.csv`` unless another file is given."""
    path = package_data("melting_points.csv") if path is None else path
    df = pd.read_csv(path, comment="#")
    missing = {"formula", "T_melt_K"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: melting-point table misses column(s) {sorted(missing)}")
    return df


# ------------------------------------------------------------- SLURM job logs

#: What slurmstepd writes into a job's output when SLURM ends it at its time limit.
SLURM_TIME_LIMIT_MARK = "DUE TO TIME LIMIT"


def slurm_job_logdir(logdir: str | os.PathLike, rule: str, wildcard_values) -> Path:
    """Where snakemake-executor-plugin-slurm writes the SLURM logs of one job:
    ``{logdir}/rule_{rule}/{wildcard values joined by '_'}/{jobid}.log``."""
    return Path(logdir) / f"rule_{rule}" / "_".join(map(str, wildcard_values)).replace("/", "_")


def slurm_time_limit_kills(logdir: str | os.PathLike, rule: str, wildcard_values) -> int:
    """How many earlier SLURM jobs of this (rule, wildcards) were killed for their
    time limit, counted from the plugin's kept logs (failed jobs' logs are kept)."""
    folder = slurm_job_logdir(logdir, rule, wildcard_values)
    if not folder.is_dir():
        return 0
    kills = 0
    for log in folder.glob("*.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        kills += SLURM_TIME_LIMIT_MARK in text
    return kills
