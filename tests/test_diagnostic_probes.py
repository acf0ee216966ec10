"""Administrators' SIP health checks are answered; scanners still are not (SPEC 3).

The real ``sipsak`` binary (Debian package sipsak) and a Nagios ``check_sip``
style OPTIONS against the real server on loopback, and a scanner's default
User-Agent from the same kind of socket for contrast.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess

import pytest

from sipconf.security import SCANNER_AGENTS, is_scanner

SIPSAK = shutil.which("sipsak")
needs_sipsak = pytest.mark.skipif(SIPSAK is None, reason="sipsak not installed (Debian package sipsak)")


def send_options(port: int, user_agent: str, *, source: str = "127.0.0.1", timeout: float = 1.0,
                 line_end: str = "\r\n", blank_line: bool = True, branch: bool = True) -> bytes | None:
    """One OPTIONS shaped like Nagios check_sip's (its From user, Accept and
    User-agent spelling); the raw answer, or None when there is none. Its PHP
    and Python rewrites send no Via branch and stop after the last header,
    without the empty line (the Python one with bare LF line ends)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        local = sock.getsockname()[1]
        tag = secrets.token_hex(4)
        via_branch = f";branch=z9hG4bK{secrets.token_hex(6)}" if branch else ""
        message = line_end.join([
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {source}:{local}{via_branch};rport",
            f"From: sip:checksip@{source}:{local};tag={tag}",
            f"To: sip:127.0.0.1:{port}",
            f"Call-ID: {secrets.token_hex(8)}@{source}",
            "CSeq: 1 OPTIONS",
            f"Contact: sip:checksip@{source}:{local}",
            "Content-length: 0",
            "Max-Forwards: 70",
            f"User-agent: {user_agent}",
            "Accept: text/plain",
        ] + (["", ""] if blank_line else [])).encode()
        sock.sendto(message, ("127.0.0.1", port))
        sock.settimeout(timeout)
        try:
            return sock.recv(65535)
        except OSError:
            return None


@needs_sipsak
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipsak_health_check_is_answered_200(demo_server, transport):
    args = [SIPSAK, "-vv", "-s", f"sip:127.0.0.1:{demo_server.sip_port}"]
    if transport == "tcp":
        args[1:1] = ["-E", "tcp"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    # sipsak exits 0 only when a 200 came back (1 for other finals, 3 for none)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "SIP/2.0 200 OK" in result.stdout
    assert "scanner 'sipsak" not in demo_server.log()


@pytest.mark.parametrize("line_end, blank_line, branch", [
    ("\r\n", True, True),     # a well-formed probe
    ("\r\n", False, False),   # check_sip's PHP rewrite: no branch, no empty line
    ("\n", False, False),      # its Python rewrite: the same with bare LF
])
def test_check_sip_style_options_is_answered_200(demo_server, line_end, blank_line, branch):
    answer = send_options(demo_server.sip_port, "check_sip 1.01", line_end=line_end, blank_line=blank_line,
                          branch=branch)
    assert answer is not None and answer.startswith(b"SIP/2.0 200 OK"), answer


@pytest.mark.parametrize("agent, source", [("friendly-scanner", "127.0.0.40"), ("sipcli/v1.8", "127.0.0.41"),
                                           ("SIPVicious 0.3.8", "127.0.0.42"), ("pplsip", "127.0.0.43")])
def test_scanner_agents_still_get_no_answer(demo_server, agent, source):
    assert send_options(demo_server.sip_port, agent, source=source, timeout=0.5) is None
    assert f"scanner {agent!r} from {source} dropped" in demo_server.log()


@pytest.mark.parametrize("agent", ["sipsak 0.9.8.1", "check_sip 1.01", "SIPp/Linux", "Twinkle/1.10.3",
                                   "MySipClient 2.0", "Zoiper rv2.10.8.2", "baresip v3.10.1 (x86_64/linux)"])
def test_diagnostic_tools_and_phones_are_not_scanners(agent):
    assert not is_scanner(agent)


@pytest.mark.parametrize("name", SCANNER_AGENTS)
def test_every_listed_scanner_is_recognised_in_context(name):
    assert is_scanner(name) and is_scanner(f"{name.upper()}/1.0") and is_scanner(f"x ({name})")


def test_a_datagram_without_the_empty_line_still_checks_content_length():
    from sipconf.sip.message import SipParseError, parse_message
    head = (b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5000\r\nFrom: <sip:a@h>;tag=1\r\n"
            b"To: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n")
    assert parse_message(head + b"Content-Length: 0").body == b""
    assert parse_message(head + b"Content-Length: 0\r\n").method == "OPTIONS"
    with pytest.raises(SipParseError):
        parse_message(head + b"Content-Length: 10")  # a body was announced and is missing
