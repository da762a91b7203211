"""A job worker that only waits, heartbeating, until it is canceled: a real job process for tests of the queue
and of the server's upkeep, without loading a model. ``python -m tests.sleeping_worker --run-dir DIR``."""
from __future__ import annotations

import sys
import time

from core.jobs.worker import KeepAlive, StopFlag, worker_finish, worker_main, worker_start
from storage.models import JobStatus

STOP = StopFlag()


def run_job(job_id: int) -> bool:
    worker_start(job_id)
    with KeepAlive(job_id, every_s=1.0):
        while not STOP.is_set():
            time.sleep(0.1)
    worker_finish(job_id, JobStatus.canceled.value, error="Canceled.")
    return True


if __name__ == "__main__":
    sys.exit(worker_main("python -m tests.sleeping_worker", __doc__.splitlines()[0], STOP, run_job))
