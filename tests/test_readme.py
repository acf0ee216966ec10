"""README's commands do what it says: the two commands come first, its SIPp
line really joins the demo's conference 1234 of room 800, and its English
demo command writes a valid configuration with English prompts."""

from __future__ import annotations

import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from sipconf.config import load_config
from support import REPO, SIPP, SIPP_PCAPS, ServerProcess, _sipp_counts, free_port, free_rtp_range

README = (REPO / "README.md").read_text()


def command_line(prefix: str) -> str:
    lines = [line for line in README.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one README line starting with {prefix!r}, found {lines}"
    return lines[0]


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -q '.[fast]' && .venv/bin/sipconf serve\n",
        "./scripts/test\n",
    ]
    assert README.index("```sh") < README.index("\n## ")  # before any section


@pytest.mark.skipif(SIPP is None or not (SIPP_PCAPS / "dtmf_2833_pound.pcap").exists(),
                    reason="sipp and its pcaps (Debian sip-tester) are not installed")
def test_readme_sipp_line_joins_the_demo_conference(tmp_path):
    args = shlex.split(command_line("sipp 127.0.0.1:5060 "))
    assert "-i" in args and args[args.index("-i") + 1] == "127.0.0.2"
    with ServerProcess(tmp_path) as server:  # the demo configuration, on free ports
        args = [SIPP, f"127.0.0.1:{server.sip_port}", *args[2:],
                # only what keeps a test run apart from others on the machine, and bounded:
                "-p", str(free_port("127.0.0.2")), "-mp", str(free_rtp_range(10)[0]),
                "-nostdin", "-timeout", "40s", "-timeout_error", "-trace_stat", "-stf", str(tmp_path / "stats.csv")]
        # From the repository, as the README runs it (the scenario path is relative).
        completed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=70,
                                   stdin=subprocess.DEVNULL)
        log = server.log()
    assert completed.returncode == 0, completed.stdout[-2000:] + log[-2000:]
    assert _sipp_counts(tmp_path / "stats.csv") == (1, 0)
    assert re.search(r"call \S+@127\.0\.0\.2: joined conference 1234 of room 800", log), log[-3000:]


def test_readme_english_demo_command_writes_a_valid_english_config(tmp_path):
    line = command_line(".venv/bin/python -c ")
    command, redirect = line.rsplit(" > ", 1)
    assert redirect == "demo-en.toml"
    args = [sys.executable, *shlex.split(command)[1:]]
    completed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    (tmp_path / "demo-en.toml").write_text(completed.stdout)
    config = load_config(tmp_path / "demo-en.toml")
    assert config.server.language == "en"
    assert config.room_for("800") is not None and config.extension("101") is not None


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip (Debian baresip-core) is not installed")
def test_readme_baresip_account_joins_the_demo_conference(tmp_path):
    # The README's accounts line (domain office.local, the server as outbound
    # proxy) and its sip_listen line, moved to free ports; audio from a file
    # instead of a sound card, since the test has none.
    from test_baresip_interop import Baresip, write_tone

    account = command_line("<sip:101@office.local>")
    assert 'outbound="sip:127.0.0.1:5060"' in account and command_line("sip_listen ").startswith("sip_listen 127.0.0.1:")

    class ReadmeBaresip(Baresip):
        def __init__(self, directory, server_port: int) -> None:
            rtp_low, rtp_high = free_rtp_range(20)
            write_tone(directory / "tone.wav", 523.0, 30)
            (directory / "config").write_text(
                f"sip_listen 127.0.0.1:{free_port()}\n"
                f"audio_source aufile,{directory / 'tone.wav'}\naudio_player aufile,{directory / 'heard.wav'}\n"
                f"audio_alert aufile,/dev/null\nrtp_ports {rtp_low}-{rtp_high}\n"
                "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule stdio.so\n"
                "module_app account.so\nmodule_app menu.so\n")
            (directory / "accounts").write_text(account.replace("127.0.0.1:5060", f"127.0.0.1:{server_port}") + "\n")
            self.master, slave = pty.openpty()
            self.output = b""
            self.process = subprocess.Popen([shutil.which("baresip"), "-f", str(directory), "-t", "60"],
                                            stdin=slave, stdout=slave, stderr=slave)
            os.close(slave)

    with ServerProcess(tmp_path) as server:
        softphone = ReadmeBaresip(tmp_path, server.sip_port)
        try:
            assert softphone.wait_for(b"200 OK", 10), softphone.output.decode(errors="replace")
            softphone.type("/dial 800\n", gap=0.05)
            assert softphone.wait_for(b"Call established", 10), softphone.output.decode(errors="replace")
            softphone.pump(1.0)
            softphone.type("1234#4321#")
            joined = re.compile(r"call \S+: joined conference 1234 of room 800")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not joined.search(server.log()):
                softphone.pump(0.2)
            log = server.log()
        finally:
            softphone.close()
    assert "new call from 101 (extension 101" in log, log[-3000:]
    assert joined.search(log), log[-3000:]
