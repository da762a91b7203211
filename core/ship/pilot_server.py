"""serve-model --pilot ID: every chat completion is recorded into the pilot, and ``POST /v1/feedback`` attaches an
agent's ratings to it (core.ship.server adds both when ServeConfig.pilot_id is set).

``PilotRecorder`` is an ASGI middleware inside the guard (so it sees only requests the guard admitted, with the body
already within the guard's limits). For ``POST /v1/chat/completions`` it keeps the request's messages and the
answer as it goes out (one JSON body, or server-sent events), and writes the exchange, under the completion id the
client received, before the answer's last piece is sent (each piece is held until the next one comes): a client
that sends feedback right after the answer finds it. A client's own X-Request-Id is dropped there, since
transformers makes it the completion id and a pilot needs each id once. The conversation is the
``X-Conversation-Id`` header when the front end sends one, else a hash of the conversation's first user message and
the client's ``user`` field.
"""
from __future__ import annotations

import asyncio
import hashlib
import json

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError

from core.errors import InvalidInput, NotFound, StudioError
from core.ship.guard import Refused
from core.ship.pilots import record_served, served_feedback
from storage.db import session_scope

CHAT = "/v1/chat/completions"
FEEDBACK = "/v1/feedback"
CONVERSATION_HEADER = b"x-conversation-id"


def answer_of(body: bytes) -> tuple[str | None, str]:
    """(completion id, answer text) of a chat completion response: a JSON body or server-sent events."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text.startswith("data:"):
        try:
            data = json.loads(text)
        except ValueError:
            return None, ""
        choices = data.get("choices") or [{}]
        return data.get("id"), ((choices[0].get("message") or {}).get("content") or "")
    completion_id, pieces = None, []
    for line in text.splitlines():
        payload = line[5:].strip() if line.startswith("data:") else ""
        if not payload or payload == "[DONE]":
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        completion_id = completion_id or event.get("id")
        for choice in event.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
    return completion_id, "".join(pieces)


def conversation_of(request: dict, header: bytes | None) -> str:
    if header:
        return header.decode("utf-8", errors="replace")[:64]
    first = next((m.get("content") for m in request.get("messages") or [] if m.get("role") == "user"), "")
    digest = hashlib.sha256(json.dumps([request.get("user") or "", first], default=str).encode()).hexdigest()
    return digest[:32]


def _record(pilot_id: int, request: dict, headers: dict, response: bytes) -> None:
    completion_id, answer = answer_of(response)
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    if not completion_id or not messages:
        return
    messages = [{"role": m.get("role", ""), "content": m.get("content") if isinstance(m.get("content"), str)
                 else json.dumps(m.get("content"))} for m in messages]
    try:
        with session_scope() as s:
            record_served(s, pilot_id, client=str(request.get("user") or "api client"),
                          conversation_id=conversation_of(request, headers.get(CONVERSATION_HEADER)),
                          messages=messages, answer=answer, completion_id=completion_id)
    except (StudioError, SQLAlchemyError) as err:  # the answer still goes out; the log says what was not kept
        print(f"pilot {pilot_id}: exchange {completion_id} not recorded: {err}", flush=True)


class PilotRecorder:
    """ASGI middleware: records each chat completion into the pilot (see the module's docstring)."""

    def __init__(self, app, pilot_id: int) -> None:
        self.app, self.pilot_id = app, pilot_id

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"x-request-id"])
        sent: list = []
        answer: list = []
        status: dict = {}
        held: list = []

        async def receiving():
            message = await receive()
            if message["type"] == "http.request":
                sent.append(message.get("body", b""))
            return message

        async def sending(message):
            # Each body piece goes out when the next one comes, so the last bytes a client waits for (the whole
            # body of a plain answer, "[DONE]" of a stream) leave only after the exchange is recorded.
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            if message["type"] != "http.response.body":
                return await send(message)
            answer.append(message.get("body", b""))
            if message.get("more_body"):
                if held:
                    await send(held.pop())
                held.append(message)
                return
            if status.get("code") == 200:
                try:
                    request = json.loads(b"".join(sent) or b"{}")
                except ValueError:
                    request = {}
                await asyncio.to_thread(_record, self.pilot_id, request, headers, b"".join(answer))
            if held:
                await send(held.pop())
            await send(message)

        await self.app(scope, receiving, sending)


def add_feedback_route(app, pilot_id: int) -> None:
    """``POST /v1/feedback``: 200 with the exchange's id, 400 for a bad value, 404 for an unknown completion id."""
    def attach(body) -> dict:
        with session_scope() as s:
            row = served_feedback(s, pilot_id, body)
            return {"object": "pilot.feedback", "exchange_id": row.id, "completion_id": row.completion_id,
                    "ratings": row.ratings, "escalate": row.escalate}

    @app.post(FEEDBACK)
    async def feedback(request: Request):
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise Refused(400, "The request body is not valid JSON.") from None
        try:
            return await asyncio.to_thread(attach, body)
        except NotFound as err:
            raise Refused(404, str(err)) from None
        except InvalidInput as err:
            raise Refused(400, str(err)) from None
