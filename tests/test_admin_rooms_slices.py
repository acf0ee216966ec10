"""GET /api/rooms is built in slices, each right after a mixer tick
(Backend.quiet_moment), so that a console polling a big server does not
spend the slack between two ticks on one document (SPEC 13: the admin
server never delays a tick)."""

from __future__ import annotations

import json
import time

from sipconf.admin import api as api_module
from sipconf.admin.api import Api, Backend
from sipconf.config import ConferenceConfig, RoomConfig

ROOMS = tuple(RoomConfig(str(7000 + i), name=f"room {i}", conferences=(ConferenceConfig("1234", "4321"),))
              for i in range(40))


def backend(quiet) -> Backend:
    return Backend(version="x", uptime_s=lambda: 1.0, calls=lambda: 0, participants=lambda: 0,
                   registrations=lambda: 0, rooms=lambda: ROOMS, controls=lambda: None, quiet_moment=quiet)


async def test_rooms_waits_for_a_tick_again_once_a_slice_is_used_up(monkeypatch):
    waits = []

    async def quiet() -> None:
        waits.append(time.perf_counter())

    slow_room = Api._room

    def room_taking_1ms(room, controls):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.001:  # bounded: 1 ms per room
            pass
        return slow_room(room, controls)

    monkeypatch.setattr(Api, "_room", staticmethod(room_taking_1ms))
    response = await Api(backend(quiet)).rooms(None)
    body = json.loads(response.text)
    assert [r["extension"] for r in body["rooms"]] == [r.extension for r in ROOMS]
    assert body["rooms"][0] == {"extension": "7000", "name": "room 0", "conferences": [
        {"id": "1234", "locked": False, "recording": False, "participants": []}]}
    # 40 rooms of 1 ms in slices of 2 ms: a tick waited for about every 2-3 rooms
    assert len(waits) >= 10, len(waits)  # one slice (no slicing) would wait once


async def test_rooms_in_one_slice_when_quick(monkeypatch):
    waits = []

    async def quiet() -> None:
        waits.append(1)

    monkeypatch.setattr(api_module, "ROOMS_SLICE_S", 10.0)
    response = await Api(backend(quiet)).rooms(None)
    assert len(json.loads(response.text)["rooms"]) == 40
    assert waits == [1]
