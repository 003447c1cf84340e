"""A single-node Slurm cluster on this machine for the tests: munged, slurmctld and slurmd.

Everything lives in one temporary folder (configuration, munge key and socket, state, spool,
logs), so nothing in ``/etc`` is touched and a second cluster can run beside another one;
the daemons run in the foreground as children of the test process and are stopped by pid.
Clients (``sbatch``, ``squeue``, ``scontrol``) find the cluster through ``SLURM_CONF``.

The configuration is the smallest one that runs batch jobs in a container: processes are
tracked through their parent pids (``proctrack/linuxproc``), no task plugin or cgroups, no
accounting; ``select/cons_tres`` with ``CR_CPU`` so that two one-CPU jobs share the node; job
credentials that expire after 10 s instead of 120 s, since Slurm holds a requeued job until the
credential of its killed run has expired (https://slurm.schedmd.com/slurm.conf.html, AuthInfo).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LocalSlurm", "missing_daemons"]

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def missing_daemons() -> list[str]:
    """The programs a local cluster needs that are not installed (Debian: ``slurm-wlm``, ``munge``)."""
    return [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 4096


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` holds ``SLURM_CONF``."""

    def __init__(self, cpus: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: the munge socket path is limited
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.dir / "slurm.conf"
        self.socket = self.dir / "munge.socket"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        user = os.environ.get("USER") or "root"
        lines = {
            "ClusterName": "pneumoloc", "SlurmctldHost": self.host, "SlurmUser": user, "SlurmdUser": user,
            "SlurmctldPort": _free_port(), "SlurmdPort": _free_port(),
            "AuthType": "auth/munge", "CredType": "cred/munge", "AuthInfo": f"socket={self.socket},cred_expire=10",
            "StateSaveLocation": d / "state", "SlurmdSpoolDir": d / "spool",
            "SlurmctldPidFile": d / "slurmctld.pid", "SlurmdPidFile": d / "slurmd.pid",
            "SlurmctldLogFile": d / "slurmctld.log", "SlurmdLogFile": d / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none", "AccountingStorageType": "accounting_storage/none",
            "SchedulerType": "sched/backfill", "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_CPU",
            "ReturnToService": 2, "KillWait": 5, "MinJobAge": 300, "SchedulerParameters": "sched_interval=1",
            "NodeName": f"{self.host} CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            "PartitionName": "debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        }
        self.conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _start_munge(self) -> None:
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn("munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={key}",
                    f"--pid-file={self.dir / 'munged.pid'}", f"--log-file={self.dir / 'munged.log'}",
                    f"--seed-file={self.dir / 'munged.seed'}")
        self._wait(lambda: self.socket.exists(), "munged did not create its socket", "munged.log")

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.dir / f"{name}.out", "ab")
        self.procs.append(subprocess.Popen([_program(name), *args], stdout=log, stderr=log,
                                           env={**os.environ, **self.env}, start_new_session=True))
        log.close()

    def _wait(self, ready, message: str, log: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{message}; see {self.dir / log} and {self.dir}/*.out")
            time.sleep(0.2)

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env={**os.environ, **self.env},
                             capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    def start(self) -> "LocalSlurm":
        """Write the configuration, start the daemons, wait until the node accepts jobs."""
        self._write_config()
        self._start_munge()
        self._spawn("slurmctld", "-D", "-c", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(self._node_idle, "the Slurm node did not become idle", "slurmd.log", timeout=60.0)
        return self

    def stop(self) -> None:
        """Stop the daemons we started, by pid, newest first; keep the folder for post-mortems."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
