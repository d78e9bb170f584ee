"""Reading what a caller sent: a JSON body checked field by field, and query parameters of a known type."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import HttpError


async def json_body(request: web.Request) -> Any:
    """The parsed body; 400 when it is not JSON, 413 (from aiohttp) when it passes the size limit."""
    raw = await request.read()
    if not raw.strip():
        raise HttpError(400, "the request has no body", "send a JSON body")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise HttpError(400, f"the body is not valid JSON ({getattr(e, 'msg', None) or 'nested too deep'})",
                        "send one JSON value, e.g. {\"shell\": \"echo hi\"}") from None


def only_fields(body: Any, allowed: dict[str, type | tuple[type, ...]], required: tuple[str, ...] = ()) -> dict:
    """`body` as an object holding only `allowed` fields of their types, and every `required` one."""
    if not isinstance(body, dict):
        raise HttpError(400, f"the body must be a JSON object, got {json_type(body)}", "send {...}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(unknown)}", f"allowed: {', '.join(allowed)}")
    for name in required:
        if name not in body:
            raise HttpError(400, f"field {name!r} is required", f"allowed: {', '.join(allowed)}")
    for name, value in body.items():
        kinds = allowed[name] if isinstance(allowed[name], tuple) else (allowed[name],)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise HttpError(400, f"field {name!r} must be {type_name(allowed[name])}, got {json_type(value)}", "fix its type")
    return body


def json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(json_type(k()) if k is not type(None) else "null" for k in kinds)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"query parameter {name}={text!r} is not an integer",
                        f"give an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise HttpError(400, f"query parameter {name}={value} is out of range", f"give an integer from {low} to {high}")
    return value


def choice_param(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise HttpError(400, f"query parameter {name}={value!r} is unknown", f"allowed: {', '.join(allowed)}")
    return value


def known_params(request: web.Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown query parameter(s): {', '.join(unknown)}",
                        f"allowed: {', '.join(allowed) or 'none'}")
