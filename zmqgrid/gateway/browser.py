"""The dashboard in a browser: textual-serve's page, script and app sessions, on the gateway's own application.

`/` serves textual-serve's page (its template and static files); the page opens `/ws`, and each websocket runs one
`python -m zmqgrid dashboard --served --role ROLE` process through textual-serve's `AppService`, which relays the
browser's keys to it and its screen to the browser. textual-serve's own `Server` is not used: it builds an
application of its own, runs one fixed command for every browser, and has no hook for authentication.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import jinja2
import textual_serve
from aiohttp import WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.download_manager import DownloadManager

from ..security import INHERITED_CURVE_ENV, curve_to_env
from .errors import HttpError
from .routing import SETTINGS, TOKENS, Role, add
from .sessions import (COOKIE, SESSIONS, BrowserSessions, browser_caller, browser_role, served_over_tls, set_cookie,
                       token_role)
from .settings import GatewaySettings
from .refusals import RefusalLog
from .signin import login_page

logger = logging.getLogger(__name__)

SERVE_DIR = Path(textual_serve.__file__).parent
STATIC_PREFIX = "/static/textual-serve"
MAX_DASHBOARDS = 8
"""Dashboard processes at once (each is a Python process of ~60 MB); a websocket past it is refused (503)."""
MAX_DASHBOARDS_PER_TOKEN = 2
"""Dashboard processes at once per token (not in open mode); a websocket past it is refused (429), so one token
cannot hold all of MAX_DASHBOARDS."""
RECHECK_S = 5.0
"""How often a running dashboard's token is looked up again: a revoked (or downgraded) one ends its session."""
STOP_S = 5.0

_template = jinja2.Environment(loader=jinja2.FileSystemLoader(SERVE_DIR / "templates"), autoescape=True)


def dashboard_command(settings: GatewaySettings, role: Role) -> str:
    """The shell command textual-serve runs for one session (`exec`: the shell becomes the dashboard process)."""
    return "exec " + shlex.join([sys.executable, "-m", "zmqgrid", "dashboard", "--served", "--role",
                                 role.name.lower(), "--master", settings.master_url,
                                 "--timeout", f"{min(settings.master_timeout_s, 60):g}"])


class DashboardProcess(AppService):
    """textual-serve's AppService with the environment a dashboard process needs and a stop that cannot hang."""

    def __init__(self, settings: GatewaySettings, role: Role, **kwargs) -> None:
        super().__init__(dashboard_command(settings, role), **kwargs)
        self.settings = settings

    @property
    def ended(self) -> asyncio.Task:
        """The task that relays the process's output; done when the process's stdout closes."""
        assert self._task is not None, "start() first"
        return self._task

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width, height)
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name not in ("site-packages", "dist-packages"):   # a checkout: the process imports this one
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
        env.pop(INHERITED_CURVE_ENV, None)
        if self.settings.curve is not None:   # the gateway's own key, never one the dashboard would choose by itself
            env[INHERITED_CURVE_ENV] = curve_to_env(self.settings.curve)
        return env

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(super().stop(), STOP_S)
        except asyncio.TimeoutError:
            logger.warning("a browser dashboard process did not quit within %g s: killing it", STOP_S)
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


class Dashboards:
    """The running dashboard processes: bounded, and all stopped when the gateway stops."""

    def __init__(self) -> None:
        self.running: set[DashboardProcess] = set()
        self.of_token: Counter[str] = Counter()   # token sha256 -> its processes running now
        self.downloads = DownloadManager()

    async def stop_all(self, app: web.Application) -> None:
        await asyncio.gather(*(p.stop() for p in list(self.running)), return_exceptions=True)


DASHBOARDS = web.AppKey("dashboards", Dashboards)
REFUSALS = web.AppKey("signin_refusals", RefusalLog)


def _signed_in(request: web.Request, token: str) -> web.StreamResponse:
    """A known token becomes a session cookie and a redirect to `/` without it (out of the address bar and history)."""
    if request.headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin"):
        # Another site's link or form would sign the visitor in with a token of the other site's choosing (login
        # CSRF): a navigation carries no Origin, but browsers say where it came from in Sec-Fetch-Site
        return login_page(request, "A sign-in started from another site's page is refused: open this gateway's "
                                   "address yourself and sign in here.", status=403)
    role = token_role(request.app[TOKENS], token)
    if role is None:
        request.app[REFUSALS].refused(request.remote)
        return login_page(request, "That token is not known to this gateway (revoked, or never made here).")
    query = {k: v for k, v in request.query.items() if k != "token"}
    response = web.Response(status=303, headers={"Location": "/" + (f"?{urlencode(query)}" if query else ""),
                                                 "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
    set_cookie(response, request, request.app[SESSIONS].open(token))
    return response


async def index(request: web.Request) -> web.StreamResponse:
    """textual-serve's page, for a caller with a token (header, cookie, or `?token=` exchanged for a cookie)."""
    if "token" in request.query:
        return _signed_in(request, request.query["token"])
    role = browser_role(request)
    if role is None:
        return login_page(request)
    font_size = request.query.get("fontsize", "16")
    # An https page may not open a ws:// socket: behind a proxy that ends TLS too.
    ws_scheme = "wss" if served_over_tls(request) else "ws"
    html = _template.get_template("app_index.html").render(
        font_size=int(font_size) if font_size.isdigit() and 6 <= int(font_size) <= 64 else 16,
        app_websocket_url=f"{ws_scheme}://{request.host}/ws",
        config={"static": {"url": f"{STATIC_PREFIX}/"}},
        application={"name": f"zmqgrid dashboard ({role.name.lower()})"})
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def login(request: web.Request) -> web.StreamResponse:
    """The login form's POST: `token=...` (form-encoded), as `/?token=` but never in a URL."""
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str):
        raise HttpError(400, "the form has no token field", "send token=... (application/x-www-form-urlencoded)")
    return _signed_in(request, token)


async def logout(request: web.Request) -> web.StreamResponse:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        request.app[SESSIONS].close(session_id)
    response = web.Response(status=303, headers={"Location": "/"})
    response.del_cookie(COOKIE, path="/")
    return response


async def websocket(request: web.Request) -> web.StreamResponse:
    """One browser session: a dashboard process limited to the role the caller's token has now."""
    caller = browser_caller(request)
    if caller is None:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="zmqgrid"'},
                                   reason="sign in at / first: the dashboard needs a token")
    role, token_sha256 = caller.role, caller.token_sha256
    dashboards = request.app[DASHBOARDS]
    if token_sha256 and dashboards.of_token[token_sha256] >= MAX_DASHBOARDS_PER_TOKEN:
        raise HttpError(429, f"{MAX_DASHBOARDS_PER_TOKEN} dashboards are open with this token already",
                        "close one of its dashboard tabs, or sign in with another token")
    if len(dashboards.running) >= MAX_DASHBOARDS:
        raise HttpError(503, f"{MAX_DASHBOARDS} dashboards are open on this gateway already",
                        "close another dashboard tab, or use the API")
    ws = web.WebSocketResponse(heartbeat=15, max_msg_size=64 * 1024)
    size = {k: _int(request.query.get(k), default, 500) for k, default in (("width", 80), ("height", 24))}
    process = DashboardProcess(request.app[SETTINGS], role, write_bytes=ws.send_bytes, write_str=ws.send_str,
                               close=ws.close, download_manager=dashboards.downloads)
    dashboards.running.add(process)   # before the first await: the bounds hold for requests arriving together
    dashboards.of_token[token_sha256] += 1
    watch: asyncio.Task | None = None
    try:
        await ws.prepare(request)
        logger.info("browser dashboard opened role=%s peer=%s", role.name.lower(), request.remote)
        watch = asyncio.create_task(_end_when_role_drops(request, role, ws))
        await process.start(size["width"], size["height"])
        # A process that ends by itself (it quit, or failed to start) ends the browser's session too: the page
        # then offers to start a new one, instead of a blank terminal.
        process.ended.add_done_callback(lambda _: asyncio.ensure_future(ws.close()))
        await _relay(ws, process)
    finally:
        if watch is not None:
            watch.cancel()
        await process.stop()
        dashboards.running.discard(process)
        dashboards.of_token[token_sha256] -= 1
        if dashboards.of_token[token_sha256] <= 0:
            del dashboards.of_token[token_sha256]
        await ws.close()
        logger.info("browser dashboard closed role=%s peer=%s", role.name.lower(), request.remote)
    return ws


async def _relay(ws: web.WebSocketResponse, process: DashboardProcess) -> None:
    """textual-serve's browser protocol: ["stdin", text], ["resize", {width, height}], ["ping", x], focus, blur."""
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            kind, *rest = message.json()
        except (ValueError, TypeError):
            continue   # not an envelope: the page never sends one; ignore rather than end the session
        if kind == "stdin" and rest and isinstance(rest[0], str):
            await process.send_bytes(rest[0].encode("utf-8"))
        elif kind == "resize" and rest and isinstance(rest[0], dict):
            await process.set_terminal_size(_int(rest[0].get("width"), 80, 500), _int(rest[0].get("height"), 24, 500))
        elif kind == "ping" and rest:
            await ws.send_json(["pong", rest[0]])
        elif kind == "blur":
            await process.blur()
        elif kind == "focus":
            await process.focus()


async def _end_when_role_drops(request: web.Request, role: Role, ws: web.WebSocketResponse) -> None:
    while not ws.closed:
        await asyncio.sleep(RECHECK_S)
        try:
            now = browser_role(request)
        except HttpError:
            now = None
        if now is None or now < role:
            logger.info("browser dashboard ended: its token was revoked or lowered peer=%s", request.remote)
            await ws.close(message=b"token revoked")
            return


async def static(request: web.Request) -> web.StreamResponse:
    """A file of textual-serve's static folder (the same for everyone, so no token is needed)."""
    root = (SERVE_DIR / "static").resolve()
    path = (root / request.match_info["folder"] / request.match_info["name"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


def _int(value: object, default: int, most: int) -> int:
    try:
        number = int(value)   # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if 1 <= number <= most else default


def add_routes(app: web.Application) -> None:
    app[SESSIONS] = BrowserSessions(app[TOKENS])
    app[DASHBOARDS] = Dashboards()
    app[REFUSALS] = RefusalLog(logger)
    app.on_shutdown.append(app[DASHBOARDS].stop_all)
    add(app, "GET", "/", Role.READ, index, "The dashboard in the browser (textual-serve's page); a token by "
        "header, session cookie, or ?token= (exchanged for the cookie); without one, the sign-in form (401)",
        answers=(200, 303, 401), content="text/html", browser=True)
    add(app, "POST", "/login", Role.NONE, login, "Sign in with a token (form field token): sets the session cookie",
        answers=(303, 401), content="text/html", browser=True)
    add(app, "POST", "/logout", Role.NONE, logout, "Forget this browser's session", answers=(303,),
        content="text/html", browser=True)
    add(app, "GET", "/ws", Role.READ, websocket, "The dashboard session's websocket (textual-serve's protocol)",
        answers=(101, 401, 429, 503), browser=True)
    add(app, "GET", STATIC_PREFIX + "/{folder}/{name}", Role.NONE, static,
        "textual-serve's script, styles, fonts and images for the dashboard's page", content="*/*")
