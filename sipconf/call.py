"""One call's story: answered → receptionist and/or room prompts → join → leave.

The SIP side (answering, BYE, re-INVITE) is done by the server; this module
holds what the call is doing and drives the IVR flows on top of the media
endpoint.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .config import ConferenceConfig, RoomConfig
from .ivr import DigitCollector
from .sdp import AudioSelection
from .sip.dialog import Dialog
from .sip.transaction import Destination
from .wording import plural

if TYPE_CHECKING:
    from .server import SipServer

log = logging.getLogger("sipconf.call")

MAX_ATTEMPTS = 3


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Flow(enum.Enum):
    ROOM = "room"
    RECEPTIONIST = "receptionist"


@dataclass(eq=False)
class Call:
    server: "SipServer"
    call_id: str
    dialog: Dialog
    peer: Destination                  # where the peer's requests come from; our requests go there
    caller: str                        # for PIN brute-force accounting (source address or calling number)
    flow: Flow
    room: RoomConfig | None
    selection: AudioSelection
    rtp_port: int
    sdp_session_id: int
    sdp_version: int = 1
    endpoint: object = None            # mixer.engine.RtpEndpoint
    state: CallState = CallState.RINGING
    on_hold: bool = False
    conference: ConferenceConfig | None = None
    digits: DigitCollector | None = None
    task: asyncio.Task | None = None
    end_reason: str | None = None
    srtp_policy: str = "optional"      # SPEC 11, of the extension or trunk calling (sipconf.secure_calls)
    srtp_keys: object = None           # sipconf.sdes.SrtpKeys when the call uses SRTP
    # for the call record (sipconf/cdr.py): From user, number dialled, wall-clock times
    calling: str | None = None
    display_name: str = ""  # From display name or the extension's name (admin API)
    called: str | None = None
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    _joined_room: RoomConfig | None = field(default=None, repr=False)

    # -- events from the server -----------------------------------------------------

    def feed_digit(self, digit: str) -> None:
        if self.digits is not None and self.state is not CallState.ENDED:
            self.server.metrics.digits.inc()
            if self._joined_room is not None:
                self.server.controls.digit(self, digit)  # in the conference: keys (SPEC 12)
            else:
                self.digits.feed(digit)

    def confirmed(self) -> None:
        """The ACK for our 2xx arrived: start the caller's flow."""
        if self.state is not CallState.ANSWERED:
            return
        self.state = CallState.CONFIRMED
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"call {self.call_id}")

    def set_hold(self, on_hold: bool) -> None:
        if on_hold != self.on_hold:
            self.on_hold = on_hold
            log.info("call %s: %s", self.call_id, "on hold" if on_hold else "resumed")
        if self.endpoint is not None:
            self.endpoint.set_hold(on_hold)

    # -- the flows ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            room = self.room
            if self.flow is Flow.RECEPTIONIST:
                room = await self._receptionist()
                if room is None:
                    return
                self.room = room
            assert room is not None
            await self._room(room)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a flow must end this call only, not the server
            log.exception("call %s: flow failed", self.call_id)
            self.server.hang_up(self, "internal error")

    async def _receptionist(self) -> RoomConfig | None:
        prompts = self.server.prompts
        assert self.digits is not None
        for _ in range(MAX_ATTEMPTS):
            typed = await self.digits.ask(prompts["welcome"])
            room = self.server.router.room_for_extension(typed) if typed else None
            if room is not None:
                log.info("call %s: receptionist transfers to room %s", self.call_id, room.extension)
                return room
            log.info("call %s: receptionist: no room at extension %r", self.call_id, typed)
            await self.digits.say(prompts["invalid"])
        await self._goodbye("receptionist: too many invalid extensions")
        return None

    async def _room(self, room: RoomConfig) -> None:
        prompts = self.server.prompts
        directory = self.server.conferences
        assert self.digits is not None
        if directory.is_full(room):
            await self._goodbye(f"room {room.extension} full", prompts["room_full"])
            return
        conference, moderator = None, False
        for _ in range(MAX_ATTEMPTS):
            if self.server.security.caller_banned(self.caller):
                break
            conference_id = await self.digits.ask(prompts["enter_conference_id"])
            pin = await self.digits.ask(prompts["enter_pin"])
            admitted = directory.admit_role(room, conference_id, pin)
            conference, moderator = admitted if admitted else (None, False)
            if conference is not None:
                break
            log.info("call %s: wrong conference ID or PIN for room %s (id %r)",
                     self.call_id, room.extension, conference_id)
            self.server.security.pin_failed(self.caller)
            await self.digits.say(prompts["invalid"])
        else:
            await self._goodbye("too many wrong conference IDs or PINs")
            return
        if conference is None:
            await self._goodbye("caller banned")
            return
        if directory.is_full(room):
            await self._goodbye(f"room {room.extension} full", prompts["room_full"])
            return
        controls = self.server.controls
        if not moderator and controls.is_locked(room, conference):
            await self.digits.say(prompts["conference_locked"])
            await self._goodbye(f"conference {conference.id} of room {room.extension} locked")
            return
        self.conference = conference
        self._joined_room = room
        participant = controls.join(self, room, conference, moderator=moderator)
        log.info("call %s: joined conference %s of room %s as participant %s%s (%d in the room)",
                 self.call_id, conference.id, room.extension, participant.id,
                 " (moderator)" if moderator else "", directory.room_count(room))
        # In the conference until BYE or timeout; digits go to the controls from here.

    async def _goodbye(self, reason: str, prompt=None) -> None:
        assert self.digits is not None
        await self.digits.say(prompt if prompt is not None else self.server.prompts["goodbye"])
        self.server.hang_up(self, reason)

    # -- ending ---------------------------------------------------------------------

    def leave_conference(self) -> None:
        if self.conference is not None and self._joined_room is not None:
            self.server.controls.leave(self)
            log.info("call %s: left conference %s of room %s",
                     self.call_id, self.conference.id, self._joined_room.extension)
            self.conference = None
            self._joined_room = None

    def release(self) -> None:
        """Stop the flow and give back media resources (idempotent)."""
        self.state = CallState.ENDED
        current = asyncio.current_task() if _loop_running() else None
        if self.task is not None and self.task is not current and not self.task.done():
            self.task.cancel()
        # A cancelled flow's task keeps its CancelledError, whose traceback
        # holds the flow's frames and so this call: not held here, the call
        # is freed by reference counting, not by the cyclic GC (issue 15).
        self.task = None
        if self.digits is not None:
            self.digits.close()  # a flow whose cancellation was lost stops at its next prompt or digit
        self.leave_conference()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
