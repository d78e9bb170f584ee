"""The sign-in page a browser gets at `/` without a token: one password field, posted to `/login`."""
from __future__ import annotations

import html

from aiohttp import web

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zmqgrid dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ background: #0c181f; color: #e6e6e6; font-family: menlo, monospace; display: flex; justify-content: center;
       padding-top: 15vh; }}
form {{ background: #12232d; padding: 2em; max-width: 36em; }}
input {{ width: 100%; padding: .5em; margin: .5em 0 1em; font-family: inherit; box-sizing: border-box; }}
button {{ padding: .5em 2em; background: #5e0ba7; color: #fff; border: none; font-family: inherit; }}
.error {{ color: #ff8a80; }}
</style></head>
<body><form method="post" action="/login">
<h1>zmqgrid dashboard</h1>
<p class="error">{error}</p>
<label for="token">This gateway needs a token (read, client or admin).</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button>
<p>An operator makes one with:<br><code>python main.py http tokens create NAME --role read</code></p>
</form></body></html>
"""


def login_page(request: web.Request, error: str = "", status: int = 401) -> web.Response:
    """401 (or `status`) with the sign-in form; `error` says why the last attempt failed."""
    return web.Response(status=status, text=PAGE.format(error=html.escape(error)), content_type="text/html",
                        headers={"WWW-Authenticate": 'Bearer realm="zmqgrid"', "Cache-Control": "no-store"})
