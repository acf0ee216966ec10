"""scripts/bench_socket_calls.py and its C part (scripts/floor/socket_calls.c):
both send and receive every packet on loopback and report per-call times; the
script prints its table (no figure is asserted: benchmarks print, tests do not time)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from support import REPO

SCRIPT = REPO / "scripts" / "bench_socket_calls.py"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (the C part)")


@needs_gcc
@pytest.mark.parametrize("mode", ["connected", "sendto"])
def test_c_part_sends_and_receives_every_packet(tmp_path, mode):
    binary = tmp_path / "socket_calls"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(REPO / "scripts" / "floor" / "socket_calls.c")],
                   check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(binary), "16", "5", mode], capture_output=True, text=True, timeout=60, check=True)
    figures = json.loads(out.stdout)
    assert figures["sent"] == figures["received"] == 16 * 5
    assert figures["send_us"] > 0 and figures["recv_us"] > 0
    bad = subprocess.run([str(binary), "0", "5", mode], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "positive" in bad.stderr


@needs_gcc
def test_script_prints_both_modes_for_c_and_python():
    out = subprocess.run([sys.executable, str(SCRIPT), "--sockets", "8", "--rounds", "4", "--repeat", "2", "--verbose"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(re.findall(r"^(connected send|sendto)\s+(C|Python)\s+send [\d.]+ µs\s+recv [\d.]+ µs$",
                          out.stdout, re.MULTILINE)) == 2 * 2 * 2
    for mode in ("connected send", "sendto"):
        row = re.search(rf"^{mode}\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)$",
                        out.stdout, re.MULTILINE)
        assert row, out.stdout
        c_send, py_send, extra = (float(row.group(i)) for i in (1, 2, 3))
        assert extra == pytest.approx(py_send - c_send, abs=0.011)


def test_script_refuses_a_non_positive_size():
    out = subprocess.run([sys.executable, str(SCRIPT), "--sockets", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--sockets" in out.stderr


def test_python_part_counts_every_packet():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_socket_calls as bench
    finally:
        sys.path.remove(str(SCRIPT.parent))
    for connected in (True, False):
        figures = bench.python_run(8, 3, connected)
        assert figures["sent"] == figures["received"] == 24
