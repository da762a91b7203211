"""The OpenAI-compatible endpoint the serving job (core.ship.serve_job) runs, and in a thread of another process
(``InProcess``: the export's parity check). Never imports streamlit.

It runs transformers' own OpenAI-compatible server (``transformers serve``: /v1/chat/completions streaming and
not, /v1/completions, /v1/responses, /v1/models, /health; continuous batching on request) with two changes. The
model manager loads the studio's systems by key (core.ship.systems): transformers' own loader reads a
``config.json`` before anything else, so it refuses a PEFT adapter folder; ours loads the adapter on its base
through transformers' PEFT integration (core.ship.loading), which is also how a user loads it. And every request
passes the guard (core.ship.guard): what one request may ask of the model, and how many are taken at a time.

"""
from __future__ import annotations

import socket
import threading
import time

from core.errors import StudioError
from core.ship.guard import Guard, Refused, guarded_state, refusal_body
from core.ship.loading import model_of, pick_device, tokenizer_of
from core.ship.serving import ServeConfig
from core.ship.systems import resolve
from storage.db import session_scope

COUNTED = ("/v1/", "/load_model")  # requests that count as use (health checks do not keep a server alive)


class Activity:
    """When the endpoint was last used and how many requests are still streaming."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.active = 0
        self.requests = 0

    def begin(self) -> None:
        with self.lock:
            self.active += 1
            self.requests += 1
            self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def end(self) -> None:
        with self.lock:
            self.active -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.active else time.monotonic() - self.last


def _from_database(key: str):
    with session_scope() as s:
        return resolve(s, key)


def model_manager(cfg: ServeConfig, device: str, resolver=_from_database, dtype=None):
    """transformers' ModelManager, loading systems by key (``resolver(key)`` -> core.ship.systems.Servable);
    a pinned server preloads its system."""
    from fastapi import HTTPException
    from transformers.cli.serving.model_manager import ModelManager

    class StudioModelManager(ModelManager):
        """Names are core.ship.systems keys ("run:12"); each resolves to its folders once."""

        def __init__(self, **kwargs) -> None:
            self.systems: dict = {}
            self.keys: dict[str, str] = {}  # a name asked for -> its system's key ("run:3+rag" -> "run:3")
            super().__init__(**kwargs)

        def process_model_name(self, model_id: str) -> str:  # type: ignore[override]  # keys carry no revision
            try:
                system = resolver(model_id)
            except StudioError as err:
                raise HTTPException(status_code=404, detail=str(err)) from None
            self.systems[system.key] = system
            self.keys[model_id] = system.key
            return system.key

        def _load_processor(self, model_id_and_revision: str, gguf_file=None):
            return tokenizer_of(self.systems[model_id_and_revision])

        def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None, gguf_file=None):
            print(f"loading {model_id_and_revision}", flush=True)
            return model_of(self.systems[model_id_and_revision], device=device, dtype=dtype)

        def list_models(self, cache_dir=None) -> list[dict]:
            names = [self.force_model] if self.force_model else sorted(self.loaded_models)
            return [{"id": n, "object": "model", "created": 0, "owned_by": "finetune-studio",
                     "status": {"value": "loaded" if self.keys.get(n, n) in self.loaded_models else "unloaded"}}
                    for n in names]

    return StudioModelManager(device=device, dtype="auto", continuous_batching=cfg.continuous_batching,
                              model_timeout=int(cfg.idle_timeout_s), force_model=cfg.system or None)


def build_app(manager, cfg: ServeConfig, activity: Activity, rewrite=None):
    """transformers' serving app over ``manager`` behind the guard (core.ship.guard): what it refuses, how many
    requests it serves at once, generation that stops when the client goes, requests counted for the idle timeout;
    ``rewrite`` (core.ship.variants.chat_rewriter) gives chat requests of +prompt / +rag systems their messages."""
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler

    state = guarded_state(cfg.continuous_batching)
    app = build_server(manager, ChatCompletionHandler(model_manager=manager, generation_state=state),
                       completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
                       response_handler=ResponseHandler(model_manager=manager, generation_state=state),
                       transcription_handler=TranscriptionHandler(manager, state),
                       systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
                       generation_state=state)

    @app.exception_handler(Refused)
    async def refused(_request, err: Refused):
        return Response(refusal_body(err), status_code=err.status, headers=err.headers, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_refused(_request, err: HTTPException):  # transformers' own refusals, in OpenAI's shape too
        return await refused(_request, Refused(err.status_code, str(err.detail), getattr(err, "headers", None)))

    if cfg.pilot_id is not None:  # serve-model --pilot: record each answer, take feedback (inside the guard)
        from core.ship.pilot_server import PilotRecorder, add_feedback_route

        add_feedback_route(app, cfg.pilot_id)
        app.add_middleware(PilotRecorder, pilot_id=cfg.pilot_id)
    app.add_middleware(Guard, manager=manager, max_requests=cfg.max_requests, activity=activity, counted=COUNTED,
                       api_key_hash=cfg.api_key_hash, batching=cfg.continuous_batching, rewrite=rewrite)
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the port is known before the server starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise StudioError(f"Cannot listen on {host}:{port}: {err.strerror}.") from None
    sock.listen(128)
    return sock


def bind_address(host: str, port: int) -> str:
    return f"{'[' + host + ']' if ':' in host else host}:{port}"


def local_url(host: str, port: int) -> str:
    """A URL this machine reaches the endpoint at (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{bind_address(host, port)}"


def uvicorn_server(app):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))


class InProcess:
    """The same endpoint for one system, in a thread of this process (the export job's parity check talks to
    its export through it, in float32). ``with InProcess(system) as url: ...``"""

    def __init__(self, system, device: str | None = None, dtype=None) -> None:
        self.system, self.device, self.dtype = system, pick_device(device), dtype

    def __enter__(self) -> str:
        cfg = ServeConfig(system=self.system.key)
        self.manager = model_manager(cfg, self.device, resolver=lambda key: self.system, dtype=self.dtype)
        self.server = uvicorn_server(build_app(self.manager, cfg, Activity()))
        sock = listen("127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.05)
        return local_url("127.0.0.1", sock.getsockname()[1])

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.manager.shutdown()
