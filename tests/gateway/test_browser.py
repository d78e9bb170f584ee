"""The dashboard in a browser (`/`, `/ws`): sign-in by token, the session cookie, and a dashboard limited to the
token's role, over real HTTP and websockets against a real gateway, master and worker."""
from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import psutil
import pytest

from ..helpers import run_cli, wait_until
from .web import Gateway, make_token

pytestmark = pytest.mark.timeout(120)

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


async def _get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}, allow_redirects=False) as answer:
            return answer.status, dict(answer.headers), await answer.text()


async def _post_form(url: str, form: dict, headers: dict | None = None) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=form, headers=headers or {}, allow_redirects=False) as answer:
            return answer.status, dict(answer.headers), await answer.text()


def get(gateway: Gateway, path: str, **headers: str) -> tuple[int, dict, str]:
    return asyncio.run(_get(gateway.base + path, {k.replace("_", "-"): v for k, v in headers.items()}))


def session_cookie(headers: dict) -> str:
    """The `zmqgrid_session=...` pair of a Set-Cookie header, as a browser sends it back."""
    return headers["Set-Cookie"].split(";")[0]


class Terminal:
    """The browser's side of `/ws`: sends keys, and keeps the screen text the dashboard sent (ANSI stripped)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.text = ""
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.text += ANSI.sub("", message.data.decode("utf-8", "replace"))

    async def shows(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.text:
            assert time.monotonic() < deadline, f"the dashboard never showed {text!r}; last: {self.text[-1500:]!r}"
            await asyncio.sleep(0.05)

    async def press(self, key: str) -> None:
        await self.ws.send_json(["stdin", key])


async def drain_w1(gateway: Gateway, cookie: str, outcome: str) -> str:
    """Open a browser session, ask its dashboard to drain w1 with the keys a person presses, wait for `outcome`."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{gateway.port}/ws?width=160&height=40",
                                      headers={"Cookie": cookie}) as ws:
            terminal = Terminal(ws)
            await terminal.shows(" w1 ")
            await terminal.press("\t")          # from the tasks table to the devices table
            await terminal.press("d")
            await terminal.shows("Drain device w1?")
            await terminal.press("y")
            await terminal.shows(outcome)
            terminal.reader.cancel()
            return terminal.text


def sign_in(gateway: Gateway, token: str) -> str:
    status, headers, _ = get(gateway, f"/?token={token}")
    assert status == 303 and headers["Location"] == "/", (status, headers)
    return session_cookie(headers)


def test_the_page_is_refused_without_a_token_and_served_with_a_read_one(served):
    gateway = served.gateway

    status, headers, body = get(gateway, "/")
    assert status == 401
    assert headers["Content-Type"].startswith("text/html") and headers["WWW-Authenticate"].startswith("Bearer")
    assert '<form method="post" action="/login">' in body

    status, headers, body = get(gateway, "/", Authorization=f"Bearer {served.tokens['read']}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'data-session-websocket-url="ws://127.0.0.1:{gateway.port}/ws"' in body
    assert "zmqgrid dashboard (read)" in body
    behind_tls_proxy = get(gateway, "/", Authorization=f"Bearer {served.tokens['read']}", X_Forwarded_Proto="https")
    assert f'data-session-websocket-url="wss://127.0.0.1:{gateway.port}/ws"' in behind_tls_proxy[2]
    script = re.search(r'<script src="([^"]+textual\.js)"', body).group(1)
    status, headers, body = get(gateway, script)
    assert status == 200 and "WebSocket" in body   # textual-serve's own script, served by the gateway
    assert get(gateway, "/static/textual-serve/js/..%2F..%2Fapp_service.py")[0] == 404

    status, _, _ = get(gateway, "/ws")
    assert status == 401


def test_a_token_in_the_address_becomes_an_http_only_cookie_that_only_the_dashboard_takes(served):
    gateway = served.gateway
    status, headers, _ = get(gateway, f"/?token={served.tokens['read']}&fontsize=12")
    assert status == 303 and headers["Location"] == "/?fontsize=12"
    attributes = headers["Set-Cookie"].lower()
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert served.tokens["read"] not in headers["Set-Cookie"]   # a session id, not the token
    cookie = session_cookie(headers)

    assert get(gateway, "/", Cookie=cookie)[0] == 200
    status, _, body = get(gateway, "/api/distribution/devices", Cookie=cookie)
    assert status == 401   # no API route takes the cookie: another site's page could make the browser send it

    status, _, body = get(gateway, "/?token=zg_not-a-token")
    assert status == 401 and "not known to this gateway" in body
    status, headers, _ = asyncio.run(_post_form(gateway.base + "/login", {"token": served.tokens["client"]}))
    assert status == 303 and "zmqgrid_session=" in headers["Set-Cookie"]
    form_cookie = session_cookie(headers)
    assert get(gateway, "/", Cookie=form_cookie)[0] == 200
    assert asyncio.run(_post_form(gateway.base + "/logout", {}, {"Cookie": form_cookie}))[0] == 303
    assert get(gateway, "/", Cookie=form_cookie)[0] == 401

    log = gateway.log.read_text()
    assert "browser sign-in refused: unknown token" in log
    assert "zg_not-a-token" not in log and not any(token in log for token in served.tokens.values())


def test_a_sign_in_started_by_another_sites_page_is_refused_and_sets_no_cookie(served):
    token = served.tokens["read"]
    for where in ("cross-site", "same-site"):   # a link or a form on another site's page: login CSRF
        status, headers, body = get(served.gateway, f"/?token={token}", **{"Sec-Fetch-Site": where})
        assert status == 403 and "Set-Cookie" not in headers and "another site" in body
        status, headers, _ = asyncio.run(_post_form(served.gateway.base + "/login", {"token": token},
                                                    {"Sec-Fetch-Site": where}))
        assert status == 403 and "Set-Cookie" not in headers
    # An address typed or bookmarked (none), or the gateway's own form (same-origin), signs in
    for where in ("none", "same-origin"):
        status, headers, _ = get(served.gateway, f"/?token={token}", **{"Sec-Fetch-Site": where})
        assert status == 303 and "zmqgrid_session=" in headers["Set-Cookie"]


def test_a_revoked_token_ends_its_browser_sessions(served):
    gateway = served.gateway
    token = make_token(served.harness, gateway.tokens, "soon-gone", "read")
    cookie = sign_in(gateway, token)
    assert get(gateway, "/", Cookie=cookie)[0] == 200

    async def open_session_then_revoke() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{gateway.port}/ws", headers={"Cookie": cookie}) as ws:
                terminal = Terminal(ws)
                await terminal.shows(" w1 ")
                done = await asyncio.to_thread(run_cli, "http", "tokens", "revoke", "soon-gone", "--tokens",
                                               str(gateway.tokens), cwd=served.harness.dir)
                assert done.returncode == 0, done.stderr
                await asyncio.wait_for(terminal.reader, 40)   # the gateway looks again every 5 s, then closes it
                assert ws.closed

    asyncio.run(open_session_then_revoke())
    assert get(gateway, "/", Cookie=cookie)[0] == 401
    assert "browser dashboard ended: its token was revoked or lowered" in gateway.log.read_text()


def test_a_read_dashboard_refuses_drain_and_an_admin_one_drains(served):
    gateway, client = served.gateway, served.harness.client()

    screen = asyncio.run(drain_w1(gateway, sign_in(gateway, served.tokens["read"]),
                                  "refused: drain needs an admin token"))
    assert "read-only" in screen
    assert {d["device_id"]: d["state"] for d in client.devices()}["w1"] == "online"

    # The same keys from an admin's browser reach the master: the refusal above is the role's, not a lost key.
    asyncio.run(drain_w1(gateway, sign_in(gateway, served.tokens["admin"]), "drain w1: draining"))
    try:
        wait_until(lambda: {d["device_id"]: d["state"] for d in client.devices()}["w1"] == "draining", 20,
                   "w1 draining")
    finally:
        client.control_devices("resume", ["w1"])
    log = gateway.log.read_text()
    assert "browser dashboard opened role=read" in log and "browser dashboard opened role=admin" in log


def test_an_open_gateway_refuses_another_sites_page_and_a_rebound_host_name(served, tmp_path):
    harness = served.harness
    gateway = Gateway(harness, tmp_path / "no_tokens.json", name="open-gateway")   # no token: every caller admin
    try:
        before = len(harness.client().tasks(limit=1000))

        async def cross_site_submit() -> int:
            async with aiohttp.ClientSession() as session:
                # what a page on another site can make a browser send with no preflight: a text/plain POST
                async with session.post(gateway.base + "/api/distribution/tasks", data='{"shell": "true"}',
                                        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}) as a:
                    return a.status
        assert asyncio.run(cross_site_submit()) == 403
        assert len(harness.client().tasks(limit=1000)) == before

        assert get(gateway, "/", Host=f"evil.example:{gateway.port}")[0] == 403   # DNS rebinding
        assert get(gateway, "/", Host=f"localhost:{gateway.port}")[0] == 200
        assert get(gateway, "/", Origin=f"http://127.0.0.1:{gateway.port}")[0] == 200

        async def cross_site_websocket() -> int:
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.ws_connect(f"ws://127.0.0.1:{gateway.port}/ws",
                                                  headers={"Origin": "http://evil.example"}):
                        return 101
                except aiohttp.WSServerHandshakeError as e:
                    return e.status
        assert asyncio.run(cross_site_websocket()) == 403
    finally:
        gateway.stop()


def dashboards_of(gateway: Gateway) -> list[psutil.Process]:
    return [p for p in psutil.Process(gateway.proc.pid).children(recursive=True) if "--served" in _cmdline(p)]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):   # ended (or ending) since it was listed: not running
        return []


def test_a_dashboard_process_that_dies_ends_its_browser_session(served):
    gateway = served.gateway
    cookie = sign_in(gateway, served.tokens["read"])

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{gateway.port}/ws", headers={"Cookie": cookie}) as ws:
                terminal = Terminal(ws)
                await terminal.shows(" w1 ")
                (process,) = dashboards_of(gateway)
                process.kill()
                await asyncio.wait_for(terminal.reader, 40)   # the gateway closed the websocket
                assert ws.closed

    asyncio.run(scenario())
    wait_until(lambda: not dashboards_of(gateway), 10, "no dashboard process left")
