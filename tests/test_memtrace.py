"""SIPCONF_TRACEMALLOC (sipconf/memtrace.py): the real server traces its
allocations and writes a snapshot on each SIGUSR2, and goes on serving."""

from __future__ import annotations

import signal
import tracemalloc

from sipconf.memtrace import ENV_DIR, ENV_FRAMES, frames_from
from support import ServerProcess, office_config, options_ping, wait_until


def test_frames_from_environment():
    assert frames_from({}) == 0
    assert frames_from({ENV_FRAMES: ""}) == 0
    assert frames_from({ENV_FRAMES: "0"}) == 0
    assert frames_from({ENV_FRAMES: "1"}) == 1
    assert frames_from({ENV_FRAMES: " 25 "}) == 25
    # not a positive number of frames: off (logged), the server still starts
    assert frames_from({ENV_FRAMES: "yes"}) == 0
    assert frames_from({ENV_FRAMES: "-3"}) == 0


def test_sigusr2_writes_snapshots_of_the_running_server(tmp_path, monkeypatch):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    monkeypatch.setenv(ENV_FRAMES, "6")
    monkeypatch.setenv(ENV_DIR, str(snapshots))
    with ServerProcess(tmp_path, office_config()) as server:
        pid = server.process.pid
        assert "tracemalloc on (6 frames" in server.log()
        for n in (1, 2):
            server.process.send_signal(signal.SIGUSR2)
            path = snapshots / f"sipconf-{pid}-{n}.tracemalloc"
            assert wait_until(path.exists, 20), server.log()
        assert options_ping(server.sip_port) == 200, server.log()  # still serving
        assert server.alive()
        first = tracemalloc.Snapshot.load(str(snapshots / f"sipconf-{pid}-1.tracemalloc"))
        second = tracemalloc.Snapshot.load(str(snapshots / f"sipconf-{pid}-2.tracemalloc"))
        assert first.traceback_limit == 6
        # the server's own allocations are in it (traced from before the server was built)
        files = {frame.filename for trace in first.traces for frame in trace.traceback}
        assert any(name.endswith("sipconf/server.py") for name in files), sorted(files)[:20]
        assert second.compare_to(first, "lineno")
        assert not list(snapshots.glob("*.partial"))
    assert server.process.returncode == 0, server.log()
