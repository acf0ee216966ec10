"""Integration-test support: the real ``sipconf serve`` as a subprocess on
loopback, free ports, and SIPp runs. Every process started here is stopped
by the fixture or function that started it."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIPP_DIR = REPO / "scripts" / "sipp"
SIPP_PCAPS = Path("/usr/share/sip-tester")
SIPP = shutil.which("sipp")

# The test office: extension passwords, the trusted trunk, room 800 "Everest".
PASSWORDS = {"101": "alice-secret", "102": "bob-secret", "103": "carol-secret", "104": "dave-secret"}
MAIN_NUMBER = "+33140000000"
ROOM_DID = "+33140000800"


def toml_value(value) -> str:
    """``value`` written as TOML: strings quoted, booleans, ints/floats bare, lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _table(header: str, values: dict | None) -> str:
    if not values:
        return ""
    return f"[{header}]\n" + "".join(f"{key} = {toml_value(v)}\n" for key, v in values.items()) + "\n"


def office_config(*, server: dict | None = None, security: dict | None = None, receptionist: bool = False,
                  extensions=("101", "102"), trunk: bool = True, room_name: str | None = "Everest",
                  room_numbers=(ROOM_DID,), conferences=(("1234", "4321"),),
                  max_participants: int | None = None, extra: str = "") -> str:
    """The test office as TOML: ``[server]`` keys, the receptionist on MAIN_NUMBER,
    ``extensions`` (passwords from PASSWORDS), the trunk "provider" trusted
    from 127.0.0.2/32, room 800 with its ``(id, pin)`` conferences, ``[security]``
    keys, then ``extra`` verbatim."""
    text = "\n" + _table("server", server)
    if receptionist:
        text += _table("receptionist", {"numbers": [MAIN_NUMBER], "extension": "0"})
    for number in extensions:
        text += f"[[extensions]]\nnumber = {toml_value(number)}\npassword = {toml_value(PASSWORDS[number])}\n\n"
    if trunk:
        text += '[[trunks]]\nname = "provider"\nallow = ["127.0.0.2/32"]\n\n'
    text += '[[rooms]]\nextension = "800"\n'
    if room_name is not None:
        text += f"name = {toml_value(room_name)}\n"
    if room_numbers:
        text += f"numbers = {toml_value(list(room_numbers))}\n"
    if max_participants is not None:
        text += f"max_participants = {max_participants}\n"
    for conference, pin in conferences:
        text += f"\n  [[rooms.conferences]]\n  id = {toml_value(conference)}\n  pin = {toml_value(pin)}\n"
    if security:
        text += "\n" + _table("security", security).rstrip("\n") + "\n"
    return text + extra


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` every ``interval`` s for up to ``timeout`` s; its first
    truthy result, or its result once more at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    return predicate()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``."""
    for _ in range(200):
        port = random.randrange(21000, 60000)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as udp, \
                    socket.socket(family, socket.SOCK_STREAM) as tcp:
                udp.bind((host, port))
                tcp.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def free_rtp_range(width: int = 100) -> tuple[int, int]:
    for _ in range(100):
        low = random.randrange(30000, 60000 - width) & ~1
        try:
            sockets = []
            for port in range(low, low + width, 10):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return low, low + width - 1
    raise RuntimeError("no free RTP range")


def options_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> int | None:
    """Send one OPTIONS (over IPv6 when ``host`` is an IPv6 address); the
    status code of the answer, or None."""
    v6 = ":" in host
    local_host = "::1" if v6 else "127.0.0.1"
    uri_host = f"[{host}]" if v6 else host
    via_host = f"[{local_host}]" if v6 else local_host
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_host, 0))
        local = sock.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(6)
        message = (
            f"OPTIONS sip:{uri_host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host}:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:ping@{via_host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{uri_host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(message, (host, port))
        sock.settimeout(timeout)
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


@dataclass
class ServerProcess:
    """``sipconf serve`` on loopback with its own ports and log file."""

    workdir: Path
    config_text: str | None = None
    extra_args: tuple[str, ...] = ()
    sip_port: int = 0
    rtp_low: int = 0
    rtp_high: int = 0
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"  # where readiness is checked (e.g. "::1" for an IPv6-only bind)

    def start(self, timeout: float = 15.0) -> "ServerProcess":
        if not self.rtp_low:
            self.rtp_low, self.rtp_high = free_rtp_range()
        while not self.sip_port or self.rtp_low <= self.sip_port <= self.rtp_high + 1:
            self.sip_port = free_port()  # never inside our own RTP range
        args = [sys.executable, "-m", "sipconf", "serve", "--sip-port", str(self.sip_port),
                "--rtp-ports", f"{self.rtp_low}-{self.rtp_high}", "--log-level", "DEBUG", *self.extra_args]
        if self.config_text is not None:
            config_path = self.workdir / "sipconf.toml"
            config_path.write_text(self.config_text)
            args += ["--config", str(config_path)]
        self.log_path = self.workdir / f"server-{self.sip_port}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if options_ping(self.sip_port, self.host, timeout=0.2) == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 8.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    successful: int
    failed: int
    workdir: Path

    def errors(self) -> str:
        texts = [p.read_text(errors="replace") for p in self.workdir.glob("*_errors.log")]
        return "\n".join(texts)


def run_sipp(workdir: Path, scenario: str, server_port: int, *, calls: int = 1, rate: float = 10,
             local_ip: str = "127.0.0.1", local_port: int | None = None, timeout: float = 60,
             variables: dict[str, str] | None = None, extra: list[str] | None = None,
             service: str = "800", media_port: int | None = None) -> SippResult:
    """Run a SIPp scenario from scripts/sipp against the server (bounded by ``timeout``)."""
    assert SIPP, "sipp is not installed (Debian package sip-tester)"
    run_dir = workdir / f"sipp-{Path(scenario).stem}-{secrets.token_hex(3)}"
    run_dir.mkdir()
    args = [SIPP, f"127.0.0.1:{server_port}", "-sf", str(SIPP_DIR / scenario), "-m", str(calls),
            "-r", str(rate), "-i", local_ip, "-p", str(local_port or free_port(local_ip)),
            "-s", service, "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-trace_err", "-trace_stat", "-stf", str(run_dir / "stats.csv"), "-fd", "1",
            "-mp", str(media_port or (free_rtp_range(10)[0]))]
    for name, value in (variables or {}).items():
        args += ["-key", name, value]
    args += extra or []
    completed = subprocess.run(args, cwd=run_dir, capture_output=True, text=True, timeout=timeout + 30,
                               stdin=subprocess.DEVNULL)
    successful, failed = _sipp_counts(run_dir / "stats.csv")
    return SippResult(completed.returncode, completed.stdout, completed.stderr, successful, failed, run_dir)


def _sipp_counts(stats: Path) -> tuple[int, int]:
    """SuccessfulCall(C) and FailedCall(C) from SIPp's -trace_stat CSV (last line)."""
    try:
        lines = [line for line in stats.read_text().splitlines() if line.strip()]
    except OSError:
        return 0, 0
    if len(lines) < 2:
        return 0, 0
    header = lines[0].split(";")
    values = lines[-1].split(";")
    row = dict(zip(header, values))
    return int(row.get("SuccessfulCall(C)", 0) or 0), int(row.get("FailedCall(C)", 0) or 0)


def mutate(seed: bytes, edits) -> bytes:
    """Apply fuzzing edits (op, position, chunk) to ``seed``: replace, insert,
    delete or truncate; positions wrap around the current length."""
    data = bytearray(seed)
    for op, pos, chunk in edits:
        if not data:
            break
        pos %= len(data)
        if op == "replace":
            data[pos:pos + len(chunk)] = chunk
        elif op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos:pos + len(chunk)]
        else:
            del data[pos:]
    return bytes(data)


def run_loadtest(tmp_path, *args: str) -> tuple[str, dict, subprocess.CompletedProcess]:
    """``scripts/loadtest ARGS --json --quiet`` into tmp_path/run: (its table,
    its JSON result, the process). The functional checks must hold; the
    targets (rate, CPU, lateness) depend on what else the shared machine
    runs, so only their agreement with the exit status and the PASS line is
    checked here."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "loadtest"), *args, "--json", "--quiet", "--timeout", "120",
         "--python", sys.executable, "--out-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, cwd=REPO)
    table, _, rest = completed.stdout.partition("\n{")
    result = json.loads("{" + rest.splitlines()[0])
    assert result["verdict"]["functional"], completed.stdout + completed.stderr
    assert completed.returncode == (0 if result["verdict"]["pass"] else 1), completed.stdout
    assert ("PASS" in completed.stdout) == result["verdict"]["pass"]
    return table, result, completed
