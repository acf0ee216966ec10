"""Location service (RFC 3261 section 10.3): Contact bindings per extension.

Authentication happens before a REGISTER reaches this module; here we only
apply its Contact headers and tell what to answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sip.message import Request
from .sip.uri import parse_name_addr

MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600


@dataclass
class Binding:
    contact_uri: str
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, str, int]   # transport, host, port the REGISTER came from


@dataclass
class RegisterOutcome:
    status: int
    contacts: list[str] = field(default_factory=list)   # Contact header values for a 200
    min_expires: int | None = None                     # for a 423


class Registrar:
    def __init__(self, min_expires: int = MIN_EXPIRES, max_expires: int = MAX_EXPIRES) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self._bindings: dict[str, dict[str, Binding]] = {}

    def bindings(self, aor: str, now: float) -> list[Binding]:
        self.expire(now)
        return list(self._bindings.get(aor, {}).values())

    def count(self, now: float) -> int:
        self.expire(now)
        return sum(len(b) for b in self._bindings.values())

    def expire(self, now: float) -> None:
        for aor in list(self._bindings):
            live = {uri: b for uri, b in self._bindings[aor].items() if b.expires_at > now}
            if live:
                self._bindings[aor] = live
            else:
                del self._bindings[aor]

    def register(self, aor: str, request: Request, source: tuple[str, str, int], now: float) -> RegisterOutcome:
        contacts = request.headers.get_all("Contact")
        expires_header = request.headers.get("Expires")
        try:
            default_expires = int(expires_header) if expires_header is not None else DEFAULT_EXPIRES
        except ValueError:
            return RegisterOutcome(400)
        current = self._bindings.setdefault(aor, {})
        call_id = request.call_id
        cseq = request.cseq[0]

        if any(c.strip() == "*" for c in contacts):
            # RFC 3261 10.3 step 6: "*" only with Expires: 0 and alone.
            if len(contacts) != 1 or default_expires != 0:
                return RegisterOutcome(400)
            current.clear()
            return self._outcome(aor, now)

        parsed = []
        for value in contacts:
            try:
                contact = parse_name_addr(value)
            except ValueError:
                return RegisterOutcome(400)
            expires_param = contact.params.get("expires")
            try:
                expires = int(expires_param) if expires_param is not None else default_expires
            except ValueError:
                return RegisterOutcome(400)
            if 0 < expires < self.min_expires:
                return RegisterOutcome(423, min_expires=self.min_expires)
            parsed.append((str(contact.uri), min(expires, self.max_expires)))

        for uri, expires in parsed:
            existing = current.get(uri)
            if existing is not None and existing.call_id == call_id and existing.cseq >= cseq:
                continue  # out-of-order REGISTER: ignore this binding (10.3 step 7)
            if expires == 0:
                current.pop(uri, None)
            else:
                current[uri] = Binding(uri, now + expires, call_id, cseq, source)
        return self._outcome(aor, now)

    def _outcome(self, aor: str, now: float) -> RegisterOutcome:
        values = [
            f"<{b.contact_uri}>;expires={max(0, int(round(b.expires_at - now)))}"
            for b in self.bindings(aor, now)
        ]
        return RegisterOutcome(200, values)
