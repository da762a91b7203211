"""The serving job: ``python -m core.ship.serve_job --run-dir DIR``, a job like any other. Never imports streamlit.

It serves the studio's systems on the OpenAI-compatible endpoint of core.ship.server. Once it listens it writes
``endpoint.json`` (url, model) into its run folder. It heartbeats like every job and ends by itself after
``idle_timeout_s`` without requests (succeeded), or at SIGTERM (a cancel: canceled, "Stopped."), freeing its
device slot. Start, heartbeats, cancel and the recorded end are the job lifecycle's (core.jobs.worker.run_worker).
"""
from __future__ import annotations

import json
import sys
import threading
import time

from core.jobs.worker import JobContext, StopFlag, worker_main
from core.ship.loading import pick_device
from core.ship.server import Activity, bind_address, build_app, listen, local_url, model_manager, uvicorn_server
from core.ship.serving import ENDPOINT_FILE, ServeConfig
from core.ship.variants import chat_rewriter
from storage.db import session_scope
from storage.models import Job

STOP = StopFlag()  # set by SIGTERM (core.jobs.queue.cancel): stop listening, free the device


def _project_id(job_id: int | None) -> int | None:
    """The serving job's project: a +prompt / +rag base model answers with its team prompt and documents."""
    if job_id is None:
        return None
    with session_scope() as s:
        job = s.get(Job, job_id)
        return job.project_id if job is not None else None


def serve(ctx: JobContext) -> dict:
    """Load, listen, answer until idle or stopped; returns what the job reports. The address goes to the job row
    through ``ctx.beat`` (never a direct write: a busy database must not stop a server that already listens)."""
    run_dir, cfg, stop = ctx.run_dir, ServeConfig.from_dict(ctx.config), ctx.stop
    ctx.canceled_message = "Stopped."
    device = pick_device()
    activity = Activity()
    manager = model_manager(cfg, device)  # a pinned server loads its model here, before it says it is ready
    app = build_app(manager, cfg, activity, rewrite=chat_rewriter(cfg.system, _project_id(ctx.job_id)))
    sock = listen(cfg.host, cfg.port)
    url = local_url(cfg.host, sock.getsockname()[1])
    bind = bind_address(cfg.host, sock.getsockname()[1])  # what it listens on, said as is (0.0.0.0: every interface)
    server = uvicorn_server(app)
    reason = {"why": "canceled"}

    def watch() -> None:
        while not server.should_exit:
            if stop.is_set():
                break
            if activity.idle_for() > cfg.idle_timeout_s:
                reason["why"] = "idle"
                break
            time.sleep(0.5)
        server.should_exit = True

    (run_dir / ENDPOINT_FILE).write_text(json.dumps({"url": url, "bind": bind, "model": cfg.system or None}),
                                         encoding="utf-8")
    ctx.beat(url=url, device=device)
    print(f"listening on {bind}, reached here at {url} ({cfg.system or 'any system'}); "
          f"{'API key required' if cfg.api_key_hash else 'no API key'}; stops after {cfg.idle_timeout_s:.0f} s idle",
          flush=True)
    activity.touch()  # idle time counts from when it listens, not from before the model loaded
    threading.Thread(target=watch, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        stop.set()
    finally:
        manager.shutdown()
        (run_dir / ENDPOINT_FILE).unlink(missing_ok=True)
    return {"url": url, "device": device, "requests": activity.requests,
            "stopped": "canceled" if stop.is_set() else reason["why"]}


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.ship.serve_job", "Serve systems on an OpenAI-compatible endpoint.", serve,
                       argv, stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
