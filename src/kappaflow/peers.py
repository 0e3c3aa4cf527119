"""Published peers and the leaderboard: the user's models among the published ones.

Two sources (both public, pinned):

* **k_SRME tables**: MPA2suite/k_SRME ``models/*/metrics.txt`` at commit
  :data:`KSRME_COMMIT` (2025-02-06): per-material SRME, SRE and κ of 16 models, printed by pandas
  (``print(df)``, wrapped in column blocks). γ tables: MPA2suite/gamma_SRME
  ``models/*/metrics_gamma.txt`` at :data:`GAMMA_SRME_COMMIT` (the commit of
  ``kappaflow.reference.GAMMA_SRME_COMMIT``; the files are byte-identical at the later HEAD
  0af8d5f). :data:`PUBLISHED_FILES` pins every file's sha256 for download; a local directory
  of already-parsed CSVs (``published/kappa/<model>.csv``, with ``dft_ref_used``) is read the
  same way (:func:`normalize_published`).
* **Matbench Discovery**: aggregates only, as data in ``src/kappaflow/data/matbench_discovery.csv``
  (its README names commit and paths).

The fair ranking (:func:`leaderboard`) ranks on the SAME materials as the user's run: the
published SRME/SRE are averaged over the user's scored materials only; the published SRE is
re-scored from the peer's κ against the user's DFT reference; an SRME scored against another
reference (several Nov-2024 k_SRME tables used the NAC file, PROTOCOL §2) and results made
under another protocol (Matbench Discovery's ``phonondb-v1``) are flagged; aggregate-only rows
are ranked only when the user scored every material they were averaged over.

Pure functions of text and DataFrames; the one function that reads files is marked.
"""

from __future__ import annotations

import io as _stdio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

KAPPA_ERROR_MAX = 2.0

#: MPA2suite/k_SRME, the commit of the reference data (kappaflow.reference.COMMIT).
KSRME_COMMIT = "0269a946a1e4c53552b060a92b98df94e039fd80"
KSRME_URL = f"https://raw.githubusercontent.com/MPA2suite/k_SRME/{KSRME_COMMIT}/"
#: MPA2suite/gamma_SRME, the commit of kappaflow.reference.GAMMA_SRME_COMMIT ("first commit",
#: 2025-07-09); the eight metrics_gamma.txt are byte-identical at HEAD 0af8d5f.
GAMMA_SRME_COMMIT = "23e7100ac4e7eb06418390a6a946847013c507fb"
GAMMA_SRME_URL = f"https://raw.githubusercontent.com/MPA2suite/gamma_SRME/{GAMMA_SRME_COMMIT}/"
#: janosh/matbench-discovery commit of src/kappaflow/data/matbench_discovery.csv.
MBD_COMMIT = "2c7f9fc42d018711dc2f5df573d225ea6d2d17b2"

#: The protocol kappaflow follows (and the k_SRME tables were made with).
KSRME_PROTOCOL = "k_SRME"


@dataclass(frozen=True)
class PublishedFile:
    """One pinned published per-material table."""

    model: str  # the name used for published/<kind>/<model>.csv
    kind: str  # "kappa" or "gruneisen"
    path: str  # path inside the repository
    sha256: str

    @property
    def commit(self) -> str:
        return KSRME_COMMIT if self.kind == "kappa" else GAMMA_SRME_COMMIT

    @property
    def url(self) -> str:
        return (KSRME_URL if self.kind == "kappa" else GAMMA_SRME_URL) + self.path

    @property
    def source(self) -> str:
        repo = "MPA2suite/k_SRME" if self.kind == "kappa" else "MPA2suite/gamma_SRME"
        return f"{repo}@{self.commit[:7]}:{self.path}"


#: sha256 of the raw bytes (git blob contents) at the pinned commits.
PUBLISHED_FILES: tuple[PublishedFile, ...] = (
    PublishedFile("CHGNet", "kappa", "models/CHGNet/metrics.txt",
                  "26d60df9393e12101c11216a8b05c9ae0bdeb69ca302ab10bfbce29340f77780"),
    PublishedFile("GRACE-1L-OAM", "kappa", "models/GRACE-1L-OAM/metrics.txt",
                  "ccb8bd83a23aabeb15b1ab03ac5bafb9f7a42c5d7df88a6b60b0124a9df5e06d"),
    PublishedFile("GRACE-2L-OAM", "kappa", "models/GRACE-2L-OAM/metrics.txt",
                  "7e54b3c6b180e2814bcde0c5b78b549c27b02d11e40f5cec8fec0bbe421f2044"),
    PublishedFile("GRACE-2L-r6-11Nov2024", "kappa", "models/GRACE-2L-r6-11Nov2024/metrics.txt",
                  "c724e3ed8a9e236dbf18076c475105eb658a63210b53a25334b45057e71b234f"),
    PublishedFile("M3GNet", "kappa", "models/M3GNet/metrics.txt",
                  "006b7ba6d69a740e9b57065b2de638b65030eb2ea22fe2137a73e6494f0ea3d1"),
    PublishedFile("MACE-L", "kappa", "models/MACE-L/metrics.txt",
                  "dec99d6cb9c409ef73e758c3fc4b76458a120fcd28025069864c25a68b04698a"),
    PublishedFile("MACE-L2", "kappa", "models/MACE-L2/metrics.txt",
                  "cfba113af53498646137a5199321087d02e3d0ec8c5d35ac4af6a29e8c460e83"),
    PublishedFile("MACE-M", "kappa", "models/MACE-M/metrics.txt",
                  "76f05d6fb5c184b13d4584fda9a1a5f1a6dfd8e5a545069f9e13c4cbd9fc0719"),
    PublishedFile("MACE-MPA-0", "kappa", "models/MACE-MPA-0/metrics.txt",
                  "8246924f01927dccce7507c3d174af0aa6ec64ea360b4d61233a658e67dd4cff"),
    PublishedFile("MACE-agnesi-medium", "kappa", "models/MACE-agnesi-medium/metrics.txt",
                  "afba6cd06958dba2c157165bed3bb808ce2cc6ad3efe1bcd6aaabfd6e2d05b26"),
    PublishedFile("MatterSim-V1-1M", "kappa", "models/MatterSim-V1/metrics-MatterSim-1M.txt",
                  "619a56a9b26b857e16404f48872a6e5768b1eef487b2c9b111ce7f1e6aad193e"),
    PublishedFile("MatterSim-V1-5M", "kappa", "models/MatterSim-V1/metrics-MatterSim-5M.txt",
                  "4d0175409ca1efb37384c6534616f90fcc0a2db03c41ddc9a1039cdd7102f47e"),
    PublishedFile("ORBv2-MPTraj", "kappa", "models/ORBv2-MPTraj/metrics.txt",
                  "38f2b9d9e06a47af24171071c05da8b375b3512b0db7a8da982882b58420363e"),
    PublishedFile("ORBv2", "kappa", "models/ORBv2/metrics.txt",
                  "b3d117c31ab8c5f7e8584fc34fa0d7cf4120c57e784ea802c02ebcc2c0cd363e"),
    PublishedFile("SevenNet", "kappa", "models/SevenNet/metrics.txt",
                  "937e64485512a9dd56970a891be50d96bb2c864e04f91bd061eafc34c308b0d7"),
    PublishedFile("eqV2-full-S", "kappa", "models/eqV2-full-S/metrics.txt",
                  "bde6834e06a0fd4aa6d28d755e474987c110b8f1d3e472f1174517c7e65e767d"),
    PublishedFile("CHGNet", "gruneisen", "models/CHGNet/metrics_gamma.txt",
                  "8f2f35acf3a7efcc280e14f8aef5caf9097471a744533e24b6626407139032ab"),
    PublishedFile("M3GNet", "gruneisen", "models/M3GNet/metrics_gamma.txt",
                  "fea2116d88879ae9862f982d2e82196e437e06aecf47d241b0a71b3fff141811"),
    PublishedFile("MACE-L2", "gruneisen", "models/MACE-L2/metrics_gamma.txt",
                  "d96351c642ed56276f2566ac1f6578f0cd7e02a1e3dee81c86edfcdacf33f13f"),
    PublishedFile("MACE-M", "gruneisen", "models/MACE-M/metrics_gamma.txt",
                  "34db805768aa649e6d74f7bd32a0f4e4a20ec982dd49c6db6c747bd381506e2e"),
    PublishedFile("MACE-OMAT", "gruneisen", "models/MACE-OMAT/metrics_gamma.txt",
                  "73d84263373d06d4180829652823dbe8296452c2f9cfeebdbb667d4ff1aa703f"),
    PublishedFile("Orb-v1-MPTraj", "gruneisen", "models/Orb-v1-MPTraj/metrics_gamma.txt",
                  "babc9064586c588eb7cfdcfb82f8a20f42f2dafdabdefd90c301ff0a3098ca5f"),
    PublishedFile("SevenNet-0", "gruneisen", "models/SevenNet-0/metrics_gamma.txt",
                  "cb2c330882136d847d7e3c310d9259da06cbb448e3d56410a8962610e4f5eb21"),
    PublishedFile("SevenNet-MF-ompa", "gruneisen", "models/SevenNet-MF-ompa/metrics_gamma.txt",
                  "c342a87999387b6c6e9d2446f938dba909efb62381fcc1c90588e2282f3d3ce9"),
)  # fmt: skip

#: k_SRME table -> the same model's row in the Matbench Discovery table (same checkpoint:
#: their SRE, re-scored against noNAC, agree to the printed 4 decimals; tests/test_peers.py).
KSRME_TO_MBD = {
    "CHGNet": "CHGNet",
    "GRACE-1L-OAM": "GRACE-1L-OAM",
    "GRACE-2L-OAM": "GRACE-2L-OAM",
    "GRACE-2L-r6-11Nov2024": "GRACE-2L-MPtrj",
    "M3GNet": "M3GNet",
    "MACE-M": "MACE-MP-0",
    "MACE-MPA-0": "MACE-MPA-0",
    "MatterSim-V1-5M": "MatterSim v1 5M",
    "ORBv2": "ORB v2 MPA",
    "ORBv2-MPTraj": "ORB v2 MPtrj",
    "SevenNet": "SevenNet-0",
    "eqV2-full-S": "eqV2 M",
}

#: Per-material columns of a published κ table (the local published/kappa/<model>.csv layout).
KAPPA_COLUMNS = [
    "mp_id", "desc", "SRME", "SRE", "kappa_TOT_ave", "DFT_kappa_TOT_ave",
    "imaginary_freqs", "errors", "SRME_failed",
]  # fmt: skip
LEADERBOARD_COLUMNS = [
    "rank", "model", "origin", "source", "kappa_SRME", "kappa_SRE", "n_materials", "n_failed",
    "dft_reference", "sre_reference", "protocol", "flags", "yours",
]  # fmt: skip


class PublishedFormatError(ValueError):
    """A published metrics text is not in the expected pandas-printed layout."""


def published_file(model: str, kind: str = "kappa") -> PublishedFile:
    """The pinned entry of one published table (clear error naming the known models)."""
    for entry in PUBLISHED_FILES:
        if entry.model == model and entry.kind == kind:
            return entry
    known = ", ".join(e.model for e in PUBLISHED_FILES if e.kind == kind)
    raise KeyError(f"no published {kind} table for {model!r}; known: {known}")


# ----------------------------------------------------------------- parsing metrics.txt


def _parse_value(token: str) -> object:
    if token in ("NaN", "nan", "None"):
        return np.nan
    if token in ("True", "False"):
        return token == "True"
    try:
        return float(token)
    except ValueError:
        return token


def parse_metrics_text(text: str) -> tuple[dict[str, object], pd.DataFrame]:
    """(header, per-material table) of a k_SRME ``metrics.txt`` or gamma_SRME
    ``metrics_gamma.txt``.

    Layout (pandas ``print`` of a frame indexed by mp_id): ``MODEL: <name>``, tab-indented
    ``mean SRME: x`` / ``mean SRE: y`` lines, then the table in column blocks separated by a
    blank line; in each block a header line of column names (ending in ``\\`` when the table
    continues), an ``mp_id`` index-name line, and one line per material. Values are
    whitespace-separated (no value contains a space: ``desc`` like ``SrO-rs``, ``errors`` like
    ``[]``); ``NaN``/``None`` -> NaN, ``True``/``False`` -> bool, numbers -> float, so
    ``imaginary_freqs`` printed as ``0.0`` (MACE-M) stays 0.0.
    """
    header: dict[str, object] = {}
    lines = text.splitlines()
    if not lines or not lines[0].startswith("MODEL:"):
        raise PublishedFormatError("no 'MODEL:' first line: not a k_SRME/gamma_SRME metrics text")
    i = 0
    while i < len(lines) and not lines[i].startswith(" "):
        line = lines[i].strip()
        if line.startswith("MODEL:"):
            header["model"] = line.split(":", 1)[1].strip()
        elif line.startswith("mean "):
            key, _, value = line.partition(":")
            header["mean_" + key.split(None, 1)[1].strip()] = float(value)
        elif line:
            raise PublishedFormatError(f"unexpected header line {i + 1}: {lines[i]!r}")
        i += 1
    if "model" not in header:
        raise PublishedFormatError("no 'MODEL:' line: not a k_SRME/gamma_SRME metrics text")
    blocks: list[pd.DataFrame] = []
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        columns = lines[i].split()
        if columns and columns[-1] == "\\":
            columns = columns[:-1]
        if i + 1 >= len(lines) or lines[i + 1].split() != ["mp_id"]:
            raise PublishedFormatError(f"line {i + 2}: expected the 'mp_id' index line")
        i += 2
        rows = []
        while i < len(lines) and lines[i].strip():
            parts = lines[i].split()
            if parts[-1] == "\\":
                parts = parts[:-1]
            if len(parts) != len(columns) + 1:
                raise PublishedFormatError(
                    f"line {i + 1}: {len(parts)} fields for {len(columns)} columns + mp_id"
                )
            rows.append([parts[0], *(_parse_value(p) for p in parts[1:])])
            i += 1
        blocks.append(pd.DataFrame(rows, columns=["mp_id", *columns]).set_index("mp_id"))
    if not blocks:
        raise PublishedFormatError("no table after the header")
    index = blocks[0].index
    for block in blocks[1:]:
        if not block.index.equals(index):
            raise PublishedFormatError("column blocks list different materials")
    table = pd.concat(blocks, axis=1)
    for col in ("SRME", "SRE", "kappa_TOT_ave", "DFT_kappa_TOT_ave", "gamma", "DFT_gamma"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return header, table.reset_index()


def dft_reference_used(
    dft_kappa: pd.Series, references: Mapping[str, pd.Series], mp_ids: Sequence[str]
) -> str:
    """Which DFT reference a printed ``DFT_kappa_TOT_ave`` column came from.

    ``references``: name (``NAC``/``noNAC``) -> κ_DFT at 300 K indexed by mp_id. A reference
    matches when every printed value equals it at the printed precision (4 decimals, or 7
    significant digits in scientific notation). Raises if none or several match.
    """
    printed = pd.Series(np.asarray(dft_kappa, dtype=float), index=list(mp_ids))
    hits = []
    for name, ref in references.items():
        ref = ref.reindex(printed.index).astype(float)
        tol = np.maximum(0.51e-4, 5.1e-7 * np.abs(ref.to_numpy()))
        if np.all(np.abs(printed.to_numpy() - ref.to_numpy()) <= tol):
            hits.append(name)
    if len(hits) != 1:
        raise PublishedFormatError(
            f"printed DFT κ matches {'none' if not hits else ' and '.join(hits)} of the "
            f"references {sorted(references)}"
        )
    return hits[0]


def published_table_from_text(text: str, references: Mapping[str, pd.Series]) -> pd.DataFrame:
    """The local ``published/kappa/<model>.csv`` layout from a raw ``metrics.txt``:
    :data:`KAPPA_COLUMNS` + ``dft_ref_used`` (decided by :func:`dft_reference_used`)."""
    _, table = parse_metrics_text(text)
    missing = [c for c in KAPPA_COLUMNS if c not in table.columns]
    if missing:
        raise PublishedFormatError(f"metrics text lacks column(s) {missing}")
    table = table[KAPPA_COLUMNS].copy()
    table["dft_ref_used"] = dft_reference_used(
        table["DFT_kappa_TOT_ave"], references, table["mp_id"]
    )
    return normalize_published(table)


def normalize_published(table: pd.DataFrame) -> pd.DataFrame:
    """Types of a published per-material κ table (parsed text or a read CSV), index mp_id.

    ``SRME_failed`` is the failure flag (SRME exactly 2 from the failure rules, PROTOCOL §8;
    a printed 2.0000 of an absurd κ is not a failure); a missing flag is derived from a NaN κ.
    """
    df = table.copy()
    if "mp_id" in df.columns:
        df = df.set_index("mp_id")
    for col in ("SRME", "SRE", "kappa_TOT_ave", "DFT_kappa_TOT_ave"):
        if col not in df.columns:
            raise PublishedFormatError(f"published table lacks column {col!r}")
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if "SRME_failed" in df.columns:
        df["SRME_failed"] = df["SRME_failed"].map(
            lambda v: str(v).strip().lower() in ("true", "1", "1.0")
        )
    else:
        df["SRME_failed"] = df["kappa_TOT_ave"].isna()
    if "dft_ref_used" not in df.columns:
        df["dft_ref_used"] = "unknown"
    return df


def read_mbd_table(text: str) -> pd.DataFrame:
    """The Matbench Discovery table (src/kappaflow/data/matbench_discovery.csv) from its
    text, checked: unique models, κ_SRME and κ_SRE in [0, 2]."""
    df = pd.read_csv(_stdio.StringIO(text))
    need = {"model", "kappa_SRME", "kappa_SRE", "protocol", "dft_reference", "source_path"}
    if not need <= set(df.columns):
        raise PublishedFormatError(f"leaderboard table lacks {sorted(need - set(df.columns))}")
    if df["model"].duplicated().any():
        raise PublishedFormatError(f"duplicate models: {df['model'][df['model'].duplicated()]}")
    for col in ("kappa_SRME", "kappa_SRE"):
        bad = df[(df[col] < 0) | (df[col] > KAPPA_ERROR_MAX)]
        if len(bad) or df[col].isna().any():
            raise PublishedFormatError(f"{col} outside [0, 2] or missing: {list(bad['model'])}")
    return df


# ----------------------------------------------------------------- fair ranking


def _sre(k_model: np.ndarray, k_dft: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """SRE per material; NaN κ or a failure -> 2 (PROTOCOL §6)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sre = np.abs(2.0 * (k_model - k_dft) / (k_model + k_dft))
    sre = np.where((k_model + k_dft) == 0, 0.0, sre)
    return np.where(failed | ~np.isfinite(k_model), KAPPA_ERROR_MAX, sre)


def scored_materials(user: Mapping[str, pd.DataFrame]) -> list[str]:
    """Materials every user model was scored on (finite DFT κ), in the first model's order."""
    sets = []
    order: list[str] = []
    for df in user.values():
        d = df.set_index("mp_id") if "mp_id" in df.columns else df
        if "DFT_kappa_TOT_ave" not in d.columns:  # nothing scored (no DFT reference)
            sets.append(set())
            continue
        ok = d.index[pd.to_numeric(d["DFT_kappa_TOT_ave"], errors="coerce").notna()]
        sets.append(set(ok))
        order = order or list(ok)
    common = set.intersection(*sets) if sets else set()
    return [m for m in order if m in common]


def _user_row(name: str, df: pd.DataFrame, materials: list[str], reference: str) -> dict:
    d = (df.set_index("mp_id") if "mp_id" in df.columns else df).reindex(materials)
    for col in ("SRME", "SRE", "failed"):
        if col not in d.columns:
            d[col] = pd.Series(dtype=float)
    flags = [] if materials else ["no material scored (no DFT reference)"]
    srme = pd.to_numeric(d["SRME"], errors="coerce")
    if srme.isna().any():
        flags.append(f"SRME not computed for {int(srme.isna().sum())} material(s)")
    if "protocol_deviations" in d.columns and d["protocol_deviations"].fillna("").ne("").any():
        flags.append("protocol deviations: " + ";".join(sorted(
            {x for v in d["protocol_deviations"].fillna("") for x in str(v).split(";") if x}
        )))  # fmt: skip
    return {
        "model": name,
        "origin": "yours",
        "source": "kappaflow (this run)",
        "kappa_SRME": float(srme.mean(skipna=False)) if len(d) else np.nan,
        "kappa_SRE": float(pd.to_numeric(d["SRE"], errors="coerce").mean()) if len(d) else np.nan,
        "n_materials": len(d),
        "n_failed": int(d["failed"].astype(bool).sum()),
        "dft_reference": reference,
        "sre_reference": reference,
        "protocol": KSRME_PROTOCOL,
        "flags": "; ".join(flags),
        "yours": True,
    }


def _peer_row(
    name: str,
    peer: pd.DataFrame,
    materials: list[str],
    dft: pd.Series,
    reference: str,
    mbd_same: pd.Series | None,
) -> dict:
    p = peer.reindex(materials)
    absent = p["SRME"].isna()
    failed = p["SRME_failed"].fillna(True).astype(bool).to_numpy() | absent.to_numpy()
    srme = p["SRME"].fillna(KAPPA_ERROR_MAX).to_numpy(float)
    sre = _sre(p["kappa_TOT_ave"].to_numpy(float), dft.to_numpy(float), failed)
    refs = sorted(set(p["dft_ref_used"].dropna().astype(str)))
    used = refs[0] if len(refs) == 1 else "/".join(refs) or "unknown"
    flags = []
    if used != reference:
        flags.append(f"SRME scored vs {used} (not {reference}); SRE re-scored vs {reference}")
        if mbd_same is not None and len(materials) == len(peer):
            flags.append(
                f"{reference} SRME of the same model (Matbench Discovery, "
                f"{mbd_same['model']}): {mbd_same['kappa_SRME']:.4f}"
            )
    if absent.any():
        flags.append(f"{int(absent.sum())} material(s) absent from the table, scored 2")
    entry = next((e for e in PUBLISHED_FILES if e.kind == "kappa" and e.model == name), None)
    return {
        "model": name,
        "origin": "k_SRME",
        "source": entry.source if entry else "published",
        "kappa_SRME": float(srme.mean()) if len(materials) else np.nan,
        "kappa_SRE": float(sre.mean()) if len(materials) else np.nan,
        "n_materials": len(materials),
        "n_failed": int(failed.sum()),
        "dft_reference": used,
        "sre_reference": reference,
        "protocol": KSRME_PROTOCOL,
        "flags": "; ".join(flags),
        "yours": False,
    }


def _mbd_row(row: pd.Series, n_all: int, same: bool, reference: str) -> dict:
    flags = [f"protocol {row['protocol']} (Matbench Discovery), not k_SRME"]
    if not same:
        flags.append(f"aggregate over all {n_all} materials, not yours: not ranked")
    if row["dft_reference"] != reference:
        flags.append(f"scored vs {row['dft_reference']} (not {reference})")
    n_failed = row.get("failure_rate", np.nan)
    return {
        "model": row["model"],
        "origin": "matbench-discovery",
        "source": f"matbench-discovery@{str(row['source_commit'])[:8]}:{row['source_path']}",
        "kappa_SRME": float(row["kappa_SRME"]),
        "kappa_SRE": float(row["kappa_SRE"]),
        "n_materials": n_all,
        "n_failed": round(float(n_failed) * n_all) if pd.notna(n_failed) else pd.NA,
        "dft_reference": row["dft_reference"],
        "sre_reference": row["dft_reference"],
        "protocol": row["protocol"],
        "flags": "; ".join(flags),
        "yours": False,
    }


def leaderboard(
    user: Mapping[str, pd.DataFrame],
    peers: Mapping[str, pd.DataFrame],
    mbd: pd.DataFrame | None = None,
    reference: str = "noNAC",
    n_reference_materials: int = 103,
) -> pd.DataFrame:
    """The user's models among the published ones, ranked by κ_SRME on the same materials.

    ``user``: model -> per-material metrics (mp_id, SRE, SRME, failed, kappa_TOT_ave,
    DFT_kappa_TOT_ave; results/<model>/metrics.csv), scored against ``reference``.
    ``peers``: published per-material tables (:func:`normalize_published`). ``mbd``: the
    Matbench Discovery aggregates (:func:`read_mbd_table`), ranked only when the user scored
    ``n_reference_materials`` materials (the 103 they were averaged over).

    Peers: κ_SRME = mean published SRME over the user's materials (a material absent from the
    table scores 2); κ_SRE re-scored from the peer's κ against the user's DFT κ. Ties and
    missing values rank last; unranked rows (rank <NA>) follow, sorted by κ_SRME.
    """
    if not user:
        raise ValueError("no user models to rank")
    materials = scored_materials(user)
    first = next(iter(user.values()))
    first = first.set_index("mp_id") if "mp_id" in first.columns else first
    dft = (
        pd.to_numeric(first.loc[materials, "DFT_kappa_TOT_ave"], errors="coerce")
        if materials
        else pd.Series(dtype=float)
    )
    rows = [_user_row(name, df, materials, reference) for name, df in user.items()]
    mbd_by_model = {} if mbd is None else {r["model"]: r for _, r in mbd.iterrows()}
    for name, peer in peers.items():
        same = mbd_by_model.get(KSRME_TO_MBD.get(name, ""))
        rows.append(_peer_row(name, peer, materials, dft, reference, same))
    all_materials = len(materials) == n_reference_materials
    if mbd is not None:
        rows += [_mbd_row(r, n_reference_materials, all_materials, reference)
                 for _, r in mbd.iterrows()]  # fmt: skip
    df = pd.DataFrame(rows)
    ranked = ~df["flags"].str.contains("not ranked", regex=False) & df["kappa_SRME"].notna()
    df["rank"] = pd.array([pd.NA] * len(df), dtype="Int64")
    order = df[ranked].sort_values(["kappa_SRME", "kappa_SRE"], kind="stable").index
    df.loc[order, "rank"] = np.arange(1, len(order) + 1)
    df["_unranked"] = ~ranked
    df = df.sort_values(["_unranked", "rank", "kappa_SRME"], kind="stable", na_position="last")
    return df.drop(columns="_unranked")[LEADERBOARD_COLUMNS].reset_index(drop=True)


def _fmt(value: object, digits: int = 4) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def leaderboard_markdown(board: pd.DataFrame, materials_note: str = "") -> str:
    """The leaderboard as a Markdown table; the user's rows in bold and marked "yours"."""
    n = int(board.loc[board["yours"], "n_materials"].max()) if board["yours"].any() else 0
    lines = [
        "# κ_SRME leaderboard (300 K)",
        "",
        f"Ranked by κ_SRME on the same {n} material(s) as your run"
        + (f" ({materials_note})" if materials_note else "")
        + ": published per-material SRME averaged over your materials; published SRE "
        "re-scored from the published κ against your DFT reference. `dft_reference` is the "
        "DFT file each κ_SRME was scored against. Lower is better; failures score 2.",
        "",
        "| rank | model | κ_SRME | κ_SRE | n | failed | dft_reference | protocol | flags | source |",
        "|---:|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for _, r in board.iterrows():
        model = f"**{r['model']}** (yours)" if r["yours"] else str(r["model"])
        srme = f"**{_fmt(r['kappa_SRME'])}**" if r["yours"] else _fmt(r["kappa_SRME"])
        cells = [_fmt(r["rank"]), model, srme, _fmt(r["kappa_SRE"]), _fmt(r["n_materials"]),
                 _fmt(r["n_failed"]), str(r["dft_reference"]), str(r["protocol"]),
                 str(r["flags"]).replace("|", "/") or "", str(r["source"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Sources: MPA2suite/k_SRME `models/*/metrics.txt` at {KSRME_COMMIT[:7]} (per-material); "
        f"Matbench Discovery `models/*/*.yml` at {MBD_COMMIT[:8]} (aggregates over 103 "
        "materials, protocol phonondb-v1; ranked only when your run scored all 103). "
        "Cite: B. Póta, P. Ahlawat, G. Csányi, M. Simoncelli, arXiv:2408.00755.",
    ]
    return "\n".join(lines) + "\n"
