"""A job worker that ignores SIGTERM (as a process busy in native code does, in effect) and waits, heartbeating:
a cancel must end it all the same. ``python -m tests.stubborn_worker --run-dir DIR``."""
from __future__ import annotations

import signal
import sys
import time

from core.jobs.worker import KeepAlive, StopFlag, worker_main, worker_start

STOP = StopFlag()


def run_job(job_id: int) -> bool:
    worker_start(job_id)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    with KeepAlive(job_id, every_s=1.0):
        while True:
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(worker_main("python -m tests.stubborn_worker", __doc__.splitlines()[0], STOP, run_job))
