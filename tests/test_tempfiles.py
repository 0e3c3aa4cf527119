"""Temporary files of atomic writes (kappaflow.storage.atomic_path): the leftovers of a
killed writer are removed, the files of a live writer never are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kappaflow import storage

REPO = Path(__file__).resolve().parents[1]

#: a writer that enters atomic_path, writes half a file, says where, then waits on stdin
#: (a live writer: finishes when told) or kills itself with SIGKILL (a dead one)
WRITER = """
import os, signal, sys
from kappaflow import storage
dest, mode = sys.argv[1], sys.argv[2]
with storage.atomic_path(dest) as tmp:
    tmp.write_text("half")
    print(tmp, flush=True)
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()
    tmp.write_text("complete")
"""


def writer(dest: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dest), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.name, "the writer did not start"
    return proc, tmp


def test_temp_name_names_the_writer(tmp_path):
    dest = tmp_path / "kappa.hdf5"
    with storage.atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".kappa.hdf5.{storage.writer_token()}~")
        assert tmp.name.endswith(".tmp.hdf5")
        assert storage.temp_writer_alive(tmp) is True  # this process
        tmp.write_text("x")
        assert storage.remove_dead_temp_files(tmp_path) == []
        assert tmp.exists()
    assert dest.read_text() == "x"
    assert not tmp.exists()


def test_dead_writer_removed_live_writer_kept(tmp_path):
    live, live_tmp = writer(tmp_path / "kappa.json", "wait")
    # the second writer's own atomic_path cleans the folder first: the live file stays
    dead, dead_tmp = writer(tmp_path / "fc3.hdf5", "die")
    assert dead.wait(timeout=60) == -signal.SIGKILL
    try:
        assert dead_tmp.exists() and live_tmp.exists()
        assert storage.temp_writer_alive(dead_tmp) is False
        assert storage.temp_writer_alive(live_tmp) is True
        assert storage.remove_dead_temp_files(tmp_path) == [dead_tmp]
        assert not dead_tmp.exists()
        assert live_tmp.read_text() == "half"
        live.stdin.write("\n")
        live.stdin.flush()
        assert live.wait(timeout=60) == 0
    finally:
        live.kill()
        live.wait()
    assert (tmp_path / "kappa.json").read_text() == "complete"
    assert not (tmp_path / "fc3.hdf5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kappa.json"]


def test_next_write_into_the_folder_removes_a_dead_writers_file(tmp_path):
    dead, dead_tmp = writer(tmp_path / "fc2.hdf5", "die")
    dead.wait(timeout=60)
    assert dead_tmp.exists()
    storage.write_text(tmp_path / "other.txt", "y")  # any atomic write into the folder
    assert not dead_tmp.exists()


def test_killed_but_unreaped_writer_counts_as_dead(tmp_path):
    """A zombie (killed, its parent has not waited for it yet) writes nothing any more."""
    proc, tmp = writer(tmp_path / "phonons.json", "wait")
    try:
        proc.send_signal(signal.SIGKILL)
        deadline = time.time() + 30
        while storage.temp_writer_alive(tmp) and time.time() < deadline:
            time.sleep(0.05)
        assert storage.temp_writer_alive(tmp) is False
        assert storage.remove_dead_temp_files(tmp_path) == [tmp]
    finally:
        proc.wait()


@pytest.mark.parametrize(
    "name",
    [
        ".kappa.hdf5.otherhost~4026531836~123~abcd1234.tmp.hdf5",  # another host
        ".kappa.hdf5.k2_x9abc.tmp.hdf5",  # named before writers were (mkstemp's 8 chars)
    ],
    ids=["other-host", "old-name"],
)
def test_unknown_writer_removed_only_when_old(tmp_path, name):
    path = tmp_path / name
    path.write_text("?")
    assert storage.temp_writer_alive(path) is None
    assert storage.remove_dead_temp_files(tmp_path) == []
    assert path.exists()
    old = time.time() - storage.STALE_TEMP_SECONDS - 60
    os.utime(path, (old, old))
    assert storage.remove_dead_temp_files(tmp_path) == [path]


def test_other_hidden_files_never_touched(tmp_path):
    old = time.time() - 10 * storage.STALE_TEMP_SECONDS
    names = [
        ".notes.tmp",  # not an atomic_path name
        ".kappa.hdf5.abcd1234.tmp.json",  # suffix does not repeat the destination's
        ".kappaflow.lock",
        "kappa.hdf5.abcd1234.tmp.hdf5",  # not hidden
    ]
    for name in names:
        (tmp_path / name).write_text("keep")
        os.utime(tmp_path / name, (old, old))
    assert storage.remove_dead_temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
