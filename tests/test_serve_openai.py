"""serve-model speaks the OpenAI API honestly: the official ``openai`` client against a real `finetune-studio
serve-model` process on the tiny random model (its context cut to 128 tokens, so "beyond the context" is cheap).

One server for the module (each start-up costs seconds): sampling samples and ``seed`` repeats it, what the
endpoint cannot honour is a 400 naming the parameter, ``stop`` ends the text before the stop string (streamed too),
a refused request leaves the same client working; and a detached server has a stop command that stops it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from sqlmodel import Session

from tests.helpers import ROOT, studio_home, wait_until
from tests.fixtures_serve import serve_model as _serve_model, with_context as _with_context

HELLO = [{"role": "user", "content": "Tell me about my bill."}]
CONTEXT = 128
WAIT_S = 120


@pytest.fixture(scope="module")
def module_workspace(tmp_path_factory, db_templates):
    """A workspace of its own for the module's one server (the per-test ``workspace`` fixture is function-scoped)."""
    import shutil

    from core.accounts import first_admin
    from core.projects import create_project
    from storage.db import get_engine

    ws = tmp_path_factory.mktemp("serve-openai") / "ws"
    ws.mkdir()
    shutil.copyfile(db_templates("users"), ws / "studio.db")
    with studio_home(ws):
        with Session(get_engine(), expire_on_commit=False) as s:
            create_project(s, first_admin(s), "Serve project", "")
        yield ws


@pytest.fixture(scope="module")
def model_folder(tiny_model, tmp_path_factory):
    return _with_context(tiny_model, tmp_path_factory.mktemp("ctx") / "short", CONTEXT)


@pytest.fixture(scope="module")
def api(module_workspace, model_folder):
    """(OpenAI client, model name) of one serve-model process, stopped with Ctrl-C at the end."""
    from openai import OpenAI

    model = f"base:{model_folder}"
    proc, url, lines = _serve_model(module_workspace, model, "--port", "0", "--idle-timeout", "600")
    try:
        yield OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=WAIT_S), model
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_S) == 0, "".join(lines)


def _text(api, **kwargs) -> str:
    client, model = api
    kwargs.setdefault("messages", HELLO)
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(model=model, **kwargs).choices[0].message.content


def _streamed(api, **kwargs) -> str:
    client, model = api
    kwargs.setdefault("messages", HELLO)
    kwargs.setdefault("max_tokens", 24)
    chunks = client.chat.completions.create(model=model, stream=True, **kwargs)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _works(api) -> None:
    """The same client still gets answers (a refusal must leave the connection usable)."""
    client, model = api
    answer = client.chat.completions.create(model=model, messages=HELLO, max_tokens=3, temperature=0)
    assert answer.usage.completion_tokens == 3


@pytest.mark.slow
def test_temperature_samples_and_a_seed_repeats_it(api):
    greedy = _text(api, temperature=0)
    assert greedy == _text(api, temperature=0)
    sampled = {seed: _text(api, temperature=1, seed=seed) for seed in (1, 2, 3)}
    assert len(set(sampled.values())) > 1, sampled  # different seeds at temperature 1: different texts
    assert _text(api, temperature=1, seed=2) == sampled[2]  # the same seed: the same text
    assert _streamed(api, temperature=1, seed=2) == sampled[2]
    by_top_p = {seed: _text(api, top_p=0.95, seed=seed) for seed in (1, 2, 3)}  # top_p < 1 samples too
    assert len(set(by_top_p.values())) > 1, by_top_p


@pytest.mark.slow
def test_what_it_cannot_honour_is_a_400_naming_the_parameter(api):
    from openai import BadRequestError

    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    cases = {"n": {"n": 2}, "response_format": {"response_format": {"type": "json_object"}},
             "tools": {"tools": [tool]}, "tool_choice": {"tool_choice": "required"},
             "logprobs": {"logprobs": True}, "top_logprobs": {"top_logprobs": 2},
             "presence_penalty": {"presence_penalty": 0.5}, "frequency_penalty": {"frequency_penalty": 0.5},
             "reasoning_effort": {"reasoning_effort": "high"}, "top_k": {"extra_body": {"top_k": 5}}}
    for name, kwargs in cases.items():
        with pytest.raises(BadRequestError) as refused:
            _text(api, **kwargs)
        assert refused.value.status_code == 400 and name in refused.value.message, (name, refused.value.message)
        assert refused.value.body["message"].startswith(name) or name in refused.value.body["message"]
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/bill.png"}}]
    with pytest.raises(BadRequestError, match=r"messages\[0\]\.content\[0\].*text only"):  # not silently dropped
        _text(api, messages=[{"role": "user", "content": image}])
    client, model = api
    for name, kwargs in {"n": {"n": 2}, "logit_bias": {"logit_bias": {"5": 10}}, "best_of": {"best_of": 2},
                         "echo": {"echo": True}}.items():
        with pytest.raises(BadRequestError, match=name):
            client.completions.create(model=model, prompt="Hi", max_tokens=3, **kwargs)
    with pytest.raises(BadRequestError, match="reasoning"):
        client.responses.create(model=model, input="Hi", max_output_tokens=3, reasoning={"effort": "high"})
    # asking for what it does anyway is no refusal
    assert _text(api, n=1, presence_penalty=0, frequency_penalty=0, logprobs=False, response_format={"type": "text"},
                 user="someone", temperature=0) == _text(api, temperature=0)
    _works(api)


@pytest.mark.slow
def test_stop_ends_the_text_before_the_stop_string(api):
    # a sampled answer (the tiny model's greedy one is blank lines) through transformers' generation_config, which
    # samples with the seed on the old server too: the same text each time, cut where the stop string begins
    same = {"extra_body": {"generation_config": json.dumps({"do_sample": True, "max_new_tokens": 40})}, "seed": 7}
    full = _text(api, **same)
    words = re.findall(r"[A-Za-z]{3,}", full[len(full) // 3:])
    assert words and full == _text(api, **same), full
    stop = words[0]
    expected = full[:full.index(stop)]
    assert stop not in expected
    answer = api[0].chat.completions.create(model=api[1], messages=HELLO, stop=[stop], **same)
    assert answer.choices[0].message.content == expected and answer.choices[0].finish_reason == "stop"
    assert _streamed(api, stop=stop, **same) == expected
    assert _text(api, stop=["\u2603 never", stop], **same) == expected
    client, model = api  # the completions route too
    text = client.completions.create(model=model, prompt="Hello there", max_tokens=30, seed=3,
                                     temperature=1).choices[0].text
    cut = re.findall(r"[A-Za-z]{2,}", text[len(text) // 3:])[0]
    completion = client.completions.create(model=model, prompt="Hello there", max_tokens=30, seed=3, temperature=1,
                                           stop=cut)
    assert completion.choices[0].text == text[:text.index(cut)]


@pytest.mark.slow
def test_empty_messages_and_a_prompt_beyond_the_context_are_400s_and_the_client_goes_on(api):
    from openai import APIStatusError, BadRequestError

    with pytest.raises(BadRequestError, match="messages"):
        _text(api, messages=[])
    _works(api)
    with pytest.raises(BadRequestError, match=f"context is {CONTEXT} tokens"):
        _text(api, messages=[{"role": "user", "content": "word " * 300}])
    _works(api)
    with pytest.raises(BadRequestError, match="max_tokens"):  # prompt and answer together beyond the context
        _text(api, messages=[{"role": "user", "content": "word " * 60}], max_tokens=CONTEXT)
    _works(api)
    with pytest.raises(APIStatusError) as failed:  # a request it fails on: answered, and the connection kept
        _text(api, extra_body={"generation_config": json.dumps({"do_sample": True, "num_beams": 0})})
    assert failed.value.status_code in (400, 500) and failed.value.body["message"]
    _works(api)


def _cli(workspace, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace))
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.mark.slow
def test_a_detached_server_has_a_stop_command_that_stops_it(session, users, workspace, project, tiny_model):
    # its own workspace: the module's server holds the device slot of the module's workspace
    import requests

    from core.jobs.queue import LIVE, cancel, get_job, list_jobs

    started = _cli(workspace, "serve-model", f"base:{tiny_model}", "--port", "0", "--detach")
    session.expire_all()
    served = list_jobs(session, kind="serve")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        said = re.search(r"stop it with: (finetune-studio serve-model --stop (\d+))", started.stdout)
        assert said and [j.id for j in served] == [int(said.group(2))], started.stdout
        job_id = int(said.group(2))
        url = re.search(r"on (http://\S+)/v1 ", started.stdout).group(1)
        assert requests.get(f"{url}/health", timeout=WAIT_S).status_code == 200

        # runs cancel, the training runs' stop, points to the endpoint's own stop instead of "No training run N"
        wrong = _cli(workspace, "runs", "cancel", str(job_id))
        assert wrong.returncode != 0 and said.group(1) in wrong.stdout + wrong.stderr, wrong.stdout + wrong.stderr

        stopped = _cli(workspace, *said.group(1).split()[1:])
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        session.expire_all()
        assert get_job(session, job_id).status == "canceled"
        def gone() -> bool:  # the process is gone: nothing listens there any more
            try:
                requests.get(f"{url}/health", timeout=5)
            except requests.ConnectionError:
                return True
            return False

        wait_until(gone, WAIT_S, "the endpoint to stop answering after its stop", interval=0.3)
        again = _cli(workspace, "serve-model", "--stop", str(job_id))
        assert again.returncode != 0 and f"{job_id} already ended" in again.stderr, again.stderr
    finally:  # a failed check leaves no server behind
        for job in served:
            session.expire_all()
            if get_job(session, job.id).status in LIVE:
                cancel(session, users["admin"], job.id)
