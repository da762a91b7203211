"""A job worker that only waits, heartbeating, until it is canceled: a real job process for tests of the queue
and of the server's upkeep, without loading a model. ``python -m tests.sleeping_worker --run-dir DIR``."""
from __future__ import annotations

import sys
import time

from core.jobs.worker import JobContext, worker_main


def sleep(ctx: JobContext) -> dict:
    ctx.keep_alive.every_s = 1.0  # heartbeat every second from here on (the beat wakes the thread to take it)
    ctx.beat()
    while not ctx.stop.is_set():
        time.sleep(0.1)
    return {}


if __name__ == "__main__":
    sys.exit(worker_main("python -m tests.sleeping_worker", __doc__.splitlines()[0], sleep))
