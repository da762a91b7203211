"""What a compute target is: where a job runs when not as a process of this machine's queue.

The queue (core.jobs.remote) launches through a ``Target``: it submits a ``Launch`` (run
``python -m <module> --run-dir <run_dir>`` on ``nodes`` machines with ``procs_per_node`` processes each), polls
``state`` and maps the cluster's ``RemoteState`` onto the job row, shows ``logs`` and calls ``stop`` on cancel.
Each kind (local, ray, slurm) is one small class; none schedules anything itself: the cluster does.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.errors import InvalidInput

REMOTE_STATES = ("pending", "running", "succeeded", "failed", "canceled", "unknown")
# The one sentence a multi-host launch on SQLite is refused with (README and tests quote it).
SQLITE_REFUSAL = ("A {kind} target runs on other machines: they need the workspace on a filesystem every node mounts "
                  "and a database every node reaches (PostgreSQL). SQLite works only when every process is on one "
                  "host.")


@dataclass
class Offer:
    """What a target offers now."""

    reachable: bool
    nodes: int = 0
    cpus: int = 0
    gpus: int = 0
    reason: str = ""  # why it is not reachable, in words a user can act on

    def describe(self) -> str:
        if not self.reachable:
            return f"unreachable: {self.reason}"
        return f"{self.nodes} node(s), {self.cpus} CPU(s), {self.gpus} GPU(s)"


@dataclass
class RemoteState:
    """A cluster job's state, from the cluster."""

    state: str  # one of REMOTE_STATES
    reason: str = ""  # the cluster's own reason (Slurm: "Resources", "Priority"; Ray: its message)
    native: str = ""  # the cluster's state name (PENDING, RUNNING, ...)


@dataclass
class Launch:
    """What to run, decided by the queue from the job row: ``python -m <module> --run-dir <run_dir>`` on every
    rank (through torchrun when there is more than one)."""

    job_id: int
    run_dir: Path
    module: str
    nodes: int = 1
    procs_per_node: int = 1
    env: dict[str, str] = field(default_factory=dict)  # DATABASE_URL, FINETUNE_STUDIO_* to pass to every rank

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


class Target(ABC):
    """One compute target, built from its stored settings."""

    kind: ClassVar[str]  # "local" | "ray" | "slurm"
    multi_host: ClassVar[bool]  # True: needs a database every node reaches (not SQLite)

    def __init__(self, settings: dict):
        self.settings = self.check_settings(settings)

    @classmethod
    @abstractmethod
    def check_settings(cls, settings: dict) -> dict:
        """The settings validated and normalised; InvalidInput with a clear message when they are not."""

    @abstractmethod
    def offer(self) -> Offer:
        """What the target offers now (never raises: an unreachable target says why)."""

    @abstractmethod
    def submit(self, launch: Launch) -> str:
        """Hand the launch to the cluster; returns the cluster's job id."""

    @abstractmethod
    def state(self, external_id: str) -> RemoteState:
        """The job's state as the cluster sees it."""

    @abstractmethod
    def logs(self, external_id: str, tail: int = 200) -> str:
        """The last ``tail`` lines of what the cluster logged for the job."""

    @abstractmethod
    def stop(self, external_id: str) -> None:
        """Cancel the job (Ray stop_job, scancel); returns at once."""

    def needs_shared_database(self) -> bool:
        """True when ranks may run on other hosts, so SQLite will not do (``same_host: true`` says they do not)."""
        return self.multi_host and not self.settings.get("same_host", False)


LOG_ENV = "FINETUNE_STUDIO_JOB_LOG"  # Launch.env key: the run folder's log file every rank appends to
GRACE_ENV = "FINETUNE_STUDIO_CANCEL_GRACE"  # Launch.env key: seconds a cancel lets the ranks finish their step


def log_file(launch: Launch) -> Path:
    """The run folder's log that the ranks' output goes to (train.log for training, job.log otherwise)."""
    return Path(launch.run_dir) / launch.env.get(LOG_ENV, "train.log")


def known_settings(settings: dict | None, known: set[str], what: str) -> dict:
    """``settings`` as a new dict, refusing keys ``known`` lacks, so a typo never silently becomes a default."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InvalidInput(f"Unknown setting(s) for {what}: {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return settings


def whole_number(settings: dict, key: str, default: int, low: int, high: int) -> int:
    """``settings[key]`` (``default`` when absent), refused unless a whole number from ``low`` to ``high``."""
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{key} must be a whole number from {low} to {high}; got {value!r}.")
    return value


def tail_lines(text: str, tail: int) -> str:
    """The last ``tail`` lines of ``text``."""
    return "\n".join(text.splitlines()[-tail:]) if tail > 0 else ""


def torchrun_argv(python: str, launch: Launch, node_rank: int, master: str, port: int) -> list[str]:
    """One node's command: the module itself when the run is a single process, else torchrun starting
    ``procs_per_node`` ranks here, node ``node_rank`` of ``nodes``, meeting at ``master``:``port`` (the first
    node). A static rendezvous: the target already knows each node's rank, and a c10d one decides which node hosts
    its store by host name, which two nodes of one host (the tests' clusters) would both claim."""
    run = ["-m", launch.module, "--run-dir", str(launch.run_dir)]
    if launch.world_size == 1:
        return [python, *run]
    return [python, "-m", "torch.distributed.run", "--nnodes", str(launch.nodes),
            "--nproc_per_node", str(launch.procs_per_node), "--node_rank", str(node_rank),
            "--master_addr", master, "--master_port", str(port), *run]
