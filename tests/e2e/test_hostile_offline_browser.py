"""Every page, as an admin, with hostile text in the fields users fill: nothing runs, nothing is fetched from
another host (no Markdown image from a tag, no CDN favicon), no dialog opens."""
from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from core.webui import PAGES
from tests.e2e.conftest import cli, login, shot, wait_idle

pytestmark = pytest.mark.e2e

EVIL = "http://evil.example"
HOSTILE = [
    f"![t]({EVIL}/tag.png)",
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    f"[click]({EVIL}/link) **bold** `code`",
]


def _hostile_records() -> list[dict]:
    out = []
    for i, text in enumerate(HOSTILE):
        out.append({"instruction": f"Question {i}: {text}", "output": f"Answer {i}, plain words here: {text}",
                    "tags": [text, f"tag-{i}"]})
    return out


def test_every_page_renders_hostile_text_inert_and_fetches_nothing_off_host(server, page):
    imports = server.workspace / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    data = imports / "hostile.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _hostile_records()), encoding="utf-8")
    cli(server, "import", str(data), "--format", "alpaca")
    prompts = imports / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Prompt {t}", "reference": t}) + "\n" for t in HOSTILE),
                       encoding="utf-8")
    cli(server, "evalsets", "--create", f"set {HOSTILE[0]} {HOSTILE[2]}", "--from-file", str(prompts))

    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    user, password = server.admin_credentials()
    login(page, server.url, user, password)
    where: dict[str, list[str]] = {}
    for spec in PAGES:
        before = len(requests)
        page.goto(f"{server.url}/{spec.url_path}")
        wait_idle(page)
        page.wait_for_timeout(500)
        shot(page, f"hostile-{spec.url_path}")
        assert page.evaluate("() => window.__pwned") is None, f"script ran on {spec.title}"
        where[spec.title] = [u for u in requests[before:] if urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    off_host = sorted({u for u in requests if urlparse(u).hostname not in ("127.0.0.1", "localhost")
                       and urlparse(u).scheme in ("http", "https", "ws", "wss")})
    assert not off_host, {page: urls for page, urls in where.items() if urls}
    assert not dialogs, dialogs
    icon = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
    assert icon and all(h.startswith(server.url) for h in icon), icon  # the bundled icon, served by the app
