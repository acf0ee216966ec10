"""In-conference controls (SPEC 12): keypad keys, moderators, lock, mute,
waiting for the moderator, counts, talk state -- and the conference actions
the admin API calls.

One ``ConferenceControls`` per live conference holds its participants and
state and offers the actions as plain methods (``mute(pid)``, ``kick(pid)``,
``lock()``, ``mute_all()``, ``end()``...), each returning the new state and
publishing events on the EventBus. ``Controls`` is the server-wide part:
joining and leaving, the keys a participant types, and the engine's talk
changes. Calls reach it through ``Call``; the SIP side (BYE) stays in the
server, reached through the ``hang_up`` callable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from mixer.sounds import make_waiting_music

from .config import ConferenceConfig, RoomConfig
from .events import EventBus, rfc3339_now
from .sdp import rtpmap_text

log = logging.getLogger("sipconf.controls")
events_log = logging.getLogger("sipconf.events")

KEY_TIMEOUT = 3.0  # s between "*" and the key that completes it
SAY_GRACE = 2.0    # s beyond a goodbye's length before we hang up anyway (prompt stuck, e.g. on hold)
RATE = 8000


class ControlsError(Exception):
    """An action that cannot be done (e.g. recording not available)."""


class CallLike(Protocol):
    """What the controls need of a call (sipconf.call.Call fits)."""

    call_id: str
    caller: str
    endpoint: Any  # mixer.engine.RtpEndpoint


#: Starts (True) or stops (False) the recording of a conference; returns
#: whether it records now. Set by the server when recording exists.
Recorder = Callable[["ConferenceControls", bool], bool]


#: Events of the talk detection: up to two per participant per second of
#: speech, so they are logged at DEBUG (the event stream carries them all);
#: at INFO they were most of the log and, in bursts, of the loop's time.
CHATTY_EVENTS = frozenset({"talking", "stopped_talking"})


def log_event(event: dict) -> None:
    """EventBus subscriber: one log line per event (talk events at DEBUG)."""
    level = logging.DEBUG if event["event"] in CHATTY_EVENTS else logging.INFO
    if not events_log.isEnabledFor(level):
        return
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "time"))
    events_log.log(level, "event %s %s", event["event"], details)


@dataclass(eq=False)
class Participant:
    id: str
    call: CallLike
    moderator: bool
    joined_at: str = field(default_factory=rfc3339_now)
    muted: bool = False
    talking: bool = False
    waiting: bool = False   # waiting for the moderator: not mixed
    leaving: bool = False   # being sent away (goodbye playing)
    star_at: float | None = None  # when "*" was typed, for the next key

    @property
    def endpoint(self):
        return self.call.endpoint

    def state(self) -> dict:
        selection = getattr(self.call, "selection", None)
        codec = getattr(selection, "codec", None)
        return {
            "id": self.id, "caller": self.call.caller, "name": getattr(self.call, "display_name", "") or "",
            # as in a=rtpmap (SPEC 13: "opus/48000/2"); a browser names its own ("opus/webrtc", SPEC 14)
            "codec": getattr(self.call, "api_codec", None) or (rtpmap_text(codec) if codec else None),
            "srtp": bool(getattr(self.call, "srtp", False)) or getattr(self.call, "srtp_keys", None) is not None,
            "moderator": self.moderator,
            "muted": self.muted, "talking": self.talking, "joined_at": self.joined_at,
        }


class Prompts:
    """The prompts of the server's language, and the spoken counts."""

    def __init__(self, get: Callable[[], dict[str, np.ndarray]]) -> None:
        self._get = get
        self.music = make_waiting_music()

    def __getitem__(self, name: str) -> np.ndarray:
        return self._get()[name]

    def count(self, n: int, *, others: bool) -> np.ndarray:
        """"There are N other participants" (others) or "There are N
        participants in the conference"; 0-99 spoken, more said as 99."""
        p = self._get()
        n = max(0, min(n, 99))
        kind = "count_others" if others else "count_total"
        if others and n == 0:
            return p["count_others_0"]
        if n == 1:
            return p[f"{kind}_1"]
        return np.concatenate([p[f"{kind}_before"], p[f"number_{n}"], p[f"{kind}_after"]])


class ConferenceControls:
    """One live conference: its participants and what can be done to it."""

    def __init__(self, hub: "Controls", room: RoomConfig, config: ConferenceConfig) -> None:
        self.hub = hub
        self.room = room
        self.config = config
        self.participants: list[Participant] = []  # in the order they joined
        self.locked = False
        self.recording = False
        self.all_muted = False
        self.ending = False

    # -- state ------------------------------------------------------------------------

    @property
    def present(self) -> list[Participant]:
        return [p for p in self.participants if not p.leaving]

    def has_moderator(self) -> bool:
        return any(p.moderator for p in self.present)

    def participant(self, pid: str) -> Participant:
        for p in self.participants:
            if p.id == pid:
                return p
        raise KeyError(pid)

    def state(self) -> dict:
        return {"id": self.config.id, "locked": self.locked, "recording": self.recording,
                "participants": [p.state() for p in self.present]}

    def _publish(self, event: str, participant: Participant | None = None, **fields) -> None:
        self.hub.bus.publish(event, room=self.room.extension, conference=self.config.id,
                             participant=participant.id if participant else None, **fields)

    # -- actions (keys and admin API) ------------------------------------------------------

    def mute(self, pid: str, *, by: str = "admin") -> dict:
        self._set_muted(self.participant(pid), True, by)
        return self.state()

    def unmute(self, pid: str, *, by: str = "admin") -> dict:
        self._set_muted(self.participant(pid), False, by)
        return self.state()

    def kick(self, pid: str) -> dict:
        self._send_away(self.participant(pid), "removed from the conference", beep=True)
        return self.state()

    def lock(self) -> dict:
        if not self.locked:
            self.locked = True
            self._publish("locked")
        return self.state()

    def unlock(self) -> dict:
        if self.locked:
            self.locked = False
            self._publish("unlocked")
        return self.state()

    def mute_all(self) -> dict:
        """Everyone but the moderators (newcomers too, until unmute_all)."""
        self.all_muted = True
        for p in self.present:
            if not p.moderator and not p.muted:
                self._set_muted(p, True, "moderator")
                self.hub.say(p, "muted")
        return self.state()

    def unmute_all(self) -> dict:
        self.all_muted = False
        for p in self.present:
            if not p.moderator and p.muted:
                self._set_muted(p, False, "moderator")
                self.hub.say(p, "unmuted")
        return self.state()

    def set_recording(self, on: bool) -> dict:
        recorder = self.hub.recorder
        if recorder is None:
            raise ControlsError("recording not available")
        if on != self.recording:
            self.recording = bool(recorder(self, on))
        return self.state()

    def end(self, reason: str = "conference ended") -> dict:
        """Everyone hears goodbye and is hung up."""
        self.ending = True
        for p in self.present:
            self._send_away(p, reason, beep=False)
        return self.state()

    def _set_muted(self, p: Participant, muted: bool, by: str) -> None:
        if p.muted == muted:
            return
        p.muted = muted
        if p.endpoint is not None:
            p.endpoint.set_muted(muted)
        self._publish("muted" if muted else "unmuted", p, by=by)

    def _send_away(self, p: Participant, reason: str, *, beep: bool) -> None:
        if p.leaving:
            return
        p.leaving = True
        p.waiting = False
        self.hub.unmix(self, p, beep=beep)
        self.hub.goodbye(p, reason)

    # -- keys ---------------------------------------------------------------------------

    def key(self, p: Participant, key: str) -> None:
        """``*`` + ``key`` typed by ``p`` (SPEC 12 table)."""
        hub = self.hub
        if key == "6":
            self._set_muted(p, not p.muted, "self")
            hub.say(p, "muted" if p.muted else "unmuted")
            return
        if key == "0":
            hub.say_pcm(p, hub.prompts.count(len(self.present), others=False))
            return
        if key not in MODERATOR_KEYS:
            return
        if not p.moderator:
            log.info("call %s: key *%s refused: not a moderator", p.call.call_id, key)
            hub.say(p, "not_allowed")
            return
        if key == "5":
            self.unlock() if self.locked else self.lock()
            hub.say(p, "locked" if self.locked else "unlocked")
        elif key == "8":
            self.unmute_all() if self.all_muted else self.mute_all()
            hub.say(p, "all_muted" if self.all_muted else "all_unmuted")
        elif key == "3":
            last = next((q for q in reversed(self.present) if not q.moderator), None)
            if last is None:
                hub.say(p, "invalid")
            else:
                log.info("call %s: moderator removes participant %s", p.call.call_id, last.id)
                self.kick(last.id)
                hub.say(p, "participant_removed")
        elif key == "7":
            try:
                self.set_recording(not self.recording)
            except ControlsError:
                hub.say(p, "not_allowed")
        elif key == "9":
            log.info("call %s: moderator ends conference %s of room %s", p.call.call_id, self.config.id,
                     self.room.extension)
            self.end("conference ended by the moderator")


MODERATOR_KEYS = frozenset("58379")


class Controls:
    """Every live conference's controls; joining, leaving, keys, talk state."""

    def __init__(self, bus: EventBus, directory, prompts: Callable[[], dict[str, np.ndarray]],
                 hang_up: Callable[[Any, str], None], *, announce_count: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        self.bus = bus
        self.directory = directory
        self.prompts = Prompts(prompts)
        self.hang_up = hang_up
        self.announce_count = announce_count
        self.recorder: Recorder | None = None
        self._clock = clock
        self._ids = itertools.count(1)
        self._live: dict[tuple[str, str], ConferenceControls] = {}
        self._by_call: dict[int, Participant] = {}
        self._by_endpoint: dict[int, Participant] = {}
        self._conference_of: dict[int, ConferenceControls] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # -- lookups (admin API) ------------------------------------------------------------------

    def conference(self, room_extension: str, conference_id: str) -> ConferenceControls | None:
        return self._live.get((room_extension, conference_id))

    @property
    def conferences(self) -> list[ConferenceControls]:
        return list(self._live.values())

    def is_locked(self, room: RoomConfig, config: ConferenceConfig) -> bool:
        live = self._live.get((room.extension, config.id))
        return live is not None and live.locked and not live.ending

    def participant_of(self, call) -> Participant | None:
        return self._by_call.get(id(call))

    # -- joining and leaving --------------------------------------------------------------

    def join(self, call: CallLike, room: RoomConfig, config: ConferenceConfig, *, moderator: bool) -> Participant:
        key = (room.extension, config.id)
        conference = self._live.get(key)
        if conference is None or conference.ending:
            # a conference being ended (its callers hearing goodbye) is not
            # joined: the newcomer starts the next one, unlocked
            conference = self._live[key] = ConferenceControls(self, room, config)
        p = Participant(str(next(self._ids)), call, moderator)
        waiting = config.wait_for_moderator and not moderator and not conference.has_moderator()
        p.waiting = waiting
        if conference.all_muted and not moderator:
            p.muted = True
            call.endpoint.set_muted(True)
        conference.participants.append(p)
        self._by_call[id(call)] = p
        self._by_endpoint[id(call.endpoint)] = p
        self._conference_of[id(p)] = conference
        self.directory.join(room, config, call.endpoint, mixed=not waiting)
        conference._publish("joined", p, moderator=moderator, caller=call.caller)
        if p.muted:
            conference._publish("muted", p, by="moderator")
        if waiting:
            log.info("call %s: waits for the moderator of conference %s", call.call_id, config.id)
            self.say(p, "waiting_for_moderator")
            return p
        released = []
        if moderator:
            for q in conference.present:
                if q.waiting:
                    q.waiting = False
                    self.directory.mix(room, config, q.endpoint)
                    self.stop_prompt(q)
                    released.append(q)
            if released:
                log.info("conference %s of room %s: moderator in, %d waiting caller(s) mixed",
                         config.id, room.extension, len(released))
        others = sum(1 for q in conference.present if not q.waiting) - 1
        if others == 0:
            self.say(p, "first_participant")
        elif self.announce_count:
            self.say_pcm(p, self.prompts.count(others, others=True))
        return p

    def leave(self, call: CallLike) -> None:
        """The call is gone (BYE, timeout, hang-up): out of its conference."""
        p = self._by_call.pop(id(call), None)
        if p is None:
            return
        self._by_endpoint.pop(id(call.endpoint), None)
        conference = self._conference_of.pop(id(p))
        was_present = not p.leaving
        conference.participants.remove(p)
        self.directory.leave(conference.room, conference.config, call.endpoint,
                             beep=was_present and not conference.ending)
        conference._publish("left", p)
        if p.moderator and not conference.has_moderator() and conference.present and not conference.ending:
            if conference.config.end_with_moderator:
                log.info("conference %s of room %s: last moderator left, ending it", conference.config.id,
                         conference.room.extension)
                conference.end("the moderator left")
            elif conference.config.wait_for_moderator:
                for q in conference.present:
                    if not q.moderator and not q.waiting:
                        q.waiting = True
                        self.unmix(conference, q, beep=False)
                        self.say(q, "waiting_for_moderator")
        if not conference.participants:
            if self._live.get((conference.room.extension, conference.config.id)) is conference:
                del self._live[(conference.room.extension, conference.config.id)]

    def unmix(self, conference: ConferenceControls, p: Participant, *, beep: bool) -> None:
        self.directory.unmix(conference.room, conference.config, p.endpoint, beep=beep)

    # -- keys and talk ----------------------------------------------------------------------

    def digit(self, call: CallLike, digit: str) -> None:
        """A digit typed by a caller in a conference (RFC 4733, INFO or in-band)."""
        p = self._by_call.get(id(call))
        if p is None or p.leaving:
            return
        log.debug("call %s: key %s in the conference", call.call_id, digit)
        now = self._now()
        if digit == "*":
            p.star_at = now
            return
        star, p.star_at = p.star_at, None
        if star is None or now - star > KEY_TIMEOUT:
            return
        self._conference_of[id(p)].key(p, digit)

    def on_talk(self, changes) -> None:
        """The engine's talk changes of one tick: [(endpoint, talking)]."""
        for endpoint, talking in changes:
            p = self._by_endpoint.get(id(endpoint))
            if p is None or p.talking == talking:
                continue
            p.talking = talking
            self._conference_of[id(p)]._publish("talking" if talking else "stopped_talking", p)

    # -- what a participant hears ----------------------------------------------------------

    def say(self, p: Participant, name: str) -> None:
        self.say_pcm(p, self.prompts[name])

    def say_pcm(self, p: Participant, pcm: np.ndarray) -> None:
        """A prompt to this participant alone; a waiting one goes back to the
        music after it."""
        endpoint = p.endpoint
        if endpoint is None or endpoint.closed:
            return
        endpoint.play(pcm, on_done=lambda: self._after_prompt(p))

    def stop_prompt(self, p: Participant) -> None:
        if p.endpoint is not None:
            p.endpoint.stop_playback()

    def _after_prompt(self, p: Participant) -> None:
        if p.waiting and not p.leaving and self._by_call.get(id(p.call)) is p:
            p.endpoint.play(self.prompts.music, on_done=lambda: self._after_prompt(p))

    def goodbye(self, p: Participant, reason: str) -> None:
        """Goodbye, then BYE (also if the prompt cannot finish, e.g. on hold)."""
        call = p.call
        goodbye = self.prompts["goodbye"]
        endpoint = p.endpoint
        if endpoint is None or endpoint.closed:
            self.hang_up(call, reason)
            return
        endpoint.play(goodbye, on_done=lambda: self.hang_up(call, reason))
        asyncio.get_running_loop().call_later(len(goodbye) / RATE + SAY_GRACE, self.hang_up, call, reason)
