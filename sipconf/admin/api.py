"""The JSON endpoints of SPEC 13: status, rooms, and the conference actions.

Actions go to the conference's ``ConferenceControls`` (sipconf/controls.py),
the same code the keypad keys use; this module only finds the conference or
participant, maps "not found" to 404 and answers the conference's new state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..config import RoomConfig
from ..controls import ConferenceControls, Controls, ControlsError

log = logging.getLogger("sipconf.admin")

BODY_TIMEOUT_S = 10.0  # a request body must arrive within this long (slow-body clients)
#: /api/rooms is built room by room in slices of at most this long, each
#: right after a mixer tick: a console polling 1,000 participants must not
#: spend the few milliseconds between two ticks on one JSON document
ROOMS_SLICE_S = 0.002


@dataclass
class Backend:
    """What the API needs of the server (built by sipconf.admin.start_admin)."""

    version: str
    uptime_s: Callable[[], float]
    calls: Callable[[], int]
    participants: Callable[[], int]
    registrations: Callable[[], int]
    rooms: Callable[[], tuple[RoomConfig, ...]]  # the current configuration's rooms (reload-safe)
    controls: Callable[[], Controls | None]
    quiet_moment: Callable[[], Awaitable[None]] | None = None  # right after a mixer tick


def error(status: int, message: str, **headers: str) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is ``{"error": message}``."""
    cls = web.HTTPException
    for candidate in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                      web.HTTPRequestTimeout, web.HTTPRequestEntityTooLarge, web.HTTPServiceUnavailable,
                      web.HTTPInternalServerError):
        if candidate.status_code == status:
            cls = candidate
            break
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers or None)


def conference_state(live: ConferenceControls) -> dict:
    """The conference's state as the controls give it, with each participant's
    ``caller`` the calling number (From user) when known: the controls' own
    ``caller`` is the key of PIN bans, a source address for desk phones."""
    state = live.state()
    calls = {p.id: p.call for p in live.participants}
    for participant in state["participants"]:
        calling = getattr(calls.get(participant["id"]), "calling", None)
        if calling:
            participant["caller"] = calling
    return state


def _json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), content_type="application/json")


class Api:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[web.RouteDef]:
        conference = "/api/rooms/{room}/conferences/{conference}"
        participant_actions = "|".join(("mute", "unmute", "kick"))
        conference_actions = "|".join(("lock", "unlock", "mute-all", "unmute-all", "record/start", "record/stop", "end"))
        return [
            web.get("/api/status", self.status, allow_head=False),
            web.get("/api/rooms", self.rooms, allow_head=False),
            web.post(conference + "/participants/{participant}/{action:(" + participant_actions + ")}",
                     self.participant_action),
            web.post(conference + "/{action:(" + conference_actions + ")}", self.conference_action),
        ]

    # -- reads ------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        b = self.backend
        return _json({"version": b.version, "uptime_s": round(b.uptime_s(), 1), "calls": b.calls(),
                      "participants": b.participants(), "registrations": b.registrations()})

    async def rooms(self, request: web.Request) -> web.Response:
        """Every room; each room's state is taken as a whole, right after a
        tick (rooms listed in separate slices may be a tick or two apart)."""
        quiet_moment = self.backend.quiet_moment
        parts: list[str] = []
        slice_start = None
        for room in self.backend.rooms():
            if quiet_moment is not None and (slice_start is None
                                             or time.perf_counter() - slice_start > ROOMS_SLICE_S):
                await quiet_moment()  # the slack right after a tick
                slice_start = time.perf_counter()
            parts.append(json.dumps(self._room(room, self.backend.controls()), separators=(",", ":")))
        return web.Response(text='{"rooms":[' + ",".join(parts) + "]}", content_type="application/json")

    @staticmethod
    def _room(room: RoomConfig, controls: Controls | None) -> dict:
        conferences = []
        for config in room.conferences:
            live = controls.conference(room.extension, config.id) if controls is not None else None
            conferences.append(conference_state(live) if live is not None else
                               {"id": config.id, "locked": False, "recording": False, "participants": []})
        return {"extension": room.extension, "name": room.name or "", "conferences": conferences}

    # -- actions ----------------------------------------------------------------------------

    def _conference(self, request: web.Request) -> ConferenceControls:
        ext, cid = request.match_info["room"], request.match_info["conference"]
        room = next((r for r in self.backend.rooms() if r.extension == ext), None)
        if room is None:
            raise error(404, f"no room {ext}")
        if room.conference(cid) is None:
            raise error(404, f"no conference {cid} in room {ext}")
        controls = self.backend.controls()
        live = controls.conference(ext, cid) if controls is not None else None
        if live is None:
            raise error(404, f"conference {cid} of room {ext} has no participants")
        return live

    @staticmethod
    async def _body(request: web.Request) -> dict:
        """An action takes no parameters; a body, if any, must be a JSON object
        (``{}``). Oversized: 413 (aiohttp's client_max_size); slow: 408."""
        if not request.body_exists:
            return {}
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await request.read()
        except TimeoutError:
            raise error(408, "request body too slow", Connection="close") from None
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise error(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise error(400, "body must be a JSON object")
        return body

    @staticmethod
    def _answer(live: ConferenceControls) -> web.Response:
        return _json({"room": live.room.extension, **conference_state(live)})

    async def participant_action(self, request: web.Request) -> web.Response:
        await self._body(request)
        live = self._conference(request)
        pid, action = request.match_info["participant"], request.match_info["action"]
        if not any(p.id == pid for p in live.present):
            raise error(404, f"no participant {pid} in conference {live.config.id}")
        log.info("admin %s: %s participant %s of conference %s in room %s", request.remote, action, pid,
                 live.config.id, live.room.extension)
        getattr(live, action)(pid)
        return self._answer(live)

    async def conference_action(self, request: web.Request) -> web.Response:
        await self._body(request)
        live = self._conference(request)
        action = request.match_info["action"]
        log.info("admin %s: %s conference %s in room %s", request.remote, action, live.config.id,
                 live.room.extension)
        if action.startswith("record/"):
            try:
                live.set_recording(action == "record/start")
            except ControlsError as exc:
                raise error(503, str(exc)) from None
        else:
            {"lock": live.lock, "unlock": live.unlock, "mute-all": live.mute_all,
             "unmute-all": live.unmute_all, "end": live.end}[action]()
        return self._answer(live)
