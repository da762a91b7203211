"""Compute targets: where a job runs (core.jobs.targets.base has the interface; one module per kind)."""
from __future__ import annotations

from core.jobs.targets.base import Launch, Offer, RemoteState, Target
from core.jobs.targets.local import LocalTarget
from core.jobs.targets.ray import RayTarget
from core.jobs.targets.slurm import SlurmTarget

TARGET_KINDS: dict[str, type[Target]] = {"local": LocalTarget, "ray": RayTarget, "slurm": SlurmTarget}

__all__ = ["TARGET_KINDS", "Launch", "Offer", "RemoteState", "Target"]
