"""serve-model cannot be taken down by one request: real HTTP against a real `finetune-studio serve-model` process.

A copy of the tiny random model with a small context (128 tokens) makes "beyond the context" cheap; a copy with a
long one (a million tokens) makes an abandoned generation long enough to block everything behind it.
"""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from core.jobs.queue import list_jobs
from tests.fixtures_serve import HELLO, WAIT_S, post as _post, with_context as _with_context

LONG = {"max_new_tokens": 200_000, "min_new_tokens": 200_000, "do_sample": False}  # minutes on a CPU, no early EOS


def _server_rss(session) -> int:
    import psutil

    job = next(j for j in list_jobs(session, kind="serve") if j.status == "running")
    return psutil.Process(job.pid).memory_info().rss


def _open(url: str, body: dict, path: str = "/chat/completions") -> socket.socket:
    """Send a request on a raw connection and leave it open (closing it is how a client gives up)."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=WAIT_S)
    data = json.dumps(body).encode()
    sock.sendall(f"POST {address.path}{path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {seen[-300:]!r}"
        seen += chunk
    return seen


@pytest.mark.slow
def test_serve_model_refuses_what_its_context_cannot_hold(session, serve, tiny_model, tmp_path):
    url = serve(_with_context(tiny_model, tmp_path / "short", 128))
    ok = _post(url, "/chat/completions", {"messages": HELLO, "max_tokens": 5})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 5
    before = _server_rss(session)

    # a 1 MB prompt is refused before it is parsed or tokenized, and the server stays its size
    huge = _post(url, "/chat/completions", {"messages": [{"role": "user", "content": "hello " * 175_000}]})
    assert huge.status_code == 413 and "128 tokens" in huge.json()["detail"], huge.text
    assert _server_rss(session) < before + 100 * 2 ** 20

    # a prompt small in bytes but beyond the context: 400 naming the limit, on every generating route
    long_prompt = "word " * 300
    for path, body in (("/chat/completions", {"messages": [{"role": "user", "content": long_prompt}]}),
                       ("/completions", {"prompt": long_prompt}), ("/responses", {"input": long_prompt})):
        refused = _post(url, path, body)
        assert refused.status_code == 400, (path, refused.text)
        assert "context is 128 tokens" in refused.json()["detail"]
        assert refused.json()["error"]["message"] == refused.json()["detail"]  # OpenAI clients read this one

    # asking for more new tokens than the context leaves: 400 naming the field and the most it can be
    for path, body, name in (
            ("/chat/completions", {"messages": HELLO, "max_tokens": 1_000_000_000}, "max_tokens"),
            ("/chat/completions", {"messages": HELLO, "max_completion_tokens": 500}, "max_completion_tokens"),
            ("/chat/completions", {"messages": HELLO, "generation_config": json.dumps({"max_new_tokens": 10 ** 9})},
             "generation_config.max_new_tokens"),
            ("/completions", {"prompt": "Hi", "max_tokens": 1_000_000_000}, "max_tokens"),
            ("/responses", {"input": "Hi", "max_output_tokens": 1_000_000_000}, "max_output_tokens"),
            ("/chat/completions", {"messages": HELLO, "max_tokens": -1}, "max_tokens")):
        refused = _post(url, path, body)
        assert refused.status_code == 400 and name in refused.json()["detail"], (path, refused.text)
        assert "at most" in refused.json()["detail"] or "at least 1" in refused.json()["detail"]

    # without max_tokens, transformers' default (1024) is lowered to what the context leaves
    default = _post(url, "/chat/completions", {"messages": HELLO, "temperature": 0}).json()["usage"]
    assert default["prompt_tokens"] + default["completion_tokens"] <= 128


@pytest.mark.slow
def test_a_client_that_gives_up_does_not_block_the_next_request(serve, tiny_model, tmp_path):
    url = serve(_with_context(tiny_model, tmp_path / "long", 1_000_000))
    for stream in (True, False):
        sock = _open(url, {"messages": HELLO, "stream": stream, "generation_config": json.dumps(LONG)})
        if stream:
            _read_until(sock, b'"content"')  # it is generating
        else:
            time.sleep(2)  # let it start: nothing comes back before the end of a non-streamed answer
        sock.close()
        answer = _post(url, "/chat/completions", {"messages": HELLO, "max_tokens": 5})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 5


@pytest.mark.slow
def test_requests_beyond_the_four_admitted_are_refused_at_once_with_retry_after(serve, tiny_model, tmp_path):
    url = serve(_with_context(tiny_model, tmp_path / "long", 1_000_000))
    holders = [_open(url, {"messages": HELLO, "stream": True, "generation_config": json.dumps(LONG)})
               for _ in range(4)]
    for sock in holders:
        assert _read_until(sock, b"data:").startswith(b"HTTP/1.1 200")  # admitted: one generates, three wait
    with ThreadPoolExecutor(26) as pool:  # 30 clients at once, as seen
        extra = list(pool.map(lambda _: _post(url, "/chat/completions", {"messages": HELLO, "max_tokens": 5},
                                              timeout=60), range(26)))
    assert {r.status_code for r in extra} == {503}
    assert extra[0].headers["Retry-After"] == "5" and "4 requests at a time" in extra[0].json()["detail"]
    for sock in holders:
        sock.close()
    deadline = time.monotonic() + WAIT_S  # the slots free as the server notices each client has gone
    while (answer := _post(url, "/chat/completions", {"messages": HELLO, "max_tokens": 5})).status_code == 503:
        assert time.monotonic() < deadline, answer.text
        time.sleep(int(answer.headers["Retry-After"]))  # as a client honouring Retry-After does
    assert answer.status_code == 200
