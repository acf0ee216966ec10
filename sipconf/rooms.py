"""The live conferences of every room: which mixer conference an ID maps to,
and how many callers a room holds (for ``max_participants``)."""

from __future__ import annotations

import hmac
from typing import Callable, Protocol

from .config import ConferenceConfig, RoomConfig


class MixerConference(Protocol):
    def add(self, endpoint) -> None: ...
    def remove(self, endpoint, beep: bool = True) -> None: ...
    def __len__(self) -> int: ...


class ConferenceDirectory:
    def __init__(self, new_conference: Callable[[], MixerConference], *,
                 on_join: Callable[[RoomConfig, ConferenceConfig, object, int], None] | None = None,
                 on_end: Callable[[RoomConfig, ConferenceConfig, MixerConference], None] | None = None) -> None:
        """``on_join(room, conference, endpoint, before)`` after each join;
        ``on_end(room, conference, mixer_conference)`` when the last one left."""
        self._new_conference = new_conference
        self._on_join = on_join
        self._on_end = on_end
        self._live: dict[tuple[str, str], MixerConference] = {}
        self._counts: dict[tuple[str, str], int] = {}  # callers in, mixed or waiting
        self._room_counts: dict[str, int] = {}

    def admit(self, room: RoomConfig, conference_id: str | None, pin: str | None) -> ConferenceConfig | None:
        """The conference of ``room`` that this ID and PIN open, if any."""
        admitted = self.admit_role(room, conference_id, pin)
        return admitted[0] if admitted else None

    def admit_role(self, room: RoomConfig, conference_id: str | None,
                   pin: str | None) -> tuple[ConferenceConfig, bool] | None:
        """(conference, is moderator) that this ID and PIN open, if any: the
        PIN admits a participant, the moderator PIN a moderator (SPEC 12)."""
        if conference_id is None or pin is None:
            return None
        for conference in room.conferences:
            if conference.id == conference_id:
                # Constant-time PIN compare: PINs are short secrets.
                if hmac.compare_digest(conference.pin.encode(), pin.encode()):
                    return conference, False
                moderator_pin = conference.moderator_pin
                if moderator_pin is not None and hmac.compare_digest(moderator_pin.encode(), pin.encode()):
                    return conference, True
                return None
        return None

    def room_count(self, room: RoomConfig) -> int:
        return self._room_counts.get(room.extension, 0)

    def is_full(self, room: RoomConfig) -> bool:
        return self.room_count(room) >= room.max_participants

    def join(self, room: RoomConfig, conference: ConferenceConfig, endpoint, *, mixed: bool = True) -> int:
        """Count ``endpoint`` in and, unless ``mixed`` is False (waiting for
        the moderator), add it to the mix; returns how many were mixed before."""
        key = (room.extension, conference.id)
        mixer_conference = self._live.get(key)
        if mixer_conference is None:
            mixer_conference = self._live[key] = self._new_conference()
        before = len(mixer_conference)
        if mixed:
            mixer_conference.add(endpoint)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._room_counts[room.extension] = self.room_count(room) + 1
        if self._on_join is not None:
            self._on_join(room, conference, endpoint, before)
        return before

    def mix(self, room: RoomConfig, conference: ConferenceConfig, endpoint) -> None:
        """A caller already counted in joins the mix (the moderator came)."""
        mixer_conference = self._live.get((room.extension, conference.id))
        if mixer_conference is not None:
            mixer_conference.add(endpoint)

    def unmix(self, room: RoomConfig, conference: ConferenceConfig, endpoint, *, beep: bool = True) -> None:
        """Out of the mix but still counted in (waiting again, or hearing goodbye)."""
        mixer_conference = self._live.get((room.extension, conference.id))
        if mixer_conference is not None:
            mixer_conference.remove(endpoint, beep)

    def leave(self, room: RoomConfig, conference: ConferenceConfig, endpoint, *, beep: bool = True) -> None:
        key = (room.extension, conference.id)
        mixer_conference = self._live.get(key)
        if mixer_conference is None:
            return
        mixer_conference.remove(endpoint, beep)
        self._room_counts[room.extension] = max(0, self.room_count(room) - 1)
        self._counts[key] = self._counts.get(key, 1) - 1
        if self._counts[key] <= 0:
            del self._live[key]
            del self._counts[key]
            if self._on_end is not None:
                self._on_end(room, conference, mixer_conference)

    def live(self, room_extension: str, conference_id: str) -> MixerConference | None:
        """The mixer conference of a conference with someone in it, if any."""
        return self._live.get((room_extension, conference_id))

    @property
    def conferences(self) -> int:
        return len(self._live)

    @property
    def participants(self) -> int:
        return sum(self._room_counts.values())
