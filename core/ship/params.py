"""Which fields of an OpenAI request serve-model honours, and how: one table per generating route.

Plain data, pure functions and ``StopQueue`` (core.ship.guard raises the refusals and applies the rest), so
docs/USER_GUIDE.md's list of what is supported and what the endpoint does are the same table. A field is either
honoured (``HONOURED``), accepted only at the value that asks for what the endpoint does anyway (``ONLY_AS``: ``n`` 1,
``logprobs`` false, a zero penalty...), or refused with a 400 naming it: never a 200 that silently ignores it.

OpenAI's semantics, as its API reference states them: ``temperature`` 0 is greedy, above 0 samples, and so does
``top_p`` below 1 (with the model's own temperature); ``seed`` makes sampling repeatable; ``stop`` ends the text
before the first stop sequence, which the answer does not contain.
"""
from __future__ import annotations

import json

CHAT, COMPLETIONS, RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"
SHARED = {"model", "stream", "temperature", "top_p", "seed", "generation_config", "user", "safety_identifier",
          "stream_options", "metadata", "prompt_cache_key"}
"""Honoured on every generating route. ``generation_config`` is transformers' own extension (a JSON string of a
GenerationConfig); ``user``, ``safety_identifier``, ``metadata`` and ``prompt_cache_key`` only label or hint and
change no answer; ``stream_options.include_usage`` is what the stream does anyway (usage on the last chunk)."""
HONOURED = {
    CHAT: SHARED | {"messages", "max_tokens", "max_completion_tokens", "stop", "chat_template_kwargs",
                    "parallel_tool_calls"},
    COMPLETIONS: SHARED | {"prompt", "max_tokens", "stop"},
    RESPONSES: SHARED | {"input", "instructions", "max_output_tokens", "parallel_tool_calls"},
}
"""Fields each route honours as sent (``parallel_tool_calls`` means nothing without tools, which are refused)."""
ONLY_AS = {
    "n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,),
    "presence_penalty": (0,), "frequency_penalty": (0,), "response_format": ({"type": "text"},),
    "tools": ([],), "tool_choice": ("none",), "store": (False,), "modalities": (["text"],),
    "service_tier": ("auto", "default"), "logit_bias": ({},), "text": ({"format": {"type": "text"}},),
    "truncation": ("disabled",), "include": ([],), "background": (False,),
}
"""Fields accepted only at the value that asks for what the endpoint does anyway (null is always accepted)."""
WHY = {
    "n": "it writes one answer per request (send n requests)",
    "best_of": "it writes one answer per request",
    "logprobs": "it returns no log probabilities",
    "top_logprobs": "it returns no log probabilities",
    "presence_penalty": "it has no penalty of OpenAI's definition (transformers' repetition_penalty is another)",
    "frequency_penalty": "it has no penalty of OpenAI's definition (transformers' repetition_penalty is another)",
    "response_format": "it cannot constrain the answer to JSON",
    "tools": "the served models were not trained to call tools",
    "tool_choice": "the served models were not trained to call tools",
    "functions": "the served models were not trained to call tools",
    "function_call": "the served models were not trained to call tools",
    "logit_bias": "it does not bias tokens",
    "store": "it stores nothing",
    "suffix": "the served models do not fill in the middle",
}
"""Why a field is refused, where a reason helps the client's author."""
MAX_STOPS = 4  # OpenAI's limit
SHARED_IN_BATCH = ("temperature", "top_p", "seed", "generation_config")
"""Fields continuous batching cannot honour per request: transformers' batching samples every request it batches
with one generation config, the one it started with, and draws from one generator. Refused there (400 naming them;
a generation_config too, even one that only sets a length: the first request's would become everyone's)."""


def batching_refusal(body: dict) -> str | None:
    """The 400 message for the first field of ``body`` continuous batching would ignore, naming it; None when
    there is none."""
    for name in SHARED_IN_BATCH:
        if body.get(name) is not None:
            return (f"{name} is not supported with continuous batching: the requests batched together share one "
                    f"generation config (the model's own), so a per-request {name} would be ignored. Leave it out "
                    f"(max_tokens still sets each answer's length), or serve without --continuous-batching.")
    return None


def _same(value, ok) -> bool:
    """Equal as JSON values: 0 and 0.0 alike, but false is not 0."""
    if isinstance(value, bool) or isinstance(ok, bool):
        return value is ok
    if isinstance(value, (int, float)) and isinstance(ok, (int, float)):
        return value == ok
    return type(value) is type(ok) and value == ok


def _at_no_op(name: str, value) -> bool:
    return value is None or any(_same(value, ok) for ok in ONLY_AS.get(name, ()))


def refusal(body: dict, path: str) -> str | None:
    """The 400 message for the first field of ``body`` this route cannot honour, naming it; None when all are."""
    honoured = HONOURED.get(path)
    if honoured is None:
        return None
    for name in body:
        if name in honoured or (name in ONLY_AS and _at_no_op(name, body[name])):
            continue
        if name in ONLY_AS or name in WHY:
            allowed = " or ".join(json.dumps(v) for v in ONLY_AS.get(name, ()))
            why = WHY.get(name, "this endpoint cannot honour it")
            return (f"{name} is not supported here: {why}" + (f" (it takes {allowed} or null only)." if allowed
                                                              else ".") + f" Got {json.dumps(body[name])[:60]}.")
        return f"{name} is not a field this endpoint takes on {path}; it takes {', '.join(sorted(honoured))}."
    if body.get("chat_template_kwargs") is not None and not isinstance(body["chat_template_kwargs"], dict):
        return "chat_template_kwargs must be an object."
    if path == RESPONSES and body.get("input") in ("", []):
        return "input must not be empty."
    if path == CHAT and isinstance(body.get("messages"), list):
        parts = [(i, j, p) for i, m in enumerate(body["messages"]) if isinstance(m, dict)
                 and isinstance(m.get("content"), list) for j, p in enumerate(m["content"])]
        for i, j, part in parts:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else part
                return (f"messages[{i}].content[{j}] is a {json.dumps(kind)[:40]} part: the served models read text "
                        f"only (parts of type \"text\").")
            if not isinstance(part.get("text"), str):
                return f"messages[{i}].content[{j}].text must be a string."
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if isinstance(stops, list) and not (len(stops) <= MAX_STOPS and all(isinstance(s, str) and s for s in stops)):
        return f"stop must be a non-empty string or a list of at most {MAX_STOPS} non-empty strings."
    return None


def sampling(body: dict) -> bool | None:
    """Whether the request samples by OpenAI's rules: temperature 0 is greedy; above 0, or top_p below 1, samples.
    None when it sets neither (the model's own generation config decides, as in the generation job)."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and float(temperature) == 0.0:
        return False
    if temperature is not None or (top_p is not None and float(top_p) < 1.0):
        return True
    return None


def stops_of(body: dict) -> list[str]:
    """The request's stop sequences (``stop``: a string or a list of them)."""
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else list(stop or [])


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to, not including, the first stop sequence in it; and whether one was found."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(found)], True) if found else (text, False)


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of ``text`` may be the start of a stop sequence (a stream holds them back
    until the next piece says whether the stop sequence follows)."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
               default=0)


class StopQueue:
    """The handler's side of a streaming queue, ending the text before the first stop sequence: text that may be
    the start of one is held back until the next piece shows whether it is."""

    def __init__(self, inner, stops: list[str]) -> None:
        self.inner, self.stops = inner, stops
        self.ready: list = []
        self.pending, self.stopped = "", False

    def _take(self, item) -> None:
        if self.stopped:  # the end was passed on with the stop; what the last token brought after it is dropped
            return
        if type(item) is not str:  # the end (None), an error, a tool call or reasoning text: pass it on
            if item is None and self.pending:
                self.ready.append(self.pending)
                self.pending = ""
            self.ready.append(item)
            return
        text, self.stopped = cut_at_stop(self.pending + item, self.stops)
        keep = 0 if self.stopped else held_back(text, self.stops)
        self.pending = text[len(text) - keep:] if keep else ""
        if text[:len(text) - keep]:
            self.ready.append(text[:len(text) - keep])
        if self.stopped:
            self.ready.append(None)

    async def get(self):
        while not self.ready:
            self._take(await self.inner.get())
        return self.ready.pop(0)

    def get_nowait(self):
        while not self.ready:
            self._take(self.inner.get_nowait())  # raises asyncio.QueueEmpty when nothing waits
        return self.ready.pop(0)
