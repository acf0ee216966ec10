"""The command line as a new user meets it (SPEC 2): --version, --log-level's
choices, counts that read as English in the log, and a warning when the
configuration routes nothing. Real ``python -m sipconf`` subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from phone import TestPhone
from sipconf import __version__
from sipconf.wording import plural
from support import PASSWORDS, REPO, ServerProcess, office_config, options_ping, wait_until


def sipconf(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipconf", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# -- --version and --log-level ------------------------------------------------------------


def test_version_prints_name_and_version():
    run = sipconf("--version")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"sipconf {__version__}"
    assert re.fullmatch(r"sipconf \d+\.\d+\.\d+", run.stdout.strip())


def test_serve_help_lists_the_log_levels():
    run = sipconf("serve", "--help")
    assert run.returncode == 0
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in run.stdout


def test_bad_log_level_exits_2_with_argparse_message():
    run = sipconf("serve", "--log-level", "loud", "--sip-port", "1")
    assert run.returncode == 2
    assert "argument --log-level: invalid choice: 'LOUD'" in run.stderr
    assert "'DEBUG', 'INFO', 'WARNING', 'ERROR'" in run.stderr


def test_log_level_is_case_insensitive(tmp_path):
    # ServerProcess passes --log-level DEBUG; a later "warning" wins.
    with ServerProcess(tmp_path, extra_args=("--log-level", "warning")) as server:
        assert options_ping(server.sip_port) == 200
    log = server.log()
    assert "sipconf listening" not in log  # an INFO line: filtered out
    assert " DEBUG " not in log and " INFO " not in log


# -- singular and plural -------------------------------------------------------------------


@pytest.mark.parametrize("count, text", [(0, "0 calls"), (1, "1 call"), (2, "2 calls")])
def test_plural(count, text):
    assert plural(count, "call") == text
    assert plural(count, "call up keeps its settings", "calls up keep their settings").startswith(str(count))


def test_counts_of_one_read_singular_in_the_log(make_server):
    config = office_config(server={"language": "en", "rtp_timeout": 30}, extensions=("101",))
    server = make_server(config)
    with TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"]) as phone:
        assert phone.register().status == 200
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        phone.send_dtmf("1234#4321#")
        assert wait_until(lambda: "joined conference 1234" in server.log(), 10), server.log()
        # an invalid file with one problem: the reload is refused
        (server.workdir / "sipconf.toml").write_text(config.replace('rtp_timeout = 30', 'rtp_timeout = -1'))
        server.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in server.log(), 5), server.log()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(5) == 0
    log = server.log()
    assert "register 101: 1 contact from" in log
    assert re.search(r"of room 800 as participant \S+ \(1 in the room\)", log)
    assert "is invalid (1 problem); keeping" in log
    assert "shutting down: 1 call to end" in log
    assert "1 extension, 1 room (1 conference), 1 trunk" in log
    assert not re.search(r"\b1 (calls|contacts|participants|problems|extensions|rooms|conferences|trunks)\b", log)
    assert "(s)" not in log


# -- a configuration that routes nothing ---------------------------------------------------


def test_check_config_of_an_empty_file_says_nothing_is_routable(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    run = sipconf("check-config", str(empty))
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 1  # still a one-line summary
    assert "WARNING: nothing is routable: no [[rooms]] and no [receptionist]" in run.stdout


def test_check_config_of_a_receptionist_without_rooms_warns(tmp_path):
    path = tmp_path / "receptionist.toml"
    path.write_text('[receptionist]\nnumbers = ["+33140000000"]\n')
    run = sipconf("check-config", str(path))
    assert run.returncode == 0, run.stderr
    assert "WARNING: no [[rooms]]: the receptionist answers but has no room" in run.stdout


def test_check_config_of_the_office_does_not_warn(tmp_path):
    path = tmp_path / "office.toml"
    path.write_text(office_config())
    run = sipconf("check-config", str(path))
    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stdout


def test_serve_with_an_empty_file_starts_with_a_warning(make_server):
    server = make_server("")
    assert options_ping(server.sip_port) == 200
    log = server.log()
    assert re.search(r" WARNING sipconf: configuration: nothing is routable: no \[\[rooms\]\] and no \[receptionist\]",
                     log), log
    # and it comes before the server answers anything
    assert log.index("nothing is routable") < log.index("sipconf listening")
