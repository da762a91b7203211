"""Which client address the log-in back-off counts: the TCP peer's, unless an admin named that peer as a proxy
(FINETUNE_STUDIO_TRUSTED_PROXIES); then the right-most X-Forwarded-For hop that is not a named proxy. Checked
through uvicorn's own proxy middleware, configured exactly as `finetune-studio serve` configures it."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.errors import InvalidInput
from core.throttle import SERVER_PROXY_ENV, TRUSTED_PROXIES_ENV, server_environment, trusted_proxies

ROOT = Path(__file__).resolve().parents[1]


def _client_seen(environ: dict, peer: str, forwarded_for: str) -> str:
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"][0]

    trusted = server_environment(environ)[SERVER_PROXY_ENV]
    scope = {"type": "http", "client": (peer, 5000), "headers": [(b"x-forwarded-for", forwarded_for.encode())]}
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))
    return seen["client"]


def test_without_a_named_proxy_a_forwarded_for_from_loopback_is_ignored():
    assert _client_seen({}, "127.0.0.1", "203.0.113.9") == "127.0.0.1"
    assert _client_seen({}, "::1", "203.0.113.9") == "::1"


def test_a_named_proxy_passes_on_the_right_most_untrusted_hop():
    env = {TRUSTED_PROXIES_ENV: "127.0.0.1, 10.0.0.5"}
    # The client forged the first entry; the proxies appended the real client and themselves.
    assert _client_seen(env, "127.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.5") == "198.51.100.7"
    assert _client_seen(env, "192.0.2.1", "203.0.113.9") == "192.0.2.1"  # not a named proxy: its header is ignored


def test_a_malformed_proxy_list_is_refused_before_the_server_starts():
    assert trusted_proxies({TRUSTED_PROXIES_ENV: " 10.0.0.0/24 ,127.0.0.1,"}) == "10.0.0.0/24,127.0.0.1"
    for bad in ("*", "proxy.local", "10.0.0.300"):
        with pytest.raises(InvalidInput, match=TRUSTED_PROXIES_ENV):
            trusted_proxies({TRUSTED_PROXIES_ENV: bad})


def test_the_web_app_refuses_to_start_with_uvicorns_default_trust():
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_PROXY_ENV, TRUSTED_PROXIES_ENV)}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", "import asgi"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "finetune-studio serve" in done.stderr, done.stderr[-2000:]
