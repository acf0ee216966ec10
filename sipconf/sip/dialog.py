"""RFC 3261 section 12 dialogs, UAS side, sans-IO.

A dialog is created by the server's 2xx to an INVITE. It knows how to check
in-dialog requests (CSeq ordering) and how to build the requests the server
itself sends in it (BYE, re-INVITE is never sent by us).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .message import Headers, Request, Response
from .uri import parse_name_addr, parse_uri


def new_tag() -> str:
    return secrets.token_hex(6)


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str       # the To of the INVITE, as name-addr text without tag
    remote_uri: str      # the From of the INVITE, without tag
    remote_target: str   # the Contact URI of the peer
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int = 0

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str) -> "Dialog":
        from_addr = parse_name_addr(invite.headers.get("From") or "")
        to_addr = parse_name_addr(invite.headers.get("To") or "")
        contacts = invite.headers.get_all("Contact")
        target = str(parse_name_addr(contacts[0]).uri) if contacts else str(from_addr.uri)
        from_addr.params.pop("tag", None)
        to_addr.params.pop("tag", None)
        # UAS route set: the Record-Route values in order (RFC 3261 12.1.1).
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag,
            local_uri=str(to_addr),
            remote_uri=str(from_addr),
            remote_target=target,
            route_set=list(invite.headers.get_all("Record-Route")),
            local_cseq=0,
            remote_cseq=invite.cseq[0],
        )

    def accepts(self, request: Request) -> bool:
        """RFC 3261 12.2.2: a lower or equal CSeq is out of order (answer 500)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def update_target(self, request: Request) -> None:
        """A re-INVITE may carry a new Contact (RFC 3261 12.2.2 target refresh)."""
        contacts = request.headers.get_all("Contact")
        if contacts:
            try:
                self.remote_target = str(parse_name_addr(contacts[0]).uri)
            except ValueError:
                pass

    def build_request(self, method: str, *, via_host: str, via_port: int, transport: str,
                      contact: str, extra: list[tuple[str, str]] | None = None,
                      body: bytes = b"", content_type: str | None = None) -> Request:
        self.local_cseq += 1
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{transport} {via_host}:{via_port};branch=z9hG4bK{new_token()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        to = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        headers.add("To", to)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_cseq} {method}")
        for route in self.route_set_for_sending():
            headers.add("Route", route)
        headers.add("Contact", contact)
        for name, value in extra or []:
            headers.add(name, value)
        if content_type:
            headers.add("Content-Type", content_type)
        return Request(method, self.request_uri(), headers, body)

    def route_set_for_sending(self) -> list[str]:
        # Loose routing only (every proxy of this decade sets ;lr).
        return list(self.route_set)

    def request_uri(self) -> str:
        return self.remote_target

    def next_hop(self) -> tuple[str, int | None, str | None]:
        """Host, port and transport to send in-dialog requests to: the first
        Route if any, else the remote target."""
        target = self.route_set[0] if self.route_set else self.remote_target
        uri = parse_name_addr(target).uri if "<" in target else parse_uri(target)
        transport = uri.params.get("transport")
        return uri.host.strip("[]"), uri.port, transport.upper() if transport else None
