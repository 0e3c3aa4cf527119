"""A throw-away single-node SLURM for the `slurm` tests (Debian slurm-wlm + munge).

Everything lives in one directory: a fresh munge key, slurm.conf for this host on
loopback (no accounting, free ports), state and spool dirs, logs and pid files. The
daemons run as the current user; ``stop()`` signals exactly the processes it started
(by the pids their pid files recorded), never a system munged/slurmctld.

Clients (sbatch, squeue) find this cluster through ``SLURM_CONF``, which ``env()``
returns. Inside a job the plugin's jobstep strips every ``SLURM_*`` variable but a few
before its nested ``srun`` (real clusters keep slurm.conf at the default path or run
configless), so ``env()`` also puts a one-line ``srun`` shim first on PATH that sets
``SLURM_CONF`` again. Nothing outside ``root`` is written.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

DAEMONS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scancel",
    "scontrol",
    "srun",
)


class SlurmUnavailable(RuntimeError):
    """SLURM cannot start here (missing binaries, no permission, daemon died): skip."""


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> dict[str, str]:
    """This host's CPUs/memory as slurmd reports them (``slurmd -C``)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    return fields


class LocalSlurm:
    def __init__(self, root: Path, cpus: int | None = None, mem_mb: int = 8000):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.mem_mb = mem_mb
        self.pids: dict[str, int] = {}
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"

    # ---------------------------------------------------------------- config
    def write_config(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        shim_dir = r / "bin"
        shim_dir.mkdir(exist_ok=True)
        shim = shim_dir / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        shim.chmod(0o755)
        node = _node_line()
        cpus = self.cpus or int(node["CPUs"])
        user = getpass.getuser()
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=kappaflowci",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.socket}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    # squeue-based status needs finished jobs to stay visible a while
                    "MinJobAge=600",
                    # time-limit kills: SIGTERM at the limit, SIGKILL 5 s later
                    "KillWait=5",
                    "OverTimeLimit=0",
                    "ReturnToService=2",
                    "SlurmdTimeout=60",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} "
                    f"RealMemory={self.mem_mb} State=UNKNOWN",
                    f"PartitionName=ci Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    # --------------------------------------------------------------- daemons
    def _start(self, name: str, argv: list[str], pidfile: Path) -> None:
        proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{name} failed to start: {proc.stderr.strip() or proc.stdout}")
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                self.pids[name] = int(pidfile.read_text().split()[0])
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"{name} wrote no pid file {pidfile}")

    def start(self, timeout: float = 60.0) -> None:
        missing = missing_binaries()
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)}")
        self.write_config()
        r = self.root
        self._start(
            "munged",
            [
                "munged",
                "--force",
                f"--socket={self.socket}",
                f"--key-file={r / 'munge' / 'munge.key'}",
                f"--pid-file={r / 'run' / 'munged.pid'}",
                f"--log-file={r / 'log' / 'munged.log'}",
                f"--seed-file={r / 'munge' / 'munged.seed'}",
            ],
            r / "run" / "munged.pid",
        )
        self._start(
            "slurmctld", ["slurmctld", "-f", str(self.conf), "-i"], r / "run" / "slurmctld.pid"
        )
        self._start(
            "slurmd", ["slurmd", "-f", str(self.conf), "-N", self.node], r / "run" / "slurmd.pid"
        )
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True
            )
            state = out.stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"node {self.node} not idle after {timeout:.0f} s (sinfo: {state!r})"
        )

    def stop(self) -> None:
        """SIGTERM the daemons this object started (reverse order), then SIGKILL leftovers."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.pids.pop(name)
        deadline = time.time() + 15
        while self.pids and time.time() < deadline:
            for name, pid in list(self.pids.items()):
                if not _alive(pid):
                    self.pids.pop(name)
            time.sleep(0.2)
        for pid in self.pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pids.clear()

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` fields of one job (kept MinJobAge=600 s after it ends)."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", str(job_id)],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)

    def logs(self) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*.log")):
            parts.append(f"==> {f.name} <==\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def deep_merge(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base``: nested dicts merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merged_profile(user: Path, overlay: Path, dest: Path) -> Path:
    """Write user profile + overlay as one profile folder ``dest`` (config.v8+.yaml)."""
    merged = deep_merge(yaml.safe_load(user.read_text()), yaml.safe_load(overlay.read_text()))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.v8+.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return dest
