"""The admin HTTP server (SPEC 13): aiohttp on the server's own event loop.

Why aiohttp: a well-kept asyncio HTTP server (no thread, so it shares the
loop with the mixer and its work falls between ticks), with streaming
responses for Server-Sent Events and request size limits built in.

Layers, outermost first:
- ``ConnectionGuard`` (guard.py): connections per address and in all,
  request headers within ``HEADER_TIMEOUT_S``;
- ``_errors``: every error answered as JSON ``{"error": ...}``, every
  answer counted by status;
- ``_auth``: a banned address gets 403; every ``/api/`` request needs
  ``Authorization: Bearer TOKEN`` (compared in constant time), else 401;
  ``ADMIN_TOKEN_FAILURES`` wrong or missing tokens within ``[security]
  window`` ban the address for ``[security] ban`` seconds. ``/api/events``
  also takes ``?token=`` because a browser's EventSource cannot send headers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from importlib import resources

from typing import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..config import AdminConfig
from ..security import FailureCounter
from .api import Api, Backend, error
from .events import EventStream
from .guard import ConnectionGuard

log = logging.getLogger("sipconf.admin")

MAX_BODY = 4096            # bytes: the API's bodies are empty or "{}"
HEADER_TIMEOUT_S = 10.0    # a new connection must deliver its request headers within this long
KEEPALIVE_S = 15.0         # idle keep-alive connections closed after this long
PER_ADDRESS = 16           # open connections from one address (a browser uses ~6)
TOTAL_CONNECTIONS = 256
CONSOLE_FILES = {"/": ("index.html", "text/html"), "/console.js": ("console.js", "text/javascript"),
                 "/console.css": ("console.css", "text/css")}
SECURITY_HEADERS = {
    # The console is self-contained: no CDN, no inline script, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class _AccessLog(AbstractAccessLogger):
    """One DEBUG line per request, path without the query (it may hold the token)."""

    def log(self, request, response, time):  # noqa: A002 - aiohttp's signature
        self.logger.debug("%s %s %s -> %d (%.1f ms)", request.remote, request.method, request.path,
                          response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class AdminMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.responses = Counter("sipconf_admin_responses", "Admin HTTP answers by status", ["status"],
                                 registry=registry)
        self.rejected = Counter("sipconf_admin_rejected",
                                "Admin HTTP requests or connections refused or dropped, by reason",
                                ["reason"], registry=registry)
        self.bans = Counter("sipconf_admin_bans", "Addresses banned for wrong admin tokens", registry=registry)
        self.streams = Gauge("sipconf_admin_event_streams", "Event streams (SSE) connected", registry=registry)


class AdminServer:
    def __init__(self, config: AdminConfig, backend: Backend, bus, failures: FailureCounter,
                 registry: CollectorRegistry, extend: Callable[[web.Application], None] | None = None) -> None:
        self.config = config
        self.extend = extend  # more routes on this server (webrtc.py: the join page)
        self.failures = failures
        self.metrics = AdminMetrics(registry)
        self.api = Api(backend)
        self.stream = EventStream(bus, on_drop=lambda reason: self.metrics.rejected.labels(reason).inc())
        self.metrics.streams.set_function(lambda: len(self.stream.clients))
        self.guard = ConnectionGuard(per_address=PER_ADDRESS, total=TOTAL_CONNECTIONS,
                                     header_timeout=HEADER_TIMEOUT_S,
                                     count=lambda reason: self.metrics.rejected.labels(reason).inc())
        self._console = {path: (resources.files(__package__).joinpath("console", name).read_bytes(), kind)
                         for path, (name, kind) in CONSOLE_FILES.items()}
        self._token = config.token.encode()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        app.add_routes(self.api.routes())
        app.add_routes([web.get("/api/events", self.stream.handle, allow_head=False)])
        app.add_routes([web.get(path, self._serve_console, allow_head=False) for path in CONSOLE_FILES])
        if self.extend is not None:
            self.extend(app)
        self._runner = web.AppRunner(app, access_log_class=_AccessLog, access_log=log,
                                     keepalive_timeout=KEEPALIVE_S, shutdown_timeout=1.0,
                                     max_line_size=4096, max_field_size=4096, max_headers=64)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self.guard.protocol_factory(self._runner.server),
                                                  self.config.bind, self.config.port, backlog=128)
        host = f"[{self.config.bind}]" if ":" in self.config.bind else self.config.bind
        log.info("admin console and API on http://%s:%d/", host, self.config.port)

    async def close(self) -> None:
        self.stream.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        protocol = request.transport.get_protocol() if request.transport is not None else None
        if hasattr(protocol, "requests"):
            protocol.requests += 1  # headers are in: not a slowloris (guard.py)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = self._json_error(exc)
        except Exception:  # noqa: BLE001 - a bug answers 500, never takes the server down
            log.exception("admin %s %s failed", request.method, request.path)
            response = self._json_error(error(500, "internal error"))
        if not response.prepared:  # an event stream has sent its headers already
            for key, value in SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        self.metrics.responses.labels(str(response.status)).inc()
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler) -> web.StreamResponse:
        remote = request.remote or "?"
        if self.failures.banned(remote):
            self.metrics.rejected.labels("banned").inc()
            raise error(403, "address banned after too many wrong tokens")
        if request.path.startswith("/api/") or request.path == "/api":
            token = _bearer(request.headers.get("Authorization", ""))
            if token is None and request.path == "/api/events":
                token = request.query.get("token")
            if token is None or not hmac.compare_digest(token.encode(), self._token):
                self.metrics.rejected.labels("unauthorized").inc()
                if self.failures.failed(remote):
                    self.metrics.bans.inc()
                    log.warning("admin: %s banned for %g s after %d wrong tokens", remote, self.failures.ban,
                                self.failures.limit)
                raise error(401, "missing or wrong token", **{"WWW-Authenticate": 'Bearer realm="sipconf"'})
        return await handler(request)

    def _json_error(self, exc: web.HTTPException) -> web.Response:
        """``exc`` as a JSON answer; aiohttp's own 404/405/413 texts become ``{"error": ...}``."""
        if exc.content_type == "application/json" and exc.text:
            text = exc.text
        elif exc.status == 413:
            text = json.dumps({"error": f"body larger than {MAX_BODY} bytes"})
        else:
            text = json.dumps({"error": exc.reason.lower()})
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        if exc.status == 413:
            self.metrics.rejected.labels("too_large").inc()
            headers["Connection"] = "close"  # its body was not read: never parse it as a request
        return web.Response(status=exc.status, text=text, content_type="application/json", headers=headers)

    # -- console --------------------------------------------------------------------------

    async def _serve_console(self, request: web.Request) -> web.Response:
        body, kind = self._console[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8")


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
