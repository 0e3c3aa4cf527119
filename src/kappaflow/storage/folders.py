"""Output folders and their lock: ``--out`` checked as a writable folder, and held by one
run at a time with ``flock`` (part of :mod:`kappaflow.storage`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class OutputFolderError(ValueError):
    """An output path that cannot be written (a file where a folder is needed, ...)."""


class FolderLockedError(RuntimeError):
    """Another run holds the folder's lock (the message names it)."""


class LockingUnsupportedError(RuntimeError):
    """The folder's filesystem refuses file locks (ENOLCK: NFS without locking, ...)."""


def _writable(folder: Path, what: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{what} {folder} is not writable")


def output_folder(path: str | os.PathLike, what: str = "--out", create: bool = True) -> Path:
    """``path`` as a folder to write into, created if missing (unless ``create`` is False:
    then only checked); a clear OutputFolderError when it is a file, lies under a file, or
    is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{what} {path} is a file, not a folder; give a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputFolderError(f"{what} {path}: cannot create the folder, {existing} is a file")
    if not create:
        _writable(existing, what if existing == path else f"{what} {path}: the folder")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(
            f"{what} {path}: cannot create the folder ({exc.strerror})"
        ) from exc
    _writable(path, what)
    return path


def output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a file to write: not a folder, its folder creatable and writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputFolderError(f"{what} {path} is a folder; give a file name")
    output_folder(path.parent, f"{what} {path}: the folder", create=False)
    return path


LOCK_NAME = ".kappaflow.lock"


def _read_holder(fd: int, tries: int = 20) -> dict[str, Any] | None:
    for _ in range(tries):  # the holder writes its JSON right after taking the lock
        try:
            text = os.pread(fd, 65536, 0).decode("utf-8", errors="replace")
            return json.loads(text)
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a process that has not yet said who it is"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, started "
        f"{holder.get('started')}: {holder.get('command')}"
    )


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike, command: str | None = None, required: bool = True
) -> Iterator[dict[str, Any] | None]:
    """Hold an exclusive lock on ``folder`` (the file ``folder/.kappaflow.lock``) while the
    block runs; yields the holder record written into it (pid, host, command, start time).

    ``flock`` locks belong to the open file, so the kernel releases them when the holder
    exits in any way (kill -9 included): a stale lock cannot exist. A second process gets
    :class:`FolderLockedError` naming the holder. On NFS, Linux (>= 2.6.12) emulates flock
    with POSIX byte-range locks, which work across hosts when the server supports locking
    (NFSv4, or NFSv3 with lockd); where locking is unsupported flock fails with ENOLCK and
    :class:`LockingUnsupportedError` is raised, unless ``required`` is False (then the
    block runs unlocked and None is yielded). The lock file is removed on release; a
    waiter that locked the removed file sees that and tries again.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputFolderError(
                f"cannot create the lock file {path} ({exc.strerror}): is {folder} writable?"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLockedError(
                f"{folder} is in use by another kappaflow run ({describe_holder(holder)}). "
                "Two runs into one folder would mix their files; wait for that run to end "
                "or stop it (its lock goes with the process), or use another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if required:
                raise LockingUnsupportedError(
                    f"cannot lock {folder}: its filesystem does not support file locks "
                    f"({errno.errorcode.get(exc.errno, exc.errno)}; e.g. NFS without lockd or "
                    "NFSv4 locking). kappaflow does not run unlocked, because two runs into "
                    "one folder would mix their results silently. Use an --out on a local "
                    "disk or a filesystem with locking, or, if you are sure that no other "
                    "run uses this folder, set KAPPAFLOW_NO_LOCK=1",
                ) from exc
            print(f"[kappaflow] warning: {folder} is not locked ({exc.strerror})", file=sys.stderr)
            yield None
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a lock file its previous holder had just removed
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    previous = _read_holder(fd, tries=1) if os.fstat(fd).st_size else None
    if previous and previous.get("host") != holder["host"]:
        print(
            f"[kappaflow] warning: {path} names an earlier run on another host that did not "
            f"remove it ({describe_holder(previous)}). It was killed, or it is still running "
            "and this filesystem does not share locks between hosts (NFS mounted with nolock "
            "or local_lock): then stop one of the two runs",
            file=sys.stderr,
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        yield holder
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still locked: a waiter that opened it retries on a new file
        os.close(fd)
