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
    """Routing on top of the config's own digit-compared number lookups."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def lookup(self, number: str | None) -> Destination | None:
        if not number:
            return None
        room = self._config.room_for(number)
        if room is not None:
            return RoomDestination(room)
        if self._config.is_receptionist(number):
            return ReceptionistDestination()
        return None

    def room_for_extension(self, typed: str) -> RoomConfig | None:
        """What the receptionist does with typed digits: room extensions only
        (a direct number typed on the keypad is not an extension)."""
        room = self._config.room_for(typed)
        if room is not None and digits_of(room.extension) == digits_of(typed):
            return room
        return None

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
