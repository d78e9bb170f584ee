"""A real webhook receiver on 127.0.0.1 for the alert tests: counts what each path got, in order, and answers as a
test scripts it (a list of statuses, the last one repeated; or hanging until released)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: dict[str, list[dict]] = {}        # path -> bodies answered 2xx, in arrival order
        self.tries: dict[str, int] = {}             # path -> requests seen (any answer)
        self.script: dict[str, list] = {}           # path -> statuses to answer, first first; the last one stays
        self.hanging: dict[str, threading.Event] = {}   # path -> released when set
        self.in_flight: dict[str, int] = {}
        self.headers: dict[str, dict] = {}
        self.answers: dict[str, bytes] = {}          # path -> the body of a 2xx answer (default {"ok": true})
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path
                with receiver.lock:
                    receiver.tries[path] = receiver.tries.get(path, 0) + 1
                    receiver.in_flight[path] = receiver.in_flight.get(path, 0) + 1
                    receiver.headers[path] = dict(self.headers)
                    statuses = receiver.script.get(path, [200])
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                    release = receiver.hanging.get(path)
                try:
                    if release is not None:
                        release.wait(60)
                    if 200 <= status < 300:
                        with receiver.lock:
                            receiver.got.setdefault(path, []).append(json.loads(body))
                    answer = receiver.answers.get(path, b'{"ok": true}') if status < 300 else b"server says no"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                finally:
                    with receiver.lock:
                        receiver.in_flight[path] -= 1

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return list(self.got.get(path, []))

    def close(self) -> None:
        for event in self.hanging.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()
