"""Atomic writes: a temporary file in the destination folder, named after its writer
(host, pid namespace, pid), renamed onto the declared path only when complete; leftovers of
dead writers are removed (part of :mod:`kappaflow.storage`)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: a temporary file whose writer cannot be checked (another host or pid namespace, or
#: one named before writers were recorded) is removed only when it is older than this
STALE_TEMP_SECONDS = 24 * 3600
_NEW_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)~(?P<ns>\d+)~(?P<pid>\d+)~[a-z0-9_]{8}"
    r"(?P<suffix>\.tmp.*)$"
)
_OLD_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.tmp.*)$")


def _host_token() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def _pid_namespace() -> str:
    """The inode of this process's pid namespace (containers on one host differ), or 0."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def writer_token() -> str:
    """``host~pidns~pid``: who writes a temporary file (part of its name)."""
    return f"{_host_token()}~{_pid_namespace()}~{os.getpid()}"


def _temp_suffix(name: str) -> str:
    return ".tmp" + "".join(Path(name).suffixes)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # a zombie has finished: it writes nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def temp_writer_alive(path: str | os.PathLike) -> bool | None:
    """Whether the process that writes temporary file ``path`` is alive: True, False, or
    None when that cannot be told here (another host or pid namespace, an old name)."""
    m = _NEW_TEMP.match(Path(path).name)
    if m is None or m["host"] != _host_token() or m["ns"] != _pid_namespace():
        return None
    return _process_alive(int(m["pid"]))


def remove_dead_temp_files(
    folder: str | os.PathLike, max_age: float = STALE_TEMP_SECONDS
) -> list[Path]:
    """Remove the hidden temporary files (``.NAME.<writer>~XXXXXXXX.tmp.EXT``) that a killed
    atomic write left in ``folder``; returns them.

    A file whose writer is alive is never touched. Its writer is named in the file name
    (host, pid namespace, pid): on this host its pid is checked; a file of another host or
    container, or one named by kappaflow before writers were named, is removed only when
    older than ``max_age`` (a day: a single write never takes that long). Only names that
    atomic_path makes are considered (the suffix repeats the destination's suffixes).
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(".") or ".tmp" not in entry.name:
            continue
        m = _NEW_TEMP.match(entry.name) or _OLD_TEMP.match(entry.name)
        if m is None or m["suffix"] != _temp_suffix(m["name"]):
            continue
        alive = temp_writer_alive(entry.path)
        try:
            if alive is None:
                alive = now - entry.stat(follow_symlinks=False).st_mtime < max_age
            if not alive and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # removed meanwhile (its writer renamed it, or a cleaner)
            continue
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    The temporary name carries the writer (:func:`writer_token`), so the leftovers of a
    killed writer are recognised and removed (:func:`remove_dead_temp_files`, run here on
    the destination folder before every write) while a live writer's file is kept."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temp_files(dest.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.{writer_token()}~", suffix=_temp_suffix(dest.name), dir=dest.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
