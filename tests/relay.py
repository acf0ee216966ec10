"""A lossy, reordering UDP relay on loopback, for fault tests.

    with LossyRelay(("127.0.0.1", server_port), loss=0.15, seed=6) as relay:
        phone = TestPhone(relay.address, ...)   # the phone talks to the relay

Clients send to ``relay.address``; for each client address the relay opens an
upstream socket of its own and forwards to ``target`` from it, so the server
sees one source per client and answers (responses follow the source/rport;
its own in-dialog requests go to where the caller's came from) to that
socket; whatever arrives there goes back to the client.

In each direction independently, a datagram is dropped with probability
``loss``; of the rest, a fraction ``reorder`` is held back for a random
0-``max_delay`` seconds (so later datagrams overtake it). The random choices
come from ``random.Random(seed)``: the same traffic gets the same fate.

Bounded: at most ``max_clients`` clients and ``max_held`` datagrams held at
once (beyond that a datagram is forwarded at once); one daemon thread; every
wait is bounded. ``close()`` stops the thread and closes every socket.
Counters per direction ("up": client -> target, "down": target -> client):
``forwarded``, ``dropped``, ``delayed``.
"""

from __future__ import annotations

import heapq
import itertools
import random
import select
import socket
import threading
import time

__all__ = ["LossyRelay"]


class LossyRelay:
    def __init__(self, target: tuple[str, int], *, loss: float = 0.1, reorder: float = 0.1,
                 max_delay: float = 0.08, seed: int = 0, host: str = "127.0.0.1",
                 max_clients: int = 16, max_held: int = 1000) -> None:
        if not 0.0 <= loss < 1.0 or not 0.0 <= reorder <= 1.0 or max_delay < 0:
            raise ValueError("loss in [0, 1), reorder in [0, 1], max_delay >= 0")
        if not host.startswith("127."):
            raise ValueError("loopback only")
        self.target = (target[0], int(target[1]))
        self.loss = loss
        self.reorder = reorder
        self.max_delay = max_delay
        self.max_clients = max_clients
        self.max_held = max_held
        self._random = random.Random(seed)
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind((host, 0))
        self._front.setblocking(False)
        self.address = self._front.getsockname()
        self._host = host
        self._upstream: dict[tuple, socket.socket] = {}   # client address -> its socket to the target
        self._client_of: dict[int, tuple] = {}            # upstream fileno -> client address
        self._held: list[tuple[float, int, socket.socket, bytes, tuple]] = []
        self._sequence = itertools.count()
        self.forwarded = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self.delayed = {"up": 0, "down": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lossy-relay")
        self._thread.start()

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> "LossyRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for sock in [self._front, *self._upstream.values()]:
            sock.close()
        self._upstream.clear()
        self._held.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"forwarded": dict(self.forwarded), "dropped": dict(self.dropped),
                    "delayed": dict(self.delayed)}

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self._send_due(now)
            timeout = 0.05
            if self._held:
                timeout = min(timeout, max(0.0, self._held[0][0] - now))
            sockets = [self._front, *self._upstream.values()]
            try:
                ready, _, _ = select.select(sockets, [], [], timeout)
            except (OSError, ValueError):
                return  # closed under us
            for sock in ready:
                # A bounded number of reads per socket per round.
                for _ in range(64):
                    try:
                        data, source = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if sock is self._front:
                        upstream = self._upstream_for(source)
                        if upstream is not None:
                            self._pass("up", upstream, data, self.target)
                    else:
                        client = self._client_of.get(sock.fileno())
                        if client is not None and source == self.target:
                            self._pass("down", self._front, data, client)

    def _upstream_for(self, client: tuple) -> socket.socket | None:
        sock = self._upstream.get(client)
        if sock is None:
            if len(self._upstream) >= self.max_clients:
                return None
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self._host, 0))
            sock.setblocking(False)
            self._upstream[client] = sock
            self._client_of[sock.fileno()] = client
        return sock

    def _pass(self, direction: str, sock: socket.socket, data: bytes, destination: tuple) -> None:
        with self._lock:
            if self._random.random() < self.loss:
                self.dropped[direction] += 1
                return
            if self.reorder and self._random.random() < self.reorder and len(self._held) < self.max_held:
                self.delayed[direction] += 1
                due = time.monotonic() + self._random.uniform(0.0, self.max_delay)
                heapq.heappush(self._held, (due, next(self._sequence), sock, data, destination))
                return
            self.forwarded[direction] += 1
        self._sendto(sock, data, destination)

    def _send_due(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, sock, data, destination = heapq.heappop(self._held)
            with self._lock:
                self.forwarded["down" if sock is self._front else "up"] += 1
            self._sendto(sock, data, destination)

    @staticmethod
    def _sendto(sock: socket.socket, data: bytes, destination: tuple) -> None:
        try:
            sock.sendto(data, destination)
        except OSError:
            pass  # a full buffer or a closed peer: a loss like any other
