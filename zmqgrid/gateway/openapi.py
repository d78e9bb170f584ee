"""`/api/openapi.json`: the OpenAPI 3.1 document, built from the route table so that no route can be left out."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from .routing import ROUTES, Role, Route, RouteTable, add

ERROR_SCHEMA = {"type": "object", "required": ["error", "hint"],
                "properties": {"error": {"type": "string"}, "hint": {"type": "string"}}}
STATUS_TEXT = {200: "OK", 201: "Created", 400: "Bad request", 401: "No or unknown bearer token",
               403: "The token's role is too low", 404: "Not found", 409: "Conflict (an ambiguous id prefix, a task "
               "in a state the action cannot apply to)", 413: "Body too large", 503: "The master did not answer"}


def document(table: RouteTable) -> dict:
    paths: dict[str, dict] = {}
    for route in table.routes.values():
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    try:
        release = version("zmqgrid")
    except PackageNotFoundError:
        release = "0"
    return {"openapi": "3.1.0",
            "info": {"title": "zmqgrid HTTP gateway", "version": release,
                     "description": "One more client of the zmqgrid master (docs/architecture.md, HTTP gateway)."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                           "schemas": {"Error": ERROR_SCHEMA}},
            "paths": paths}


def operation(route: Route) -> dict:
    answers = sorted(set(route.answers) | ({401, 403} if route.role > Role.NONE else set()))
    responses: dict[str, dict] = {}
    for status in answers:
        if status < 400:
            body = {media.strip(): {} for media in route.content.split(",")}
        else:
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        responses[str(status)] = {"description": STATUS_TEXT.get(status, ""), "content": body}
    op: dict = {"summary": route.summary, "operationId": f"{route.method.lower()}_{route.path}",
                "x-zmqgrid-role": route.role.name.lower(),
                "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path",
                                "description": p.description, "schema": {"type": p.kind}} for p in route.params],
                "responses": responses}
    if route.role > Role.NONE:
        op["security"] = [{"bearer": []}]
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
    return op


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[ROUTES]))


def add_routes(app: web.Application) -> None:
    add(app, "GET", "/api/openapi.json", Role.READ, openapi, "This document")
