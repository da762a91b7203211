"""The compute-target interface: what a target offers, a cluster job's state, what to run, and the target itself.

A target runs a job somewhere other than as a process of this machine's queue (a Ray or Slurm cluster). The queue
decides what to run (``Launch``) from the job row; the target submits it, reports the cluster's own state and
reason (``RemoteState``), its log, and stops it. Targets hold no state of their own: the job row keeps the
cluster's job id (``external_id``), so any process can ask about it later."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


@dataclass
class Offer:
    """What a target offers now."""
    reachable: bool
    nodes: int = 0
    cpus: int = 0
    gpus: int = 0
    reason: str = ""    # why it is not reachable, in words a user can act on


@dataclass
class RemoteState:
    """A cluster job's state, from the cluster."""
    state: str          # "pending" | "running" | "succeeded" | "failed" | "canceled" | "unknown"
    reason: str = ""    # the cluster's own reason (Slurm: "Resources", "Priority"; Ray: its message)
    native: str = ""    # the cluster's state name (PENDING, RUNNING, ...)


@dataclass
class Launch:
    """What to run, decided by the queue from the job row: ``python -m <module> --run-dir <run_dir>`` on
    ``nodes`` x ``procs_per_node`` processes, each with ``env``."""
    job_id: int
    run_dir: Path
    module: str
    nodes: int = 1
    procs_per_node: int = 1
    env: dict[str, str] = field(default_factory=dict)  # DATABASE_URL, FINETUNE_STUDIO_* to pass to every rank


class Target(ABC):
    """A place jobs run: this machine, a Ray cluster, a Slurm cluster."""
    kind: ClassVar[str]                     # "local" | "ray" | "slurm"
    multi_host: ClassVar[bool]              # True: needs a database every node reaches (not SQLite)

    def __init__(self, settings: dict):
        self.settings = self.check_settings(settings)

    @classmethod
    @abstractmethod
    def check_settings(cls, settings: dict) -> dict:
        """The settings validated and normalised; InvalidInput with a clear message."""

    @abstractmethod
    def offer(self) -> Offer:
        """What the target offers now, or why it is not reachable."""

    @abstractmethod
    def submit(self, launch: Launch) -> str:
        """Start ``launch`` on the cluster; the cluster's job id."""

    @abstractmethod
    def state(self, external_id: str) -> RemoteState:
        """The cluster job's state and reason."""

    @abstractmethod
    def logs(self, external_id: str, tail: int = 200) -> str:
        """The last ``tail`` lines of the cluster job's output."""

    @abstractmethod
    def stop(self, external_id: str) -> None:
        """Cancel the cluster job (Ray stop_job, scancel); returns at once."""
