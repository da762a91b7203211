"""Is a job's process still there: by pid and the process's identity (a later process may reuse the pid), reaping
a zombie child on the way; and signalling a job's processes, every rank of a many-process run included. No
database, no queue: what the queue and the cancel escalation ask of the OS."""
from __future__ import annotations

import os
from pathlib import Path

from storage.models import Job

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def create_time(pid: int) -> float | None:
    """psutil's create time of a process (tells it apart from a later process with the same pid)."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def identity(pid: int) -> str | None:
    """What tells a process apart from any later one with its pid, and stays the same when the wall clock steps:
    on Linux the boot's id and the process's start in clock ticks since boot (/proc), "BOOT:TICKS"; None where
    the system has no such figures (or the process is gone), and the wall-clock create time stands in.

    psutil's create time is boot time + ticks, and the kernel moves its boot time whenever the wall clock steps
    (NTP, a paused or snapshotted VM): a 10 s step made a generation job that ran on look dead to reconcile."""
    try:
        boot = BOOT_ID.read_text(encoding="ascii").strip()
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
        return f"{boot}:{int(fields[19])}"  # field 22 of proc(5), counted from the state after the name
    except (OSError, IndexError, ValueError):
        return None


def stamps(pid: int) -> dict:
    """A Job row's (or a pending import's) record of which process ``pid`` is: pid_create_time and pid_ident."""
    return {"pid_create_time": create_time(pid), "pid_ident": identity(pid)}


def process_of(job: Job) -> Job:
    """A copy of the job's process record (pid and stamps), never saved: for a thread that outlives the session."""
    return Job(project_id=job.project_id, pid=job.pid, pid_create_time=job.pid_create_time, pid_ident=job.pid_ident)


def same_start(pid: int, ident: str | None, wall: float | None) -> bool:
    """Whether the process now at ``pid`` is the one recorded with ``ident`` (``identity``) or, for a record
    made without one, created at ``wall`` (psutil's create time, within a second); True when nothing was
    recorded."""
    if ident:
        return identity(pid) == ident
    if wall:
        now = create_time(pid)
        return now is not None and abs(now - wall) <= 1.0
    return True


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
        if not same_start(job.pid, job.pid_ident, job.pid_create_time):
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
