"""Which flow an incoming call gets, from the number it called (SPEC section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config, RoomConfig, digits_of
from .sip.message import Request
from .sip.uri import parse_name_addr, parse_uri


@dataclass(frozen=True)
class RoomDestination:
    room: RoomConfig


@dataclass(frozen=True)
class ReceptionistDestination:
    pass


Destination = RoomDestination | ReceptionistDestination


class Router:
    def __init__(self, config: Config) -> None:
        self._by_digits: dict[str, Destination] = {}
        self._room_extensions: dict[str, RoomConfig] = {}
        for room in config.rooms:
            target = RoomDestination(room)
            self._by_digits[digits_of(room.extension)] = target
            self._room_extensions[digits_of(room.extension)] = room
            for number in room.numbers:
                self._by_digits[digits_of(number)] = target
        receptionist = ReceptionistDestination()
        for number in config.receptionist.numbers:
            self._by_digits[digits_of(number)] = receptionist
        if config.receptionist.extension:
            self._by_digits[digits_of(config.receptionist.extension)] = receptionist

    def lookup(self, number: str | None) -> Destination | None:
        if not number:
            return None
        digits = digits_of(number)
        return self._by_digits.get(digits) if digits else None

    def room_for_extension(self, typed: str) -> RoomConfig | None:
        """What the receptionist does with typed digits: room extensions only."""
        return self._room_extensions.get(digits_of(typed))

    def route(self, request: Request) -> tuple[str | None, Destination | None]:
        """The called number and where it leads: the Request-URI user, or the
        To user when the Request-URI user is not a known number."""
        request_user = _user_of(request.uri)
        found = self.lookup(request_user)
        if found is not None:
            return request_user, found
        try:
            to_user = parse_name_addr(request.headers.get("To") or "").uri.user
        except ValueError:
            to_user = None
        found = self.lookup(to_user)
        if found is not None:
            return to_user, found
        return request_user or to_user, None


def _user_of(uri_text: str) -> str | None:
    try:
        uri = parse_uri(uri_text)
    except ValueError:
        return None
    return uri.user
