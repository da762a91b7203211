"""Is a job's process still there: by pid and psutil's create time (a later process may reuse the pid), reaping
a zombie child on the way. No database, no queue: what the queue and the cancel escalation ask of the OS."""
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
