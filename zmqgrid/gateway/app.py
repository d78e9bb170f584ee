"""The gateway's one aiohttp Application: every module adds its routes to it (`add_routes`), on one port."""
from __future__ import annotations

from aiohttp import web

from . import browser, catalog, devices, logs, metrics, openapi, system, tasks
from .auth import auth_middleware
from .errors import errors_middleware
from .routing import ROUTES, SETTINGS, TOKENS, UPSTREAM, RouteTable
from .settings import GatewaySettings
from .tokens import TokenStore
from .upstream import Upstream

# Each module that serves routes; another one (alerts, say) is one more entry here.
ROUTE_MODULES = (system, metrics, openapi, devices, tasks, logs, catalog, browser)


def make_app(settings: GatewaySettings, upstream: Upstream | None = None) -> web.Application:
    """The application for `settings`; its Upstream (threads and Clients of the master) is closed at cleanup."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[UPSTREAM] = upstream or Upstream(settings.master_url, settings.curve, settings.master_timeout_s,
                                         settings.client_threads)
    app[TOKENS] = TokenStore(settings.tokens_path)
    app[ROUTES] = RouteTable()
    for module in ROUTE_MODULES:
        module.add_routes(app)

    async def close_upstream(app: web.Application) -> None:
        app[UPSTREAM].close()
    app.on_cleanup.append(close_upstream)
    return app
