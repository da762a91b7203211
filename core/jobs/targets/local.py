"""This machine as a target: a job started as a detached process here (torchrun when it has several ranks).

The queue's own default (a job with no target) is the same machine with device slots; a registered local target
is for running beside that queue without taking a slot (e.g. a CPU job on a GPU box), and lets the remote path of
the queue be exercised without a cluster. Its job id is ``<pid>:<identity>`` (core.jobs.processes.identity: boot and
start ticks; the create time where the system has none), so a reused pid is not mistaken for the job, and a step
of the wall clock does not lose it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from core.errors import InvalidInput
from core.jobs.processes import identity, same_start
from core.jobs.targets.base import (Launch, Offer, RemoteState, Target, known_settings, log_file, torchrun_argv,
                                   whole_number)

REPO_ROOT = Path(__file__).resolve().parents[3]
KNOWN = {"python", "master_port"}


class LocalTarget(Target):
    kind = "local"
    multi_host = False

    @classmethod
    def check_settings(cls, settings: dict) -> dict:
        settings = known_settings(settings, KNOWN, "a local target")
        return {"python": str(settings.get("python") or sys.executable),
                "master_port": whole_number(settings, "master_port", 29500, 1024, 65535)}

    def offer(self) -> Offer:
        gpus = Path("/proc/driver/nvidia/gpus")
        return Offer(reachable=True, nodes=1, cpus=os.cpu_count() or 1,
                     gpus=len(list(gpus.iterdir())) if gpus.is_dir() else 0)

    def submit(self, launch: Launch) -> str:
        if launch.nodes != 1:
            raise InvalidInput(f"This machine is one node; the run asks for {launch.nodes}.")
        argv = torchrun_argv(self.settings["python"], launch, 0, "127.0.0.1", self.settings["master_port"])
        env = {**os.environ, **launch.env, "PYTHONUNBUFFERED": "1"}
        with open(log_file(launch), "ab") as log:
            proc = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        return f"{proc.pid}:{identity(proc.pid) or psutil.Process(proc.pid).create_time()}"

    def _process(self, external_id: str) -> psutil.Process | None:
        try:
            pid, created = external_id.split(":", 1)
            proc = psutil.Process(int(pid))
            ident, wall = (None, float(created)) if created.replace(".", "", 1).isdigit() else (created, None)
            if not same_start(proc.pid, ident, wall) or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (ValueError, psutil.Error):
            return None

    def state(self, external_id: str) -> RemoteState:
        if self._process(external_id) is not None:
            return RemoteState("running", native="RUNNING")
        # A detached process leaves no exit code behind: a job whose worker wrote no finish failed.
        return RemoteState("failed", reason="The process ended", native="EXITED")

    def logs(self, external_id: str, tail: int = 200) -> str:
        return ""  # the process writes the run folder's train.log, which the queue shows

    def stop(self, external_id: str) -> None:
        proc = self._process(external_id)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

