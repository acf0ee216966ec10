"""RFC 3261 section 17 transactions, sans-IO.

The layer takes messages and a ``now`` and returns events: messages to send
and things the transaction user (the call controller) must know. It never
touches a socket or a clock, so the timer schedule is testable in microseconds.

Server INVITE transactions follow RFC 6026: a 2xx moves the transaction to
"accepted", where the 2xx is retransmitted (T1 doubling up to T2) until the
ACK arrives; without an ACK after 64*T1 the transaction user is told
(``AckTimeout``) and ends the call with BYE.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field, replace

from .message import Message, Request, Response, make_response
from .uri import parse_via

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer base values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True)
class Destination:
    """Where a message goes: a transport and the peer's address."""

    transport: str  # "UDP" or "TCP"
    host: str
    port: int
    # The local address the peer's packets arrive on (and ours leave from);
    # "" when not known. Not part of identity: the same peer is the same flow.
    local: str = field(default="", compare=False)

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


# --- events returned to the caller -------------------------------------------------


@dataclass
class Send:
    message: Message
    destination: Destination


@dataclass
class RequestReceived:
    transaction: "ServerTransaction"


@dataclass
class AckReceived:
    """An ACK for a 2xx (a request of its own, end to end) or a stray ACK."""

    request: Request
    source: Destination
    transaction: "ServerInviteTransaction | None"


@dataclass
class ResponseReceived:
    transaction: "ClientTransaction"
    response: Response


@dataclass
class AckTimeout:
    """A 2xx to INVITE was never acknowledged within 64*T1."""

    transaction: "ServerInviteTransaction"


@dataclass
class ClientTimeout:
    """Timer F: a request the server sent got no final response."""

    transaction: "ClientTransaction"


Event = Send | RequestReceived | AckReceived | ResponseReceived | AckTimeout | ClientTimeout


class State(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def transaction_key(request: Request, method: str | None = None) -> tuple:
    """RFC 3261 17.2.3 matching key: branch + sent-by + method (ACK matches INVITE)."""
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    sent_by = (via.host.lower(), via.port)
    if branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    # RFC 2543 peers: fall back on the dialog and sequence identifiers.
    return ("legacy", request.call_id, request.cseq[0], request.from_tag, sent_by, method)


def response_destination(request: Request, source: Destination) -> Destination:
    """RFC 3261 18.2.2 with RFC 3581: where the responses to ``request`` go.

    Over TCP the answer goes back on the connection the request came in on.
    Over UDP it goes to the source address (that is what ``received`` says);
    the port is the source port when the client asked for ``rport``,
    otherwise the Via sent-by port.
    """
    if source.reliable:
        return source
    via = request.top_via
    if "rport" in via.params:
        return source
    return replace(source, port=via.port or 5060)


def stamp_received(request: Request, source: Destination) -> None:
    """RFC 3261 18.2.1 / RFC 3581: record where the request really came from."""
    vias = request.headers.get_all("Via")
    if not vias:
        return
    top = parse_via(vias[0])
    changed = False
    if top.host != source.host:
        top.params["received"] = source.host
        changed = True
    if "rport" in top.params and top.params["rport"] is None:
        top.params["rport"] = str(source.port)
        top.params.setdefault("received", source.host)
        changed = True
    if changed:
        vias[0] = str(top)
        request.headers.set("Via", ", ".join(vias))


# --- transactions ---------------------------------------------------------------------


@dataclass(eq=False)
class ServerTransaction:
    key: tuple
    request: Request
    source: Destination
    reply_to: Destination
    state: State = State.TRYING
    last_response: Response | None = None
    # Free for the transaction user (the call a request belongs to, say).
    context: object = None

    @property
    def method(self) -> str:
        return self.request.method


@dataclass(eq=False)
class ServerInviteTransaction(ServerTransaction):
    state: State = State.PROCEEDING
    retransmit_interval: float = 0.0
    retransmit_at: float | None = None
    give_up_at: float | None = None


@dataclass(eq=False)
class ServerNonInviteTransaction(ServerTransaction):
    terminate_at: float | None = None


@dataclass(eq=False)
class ClientTransaction:
    """Client non-INVITE transaction (RFC 3261 17.1.2): the BYE, OPTIONS and
    REGISTER requests the server itself sends."""

    key: tuple
    request: Request
    destination: Destination
    state: State = State.TRYING
    retransmit_interval: float = 0.0
    retransmit_at: float | None = None
    timeout_at: float | None = None
    terminate_at: float | None = None
    final_response: Response | None = None
    context: object = None

    @property
    def method(self) -> str:
        return self.request.method


class TransactionLayer:
    """All transactions of one server; feed it messages and time, get events back."""

    def __init__(self, timers: Timers = Timers()) -> None:
        self.timers = timers
        self._server: dict[tuple, ServerTransaction] = {}
        self._client: dict[tuple, ClientTransaction] = {}
        # 2xx-answered INVITEs awaiting their ACK, by (Call-ID, CSeq number).
        self._awaiting_ack: dict[tuple[str, int], ServerInviteTransaction] = {}
        # INVITEs not finished yet (no final answer, or a 2xx awaiting its ACK),
        # by Call-ID then CSeq number: to spot overlapping re-INVITEs.
        self._open_invites: dict[str, dict[int, ServerInviteTransaction]] = {}
        self._heap: list[tuple[float, int, object]] = []
        self._sequence = itertools.count()

    # -- bookkeeping -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def has_pending_requests(self) -> bool:
        """True while a request we sent still waits for its final response."""
        return any(t.state in (State.TRYING, State.PROCEEDING) for t in self._client.values())

    def _schedule(self, when: float, transaction: object) -> None:
        heapq.heappush(self._heap, (when, next(self._sequence), transaction))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # -- incoming --------------------------------------------------------------------

    def receive_request(self, request: Request, source: Destination, now: float) -> list[Event]:
        stamp_received(request, source)
        if request.method == "ACK":
            return self._receive_ack(request, source, now)
        key = transaction_key(request)
        existing = self._server.get(key)
        if existing is not None:
            # A retransmission: answer it again with whatever we last said.
            if existing.last_response is not None and existing.state is not State.TERMINATED:
                return [Send(existing.last_response, existing.reply_to)]
            return []
        reply_to = response_destination(request, source)
        transaction: ServerTransaction
        if request.method == "INVITE":
            transaction = ServerInviteTransaction(key, request, source, reply_to)
            # (a second INVITE with the same CSeq, a forked copy, does not displace the first)
            self._open_invites.setdefault(request.call_id, {}).setdefault(request.cseq[0], transaction)
        else:
            transaction = ServerNonInviteTransaction(key, request, source, reply_to)
        self._server[key] = transaction
        return [RequestReceived(transaction)]

    def _receive_ack(self, request: Request, source: Destination, now: float) -> list[Event]:
        invite = self._server.get(transaction_key(request))
        if isinstance(invite, ServerInviteTransaction) and invite.state is State.COMPLETED:
            # ACK for our non-2xx final: stop Timer G, linger for Timer I.
            invite.state = State.CONFIRMED
            invite.retransmit_at = None
            invite.give_up_at = now + (0 if source.reliable else self.timers.t4)
            self._schedule(invite.give_up_at, invite)
            return []
        if isinstance(invite, ServerInviteTransaction) and invite.state is State.CONFIRMED:
            return []  # retransmitted ACK for a non-2xx: absorbed
        accepted = self._awaiting_ack.pop((request.call_id, request.cseq[0]), None)
        if accepted is not None:
            # Stop retransmitting the 2xx but keep the transaction until 64*T1
            # (RFC 6026 Timer L) so that a late INVITE retransmission is matched
            # to it instead of looking like a new call.
            accepted.state = State.CONFIRMED
            accepted.retransmit_at = None
            self._close_invite(accepted)
        return [AckReceived(request, source, accepted)]

    def receive_response(self, response: Response, now: float) -> list[Event]:
        try:
            via = response.top_via
            method = response.cseq[1]
        except (ValueError, KeyError, AttributeError):
            return []
        key = (via.branch or "", method)
        transaction = self._client.get(key)
        if transaction is None or transaction.state in (State.COMPLETED, State.TERMINATED):
            return []  # stray or retransmitted final: absorbed
        if response.status < 200:
            transaction.state = State.PROCEEDING
            return [ResponseReceived(transaction, response)]
        transaction.state = State.COMPLETED
        transaction.final_response = response
        transaction.retransmit_at = None
        transaction.timeout_at = None
        transaction.terminate_at = now + (0 if transaction.destination.reliable else self.timers.t4)
        self._schedule(transaction.terminate_at, transaction)
        return [ResponseReceived(transaction, response)]

    # -- outgoing --------------------------------------------------------------------

    def respond(self, transaction: ServerTransaction, response: Response, now: float) -> list[Event]:
        if transaction.state in (State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED):
            return []  # a final answer was already given
        transaction.last_response = response
        events: list[Event] = [Send(response, transaction.reply_to)]
        if response.status < 200:
            transaction.state = State.PROCEEDING
            return events
        t1 = self.timers.t1
        if isinstance(transaction, ServerInviteTransaction):
            if response.status < 300:
                transaction.state = State.ACCEPTED
                self._awaiting_ack[(transaction.request.call_id, transaction.request.cseq[0])] = transaction
            else:
                transaction.state = State.COMPLETED
                self._close_invite(transaction)
            # The 2xx is retransmitted even on TCP? RFC 3261 13.3.1.4 says the UAS
            # core retransmits until ACK; over a reliable transport we skip the
            # resends (the stream already guarantees delivery) but keep the 64*T1 wait.
            if not transaction.reply_to.reliable:
                transaction.retransmit_interval = t1
                transaction.retransmit_at = now + t1
                self._schedule(transaction.retransmit_at, transaction)
            transaction.give_up_at = now + 64 * t1
            self._schedule(transaction.give_up_at, transaction)
        else:
            transaction.state = State.COMPLETED
            assert isinstance(transaction, ServerNonInviteTransaction)
            transaction.terminate_at = now + (0 if transaction.reply_to.reliable else 64 * t1)
            self._schedule(transaction.terminate_at, transaction)
        return events

    def request(self, request: Request, destination: Destination, now: float,
                context: object = None) -> tuple[ClientTransaction, list[Event]]:
        """Start a client non-INVITE transaction for ``request`` (its Via must carry a fresh branch)."""
        key = (request.top_via.branch or "", request.method)
        transaction = ClientTransaction(key, request, destination, context=context)
        self._client[key] = transaction
        t1 = self.timers.t1
        if not destination.reliable:
            transaction.retransmit_interval = t1
            transaction.retransmit_at = now + t1
            self._schedule(transaction.retransmit_at, transaction)
        transaction.timeout_at = now + 64 * t1
        self._schedule(transaction.timeout_at, transaction)
        return transaction, [Send(request, destination)]

    def earlier_invite(self, request: Request) -> ServerInviteTransaction | None:
        """An INVITE of the same Call-ID with a lower CSeq that is not finished:
        still without a final answer (PROCEEDING) or answered 2xx and awaiting
        its ACK (ACCEPTED). RFC 3261 14.2: a re-INVITE meanwhile gets 500 / 491."""
        number = request.cseq[0]
        for cseq, transaction in (self._open_invites.get(request.call_id) or {}).items():
            if cseq < number and transaction.state in (State.TRYING, State.PROCEEDING, State.ACCEPTED):
                return transaction
        return None

    def _close_invite(self, transaction: ServerInviteTransaction) -> None:
        open_ = self._open_invites.get(transaction.request.call_id)
        if open_ is not None and open_.get(transaction.request.cseq[0]) is transaction:
            del open_[transaction.request.cseq[0]]
            if not open_:
                del self._open_invites[transaction.request.call_id]

    def find_invite(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE transaction a CANCEL refers to (RFC 3261 9.2: same branch)."""
        found = self._server.get(transaction_key(cancel, "INVITE"))
        return found if isinstance(found, ServerInviteTransaction) else None

    # -- time ------------------------------------------------------------------------

    def handle_timers(self, now: float) -> list[Event]:
        events: list[Event] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, transaction = heapq.heappop(self._heap)
            if isinstance(transaction, ServerInviteTransaction):
                self._server_invite_timers(transaction, now, events)
            elif isinstance(transaction, ServerNonInviteTransaction):
                if transaction.terminate_at is not None and transaction.terminate_at <= now:
                    transaction.state = State.TERMINATED
                    self._server.pop(transaction.key, None)
            elif isinstance(transaction, ClientTransaction):
                self._client_timers(transaction, now, events)
        return events

    def _server_invite_timers(self, transaction: ServerInviteTransaction, now: float,
                              events: list[Event]) -> None:
        if transaction.state is State.TERMINATED:
            return
        if transaction.give_up_at is not None and transaction.give_up_at <= now:
            if transaction.state is State.ACCEPTED:
                events.append(AckTimeout(transaction))
                self._awaiting_ack.pop((transaction.request.call_id, transaction.request.cseq[0]), None)
            # Timer H (no ACK for a non-2xx), Timer I, or the 2xx wait: done.
            transaction.state = State.TERMINATED
            self._server.pop(transaction.key, None)
            self._close_invite(transaction)
            return
        if (transaction.retransmit_at is not None and transaction.retransmit_at <= now
                and transaction.state in (State.ACCEPTED, State.COMPLETED)
                and transaction.last_response is not None):
            events.append(Send(transaction.last_response, transaction.reply_to))
            transaction.retransmit_interval = min(2 * transaction.retransmit_interval, self.timers.t2)
            transaction.retransmit_at = now + transaction.retransmit_interval
            self._schedule(transaction.retransmit_at, transaction)

    def _client_timers(self, transaction: ClientTransaction, now: float, events: list[Event]) -> None:
        if transaction.state is State.TERMINATED:
            return
        if transaction.terminate_at is not None and transaction.terminate_at <= now:
            transaction.state = State.TERMINATED
            self._client.pop(transaction.key, None)
            return
        if transaction.state in (State.TRYING, State.PROCEEDING):
            if transaction.timeout_at is not None and transaction.timeout_at <= now:
                transaction.state = State.TERMINATED
                self._client.pop(transaction.key, None)
                events.append(ClientTimeout(transaction))
                return
            if transaction.retransmit_at is not None and transaction.retransmit_at <= now:
                events.append(Send(transaction.request, transaction.destination))
                # Timer E: doubles up to T2; once a provisional arrived, stays at T2.
                if transaction.state is State.PROCEEDING:
                    transaction.retransmit_interval = self.timers.t2
                else:
                    transaction.retransmit_interval = min(2 * transaction.retransmit_interval, self.timers.t2)
                transaction.retransmit_at = now + transaction.retransmit_interval
                self._schedule(transaction.retransmit_at, transaction)


def new_branch(token: str) -> str:
    return MAGIC_COOKIE + token


__all__ = [
    "AckReceived", "AckTimeout", "ClientTimeout", "ClientTransaction", "Destination", "Event",
    "RequestReceived", "ResponseReceived", "Send", "ServerInviteTransaction",
    "ServerNonInviteTransaction", "ServerTransaction", "State", "Timers", "TransactionLayer",
    "make_response", "new_branch", "response_destination", "transaction_key",
]
