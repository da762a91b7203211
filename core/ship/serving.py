"""Serving processes, launcher side (pages and the CLI; cheap imports only): start, find, reach and stop the
local OpenAI-compatible endpoint that core.ship.serve_job runs.

A serving process is a job like a training run (kind ``serve``): it waits for a device slot in the same queue,
holds it while it runs, so the queue does not start a training run beside it where there is no room, and ends
by itself after ``idle_timeout_s`` without requests (or when canceled). Pages never load a model; they talk to
the endpoint over HTTP (core.ship.client).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlmodel import Session, select

from core.accounts import require
from core.configs import strict_from_dict
from core.errors import InvalidInput
from core.jobs.queue import LIVE, cancel, get_job, queue_position, reconcile, submit
from core.locks import file_lock
from core.evaluate.augment import check_variant, variant_project
from core.ship.systems import resolve
from core.systems import SystemKey
from core.workspace import runs_dir
from storage.models import Job, JobStatus, User

KIND = "serve"
WORKER = "core.ship.serve_job"  # python -m core.ship.serve_job --run-dir DIR
ENDPOINT_FILE = "endpoint.json"  # written by the server once it listens: {"url", "bind", "model"}
DEFAULT_IDLE_S = 600
DEFAULT_MAX_REQUESTS = 4
API_KEY_ENV = "FINETUNE_STUDIO_API_KEY"  # the key serve-model and the Playground's endpoint take when it is set


def key_hash(key: str) -> str:
    """What the run folder and the database keep of an API key: its SHA-256, never the key (the server compares
    the hash of what a client sends, in constant time)."""
    return hashlib.sha256(key.encode()).hexdigest()


def env_api_key() -> str:
    """The API key from FINETUNE_STUDIO_API_KEY, or ""."""
    return os.environ.get(API_KEY_ENV, "").strip()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass
class ServeConfig:
    """One serving process's config.json."""

    system: str = ""
    """The one system this endpoint answers for (core.ship.systems key, ``+prompt`` / ``+rag`` variants too:
    core.ship.variants); "" serves any system of the workspace,
    each loaded on its first request (the Playground's endpoint)."""
    host: str = "127.0.0.1"
    """Address to listen on; 127.0.0.1 keeps the endpoint on this machine."""
    port: int = 0
    """TCP port; 0 takes a free one when the process starts (the endpoint says which)."""
    idle_timeout_s: float = DEFAULT_IDLE_S
    """The process ends after this many seconds without a request, freeing its device slot."""
    continuous_batching: bool = False
    """transformers' continuous batching with paged attention (for many concurrent clients on a GPU; requests then
    share one generation config)."""
    max_requests: int = DEFAULT_MAX_REQUESTS
    """Generation requests admitted at once: one generates while the others wait their turn (with continuous
    batching they generate together). One more is refused at once with 503 and Retry-After."""
    playground: bool = False
    """Started by the Playground page (found and reused by it)."""
    api_key_hash: str = ""
    """SHA-256 of the API key every route but /health asks for (``Authorization: Bearer KEY``); "" asks none.
    Only the hash is stored (config.json, the job row); core.ship.serving.key_hash makes it."""
    expose: bool = False
    """Listen on a host other than loopback without an API key: anyone who reaches the port may use it."""
    pilot_id: int | None = None
    """Record every chat completion into this pilot (core.ship.pilots; opt-in per launch) and take agents' feedback
    on ``POST /v1/feedback``; None records nothing."""

    def __post_init__(self):
        try:
            self.port, self.idle_timeout_s = int(self.port), float(self.idle_timeout_s)
            self.max_requests = int(self.max_requests)
        except (TypeError, ValueError):
            raise InvalidInput("Port, idle timeout and requests at once must be numbers.") from None
        if not 0 <= self.port <= 65535:
            raise InvalidInput("The port must be between 1 and 65535 (or 0 for a free one).")
        if not 10 <= self.idle_timeout_s <= 7 * 24 * 3600:
            raise InvalidInput("The idle timeout must be between 10 seconds and a week.")
        if not 1 <= self.max_requests <= 1000:
            raise InvalidInput("The endpoint must admit between 1 and 1000 requests at once.")
        if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", self.host or ""):
            raise InvalidInput(f"Not a host address: {self.host!r}.")
        if self.api_key_hash and not re.fullmatch(r"[0-9a-f]{64}", self.api_key_hash):
            raise InvalidInput("api_key_hash must be a SHA-256 in hex (core.ship.serving.key_hash), not a key.")
        if self.pilot_id is not None:
            try:
                self.pilot_id = int(self.pilot_id)
            except (TypeError, ValueError):
                raise InvalidInput("The pilot must be a pilot id (a number).") from None
        if not is_loopback(self.host) and not (self.api_key_hash or self.expose):
            raise InvalidInput(f"Listening on {self.host} lets any machine that reaches this one use the endpoint: "
                               f"set an API key (--api-key or {API_KEY_ENV}) or say --expose to serve it without "
                               f"one.")

    @classmethod
    def from_dict(cls, data: dict) -> "ServeConfig":
        return strict_from_dict(cls, data, "serving")


SERVER_ACTIONS = ("evaluate", "pilot")  # who may start an endpoint: engineers, and agents for the Pilot page


def launch_server(session: Session, user: User, project_id: int, cfg: ServeConfig, action: str = "evaluate") -> Job:
    """Queue a serving process (it starts when a device slot is free). ``action``: "pilot" for the Pilot page's
    endpoint (any system, loopback only), which agents may start."""
    if action not in SERVER_ACTIONS or (action == "pilot" and (cfg.system or not is_loopback(cfg.host))):
        raise InvalidInput("Only the Playground's or the Pilot page's own endpoint can be started so.")
    require(user, action)
    name = f"serve {cfg.system}" if cfg.system else "playground endpoint"
    if cfg.system:  # refuse an unknown or unfinished system now, and a variant that cannot answer (core.ship.variants)
        variant = SystemKey.parse(cfg.system).variant
        cfg.system = resolve(session, cfg.system).key + (f"+{variant}" if variant else "")
        if variant:
            check_variant(session, variant_project(session, cfg.system, project_id), cfg.system)
    return submit(session, user, project_id=project_id, kind=KIND, action=action, name=name,
                  config=asdict(cfg), module=WORKER, slots=1)


def live_servers(session: Session) -> list[Job]:
    """Serving processes queued or running, newest first (after a reconcile, so the list is true)."""
    reconcile(session)
    return list(session.exec(select(Job).where(Job.kind == KIND, Job.status.in_(LIVE)).order_by(Job.id.desc())))


def find_playground_server(session: Session) -> Job | None:
    """The Playground's live endpoint (queued or running), if there is one."""
    for job in live_servers(session):
        if (job.config or {}).get("playground") and not (job.config or {}).get("system"):
            return job
    return None


def playground_server(session: Session, user: User, project_id: int, action: str = "evaluate") -> Job:
    """The Playground's endpoint: the live one, or a new one queued now (one for the whole workspace). The Pilot
    page shares it (``action`` "pilot": agents may start it too)."""
    require(user, action)
    with file_lock(runs_dir() / ".playground.lock"):
        key = env_api_key()
        return find_playground_server(session) or launch_server(
            session, user, project_id, ServeConfig(playground=True, api_key_hash=key_hash(key) if key else ""),
            action=action)


def endpoint(job: Job) -> dict | None:
    """{"url", "bind", "model"} of a running serving process once it listens, else None."""
    if job.status != JobStatus.running.value or not job.run_dir:
        return None
    path = Path(job.run_dir) / ENDPOINT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None  # being written right now


def server_status(session: Session, job_id: int) -> dict:
    """What the Playground shows while it waits: status, queue position, what runs ahead, the endpoint."""
    reconcile(session)
    job = get_job(session, job_id)
    session.refresh(job)
    ahead = None
    if job.status == JobStatus.queued.value:
        running = session.exec(select(Job).where(Job.status == JobStatus.running.value)).first()
        ahead = f"{running.kind} job {running.id} ({running.name})" if running else None
    return {"job": job, "queue_position": queue_position(session, job), "running_ahead": ahead,
            "endpoint": endpoint(job)}


def stop_server(session: Session, user: User, job_id: int) -> Job:
    """Stop a serving process now (it frees its device slot)."""
    job = get_job(session, job_id)
    if job.kind != KIND:
        raise InvalidInput(f"Job {job_id} is not a serving process.")
    return cancel(session, user, job_id)
