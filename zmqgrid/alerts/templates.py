"""Alert bodies: the event as JSON, and the shapes chat services' incoming webhooks take (docs/architecture.md,
Alerts). Every text a peer chose is made printable and cut here, before it is staged."""
from __future__ import annotations

import json
import time
from string import Template
from typing import Any

from ..errors import UsageError
from ..text import printable

NAMES = ("json", "slack", "dingtalk", "wecom", "feishu")
FIELDS = ("rule", "seq", "event", "kind", "at", "text", "task_id", "task_name", "device_id", "error")
NAME_CHARS, ERROR_CHARS, TEXT_CHARS = 64, 300, 1000


def check(template: object) -> str:
    """A template name, or a custom template (JSON text) checked and kept as one line."""
    if not isinstance(template, str):
        raise UsageError("alert: --template must be a name or a JSON document")
    if template in NAMES:
        return template
    if not template.lstrip().startswith(("{", "[")):
        raise UsageError(f"template {printable(template, 40)!r} is unknown; allowed: {', '.join(NAMES)}, or a file "
                         "holding a JSON document with ${field} placeholders")
    try:
        document = json.loads(template)
    except ValueError as e:
        raise UsageError(f"custom template is not JSON: {e}") from None
    for text in _strings(document):
        t = Template(text)
        if not t.is_valid():
            raise UsageError(f"custom template: {printable(text, 60)!r} has a bad placeholder (write $$ for a $)")
        unknown = [f for f in t.get_identifiers() if f not in FIELDS]
        if unknown:
            raise UsageError(f"custom template: placeholder ${{{printable(unknown[0], 40)}}} is unknown; "
                             f"allowed: {', '.join(FIELDS)}")
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _name(value: Any) -> str | None:
    return None if value is None else printable(value, NAME_CHARS)


def task_event(rule: str, event: str, task: dict, at: float) -> dict:
    """`task`: id, name, state, attempt, device_id, exit_code, error ({type, message} or text), reason."""
    error = task.get("error")
    if isinstance(error, dict):
        error = f"{error.get('type') or 'Error'}: {error.get('message') or ''}".rstrip(": ")
    error = None if error is None else printable(error, ERROR_CHARS)
    shown = {"id": _name(task["id"]), "name": _name(task.get("name")), "state": event,
             "attempt": task.get("attempt"), "device_id": _name(task.get("device_id")),
             "exit_code": task.get("exit_code"), "error": error, "reason": _name(task.get("reason"))}
    label = f" ({shown['name']})" if shown["name"] and shown["name"] != shown["id"] else ""
    where = f" on {shown['device_id']}" if shown["device_id"] else ""
    why = error or shown["reason"]
    text = (f"zmqgrid: task {shown['id']}{label} {event.replace('_', ' ')}{where} after attempt {shown['attempt']}"
            + (f": {why}" if why else ""))
    return {"rule": rule, "event": event, "kind": "task", "at": at, "text": printable(text, TEXT_CHARS),
            "task": shown}


def device_event(rule: str, event: str, device: dict, at: float) -> dict:
    """`device`: id, name, hostname, reason."""
    shown = {"id": _name(device["id"]), "name": _name(device.get("name")), "hostname": _name(device.get("hostname")),
             "reason": _name(device.get("reason"))}
    what = "is offline" if event == "offline" else "had its key revoked"
    label = f" ({shown['name']})" if shown["name"] and shown["name"] != shown["id"] else ""
    text = f"zmqgrid: device {shown['id']}{label} {what}" + (f": {shown['reason']}" if shown["reason"] else "")
    return {"rule": rule, "event": event, "kind": "device", "at": at, "text": printable(text, TEXT_CHARS),
            "device": shown}


def test_event(rule: str, at: float) -> dict:
    text = f"zmqgrid: test alert of rule {rule} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))})"
    return {"rule": rule, "event": "test", "kind": "test", "at": at, "text": text}


def render(template: str, event: dict) -> bytes:
    """The body a rule sends for `event` (which carries its `seq`)."""
    text = event["text"]
    if template == "json":
        body: Any = event
    elif template == "slack":
        body = {"text": text}
    elif template in ("dingtalk", "wecom"):
        body = {"msgtype": "text", "text": {"content": text}}
    elif template == "feishu":
        body = {"msg_type": "text", "content": {"text": text}}
    else:
        values = _fields(event)
        body = _fill(json.loads(template), values)
    return json.dumps(body, ensure_ascii=False).encode()


def _fields(event: dict) -> dict[str, str]:
    task, device = event.get("task") or {}, event.get("device") or {}
    values = {"rule": event["rule"], "seq": event.get("seq"), "event": event["event"], "kind": event["kind"],
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(event["at"])), "text": event["text"],
              "task_id": task.get("id"), "task_name": task.get("name"),
              "device_id": device.get("id") or task.get("device_id"), "error": task.get("error")}
    return {k: "" if v is None else str(v) for k, v in values.items()}


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Placeholders are replaced in parsed strings: a value can never change the JSON around it."""
    if isinstance(node, str):
        return Template(node).safe_substitute(values)
    if isinstance(node, dict):
        return {_fill(k, values): _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    return node


def refused(template: str, answer: bytes) -> str | None:
    """DingTalk, WeCom and Feishu answer 200 to a message they refuse, with the reason in the body."""
    if template not in ("dingtalk", "wecom", "feishu"):
        return None
    try:
        reply = json.loads(answer or b"{}")
    except ValueError:
        return None
    if not isinstance(reply, dict):
        return None
    code = reply.get("code" if template == "feishu" else "errcode", 0)
    if code in (0, None):
        return None
    message = reply.get("msg" if template == "feishu" else "errmsg", "")
    return f"{template} refused it: code {printable(code, 20)} {printable(message, 160)}"
