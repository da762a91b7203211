"""The web server: app.py served as an ASGI ``st.App``, plus the one route a Streamlit script cannot provide:
``/_fts/session``, which sets and clears the HttpOnly session cookie (core.sessions explains the design).

POST {"ticket": ...} trades a one-time log-in ticket for the cookie; DELETE ends the cookie's session and
drops the cookie. Both refuse requests from another origin: the JSON content type forces a browser's CORS
preflight (which this server never grants), the Origin must be this host, and the cookie is SameSite=Strict.

``finetune-studio serve`` runs ``streamlit run asgi.py``; Streamlit sees the App and serves it with uvicorn.
"""
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import core.workspace  # noqa: F401  (points storage at the workspace database)
from core import sessions
from core.browser import SESSION_ROUTE
from storage.db import get_engine


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # browsers send Origin on POST and DELETE; without one, trust only a same-origin fetch
        return request.headers.get("sec-fetch-site", "same-origin") == "same-origin"
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


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


app = st.App(Path(__file__).resolve().parent / "app.py",
             routes=[Route(SESSION_ROUTE, session_cookie, methods=["POST", "DELETE"])])
