"""The web server: app.py served as an ASGI ``st.App``, plus the one route a Streamlit script cannot provide:
``/_fts/session``, which sets and clears the HttpOnly session cookie (core.sessions explains the design).

POST {"ticket": ...} trades a one-time log-in ticket for the cookie; DELETE ends the cookie's session and
drops the cookie. Both refuse requests from another origin: the JSON content type forces a browser's CORS
preflight (which this server never grants), the Origin must be this host, and the cookie is SameSite=Strict.

Every response (page, static file, health check, this route) forbids framing (X-Frame-Options, CSP
frame-ancestors) and carries a Content-Security-Policy that lets the page load scripts, styles, images and its
websocket from this server only: a name or guideline that slipped past escaping still fetches nothing elsewhere.

``finetune-studio serve`` runs ``streamlit run asgi.py``; Streamlit sees the App and serves it with uvicorn. uvicorn
believes X-Forwarded-For only from the peers in FORWARDED_ALLOW_IPS, which serve sets from the proxies an admin
named (core.throttle.trusted_proxies); started any other way the server refuses to start rather than trust loopback.
"""
import base64
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import core.workspace  # noqa: F401  (points storage at the workspace database)
from core import sessions, throttle
from storage.db import get_engine
from ui.browser import SESSION_ROUTE




def _inline_script_hashes() -> str:
    """CSP hashes of the inline scripts in Streamlit's own index.html (one line, ``window.prerenderReady``), read
    from the installed Streamlit so an upgrade keeps working, instead of allowing every inline script."""
    page = (Path(st.__file__).resolve().parent / "static" / "index.html").read_text(encoding="utf-8")
    bodies = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)


CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    # blob:: Streamlit v2 components (ui.browser, the rubric sheet) run their JavaScript from a blob URL, which
    # only a script already running on this page can make.
    f"script-src 'self' blob: {_inline_script_hashes()}".strip(),
    "style-src 'self' 'unsafe-inline'",  # Streamlit's components style themselves inline
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",  # same-origin fetches and the app's websocket (CSP 3: 'self' covers ws: of this host)
    "worker-src 'self' blob:",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every HTTP response (replacing any the app set itself)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        names = {name for name, _ in SECURITY_HEADERS}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _check_proxy_trust() -> None:
    expected = throttle.trusted_proxies()
    if os.environ.get(throttle.SERVER_PROXY_ENV) != expected:
        raise RuntimeError(f"Start the server with `finetune-studio serve` (it sets {throttle.SERVER_PROXY_ENV} to "
                           f"the proxies named in {throttle.TRUSTED_PROXIES_ENV}, now {expected or 'none'}): "
                           "otherwise uvicorn believes any X-Forwarded-For sent from this machine.")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # browsers send Origin on POST and DELETE; without one, trust only a same-origin fetch
        return request.headers.get("sec-fetch-site", "same-origin") == "same-origin"
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _secure(request: Request) -> bool:
    # uvicorn has already applied X-Forwarded-Proto when, and only when, it came from a named proxy.
    return request.url.scheme == "https"


def _exchange(ticket: str):
    with Session(get_engine(), expire_on_commit=False) as s:
        return sessions.exchange_ticket(s, ticket)


def _end(token: str) -> None:
    with Session(get_engine(), expire_on_commit=False) as s:
        sessions.end(s, None, "logged out", token=token)


async def session_cookie(request: Request) -> JSONResponse:
    if not _same_origin(request) or request.headers.get("content-type", "").split(";")[0] != "application/json":
        return JSONResponse({"ok": False}, status_code=403)
    if request.method == "DELETE":
        token = request.cookies.get(sessions.COOKIE_NAME)
        if token:
            await run_in_threadpool(_end, token)
        response = JSONResponse({"ok": True})
        response.delete_cookie(sessions.COOKIE_NAME, path="/", secure=_secure(request), httponly=True,
                               samesite="strict")
        return response
    try:
        body = await request.json()
    except ValueError:
        body = None
    ticket = body.get("ticket") if isinstance(body, dict) else None
    issued = await run_in_threadpool(_exchange, ticket) if isinstance(ticket, str) else None
    if issued is None:
        return JSONResponse({"ok": False}, status_code=403)
    token, max_age = issued
    response = JSONResponse({"ok": True}, headers={"Cache-Control": "no-store"})
    response.set_cookie(sessions.COOKIE_NAME, token, max_age=max_age, path="/", secure=_secure(request),
                        httponly=True, samesite="strict")
    return response


_check_proxy_trust()
app = st.App(Path(__file__).resolve().parent / "app.py",
             routes=[Route(SESSION_ROUTE, session_cookie, methods=["POST", "DELETE"])],
             middleware=[Middleware(SecurityHeaders)])
