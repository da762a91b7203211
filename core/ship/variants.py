"""Prompted and +RAG systems on an endpoint (serve-model): each chat request for a ``+prompt`` / ``+rag`` key is sent
to its plain system's model with the messages core.evaluate.augment builds, in one place, in front of transformers'
handlers (core.ship.guard calls ``chat_rewriter``'s function on the parsed body of every chat completion).

The model manager resolves a variant key to its plain system (core.ship.systems.resolve), so ``run:3+rag`` and
``run:3`` share one loaded model. The project whose team prompt and documents a request uses: the run's or the
export's own project; for a base model, the project the serving job was started in.
"""
from __future__ import annotations

from typing import Callable

from core.errors import InvalidInput, StudioError
from core.evaluate.augment import augment, variant_project
from core.ship.guard import GENERATING, Refused
from core.systems import SystemKey
from storage.db import session_scope

CHAT = GENERATING[0]


def _text(content) -> str:
    """A message's text: OpenAI clients may send a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def chat_rewriter(pinned: str, project_id: int | None) -> Callable[..., dict]:
    """The function that gives a chat completion body its variant's messages: the body unchanged for a plain
    system (or a name that is no system key: transformers answers it), else the same body with ``messages`` as
    core.evaluate.augment builds them. ``pinned``: the endpoint's one system ("" for any); ``project_id``: the
    serving job's project. A variant that cannot answer (no team prompt, no documents) is refused with 400, and so
    is a variant asked on another generating route (``path``: completions and responses carry no messages to build
    on, and answering them with the plain system would hide that the variant was dropped)."""

    def rewrite(body: dict, path: str = CHAT) -> dict:
        try:
            found = SystemKey.parse(pinned or body.get("model") or "")
        except InvalidInput:
            return body
        if not found.variant:
            return body
        if path != CHAT:
            raise Refused(400, f"'{found}' is a +{found.variant} system: it answers chat completions only "
                               f"({CHAT}), where its messages are built; {path} would answer without them.")
        messages = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in body.get("messages") or []]
        try:
            with session_scope() as s:
                sent = augment(s, variant_project(s, str(found), project_id), str(found), messages)
        except StudioError as err:
            raise Refused(400, str(err)) from None
        return {**body, "messages": sent.messages}

    return rewrite
