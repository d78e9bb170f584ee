"""Load the browser dashboard in a real headless Chromium, wait until it shows what is expected, save a screenshot.

    python tools/browser_check.py                       # a standalone cluster of its own, one task done
    python tools/browser_check.py --url http://127.0.0.1:8080 --expect w1 --screenshot shot.png
                                                        # a running gateway ([env ZMQGRID_HTTP_TOKEN] if it has tokens)

Chromium is driven over the Chrome DevTools protocol (a websocket, with aiohttp's client). The terminal is drawn on
a canvas, so its text is not in the page: a script added before the page's own records what the page's websocket
receives (the screen the dashboard sent, ANSI sequences stripped here), and the check polls it until every
expected string is in it, with a deadline; then it waits for the terminal's first drawn frames and takes the
screenshot. Exit 0 when everything was seen, 1 when not (the text seen last is printed), 2 when Chromium or the
cluster cannot be started.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a script from anywhere: this checkout's zmqgrid

from zmqgrid.worker.proctree import end_process  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs before the page's own scripts: keep what each websocket receives, as text (the last 400,000 characters).
RECORD_SCREEN = """
(() => {
  const Native = window.WebSocket;
  const decoder = new TextDecoder();
  window.__zmqgridScreen = "";
  function Recording(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("message", (event) => {
      if (typeof event.data === "string") return;
      const text = window.__zmqgridScreen + decoder.decode(new Uint8Array(event.data), {stream: true});
      window.__zmqgridScreen = text.length > 400000 ? text.slice(-400000) : text;
    });
    return ws;
  }
  Recording.prototype = Native.prototype;
  for (const name of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Recording[name] = Native[name];
  window.WebSocket = Recording;
})();
"""

# Resolves after the terminal's first frames are drawn (the page marks its body once bytes arrived).
FRAMES_DRAWN = """
new Promise((resolve) => {
  const drawn = () => document.body.classList.contains("-first-byte");
  const step = (left) => requestAnimationFrame(() => left ? step(left - 1) : resolve(drawn()));
  step(10);
})
"""


def find_chromium() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    seen: bool
    screen: str
    missing: list[str] = field(default_factory=list)
    screenshot: Path | None = None


class DevTools:
    """One page target of a Chromium, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        async for message in self.ws:   # events arrive in between: skipped
            data = json.loads(message.data)
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError(f"{method}: the DevTools connection closed")

    async def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=await_promise)
        return result.get("result", {}).get("value")


class Chromium:
    """A headless Chromium with a profile of its own, stopped (by PID) on exit."""

    def __init__(self, executable: str, width: int = 1600, height: int = 1000) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="zmqgrid-chromium-"))
        args = [executable, "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--disable-background-networking", "--disable-extensions", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")   # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def port(self, timeout_s: float = 30) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout_s:g} s")

    def close(self) -> None:
        end_process(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


async def check_page(url: str, expect: list[str], screenshot: Path | None, chromium: str,
                     timeout_s: float = 60) -> Outcome:
    """Open `url`, poll the terminal's screen until every string of `expect` is on it, then save `screenshot`."""
    browser = Chromium(chromium)
    try:
        port = browser.port()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                page = next(t for t in await answer.json() if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 << 20) as ws:
                tools = DevTools(ws)
                await tools.call("Page.enable")
                await tools.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_SCREEN)
                await tools.call("Page.navigate", url=url)
                screen, missing = "", list(expect)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    screen = ANSI.sub("", await tools.evaluate("window.__zmqgridScreen || ''") or "")
                    missing = [text for text in expect if text not in screen]
                    if not missing:
                        break
                    await asyncio.sleep(0.2)
                if missing:
                    return Outcome(False, screen, missing)
                if not await tools.evaluate(FRAMES_DRAWN, await_promise=True):
                    return Outcome(False, screen, ["(the page never drew the terminal)"])
                if screenshot is not None:
                    shot = await tools.call("Page.captureScreenshot", format="png")
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                return Outcome(True, screen, [], screenshot)
    finally:
        browser.close()


def http(method: str, url: str, token: str | None = None, body: Any = None, timeout_s: float = 10) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def wait_for(what: str, probe, timeout_s: float = 60) -> Any:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as e:   # not up yet (urllib's errors are OSErrors)
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")


class StandaloneCluster:
    """`distribute --mode standalone --http PORT` in a directory of its own, with a read and a client token."""

    def __init__(self, workdir: Path, port: int, http_port: int, workers: int = 1) -> None:
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{http_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
        self.env["PYTHONPATH"] = str(REPO)
        self.tokens = {role: self._token(f"check-{role}", role) for role in ("read", "client")}
        with open(workdir / "standalone.out", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "standalone", "--port", str(port),
                 "--http", str(http_port), "--workers", str(workers), "--no-dashboard",
                 "--db", str(workdir / "grid.db"), "--log-file", str(workdir / "grid.log")],
                cwd=workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def _token(self, name: str, role: str) -> str:
        done = subprocess.run([sys.executable, "-m", "zmqgrid", "http", "tokens", "create", name, "--role", role],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"http tokens create: {done.stderr.strip()}")
        return done.stdout.strip()

    def serving(self) -> bool:
        """The standalone said its gateway answers (so the port is its own, not another program's)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the standalone cluster exited with {self.proc.returncode}: "
                               f"{(self.workdir / 'standalone.out').read_text()[-1500:]}")
        return b"http gateway: http://" in (self.workdir / "standalone.out").read_bytes()

    def one_task_done(self, timeout_s: float = 60) -> tuple[list[str], str]:
        """The online devices' ids and the id of a task run to `done` on them."""
        wait_for("the standalone's gateway", self.serving, timeout_s)
        read = self.tokens["read"]
        devices = wait_for("a worker online", lambda: [d["device_id"] for d in http(
            "GET", f"{self.base}/api/distribution/devices", read)["devices"] if d["state"] == "online"], timeout_s)
        (task_id,) = http("POST", f"{self.base}/api/distribution/tasks", self.tokens["client"],
                          {"shell": "echo seen-by-chromium", "name": "browser-check"})["ids"]
        wait_for("the task done", lambda: http("GET", f"{self.base}/api/distribution/tasks/{task_id}",
                                               read)["state"] == "done", timeout_s)
        return devices, task_id

    def stop(self) -> None:
        end_process(self.proc, grace_s=30)


def check_standalone(workdir: Path, screenshot: Path, chromium: str, port: int | None = None,
                     http_port: int | None = None, timeout_s: float = 60) -> Outcome:
    """A standalone cluster with one task done, seen in the browser with a read token: its devices and the task."""
    cluster = StandaloneCluster(workdir, port or free_port(), http_port or free_port())
    try:
        devices, task_id = cluster.one_task_done(timeout_s)
        expect = [*devices, task_id[:12], "read-only"]
        return asyncio.run(check_page(f"{cluster.base}/?token={cluster.tokens['read']}", expect, screenshot,
                                      chromium, timeout_s))
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running gateway's address (default: start a standalone cluster)")
    parser.add_argument("--expect", action="append", default=[], help="Text the dashboard must show (repeat)")
    parser.add_argument("--screenshot", type=Path, default=Path("browser-check.png"), help="PNG to write")
    parser.add_argument("--chromium", default=find_chromium(), help="Chromium or Chrome executable")
    parser.add_argument("--timeout", type=float, default=60, help="Seconds to wait for each step")
    args = parser.parse_args()
    if not args.chromium:
        print("error: no chromium found; install it (apt-get install chromium) or give --chromium PATH",
              file=sys.stderr)
        return 2
    try:
        if args.url:
            token = os.environ.get("ZMQGRID_HTTP_TOKEN")
            url = args.url.rstrip("/") + "/" + (f"?token={token}" if token else "")
            outcome = asyncio.run(check_page(url, args.expect, args.screenshot, args.chromium, args.timeout))
        else:
            with tempfile.TemporaryDirectory(prefix="zmqgrid-browser-check-") as workdir:
                outcome = check_standalone(Path(workdir), args.screenshot, args.chromium, timeout_s=args.timeout)
    except (RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not outcome.seen:
        print(f"not seen within {args.timeout:g} s: {', '.join(outcome.missing)}\n--- last screen text ---\n"
              f"{outcome.screen[-3000:]}", file=sys.stderr)
        return 1
    print(f"seen: {', '.join(args.expect) or 'the devices and the task'}; screenshot {outcome.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
