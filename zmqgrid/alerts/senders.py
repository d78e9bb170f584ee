"""Sending one alert: an HTTP POST to a webhook, or a local command fed the event. Each returns None when the
event was delivered, else the reason (one printable line without the webhook's secret)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import psutil

from .. import __version__
from ..text import printable
from . import templates
from .rules import redact_url

ANSWER_MAX_BYTES = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed (it could lead the master anywhere): it is a failed attempt."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):   # noqa: ANN001 - urllib's signature
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post_webhook(url: str, template: str, event: dict, timeout_s: float) -> str | None:
    body = templates.render(template, event)
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": f"zmqgrid/{__version__}"})
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            status, answer = response.status, response.read(ANSWER_MAX_BYTES)
    except urllib.error.HTTPError as e:
        try:
            answer = e.read(200)
        except Exception:   # the answer's body is a courtesy: the status says enough
            answer = b""
        finally:
            e.close()
        return f"HTTP {e.code} from {redact_url(url)}: {printable(answer, 200)}"
    except Exception as e:   # URLError, a timeout, a reset connection: retried; the URL's secret kept out
        reason = getattr(e, "reason", e)
        return f"{type(e).__name__} from {redact_url(url)}: {printable(reason, 200)}".replace(url, redact_url(url))
    if not 200 <= status < 300:
        return f"HTTP {status} from {redact_url(url)}: {printable(answer, 200)}"
    return templates.refused(template, answer)


def run_command(command: str, event: dict, timeout_s: float) -> str | None:
    """`/bin/sh -c command` in a session of its own, the event JSON on stdin and in ZMQGRID_ALERT_* variables."""
    task, device = event.get("task") or {}, event.get("device") or {}
    env = dict(os.environ, ZMQGRID_ALERT_RULE=event["rule"], ZMQGRID_ALERT_EVENT=event["event"],
               ZMQGRID_ALERT_SEQ=str(event.get("seq", "")), ZMQGRID_ALERT_TEXT=event["text"],
               ZMQGRID_ALERT_TASK_ID=task.get("id") or "", ZMQGRID_ALERT_DEVICE_ID=device.get("id") or "")
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as e:
        return f"could not start the command: {printable(e, 200)}"
    try:
        _, err = proc.communicate(json.dumps(event).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        return f"the command did not finish within {timeout_s:g} s; its processes were killed"
    if proc.returncode != 0:
        return f"the command exited with {proc.returncode}: {printable(err[-200:], 200)}"
    return None


def kill_tree(proc: subprocess.Popen) -> None:
    """Its session's group and every descendant psutil still finds (one that left the group too)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for kid in kids:
        try:
            kid.kill()
        except psutil.Error:
            pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass
