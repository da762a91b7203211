"""Compute targets: where a job runs besides this machine's queue (core.jobs.targets.base has the interface)."""
from __future__ import annotations

from core.jobs.targets.base import Launch, Offer, RemoteState, Target
from core.jobs.targets.slurm import SlurmTarget

TARGET_KINDS: dict[str, type[Target]] = {SlurmTarget.kind: SlurmTarget}

__all__ = ["TARGET_KINDS", "Launch", "Offer", "RemoteState", "SlurmTarget", "Target"]
