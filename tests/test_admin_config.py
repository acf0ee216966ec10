"""``[admin]`` (SPEC 13): absent is off, defaults, every bad key named with
its table by check-config (exit 2), and a reload that changes it is logged
as needing a restart."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib

import pytest

from sipconf.config import AdminConfig, ConfigError, parse_config
from sipconf.server import SipServer
from support import REPO

TOKEN = "0123456789abcdef"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return info.value.problems


def test_absent_table_is_off_and_defaults():
    assert parse_config({}).admin is None
    config = parse_config(tomllib.loads(f'[admin]\ntoken = "{TOKEN}"\n'))
    assert config.admin == AdminConfig("127.0.0.1", 8080, TOKEN)
    config = parse_config(tomllib.loads(f'[admin]\nbind = "::1"\nport = 9090\ntoken = "{TOKEN}xyz"\n'))
    assert config.admin == AdminConfig("::1", 9090, TOKEN + "xyz")


@pytest.mark.parametrize("text, needle", [
    ("[admin]\n", "[admin] token: is required (a secret of at least 16 characters)"),
    ('[admin]\ntoken = "short"\n', "[admin] token: must be at least 16 characters, got 5"),
    ("[admin]\ntoken = 1234567890123456789\n", "[admin] token: must be a string"),
    (f'[admin]\ntoken = " {TOKEN}"\n', "[admin] token: must not start or end with spaces"),
    (f'[admin]\ntoken = "{TOKEN}"\nport = 0\n', "[admin] port: must be an integer 1-65535, got 0"),
    (f'[admin]\ntoken = "{TOKEN}"\nport = "80"\n', "[admin] port: must be an integer 1-65535"),
    (f'[admin]\ntoken = "{TOKEN}"\nbind = "localhost"\n', "[admin] bind: must be an IP address"),
    (f'[admin]\ntoken = "{TOKEN}"\ntokn = "x"\n', "[admin] tokn: unknown key (did you mean 'token'?)"),
    (f'[server]\nsip_port = 5070\n[admin]\ntoken = "{TOKEN}"\nport = 5070\n',
     "[admin] port: 5070 is also [server] sip_port"),
    (f'[server]\nmetrics_port = 9100\n[admin]\ntoken = "{TOKEN}"\nport = 9100\n',
     "[admin] port: 9100 is also [server] metrics_port"),
    ("admin = 3\n", "[admin]: must be a table"),
    (f'[[admin]]\ntoken = "{TOKEN}"\n', "[admin]: must be a single table"),
])
def test_bad_values_name_table_and_key(text, needle):
    problems = problems_of(text)
    assert any(needle in p for p in problems), problems


def test_check_config_exits_2_naming_table_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[admin]\nport = 8080\ntoken = "too-short"\n')
    run = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "[admin] token: must be at least 16 characters" in run.stdout + run.stderr


def test_reload_keeps_the_running_admin_and_says_it_needs_a_restart(caplog):
    old = parse_config(tomllib.loads(f'[admin]\nport = 9001\ntoken = "{TOKEN}"\n'))
    new = parse_config(tomllib.loads(f'[admin]\nport = 9002\ntoken = "{TOKEN}"\n'))
    server = SipServer(old)
    with caplog.at_level(logging.WARNING, logger="sipconf.server"):
        assert "[admin]" in server.reload(new)
    assert server.config.admin.port == 9001
    assert "[admin] changed; it needs a restart" in caplog.text


def _invite(from_header: str):
    from sipconf.sip.message import parse_message
    return parse_message((
        "INVITE sip:800@office.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
        f"From: {from_header}\r\nTo: <sip:800@office.local>\r\nCall-ID: n1\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n").encode())


def test_participant_name_is_the_from_display_name_else_the_extension_name():
    from sipconf.config import ExtensionConfig
    from sipconf.server import _display_name
    alice = ExtensionConfig("101", "alice-secret", "Alice")
    assert _display_name(_invite('"Alice Martin" <sip:101@office.local>;tag=1'), alice) == "Alice Martin"
    assert _display_name(_invite("<sip:101@office.local>;tag=1"), alice) == "Alice"
    assert _display_name(_invite("<sip:101@office.local>;tag=1"), None) == ""
    assert len(_display_name(_invite(f'"{"x" * 300}" <sip:101@office.local>;tag=1'), None)) == 64
