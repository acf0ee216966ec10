"""Admin API test support: a server config with ``[admin]``, a small HTTP
client over real sockets (http.client), an SSE reader thread, and a phone
that enters a conference. Every thread and socket started here is stopped
by its ``close``."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.request

from phone import TestPhone
from support import PASSWORDS, free_port, office_config, wait_until

TOKEN = "test-admin-token-0123456789"
NAMES = {"101": "Alice", "102": "Bob", "103": "Carol", "104": "Dave"}
TONES = {"101": 440.0, "102": 660.0, "103": 880.0, "104": 1100.0}
# conference id -> pin; one conference per test, so that tests do not see each other
CONFERENCES = tuple((str(1000 + i), str(9000 + i)) for i in range(1, 13))


def admin_config(admin_port: int, *, metrics_port: int = 0, security: dict | None = None,
                 recordings=None) -> str:
    """The test office with ``[admin]`` on ``admin_port`` (and ``[recording]``
    in ``recordings``, a directory of the test's own)."""
    server = {"language": "en", "rtp_timeout": 30}
    if metrics_port:
        server["metrics_port"] = metrics_port
    text = office_config(server=server, extensions=("101", "102", "103", "104"), conferences=CONFERENCES,
                         security=security)
    for number, name in NAMES.items():  # the console shows them
        text = text.replace(f'number = "{number}"\n', f'number = "{number}"\nname = "{name}"\n', 1)
    if recordings is not None:
        text += f'\n[recording]\ndirectory = "{recordings}"\nformat = "wav"\n'
    return text + f'\n[admin]\nbind = "127.0.0.1"\nport = {admin_port}\ntoken = "{TOKEN}"\n'


def admin_ports() -> tuple[int, int]:
    admin = free_port()
    metrics = free_port()
    while metrics == admin:
        metrics = free_port()
    return admin, metrics


def metric(server, name: str, **labels) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


class Admin:
    """Requests to the admin port: ``(status, JSON body or None, headers)``."""

    def __init__(self, port: int, token: str | None = TOKEN, host: str = "127.0.0.1") -> None:
        self.port = port
        self.token = token
        self.host = host

    def request(self, method: str, path: str, body: bytes | None = None, *, token: str | None | bool = True,
                source: str | None = None, headers: dict | None = None, timeout: float = 5.0):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout,
                                                source_address=(source, 0) if source else None)
        try:
            sent = dict(headers or {})
            bearer = self.token if token is True else token
            if bearer:
                sent["Authorization"] = f"Bearer {bearer}"
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = raw
            return response.status, data, dict(response.getheaders())
        finally:
            connection.close()

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def conference(self, conference: str, room: str = "800") -> dict:
        status, data, _ = self.get("/api/rooms")
        assert status == 200, data
        for r in data["rooms"]:
            if r["extension"] == room:
                for c in r["conferences"]:
                    if c["id"] == conference:
                        return c
        raise AssertionError(f"no conference {conference} in {data}")

    def participants(self, conference: str) -> list[dict]:
        return self.conference(conference)["participants"]

    def action(self, conference: str, action: str, participant: str | None = None, room: str = "800"):
        path = f"/api/rooms/{room}/conferences/{conference}"
        if participant is not None:
            path += f"/participants/{participant}"
        return self.post(f"{path}/{action}")


class SseReader:
    """Reads ``GET /api/events`` on a raw socket in a thread: ``events`` (the
    JSON objects, in order), ``comments`` (``: ...`` lines), ``closed`` once
    the server ends the stream."""

    def __init__(self, port: int, token: str = TOKEN, *, query_token: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        path = "/api/events" + (f"?token={token}" if query_token else "")
        auth = "" if query_token else f"Authorization: Bearer {token}\r\n"
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Accept: text/event-stream\r\n\r\n".encode())
        self.status: int | None = None
        self.events: list[dict] = []
        self.comments: list[str] = []
        self.closed = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert wait_until(lambda: "connected" in self.comments or self.closed, 5), "no SSE stream"

    def _run(self) -> None:
        buffer = b""
        self.sock.settimeout(0.2)
        head_done = False
        while not self._stop:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            if not head_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.status = int(head.split(b" ", 2)[1])
                head_done = True
            # chunked transfer encoding: strip the chunk-size lines (body is text/event-stream)
            text = _dechunk(buffer)
            if text is None:
                continue
            body, buffer = text
            for line in body.decode().split("\n"):
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
        self.closed = True

    def named(self, *names: str) -> list[dict]:
        return [e for e in self.events if e["event"] in names]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def _dechunk(buffer: bytes) -> tuple[bytes, bytes] | None:
    """Complete chunks of a chunked body: (their data, the rest)."""
    out = b""
    while True:
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            break
        size = int(buffer[:line_end].split(b";")[0] or b"0", 16)
        if len(buffer) < line_end + 2 + size + 2:
            break
        out += buffer[line_end + 2:line_end + 2 + size]
        buffer = buffer[line_end + 2 + size + 2:]
    return out, buffer


def phone(server, user: str, **kwargs) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), user=user, password=PASSWORDS[user], **kwargs)


def enter(p: TestPhone, admin: Admin, conference: str, pin: str) -> str:
    """Call room 800, type ID and PIN; the new participant's id (from the API)."""
    before = {x["id"] for x in admin.participants(conference)}
    assert p.call("800").status == 200
    p.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    p.send_dtmf(f"{conference}#{pin}#")
    new = wait_until(lambda: [x["id"] for x in admin.participants(conference) if x["id"] not in before], 10)
    assert new, f"{p.user} did not join conference {conference}"
    return new[0]
