"""Reference data: resolution order, pinned checksums, download, clear errors."""

from __future__ import annotations

import shutil

import pytest

from kappaflow import reference as ref
from kappaflow import storage


def test_resolution_order(tmp_path):
    env = {ref.ENV_VAR: "/from/env"}
    assert ref.resolve_reference_dir("/cli", "/cfg", env).source == "cli"
    assert ref.resolve_reference_dir(None, "/cfg", env).path.as_posix() == "/from/env"
    assert ref.resolve_reference_dir(None, "/cfg", {}).source == "config"
    r = ref.resolve_reference_dir(None, None, {})
    assert (r.source, r.path.as_posix(), r.downloadable) == ("default", "resources/reference", True)


def test_shared_files_match_pins(reference_dir):
    resolved = ref.ResolvedDir(reference_dir, "env")
    for key, entry in ref.FILES.items():
        assert storage.reference_file(resolved, key).name == entry.filename


def test_missing_file_error_names_every_option(tmp_path):
    resolved = ref.ResolvedDir(tmp_path, "cli")
    with pytest.raises(ref.ReferenceNotFoundError) as err:
        storage.reference_file(resolved, "structures")
    msg = str(err.value)
    for hint in (
        "--reference-dir",
        ref.ENV_VAR,
        "reference: {dir: DIR}",
        "resources/reference",
        "phononDB-PBE-structures.extxyz",
    ):
        assert hint in msg


def test_modified_file_is_refused(tmp_path, reference_dir):
    bad = tmp_path / "mp_id-phonondb_id.txt"
    shutil.copy(reference_dir / "mp_id-phonondb_id.txt", bad)
    with bad.open("a") as fh:
        fh.write("XX 225 mp-0\n")
    with pytest.raises(ref.ChecksumError, match="refusing"):
        storage.reference_file(ref.ResolvedDir(tmp_path, "cli"), "mp_id_map")


def test_download_verifies_checksum(tmp_path, reference_dir, monkeypatch):
    """The default location is filled by download; a wrong checksum leaves nothing behind."""
    src = reference_dir / "mp_id-phonondb_id.txt"
    monkeypatch.setattr(ref, "BASE_URL", src.parent.as_uri() + "/")
    dest = tmp_path / "resources" / "reference"
    path = storage.reference_file(ref.ResolvedDir(dest, "default"), "mp_id_map")
    assert path.read_bytes() == src.read_bytes()
    with pytest.raises(ref.ChecksumError):
        storage.download(src.as_uri(), tmp_path / "x.txt", "0" * 64)
    assert not (tmp_path / "x.txt").exists()
    assert not list(tmp_path.glob(".x.txt*"))


def test_offline_default_location_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setattr(ref, "BASE_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(ref.ReferenceNotFoundError, match="download failed") as err:
        storage.reference_file(ref.ResolvedDir(tmp_path, "default"), "structures")
    assert ref.ENV_VAR in str(err.value)


def test_cli_fetch_reference_and_materials(reference_dir, capsys):
    from kappaflow.cli import main

    assert main(["fetch-reference", "--reference-dir", str(reference_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("=")[0] for line in lines] == list(ref.FILES)
    assert (
        main(["materials", "--reference-dir", str(reference_dir), "--select", "wz,mp-22862"]) == 0
    )
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 34
    assert "mp-22862\tNaCl-rs\tfc2=4x4x4\tfc3=2x2x2\tmesh=19x19x19" in rows
    assert main(["materials", "--reference-dir", str(reference_dir), "--select", "hcp"]) == 2
    assert "hcp" in capsys.readouterr().err
