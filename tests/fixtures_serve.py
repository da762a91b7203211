"""serve-model as a user starts it, for the tests that talk to it over HTTP (registered in conftest's pytest_plugins).

``serve_model`` starts `finetune-studio serve-model` and waits for the line that names its URL; the ``serve`` fixture
starts it on a model folder and stops it with Ctrl-C at the end; ``with_context`` copies the tiny model with another
context length (config and tokenizer agree).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, wait_until

SERVING_RE = re.compile(r"serving .* on (http://127\.0\.0\.1:\d+/v1) \(OpenAI-compatible; model \"([^\"]+)\"\)")
HELLO = [{"role": "user", "content": "Hi"}]
WAIT_S = 120  # generous: the machine is shared; a request stuck behind an abandoned generation waits far longer


def serve_model(workspace: Path, *args: str) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `finetune-studio serve-model` as a user does; returns the process, its /v1 URL and its output lines."""
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace))
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve-model", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    found: list[str] = []

    def drain() -> None:
        for line in proc.stdout:
            lines.append(line)
            m = SERVING_RE.search(line)
            if m:
                found.append(m.group(1))

    threading.Thread(target=drain, daemon=True).start()

    def up() -> bool:
        assert proc.poll() is None, "".join(lines)  # it ended before serving: say why
        return bool(found)

    wait_until(up, 300, lambda: "serve-model to print its URL:\n" + "".join(lines))
    return proc, found[0], lines


def with_context(tiny_model, out, context: int):
    """The tiny model with ``context`` positions (config and tokenizer agree)."""
    shutil.copytree(tiny_model, out)
    for name, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
        data = json.loads((out / name).read_text())
        data[key] = context
        (out / name).write_text(json.dumps(data))
    return out


def post(url: str, path: str, body: dict, timeout: float = WAIT_S) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=timeout)


@pytest.fixture
def serve(workspace, project):
    """Start serve-model on a model folder; stopped (Ctrl-C) at the end. Yields a function: folder -> /v1 URL."""
    started = []

    def start(folder, *args: str) -> str:
        proc, url, lines = serve_model(workspace, f"base:{folder}", "--port", "0", "--idle-timeout", "600", *args)
        started.append((proc, lines))
        return url

    yield start
    for proc, lines in started:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)
