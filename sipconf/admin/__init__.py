"""HTTP administration (SPEC 13): JSON API, Server-Sent Events, the console.

- http.py    the aiohttp server, auth, bans, JSON errors, metrics
- guard.py   connection limits and the header deadline (slowloris)
- api.py     status, rooms and the conference actions (via sipconf.controls)
- events.py  the EventBus as an SSE stream with bounded per-client queues
- console/   the static page (HTML/JS/CSS, no build step)
- webrtc.py  browser participants: the join page (join/) and its signalling, aiortc
"""

from __future__ import annotations

import time

from .. import __version__
from .api import Backend
from .http import AdminServer
from .webrtc import WebRtcBridge, add_webrtc_routes

__all__ = ["AdminServer", "Backend", "start_admin"]


async def start_admin(server) -> AdminServer | None:
    """Starts the admin server of a started ``SipServer`` when its config has
    ``[admin]``; None otherwise. Reads the server through a few callables
    only, so a reloaded configuration (rooms) is seen at once."""
    config = server.config.admin
    if config is None:
        return None
    started = time.monotonic()
    media = server.media
    backend = Backend(
        version=__version__,
        uptime_s=lambda: time.monotonic() - started,
        calls=lambda: len(server.calls),
        participants=lambda: server.conferences.participants if server.conferences else 0,
        registrations=lambda: server.registrar.count(server.clock()),
        rooms=lambda: server.config.rooms,
        controls=lambda: server.controls,
        quiet_moment=media.after_tick if media is not None else None,
    )
    bridge = WebRtcBridge(server)  # SPEC 14: browser participants on the same port
    admin = AdminServer(config, backend, server.events, server.security.admin, server.metrics.registry,
                        extend=lambda app: add_webrtc_routes(app, bridge))
    try:
        await admin.start()
    except OSError as exc:  # e.g. the port is taken: say which socket (the CLI logs it, exit 1)
        await admin.close()
        raise OSError(exc.errno, f"[admin] {config.bind} port {config.port}: {exc.strerror or exc}") from None
    return admin
