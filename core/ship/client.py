"""Talk to a serving process over HTTP, as any OpenAI-compatible client does (no torch, no model in this process).

``stream_answer`` yields the answer's text pieces as the endpoint's server-sent events arrive and fills an
``Answer`` with what the Playground shows beside it: time to first token, tokens per second, why it ended.
Closing the generator closes the connection, and the server stops generating (Stop).

Every call sends the API key of FINETUNE_STUDIO_API_KEY when it is set, as the Playground's endpoint then asks
for it (core.ship.serving.playground_server starts it with that key).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator

from core.errors import StudioError
from core.evaluate.generate_config import Decoding
from core.ship.serving import env_api_key

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 600  # the first request to a system waits while the server loads it


class EndpointError(StudioError):
    """The endpoint refused the request or broke off."""


@dataclass
class Answer:
    """One streamed answer and its timings."""

    text: str = ""
    started: float = 0.0
    first_token_s: float | None = None
    """Seconds from sending the request to the first piece of text."""
    seconds: float | None = None
    """Seconds from sending the request to the last piece."""
    completion_tokens: int | None = None
    finish_reason: str | None = None
    """"stop" (the model ended its turn), "length" (max new tokens) or None (stopped by the user)."""
    completion_id: str | None = None
    """The endpoint's id of this chat completion (what ``POST /v1/feedback`` of a pilot names)."""

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second after the first one arrived (the decoding speed)."""
        if not self.completion_tokens or self.seconds is None or self.first_token_s is None:
            return None
        span = self.seconds - self.first_token_s
        return (self.completion_tokens - 1) / span if span > 0 and self.completion_tokens > 1 else None


def headers() -> dict:
    """The Authorization header of the configured API key, or none."""
    key = env_api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def request_body(model: str | None, messages: list[dict], decoding: Decoding, stream: bool) -> dict:
    """An OpenAI chat-completions body for ``decoding``: greedy is temperature 0; sampling sends the full
    generation config (transformers' extension), so it samples even where the model's default is greedy."""
    body: dict = {"messages": messages, "stream": stream, "seed": decoding.seed}
    if model:
        body["model"] = model
    if decoding.do_sample:
        body["generation_config"] = json.dumps({"do_sample": True, "temperature": decoding.temperature,
                                                "top_p": decoding.top_p, "max_new_tokens": decoding.max_new_tokens})
    else:
        body.update(temperature=0, max_tokens=decoding.max_new_tokens)
    return body


def _post(url: str, body: dict, stream: bool):
    import requests

    try:
        response = requests.post(f"{url}/v1/chat/completions", json=body, stream=stream, headers=headers(),
                                 timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.RequestException as err:
        raise EndpointError(f"The model endpoint at {url} did not answer ({type(err).__name__}).") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        response.close()
        raise EndpointError(f"The model endpoint refused the request ({response.status_code}): {str(detail)[:300]}")
    return response


def complete(url: str, model: str | None, messages: list[dict], decoding: Decoding) -> Answer:
    """One non-streamed answer."""
    answer = Answer(started=time.perf_counter())
    data = _post(url, request_body(model, messages, decoding, stream=False), stream=False).json()
    choice = data["choices"][0]
    answer.text = choice["message"].get("content") or ""
    answer.finish_reason = choice.get("finish_reason")
    answer.completion_id = data.get("id")
    answer.completion_tokens = (data.get("usage") or {}).get("completion_tokens")
    answer.seconds = answer.first_token_s = time.perf_counter() - answer.started
    return answer


def stream_answer(url: str, model: str | None, messages: list[dict], decoding: Decoding,
                  answer: Answer) -> Iterator[str]:
    """Yield the answer's text pieces as they arrive, filling ``answer`` as it goes."""
    answer.started = time.perf_counter()
    response = _post(url, request_body(model, messages, decoding, stream=True), stream=True)
    try:
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            event = json.loads(payload)
            if "error" in event:
                raise EndpointError(f"The model endpoint failed while answering: {event['error']}")
            answer.completion_id = answer.completion_id or event.get("id")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if answer.first_token_s is None:
                        answer.first_token_s = time.perf_counter() - answer.started
                    answer.text += piece
                    yield piece
                if choice.get("finish_reason"):
                    answer.finish_reason = choice["finish_reason"]
            if event.get("usage"):
                answer.completion_tokens = event["usage"].get("completion_tokens")
            answer.seconds = time.perf_counter() - answer.started
    finally:
        response.close()  # a Stop closes the stream here; the server cancels the generation


def health(url: str) -> bool:
    """Whether the endpoint answers its health check (a quick look, for pages that wait on it)."""
    import requests

    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def load(url: str, model: str) -> None:
    """Have the endpoint load ``model`` now (transformers' /load_model, streamed progress), so the first answer's
    time to first token measures generation, not loading."""
    import requests

    try:
        response = requests.post(f"{url}/load_model", json={"model": model}, stream=True, headers=headers(),
                                 timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.RequestException as err:
        raise EndpointError(f"The model endpoint at {url} did not answer ({type(err).__name__}).") from None
    with response:
        if response.status_code != 200:
            raise EndpointError(f"The model endpoint cannot load {model} ({response.status_code}): "
                                f"{response.text[:300]}")
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):  # type: ignore[arg-type]  # decode_unicode: str lines
                event = json.loads(line[5:])
                if event.get("status") == "error":
                    raise EndpointError(f"The model endpoint cannot load {model}: {event.get('message')}")
