"""The --out folder lock of ``kappaflow kappa|gruneisen`` (kappaflow.storage.folder_lock):
a second run is refused naming the holder, kill -9 never leaves a stale lock, a filesystem
without locks is refused unless asked, and an --out that cannot be a folder is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.build import bulk
from ase.io import write

from kappaflow import storage

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}

HOLDER = """
import sys, time
from kappaflow import storage
with storage.folder_lock(sys.argv[1], "holder-command --out X"):
    print("locked", flush=True)
    time.sleep(600)
"""


def kappaflow(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kappaflow.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or ENV,
        cwd=cwd,
        timeout=900,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """EMT fcc Cu on 2x2x2 (fc2) and 3x3x3 (fc3) supercells (a CLI run of seconds)."""
    folder = tmp_path_factory.mktemp("tiny")
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.info = {
        "material_id": "Cu-fcc",
        "fc2_supercell": [2, 2, 2],
        "fc3_supercell": [3, 3, 3],  # 2x2x2 of a 1-atom fcc cell: fc3 = 0 (zero_fc3)
        "q_mesh": [4, 4, 4],
    }
    write(folder / "structures.extxyz", atoms, format="extxyz")
    return folder / "structures.extxyz"


def kappa_args(structures: Path, out: Path) -> list:
    return ["kappa", "--model", "emt", "--material", "Cu-fcc", "--structures", structures,
            "--out", out, "--threads", "1"]  # fmt: skip


def hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_in_process_names_the_holder(tmp_path):
    with storage.folder_lock(tmp_path, "first --out X") as holder:
        assert holder["pid"] == os.getpid()
        on_disk = json.loads((tmp_path / storage.LOCK_NAME).read_text())
        assert on_disk == holder
        # flock locks belong to the open file: a second open in this process conflicts too
        with pytest.raises(storage.FolderLockedError) as err:
            with storage.folder_lock(tmp_path, "second"):
                pass
        message = str(err.value)
        for part in (str(tmp_path), f"pid {os.getpid()}", socket.gethostname(), "first --out X"):
            assert part in message
    assert not (tmp_path / storage.LOCK_NAME).exists()  # removed on release
    with storage.folder_lock(tmp_path, "third"):  # free again
        pass


def test_lock_left_by_another_host_is_taken_with_a_warning(tmp_path, capsys):
    """A lock file that names a run on another host (killed there, or running on a
    filesystem whose locks are per host: NFS with nolock) is taken, with a warning."""
    left = {"pid": 4242, "host": "other-node", "command": "kappaflow kappa ...", "started": "x"}
    (tmp_path / storage.LOCK_NAME).write_text(json.dumps(left))
    with storage.folder_lock(tmp_path, "mine") as holder:
        assert holder["command"] == "mine"
    err = capsys.readouterr().err
    assert "pid 4242 on host other-node" in err and "nolock" in err


def test_second_run_refused_and_kill_9_leaves_no_stale_lock(tiny, tmp_path):
    out = tmp_path / "out"
    first = kappaflow(*kappa_args(tiny, out))
    assert first.returncode == 0, first.stderr
    holder = hold(out)
    try:
        refused = kappaflow(*kappa_args(tiny, out))
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        for part in (str(out), f"pid {holder.pid}", socket.gethostname(), "holder-command"):
            assert part in refused.stderr, refused.stderr
        assert "started 20" in refused.stderr  # the holder's start time
        assert refused.stdout == ""  # no κ printed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / storage.LOCK_NAME).exists()  # kill -9: the file stays, its lock does not
    after = kappaflow(*kappa_args(tiny, out))
    assert after.returncode == 0, after.stderr
    assert "up to date" in after.stderr
    assert after.stdout == first.stdout
    assert not (out / storage.LOCK_NAME).exists()


def test_concurrent_run_with_another_model_is_refused(tiny, tmp_path):
    """Two runs into one --out (the issue's case: different models): the second is refused
    while the first runs, and the first's κ is its own."""
    out = tmp_path / "out"
    slow = tmp_path / "slowemt.py"
    go = tmp_path / "go"
    slow.write_text(  # EMT that waits for the file "go": the first run holds the lock until then
        "import os, time\nfrom ase.calculators.emt import EMT\n\n\n"
        "class GatedEMT(EMT):\n"
        "    def calculate(self, *args, **kwargs):\n"
        "        while not os.path.exists(os.environ['GO']):\n"
        "            time.sleep(0.05)\n"
        "        super().calculate(*args, **kwargs)\n\n\n"
        "def make():\n    return GatedEMT()\n"
    )
    env = {**ENV, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}", "GO": str(go)}
    args = kappa_args(tiny, out)
    args[args.index("emt")] = "slowemt:make"
    a = subprocess.Popen(
        [sys.executable, "-m", "kappaflow.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if json.loads((out / storage.LOCK_NAME).read_text())["pid"] == a.pid:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        b = kappaflow(*kappa_args(tiny, out), "--mesh", 3, 3, 3)
        assert a.poll() is None  # still waiting for "go"
        assert b.returncode == 2, b.stderr
        assert f"pid {a.pid}" in b.stderr and "slowemt:make" in b.stderr
        go.write_text("")
        stdout, stderr = a.communicate(timeout=900)
    finally:
        a.kill()
        a.wait()
    assert a.returncode == 0, stderr
    fresh = kappaflow(*kappa_args(tiny, tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr
    assert stdout == fresh.stdout  # the same physics (EMT), its own κ, nothing mixed in
    assert storage.read_json(out / "kappa.json")["model"]["model"] == "slowemt:make"


FLOCK_UNSUPPORTED = """
import errno, fcntl, sys
def flock(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")
fcntl.flock = flock
from kappaflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_filesystem_without_locks_is_refused_unless_asked(tiny, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", FLOCK_UNSUPPORTED, *map(str, kappa_args(tiny, out))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for part in (f"cannot lock {out}", "ENOLCK", "KAPPAFLOW_NO_LOCK=1", "local disk"):
        assert part in proc.stderr, proc.stderr
    assert not (out / "relaxed.extxyz").exists()  # nothing ran
    env = {**ENV, "KAPPAFLOW_NO_LOCK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {out} is not locked" in proc.stderr
    assert proc.stdout.startswith("kappa_TOT_ave_300K=")


# ---------------------------------------------------------------- --out that cannot be


@pytest.mark.parametrize("command", ["kappa", "gruneisen"])
def test_out_that_is_a_file(tmp_path, command, tiny):
    target = tmp_path / "results.txt"
    target.write_text("my notes")
    args = kappa_args(tiny, target)
    args[0] = command
    proc = kappaflow(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"--out {target} is a file, not a folder" in proc.stderr, proc.stderr
    assert target.read_text() == "my notes"


def test_out_under_a_file(tmp_path, tiny):
    (tmp_path / "f").write_text("x")
    proc = kappaflow(*kappa_args(tiny, tmp_path / "f" / "sub"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"cannot create the folder, {tmp_path / 'f'} is a file" in proc.stderr, proc.stderr


def test_out_not_writable(tmp_path, tiny):
    # /sys refuses new entries even to root
    proc = kappaflow(*kappa_args(tiny, "/sys/kappaflow-out"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--out /sys/kappaflow-out: cannot create the folder" in proc.stderr, proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_read_only_folder(tmp_path, tiny):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = kappaflow(*kappa_args(tiny, ro))
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2
    assert f"--out {ro} is not writable" in proc.stderr, proc.stderr


def test_score_out_that_is_a_folder(tmp_path):
    proc = kappaflow(
        "score", "--predictions", "p.json.gz", "--reference", "r.json.gz", "--out", tmp_path
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"--out {tmp_path} is a folder; give a file name" in proc.stderr, proc.stderr
