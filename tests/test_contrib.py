"""The files in contrib/ that an installer copies as they are: the example
configuration must pass ``check-config`` (and serve), the systemd unit must
pass ``systemd-analyze verify``, and the Dockerfile must only reference files
the repository has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, ServerProcess, free_port, options_ping

CONTRIB = REPO / "contrib"
EXAMPLE = CONTRIB / "sipconf.toml"
UNIT = CONTRIB / "sipconf.service"
DOCKERFILE = CONTRIB / "Dockerfile"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def uncomment_registration(text: str) -> str:
    """The example with its commented-out ``[trunks.register]`` block enabled."""
    enabled = re.sub(r"(?m)^#  (\[trunks\.register\]|registrar =|username =|password =|expires =)", r"\1", text)
    assert enabled.count("[trunks.register]") == 1 and "\nregistrar =" in enabled, "register block not found"
    return enabled


def test_example_config_passes_check_config():
    result = check_config(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "SIP 0.0.0.0:5060" in result.stdout  # the office LAN example listens on every address


def test_example_config_with_trunk_registration_enabled_passes_check_config(tmp_path):
    variant = tmp_path / "sipconf.toml"
    variant.write_text(uncomment_registration(EXAMPLE.read_text()))
    result = check_config(variant)
    assert result.returncode == 0, result.stderr
    assert "provider registers to sip:sip.provider.example:5060" in result.stdout


def test_example_config_serves(tmp_path):
    # The example as it is, moved to loopback and free ports so that the test
    # touches no real interface: the server starts on it and answers OPTIONS.
    text = EXAMPLE.read_text().replace("metrics_port = 9091", f"metrics_port = {free_port()}")
    with ServerProcess(tmp_path, config_text=text, extra_args=("--bind", "127.0.0.1")) as server:
        assert options_ping(server.sip_port) == 200
        assert "3 extensions, 2 rooms (3 conferences)" in server.log()


def _verify(unit: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify: its exit status and the lines naming the unit.
    (It exits 0 on unknown keys and unparsable values, which it only prints.)"""
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=60, cwd=unit.parent)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, [line for line in lines if unit.name in line or str(unit.parent) in line]


def _unit_copy(directory: Path, text: str) -> Path:
    """The unit with its executable pointed at a stand-in that exists, since
    verify refuses an ExecStart binary that is not installed here."""
    stand_in = directory / "sipconf"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = directory / "sipconf.service"
    unit.write_text(text.replace("/usr/local/bin/sipconf", str(stand_in)))
    return unit


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze (Debian package systemd) is not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    text = UNIT.read_text()
    assert "/usr/local/bin/sipconf serve --config /etc/sipconf/sipconf.toml" in text
    status, complaints = _verify(_unit_copy(tmp_path, text))
    assert status == 0 and not complaints, complaints


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze (Debian package systemd) is not installed")
def test_unit_check_catches_a_broken_unit(tmp_path):
    # The check above must be able to fail: a misspelt key and a bad value are reported.
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter\nProtectSytem=strict")
    status, complaints = _verify(_unit_copy(tmp_path, broken))
    assert status != 0 or len(complaints) >= 2, complaints


def test_unit_file_runs_as_a_dedicated_user_with_reload_and_hardening():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["User"] == ["sipconf"]
    assert "/bin/kill -HUP $MAINPID" in settings["ExecReload"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key, value in (("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("Restart", "on-failure")):
        assert settings.get(key) == [value], key


def test_dockerfile_references_only_files_that_exist():
    text = DOCKERFILE.read_text()
    assert re.search(r"(?m)^FROM python:3\.11-slim", text)
    sources = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("COPY", "ADD"):
            args = [p for p in parts[1:] if not p.startswith("--")]
            sources += args[:-1]  # the last argument is the destination in the image
    assert sources, "no COPY in the Dockerfile"
    for source in sources:  # the build context is the repository root
        assert (REPO / source).exists(), f"{source} does not exist"
    assert "--network host" in text  # how to run it, and why, is in the file
