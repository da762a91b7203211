"""A Ray cluster as a target, through Ray's Job Submission API (submit_job, get_job_status, get_job_logs,
stop_job) at the cluster's dashboard address.

The Ray job's entrypoint is core.jobs.targets.ray_launch, which places one actor per node (a placement group,
STRICT_SPREAD) and has each start ``torchrun`` for its node's ranks, meeting at the first node. We chose that
over Ray Train's TorchTrainer, which would also set up the process group: TorchTrainer wraps the training in its
own function, run folder and checkpoint storage, while torchrun gives the training job the same ranks and
environment on every target (this machine, Ray, Slurm), so the job has one way of running, not three.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.jobs.targets.base import (GRACE_ENV, LOG_ENV, Launch, Offer, RemoteState, Target, known_settings, tail_lines,
                                   whole_number)

REPO_ROOT = Path(__file__).resolve().parents[3]
LAUNCHER = "core.jobs.targets.ray_launch"
WAITING = "Waiting for"  # how the driver's line starts while the placement group waits for nodes
STARTED = "Started "  # once every node's ranks were started
FAILED = "The run failed:"  # and when a node was lost or its ranks failed
NATIVE = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
          "STOPPED": "canceled"}
DEFAULTS: dict[str, Any] = {"python": "", "pythonpath": "", "cpus_per_node": 1, "gpus_per_node": 0,
                            "master_port": 29500, "same_host": False, "resources_per_node": {}}


def _number(settings: dict, key: str, low: int, high: int) -> int:
    return whole_number(settings, key, DEFAULTS[key], low, high)


def _resources(value) -> dict:
    """Custom Ray resources every node of a run must offer (e.g. {"A100": 1}: Ray places ranks only there)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and not isinstance(v, bool)
                                              and isinstance(v, (int, float)) and v > 0 for k, v in value.items()):
        raise InvalidInput('resources_per_node must map Ray resource names to positive amounts, e.g. {"A100": 1}.')
    return dict(value)


def _reason(message: str) -> str:
    """Ray's message in short: the driver's own "The run failed: ..." line when it has one (Ray's message on a
    failed entrypoint also carries the last 20,000 characters of the job's log), else its first line."""
    lines = message.strip().splitlines()
    return next((ln for ln in reversed(lines) if ln.startswith(FAILED)), lines[0] if lines else "")


class RayTarget(Target):
    kind = "ray"
    multi_host = True

    @classmethod
    def check_settings(cls, settings: dict) -> dict:
        settings = known_settings(settings, {"address", *DEFAULTS}, "a Ray target")
        address = str(settings.get("address") or "").strip().rstrip("/")
        if not address:
            raise InvalidInput("A Ray target needs the address of its dashboard, e.g. http://head-node:8265.")
        if "://" not in address:
            address = "http://" + address
        if not address.startswith(("http://", "https://")):
            raise InvalidInput(f"The Ray address {address!r} must be the dashboard's http(s) URL, e.g. "
                               "http://head-node:8265.")
        same_host = settings.get("same_host", False)
        if not isinstance(same_host, bool):
            raise InvalidInput("same_host must be true or false.")
        return {"address": address, "python": str(settings.get("python") or sys.executable),
                "pythonpath": str(settings.get("pythonpath") or REPO_ROOT),
                "cpus_per_node": _number(settings, "cpus_per_node", 0, 4096),
                "gpus_per_node": _number(settings, "gpus_per_node", 0, 64),
                "master_port": _number(settings, "master_port", 1024, 65535), "same_host": same_host,
                "resources_per_node": _resources(settings.get("resources_per_node") or {})}

    def _client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.settings["address"])

    def offer(self) -> Offer:
        try:
            from ray.util.state import list_nodes

            nodes = [n for n in list_nodes(address=self.settings["address"], timeout=10) if n.state == "ALIVE"]
        except Exception as err:  # noqa: BLE001 - any failure to reach the dashboard is "unreachable", in words
            return Offer(reachable=False, reason=f"Ray dashboard at {self.settings['address']} not reachable "
                                                 f"({type(err).__name__}: {str(err)[:200]}); is the head node up "
                                                 "and its dashboard port open to this server?")
        total = lambda key: int(sum((n.resources_total or {}).get(key, 0) for n in nodes))  # noqa: E731
        return Offer(reachable=True, nodes=len(nodes), cpus=total("CPU"), gpus=total("GPU"))

    def entrypoint(self, launch: Launch) -> str:
        """The shell command Ray runs as the job's driver (Ray takes a string; every part is quoted)."""
        s = self.settings
        return shlex.join([s["python"], "-m", LAUNCHER, "--run-dir", str(launch.run_dir), "--module", launch.module,
                           "--nodes", str(launch.nodes), "--procs-per-node", str(launch.procs_per_node),
                           "--cpus", str(s["cpus_per_node"]), "--gpus", str(s["gpus_per_node"]),
                           "--master-port", str(s["master_port"]), "--resources", json.dumps(s["resources_per_node"]),
                           "--log", launch.env.get(LOG_ENV, "train.log"),
                           "--job-id", str(launch.job_id)])

    def submit(self, launch: Launch) -> str:
        env = {**launch.env, "PYTHONPATH": self.settings["pythonpath"], "PYTHONUNBUFFERED": "1",
               # how long stop_job lets the driver (and the ranks) finish before SIGKILL: the queue's cancel grace
               "RAY_JOB_STOP_WAIT_TIME_S": launch.env.get(GRACE_ENV, "30")}
        return self._client().submit_job(entrypoint=self.entrypoint(launch), runtime_env={"env_vars": env},
                                         metadata={"finetune_studio_job": str(launch.job_id)})

    def state(self, external_id: str) -> RemoteState:
        try:
            info = self._client().get_job_info(external_id)
        except Exception as err:  # noqa: BLE001 - unreachable or forgotten: the queue decides from the row
            return RemoteState("unknown", reason=f"Ray did not answer: {str(err)[:300]}", native="")
        native = getattr(info.status, "value", str(info.status))
        if native == "RUNNING":  # Ray runs the driver at once; until the nodes are placed the job still waits
            # the driver's latest word on placement (Ray's own warnings may follow it in the log)
            said = [ln for ln in self.logs(external_id, 50).splitlines() if ln.startswith((WAITING, STARTED))]
            if not said or said[-1].startswith(WAITING):  # no ranks started yet
                return RemoteState("pending", reason=said[-1] if said else "Ray is starting the job's driver",
                                   native=native)
            return RemoteState("running", native=native)
        return RemoteState(NATIVE.get(native, "unknown"), reason=_reason(info.message or ""), native=native)

    def logs(self, external_id: str, tail: int = 200) -> str:
        try:
            return tail_lines(self._client().get_job_logs(external_id), tail)
        except Exception as err:  # noqa: BLE001 - the live panel shows why instead
            return f"(Ray's log of {external_id} is not available: {str(err)[:200]})"

    def stop(self, external_id: str) -> None:
        try:
            self._client().stop_job(external_id)
        except RuntimeError as err:  # already ended or unknown to Ray: nothing left to stop
            if "does not exist" not in str(err) and "terminal" not in str(err).lower():
                raise
