"""serve-model is safe to expose: real HTTP against a real `finetune-studio serve-model` process (tiny model).

A non-loopback host needs an API key or --expose and the real bind address is printed; with a key every route but
/health answers 401 without it (the official openai client with the key works) and the key is nowhere in clear;
a malformed body is a 400 naming the field; a cancel ends a job that does not stop on SIGTERM with SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlmodel import Session, select

from storage.models import Job
from tests.helpers import ROOT, wait_until
from tests.fixtures_serve import HELLO, WAIT_S, post as _post, serve_model as _serve_model

KEY = "sk-test-7f3a9c1e5b2d4f60"


@pytest.fixture
def serve(workspace, project):
    """Start serve-model on a model folder; stopped (Ctrl-C) at the end. Yields args -> (/v1 URL, output lines);
    ``started`` holds each CLI process."""
    started = []

    def start(tiny_model, *args: str):
        proc, url, lines = _serve_model(workspace, f"base:{tiny_model}", "--port", "0", "--idle-timeout", "600",
                                        *args)
        started.append((proc, lines))
        return url, lines

    start.started = started
    yield start
    for proc, lines in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)


def _cli(workspace: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace))
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _listening(lines: list[str]) -> str:
    # printed right after the serving line
    return wait_until(lambda: next((line for line in lines if line.startswith("listening on")), None), 30,
                      lambda: "the 'listening on' line:\n" + "".join(lines), interval=0.1)


def _status(job_id: int) -> Job:
    from storage.db import get_engine

    with Session(get_engine(), expire_on_commit=False) as s:  # a plain read: no reconcile from the test's side
        return s.get(Job, job_id)


@pytest.mark.slow
def test_a_public_host_needs_a_key_or_expose_and_the_real_bind_address_is_printed(workspace, serve, tiny_model):
    # 0.0.0.0 without a key or --expose: refused before anything is queued, naming both ways out
    refused = _cli(workspace, "serve-model", f"base:{tiny_model}", "--host", "0.0.0.0", "--port", "0",
                   "--idle-timeout", "10")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "--api-key" in refused.stderr and "--expose" in refused.stderr, refused.stderr

    # with --expose it serves and says where it really listens, with a warning
    url, lines = serve(tiny_model, "--host", "0.0.0.0", "--expose")
    port = url.split(":")[-1].split("/")[0]
    said = _listening(lines)
    assert f"listening on 0.0.0.0:{port}" in said and "WARNING: no API key" in said, said
    assert requests.get(f"{url}/models", timeout=WAIT_S).status_code == 200  # no key asked: the user chose so


@pytest.mark.slow
def test_every_route_but_health_needs_the_api_key(session, workspace, serve, tiny_model):
    from openai import AuthenticationError, OpenAI

    url, lines = serve(tiny_model, "--api-key", KEY)
    base = url.removesuffix("/v1")
    assert "API key required" in _listening(lines)
    bodies = {"/v1/chat/completions": {"messages": HELLO, "max_tokens": 3}, "/v1/completions": {"prompt": "Hi"},
              "/v1/responses": {"input": "Hi"}, "/load_model": {"model": f"base:{tiny_model}"}}
    for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        for path, body in bodies.items():
            answer = requests.post(f"{base}{path}", json=body, headers=wrong, timeout=WAIT_S)
            assert answer.status_code == 401, (path, wrong, answer.text)
            assert answer.headers["WWW-Authenticate"] == "Bearer" and "API key" in answer.json()["error"]["message"]
        for path in ("/v1/models", "/v1/models/x", "/docs", "/openapi.json", "/nothing"):
            assert requests.get(f"{base}{path}", headers=wrong, timeout=WAIT_S).status_code == 401, path
    assert requests.get(f"{base}/health", timeout=WAIT_S).status_code == 200  # open: says only "up"

    key = {"Authorization": f"Bearer {KEY}"}
    assert requests.get(f"{url}/models", headers=key, timeout=WAIT_S).status_code == 200
    ok = requests.post(f"{url}/chat/completions", json=bodies["/v1/chat/completions"], headers=key, timeout=WAIT_S)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    client = OpenAI(base_url=url, api_key=KEY)
    done = client.chat.completions.create(model=f"base:{tiny_model}", messages=HELLO, max_tokens=3)
    assert done.usage.completion_tokens == 3
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=url, api_key="wrong").chat.completions.create(model="x", messages=HELLO, max_tokens=3)

    # the key is nowhere in clear: not in the job row, its run folder or the database files
    job = next(j for j in session.exec(select(Job)).all() if j.kind == "serve")
    assert KEY not in json.dumps(job.config) and job.config["api_key_hash"]
    stored = [p for p in (*Path(job.run_dir).rglob("*"), *workspace.rglob("*.db*")) if p.is_file()]
    assert stored and not [p for p in stored if KEY.encode() in p.read_bytes()]


@pytest.mark.slow
def test_malformed_bodies_are_400s_naming_the_field(serve, tiny_model):
    url, _ = serve(tiny_model)
    cases = [
        ("/chat/completions", {"max_tokens": 3}, "messages"),
        ("/chat/completions", {"messages": "Hi"}, "messages"),
        ("/chat/completions", {"messages": []}, "messages"),
        ("/chat/completions", {"messages": ["Hi"]}, "messages[0]"),
        ("/chat/completions", {"messages": [{"content": "Hi"}]}, "messages[0].role"),
        ("/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/chat/completions", {"messages": HELLO, "max_tokens": -5}, "max_tokens"),
        ("/chat/completions", {"messages": HELLO, "max_tokens": "ten"}, "max_tokens"),
        ("/chat/completions", {"messages": HELLO, "temperature": -1}, "temperature"),
        ("/chat/completions", {"messages": HELLO, "temperature": "hot"}, "temperature"),
        ("/chat/completions", {"messages": HELLO, "top_p": 2}, "top_p"),
        ("/chat/completions", {"messages": HELLO, "stream": "yes"}, "stream"),
        ("/chat/completions", {"messages": HELLO, "seed": 1.5}, "seed"),
        ("/chat/completions", {"messages": HELLO, "model": 7}, "model"),
        ("/chat/completions", {"messages": HELLO, "generation_config": json.dumps({"top_p": 3})},
         "generation_config.top_p"),
        ("/completions", {"max_tokens": 3}, "prompt"),
        ("/completions", {"prompt": 12}, "prompt"),
        ("/completions", {"prompt": "Hi", "temperature": -1}, "temperature"),
        ("/responses", {"max_output_tokens": 3}, "input"),
        ("/responses", {"input": "Hi", "top_p": 2}, "top_p"),
    ]
    for path, body, field in cases:
        answer = _post(url, path, body)
        assert answer.status_code == 400, (path, body, answer.status_code, answer.text[:300])
        assert field in answer.json()["error"]["message"], (path, body, answer.text[:300])
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        answer = requests.post(f"{url}/chat/completions", data=raw, headers={"Content-Type": "application/json"},
                               timeout=WAIT_S)
        assert answer.status_code == 400, (raw, answer.text[:300])
    assert _post(url, "/chat/completions", {"messages": HELLO, "max_tokens": 3}).status_code == 200  # still serving


@pytest.mark.slow
def test_cancel_kills_a_job_that_ignores_sigterm_after_the_grace_period(session, users, project, monkeypatch):
    import psutil

    from core.jobs.queue import cancel, log_path, submit

    monkeypatch.setenv("FINETUNE_STUDIO_CANCEL_GRACE", "3")
    job = submit(session, users["engineer"], project_id=project.id, kind="sleep", action="train", name="stubborn",
                 config={}, module="tests.stubborn_worker")
    log = log_path(job)
    wait_until(lambda: log.exists() and "ignoring SIGTERM" in log.read_text(), WAIT_S, "the worker to start")
    pid = _status(job.id).pid
    cancel(session, users["engineer"], job.id)
    # the grace period plus a margin for a loaded machine
    wait_until(lambda: _status(job.id).status != "running", 3 + 30, "the job to end after the grace period")
    ended = _status(job.id)
    assert ended.status == "canceled" and "SIGKILL" in ended.error, ended.error
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_the_playground_endpoint_takes_the_same_key_and_its_client_sends_it(session, users, project, tiny_model,
                                                                            monkeypatch):
    from core.evaluate.generate_config import Decoding
    from core.jobs.queue import cancel
    from core.ship import client
    from core.ship.serving import playground_server, server_status

    monkeypatch.setenv("FINETUNE_STUDIO_API_KEY", KEY)
    job = playground_server(session, users["engineer"], project.id)
    assert KEY not in json.dumps(job.config)
    def up():
        status = server_status(session, job.id)
        assert status["job"].status in ("queued", "running") or status["endpoint"], status["job"].error
        return status if status["endpoint"] else None

    status = wait_until(up, WAIT_S * 2, "the Playground's endpoint", interval=0.3)
    url, system = status["endpoint"]["url"], f"base:{tiny_model}"
    try:
        assert requests.post(f"{url}/load_model", json={"model": system}, timeout=WAIT_S).status_code == 401
        client.load(url, system)  # the Playground's client sends the key
        answer = client.complete(url, system, HELLO, Decoding(max_new_tokens=3))
        streamed = client.Answer()
        assert "".join(client.stream_answer(url, system, HELLO, Decoding(max_new_tokens=3), streamed)) == streamed.text
        assert answer.completion_tokens == streamed.completion_tokens == 3
        monkeypatch.delenv("FINETUNE_STUDIO_API_KEY")
        with pytest.raises(client.EndpointError, match="401"):
            client.complete(url, system, HELLO, Decoding(max_new_tokens=3))
    finally:
        cancel(session, users["engineer"], job.id)
