"""The browser dashboard's bounds per token, over real HTTP and websockets against a real gateway and master: one
token cannot hold every dashboard process or sign everyone else out, a flood of unknown tokens cannot fill the
log, and the session cookie is Secure behind a proxy that ends TLS."""
from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from zmqgrid.gateway.refusals import RefusalLog

from ..helpers import wait_until
from .test_browser import Terminal, _post_form, dashboards_of, get, session_cookie, sign_in
from .web import make_token

pytestmark = pytest.mark.timeout(120)


def test_one_token_opens_at_most_two_dashboards_and_others_still_open_theirs(served):
    gateway = served.gateway
    token = make_token(served.harness, gateway.tokens, "many-tabs", "read")
    cookie = sign_in(gateway, token)

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{gateway.port}/ws"
        async with aiohttp.ClientSession() as session:
            # two tabs of one token: one by its session cookie, one by its header (the bound is the token's)
            async with session.ws_connect(url, headers={"Cookie": cookie}) as first, \
                    session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as second:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with session.ws_connect(url, headers={"Cookie": cookie}):
                        pass
                assert refused.value.status == 429
                status, headers, body = await asyncio.to_thread(get, gateway, "/ws", Authorization=f"Bearer {token}")
                assert status == 429 and headers["Content-Type"].startswith("application/json")
                assert json.loads(body)["error"] == "2 dashboards are open with this token already"

                async with session.ws_connect(url, headers={"Authorization": f"Bearer {served.tokens['client']}"}) \
                        as other:
                    terminal = Terminal(other)
                    await terminal.shows(" w1 ")   # another token's dashboard runs
                    terminal.reader.cancel()
                for ws in (first, second):
                    assert not ws.closed

    asyncio.run(scenario())
    wait_until(lambda: not dashboards_of(gateway), 20, "no dashboard process left")


def test_signing_in_again_and_again_forgets_only_that_tokens_own_oldest_session(served):
    gateway = served.gateway
    token = make_token(served.harness, gateway.tokens, "signs-in-often", "read")
    someone_else = sign_in(gateway, served.tokens["client"])

    cookies = [sign_in(gateway, token) for _ in range(17)]   # one past MAX_SESSIONS_PER_TOKEN

    assert get(gateway, "/", Cookie=cookies[0])[0] == 401     # its own oldest is forgotten
    assert get(gateway, "/", Cookie=cookies[1])[0] == 200
    assert get(gateway, "/", Cookie=cookies[-1])[0] == 200
    assert get(gateway, "/", Cookie=someone_else)[0] == 200   # nobody else is signed out


def test_a_flood_of_unknown_tokens_logs_one_line(served):
    gateway = served.gateway
    before = gateway.log.read_text().count("browser sign-in refused")

    async def flood() -> list[int]:
        return [(await _post_form(gateway.base + "/login", {"token": f"zg_guess-{i}"}))[0] for i in range(30)]

    assert asyncio.run(flood()) == [401] * 30
    log = gateway.log.read_text()
    assert log.count("browser sign-in refused") - before <= 1 and "browser sign-in refused" in log
    assert "zg_guess" not in log


def test_the_refusal_log_counts_what_it_did_not_log(caplog):
    now = [100.0]
    refusals = RefusalLog(logging.getLogger("test.refusals"), clock=lambda: now[0], every_s=60)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(5):
            refusals.refused("10.0.0.9")
        now[0] += 61
        refusals.refused("10.0.0.9")
    assert [r.getMessage() for r in caplog.records] == [
        "browser sign-in refused: unknown token from 10.0.0.9",
        "browser sign-in refused: unknown token from 10.0.0.9 (5 refusals since the last line, at most one line per "
        "60 s)"]


def test_the_session_cookie_is_secure_behind_a_proxy_that_ends_tls(served):
    gateway = served.gateway
    _, plain, _ = get(gateway, f"/?token={served.tokens['read']}")
    assert "secure" not in plain["Set-Cookie"].lower()

    status, proxied, _ = get(gateway, f"/?token={served.tokens['read']}", X_Forwarded_Proto="https")
    assert status == 303 and "; secure" in proxied["Set-Cookie"].lower()
    status, form, _ = asyncio.run(_post_form(gateway.base + "/login", {"token": served.tokens["read"]},
                                             {"X-Forwarded-Proto": "https"}))
    assert status == 303 and "; secure" in form["Set-Cookie"].lower()
    assert session_cookie(form).startswith("zmqgrid_session=")
