"""The web application: the route tables of the console, DICOMweb and metrics behind their access rules
(:mod:`node.web.access`), the session cookie and the security headers of every answer.

The console is bound to 127.0.0.1 unless ``[web] bind_host`` says otherwise.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from node.settings import Settings
from node.web import dicomweb, monitoring, pages, viewer
from node.web.access import Access, RouteSpec, WebContext, guarded

HERE = Path(__file__).parent


def session_secret(settings: Settings) -> str:
    """``[web] session_secret``, or one made once and kept (0600) under the store's ``run/``."""
    if settings.web.session_secret:
        return settings.web.session_secret
    path = Path(settings.storage.root) / "run" / "web-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Every answer says: no inline or foreign script, never in a frame, no type sniffing, no referrer abroad."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in SECURITY_HEADERS if n not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(ctx: WebContext) -> Starlette:
    """The console, DICOMweb and metrics for ``ctx``."""
    specs: list[RouteSpec] = [*pages.ROUTES, *dicomweb.ROUTES, *viewer.ROUTES, *monitoring.routes(ctx)]
    routes: list[BaseRoute] = [Route(path, guarded(ctx, access, handler), methods=methods, name=handler.__name__)
                               for path, handler, methods, access in specs]
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, middleware=[
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=session_secret(ctx.settings), session_cookie="myonode_session",
                   max_age=ctx.settings.web.session_max_age_s, same_site="strict",
                   https_only=ctx.settings.web.tls_cert is not None),
    ])
    app.state.ctx = ctx
    app.state.access = [(path, tuple(methods), access) for path, _, methods, access in specs]
    return app


def route_access(app: Starlette) -> list[tuple[str, tuple[str, ...], Access]]:
    """Every route with its methods and access rule (the security tests enumerate them)."""
    return list(app.state.access)

