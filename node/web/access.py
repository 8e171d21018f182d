"""What every web route needs (the role of the FastAPI template's ``deps``): the context, the access rule
of a route and the one wrapper that enforces it, sign-in, CSRF and the client's address.

Rules every route follows, declared where it is registered (:class:`Access`):

- a page or API route names the role it needs (``viewer`` reads, ``operator`` changes state);
  a person signs in with a form and gets a signed session cookie (Starlette's
  ``SessionMiddleware``: itsdangerous, HttpOnly, SameSite=strict, Secure under TLS);
  DICOMweb clients send HTTP Basic credentials of the same accounts instead;
- every request that changes state (any method but GET/HEAD) made with a session cookie must
  carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) and come from
  this console's own origin; a route marked ``origin_suffices`` (STOW-RS, for the OHIF viewer, which
  cannot send the token) takes the browser's ``Origin`` header naming this console instead — a request
  without it still needs the token; Basic authentication is not sent by a browser on its own, so it needs none;
- the handler of a state-changing route writes its :func:`node.web.accounts.audit` record in
  the same transaction as the change;
- ``/healthz`` and ``/metrics`` answer without an account (read-only, for load balancers and
  Prometheus).

Route modules (``pages``, ``dicomweb``, ``metrics``) import this module, never ``node.web.app``,
which assembles them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from node.intake.receiver import Receiver
from node.settings import Settings
from node.web.accounts import audit, authenticate
from node.web.throttle import Busy, SignInGuard, Throttled
from node.work.jobs import JobQueue
from storage import models as m
from storage.filestore import FileStore

SAFE_METHODS = frozenset({"GET", "HEAD"})
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(kw_only=True)
class WebContext:
    """What the pages and DICOMweb read and act on: the node's own objects, shared with DIMSE."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: FileStore
    receiver: Receiver
    jobs: JobQueue
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)  # the receiver's metrics live here too
    refused: list[str] = field(default_factory=list)  # the listener's refused associations (this process)
    active_associations: Callable[[], int] = lambda: 0
    guard: SignInGuard = field(default_factory=SignInGuard)  # sign-in attempts, Argon2id slots
    sign_in_failures: dict[str, int] = field(default_factory=lambda: {"basic": 0, "form": 0, "throttled": 0})
    counts_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, kw_only=True)
class Access:
    """Who may call a route: ``role`` None means anyone (health, metrics, sign-in)."""

    role: m.Role | None
    basic: bool = False  # HTTP Basic accepted (DICOMweb)
    # a browser session may change state with its own Origin in place of the CSRF token: for a client that
    # cannot send our token (OHIF's STOW-RS). The Origin header is set by the browser, never by a page, and
    # the session cookie is SameSite=strict, so another site still cannot make the request.
    origin_suffices: bool = False


class Forbidden(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return name, password


def sign_in(ctx: WebContext, request: Request, name: str, password: str, via: str,
            refused: str = "basic sign-in refused") -> m.User | None:
    """The account if ``password`` is its password (audited when not); raises
    :class:`node.web.throttle.Throttled` while the client or the account waits out its failed attempts,
    :class:`node.web.throttle.Busy` when no Argon2id slot comes free."""
    client = client_address(request)
    try:
        wait = ctx.guard.retry_after(client, name)
        if wait is not None:
            raise Throttled(wait)
        with ctx.sessions.begin() as s:
            user = authenticate(s, name, password, ctx.guard, client)
            if user is None:
                audit(s, actor=name[:64] or "-", action=refused, remote=client)
            else:
                s.expunge(user)
    except Throttled:
        with ctx.counts_lock:
            ctx.sign_in_failures["throttled"] += 1
        raise
    if user is None:
        with ctx.counts_lock:
            ctx.sign_in_failures[via] += 1
    else:
        ctx.guard.succeeded(client, name)
    return user


def throttled_response(exc: Throttled) -> Response:
    return PlainTextResponse(str(exc), status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


def _user_from_basic(ctx: WebContext, request: Request) -> m.User | None:
    credentials = _basic_credentials(request)
    if credentials is None:
        return None
    return sign_in(ctx, request, *credentials, via="basic")


def _user_from_session(ctx: WebContext, request: Request) -> m.User | None:
    name = request.session.get("user")
    if not name:
        return None
    with ctx.sessions() as s:
        user = s.query(m.User).filter(m.User.name == name).one_or_none()
        if user is None or user.disabled or request.session.get("generation") != user.session_generation:
            request.session.clear()  # signed out, a new password or disabled: the session has ended
            return None
        s.expunge(user)
        return user


def same_origin(request: Request, ctx: WebContext) -> bool:
    """An ``Origin`` header, when a browser sends one, names this console (as reached or as published)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = {_origin_of(str(request.base_url)), _origin_of(ctx.settings.web.public_base_url())}  # scheme://host[:port]
    return origin.rstrip("/") in own


def _origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made at sign-in)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def check_csrf(request: Request) -> None:
    """A state-changing request of a browser session carries the session's CSRF token and comes from this
    console's own pages (``Origin``); raises :class:`Forbidden` otherwise."""
    if not same_origin(request, request.state.ctx):
        raise Forbidden(403, "a request from another site: refused")
    expected = request.session.get("csrf")
    sent: object = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get("csrf")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, str(expected)):
        raise Forbidden(403, "missing or wrong CSRF token: reload the page and try again")


def guarded(ctx: WebContext, access: Access, handler: Handler) -> Handler:
    """``handler`` behind the route's access rule (see the module docstring)."""

    async def endpoint(request: Request) -> Response:
        request.state.ctx = ctx
        request.state.user = None
        if access.role is None:
            return await handler(request)
        try:
            user = None
            if access.basic and "authorization" in request.headers:
                try:
                    user = await run_in_threadpool(_user_from_basic, ctx, request)
                except Throttled as exc:
                    return throttled_response(exc)
                except Busy as exc:
                    return PlainTextResponse(str(exc), status_code=503, headers={"Retry-After": "5"})
                if user is None:
                    return PlainTextResponse("wrong account name or password", status_code=401,
                                             headers={"WWW-Authenticate": 'Basic realm="myonode"'})
            elif ((user := await run_in_threadpool(_user_from_session, ctx, request)) is not None
                  and request.method not in SAFE_METHODS
                  and not (access.origin_suffices and "origin" in request.headers and same_origin(request, ctx))):
                await check_csrf(request)
            if user is None:
                if request.method in SAFE_METHODS and not access.basic:
                    return RedirectResponse(f"{request.scope.get('root_path', '')}/login?next={request.url.path}",
                                            status_code=303)
                headers = {"WWW-Authenticate": 'Basic realm="myonode"'} if access.basic else {}
                return PlainTextResponse("sign in first", status_code=401, headers=headers)
            if not user.role.allows(access.role):
                raise Forbidden(403, f"account {user.name!r} ({user.role.value}) may not do this: "
                                     f"it needs the {access.role.value} role")
        except Forbidden as exc:
            return PlainTextResponse(exc.message, status_code=exc.status)
        request.state.user = user
        return await handler(request)

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


# (path, handler, methods, access) as each module declares them; see pages.ROUTES and dicomweb.ROUTES.
RouteSpec = tuple[str, Handler, list[str], Access]




def web_context(request: Request) -> WebContext:
    """The node's objects, as :func:`guarded` put them on the request."""
    ctx: WebContext = request.state.ctx
    return ctx
