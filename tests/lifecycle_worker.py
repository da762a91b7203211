"""A job process whose body ends as its config says, through the one job lifecycle (core.jobs.worker): for the
lifecycle's tests. ``python -m tests.lifecycle_worker --run-dir DIR``; config {"end": ...}:
"succeed", "raise", "studio_error", "memory_error", "torch_oom", "wait_for_stop"."""
from __future__ import annotations

import sys
import time

from core.errors import InvalidInput
from core.jobs.worker import JobContext, worker_main


def body(ctx: JobContext) -> dict:
    end = ctx.config["end"]
    ctx.result["started"] = True  # the result so far: kept when the job fails or is canceled
    ctx.canceled_message = "Canceled; what was done is kept."
    if end == "raise":
        raise ValueError("the body broke")
    if end == "studio_error":
        raise InvalidInput("The eval set has no prompts.")
    if end == "memory_error":
        ctx.oom_advice = lambda: "Out of memory: try a smaller batch size (now 64)."
        raise MemoryError()
    if end == "torch_oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if end == "wait_for_stop":
        print("waiting for the stop flag", flush=True)
        while not ctx.stop.is_set():
            time.sleep(0.05)
    return {"answer": 42}


if __name__ == "__main__":
    sys.exit(worker_main("python -m tests.lifecycle_worker", __doc__.splitlines()[0], body))
