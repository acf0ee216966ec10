"""The live conferences of every room: which mixer conference an ID maps to,
and how many callers a room holds (for ``max_participants``)."""

from __future__ import annotations

import hmac
from typing import Callable, Protocol

from .config import ConferenceConfig, RoomConfig


class MixerConference(Protocol):
    def add(self, endpoint) -> None: ...
    def remove(self, endpoint) -> None: ...
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
        self._room_counts: dict[str, int] = {}

    def admit(self, room: RoomConfig, conference_id: str | None, pin: str | None) -> ConferenceConfig | None:
        """The conference of ``room`` that this ID and PIN open, if any."""
        if conference_id is None or pin is None:
            return None
        for conference in room.conferences:
            if conference.id == conference_id:
                # Constant-time PIN compare: PINs are short secrets.
                if hmac.compare_digest(conference.pin.encode(), pin.encode()):
                    return conference
                return None
        return None

    def room_count(self, room: RoomConfig) -> int:
        return self._room_counts.get(room.extension, 0)

    def is_full(self, room: RoomConfig) -> bool:
        return self.room_count(room) >= room.max_participants

    def join(self, room: RoomConfig, conference: ConferenceConfig, endpoint) -> int:
        """Add ``endpoint``; returns how many were there before it."""
        key = (room.extension, conference.id)
        mixer_conference = self._live.get(key)
        if mixer_conference is None:
            mixer_conference = self._live[key] = self._new_conference()
        before = len(mixer_conference)
        mixer_conference.add(endpoint)
        self._room_counts[room.extension] = self.room_count(room) + 1
        if self._on_join is not None:
            self._on_join(room, conference, endpoint, before)
        return before

    def leave(self, room: RoomConfig, conference: ConferenceConfig, endpoint) -> None:
        key = (room.extension, conference.id)
        mixer_conference = self._live.get(key)
        if mixer_conference is None:
            return
        mixer_conference.remove(endpoint)
        self._room_counts[room.extension] = max(0, self.room_count(room) - 1)
        if len(mixer_conference) == 0:
            del self._live[key]
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
