"""Which process of a data-parallel training run this is, and the few exchanges the training job needs.

The queue starts a run of ``procs_per_node`` > 1 through torchrun (core.jobs.queue), which gives every copy of the
training job RANK, LOCAL_RANK and WORLD_SIZE in its environment; a job started as plain ``python -m`` is rank 0
of a world of 1 and nothing here does anything for it. Only the main process (rank 0) touches the database
(worker_start, heartbeats, finish) and writes metrics.jsonl, result.json, the checkpoint markers and the adapter;
the others learn what they need from it through ``from_main``, a broadcast over the process group (gloo on a
CPU, NCCL on GPUs), so a rank never needs the database, whichever host it runs on.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path


def rank() -> int:
    """This process's rank in the run (0 for a run of one process)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many processes train this run together (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes the database and the run folder."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def backend() -> str:
    """NCCL where there are GPUs, gloo on a CPU."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


# What the other ranks see as the database: a path that cannot open, so a rank that tried would fail loudly.
NO_DATABASE = "sqlite:////nonexistent/only-rank-0-of-a-run-uses-the-database/studio.db"


def init() -> bool:
    """Join the run's process group before anything is exchanged (the Trainer's accelerate state finds it
    later and uses it; a run of one process has none), and take the database away from the other ranks.
    Returns whether this is the main process."""
    if is_distributed():
        if not is_main():
            os.environ["DATABASE_URL"] = NO_DATABASE
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank())
            dist.init_process_group(backend=backend())
    return is_main()


def from_main(compute):
    """``compute()`` run on the main process only; every process returns its value (pickled over the process
    group). When it raises, the main process re-raises its error and the others a RuntimeError naming it, so no
    rank waits forever for a value that will never come."""
    if not is_distributed():
        return compute()
    import torch.distributed as dist

    box: list = [None]
    error = None
    if is_main():
        try:
            box = [("ok", compute())]
        except BaseException as err:  # noqa: BLE001 - told to every rank, then re-raised below
            error = err
            box = [("error", f"{type(err).__name__}: {err}")]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise RuntimeError(f"The main process (rank 0) failed: {value}")
    return value


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any process: every rank calls it at the same point (the end of each step), so a
    stop that reached one rank a step early stops them all at the same step and none waits on the others."""
    if not is_distributed():
        return flag
    import torch
    import torch.distributed as dist

    device = f"cuda:{local_rank()}" if backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def log_prefix() -> str:
    """"rank N: " before each log line of a distributed run (its ranks share train.log), else ""."""
    return f"rank {rank()}: " if is_distributed() else ""


def rank_result(status: str, error: str) -> dict:
    """What a rank other than the main one ends with: its outcome as a line of the shared log (the main process
    records the job's result), e.g. "rank 1: failed: ValueError: ..." that ``peer_failure`` quotes."""
    print(f"[{time.strftime('%H:%M:%S')}] {log_prefix()}{status}" + (f": {error}" if error else ""), flush=True)
    return {"status": status, "error": error}


def peer_failure(job_id: int | None, run_dir: Path, status: str, error: str) -> tuple[str, str]:
    """The main process's outcome in a run of many processes, told apart from what another rank did: a "canceled"
    without a cancel on the job row (torchrun stopping the others because one rank failed), or a failure that is
    the lost connection to a rank that ended, is "failed" with that rank's failure line from train.log when it
    wrote one. Any other outcome is returned as it is."""
    from storage.models import JobStatus

    lost = status == JobStatus.failed.value and LOST_PEER.search(error or "")
    if not is_distributed() or not (lost or status == JobStatus.canceled.value and not _cancel_asked(job_id)):
        return status, error
    from core.jobs import rundir

    lines = rundir.log_tail(run_dir / rundir.log_name("train"), 400).splitlines()
    failed = [ln.split("] ", 1)[1] for ln in lines if re.search(r"\] rank [1-9]\d*: failed: ", ln)]
    why = f" ({failed[0]})" if failed else " or ended; each rank's lines are in train.log"
    if lost:
        why += f"; rank 0 lost its connection to it ({error.strip().splitlines()[0][:300]})"
    return JobStatus.failed.value, f"Another process of this run failed{why}. The last complete checkpoint is " \
        "kept: Resume continues from it."


# How a collective fails on the ranks that are left when one rank dies (gloo, NCCL and torch's own wording).
LOST_PEER = re.compile(r"gloo|nccl|connection (closed|reset|refused)|broken pipe|DistBackendError|DistNetworkError",
                       re.IGNORECASE)


def _cancel_asked(job_id: int | None) -> bool:
    """Whether someone canceled the job (core.jobs.queue.cancel sets the row's flag before it signals)."""
    from storage.db import session_scope
    from storage.models import Job

    if not job_id:
        return False
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job is None or bool(job.cancel_requested)
