"""README's commands do what it says: the two commands come first, its SIPp
line really joins the demo's conference 1234 of room 800, and its English
demo command writes a valid configuration with English prompts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

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
