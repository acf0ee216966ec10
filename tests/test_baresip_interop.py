"""Interoperability with baresip (Debian baresip-core), a real softphone run
headless on a pseudo-terminal: it registers with MD5 digest, dials room 800,
types the conference ID and PIN on its keypad (RFC 4733) and streams a tone
that a test phone already in the conference must hear."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
import wave

import numpy as np
import pytest

from phone import TestPhone
from support import free_rtp_range, free_port

BARESIP = shutil.which("baresip")
pytestmark = pytest.mark.skipif(BARESIP is None, reason="baresip (Debian baresip-core) is not installed")

TONE_HZ = 523.0


def write_tone(path, hz: float, seconds: float) -> None:
    t = np.arange(int(8000 * seconds)) / 8000
    samples = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


class Baresip:
    """baresip on a pty so its keypad (stdio module) can be typed on."""

    def __init__(self, directory, server_port: int, user: str, password: str, *, host: str = "127.0.0.1",
                 uri_params: str = "", account_params: str = "", config: str = "", modules: str = "",
                 start: bool = True) -> None:
        self.directory = directory
        sip_port = free_port(host)
        uri_host = f"[{host}]" if ":" in host else host
        rtp_low, rtp_high = free_rtp_range(20)
        write_tone(directory / "tone.wav", TONE_HZ, 60)
        (directory / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen {uri_host}:{sip_port}\n"
            + ("net_af ipv6\n" if ":" in host else "")
            + f"audio_source aufile,{directory / 'tone.wav'}\n"
            f"audio_player aufile,{directory / 'heard.wav'}\n"
            "audio_alert aufile,/dev/null\n"
            f"rtp_ports {rtp_low}-{rtp_high}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule stdio.so\n" + modules +
            "module_app account.so\nmodule_app menu.so\n" + config)
        (directory / "accounts").write_text(
            f"<sip:{user}@{uri_host}:{server_port}{uri_params}>;auth_pass={password};regint=600{account_params}\n")
        self.output = b""
        if start:
            self.start()

    def start(self) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([BARESIP, "-f", str(self.directory), "-t", "60"],
                                        stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    return

    def wait_for(self, text: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            self.pump(0.1)
        return text in self.output

    def type(self, keys: str, gap: float = 0.3) -> None:
        for key in keys:
            os.write(self.master, key.encode())
            self.pump(gap)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        os.close(self.master)


def test_baresip_registers_joins_by_keypad_and_is_heard(demo_server, tmp_path):
    listener = TestPhone(("127.0.0.1", demo_server.sip_port), user="102", password="bob-secret")
    softphone = None
    try:
        assert listener.call("800").status == 200
        time.sleep(0.3)
        listener.send_dtmf("1234#4321#")
        softphone = Baresip(tmp_path, demo_server.sip_port, "101", "alice-secret")
        assert softphone.wait_for(b"200 OK", 10), softphone.output.decode(errors="replace")
        assert "register 101: 1 contact from" in demo_server.log()
        softphone.type("/dial 800\n", gap=0.05)
        assert softphone.wait_for(b"Call established", 10), softphone.output.decode(errors="replace")
        softphone.pump(1.0)
        softphone.type("1234#4321#")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not listener.hears(TONE_HZ, seconds=0.5, threshold=2000):
            softphone.pump(0.2)
        assert listener.hears(TONE_HZ, seconds=0.5, threshold=2000), demo_server.log()[-3000:]
        assert "new call from 101 (extension 101" in demo_server.log()
    finally:
        if softphone is not None:
            softphone.close()
        listener.close()


def test_baresip_over_ipv6_registers_to_bracketed_server_and_joins(tmp_path):
    """SPEC 15: baresip registers to [::1] and joins room 800 by its keypad;
    a test phone over IPv6 in the conference hears its tone."""
    from support import ServerProcess
    server = ServerProcess(tmp_path, extra_args=("--bind", "::1"), host="::1").start()
    listener = TestPhone(("::1", server.sip_port), local_ip="::1", user="102", password="bob-secret")
    softphone = None
    try:
        assert listener.call("800").status == 200
        time.sleep(0.3)
        listener.send_dtmf("1234#4321#")
        softphone = Baresip(tmp_path, server.sip_port, "101", "alice-secret", host="::1")
        assert softphone.wait_for(b"200 OK", 10), softphone.output.decode(errors="replace")
        assert "register 101: 1 contact" in server.log()
        softphone.type("/dial 800\n", gap=0.05)
        assert softphone.wait_for(b"Call established", 10), softphone.output.decode(errors="replace")
        softphone.pump(1.0)
        softphone.type("1234#4321#")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not listener.hears(TONE_HZ, seconds=0.5, threshold=2000):
            softphone.pump(0.2)
        assert listener.hears(TONE_HZ, seconds=0.5, threshold=2000), server.log()[-3000:]
        assert "joined conference 1234" in server.log()
        assert "(extension 101, ::1:" in server.log()
    finally:
        if softphone is not None:
            softphone.close()
        listener.close()
        server.stop()
