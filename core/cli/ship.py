"""`finetune-studio serve-model`: the Playground's OpenAI-compatible endpoint for other applications."""
from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager

from core.errors import StudioError
from core.jobs.queue import TERMINAL, get_job
from core.projects import list_projects
from core.ship.serving import (API_KEY_ENV, DEFAULT_IDLE_S, DEFAULT_MAX_REQUESTS, KIND, ServeConfig, env_api_key,
                               is_loopback, key_hash, launch_server, server_status, stop_server)
from core.ship.pilots import pilot_to_serve
from core.ship.systems import resolve
from core.systems import RUN, VARIANTS, SystemKey, run_key
from core.train.runs import get_run
from storage.models import Job, JobStatus


def _project_of(session, key: str) -> int:
    job_id = SystemKey.parse(key).job_id
    if job_id is not None:
        return session.get(Job, job_id).project_id
    projects = list_projects(session)
    if not projects:
        raise StudioError("No project yet: create one first.")
    return projects[0].id


@contextmanager
def _ctrl_c():
    """Ctrl-C sets the yielded event instead of raising KeyboardInterrupt wherever the main thread happens to be.
    Raised inside a database call, the interrupt left the session needing a rollback (the next read failed and
    the endpoint kept running) or waiting forever on the connection pool; the loops below check the event
    between reads instead. A second Ctrl-C quits at once (exit 130)."""
    pressed = threading.Event()

    def on_sigint(*_):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_ready(session, job_id: int, pressed: threading.Event) -> dict | None:
    """The endpoint once the server listens; None when Ctrl-C was pressed first."""
    said = ""
    while not pressed.is_set():
        status = server_status(session, job_id)
        job = status["job"]
        if status["endpoint"]:
            return status["endpoint"]
        if job.status in TERMINAL:
            reason = (job.error or "").splitlines()[0] if job.error else ""
            raise StudioError(f"serving job {job.id} {job.status}: {reason}")
        line = (f"serving job {job.id}: waiting for the device ({status['running_ahead']} runs)"
                if job.status == JobStatus.queued.value else f"serving job {job.id}: loading {job.config['system']}")
        if line != said:
            print(line, file=sys.stderr, flush=True)
            said = line
        pressed.wait(0.5)
    return None


def _system_key(session, key: str) -> str:
    """``run:NAME`` -> ``run:<id>``: the CLI names runs by name or id everywhere (as `generate --systems` does)."""
    head, plus, variant = key.strip().rpartition("+")
    if plus and variant in VARIANTS:  # run:NAME+rag
        return f"{_system_key(session, head)}+{variant}"
    kind, sep, raw = key.strip().partition(":")
    if sep and kind == RUN and raw and not raw.isdigit():
        return run_key(get_run(session, raw).id)
    return key


def _exposure(host: str, bind: str, keyed: bool) -> str:
    """The line that says where the endpoint listens and who may use it."""
    if is_loopback(host):
        return f"listening on {bind}: this machine only" + ("; API key required" if keyed else "")
    reach = "every network interface" if host in ("0.0.0.0", "::") else host
    return (f"listening on {bind} ({reach}): other machines can reach it; " +
            ("API key required on every route but /health" if keyed else
             "WARNING: no API key, anyone who reaches this port can use the model (--expose)"))


STOP_COMMAND = "finetune-studio serve-model --stop {job}"


def cmd_stop_server(args, session, user) -> dict:
    """`serve-model --stop N`: stop a serving job (a detached one, or any other) and wait until it has ended."""
    job = session.get(Job, args.stop)
    if job is None:
        raise StudioError(f"No serving job {args.stop}.")
    if job.kind != KIND:
        raise StudioError(f"Job {job.id} is not a serving job (it is a {job.kind} job).")
    if job.status in TERMINAL:
        raise StudioError(f"Serving job {job.id} already ended ({job.status}); nothing to stop.")
    with _ctrl_c() as pressed:
        return _stop(session, user, job.id, pressed)


def cmd_serve_model(args, session, user):
    if args.stop is not None:
        if args.system:
            raise StudioError("Give a system to serve or --stop JOB, not both.")
        return cmd_stop_server(args, session, user)
    if not args.system:
        raise StudioError("Name the system to serve (base, run:<id or name>, export:<id>), or --stop JOB.")
    asked = _system_key(session, args.system)
    system = resolve(session, asked)
    variant = SystemKey.parse(asked).variant  # +prompt / +rag: the same model, the messages core.ship.variants builds
    served = system.key + (f"+{variant}" if variant else "")
    label = system.label + (f", {VARIANTS[variant]}" if variant else "")
    key = (args.api_key or "").strip() or env_api_key()
    cfg = ServeConfig(system=served, host=args.host, port=args.port, idle_timeout_s=args.idle_timeout,
                      continuous_batching=args.continuous_batching, max_requests=args.max_requests,
                      api_key_hash=key_hash(key) if key else "", expose=args.expose, pilot_id=args.pilot)
    pilot = pilot_to_serve(session, user, args.pilot, system.key) if args.pilot is not None else None
    job = launch_server(session, user, pilot.project_id if pilot else _project_of(session, system.key), cfg)
    with _ctrl_c() as pressed:
        endpoint = _wait_ready(session, job.id, pressed)
        if endpoint is not None:
            print(f"serving {label} on {endpoint['url']}/v1 (OpenAI-compatible; model \"{served}\"); "
                  f"job {job.id} stops after {args.idle_timeout:.0f} s without requests" +
                  ("" if args.detach else ", or on Ctrl-C"), flush=True)
            print(_exposure(args.host, endpoint.get("bind") or endpoint["url"], bool(key)), flush=True)
            if pilot is not None:
                print(f"recording every answer into pilot {pilot.id} ({pilot.name}); feedback: POST "
                      f"{endpoint['url']}/v1/feedback", flush=True)
            if args.detach:
                print(f"stop it with: {STOP_COMMAND.format(job=job.id)}", flush=True)
                return {"job": job.id, "url": f"{endpoint['url']}/v1", "model": served,
                        "stop": STOP_COMMAND.format(job=job.id)}
            while not pressed.wait(1):
                session.expire_all()
                if get_job(session, job.id).status in TERMINAL:
                    break
        return _stop(session, user, job.id, pressed)


def _stop(session, user, job_id: int, pressed: threading.Event) -> dict:
    """Stop the serving job unless it already ended, and wait until it has."""
    session.expire_all()
    job = get_job(session, job_id)
    if job.status not in TERMINAL:
        stop_server(session, user, job.id)
        while job.status not in TERMINAL:
            time.sleep(0.3)  # a second Ctrl-C quits here at once (exit 130)
            session.expire_all()
            job = get_job(session, job.id)
    return {"job": job.id, "status": job.status, "stopped": (job.result or {}).get("stopped", job.status)}


def register(sub, common) -> None:
    """Add `serve-model` to the finetune-studio command line."""
    p = sub.add_parser("serve-model", parents=[common],
                       help="serve a system on a local OpenAI-compatible endpoint (/v1/chat/completions)")
    p.add_argument("system", nargs="?", default="",
                   help="base, base:<model>, run:<run id or name> (or just the id) or export:<export id>; "
                        "add +prompt (the team prompt) or +rag (retrieved passages) to serve it so")
    p.add_argument("--port", type=int, default=8000, help="0 takes a free port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only); any other needs --api-key "
                        "or --expose")
    p.add_argument("--api-key", default="",
                   help=f"a key every route but /health asks for (Authorization: Bearer KEY, an OpenAI client's "
                        f"api_key); default: the {API_KEY_ENV} environment variable (safer: not in the process "
                        f"list); only its SHA-256 is stored")
    p.add_argument("--expose", action="store_true",
                   help="listen on a non-loopback --host without an API key (anyone who reaches the port may use it)")
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_S,
                   help=f"stop after this many seconds without requests (default {DEFAULT_IDLE_S})")
    p.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS,
                   help=f"requests admitted at once, one generating, the rest waiting their turn; more are refused "
                        f"with 503 and Retry-After (default {DEFAULT_MAX_REQUESTS})")
    p.add_argument("--continuous-batching", action="store_true",
                   help="transformers' continuous batching (many concurrent clients on a GPU; the batched requests "
                        "share the model's generation config, so temperature, top_p, seed and generation_config are "
                        "refused)")
    p.add_argument("--pilot", type=int, metavar="ID",
                   help="record every chat completion into this pilot (of the served system) and take agents' "
                        "ratings on POST /v1/feedback {completion_id, ratings, escalate, correction}")
    p.add_argument("--detach", action="store_true",
                   help="return once it answers; it runs on until idle or `serve-model --stop JOB` (printed)")
    p.add_argument("--stop", type=int, metavar="JOB",
                   help="stop the serving job JOB (as --detach printed it) and wait until it has ended")
    p.set_defaults(fn=cmd_serve_model)


__all__ = ["register"]
