"""A job worker that ignores SIGTERM (as a process busy in native code does, in effect) and waits, heartbeating:
a cancel must end it all the same. ``python -m tests.stubborn_worker --run-dir DIR``."""
from __future__ import annotations

import signal
import sys
import time

from core.jobs.worker import JobContext, worker_main


def wait_forever(ctx: JobContext) -> dict:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    ctx.keep_alive.every_s = 1.0  # heartbeat every second from here on (the beat wakes the thread to take it)
    ctx.beat()
    while True:
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(worker_main("python -m tests.stubborn_worker", __doc__.splitlines()[0], wait_forever))
