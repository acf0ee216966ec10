"""SIGHUP reloads the configuration (issue #6): the real server, its config
file rewritten under it. A call up survives; new rooms and extensions work at
once; an invalid file is refused with every problem logged and the running
configuration kept; the command-line overrides (--sip-port, --rtp-ports) are
applied again."""

from __future__ import annotations

import re
import signal

import pytest

from phone import TestPhone
from support import ServerProcess, office_config, wait_until

BASE = office_config(server={"language": "en", "rtp_timeout": 30}, extensions=("101",), trunk=False, room_name=None,
                     room_numbers=())

ADDED = BASE + """
[[extensions]]
number = "104"
password = "dave-secret"

[[rooms]]
extension = "900"

  [[rooms.conferences]]
  id = "5555"
  pin = "6666"
"""

INVALID = ADDED + """
[[rooms]]
extension = "abc"
colour = "blue"
"""


def hup_and_wait(server: ServerProcess, text: str, timeout: float = 5.0) -> None:
    before = server.log().count(text)
    server.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: server.log().count(text) > before, timeout), server.log()[-3000:]


def test_sighup_adds_room_and_extension_keeps_calls_and_refuses_invalid_file(make_server):
    server = make_server(BASE)
    config_path = server.workdir / "sipconf.toml"
    dave = None
    with TestPhone(("127.0.0.1", server.sip_port), user="101", password="alice-secret") as alice:
        assert alice.call("800").status == 200
        assert alice.wait_for_rtp(5, timeout=3)
        alice.send_dtmf("1234#4321#")
        assert wait_until(lambda: "joined conference 1234 of room 800" in server.log(), 10), server.log()[-3000:]

        # Before the reload neither the room nor the extension exists.
        with TestPhone(("127.0.0.1", server.sip_port), user="104", password="dave-secret") as early:
            assert early.call("900").status == 403

        config_path.write_text(ADDED)
        hup_and_wait(server, "configuration reloaded")
        log = server.log()
        assert "1 call up keeps its settings" in log
        # --sip-port / --rtp-ports were applied again, so nothing "needs a restart".
        assert "needs a restart" not in log

        dave = TestPhone(("127.0.0.1", server.sip_port), user="104", password="dave-secret", local_ip="127.0.0.3")
        assert dave.register().status == 200
        answer = dave.call("900")
        assert answer.status == 200, answer
        assert dave.wait_for_rtp(5, timeout=3)
        assert dave.hangup().status == 200

        # The first call is untouched: still in its conference, still fed RTP.
        received = alice.rtp_packets_received
        assert wait_until(lambda: alice.rtp_packets_received >= received + 25, 3)
        assert not alice.wait_for_bye(0.1)

        config_path.write_text(INVALID)
        hup_and_wait(server, "configuration reload refused")
        log = server.log()
        refused = log[log.rindex("configuration reload refused"):]
        assert re.search(r"\[\[rooms\]\] #3.*extension", refused), refused
        assert "colour" in refused, refused
        assert "configuration reloaded" not in refused

        # The running configuration (with 900 and 104) is kept.
        again = dave.call("900")
        assert again.status == 200, again
        assert dave.hangup().status == 200

        assert alice.hangup().status == 200
    if dave is not None:
        dave.close()
    assert server.alive()


def test_sighup_without_config_file_has_nothing_to_reload(tmp_path):
    server = ServerProcess(tmp_path).start()  # the built-in demo configuration
    try:
        hup_and_wait(server, "nothing to reload")
        assert server.alive()
        with TestPhone(("127.0.0.1", server.sip_port), user="101", password="alice-secret") as alice:
            assert alice.register().status == 200
    finally:
        server.stop()


def test_reload_in_process_keeps_restart_keys_and_held_ports():
    import dataclasses
    import types

    from sipconf.config import parse_config, with_overrides
    from sipconf.ports import RtpPortPool
    from sipconf.server import SipServer
    import tomllib

    first = with_overrides(parse_config(tomllib.loads(BASE)), sip_port=5090, rtp_ports="30000-30099")
    server = SipServer(first)
    held = server.ports.acquire()
    server.calls["x"] = types.SimpleNamespace(rtp_port=held)
    second = parse_config(tomllib.loads(ADDED.replace("rtp_timeout = 30", "rtp_timeout = 5\nsip_port = 5070\n"
                                                      "rtp_ports = \"30050-30199\"")))
    second = dataclasses.replace(second, security=dataclasses.replace(second.security, auth_failures=2))
    assert server.reload(second) == ["[server] sip_port"]
    assert server.config.server.sip_port == 5090           # needs a restart: the running value stays
    assert server.config.server.rtp_timeout == 5            # new calls get the new timeout
    assert server.config.extension("104") is not None
    assert server.security.auth.limit == 2
    assert server.ports.size == 75 and server.ports.available == 75  # 30000 is outside the new range
    pool = RtpPortPool(30050, 30199, in_use=[30050, 30000])
    assert pool.available == 74 and pool.acquire() == 30052
    pool.release(30050)
    assert pool.available == 74
