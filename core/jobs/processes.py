"""Is a job's process still there: by pid and psutil's create time (a later process may reuse the pid), reaping
a zombie child on the way; and signalling a job's processes, every rank of a many-process run included. No
database, no queue: what the queue and the cancel escalation ask of the OS."""
from __future__ import annotations

import os

from storage.models import Job


def create_time(pid: int) -> float | None:
    """psutil's create time of a process (tells it apart from a later process with the same pid)."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(job: Job) -> bool:
    """Whether the job's own process still runs (not gone, not a zombie, not a later process with its pid)."""
    import psutil

    if not job.pid:
        return False
    try:
        proc = psutil.Process(job.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            reap(job.pid)
            return False
        if job.pid_create_time and abs(proc.create_time() - job.pid_create_time) > 1.0:
            return False
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists but we may not inspect it


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_job(pid: int, sig: int) -> None:
    """Send ``sig`` to a job's process group and to every process below it in another group: torchrun starts each
    rank in a session of its own, and a cancel (or the SIGKILL after it) must reach every rank, not only torchrun."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        below = []
    for target in [pid, *(p.pid for p in below)]:
        try:
            os.killpg(target, sig) if target == pid else os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass
