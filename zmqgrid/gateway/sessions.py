"""Browser sign-in: a bearer token presented once (`/?token=` or the login form) becomes an HttpOnly session cookie.

A browser cannot send `Authorization: Bearer` when it navigates or opens a websocket, so the dashboard's routes
(`/`, `/ws`) also take this cookie; no API route does (a cookie rides along with a request any other site makes).
The cookie holds a random session id, never the token; the gateway keeps, per session, the sha256 of the token it
was made from and looks that up in the token store at every use, so a revoked token ends its sessions too.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from ..errors import ConfigError
from .errors import HttpError
from .routing import TOKENS, Role
from .tokens import TokenStore, digest

COOKIE = "zmqgrid_session"
SESSION_TTL_S = 12 * 3600
"""A session ends this long after sign-in (the browser signs in again with its token)."""
MAX_SESSIONS = 1000
"""Sessions kept at once, of every token: a backstop; past it the oldest is forgotten (its browser signs in again)."""
MAX_SESSIONS_PER_TOKEN = 16
"""Sessions kept at once per token; past it that token's own oldest is forgotten, so signing in again and again
with one token signs out nobody else."""


@dataclass(frozen=True)
class Session:
    token_sha256: str      # '' in open mode: there is no token, every caller is admin
    expires_mono: float


class BrowserSessions:
    """Session id -> the token it was made from (as its sha256), in memory: a gateway restart signs everyone out."""

    def __init__(self, store: TokenStore, clock: Callable[[], float] = time.monotonic,
                 ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS,
                 per_token: int = MAX_SESSIONS_PER_TOKEN) -> None:
        self.store = store
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.per_token = per_token
        self.sessions: OrderedDict[str, Session] = OrderedDict()   # oldest first

    def open(self, token: str) -> str:
        """A new session id for a token already checked against the store."""
        token_sha256 = digest(token) if token else ""
        now = self.clock()
        # A scan of at most max_sessions entries per sign-in: cheap beside the sha256 and the store lookup.
        for session_id in [sid for sid, s in self.sessions.items() if now >= s.expires_mono]:
            del self.sessions[session_id]
        mine = [sid for sid, s in self.sessions.items() if s.token_sha256 == token_sha256]
        for session_id in mine[:max(0, len(mine) - self.per_token + 1)]:
            del self.sessions[session_id]
        while len(self.sessions) >= self.max_sessions:
            self.sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        self.sessions[session_id] = Session(token_sha256, now + self.ttl_s)
        return session_id

    def role_of(self, session_id: str) -> Role | None:
        """The role of the token behind a session, None when the session or its token is gone."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        if self.clock() >= session.expires_mono:
            del self.sessions[session_id]
            return None
        if not session.token_sha256:
            return Role.ADMIN if self.store.is_open() else None
        found = next((t for t in self.store.tokens() if t.sha256 == session.token_sha256), None)
        return Role.named(found.role) if found else None

    def close(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)


SESSIONS = web.AppKey("browser_sessions", BrowserSessions)


def token_role(store: TokenStore, token: str) -> Role | None:
    """The role of a presented token; admin in open mode (no token in the store), whatever was presented."""
    try:
        if store.is_open():
            return Role.ADMIN
        return store.role_of(token.strip()) if token.strip() else None
    except ConfigError:
        raise HttpError(500, "the gateway's token store cannot be read", "see the gateway's log") from None


@dataclass(frozen=True)
class Caller:
    role: Role
    token_sha256: str   # whose token: the per-token bounds count by it; '' in open mode (no token, no such bound)


def browser_caller(request: web.Request) -> Caller | None:
    """The caller's role and token (as its sha256) from its `Authorization: Bearer` header or its session cookie;
    None if neither holds a known token.

    Raises 500 when the token store cannot be read (nobody is let in then), as the API's auth does.
    """
    store: TokenStore = request.app[TOKENS]
    try:
        if store.is_open():
            return Caller(Role.ADMIN, "")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            role = store.role_of(token.strip())
            return Caller(role, digest(token.strip())) if role is not None else None
        session_id = request.cookies.get(COOKIE)
        role = request.app[SESSIONS].role_of(session_id) if session_id else None
        return Caller(role, request.app[SESSIONS].sessions[session_id].token_sha256) if role is not None else None
    except ConfigError:
        raise HttpError(500, "the gateway's token store cannot be read", "see the gateway's log") from None


def browser_role(request: web.Request) -> Role | None:
    """The caller's role (browser_caller), None without a known token."""
    caller = browser_caller(request)
    return caller.role if caller is not None else None


def served_over_tls(request: web.Request) -> bool:
    """TLS to the gateway, or to a proxy in front that ends it and says `X-Forwarded-Proto: https`.

    The header is believed for the caller's own answer only (its page's `wss://` address, its own cookie's
    `Secure`): a forged one changes nothing anybody else gets.
    """
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, session_id: str) -> None:
    # HttpOnly: no script reads it. SameSite=Strict: no other site's page sends it (nor opens /ws with it).
    # Secure when served over TLS (the gateway's own, or a proxy's in front), so it never leaves over plain HTTP
    # once HTTPS is in use.
    response.set_cookie(COOKIE, session_id, max_age=SESSION_TTL_S, path="/", httponly=True, samesite="Strict",
                        secure=served_over_tls(request))
