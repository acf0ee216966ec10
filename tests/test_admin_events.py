"""The admin event stream (SSE) and slow clients on the admin port, against
the real server: events in order with their fields, a stalled stream
dropped while another keeps receiving everything, slowloris connections
capped and timed out while a normal request is answered."""

from __future__ import annotations

import datetime
import http.client
import re
import socket
import time

import pytest

from admin_support import (CONFERENCES, TOKEN, TONES, Admin, SseReader, admin_config, admin_ports, enter, metric,
                           phone)
from support import ServerProcess, wait_until

pytestmark = pytest.mark.integration
CONF = dict(CONFERENCES)
HEADER_TIMEOUT_S = 10.0  # sipconf.admin.http.HEADER_TIMEOUT_S
PER_ADDRESS = 16         # sipconf.admin.http.PER_ADDRESS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    admin_port, metrics_port = admin_ports()
    s = ServerProcess(tmp_path_factory.mktemp("admin-events"),
                      config_text=admin_config(admin_port, metrics_port=metrics_port))
    s.admin_port, s.metrics_port = admin_port, metrics_port
    s.start()
    yield s
    s.stop()


@pytest.fixture
def admin(server):
    return Admin(server.admin_port)


def test_joined_talking_left_in_order_with_their_fields(server, admin):
    stream = SseReader(server.admin_port, query_token=True)  # as the console's EventSource does
    a = phone(server, "101")
    try:
        assert stream.status == 200
        conference = "1008"
        pid = enter(a, admin, conference, CONF[conference])
        a.send_tone(TONES["101"], amplitude=12000)
        assert wait_until(lambda: any(e["event"] == "talking" and e.get("participant") == pid
                                      for e in stream.events), 5), stream.events
        assert admin.action(conference, "mute", pid)[0] == 200
        a.hangup()
        assert wait_until(lambda: any(e["event"] == "left" and e.get("participant") == pid
                                      for e in stream.events), 5), stream.events
        mine = [e for e in stream.events if e.get("participant") == pid]
        names = [e["event"] for e in mine]
        assert names[0] == "joined" and names[-1] == "left", names
        assert names.index("joined") < names.index("talking") < names.index("muted") < names.index("left")
        for e in mine:
            assert e["room"] == "800" and e["conference"] == conference
            when = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
            assert when.tzinfo is not None
        times = [e["time"] for e in mine]
        assert times == sorted(times)
    finally:
        a.close()
        stream.close()


def test_stalled_stream_is_dropped_while_another_receives_everything(server, admin):
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    stalled.settimeout(5)
    stalled.connect(("127.0.0.1", server.admin_port))
    stalled.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    healthy = SseReader(server.admin_port)
    a = phone(server, "101")
    connection = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=5)
    try:
        conference = "1009"
        pid = enter(a, admin, conference, CONF[conference])
        assert wait_until(lambda: len(healthy.named("joined")) >= 1, 5)
        def dropped() -> float:  # its queue filled (or, on a very slow machine, a write waited 10 s)
            return sum(metric(server, "sipconf_admin_rejected_total", reason=r) for r in ("queue_full", "stalled"))

        dropped_before = dropped()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        path = f"/api/rooms/800/conferences/{conference}/participants/{pid}/"
        actions = 0
        for actions in range(1, 4001):  # each action is one event on the stream
            connection.request("POST", path + ("mute" if actions % 2 else "unmute"), headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            if actions % 200 == 0 and dropped() > dropped_before:
                break
        assert dropped() == dropped_before + 1, f"the stalled stream was not dropped after {actions} events"
        # the other stream got every one of them, in order
        assert wait_until(lambda: len([e for e in healthy.named("muted", "unmuted")
                                       if e.get("participant") == pid]) == actions, 10)
        names = [e["event"] for e in healthy.named("muted", "unmuted") if e.get("participant") == pid]
        assert names == ["muted" if i % 2 else "unmuted" for i in range(1, actions + 1)]
        assert not healthy.closed
        # the stalled client finds its stream cut once it reads what was in flight
        received, deadline = 0, time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                chunk = stalled.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
            else:
                pytest.fail("the stalled stream was never closed")
        except ConnectionResetError:
            pass
        assert received < 2_000_000  # bounded: never everything that was published for it
        assert re.search(r"event stream of 127\.0\.0\.1 dropped: (queue full|stalled)", server.log())
        assert admin.get("/api/status")[0] == 200
    finally:
        connection.close()
        a.close()
        healthy.close()
        stalled.close()


def _slow_connection(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/status HTTP/1.1\r\nHo")  # and then the rest never comes
    return s


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def test_slowloris_connections_are_capped_and_timed_out_and_disturb_nobody(server, admin):
    stream = SseReader(server.admin_port)
    started = time.monotonic()
    slow: list[socket.socket] = []
    try:
        timeouts_before = metric(server, "sipconf_admin_rejected_total", reason="header_timeout")
        capped_before = metric(server, "sipconf_admin_rejected_total", reason="connections_per_address")
        for _ in range(PER_ADDRESS):
            slow.append(_slow_connection("127.0.0.2", server.admin_port))
        extra = _slow_connection("127.0.0.2", server.admin_port)
        slow.append(extra)
        assert _closed_by_server(extra, 2), "a 17th connection from one address was accepted"
        # a normal client from another address is answered at once
        t0 = time.monotonic()
        status, data, _ = admin.get("/api/status", timeout=3)
        assert status == 200 and data["version"] and time.monotonic() - t0 < 2
        # trickling a byte a second does not keep a connection open past the header deadline
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 4
        open_ones = slow[:PER_ADDRESS]
        while open_ones and time.monotonic() < deadline:
            time.sleep(1)
            still = []
            for s in open_ones:
                try:
                    s.send(b"s")
                    if not _closed_by_server(s, 0.01):
                        still.append(s)
                except OSError:
                    pass  # reset by the server
            open_ones = still
        assert not open_ones, f"{len(open_ones)} slow connections still open after the header deadline"
        assert metric(server, "sipconf_admin_rejected_total", reason="header_timeout") >= timeouts_before + PER_ADDRESS
        assert metric(server, "sipconf_admin_rejected_total", reason="connections_per_address") >= capped_before + 1
        # the address may connect again once its connections are gone
        status, _, _ = admin.get("/api/status", source="127.0.0.2")
        assert status == 200
        # an idle event stream is neither timed out nor silent: a keep-alive comment within ~15 s
        assert wait_until(lambda: "keep-alive" in stream.comments, max(0.0, 17 - (time.monotonic() - started))), \
            stream.comments
        assert not stream.closed
    finally:
        for s in slow:
            s.close()
        stream.close()
