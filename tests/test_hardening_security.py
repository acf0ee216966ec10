"""Toll-fraud and PIN protection (SPEC 3 ``[security]``), proven against
SIPVicious and the test phone: scanners get no answer at all, extensions
cannot be enumerated, password guessing is banned long before the right
password, and other sources keep being served."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phone import TestPhone
from sipconf.config import SecurityConfig
from sipconf.security import FailureCounter, Security, is_scanner
from support import SIPP, office_config

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

SVWAR = shutil.which("sipvicious_svwar", path=str(Path(sys.executable).parent))
SVCRACK = shutil.which("sipvicious_svcrack", path=str(Path(sys.executable).parent))
needs_sipvicious = pytest.mark.skipif(SVWAR is None or SVCRACK is None,
                                      reason="sipvicious not installed (pip install sipvicious)")

CONFIG = office_config(server={"language": "en"},
                       security={"auth_failures": 5, "pin_failures": 3, "window": 60, "ban": 60})

# Runs a SIPVicious tool with another User-Agent (it has no option for it) and
# really bound to -b's address (sipvicious 0.3.8's CLI does not pass it on).
WRAPPER = '''
import importlib, inspect, sys
import sipvicious.libs.svhelper as helper
tool = importlib.import_module("sipvicious." + sys.argv[1])
agent, bind = sys.argv[2], sys.argv[3]
original = helper.makeRequest
def disguised(*args, **kwargs):
    if agent:
        kwargs["useragent"] = agent
    return original(*args, **kwargs)
tool.makeRequest = disguised
for _, cls in inspect.getmembers(tool, inspect.isclass):
    if cls.__module__ == tool.__name__ and "bindingip" in inspect.signature(cls.__init__).parameters:
        def bound_init(self, *args, _init=cls.__init__, **kwargs):
            kwargs["bindingip"] = bind
            _init(self, *args, **kwargs)
        cls.__init__ = bound_init
sys.argv = [sys.argv[1]] + sys.argv[4:]
sys.exit(tool.main())
'''


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    from support import ServerProcess
    server = ServerProcess(tmp_path_factory.mktemp("security"), config_text=CONFIG).start()
    yield server
    server.stop()


def sipvicious(tmp_path: Path, tool: str, source: str, args: list[str], *, agent: str = "",
               timeout: float = 20) -> subprocess.Popen:
    """Start svwar/svcrack from ``source`` (stopped by the caller); output in tmp_path."""
    wrapper = tmp_path / "sipvicious_wrapper.py"
    wrapper.write_text(WRAPPER)
    out = open(tmp_path / f"{tool}-{source}.out", "w")
    process = subprocess.Popen([sys.executable, str(wrapper), tool, agent, source, *args],
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
    process.output_path = tmp_path / f"{tool}-{source}.out"  # type: ignore[attr-defined]
    out.close()
    return process


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.output_path.read_text(errors="replace")  # type: ignore[attr-defined]


# -- unit: counters, bans and their expiry ---------------------------------------------


def test_failure_counter_window_ban_and_expiry():
    now = [0.0]
    counter = FailureCounter(limit=3, window=10, ban=60, clock=lambda: now[0])
    assert not counter.failed("a") and not counter.failed("a")
    now[0] = 11.0  # the first two fell out of the window
    assert not counter.failed("a") and not counter.failed("a")
    assert counter.failed("a") and counter.banned("a") and not counter.banned("b")
    now[0] = 70.9
    assert counter.banned("a")
    now[0] = 71.1
    assert not counter.banned("a")  # the ban expired


def test_pin_failures_per_caller_not_per_trunk():
    now = [0.0]
    security = Security(SecurityConfig(auth_failures=5, pin_failures=2, window=60, ban=60), clock=lambda: now[0])
    security.pin_failed("trunk provider: +33611111111")
    assert security.pin_failed("trunk provider: +33611111111")
    assert security.caller_banned("trunk provider: +33611111111")
    assert not security.caller_banned("trunk provider: +33622222222")
    assert not security.source_banned("127.0.0.2")


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipvicious", "sipcli/v1.8", "SIPVicious 0.3.8"])
def test_scanner_agents_recognised(agent):
    assert is_scanner(agent)


# -- no enumeration ---------------------------------------------------------------------


def _shape(response) -> tuple:
    """What an answer tells: status, reason and header names (tags, nonces aside)."""
    return response.status, response.reason, sorted(name for name, _ in response.headers)


def test_register_and_invite_answers_do_not_reveal_extensions(secure_server):
    port = secure_server.sip_port
    shapes = {}
    for number in ("101", "199"):  # 101 exists, 199 does not
        with TestPhone(("127.0.0.1", port), local_ip="127.0.0.11", user=number) as p:
            challenge = p.register()  # no password: the challenge itself
            p.password = "wrong"
            wrong = p.register()
            invite_challenge = p.call("800", auth=False)
            with TestPhone(("127.0.0.1", port), local_ip="127.0.0.12", user=number, password="wrong") as q:
                invite_wrong = q.call("800")
            shapes[number] = [_shape(r) for r in (challenge, wrong, invite_challenge, invite_wrong)]
    assert [s[0] for s in shapes["101"]] == [401, 403, 407, 403]
    assert shapes["101"] == shapes["199"]


@needs_sipvicious
def test_svwar_default_agent_gets_no_answer_at_all(secure_server, tmp_path):
    port = str(secure_server.sip_port)
    process = sipvicious(tmp_path, "svwar", "127.0.0.13", ["-e100-110", "-p", port, "127.0.0.1"])
    output = finish(process, 30)
    assert "found nothing" in output, output
    assert not re.search(r"\|\s*10[12]\s*\|", output), output
    assert re.search(r"scanner 'friendly-scanner' from 127\.0\.0\.13 dropped", secure_server.log())
    assert not re.search(r"received=127\.0\.0\.13", secure_server.log())  # we never answered it


@needs_sipvicious
@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_svwar_disguised_cannot_tell_extensions_apart(secure_server, tmp_path, method):
    port = str(secure_server.sip_port)
    process = sipvicious(tmp_path, "svwar", "127.0.0.14", ["-e100-110", "-p", port, "-m", method, "--force",
                                                             "127.0.0.1"], agent="Zoiper rv2.10.8.2")
    output = finish(process, 30)
    # svwar classifies extensions by answers that differ; ours never do.
    assert "found nothing" in output, output
    assert not re.search(r"\|\s*10[12]\s*\|", output), output


@needs_sipvicious
def test_svcrack_default_agent_gets_no_answer_at_all(secure_server, tmp_path):
    (tmp_path / "words.txt").write_text("\n".join(["guess"] * 5 + ["alice-secret"]) + "\n")
    port = str(secure_server.sip_port)
    process = sipvicious(tmp_path, "svcrack", "127.0.0.15",
                         ["-u", "101", "-d", str(tmp_path / "words.txt"), "-p", port, "127.0.0.1"])
    output = finish(process, 30)
    assert "no server response" in output, output
    assert "alice-secret" not in output
    assert "auth failure for REGISTER '101' from 127.0.0.15" not in secure_server.log()


@needs_sipvicious
def test_svcrack_disguised_is_banned_before_the_password_while_others_register(secure_server, tmp_path):
    words = [f"guess{i:03d}" for i in range(200)]
    words.insert(150, "alice-secret")  # deep inside the dictionary
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n")
    port = str(secure_server.sip_port)
    process = sipvicious(tmp_path, "svcrack", "127.0.0.16",
                         ["-u", "101", "-d", str(tmp_path / "words.txt"), "-p", port, "--maximumtime=3",
                          "127.0.0.1"], agent="Zoiper rv2.10.8.2")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "(source banned)" not in secure_server.log():
            time.sleep(0.2)
        # The attack goes on (svcrack keeps sending); a phone elsewhere is unaffected.
        with TestPhone(("127.0.0.1", secure_server.sip_port), local_ip="127.0.0.5", user="101",
                       password="alice-secret") as p:
            for _ in range(3):
                assert p.register(expires=600).status == 200
                time.sleep(0.5)
    finally:
        output = finish(process, 2)
    log = secure_server.log()
    failures = re.findall(r"auth failure for REGISTER '101' from 127\.0\.0\.16", log)
    assert len(failures) == 5, log  # banned on the 5th: no further password is even checked
    assert re.search(r"auth failure for REGISTER '101' from 127\.0\.0\.16:\d+ \(source banned\)", log)
    assert "The password for" not in output and "alice-secret" not in output, output


def test_banned_source_gets_403_without_challenge_even_with_right_password(secure_server):
    port = secure_server.sip_port
    with TestPhone(("127.0.0.1", port), local_ip="127.0.0.17", user="102", password="nope") as p:
        statuses = [p.register().status for _ in range(5)]
        assert statuses == [403] * 5
        p.password = None
        plain = p.register()
        assert plain.status == 403 and plain.header("WWW-Authenticate") is None
        p.password = "bob-secret"
        assert p.register().status == 403
        invite = p.call("800")
        assert invite.status == 403 and invite.header("Proxy-Authenticate") is None
    with TestPhone(("127.0.0.1", port), local_ip="127.0.0.18", user="102", password="bob-secret") as q:
        assert q.register().status == 200


def _wrong_pins_call(port: int, caller: str) -> str:
    """A trunk call from ``caller`` typing wrong PINs until hung up; the BYE reason."""
    with TestPhone(("127.0.0.1", port), local_ip="127.0.0.2", user=caller) as p:
        answer = p.call("+33140000800")
        assert answer.status == 200, answer
        p.wait_for_rtp(5, timeout=3)
        p.send_dtmf("1234#0000#1234#0000#1234#0000#")
        assert p.wait_for_bye(30), "no BYE after wrong PINs"
        return p.bye_request.header("Reason") or ""


def test_pin_ban_per_calling_number_behind_the_trunk(secure_server):
    port = secure_server.sip_port
    _wrong_pins_call(port, "+33611111111")  # three wrong PINs: pin_failures = 3 bans the caller
    with TestPhone(("127.0.0.1", port), local_ip="127.0.0.2", user="+33611111111") as p:
        assert p.call("+33140000800").status == 403
    # Another outside caller through the same trunk is not locked out.
    with TestPhone(("127.0.0.1", port), local_ip="127.0.0.2", user="+33622222222") as q:
        assert q.call("+33140000800").status == 200
        q.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        q.send_dtmf("1234#4321#")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "joined conference 1234" not in secure_server.log():
            time.sleep(0.2)
        assert "joined conference 1234" in secure_server.log()
