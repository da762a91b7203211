"""A real Ray cluster on this host for tests and bench/targets.py: a head and a second node, each with one CPU and
its own free ports, started with `ray start` and ended by killing its own processes (never `ray stop`, which would
end every Ray of this host)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
SPARE = "spare"  # a custom resource only the second node has: a target asking for it runs there


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ports() -> list[str]:
    """Ports of one node's services, each free, so two nodes of this host (and other clusters) never collide."""
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [arg for name, port in zip(names, free_ports(len(names))) for arg in (name, str(port))]


class LocalRay:
    """A Ray head and one more node on this host, each with one CPU (the second also with one ``SPARE``);
    ``kill_worker`` ends the second node's whole process tree (the node dies, with whatever ran on it),
    ``start_worker`` brings a node back."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 107
        self.port, self.dashboard, self.client = free_ports(3)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.worker_manager_port: str | None = None

    def _ray(self, *args: str, node: list[str]) -> None:
        """`ray start ...`, tried up to three times: under a heavy load a node can miss Ray's fixed 30 s start-up
        window; what a failed try left of the node (``node``: marks of its processes) is killed first."""
        for _attempt in range(3):
            done = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=240)
            if done.returncode == 0:
                return
            _kill_trees(node)
        raise AssertionError(f"ray {args[0]} failed three times; last output:\n{done.stdout}{done.stderr}")

    def start(self) -> "LocalRay":
        self._ray("start", "--head", "--num-cpus", "1", "--port", str(self.port), "--dashboard-host", "127.0.0.1",
                  "--dashboard-port", str(self.dashboard), "--ray-client-server-port", str(self.client),
                  "--include-dashboard", "true", "--temp-dir", self.temp, "--disable-usage-stats", *_node_ports(),
                  node=[self.temp, f":{self.port}"])
        self.start_worker()
        return self

    def start_worker(self) -> None:
        ports = _node_ports()
        self.worker_manager_port = ports[1]
        self._ray("start", "--address", f"127.0.0.1:{self.port}", "--num-cpus", "1", "--disable-usage-stats", *ports,
                  "--resources", json.dumps({SPARE: 1}),
                  node=[f"--node_manager_port={self.worker_manager_port}"])

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def alive_nodes(self) -> list:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.address) if n.state == "ALIVE"]

    def kill_worker(self) -> None:
        _kill_trees([f"--node_manager_port={self.worker_manager_port}"])

    def stop(self) -> None:
        """Kill this cluster's processes (by what their command lines name: its folder and its GCS port) and
        theirs; never `ray stop`, which would end every Ray of this host."""
        _kill_trees([self.temp, f":{self.port}"])
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill_trees(marks: list[str]) -> None:
    """SIGKILL every process whose command line holds one of ``marks``, and all their descendants."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or [])
                                                                  for m in marks)]
    tree = {p.pid: p for root in roots for p in [root, *_descendants(root)]}
    for proc in tree.values():
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(tree.values()), timeout=10)


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
