"""Where the PhononDB-PBE reference data live, and which bytes they must have.

Resolution order (first hit wins), the same for the CLI and the workflow:

1. ``--reference-dir`` on the command line,
2. the ``KAPPAFLOW_REFERENCE_DIR`` environment variable,
3. the config key ``reference: {dir: ...}``,
4. ``resources/reference/``, which is filled by download (sha256-checked) on first use.

This module is pure: it names files, checksums and URLs and decides the order.
Reading, hashing and downloading is done by :mod:`kappaflow.storage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "KAPPAFLOW_REFERENCE_DIR"
DEFAULT_DIR = Path("resources/reference")
#: the published per-material tables of other models (kappaflow.peers): same order
PUBLISHED_ENV_VAR = "KAPPAFLOW_PUBLISHED_DIR"
PUBLISHED_DEFAULT_DIR = Path("resources/published")

#: MPA2suite/k_SRME, folder data/, commit 0269a94 (2025-02-06); PhononDB data CC BY 4.0.
COMMIT = "0269a946a1e4c53552b060a92b98df94e039fd80"
BASE_URL = f"https://raw.githubusercontent.com/MPA2suite/k_SRME/{COMMIT}/data/"

#: MPA2suite/gamma_SRME (PROTOCOL §7): the DFT γ at 300 K is printed in every model's
#: metrics_gamma.txt (the mode-resolved DFT files are not public).
GAMMA_SRME_COMMIT = "23e7100ac4e7eb06418390a6a946847013c507fb"
GAMMA_SRME_URL = f"https://raw.githubusercontent.com/MPA2suite/gamma_SRME/{GAMMA_SRME_COMMIT}/"


@dataclass(frozen=True)
class ReferenceFile:
    """One pinned reference file."""

    key: str
    filename: str
    sha256: str
    #: download location when the file is not in k_SRME's data/ folder
    source_url: str | None = None
    #: the file is derived from the downloaded text by this function of this module
    derive: str | None = None

    @property
    def url(self) -> str:
        return self.source_url or BASE_URL + self.filename


FILES: dict[str, ReferenceFile] = {
    f.key: f
    for f in (
        ReferenceFile(
            "structures",
            "phononDB-PBE-structures.extxyz",
            "63e012fdafc61702ab22cdbda7e9c0603f57f54c2e464666585a9159e0ce5b38",
        ),
        ReferenceFile(
            "kappa_noNAC",
            "kappas_phononDB_PBE_noNAC.json.gz",
            "442f651d3272e8a104baab3e53241220bf66afc90559f593fb3d7697874506ea",
        ),
        ReferenceFile(
            "kappa_NAC",
            "kappas_phononDB_PBE_NAC.json.gz",
            "8de90b66430844e989cc02a2dad47ed1935270e7b966ce9c82f667a51964b765",
        ),
        ReferenceFile(
            "mp_id_map",
            "mp_id-phonondb_id.txt",
            "f4a5a4e464d557760bb37eaea9bd8a687acc12bfd44bd375410cd7a4600515bb",
        ),
        ReferenceFile(
            "gruneisen_dft_gamma",
            "gruneisen_dft_gamma.csv",
            "3cfe1f2cb6803379669dd6d451d22e918c5d9746f54452a0647204b9e094f6dd",
            source_url=GAMMA_SRME_URL + "models/SevenNet-0/metrics_gamma.txt",
            derive="dft_gamma_csv_from_metrics",
        ),
    )
}

KAPPA_KEYS = {"noNAC": "kappa_noNAC", "NAC": "kappa_NAC"}


class ReferenceNotFoundError(FileNotFoundError):
    """No reference data where the resolution order looked, and no way to download."""


class ChecksumError(ValueError):
    """A reference file's bytes differ from the pinned sha256."""


@dataclass(frozen=True)
class ResolvedDir:
    """The directory chosen and why (recorded in provenance)."""

    path: Path
    source: str  # "cli", "env", "config" or "default"

    @property
    def downloadable(self) -> bool:
        """Only the default location is filled by download."""
        return self.source == "default"


def resolve_reference_dir(
    cli_dir: str | os.PathLike | None = None,
    config_dir: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    default: str | os.PathLike = DEFAULT_DIR,
) -> ResolvedDir:
    """Apply the documented order: CLI flag, environment, config key, default."""
    environ = os.environ if environ is None else environ
    if cli_dir:
        return ResolvedDir(Path(cli_dir), "cli")
    if environ.get(ENV_VAR):
        return ResolvedDir(Path(environ[ENV_VAR]), "env")
    if config_dir:
        return ResolvedDir(Path(config_dir), "config")
    return ResolvedDir(Path(default), "default")


def resolve_published_dir(
    config_dir: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> ResolvedDir:
    """Where the published peers' tables are: ``$KAPPAFLOW_PUBLISHED_DIR``, the config key
    ``reference.published``, else ``resources/published/`` (filled by download)."""
    return resolve_reference_dir(
        None,
        config_dir,
        {ENV_VAR: (os.environ if environ is None else environ).get(PUBLISHED_ENV_VAR, "")},
        PUBLISHED_DEFAULT_DIR,
    )


def not_found_message(resolved: ResolvedDir, filename: str, reason: str) -> str:
    """The error text when a reference file is missing: says exactly what to set."""
    where = {
        "cli": "given by --reference-dir",
        "env": f"given by ${ENV_VAR}",
        "config": "given by the config key reference.dir",
        "default": "the default location",
    }[resolved.source]
    return (
        f"reference file {filename!r} not found in {resolved.path} ({where}); {reason}.\n"
        "Point kappaflow at a directory holding the PhononDB-PBE reference files with one of:\n"
        "  --reference-dir DIR            (command line, highest priority)\n"
        f"  export {ENV_VAR}=DIR  (environment)\n"
        "  reference: {dir: DIR}          (config.yaml key reference.dir)\n"
        f"or let kappaflow download them into {DEFAULT_DIR}/ (needs network access to "
        f"{BASE_URL.split('/')[2]})."
    )


def dft_gamma_csv_from_metrics(text: str) -> str:
    """gruneisen_dft_gamma.csv (mp_id,desc,gamma_DFT_300K; CRLF; sorted by mp_id) from a
    gamma_SRME ``metrics_gamma.txt`` (a pandas-printed table with a DFT_gamma column).

    Numbers are written as Python/pandas write floats (1.5690 -> 1.569), so the result is
    byte-identical to the pinned file and its sha256 can be checked.
    """
    lines = text.splitlines()
    try:
        header_at = next(i for i, line in enumerate(lines) if "DFT_gamma" in line.split())
    except StopIteration:
        raise ValueError("no 'DFT_gamma' column header in the metrics_gamma.txt text") from None
    columns = lines[header_at].split()
    col = columns.index("DFT_gamma") + 1  # + the mp_id index column
    rows = []
    for line in lines[header_at + 1 :]:
        parts = line.split()
        if len(parts) != len(columns) + 1:
            continue  # the index-name line ("mp_id") and blank lines
        rows.append((parts[0], parts[1], repr(float(parts[col]))))
    if not rows:
        raise ValueError("no material rows in the metrics_gamma.txt text")
    rows.sort()
    out = ["mp_id,desc,gamma_DFT_300K", *(",".join(r) for r in rows)]
    return "\r\n".join(out) + "\r\n"
