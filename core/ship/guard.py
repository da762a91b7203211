"""What the serving process refuses, in one layer in front of transformers' handlers (core.ship.server).

``Guard`` is an ASGI middleware that sees every request before transformers does: it admits at most
``ServeConfig.max_requests`` generation requests at once (beyond that: 503 with Retry-After at once, never minutes
in a queue), refuses a body larger than the model's context can need before reading it whole (413), parses it once
and checks the token limits it names (400), and notices when the client goes away. With an API key set, every route but
/health asks for it (``Authorization: Bearer KEY``, as OpenAI clients send it; 401 otherwise) before anything is
read. ``check_body`` checks the fields a client sends (required ones, types, ranges, and only those the endpoint
honours: core.ship.params): 400 naming the field.

``GuardedState`` hands the handlers generation managers that check the tokenized prompt against the model's
context before generating (400 naming the limit), refuse an explicit max_tokens the context cannot hold (400),
lower transformers' own default to what the context leaves, and stop generating when the client disconnects. They
also apply OpenAI's semantics that transformers' handlers miss: temperature above 0 (or top_p below 1) samples
(from the whole distribution: no top_k of 50 unless the model's generation config sets one),
``seed`` seeds the generation itself (on the inference thread, so another request cannot draw from it between), and
the answer ends before its stop sequence, streamed or not.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import threading
import traceback
from contextvars import ContextVar
from dataclasses import dataclass, field

from core.ship import params

GENERATING = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/systemone")
"""Routes that generate: they take an admission slot."""
TOKEN_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
"""Fields that ask for a number of new tokens, in transformers' order of precedence."""
FALLBACK_CONTEXT = 32768  # tokens, for a model that states no context (and before any model is loaded)
BYTES_PER_TOKEN = 32  # more than any real tokenizer's bytes per token, JSON escapes included
BODY_OVERHEAD = 64 * 1024  # the rest of a request: model name, tools, options
RETRY_AFTER_S = 5
DEFAULT_MAX_LENGTH = 20  # transformers' global default, where neither the request nor the model sets max_length
NO_LIMIT = 10 ** 8  # tokenizers say 1e30 for "not set"
OPEN_PATHS = ("/health",)  # answered without the API key: a load balancer's probe says only "up"
REQUIRED = {"/v1/chat/completions": "messages", "/v1/completions": "prompt", "/v1/responses": "input"}
"""The field each generating route cannot do without."""
NUMBERS = {"temperature": (0.0, 2.0, True), "top_p": (0.0, 1.0, False), "frequency_penalty": (-2.0, 2.0, True),
           "presence_penalty": (-2.0, 2.0, True)}
"""Number fields of OpenAI's API: (lowest, highest, whether the lowest itself is allowed)."""
KINDS = {"model": (str,), "stream": (bool,), "seed": (int,), "stop": (str, list), "user": (str,)}


class Refused(Exception):
    """A request this endpoint will not serve: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = {k: str(v) for k, v in (headers or {}).items()}


@dataclass
class RequestState:
    """What the guard learned about the request being handled (a context variable, so handlers see their own)."""

    asked: tuple[str, int] | None = None
    """The field that asked for new tokens and its value, when the client set one."""
    gone: threading.Event = field(default_factory=threading.Event)
    """Set when the client disconnects: generation stops at its next token."""
    sample: bool | None = None
    """Whether to sample, by OpenAI's rules for temperature and top_p (None: the model's generation config)."""
    seed: int | None = None
    """The seed sampling starts from, when the client sent one."""
    stops: list[str] = field(default_factory=list)
    """Stop sequences: the answer ends before the first one."""
    openai_sampling: bool = True
    """Whether sampling follows OpenAI's parameters (no generation_config, transformers' own extension, was sent)."""


_STATE: ContextVar[RequestState | None] = ContextVar("serve_request", default=None)


def refusal_body(err: Refused) -> bytes:
    """The JSON a refused client gets: FastAPI's ``detail`` and OpenAI's ``error`` object, same message."""
    kind = {503: "server_busy", 401: "authentication_error", 500: "server_error"}.get(err.status,
                                                                                     "invalid_request_error")
    return json.dumps({"detail": err.message, "error": {"message": err.message, "type": kind,
                                                        "code": err.status}}).encode()


def context_length(model, processor) -> int:
    """Tokens the model can attend to (prompt and answer together): the smaller of the model config's positions
    and the tokenizer's model_max_length, each where it is set."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [v for v in (getattr(config, n, None) for n in ("max_position_embeddings", "n_positions",
                                                                 "max_sequence_length", "seq_length"))
              if isinstance(v, int) and 0 < v < NO_LIMIT][:1]
    tokenizer_max = getattr(getattr(processor, "tokenizer", processor), "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < NO_LIMIT:
        limits.append(tokenizer_max)
    return min(limits) if limits else FALLBACK_CONTEXT


def body_limit(context: int) -> int:
    """The largest request body a prompt within ``context`` tokens can need."""
    return context * BYTES_PER_TOKEN + BODY_OVERHEAD


def _shown(value) -> str:
    return json.dumps(value)[:40]


def _number(name: str, value, low: float, high: float, low_ok: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Refused(400, f"{name} must be a number (got {_shown(value)}).")
    if value > high or value < low or (value == low and not low_ok):
        bound = "at least" if low_ok else "above"
        raise Refused(400, f"{name} must be {bound} {low:g} and at most {high:g} (got {_shown(value)}).")


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise Refused(400, "messages must be a non-empty list of {\"role\", \"content\"} objects.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Refused(400, f"messages[{i}] must be an object with a role and a content (got {_shown(message)}).")
        if not isinstance(message.get("role"), str):
            raise Refused(400, f"messages[{i}].role must be a string (got {_shown(message.get('role'))}).")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise Refused(400, f"messages[{i}].content must be a string or a list of parts (got {_shown(content)}).")


def check_fields(body: dict, path: str) -> None:
    """Required fields, types and ranges (OpenAI's): a client's mistake is a 400 naming the field, never a 500."""
    required = REQUIRED.get(path)
    if required and body.get(required) is None:
        raise Refused(400, f"{required} is required.")
    if path == "/v1/chat/completions":
        _check_messages(body["messages"])
    elif required and not isinstance(body[required], (str, list)):
        raise Refused(400, f"{required} must be a string or a list (got {_shown(body[required])}).")
    for name, kinds in KINDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            names = " or ".join({str: "a string", bool: "true or false", int: "a whole number", list: "a list"}[k]
                                for k in kinds)
            raise Refused(400, f"{name} must be {names} (got {_shown(value)}).")
    for name, (low, high, low_ok) in NUMBERS.items():
        if body.get(name) is not None:
            _number(name, body[name], low, high, low_ok)


def _whole_number(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Refused(400, f"{name} must be a whole number of at least 1 (got {json.dumps(value)[:40]}).")
    return value


def _generation_options(raw) -> dict:
    """transformers' ``generation_config`` extension: a JSON object in a string that makes a valid GenerationConfig."""
    try:
        options = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise Refused(400, "generation_config must be a JSON object in a string.")
    for name, high in (("temperature", 100.0), ("top_p", 1.0)):
        if options.get(name) is not None:
            _number(f"generation_config.{name}", options[name], 0.0, high, name == "temperature")
    from transformers import GenerationConfig

    try:
        GenerationConfig(**options)  # validates what it can (more fails in generate(): a 500 naming no field)
    except (TypeError, ValueError) as err:
        raise Refused(400, f"generation_config is not a valid generation config: {str(err)[:300]}") from None
    return options


def check_body(body, path: str = "", batching: bool = False) -> RequestState:
    """Checks that need only the parsed body; what the client asked for, for the generation checks. ``batching``:
    the server batches requests continuously (per-request sampling fields are refused: core.ship.params)."""
    if not isinstance(body, dict):
        raise Refused(400, "The request body must be a JSON object.")
    check_fields(body, path)
    message = params.refusal(body, path) or (params.batching_refusal(body) if batching else None)
    if message:
        raise Refused(400, message)
    state = RequestState(sample=params.sampling(body), seed=body.get("seed"), stops=params.stops_of(body),
                         openai_sampling=body.get("generation_config") is None)
    for name in TOKEN_FIELDS:
        if body.get(name) is not None:
            state.asked = state.asked or (name, _whole_number(name, body[name]))
    raw = body.get("generation_config")
    if raw is not None:
        options = _generation_options(raw)
        for name in ("max_new_tokens", "max_length") if state.asked is None else ():
            if options.get(name) is not None:
                state.asked = (f"generation_config.{name}", _whole_number(name, options[name]))
                break
    return state


def check_generation(model, processor, inputs, gen_config, state: RequestState | None) -> None:
    """Refuse a prompt beyond the context or an answer it cannot hold; cap transformers' default length."""
    ids = inputs["input_ids"]
    prompt = len(ids) if isinstance(ids, list) else ids.shape[-1]
    context = context_length(model, processor)
    if prompt >= context:
        raise Refused(400, f"The prompt is {prompt} tokens; this model's context is {context} tokens (prompt and "
                           f"answer together), so a prompt may have at most {context - 1}.")
    room = context - prompt
    wanted = gen_config.max_new_tokens
    if wanted is None:  # a generation_config without max_new_tokens counts its max_length from the start
        total = gen_config.max_length or model.generation_config.max_length or DEFAULT_MAX_LENGTH
        wanted = max(1, total - prompt)
    if wanted > room and state is not None and state.asked is not None:
        name, value = state.asked
        raise Refused(400, f"{name} is {value}, but this model can write at most {room} new tokens after this "
                           f"{prompt}-token prompt (its context is {context} tokens).")
    gen_config.max_new_tokens = min(wanted, room)


def _stop_when_gone(inputs, state: RequestState | None):
    """``inputs`` plus a stopping criterion that ends generate() once the client has gone."""
    if state is None:
        return inputs
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class ClientGone(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), state.gone.is_set(), dtype=torch.bool, device=input_ids.device)

    return {**inputs, "stopping_criteria": StoppingCriteriaList([ClientGone()])}


def _seeded(inputs, seed: int):
    """``inputs`` plus a logits processor that seeds torch's generator when the first token is drawn: on the
    inference thread, right before sampling, so the same seed gives the same answer whatever ran before."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class SeedOnce(LogitsProcessor):
        def __init__(self) -> None:
            self.done = False

        def __call__(self, input_ids, scores):
            if not self.done:
                self.done = True
                torch.manual_seed(seed)
            return scores

    return {**inputs, "logits_processor": LogitsProcessorList([SeedOnce()])}


class GuardedManager:
    """A transformers generation manager whose generations are checked first and stop when the client goes."""

    def __init__(self, inner, batching: bool) -> None:
        self.inner, self.batching = inner, batching

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _prepare(self, model, processor, inputs, gen_config):
        state = _STATE.get()
        check_generation(model, processor, inputs, gen_config, state)
        if state is not None and state.sample is not None:
            gen_config.do_sample = state.sample  # transformers only ever turns sampling off (temperature 0)
        if state is not None and state.openai_sampling and gen_config.do_sample and gen_config.top_k is None:
            gen_config.top_k = 0  # OpenAI has no top_k; generate() would fill in transformers' default of 50
        if self.batching:  # continuous batching takes no stopping criteria nor processors; transformers cancels
            return inputs
        if state is not None and state.seed is not None:
            inputs = _seeded(inputs, state.seed)
        return _stop_when_gone(inputs, state)

    def generate_streaming(self, model, processor, inputs, gen_config, **kwargs):
        inputs = self._prepare(model, processor, inputs, gen_config)
        queue, streamer = self.inner.generate_streaming(model, processor, inputs, gen_config, **kwargs)
        state = _STATE.get()
        return (params.StopQueue(queue, state.stops) if state is not None and state.stops else queue), streamer

    async def generate_non_streaming(self, model, processor, inputs, gen_config, **kwargs):
        inputs = self._prepare(model, processor, inputs, gen_config)
        text, input_len, generated = await self.inner.generate_non_streaming(model, processor, inputs, gen_config,
                                                                              **kwargs)
        state = _STATE.get()
        return (params.cut_at_stop(text, state.stops)[0] if state is not None else text), input_len, generated


def guarded_state(continuous_batching: bool):
    """transformers' GenerationState handing out GuardedManagers."""
    from transformers.cli.serving.utils import GenerationState

    class GuardedState(GenerationState):
        def get_manager(self, model_id: str, use_cb: bool = False):
            return GuardedManager(super().get_manager(model_id, use_cb=use_cb), batching=use_cb)

    return GuardedState(continuous_batching=continuous_batching)


async def _send_refusal(send, err: Refused) -> None:
    body = refusal_body(err)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: admission, body size, body checks, disconnects, and the idle clock (``activity``)."""

    def __init__(self, app, manager, max_requests: int, activity, counted: tuple[str, ...],
                 api_key_hash: str = "", batching: bool = False, rewrite=None) -> None:
        self.app, self.manager, self.max_requests, self.batching = app, manager, max_requests, batching
        self.rewrite = rewrite  # (body, path) -> body: +prompt / +rag messages (core.ship.variants)
        self.activity, self.counted, self.api_key_hash = activity, counted, api_key_hash
        self.admitted = 0

    def limit(self) -> tuple[int, int]:
        """(body bytes, context tokens): from the largest context among the loaded models."""
        loaded = [(t.model, t.processor) for t in list(self.manager.loaded_models.values())]
        contexts = [context_length(m, p) for m, p in loaded if m is not None]  # None: being unloaded
        context = max(contexts, default=FALLBACK_CONTEXT)
        return body_limit(context), context

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key_hash and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            return await _send_refusal(send, Refused(
                401, "This endpoint needs its API key: send the header 'Authorization: Bearer KEY' (an OpenAI "
                     "client's api_key).", {"WWW-Authenticate": "Bearer"}))
        counted = scope["path"].startswith(self.counted)
        if counted:
            self.activity.begin()
        try:
            if scope["method"] == "POST":
                await self._post(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            if counted:
                self.activity.end()

    def _authorized(self, scope) -> bool:
        """Whether the request carries the key: its hash compared in constant time with the one configured."""
        scheme, _, key = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        presented = hashlib.sha256(key.strip()).hexdigest()  # the key's UTF-8 bytes, as key_hash hashes them
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented, self.api_key_hash)

    async def _post(self, scope, receive, send) -> None:
        generating = scope["path"] in GENERATING
        if generating and self.admitted >= self.max_requests:
            return await _send_refusal(send, Refused(
                503, f"The endpoint is busy: it serves {self.max_requests} requests at a time (one generates, "
                     f"the others wait their turn). Retry in {RETRY_AFTER_S} s.", {"Retry-After": RETRY_AFTER_S}))
        self.admitted += generating
        try:
            await self._checked(scope, receive, send)
        finally:
            self.admitted -= generating

    async def _checked(self, scope, receive, send) -> None:
        try:
            body = await self._read(scope, receive)
            if body is None:
                return  # the client left before sending its body
            path = scope["path"]
            parsed = _parse(body) if path in GENERATING else None
            state = check_body(parsed, path, self.batching) if path in GENERATING else RequestState()
            if self.rewrite is not None and path in GENERATING:  # +prompt/+rag messages (database work: a thread)
                body = json.dumps(await asyncio.to_thread(self.rewrite, parsed, path)).encode()
        except Refused as err:
            return await _send_refusal(send, err)
        token = _STATE.set(state)
        delivered, gone = False, asyncio.Event()

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            state.gone.set()
            gone.set()

        watcher = asyncio.create_task(watch())
        started = False

        async def sending(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, replay, sending)
        except Exception:  # noqa: BLE001 - answered here, a failure keeps the connection; re-raised, uvicorn drops it
            traceback.print_exc()
            if started:
                raise
            await _send_refusal(send, Refused(500, "The endpoint failed on this request (its log says why); it "
                                                   "still serves others."))
        finally:
            state.gone.set()  # whatever still generates for this request stops at its next token
            watcher.cancel()
            _STATE.reset(token)

    async def _read(self, scope, receive) -> bytes | None:
        """The whole body, refused (413) as soon as it is larger than the limit: before it is parsed."""
        cap, context = self.limit()
        too_big = Refused(413, f"The request body is larger than this endpoint takes ({cap} bytes, enough for a "
                               f"prompt of the model's full context of {context} tokens).")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > cap:
                raise too_big
            if not message.get("more_body"):
                return b"".join(chunks)


def _parse(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        raise Refused(400, "The request body is not valid JSON.") from None
