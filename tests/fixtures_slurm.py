"""A real Slurm cluster on localhost for the Slurm target's tests: munge with its own key and socket, slurmctld and
two slurmd nodes (n1, n2) on 127.0.0.1 with distinct ports, every state file in a temporary folder. The nodes are
in partition ``debug`` (the default) and in ``closed``, which is down: a job sent there waits (PartitionDown).

Debian's slurm-wlm (22.05) and munge provide the daemons (`make test` installs them, as root). The cluster uses
proctrack/linuxproc and no cgroups, so it runs inside a container; SLURM_CONF points the client commands at it.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import wait_until

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
CLOSED = "closed"  # the partition that is down


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free right now on 127.0.0.1."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def missing_programs() -> list[str]:
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in DAEMONS if shutil.which(p, path=paths) is None]


def slurm_conf(folder: Path, ports: list[int]) -> str:
    ctld_port, *node_ports = ports
    user = pwd.getpwuid(os.geteuid()).pw_name  # the daemons run as whoever runs the tests (root in CI)
    lines = [
        "ClusterName=fts", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={ctld_port}",
        f"SlurmUser={user}", f"SlurmdUser={user}", "AuthType=auth/munge", f"AuthInfo=socket={folder}/munge.sock",
        "CredType=cred/munge", f"StateSaveLocation={folder}/ctld", f"SlurmdSpoolDir={folder}/spool-%n",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd-%n.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SwitchType=switch/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill", "SlurmdParameters=config_overrides",
        # A dead slurmd is noticed within seconds (the fault test), and comes back by itself when restarted.
        "SlurmdTimeout=10", "ReturnToService=2", "KillWait=10", "InactiveLimit=0", "MinJobAge=300",
    ]
    for name, port in zip(NODES, node_ports):
        lines.append(f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname=localhost Port={port} "
                     f"CPUs={CPUS_PER_NODE} State=UNKNOWN")
    lines.append(f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP")
    # A partition that takes jobs but never starts them (State=DOWN): a run there waits with Slurm's PartitionDown.
    lines.append(f"PartitionName={CLOSED} Nodes={','.join(NODES)} Default=NO MaxTime=INFINITE State=DOWN")
    return "\n".join(lines) + "\n"


class LocalSlurm:
    """The running cluster: its slurm.conf, the environment for the client commands, and node faults."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"
        self.procs: dict[str, subprocess.Popen] = {}

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "ab")  # noqa: SIM115 - the daemon keeps it open
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> LocalSlurm:
        folder = self.folder
        for sub in ["ctld", *(f"spool-{n}" for n in NODES)]:
            (folder / sub).mkdir()
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.conf.write_text(slurm_conf(folder, free_ports(1 + len(NODES))), encoding="utf-8")
        self._daemon("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                                f"--socket={folder}/munge.sock", f"--pid-file={folder}/munged.pid",
                                f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"])
        wait_until(lambda: (folder / "munge.sock").exists(), 20, self.explain("munged to open its socket"))
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        wait_until(lambda: self.run("scontrol", "ping").returncode == 0 and "UP" in self.run(
            "scontrol", "ping").stdout, 30, self.explain("slurmctld to answer"))
        for name in NODES:
            self.start_node(name)
        return self

    def start_node(self, name: str) -> None:
        """Start (or restart) the slurmd of ``name`` and wait until the controller counts it idle."""
        self._daemon(f"slurmd-{name}", ["slurmd", "-D", "-N", name, "-f", str(self.conf)])
        wait_until(lambda: self.node_state(name) in ("idle", "mixed", "allocated"), 60,
                   self.explain(f"node {name} to be idle"))

    def node_state(self, name: str) -> str:
        out = self.run("sinfo", "-h", "-N", "-n", name, "-o", "%T").stdout.strip()
        return out.splitlines()[0].rstrip("*~#%$@^-") if out else ""

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(argv), check=False, env=self.env, capture_output=True, text=True, timeout=timeout)

    def explain(self, what: str):
        def message() -> str:
            logs = [f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                    for p in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.out"))]
            return what + "\n" + "\n".join(logs)
        return message

    def kill_node(self, name: str) -> list[int]:
        """The node ``name`` dies: its slurmd and every process of its jobs (their slurmstepd and the tasks) are
        killed at once, as a power loss would. Returns the pids killed."""
        killed = []
        proc = self.procs.pop(f"slurmd-{name}", None)
        if proc is not None:
            proc.kill()
            proc.wait()
            killed.append(proc.pid)
        for pid in _pids_of_node(name, str(self.conf)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        """Stop every daemon, nodes first, and the processes of any job still there."""
        for name in NODES:
            for pid in _pids_of_node(name, str(self.conf)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in [n for n in self.procs if n.startswith("slurmd")] + ["slurmctld", "munged"]:
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pids_of_node(node: str, conf: str) -> list[int]:
    """Processes of the jobs of ``node`` of this cluster: the tasks (their environment has SLURMD_NODENAME=node and
    this cluster's SLURM_CONF) and the slurmstepd above them."""
    want = {f"SLURMD_NODENAME={node}".encode(), f"SLURM_CONF={conf}".encode()}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if want <= environ:
            found.add(int(entry.name))
            try:
                if Path(f"/proc/{parent}/cmdline").read_bytes().startswith(b"slurmstepd"):
                    found.add(parent)
            except OSError:
                pass
    return sorted(found)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A controller and two nodes on localhost, started for the module's tests and stopped at its end. Skips only
    where it cannot run: not root (to install them) and the packages missing; as root, missing packages are an error
    (`make test` installs them)."""
    missing = missing_programs()
    if missing and os.geteuid() != 0:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing) and we are not root to install it: "
                    "apt-get install -y slurm-wlm munge")
    assert not missing, f"missing {', '.join(missing)}: run `make test-deps` (apt-get install -y slurm-wlm munge)"
    folder = Path(tmp_path_factory.mktemp("slurm"))
    cluster = LocalSlurm(folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
